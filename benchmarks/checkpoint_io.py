"""What a pre-training checkpoint costs to write and to read back, and the share of it that goes to
the SHA-256 of each file (recorded on save, checked on load, so that damage which still parses is
found).

    python benchmarks/checkpoint_io.py [--presets small,base] [--repeats 3] [--dir /fast/disk]

Each preset's model with an AdamW state (as a run saves: weights, then `train_state.pt` with the
optimizer) is saved and loaded `--repeats` times with hashing and without it (the baseline: the
same calls with the hash skipped); the table gives the median seconds and the hashing's share.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="small,base", help="comma-separated model presets")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", default=None, help="where to write (default: the system's temporary folder)")
    args = p.parse_args(argv)

    import torch

    from electra import checkpoint
    from electra.config import preset
    from electra.model import Electra

    print("| preset | MB | save s | save s, no hash | load s | load s, no hash | hashing share |")
    print("|---|---|---|---|---|---|---|")
    for name in args.presets.split(","):
        torch.manual_seed(0)
        model = Electra(preset(name))
        optimizer = torch.optim.AdamW(model.parameters())
        for param in model.parameters():
            param.grad = torch.zeros_like(param)
        optimizer.step()  # the moments exist, as in a run's checkpoint
        state = {"step": 1, "optimizer": optimizer.state_dict()}
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            folder = Path(tmp) / "step-00000001"

            def save(folder=folder, model=model, state=state):
                checkpoint.save_checkpoint(folder, model, train_state=state, overwrite=True)

            def load(folder=folder):
                checkpoint.load_checkpoint(folder, with_train_state=True)

            save()
            megabytes = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
            hashed = _median_seconds(save, args.repeats), _median_seconds(load, args.repeats)
            with mock.patch.object(checkpoint, "file_sha256", lambda path: ""):
                plain_save = _median_seconds(save, args.repeats)
                plain_load = _median_seconds(load, args.repeats)  # every recorded hash is "": none checked
        share = (hashed[0] + hashed[1] - plain_save - plain_load) / (hashed[0] + hashed[1])
        print(
            f"| {name} | {megabytes:,.0f} | {hashed[0]:.2f} | {plain_save:.2f} | {hashed[1]:.2f} | "
            f"{plain_load:.2f} | {share:.0%} |"
        )


if __name__ == "__main__":
    main()
