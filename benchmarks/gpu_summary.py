"""One compact summary of everything `gpu_suite.sh` wrote under its results folder.

    python benchmarks/gpu_summary.py gpu-results

The checking stages' conclusions (CUDA tests, runs repeated with and without --deterministic),
throughput tables of every stage (each variant against the transformers baseline of the same
preset, batch and precision, from whichever stage measured it), kernel time by kind for the
profiled variants, the vocabulary stage, and the training loop's own tokens/s. The suite prints
it last, so the figures survive even where only the end of its output comes back.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def throughput(files: list[tuple[str, dict]]) -> list[str]:
    shape = lambda a: (a["preset"], a["batch"], a["seq"], a["precision"])  # noqa: E731
    baselines = {
        shape(d["args"]): r["tokens_per_s"] for _, d in files for r in d["results"] if r["variant"] == "transformers"
    }
    lines = [
        "| stage | shape | variant | tokens/s | step ms | peak MB | TFLOP/s | vs transformers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stage, d in files:
        a = d["args"]
        options = "".join(f" +{o}" for o in a.get("inductor", [])) + " +deterministic" * bool(a.get("deterministic"))
        for r in d["results"]:
            base = baselines.get(shape(a))
            ratio = f"{r['tokens_per_s'] / base:.2f}x" if base else "-"
            tflops = f"{r['tflops']:.1f}" if "tflops" in r else "-"
            lines.append(
                f"| {stage} | {a['preset']} {a['batch']}x{a['seq']} {a['precision']} | {r['variant']}{options} | "
                f"{r['tokens_per_s']:,.0f} | {r['step_s'] * 1e3:.2f} | {r['peak_mb']:,.0f} | {tflops} | {ratio} |"
            )
    return lines


def profiles(files: list[tuple[str, dict]]) -> list[str]:
    lines = []
    for stage, d in files:
        for r in d["results"]:
            if "profile_ms_per_step" in r:
                groups = ", ".join(f"{k} {v:.2f}" for k, v in r["profile_ms_per_step"].items())
                lines.append(f"{stage} {r['variant']} (ms per step): {groups}")
    return lines


CHECKS = ("cuda-tests", "determinism", "determinism-eager")  # stages that check rather than measure


def checks(log: str) -> list[str]:
    """What the checking stages concluded, from suite.log: pytest's last line, the determinism
    table's rows, and each stage's exit status."""
    found: dict[str, list[str]] = {}
    stage = None
    for line in log.splitlines():
        if line.startswith("== "):
            name = line[3:].split(" ", 1)[0].rstrip(":")
            stage = name if name in CHECKS else None
            if stage and ": exit " in line:
                found.setdefault(stage, []).append("exit " + line.split(": exit ", 1)[1].split(" ", 1)[0])
            elif stage and ": skipped" in line:
                found.setdefault(stage, []).append("skipped")
        elif stage and (" passed" in line or " failed" in line or " error" in line) and " in " in line:
            found.setdefault(stage, []).append(line.strip("= "))
        elif stage and line.startswith(("| off |", "| on |")):
            cells = [c.strip() for c in line.strip("|").split("|")]
            found.setdefault(stage, []).append(f"--deterministic {cells[0]}: {cells[1]}")
    return [f"{name}: " + "; ".join(parts) for name, parts in found.items()]


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/gpu_summary.py RESULTS_FOLDER")
    out = Path(sys.argv[1])
    if not out.is_dir():
        raise SystemExit(f"{out} is not a folder of gpu_suite.sh results")
    files, vocab = [], []
    for path in sorted(out.glob("*.json"), key=lambda p: p.stat().st_mtime):
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError:
            print(f"{path.name}: not readable JSON, skipped")
            continue
        if d.get("benchmark") == "vocab_stage":
            vocab.append(d)
        elif "results" in d and "args" in d:
            files.append((path.stem, d))
    if (out / "suite.log").exists():
        for line in checks((out / "suite.log").read_text(errors="replace")):
            print(line)
    print("\n".join(throughput(files)) if files else "no throughput results")
    for line in profiles(files):
        print(line)
    for d in vocab:
        old, new = d["results"]["full-cdf"]["ms"], d["results"]["library"]["ms"]
        print(
            f"vocabulary stage ({d['device']}, compiled {d['args']['compile']}): "
            f"full-cdf {old:.3f} ms, library {new:.3f} ms, {old / new:.2f}x"
        )
    loop = out / "pretrain-loop.jsonl"
    if loop.exists():
        rates = [json.loads(x)["tokens_per_s"] for x in loop.read_text().splitlines()[1:] if x.strip()]
        if rates:
            print(
                f"electra pretrain loop: median {statistics.median(rates):,.0f} tokens/s over {len(rates)} log windows"
            )


if __name__ == "__main__":
    main()
