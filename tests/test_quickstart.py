"""`electra quickstart` end to end on the shared Gutenberg books and SST-2 (a short run)."""

import json
import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import SHARED_DATA

BOOKS = SHARED_DATA / "corpus" / "gutenberg"
SST2 = SHARED_DATA / "glue" / "SST-2"


@pytest.mark.skipif(not (BOOKS.is_dir() and SST2.is_dir()), reason="../shared/data is not present")
def test_quickstart_runs_every_stage(tmp_path):
    transformers = pytest.importorskip("transformers")
    books = [str(p) for p in sorted(BOOKS.glob("*.txt"))[:2]]
    out = tmp_path / "qs"
    args = [
        sys.executable,
        "-m",
        "electra",
        "quickstart",
        "--corpus",
        *books,
        "--task-data",
        str(SST2),
        "--minutes",
        "0.25",
        "--preset",
        "tiny",
        "--vocab-size",
        "2000",
        "--finetune-examples",
        "500",
        "--out",
        str(out),
    ]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    for n in range(1, 6):
        assert f"[{n}/5]" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pretrain_steps"] > 0 and summary["train_rows"] > 100
    assert 0.0 <= summary["sst2_dev_accuracy"] <= 1.0
    assert {p["label"] for p in summary["predictions"]} <= {"NEGATIVE", "POSITIVE"}
    assert json.loads((out / "data" / "manifest.json").read_text())["counts"]["documents"] == 2
    disc = transformers.AutoModelForPreTraining.from_pretrained(out / "discriminator")
    assert type(disc).__name__ == "ElectraForPreTraining"
    clf = transformers.AutoModelForSequenceClassification.from_pretrained(out / "sst2")
    assert clf.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    assert "SST-2 dev accuracy" in result.stdout and "classifier" in result.stdout
    # the same command again, after a stop in the pre-training (its newest checkpoint gone, the
    # later stages not done): the stages done are kept, the pre-training resumes
    record = json.loads((out / "quickstart.json").read_text())
    assert record["done"] == ["prepare", "pretrain", "export", "finetune"]
    record["done"] = ["prepare"]
    (out / "quickstart.json").write_text(json.dumps(record))
    import shutil

    from electra.checkpoint import list_checkpoints

    checkpoints = list_checkpoints(out / "pretrain")
    shutil.rmtree(checkpoints[-1])
    prepared = (out / "data" / "manifest.json").stat().st_mtime_ns
    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"continuing the quickstart in {out} (done: prepare)" in again.stderr
    assert f"resuming from {checkpoints[-2]}" in again.stderr and "timing up to" not in again.stderr
    assert (out / "data" / "manifest.json").stat().st_mtime_ns == prepared  # not prepared again
    # past the checkpoint it resumed from (up to the same step, unless this slower run met the time budget first)
    resumed_at = int(re.search(r"\d+", checkpoints[-2].name).group())
    assert json.loads((out / "summary.json").read_text())["pretrain_steps"] > resumed_at
    # a finished quickstart whose classifier lost a file: that stage again, not "done before" and a failure
    (out / "sst2" / "model.safetensors").unlink()
    repaired = subprocess.run(args, capture_output=True, text=True)
    assert repaired.returncode == 0, repaired.stderr[-3000:]
    assert (
        f"note: {out / 'sst2'} has no model.safetensors; doing the finetune stage and the ones after it"
        in repaired.stderr
    )
    assert f"done before: {out / 'discriminator'}" in repaired.stderr and (out / "sst2" / "model.safetensors").is_file()
    # other settings are refused before any work, naming them
    other = subprocess.run([*args[:-2], "--minutes", "1", "--out", str(out)], capture_output=True, text=True)
    assert other.returncode == 2 and "holds a quickstart with other settings (minutes 0.25 → 1.0)" in other.stderr


def test_quickstart_checks_its_inputs_before_any_work(tmp_path, cli):
    def quickstart(*args):
        return cli("quickstart", "--out", tmp_path / "qs", *args)

    (tmp_path / "book.txt").write_text("A short book. It has two sentences.\n")
    (tmp_path / "nodev").mkdir()
    (tmp_path / "nodev" / "train.tsv").write_text("sentence\tlabel\ngood\t1\n")
    corpus = ["--corpus", str(tmp_path / "book.txt")]
    result = quickstart(*corpus, "--task-data", str(tmp_path / "nodev"))
    assert result.returncode == 2 and "dev.tsv does not exist" in result.stderr
    result = quickstart(*corpus, "--task-data", str(tmp_path / "nodev"), "--minutes", "0")
    assert result.returncode == 2 and "minutes must be a finite number above 0" in result.stderr
    assert not (tmp_path / "qs").exists() and "[1/5]" not in result.stderr
    result = quickstart(*corpus, "--task-data", str(tmp_path / "nothing"))
    assert result.returncode == 2 and "point --task-data at the task's GLUE folder" in result.stderr
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "nodev" / "dev.tsv").write_text("sentence\tlabel\nbad\t0\n")
    result = quickstart("--corpus", str(tmp_path / "empty.txt"), "--task-data", str(tmp_path / "nodev"))
    assert result.returncode == 2 and "no text found" in result.stderr and "[1/5]" in result.stderr
    assert not (tmp_path / "qs").exists() and "holds the stages" not in result.stderr  # nothing finished: no folder


def test_quickstart_defaults_are_tiny_and_8000_sentences_on_cpu_small_and_all_on_cuda(monkeypatch):
    from electra.quickstart import QuickstartConfig, _settings

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = _settings(QuickstartConfig())
    assert (cpu["preset"], cpu["finetune_examples"], cpu["minutes"], cpu["vocab_size"]) == ("tiny", 8000, 5.0, 16000)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cuda = _settings(QuickstartConfig())
    assert (cuda["preset"], cuda["finetune_examples"]) == ("small", None)
    assert _settings(QuickstartConfig(finetune_examples=500))["finetune_examples"] == 500


def test_quickstart_passes_each_flag_to_its_config_and_defaults_to_the_configs(tmp_path, cli, monkeypatch):
    """Every flag reaches QuickstartConfig (the real run takes minutes: its entry point is replaced),
    and the flags' defaults are the config's own."""
    from electra.quickstart import QuickstartConfig

    seen = []

    def run(cfg):
        seen.append(cfg)
        summary = {"preset": "tiny", "pretrain_steps": 1, "train_rows": 1, "pretrain_loss": 1.0}
        return {**summary, "sst2_dev_accuracy": 0.5, "folders": {}, "predictions": [], "out": cfg.out}

    monkeypatch.setattr("electra.quickstart.run", run)
    assert cli("quickstart").returncode == 0
    assert seen.pop() == QuickstartConfig()
    flags = ["--corpus", "a.txt", "--corpus", "b.txt", "--task-data", tmp_path / "sst2", "--minutes", "0.5"]
    flags += ["--out", tmp_path / "qs", "--preset", "base", "--vocab-size", "999", "--batch-size", "24"]
    flags += ["--finetune-examples", "300", "--force"]
    result = cli("quickstart", *flags)
    assert result.returncode == 0, result.stderr
    assert seen.pop() == QuickstartConfig(
        out=str(tmp_path / "qs"),
        corpus=("a.txt", "b.txt"),
        task_data=str(tmp_path / "sst2"),
        minutes=0.5,
        preset="base",
        vocab_size=999,
        batch_size=24,
        finetune_examples=300,
        force=True,
    )
