"""Fine-tuning throughput by precision: `electra finetune`'s own training loop and evaluation.

    python benchmarks/finetune_throughput.py [--preset small] [--examples 2048] [--device auto] [--data SST-2]

A classifier of the preset's size (random weights: speed does not depend on them) with a
WordPiece vocabulary trained on SST-2 trains one epoch on SST-2 training sentences at batch
32 (`finetune.train_one`: length-grouped batches, layer-wise LR decay, clipping, AdamW), then
scores the SST-2 dev set (`finetune.evaluate`, batch 128), once per precision, in one process.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "glue" / "SST-2"


def timed(device, fn, *args, **kwargs):
    """fn's result and its wall time, waiting for the GPU at both ends."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--examples", type=int, default=2048, help="training sentences (one epoch)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--data", type=Path, default=SST2, help="a GLUE SST-2 folder (default: ../shared/data/glue/SST-2)")
    args = ap.parse_args()

    import torch

    from electra.config import preset
    from electra.finetune import Encoded, FinetuneConfig, encode, evaluate, settings, train_one
    from electra.model import Encoder, SequenceClassifier
    from electra.parallel import pick_device
    from electra.tasks import GLUE, read_table
    from electra.tokenizer import train_wordpiece

    if not (args.data / "train.tsv").is_file():
        raise SystemExit(f"{args.data} holds no train.tsv: point --data at a GLUE SST-2 folder")
    task = GLUE["sst2"]
    train = read_table(args.data / "train.tsv", "sentence", None, "label")[: args.examples]
    dev = read_table(args.data / "dev.tsv", "sentence", None, "label")
    tok = train_wordpiece([e.text for e in train], vocab_size=30522, show_progress=False)
    labels = ["0", "1"]
    tracemalloc.start()
    train_data, _ = encode(tok, task, train, labels, 128, True, "train")
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    dev_data, _ = encode(tok, task, dev, labels, 128, True, "dev")
    device = pick_device(args.device)
    torch.manual_seed(0)
    encoder = Encoder(preset(args.preset, vocab_size=tok.get_vocab_size()).discriminator)
    warm = Encoded(train_data.ids[:64], train_data.types[:64], train_data.labels[:64])

    rows = []
    for precision in args.precisions.split(","):
        cfg = FinetuneConfig(
            model="-", task="sst2", data="-", out="-", epochs=1, device=args.device, precision=precision
        )
        used = settings(cfg, task, encoder)

        train_one(cfg, task, encoder, labels, warm, {}, 0, device, True, used)  # warm-up
        (_, state, _), train_s = timed(
            device, train_one, cfg, task, encoder, labels, train_data, {}, 0, device, True, used
        )
        model = SequenceClassifier(encoder.cfg, 2).to(device)
        model.load_state_dict(state)
        evaluate(model, task, warm, labels, device, precision=precision)  # warm-up
        scores, eval_s = timed(device, evaluate, model, task, dev_data, labels, device, precision=precision)
        rows.append((precision, len(train_data.ids) / train_s, train_s, len(dev_data.ids) / eval_s, scores["accuracy"]))

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(
        f"\n{args.preset} classifier, {len(train_data.ids):,} SST-2 training sentences (1 epoch, batch 32), "
        f"{len(dev_data.ids)} dev sentences, {where}, torch {torch.__version__}\n"
    )
    head = ("precision", "train ex/s", "train s", "eval ex/s", "dev acc", "vs fp32")
    print(
        f"| {head[0]:<9} | " + " | ".join(f"{h:>{w}}" for h, w in zip(head[1:], (10, 8, 9, 7, 7), strict=True)) + " |"
    )
    print(f"|{'-' * 11}|{'-' * 12}|{'-' * 10}|{'-' * 11}|{'-' * 9}|{'-' * 9}|")
    base = rows[0][1]
    for precision, per_s, seconds, eval_per_s, acc in rows:
        print(
            f"| {precision:<9} | {per_s:>10,.1f} | {seconds:>8.1f} | {eval_per_s:>9,.1f} | {acc:>7.4f} | "
            f"{per_s / base:>6.2f}x |"
        )
    tokens = sum(map(len, train_data.ids))
    print(f"\nthe encoded training set holds {held / 2**20:.1f} MB ({held / tokens:.1f} bytes per token)")


if __name__ == "__main__":
    main()
