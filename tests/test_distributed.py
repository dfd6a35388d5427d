"""Real processes under torchrun (gloo on CPU): DDP and FSDP2 equal one process, resume across
world sizes, and a dead worker stops the run promptly."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from electra import hf
from electra.checkpoint import list_checkpoints, load_checkpoint

ARGS = [
    "--preset",
    "tiny",
    "--batch-size",
    "8",
    "--dropout",
    "0",
    "--log-every",
    "1",
    "--eval-every",
    "3",
    "--eval-batches",
    "2",
    "--checkpoint-every",
    "3",
    "--keep-checkpoints",
    "10",
    "--quiet",
]


def _pretrain(data, out, procs=1, *extra, check=True):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    cmd = [
        *(launcher if procs > 1 else [sys.executable]),
        "-m",
        "electra",
        "pretrain",
        "--data",
        str(data),
        "--out",
        str(out),
        *ARGS,
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _weights(path):
    return load_file(path / "model.safetensors")


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _figures(run):
    """Every logged figure but the clock's: losses, accuracies, precision, recall, replaced
    fraction, gradient norm, validation; each the whole step's, however the batch was split."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in ("elapsed_s", "tokens_per_s")} for line in lines]


def _same_figures(run, want):
    got, want = _figures(run), _figures(want)
    assert [line.keys() for line in got] == [line.keys() for line in want]
    for line, expected in zip(got, want, strict=True):
        assert line == pytest.approx(expected, abs=1e-5), line["step"]


@pytest.fixture(scope="module")
def single(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    _pretrain(tiny_data, out, 1, "--max-steps", "6")
    return out


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_equal_one_with_the_same_global_batch(tiny_data, single, tmp_path, strategy):
    done = _pretrain(tiny_data, tmp_path / "run", 2, "--max-steps", "6", "--strategy", strategy)
    spread = {"ddp": "DDP, parameters replicated", "fsdp": "FSDP2, parameters sharded"}[strategy]
    assert f"each step: 8 rows of 32 tokens, 2 processes ({spread}), one batch a process" in done.stderr
    one, two = list_checkpoints(single), list_checkpoints(tmp_path / "run")
    assert [p.name for p in one] == [p.name for p in two] == ["step-00000003", "step-00000006"]
    assert _max_diff(_weights(one[-1]), _weights(two[-1])) < 1e-6
    _same_figures(tmp_path / "run", single)


def test_compiled_ddp_equals_one_eager_process(tiny_data, single, tmp_path):
    """torch.compile under DDP (graphs split at gradient buckets) changes nothing. aot_eager traces,
    splits and partitions the step as inductor does, with ATen's kernels: inductor's kernels are
    test_pretrain's compiled test (a cold inductor compile costs minutes on 2 CPU cores)."""
    done = _pretrain(tiny_data, tmp_path / "run", 2, "--max-steps", "6", "--compile", "--compile-backend", "aot_eager")
    assert "the first step compiles the training step" in done.stderr  # compiled, not an eager run again
    assert _max_diff(_weights(list_checkpoints(single)[-1]), _weights(list_checkpoints(tmp_path / "run")[-1])) < 1e-6
    _same_figures(tmp_path / "run", single)


def test_gradient_accumulation_equals_the_whole_batch(tiny_data, single, tmp_path):
    done = _pretrain(tiny_data, tmp_path / "run", 1, "--max-steps", "6", "--micro-batches", "4")
    assert "one process, 4 micro-batches a process" in done.stderr  # the step was split, not run whole
    assert _max_diff(_weights(list_checkpoints(single)[-1]), _weights(list_checkpoints(tmp_path / "run")[-1])) < 1e-6
    _same_figures(tmp_path / "run", single)


def test_ddp_with_micro_batches_syncs_the_whole_step_and_equals_one_process(tiny_data, single, tmp_path):
    """Gradient accumulation under DDP: gradients sync once, after the last micro-batch, over all of them."""
    done = _pretrain(tiny_data, tmp_path / "run", 2, "--max-steps", "6", "--micro-batches", "2")
    assert "2 processes (DDP, parameters replicated), 2 micro-batches a process" in done.stderr
    assert _max_diff(_weights(list_checkpoints(single)[-1]), _weights(list_checkpoints(tmp_path / "run")[-1])) < 1e-6
    _same_figures(tmp_path / "run", single)


@pytest.mark.parametrize(
    "objective,words,split",  # replace-mlm divides as the generator does
    [
        ("electra-15", True, ["--micro-batches", "4"]),
        ("all-tokens-mlm", False, ["--strategy", "fsdp"]),
        ("replace-mlm", False, ["--strategy", "ddp"]),  # DDP must expect the unused replaced-token head
    ],
)
def test_other_objectives_and_whole_words_split_over_processes_and_micro_batches_exactly(
    tiny_data, tmp_path, objective, words, split
):
    """Their losses divide by the whole step's counts, so any split of the batch adds up to it."""
    flags = ["--max-steps", "3", "--objective", objective, *(["--whole-word-masking"] if words else [])]
    _pretrain(tiny_data, tmp_path / "one", 1, *flags)
    done = _pretrain(tiny_data, tmp_path / "other", 2 if "--strategy" in split else 1, *flags, *split)
    layout = {"fsdp": "(FSDP2, parameters sharded), one batch", "ddp": "(DDP, parameters replicated), one batch"}
    assert (layout[split[1]] if "--strategy" in split else "4 micro-batches") in done.stderr
    one = _weights(list_checkpoints(tmp_path / "one")[-1])
    assert _max_diff(one, _weights(list_checkpoints(tmp_path / "other")[-1])) < 1e-6
    _same_figures(tmp_path / "other", tmp_path / "one")


def _resume_from_step_3(source, target):
    """A run folder that holds only `source`'s step-3 checkpoint: as if interrupted there."""
    (target / "checkpoints").mkdir(parents=True)
    shutil.copytree(source / "checkpoints" / "step-00000003", target / "checkpoints" / "step-00000003")
    shutil.copy(source / "metrics.jsonl", target / "metrics.jsonl")


def test_checkpoints_resume_across_world_sizes(tiny_data, single, tmp_path):
    # written by 2 processes, resumed by 1
    _pretrain(tiny_data, tmp_path / "two", 2, "--max-steps", "6")
    _resume_from_step_3(tmp_path / "two", tmp_path / "two_then_one")
    resumed = _pretrain(tiny_data, tmp_path / "two_then_one", 1, "--max-steps", "6", "--resume")
    assert "step-00000003 (step 3 of 6) on 1 process(es)" in resumed.stderr  # not a new run that ends the same
    # written by 1 process, resumed by 2 under FSDP2
    _resume_from_step_3(single, tmp_path / "one_then_two")
    args = ["--max-steps", "6", "--resume", "--strategy", "fsdp"]
    resumed = _pretrain(tiny_data, tmp_path / "one_then_two", 2, *args)
    assert "step-00000003 (step 3 of 6) on 2 process(es)" in resumed.stderr
    want = _weights(list_checkpoints(single)[-1])
    for run in ("two_then_one", "one_then_two"):
        assert _max_diff(want, _weights(list_checkpoints(tmp_path / run)[-1])) < 1e-6, run
        _same_figures(tmp_path / run, single)


def test_sigterm_to_torchrun_stops_every_process_at_one_step_with_a_checkpoint(tiny_data, tmp_path):
    """A scheduler's notice: torchrun passes SIGTERM on, the processes agree on the step to stop
    at, and the checkpoint of that step is complete (not only every --checkpoint-every). They
    agree within a step, not at the next log line: torchrun kills them 30 s after the signal."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = ["--data", str(tiny_data), "--out", str(tmp_path / "run"), *ARGS, "--max-steps", "100000"]
    args += ["--checkpoint-every", "100000", "--log-every", "100000"]  # lines at validations (every 3) only
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*launcher, "-m", "electra", "pretrain", *args], stderr=subprocess.PIPE, text=True, env=env)
    metrics, deadline = tmp_path / "run" / "metrics.jsonl", time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    (saved,) = list_checkpoints(tmp_path / "run")
    stopped = load_checkpoint(tmp_path / "run", with_train_state=True).train_state["step"]
    assert saved.name == f"step-{stopped:08d}" and 6 <= stopped < 100000, stderr[-3000:]
    assert stderr.count(f"stopped by SIGTERM at step {stopped}") == 1  # said once, by the first process
    logged = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    assert logged == [s for s in range(1, stopped + 1) if s % 3 == 0 or s == stopped]


def test_a_dead_worker_stops_the_run_promptly_and_keeps_the_last_checkpoint(tiny_data, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "electra",
        "pretrain",
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path / "run"),
        *ARGS,
        "--max-steps",
        "100000",
        "--checkpoint-every",
        "5",
    ]
    agent = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    deadline = time.time() + 120
    while not list_checkpoints(tmp_path / "run"):
        assert agent.poll() is None and time.time() < deadline, agent.communicate()[1][-2000:]
        time.sleep(0.2)
    workers = subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    os.kill(int(workers[1]), signal.SIGKILL)
    start = time.time()
    _, stderr = agent.communicate(timeout=120)
    assert agent.returncode != 0
    assert time.time() - start < 60  # the survivor does not hang in a collective
    assert "exitcode" in stderr or "Signal 9" in stderr or "SIGKILL" in stderr
    ckpt = load_checkpoint(tmp_path / "run")  # the newest complete checkpoint still loads
    assert all(torch.isfinite(t).all() for t in ckpt.model.state_dict().values())


def test_finetune_seeds_shared_among_processes_equal_one_process(tmp_path, tokenizer, tokenizer_dir):
    from electra.config import tiny
    from electra.model import Electra
    from tests.test_finetune import _sentiment

    torch.manual_seed(0)
    hf.export_discriminator(
        Electra(tiny(vocab_size=tokenizer.get_vocab_size())), tmp_path / "disc", tokenizer_dir=tokenizer_dir
    )
    data = _sentiment(tmp_path / "data", n_train=96, n_dev=32)
    args = ["finetune", "--model", str(tmp_path / "disc"), "--task", "csv", "--data", str(data), "--seeds", "3"]
    args += ["--epochs", "2", "--batch-size", "16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # torchrun's default per process: the same arithmetic
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    outputs = {}
    for name, cmd in (("one", [sys.executable]), ("two", launcher)):
        result = subprocess.run(
            [*cmd, "-m", "electra", *args, "--out", str(tmp_path / name)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[name] = result.stdout, result.stderr
    one, two = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("one", "two"))
    assert [s["seed"] for s in two["seeds"]] == [0, 1, 2]
    assert two["seeds"] == one["seeds"] and two["median"] == one["median"] and two["spread"] == one["spread"]
    assert two["exported_seed"] == one["exported_seed"]
    theirs, ours = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in theirs)
    assert outputs["two"][0].count("median of 3 seeds") == 1  # one report, from the first process
    shown = "".join(outputs["two"])  # the first process shows its own seeds' epochs: 0 and 2; the second trained 1
    assert "csv seed 0 epoch 2" in shown and "csv seed 2 epoch 2" in shown and "csv seed 1 epoch" not in shown
    assert "finished by an earlier run" not in shown  # no process takes up a seed that is another's
    assert not (tmp_path / ".two.seeds").exists()  # the seed store is gone once OUT is written


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_data_parallel_finetuning_equals_one_process_and_resumes_exactly(tmp_path, tokenizer, tokenizer_dir, dropout):
    """Two processes train one seed together: each takes half of every batch; the last batch of
    each epoch (1 row of 81) is the first process's alone, the second's row in it weighs 0.
    Stopped by SIGTERM to torchrun, they agree on a step (the one after the signal) and save it;
    the same command continues, and the run ends as one process ends, up to the order gradients
    are summed in. With dropout on (each process draws its own masks: one process cannot be
    matched) the resumed run ends as an uninterrupted run of two processes ends: its masks after
    the stop are the ones it would have drawn."""
    from electra.config import tiny
    from electra.model import Electra
    from tests.test_finetune import _sentiment

    torch.manual_seed(0)
    model = Electra(tiny(vocab_size=tokenizer.get_vocab_size()).with_dropout(dropout))
    hf.export_discriminator(model, tmp_path / "disc", tokenizer_dir=tokenizer_dir)
    data = _sentiment(tmp_path / "data", n_train=81, n_dev=32)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = ["-m", "electra", "finetune", "--model", str(tmp_path / "disc"), "--task", "csv", "--data", str(data)]
    args += ["--seeds", "1", "--epochs", "4", "--batch-size", "16"]  # 6 steps an epoch

    straight = [sys.executable] if not dropout else [*launcher]  # the run the resumed one must equal
    straight += [*args, "--out", str(tmp_path / "one")] + (["--data-parallel"] if dropout else [])
    one = subprocess.run(straight, capture_output=True, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = [*launcher, *args, "--out", str(tmp_path / "two"), "--data-parallel"]
    proc = subprocess.Popen([*two, "--save-minutes", "0"], stderr=subprocess.PIPE, text=True, env=env)
    progress = tmp_path / ".two.seeds" / "seed-0.progress.pt"  # saved after every step: training is on
    deadline = time.time() + 120
    while not progress.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to its workers and waits for them
    _, stderr = proc.communicate(timeout=120)
    stopped = re.search(r"stopped by SIGTERM in csv seed 0 at step (\d+) of 24", stderr)
    assert stopped and 1 <= int(stopped[1]) < 24, stderr[-3000:]
    assert not (tmp_path / "two").exists()
    resumed = subprocess.run(two, capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"continuing from step {stopped[1]}" in resumed.stderr
    assert resumed.stdout.count("median of 1 seed") == 1  # one report, from the first process
    a, b = (load_file(tmp_path / n / "model.safetensors") for n in ("one", "two"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    metrics = [json.loads((tmp_path / n / "results.json").read_text())["median"] for n in ("one", "two")]
    assert metrics[0] == metrics[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(fn, out, argv) -> tuple[dict, dict]:
    """`fn(rank, 2, port, out, argv)` in two processes of one group; what each wrote to OUT/RANK.json."""
    import torch.multiprocessing as mp

    mp.spawn(fn, args=(2, _free_port(), out, argv), nprocs=2)
    return tuple(json.loads((out / f"{r}.json").read_text()) for r in range(2))


def _first_dropout_masks(rank, world, port, out, argv):
    """One process of `test_each_process_draws_its_own_dropout_masks`: `electra ARGV` under a
    torchrun-like environment, keeping where the first few dropout calls of training zeroed."""
    import electra.model
    from electra.cli import main

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    drawn, plain = [], electra.model.dropout

    def kept(x, p, training):
        y = plain(x, p, training)
        if training and p > 0 and len(drawn) < 4:
            drawn.append(((y == 0) & (x != 0)).flatten().nonzero().flatten().tolist())
        return y

    electra.model.dropout = kept
    code = main(argv)
    (out / f"{rank}.json").write_text(json.dumps({"code": code, "masks": drawn}))


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_each_process_draws_its_own_dropout_masks(tiny_data, tmp_path, tokenizer, tokenizer_dir, command):
    """Two processes' rows of a step are different rows: one seed in both would drop the same
    positions of each (the first process's masks repeated on the second's rows), so dropout's
    noise would be shared across the batch, which one process's would never be."""

    from electra.config import tiny
    from electra.model import Electra
    from tests.test_finetune import _sentiment

    if command == "pretrain":
        argv = ["pretrain", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--preset", "tiny"]
        argv += ["--batch-size", "8", "--max-steps", "1", "--dropout", "0.1", "--quiet"]
    else:
        torch.manual_seed(0)
        model = Electra(tiny(vocab_size=tokenizer.get_vocab_size()).with_dropout(0.1))
        hf.export_discriminator(model, tmp_path / "disc", tokenizer_dir=tokenizer_dir)
        data = _sentiment(tmp_path / "data", n_train=32, n_dev=8)
        argv = ["finetune", "--model", str(tmp_path / "disc"), "--task", "csv", "--data", str(data)]
        argv += ["--out", str(tmp_path / "clf"), "--seeds", "1", "--epochs", "1", "--batch-size", "16"]
        argv += ["--data-parallel", "--quiet"]
    first, second = _two_processes(_first_dropout_masks, tmp_path, argv)
    assert first["code"] == second["code"] == 0
    assert len(first["masks"]) == len(second["masks"]) == 4
    assert all(first["masks"]) and all(second["masks"])  # the masks dropped something
    for a, b in zip(first["masks"], second["masks"], strict=True):
        assert a != b


def _shared_predictions(rank, world, init, out):
    """One process of `test_data_parallel_evaluation_...`: its predictions and forward count."""
    import torch.distributed as dist

    from electra import parallel
    from electra.finetune import predictions

    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        report = {}
        for kind, (model, task, data) in _evaluated_models().items():
            calls = []
            model.register_forward_hook(lambda *_, calls=calls: calls.append(1))
            preds = predictions(model, task, data, torch.device("cpu"), batch_size=4, dist=parallel.Dist(rank, world))
            report[kind] = {"preds": preds, "forwards": len(calls)}
        (out / f"{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


def _evaluated_models():
    """Tiny random models of three kinds and 10 rows of varied lengths to predict (3 batches of 4)."""
    from electra.config import tiny
    from electra.finetune import Encoded
    from electra.model import SequenceClassifier, TokenClassifier
    from electra.tasks import Task

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 20, (10,), generator=g).tolist()
    ids = [torch.randint(5, 100, (n,), generator=g).tolist() for n in lengths]
    data = Encoded(ids=ids, types=[[0] * n for n in lengths], labels=[0] * 10)
    tags = Encoded(ids=ids, types=data.types, labels=[[0] * n for n in lengths])
    cfg = tiny().discriminator
    torch.manual_seed(0)
    return {
        "classification": (SequenceClassifier(cfg, 3), Task("c", "classification", ("accuracy",)), data),
        "regression": (SequenceClassifier(cfg, 1), Task("r", "regression", ("pearson",)), data),
        "tagging": (TokenClassifier(cfg, 4), Task("t", "tagging", ("f1",)), tags),
    }


def test_data_parallel_evaluation_shares_the_batches_and_returns_every_prediction(tmp_path):
    """Data-parallel fine-tuning evaluates each epoch together: each process runs every other
    batch, and both get every prediction, the same as one process computes alone."""
    import torch.multiprocessing as mp

    from electra.finetune import predictions

    mp.spawn(_shared_predictions, args=(2, tmp_path / "init", tmp_path), nprocs=2)
    reports = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    for kind, (model, task, data) in _evaluated_models().items():
        alone = json.loads(json.dumps(predictions(model, task, data, torch.device("cpu"), batch_size=4)))
        assert [r[kind]["forwards"] for r in reports] == [2, 1], kind
        assert reports[0][kind]["preds"] == reports[1][kind]["preds"] == alone, kind


def test_a_process_that_loses_its_peers_says_so_in_one_line(cli, monkeypatch):
    """Under torchrun, when one process stops on bad input, the others fail in their next
    collective: they say so in one line (the first process gives the reason), no traceback."""
    import electra.cli

    def lost(args):
        raise RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:52654. GLHF")

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(electra.cli, "cmd_pretrain", lost)
    result = cli("pretrain", "--data", "d", "--out", "o")
    assert result.returncode == 1
    assert result.stderr.startswith("electra pretrain: process 1: stopped: another process of this launch ended")

    def bug(args):
        raise RuntimeError("shape mismatch in our own code")

    monkeypatch.setattr(electra.cli, "cmd_pretrain", bug)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # anything else keeps its traceback
        cli("pretrain", "--data", "d", "--out", "o")


def test_under_torchrun_the_first_process_speaks_and_one_process_commands_refuse(cli, monkeypatch):
    import electra.cli

    def noisy(args):
        print("note: the same on every process", file=sys.stderr)
        raise ValueError("a bad setting")

    monkeypatch.setattr(electra.cli, "cmd_finetune", noisy)
    monkeypatch.setenv("WORLD_SIZE", "2")
    args = ("finetune", "--model", "m", "--task", "sst2", "--data", "d", "--out", "o")
    said = {}
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        said[rank] = cli(*args)
        assert said[rank].returncode == 2
    assert said["0"].stderr == "note: the same on every process\nelectra finetune: error: a bad setting\n"
    assert said["1"].stderr == "electra finetune: process 1: error: a bad setting\n"  # its notes left to the first
    assert sys.stderr is sys.__stderr__ or not sys.stderr.closed  # restored
    for rank in ("0", "1"):  # a usage error: the same in every process, said by the first
        monkeypatch.setenv("RANK", rank)
        result = cli("finetune", "--model", "m")
        assert result.returncode == 2 and (("required" in result.stderr) == (rank == "0"))
    for rank in ("0", "1"):  # each process would export (prepare, serve ...) into the same files
        monkeypatch.setenv("RANK", rank)
        result = cli("export", "run", "--out", "x")
        assert result.returncode == 2
        refusal = "electra export: error: export runs in one process; run it without torchrun (under torchrun: pre"
        assert result.stderr.startswith(refusal) if rank == "0" else result.stderr == ""


def test_gpus_before_ampere_compute_fp16_not_emulated_bf16(monkeypatch):
    from electra import parallel

    for capability, native in (((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i, c=capability: c)
        parallel._native_bf16.cache_clear()
        assert parallel._native_bf16(0) is native, capability
    parallel._native_bf16.cache_clear()


def _agree(rank, port, results):
    import torch.distributed as dist

    from electra.parallel import Agreement, Dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    agree = Agreement(Dist(rank, 2, rank))
    first = agree([rank == 1])  # only process 1 is signalled
    second = agree([False])
    agree.close()
    results[rank] = (first, second)
    dist.destroy_process_group()


def test_a_stop_flag_raised_in_one_process_is_taken_by_all_one_call_later():
    """The stop flags (a signal, the time budget) of one process reach every process at the next
    step's agreement, so that all stop at the same step and save it together."""
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_agree, args=(_free_port(), results), nprocs=2)
    assert dict(results) == {0: ([False], [True]), 1: ([False], [True])}


def _save_and_return_times(rank, world, port, out, argv):
    """One process of `test_no_process_leaves_before_the_checkpoint_is_written`: `electra ARGV`
    under a torchrun-like environment, each checkpoint's writing slowed by a second."""
    from electra import checkpoint
    from electra.cli import main

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    saved, write = [], checkpoint.save_checkpoint

    def slow(*args, **kwargs):
        time.sleep(1.0)
        write(*args, **kwargs)
        saved.append(time.time())

    checkpoint.save_checkpoint = slow
    code = main(argv)
    (out / f"{rank}.json").write_text(json.dumps({"code": code, "saved": saved, "returned": time.time()}))


def test_no_process_leaves_before_the_checkpoint_is_written(tiny_data, tmp_path):
    """The first process writes the checkpoint; the others wait for it before they go on (or
    leave: torchrun ends every process once one has exited, a checkpoint half written with them)."""

    argv = ["pretrain", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--preset", "tiny"]
    argv += ["--batch-size", "8", "--max-steps", "1", "--quiet"]
    first, second = _two_processes(_save_and_return_times, tmp_path, argv)
    assert first["code"] == second["code"] == 0
    assert len(first["saved"]) == 1 and second["saved"] == []  # written once, by the first process
    assert second["returned"] >= first["saved"][0]
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000001"]
