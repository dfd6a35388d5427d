import dataclasses

import pytest
import torch

from electra.config import EncoderConfig, ModelConfig, base, generator_config, large, preset, small, tiny
from electra.model import Electra, Encoder, SequenceClassifier
from tests.conftest import batch, perturb


def test_presets_match_the_paper():
    s = small()
    assert (
        s.discriminator.num_layers,
        s.discriminator.hidden_size,
        s.discriminator.num_heads,
        s.discriminator.ffn_size,
        s.discriminator.embedding_size,
    ) == (12, 256, 4, 1024, 128)
    assert (s.generator.hidden_size, s.generator.num_heads, s.generator.ffn_size) == (64, 1, 256)
    sizes = lambda c: (c.num_layers, c.hidden_size, c.num_heads, c.ffn_size, c.embedding_size)  # noqa: E731
    b, lg = base(), large()  # Table 6: layers, hidden, heads, FFN, embedding; generators 1/3 and 1/4 wide
    assert (sizes(b.discriminator), sizes(b.generator)) == ((12, 768, 12, 3072, 768), (12, 256, 4, 1024, 768))
    assert (sizes(lg.discriminator), sizes(lg.generator)) == ((24, 1024, 16, 4096, 1024), (24, 256, 4, 1024, 1024))
    for cfg in (s, b, lg):
        assert cfg.generator.num_layers == cfg.discriminator.num_layers
        assert cfg.discriminator.vocab_size == 30522


def test_small_discriminator_has_the_papers_parameter_count():
    transformers = pytest.importorskip("transformers")
    from electra.hf import to_hf_config

    cfg = small().discriminator
    ours = sum(p.numel() for p in Encoder(cfg).parameters())
    theirs = sum(
        p.numel()
        for p in transformers.ElectraModel(transformers.ElectraConfig(**to_hf_config(cfg, "encoder"))).parameters()
    )
    assert ours == theirs
    assert 13e6 < ours < 14.5e6  # the paper's Table 1: 14M


def test_bad_configs_are_refused_with_the_value():
    with pytest.raises(ValueError, match="hidden_size 30 is not divisible by num_heads 4"):
        EncoderConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="embedding_size must match"):
        ModelConfig(tiny().discriminator, tiny().generator.replace(embedding_size=8))
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset("huge")
    with pytest.raises(ValueError, match="fraction"):
        generator_config(tiny().discriminator, 0)


def test_embeddings_are_shared_and_the_output_layer_tied():
    model = Electra(tiny())
    ids, types, mask = batch(100)
    loss = (
        model.generator_logits(ids, types, mask).logsumexp(-1).sum()
        + model.discriminator_logits(ids, types, mask).sum()
    )
    loss.backward()
    names = [n for n, _ in model.named_parameters()]
    assert sum("word" in n for n in names) == 1  # one word embedding, used by both networks and the MLM output
    assert model.embeddings.word.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_generator_logits_at_positions_equal_the_full_logits_gathered():
    model = perturb(Electra(tiny()))
    ids, types, mask = batch(100)
    positions = torch.tensor([[1, 4, 5], [2, 3, 7], [1, 2, 6]])
    full = model.generator_logits(ids, types, mask)
    some = model.generator_logits(ids, types, mask, positions=positions)
    assert some.shape == (3, 3, 100)
    torch.testing.assert_close(
        some, torch.gather(full, 1, positions[:, :, None].expand(-1, -1, 100)), rtol=0, atol=1e-6
    )


def test_padding_does_not_change_real_positions():
    model = perturb(Electra(tiny()))
    ids, types, mask = batch(100)
    other = ids.clone()
    other[mask == 0] = 57  # garbage where the mask says padding
    a = model.discriminator_logits(ids, types, mask)
    b = model.discriminator_logits(other, types, mask)
    torch.testing.assert_close(a[mask.bool()], b[mask.bool()], rtol=0, atol=1e-6)


def test_initialisation_follows_googles():
    torch.manual_seed(0)
    model = Electra(small(vocab_size=2000))
    w = model.discriminator.layers[0].ffn_in.weight
    # N(0, 0.02) redrawn beyond 2 std, as TF's truncated_normal_initializer: std 0.02 x 0.8796
    assert abs(w.std().item() - 0.02 * 0.8796) < 0.0005 and w.abs().max() <= 0.04
    assert model.embeddings.word.weight.abs().max() <= 0.04
    assert model.discriminator.layers[0].ffn_in.bias.abs().sum() == 0
    assert torch.all(model.discriminator.layers[0].attn_norm.weight == 1)
    assert model.embeddings.word.weight[0].abs().sum() == 0  # the [PAD] row

    cfg = tiny()  # a config may give the generator a scale of its own (architecture.generator.initializer_range)
    wide = ModelConfig(cfg.discriminator, dataclasses.replace(cfg.generator, initializer_range=0.2))
    torch.manual_seed(0)
    model = Electra(wide)
    for net, std in ((model.generator, 0.2), (model.generator_head, 0.2), (model.discriminator, 0.02)):
        w = torch.cat([p.flatten() for p in net.parameters() if p.dim() == 2])  # the weights of its linear layers
        assert abs(w.std().item() / std - 0.8796) < 0.1
    assert model.embeddings.word.weight.abs().max() <= 0.04  # shared: the discriminator's


def test_too_long_input_is_refused():
    model = Electra(tiny())
    with pytest.raises(ValueError, match="exceeds the model.s 128 positions"):
        model.discriminator_logits(torch.zeros(1, 129, dtype=torch.long))


def test_classifier_from_pretrained_discriminator_shares_its_weights():
    model = perturb(Electra(tiny()))
    encoder = model.encoder()
    ids, types, mask = batch(100)
    h = model.discriminator(model.embeddings(ids, types), mask)
    torch.testing.assert_close(encoder(ids, types, mask), h, rtol=0, atol=0)
    clf = SequenceClassifier(encoder.cfg, 3, encoder=encoder).eval()
    assert clf(ids, types, mask).shape == (3, 3)


def test_cpu_dropout_keeps_1_minus_p_scales_and_follows_the_seed():
    from electra.model import dropout

    x = torch.ones(200, 1000, requires_grad=True)
    torch.manual_seed(0)
    y = dropout(x, 0.1, training=True)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.003
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)  # the gradient flows through kept elements only
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.1, training=True), y)
    assert dropout(x, 0.1, training=False) is x
    # rows are independent: no pattern repeats across the four 15-bit draws of one word
    assert not torch.equal(kept[:50], kept[50:100])


def test_disentangled_embeddings_keep_rtd_gradients_off_the_shared_embeddings():
    import dataclasses

    model = Electra(dataclasses.replace(tiny(), disentangled_embeddings=True))
    assert torch.equal(model.discriminator_word_embeddings(), model.embeddings.word.weight)  # delta starts at 0
    ids, types, mask = batch(100)
    model.discriminator_logits(ids, types, mask).sum().backward()
    assert model.embeddings.word.weight.grad is None  # the discriminator cannot pull on them
    assert model.embedding_delta.grad.abs().sum() > 0
    model.zero_grad()
    model.generator_logits(ids, types, mask).logsumexp(-1).sum().backward()
    assert model.embeddings.word.weight.grad.abs().sum() > 0


def test_activation_checkpointing_keeps_less_and_gives_the_same_gradients_under_dropout():
    """Each block keeps only its input and runs again in backward, replaying the dropout masks."""
    from electra.model import Block, checkpoint_activations

    torch.manual_seed(0)
    model = perturb(Electra(tiny(vocab_size=100))).train()
    ids, types, mask = batch(100, B=4, T=24)
    calls = []
    for m in model.modules():
        if isinstance(m, Block):
            m.register_forward_pre_hook(lambda *_: calls.append(1))

    def step(on: bool):
        checkpoint_activations(model, on)
        model.zero_grad()
        calls.clear()
        kept = []
        torch.manual_seed(1)
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t: kept.append(t.numel() * t.element_size()) or t, lambda t: t
        ):
            positions = torch.tensor([[1, 5]] * 4)
            loss = (
                model.discriminator_logits(ids, types, mask).sum()
                + model.generator_logits(ids, types, mask, positions).sum()
            )
        loss.backward()
        return (
            loss.item(),
            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
            sum(kept),
            len(calls),
        )

    loss, grads, kept, runs = step(False)
    loss2, grads2, kept2, runs2 = step(True)
    blocks = model.cfg.generator.num_layers + model.cfg.discriminator.num_layers
    assert runs == blocks and runs2 == 2 * blocks  # each block ran again in the backward pass
    assert kept2 < kept / 3  # what the forward pass keeps for backward
    assert loss2 == loss and grads2.keys() == grads.keys()
    assert all(torch.equal(grads[n], grads2[n]) for n in grads)  # the same dropout masks, bit for bit
    with torch.no_grad():  # evaluation never recomputes: nothing to keep
        calls.clear()
        model.discriminator_logits(ids, types, mask)
        assert len(calls) == model.cfg.discriminator.num_layers


def test_cpu_attention_dropout_path_computes_the_same_attention_as_sdpa(monkeypatch):
    """CPU training with attention dropout takes its own attention (SDPA's CPU dropout is slow):
    with dropout keeping everything it is SDPA's (scaled by 1/sqrt(head size), padding keys masked)."""
    import electra.model as model_mod

    cfg = tiny(vocab_size=100).with_dropout(0.0)
    cfg = dataclasses.replace(
        cfg,
        discriminator=cfg.discriminator.replace(attention_dropout=0.1),
        generator=cfg.generator.replace(attention_dropout=0.1),
    )
    model = perturb(Electra(cfg))
    ids, types, mask = batch(100)
    with torch.no_grad():
        want = model.discriminator_logits(ids, types, mask)  # eval: SDPA, no dropout
        monkeypatch.setattr(model_mod, "dropout", lambda x, p, training: x)  # keep every attention weight
        model.train()
        got = model.discriminator_logits(ids, types, mask)  # train: the CPU dropout path
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_padding_does_not_change_real_positions_in_training_either():
    model = perturb(Electra(tiny())).train()
    ids, types, mask = batch(100)
    other = ids.clone()
    other[mask == 0] = 57
    torch.manual_seed(0)
    a = model.discriminator_logits(ids, types, mask)
    torch.manual_seed(0)
    b = model.discriminator_logits(other, types, mask)
    torch.testing.assert_close(a[mask.bool()], b[mask.bool()], rtol=0, atol=1e-5)


def test_a_disentangled_discriminators_encoder_carries_its_delta():
    """`encoder()` is what fine-tuning from a run folder trains: sg(shared) + delta, as exported."""
    model = perturb(Electra(dataclasses.replace(tiny(), disentangled_embeddings=True)))  # delta off zero
    ids, types, mask = batch(100)
    with torch.no_grad():
        torch.testing.assert_close(
            model.encoder()(ids, types, mask), model.discriminator_hidden(ids, types, mask), rtol=0, atol=0
        )


def test_a_scaled_regression_head_scales_and_folds_its_bias_too():
    from electra.model import SequenceClassifier

    cfg = tiny().discriminator
    model = perturb(SequenceClassifier(cfg, 1, scale=5.0))  # a trained head: its bias is not 0
    plain = SequenceClassifier(cfg, 1).eval()
    plain.load_state_dict(model.state_dict())
    ids, types, mask = batch(100)
    with torch.no_grad():
        scores = model(ids, types, mask)
        torch.testing.assert_close(scores, 5 * plain(ids, types, mask))
        model.fold_scale()
        torch.testing.assert_close(model(ids, types, mask), scores)


def test_the_generator_never_trains_the_discriminators_embedding_delta():
    """The generator (input and tied output layer) trains the shared embeddings, never the delta."""
    model = perturb(Electra(dataclasses.replace(tiny(), disentangled_embeddings=True))).train()
    ids, types, mask = batch(100)
    model.generator_logits(ids, types, mask).logsumexp(-1).sum().backward()
    assert model.embedding_delta.grad is None
    assert model.embeddings.word.weight.grad.abs().sum() > 0


def test_training_drops_out_where_transformers_electra_does(monkeypatch):
    """Embeddings output, attention probabilities, attention output and FFN output: 1 + 3 per layer."""
    import electra.model as model_mod
    from electra.model import Encoder

    calls, real = [], model_mod.dropout
    monkeypatch.setattr(model_mod, "dropout", lambda x, p, training: calls.append(p) or real(x, p, training))
    enc = Encoder(tiny().discriminator).train()
    ids, types, mask = batch(100)
    enc(ids, types, mask)
    assert len([p for p in calls if p > 0]) == 1 + 3 * enc.cfg.num_layers


@pytest.mark.parametrize("head", ["regression", "scaled regression", "classifier", "tagger", "span"])
def test_task_heads_give_fp32_outputs_under_bf16_autocast(head):
    """The encoder runs in bf16 and the head's last layer in fp32: a regression output rounded to
    bf16 moves in steps of 1/64 between 2 and 4, where a little-trained model's scores all tie."""
    from electra.model import QuestionAnswerer, TokenClassifier

    torch.manual_seed(0)
    cfg = tiny().discriminator
    model = {
        "regression": lambda: SequenceClassifier(cfg, 1),
        "scaled regression": lambda: SequenceClassifier(cfg, 1, scale=5.0),
        "classifier": lambda: SequenceClassifier(cfg, 3),
        "tagger": lambda: TokenClassifier(cfg, 5),
        "span": lambda: QuestionAnswerer(cfg),
    }[head]().eval()
    with torch.no_grad():
        model.out.bias.fill_(3.0)  # outputs near 3, where bf16's step is 1/64
        ids, types, mask = batch(cfg.vocab_size, 4, 12)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(ids, types, mask)
            hidden = model.encoder(ids, types, mask)
        if isinstance(model, SequenceClassifier):
            hidden = torch.nn.functional.gelu(model.dense(hidden[:, 0].float()))
        scale = getattr(model, "scale", 1.0)
        want = torch.nn.functional.linear(hidden.float(), model.out.weight * scale, model.out.bias * scale)
        full = model(ids, types, mask)  # no autocast: as before
    assert got.dtype == torch.float32 and full.dtype == torch.float32
    assert not torch.equal(got, got.bfloat16().float())  # not rounded to bf16
    assert torch.allclose(got, want, atol=1e-2) and torch.allclose(got, full, atol=0.1)


def test_cpu_dropout_takes_any_shape():
    """One 64-bit draw gives four 16-bit uniforms: a tensor whose size is no multiple of 4 still
    gets a mask of its own shape (a one-head network's attention at an odd length and batch)."""
    from electra.model import dropout

    x = torch.ones(3, 5, 7)
    torch.manual_seed(0)
    y = dropout(x, 0.5, training=True)
    assert y.shape == x.shape and set(y.unique().tolist()) == {0.0, 2.0}


def test_an_input_of_exactly_the_models_positions_is_read():
    model = Electra(tiny())  # 128 positions
    assert model.discriminator_logits(torch.full((1, 128), 7)).shape == (1, 128)


def test_omitted_token_types_read_as_type_0():
    """As transformers: no token_type_ids means segment 0 everywhere, not no segment embedding."""
    model = perturb(Electra(tiny()))  # type embeddings off their initial values, rows 0 and 1 apart
    ids, _, mask = batch(100)
    with torch.no_grad():
        torch.testing.assert_close(
            model.discriminator_logits(ids, None, mask),
            model.discriminator_logits(ids, torch.zeros_like(ids), mask),
            rtol=0,
            atol=0,
        )
        torch.testing.assert_close(
            model.generator_logits(ids, None, mask),
            model.generator_logits(ids, torch.zeros_like(ids), mask),
            rtol=0,
            atol=0,
        )


def test_fresh_encoders_heads_and_embeddings_are_initialised_as_googles():
    """A standalone encoder and each fine-tuning head start as pre-training does: N(0, 0.02) cut at
    2 std, zero biases; every embedding too, at a config's own initializer_range."""
    from electra.model import QuestionAnswerer, TokenClassifier

    torch.manual_seed(0)
    cfg = tiny().discriminator.replace(hidden_size=256, num_heads=4)
    for layer in (
        Encoder(cfg).transformer.layers[0].ffn_in,
        SequenceClassifier(cfg, 3).dense,
        SequenceClassifier(cfg, 300).out,
        TokenClassifier(cfg, 300).out,
        QuestionAnswerer(cfg.replace(hidden_size=2048, num_heads=8)).out,
    ):
        assert layer.weight.abs().max() <= 0.04 and abs(layer.weight.std().item() / (0.02 * 0.8796) - 1) < 0.05
        assert layer.bias.abs().sum() == 0
    # position embeddings and the projection, at a config's own scale (architecture's initializer_range)
    disc = cfg.replace(embedding_size=128, initializer_range=0.05)
    model = Electra(ModelConfig(disc, disc))
    for w in (model.embeddings.position.weight, model.discriminator.project.weight):
        assert w.abs().max() <= 0.1 and abs(w.std().item() / (0.05 * 0.8796) - 1) < 0.05


def test_the_generators_encoder_is_the_generator_with_the_shared_embeddings():
    """`encoder("generator")` (what fine-tuning an MLM run starts from) is the generator network as
    it runs in pre-training: its own sizes, the shared word embeddings (never the discriminator's
    delta), in the model's training mode; any other part is refused."""
    model = perturb(Electra(dataclasses.replace(tiny(), disentangled_embeddings=True)))  # delta off zero
    ids, types, mask = batch(100)
    enc = model.encoder("generator")
    assert enc.cfg == model.cfg.generator and not enc.training
    with torch.no_grad():
        want = model.generator(model.embeddings(ids, types), mask)
        torch.testing.assert_close(enc(ids, types, mask), want, rtol=0, atol=0)
    assert model.train().encoder("generator").training and model.encoder().training
    with pytest.raises(ValueError, match="part must be discriminator or generator, got 'gen'"):
        model.encoder("gen")


def test_heads_refuse_no_labels():
    from electra.model import TokenClassifier

    for head in (SequenceClassifier, TokenClassifier):
        with pytest.raises(ValueError, match="num_labels must be at least 1, got 0"):
            head(tiny().discriminator, 0)
