"""One optimizer update that never waits for the device: objective, backward, clip, AdamW.

    pinned CPU batches ──copy──▶ objective per micro-batch ──backward──▶ clip 1.0 ──AdamW──▶ metrics

Nothing here reads a value back to the host. A non-finite loss or gradient norm becomes fused
AdamW's `found_inf` flag, which skips the update on the device; skipped updates and the longest
run of them are counted on the device as well, and the loop reads counts and metrics only when
it logs. The seed reaches the objective as a device tensor, so a compiled step never recompiles.

With `fp16`, the loss is scaled before backward and the gradients unscaled after it (dynamic
loss scaling, as torch.amp.GradScaler does it, but on the device): an update whose gradients
overflow is skipped like any non-finite one and halves the scale; 2,000 good updates in a row
double it.

With `cuda_graph`, the whole update (copies excepted) is captured as one CUDA graph after a few
eager steps and replayed from then on: one launch per step instead of about a thousand, which
is what a small model on a large GPU otherwise waits for. A replay runs exactly the kernels of
an eager step, with the same inputs, seed and dropout stream.
"""

from __future__ import annotations

import contextlib

import torch

from electra.data import Batch
from electra.objective import loss_counts
from electra.parallel import Dist, all_reduce_sum


def _sync(module, last: bool):
    """Gradient sync only on the last micro-batch of a step (DDP's no_sync, FSDP2's flag)."""
    if hasattr(module, "no_sync"):
        return contextlib.nullcontext() if last else module.no_sync()
    if hasattr(module, "set_requires_gradient_sync"):
        module.set_requires_gradient_sync(last)
    return contextlib.nullcontext()


class Update:
    """`update(batches, seed)` applies one optimizer step and returns its metrics as one device tensor.

    `names` labels that tensor (known after the first call); `counts` holds, on the device,
    (updates skipped so far, the current run of skipped updates, the longest such run).
    """

    def __init__(
        self,
        train_step,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        special: torch.Tensor,
        mask_id: int,
        mask_prob: float,
        clip_norm: float,
        dist: Dist,
        device: torch.device,
        autocast,
        cuda_graph: bool = False,
        warmup_steps: int = 3,
        skipped: int = 0,
        fp16: bool = False,
        loss_scale: tuple[float, float] | None = None,
        whole_word: bool = False,
    ):
        if cuda_graph and (device.type != "cuda" or dist.enabled):
            raise ValueError("CUDA graphs need a CUDA device and a single process")
        self.train_step, self.model, self.optimizer = train_step, model, optimizer
        self.special, self.mask_id, self.mask_prob, self.whole_word = special, mask_id, mask_prob, whole_word
        self.clip_norm, self.dist, self.device, self.autocast = clip_norm, dist, device, autocast
        self.names: list[str] | None = None
        self.numerators = self.denominators = None  # where each name's value sits in the summed parts
        self.counts = torch.tensor([float(skipped), 0.0, 0.0], device=device)
        # (scale, good updates since it last changed); a checkpoint keeps it for exact resume
        self.loss_scale = torch.tensor(loss_scale or (INITIAL_LOSS_SCALE, 0.0), device=device) if fp16 else None
        self.cuda_graph, self.warmup_steps, self.calls = cuda_graph, warmup_steps, 0
        self.graph = self.static = self.seed = self.side = self.out = None
        if cuda_graph:  # a captured step reads its learning rate from device memory, refreshed by set_lr
            for g in optimizer.param_groups:
                g["lr"] = torch.tensor(float(g["lr"]), device=device)

    def __call__(self, micro: list[Batch], seed: int) -> torch.Tensor:
        if not self.cuda_graph:
            seed_t = torch.full((), seed, dtype=torch.int64, device=self.device)
            return self._update([b.to(self.device, non_blocking=True) for b in micro], seed_t)
        if self.static is None:
            self.static = [b.to(self.device) for b in micro]
            self.seed = torch.zeros((), dtype=torch.int64, device=self.device)
            self.side = torch.cuda.Stream(self.device)
        for s, b in zip(self.static, micro, strict=True):
            s.copy_(b)
        self.seed.fill_(seed)
        self.calls += 1
        if self.calls <= self.warmup_steps:  # eager steps on a side stream, as graph capture requires
            self.side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.side):
                out = self._update(self.static, self.seed)
            torch.cuda.current_stream(self.device).wait_stream(self.side)
            return out
        # a graph captures and replays on the current device's streams: make it this step's GPU
        # (`--device cuda:1` in one process leaves the current device at 0)
        with torch.cuda.device(self.device):
            if self.graph is None:
                for g in self.optimizer.param_groups:  # AdamW refuses to be captured otherwise
                    g["capturable"] = True
                self.graph = torch.cuda.CUDAGraph()
                # thread_local: the prefetching thread may pin memory while this one captures
                capture = torch.cuda.Stream(self.device)
                with torch.cuda.graph(self.graph, stream=capture, capture_error_mode="thread_local"):
                    self.out = self._update(self.static, self.seed)
            self.graph.replay()
        return self.out

    def _update(self, micro: list[Batch], seed: torch.Tensor) -> torch.Tensor:
        # the step's loss is the mean over the whole global batch: every part divides its sums by
        # the global counts, and DDP's gradient average over processes is undone by `world_size`
        totals = sum(
            loss_counts(b.input_ids, b.attention_mask, self.special, self.mask_prob, b.rows, seed, self.whole_word)
            for b in micro
        )
        totals = all_reduce_sum(totals, self.dist)
        parts = None
        for m, b in enumerate(micro):
            with _sync(self.train_step, m == len(micro) - 1), self.autocast():
                loss, metrics = self.train_step(
                    b.input_ids, b.token_type_ids, b.attention_mask, self.special, b.rows, seed, self.mask_id, totals
                )
                scale = self.dist.world_size if self.loss_scale is None else self.dist.world_size * self.loss_scale[0]
                (loss * scale).backward()
            if self.names is None:  # the first call is eager: a capture may not copy from the host
                self._layout(metrics, loss.device)
            # every entry adds up over parts: losses are shares of the global means, rates (hits, count)
            part = torch.cat([loss.detach().float().reshape(1), *(v.float().reshape(-1) for v in metrics.values())])
            parts = part if parts is None else parts + part
        parts = all_reduce_sum(parts, self.dist)
        parts = torch.cat([parts, parts.new_ones(1)])  # the last entry divides the losses
        values = parts[self.numerators] / parts[self.denominators].clamp(min=1)
        if self.loss_scale is not None:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            grads = [g.to_local() if hasattr(g, "to_local") else g for g in grads]  # FSDP2: each shard
            torch._foreach_mul_(grads, 1.0 / self.loss_scale[0])
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP2: a DTensor
        bad = (~(torch.isfinite(norm) & torch.isfinite(values[0]))).float()
        self.optimizer.found_inf = bad  # fused AdamW leaves weights, moments and step count alone
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf
        self.optimizer.zero_grad(set_to_none=True)
        run = (self.counts[1] + 1) * bad
        self.counts.copy_(torch.stack([self.counts[0] + bad, run, torch.maximum(self.counts[2], run)]))
        if self.loss_scale is not None:
            self.loss_scale.copy_(next_loss_scale(self.loss_scale, bad))
        return torch.cat([values, norm.detach().float().reshape(1)])

    def _layout(self, metrics: dict[str, torch.Tensor], device: torch.device) -> None:
        """`names`, and for each but grad_norm the index of its sum and of what divides it."""
        self.names = ["loss", *metrics, "grad_norm"]
        sizes = [1] + [v.numel() for v in metrics.values()]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        one = sum(sizes)
        self.numerators = torch.tensor(starts, device=device)
        below = [s + 1 if n == 2 else one for s, n in zip(starts, sizes, strict=True)]
        self.denominators = torch.tensor(below, device=device)


INITIAL_LOSS_SCALE = 2.0**16  # GradScaler's default
GROWTH_INTERVAL = 2000  # good fp16 updates in a row before the loss scale doubles (GradScaler's default)


def next_loss_scale(state: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """(scale, good updates in a row) after an update that was `bad` (1.0: its gradients were not
    finite, so it was skipped) or not (0.0): halved on a bad one, doubled after GROWTH_INTERVAL good ones."""
    good = (state[1] + 1) * (1 - bad)
    grow = (good >= GROWTH_INTERVAL).float()
    scale = state[0] * torch.where(bad > 0, 0.5, torch.where(grow > 0, 2.0, 1.0))
    return torch.stack([scale, good * (1 - grow)])
