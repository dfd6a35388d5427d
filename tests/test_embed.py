"""`electra embed`: the vectors transformers' ElectraModel gives, pooled, in input order."""

import shutil

import numpy as np
import pytest
import torch

from electra import hf
from electra.checkpoint import save_checkpoint, step_dir
from electra.config import tiny
from electra.embed import Embedder
from electra.model import Electra, SequenceClassifier
from tests.conftest import perturb

TEXTS = [
    "the movie was great",
    "a terrible , boring film with a plot that goes nowhere and actors who do not care",
    "fine",
    "i loved the acting and the music , and the story kept me guessing until the end",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer, tokenizer_dir):
    root = tmp_path_factory.mktemp("embed")
    torch.manual_seed(0)
    model = perturb(Electra(tiny(vocab_size=tokenizer.get_vocab_size())))
    hf.export_discriminator(model, root / "disc", tokenizer_dir=tokenizer_dir)
    clf = SequenceClassifier(model.cfg.discriminator, 2, encoder=model.encoder("discriminator"))
    hf.export_sequence_classifier(clf, root / "clf", ["neg", "pos"], tokenizer_dir=tokenizer_dir)
    save_checkpoint(step_dir(root / "run", 5), model, tokenizer_dir=tokenizer_dir)
    return root


def _theirs(folder, texts, pooling):
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    out = []
    for text in texts:  # one at a time: no padding at all; a (text, pair) tuple is read as a pair
        enc = tok(*(text if isinstance(text, tuple) else (text,)), return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0]
        out.append(h[0] if pooling == "cls" else h.mean(0))
    return torch.stack(out).numpy()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_vectors_equal_transformers_pooled_hidden_states(folders, pooling):
    ours, cut = Embedder(folders / "disc", device="cpu", pooling=pooling)([(t, None) for t in TEXTS], batch_size=3)
    assert ours.shape == (4, 32) and ours.dtype == np.float32 and cut == 0
    np.testing.assert_allclose(ours, _theirs(folders / "disc", TEXTS, pooling), atol=1e-5)
    # a fine-tuned classifier's encoder, or a run's (its newest checkpoint's discriminator), is
    # the same encoder: the same vectors
    for folder in (folders / "clf", folders / "run", folders / "run" / "checkpoints" / "step-00000005"):
        again, _ = Embedder(folder, device="cpu", pooling=pooling)([(t, None) for t in TEXTS])
        np.testing.assert_allclose(again, ours, atol=1e-6, err_msg=str(folder))


def test_the_command_writes_unit_vectors_in_input_order_and_counts_cut_texts(folders, tmp_path, cli):
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n")
    cmd = ["embed", "--model", folders / "disc", "--input", tmp_path / "in.txt"]
    out = tmp_path / "vectors.npy"
    result = cli(*cmd, "--output", out, "--normalize", "--max-length", "8")
    assert result.returncode == 0, result.stderr
    assert "4 vectors of 32" in result.stdout and "2 texts cut at 8 tokens" in result.stderr
    vectors = np.load(out)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    short, _ = Embedder(folders / "disc", device="cpu", normalize=True, max_length=8)([(t, None) for t in TEXTS])
    np.testing.assert_allclose(vectors, short, atol=1e-6)  # the file's rows are the texts, in order
    one = cli("embed", "--model", folders / "disc", "--output", out, input="a film\n")
    assert one.returncode == 0 and f"wrote {out}: 1 vector of 32" in one.stdout
    refused = cli(*cmd, "--output", tmp_path / "vectors.txt")
    assert refused.returncode == 2 and "name the .npy file to write" in refused.stderr
    refused = cli(*cmd, "--output", tmp_path / "no" / "such" / "v.npy")
    assert (
        refused.returncode == 2 and "the folder " + str(tmp_path / "no" / "such") + " does not exist" in refused.stderr
    )
    for line, message in [
        ('{"text": null}', "in.jsonl:2: 'text' is None, not a text string"),
        ("[1, 2]", "is a JSON list"),
        ('{"text": "a \\ud800 b"}', "in.jsonl:2: 'text' holds a lone surrogate ('\\ud800'), not Unicode text"),
    ]:
        (tmp_path / "in.jsonl").write_text('{"text": "fine"}\n' + line + "\n")  # never embedded as "None"
        refused = cli("embed", "--model", folders / "disc", "--input", tmp_path / "in.jsonl", "--output", out)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    with pytest.raises(ValueError, match="pooling must be one of mean, cls"):
        Embedder(folders / "disc", device="cpu", pooling="max")


def test_a_tokenizer_larger_than_the_models_vocabulary_is_refused(tmp_path, tokenizer, tokenizer_dir):
    small = Electra(tiny(vocab_size=50))
    overrun = f"has {tokenizer.get_vocab_size()} tokens but the model's embeddings 50: its ids would overrun"
    with pytest.raises(ValueError, match=overrun):
        hf.export_discriminator(small, tmp_path / "disc", tokenizer_dir=tokenizer_dir)
    hf.export_discriminator(small, tmp_path / "disc")
    for f in tokenizer_dir.iterdir():  # a tokenizer put beside the weights by hand
        shutil.copy(f, tmp_path / "disc" / f.name)
    with pytest.raises(ValueError, match=overrun):
        Embedder(tmp_path / "disc", device="cpu")


def test_a_model_of_more_positions_reads_longer_texts_by_default(tmp_path, tokenizer, tokenizer_dir):
    """Without --max-length, embed and predict read as many tokens as the model has positions."""
    import dataclasses

    from electra.predict import predict

    cfg = dataclasses.replace(tiny(vocab_size=tokenizer.get_vocab_size()).discriminator, max_positions=256)
    torch.manual_seed(0)
    clf = SequenceClassifier(cfg, 2)
    hf.export_sequence_classifier(clf, tmp_path / "clf", ["neg", "pos"], tokenizer_dir=tokenizer_dir)
    long = " ".join(["the movie was great"] * 33)  # past 128 tokens, within 256
    assert 128 < len(tokenizer.encode(long).ids) <= 256
    vectors, cut = Embedder(tmp_path / "clf", device="cpu")([(long, None)])
    assert cut == 0
    np.testing.assert_allclose(vectors, _theirs(tmp_path / "clf", [long], "mean"), atol=1e-5)
    assert predict(tmp_path / "clf", [(long, None)], device="cpu")[1] == 0  # nothing truncated


def test_max_length_outside_3_to_the_models_positions_is_refused(tmp_path, tokenizer, tokenizer_dir):
    """Fewer than 3 tokens hold no text between [CLS] and [SEP]; more than the model's positions overrun them."""
    torch.manual_seed(0)
    hf.export_discriminator(
        Electra(tiny(vocab_size=tokenizer.get_vocab_size())), tmp_path / "d", tokenizer_dir=tokenizer_dir
    )
    for bad in (2, 129):
        with pytest.raises(
            ValueError, match="max-length must be 3 \\(\\[CLS\\], a token, \\[SEP\\]\\) to the model's 128"
        ):
            Embedder(tmp_path / "d", max_length=bad, device="cpu")
    assert Embedder(tmp_path / "d", max_length=3, device="cpu")([("a long film about the music", None)])[1] == 1


def test_the_commands_flags_reach_the_embedder(folders, tmp_path, cli, monkeypatch):
    """--pooling, --format and --text-field change the vectors written; --batch-size, --device and
    --precision reach the Embedder (seen through a subclass: they change no vector here)."""
    import json

    import electra.embed

    seen = {}

    class Spy(Embedder):
        def __init__(self, *args):
            seen["init"] = args
            super().__init__(*args)

        def stream(self, texts, batch_size):
            seen["batch_size"] = batch_size
            return super().stream(texts, batch_size)

    monkeypatch.setattr(electra.embed, "Embedder", Spy)
    (tmp_path / "in.data").write_text("".join(json.dumps({"body": t, "text": "fine"}) + "\n" for t in TEXTS))
    out = tmp_path / "v.npy"
    cmd = ["embed", "--model", folders / "disc", "--input", tmp_path / "in.data", "--output", out]
    result = cli(*cmd, "--format", "jsonl", "--text-field", "body", "--pooling", "cls", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "(cls pooling)" in result.stdout and seen["init"][2:] == ("cpu", "cls", False, "fp32")
    theirs, _ = Embedder(folders / "disc", device="cpu", pooling="cls")([(t, None) for t in TEXTS])
    np.testing.assert_allclose(np.load(out), theirs, atol=1e-6)
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n")
    cmd = ["embed", "--model", folders / "disc", "--input", tmp_path / "in.txt", "--output", out]
    assert cli(*cmd, "--device", "cpu").returncode == 0  # the defaults: mean pooling, fp32, 64 texts a run
    assert seen == {"init": (str(folders / "disc"), None, "cpu", "mean", False, "fp32"), "batch_size": 64}
    np.testing.assert_allclose(np.load(out), Embedder(folders / "disc", device="cpu")([(t, None) for t in TEXTS])[0])
    assert cli(*cmd, "--batch-size", "3", "--precision", "bf16", "--max-length", "16").returncode == 0
    assert seen == {"init": (str(folders / "disc"), 16, "auto", "mean", False, "bf16"), "batch_size": 3}


def test_pairs_read_as_transformers_reads_them_one_text_a_batch(folders):
    """A (text, pair) reads as [CLS] text [SEP] pair [SEP], the pair's tokens of segment 1."""
    pairs = [(TEXTS[0], TEXTS[2]), (TEXTS[2], TEXTS[3])]
    ours, cut = Embedder(folders / "disc", device="cpu")(pairs, batch_size=1)
    assert cut == 0
    np.testing.assert_allclose(ours, _theirs(folders / "disc", pairs, "mean"), atol=1e-5)


def test_no_texts_give_no_rows_of_the_models_width_and_counts_add_up_over_chunks(folders):
    embedder = Embedder(folders / "disc", device="cpu", max_length=8)
    vectors, cut = embedder([])
    assert vectors.shape == (0, 32) and vectors.dtype == np.float32 and cut == 0
    texts = [(TEXTS[1], None), (TEXTS[3], None)] + [("fine", None)] * 8191  # past one chunk of 8192 texts
    vectors, cut = embedder(texts, batch_size=1024)
    assert vectors.shape == (8193, 32) and cut == 2  # both cut texts are in the first chunk
    np.testing.assert_allclose(vectors[[0, 1, -1]], embedder(texts[:2] + texts[-1:])[0], atol=1e-6)
    with pytest.raises(ValueError, match="batch size and chunk size must be at least 1, got 64 and 0"):
        next(embedder.stream(texts, chunk_size=0))


def test_bf16_vectors_are_computed_in_bf16_and_come_back_as_float32(folders):
    texts = [(t, None) for t in TEXTS]
    full, _ = Embedder(folders / "disc", device="cpu")(texts)
    half, _ = Embedder(folders / "disc", device="cpu", precision="bf16")(texts)
    assert half.dtype == np.float32 and not np.array_equal(half, full)
    np.testing.assert_allclose(half, full, atol=0.1)
