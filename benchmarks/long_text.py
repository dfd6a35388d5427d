"""One very long text through `electra predict`: read from its head (the default) against whole.

    python benchmarks/long_text.py [--preset small] [--words 2097152] [--chinese 8400000]

A classifier of the preset's size (random weights, a WordPiece vocabulary trained on SST-2) labels
one text of `--words` words ("abc abc ...") and one of `--chinese` Chinese characters, each
variant in its own process; the table gives seconds and the peak RSS of that process, and
whether both variants gave the same record. `whole` sets `Predictor.head_chars` to None: the
tokenizer then builds every window of the text.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from predict_throughput import sst2_classifier

TEXTS = {"words": lambda n: "abc " * n, "chinese": lambda n: "\u4e2d\u6587\u5b57" * (n // 3)}


def measure(variant: str, model: Path, kind: str, n: int) -> dict:
    from electra.predict import Predictor

    predictor = Predictor(model, device="cpu")
    if variant == "whole":
        predictor.head_chars = None
    text = TEXTS[kind](n)
    start = time.perf_counter()
    (record,), cut = predictor([(text, None)])
    return {
        "seconds": time.perf_counter() - start,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "record": record,
        "cut": cut,
        "mb": len(text.encode()) / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--words", type=int, default=2_097_152)
    ap.add_argument("--chinese", type=int, default=8_400_000, help="characters")
    ap.add_argument("--work", type=Path, default=Path("/tmp/electra-long-text-bench"))
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = {"words": args.words, "chinese": args.chinese}
    if args.variant:
        print(json.dumps(measure(args.variant, args.work / "model", args.kind, sizes[args.kind])))
        return

    sst2_classifier(args.preset, args.work)
    print(f"\n{args.preset} classifier, one text per row, CPU\n")
    print("| text | MB | from its head: s | peak MB | whole: s | peak MB | same record |")
    print("|---|---|---|---|---|---|---|")
    for kind in TEXTS:
        got = {}
        for variant in ("head", "whole"):
            proc = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--kind", kind, *sys.argv[1:]],
                stdout=subprocess.PIPE,
                text=True,
                check=True,
            )
            got[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        head, whole = got["head"], got["whole"]
        same = head["record"] == whole["record"] and head["cut"] == whole["cut"]
        print(
            f"| {sizes[kind]:,} {kind} | {head['mb']:,.1f} | {head['seconds']:.2f} | {head['peak_mb']:,.0f} | "
            f"{whole['seconds']:.2f} | {whole['peak_mb']:,.0f} | {same} |"
        )


if __name__ == "__main__":
    main()
