import contextlib
from dataclasses import replace

import pytest
import torch

from electra.config import tiny
from electra.data import Batch
from electra.model import Electra
from electra.objective import MAIN_LM_HEAD, OBJECTIVES, SPECIAL, ObjectiveConfig
from electra.optim import adamw
from electra.parallel import Dist, TrainStep
from electra.step import Update
from tests.conftest import batch

MASK = 4  # the [MASK] id of the tiny vocabulary


def _update(clip_norm=1.0, wrap=None, loss_scale=None, dist=None, objective="electra"):
    """A tiny model's whole update (electra.step.Update), on CPU; `wrap` wraps its train step, `dist`
    places it among processes (alone by default)."""
    torch.manual_seed(0)
    cfg = replace(tiny(vocab_size=100), discriminator_lm_head=objective in MAIN_LM_HEAD)
    model = Electra(cfg.with_dropout(0.0)).train()
    step = TrainStep(model, OBJECTIVES[objective], ObjectiveConfig(kind=objective))
    step = wrap(step) if wrap else step
    opt = adamw(model, 1e-3, 0.01, fused=True)
    kinds = torch.zeros(100, dtype=torch.int8)
    kinds[[0, 2, 3, MASK]] = SPECIAL
    settings = (kinds, MASK, 0.15, clip_norm, dist or Dist(), torch.device("cpu"), contextlib.nullcontext)
    up = Update(step, model, opt, *settings, fp16=loss_scale is not None, loss_scale=loss_scale)
    return model, opt, up


def _batches(n):
    out = []
    for i in range(n):
        ids, types, mask = batch(100, B=3, T=12, seed=i)
        out.append(Batch(ids, types, mask, torch.arange(3 * i, 3 * i + 3)))
    return out


def test_the_update_clips_the_gradient_norm_before_adamw_and_logs_the_norm_before_clipping():
    model, opt, update = _update(clip_norm=0.01)
    seen = []
    real = opt.step

    def step(*a, **k):  # the gradients AdamW gets
        norms = [p.grad.norm() for p in model.parameters() if p.grad is not None]
        seen.append(torch.linalg.vector_norm(torch.stack(norms)).item())
        return real(*a, **k)

    opt.step = step
    out = update(_batches(1), 7)
    norm = out[update.names.index("grad_norm")].item()
    assert norm > 0.01  # the norm logged is the one before clipping
    assert seen[0] == pytest.approx(0.01, rel=1e-3)  # AdamW saw it clipped to --clip-norm


def test_the_longest_run_of_skipped_updates_is_kept_between_logs():
    calls = {"n": 0}

    def nan_on_calls_1_and_2(inner):
        def train_step(*args):
            loss, metrics = inner(*args)
            calls["n"] += 1
            return (loss * float("nan") if calls["n"] in (1, 2) else loss), metrics

        return train_step

    _, _, update = _update(wrap=nan_on_calls_1_and_2)
    for i, b in enumerate(_batches(4)):
        update([b], i)
    assert update.counts.tolist() == [2.0, 0.0, 2.0]  # 2 skipped, none now, longest run 2


def test_loss_scaling_starts_and_grows_as_gradscaler_does():
    from electra.step import INITIAL_LOSS_SCALE, next_loss_scale

    assert INITIAL_LOSS_SCALE == 2.0**16  # torch.amp.GradScaler's init_scale
    good = torch.tensor(0.0)
    assert next_loss_scale(torch.tensor([8.0, 1998.0]), good).tolist() == [8.0, 1999.0]
    assert next_loss_scale(torch.tensor([8.0, 1999.0]), good).tolist() == [16.0, 0.0]  # growth_interval 2000


def test_a_rate_with_nothing_counted_is_zero_not_nan():
    def no_hits(inner):
        def train_step(*args):
            loss, metrics = inner(*args)
            return loss, {**metrics, "empty_rate": torch.zeros(2)}  # (hits, count) = (0, 0)

        return train_step

    _, _, update = _update(wrap=no_hits)
    out = update(_batches(1), 0)
    assert out[update.names.index("empty_rate")].item() == 0.0


def test_scaled_gradients_are_unscaled_before_clipping_and_the_logged_norm():
    """fp16's loss scale multiplies the gradients; the update must see (and log) the true ones."""
    model, _, plain = _update()
    scaled_model, _, scaled = _update(loss_scale=(1024.0, 0.0))
    a, b = plain(_batches(1), 3), scaled(_batches(1), 3)
    i = plain.names.index("grad_norm")
    assert b[i].item() == pytest.approx(a[i].item(), rel=1e-4)
    for p, q in zip(model.parameters(), scaled_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)  # the same step was taken


def _rows(*seeds):
    """One batch of 3 x len(seeds) rows, padded differently in each part, numbered 0, 1, ..."""
    parts = [batch(100, B=3, T=12, seed=s) for s in seeds]
    ids, types, mask = (torch.cat(t) for t in zip(*parts, strict=True))
    return Batch(ids, types, mask, torch.arange(len(ids)))


def _split(b, size):
    return [Batch(*(t[i : i + size] for t in b.tensors())) for i in range(0, len(b.rows), size)]


def test_micro_batches_take_the_step_of_the_whole_batch():
    """Gradient accumulation: a step split into micro-batches logs and applies what the whole batch would."""
    whole_model, _, whole = _update()
    split_model, _, split = _update()
    rows = _rows(5, 6)
    a = whole([rows], 11)
    b = split(_split(rows, 3), 11)
    assert split.names == whole.names
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    for p, q in zip(whole_model.parameters(), split_model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


def test_logged_rates_are_the_hits_over_the_counts_of_every_micro_batch():
    seen = []

    def keep(inner):
        def train_step(*args):
            loss, metrics = inner(*args)
            seen.append({k: v.detach().clone() for k, v in metrics.items()})
            return loss, metrics

        return train_step

    _, _, update = _update(wrap=keep)
    out = update(_batches(2), 3)
    rates = [k for k, v in seen[0].items() if v.numel() == 2]  # (hits, count) pairs
    assert "disc_accuracy" in rates
    for name in rates:
        hits, count = (sum(s[name][i] for s in seen).item() for i in (0, 1))
        assert out[update.names.index(name)].item() == pytest.approx(hits / max(count, 1), rel=1e-6), name
    assert 0 < out[update.names.index("disc_accuracy")].item() < 1  # a rate, not a count or a constant


def test_a_cuda_graph_is_refused_off_cuda():
    model, opt, _ = _update()
    kinds = torch.zeros(100, dtype=torch.int8)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device and a single process"):
        cpu = torch.device("cpu")
        Update(None, model, opt, kinds, MASK, 0.15, 1.0, Dist(), cpu, contextlib.nullcontext, cuda_graph=True)
