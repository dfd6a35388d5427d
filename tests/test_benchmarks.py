"""The GPU benchmark scripts run (on CPU, tiny shapes), print their tables and write what
`gpu_summary.py` reads: a broken script found on a GPU machine costs scarce device time."""

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT


def _run(*args, check=True):
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _table(stdout: str) -> list[str]:
    return [line.split("|")[1].strip() for line in stdout.splitlines() if line.startswith("| ")]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results folder as gpu_suite.sh leaves it, from tiny CPU runs; with each script's stdout.
    The step runs in fp16: both sides scale the loss (ours on the device, the baseline with
    GradScaler), the path GPUs without bf16 take."""
    out = tmp_path_factory.mktemp("gpu-results")
    step = _run(
        "benchmarks/pretrain_throughput.py",
        *("--preset", "tiny", "--batch", "4", "--seq", "16", "--steps", "2", "--warmup", "1", "--precision", "fp16"),
        *("--variants", "transformers,ours,ours-checkpointed,ours-streams", "--profile", str(out / "profile")),
        *("--json", str(out / "small.json"), "--deterministic"),
    )
    vocab = _run(
        "benchmarks/vocab_stage.py",
        *("--batch", "4", "--seq", "32", "--vocab", "1000", "--steps", "2", "--warmup", "1", "--precision", "fp32"),
        *("--json", str(out / "vocab-stage.json")),
    )
    (out / "suite.log").write_text(  # as gpu_suite.sh's stage() writes it
        "== cuda-tests (at 3s, limit 120s): python3 -m pytest -q tests/test_cuda.py\n"
        "........F\nFAILED tests/test_cuda.py::test_x - AssertionError\n"
        "1 failed, 8 passed in 95.20s (0:01:35)\n== cuda-tests: exit 1 at 99s\n"
        "== determinism-eager (at 99s, limit 60s): python3 benchmarks/determinism.py --device cuda --eager\n"
        "| --deterministic | two runs of the same settings |\n|---|---|\n"
        "| off | step 5, loss: 39.04170227 against 39.04169464 |\n| on | equal at every step |\n"
        "== determinism-eager: exit 0 at 130s\n"
        "== small (at 130s, limit 160s): python3 benchmarks/pretrain_throughput.py\n"
        "| on | not a check |\n== small: exit 0 at 290s\n== determinism: skipped, 530s of 555s used\n"
    )
    (out / "pretrain-loop.jsonl").write_text("".join(json.dumps({"tokens_per_s": r}) + "\n" for r in (1, 50, 70, 60)))
    return out, step.stdout, vocab.stdout


def test_pretrain_throughput_table_and_grouped_profile(results):
    out, stdout, _ = results
    assert _table(stdout) == ["variant", "transformers", "ours", "ours-checkpointed", "ours-streams"]
    assert ", fp16," in stdout and ", deterministic" in stdout
    groups = json.loads((out / "small.json").read_text())["results"][1]["profile_ms_per_step"]
    assert groups["matmul"] > 0 and groups["total"] > groups["matmul"] and list(groups)[-1] == "total"
    assert "every kernel grouped by name" in (out / "profile.ours.txt").read_text()


def test_the_two_stream_step_is_electra_loss_in_two_halves():
    """TwoStreams (the generator's half on a second CUDA stream, each half compiled on its own)
    splits the objective without changing it: on one stream, the same loss, metrics and
    gradients as the training loop's step, bit for bit, dropout included."""
    import importlib.util

    from electra.config import tiny
    from electra.model import Electra
    from electra.objective import ObjectiveConfig, electra_loss, loss_counts
    from electra.parallel import TrainStep

    spec = importlib.util.spec_from_file_location("pretrain_throughput", ROOT / "benchmarks/pretrain_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.manual_seed(0)
    model = Electra(tiny(vocab_size=100)).train()
    ids = torch.randint(5, 100, (4, 16))
    ids[:, 0], ids[:, -1] = 2, 3
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    special = torch.zeros(100, dtype=torch.bool)
    special[[0, 2, 3, 4]] = True
    rows, seed, cfg = torch.arange(4), torch.tensor(7), ObjectiveConfig()
    totals = loss_counts(ids, mask, special, cfg.mask_prob, rows, seed, False)

    def run(step):
        model.zero_grad()
        torch.manual_seed(1)
        loss, metrics = step(ids, torch.zeros_like(ids), mask, special, rows, seed, 4, totals)
        loss.backward()
        return loss, metrics, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    loss, metrics, grads = run(TrainStep(model, electra_loss, cfg))
    loss2, metrics2, grads2 = run(bench.TwoStreams(model, cfg, torch.device("cpu")))
    assert torch.equal(loss, loss2) and list(metrics) == list(metrics2) and grads.keys() == grads2.keys()
    assert all(torch.equal(metrics[k], metrics2[k]) for k in metrics)
    assert all(torch.equal(grads[k], grads2[k]) for k in grads) and len(grads) == len(list(model.parameters()))


def test_vocab_stage_compares_both_formulations(results):
    assert _table(results[2]) == ["variant", "full-cdf", "library"]


def test_the_summary_gathers_every_stage(results):
    summary = _run("benchmarks/gpu_summary.py", str(results[0])).stdout
    assert "| small | tiny 4x16 fp16 | transformers +deterministic |" in summary and "| 1.00x |" in summary
    assert "small ours (ms per step): " in summary
    assert "vocabulary stage (CPU" in summary
    assert "median 60 tokens/s over 3 log windows" in summary  # the first window (compiling) left out
    assert "cuda-tests: 1 failed, 8 passed in 95.20s (0:01:35); exit 1\n" in summary
    assert (
        "determinism-eager: --deterministic off: step 5, loss: 39.04170227 against 39.04169464; "
        "--deterministic on: equal at every step; exit 0\n"
    ) in summary
    assert "determinism: skipped\n" in summary and "not a check" not in summary


def test_bad_options_are_refused_with_a_reason(tmp_path):
    result = _run("benchmarks/pretrain_throughput.py", "--inductor", "no_such_option=1", check=False)
    assert result.returncode != 0 and "has no 'no_such_option'" in result.stderr
    result = _run("benchmarks/gpu_summary.py", str(tmp_path / "missing"), check=False)
    assert result.returncode != 0 and "is not a folder" in result.stderr


def test_finetune_benchmark_times_each_precision(tmp_path):
    sst2 = ROOT.parent / "shared" / "data" / "glue" / "SST-2"
    if not sst2.is_dir():
        pytest.skip("needs ../shared/data/glue/SST-2")
    result = _run("benchmarks/finetune_throughput.py", "--preset", "tiny", "--examples", "64", "--device", "cpu")
    assert _table(result.stdout) == ["precision", "fp32", "bf16"]
    assert "64 SST-2 training sentences" in result.stdout and "872 dev sentences" in result.stdout
    missing = _run("benchmarks/finetune_throughput.py", "--data", str(tmp_path), check=False)
    assert missing.returncode != 0 and "holds no train.tsv" in missing.stderr


def test_serve_benchmark_compares_shared_runs_with_one_request_per_run(tmp_path):
    if not (ROOT.parent / "shared" / "data" / "glue" / "SST-2").is_dir():
        pytest.skip("needs ../shared/data/glue/SST-2")
    args = ("--preset", "tiny", "--requests", "40", "--clients", "1,4", "--work", str(tmp_path))
    result = _run("benchmarks/serve_throughput.py", *args)
    assert _table(result.stdout) == [
        "variant",
        *["one per run"] * 2,
        *["shared runs"] * 2,
        *["shared runs, kept connections"] * 2,
    ]
    assert "identical labels: True" in result.stdout
    one = [line for line in result.stdout.splitlines() if line.startswith("| one per run |")]
    assert all(line.split("|")[6].strip() == "1.0" for line in one)  # --batch-size 1: a run per request


def test_objective_cost_times_every_objective(tmp_path):
    result = _run(
        "benchmarks/objective_cost.py",
        *("--batch", "2", "--seq", "16", "--vocab", "300", "--steps", "1", "--warmup", "0"),
        *("--json", str(tmp_path / "cost.json")),
    )
    assert _table(result.stdout)[1:] == [
        "electra",
        "electra-whole-words",
        "electra-15",
        "replace-mlm",
        "all-tokens-mlm",
        "mlm",
    ]
    rows = json.loads((tmp_path / "cost.json").read_text())
    assert rows[0]["relative"] == 1.0 and all(r["ms"] > 0 for r in rows)
    refused = _run("benchmarks/objective_cost.py", "--objectives", "electra,bert", check=False)
    assert refused.returncode == 2 and "unknown objective(s) bert" in refused.stderr


def test_checkpoint_io_times_saves_and_loads_with_and_without_hashes():
    result = _run("benchmarks/checkpoint_io.py", "--presets", "tiny", "--repeats", "1")
    assert _table(result.stdout) == ["preset", "tiny"]


def test_long_text_benchmark_reads_heads_and_wholes_alike(tmp_path):
    if not (ROOT.parent / "shared" / "data" / "glue" / "SST-2").is_dir():
        pytest.skip("needs ../shared/data/glue/SST-2")
    args = ("--preset", "tiny", "--words", "20000", "--chinese", "30000", "--work", str(tmp_path))
    result = _run("benchmarks/long_text.py", *args)
    rows = [line.split("|") for line in result.stdout.splitlines() if line.startswith("| 2") or line.startswith("| 3")]
    assert [r[1].strip() for r in rows] == ["20,000 words", "30,000 chinese"]
    assert all(r[7].strip() == "True" for r in rows)  # the same record either way


def test_determinism_finds_two_cpu_runs_equal_with_and_without_the_flag():
    result = _run("benchmarks/determinism.py", "--device", "cpu", "--steps", "4", "--eager")
    assert "| off | equal at every step |" in result.stdout and "| on | equal at every step |" in result.stdout
