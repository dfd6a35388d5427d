"""The pre-training objectives as pure functions of tensors.

ELECTRA (Clark et al. 2020; Google's pretrain_helpers.py): mask ~15% of each row's tokens
(85% become [MASK], 15% stay), let the generator predict them, sample replacements from its
softmax without gradient, and train the discriminator to tell, for every non-pad token,
whether it was replaced. Loss = MLM + 50 x RTD.

The paper's efficiency analysis (section 3.5, Table 5) compares it with three objectives that
share its generator: ELECTRA 15% (the discriminator's loss only over the masked positions),
Replace MLM (the main network predicts the original tokens at the replaced positions) and
All-Tokens MLM (it predicts every token, with a copy mechanism). `OBJECTIVES` holds them all.

Randomness comes from `uniform(seed, rows, ...)`, a counter-based hash of (seed, global row,
column): a row gets the same mask and samples whichever process, batch slice or resume
point it is computed in, with no generator state to save and no host synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (three xor-shift-multiply rounds) on int64 tensors in [0, 2^32)."""
    x = ((x ^ (x >> 16)) * 0x45D9F3B) & _M32
    x = ((x ^ (x >> 16)) * 0x45D9F3B) & _M32
    return x ^ (x >> 16)


def hash32(seed: int | torch.Tensor, rows: torch.Tensor, cols: int, stream: int = 0) -> torch.Tensor:
    """32-bit hashes as int64 in [0, 2^32), shape (len(rows), cols), of (seed, stream, row, col)."""
    seed = torch.as_tensor(seed, dtype=torch.int64, device=rows.device)
    key = _mix32(_mix32(seed & _M32) ^ ((stream * 0x85EBCA6B + 0x9E3779B1) & _M32))
    r = _mix32((rows[:, None] & _M32) ^ key)
    c = torch.arange(cols, device=rows.device)[None, :]
    return _mix32(r ^ _mix32(c + 0x27D4EB2F))  # (B, cols)


def uniform(seed: int | torch.Tensor, rows: torch.Tensor, cols: int, stream: int = 0) -> torch.Tensor:
    """Uniform floats in (0, 1], shape (len(rows), cols), a pure function of (seed, stream, row, col).

    In float32 about 3 draws in 10^8 round up to exactly 1.0 (row 14964905 of seed 0, stream 3):
    the random-token pick clamps below the vocabulary size and sampling scales by the CDF's total.

    `rows` holds global row numbers (int64), so any slice of a batch draws the same numbers.
    `seed` may be a 0-d int64 tensor on the device: a compiled or captured step then takes a
    new seed every step without recompiling or reading anything back to the host.
    """
    x = hash32(seed, rows, cols, stream)
    return (x.to(torch.float64) + 0.5).div_(2.0**32).to(torch.float32)


# Token kinds, the values of the (V,) table the masking functions take as `special`: a bool
# table marks specials alone (True == SPECIAL); whole-word masking also needs CONTINUES.
SPECIAL, CONTINUES = 1, 2  # never chosen; a word piece that continues the previous token's word ("##ing")


@dataclass(frozen=True)
class Masked:
    """Positions chosen for prediction, in static shapes: K slots per row, some unused."""

    input_ids: torch.Tensor  # (B, T) with [MASK] at 85% of the chosen positions
    positions: torch.Tensor  # (B, K) chosen positions (unused slots point at a real position too)
    targets: torch.Tensor  # (B, K) original tokens at those positions
    weights: torch.Tensor  # (B, K) 1.0 for used slots, 0.0 for unused ones


def num_slots(seq_len: int, mask_prob: float) -> int:
    """K: prediction slots per row, round(p * T), at least 1."""
    return max(1, round(mask_prob * seq_len))


def _per_row(attention_mask: torch.Tensor, mask_prob: float, K: int) -> torch.Tensor:
    """round(p * n) of each row's n real tokens, at least 1 and at most K, as in Google's code."""
    return (attention_mask.sum(1).float() * mask_prob).round().long().clamp(1, K)


def _candidates(input_ids: torch.Tensor, attention_mask: torch.Tensor, special: torch.Tensor) -> torch.Tensor:
    """(B, T) positions that may be chosen: real tokens that are not specials."""
    return attention_mask.bool() & (special[input_ids] != SPECIAL)


def _choose_words(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, special: torch.Tensor, rows, seed, K: int, k: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-word masking as BERT's: words in a random order, each taken if its pieces still fit in k.

    A word is a candidate token and the CONTINUES pieces after it; a word that does not fit is
    skipped and later, shorter ones may still be taken. Returns (B, K) positions, the pieces of
    the chosen words first, and which slots are used. Each word draws one hash; ties break by
    word index, so the order is a pure function of (seed, row) like the token case.
    """
    T = input_ids.shape[1]
    idx = torch.arange(T, device=input_ids.device)[None, :]
    candidate = _candidates(input_ids, attention_mask, special)
    after_candidate = F.pad(candidate[:, :-1], (1, 0), value=False)
    starts = candidate & ~((special[input_ids] == CONTINUES) & after_candidate)
    word = (starts.long().cumsum(1) - 1).clamp(min=0)  # (B, T) the word each candidate token belongs to
    length = torch.zeros_like(word).scatter_add_(1, word, candidate.long()).gather(1, word)  # its word's pieces
    rest = length - 1 - (idx - torch.where(starts, idx, 0).cummax(1).values)  # pieces after this one in its word
    key = torch.gather(hash32(seed, rows, T, stream=1), 1, word) * 2**20 + word  # T < 2^20: unique per word
    key = key.masked_fill(~candidate, -1)
    order = torch.sort(key, dim=1, descending=True, stable=True).indices  # a word's pieces stay together, in order
    length, rest, valid = length.gather(1, order), rest.gather(1, order), key.gather(1, order) >= 0
    # BERT's loop over the words maps what is left, r, to r - length if the word fits, else r. Each
    # position holds that map as a table over r = 0..K (the identity but at a word's last piece);
    # composing the tables before every position, in log2(T) doubling steps, gives what was left
    # when the loop reached its word.
    B, left = input_ids.shape[0], torch.arange(K + 1, device=input_ids.device)
    fits = (valid & (rest == 0))[..., None] & (length[..., None] <= left)
    maps = torch.where(fits, left - length[..., None], left)  # (B, T, K + 1)
    maps = torch.cat([left.expand(B, 1, K + 1), maps[:, :-1]], 1)  # maps[t]: position t - 1's map
    shift = 1
    while shift < T:  # maps[t] becomes maps[t] after maps[t - shift]; at the end, all of those before t
        maps = torch.cat([maps[:, :shift], maps[:, shift:].gather(2, maps[:, :-shift])], 1)
        shift *= 2
    reached = maps.gather(2, k.view(B, 1, 1).expand(B, T, 1)).squeeze(2)  # what was left before each position
    taken = valid & (length <= reached)
    first = torch.sort(taken.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :K]
    return order.gather(1, first), idx[:, :K] < taken.sum(1, keepdim=True)


def loss_counts(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special: torch.Tensor,
    mask_prob: float,
    rows: torch.Tensor | None = None,
    seed: int | torch.Tensor | None = None,
    whole_word: bool = False,
) -> torch.Tensor:
    """(predicted positions, real tokens) of a batch, as floats: the two losses' denominators.

    Known before the objective runs, so a step split over micro-batches or processes can divide
    every part by the whole batch's counts and add up to exactly the whole batch's mean. Whole
    words make the first depend on the draw, so it needs the rows and seed the objective gets.
    """
    K = num_slots(input_ids.shape[1], mask_prob)
    k = _per_row(attention_mask, mask_prob, K)
    if whole_word:
        predicted = _choose_words(input_ids, attention_mask, special, rows, seed, K, k)[1].sum()
    else:
        predicted = torch.minimum(k, _candidates(input_ids, attention_mask, special).sum(1)).sum()
    return torch.stack([predicted, attention_mask.sum()]).float()


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special: torch.Tensor,
    rows: torch.Tensor,
    seed: int | torch.Tensor,
    mask_id: int,
    mask_prob: float = 0.15,
    mask_token_prob: float = 0.85,
    random_token_prob: float = 0.0,
    vocab_size: int | None = None,
    whole_word: bool = False,
) -> Masked:
    """Choose round(p * n) positions of each row (n = its non-pad tokens), never specials or padding.

    `special` is a (V,) table: True (or SPECIAL) for tokens never chosen; with `whole_word`,
    CONTINUES marks word pieces, and whole words are chosen while they fit in round(p * n).
    Of the chosen positions, `mask_token_prob` become [MASK], `random_token_prob` a random
    token (BERT's 10%; ELECTRA uses none) and the rest keep their token.
    """
    B, T = input_ids.shape
    K = num_slots(T, mask_prob)
    k = _per_row(attention_mask, mask_prob, K)
    if whole_word:
        positions, used = _choose_words(input_ids, attention_mask, special, rows, seed, K, k)
    else:
        candidate = _candidates(input_ids, attention_mask, special)  # (B, T)
        score = uniform(seed, rows, T, stream=1).masked_fill(~candidate, -1.0)
        top, positions = score.topk(K, dim=1)  # (B, K), highest scores first
        used = (torch.arange(K, device=input_ids.device)[None, :] < k[:, None]) & (top >= 0)
    targets = torch.gather(input_ids, 1, positions)

    u = uniform(seed, rows, K, stream=2)  # one draw per slot decides what the position shows
    shown = torch.where(u < mask_token_prob, torch.full_like(targets, mask_id), targets)
    if random_token_prob > 0:
        if vocab_size is None:
            raise ValueError("random_token_prob needs vocab_size")
        random_ids = (uniform(seed, rows, K, stream=3) * vocab_size).long().clamp_(max=vocab_size - 1)
        is_random = (u >= mask_token_prob) & (u < mask_token_prob + random_token_prob)
        shown = torch.where(is_random, random_ids, shown)
    shown = torch.where(used, shown, targets)  # unused slots leave the input untouched
    masked_ids = input_ids.scatter(1, positions, shown)
    return Masked(masked_ids, positions, targets, used.to(torch.float32))


def masked_lm_loss(logits: torch.Tensor, masked: Masked, total: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over the used slots (or their sum / `total`). logits: (B, K, V) at the slots."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), masked.targets.flatten(), reduction="none")
    total = masked.weights.sum() if total is None else total
    return (ce * masked.weights.flatten()).sum() / total.clamp(min=1.0)


@torch.no_grad()
def sample_tokens(
    logits: torch.Tensor, seed: int | torch.Tensor, rows: torch.Tensor, temperature: float = 1.0, block: int = 128
) -> torch.Tensor:
    """One token per slot from softmax(logits / temperature), by inverse CDF in fp32. (B, K, V) -> (B, K).

    The CDF is searched in two levels: first over the masses of blocks of `block` tokens, then
    inside the chosen block. The same uniform picks the same token as a search of the whole
    vocabulary's CDF (up to summation order), but nothing vocabulary-long is scanned: the kernel
    holding a cumulative sum over 30,522 tokens was the slowest of the compiled ELECTRA-Small step
    (0.37 ms of 10.3 on an H200), while block masses are plain reductions.
    """
    B, K, V = logits.shape
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    blocks = F.pad(probs, (0, -V % block)).view(B, K, -1, block)  # (B, K, N, block), zero-padded
    outer = prefix_sum(blocks.sum(-1))  # (B, K, N)
    u = uniform(seed, rows, K, stream=4)[..., None] * outer[..., -1:]  # (B, K, 1), in (0, total)
    b = torch.searchsorted(outer, u).clamp_(max=outer.shape[-1] - 1)  # first block whose CDF reaches u
    lo = torch.where(b > 0, outer.gather(-1, (b - 1).clamp(min=0)), 0.0)
    r = (u - lo) / (outer.gather(-1, b) - lo)  # where u falls inside the block, in (0, 1]
    inner = prefix_sum(blocks.gather(2, b[..., None].expand(-1, -1, -1, block)).squeeze(2))  # (B, K, block)
    j = torch.searchsorted(inner, r * inner[..., -1:]).clamp_(max=block - 1)
    return (b * block + j).squeeze(-1).clamp_(max=V - 1)


def prefix_sum(x: torch.Tensor) -> torch.Tensor:
    """`x.cumsum(-1)`; under torch's deterministic algorithms (`--deterministic`) a scan whose
    additions come in a fixed order, on every device: CUDA's floating-point cumsum has no
    deterministic kernel, and refuses to run in that mode (RuntimeError), eagerly or captured."""
    if not torch.are_deterministic_algorithms_enabled():
        return x.cumsum(-1)
    shift = 1
    while shift < x.shape[-1]:  # Hillis-Steele: after the step with shift s, each entry sums 2s inputs
        x = torch.cat([x[..., :shift], x[..., shift:] + x[..., :-shift]], -1)
        shift *= 2
    return x


def replace_tokens(input_ids: torch.Tensor, masked: Masked, sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's input and labels: sampled tokens at the used slots; a token counts
    as replaced only where the sample differs from the original."""
    new = torch.where(masked.weights.bool(), sampled, masked.targets)
    corrupted = input_ids.scatter(1, masked.positions, new)
    return corrupted, (corrupted != input_ids).float()


def replaced_token_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, total: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean binary cross-entropy over the positions `weights` marks (or sum / `total`).

    ELECTRA weighs every non-pad token, [CLS] and [SEP] included: `weights` is the attention mask.
    """
    bce = F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none")
    weights = weights.float()
    total = weights.sum() if total is None else total
    return (bce * weights).sum() / total.clamp(min=1.0)


def copy_mlm_loss(
    logits: torch.Tensor,
    replaced_logits: torch.Tensor,
    shown: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    total: torch.Tensor | None = None,
) -> torch.Tensor:
    """All-Tokens MLM's loss: mean -log p(target) over the weighted positions (or sum / `total`).

    p puts D = sigmoid(-replaced_logit) on copying the token shown in the input and 1 - D on the
    softmax of `logits` (B, T, V), so D is the chance that the shown token is the original one,
    the same meaning as an ELECTRA discriminator's output. In log space, without forming p.
    """
    log_q = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    d = replaced_logits.float()
    from_softmax = F.logsigmoid(d) + log_q  # log((1 - D) q(target))
    log_p = torch.where(shown == targets, torch.logaddexp(F.logsigmoid(-d), from_softmax), from_softmax)
    total = weights.sum() if total is None else total
    return -(log_p * weights).sum() / total.clamp(min=1.0)


KINDS = ("electra", "electra-15", "replace-mlm", "all-tokens-mlm", "mlm")
MAIN_LM_HEAD = ("replace-mlm", "all-tokens-mlm")  # objectives whose main network predicts tokens


@dataclass(frozen=True)
class ObjectiveConfig:
    kind: str = "electra"  # one of KINDS; "mlm" is BERT's masked LM alone, 80/10/10 masking
    mask_prob: float = 0.15
    rtd_weight: float = 50.0  # electra and electra-15; the MLM-style losses weigh 1
    temperature: float = 1.0
    whole_word: bool = False  # mask whole words (a `special` table with CONTINUES marks)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown objective {self.kind!r}; use one of {', '.join(KINDS)}")
        if not 0 < self.mask_prob < 1:
            raise ValueError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


def _corrupt(model, input_ids, token_type_ids, attention_mask, special, rows, seed, mask_id, cfg, totals):
    """The generator's half, shared by the objectives that corrupt with it: mask, predict, sample.

    Returns the masked positions, the generator's logits there, its MLM loss and the corrupted
    input with its replaced-or-not labels.
    """
    masked = mask_tokens(
        input_ids, attention_mask, special, rows, seed, mask_id, cfg.mask_prob, whole_word=cfg.whole_word
    )
    gen_logits = model.generator_logits(masked.input_ids, token_type_ids, attention_mask, masked.positions)
    mlm = masked_lm_loss(gen_logits, masked, None if totals is None else totals[0])
    sampled = sample_tokens(gen_logits, seed, rows, cfg.temperature)
    corrupted, labels = replace_tokens(input_ids, masked, sampled)
    return masked, gen_logits, mlm, corrupted, labels


def _at(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x (B, T) at `positions` (B, K)."""
    return torch.gather(x, 1, positions)


def electra_loss(
    model,
    input_ids,
    token_type_ids,
    attention_mask,
    special: torch.Tensor,
    rows: torch.Tensor,
    seed: int | torch.Tensor,
    mask_id: int,
    cfg: ObjectiveConfig,
    totals: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The ELECTRA objective on one batch; returns the loss and detached metric tensors (see `rates`).

    `totals` (from `loss_counts`, summed over a whole step) makes the losses this part's share
    of the step's means; without it they are this batch's means. Under ELECTRA 15%
    (cfg.kind "electra-15") the discriminator's loss and metrics cover the masked positions only.
    """
    masked, gen_logits, mlm, corrupted, labels = _corrupt(
        model, input_ids, token_type_ids, attention_mask, special, rows, seed, mask_id, cfg, totals
    )
    disc_logits = model.discriminator_logits(corrupted, token_type_ids, attention_mask)
    if cfg.kind == "electra-15":
        disc_logits, labels = _at(disc_logits, masked.positions), _at(labels, masked.positions)
        weights, total = masked.weights, None if totals is None else totals[0]
    else:
        weights, total = attention_mask, None if totals is None else totals[1]
    rtd = replaced_token_loss(disc_logits, labels, weights, total)
    with torch.no_grad():
        metrics = {
            "gen_loss": mlm.detach(),
            "disc_loss": rtd.detach(),
            **_generator_metrics(gen_logits, masked),
            **_discriminator_metrics(disc_logits, labels, weights),
        }
    return mlm + cfg.rtd_weight * rtd, metrics


def replace_mlm_loss(
    model,
    input_ids,
    token_type_ids,
    attention_mask,
    special: torch.Tensor,
    rows: torch.Tensor,
    seed: int | torch.Tensor,
    mask_id: int,
    cfg: ObjectiveConfig,
    totals: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Replace MLM (cfg.kind "replace-mlm") or All-Tokens MLM ("all-tokens-mlm"), the paper's ablations.

    The generator corrupts the input as in ELECTRA, and the main network (the discriminator's
    place) becomes a masked LM: Replace MLM predicts the original tokens at the masked positions;
    All-Tokens MLM predicts every token, mixing a copy of the input token (weight: its
    replaced-token head's "original" probability) with its softmax. Loss = generator MLM + main
    loss; its figures are logged as disc_loss and disc_accuracy (the main network's).
    """
    masked, gen_logits, mlm, corrupted, labels = _corrupt(
        model, input_ids, token_type_ids, attention_mask, special, rows, seed, mask_id, cfg, totals
    )
    h = model.discriminator_hidden(corrupted, token_type_ids, attention_mask)
    if cfg.kind == "replace-mlm":
        logits = model.discriminator_lm_logits(h, masked.positions)  # (B, K, V)
        main = masked_lm_loss(logits, masked, None if totals is None else totals[0])
        with torch.no_grad():
            accuracy = _generator_metrics(logits, masked)["gen_accuracy"]
    else:
        logits, replaced = model.discriminator_lm_logits(h), model.discriminator_head(h)  # (B, T, V), (B, T)
        main = copy_mlm_loss(
            logits, replaced, corrupted, input_ids, attention_mask, None if totals is None else totals[1]
        )
        with torch.no_grad():
            accuracy = _copy_accuracy(logits, replaced, corrupted, input_ids, attention_mask)
    with torch.no_grad():
        real = attention_mask.bool()
        metrics = {
            "gen_loss": mlm.detach(),
            "disc_loss": main.detach(),
            **_generator_metrics(gen_logits, masked),
            "disc_accuracy": accuracy,
            "replaced_fraction": _rate((labels.bool() & real).sum(), real.sum()),
        }
    return mlm + main, metrics


def mlm_loss(
    model,
    input_ids,
    token_type_ids,
    attention_mask,
    special: torch.Tensor,
    rows: torch.Tensor,
    seed: int | torch.Tensor,
    mask_id: int,
    cfg: ObjectiveConfig,
    totals: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BERT's masked LM on the generator network (80% [MASK], 10% random, 10% unchanged)."""
    vocab = model.cfg.generator.vocab_size
    masked = mask_tokens(
        input_ids,
        attention_mask,
        special,
        rows,
        seed,
        mask_id,
        cfg.mask_prob,
        mask_token_prob=0.8,
        random_token_prob=0.1,
        vocab_size=vocab,
        whole_word=cfg.whole_word,
    )
    logits = model.generator_logits(masked.input_ids, token_type_ids, attention_mask, masked.positions)
    loss = masked_lm_loss(logits, masked, None if totals is None else totals[0])
    return loss, {"gen_loss": loss.detach(), **_generator_metrics(logits.detach(), masked)}


def _rate(hits: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    return torch.stack([hits.float(), count.float()])


def rates(metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An objective's metrics as values. Losses are scalars; accuracies, precision, recall and the
    replaced fraction come as (hits, count) pairs, so that the parts of a step (micro-batches,
    processes) add up to the whole step's own rate, which this divides out (0 of nothing is 0)."""
    return {k: v[0] / v[1].clamp(min=1) if v.dim() else v for k, v in metrics.items()}


def _generator_metrics(logits: torch.Tensor, masked: Masked) -> dict[str, torch.Tensor]:
    # the target scores the maximum: argmax's answer but for ties, and one reduction fewer (it
    # fuses with the cross-entropy's maximum; a separate argmax read every logit again). A tie
    # counts as a hit: rare in fp32, but bf16 logits (GPU autocast) tie at the top in about 4% of
    # rows of 30,522 Gaussian logits, so GPU runs may read slightly above an argmax's accuracy
    hit = (logits.gather(-1, masked.targets[..., None]).squeeze(-1) >= logits.amax(-1)).float()
    return {"gen_accuracy": _rate((hit * masked.weights).sum(), masked.weights.sum())}


def _copy_accuracy(logits, replaced_logits, shown, targets, attention_mask) -> torch.Tensor:
    """How often the copy mixture's most likely token is the original (ties count as right)."""
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)  # softmax values from reductions, never the (B, T, V) softmax

    def q(tokens: torch.Tensor) -> torch.Tensor:
        return (logits.gather(-1, tokens[..., None]).squeeze(-1) - lse).exp()

    keep = torch.sigmoid(-replaced_logits.float())
    p_target = (1 - keep) * q(targets) + keep * (shown == targets)
    p_shown = (1 - keep) * q(shown) + keep
    best = torch.maximum((1 - keep) * (logits.amax(-1) - lse).exp(), p_shown)  # no other token beats these
    real = attention_mask.bool()
    return _rate(((p_target >= best) & real).sum(), real.sum())


def _discriminator_metrics(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
) -> dict[str, torch.Tensor]:
    real = weights.bool()
    predicted = (logits > 0) & real
    replaced = labels.bool() & real
    tp = (predicted & replaced).sum()
    return {
        "disc_accuracy": _rate(((predicted == replaced) & real).sum(), real.sum()),
        "disc_precision": _rate(tp, predicted.sum()),
        "disc_recall": _rate(tp, replaced.sum()),
        "replaced_fraction": _rate(replaced.sum(), real.sum()),
    }


OBJECTIVES = {
    "electra": electra_loss,
    "electra-15": electra_loss,
    "replace-mlm": replace_mlm_loss,
    "all-tokens-mlm": replace_mlm_loss,
    "mlm": mlm_loss,
}
