"""Inference throughput and memory: `electra predict` against `transformers.pipeline`, same model and inputs.

    python benchmarks/predict_throughput.py [--preset small] [--sentences 4000] [--batch 64]

`electra predict bf16` is `--precision bf16` (autocast; on this project's CPU, AMX runs it).

A classifier of the preset's size (random weights: speed does not depend on them) is exported
with a WordPiece vocabulary trained on SST-2, then each variant labels the same SST-2
sentences in its own process; the table gives sentences/s and the peak RSS above the loaded
model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "glue" / "SST-2"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(variant: str, model: Path, texts: list[str], batch: int) -> dict:
    import torch

    torch.set_grad_enabled(False)
    if variant == "transformers":
        import transformers

        classify = transformers.pipeline("sentiment-analysis", model=str(model), device="cpu")
        classify(texts[:batch], batch_size=batch)  # warm-up
        rss = _rss_mb()
        start = time.perf_counter()
        out = classify(texts, batch_size=batch)
    else:
        from electra.predict import Predictor

        classify = Predictor(model, device="cpu", precision="bf16" if variant.endswith("bf16") else "fp32")
        classify([(t, None) for t in texts[:batch]], batch)  # warm-up
        rss = _rss_mb()
        start = time.perf_counter()
        out, _ = classify([(t, None) for t in texts], batch)
    seconds = time.perf_counter() - start
    return {
        "variant": variant,
        "seconds": seconds,
        "per_s": len(texts) / seconds,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss,
        "labels": [o["label"] for o in out],
    }


def sst2_classifier(preset_name: str, work: Path) -> list[str]:
    """Export a classifier of the preset's size with a WordPiece vocabulary trained on SST-2 to
    work/model (random weights: speed does not depend on them); SST-2's training sentences."""
    import torch

    from electra import hf
    from electra.config import preset
    from electra.model import SequenceClassifier
    from electra.tasks import read_table
    from electra.tokenizer import save_tokenizer, train_wordpiece

    train = [e.text for e in read_table(SST2 / "train.tsv", "sentence", None, "label")]
    work.mkdir(parents=True, exist_ok=True)
    tok = train_wordpiece(train, vocab_size=30522, show_progress=False)
    save_tokenizer(tok, work / "tokenizer")
    cfg = preset(preset_name, vocab_size=tok.get_vocab_size()).discriminator
    torch.manual_seed(0)
    hf.export_sequence_classifier(
        SequenceClassifier(cfg, 2).eval(),
        work / "model",
        ["NEGATIVE", "POSITIVE"],
        tokenizer_dir=work / "tokenizer",
        overwrite=True,
    )
    return train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--sentences", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--work", type=Path, default=Path("/tmp/electra-predict-bench"))
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    texts_file = args.work / "texts.json"
    if args.variant:
        texts = json.loads(texts_file.read_text())
        print(json.dumps(measure(args.variant, args.work / "model", texts, args.batch)))
        return

    import torch

    train = sst2_classifier(args.preset, args.work)
    texts = (train * (args.sentences // len(train) + 1))[: args.sentences]
    texts_file.write_text(json.dumps(texts))

    results = []
    for variant in ("transformers", "electra predict", "electra predict bf16"):
        proc = subprocess.run(
            [sys.executable, __file__, "--variant", variant, *sys.argv[1:]],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    same = results[0]["labels"] == results[1]["labels"]
    agree = sum(a == b for a, b in zip(results[0]["labels"], results[2]["labels"], strict=True)) / len(texts)
    print(
        f"\n{args.preset} classifier, {len(texts):,} SST-2 sentences, batch {args.batch}, CPU, {os.cpu_count()} cores, "
        f"torch {torch.__version__}; identical labels (fp32): {same}; bf16 labels equal to fp32's: {agree:.2%}\n"
    )
    base = results[0]["per_s"]
    print(f"| {'variant':<20} | {'sentences/s':>11} | {'seconds':>8} | {'peak MB':>8} | {'vs pipeline':>11} |")
    print(f"|{'-' * 22}|{'-' * 13}|{'-' * 10}|{'-' * 10}|{'-' * 13}|")
    for r in results:
        print(
            f"| {r['variant']:<20} | {r['per_s']:>11,.1f} | {r['seconds']:>8.1f} | {r['peak_mb']:>8,.0f} | "
            f"{r['per_s'] / base:>10.2f}x |"
        )


if __name__ == "__main__":
    main()
