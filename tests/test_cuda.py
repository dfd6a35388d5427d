"""The CUDA paths of the update: graph replay equals eager steps, non-finite updates are skipped
inside the graph, compiled + graph matches eager, a CUDA-graph run resumes exactly, and sampling
picks the tokens it picks on the CPU; fp16 loss scaling replays as it runs eagerly; fine-tuning
under its default bf16 autocast learns.

Skipped without a CUDA device; run them on a GPU machine with `python -m pytest tests/test_cuda.py`.
"""

import contextlib
import functools
import json

import pytest
import torch

from electra.config import tiny
from electra.data import Batch
from electra.model import Electra
from electra.objective import ObjectiveConfig, electra_loss
from electra.optim import adamw, lr_factor, set_lr
from electra.parallel import Dist, TrainStep
from electra.step import Update
from tests.conftest import assert_inverse_cdf
from tests.test_finetune import sentiment_tokenizer_dir  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
PAD, CLS, SEP, MASK = 0, 2, 3, 4


def _batches(n: int, B: int = 8, T: int = 64, vocab: int = 500) -> list[Batch]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        ids = torch.randint(5, vocab, (B, T), generator=g)
        ids[:, 0], ids[:, -1] = CLS, SEP
        lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
        mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
        ids = ids.masked_fill(mask == 0, PAD)
        out.append(Batch(ids, torch.zeros_like(ids), mask, torch.arange(i * B, (i + 1) * B)).pin_memory())
    return out


def _train(
    batches,
    cuda_graph: bool,
    compile: bool = False,
    dropout: float = 0.0,
    poison_at: int | None = None,
    fp16=False,
    device: str = "cuda",
):
    torch.manual_seed(0)
    cfg = tiny(vocab_size=500).with_dropout(dropout)
    device = torch.device(device)
    model = Electra(cfg).to(device).train()
    step = TrainStep(model, electra_loss, ObjectiveConfig())
    if compile:
        step = torch.compile(step)
    opt = adamw(model, 1e-3, fused=True)
    special = torch.zeros(500, dtype=torch.bool, device=device)
    special[[PAD, CLS, SEP, MASK]] = True
    autocast = functools.partial(torch.autocast, "cuda", dtype=torch.float16) if fp16 else contextlib.nullcontext
    update = Update(
        step, model, opt, special, MASK, 0.15, 1.0, Dist(), device, autocast, cuda_graph=cuda_graph, fp16=fp16
    )
    outs = []
    for i, b in enumerate(batches):
        if i == poison_at:
            with torch.no_grad():
                model.discriminator_head.out.bias.fill_(float("nan"))
        torch.manual_seed(100 + i)
        set_lr(opt, 1e-3, lr_factor(i, 2, 10))
        outs.append(update([b], 100 + i).clone())
    torch.cuda.synchronize(device)
    return model, torch.stack(outs), update


def test_graph_replay_equals_eager_steps_with_dropout_and_a_changing_learning_rate():
    batches = _batches(10)
    eager, eager_out, _ = _train(batches, cuda_graph=False, dropout=0.1)
    graph, graph_out, update = _train(batches, cuda_graph=True, dropout=0.1)
    assert update.graph is not None  # steps 4.. were replays
    torch.testing.assert_close(graph_out, eager_out, rtol=1e-6, atol=1e-6)
    for (name, a), b in zip(eager.state_dict().items(), graph.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6, msg=name)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs a second GPU")
def test_a_graph_on_the_second_gpu_replays_there():
    """`--device cuda:1` in one process: the current device stays 0, yet the graph must capture
    and replay the step on GPU 1."""
    batches = _batches(8)
    eager, eager_out, _ = _train(batches, cuda_graph=False, dropout=0.1, device="cuda:1")
    graph, graph_out, update = _train(batches, cuda_graph=True, dropout=0.1, device="cuda:1")
    assert torch.cuda.current_device() == 0 and update.graph is not None
    torch.testing.assert_close(graph_out, eager_out, rtol=1e-6, atol=1e-6)
    for (name, a), b in zip(eager.state_dict().items(), graph.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6, msg=name)


def test_fp16_loss_scaling_inside_the_graph_equals_eager_steps():
    batches = _batches(10)
    _, eager_out, eager = _train(batches, cuda_graph=False, fp16=True)
    _, graph_out, graph = _train(batches, cuda_graph=True, fp16=True)
    assert graph.graph is not None and eager.counts[0] > 0  # overflows at 2^16 were skipped, and the scale halved
    assert graph.counts.tolist() == eager.counts.tolist() and graph.loss_scale.tolist() == eager.loss_scale.tolist()
    assert eager.loss_scale[0] == 2.0**16 / 2 ** eager.counts[0]
    torch.testing.assert_close(graph_out, eager_out, rtol=1e-5, atol=1e-5)


def test_a_non_finite_update_is_skipped_inside_the_graph():
    batches = _batches(8)
    model, outs, update = _train(batches, cuda_graph=True, poison_at=6)
    assert torch.isfinite(outs[5]).all() and not torch.isfinite(outs[6][0])
    assert update.counts.tolist() == [2.0, 2.0, 2.0]  # steps 6 and 7 skipped, in a row
    reference, _, _ = _train(batches[:6], cuda_graph=False)
    state = model.state_dict()
    for name, value in reference.state_dict().items():
        if name != "discriminator_head.out.bias":  # the poisoned tensor
            torch.testing.assert_close(state[name], value, rtol=1e-6, atol=1e-6, msg=name)


def test_compiled_graph_update_matches_eager():
    batches = _batches(8)
    eager, eager_out, _ = _train(batches, cuda_graph=False)
    model, out, update = _train(batches, cuda_graph=True, compile=True)
    assert update.graph is not None  # captured and replayed, not an eager fallback
    torch.testing.assert_close(out, eager_out, rtol=2e-3, atol=2e-3)  # inductor's kernels round otherwise
    want = eager.state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, want[name], rtol=2e-3, atol=2e-3, msg=name)


def test_cuda_graph_run_resumes_exactly(tiny_data, tmp_path, capsys):
    """Bit for bit under --deterministic: by default cuDNN's attention backward adds in a varying
    order, and two runs of the same settings differ in the 7th digit from step 5 (H200, torch 2.11)."""
    from electra.checkpoint import list_checkpoints
    from electra.pretrain import PretrainConfig, run

    def cfg(out, **kw):
        return PretrainConfig(
            data=str(tiny_data),
            out=str(out),
            preset="tiny",
            batch_size=8,
            max_steps=12,
            log_every=1,
            eval_every=4,
            eval_batches=2,
            checkpoint_every=3,
            cuda_graph="on",
            deterministic=True,
            **kw,
        )

    def lines(run_dir):
        return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]

    run(cfg(tmp_path / "straight"), quiet=True)
    straight = lines(tmp_path / "straight")
    cut = tmp_path / "cut"
    run(cfg(cut, max_tokens=straight[5]["tokens"]), quiet=True)  # the same schedule, stopped after step 6
    assert list_checkpoints(cut)[-1].name == "step-00000006"
    capsys.readouterr()
    run(cfg(cut), resume=True, quiet=True)
    assert "step-00000006 (step 6 of 12)" in capsys.readouterr().err  # resumed, not a new run that ends the same
    resumed = lines(cut)
    assert [(m["step"], m["loss"], m.get("valid_loss")) for m in resumed] == [
        (m["step"], m["loss"], m.get("valid_loss")) for m in straight
    ]


def test_sampling_on_the_gpu_compiled_or_not_picks_the_cpu_tokens():
    """The same uniforms pick the same tokens: CPU, CUDA eager and CUDA compiled (bar fp32 ties),
    and CUDA eager under --deterministic (where CUDA's float cumsum would refuse to run)."""
    from electra.objective import sample_tokens
    from electra.parallel import deterministic

    torch.manual_seed(0)
    logits = torch.randn(128, 19, 30522) * 3
    rows, seed = torch.arange(128), torch.tensor(5)
    cpu = sample_tokens(logits, seed, rows)
    gpu = sample_tokens(logits.cuda(), seed.cuda(), rows.cuda()).cpu()
    compiled = torch.compile(sample_tokens)(logits.cuda(), seed.cuda(), rows.cuda()).cpu()
    with deterministic():
        fixed = sample_tokens(logits.cuda(), seed.cuda(), rows.cuda()).cpu()
    for got in (gpu, compiled, fixed):
        assert (got == cpu).float().mean() >= 0.99
        assert_inverse_cdf(logits, seed, rows, got)


def test_fine_tuning_progress_saved_on_the_cpu_continues_on_the_gpu(
    sentiment_tokenizer_dir,  # noqa: F811 (the fixture imported above)
    tmp_path,
    monkeypatch,
):
    """A seed stopped part way on the CPU (whose progress holds no CUDA random state) goes on
    from its step on a GPU."""
    from electra import finetune
    from electra.finetune import FinetuneConfig, run

    root = sentiment_tokenizer_dir  # 240 examples at batch 16: 15 steps
    common = dict(model=str(root / "model"), task="csv", data=str(root / "data"), epochs=1, batch_size=16)
    real_loss, calls = finetune._loss, []

    def counted(*args):
        calls.append(1)
        if len(calls) == 5 and args[1].device.type == "cpu":  # as a kill during the CPU run's 5th step
            raise KeyboardInterrupt
        return real_loss(*args)

    monkeypatch.setattr(finetune, "_loss", counted)
    with pytest.raises(KeyboardInterrupt):
        run(FinetuneConfig(**common, out=str(tmp_path / "o"), save_minutes=0, device="cpu"), quiet=True)
    calls.clear()
    results = run(FinetuneConfig(**common, out=str(tmp_path / "o"), save_minutes=0, device="cuda"), quiet=True)
    assert len(calls) == 11 and "accuracy" in results["median"]["dev"]  # steps 5 to 15 only


def test_finetuning_on_cuda_under_the_default_bf16_learns_question_answering(tmp_path):
    from electra import hf
    from electra.finetune import FinetuneConfig, run
    from electra.qa import read_squad
    from electra.tokenizer import save_tokenizer, train_wordpiece
    from tests.test_qa import _squad

    data = _squad(tmp_path / "data")
    examples = read_squad(data / "train-v1.1.json")
    texts = [e.text for e in examples] + [e.pair for e in examples]
    tok = train_wordpiece(texts * 3, vocab_size=150, show_progress=False)
    save_tokenizer(tok, tmp_path / "tok")
    torch.manual_seed(0)
    model = Electra(tiny(vocab_size=tok.get_vocab_size()))
    hf.export_discriminator(model, tmp_path / "model", tokenizer_dir=tmp_path / "tok")
    cfg = FinetuneConfig(
        model=str(tmp_path / "model"),
        task="squad",
        data=str(data),
        out=str(tmp_path / "qa"),
        lr=5e-3,
        batch_size=16,
        device="cuda",
    )
    results = run(cfg, quiet=True)  # precision auto: bf16 autocast on CUDA
    assert results["config"]["precision"] == "auto" and results["median"]["dev"]["f1"] > 0.9


def test_the_process_group_on_gpus_reduces_host_and_device_tensors():
    """Stop decisions are agreed on host tensors: on GPUs the group must carry them beside NCCL's."""
    import torch.distributed as dist

    from electra.parallel import backend

    dist.init_process_group(backend(torch.device("cuda")), store=dist.HashStore(), rank=0, world_size=1)
    try:
        for device in ("cpu", "cuda"):
            t = torch.tensor([0.0, 1.0], device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            assert t.tolist() == [0.0, 1.0]
    finally:
        dist.destroy_process_group()
