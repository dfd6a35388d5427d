"""Parity with transformers' Electra* classes in both directions, and the pipeline contract."""

import dataclasses
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from electra import hf
from electra.config import tiny
from electra.model import Electra, SequenceClassifier, TokenClassifier
from tests.conftest import batch, perturb

transformers = pytest.importorskip("transformers")
TOL = dict(rtol=0, atol=1e-5)  # max abs difference, fp32


def _hf_config(cfg, kind, **extra):
    return transformers.ElectraConfig(**hf.to_hf_config(cfg, kind, **extra))


def _assert_real_close(ours, theirs, mask):
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours[mask.bool()], theirs[mask.bool()], **TOL)


@pytest.fixture
def electra():
    return perturb(Electra(tiny()))


def test_exported_discriminator_and_generator_match_transformers(tmp_path, electra):
    hf.export_discriminator(electra, tmp_path / "disc")
    hf.export_generator(electra, tmp_path / "gen")
    disc = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "disc").eval()
    gen = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "gen").eval()
    ids, types, mask = batch(100)
    with torch.no_grad():
        _assert_real_close(
            electra.discriminator_logits(ids, types, mask),
            disc(input_ids=ids, token_type_ids=types, attention_mask=mask).logits,
            mask,
        )
        _assert_real_close(
            electra.generator_logits(ids, types, mask),
            gen(input_ids=ids, token_type_ids=types, attention_mask=mask).logits,
            mask,
        )
    assert gen.generator_lm_head.weight.data_ptr() == gen.electra.embeddings.word_embeddings.weight.data_ptr()
    config = json.loads((tmp_path / "gen" / "config.json").read_text())
    assert config["architectures"] == ["ElectraForMaskedLM"] and config["hidden_size"] == 16
    assert config["dtype"] == config["torch_dtype"] == "float32"  # what dtype="auto" loads (older versions: torch_)
    auto = transformers.AutoModelForPreTraining.from_pretrained(tmp_path / "disc", dtype="auto")
    assert auto.dtype == torch.float32 and auto.config.dtype == torch.float32


@pytest.mark.parametrize("num_labels", [2, 1])
def test_exported_sequence_classifier_matches_transformers(tmp_path, num_labels):
    cfg = tiny().discriminator
    model = perturb(SequenceClassifier(cfg, num_labels))
    labels = ["neg", "pos"][:num_labels] if num_labels > 1 else ["score"]
    hf.export_sequence_classifier(model, tmp_path / "clf", labels)
    theirs = transformers.ElectraForSequenceClassification.from_pretrained(tmp_path / "clf").eval()
    assert theirs.config.problem_type == ("regression" if num_labels == 1 else "single_label_classification")
    ids, types, mask = batch(100)
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids, types, mask), theirs(input_ids=ids, token_type_ids=types, attention_mask=mask).logits, **TOL
        )


def test_every_encoder_setting_survives_the_config_both_ways():
    """Each setting is written to its own transformers field and read back from it (values that
    all differ from the defaults and from each other); a field a config leaves out reads as
    transformers reads it."""
    cfg = dataclasses.replace(
        tiny().discriminator, dropout=0.15, attention_dropout=0.05, layer_norm_eps=1e-5, initializer_range=0.03
    )
    cfg = dataclasses.replace(cfg, max_positions=96, type_vocab_size=3, pad_token_id=1)
    written = hf.to_hf_config(cfg, "sequence", id2label={"0": "neg", "1": "pos"}, label2id={"neg": 0, "pos": 1})
    assert hf.from_hf_config(written) == cfg
    theirs = transformers.ElectraConfig(**written)
    assert (theirs.hidden_dropout_prob, theirs.attention_probs_dropout_prob) == (0.15, 0.05)
    assert (theirs.layer_norm_eps, theirs.initializer_range) == (1e-5, 0.03)
    assert (theirs.max_position_embeddings, theirs.type_vocab_size, theirs.pad_token_id) == (96, 3, 1)
    head = transformers.ElectraForSequenceClassification(theirs).classifier
    assert head.dropout.p == cfg.dropout  # the head's dropout is the encoder's, as ours
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    least = {k: written[k] for k in required}
    defaults = transformers.ElectraConfig(**least)
    read = hf.from_hf_config(least)
    assert (read.max_positions, read.type_vocab_size, read.layer_norm_eps) == (
        defaults.max_position_embeddings,
        defaults.type_vocab_size,
        defaults.layer_norm_eps,
    )
    assert (read.dropout, read.attention_dropout, read.initializer_range) == (
        defaults.hidden_dropout_prob,
        defaults.attention_probs_dropout_prob,
        defaults.initializer_range,
    )
    assert read.embedding_size == defaults.embedding_size == 128


def test_exported_labels_map_both_ways(tmp_path):
    model = SequenceClassifier(tiny().discriminator, 3)
    hf.export_sequence_classifier(model, tmp_path / "clf", ["sad", "calm", "glad"])
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config["id2label"] == {"0": "sad", "1": "calm", "2": "glad"}
    assert config["label2id"] == {"sad": 0, "calm": 1, "glad": 2}


def test_exported_token_classifier_matches_transformers(tmp_path):
    model = perturb(TokenClassifier(tiny().discriminator, 5))
    hf.export_token_classifier(model, tmp_path / "tok", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    theirs = transformers.ElectraForTokenClassification.from_pretrained(tmp_path / "tok").eval()
    assert theirs.config.id2label[1] == "B-PER"
    ids, types, mask = batch(100)
    with torch.no_grad():
        _assert_real_close(
            model(ids, types, mask), theirs(input_ids=ids, token_type_ids=types, attention_mask=mask).logits, mask
        )


def test_question_answerer_round_trips_through_transformers(tmp_path):
    from electra.model import QuestionAnswerer

    model = perturb(QuestionAnswerer(tiny().discriminator))
    hf.export_question_answerer(model, tmp_path / "qa")
    theirs = transformers.ElectraForQuestionAnswering.from_pretrained(tmp_path / "qa").eval()
    ids, types, mask = batch(100)
    with torch.no_grad():
        out = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask)
        both = model(ids, types, mask)
        _assert_real_close(both[..., 0], out.start_logits, mask)
        _assert_real_close(both[..., 1], out.end_logits, mask)
    perturb(theirs, seed=3).save_pretrained(tmp_path / "theirs")  # and back: their weights, our answers
    back = hf.load_question_answerer(tmp_path / "theirs").eval()
    with torch.no_grad():
        out = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask)
        _assert_real_close(back(ids, types, mask)[..., 0], out.start_logits, mask)
    tagger = hf.export_token_classifier(TokenClassifier(tiny().discriminator, 2), tmp_path / "tagger", ["O", "B-X"])
    with pytest.raises(
        ValueError,
        match="holds ElectraForTokenClassification, fine-tuned for another kind of task than this one "
        "\\(ElectraForQuestionAnswering\\)",
    ):
        hf.load_question_answerer(tagger)


def _random_hf_pair(tmp_path, seed=0):
    """A transformers discriminator + generator with shared embeddings, saved as released."""
    cfg = tiny(generator_fraction=0.25)
    torch.manual_seed(seed)
    disc = perturb(transformers.ElectraForPreTraining(_hf_config(cfg.discriminator, "discriminator")), seed)
    gen = perturb(transformers.ElectraForMaskedLM(_hf_config(cfg.generator, "generator")), seed + 1)
    gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
    disc.save_pretrained(tmp_path / "disc")
    gen.save_pretrained(tmp_path / "gen")
    return disc, gen


def test_imported_transformers_pair_matches_transformers(tmp_path):
    disc, gen = _random_hf_pair(tmp_path)
    ours = hf.load_electra(tmp_path / "disc", tmp_path / "gen").eval()
    assert ours.import_notes == []
    ids, types, mask = batch(100, seed=1)
    with torch.no_grad():
        _assert_real_close(
            ours.discriminator_logits(ids, types, mask),
            disc(input_ids=ids, token_type_ids=types, attention_mask=mask).logits,
            mask,
        )
        _assert_real_close(
            ours.generator_logits(ids, types, mask),
            gen(input_ids=ids, token_type_ids=types, attention_mask=mask).logits,
            mask,
        )


def test_import_reports_generator_embeddings_that_differ(tmp_path):
    disc, gen = _random_hf_pair(tmp_path)
    with torch.no_grad():
        gen.electra.embeddings.position_embeddings.weight.add_(1.0)
    gen.save_pretrained(tmp_path / "gen")
    ours = hf.load_electra(tmp_path / "disc", tmp_path / "gen")
    assert ours.import_notes == [
        "generator embeddings.position.weight differs from the discriminator's; the discriminator's is shared"
    ]
    assert torch.equal(ours.embeddings.position.weight, disc.electra.embeddings.position_embeddings.weight)


def test_imported_transformers_classifiers_match(tmp_path):
    cfg = tiny().discriminator
    seq = perturb(
        transformers.ElectraForSequenceClassification(
            _hf_config(cfg, "sequence", id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
        )
    )
    seq.save_pretrained(tmp_path / "seq")
    tok = perturb(
        transformers.ElectraForTokenClassification(
            _hf_config(cfg, "token", id2label={0: "O", 1: "B-X"}, label2id={"O": 0, "B-X": 1})
        )
    )
    tok.save_pretrained(tmp_path / "tok")
    ours_seq, labels = hf.load_sequence_classifier(tmp_path / "seq")
    ours_tok, tags = hf.load_token_classifier(tmp_path / "tok")
    assert labels == {0: "a", 1: "b", 2: "c"} and tags == {0: "O", 1: "B-X"}
    ids, types, mask = batch(100, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(
            ours_seq.eval()(ids, types, mask),
            seq(input_ids=ids, token_type_ids=types, attention_mask=mask).logits,
            **TOL,
        )
        _assert_real_close(
            ours_tok.eval()(ids, types, mask),
            tok(input_ids=ids, token_type_ids=types, attention_mask=mask).logits,
            mask,
        )


def test_a_transformers_classifier_with_default_labels_loads_as_the_pipeline_names_them(tmp_path):
    model = transformers.ElectraForSequenceClassification(_hf_config(tiny().discriminator, "sequence"))
    model.save_pretrained(tmp_path / "clf")  # 2 labels named LABEL_0, LABEL_1: config.json leaves them out
    assert "id2label" not in json.loads((tmp_path / "clf" / "config.json").read_text())
    ours, labels = hf.load_sequence_classifier(tmp_path / "clf")
    assert labels == {0: "LABEL_0", 1: "LABEL_1"} and ours.num_labels == 2


def test_encoder_imports_from_any_electra_folder(tmp_path):
    disc, _ = _random_hf_pair(tmp_path)
    disc.electra.save_pretrained(tmp_path / "bare")  # ElectraModel: keys without the electra. prefix
    ids, types, mask = batch(100)
    with torch.no_grad():
        want = disc.electra(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
        for folder in ("disc", "bare"):
            encoder = hf.load_encoder(tmp_path / folder).eval()
            _assert_real_close(encoder(ids, types, mask), want, mask)


def test_export_import_round_trip_is_lossless(tmp_path, electra):
    hf.export_discriminator(electra, tmp_path / "disc")
    hf.export_generator(electra, tmp_path / "gen")
    back = hf.load_electra(tmp_path / "disc", tmp_path / "gen")
    assert back.cfg == electra.cfg
    for (name, a), (_, b) in zip(electra.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), name

    clf = perturb(SequenceClassifier(tiny().discriminator, 3))
    hf.export_sequence_classifier(clf, tmp_path / "clf", {0: "x", 1: "y", 2: "z"})
    clf_back, labels = hf.load_sequence_classifier(tmp_path / "clf")
    assert labels == {0: "x", 1: "y", 2: "z"}
    assert all(
        torch.equal(a, b) for a, b in zip(clf.state_dict().values(), clf_back.state_dict().values(), strict=True)
    )


def test_pipeline_returns_our_labels_and_softmax_scores(tmp_path, tokenizer, tokenizer_dir):
    cfg = tiny(vocab_size=tokenizer.get_vocab_size()).discriminator
    model = perturb(SequenceClassifier(cfg, 2), scale=0.2)
    folder = hf.export_sequence_classifier(model, tmp_path / "clf", {0: "NEGATIVE", 1: "POSITIVE"}, tokenizer_dir)
    classify = transformers.pipeline("sentiment-analysis", model=str(folder))
    texts = ["the movie was great and a lot of fun", "the worst plot i have ever seen"]
    got = classify(texts)
    with torch.no_grad():
        for text, result in zip(texts, got, strict=True):
            enc = tokenizer.encode(text)
            probs = torch.softmax(model(torch.tensor([enc.ids]), torch.tensor([enc.type_ids])), -1)[0]
            assert result["label"] == ["NEGATIVE", "POSITIVE"][probs.argmax()]
            assert result["score"] == pytest.approx(probs.max().item(), abs=1e-6)
    assert {r["label"] for r in got} <= {"NEGATIVE", "POSITIVE"}


@pytest.mark.parametrize("labels, problem", [(3, "multi_label_classification"), (1, None), (1, "regression")])
def test_predict_scores_as_the_pipeline_does_for_each_problem_type(tmp_path, tokenizer, tokenizer_dir, labels, problem):
    from electra.predict import Predictor

    cfg = tiny(vocab_size=tokenizer.get_vocab_size()).discriminator
    names = {i: f"L{i}" for i in range(labels)}
    folder = hf.export_sequence_classifier(
        perturb(SequenceClassifier(cfg, labels), scale=0.5), tmp_path / "m", names, tokenizer_dir
    )
    config = json.loads((folder / "config.json").read_text())
    config.pop("problem_type")
    (folder / "config.json").write_text(json.dumps({**config, **({"problem_type": problem} if problem else {})}))
    texts = ["the movie was great and a lot of fun", "the worst plot i have ever seen"]
    ours, _ = Predictor(folder, device="cpu")([(t, None) for t in texts])
    theirs = transformers.pipeline("text-classification", model=str(folder))(texts)
    for o, t in zip(ours, theirs, strict=True):  # fp32 noise: ours batches both texts (padded), the pipeline one each
        assert o.get("label", t["label"]) == t["label"] and o["score"] == pytest.approx(t["score"], rel=1e-4, abs=1e-5)
    assert ("label" in ours[0]) == (problem != "regression")  # a regression gives its value alone
    if problem != "regression":
        assert all(0 < o["score"] < 1 for o in ours)


class _Reading:
    """A tokenizer that keeps the texts it is handed to encode."""

    def __init__(self, tok):
        self.tok, self.read = tok, []

    def __getattr__(self, name):
        return getattr(self.tok, name)

    def encode(self, text, pair=None, *args, **kwargs):
        self.read += [text, pair]
        return self.tok.encode(text, pair, *args, **kwargs)

    def encode_batch(self, items, *args, **kwargs):
        self.read += [x for item in items for x in ([item] if isinstance(item, str) else item)]
        return self.tok.encode_batch(items, *args, **kwargs)


def test_a_long_text_read_from_its_head_gets_the_answer_of_the_whole_text(tmp_path, tokenizer, tokenizer_dir):
    from electra.embed import Embedder
    from electra.predict import Predictor
    from electra.tokenizer import _WORD_STARTS_CJK, _head, head_chars

    cfg = tiny(vocab_size=tokenizer.get_vocab_size()).discriminator
    torch.manual_seed(0)
    clf = hf.export_sequence_classifier(
        perturb(SequenceClassifier(cfg, 2)), tmp_path / "clf", ["A", "B"], tokenizer_dir
    )
    tagger = hf.export_token_classifier(
        perturb(TokenClassifier(cfg, 3)), tmp_path / "tag", ["O", "B-X", "I-X"], tokenizer_dir
    )
    words = "the movie was great and a lot of fun but the plot was dull".split()
    long = " ".join(words[i % len(words)] for i in range(60))
    texts = [
        long,
        "   " * 40 + long,  # spaces the tokenizer drops: the head is short of a window, so the whole is read
        long[:36] + long[36:].replace(" ", "\x1c", 3),  # a control character the normalizer deletes, joining words
        long.replace(" ", " \u0301", 5) + " caf\u00e9",  # combining marks after spaces, accents
        long.replace(" ", "\t\n ", 8),
        long.replace(" ", "\n"),
        long.replace(" ", "\r\x1c\t"),
        "x" * 400 + " " + long,  # a word too long for the vocabulary
        "\u4e2d\u6587\u5b57" * 30 + " " + long,  # Chinese characters, each a word of its own
        "great\u4e2dfun\u6587" * 30,  # cut before a Chinese character inside a run of letters
        "\u4e2d\u0301\u6587" * 40,  # a combining mark after one
        "\uff76\uff80\u4e2d" * 40,  # half-width katakana, which is not split apart
        "great fun",  # short texts as they were
    ]
    for folder, pairs in ((clf, [None, long, "a short one"]), (tagger, [None])):
        inputs = [(t, p) for t in texts for p in pairs]
        whole = Predictor(folder, max_length=16, device="cpu")
        assert whole.head_chars == 64 * 16
        whole.head_chars = None
        want, cut = whole(inputs)
        heads = Predictor(folder, max_length=16, device="cpu")
        heads.head_chars = 40  # most of these texts are read from their heads
        assert [_head(t, 40, _WORD_STARTS_CJK) == t for t in texts] == [False] * 7 + [True] + [False] * 4 + [True]
        assert heads(inputs) == (want, cut) and cut == len(inputs) - len(pairs) + (folder == clf)
        heads.head_chars, heads.tok = 100, _Reading(heads.tok)  # heads that fill the window are what is encoded
        assert heads([(t, None) for t in texts])[0] == want[:: len(pairs)]
        whole_read = [i for i, t in enumerate(texts) if t in heads.tok.read]
        assert whole_read == [1, 7, 12]  # its head holds no token; a first word of 400 letters; a short text
        if folder == clf:  # pairs of every proportion: which side is the longer decides what each keeps
            rng = random.Random(0)
            mixed = [
                (
                    " ".join(rng.choices(words + ["a"], k=rng.randint(1, 40))),
                    " ".join(rng.choices(words, k=rng.randint(0, 40))),
                )
                for _ in range(300)
            ]
            assert heads(mixed) == whole(mixed)
        spaced = Predictor(folder, max_length=16, device="cpu")
        spaced.tok.add_tokens(["great fun"])  # matched in the raw text before words are split: it could span a cut
        assert head_chars(spaced.tok, 16) is None
        whole, heads = Embedder(folder, max_length=16, device="cpu"), Embedder(folder, max_length=16, device="cpu")
        whole.head_chars, heads.head_chars = None, 40
        vectors, cut = whole(inputs)
        got, got_cut = heads(inputs)
        assert got_cut == cut and (got == vectors).all()


def test_auto_tokenizer_encodes_like_ours(tokenizer, tokenizer_dir):
    auto = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    for a, b in [
        ("The Movie was GREAT, really!", None),
        ("unseen wordz", "a second segment"),
        ("accents: café naïve", None),
        ("a [MASK] film [SEP] and [UNK]", "[CLS] in a [PAD] pair"),  # specials written as text
    ]:
        enc = tokenizer.encode(a, b)
        theirs = auto(a, b)
        assert theirs["input_ids"] == enc.ids
        assert theirs["token_type_ids"] == enc.type_ids
        if b is not None:  # the second segment and its [SEP] are of type 1, as BERT and ELECTRA were trained
            first = len(tokenizer.encode(a).ids)
            assert enc.type_ids == [0] * first + [1] * (len(enc.ids) - first)


def test_exports_take_any_transformers_tokenizer_and_pipelines_truncate_to_the_models_positions(
    tmp_path, tokenizer_dir
):
    # a tokenizer folder written by transformers (tokenizer.json + tokenizer_config.json, no vocab.txt)
    saved = tmp_path / "saved"
    transformers.AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(saved)
    (saved / "vocab.txt").unlink(missing_ok=True)
    cfg = tiny(vocab_size=transformers.AutoTokenizer.from_pretrained(saved).vocab_size).discriminator
    model = perturb(SequenceClassifier(cfg, 2), scale=0.2)
    folder = hf.export_sequence_classifier(model, tmp_path / "clf", ["neg", "pos"], saved)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == cfg.max_positions == 128
    assert (folder / "vocab.txt").exists()
    long = "the movie was great and a lot of fun " * 100  # 900 tokens, for 128 positions
    classify = transformers.pipeline("sentiment-analysis", model=str(folder))
    got = classify(long, truncation=True)[0]
    ids = transformers.AutoTokenizer.from_pretrained(folder)(long, truncation=True)["input_ids"]
    assert len(ids) == 128
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids])), -1)[0]
    assert got["score"] == pytest.approx(probs.max().item(), abs=1e-6)


def test_a_domains_own_special_tokens_stay_special_for_transformers(tmp_path):
    from electra.tokenizer import SPECIAL_TOKENS, from_vocab, save_tokenizer

    tok = from_vocab([*SPECIAL_TOKENS, "a", "b", "[DOMAIN]"])
    tok.add_special_tokens(["[DOMAIN]"])
    save_tokenizer(tok, tmp_path / "tok")
    for fast in (True, False):  # the slow tokenizer reads vocab.txt and tokenizer_config.json alone
        auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok", use_fast=fast)
        assert "[DOMAIN]" in auto.all_special_tokens and "[MASK]" in auto.all_special_tokens
        assert auto("a [DOMAIN] b")["input_ids"] == tok.encode("a [DOMAIN] b").ids


def test_a_tokenizer_whose_ids_have_gaps_is_not_written_as_a_shifted_vocab_txt(tmp_path):
    from electra.tokenizer import SPECIAL_TOKENS, from_vocab, save_tokenizer

    tok = from_vocab({t: i for i, t in enumerate([*SPECIAL_TOKENS, "a"])} | {"b": 9})  # vocab.txt gives b id 6
    with pytest.raises(ValueError, match="ids are not contiguous from 0; it cannot be written as vocab.txt"):
        save_tokenizer(tok, tmp_path / "tok")
    assert not (tmp_path / "tok").exists()


def test_a_cased_tokenizer_without_chinese_splitting_reads_alike_from_every_file(tmp_path):
    """tokenizer_config.json says how text is read (case, accents, Chinese characters): transformers'
    slow tokenizer and a vocab.txt loaded here rebuild BERT's normalizer from it alone."""
    from electra.tokenizer import SPECIAL_TOKENS, from_vocab, load_tokenizer, save_tokenizer

    vocab = [*SPECIAL_TOKENS, "Hello", "hello", "中文", "中", "文", "café", "cafe"]
    tok = from_vocab(vocab, lowercase=False, strip_accents=False, chinese=False)
    save_tokenizer(tok, tmp_path / "tok")
    text = "Hello hello 中文 café"
    want = tok.encode(text).ids
    assert [vocab[i] for i in want[1:-1]] == ["Hello", "hello", "中文", "café"]
    assert load_tokenizer(tmp_path / "tok" / "vocab.txt").encode(text).ids == want
    for fast in (True, False):
        assert transformers.AutoTokenizer.from_pretrained(tmp_path / "tok", use_fast=fast)(text)["input_ids"] == want


def test_import_errors_name_the_problem(tmp_path, electra):
    hf.export_discriminator(electra, tmp_path / "disc")
    with pytest.raises(ValueError, match="not a fine-tuned model \\(ElectraForSequenceClassification\\)"):
        hf.load_sequence_classifier(tmp_path / "disc")
    (tmp_path / "run").mkdir()  # a pre-training run's folder: its config.json holds the run's settings
    (tmp_path / "run" / "config.json").write_text(json.dumps({"data_sha256": "ab", "batch_size": 8}))
    with pytest.raises(ValueError, match="run is a pre-training run, not a fine-tuned model .*; fine-tune it first"):
        hf.load_sequence_classifier(tmp_path / "run")
    with pytest.raises(ValueError, match="lacks .* tensors needed for an ELECTRA generator"):
        hf.load_electra(tmp_path / "disc", tmp_path / "disc")
    config = json.loads((tmp_path / "disc" / "config.json").read_text())
    (tmp_path / "disc" / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    with pytest.raises(ValueError, match="hidden_act='relu'; only 'gelu' is supported"):
        hf.load_encoder(tmp_path / "disc")
    (tmp_path / "disc" / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    with pytest.raises(ValueError, match="the weights do not match its config.json \\(size mismatch for .*64"):
        hf.load_encoder(tmp_path / "disc")
    (tmp_path / "disc" / "config.json").write_text('{"model_type": "electra"')
    with pytest.raises(ValueError, match="disc/config.json is not valid JSON"):
        hf.load_encoder(tmp_path / "disc")
    (tmp_path / "disc" / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="disc/config.json holds a JSON list, not an object"):
        hf.load_encoder(tmp_path / "disc")
    assert hf.read_results(tmp_path / "disc") == {}  # a folder from elsewhere
    (tmp_path / "disc" / "results.json").write_text('{"task": "sst2", ')  # cut short
    with pytest.raises(ValueError, match="disc/results.json is not valid JSON"):
        hf.read_results(tmp_path / "disc")
    (tmp_path / "disc" / "config.json").write_text(json.dumps({"data_sha256": "ab", "batch_size": 8}))
    with pytest.raises(ValueError, match="config.json holds a pre-training run's settings, not a model's: export"):
        hf.load_encoder(tmp_path / "disc")
    (tmp_path / "disc" / "config.json").write_text(json.dumps(config))
    weights = tmp_path / "disc" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])  # a copy cut short
    with pytest.raises(ValueError, match="model.safetensors cannot be read as weights .*damaged"):
        hf.load_encoder(tmp_path / "disc")
    weights.unlink()
    torch.save({"x": torch.zeros(3)}, tmp_path / "disc" / "pytorch_model.bin")
    bin_file = tmp_path / "disc" / "pytorch_model.bin"
    bin_file.write_bytes(bin_file.read_bytes()[:100])
    with pytest.raises(ValueError, match="pytorch_model.bin cannot be read as weights"):
        hf.load_encoder(tmp_path / "disc")
    with pytest.raises(FileNotFoundError, match="has no config.json; is it a Hugging Face model folder"):
        hf.load_encoder(tmp_path)
    (tmp_path / "data").mkdir()  # folders of other stages are named as such
    (tmp_path / "data" / "manifest.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="it is prepared pre-training data .*pass a model: a pre-training run"):
        hf.load_encoder(tmp_path / "data")
    (tmp_path / "run" / "checkpoints" / "step-00000003").mkdir(parents=True)
    told = re.escape(f"holds a run's checkpoints; pass the run ({tmp_path / 'run'}) or one checkpoint in it")
    with pytest.raises(FileNotFoundError, match=told):
        hf.load_encoder(tmp_path / "run" / "checkpoints")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hf.load_encoder(tmp_path / "nope" / "deeper" / "path")


def _umask() -> int:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_export_refuses_a_folder_that_holds_files(tmp_path, electra):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already holds files"):
        hf.export_discriminator(electra, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    hf.export_discriminator(electra, tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert modes["model.safetensors"] == modes["config.json"] == 0o666 & ~_umask()  # readable by others too
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_disentangled_embeddings_export_the_sum_and_import_back(tmp_path):
    cfg = dataclasses.replace(tiny(), disentangled_embeddings=True)
    model = perturb(Electra(cfg))
    assert model.embedding_delta.abs().sum() > 0  # perturbed away from its zero start
    hf.export_discriminator(model, tmp_path / "disc")
    hf.export_generator(model, tmp_path / "gen")
    disc = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "disc").eval()
    gen = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "gen").eval()
    want = model.embeddings.word.weight + model.embedding_delta
    torch.testing.assert_close(disc.electra.embeddings.word_embeddings.weight, want, rtol=0, atol=0)
    torch.testing.assert_close(
        gen.electra.embeddings.word_embeddings.weight, model.embeddings.word.weight, rtol=0, atol=0
    )
    ids, types, mask = batch(100)
    with torch.no_grad():
        _assert_real_close(
            model.discriminator_logits(ids, types, mask),
            disc(input_ids=ids, token_type_ids=types, attention_mask=mask).logits,
            mask,
        )
    back = hf.load_electra(tmp_path / "disc", tmp_path / "gen", disentangled_embeddings=True)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], value, rtol=0, atol=1e-7, msg=name)


def test_a_mistyped_folder_beside_real_ones_is_named_as_such(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def offline(*args, **kwargs):
        raise OSError("the hub is not reachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    (tmp_path / "models" / "disc").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"model folder models/dsic does not exist \(models has disc\)"):
        hf.resolve("models/dsic")
    with pytest.raises(
        FileNotFoundError,
        match="someone/model is not a folder here, and could not be fetched from the Hugging Face hub",
    ):
        hf.resolve("someone/model")


def test_an_unreachable_hub_is_known_at_once_and_only_the_local_cache_is_asked(tmp_path, monkeypatch):
    from electra import hub

    for k in (*hub.PROXIES, "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # a name that never resolves (RFC 2606)
    assert hub.unreachable() == "hub.invalid does not resolve here"
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub.unreachable() is None  # beyond a proxy the name may resolve: the clients are left to try
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.unreachable() == "HF_HUB_OFFLINE is set"
    huggingface_hub = pytest.importorskip("huggingface_hub")
    asked = []

    def cache_only(*args, **kwargs):
        asked.append(kwargs["local_files_only"])
        raise OSError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", cache_only)
    with pytest.raises(FileNotFoundError, match=r"\(not in the local hub cache, and the hub cannot be reached: HF_HUB"):
        hf.resolve("someone/model")
    assert asked == [True]
    from electra.corpus import CorpusError, hub_dataset

    pytest.importorskip("datasets")
    with pytest.raises(CorpusError, match="the Hugging Face hub cannot be reached \\(HF_HUB_OFFLINE is set\\)"):
        hub_dataset("wikitext", "wikitext-103-raw-v1")


def test_hub_datasets_are_asked_of_the_local_cache_only_where_the_hub_cannot_be_reached(tmp_path):
    pytest.importorskip("datasets")
    from electra import hub

    env = {k: v for k, v in os.environ.items() if k not in (*hub.PROXIES, "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env |= {"HF_ENDPOINT": "https://hub.invalid", "HF_HOME": str(tmp_path / "cache")}  # an empty cache
    args = [sys.executable, "-m", "electra", "finetune", "--model", "m", "--task", "sst2", "--data", "glue"]
    result = subprocess.run([*args, "--out", "o"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "could not load GLUE sst2 from glue (not in the local cache, and the hub cannot be reached: hub.invalid" in (
        result.stderr
    )
    assert "Retrying" not in result.stderr  # the hub client's retries, about 25 s of them


def test_a_generator_with_its_own_output_layer_is_refused_not_silently_tied(tmp_path):
    disc, gen = _random_hf_pair(tmp_path)
    untied = _hf_config(tiny(generator_fraction=0.25).generator, "generator")
    untied.tie_word_embeddings = False
    torch.manual_seed(3)
    own = transformers.ElectraForMaskedLM(untied)  # its output layer a matrix of its own, trained apart
    own.electra.load_state_dict(gen.electra.state_dict())
    own.save_pretrained(tmp_path / "untied")
    with pytest.raises(ValueError, match="output layer \\(generator_lm_head.weight\\) is its own, not tied"):
        hf.load_electra(tmp_path / "disc", tmp_path / "untied")
    assert hf.load_electra(tmp_path / "disc", tmp_path / "gen").import_notes == []  # tied: loads as before


@pytest.mark.parametrize(
    "field, value",
    [("position_embedding_type", "relative_key"), ("is_decoder", True), ("model_type", "bert")],
)
def test_configs_our_encoder_cannot_reproduce_are_refused(field, value):
    """A relative-position, causal (decoder) or non-ELECTRA config would load into our absolute,
    bidirectional ELECTRA encoder and give other outputs than transformers: refused by name."""
    written = hf.to_hf_config(tiny().discriminator, "discriminator")
    with pytest.raises(ValueError, match=f"{value!r}" if field != "model_type" else "describes a 'bert' model"):
        hf.from_hf_config({**written, field: value})


def test_a_sharded_safetensors_folder_loads_every_shard(tmp_path):
    """transformers writes model.safetensors.index.json and several shards for a large model."""
    cfg = tiny().discriminator
    theirs = perturb(
        transformers.ElectraForPreTraining(transformers.ElectraConfig(**hf.to_hf_config(cfg, "discriminator")))
    )
    theirs.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    ids, types, mask = batch(100)
    with torch.no_grad():
        want = theirs.electra(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
        got = hf.load_encoder(tmp_path / "sharded").eval()(ids, types, mask)
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], rtol=0, atol=1e-5)


class _Touch:
    """Unpickling this creates a file: what a pickle's code could do instead."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (Path(self.path),)


def test_a_pytorch_model_bin_runs_no_pickled_code(tmp_path):
    """pytorch_model.bin is a pickle: it is read with weights_only, so code in it is refused, never run."""
    folder = tmp_path / "m"
    hf.export_sequence_classifier(SequenceClassifier(tiny().discriminator, 2), folder, ["a", "b"])
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "ran"
    torch.save({"electra.x": torch.zeros(1), "payload": _Touch(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin cannot be read as weights"):
        hf.load_sequence_classifier(folder)
    assert not marker.exists()


def test_export_refuses_labels_that_do_not_match_the_head(tmp_path):
    """id2label with more or fewer names than outputs would make transformers' pipeline name the wrong label."""
    model = SequenceClassifier(tiny().discriminator, 3)
    for labels in (["a", "b"], ["a", "b", "c", "d"]):
        with pytest.raises(ValueError, match=f"id2label has {len(labels)} labels but the model predicts 3"):
            hf.export_sequence_classifier(model, tmp_path / "clf", labels)
    assert not (tmp_path / "clf").exists()


@pytest.mark.parametrize("kind", ["discriminator", "sequence", "token"])
def test_training_drops_out_where_and_at_the_rates_transformers_does(tmp_path, monkeypatch, kind):
    """With every dropout made a fixed scaling by 1 + 3p (hidden 0.1, attention 0.2, so each
    place shows which rate it took), our training-mode outputs equal transformers' in training
    mode: the same places (the embeddings after their LayerNorm, the attention probabilities,
    each sublayer's output before its residual sum, the classifier heads) at the same rates."""
    import electra.model as model_mod

    def scale(x, p=0.5, training=True, inplace=False):
        return x * (1 + 3 * p) if training and p > 0 else x

    cfg = dataclasses.replace(tiny().discriminator, dropout=0.1, attention_dropout=0.2)
    if kind == "discriminator":
        model = perturb(Electra(dataclasses.replace(tiny(), discriminator=cfg, generator=cfg)))
        hf.export_discriminator(model, tmp_path / "m")
        ours, theirs = model.discriminator_logits, transformers.ElectraForPreTraining
    elif kind == "sequence":
        model = ours = perturb(SequenceClassifier(cfg, 3))
        hf.export_sequence_classifier(model, tmp_path / "m", ["a", "b", "c"])
        theirs = transformers.ElectraForSequenceClassification
    else:
        model = ours = perturb(TokenClassifier(cfg, 3))
        hf.export_token_classifier(model, tmp_path / "m", ["O", "B-X", "I-X"])
        theirs = transformers.ElectraForTokenClassification
    theirs = theirs.from_pretrained(tmp_path / "m", attn_implementation="eager")  # its dropout: F.dropout
    monkeypatch.setattr(model_mod, "dropout", scale)
    monkeypatch.setattr(torch.nn.functional, "dropout", scale)  # transformers' nn.Dropout and eager attention
    model.train()
    theirs.train()
    ids, types, mask = batch(100)
    with torch.no_grad():
        got, want = ours(ids, types, mask), theirs(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
    if kind == "sequence":
        torch.testing.assert_close(got, want, **TOL)
    else:
        _assert_real_close(got, want, mask)
    with torch.no_grad():  # and not the identity: the scaling reached both
        assert not torch.allclose(got, theirs.eval()(input_ids=ids, token_type_ids=types, attention_mask=mask).logits)


def test_a_disentangled_main_networks_masked_lm_predicts_as_exported(tmp_path):
    """Replace MLM with disentangled embeddings: the main network's LM head is tied to the words
    it sees, sg(shared) + delta, which is what its ElectraForMaskedLM export holds."""
    model = perturb(Electra(dataclasses.replace(tiny(), disentangled_embeddings=True, discriminator_lm_head=True)))
    hf.export_discriminator_lm(model, tmp_path / "lm")
    theirs = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "lm").eval()
    ids, types, mask = batch(100)
    with torch.no_grad():
        ours = model.discriminator_lm_logits(model.discriminator_hidden(ids, types, mask))
        _assert_real_close(ours, theirs(input_ids=ids, token_type_ids=types, attention_mask=mask).logits, mask)
