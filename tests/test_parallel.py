"""electra.parallel in one process: torchrun's environment, joining a process group, and what
each process of a data-parallel step contributes (the multi-process runs are test_distributed's)."""

import contextlib

import pytest
import torch
import torch.distributed as dist

from electra import parallel
from electra.parallel import Dist
from electra.step import _sync

CPU = torch.device("cpu")


@pytest.fixture
def group():
    """A process group of this process alone (gloo): collectives run, and sum over one process."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_a_process_reads_its_place_among_torchruns_from_the_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert parallel.from_env() == Dist(0, 1, 0)
    # the second process on the second of two 4-GPU nodes: its GPU is its local rank, not its rank
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    d = parallel.from_env()
    assert (d.rank, d.world_size, d.local_rank) == (5, 8, 1)
    assert d.enabled and not d.main
    monkeypatch.delenv("LOCAL_RANK")
    assert parallel.from_env() == Dist(5, 8, 0)


def test_init_joins_a_group_the_caller_started_and_shutdown_leaves_it(group, monkeypatch):
    """`glue --data-parallel` starts one group for all its tasks; each task's fine-tuning joins it
    (a second init_process_group would be refused)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    d, device = parallel.init("cpu")
    assert d == Dist(1, 2, 1) and device == torch.device("cpu")
    assert dist.get_world_size() == 1  # still the caller's group
    parallel.shutdown()
    assert not dist.is_initialized()
    parallel.shutdown()  # alone (or already shut down): nothing to do


def test_gradients_sync_on_the_last_micro_batch_of_a_step_only():
    """DDP: every micro-batch but the last runs under no_sync; FSDP2: the flag is set for each."""

    class DDPLike:
        def __init__(self):
            self.synced = []

        @contextlib.contextmanager
        def no_sync(self):
            self.synced.append(False)
            yield

    class FSDPLike:
        def __init__(self):
            self.synced = []

        def set_requires_gradient_sync(self, on):
            self.synced.append(on)

    for module in (DDPLike(), FSDPLike()):
        for last in (False, False, True):
            with _sync(module, last):
                pass
        assert module.synced == ([False, False] if isinstance(module, DDPLike) else [False, False, True])
    with _sync(torch.nn.Linear(1, 1), False):  # one process: nothing to sync
        pass


@pytest.mark.parametrize("loss_scale", [None, (1024.0, 0.0)], ids=["fp32", "fp16"])
def test_each_process_backpropagates_world_size_times_its_share_of_the_loss(group, loss_scale):
    """A process's loss is its rows' share of the whole batch's mean, and DDP (FSDP2 alike)
    averages the processes' gradients: each multiplies its gradients by the number of processes,
    so the average is the sum of the shares, the whole batch's gradient. Under fp16 the loss scale
    comes on top and is taken off before clipping. Here the collectives sum over this process
    alone, so one process of two must hand AdamW twice what a process alone does, and log the
    same loss."""
    from tests.test_step import _batches, _update

    got = {}
    for d in (Dist(), Dist(0, 2)):
        model, opt, update = _update(clip_norm=1e9, loss_scale=loss_scale, dist=d)
        seen, real = [], opt.step

        def step(*a, real=real, model=model, seen=seen, **k):
            seen.extend(p.grad.clone() for p in model.parameters() if p.grad is not None)
            return real(*a, **k)

        opt.step = step
        out = update(_batches(2), 7)
        got[d.world_size] = seen, dict(zip(update.names, out.tolist(), strict=True))
    (alone, logged_alone), (one_of_two, logged) = got[1], got[2]
    assert len(alone) == len(one_of_two) > 0
    for g, h in zip(alone, one_of_two, strict=True):
        torch.testing.assert_close(h, 2 * g, rtol=1e-6, atol=0)
    assert logged["loss"] == pytest.approx(logged_alone["loss"], rel=1e-6)
    assert logged["grad_norm"] == pytest.approx(2 * logged_alone["grad_norm"], rel=1e-5)


@pytest.mark.parametrize("kind", ["mlm", "replace-mlm"])
def test_ddp_trains_objectives_that_leave_weights_without_gradients(group, kind):
    """The MLM baseline never uses the discriminator, Replace MLM its replaced-token head: DDP
    must expect parameters that get no gradient, or it refuses the step after the first."""
    from tests.test_step import _batches, _update

    d = Dist(0, 2)
    model, _, update = _update(dist=d, objective=kind, wrap=lambda step: parallel.wrap(step, d, "ddp", CPU))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for i, b in enumerate(_batches(3)):
        update([b], i)
    assert parallel.layout(update.train_step, d) == "2 processes (DDP, parameters replicated)"
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # it trained


def test_fsdp_shards_every_transformer_layer_on_its_own_and_the_rest_together(group):
    """Each layer is gathered only while it computes (what lets a large model fit); the root unit
    keeps the shared embeddings, the tied output layer and the heads."""
    from torch.distributed.fsdp import FSDPModule

    from electra.config import tiny
    from electra.model import Electra
    from electra.objective import ObjectiveConfig, electra_loss

    d = Dist(0, 2)
    model = Electra(tiny(vocab_size=100))
    step = parallel.TrainStep(model, electra_loss, ObjectiveConfig())
    wrapped = parallel.wrap(step, d, "fsdp", CPU)
    assert wrapped is step and isinstance(step, FSDPModule)
    layers = [*model.generator.layers, *model.discriminator.layers]
    assert len(layers) > 2 and all(isinstance(layer, FSDPModule) for layer in layers)
    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    assert units == layers  # nothing else apart from the root
    assert parallel.layout(wrapped, d) == "2 processes (FSDP2, parameters sharded)"
