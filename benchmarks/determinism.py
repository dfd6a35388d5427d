"""Does a pre-training run repeat itself? The same settings run twice, without and with
`--deterministic`, and the first logged figure where the two runs differ.

    python benchmarks/determinism.py [--device cuda] [--steps 12] [--eager]

A tiny model on synthetic text (no data needed), 8 rows of 32 tokens a step, validation every
4 steps. On CPU both pairs are equal at every step; on CUDA cuDNN's attention backward adds in a
varying order unless `--deterministic` is on. `--eager`: without torch.compile (which CUDA runs
use by default in one process; runs under torchrun do not), where each operation runs its own
kernel and torch refuses those that have no deterministic one.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

KEYS = ("loss", "gen_loss", "disc_loss", "valid_loss")


def corpus(path: Path, documents: int = 120) -> Path:
    rng = random.Random(0)
    words = "the a of to and in is was for on that with river house light king city road water night".split()
    docs = (
        " ".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))).capitalize() + "." for _ in range(8))
        for _ in range(documents)
    )
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def first_difference(a: list[dict], b: list[dict]) -> str:
    for x, y in zip(a, b, strict=True):
        for k in KEYS:
            if x.get(k) != y.get(k):
                return f"step {x['step']}, {k}: {x.get(k)!r} against {y.get(k)!r}"
    return "equal at every step"


def main() -> None:
    from electra.prepare import PrepareConfig, prepare
    from electra.pretrain import PretrainConfig, run

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--eager", action="store_true", help="do not compile the training step")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp())
    data = root / "data"
    prepare([corpus(root / "corpus.txt")], data, PrepareConfig(seq_len=32, vocab_size=200), quiet=True)

    def logged(name: str, deterministic: bool) -> list[dict]:
        out = root / name
        cfg = PretrainConfig(
            data=str(data), out=str(out), preset="tiny", batch_size=8, max_steps=args.steps, log_every=1,
            eval_every=4, eval_batches=2, device=args.device, deterministic=deterministic,
            compile=False if args.eager else None,
        )  # fmt: skip
        run(cfg, quiet=True, announce_stop=False)
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    print("| --deterministic | two runs of the same settings |\n|---|---|")
    for deterministic in (False, True):
        a, b = (logged(f"{i}-{deterministic}", deterministic) for i in (1, 2))
        print(f"| {'on' if deterministic else 'off'} | {first_difference(a, b)} |")


if __name__ == "__main__":
    main()
