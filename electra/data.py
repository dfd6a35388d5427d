"""Memory-mapped shard loader: deterministic order, rank slicing, exact resume.

The order of rows is a pure function of (seed, epoch): shards are shuffled, then rows within
each shard. A global batch is the next `global_batch` rows of that order; each rank takes its
contiguous slice. The loader's whole state is (epoch, offset), so resuming, or resuming with a
different number of processes, continues with exactly the rows an uninterrupted run would see.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from electra.prepare import read_manifest


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) int64
    token_type_ids: torch.Tensor  # (B, T) int64
    attention_mask: torch.Tensor  # (B, T) int64
    rows: torch.Tensor  # (B,) global position of each row within the global batch

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.input_ids, self.token_type_ids, self.attention_mask, self.rows)

    def to(self, device, non_blocking: bool = False) -> Batch:
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in self.tensors()))

    def pin_memory(self) -> Batch:
        return Batch(*(t.pin_memory() for t in self.tensors()))

    def copy_(self, other: Batch) -> None:
        """Copy `other` (same shapes, any device) into these tensors without waiting for it."""
        for a, b in zip(self.tensors(), other.tensors(), strict=True):
            a.copy_(b, non_blocking=True)

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())


class Shards:
    """All shards of one split, memory-mapped; row i of the split is (shard, offset)."""

    def __init__(self, folder: str | os.PathLike, split: str = "train"):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        if split not in self.manifest["splits"]:
            raise ValueError(f"{folder} has no {split!r} split")
        self.ids, self.types, self.lengths = [], [], []
        for shard in self.manifest["splits"][split]["shards"]:
            files = shard["files"]
            self.ids.append(np.load(self.folder / files["ids"]["path"], mmap_mode="r"))
            self.types.append(np.load(self.folder / files["types"]["path"], mmap_mode="r"))
            self.lengths.append(np.load(self.folder / files["lengths"]["path"], mmap_mode="r"))
        self.sizes = np.array([len(x) for x in self.lengths], dtype=np.int64)
        self.seq_len = self.manifest["seq_len"]

    def __len__(self) -> int:
        return int(self.sizes.sum())

    def epoch_order(self, seed: int, epoch: int) -> list[tuple[int, np.ndarray]]:
        """(shard, row permutation) pairs in this epoch's order."""
        rng = np.random.default_rng([seed, epoch])
        return [(int(s), rng.permutation(int(self.sizes[s]))) for s in rng.permutation(len(self.sizes))]


class Loader:
    """Endless batches for one rank: `micro_batch` rows of each global batch of `global_batch`."""

    def __init__(
        self,
        shards: Shards,
        global_batch: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        offset: int = 0,
    ):
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} does not divide over {world_size} processes")
        if len(shards) < global_batch:
            raise ValueError(
                f"the data has {len(shards)} rows, fewer than one batch of {global_batch}; "
                "prepare more text or lower the batch size"
            )
        self.shards, self.global_batch, self.seed = shards, global_batch, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.offset = epoch, offset
        self.last_tokens = 0  # real (non-pad) tokens of the last global batch, all ranks together
        self._order = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset, "seed": self.seed, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        self._order = None

    def _flat_order(self) -> tuple[np.ndarray, np.ndarray]:
        if self._order is None or self._order[0] != self.epoch:
            order = self.shards.epoch_order(self.seed, self.epoch)
            shard_of = np.concatenate([np.full(len(r), s, dtype=np.int32) for s, r in order])
            row_of = np.concatenate([r for _, r in order])
            self._order = (self.epoch, shard_of, row_of)
        return self._order[1], self._order[2]

    def next_global(self) -> tuple[np.ndarray, np.ndarray]:
        """(shard, row) of every row of the next global batch; a batch never spans two epochs."""
        shard_of, row_of = self._flat_order()
        if self.offset + self.global_batch > len(row_of):  # drop the ragged tail of an epoch
            self.epoch, self.offset = self.epoch + 1, 0
            shard_of, row_of = self._flat_order()
        sl = slice(self.offset, self.offset + self.global_batch)
        self.offset += self.global_batch
        shard_of, row_of = shard_of[sl], row_of[sl]
        self.last_tokens = sum(
            int(np.asarray(self.shards.lengths[s])[row_of[shard_of == s]].sum()) for s in np.unique(shard_of)
        )
        return shard_of, row_of

    def next(self, micro_batches: int = 1) -> list[Batch]:
        """This rank's micro-batches of the next global batch (accumulation splits it further)."""
        shard_of, row_of = self.next_global()
        per_rank = self.global_batch // self.world_size
        if per_rank % micro_batches:
            raise ValueError(f"{per_rank} rows per process do not split into {micro_batches} micro-batches")
        micro = per_rank // micro_batches
        out = []
        for m in range(micro_batches):
            start = self.rank * per_rank + m * micro
            out.append(self._batch(shard_of[start : start + micro], row_of[start : start + micro], start))
        return out

    def _batch(self, shard_of: np.ndarray, row_of: np.ndarray, start: int) -> Batch:
        T = self.shards.seq_len
        ids = np.empty((len(row_of), T), dtype=np.int64)
        types = np.empty((len(row_of), T), dtype=np.int64)
        lengths = np.empty(len(row_of), dtype=np.int64)
        for i, (s, r) in enumerate(zip(shard_of, row_of, strict=True)):
            ids[i] = self.shards.ids[s][r]
            types[i] = self.shards.types[s][r]
            lengths[i] = self.shards.lengths[s][r]
        mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
        rows = np.arange(start, start + len(row_of), dtype=np.int64)
        return Batch(*(torch.from_numpy(a) for a in (ids, types, mask, rows)))


class Prefetcher:
    """The loader's next batches, read ahead in a thread (pinned, for copies that do not block)
    while the device works on the current ones.

    `state_dict()` is the loader's state after the batches handed out so far, not after those
    read ahead, so a checkpoint resumes with the first batch the step loop has not seen.
    """

    def __init__(self, loader: Loader, micro_batches: int = 1, pin: bool = False, depth: int = 2):
        self.loader, self.micro_batches, self.pin = loader, micro_batches, pin
        self._state = loader.state_dict()
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="electra-prefetch", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                micro = self.loader.next(self.micro_batches)
                if self.pin:
                    micro = [b.pin_memory() for b in micro]
                item = (micro, self.loader.last_tokens, self.loader.state_dict())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # handed to the consumer, which raises it
            self._queue.put((e, None, None))

    def next(self) -> tuple[list[Batch], int]:
        """This rank's micro-batches of the next global batch, and that global batch's real tokens."""
        micro, tokens, state = self._queue.get()
        if isinstance(micro, BaseException):
            raise micro
        self._state = state
        return micro, tokens

    def state_dict(self) -> dict:
        return dict(self._state)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def iterate(shards: Shards, batch_size: int):
    """Every row once, in order (validation), numbered across shards: each row draws its own
    masking noise."""
    T, before = shards.seq_len, 0  # the rows of the shards before this one
    for s in range(len(shards.sizes)):
        for start in range(0, int(shards.sizes[s]), batch_size):
            ids = np.asarray(shards.ids[s][start : start + batch_size], dtype=np.int64)
            types = np.asarray(shards.types[s][start : start + batch_size], dtype=np.int64)
            lengths = np.asarray(shards.lengths[s][start : start + batch_size], dtype=np.int64)
            mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
            rows = np.arange(before + start, before + start + len(ids), dtype=np.int64)
            yield Batch(*(torch.from_numpy(a) for a in (ids, types, mask, rows)))
        before += int(shards.sizes[s])
