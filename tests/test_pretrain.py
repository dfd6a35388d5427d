"""The training loop: exact resume (through kill -9), refusals, non-finite steps, both objectives."""

import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import nullcontext

import pytest
import torch
from safetensors.torch import load_file

from electra.checkpoint import list_checkpoints, load_checkpoint
from electra.pretrain import PretrainConfig, TrainingDiverged, run, steps_for_budget

FAST = dict(
    preset="tiny", batch_size=8, log_every=1, eval_every=4, eval_batches=2, checkpoint_every=3, keep_checkpoints=10
)


def _cfg(data, out, **kw):
    return PretrainConfig(data=str(data), out=str(out), **{**FAST, "max_steps": 12, **kw})


def _losses(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(m["step"], m["loss"], m.get("valid_loss")) for m in lines]


def _record(run_dir):
    """What a resumed run logs exactly as an uninterrupted one: its losses, and the counts its state carries."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(m["step"], m["loss"], m.get("valid_loss"), m["tokens"], m["skipped"]) for m in lines]


def _weights(run_dir):
    return load_file(list_checkpoints(run_dir)[-1] / "model.safetensors")


def test_training_lowers_the_loss_and_logs_every_metric(tiny_data, tmp_path):
    logged = run(_cfg(tiny_data, tmp_path / "run", max_steps=40, lr=2e-3, warmup_steps=4), quiet=True)
    losses = [loss for _, loss, _ in _losses(tmp_path / "run")]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    for key in (
        "loss",
        "gen_loss",
        "gen_accuracy",
        "disc_loss",
        "disc_accuracy",
        "disc_precision",
        "disc_recall",
        "replaced_fraction",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "valid_loss",
    ):
        assert key in logged, key
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["objective"]["rtd_weight"] == 50.0 and config["max_steps"] == 40
    manifest = json.loads((tiny_data / "manifest.json").read_text())  # what the data came from, for cards
    assert config["corpus"] == {
        "dataset": None,
        "files": 1,
        "bytes": manifest["counts"]["bytes"],
        "tokens": manifest["splits"]["train"]["tokens"],
    }


def test_tokens_per_s_leaves_out_validation_and_checkpoints(tiny_data, tmp_path, monkeypatch):
    import types

    import electra.checkpoint
    import electra.pretrain

    clock = {"paused": 0.0}  # validation and checkpoint writes take 1,000 s each on the run's clock

    def slow(fn):
        def wrapped(*args, **kwargs):
            clock["paused"] += 1000.0
            return fn(*args, **kwargs)

        return wrapped

    fake_time = types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + clock["paused"])
    monkeypatch.setattr(electra.pretrain, "time", fake_time)
    monkeypatch.setattr(electra.pretrain, "evaluate", slow(electra.pretrain.evaluate))
    monkeypatch.setattr(electra.checkpoint, "save_checkpoint", slow(electra.checkpoint.save_checkpoint))
    run(_cfg(tiny_data, tmp_path / "run", max_steps=8, eval_every=2, checkpoint_every=3), quiet=True)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    per_step = lines[0]["tokens"]
    # every window is one step of training, 7 of which follow a pause
    assert min(m["tokens_per_s"] for m in lines) > per_step / 100, [m["tokens_per_s"] for m in lines]
    assert lines[-1]["elapsed_s"] > 5 * 1000  # the run's own clock keeps the 5 pauses before its last line


def _slow_steps(monkeypatch, seconds) -> list:
    """The training loop's clock runs `seconds(n)` faster during its n-th update (from 1): a slow
    step without the wait. Returns the updates' seeds as they are called."""
    import types

    from electra import pretrain

    clock, calls = {"s": 0.0}, []
    monkeypatch.setattr(pretrain, "time", types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + clock["s"]))

    class Slowed(pretrain.Update):
        def __call__(self, micro, seed):
            calls.append(seed)
            clock["s"] += seconds(len(calls))
            return super().__call__(micro, seed)

    monkeypatch.setattr(pretrain, "Update", Slowed)
    return calls


def test_tokens_per_s_is_the_rate_since_the_line_before(tiny_data, tmp_path, monkeypatch):
    """A slow step shows in its own line's tokens_per_s and not in the next one's: not a run-long average."""
    _slow_steps(monkeypatch, lambda n: 1000.0 if n == 3 else 0.0)
    run(_cfg(tiny_data, tmp_path / "run", max_steps=5, eval_every=100), quiet=True)
    rates = [json.loads(x)["tokens_per_s"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rates[2] < rates[1] / 100 and rates[3] > 100 * rates[2], rates


def test_resume_after_kill_9_equals_an_uninterrupted_run(tiny_data, tmp_path, capsys):
    run(_cfg(tiny_data, tmp_path / "straight"), quiet=True)

    cmd = [
        sys.executable,
        "-m",
        "electra",
        "pretrain",
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path / "cut"),
        "--preset",
        "tiny",
        "--batch-size",
        "8",
        "--log-every",
        "1",
        "--eval-every",
        "4",
        "--eval-batches",
        "2",
        "--checkpoint-every",
        "3",
        "--keep-checkpoints",
        "10",
        "--max-steps",
        "12",
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "cut" / "checkpoints"
    deadline = time.time() + 120
    # after the first checkpoint, kill while the next is being written, or just after it
    while proc.poll() is None and time.time() < deadline:
        names = [p.name for p in checkpoints.iterdir()] if checkpoints.exists() else []
        complete = len([n for n in names if n.startswith("step")])
        if complete >= 1 and (any(n.startswith(".") for n in names) or complete >= 2):
            break
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list_checkpoints(tmp_path / "cut")
    assert done and done[-1].name != "step-00000012", "the run finished before it could be killed"

    capsys.readouterr()
    run(_cfg(tiny_data, tmp_path / "cut"), resume=True, quiet=True)
    # from the last complete checkpoint, not a new run that would end the same
    assert f"resuming from {done[-1]} (step {int(done[-1].name[5:])} of 12)" in capsys.readouterr().err
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _record(tmp_path / "cut") == _record(tmp_path / "straight")


def test_ctrl_c_saves_the_step_and_resume_ends_as_an_uninterrupted_run(tiny_data, tmp_path, capsys):
    """Ctrl-C (or a scheduler's SIGTERM: test_distributed) stops the run at its next step, with a
    checkpoint there (not only at --checkpoint-every), and exits 128 + the signal's number."""
    sig = signal.SIGINT
    kw = dict(max_steps=40, checkpoint_every=1000)
    run(_cfg(tiny_data, tmp_path / "straight", **kw), quiet=True)
    args = ["--data", tiny_data, "--out", tmp_path / "cut", "--preset", "tiny", "--batch-size", "8"]
    args += ["--max-steps", "40", "--log-every", "1", "--eval-every", "4", "--eval-batches", "2"]
    args += ["--checkpoint-every", "1000"]
    cmd = [sys.executable, "-m", "electra", "pretrain", *map(str, args), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics, deadline = tmp_path / "cut" / "metrics.jsonl", time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.001)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr
    (saved,) = list_checkpoints(tmp_path / "cut")
    stopped = int(saved.name.split("-")[1])
    assert 2 <= stopped < 40 and f"stopped by {sig.name} at step {stopped}; checkpoint {saved}" in stderr
    assert "the same command with --resume continues it" in stderr

    capsys.readouterr()
    run(_cfg(tiny_data, tmp_path / "cut", **kw), resume=True, quiet=True)
    assert f"resuming from {saved} (step {stopped} of 40)" in capsys.readouterr().err
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _record(tmp_path / "cut") == _record(tmp_path / "straight")
    elapsed = [json.loads(x)["elapsed_s"] for x in metrics.read_text().splitlines()]
    assert elapsed == sorted(elapsed)  # the time goes on across the resume, never back to 0


def test_a_resume_takes_the_runs_own_settings_but_for_the_flags_given(tiny_data, tmp_path, cli):
    run_dir = tmp_path / "run"
    args = ["--data", tiny_data, "--out", run_dir, "--preset", "tiny", "--batch-size", "8", "--max-steps", "6"]
    args += ["--log-every", "2", "--eval-every", "3", "--eval-batches", "1", "--checkpoint-every", "3", "--quiet"]
    assert cli("pretrain", *args).returncode == 0
    dead = run_dir / "checkpoints" / ".step-00000099.tmp-dead"  # a checkpoint a kill cut short, of a step never reached
    pruned = run_dir / "checkpoints" / ".step-00000001.pruned-dead"  # and one killed while it was being deleted
    for folder in (dead, pruned):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
    resumed = cli("pretrain", "--out", run_dir, "--resume", "--max-steps", "9", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert not dead.exists() and f"note: removed {dead}, left behind by an interrupted write in" in resumed.stderr
    assert not pruned.exists()
    config = json.loads((run_dir / "config.json").read_text())
    kept = {"preset": "tiny", "batch_size": 8, "log_every": 2, "eval_every": 3, "eval_batches": 1}
    assert {k: config[k] for k in kept} == kept and (config["checkpoint_every"], config["max_steps"]) == (3, 9)
    logged = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged == [2, 3, 4, 6, 8, 9]  # every 2 steps, validations every 3, on either side of the resume
    assert f"data: {tiny_data}" in resumed.stderr  # which folder a copied run reads
    typo = cli("pretrain", "--out", tmp_path / "rnu", "--resume", "--quiet")  # no run there, and no --data to start one
    assert typo.returncode == 2 and f"--resume: {tmp_path / 'rnu'} holds no pre-training run" in typo.stderr
    assert not (tmp_path / "rnu").exists()
    (tmp_path / "model").mkdir()  # a fine-tuned or exported folder
    (tmp_path / "model" / "config.json").write_text('{"model_type": "electra", "hidden_size": 32}')
    model = cli("pretrain", "--out", tmp_path / "model", "--resume", "--quiet")
    assert model.returncode == 2 and "note:" not in model.stderr
    assert f"--resume: {tmp_path / 'model'} is a model folder (its config.json is a transformers" in model.stderr
    given = cli("pretrain", "--config", tmp_path / "model" / "config.json", "--quiet")  # not a list of unknown options
    assert given.returncode == 2 and "is a transformers model's config.json, not pre-training options" in given.stderr
    assert config["warmup_steps"] == 0  # 10% of 6 steps
    logged = {m["step"]: m["lr"] for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}
    was, now = f"{logged[6]:.3g}", f"{logged[8] * (1 - 6 / 9) / (1 - 7 / 9):.3g}"  # step 7's, from step 8's
    assert f"{config['lr'] * (1 - 5 / 6):.3g}" == was  # the last step ran at a sixth of the peak
    said = f"the schedule now ends at step 9, not 6: the learning rate goes from {was} (step 6) to {now} (step 7)"
    assert said in resumed.stderr
    short = cli("pretrain", "--out", run_dir, "--resume", "--max-tokens", "100")
    assert short.returncode == 2 and "past --max-tokens 100 (1 steps)" in short.stderr
    config["data"] = str(tmp_path / "gone")  # a copy of the run, whose data is elsewhere now
    (run_dir / "config.json").write_text(json.dumps(config))
    moved = cli("pretrain", "--out", run_dir, "--resume", "--max-steps", "10")
    assert moved.returncode == 2 and f"data folder {tmp_path / 'gone'} does not exist" in moved.stderr
    assert "pass --data where it is now" in moved.stderr
    assert cli("pretrain", "--out", run_dir, "--resume", "--max-steps", "10", "--data", tiny_data).returncode == 0
    # killed before its first checkpoint: the record's own budget, not the preset's default length
    (tmp_path / "early").mkdir()
    shutil.copy(run_dir / "config.json", tmp_path / "early" / "config.json")
    started = cli("pretrain", "--out", tmp_path / "early", "--resume", "--data", tiny_data, "--quiet")
    assert started.returncode == 0 and "holds no checkpoint to resume; starting a new run" in started.stderr
    assert f"stopped at step 10 (max steps); checkpoint {tmp_path / 'early'}" in started.stdout + started.stderr
    (run_dir / "config.json").write_text('{"data": "cut sh')  # a damaged record: the flags alone, as for a new run
    flags = ["--data", tiny_data, "--preset", "tiny", "--batch-size", "8", "--max-steps", "11"]
    damaged = cli("pretrain", "--out", run_dir, "--resume", *flags, "--quiet")
    assert damaged.returncode == 0 and "note: the run's settings are not readable" in damaged.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_a_second_later_stops_at_once_as_that_signal(sig):
    from electra.signals import StopRequest, Terminated

    said = []
    stop = StopRequest(said.append)
    stop.handle(sig, None)  # the first asks for the step in progress to be saved
    assert stop.signum == sig
    assert said == [f"{sig.name}: stopping at the next step boundary, saving it (again: at once)"]
    stop.handle(sig, None)  # the same Ctrl-C passed on again (torchrun) is not a second one
    stop.at -= 2.0
    with pytest.raises(KeyboardInterrupt if sig == signal.SIGINT else Terminated):  # the CLI exits 130 or 143
        stop.handle(sig, None)


def test_resume_refuses_other_settings_and_run_refuses_a_used_folder(tiny_data, tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "model" / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(FileExistsError, match="holds files that are not a pre-training run"):
        run(_cfg(tiny_data, tmp_path / "model", max_steps=3), quiet=True)
    with pytest.raises(FileExistsError, match="would replace that input"):
        run(_cfg(tiny_data, tiny_data, max_steps=3), quiet=True)
    assert (tmp_path / "model" / "config.json").read_text() == "{}"
    run(_cfg(tiny_data, tmp_path / "run", max_steps=3), quiet=True)
    with pytest.raises(FileExistsError, match="--resume"):
        run(_cfg(tiny_data, tmp_path / "run", max_steps=6), quiet=True)
    with pytest.raises(ValueError, match=r"batch_size: checkpoint 8, now 16"):
        run(_cfg(tiny_data, tmp_path / "run", max_steps=6, batch_size=16), resume=True, quiet=True)
    with pytest.raises(ValueError, match=r"preset: checkpoint 'tiny', now 'small'"):
        run(_cfg(tiny_data, tmp_path / "run", max_steps=6, preset="small"), resume=True, quiet=True)
    with pytest.raises(ValueError, match=r"model.discriminator.dropout: checkpoint 0.1, now 0.0"):
        run(_cfg(tiny_data, tmp_path / "run", max_steps=6, dropout=0.0), resume=True, quiet=True)
    with pytest.raises(ValueError, match=r"model.disentangled_embeddings: checkpoint False, now True"):
        run(_cfg(tiny_data, tmp_path / "run", max_steps=6, disentangled_embeddings=True), resume=True, quiet=True)
    from electra.prepare import PrepareConfig, prepare

    other = tmp_path / "other-data"  # the same text and tokenizer, another validation split
    prepare(
        [tiny_data.parent / "corpus.txt"],
        other,
        PrepareConfig(seq_len=32, validation_fraction=0.2),
        tiny_data,
        quiet=True,
    )
    with pytest.raises(
        ValueError, match=f"data: {other} holds other rows or another tokenizer than the run's {tiny_data}"
    ):
        run(_cfg(other, tmp_path / "run", max_steps=6), resume=True, quiet=True)
    run(_cfg(tiny_data, tmp_path / "typo", max_steps=1), resume=True, quiet=True)  # a mistyped --out
    assert f"note: {tmp_path / 'typo'} holds no checkpoint to resume; starting a new run" in capsys.readouterr().err
    config = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(ValueError, match=r"step-00000003 is at step 3, past --max-steps 2; pass a larger"):
        run(_cfg(tiny_data, tmp_path / "run", max_steps=2), resume=True, quiet=True)
    assert (tmp_path / "run" / "config.json").read_text() == config  # refusals write nothing
    with pytest.raises(ValueError, match=r"warmup_steps: checkpoint 0, now 2"):
        run(_cfg(tiny_data, tmp_path / "run", max_steps=30, warmup_steps=2), resume=True, quiet=True)
    # a longer budget is fine (its default warmup stays the run's: not 3, 10% of 30), and so are
    # the preset's own values given explicitly
    run(_cfg(tiny_data, tmp_path / "run", max_steps=30, dropout=0.1, generator_fraction=0.5), resume=True, quiet=True)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["warmup_steps"] == 0
    assert list_checkpoints(tmp_path / "run")[-1].name == "step-00000030"
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 31, "lo')  # a line cut short by a kill
    run(_cfg(tiny_data, tmp_path / "run", max_steps=33), resume=True, quiet=True)
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 34))
    newest = list_checkpoints(tmp_path / "run")[-1] / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.raises(ValueError, match="step-00000033 is damaged .*delete that folder to use the one before it"):
        run(_cfg(tiny_data, tmp_path / "run", max_steps=36), resume=True, quiet=True)
    run(_cfg(tiny_data, tmp_path / "warm", max_steps=20, warmup_steps=5, max_tokens=1), quiet=True)  # stops at 1
    with pytest.raises(ValueError, match="warms up over 5 steps, not below --max-steps 4; .*larger --max-steps"):
        run(_cfg(tiny_data, tmp_path / "warm", max_steps=4), resume=True, quiet=True)


def test_a_run_folder_in_use_by_a_live_run_is_refused(tiny_data, tmp_path):
    from electra.atomic import folder_lock

    with folder_lock(tmp_path / "run"):  # as a run in another process holds it until it ends
        with pytest.raises(FileExistsError, match="run is in use by another run that is still running"):
            run(_cfg(tiny_data, tmp_path / "run", max_steps=2), quiet=True)
        assert not any((tmp_path / "run").iterdir())
    run(_cfg(tiny_data, tmp_path / "run", max_steps=2), quiet=True)  # free again once it ends
    assert list_checkpoints(tmp_path / "run")[-1].name == "step-00000002"


def test_a_budget_that_ends_the_run_logs_validates_and_saves_its_last_step(tiny_data, tmp_path):
    rare = dict(log_every=10**6, eval_every=10**6, checkpoint_every=10**6)  # only the last step logs
    cfg = _cfg(tiny_data, tmp_path / "run", max_steps=50, max_tokens=700, **rare)
    run(cfg, quiet=True)
    (line,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert line["tokens"] >= 700 > line["tokens"] - 8 * 32 and "valid_loss" in line
    assert list_checkpoints(tmp_path / "run")[-1].name == f"step-{line['step']:08d}"
    run(cfg, resume=True, quiet=True)  # the budget is spent: the same command trains nothing more
    assert list_checkpoints(tmp_path / "run")[-1].name == f"step-{line['step']:08d}"
    run(_cfg(tiny_data, tmp_path / "timed", max_steps=10**6, max_minutes=0.02, **rare), quiet=True)
    (line,) = [json.loads(x) for x in (tmp_path / "timed" / "metrics.jsonl").read_text().splitlines()]
    assert "valid_loss" in line and list_checkpoints(tmp_path / "timed")[-1].name == f"step-{line['step']:08d}"


def test_a_resume_without_a_budget_goes_on_with_the_runs_own_schedule(tiny_data, tmp_path, capsys):
    rare = dict(eval_every=10**6, checkpoint_every=10**6)
    run(_cfg(tiny_data, tmp_path / "run", max_minutes=1e-4, **rare), quiet=True)  # stops after a step or two
    stopped = int(list_checkpoints(tmp_path / "run")[-1].name.split("-")[1])
    assert stopped < 12
    run(_cfg(tiny_data, tmp_path / "run", max_steps=None, **rare), resume=True, quiet=True)  # not tiny's 1,000 steps
    assert list_checkpoints(tmp_path / "run")[-1].name == "step-00000012"
    assert f"(step {stopped} of 12)" in capsys.readouterr().err
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    run(_cfg(tiny_data, tmp_path / "whole", **rare), quiet=True)  # the same schedule, step for step
    assert lrs == [json.loads(x)["lr"] for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]


def test_a_token_budget_alone_sets_the_steps_by_the_datas_real_tokens(tiny_data, tmp_path, capsys):
    train = json.loads((tiny_data / "manifest.json").read_text())["splits"]["train"]
    per_row = train["tokens"] / train["rows"]
    assert per_row < 31  # rows end short at documents' ends: a padded count would stop early
    budget = 3000
    run(_cfg(tiny_data, tmp_path / "run", max_steps=None, max_tokens=budget, eval_every=10**6), quiet=True)
    steps = json.loads((tmp_path / "run" / "config.json").read_text())["max_steps"]
    assert steps == math.ceil(budget / (8 * per_row))
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert abs(last["tokens"] - budget) < 8 * 32  # within a step of the budget, which ended it
    assert last["tokens"] < last["step"] * 8 * 32  # the real tokens counted, not the padded rows
    assert f"stopped at step {last['step']} (max tokens)" in capsys.readouterr().err


def test_a_compiled_run_trains_exactly_like_an_eager_one(tiny_data, tmp_path, capsys):
    """torch.compile (the default on CUDA) changes the kernels, not the training."""
    kw = dict(max_steps=6, dropout=0.0)  # compiled code draws its own dropout masks
    run(_cfg(tiny_data, tmp_path / "eager", compile=False, **kw), quiet=True)
    capsys.readouterr()
    run(_cfg(tiny_data, tmp_path / "compiled", compile=True, **kw), quiet=True)
    assert "the first step compiles the training step" in capsys.readouterr().err  # not an eager run again
    eager, compiled = _losses(tmp_path / "eager"), _losses(tmp_path / "compiled")
    assert [s for s, _, _ in compiled] == [s for s, _, _ in eager] == list(range(1, 7))
    for (_, a, va), (_, b, vb) in zip(eager, compiled, strict=True):
        assert b == pytest.approx(a, rel=1e-5) and (va is None) == (vb is None)
    a, b = _weights(tmp_path / "eager"), _weights(tmp_path / "compiled")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6)
    for bad, message in [
        (dict(compile=False, compile_mode="max-autotune"), "compile_mode 'max-autotune' needs compiling"),
        (dict(compile=False, compile_backend="aot_eager"), "compile_backend 'aot_eager' needs compiling"),
        (dict(compile_mode="fast"), "compile_mode must be one of default, max-autotune"),
        (dict(compile_backend="tvm"), "compile_backend must be one of inductor, aot_eager, eager"),
        (dict(compile_backend="eager", compile_mode="max-autotune"), "is inductor's; drop --compile-backend"),
    ]:
        with pytest.raises(ValueError, match=message):
            PretrainConfig(data="d", out="o", **bad)


def test_choosing_a_compile_backend_compiles_the_step(tiny_data, tmp_path):
    """On CPU a single process runs eagerly by default; naming a backend turns compiling on."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    run(_cfg(tiny_data, tmp_path / "eager", max_steps=1), quiet=True)
    assert counters["stats"]["unique_graphs"] == 0
    run(_cfg(tiny_data, tmp_path / "traced", max_steps=1, compile_backend="eager"), quiet=True)
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


def test_a_step_compiled_before_at_another_batch_compiles_static_again(tiny_data, tmp_path, monkeypatch):
    """A probe, then the run (or two runs in a notebook): the second compile of the step must not
    turn its sizes symbolic (half as long again to compile here, kernels generic in the sizes)."""
    from torch._dynamo import register_backend

    from electra import pretrain

    symbolic = []

    def recording(gm, example_inputs):
        sym = [x for x in example_inputs if isinstance(x, torch.SymInt)]
        sym += [
            d for x in example_inputs if isinstance(x, torch.Tensor) for d in x.shape if isinstance(d, torch.SymInt)
        ]
        symbolic.append(bool(sym))
        return gm.forward

    register_backend(recording, name="electra_test_recording")
    monkeypatch.setattr(pretrain, "COMPILE_BACKENDS", (*pretrain.COMPILE_BACKENDS, "electra_test_recording"))
    torch._dynamo.reset()
    for batch in (8, 4):
        run(
            _cfg(
                tiny_data,
                tmp_path / f"b{batch}",
                max_steps=1,
                batch_size=batch,
                compile_backend="electra_test_recording",
            ),
            quiet=True,
        )
    torch._dynamo.reset()
    assert symbolic == [False, False]


def test_non_finite_steps_are_skipped_then_stop_with_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    from electra import objective

    calls = {"n": 0}
    real = objective.OBJECTIVES["electra"]

    def diverging(*args):  # fine for 4 steps, then every loss is NaN
        loss, metrics = real(*args)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] > 4 else loss), metrics

    monkeypatch.setitem(objective.OBJECTIVES, "electra", diverging)
    with pytest.raises(TrainingDiverged, match="3 non-finite steps in a row by step 7"):
        run(_cfg(tiny_data, tmp_path / "run", max_steps=9, max_bad_steps=3, eval_every=100), quiet=True)
    # the update of every NaN step was skipped on the device: the step-6 checkpoint holds the
    # weights after step 4, and its record says two updates were skipped
    good = load_checkpoint(tmp_path / "run", with_train_state=True)
    assert good.path.name == "step-00000006" and good.train_state["skipped"] == 2
    before = load_file(tmp_path / "run" / "checkpoints" / "step-00000003" / "model.safetensors")
    after = good.model.state_dict()
    assert all(torch.isfinite(t).all() for t in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # step 4 was applied
    steps = {int(s["step"]) for s in good.train_state["optimizer"]["state"].values()}
    assert steps == {4}  # AdamW counted the 4 applied updates, not the skipped ones
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["skipped"] for m in metrics] == [0, 0, 0, 0, 1, 2]


def test_fp16_scales_the_loss_skips_overflows_and_resumes_exactly(tiny_data, tmp_path, capsys):
    import shutil

    from electra.step import GROWTH_INTERVAL, next_loss_scale

    good, bad = torch.tensor(0.0), torch.tensor(1.0)
    assert next_loss_scale(torch.tensor([8.0, 5.0]), bad).tolist() == [4.0, 0.0]
    assert next_loss_scale(torch.tensor([8.0, 5.0]), good).tolist() == [8.0, 6.0]
    assert next_loss_scale(torch.tensor([8.0, GROWTH_INTERVAL - 1.0]), good).tolist() == [16.0, 0.0]

    # ELECTRA's loss (50 x RTD) overflows fp16 gradients at the first scale, 2^16: five updates are
    # skipped while it halves to 2^11, then training goes on; a checkpoint keeps the scale
    cfg = _cfg(tiny_data, tmp_path / "whole", max_steps=9, precision="fp16", eval_every=100)
    run(cfg, quiet=True)
    logged = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [m["skipped"] for m in logged] == [1, 2, 3, 4, 5, 5, 5, 5, 5]
    assert [m["loss_scale"] for m in logged][4:6] == [2.0**11, 2.0**11] and all(
        math.isfinite(m["loss"]) for m in logged
    )
    at_3 = load_checkpoint(tmp_path / "whole" / "checkpoints" / "step-00000003", with_train_state=True)
    assert at_3.train_state["loss_scale"] == [2.0**13, 0.0]
    start = load_checkpoint(tmp_path / "whole" / "checkpoints" / "step-00000003").model.state_dict()
    assert any(not torch.equal(start[k], v) for k, v in _weights(tmp_path / "whole").items())  # steps 6-9 applied

    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")  # stopped after the step-3 checkpoint
    for later in ("step-00000006", "step-00000009"):
        shutil.rmtree(tmp_path / "resumed" / "checkpoints" / later)
    capsys.readouterr()
    run(_cfg(tiny_data, tmp_path / "resumed", max_steps=9, precision="fp16", eval_every=100), resume=True, quiet=True)
    assert "step-00000003 (step 3 of 9)" in capsys.readouterr().err  # resumed at the loss scale it kept
    assert _record(tmp_path / "resumed") == _record(tmp_path / "whole")  # the skipped count goes on too
    ours, theirs = _weights(tmp_path / "resumed"), _weights(tmp_path / "whole")
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_a_budget_probe_sizes_the_schedule_and_leaves_nothing_behind(tiny_data, tmp_path, capsys):
    started = time.perf_counter()
    steps = steps_for_budget(_cfg(tiny_data, tmp_path / "run"), minutes=0.25)
    took = time.perf_counter() - started
    assert not (tmp_path / "run").exists()
    err = capsys.readouterr().err
    assert re.search(r"pretrain: +\d+%\|.*\| \d+/60 ", err)  # the probe's steps show in a bar: it may take minutes
    said = re.search(r"([\d,]+) tokens/s, ([\d,]+) per step: the schedule runs ([\d,]+) steps", err)
    rate, per_step, announced = (int(g.replace(",", "")) for g in said.groups())
    assert announced == steps and 0.5 * 8 * 32 < per_step <= 8 * 32  # rows of 8 x 32, padding not counted
    # the rate is taken over steps 5-60 of the probe, which ran inside the call
    assert rate * took >= 55 * per_step
    # 15 s at that rate, 10% kept for validation and checkpoints (printed figures are rounded: 226.4 as 226)
    assert steps == pytest.approx(max(10, 15 * rate / per_step * 0.9), rel=0.005, abs=1)


def test_the_budget_probe_leaves_a_slow_first_step_out_of_its_minutes(tiny_data, tmp_path, monkeypatch):
    """Compiling the step (minutes with few CPU cores) happens in the first step: it must not use
    up the probe's time, or the probe ends after that one step and cannot time anything."""
    calls = _slow_steps(monkeypatch, lambda n: 1000.0 if n == 1 else 0.0)  # past the probe's 2 minutes
    steps = steps_for_budget(_cfg(tiny_data, tmp_path / "run"), minutes=0.25, probe_steps=12)
    assert len(calls) == 12 and steps >= 10 and not (tmp_path / "run").exists()


def test_a_budget_probe_leaves_its_slow_first_steps_out_of_the_rate(tiny_data, tmp_path, monkeypatch):
    """Compiling and graph capture slow the probe's first steps; the schedule is sized by the steady rate after them."""
    calls = _slow_steps(monkeypatch, lambda n: 1000.0 if n <= 3 else 0.0)  # as a first compile would
    steps = steps_for_budget(_cfg(tiny_data, tmp_path / "run"), minutes=1000, probe_steps=20)
    assert len(calls) == 20 and not (tmp_path / "run").exists()
    assert steps > 20_000  # counting the 3,000 s of the first steps would give about 400


def test_a_signal_during_the_budget_probe_says_so_and_leaves_nothing(tiny_data, tmp_path):
    import os
    import threading

    from electra.signals import Interrupted

    def ctrl_c_once_it_steps() -> None:
        logged, deadline = tmp_path / "probe" / "metrics.jsonl", time.time() + 120
        while not (logged.exists() and logged.read_text()) and time.time() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_once_it_steps, daemon=True).start()
    with pytest.raises(Interrupted, match="stopped by SIGINT during the timing probe, whose steps are not kept"):
        steps_for_budget(_cfg(tiny_data, tmp_path / "probe"), minutes=60, probe_steps=10**6)  # up to 6 minutes
    assert not (tmp_path / "probe").exists()


def test_tensorboard_gets_the_logged_scalars(tiny_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(_cfg(tiny_data, tmp_path / "run", max_steps=4, tensorboard=True), quiet=True)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "disc_accuracy", "lr", "valid_loss"} <= set(events.Tags()["scalars"])
    scalars = events.Scalars("loss")
    assert [s.step for s in scalars] == [m["step"] for m in logged] == [1, 2, 3, 4]
    assert [s.value for s in scalars] == pytest.approx([m["loss"] for m in logged], rel=1e-6)
    # killed after its step-3 checkpoint, it had logged step 4: the resume's step 4 replaces it, not joins it
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step-00000004")
    run(_cfg(tiny_data, tmp_path / "run", max_steps=5, tensorboard=True), resume=True, quiet=True)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [s.step for s in events.Scalars("loss")] == [1, 2, 3, 4, 5]


def test_mlm_baseline_trains_the_full_size_masked_lm_and_exports_it(tiny_data, tmp_path, cli):
    transformers = pytest.importorskip("transformers")
    run(_cfg(tiny_data, tmp_path / "run", max_steps=3, objective="mlm"), quiet=True)
    model = load_checkpoint(tmp_path / "run").model
    assert model.cfg.generator == model.cfg.discriminator
    result = cli("export", tmp_path / "run", "--out", tmp_path / "hf", "--generator-out", tmp_path / "gen")
    assert result.returncode == 2 and "an MLM run has no generator" in result.stderr, result.stderr
    assert not (tmp_path / "hf").exists() and not (tmp_path / "gen").exists()
    result = cli("export", tmp_path / "run", "--out", tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    mlm = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf")
    assert type(mlm).__name__ == "ElectraForMaskedLM" and mlm.config.hidden_size == 32
    result = cli("export", tmp_path / "run", "--out", tmp_path / "hf", "--force")  # again, over the first
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("objective", ["replace-mlm", "all-tokens-mlm"])
def test_replace_and_all_tokens_mlm_export_their_main_network_as_a_masked_lm(tiny_data, tmp_path, objective, capsys):
    transformers = pytest.importorskip("transformers")
    from electra.cli import main

    logged = run(_cfg(tiny_data, tmp_path / "run", max_steps=3, objective=objective), quiet=True)
    assert {"gen_loss", "disc_loss", "disc_accuracy", "valid_disc_loss"} <= set(logged)
    model = load_checkpoint(tmp_path / "run").model.eval()  # the main network's head came back from the checkpoint
    assert model.discriminator_lm_head is not None and model.cfg.discriminator_lm_head
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    assert f"exported the {objective} network (ElectraForMaskedLM)" in capsys.readouterr().out
    assert f"| objective | {objective} |" in (tmp_path / "hf" / "README.md").read_text()
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    assert theirs.config.hidden_size == model.cfg.discriminator.hidden_size  # the main network, not the generator
    ids = torch.tensor([[2, 17, 40, 9, 33, 3]])
    with torch.no_grad():
        ours = model.discriminator_lm_logits(model.discriminator_hidden(ids))
        torch.testing.assert_close(theirs(input_ids=ids).logits, ours, rtol=1e-5, atol=1e-5)


def test_electra_15_trains_and_exports_a_discriminator(tiny_data, tmp_path, capsys):
    from electra.cli import main

    logged = run(_cfg(tiny_data, tmp_path / "run", max_steps=3, objective="electra-15"), quiet=True)
    assert logged["replaced_fraction"] > 0.5  # of the masked positions it is scored on, not of all tokens
    assert load_checkpoint(tmp_path / "run").model.discriminator_lm_head is None
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    assert "exported discriminator (ElectraForPreTraining)" in capsys.readouterr().out
    assert "| objective | electra-15 |" in (tmp_path / "hf" / "README.md").read_text()


def test_whole_word_masking_is_a_setting_of_the_run(tiny_data, tmp_path, monkeypatch):
    import electra.step
    from electra.pretrain import _check_resume, token_kinds
    from electra.tokenizer import load_tokenizer

    manifest = json.loads((tiny_data / "manifest.json").read_text())
    kinds = token_kinds(str(tiny_data), manifest, whole_word=True)
    vocab = load_tokenizer(tiny_data).get_vocab()
    assert kinds[vocab["##" + next(t[2:] for t in vocab if t.startswith("##"))]] == 2
    assert kinds[vocab["[MASK]"]] == 1 and kinds[vocab["[CLS]"]] == 1 and (kinds == 2).sum() > 10

    counted, plain = [], electra.step.loss_counts

    def counts(*args):  # the step divides its losses by whole words chosen, as its objective chooses them
        counted.append(args[6])
        return plain(*args)

    monkeypatch.setattr(electra.step, "loss_counts", counts)
    run(_cfg(tiny_data, tmp_path / "run", max_steps=3, whole_word_masking=True), quiet=True)
    assert counted == [True] * 3
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["objective"]["whole_word"] is True
    from electra.card import checkpoint_card

    assert "| masking | whole words |" in checkpoint_card(load_checkpoint(tmp_path / "run"), "discriminator", "x")
    with pytest.raises(ValueError, match="objective.whole_word: checkpoint True, now False"):
        run(_cfg(tiny_data, tmp_path / "run", max_steps=6), resume=True, quiet=True)
    again = PretrainConfig.from_file(tmp_path / "run" / "config.json", max_steps=6)  # the run's file keeps it
    assert again.whole_word_masking is True
    run(again, resume=True, quiet=True)
    # a run saved before the setting existed resumes as token masking
    older = {"objective": {"kind": "electra", "mask_prob": 0.15, "rtd_weight": 50.0, "temperature": 1.0}}
    _check_resume(older, {"objective": {**older["objective"], "whole_word": False}})
    with pytest.raises(ValueError, match="whole_word"):
        _check_resume(older, {"objective": {**older["objective"], "whole_word": True}})


def test_a_runs_config_file_derives_again_what_the_run_derived(tmp_path):
    from electra.pretrain import PRESET_TRAINING

    settings = PretrainConfig(data="d", out="o", preset="tiny", max_steps=30, seed=3).resolved(32.0)
    assert settings["warmup_steps"] == 3 and settings["lr"] == PRESET_TRAINING["tiny"]["lr"]
    (tmp_path / "o").mkdir()
    record = tmp_path / "o" / "config.json"  # in the run folder "o", typed in tmp_path
    record.write_text(json.dumps({**settings, "data_sha256": "x", "working_dir": str(tmp_path)}))
    same = PretrainConfig.from_file(record)
    assert (same.max_steps, same.seed, same.lr, same.warmup_steps) == (30, 3, None, None)  # given kept, defaults not
    assert same.resolved(32.0) == {**settings, "out": str(tmp_path / "o")}  # read from where it was typed
    longer = PretrainConfig.from_file(record, max_steps=100_000).resolved(32.0)
    assert longer["warmup_steps"] == 10_000  # not the 30-step run's 3
    small = PretrainConfig.from_file(record, preset="small").resolved(32.0)
    assert small["lr"] == PRESET_TRAINING["small"]["lr"] != settings["lr"]


def test_continue_pretraining_from_transformers_folders(tiny_data, tmp_path):
    from electra import hf
    from electra.config import tiny
    from electra.model import Electra

    torch.manual_seed(0)
    start = Electra(tiny(vocab_size=json.loads((tiny_data / "manifest.json").read_text())["vocab_size"]))
    hf.export_discriminator(start, tmp_path / "d", tokenizer_dir=tiny_data)
    hf.export_generator(start, tmp_path / "g", tokenizer_dir=tiny_data)
    run(
        _cfg(
            tiny_data,
            tmp_path / "run",
            max_steps=2,
            init_discriminator=str(tmp_path / "d"),
            init_generator=str(tmp_path / "g"),
            lr=1e-12,
        ),
        quiet=True,
    )
    after = load_checkpoint(tmp_path / "run").model
    for (name, a), b in zip(start.state_dict().items(), after.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)  # a negligible LR: still the import
    with pytest.raises(ValueError, match="needs both"):
        _cfg(tiny_data, tmp_path / "x", init_discriminator=str(tmp_path / "d"))
    init = dict(init_discriminator=str(tmp_path / "d"), init_generator=str(tmp_path / "g"))
    with pytest.raises(ValueError, match="--generator-fraction sizes a new generator"):
        _cfg(tiny_data, tmp_path / "x", generator_fraction=0.25, **init)
    run(_cfg(tiny_data, tmp_path / "drop0", max_steps=1, dropout=0.0, **init), quiet=True)
    assert load_checkpoint(tmp_path / "drop0").model.cfg.generator.attention_dropout == 0.0  # --dropout applies

    from electra.tokenizer import from_vocab, load_tokenizer, save_tokenizer, vocab_in_order

    vocab = vocab_in_order(load_tokenizer(tiny_data))
    save_tokenizer(from_vocab(vocab[:5] + vocab[5:][::-1]), tmp_path / "other")  # same size, other ids
    hf.export_discriminator(start, tmp_path / "d2", tokenizer_dir=tmp_path / "other")
    with pytest.raises(ValueError, match="prepared with another tokenizer than .*d2's"):
        run(_cfg(tiny_data, tmp_path / "x", max_steps=1, **{**init, "init_discriminator": str(tmp_path / "d2")}))
    hf.export_generator(start, tmp_path / "g2", tokenizer_dir=tmp_path / "other")
    with pytest.raises(ValueError, match="prepared with another tokenizer than .*g2's"):
        run(_cfg(tiny_data, tmp_path / "x", max_steps=1, **{**init, "init_generator": str(tmp_path / "g2")}))
    save_tokenizer(from_vocab(vocab, lowercase=False), tmp_path / "cased")  # the same ids, case kept
    hf.export_discriminator(start, tmp_path / "d3", tokenizer_dir=tmp_path / "cased")
    with pytest.raises(ValueError, match="that lowercases and strips accents, and .*d3's keeps case and accents; prep"):
        run(_cfg(tiny_data, tmp_path / "x", max_steps=1, **{**init, "init_discriminator": str(tmp_path / "d3")}))
    assert not (tmp_path / "x").exists()
    for objective in ("mlm", "replace-mlm", "all-tokens-mlm"):
        with pytest.raises(ValueError, match=f"--objective {objective} trains a new masked LM from scratch"):
            _cfg(tiny_data, tmp_path / "x", objective=objective, **init)
    with pytest.raises(ValueError, match="started from .*d and .*g; pass --init-discriminator"):
        run(_cfg(tiny_data, tmp_path / "run", max_steps=3), resume=True, quiet=True)
    import dataclasses

    short = Electra(  # 16 positions; the data's rows are 32 tokens
        dataclasses.replace(
            start.cfg,
            discriminator=dataclasses.replace(start.cfg.discriminator, max_positions=16),
            generator=dataclasses.replace(start.cfg.generator, max_positions=16),
        )
    )
    hf.export_discriminator(short, tmp_path / "d16", tokenizer_dir=tiny_data)
    hf.export_generator(short, tmp_path / "g16", tokenizer_dir=tiny_data)
    init16 = dict(init_discriminator=str(tmp_path / "d16"), init_generator=str(tmp_path / "g16"))
    with pytest.raises(ValueError, match="rows of 32 tokens exceed the initial model's 16 positions; .*--seq-len 16"):
        run(_cfg(tiny_data, tmp_path / "x", max_steps=1, **init16))
    assert not (tmp_path / "x").exists()


def test_config_file_and_flags(tiny_data, tmp_path, cli):
    (tmp_path / "c.json").write_text(
        json.dumps(
            {"data": str(tiny_data), "out": str(tmp_path / "run"), "preset": "tiny", "max_steps": 2, "batch_size": 8}
        )
    )
    result = cli("pretrain", "--config", tmp_path / "c.json", "--max-steps", "3", "--quiet")
    assert result.returncode == 0, result.stderr
    assert list_checkpoints(tmp_path / "run")[-1].name == "step-00000003"
    (tmp_path / "bad.json").write_text(json.dumps({"data": "x", "out": "y", "learning_rate": 1}))
    result = cli("pretrain", "--config", tmp_path / "bad.json")
    assert result.returncode == 2 and "unknown options learning_rate" in result.stderr
    for values, message in [
        ({"preset": "tiny"}, "does not set data and out; set it there or pass --data"),
        ({"data": "x", "out": "y", "max_steps": "2"}, "max-steps must be a whole number of at least 1, got '2'"),
        ({"data": "x", "out": "y", "whole_word_masking": "false"}, "whole-word-masking must be true or false, got"),
        ({"data": "x", "out": "y", "compile": "no"}, "compile must be true or false, got 'no'"),
        ({"data": "x", "out": "y", "strategy": "zzz"}, "unknown strategy 'zzz'; use ddp or fsdp"),
        ({"data": "x", "out": "y", "resume": True}, "sets resume, which only the command line gives: .* pass --resume"),
        ([1], "must hold one JSON object of options"),
    ]:
        (tmp_path / "bad.json").write_text(json.dumps(values))
        with pytest.raises(ValueError, match=message):
            PretrainConfig.from_file(tmp_path / "bad.json")
    again = PretrainConfig.from_file(tmp_path / "run" / "config.json", out=str(tmp_path / "again"))  # a run's record
    assert again.max_steps == 3 and again.preset == "tiny" and again.objective == "electra"
    saved, resolved = json.loads((tmp_path / "run" / "config.json").read_text()), again.resolved(32)
    for key in ("batch_size", "lr", "mask_prob", "max_steps", "warmup_steps", "seed", "data"):
        assert resolved[key] == saved[key], key
    shutil.move(tmp_path / "run", tmp_path / "moved")  # its record names the old folder: never a new run there
    with pytest.raises(ValueError, match="records the run in .*run, not the folder .*moved that holds it"):
        PretrainConfig.from_file(tmp_path / "moved" / "config.json")
    assert PretrainConfig.from_file(tmp_path / "moved" / "config.json", out=str(tmp_path / "moved")).max_steps == 3


def test_a_runs_config_reads_back_from_another_folder(tiny_data, tmp_path, cli, monkeypatch):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "books").symlink_to(tiny_data)
    (tmp_path / "project" / "c.json").write_text(json.dumps({**FAST, "max_steps": 2, "whole_word_masking": True}))
    monkeypatch.chdir(tmp_path / "project")  # relative paths, as typed in a project folder
    args = ("pretrain", "--data", "books", "--out", "runs/r", "--config", "c.json", "--quiet")
    result = cli(*args, "--no-whole-word-masking")  # a flag turns off what the file switched on
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "project" / "runs/r/config.json").read_text())["objective"]["whole_word"] is False
    elsewhere = tmp_path / "jobs"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = cli("pretrain", "--config", tmp_path / "project/runs/r/config.json", "--resume", "--max-steps", "3")
    assert result.returncode == 0, result.stderr
    assert list_checkpoints(tmp_path / "project/runs/r")[-1].name == "step-00000003"
    assert not any(elsewhere.iterdir())  # nothing was written where the command ran
    monkeypatch.chdir(tmp_path / "project")  # the same folders typed as before still resume the run
    result = cli(*args, "--no-whole-word-masking", "--resume", "--max-steps", "4", "--strategy", "fsdp")
    assert result.returncode == 0, result.stderr
    assert "note: --strategy fsdp applies under torchrun; this single process goes on without it" in result.stderr


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("max_steps", 0, "max-steps must be a whole number of at least 1, got 0"),  # never "the preset's 1M"
        ("batch_size", -4, "batch-size must be a whole number of at least 1"),
        ("lr", 0.0, "lr must be a finite number above 0"),
        ("lr", float("inf"), "lr must be a finite number above 0, got inf"),  # one update would make weights NaN
        ("rtd_weight", float("inf"), "rtd-weight must be a finite number of at least 0, got inf"),
        ("mask_prob", 1.0, "mask-prob must be a number between 0 and 1"),
        ("mask_prob", 0.0, "mask-prob must be a number between 0 and 1"),  # nothing masked: nothing to learn
        ("dropout", 1.5, "dropout must be a number in \\[0, 1\\)"),
        ("dropout", 1.0, "dropout must be a number in \\[0, 1\\)"),  # would divide by 1 - p = 0 at the first step
        ("keep_checkpoints", -1, "keep-checkpoints must be a whole number of at least 1"),
        ("seed", 2**63 - 1, "seed must be a whole number from 0 to 4294967295"),  # was an overflow, config.json left
        ("warmup_steps", 12, "warmup-steps 12 is not below max-steps 12: the learning rate would never reach"),
        ("device", "cuda:7" if torch.cuda.is_available() else "cuda", "device 'cuda"),
        ("device", "tpu", "unknown device 'tpu'"),
        ("precision", "fp8", "precision must be one of auto, fp32, bf16, fp16, got 'fp8'"),
        ("architecture", {"discriminator": {"num_layers": 0}}, "architecture: the discriminator's num_layers must be"),
        (
            "architecture",
            {"generator": {"num_heads": 3}},
            "the generator's hidden_size 16 is not divisible by num_heads 3",
        ),
        ("architecture", {"discriminator": {"max_positions": 8}}, "exceed the model's 8 positions; .* or set"),
        ("architecture", {"discriminator": {"max_positions": 31}}, "rows of 32 tokens exceed the model's 31 positions"),
        ("micro_batches", 3, "batch size 8 does not split into 1 process x 3 micro-batches; choose a multiple"),
        ("architecture", {"discriminator": {"vocab_size": 50}}, "sets vocab_size, which the data's tokenizer decides"),
        ("architecture", {"generator": {"max_positions": 64}}, "set max_positions under architecture.discriminator"),
        ("architecture", {"discriminator": {"layers": 6}}, "unknown size 'layers'; choose from embedding_size,"),
        ("architecture", {"num_layers": 6}, 'architecture must look like {"discriminator"'),
        pytest.param(
            "cuda_graph", "on", "--cuda-graph on needs", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="")
        ),
    ],
)
def test_out_of_range_options_are_refused_before_any_work(tiny_data, tmp_path, option, value, message):
    with pytest.raises(ValueError, match=message):
        run(_cfg(tiny_data, tmp_path / "run", **{option: value}), quiet=True)
    assert not (tmp_path / "run").exists()


def test_architecture_sizes_a_new_model_and_a_runs_record_refuses_hand_edits(tiny_data, tmp_path, cli):
    transformers = pytest.importorskip("transformers")
    arch = {"discriminator": {"num_layers": 3, "hidden_size": 48, "max_positions": 256}, "generator": {"num_layers": 1}}
    (tmp_path / "c.json").write_text(json.dumps({**FAST, "max_steps": 2, "architecture": arch}))
    result = cli("pretrain", "--config", tmp_path / "c.json", "--data", tiny_data, "--out", tmp_path / "run", "--quiet")
    assert result.returncode == 0, result.stderr
    cfg = load_checkpoint(tmp_path / "run").model.cfg
    disc, gen = cfg.discriminator, cfg.generator
    assert (disc.num_layers, disc.hidden_size, disc.num_heads, disc.ffn_size, disc.max_positions) == (3, 48, 4, 64, 256)
    # the generator is the tiny preset's half width of this discriminator, with its own depth
    assert (gen.num_layers, gen.hidden_size, gen.num_heads, gen.max_positions) == (1, 24, 2, 256)
    assert cli("export", tmp_path / "run", "--out", tmp_path / "hf").returncode == 0
    exported = transformers.AutoConfig.from_pretrained(tmp_path / "hf")
    assert (exported.num_hidden_layers, exported.hidden_size, exported.max_position_embeddings) == (3, 48, 256)

    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["architecture"] == arch
    again = PretrainConfig.from_file(tmp_path / "run" / "config.json", max_steps=3)  # reads back as it was
    assert again.architecture == arch
    record["model"]["discriminator"]["num_layers"] = 6  # an edit of the record would be silently lost
    (tmp_path / "edited.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match='discriminator.num_layers is 6, the settings build 3.* under "architecture"'):
        PretrainConfig.from_file(tmp_path / "edited.json")
    with pytest.raises(ValueError, match="the --init-\\* folders give both networks' sizes"):
        _cfg(tiny_data, tmp_path / "r2", architecture=arch, init_discriminator="a", init_generator="b")


def test_a_run_is_told_of_data_that_is_one_part_misses_parts_or_has_no_validation_rows():
    from electra.pretrain import data_notes

    def manifest(valid_rows=5, seq_len=128, **prepared):
        config = {"num_parts": 1, "part_index": 0, **prepared}
        return {"config": config, "seq_len": seq_len, "splits": {"valid": {"rows": valid_rows}}}

    assert data_notes("d", manifest()) == []
    assert data_notes("d", manifest(num_parts=4, part_index=None, parts_merged=[0, 1, 2, 3])) == []
    (part,) = data_notes("p1", manifest(num_parts=4, part_index=1))
    assert part.startswith("p1 is part 1 of 4 of a preparation") and "--merge" in part
    (merged,) = data_notes("m", manifest(num_parts=4, part_index=None, parts_merged=[0, 2]))
    assert merged == "m merges parts 0, 2 of 4: the others' documents are left out"
    (none,) = data_notes("d", manifest(valid_rows=0))
    assert "no validation rows, so no valid_* figures are logged" in none
    assert data_notes("d", manifest(), "small") == data_notes("d", manifest(seq_len=512), "base") == []
    (short,) = data_notes("d", manifest(), "base")
    assert short.startswith("d has rows of 128 tokens; the paper pre-trains ELECTRA-Base on rows of 512 (prepare wi")
    assert data_notes("d", manifest(), None) == []  # continued pre-training: the released model's own length
    assert "--seq-len 512 to match it: 1.7x the tokens per step" in data_notes("d", manifest(seq_len=300), "large")[0]


def test_an_out_below_a_file_is_refused_before_any_work(tiny_data, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="notes.txt is a file, not a folder; choose another output path"):
        run(_cfg(tiny_data, tmp_path / "notes.txt" / "run"), quiet=True)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_disentangled_embeddings_train_and_export(tiny_data, tmp_path, cli):
    transformers = pytest.importorskip("transformers")
    run(_cfg(tiny_data, tmp_path / "run", max_steps=3, disentangled_embeddings=True), quiet=True)
    model = load_checkpoint(tmp_path / "run").model
    assert model.cfg.disentangled_embeddings and model.embedding_delta.abs().sum() > 0
    result = cli("export", tmp_path / "run", "--out", tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    disc = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "hf")
    torch.testing.assert_close(
        disc.electra.embeddings.word_embeddings.weight,
        (model.embeddings.word.weight + model.embedding_delta).detach(),
        rtol=0,
        atol=0,
    )


def test_report_draws_a_png_of_one_or_several_runs(tiny_data, tmp_path, cli):
    pytest.importorskip("matplotlib")
    run(_cfg(tiny_data, tmp_path / "a", max_steps=4), quiet=True)
    run(_cfg(tiny_data, tmp_path / "b", max_steps=4, objective="mlm"), quiet=True)
    result = cli("report", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "both.png")
    assert result.returncode == 0, result.stderr
    png = (tmp_path / "both.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    result = cli("report", tmp_path)
    assert result.returncode == 2 and "has no metrics.jsonl" in result.stderr
    result = cli("report", tmp_path / "nope")
    assert result.returncode == 2 and "run folder " + str(tmp_path / "nope") + " does not exist" in result.stderr
    result = cli("report", tmp_path / "a", tmp_path / "nope")  # every RUN is read, not only the first
    assert result.returncode == 2 and "run folder " + str(tmp_path / "nope") + " does not exist" in result.stderr
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"loss": 1.0}\n')
    result = cli("report", tmp_path / "odd")
    assert result.returncode == 2 and "metrics.jsonl:2 is not a log line of `electra pretrain`" in result.stderr
    (tmp_path / "odd" / "metrics.jsonl").write_text('{"step": 1}\ngarbage\n{"step": 2}\n{"step": 3, "lo')
    result = cli("report", tmp_path / "odd")  # a cut last line is skipped; a damaged line before it is not
    assert result.returncode == 2 and "metrics.jsonl:2 is not JSON: the log is damaged there" in result.stderr
    (tmp_path / "figs").mkdir()
    result = cli("report", tmp_path / "a", "--out", tmp_path / "figs")
    assert result.returncode == 0 and f"wrote {tmp_path / 'figs' / 'report.png'}" in result.stdout
    assert [p.name for p in (tmp_path / "figs").iterdir()] == ["report.png"]
    result = cli("report", tmp_path / "a" / "metrics.jsonl", "--out", f"{tmp_path / 'new'}/")  # the log, a new folder
    assert result.returncode == 0 and f"wrote {tmp_path / 'new' / 'report.png'}" in result.stdout
    result = cli("report", tmp_path / "a", "--out", tmp_path / "plain")  # a name without a suffix: a PNG
    assert result.returncode == 0 and f"wrote {tmp_path / 'plain.png'}" in result.stdout
    assert (tmp_path / "plain.png").read_bytes().startswith(b"\x89PNG")
    result = cli("report", tmp_path / "a" / "config.json")
    assert (
        result.returncode == 2
        and "config.json is a file; pass the run folder that holds metrics.jsonl" in result.stderr
    )
    (tmp_path / "odd" / "metrics.jsonl").write_text('{"step": 1, "lo')
    result = cli("report", tmp_path / "odd")
    assert (
        result.returncode == 2 and "holds only a line cut short: the run has not logged a whole step" in result.stderr
    )


def test_report_tells_runs_apart_and_fits_its_titles():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from electra.report import PANELS, figure, run_labels

    assert run_labels(["x/a/base", "y/b/base", "z/c"]) == ["a/base", "b/base", "c"]
    assert run_labels(["/runs/one"]) == ["one"]
    keys = [k for _, ks, _ in PANELS for k in ks]
    runs = [(f"run-{r}", [{"step": s, **dict.fromkeys(keys, r + s / 10)} for s in (1, 2)]) for r in range(12)]
    (ax, *_) = figure([("one", [{"step": 1, "loss": 2.0}])]).axes  # a single logged step shows as a point
    assert [line.get_marker() for line in ax.lines] == ["o"]
    for many in (runs[:1], runs[:3], runs):
        fig = figure(many)
        renderer = fig.canvas.get_renderer()
        fig.draw(renderer)  # lays the panels out
        for ax in fig.axes:
            styles = [(line.get_color(), str(line.get_linestyle()), line.get_marker()) for line in ax.lines]
            assert len(set(styles)) == len(styles), ax.get_title()  # no two lines look alike
            colours = {line.get_label().split(":")[0]: line.get_color() for line in ax.lines}
            assert len(set(map(str, colours.values()))) == len(colours)  # one colour per run (or per metric)
            assert ax.title.get_window_extent(renderer).width <= ax.get_window_extent(renderer).width
        assert fig._suptitle.get_window_extent(renderer).width <= fig.bbox.width
        matplotlib.pyplot.close(fig)


def test_activation_checkpointing_trains_exactly_as_without(tiny_data, tmp_path, monkeypatch):
    """Eager, dropout's masks replay in the recomputation: the same weights bit for bit. Compiled
    (aot_eager: dynamo's checkpoint regions and the partitioner's recomputation), equal too."""
    from electra import model as model_module

    run(_cfg(tiny_data, tmp_path / "plain", max_steps=3), quiet=True)
    recomputed, original = [], model_module.checkpoint  # each block run under torch.utils.checkpoint
    with monkeypatch.context() as m:
        m.setattr(model_module, "checkpoint", lambda *a, **k: recomputed.append(1) or original(*a, **k))
        run(_cfg(tiny_data, tmp_path / "ckpt", max_steps=3, activation_checkpointing=True), quiet=True)
    assert recomputed  # the setting reached both networks' blocks
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "ckpt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(tmp_path / "ckpt") == _losses(tmp_path / "plain")
    kw = dict(max_steps=3, dropout=0.0, activation_checkpointing=True)
    run(_cfg(tiny_data, tmp_path / "eager", max_steps=3, dropout=0.0), quiet=True)
    run(_cfg(tiny_data, tmp_path / "compiled", compile_backend="aot_eager", **kw), quiet=True)
    a, b = _weights(tmp_path / "eager"), _weights(tmp_path / "compiled")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="runs without a CUDA graph; drop --cuda-graph on"):
        PretrainConfig(data="d", out="o", cuda_graph="on", activation_checkpointing=True)


def test_the_optimizer_settings_given_reach_the_update_and_the_log(tiny_data, tmp_path, monkeypatch):
    from electra import pretrain

    seen, real = {}, pretrain.Update

    def capture(*args, **kwargs):
        seen["update"] = real(*args, **kwargs)
        return seen["update"]

    monkeypatch.setattr(pretrain, "Update", capture)
    given = {"max_steps": 4, "lr": 2e-3, "warmup_steps": 2, "weight_decay": 0.05, "clip_norm": 0.5}
    run(_cfg(tiny_data, tmp_path / "run", **given), quiet=True)
    update = seen["update"]
    assert update.clip_norm == 0.5
    assert {g["weight_decay"] for g in update.optimizer.param_groups} == {0.0, 0.05}
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # step s (0-based) runs at lr x min(1, (s+1)/warmup) x (1 - s/steps)
    assert [m["lr"] for m in lines] == pytest.approx([2e-3 * f for f in (0.5, 0.75, 0.5, 0.25)])


def _electra_step(data):
    """A tiny model's ELECTRA TrainStep for a prepared folder, its token kinds and [MASK] id."""
    from electra.config import tiny
    from electra.model import Electra
    from electra.objective import OBJECTIVES, ObjectiveConfig
    from electra.parallel import TrainStep
    from electra.pretrain import token_kinds

    manifest = json.loads((data / "manifest.json").read_text())
    torch.manual_seed(0)
    step = TrainStep(Electra(tiny(vocab_size=manifest["vocab_size"])), OBJECTIVES["electra"], ObjectiveConfig())
    return step, token_kinds(str(data), manifest, False), manifest["special_tokens"]["mask"]


def test_validation_losses_are_means_over_rows_like_the_training_loss(tiny_data):
    """valid_loss of a model on held-out rows is the per-batch loss averaged by rows."""
    from electra.data import Shards, iterate
    from electra.pretrain import evaluate

    step, special, mask_id = _electra_step(tiny_data)
    step.train()
    got = evaluate(step, Shards(str(tiny_data), "valid"), special, mask_id, 4, 1, torch.device("cpu"), nullcontext)
    assert all(m.training for m in step.modules())  # training goes on with dropout after validating
    b = next(iter(iterate(Shards(str(tiny_data), "valid"), 4)))
    step.eval()
    with torch.no_grad():
        loss, _ = step(
            b.input_ids,
            b.token_type_ids,
            b.attention_mask,
            special,
            b.rows,
            torch.full((), 1_000_003, dtype=torch.int64),  # the first validation batch's noise
            mask_id,
        )
    assert got["valid_loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_resume_refuses_another_lr_weight_decay_or_seed(tiny_data, tmp_path):
    run(_cfg(tiny_data, tmp_path / "run", max_steps=3), quiet=True)
    for change, message in (
        ({"lr": 5e-3}, r"lr: checkpoint 0.001, now 0.005"),
        ({"weight_decay": 0.1}, r"weight_decay: checkpoint 0.01, now 0.1"),
        ({"seed": 1}, r"seed: checkpoint 0, now 1"),
    ):
        with pytest.raises(ValueError, match=message):
            run(_cfg(tiny_data, tmp_path / "run", max_steps=6, **change), resume=True, quiet=True)


def test_preset_training_settings_are_the_papers():  # Clark et al. 2020, Table 6
    from electra.pretrain import PRESET_TRAINING

    assert PRESET_TRAINING["small"] == {"lr": 5e-4, "batch_size": 128, "max_steps": 1_000_000, "mask_prob": 0.15}
    assert PRESET_TRAINING["base"] == {"lr": 2e-4, "batch_size": 256, "max_steps": 766_000, "mask_prob": 0.15}
    assert PRESET_TRAINING["large"] == {"lr": 2e-4, "batch_size": 2048, "max_steps": 400_000, "mask_prob": 0.25}


def test_a_run_keeps_only_its_newest_checkpoints(tiny_data, tmp_path):
    run(
        _cfg(tiny_data, tmp_path / "run", max_steps=9, checkpoint_every=3, keep_checkpoints=2, eval_every=100),
        quiet=True,
    )
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000006", "step-00000009"]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000006", "step-00000009"]


def test_elapsed_time_adds_up_over_every_resume(tiny_data, tmp_path):
    for steps in (3, 6, 9):  # two resumes: the second must count the first two runs' time
        run(_cfg(tiny_data, tmp_path / "run", max_steps=steps, eval_every=100), resume=steps > 3, quiet=True)
    elapsed = [json.loads(x)["elapsed_s"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert elapsed == sorted(elapsed), elapsed


def test_deterministic_trains_under_fixed_order_kernels_and_restores_the_setting(tiny_data, tmp_path, cli, monkeypatch):
    """--deterministic turns on torch's deterministic algorithms (and cuBLAS's fixed workspace)
    for the run only; on CPU the run is the same as without it, bit for bit."""
    from electra import pretrain

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen, real = [], pretrain.evaluate
    monkeypatch.setattr(
        pretrain,
        "evaluate",
        lambda *a, **k: (
            seen.append((torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG")))
            or real(*a, **k)
        ),
    )
    run(_cfg(tiny_data, tmp_path / "plain", max_steps=4), quiet=True)
    assert set(seen) == {(False, None)}
    seen.clear()
    args = ["--data", tiny_data, "--out", tmp_path / "fixed", "--preset", "tiny", "--batch-size", 8, "--max-steps", 4]
    r = cli("pretrain", *args, "--log-every", 1, "--eval-every", 4, "--eval-batches", 2, "--deterministic", "--quiet")
    assert r.returncode == 0, r.stderr
    assert set(seen) == {(True, ":4096:8")}
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert json.loads((tmp_path / "fixed" / "config.json").read_text())["deterministic"] is True
    assert _losses(tmp_path / "fixed") == _losses(tmp_path / "plain")
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "fixed")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "objective, whole_word",
    [("electra", True), ("electra-15", False), ("replace-mlm", False), ("all-tokens-mlm", False), ("mlm", True)],
)
def test_deterministic_runs_call_nothing_a_gpu_refuses_in_that_mode(tiny_data, tmp_path, objective, whole_word):
    """Eager training steps and validation under --deterministic, with every objective: on a GPU
    torch would stop the run at an operation without a deterministic CUDA kernel (the sampler's
    float cumsum was one)."""
    from tests.conftest import refused_on_cuda_when_deterministic

    cfg = _cfg(tiny_data, tmp_path / "run", max_steps=2, eval_every=2, deterministic=True, objective=objective)
    with refused_on_cuda_when_deterministic() as refused:
        run(dataclasses.replace(cfg, whole_word_masking=whole_word), quiet=True)
    assert refused == []


def test_deterministic_keeps_a_cublas_workspace_already_chosen_and_the_previous_mode(monkeypatch):
    from electra.parallel import deterministic

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with deterministic():
            assert torch.are_deterministic_algorithms_enabled()
            assert not torch.is_deterministic_algorithms_warn_only_enabled()  # strict: no silent fallback
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
        assert torch.is_deterministic_algorithms_warn_only_enabled()  # the caller's setting, back
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        torch.use_deterministic_algorithms(False)


def test_the_compiled_step_gets_the_modes_inductor_options_and_combo_kernels_on_cuda(tiny_data, tmp_path, monkeypatch):
    from electra.pretrain import compile_options

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert compile_options("default", cuda) == {"combo_kernels": True}  # measured faster on an H200
    assert compile_options("default", cpu) == {}
    assert compile_options("max-autotune", cuda) == {
        "max_autotune": True,
        "coordinate_descent_tuning": True,
        "combo_kernels": True,
    }
    calls = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: calls.append(kw) or module)  # traced, not compiled
    for i, kw in enumerate([{}, {"compile_mode": "max-autotune"}, {"compile_backend": "aot_eager"}]):
        run(_cfg(tiny_data, tmp_path / str(i), max_steps=1, compile=True, **kw), quiet=True)
    assert [(c["backend"], c["options"], c["dynamic"]) for c in calls] == [
        ("inductor", None, False),
        ("inductor", {"max_autotune": True, "coordinate_descent_tuning": True}, False),
        ("aot_eager", None, False),
    ]


def test_flags_given_on_the_command_line_reach_the_run(tiny_data, tmp_path, cli):
    """--micro-batches splits each step (gradient accumulation: the weights come out as without it),
    and --seed, --warmup-steps, --keep-checkpoints, --weight-decay, --clip-norm are the run's, not
    their defaults."""
    kw = dict(max_steps=3, dropout=0.0, eval_every=100, checkpoint_every=1)  # dropout: other masks for other shapes
    given = dict(seed=3, warmup_steps=1, keep_checkpoints=1, weight_decay=0.05, clip_norm=0.5)
    run(_cfg(tiny_data, tmp_path / "whole", **kw, **given), quiet=True)
    args = ["--data", tiny_data, "--out", tmp_path / "split", "--preset", "tiny", "--batch-size", 8, "--max-steps", 3]
    args += ["--log-every", 1, "--eval-every", 100, "--checkpoint-every", 1, "--dropout", 0.0]
    args += ["--seed", 3, "--warmup-steps", 1, "--keep-checkpoints", 1, "--weight-decay", 0.05, "--clip-norm", 0.5]
    r = cli("pretrain", *args, "--micro-batches", 2, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "one process, 2 micro-batches a process" in r.stderr
    config = json.loads((tmp_path / "split" / "config.json").read_text())
    assert {k: config[k] for k in (*given, "micro_batches")} == {**given, "micro_batches": 2}
    assert [p.name for p in list_checkpoints(tmp_path / "split")] == ["step-00000003"]
    for (s, a, va), (t, b, vb) in zip(_losses(tmp_path / "whole"), _losses(tmp_path / "split"), strict=True):
        assert s == t and b == pytest.approx(a, rel=1e-5) and (vb is None) == (va is None)
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6)


def test_a_resume_past_a_newer_step_folder_that_lost_its_weights_saves_over_it(tiny_data, tmp_path, capsys):
    cfg = _cfg(tiny_data, tmp_path / "run", max_steps=6, eval_every=100)
    run(cfg, quiet=True)
    broken = tmp_path / "run" / "checkpoints" / "step-00000006"
    (broken / "model.safetensors").unlink()  # damage after the fact: passed over for step 3
    capsys.readouterr()
    run(cfg, resume=True, quiet=True)
    assert "(step 3 of 6)" in capsys.readouterr().err
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000003", "step-00000006"]
    run(_cfg(tiny_data, tmp_path / "straight", max_steps=6, eval_every=100), quiet=True)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_a_run_that_reached_its_steps_trains_nothing_more(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, tmp_path / "run", max_steps=3, eval_every=100)
    run(cfg, quiet=True)
    logged = (tmp_path / "run" / "metrics.jsonl").read_text()
    run(cfg, resume=True, quiet=True)  # the same command again: done, not refused
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000003"]
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == logged
    assert load_checkpoint(tmp_path / "run").has_tokenizer  # export takes the run's tokenizer from it


def test_every_step_trains_on_the_next_batch_with_its_own_masks_and_dropout(tiny_data, tmp_path, monkeypatch):
    """Random draws are functions of (seed, step): no step repeats the masking noise or the dropout
    stream of another (rows are numbered by their place in the batch, the same every step)."""
    from electra import objective
    from electra.data import Loader, Shards

    draws, real = [], objective.OBJECTIVES["electra"]

    def recording(model, *args):  # ids, types, mask, special, rows, seed, ...
        if model.training:
            draws.append((args[0].clone(), int(args[5]), torch.initial_seed()))
        return real(model, *args)

    monkeypatch.setitem(objective.OBJECTIVES, "electra", recording)
    run(_cfg(tiny_data, tmp_path / "run", max_steps=4, eval_every=100), quiet=True)
    ids, noise, dropout = zip(*draws, strict=True)
    assert len(draws) == 4 and len(set(noise)) == 4 and len(set(dropout)) == 4
    loader = Loader(Shards(str(tiny_data), "train"), 8, seed=0)  # the loader's batches in order, none left out
    assert all(torch.equal(a, loader.next()[0].input_ids) for a in ids)


def test_a_short_last_validation_batch_counts_for_its_rows(tiny_data):
    """valid_* are means over rows: a shard's short last batch weighs its rows, not a whole batch's."""
    from electra.data import Shards, iterate
    from electra.pretrain import evaluate

    step, special, mask_id = _electra_step(tiny_data)
    shards = Shards(str(tiny_data), "valid")
    size = next(k for k in (3, 5, 7, 11, 13) if int(shards.sizes[-1]) % k and int(shards.sizes[-1]) > k)
    got = evaluate(step, shards, special, mask_id, size, 10**6, torch.device("cpu"), nullcontext)
    step.eval()
    losses, rows = [], []
    with torch.no_grad():
        for i, b in enumerate(iterate(shards, size)):
            seed = torch.full((), 1_000_003 + i, dtype=torch.int64)  # each batch's own noise
            loss, _ = step(b.input_ids, b.token_type_ids, b.attention_mask, special, b.rows, seed, mask_id)
            losses.append(loss.item())
            rows.append(len(b.rows))
    assert len(rows) > 1 and min(rows) < size
    expected = sum(x * n for x, n in zip(losses, rows, strict=True)) / sum(rows)
    assert got["valid_loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("objective", ["mlm", "replace-mlm"])
def test_objectives_that_leave_weights_unused_resume_exactly(tiny_data, tmp_path, objective, capsys):
    """The MLM baseline never updates the discriminator, Replace MLM never its replaced-token head:
    their optimizer keeps no state for those weights, and a resume takes the checkpoint as it is."""
    cfg = _cfg(tiny_data, tmp_path / "whole", objective=objective, max_steps=6, eval_every=100)
    run(cfg, quiet=True)
    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")  # stopped after the step-3 checkpoint
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step-00000006")
    capsys.readouterr()
    run(dataclasses.replace(cfg, out=str(tmp_path / "resumed")), resume=True, quiet=True)
    assert "step-00000003 (step 3 of 6)" in capsys.readouterr().err
    assert _record(tmp_path / "resumed") == _record(tmp_path / "whole")
    ours, theirs = _weights(tmp_path / "resumed"), _weights(tmp_path / "whole")
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
