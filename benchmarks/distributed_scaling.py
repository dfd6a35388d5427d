"""Pre-training throughput with 1 and N processes (torchrun, DDP), same global batch.

    python benchmarks/distributed_scaling.py [--procs 2] [--preset tiny] [--batch 32] [--steps 30]

Prepares a few Gutenberg books (or takes --data), runs `electra pretrain` alone and under
`torchrun --nproc_per_node=N`, and prints tokens/s (median over logged steps after the first
fifth) and the speed-up. On a CPU box the processes share the cores: 1 process gets all of them
as intra-op threads, N processes get cores/N each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOKS = ROOT.parent / "shared" / "data" / "corpus" / "gutenberg"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--strategy", default="ddp", choices=["ddp", "fsdp"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/electra-dist-bench"))
    args = ap.parse_args()
    data = args.data or args.work / "data"
    if args.data is None and not (data / "manifest.json").exists():
        books = sorted(BOOKS.glob("*.txt"))[:5]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "electra",
                "prepare",
                "--corpus",
                *map(str, books),
                "--doc-per-file",
                "--vocab-size",
                "8000",
                "--out",
                str(data),
                "--quiet",
                "--force",
            ],
            check=True,
        )
    cores = os.cpu_count() or 1
    rows = []
    for procs in (1, args.procs):
        out = args.work / f"run-{procs}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        launch = (
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
            if procs > 1
            else [sys.executable]
        )
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // procs))}
        start = time.perf_counter()
        subprocess.run(
            [
                *launch,
                "-m",
                "electra",
                "pretrain",
                "--data",
                str(data),
                "--out",
                str(out),
                "--preset",
                args.preset,
                "--batch-size",
                str(args.batch),
                "--max-steps",
                str(args.steps),
                "--log-every",
                "1",
                "--eval-every",
                str(10**9),
                "--checkpoint-every",
                str(10**9),
                "--strategy",
                args.strategy,
                "--quiet",
            ],
            check=True,
            env=env,
        )
        wall = time.perf_counter() - start
        rates = [json.loads(x)["tokens_per_s"] for x in (out / "metrics.jsonl").read_text().splitlines()]
        rows.append((procs, statistics.median(rates[len(rates) // 5 :]), wall))
    print(
        f"\npreset {args.preset}, global batch {args.batch}, {args.steps} steps, {args.strategy}, CPU, {cores} cores\n"
    )
    print(f"| {'processes':>9} | {'threads each':>12} | {'tokens/s':>10} | {'wall s':>7} | {'speed-up':>8} |")
    print(f"|{'-' * 11}|{'-' * 14}|{'-' * 12}|{'-' * 9}|{'-' * 10}|")
    for procs, rate, wall in rows:
        print(
            f"| {procs:>9} | {max(1, cores // procs):>12} | {rate:>10,.0f} | {wall:>7.1f} | "
            f"{rate / rows[0][1]:>7.2f}x |"
        )


if __name__ == "__main__":
    main()
