"""The experiment scripts under examples/: their pure parts, on tiny data."""

import importlib.util
import math
from collections import Counter

import pytest

from electra.data import Loader, Shards
from tests.conftest import ROOT


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_frequency_baseline_is_the_entropy_and_top_share_of_the_maskable_tokens(tiny_data):
    shards = Shards(tiny_data)
    special = shards.manifest["special_tokens"]
    skip = {special[name] for name in ("pad", "cls", "sep", "mask")}
    counts = Counter()  # one epoch through the loader sees every training row once
    (batch,) = Loader(shards, global_batch=len(shards)).next()
    for ids, mask in zip(batch.input_ids.tolist(), batch.attention_mask.tolist(), strict=True):
        counts.update(t for t, m in zip(ids, mask, strict=True) if m and t not in skip)
    total = sum(counts.values())
    entropy = -sum(c / total * math.log(c / total) for c in counts.values())

    baseline = _example("electra_vs_mlm").frequency_baseline(tiny_data)

    assert baseline["loss"] == pytest.approx(entropy, rel=1e-9)
    assert baseline["accuracy"] == max(counts.values()) / total
    assert 0 < baseline["loss"] < math.log(shards.manifest["vocab_size"])
