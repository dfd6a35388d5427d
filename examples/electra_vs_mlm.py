"""ELECTRA against BERT-style MLM (or any of `electra pretrain`'s objectives) at equal compute,
then fine-tuned on GLUE tasks.

    python examples/electra_vs_mlm.py [--minutes 15] [--preset small] [--seeds 3] [--work runs/electra-vs-mlm]
    python examples/electra_vs_mlm.py --objectives electra,all-tokens-mlm,replace-mlm,electra-15,mlm  # Table 5
    python examples/electra_vs_mlm.py --preset tiny --architecture '{"discriminator": {"hidden_size": 64}}'

1. Prepares the Gutenberg books in ../shared/data (WordPiece 16k, 128-token rows).
2. Pre-trains the same model once per objective for the same wall-clock budget on this machine
   (each sized by a timed probe, so every learning-rate schedule decays to zero within the budget).
   The default pair is replaced token detection and masked LM only; the paper's efficiency
   analysis (Table 5) adds ELECTRA 15%, Replace MLM and All-Tokens MLM.
3. Exports each, fine-tunes each on SST-2 (a seeded subset, for time) and MRPC over several
   seeds, and writes results.json, the loss curves and a chart of dev scores.

results.json also holds the masked-LM loss and accuracy of a model that ignores context and
guesses from word frequencies alone (`frequency_baseline`): a run whose generator ends near it
learned little that fine-tuning can use, whichever objective trained it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TASKS = {"sst2": ("SST-2", "accuracy"), "mrpc": ("MRPC", "f1")}
OBJECTIVES = ("electra", "electra-15", "replace-mlm", "all-tokens-mlm", "mlm")


def electra(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "electra", *args], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15.0, help="pre-training budget per objective")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lr", type=float, help="peak pre-training learning rate (default: the preset's)")
    ap.add_argument("--batch-size", type=int, help="pre-training batch in rows (default: the preset's)")
    ap.add_argument(
        "--architecture",
        type=json.loads,
        help='other sizes than the preset\'s, as JSON: {"discriminator": {"hidden_size": 64, ...}} '
        "(electra pretrain's architecture option)",
    )
    ap.add_argument("--sst2-examples", type=int, default=8000)
    ap.add_argument("--work", type=Path, default=Path("runs/electra-vs-mlm"))
    ap.add_argument(
        "--objectives",
        default="electra,mlm",
        help=f"comma-separated, from {', '.join(OBJECTIVES)} (default electra,mlm)",
    )
    args = ap.parse_args()
    objectives = args.objectives.split(",")
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or not objectives:
        ap.error(f"unknown objective(s) {', '.join(unknown)}; choose from {', '.join(OBJECTIVES)}")

    from electra.pretrain import PretrainConfig, steps_for_budget

    work = args.work
    data = work / "data"
    if not (data / "manifest.json").exists():
        electra(
            "prepare",
            "--corpus",
            str(SHARED / "corpus" / "gutenberg" / "*.txt"),
            "--doc-per-file",
            "--vocab-size",
            "16000",
            "--out",
            str(data),
            "--force",
        )
    results = {
        "minutes": args.minutes,
        "preset": args.preset,
        "architecture": args.architecture,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "lr": args.lr,
        "frequency_baseline": frequency_baseline(data),
        "runs": {},
    }
    for objective in objectives:
        run_dir, model_dir = work / f"pretrain-{objective}", work / f"model-{objective}"
        if not (model_dir / "config.json").exists():
            base = PretrainConfig(
                data=str(data),
                out=str(run_dir),
                preset=args.preset,
                objective=objective,
                precision=args.precision,
                lr=args.lr,
                batch_size=args.batch_size,
                architecture=args.architecture,
            )
            steps = steps_for_budget(base, args.minutes)
            sizes = work / "architecture.json"  # electra pretrain takes other sizes from a --config file
            sizes.write_text(json.dumps({"architecture": args.architecture}) + "\n")
            electra(
                "pretrain",
                "--data",
                str(data),
                "--out",
                str(run_dir),
                "--preset",
                args.preset,
                "--objective",
                objective,
                "--precision",
                args.precision,
                "--max-steps",
                str(steps),
                "--max-minutes",
                str(args.minutes * 1.1),
                "--eval-every",
                str(max(1, steps // 10)),
                "--checkpoint-every",
                str(max(1, steps // 4)),
                "--log-every",
                "5",
                *(["--lr", str(args.lr)] if args.lr else []),
                *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
                *(["--config", str(sizes)] if args.architecture else []),
            )
            electra("export", str(run_dir), "--out", str(model_dir), "--force")
        lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        last, evaluated = lines[-1], [m for m in lines if "valid_loss" in m][-1]
        scores = {}
        for task, (folder, metric) in TASKS.items():
            out = work / f"{task}-{objective}"
            if not (out / "results.json").exists():
                extra = ["--max-train-examples", str(args.sst2_examples)] if task == "sst2" else []
                electra(
                    "finetune",
                    "--model",
                    str(model_dir),
                    "--task",
                    task,
                    "--data",
                    str(SHARED / "glue" / folder),
                    "--out",
                    str(out),
                    "--seeds",
                    str(args.seeds),
                    "--force",
                    *extra,
                )
            r = json.loads((out / "results.json").read_text())
            scores[task] = {
                "metric": metric,
                "median": r["median"]["dev"][metric],
                **r["spread"]["dev"][metric],
                "seeds": [s["metrics"]["dev"][metric] for s in r["seeds"]],
            }
        results["runs"][objective] = {
            "steps": last["step"],
            "tokens": last["tokens"],
            "loss": last["loss"],
            "valid_gen_loss": evaluated["valid_gen_loss"],
            "valid_gen_accuracy": evaluated["valid_gen_accuracy"],
            "valid_disc_accuracy": evaluated.get("valid_disc_accuracy"),
            "scores": scores,
        }
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    draw(work, results)
    print(table(results))


def frequency_baseline(data: Path) -> dict:
    """Masked-LM loss (nats) and accuracy of guessing every masked token from the training
    tokens' frequencies: their entropy, and the share of the most frequent one. Masking draws
    from every token but [CLS], [SEP] and padding."""
    from electra.data import Shards

    shards, counts = Shards(data), None
    skip = [shards.manifest["special_tokens"][name] for name in ("pad", "cls", "sep", "mask")]
    for ids, lengths in zip(shards.ids, shards.lengths, strict=True):
        for start in range(0, len(lengths), 8192):
            rows, n = np.asarray(ids[start : start + 8192]), np.asarray(lengths[start : start + 8192])
            real = np.arange(rows.shape[1]) < n[:, None]
            c = np.bincount(rows[real], minlength=shards.manifest["vocab_size"])
            counts = c if counts is None else counts + c
    counts[skip] = 0
    p = counts[counts > 0] / counts.sum()
    return {"loss": float(-(p * np.log(p)).sum()), "accuracy": float(p.max())}


def table(results: dict) -> str:
    """The runs as a markdown table: steps and tokens in the budget, median (min-max) dev scores."""
    head = ["objective", "steps", "tokens"] + [f"{t} dev {m}, median (min-max)" for t, (_, m) in TASKS.items()]
    head += ["valid masked-LM loss", "valid masked-LM accuracy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for objective, r in results["runs"].items():
        scores = [f"{s['median']:.4f} ({s['min']:.4f}-{s['max']:.4f})" for s in (r["scores"][t] for t in TASKS)]
        gen = [f"{r['valid_gen_loss']:.2f}", f"{r['valid_gen_accuracy']:.3f}"]
        lines.append(f"| {objective} | {r['steps']:,} | {r['tokens'] / 1e6:.1f}M | " + " | ".join(scores + gen) + " |")
    base = results["frequency_baseline"]
    blanks = " | ".join(["-"] * len(TASKS))
    lines.append(f"| word frequencies alone | - | - | {blanks} | {base['loss']:.2f} | {base['accuracy']:.3f} |")
    return "\n".join(lines)


def draw(work: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from electra.report import draw as draw_runs

    objectives = list(results["runs"])
    draw_runs([work / f"pretrain-{o}" for o in objectives], work / "pretraining.png")
    fig, ax = plt.subplots(figsize=(6 + len(objectives) - 2, 4), constrained_layout=True)
    tasks, width = list(TASKS), 0.8 / len(objectives)
    for i, objective in enumerate(objectives):
        s = results["runs"][objective]["scores"]
        med = [s[t]["median"] for t in tasks]
        err = [
            [m - s[t]["min"] for t, m in zip(tasks, med, strict=True)],
            [s[t]["max"] - m for t, m in zip(tasks, med, strict=True)],
        ]
        ax.bar(
            [x + width * i for x in range(len(tasks))],
            med,
            width,
            yerr=err,
            capsize=4,
            label=f"{objective} ({results['runs'][objective]['steps']} steps)",
        )
    ax.set_xticks(
        [x + width * (len(objectives) - 1) / 2 for x in range(len(tasks))], [f"{t} dev {TASKS[t][1]}" for t in tasks]
    )
    ax.set_ylim(0, 1)
    ax.set_title(f"{results['preset']}, {results['minutes']:g} min pre-training each; median, min-max of seeds")
    ax.legend()
    fig.savefig(work / "downstream.png", dpi=110)


if __name__ == "__main__":
    main()
