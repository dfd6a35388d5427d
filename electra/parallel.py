"""Processes and wrappers: torchrun initialisation, DDP / FSDP2, collectives, full state dicts.

The model file knows nothing of this. `TrainStep` gives the objective a `forward`, which is
what DDP and FSDP2 hook into; the unwrapped `Electra` is always kept for saving.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device, native_bf16: bool | None = None) -> str:
    """The precision a run uses. `auto`: bf16 on CUDA GPUs that compute in it (Ampere and newer),
    fp16 with loss scaling on older ones (V100, T4: bf16 would be emulated there, at fp32 speed
    or below), fp32 on CPU. `native_bf16` overrides what the GPU reports."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    if native_bf16 is None:
        native_bf16 = _native_bf16(torch.cuda.current_device() if device.index is None else device.index)
    return "bf16" if native_bf16 else "fp16"


@functools.cache
def _native_bf16(index: int) -> bool:
    """Whether GPU `index` computes in bf16 (asked once: autocast resolves `auto` at every step)."""
    return torch.cuda.get_device_capability(index)[0] >= 8


def autocast(device: torch.device, precision: str):
    """The autocast a step runs in: bf16 or fp16 (see `resolve_precision`), or none for fp32."""
    resolved = resolve_precision(precision, device)
    dtype = torch.float16 if resolved == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=resolved != "fp32")


def allow_tf32(device: torch.device) -> None:
    """On CUDA, what stays in fp32 runs its matmuls on tensor cores (TF32)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


@contextlib.contextmanager
def deterministic(on: bool = True):
    """Within it, kernels add in a fixed order: the same run twice (or a run and its resume) gives
    the same numbers bit for bit on CUDA too, where cuDNN's attention backward otherwise adds in
    a varying order (CPU kernels already do). cuBLAS needs a fixed workspace for this
    (CUBLAS_WORKSPACE_CONFIG, set when unset; torch reads it at the process's first cuBLAS call,
    so in a process that already ran one on the GPU, set it before). Restores the previous
    setting on the way out."""
    if not on:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def pick_device(name: str = "auto") -> torch.device:
    """`auto` (CUDA when there is one), `cpu`, `cuda` or `cuda:N`, refused when this machine lacks it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this PyTorch sees no CUDA GPU; use --device cpu (or auto)")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def from_env() -> Dist:
    """This process's place among those `torchrun` started, from the environment (alone: 0 of 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def dropout_seed(seed: int, rank: int, step: int) -> int:
    """The seed of a training step's dropout masks in one process. Each process draws its own
    masks (one seed in all of them would repeat the first process's masks on the others' rows),
    and a resumed run draws the ones an uninterrupted run drew, with no random state to save."""
    return ((seed * 1_000_003 + rank) * 1_000_003 + step) % 2**63  # torch seeds are 64-bit signed


def process_device(device_name: str, d: Dist) -> torch.device:
    """The device this process runs on: under torchrun on CUDA, the GPU of its local rank."""
    picked = pick_device(device_name)
    if not d.enabled:
        return picked
    if picked.type == "cuda":
        torch.cuda.set_device(d.local_rank)
        return torch.device("cuda", d.local_rank)
    return torch.device("cpu")


def backend(device: torch.device) -> str:
    """NCCL for CUDA tensors; gloo for CPU ones (stop decisions, on the host) on GPUs too."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def init(device_name: str = "auto", timeout_minutes: float = 10.0) -> tuple[Dist, torch.device]:
    """Join the process group that `torchrun` describes in the environment (or run alone)."""
    d = from_env()
    device = process_device(device_name, d)
    if d.enabled and not dist.is_initialized():
        # a peer that dies surfaces as an error in the next collective; the timeout bounds a hang
        dist.init_process_group(backend(device), timeout=timedelta(minutes=timeout_minutes))
    return d, device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


class TrainStep(nn.Module):
    """One objective evaluation as a module `forward`, the entry point DDP and FSDP2 hook into."""

    def __init__(self, model: nn.Module, objective, cfg):
        super().__init__()
        self.model, self.objective, self.cfg = model, objective, cfg

    def forward(self, input_ids, token_type_ids, attention_mask, special, rows, seed: int, mask_id: int, totals=None):
        return self.objective(
            self.model, input_ids, token_type_ids, attention_mask, special, rows, seed, mask_id, self.cfg, totals
        )


STRATEGIES = ("ddp", "fsdp")  # how `wrap` shares the step among processes


def wrap(step: TrainStep, d: Dist, strategy: str, device: torch.device) -> nn.Module:
    """DDP (default) or FSDP2 around the step; a single process gets it as it is."""
    if not d.enabled:
        return step
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        # the MLM baseline never uses the discriminator's parameters, Replace MLM its replaced-token head
        unused = step.cfg.kind in ("mlm", "replace-mlm")
        return DistributedDataParallel(
            step, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=unused
        )
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        model = step.model
        for block in [*model.generator.layers, *model.discriminator.layers]:
            fully_shard(block)
        # the root unit keeps the shared embeddings, the tied output layer and the heads together
        fully_shard(step)
        return step
    raise ValueError(f"unknown strategy {strategy!r}; use {' or '.join(STRATEGIES)}")


def layout(step: nn.Module, d: Dist) -> str:
    """How `wrap` spread the step, read from the module it returned: for the run's first lines."""
    if not d.enabled:
        return "one process"
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    kind = "FSDP2, parameters sharded" if isinstance(step, FSDPModule) else ""
    kind = "DDP, parameters replicated" if isinstance(step, DistributedDataParallel) else kind
    return f"{d.world_size} processes ({kind or type(step).__name__})"


class Agreement:
    """Flags every process acts on at the same step (stop for a signal, the time budget), agreed
    without waiting for the others: each call posts this process's flags to a background
    all-reduce (host tensors, gloo; the GPU is not synchronised) and returns, for each flag,
    whether any process raised it one call earlier. So a stop raised anywhere is taken by all
    one step later, whatever the log interval: torchrun kills its workers 30 s after passing
    SIGTERM on. Alone, a call returns its own flags at once. Every process must call it the
    same number of times, then `close()`."""

    def __init__(self, d: Dist) -> None:
        self.d = d
        self.pending: tuple[torch.Tensor, dist.Work] | None = None

    def __call__(self, flags: list[bool]) -> list[bool]:
        if not self.d.enabled:
            return flags
        agreed = self._take() or [False] * len(flags)
        t = torch.tensor([1.0 if f else 0.0 for f in flags])
        self.pending = (t, dist.all_reduce(t, op=dist.ReduceOp.MAX, async_op=True))
        return agreed

    def _take(self) -> list[bool] | None:
        if self.pending is None:
            return None
        t, work = self.pending
        self.pending = None
        work.wait()
        return [bool(x) for x in t.tolist()]

    def close(self) -> None:
        """Wait for the last posted flags: no collective is left in flight behind this one."""
        self._take()


def all_gather_tensors(tensors: dict[int, torch.Tensor], d: Dist) -> dict[int, torch.Tensor]:
    """Every process's float32 CPU tensors (any shapes, keys distinct among processes), on every
    process. Host tensors: gloo carries them, also beside NCCL (`backend`)."""
    if not d.enabled:
        return dict(tensors)
    header = torch.tensor([x for k, t in tensors.items() for x in (k, t.dim(), *t.shape)], dtype=torch.int64)
    payload = torch.cat([t.reshape(-1).float() for t in tensors.values()]) if tensors else torch.zeros(0)
    gathered = {}
    for head, data in zip(_all_gather_1d(header, d), _all_gather_1d(payload, d), strict=True):
        head, at, used = head.tolist(), 0, 0
        while at < len(head):
            key, dims = head[at], head[at + 1]
            shape = head[at + 2 : at + 2 + dims]
            size = math.prod(shape)
            gathered[key] = data[used : used + size].reshape(shape)
            at, used = at + 2 + dims, used + size
    return gathered


def _all_gather_1d(t: torch.Tensor, d: Dist) -> list[torch.Tensor]:
    """Each process's 1-D tensor, whatever its length."""
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(d.world_size)]
    dist.all_gather(sizes, torch.tensor([t.numel()]))
    longest = max(1, *(int(n) for n in sizes))  # never an empty exchange
    parts = [t.new_empty(longest) for _ in range(d.world_size)]
    dist.all_gather(parts, torch.cat([t, t.new_zeros(longest - t.numel())]))
    return [part[: int(n)] for part, n in zip(parts, sizes, strict=True)]


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Whole (unsharded) model and optimizer state on CPU, keyed by parameter name.

    Name-keyed, so a checkpoint loads under any strategy and number of processes. A
    collective under FSDP2: every process calls it; rank 0 writes what it returns.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a name-keyed full optimizer state into this process's (possibly sharded) optimizer.

    A parameter with no state in it is one no step has updated yet (AdamW makes its state at the
    first update): the MLM baseline's unused discriminator, Replace MLM's replaced-token head. It
    stays without, as in the run that saved it (a strict load, the default, refuses such a state)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, strict=False)
    set_optimizer_state_dict(model, optimizer, state, options=options)
