"""The benchmark scripts run (on CPU, tiny shapes) and print their tables: a broken script
found on a GPU machine costs scarce device time."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def _run(*args):
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_pretrain_throughput_table_profile_and_json(tmp_path):
    result = _run(
        "benchmarks/pretrain_throughput.py",
        *("--preset", "tiny", "--batch", "4", "--seq", "16", "--steps", "2", "--warmup", "1"),
        *("--variants", "transformers,ours", "--profile", str(tmp_path / "p"), "--json", str(tmp_path / "r.json")),
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows] == ["variant", "transformers", "ours"]
    saved = json.loads((tmp_path / "r.json").read_text())
    groups = saved["results"][1]["profile_ms_per_step"]
    assert groups["matmul"] > 0 and groups["total"] > groups["matmul"] and list(groups)[-1] == "total"
    assert "every kernel grouped by name" in (tmp_path / "p.ours.txt").read_text()


def test_pretrain_throughput_refuses_unknown_inductor_options():
    result = subprocess.run(
        [sys.executable, "benchmarks/pretrain_throughput.py", "--inductor", "no_such_option=1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode != 0 and "has no 'no_such_option'" in result.stderr


def test_vocab_stage_compares_both_formulations():
    result = _run(
        "benchmarks/vocab_stage.py",
        *("--batch", "4", "--seq", "32", "--vocab", "1000", "--steps", "2", "--warmup", "1", "--precision", "fp32"),
    )
    rows = [line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")]
    assert rows == ["variant", "full-cdf", "library"]
