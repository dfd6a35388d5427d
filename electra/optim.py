"""Optimiser and schedule: AdamW without decay on biases and LayerNorm, warmup x linear decay."""

from __future__ import annotations

import torch
from torch import nn


def _no_decay(name: str, param: nn.Parameter) -> bool:
    # biases and LayerNorm weights (1-D tensors) are not decayed, as in BERT and ELECTRA
    return param.ndim < 2 or name.endswith(".bias")


def param_groups(model: nn.Module, weight_decay: float, lr_scale: dict[str, float] | None = None) -> list[dict]:
    """Two groups (decay / no decay), or more when `lr_scale` maps name prefixes to LR factors."""
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = 1.0
        for prefix, factor in (lr_scale or {}).items():
            if name.startswith(prefix):
                scale = factor
        groups.setdefault((_no_decay(name, p), scale), []).append(p)
    return [
        {"params": ps, "weight_decay": 0.0 if nd else weight_decay, "lr_scale": scale}
        for (nd, scale), ps in sorted(groups.items())
    ]


def adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.01,
    betas=(0.9, 0.999),
    eps: float = 1e-6,
    fused: bool | None = None,
    lr_scale: dict[str, float] | None = None,
) -> torch.optim.AdamW:
    groups = param_groups(model, weight_decay, lr_scale)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup multiplied by linear decay to 0 at `total_steps`."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return warm * max(0.0, 1.0 - step / total_steps)


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    for g in optimizer.param_groups:
        lr = base_lr * g.get("lr_scale", 1.0) * factor
        if isinstance(g["lr"], torch.Tensor):  # read from device memory by a captured CUDA graph
            g["lr"].fill_(lr)
        else:
            g["lr"] = lr
    return base_lr * factor
