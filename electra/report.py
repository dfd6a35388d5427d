"""`electra report RUN_DIR`: a run's metrics drawn to one PNG (losses, accuracies, LR, speed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from electra.atomic import publishing_file

PANELS = [
    ("loss", ["loss", "valid_loss"], "total loss"),
    ("generator", ["gen_loss", "valid_gen_loss"], "masked LM loss (generator)"),
    ("discriminator", ["disc_loss", "valid_disc_loss"], "discriminator (or main network) loss"),
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
    if Path(run_dir).is_file():
        raise ValueError(f"{run_dir} is a file; pass the run folder that holds metrics.jsonl")
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl; is it a run folder of `electra pretrain`?")
    rows = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):  # the last line, cut short by a kill or still being written: resume drops it too
                continue
            raise ValueError(f"{path}:{n} is not JSON: the log is damaged there; repair or remove that line") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise ValueError(f"{path}:{n} is not a log line of `electra pretrain` (an object with its step)")
        rows.append(row)
    if not rows:
        what = "holds only a line cut short" if lines else "is empty"
        raise ValueError(f"{path} {what}: the run has not logged a whole step yet")
    return rows


# (line style, marker) of a panel's metrics when several runs share it (each run has its own colour)
LINE_STYLES = [("-", None), ("--", None), (":", None), ("-.", None), ("-", "x")]


def run_labels(run_dirs: list[str | os.PathLike]) -> list[str]:
    """Each run's folder name, with as many parent folders as it takes to tell runs apart
    (runs/a/base and runs/b/base become a/base and b/base)."""
    parts = [Path(os.path.abspath(r)).parts for r in run_dirs]

    def label(i: int) -> str:
        mine = parts[i]
        depth = next(
            (d for d in range(1, len(mine)) if all(q[-d:] != mine[-d:] for j, q in enumerate(parts) if j != i)),
            len(mine),  # one folder given twice: its whole path
        )
        return str(Path(*mine[-depth:]))

    return [label(i) for i in range(len(parts))]


def figure(runs: list[tuple[str, list[dict]]]):
    """The report's figure: a panel per metric group. One run: a colour per metric; several:
    a colour per run (ten distinct ones, then a colour map's) and a line style per metric."""
    import matplotlib.pyplot as plt

    n = len(runs)
    colours = plt.get_cmap("tab10").colors if n <= 10 else [plt.get_cmap("turbo")(i / (n - 1)) for i in range(n)]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    for ax, (_, keys, title) in zip(axes.flat, PANELS, strict=True):
        for r, (name, rows) in enumerate(runs):
            for k, key in enumerate(keys):
                points = [(row["step"], row[key]) for row in rows if key in row]
                if not points:
                    continue
                one = len(runs) == 1
                style, marker = LINE_STYLES[0] if one else LINE_STYLES[k % len(LINE_STYLES)]
                ax.plot(
                    *zip(*points, strict=True),
                    color=colours[k % len(colours)] if one else colours[r],
                    linestyle=style,
                    marker="o" if key.startswith("valid_") or len(points) == 1 else marker,  # a lone point shows
                    label=key if one else f"{name}: {key}",
                    markersize=3,
                    linewidth=1,
                )
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    names = ", ".join(name for name, _ in runs)
    fig.suptitle(f"electra pretrain: {names if len(names) <= 120 else f'{len(runs)} runs'}")
    return fig


def draw(run_dirs: list[str | os.PathLike], out: str | os.PathLike | None = None) -> Path:
    """One figure with a panel per metric group; several runs are overlaid for comparison.
    Written to `out` (a file, or a folder to hold report.png), by default the first run's report.png."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ValueError("electra report needs matplotlib: pip install 'electra[report]'") from e
    # a run's metrics.jsonl stands for its folder
    run_dirs = [Path(r).parent if Path(r).name == "metrics.jsonl" and Path(r).is_file() else r for r in run_dirs]
    fig = figure([(label, read_metrics(r)) for label, r in zip(run_labels(run_dirs), run_dirs, strict=True)])
    out = Path(run_dirs[0]) / "report.png" if out is None else out
    folder = str(out).endswith(("/", os.sep))  # "plots/": a folder to write report.png into
    out = Path(out)
    if out.is_dir() or folder:
        out.mkdir(parents=True, exist_ok=True)
        out = out / "report.png"
    elif not out.suffix:
        out = out.with_suffix(".png")
    try:
        with publishing_file(out, binary=True) as f:  # never a half-written image
            fig.savefig(f, dpi=110, format=out.suffix[1:])
    finally:
        plt.close(fig)
    return out
