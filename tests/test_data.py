import numpy as np
import pytest
import torch

from electra.config import tiny
from electra.data import Loader, Prefetcher, Shards, iterate
from electra.model import Electra
from electra.optim import adamw, lr_factor, param_groups, set_lr


def _ids(batches):
    return [tuple(row.tolist()) for b in batches for row in b.input_ids]


def test_one_epoch_visits_every_row_once_and_epochs_differ(tiny_data):
    shards = Shards(tiny_data)
    n = len(shards)
    loader = Loader(shards, global_batch=8, seed=3)
    order = [np.stack(loader.next_global(), 1) for _ in range(n // 8)]
    seen = {tuple(x) for b in order for x in b}
    assert len(seen) == (n // 8) * 8  # no row twice within an epoch
    first_of_next = np.stack(loader.next_global(), 1)
    assert loader.epoch == 1 and not np.array_equal(first_of_next, order[0])


def test_rank_slices_and_micro_batches_make_up_the_global_batch(tiny_data):
    shards = Shards(tiny_data)
    single = Loader(shards, global_batch=8, seed=1)
    ranks = [Loader(shards, global_batch=8, seed=1, rank=r, world_size=2) for r in range(2)]
    for _ in range(5):
        whole = single.next(micro_batches=2)
        parts = [r.next() for r in ranks]
        assert _ids(whole) == _ids(parts[0]) + _ids(parts[1])
        assert torch.equal(torch.cat([b.rows for p in parts for b in p]), torch.arange(8))


def test_loader_state_resumes_exactly(tiny_data):
    shards = Shards(tiny_data)
    a = Loader(shards, global_batch=8, seed=2)
    for _ in range(7):
        a.next()
    state = a.state_dict()
    expected = [_ids(a.next()) for _ in range(10)]
    b = Loader(shards, global_batch=8, seed=2)
    b.load_state_dict(state)
    assert [_ids(b.next()) for _ in range(10)] == expected


def test_prefetcher_hands_out_the_loader_batches_and_saves_the_state_of_those_handed_out(tiny_data):
    shards = Shards(tiny_data)
    plain = Loader(shards, global_batch=8, seed=4)
    ahead = Prefetcher(Loader(shards, global_batch=8, seed=4), micro_batches=2, depth=3)
    try:
        for _ in range(5):
            micro, tokens = ahead.next()
            expected = plain.next(micro_batches=2)
            assert _ids(micro) == _ids(expected)
            assert tokens == plain.last_tokens == sum(b.tokens for b in expected)
        # the thread has read further, but the state is that of the 5 batches handed out
        assert ahead.state_dict() == plain.state_dict()
    finally:
        ahead.close()
    resumed = Loader(shards, global_batch=8, seed=4)
    resumed.load_state_dict(ahead.state_dict())
    assert _ids(resumed.next()) == _ids(plain.next())


def test_prefetcher_raises_the_reading_thread_error(tiny_data):
    loader = Loader(Shards(tiny_data), global_batch=8)
    loader.shards.ids = []  # as if the shard files had vanished
    ahead = Prefetcher(loader)
    with pytest.raises(IndexError):
        ahead.next()
    ahead.close()


def test_batches_carry_masks_types_and_padding(tiny_data):
    shards = Shards(tiny_data)
    (batch,) = Loader(shards, global_batch=16).next()
    assert batch.input_ids.shape == (16, 32) and batch.input_ids.dtype == torch.int64
    lengths = batch.attention_mask.sum(1)
    for row, n in zip(batch.input_ids, lengths, strict=True):
        assert (row[n:] == 0).all() and row[n - 1] == 3 and row[0] == 2
    assert batch.token_type_ids.max() == 1
    rows = sum(len(b.input_ids) for b in iterate(Shards(tiny_data, "valid"), 5))
    assert rows == Shards(tiny_data, "valid").sizes.sum() > 0


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """tiny_data's corpus in shards of 10 rows: 27 train shards, 3 validation shards."""
    from electra.prepare import PrepareConfig, prepare
    from tests.conftest import synthetic_corpus

    root = tmp_path_factory.mktemp("sharded")
    cfg = PrepareConfig(seq_len=32, vocab_size=200, validation_fraction=0.1, rows_per_shard=10)
    prepare([synthetic_corpus(root / "corpus.txt")], root / "data", cfg, quiet=True)
    return root / "data"


def test_every_shard_pads_with_pad_ids_and_type_zero(sharded):
    """A shard written after another starts from clean buffers: its short rows end in [PAD] of type 0."""
    for split in ("train", "valid"):
        shards = Shards(sharded, split)
        assert len(shards.sizes) > 2
        padded = []
        for ids, types, lengths in zip(shards.ids, shards.types, shards.lengths, strict=True):
            pad = np.arange(shards.seq_len)[None, :] >= np.asarray(lengths)[:, None]
            assert (np.asarray(ids)[pad] == 0).all() and (np.asarray(types)[pad] == 0).all()
            padded.append(pad.sum())
        assert sum(padded[1:]) > 0  # shards after the first have short rows


def test_an_epoch_of_whole_batches_uses_every_row_and_shards_come_in_a_seeded_order(sharded):
    shards = Shards(sharded)
    n = len(shards)
    assert n % 2 == 0
    loader = Loader(shards, global_batch=n // 2, seed=0)
    epoch = np.concatenate([np.stack(loader.next_global(), 1) for _ in range(2)])
    assert loader.epoch == 0 and len({tuple(x) for x in epoch}) == n  # the last whole batch is kept
    loader.next_global()
    assert loader.epoch == 1
    first = {int(Loader(shards, global_batch=4, seed=seed).next_global()[0][0]) for seed in range(10)}
    assert len(first) > 3  # the shard read first depends on the seed


def test_validation_rows_are_numbered_across_shards(sharded):
    """The row numbers key the masking noise: each validation row draws its own positions."""
    shards = Shards(sharded, "valid")
    rows = torch.cat([b.rows for b in iterate(shards, 4)])
    assert torch.equal(rows, torch.arange(len(shards)))


def test_a_global_batch_that_does_not_divide_over_the_processes_is_refused(tiny_data):
    with pytest.raises(ValueError, match="global batch 9 does not divide over 2 processes"):
        Loader(Shards(tiny_data), global_batch=9, world_size=2)


def test_too_little_data_is_refused(tiny_data):
    with pytest.raises(ValueError, match="fewer than one batch"):
        Loader(Shards(tiny_data), global_batch=100_000)


def test_no_weight_decay_on_biases_and_layernorm():
    model = Electra(tiny())
    groups = param_groups(model, 0.01)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert "discriminator.layers.0.qkv.weight" in names and "embeddings.word.weight" in names
    assert not any(n.endswith("bias") or "norm" in n for n in names)
    opt = adamw(model, 1e-3)
    assert opt.defaults["eps"] == 1e-6 and opt.defaults["betas"] == (0.9, 0.999)


def test_schedule_is_linear_warmup_times_linear_decay():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1 * 1.0)
    assert lr_factor(4, 10, 100) == pytest.approx(0.5 * 0.96)
    assert lr_factor(50, 10, 100) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100) == 0.0
    assert lr_factor(3, 0, 10) == pytest.approx(0.7)


def test_setting_the_rate_keeps_each_groups_layer_scale_and_returns_the_base_rate():
    opt = adamw(Electra(tiny()), 1e-3, lr_scale={"embeddings.": 0.5})  # fine-tuning's layer-wise decay, say
    assert set_lr(opt, 1e-3, 0.25) == pytest.approx(2.5e-4)  # what the logs show as "lr"
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([1.25e-4, 2.5e-4])


def test_validation_batches_mask_exactly_each_rows_tokens(tiny_data):
    """iterate's attention mask covers a row's real tokens and none of its padding, as the loader's does."""
    shards = Shards(tiny_data, "valid")
    lengths = np.concatenate([np.asarray(x) for x in shards.lengths])
    assert (lengths < shards.seq_len).any()  # some rows are padded
    batches = list(iterate(shards, 5))
    mask = np.concatenate([b.attention_mask.numpy() for b in batches])
    ids = np.concatenate([b.input_ids.numpy() for b in batches])
    assert (mask.sum(1) == lengths).all()
    assert (ids[mask == 0] == 0).all() and (ids[mask == 1] != 0).all()


def test_rows_per_process_that_do_not_split_into_micro_batches_are_refused(tiny_data):
    """8 rows cannot be 3 equal micro-batches: refused, not 2 rows silently left out of the step."""
    loader = Loader(Shards(tiny_data), global_batch=8)
    with pytest.raises(ValueError, match="8 rows per process do not split into 3 micro-batches"):
        loader.next(micro_batches=3)
