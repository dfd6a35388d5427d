"""Checkpoints: one folder per save, published atomically, loaded without unpickling code.

RUN_DIR/checkpoints/step-00001000/
    model.safetensors   the Electra module's tensors (generator + discriminator)
    config.json         {"format": ..., "model": ModelConfig, "meta": {...}, "sha256": {file: hash}}
    train_state.pt      step, optimizer and loader state (optional; random draws are functions of the step)
    tokenizer.json, vocab.txt, tokenizer_config.json   (optional)
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from electra.atomic import delete_out_of_sight, file_sha256, publish_dir
from electra.config import ModelConfig
from electra.model import Electra
from electra.tokenizer import TOKENIZER_FILES

FORMAT = "electra-checkpoint-v1"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class Checkpoint:
    path: Path
    model: Electra
    meta: dict = field(default_factory=dict)
    train_state: dict | None = None

    @property
    def has_tokenizer(self) -> bool:
        return all((self.path / f).exists() for f in TOKENIZER_FILES)


def step_dir(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}"


def save_checkpoint(
    directory: str | os.PathLike,
    model: Electra,
    *,
    train_state: dict | None = None,
    meta: dict | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    model_state: dict | None = None,
) -> Path:
    """Write a complete checkpoint folder, or nothing at all.

    `model_state` replaces `model.state_dict()` (a full state gathered from sharded processes).
    """
    with publish_dir(directory, overwrite=overwrite) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in (model_state or model.state_dict()).items()}
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        if train_state is not None:
            torch.save(train_state, tmp / "train_state.pt")
        if tokenizer_dir is not None:
            for name in TOKENIZER_FILES:
                shutil.copy2(Path(tokenizer_dir) / name, tmp / name)
        # each file's hash: damage that still parses (a flipped bit in the weights) is found on load
        hashes = {f.name: file_sha256(f) for f in sorted(tmp.iterdir())}
        config = {"format": FORMAT, "model": model.cfg.to_dict(), "meta": meta or {}, "sha256": hashes}
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return Path(directory)


def is_checkpoint(path: Path) -> bool:
    return _incomplete(path) is None


def _incomplete(path: Path) -> str | None:
    """Why `path` is not a complete checkpoint folder, or None when it is."""
    config = path / "config.json"
    if not config.is_file():
        return "no config.json"
    try:
        record = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "config.json is not valid JSON"
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return f"config.json is not an {FORMAT} record"
    if not (path / "model.safetensors").is_file():
        return "no model.safetensors"
    return None


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders start with '.')."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and is_checkpoint(p)]
    return [p for _, p in sorted(found)]


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder itself, or the newest complete checkpoint of a run folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a run folder or a checkpoint folder")
    if is_checkpoint(path):
        return path
    found = list_checkpoints(path)
    if not found:
        raise FileNotFoundError(
            f"{path} is neither a checkpoint folder nor a run folder with complete checkpoints under "
            f"{path / 'checkpoints'}"
        )
    if os.environ.get("RANK", "0") == "0":  # under torchrun, said once
        for newer, why in skipped_checkpoints(path, found[-1]):
            note = f"note: {newer} is newer but not a complete checkpoint ({why}); using {found[-1].name}"
            print(note, file=sys.stderr)
    return found[-1]


def skipped_checkpoints(run_dir: Path, newest: Path) -> list[tuple[Path, str]]:
    """Step folders after the newest complete checkpoint that are not complete, with why."""
    after = int(_STEP_DIR.match(newest.name).group(1))
    out = []
    for p in sorted((run_dir / "checkpoints").iterdir()):
        if (m := _STEP_DIR.match(p.name)) and int(m.group(1)) > after and (why := _incomplete(p)):
            out.append((p, why))
    return out


def load_checkpoint(path: str | os.PathLike, with_train_state: bool = False) -> Checkpoint:
    """A checkpoint folder, or a run's newest complete one; one that a live run prunes while it
    is read (--keep-checkpoints) is passed over for the newest again."""
    for attempt in range(5):
        chosen = find_checkpoint(path)
        try:
            return _load(chosen, with_train_state)
        except (OSError, ValueError):
            if chosen.exists() or chosen == Path(path) or attempt == 4:
                raise


def _load(path: Path, with_train_state: bool) -> Checkpoint:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        _verify(path, config.get("sha256"), with_train_state)
        try:
            model = Electra(ModelConfig.from_dict(config["model"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f'config.json\'s "model" record is not a model ({type(e).__name__}: {e})') from e
        try:
            model.load_state_dict(load_file(path / "model.safetensors"), strict=True)
        except RuntimeError as e:  # the tensors' names or shapes: "Error(s) in loading ...:\n\tsize mismatch ..."
            detail = str(e).strip().splitlines()[-1].strip()
            raise ValueError(f'model.safetensors does not fit config.json\'s "model" record ({detail} ...)') from e
        train_state = None
        if with_train_state:
            train_state = torch.load(path / "train_state.pt", map_location="cpu", weights_only=True)
    except (ValueError, KeyError, TypeError, RuntimeError, SafetensorError, pickle.UnpicklingError) as e:
        # folders are published whole, so this is damage after the fact (disk, copying, editing)
        raise ValueError(
            f"checkpoint {path} is damaged ({type(e).__name__}: {e}); delete that folder to use the one before it"
        ) from e
    return Checkpoint(path=path, model=model, meta=config.get("meta", {}), train_state=train_state)


def _verify(path: Path, hashes: dict | None, with_train_state: bool) -> None:
    """The files a load reads, unchanged since the checkpoint was saved (older checkpoints record
    no hashes); the training state only when it is read: the weights export without it."""
    hashes = {k: v for k, v in (hashes or {}).items() if with_train_state or k != "train_state.pt"}
    wanted = set(hashes) | ({"train_state.pt"} if with_train_state else set())
    missing = sorted(name for name in wanted if not (path / name).is_file())
    if missing:
        raise ValueError(f"{', '.join(missing)} missing")
    changed = [name for name, h in hashes.items() if file_sha256(path / name) != h]
    if changed:
        raise ValueError(f"{', '.join(changed)} changed since it was saved (SHA-256 differs)")


def prune_checkpoints(run_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints. Each is renamed out of sight first,
    so that it is gone at once for a reader (`load_checkpoint` then takes the newest again), not
    a file at a time; a kill before it is removed leaves it for the next run to sweep."""
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        delete_out_of_sight(old)
