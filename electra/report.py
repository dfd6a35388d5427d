"""`electra report RUN_DIR`: a run's metrics drawn to one PNG (losses, accuracies, LR, speed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from electra.atomic import publishing_file

PANELS = [
    ("loss", ["loss", "valid_loss"], "total loss"),
    ("generator", ["gen_loss", "valid_gen_loss"], "generator MLM loss"),
    ("discriminator", ["disc_loss", "valid_disc_loss"], "discriminator loss (RTD; the MLM comparisons: main network)"),
    (
        "accuracy",
        ["gen_accuracy", "disc_accuracy", "disc_precision", "disc_recall", "replaced_fraction"],
        "accuracy, precision, recall",
    ),
    ("lr", ["lr"], "learning rate"),
    ("speed", ["tokens_per_s"], "tokens / s"),
]


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl; is it a run folder of `electra pretrain`?")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill: resume drops it too
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise ValueError(f"{path}:{n} is not a log line of `electra pretrain` (an object with its step)")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} is empty: the run has not logged a step yet")
    return rows


def draw(run_dirs: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """One figure with a panel per metric group; several runs are overlaid for comparison."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ValueError("electra report needs matplotlib: pip install 'electra[report]'") from e
    runs = [(Path(r).name, read_metrics(r)) for r in run_dirs]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    for ax, (_, keys, title) in zip(axes.flat, PANELS, strict=True):
        for name, rows in runs:
            for key in keys:
                points = [(r["step"], r[key]) for r in rows if key in r]
                if points:
                    label = key if len(runs) == 1 else f"{name}: {key}"
                    style = "o-" if key.startswith("valid_") else "-"
                    ax.plot(*zip(*points, strict=True), style, label=label, markersize=3, linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    names = ", ".join(name for name, _ in runs)
    fig.suptitle(f"electra pretrain: {names}")
    out = Path(out)
    if out.is_dir():
        out = out / "report.png"
    elif not out.suffix:
        out = out.with_suffix(".png")
    try:
        with publishing_file(out, binary=True) as f:  # never a half-written image
            fig.savefig(f, dpi=110, format=out.suffix[1:])
    finally:
        plt.close(fig)
    return out
