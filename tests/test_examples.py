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


def test_replacement_difficulty_compares_the_discriminator_with_the_prior_of_its_labels(tiny_data):
    module = _example("replacement_difficulty")
    assert module.prior_loss(0.15) == pytest.approx(-(0.15 * math.log(0.15) + 0.85 * math.log(0.85)))
    shards = Shards(tiny_data)
    skip = {shards.manifest["special_tokens"][k] for k in ("pad", "cls", "sep", "mask", "unk")}
    (batch,) = Loader(shards, global_batch=len(shards)).next()
    counts = Counter(
        t
        for ids, mask in zip(batch.input_ids.tolist(), batch.attention_mask.tolist(), strict=True)
        for t, m in zip(ids, mask, strict=True)
        if m and t not in skip
    )
    frequencies = module.unigram(shards)
    assert {i: round(float(p) * sum(counts.values())) for i, p in enumerate(frequencies) if p > 0} == dict(counts)
    sizes = {"embedding_size": 16, "hidden_size": 16, "num_layers": 1, "num_heads": 1, "ffn_size": 32}
    for draw in ("uniform", "unigram"):
        r = module.train(str(tiny_data), draw, steps=20, batch_size=8, lr=1e-3, sizes=sizes)
        # 15% of the real tokens drawn anew, a few of them the original again: a prior near H(0.15)
        assert module.prior_loss(0.16) > r["prior"] > module.prior_loss(0.10) and 0 <= r["recall"] <= 1
        assert r["loss"] > 0 and r["steps"] == 20
