"""The ELECTRA and MLM objectives, and the paper's comparisons, on hand-made tensors."""

import dataclasses
import math

import pytest
import torch

from electra.config import tiny
from electra.model import Electra
from electra.objective import (
    CONTINUES,
    Masked,
    ObjectiveConfig,
    _copy_accuracy,
    _discriminator_metrics,
    _generator_metrics,
    copy_mlm_loss,
    electra_loss,
    hash32,
    loss_counts,
    mask_tokens,
    masked_lm_loss,
    mlm_loss,
    num_slots,
    prefix_sum,
    rates,
    replace_mlm_loss,
    replace_tokens,
    replaced_token_loss,
    sample_tokens,
    uniform,
)
from electra.parallel import deterministic
from tests.conftest import assert_inverse_cdf

PAD, CLS, SEP, MASK = 0, 2, 3, 4
SPECIAL = torch.zeros(100, dtype=torch.bool)
SPECIAL[[PAD, CLS, SEP, MASK]] = True


def _rows(B=64, T=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (B, T), generator=g)
    lengths = torch.randint(6, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    ids[:, 0] = CLS
    ids[torch.arange(B), lengths - 1] = SEP
    ids[mask == 0] = PAD
    return ids, mask


def test_uniform_is_a_pure_function_of_seed_and_row():
    far = uniform(7, torch.tensor([3, 3 + 2**16, 3 + 2**31, 3 + 2**32 - 1]), 50)  # every bit of a row number counts
    assert len({tuple(r) for r in far.tolist()}) == 4
    rows = torch.arange(100)
    u = uniform(7, rows, 50)
    assert u.shape == (100, 50) and 0 < u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.01
    torch.testing.assert_close(uniform(7, rows[30:60], 50), u[30:60], rtol=0, atol=0)
    assert not torch.equal(uniform(8, rows, 50), u)
    assert not torch.equal(uniform(7, rows, 50, stream=1), u)


def test_masking_picks_round_p_n_real_tokens_never_specials_or_padding():
    ids, mask = _rows()
    m = mask_tokens(ids, mask, SPECIAL, torch.arange(len(ids)), seed=1, mask_id=MASK)
    K = num_slots(40, 0.15)
    assert K == 6 and m.positions.shape == (64, K)
    want = (mask.sum(1).float() * 0.15).round().clamp(1, K)
    torch.testing.assert_close(m.weights.sum(1), want)
    chosen = torch.gather(ids, 1, m.positions)[m.weights.bool()]
    assert not SPECIAL[chosen].any()
    assert torch.equal(m.targets, torch.gather(ids, 1, m.positions))
    used_positions = m.positions[m.weights.bool()]
    assert (torch.gather(mask, 1, m.positions)[m.weights.bool()] == 1).all()
    assert len(used_positions) > 0
    # outside the used slots the input is untouched
    changed = m.input_ids != ids
    assert changed.sum() <= m.weights.sum()
    assert set(m.input_ids[changed].tolist()) <= {MASK}  # ELECTRA: [MASK] or unchanged, no random tokens


def test_masking_edge_rows_short_rows_and_rows_of_few_candidates():
    """A row too short for round(p * n) to reach 1 still gets one prediction; a row with fewer
    candidates than round(p * n) predicts each candidate once and nothing else; a full row of
    any length gets its round(p * n), whatever the slot count rounds to."""
    short = torch.tensor([[CLS, 50, SEP, PAD, PAD, PAD, PAD, PAD, PAD, PAD]])  # round(0.15 * 3) = 0
    few = torch.tensor([[CLS, 50, 51, SEP, SEP, SEP, SEP, SEP, SEP, SEP]])  # round(1.5) = 2 of 2 candidates
    fewer = torch.tensor([[CLS, 50, SEP, SEP, SEP, SEP, SEP, SEP, SEP, SEP]])  # 1 candidate for 2 slots
    ids = torch.cat([short, few, fewer])
    mask = (ids != PAD).long()
    m = mask_tokens(ids, mask, SPECIAL, torch.arange(3), seed=0, mask_id=MASK)
    assert m.weights.sum(1).tolist() == [1.0, 2.0, 1.0]
    assert m.targets[m.weights.bool()].sort().values.tolist() == [50, 50, 50, 51]
    assert loss_counts(ids, mask, SPECIAL, 0.15).tolist() == [4.0, 23.0]
    for T in (10, 17, 30, 57, 128, 512):
        ids = torch.randint(5, 100, (8, T))
        m = mask_tokens(ids, torch.ones_like(ids), SPECIAL, torch.arange(8), seed=T, mask_id=MASK)
        assert m.weights.sum(1).tolist() == [float(round(0.15 * T))] * 8, T


def test_masking_is_85_percent_mask_15_percent_unchanged():
    ids, mask = _rows(B=2000, T=64)
    m = mask_tokens(ids, mask, SPECIAL, torch.arange(len(ids)), seed=3, mask_id=MASK)
    shown = torch.gather(m.input_ids, 1, m.positions)[m.weights.bool()]
    assert abs((shown == MASK).float().mean().item() - 0.85) < 0.01


def test_masks_do_not_depend_on_how_the_batch_is_sliced():
    ids, mask = _rows()
    rows = torch.arange(64)
    whole = mask_tokens(ids, mask, SPECIAL, rows, seed=5, mask_id=MASK)
    half = mask_tokens(ids[32:], mask[32:], SPECIAL, rows[32:], seed=5, mask_id=MASK)
    assert torch.equal(whole.input_ids[32:], half.input_ids)
    assert torch.equal(whole.positions[32:], half.positions)


KINDS = SPECIAL.to(torch.int8)  # as electra.pretrain.token_kinds builds it: specials 1, word pieces 2
KINDS[60:] = CONTINUES  # ids 60-99 are "##" pieces


def _words(ids, mask, first_piece=60):
    """Each row's words as lists of positions: a token that may start a word, then the pieces after it."""
    out = []
    for row, m in zip(ids.tolist(), mask.tolist(), strict=True):
        words = []
        for t, (tok, real) in enumerate(zip(row, m, strict=True)):
            if not real or tok in (PAD, CLS, SEP, MASK):
                continue
            if tok >= first_piece and words and words[-1][-1] == t - 1:
                words[-1].append(t)
            else:
                words.append([t])
        out.append(words)
    return out


def _bert_whole_words(words, keys, k):
    """BERT's loop: words in key order (ties: later word first); skip one that does not fit, go on."""
    chosen = []
    for w in sorted(range(len(words)), key=lambda w: (keys[w], w), reverse=True):
        if len(chosen) >= k:
            break
        if len(chosen) + len(words[w]) <= k:
            chosen += words[w]
    return chosen


@pytest.mark.parametrize("first_piece", [60, 15])  # 40% or 85% of the tokens continue a word
def test_whole_word_masking_chooses_the_words_berts_loop_chooses(first_piece):
    ids, mask = _rows(B=64, T=40)
    kinds = SPECIAL.to(torch.int8)
    kinds[first_piece:] = CONTINUES
    rows = torch.arange(64)
    m = mask_tokens(ids, mask, kinds, rows, seed=4, mask_id=MASK, whole_word=True)
    k = (mask.sum(1).float() * 0.15).round().clamp(1, 6).long()
    keys = hash32(4, rows, 40, stream=1).tolist()
    skipped = 0
    for b, words in enumerate(_words(ids, mask, first_piece)):
        want = _bert_whole_words(words, keys[b], k[b].item())
        used = int(m.weights[b].sum())
        assert m.positions[b, :used].tolist() == want, b  # the same pieces in the same order
        assert not m.weights[b, used:].any()
        assert sorted(m.positions[b].tolist()) == sorted(set(m.positions[b].tolist()))  # no position twice
        prefix = []  # taking words only until the first that does not fit would stop here
        for w in sorted(range(len(words)), key=lambda w: (keys[b][w], w), reverse=True):
            if len(prefix) + len(words[w]) > k[b]:
                break
            prefix += words[w]
        skipped += len(want) > len(prefix)
        assert torch.equal(m.targets[b], ids[b, m.positions[b]])
        shown = m.input_ids[b, want]
        assert all(x == MASK or x == ids[b, t] for x, t in zip(shown.tolist(), want, strict=True))
        untouched = torch.ones(40, dtype=torch.bool)
        untouched[want] = False
        assert torch.equal(m.input_ids[b, untouched], ids[b, untouched])
    assert skipped > 5  # rows where a skipped word left room for later ones
    # the denominators a split step divides by count exactly these positions
    counts = loss_counts(ids, mask, kinds, 0.15, rows, 4, whole_word=True)
    assert counts.tolist() == [m.weights.sum().item(), mask.sum().item()]
    # a pure function of (seed, row): half a batch chooses what the whole batch chose for those rows
    half = mask_tokens(ids[32:], mask[32:], kinds, rows[32:], seed=4, mask_id=MASK, whole_word=True)
    assert torch.equal(half.positions[half.weights.bool()], m.positions[32:][m.weights[32:].bool()])


def test_whole_words_without_word_pieces_choose_as_many_as_single_tokens():
    ids, mask = _rows(B=64, T=40)
    rows = torch.arange(64)
    single = mask_tokens(ids, mask, SPECIAL.to(torch.int8), rows, seed=4, mask_id=MASK, whole_word=True)
    assert torch.equal(single.weights.sum(1), mask_tokens(ids, mask, SPECIAL, rows, 4, MASK).weights.sum(1))


def test_bert_masking_is_80_10_10():
    ids, mask = _rows(B=2000, T=64)
    m = mask_tokens(
        ids,
        mask,
        SPECIAL,
        torch.arange(len(ids)),
        seed=3,
        mask_id=MASK,
        mask_token_prob=0.8,
        random_token_prob=0.1,
        vocab_size=100,
    )
    shown = torch.gather(m.input_ids, 1, m.positions)[m.weights.bool()]
    target = m.targets[m.weights.bool()]
    masked = (shown == MASK).float().mean().item()
    same = (shown == target).float().mean().item()
    assert abs(masked - 0.8) < 0.01
    assert abs(same - 0.1 - 0.1 / 100) < 0.01  # random tokens equal the original 1% of the time
    random_ids = shown[(shown != MASK) & (shown != target)]
    counts = torch.bincount(random_ids, minlength=100)  # any token of the vocabulary, evenly
    assert counts[:50].sum() > 0.4 * len(random_ids) and counts[50:].sum() > 0.4 * len(random_ids)


def test_sampling_follows_the_generator_softmax():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -30.0]).expand(4000, 3, 5).contiguous()
    rows = torch.arange(4000)
    samples = sample_tokens(logits, seed=0, rows=rows)
    freq = torch.bincount(samples.flatten(), minlength=5).float() / samples.numel()
    torch.testing.assert_close(freq, torch.softmax(logits[0, 0], -1), rtol=0, atol=0.01)
    hot = sample_tokens(logits, seed=0, rows=rows, temperature=0.01)
    assert (hot == 0).all()  # temperature -> 0 is argmax
    flat = sample_tokens(logits, seed=0, rows=rows, temperature=100.0)
    freq = torch.bincount(flat.flatten(), minlength=5).float() / flat.numel()
    torch.testing.assert_close(freq, torch.softmax(logits[0, 0] / 100, -1), rtol=0, atol=0.01)


@pytest.mark.parametrize("V", [5, 128, 1000, 30522])
def test_sampling_is_the_inverse_cdf_of_the_whole_vocabulary(V):
    """The two-level search picks the token a search of the full CDF picks for the same uniform."""
    torch.manual_seed(V)
    B, K = 64, 8 if V < 30522 else 2
    logits = torch.randn(B, K, V) * 4
    rows = torch.arange(100, 100 + B)
    cdf = torch.softmax(logits, -1).cumsum(-1)
    u = uniform(7, rows, K, stream=4) * cdf[..., -1]
    expected = torch.searchsorted(cdf, u[..., None]).squeeze(-1)
    got = sample_tokens(logits, 7, rows)
    assert (got == expected).float().mean() >= 0.99  # apart from summation-order ties
    assert_inverse_cdf(logits, 7, rows, got)


@pytest.mark.parametrize("n", [1, 2, 3, 127, 128, 129, 239])
def test_prefix_sums_under_deterministic_algorithms_are_cumulative_sums(n):
    x = torch.rand(4, 3, n, dtype=torch.float64)
    with deterministic():
        torch.testing.assert_close(prefix_sum(x), x.cumsum(-1), rtol=1e-12, atol=1e-12)


def test_sampling_under_deterministic_algorithms_scans_without_cumsum():
    """CUDA's floating-point cumsum refuses to run under torch's deterministic algorithms
    (`--deterministic`): there sampling adds its CDF in a fixed order, and picks the same tokens."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Calls(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.float_cumsums = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.float_cumsums += func is torch.ops.aten.cumsum.default and args[0].is_floating_point()
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    logits, rows = torch.randn(32, 8, 3000) * 3, torch.arange(32)
    with Calls() as plain:
        expected = sample_tokens(logits, 5, rows)
    with deterministic(), Calls() as fixed:
        got = sample_tokens(logits, 5, rows)
    assert plain.float_cumsums > 0 and fixed.float_cumsums == 0
    assert torch.equal(got, expected)
    assert_inverse_cdf(logits, 5, rows, got)


def test_sampling_from_bf16_logits_draws_in_fp32():
    """Under bf16 autocast the generator's logits are bf16: the softmax and its search run in
    fp32, as from the same logits in fp32 (bf16 sums of 30,522 probabilities would lose mass)."""
    torch.manual_seed(0)
    logits = (torch.randn(32, 8, 3000) * 3).to(torch.bfloat16)
    rows = torch.arange(32)
    assert torch.equal(sample_tokens(logits, 5, rows), sample_tokens(logits.float(), 5, rows))


def test_sampling_never_picks_what_the_softmax_rules_out():
    logits = torch.full((256, 4, 300), float("-inf"))
    logits[..., 129] = 0.0  # one allowed token, in the second block
    logits[..., 299] = 0.0  # and the last real token, before the padding
    got = sample_tokens(logits, 3, torch.arange(256))
    assert set(got.unique().tolist()) == {129, 299}


def test_a_sample_equal_to_the_original_is_not_replaced():
    ids = torch.tensor([[CLS, 10, 11, 12, SEP]])
    masked = Masked(
        input_ids=torch.tensor([[CLS, MASK, 11, MASK, SEP]]),
        positions=torch.tensor([[1, 3, 2]]),
        targets=torch.tensor([[10, 12, 11]]),
        weights=torch.tensor([[1.0, 1.0, 0.0]]),
    )
    corrupted, labels = replace_tokens(ids, masked, torch.tensor([[10, 50, 60]]))  # slot 0 resamples 10
    assert corrupted.tolist() == [[CLS, 10, 11, 50, SEP]]  # the unused slot leaves 11 alone
    assert labels.tolist() == [[0.0, 0.0, 0.0, 1.0, 0.0]]


def test_losses_equal_hand_computed_values():
    logits = torch.tensor([[0.0, 2.0, -1.0, 3.0]])
    labels = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    attn = torch.tensor([[1, 1, 1, 0]])
    want = (math.log(2) + math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 3  # [CLS] counts, pad not
    assert replaced_token_loss(logits, labels, attn).item() == pytest.approx(want, rel=1e-6)

    gen = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]])
    masked = Masked(input_ids=None, positions=None, targets=torch.tensor([[1, 0]]), weights=torch.tensor([[1.0, 1.0]]))
    want = (math.log(3) + (math.log(math.exp(2) + 2) - 2)) / 2
    assert masked_lm_loss(gen, masked).item() == pytest.approx(want, rel=1e-6)
    masked = Masked(None, None, torch.tensor([[1, 0]]), torch.tensor([[1.0, 0.0]]))  # unused slots do not count
    assert masked_lm_loss(gen, masked).item() == pytest.approx(math.log(3), rel=1e-6)

    # accuracy over the used slots: the first is right, the second wrong, the third's target ties
    # for the maximum (right), the fourth is unused
    gen = torch.tensor([[[0.0, 2.0, 1.0], [5.0, 1.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 9.0]]])
    masked = Masked(None, None, torch.tensor([[1, 1, 0, 0]]), torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    assert _generator_metrics(gen, masked)["gen_accuracy"].tolist() == [2.0, 3.0]  # (hits, count)
    assert rates(_generator_metrics(gen, masked))["gen_accuracy"].item() == pytest.approx(2 / 3)


def test_electra_loss_is_mlm_plus_50_rtd_and_sampling_blocks_gradient():
    torch.manual_seed(0)
    model = Electra(tiny()).eval()
    ids, mask = _rows(B=8, T=24)
    types = torch.zeros_like(ids)
    rows = torch.arange(8)
    cfg = ObjectiveConfig()
    loss, metrics = electra_loss(model, ids, types, mask, SPECIAL, rows, 11, MASK, cfg)
    torch.testing.assert_close(loss, metrics["gen_loss"] + 50 * metrics["disc_loss"])
    assert 0.1 < rates(metrics)["replaced_fraction"] < 0.2  # ~15% masked, nearly all replaced by an untrained generator

    # the discriminator's loss sends no gradient into the generator's own layers: its
    # gradients are the same whether the RTD term weighs 50 or 0
    def grads(weight):
        model.zero_grad()
        total, _ = electra_loss(model, ids, types, mask, SPECIAL, rows, 11, MASK, ObjectiveConfig(rtd_weight=weight))
        total.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    with_rtd, without = grads(50.0), grads(0.0)
    for name in without:
        if name.startswith(("generator.", "generator_head.")):
            torch.testing.assert_close(with_rtd[name], without[name], rtol=0, atol=0)
    assert not torch.equal(with_rtd["embeddings.word.weight"], without["embeddings.word.weight"])
    assert with_rtd["discriminator.layers.0.qkv.weight"].abs().sum() > 0

    # the same seed and rows give the same loss: no hidden random state
    again, _ = electra_loss(model, ids, types, mask, SPECIAL, rows, 11, MASK, cfg)
    assert again.item() == loss.item()


def test_mlm_objective_trains_only_the_masked_lm():
    torch.manual_seed(0)
    model = Electra(tiny())
    ids, mask = _rows(B=8, T=24)
    loss, metrics = mlm_loss(
        model, ids, torch.zeros_like(ids), mask, SPECIAL, torch.arange(8), 1, MASK, ObjectiveConfig(kind="mlm")
    )
    loss.backward()
    assert set(metrics) == {"gen_loss", "gen_accuracy"}
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert loss.item() == pytest.approx(math.log(100), rel=0.1)  # untrained: about uniform over the vocabulary


def _corrupted(model, ids, mask, rows, seed, cfg):
    """The generator's half of the objective, step by step: what every objective built on it shares."""
    masked = mask_tokens(ids, mask, SPECIAL, rows, seed, MASK, cfg.mask_prob)
    gen_logits = model.generator_logits(masked.input_ids, None, mask, masked.positions)
    corrupted, labels = replace_tokens(ids, masked, sample_tokens(gen_logits, seed, rows, cfg.temperature))
    return masked, corrupted, labels


def test_electra_15_scores_the_discriminator_on_the_masked_positions_only():
    torch.manual_seed(0)
    model = Electra(tiny()).eval()
    ids, mask = _rows(B=8, T=24)
    rows, cfg = torch.arange(8), ObjectiveConfig(kind="electra-15")
    loss, metrics = electra_loss(model, ids, torch.zeros_like(ids), mask, SPECIAL, rows, 5, MASK, cfg)
    masked, corrupted, labels = _corrupted(model, ids, mask, rows, 5, cfg)
    logits = model.discriminator_logits(corrupted, torch.zeros_like(ids), mask)
    at = masked.weights.bool()
    want = torch.nn.functional.binary_cross_entropy_with_logits(
        logits.gather(1, masked.positions)[at], labels.gather(1, masked.positions)[at]
    )
    torch.testing.assert_close(metrics["disc_loss"], want)
    torch.testing.assert_close(loss, metrics["gen_loss"] + 50 * metrics["disc_loss"])
    assert rates(metrics)["replaced_fraction"] > 0.8  # of the masked positions: nearly all replaced, untrained
    full, _ = electra_loss(model, ids, torch.zeros_like(ids), mask, SPECIAL, rows, 5, MASK, ObjectiveConfig())
    assert full.item() != loss.item()


def test_copy_mlm_loss_is_the_mixture_of_copying_and_the_softmax():
    g = torch.Generator().manual_seed(0)
    B, T, V = 3, 7, 11
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 3
    replaced = torch.randn(B, T, generator=g, dtype=torch.float64) * 3
    targets = torch.randint(0, V, (B, T), generator=g)
    shown = torch.where(torch.rand(B, T, generator=g) < 0.3, torch.randint(0, V, (B, T), generator=g), targets)
    weights = (torch.rand(B, T, generator=g) < 0.8).float()
    keep = torch.sigmoid(-replaced)[..., None]  # the chance that the shown token is the original
    p = keep * torch.nn.functional.one_hot(shown, V) + (1 - keep) * logits.softmax(-1)
    torch.testing.assert_close(p.sum(-1), torch.ones(B, T, dtype=torch.float64))  # a distribution
    want = -(p.gather(-1, targets[..., None]).squeeze(-1).log() * weights).sum() / weights.sum()
    got = copy_mlm_loss(logits, replaced, shown, targets, weights.double())
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    # saturated logits stay finite: a confident copy of the right token costs ~0, of a wrong one ~50
    one = torch.tensor([[[0.0, 0.0]]])
    assert (
        copy_mlm_loss(one, torch.tensor([[-50.0]]), torch.tensor([[1]]), torch.tensor([[1]]), torch.ones(1, 1)) < 1e-6
    )
    wrong = copy_mlm_loss(one, torch.tensor([[-50.0]]), torch.tensor([[0]]), torch.tensor([[1]]), torch.ones(1, 1))
    assert wrong.item() == pytest.approx(50 + math.log(2), rel=1e-4)


@pytest.mark.parametrize("kind", ["replace-mlm", "all-tokens-mlm"])
def test_replace_and_all_tokens_mlm_train_the_main_network_as_a_masked_lm(kind):
    torch.manual_seed(0)
    model = Electra(dataclasses.replace(tiny(), discriminator_lm_head=True)).eval()
    ids, mask = _rows(B=8, T=24)
    rows, cfg = torch.arange(8), ObjectiveConfig(kind=kind)
    loss, metrics = replace_mlm_loss(model, ids, torch.zeros_like(ids), mask, SPECIAL, rows, 9, MASK, cfg)
    torch.testing.assert_close(loss, metrics["gen_loss"] + metrics["disc_loss"])  # both weigh 1
    masked, corrupted, _ = _corrupted(model, ids, mask, rows, 9, cfg)
    h = model.discriminator_hidden(corrupted, torch.zeros_like(ids), mask)  # the generator's samples, not [MASK]
    if kind == "replace-mlm":  # the original tokens at the masked positions
        want = masked_lm_loss(model.discriminator_lm_logits(h, masked.positions), masked)
    else:  # every real token, through the copy mechanism
        want = copy_mlm_loss(model.discriminator_lm_logits(h), model.discriminator_head(h), corrupted, ids, mask)
    torch.testing.assert_close(metrics["disc_loss"], want)

    model.zero_grad()
    loss.backward()
    head = model.discriminator_head.out.weight.grad  # the copy probability is only All-Tokens MLM's
    assert (head is not None and head.abs().sum() > 0) == (kind == "all-tokens-mlm")
    assert model.discriminator_lm_head.dense.weight.grad.abs().sum() > 0

    with pytest.raises(ValueError, match="no masked-LM head on its discriminator"):
        Electra(tiny()).discriminator_lm_logits(h)


def test_objective_config_checks_values():
    with pytest.raises(ValueError, match="unknown objective 'bert'"):
        ObjectiveConfig(kind="bert")
    with pytest.raises(ValueError, match="mask_prob"):
        ObjectiveConfig(mask_prob=1.5)


@pytest.mark.parametrize(
    "kind,words",
    [("electra", False), ("electra-15", True), ("replace-mlm", False), ("all-tokens-mlm", False), ("mlm", False)],
)
def test_the_objective_compiles_to_one_graph_that_a_new_seed_does_not_recompile(kind, words):
    """What torch.compile and CUDA graphs rely on: no graph breaks, no host reads, seeds as tensors."""
    from torch._dynamo.testing import CompileCounter

    from electra.objective import MAIN_LM_HEAD, OBJECTIVES
    from electra.parallel import TrainStep

    torch.manual_seed(0)
    model = Electra(dataclasses.replace(tiny(vocab_size=100), discriminator_lm_head=kind in MAIN_LM_HEAD))
    step = TrainStep(model.train(), OBJECTIVES[kind], ObjectiveConfig(kind=kind, whole_word=words))
    ids, mask = _rows(B=4, T=24)
    args = (ids, torch.zeros_like(ids), mask, KINDS if words else SPECIAL, torch.arange(4))
    counter = CompileCounter()
    compiled = torch.compile(step, backend=counter, fullgraph=True)  # fullgraph: a break is an error
    torch._dynamo.reset()
    for seed in (1, 2, 3):
        compiled(*args, torch.tensor(seed), MASK)[0].backward()
    assert counter.frame_count == 1
    # and it is the same function: with dropout off, eager and traced agree exactly
    step.eval()
    eager, _ = step(*args, torch.tensor(7), MASK)
    traced, _ = compiled(*args, torch.tensor(7), MASK)
    torch._dynamo.reset()  # the step's code object keeps no compiled entries for later tests
    assert torch.equal(eager, traced)


def test_what_a_chosen_position_shows_is_its_slots_own_stream_2_draw():
    """[MASK] exactly where the slot's stream-2 uniform is under 0.85: a draw of its own, not
    the stream-1 scores that chose the positions (which would tie the two choices together)."""
    ids, mask = _rows()
    rows = torch.arange(64)
    m = mask_tokens(ids, mask, SPECIAL, rows, seed=1, mask_id=MASK)
    u = uniform(1, rows, num_slots(40, 0.15), stream=2)
    want = torch.where(m.weights.bool() & (u < 0.85), MASK, m.targets)
    assert torch.equal(m.input_ids.gather(1, m.positions), want)


def test_padding_is_never_chosen_even_when_its_ids_are_ordinary_tokens():
    """The attention mask alone marks padding: a row packed after its end with real-looking ids
    still predicts only inside it (and counts only those in its denominators)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (64, 40), generator=g)
    mask = (torch.arange(40)[None] < 12).long().expand(64, 40)
    m = mask_tokens(ids, mask, SPECIAL, torch.arange(64), seed=2, mask_id=MASK)
    assert (m.positions[m.weights.bool()] < 12).all()
    assert m.weights.sum(1).tolist() == [2.0] * 64  # round(0.15 * 12)
    assert torch.equal(m.input_ids[:, 12:], ids[:, 12:])
    assert loss_counts(ids, mask, SPECIAL, 0.15).tolist() == [128.0, 768.0]


def test_rows_shorter_than_seven_tokens_still_get_one_slot():
    """K = round(p * T) is at least 1, so a batch of 3-token rows still trains the generator."""
    assert [num_slots(T, 0.15) for T in (1, 2, 3, 4, 7)] == [1, 1, 1, 1, 1]
    ids = torch.tensor([[CLS, 50, SEP], [CLS, 51, SEP]])
    m = mask_tokens(ids, torch.ones_like(ids), SPECIAL, torch.arange(2), seed=0, mask_id=MASK)
    assert m.positions.tolist() == [[1], [1]] and m.weights.tolist() == [[1.0], [1.0]]


@pytest.mark.parametrize("T,first_piece", [(128, 15), (300, 30), (512, 60)])
def test_whole_words_in_long_rows_are_berts_loop_too(T, first_piece):
    """Rows longer than 2^5 positions: the doubling steps must compose every map before a
    position (log2(T) rounded up), not only the last half of them."""
    g = torch.Generator().manual_seed(T)
    B = 16
    ids = torch.randint(5, 100, (B, T), generator=g)
    ids[:, 0], ids[:, -1] = CLS, SEP
    mask = torch.ones_like(ids)
    kinds = SPECIAL.to(torch.int8)
    kinds[first_piece:] = CONTINUES
    rows = torch.arange(B)
    m = mask_tokens(ids, mask, kinds, rows, seed=4, mask_id=MASK, whole_word=True)
    k = round(0.15 * T)
    keys = hash32(4, rows, T, stream=1).tolist()
    for b, words in enumerate(_words(ids, mask, first_piece)):
        want = _bert_whole_words(words, keys[b], k)
        assert m.positions[b, : len(want)].tolist() == want and m.weights[b].sum().item() == len(want), b


def test_random_tokens_cover_the_whole_vocabulary_even_when_the_uniform_rounds_to_one():
    """BERT's random token is any of the V ids, the last one included; a uniform so close to 1
    that fp32 rounds it to 1.0 (row 14964905, seed 0, stream 3) still draws an id below V."""
    ids, mask = _rows(B=2000, T=64)
    m = mask_tokens(
        ids, mask, SPECIAL, torch.arange(2000), 3, MASK, mask_token_prob=0.0, random_token_prob=1.0, vocab_size=100
    )
    shown = m.input_ids.gather(1, m.positions)[m.weights.bool()]
    assert (torch.bincount(shown, minlength=100) > 0).all() and shown.max() == 99
    row = torch.tensor([14964905])
    assert uniform(0, row, 1, stream=3).item() == 1.0
    ids = torch.tensor([[CLS, 50, SEP]])
    m = mask_tokens(
        ids, torch.ones_like(ids), SPECIAL, row, 0, MASK, mask_token_prob=0.0, random_token_prob=1.0, vocab_size=100
    )
    assert m.input_ids.tolist() == [[CLS, 99, SEP]]


def test_losses_of_nothing_are_zero_not_nan():
    """A batch with no prediction slot used (rows of specials only) or no real token adds 0."""
    logits = torch.zeros(2, 1, 5)
    ids = torch.tensor([[CLS, SEP, PAD], [CLS, SEP, SEP]])
    m = mask_tokens(ids, (ids != PAD).long(), SPECIAL, torch.arange(2), 0, MASK)
    assert m.weights.sum() == 0
    assert masked_lm_loss(logits, m).item() == 0.0
    assert replaced_token_loss(torch.ones(2, 3), torch.ones(2, 3), torch.zeros(2, 3)).item() == 0.0


def test_the_mlm_loss_of_bf16_logits_is_computed_in_fp32():
    torch.manual_seed(0)
    logits = (torch.randn(8, 6, 3000) * 3).to(torch.bfloat16)
    ids, mask = _rows(B=8, T=40)
    m = mask_tokens(ids, mask, SPECIAL, torch.arange(8), 0, MASK)
    m = dataclasses.replace(m, targets=torch.randint(0, 3000, (8, 6)))
    got = masked_lm_loss(logits, m)
    assert got.dtype == torch.float32 and got.item() == masked_lm_loss(logits.float(), m).item()


def test_discriminator_metrics_are_exact_counts_over_the_weighted_positions():
    logits = torch.tensor([[2.0, -1.0, 3.0, 1.0, -2.0, 5.0]])
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, 1.0]])
    weights = torch.tensor([[1, 1, 1, 1, 1, 0]])  # the last position is padding
    got = {k: v.tolist() for k, v in _discriminator_metrics(logits, labels, weights).items()}
    assert got == {
        "disc_accuracy": [2.0, 5.0],
        "disc_precision": [1.0, 3.0],  # of the 3 predicted replaced, 1 was
        "disc_recall": [1.0, 2.0],  # of the 2 replaced, 1 was found
        "replaced_fraction": [2.0, 5.0],
    }


def test_copy_accuracy_counts_the_mixtures_most_likely_token():
    """p = D one_hot(shown) + (1 - D) softmax: right where the original scores highest."""
    logits = torch.log(
        torch.tensor([[[0.1, 0.9, 1e-9], [0.1, 0.9, 1e-9], [0.1, 0.9, 1e-9], [0.8, 0.1, 0.1], [1.0, 1.0, 1.0]]])
    )
    replaced = torch.logit(1 - torch.tensor([[0.9, 0.6, 0.3, 0.99, 0.5]]))  # D = 0.9, 0.6, 0.3, 0.99, 0.5
    shown = torch.tensor([[1, 0, 0, 2, 0]])
    targets = torch.tensor([[1, 1, 1, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    # 0: shown is the original (right); 1: copying the wrong shown token wins, 0.64 > 0.36 (wrong);
    # 2: the softmax's original wins, 0.63 > 0.37 (right); 3: D trusts a wrong copy (wrong); 4: padding
    assert _copy_accuracy(logits, replaced, shown, targets, mask).tolist() == [2.0, 4.0]


def _model(kind):
    torch.manual_seed(0)
    return Electra(dataclasses.replace(tiny(), discriminator_lm_head=kind in ("replace-mlm", "all-tokens-mlm"))).eval()


def _corrupt_by_hand(model, ids, mask, rows, seed, temperature=1.0):
    masked = mask_tokens(ids, mask, SPECIAL, rows, seed, MASK)
    gen = model.generator_logits(masked.input_ids, None, mask, masked.positions)
    return masked, *replace_tokens(ids, masked, sample_tokens(gen, seed, rows, temperature))


def test_the_paper_settings_are_the_defaults_and_the_temperature_reaches_the_sampler():
    assert ObjectiveConfig() == ObjectiveConfig("electra", 0.15, 50.0, 1.0, False)
    with pytest.raises(ValueError, match="temperature"):
        ObjectiveConfig(temperature=0.0)
    model = _model("electra")
    ids, mask = _rows(B=8, T=24)
    rows, types = torch.arange(8), torch.zeros_like(ids)
    for t in (1.0, 3.0):
        _, metrics = electra_loss(model, ids, types, mask, SPECIAL, rows, 5, MASK, ObjectiveConfig(temperature=t))
        _, corrupted, labels = _corrupt_by_hand(model, ids, mask, rows, 5, t)
        want = replaced_token_loss(model.discriminator_logits(corrupted, types, mask), labels, mask)
        torch.testing.assert_close(metrics["disc_loss"], want)


def test_replace_mlm_logs_its_main_networks_accuracy_and_the_replaced_fraction_of_real_tokens():
    model = _model("replace-mlm")
    ids, mask = _rows(B=8, T=24)
    rows, types = torch.arange(8), torch.zeros_like(ids)
    _, metrics = replace_mlm_loss(model, ids, types, mask, SPECIAL, rows, 9, MASK, ObjectiveConfig(kind="replace-mlm"))
    masked, corrupted, labels = _corrupt_by_hand(model, ids, mask, rows, 9)
    assert metrics["replaced_fraction"].tolist() == [labels.sum().item(), mask.sum().item()]
    # a main network that knows every original token is right at every used slot, whatever the generator
    real = model.discriminator_lm_logits

    def knows(h, positions):
        return real(h, positions) + 100.0 * torch.nn.functional.one_hot(ids.gather(1, positions), 100)

    model.discriminator_lm_logits = knows
    _, metrics = replace_mlm_loss(model, ids, types, mask, SPECIAL, rows, 9, MASK, ObjectiveConfig(kind="replace-mlm"))
    assert metrics["disc_accuracy"].tolist() == [masked.weights.sum().item()] * 2
    assert rates(metrics)["gen_accuracy"] < 0.1  # the untrained generator is not


def test_the_mlm_baseline_masks_80_10_10_with_the_generators_vocabulary():
    model = _model("mlm")
    ids, mask = _rows(B=8, T=24)
    seen = {}
    real = model.generator_logits

    def spy(input_ids, *args):
        seen["input_ids"] = input_ids
        return real(input_ids, *args)

    model.generator_logits = spy
    mlm_loss(model, ids, torch.zeros_like(ids), mask, SPECIAL, torch.arange(8), 1, MASK, ObjectiveConfig(kind="mlm"))
    want = mask_tokens(ids, mask, SPECIAL, torch.arange(8), 1, MASK, 0.15, 0.8, 0.1, model.cfg.generator.vocab_size)
    assert torch.equal(seen["input_ids"], want.input_ids)


@pytest.mark.parametrize("kind", ["electra", "electra-15", "replace-mlm", "all-tokens-mlm", "mlm"])
def test_a_batch_split_in_two_with_the_whole_batchs_counts_adds_up_to_the_whole(kind):
    """loss_counts are (predicted slots, real tokens): each loss divides by its own count."""
    from electra.objective import OBJECTIVES

    model = _model(kind)
    ids, mask = _rows(B=8, T=24)
    types, rows, cfg = torch.zeros_like(ids), torch.arange(8), ObjectiveConfig(kind=kind)
    whole, _ = OBJECTIVES[kind](model, ids, types, mask, SPECIAL, rows, 3, MASK, cfg)
    totals = loss_counts(ids, mask, SPECIAL, 0.15)
    parts = [
        OBJECTIVES[kind](model, ids[s], types[s], mask[s], SPECIAL, rows[s], 3, MASK, cfg, totals)[0]
        for s in (slice(0, 3), slice(3, 8))
    ]
    torch.testing.assert_close(parts[0] + parts[1], whole)


def test_rates_divide_out_pairs_and_a_rate_of_nothing_is_zero():
    got = rates(
        {"gen_loss": torch.tensor(1.5), "gen_accuracy": torch.tensor([3.0, 4.0]), "disc_recall": torch.zeros(2)}
    )
    assert {k: v.item() for k, v in got.items()} == {"gen_loss": 1.5, "gen_accuracy": 0.75, "disc_recall": 0.0}


def test_a_uniform_of_exactly_one_still_samples_inside_the_softmaxs_support():
    """Row 39562717's stream-4 uniform rounds to 1.0 in fp32; scaled by the CDF's own fp32 total it
    lands on the last token with mass, never past it on tokens the softmax rules out (-inf)."""
    row = torch.tensor([39562717])
    assert uniform(0, row, 1, stream=4).item() == 1.0
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        logits = torch.full((1, 1, 300), float("-inf"))
        logits[..., :200] = torch.randn(200, generator=g) * 3  # tokens 200-299 (and block 2's tail) impossible
        assert sample_tokens(logits, 0, row).item() < 200
