"""`electra prepare`: packing recipe, formats, determinism, atomic output and bad input."""

import bz2
import codecs
import gzip
import json
import lzma
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from electra import corpus
from electra.prepare import PrepareConfig, RowPacker, merge, prepare, read_manifest, too_long_words, verify
from electra.tokenizer import SPECIAL_TOKENS, from_vocab, is_lowercase, load_tokenizer, save_tokenizer, train_wordpiece
from tests.conftest import SENTENCES, SHARED_DATA, synthetic_corpus

CLS, SEP = 2, 3

DOCS = [
    "The quick brown fox jumps over the lazy dog. It was not amused! Why would it be?\n"
    "The dog slept on, dreaming of bones.",
    "A second document starts here. It talks about rivers and mountains. The river runs to the sea.",
    "Third document: short.",
]


def _write_txt(path, docs=DOCS):
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def _rows(folder, split="train"):
    m = read_manifest(folder)
    out = []
    for shard in m["splits"][split]["shards"]:
        ids = np.load(folder / shard["files"]["ids"]["path"], mmap_mode="r")
        types = np.load(folder / shard["files"]["types"]["path"], mmap_mode="r")
        lengths = np.load(folder / shard["files"]["lengths"]["path"], mmap_mode="r")
        for i in range(len(lengths)):
            n = int(lengths[i])
            out.append((ids[i, :n].tolist(), types[i, :n].tolist(), ids[i, n:].tolist()))
    return out


def _cfg(**kw):
    return PrepareConfig(**{"seq_len": 32, "vocab_size": 200, "validation_fraction": 0.0, **kw})


# ---------------------------------------------------------------------------------------
# The packing recipe, on hand-made ids
# ---------------------------------------------------------------------------------------


def _packer(seq_len=16, one=0.0, short=0.0, seed=0):
    return RowPacker(seq_len, CLS, SEP, random.Random(seed), one_segment_prob=one, short_target_prob=short)


def test_two_segments_split_at_sentence_boundaries():
    p = _packer(seq_len=16)
    rows = []
    for s in ([10, 11, 12], [20, 21, 22, 23], [30, 31], [40, 41, 42, 43]):  # 13 tokens >= target 16? no
        rows += p.add(s)
    assert rows == []  # 13 tokens < 16: the row is still filling
    rows += p.add([50, 51, 52])  # 16 tokens: complete
    assert len(rows) == 1
    ids, types = rows[0]
    # first-segment target (16 - 3) // 2 = 6: [10 11 12] fits, [20..23] would overflow A and
    # goes to A or B by a coin flip; everything after B has started goes to B.
    assert ids[0] == CLS and ids[-1] == SEP and ids.count(SEP) == 2
    sep = ids.index(SEP)
    assert types == [0] * (sep + 1) + [1] * (len(ids) - sep - 1)
    assert len(ids) <= 16
    assert ids[1:4] == [10, 11, 12]


def test_one_segment_rows_and_document_ends():
    p = _packer(seq_len=16, one=1.0)
    rows = p.add([10, 11, 12]) + p.add([20, 21])
    assert rows == []
    rows = p.end_document()
    assert rows == [([CLS, 10, 11, 12, 20, 21, SEP], [0] * 7)]
    assert p.end_document() == []  # nothing carries over into the next document


def test_sentences_longer_than_a_row_are_cut_not_dropped():
    p = _packer(seq_len=10, one=1.0)
    rows = p.add(list(range(100, 130))) + p.end_document()
    body = [t for ids, _ in rows for t in ids if t not in (CLS, SEP)]
    assert body == list(range(100, 130))
    assert all(len(ids) <= 10 for ids, _ in rows)
    assert p.truncated == 0


def test_the_first_segment_aims_at_half_a_row_and_cut_tokens_are_counted():
    """Segment A's target is (target - 3) // 2, Google's: 6 tokens of a 16-token row. A 5-token
    sentence leaves 1: the next sentence, 2 tokens, overflows A and takes A or B by a coin flip."""
    second_in_a = []
    for seed in range(20):
        p = _packer(seq_len=16, seed=seed)
        (ids, _), *_ = p.add([10] * 5) + p.add([20] * 2) + p.add([30] * 9)
        second_in_a.append(ids[6] == 20)  # [CLS], 5 tokens, then the second sentence (else [SEP])
    assert 0 < sum(second_in_a) < 20
    p = _packer(seq_len=16, one=1.0)
    rows = p.add(list(range(10, 20))) + p.add(list(range(20, 32)))  # 22 tokens in one segment of at most 14
    assert rows == [([CLS, *range(10, 24), SEP], [0] * 16)]
    assert p.truncated == 8


def test_recipe_frequencies_over_many_rows():
    p = _packer(seq_len=64, one=0.1, short=0.05, seed=1)
    rng = random.Random(0)
    rows = []
    for _ in range(4000):
        rows += p.add([rng.randrange(10, 100) for _ in range(rng.randint(3, 20))])
    single = sum(SEP not in ids[:-1] for ids, _ in rows) / len(rows)
    short = sum(len(ids) < 40 for ids, _ in rows) / len(rows)
    assert 0.08 < single < 0.12  # paper: 10% one segment
    assert 0.02 < short < 0.08  # paper: 5% random shorter target
    assert all(len(ids) <= 64 and ids[0] == CLS and ids[-1] == SEP for ids, _ in rows)


# ---------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------


def test_prepare_txt_round_trips_text_and_writes_a_complete_manifest(tmp_path):
    result = prepare([_write_txt(tmp_path / "c.txt")], tmp_path / "out", _cfg(seq_len=128), quiet=True)
    out = tmp_path / "out"
    m = verify(out)
    assert m["counts"]["documents"] == 3 and m["counts"]["files"] == 1
    assert m["seq_len"] == 128 and m["ids_dtype"] == "uint16"
    assert m["counts"]["tokens_truncated"] == 0  # every document fits in one row
    assert m["splits"]["valid"]["rows"] == 0
    tok = load_tokenizer(out)
    rows = _rows(out)
    assert len(rows) == m["splits"]["train"]["rows"] > 0
    text = " ".join(tok.decode(ids) for ids, _, _ in rows)
    for word in ("quick", "fox", "amused", "rivers", "third"):
        assert word in text
    for ids, types, padding in rows:
        assert ids[0] == m["special_tokens"]["cls"] and ids[-1] == m["special_tokens"]["sep"]
        assert set(padding) <= {m["special_tokens"]["pad"]}
        assert types == sorted(types)
    # no row mixes documents: the third document is alone in its row
    third = [tok.decode(ids) for ids, _, _ in rows if "third" in tok.decode(ids)]
    assert third == [tok.decode(tok.encode("Third document: short.").ids)]
    assert result.tokens_encoded == m["counts"]["tokens_encoded"]


def test_prepared_tokenizer_loads_in_transformers_and_encodes_like_ours(tmp_path):
    transformers = pytest.importorskip("transformers")
    prepare([_write_txt(tmp_path / "c.txt")], tmp_path / "out", _cfg(), quiet=True)
    ours = load_tokenizer(tmp_path / "out")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    for text in DOCS:
        assert theirs(text)["input_ids"] == ours.encode(text).ids


def test_special_tokens_written_in_the_corpus_are_plain_text(tmp_path):
    """As in Google's pipeline, "[SEP]" in a book is text; the saved tokenizer, like transformers,
    reads it as the separator when fine-tuning or predicting."""
    docs = ["Write [MASK] here and [SEP] there.", "A plain [CLS] document with [PAD] in it."]
    prepare([_write_txt(tmp_path / "c.txt", docs)], tmp_path / "out", _cfg(), quiet=True)
    m = read_manifest(tmp_path / "out")
    special = m["special_tokens"]
    for ids, types, _ in _rows(tmp_path / "out"):
        assert ids.count(special["sep"]) == 1 + (types[-1] == 1) and ids.count(special["cls"]) == 1
        assert special["mask"] not in ids and special["pad"] not in ids
    tok = load_tokenizer(tmp_path / "out")
    assert tok.encode("a [MASK] b", add_special_tokens=False).ids[1] == special["mask"]


def test_same_input_config_and_seed_give_byte_identical_output(tmp_path):
    src = _write_txt(tmp_path / "c.txt", DOCS * 30)
    cfg = _cfg(validation_fraction=0.2, rows_per_shard=7)
    prepare([src], tmp_path / "a", cfg, quiet=True)
    prepare([src], tmp_path / "b", cfg, quiet=True)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(files) > 10 and files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    prepare([src], tmp_path / "c", _cfg(validation_fraction=0.2, rows_per_shard=7, seed=1), quiet=True)
    assert (tmp_path / "c" / "train-00000.ids.npy").read_bytes() != (
        tmp_path / "a" / "train-00000.ids.npy"
    ).read_bytes()


def _records(texts):
    return [{"id": i, "text": t} for i, t in enumerate(texts)]


def test_every_format_and_compression_reads_the_same_documents(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    zstd = pytest.importorskip("zstandard")
    jsonl = "\n".join(json.dumps(r) for r in _records(DOCS)) + "\n"
    files = {
        "a.jsonl": jsonl.encode(),
        "b.json": json.dumps(_records(DOCS)).encode(),
        "c.txt.gz": gzip.compress("\n\n".join(DOCS).encode()),
        "d.jsonl.bz2": bz2.compress(jsonl.encode()),
        "e.jsonl.xz": lzma.compress(jsonl.encode()),
        "f.jsonl.zst": zstd.ZstdCompressor().compress(jsonl.encode()),
    }
    import csv
    import io

    for name, delim in (("g.csv", ","), ("h.tsv", "\t")):
        buf = io.StringIO()
        w = csv.writer(buf, delimiter=delim, lineterminator="\n")
        w.writerow(["id", "text"])
        for r in _records(DOCS):
            w.writerow([r["id"], r["text"].replace("\n", " ") if delim == "\t" else r["text"]])
        files[name] = buf.getvalue().encode()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    pq.write_table(pa.table({"text": DOCS}), tmp_path / "i.parquet")
    expected = list(corpus.stream([tmp_path / "a.jsonl"], corpus.ReadStats()))
    assert expected.count(None) == 3
    for name in [*files, "i.parquet"]:
        got = list(corpus.stream([tmp_path / name], corpus.ReadStats()))
        assert got == expected, name
    # a folder takes every supported file in it
    stats = corpus.ReadStats()
    assert list(corpus.stream(corpus.expand([tmp_path]), stats)).count(None) == 3 * 9
    assert stats.files == 9
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "numbers.parquet")
    with pytest.raises(corpus.CorpusError, match="numbers.parquet: column 'text' holds int values, not text"):
        list(corpus.stream([tmp_path / "numbers.parquet"], corpus.ReadStats()))


def test_saved_hugging_face_dataset_is_a_corpus(tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"content": DOCS}).save_to_disk(str(tmp_path / "ds"))
    prepare([tmp_path / "ds"], tmp_path / "out", _cfg(text_field="content"), quiet=True)
    assert read_manifest(tmp_path / "out")["counts"]["documents"] == 3
    (tmp_path / "mixed").mkdir()  # a folder with a saved dataset and a text file: two sources
    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(tmp_path / "mixed" / "ds"))
    _write_txt(tmp_path / "mixed" / "c.txt")
    assert corpus.expand([tmp_path / "mixed"]) == [tmp_path / "mixed" / "c.txt", tmp_path / "mixed" / "ds"]
    assert corpus.expand([tmp_path / "mixed"], "txt") == [tmp_path / "mixed" / "c.txt"]  # --format txt: files only
    # an in-memory dataset object works through the API too
    ds = datasets.Dataset.from_dict({"text": DOCS})
    source = {"name": "org/books", "config": None, "split": "train"}  # what a hub dataset is recorded as
    prepare([], tmp_path / "out2", _cfg(), quiet=True, dataset=ds, dataset_source=source)
    assert read_manifest(tmp_path / "out2")["splits"]["train"]["rows"] > 0
    assert read_manifest(tmp_path / "out2")["dataset"] == source and read_manifest(tmp_path / "out")["dataset"] is None
    numbers = datasets.Dataset.from_dict({"text": [1, 2]})
    with pytest.raises(corpus.CorpusError, match="column 'text' holds int values, not text; pass --text-field"):
        prepare([], tmp_path / "out4", _cfg(), quiet=True, dataset=numbers)
    assert not (tmp_path / "out4").exists()
    two = datasets.DatasetDict({"a": ds, "b": ds})
    two.save_to_disk(str(tmp_path / "two"))
    with pytest.raises(corpus.CorpusError, match="holds the splits a, b and no 'train'"):
        prepare([tmp_path / "two"], tmp_path / "out3", _cfg(), quiet=True)
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "valid-only"))
    prepare([tmp_path / "valid-only"], tmp_path / "out5", _cfg(), quiet=True)
    assert capsys.readouterr().err.count("no 'train' split; reading its only split, 'validation'") == 1  # 3 reads
    prepare([tmp_path / "valid-only"], tmp_path / "out6", _cfg(), quiet=True)  # and once again for the next prepare
    assert capsys.readouterr().err.count("no 'train' split; reading its only split, 'validation'") == 1
    assert read_manifest(tmp_path / "out5")["counts"]["documents"] == 3


def test_reading_options_no_source_uses_are_refused(tmp_path):
    _write_txt(tmp_path / "c.txt")
    (tmp_path / "r.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    with pytest.raises(ValueError, match="--text-field names a field of .* every source here is plain text"):
        prepare([tmp_path / "c.txt"], tmp_path / "o1", _cfg(text_field="body"), quiet=True)
    with pytest.raises(ValueError, match="--doc-per-file makes each .txt file one document; .* drop it"):
        prepare([tmp_path / "r.jsonl"], tmp_path / "o2", _cfg(doc_per_file=True), quiet=True)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    # each option used by some source: accepted
    prepare([tmp_path / "c.txt", tmp_path / "r.jsonl"], tmp_path / "o3", _cfg(doc_per_file=True), quiet=True)
    assert read_manifest(tmp_path / "o3")["counts"]["documents"] == 1 + 3


def test_normalisation_bom_crlf_controls_and_invalid_utf8_are_handled_and_counted(tmp_path):
    raw = b"\xef\xbb\xbfHello world.\r\nSecond line\x07 here.\r\n\r\nBad \xff\xfe bytes.\r\n"
    (tmp_path / "c.txt").write_bytes(raw)
    stats = corpus.ReadStats()
    items = list(corpus.stream([tmp_path / "c.txt"], stats))
    assert items == ["Hello world.", "Second line here.", None, "Bad \ufffd\ufffd bytes.", None]
    assert stats.invalid_utf8 == 2
    (tmp_path / "b.txt").write_bytes(b"\x00\x01" * 50)  # binary: reported, not counted as read
    stats = corpus.ReadStats()
    assert list(corpus.stream([tmp_path / "b.txt", tmp_path / "c.txt"], stats)) == items
    assert (stats.files, stats.bytes, list(stats.skipped)) == (1, len(raw), [str(tmp_path / "b.txt")])
    (tmp_path / "p.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"pixels " * 500)  # one NUL run
    stats = corpus.ReadStats()
    assert list(corpus.stream([tmp_path / "p.txt"], stats)) == [] and list(stats.skipped) == [str(tmp_path / "p.txt")]
    (tmp_path / "s.jsonl").write_text('{"text": "Lone \\ud800 escape."}\n')  # JSON that decodes to no Unicode text
    stats = corpus.ReadStats()
    assert list(corpus.stream([tmp_path / "s.jsonl"], stats)) == ["Lone \ufffd escape.", None]
    assert stats.invalid_utf8 == 1


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_files_with_a_byte_order_mark_are_read_as_text(tmp_path, encoding):
    text = "Café au lait.\r\nSecond sentence here.\n\nNext doc – ünïcode."
    bom = {"utf-16": b"", "utf-16-be": codecs.BOM_UTF16_BE, "utf-32": b""}[encoding]
    raw = bom + text.encode(encoding)  # "utf-16"/"utf-32" write their own BOM
    (tmp_path / "w.txt").write_bytes(raw)
    with gzip.open(tmp_path / "w.txt.gz", "wb") as f:
        f.write(raw)
    for path in (tmp_path / "w.txt", tmp_path / "w.txt.gz"):
        stats = corpus.ReadStats()
        items = list(corpus.stream([path], stats))
        assert items == ["Café au lait.", "Second sentence here.", None, "Next doc – ünïcode.", None]
        assert (stats.files, stats.skipped, stats.invalid_utf8) == (1, {}, 0)


CHINESE = "中文的句子很长。\n这是另一个句子！\n第 3 行。\n" * 9  # 一 (U+4E00) puts a NUL on the other side


@pytest.mark.parametrize("encoding", ["UTF-16LE", "UTF-16BE", "UTF-32LE", "UTF-32BE"])
@pytest.mark.parametrize("text", ["Plain ASCII text.", CHINESE])
def test_utf16_or_32_without_a_byte_order_mark_is_skipped_with_the_conversion_to_run(tmp_path, encoding, text):
    (tmp_path / "w.txt").write_bytes(text.encode(encoding.lower()))
    stats = corpus.ReadStats()
    assert list(corpus.stream([tmp_path / "w.txt"], stats)) == []
    assert stats.skipped[str(tmp_path / "w.txt")].endswith(f"(iconv -f {encoding} -t UTF-8)")


def test_documents_of_one_enormous_line_are_cut_and_kept(tmp_path):
    words = [f"w{i % 97}" for i in range(400_000)]  # ~1.9 MB, no sentence punctuation, no newline
    (tmp_path / "big.txt").write_text(" ".join(words), encoding="utf-8")
    items = list(corpus.stream([tmp_path / "big.txt"], corpus.ReadStats()))
    assert items[-1] is None and items.count(None) == 1
    assert max(len(s) for s in items[:-1]) <= corpus.MAX_SENTENCE_CHARS
    assert " ".join(items[:-1]).split() == words


def test_parts_prepared_apart_merge_into_one_folder(tmp_path, prep):
    src = _write_txt(tmp_path / "c.txt", DOCS * 10)
    prepare([src], tmp_path / "full", _cfg(), quiet=True)
    tok = tmp_path / "full"
    with pytest.raises(ValueError, match="needs one shared tokenizer"):
        prepare([src], tmp_path / "p0", _cfg(num_parts=2, part_index=0), quiet=True)
    for i in range(2):
        prepare([src], tmp_path / f"p{i}", _cfg(num_parts=2, part_index=i), tokenizer=tok, quiet=True)
    parts = [read_manifest(tmp_path / f"p{i}") for i in range(2)]
    assert [p["counts"]["documents"] for p in parts] == [15, 15]
    merged = merge([tmp_path / "p0", tmp_path / "p1"], tmp_path / "merged")
    assert merged["splits"]["train"]["rows"] == sum(p["splits"]["train"]["rows"] for p in parts)
    assert merged["splits"]["train"]["tokens"] == sum(p["splits"]["train"]["tokens"] for p in parts) > 0
    assert merged["counts"]["documents"] == 30
    full = read_manifest(tmp_path / "full")["counts"]  # each part read the whole file once: so did the merge
    assert (
        (merged["counts"]["bytes"], merged["counts"]["files"])
        == (full["bytes"], full["files"])
        == (src.stat().st_size, 1)
    )
    verify(tmp_path / "merged")
    for setting, value in (("validation_fraction", 0.2), ("doc_per_file", True)):  # the whole file: part 0's
        cfg = _cfg(num_parts=2, part_index=0, **{setting: value})
        prepare([src], tmp_path / setting, cfg, tokenizer=tok, quiet=True)
        with pytest.raises(ValueError, match=f"{setting} was prepared with {setting}={value}, but .*p1 with"):
            merge([tmp_path / "p1", tmp_path / setting], tmp_path / "bad")
    older = json.loads((tmp_path / "p1" / "manifest.json").read_text())
    del older["config"]["strip_accents"]  # a part prepared before manifests recorded it: BERT's, as it lowercases
    (tmp_path / "p1" / "manifest.json").write_text(json.dumps(older))
    assert merge([tmp_path / "p0", tmp_path / "p1"], tmp_path / "merged-older")["counts"]["documents"] == 30
    older["dataset"] = {"name": "org/other", "config": None, "split": "train"}  # parts of two hub datasets
    (tmp_path / "p1" / "manifest.json").write_text(json.dumps(older))
    with pytest.raises(ValueError, match="p1 was prepared with dataset=.*org/other.*but .*p0 with None"):
        merge([tmp_path / "p0", tmp_path / "p1"], tmp_path / "bad")
    with pytest.raises(corpus.CorpusError, match="part 40 of 41 got no documents .*fewer than 41 documents; use fewer"):
        prepare([src], tmp_path / "p40", _cfg(num_parts=41, part_index=40), tokenizer=tok, quiet=True)
    other = tmp_path / "other"
    prepare([src], other, _cfg(seq_len=64), tokenizer=tok, quiet=True)
    with pytest.raises(ValueError, match="seq_len=64"):
        merge([tmp_path / "p0", other], tmp_path / "bad")
    prepare([src], tmp_path / "seeded", _cfg(num_parts=2, part_index=1, seed=7), tokenizer=tok, quiet=True)
    with pytest.raises(ValueError, match="seeded was prepared with seed=7, but .*p0 with 0"):
        merge([tmp_path / "p0", tmp_path / "seeded"], tmp_path / "bad")
    more = _write_txt(tmp_path / "more.txt", DOCS * 11)  # another corpus: its documents were dealt otherwise
    prepare([more], tmp_path / "grown", _cfg(num_parts=2, part_index=1), tokenizer=tok, quiet=True)
    with pytest.raises(ValueError, match=f"grown read {more.stat().st_size:,} bytes in 1 file"):
        merge([tmp_path / "p0", tmp_path / "grown"], tmp_path / "bad")
    with pytest.raises(ValueError, match="are both part 0; its rows would be merged twice"):
        merge([tmp_path / "p0", tmp_path / "p0"], tmp_path / "bad")
    with pytest.raises(ValueError, match="full is part 0 of 1, but .*p0 is part of 2"):
        merge([tmp_path / "p0", tmp_path / "full"], tmp_path / "bad")
    with pytest.raises(ValueError, match="merged is already a merged folder"):
        merge([tmp_path / "merged"], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    r = prep("--merge", str(tmp_path / "p0"), "--corpus", str(src), "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "--merge combines prepared parts" in r.stderr
    r = prep("--merge", str(tmp_path / "p0"), "--seq-len", "32", "--seed", "5", "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "--seq-len, --seed belong to each part's own run: drop them" in r.stderr  # not ignored
    r = prep("--corpus", str(src), "--dataset-split", "test", "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "--dataset-split chooses what --dataset reads" in r.stderr
    r = prep("--merge", str(tmp_path / "p1"), "--out", str(tmp_path / "half"))
    assert r.returncode == 0 and "warning: part 0 of 2 was not merged" in r.stderr


def test_an_output_inside_the_corpus_folder_is_refused(tmp_path):
    (tmp_path / "books").mkdir()
    _write_txt(tmp_path / "books" / "c.txt")
    with pytest.raises(ValueError, match="is inside the corpus folder .*books: preparing that folder again would read"):
        prepare([tmp_path / "books"], tmp_path / "books" / "data", _cfg(), quiet=True)
    assert list((tmp_path / "books").iterdir()) == [tmp_path / "books" / "c.txt"]
    prepare([tmp_path / "books"], tmp_path / "data", _cfg(), quiet=True)  # beside it is fine


def test_a_corrupt_shard_fails_verification(tmp_path):
    prepare([_write_txt(tmp_path / "c.txt")], tmp_path / "out", _cfg(), quiet=True)
    shard = tmp_path / "out" / "train-00000.ids.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its sha256 in manifest.json; .*; prepare the data again"):
        verify(tmp_path / "out")


def _widen_ids(out):
    """A shard rewritten with other ids (int32) and its checksum updated: only its type is wrong."""
    from electra.prepare import file_sha256

    path = out / "train-00000.ids.npy"
    np.save(path, np.load(path).astype(np.int32))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["files"]["ids"]["sha256"] = file_sha256(path)
    (out / "manifest.json").write_text(json.dumps(manifest))


def _edit_manifest(out, **changes):
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, **changes}))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda out: (out / "tokenizer.json").unlink(), "tokenizer.json is missing; the data folder is incomplete"),
        (lambda out: _edit_manifest(out, seq_len=256), r"holds uint16 rows of shape \(\d+, 128\), but manifest.json "),
        (lambda out: _edit_manifest(out, vocab_size=50), "says vocab_size 50, but tokenizer.json has"),
        (
            lambda out: (out / "tokenizer.json").write_text('{"version": '),
            "tokenizer.json is not a valid tokenizer.json",
        ),
        (  # transformers reads vocab.txt, and checkpoints and exports copy it
            lambda out: (out / "vocab.txt").write_text("\n".join((out / "vocab.txt").read_text().split("\n")[:20])),
            "vocab.txt does not list tokenizer.json's vocabulary in order",
        ),
        (lambda out: (out / "tokenizer_config.json").write_text("{"), "tokenizer_config.json is not JSON"),
        (_widen_ids, r"holds int32 rows of shape \(\d+, 128\), but manifest.json"),
    ],
)
def test_a_data_folder_whose_parts_disagree_fails_verification(tmp_path, damage, message):
    # each of these trained (or ran until the first checkpoint copied the tokenizer) before verify looked
    prepare([_write_txt(tmp_path / "c.txt")], tmp_path / "out", _cfg(seq_len=128), quiet=True)
    verify(tmp_path / "out")
    damage(tmp_path / "out")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        verify(tmp_path / "out")


def test_the_vocabulary_has_the_size_asked_and_long_rows_raise_the_tokenizers_limit(tmp_path):
    from electra.tokenizer import train_wordpiece
    from tests.conftest import SENTENCES

    assert train_wordpiece(SENTENCES * 20, vocab_size=120, show_progress=False).get_vocab_size() == 120
    prepare([_write_txt(tmp_path / "c.txt")], tmp_path / "out", _cfg(seq_len=1024), quiet=True)
    config = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 1024  # rows longer than BERT's 512 are not cut by transformers


def test_large_vocabularies_use_uint32_ids(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(70_000)] + ["hello"]
    prepare(
        [_write_txt(tmp_path / "c.txt", ["tok69999 hello tok3."])],
        tmp_path / "out",
        _cfg(),
        tokenizer=from_vocab(vocab),
        quiet=True,
    )
    m = read_manifest(tmp_path / "out")
    assert m["ids_dtype"] == "uint32" and m["config"]["vocab_size"] is None
    ((ids, _, _),) = _rows(tmp_path / "out")
    assert ids[1:3] == [70_004, 70_005]


# ---------------------------------------------------------------------------------------
# Bad input: a clear message, exit 2, nothing written
# ---------------------------------------------------------------------------------------


def _words(n: int) -> bytes:
    return " ".join(f"word{i}." for i in range(n)).encode()


def _zst(data: bytes) -> bytes:
    return pytest.importorskip("zstandard").ZstdCompressor().compress(data)


@pytest.fixture
def prep(cli):
    return lambda *args: cli("prepare", "--quiet", *args)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: (d / "empty.txt").write_text("\n\n  \n"), "no text found"),
        (lambda d: (d / "sub").mkdir() or (d / "sub" / "x.bin").write_bytes(b"1"), "holds no corpus files"),
        (lambda d: (d / "r.jsonl").write_text('{"body": "x"}\n'), "has no field 'text'"),
        (lambda d: (d / "r.csv").write_text("a,b\n1,2\n"), "has no column 'text' \\(columns: a, b\\)"),
        (lambda d: (d / "r.jsonl").write_text('{"text": 3}\n'), "r.jsonl:1: field 'text' holds int, not text; name"),
        (lambda d: (d / "r.jsonl").write_text('{"text": "ok"}\n{broken\n'), "r.jsonl:2 is not valid JSON .* column 2"),
        (lambda d: (d / "bin.txt").write_bytes(b"\x00\x01\x02" * 100), "no text found.*skipped .*bin.txt: binary"),
        (lambda d: (d / "t.txt.zst").write_bytes(_zst(_words(20_000))[:-100]), "t.txt.zst .*EOFError.*fetch it again"),
        (lambda d: (d / "c.txt.zst").write_bytes(b"not zstd" * 20), "c.txt.zst could not be read \\(ZstdError"),
    ],
)
def test_bad_corpora_are_refused_with_a_message(tmp_path, prep, setup, message):
    setup(tmp_path)
    target = tmp_path / "sub" if (tmp_path / "sub").exists() else next(tmp_path.iterdir())
    result = prep("--corpus", str(target), "--out", str(tmp_path / "out"), "--vocab-size", "100")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr

    assert re.search(message, result.stderr, re.S), result.stderr
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_a_file_that_fails_while_shards_are_written_leaves_nothing(tmp_path, prep, tokenizer_dir):
    """With a tokenizer given there is no vocabulary pass: the corpus is first read by the thread
    that feeds the shards, and its error stops prepare as the main thread's would."""
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "a.txt").write_text("A whole first book.\n\nIts second document.\n")
    (tmp_path / "books" / "b.txt.gz").write_bytes(gzip.compress(_words(20_000))[:-100])
    out = tmp_path / "out"
    result = prep("--corpus", str(tmp_path / "books"), "--out", str(out), "--tokenizer", str(tokenizer_dir))
    assert result.returncode == 2, result.stderr
    assert re.search("b.txt.gz could not be read \\(EOFError", result.stderr), result.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_documents_are_dealt_whole_to_parts():
    from electra.prepare import _own_part

    items = ["a1", "a2", None, "b1", None, "c1", None, "d1", "d2", None]
    assert list(_own_part(iter(items), 2, 0)) == ["a1", "a2", None, "c1", None]
    assert list(_own_part(iter(items), 2, 1)) == ["b1", None, "d1", "d2", None]
    assert list(_own_part(iter(items), 1, 0)) == items


def test_missing_paths_tokenizers_without_specials_and_busy_outputs_are_refused(tmp_path, prep):
    src = _write_txt(tmp_path / "c.txt")
    with pytest.raises(FileNotFoundError, match="nope does not exist; pass the folder `electra prepare --out` wrote"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="has no manifest.json; prepare data with `electra prepare` first"):
        read_manifest(tmp_path)
    with pytest.raises(NotADirectoryError, match="c.txt is a file; pass the folder `electra prepare --out` wrote"):
        read_manifest(src)
    r = prep("--corpus", str(tmp_path / "nope*.txt"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no files match" in r.stderr
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    r = prep("--corpus", str(src), "--out", str(tmp_path / "o"), "--tokenizer", str(tmp_path / "vocab.txt"))
    assert r.returncode == 2 and "lacks the special tokens [CLS], [SEP], [MASK]" in r.stderr
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)  # a pre-training run: its tokenizer is in a checkpoint
    with pytest.raises(FileNotFoundError, match=r"run holds neither .* each checkpoint, .*run/checkpoints/step-\*\)"):
        load_tokenizer(tmp_path / "run")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    r = prep("--corpus", str(src), "--out", str(tmp_path / "busy"), "--vocab-size", "100")
    assert r.returncode == 2 and "--force" in r.stderr
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["mine.txt"]
    r = prep("--corpus", str(src), "--out", str(tmp_path / "o"), "--seq-len", "4")
    assert r.returncode == 2 and "seq_len 4 is out of range" in r.stderr
    r = prep("--corpus", str(tmp_path / "busy"), "--format", "jsonl", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "busy holds no .jsonl files, only other kinds; drop --format jsonl" in r.stderr
    assert not (tmp_path / "o").exists()


def test_outputs_that_would_replace_their_inputs_or_zeros_for_defaults_are_refused(tmp_path, prep, monkeypatch):
    books = tmp_path / "books"
    books.mkdir()
    _write_txt(books / "a.txt")
    for out in (books, tmp_path):  # the corpus folder itself, or a folder holding it
        r = prep("--corpus", str(books), "--out", str(out), "--force", "--vocab-size", "100")
        assert r.returncode == 2 and "would replace that input" in r.stderr, r.stderr
    links = tmp_path / "links"  # a corpus of symlinks: resolved, its files are elsewhere, yet it is the input
    links.mkdir()
    (links / "a.txt").symlink_to(books / "a.txt")
    r = prep("--corpus", str(links), "--out", str(links), "--force", "--vocab-size", "100")
    assert r.returncode == 2 and "would replace that input" in r.stderr, r.stderr
    assert (links / "a.txt").is_symlink()
    (links / "a.txt").unlink()
    links.rmdir()
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    r = prep("--corpus", str(books), "--out", ".", "--vocab-size", "100")
    assert r.returncode == 2 and "is the current folder" in r.stderr
    for flag, value, message in [
        ("--vocab-size", "0", "vocab-size must be a whole number of at least 1, got 0"),
        ("--vocab-size", "5", "vocab_size 5 is too small: the 5 special tokens alone take 5 entries"),
        ("--num-parts", "0", "num-parts must be a whole number of at least 1, got 0"),
        ("--limit-alphabet", "0", "limit-alphabet must be a whole number of at least 1, got 0"),
    ]:
        r = prep("--corpus", str(books), "--out", str(tmp_path / "o"), flag, value)
        assert r.returncode == 2 and message in r.stderr, r.stderr
    assert sorted(p.name for p in books.iterdir()) == ["a.txt"] and not (tmp_path / "o").exists()
    r = prep("--corpus", str(books), "--out", str(tmp_path / "o"), "--cased", "--tokenizer", str(books))
    assert r.returncode == 2 and "--cased shapes a new tokenizer and --tokenizer reuses one; pass only one" in r.stderr
    r = prep("--corpus", str(books), "--out", str(tmp_path / "o"), "--limit-alphabet", "9", "--tokenizer", str(books))
    assert r.returncode == 2 and "--limit-alphabet shapes a new tokenizer" in r.stderr
    _write_txt(tmp_path / "b.txt", ["Another book entirely. With its own words!"])
    two = ["--corpus", str(books), "--corpus", str(tmp_path / "b.txt"), str(books / "a.txt")]
    r = prep(*two, "--out", str(tmp_path / "o"), "--vocab-size", "12")  # fewer entries than characters
    assert r.returncode == 2 and re.search(
        r"its \d+ characters \(alone, and \d+ of them as ## continuations\) .* take \d+ entries before any word",
        r.stderr,
    )
    assert not (tmp_path / "o").exists()
    (tmp_path / "vocab.txt").write_text("\n".join([*SPECIAL_TOKENS, "another", "book", "with", "."]) + "\n")
    r = prep(*two, "--out", str(tmp_path / "o"), "--tokenizer", str(tmp_path / "vocab.txt"))
    assert r.returncode == 0 and "read 2 files" in r.stdout  # repeated --corpus flags add up; a.txt once
    assert "note: 1 corpus name(s) repeat a file named before; each file is read once" in r.stderr
    assert "of tokens are [UNK]; the vocabulary is too small" in r.stdout
    assert read_manifest(tmp_path / "o")["counts"]["tokens_unknown"] > 0
    r = prep(*two, "--out", str(tmp_path / "o"), "--force", "--vocab-size", "200", "--limit-alphabet", "5")
    assert r.returncode == 0 and "of tokens are [UNK]; --limit-alphabet 5 leaves out characters this corpus" in r.stdout
    r = prep(*two, "--out", str(tmp_path / "o2"), "--limit-alphabet", "0", "--tokenizer", str(tmp_path / "vocab.txt"))
    assert r.returncode == 2 and "error: --limit-alphabet shapes a new tokenizer and --tokenizer reuses" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_run_never_leaves_a_folder_that_looks_complete(tmp_path, sig):
    rng = random.Random(0)
    words = [f"{a}{b}" for a in "bcdfghklmnprstvw" for b in ("an", "el", "ix", "om", "up", "ers")]
    for attempt in range(3):  # a run that finished before the signal proves nothing: again, on more text
        work = tmp_path / str(attempt)
        work.mkdir()
        src = work / "big.txt"
        with open(src, "w") as f:
            for _ in range(60_000 * 2**attempt):
                f.write(" ".join(rng.choice(words) for _ in range(12)) + ".\n\n")
        cmd = [sys.executable, "-m", "electra", "prepare", "--corpus", str(src), "--out", str(work / "out")]
        proc = subprocess.Popen(
            [*cmd, "--vocab-size", "200", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        deadline = time.time() + 60
        while not any(p.name.startswith(".out.tmp") for p in work.iterdir()):  # wait until it writes
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.5)
        if proc.poll() is not None:
            proc.communicate()
            continue
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert not (work / "out").exists()
        if sig != signal.SIGKILL:  # Ctrl-C, or a scheduler's or `kill`'s SIGTERM: unwound and cleaned up
            assert proc.returncode == 128 + sig, err
            assert err.decode().strip().endswith("interrupted" if sig == signal.SIGINT else "terminated (SIGTERM)")
            assert not [p for p in work.iterdir() if p.name.startswith(".out")]
        else:  # nothing could clean up: the next write of the folder removes what was left
            (left,) = [p for p in work.iterdir() if p.name.startswith(".out.tmp")]
            small = _write_txt(work / "small.txt")
            again = subprocess.run(
                [*cmd[:5], str(small), *cmd[6:], "--vocab-size", "200", "--quiet"], capture_output=True
            )
            assert again.returncode == 0 and f"note: removed {left}, left behind" in again.stderr.decode()
            assert sorted(p.name for p in work.iterdir()) == ["big.txt", "out", "small.txt"]
        return
    pytest.fail("every prepare finished before it could be interrupted")


# ---------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------

GUTENBERG = SHARED_DATA / "corpus" / "gutenberg"


@pytest.mark.skipif(not GUTENBERG.is_dir(), reason="../shared/data/corpus/gutenberg is not present")
def test_gutenberg_books_prepare_into_real_rows(tmp_path):
    books = sorted(GUTENBERG.glob("*.txt"))[:3]
    result = prepare(
        books, tmp_path / "out", PrepareConfig(vocab_size=2000, doc_per_file=True, validation_fraction=0.05), quiet=True
    )
    m = result.manifest
    assert m["counts"]["documents"] == 3 and m["counts"]["files"] == 3
    assert m["splits"]["valid"]["rows"] > 0
    rows = _rows(tmp_path / "out")
    full = sum(len(ids) == 128 for ids, _, _ in rows) / len(rows)
    assert full > 0.85  # most rows are packed to the target length
    tok = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    assert "gutenberg" in " ".join(tok.decode(ids) for ids, _, _ in rows[:50])
    assert os.path.getsize(tmp_path / "out" / "train-00000.ids.npy") == 128 + len(rows) * 128 * 2


def test_a_bare_vocab_txt_keeps_case_when_its_entries_are_cased(tmp_path):
    from electra.tokenizer import SPECIAL_TOKENS, is_lowercase, load_tokenizer

    words = ["the", "magi", "della", "and", "jim", ".", ","]
    for name, vocab in (("uncased", words), ("cased", words + ["The", "Magi", "Della", "Jim"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "vocab.txt").write_text("\n".join([*SPECIAL_TOKENS, *vocab]) + "\n")
    cased = load_tokenizer(tmp_path / "cased" / "vocab.txt")  # as Google's cased BERT vocabulary is read
    assert not is_lowercase(cased) and cased.encode("The Magi.", add_special_tokens=False).tokens == [
        "The",
        "Magi",
        ".",
    ]
    assert is_lowercase(load_tokenizer(tmp_path / "uncased" / "vocab.txt"))
    (tmp_path / "cased" / "tokenizer_config.json").write_text('{"do_lower_case": true}')  # a folder's config decides
    assert is_lowercase(load_tokenizer(tmp_path / "cased"))
    (tmp_path / "cased" / "tokenizer_config.json").unlink()
    corpus = _write_txt(tmp_path / "c.txt")
    prepare([corpus], tmp_path / "out", _cfg(), tokenizer=tmp_path / "cased" / "vocab.txt", quiet=True)
    assert (
        json.loads((tmp_path / "out" / "manifest.json").read_text())["config"]["lowercase"] is False
    )  # the tokenizer's


def test_a_vocabulary_holds_every_character_and_continuations_only_of_those_inside_words():
    from electra.tokenizer import train_wordpiece

    texts = ["中文的句子很长。这是另一个句子！", "English words, and more words.", "日本語のテキストです。"] * 20
    tok = train_wordpiece(texts, vocab_size=200, show_progress=False)
    alphabet = {c for t in texts for c in tok.normalizer.normalize_str(t) if not c.isspace()}  # で is て uncased
    vocab = tok.get_vocab()
    assert alphabet <= set(vocab)  # every character, so no word of the corpus is [UNK]
    assert "##e" in vocab and "##の" in vocab  # letters and kana continue words
    assert not {"##中", "##,", "##。"} & set(vocab)  # CJK ideographs and punctuation stand alone: no dead ## entries
    tokens = ["[CLS]", "中", "文", "english", "words", "日", "本", "語", "[SEP]"]
    assert tok.encode("中文 English words 日本語").tokens == tokens
    with pytest.raises(
        ValueError, match=r"its 39 characters \(alone, and 20 of them as ## continuations\) .* take 64 entries"
    ):
        train_wordpiece(texts, vocab_size=60, show_progress=False)


def test_limit_alphabet_keeps_the_most_frequent_characters_and_the_rest_become_unk():
    from electra.tokenizer import train_wordpiece

    rare = [chr(0x2600 + i) for i in range(1200)]  # 1,200 symbols seen once each
    texts = ["the cat sat on the mat, and the dog sat too."] * 30 + [f"ab{c}cd" for c in rare]
    with pytest.raises(
        ValueError,
        match="its 1214 characters .* 2377 entries .*; pass --vocab-size well above 2377, or .* --limit-alphabet",
    ):
        train_wordpiece(texts, vocab_size=300, show_progress=False)
    with pytest.raises(
        ValueError, match="its 1100 characters .*, or keep fewer characters \\(--limit-alphabet below 1100"
    ):
        train_wordpiece(texts, vocab_size=300, show_progress=False, limit_alphabet=1100)
    tok = train_wordpiece(texts, vocab_size=300, show_progress=False, limit_alphabet=16)
    vocab = tok.get_vocab()
    # the 14 characters of the sentence (and of ab..cd), then two of the 1,200 seen once: the first in order
    assert (
        sorted(t for t in vocab if len(t) == 1)
        == sorted(set("the cat sat on the mat, and dog too. abcd") - {" "}) + rare[:2]
    )
    assert tok.encode("the cat ab\u2600cd ab\u2602cd").tokens == [
        "[CLS]",
        "the",
        "cat",
        "ab",
        "##\u2600",
        "##cd",
        "[UNK]",
        "[SEP]",
    ]
    again = train_wordpiece(texts, vocab_size=300, show_progress=False, limit_alphabet=16)
    assert again.to_str() == tok.to_str()


ACCENTED = [
    "Tôi yêu tiếng Việt. Schöne Grüße aus Köln! Ёлка и йогурт.",
    "L'été à Besançon, la forêt. Ça va très bien; grüß dich, Jürgen.",
]


def test_no_strip_accents_lowercases_but_keeps_accents_and_transformers_agrees(tmp_path, cli):
    transformers = pytest.importorskip("transformers")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(ACCENTED * 3) + "\n", encoding="utf-8")
    for name, flags in (("stripped", []), ("kept", ["--no-strip-accents"]), ("cased", ["--cased"])):
        result = cli("prepare", "--corpus", corpus, "--out", tmp_path / name, "--vocab-size", "300", "--quiet", *flags)
        assert result.returncode == 0, result.stderr
        # 20 of the sentences' 117 characters lose a mark, which the default run says
        said = "note: lowercasing stripped accents and other marks from 17.1% of the characters"
        assert (said in result.stdout) == (name == "stripped") and ("--no-strip-accents" in result.stdout) == (
            name == "stripped"
        )
    words = {name: load_tokenizer(tmp_path / name).encode("Tôi yêu Köln").tokens[1:-1] for name in ("stripped", "kept")}
    assert words == {"stripped": ["toi", "yeu", "koln"], "kept": ["tôi", "yêu", "köln"]}
    configs = {n: json.loads((tmp_path / n / "tokenizer_config.json").read_text()) for n in ("stripped", "kept")}
    assert configs["kept"]["strip_accents"] is False and configs["stripped"]["strip_accents"] is None
    assert json.loads((tmp_path / "kept" / "manifest.json").read_text())["config"]["strip_accents"] is False
    for name in ("stripped", "kept", "cased"):  # transformers rebuilds the normalizer from tokenizer_config.json
        ours, theirs = load_tokenizer(tmp_path / name), transformers.AutoTokenizer.from_pretrained(tmp_path / name)
        for text in ACCENTED:
            assert theirs(text)["input_ids"] == ours.encode(text).ids, (name, text)
    # a vocab.txt whose folder's tokenizer_config.json keeps accents is read so
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "vocab.txt").write_text((tmp_path / "kept" / "vocab.txt").read_text(encoding="utf-8"))
    (tmp_path / "hf" / "tokenizer_config.json").write_text('{"do_lower_case": true, "strip_accents": false}')
    assert (
        load_tokenizer(tmp_path / "hf" / "vocab.txt").encode(ACCENTED[0]).ids
        == load_tokenizer(tmp_path / "kept").encode(ACCENTED[0]).ids
    )
    refused = cli(
        "prepare", "--corpus", corpus, "--out", tmp_path / "x", "--tokenizer", tmp_path / "kept", "--no-strip-accents"
    )
    assert refused.returncode == 2 and "--no-strip-accents shapes a new tokenizer" in refused.stderr


def test_a_tokenizer_json_that_is_not_berts_pipeline_keeps_its_own_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tokenizers import models, normalizers, pre_tokenizers

    from electra.tokenizer import save_tokenizer

    vocab = [*SPECIAL_TOKENS, "l'été,", "à", "paris!", "p", "##ar", "##is", "我爱北京"]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(handle_chinese_chars=False, lowercase=True, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # no post-processor: ELECTRA's template is added
    tok.save(str(tmp_path / "tokenizer.json"))
    ours = load_tokenizer(tmp_path / "tokenizer.json")
    assert ours.encode("L'été, à Paris!", "我爱北京").tokens == [
        *("[CLS]", "l'été,", "à", "paris!", "[SEP]"),
        *("我爱北京", "[SEP]"),
    ]
    save_tokenizer(ours, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    for a, b in [("L'été, à Paris!", None), ("L'été, à Paris!", "我爱北京"), ("paris! à", "p")]:
        expected = ours.encode(a, b) if b else ours.encode(a)
        got = theirs(a, b)
        assert (got["input_ids"], got["token_type_ids"]) == (expected.ids, expected.type_ids)


@pytest.mark.parametrize(
    "entries, lowercase, keeps_accents",
    [
        (["the", "magi", "und", "köln", "straße", "grüße", "über"], True, True),  # lowercased, accents kept
        (["プログラミング", "が", "すき", "です", "ゲーム"], True, True),  # kana with dakuten: never stripped
        (["the", "magi", "cologne", "street"], True, False),
    ],
)
def test_a_bare_vocab_txt_keeps_accents_its_entries_hold_and_says_how_it_was_read(
    tmp_path, cli, entries, lowercase, keeps_accents
):
    from electra.tokenizer import is_lowercase, strips_accents

    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "vocab.txt").write_text("\n".join([*SPECIAL_TOKENS, *entries, "."]) + "\n", encoding="utf-8")
    tok = load_tokenizer(tmp_path / "v" / "vocab.txt")
    assert (is_lowercase(tok), strips_accents(tok)) == (lowercase, not keeps_accents)
    corpus = tmp_path / "c.txt"
    corpus.write_text(" ".join(entries) + ".\n", encoding="utf-8")
    result = cli("prepare", "--corpus", corpus, "--out", tmp_path / "out", "--tokenizer", tmp_path / "v", "--quiet")
    assert result.returncode == 0 and "has no tokenizer_config.json beside it" in result.stderr
    assert ("lowercases but keeps accents" if keeps_accents else "lowercases and strips accents") in result.stderr
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["tokens_unknown"] == 0


def test_words_longer_than_wordpiece_spells_are_named_as_the_cause_of_unk(tmp_path, cli):
    thai = "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำเลยทำให้การตัดคำเป็นเรื่องยากมากสำหรับคอมพิวเตอร์และนักวิจัยที่ทำงานกับข้อความ" * 2
    # 220 characters, 182 once lowercasing has stripped its vowel and tone marks: one word to BERT's pre-tokenizer
    corpus = tmp_path / "th.txt"
    corpus.write_text("\n\n".join(f"{thai} {i}." for i in range(30)) + "\n", encoding="utf-8")
    result = cli("prepare", "--corpus", corpus, "--out", tmp_path / "out", "--vocab-size", "3000", "--quiet")
    assert result.returncode == 0, result.stderr
    counts = json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]
    assert counts["words_too_long"] == counts["tokens_unknown"] == 30 and counts["characters_in_words_too_long"] > 0
    share = counts["characters_in_words_too_long"] / counts["characters"]
    assert f"warning: {share:.1%} of the text is in 30 words longer than 100 characters" in result.stdout
    assert "needs splitting into words" in result.stdout and "raise --vocab-size" not in result.stdout


def test_a_vocabulary_smaller_than_asked_for_is_noted(tmp_path, cli):
    corpus = synthetic_corpus(tmp_path / "c.txt", documents=20)  # about 40 distinct words
    result = cli("prepare", "--corpus", corpus, "--out", tmp_path / "out", "--vocab-size", "3000", "--quiet")
    vocab = json.loads((tmp_path / "out" / "manifest.json").read_text())["vocab_size"]
    assert result.returncode == 0 and vocab < 3000
    assert f"note: the vocabulary has {vocab:,} entries, fewer than --vocab-size 3,000:" in result.stdout
    reused = cli("prepare", "--corpus", corpus, "--out", tmp_path / "again", "--tokenizer", tmp_path / "out", "--quiet")
    assert reused.returncode == 0 and "fewer than" not in reused.stdout


def test_invalid_utf8_is_counted_per_file_and_a_conversion_is_offered(tmp_path, cli):
    """Text in another encoding (Latin-1 here) is read with U+FFFD in place of its bytes: the note
    names the files that had them, most first, and how to convert one."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    synthetic_corpus(folder / "a.txt", documents=20)
    (folder / "b.txt").write_bytes("Café au lait, crème brûlée.\n\nNaïve façade.\n".encode("latin-1"))
    (folder / "c.txt.gz").write_bytes(gzip.compress("Déjà vu.\n".encode("latin-1")))
    result = cli("prepare", "--corpus", folder, "--out", tmp_path / "out", "--vocab-size", "300", "--quiet")
    assert result.returncode == 0, result.stderr
    assert (
        f"replaced 8 bytes of invalid UTF-8 (or lone surrogate escapes in JSON) with U+FFFD, in {folder / 'b.txt'} "
        f"(6), {folder / 'c.txt.gz'} (2); a file in another encoding reads right once converted, e.g. from Latin-1 "
        f"or Windows-1252: iconv -f WINDOWS-1252 -t UTF-8 {folder / 'b.txt'} > {folder / 'b.txt'}.utf8"
    ) in result.stdout
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["invalid_utf8_bytes"] == 8


def _shard_lengths(folder, split="train"):
    m = read_manifest(folder)
    return [np.load(folder / s["files"]["lengths"]["path"]) for s in m["splits"][split]["shards"]]


def test_rows_longer_than_255_tokens_keep_their_lengths(tmp_path):
    """ELECTRA-Base and Large train on 512-token rows: a row's length is stored whole."""
    words = " ".join(f"w{i % 40}" for i in range(1500))  # one document, one sentence of 1500 words
    (tmp_path / "c.txt").write_text(words + ".\n", encoding="utf-8")
    prepare([tmp_path / "c.txt"], tmp_path / "out", _cfg(seq_len=512), quiet=True)
    m = read_manifest(tmp_path / "out")
    folder = tmp_path / "out"
    ids = np.concatenate([np.load(folder / s["files"]["ids"]["path"]) for s in m["splits"]["train"]["shards"]])
    lengths = np.concatenate(_shard_lengths(folder))
    assert lengths.max() == 512
    for row, n in zip(ids, lengths, strict=True):
        assert row[n - 1] == m["special_tokens"]["sep"] and (row[n:] == m["special_tokens"]["pad"]).all()
    assert lengths.sum() == m["splits"]["train"]["tokens"]


def test_each_shards_token_count_is_that_of_its_own_rows(tmp_path):
    """The manifest's per-shard tokens (which a merge adds up) count the shard's rows only, also in
    a last shard shorter than the others."""
    synthetic_corpus(tmp_path / "c.txt", documents=40)
    prepare([tmp_path / "c.txt"], tmp_path / "out", _cfg(rows_per_shard=7), quiet=True)
    m = read_manifest(tmp_path / "out")
    shards = m["splits"]["train"]["shards"]
    assert len(shards) > 2 and shards[-1]["rows"] < 7
    for shard, lengths in zip(shards, _shard_lengths(tmp_path / "out"), strict=True):
        assert shard["tokens"] == int(lengths.sum())
    assert sum(s["tokens"] for s in shards) == m["splits"]["train"]["tokens"]


def test_counts_of_sentences_and_unknown_tokens_are_exact(tmp_path):
    """tokens_unknown counts [UNK] tokens (the share the CLI warns about), not sentences holding one."""
    vocab = [*SPECIAL_TOKENS, "a", "b", "."]
    (tmp_path / "c.txt").write_text("a zz yy b xx. a b.\n\nb qq.\n", encoding="utf-8")
    prepare([tmp_path / "c.txt"], tmp_path / "out", _cfg(), tokenizer=from_vocab(vocab), quiet=True)
    counts = read_manifest(tmp_path / "out")["counts"]
    assert (counts["documents"], counts["sentences"], counts["tokens_unknown"]) == (2, 3, 4)
    assert counts["tokens_encoded"] == 6 + 3 + 3


def test_a_tokenizer_object_given_to_prepare_is_left_as_it_was(tmp_path):
    """prepare reads "[MASK]" in corpus text as text; the caller's tokenizer still reads it as the mask."""
    tok = from_vocab([*SPECIAL_TOKENS, "a", "b", "."])
    (tmp_path / "c.txt").write_text("a [MASK] b.\n", encoding="utf-8")
    before = tok.to_str()
    prepare([tmp_path / "c.txt"], tmp_path / "out", _cfg(), tokenizer=tok, quiet=True)
    assert tok.encode("a [MASK] b", add_special_tokens=False).ids == [5, 4, 6]
    assert tok.to_str() == before


def test_parts_prepared_with_different_tokenizers_do_not_merge(tmp_path, tokenizer_dir):
    src = synthetic_corpus(tmp_path / "c.txt", documents=20)
    other = tmp_path / "other-tok"
    prepare([src], other, _cfg(vocab_size=150), quiet=True)  # a second vocabulary, trained on the corpus
    for i, tok in enumerate((tokenizer_dir, other)):
        prepare([src], tmp_path / f"p{i}", _cfg(num_parts=2, part_index=i), tokenizer=tok, quiet=True)
    with pytest.raises(ValueError, match="p1 was prepared with tokenizer_sha256="):
        merge([tmp_path / "p0", tmp_path / "p1"], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_a_part_index_outside_the_parts_is_refused_at_once():
    with pytest.raises(ValueError, match="part index 2 is outside 0..1"):
        PrepareConfig(num_parts=2, part_index=2)


def test_limit_alphabet_with_a_reused_tokenizer_is_refused(tmp_path, tokenizer_dir):
    (tmp_path / "c.txt").write_text("The movie was great.\n", encoding="utf-8")
    with pytest.raises(ValueError, match="limit_alphabet shapes a vocabulary to train"):
        prepare([tmp_path / "c.txt"], tmp_path / "out", _cfg(limit_alphabet=10), tokenizer=tokenizer_dir, quiet=True)
    assert not (tmp_path / "out").exists()


def test_words_too_long_are_those_over_wordpieces_limit_not_at_it():
    tok = train_wordpiece(SENTENCES * 20, vocab_size=120, show_progress=False)
    at, over = "a" * 100, "b" * 101
    assert too_long_words(tok, f"{at} {over}") == [over]


def test_a_folder_is_read_through_its_tokenizer_json_not_its_vocab_txt(tmp_path):
    """A saved folder holds both files; a pipeline other than BERT's lives only in tokenizer.json."""
    vocab = [*SPECIAL_TOKENS, "l'été,", "paris!", "l", "##'", "été", ",", "paris", "!"]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(handle_chinese_chars=False, lowercase=True, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # BERT's would cut at the quote and the punctuation
    save_tokenizer(tok, tmp_path / "tok")
    assert (tmp_path / "tok" / "vocab.txt").exists()
    assert load_tokenizer(tmp_path / "tok").encode("L'été, Paris!").tokens == ["[CLS]", "l'été,", "paris!", "[SEP]"]


def test_a_vocab_txt_whose_config_does_not_mention_chinese_characters_splits_them_as_transformers_does(tmp_path):
    """transformers' default is tokenize_chinese_chars=True; many older configs hold only do_lower_case."""
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "vocab.txt").write_text(
        "\n".join([*SPECIAL_TOKENS, "中", "文", "hello"]) + "\n", encoding="utf-8"
    )
    (tmp_path / "hf" / "tokenizer_config.json").write_text('{"do_lower_case": true}')
    tok = load_tokenizer(tmp_path / "hf")
    assert tok.encode("hello中文").tokens == ["[CLS]", "hello", "中", "文", "[SEP]"]


def test_a_sequence_normalizer_that_lowercases_is_known_as_lowercasing():
    """is_lowercase reads a Sequence normalizer's parts (the manifest records it as `lowercase`)."""
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(SPECIAL_TOKENS)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
    assert is_lowercase(tok)
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents()])
    assert not is_lowercase(tok)


def test_default_shards_hold_65536_rows_or_64m_tokens_of_long_rows():
    """A shard is built in memory before it is written: long rows get fewer to a shard."""
    sizes = {n: PrepareConfig(seq_len=n).rows_per_shard for n in (128, 512, 1024, 2048, 8192, 65536)}
    assert sizes == {128: 65536, 512: 65536, 1024: 65536, 2048: 32768, 8192: 8192, 65536: 1024}
    assert PrepareConfig(seq_len=8192, rows_per_shard=100_000).rows_per_shard == 100_000


def test_each_flag_reaches_the_manifests_config_and_the_defaults_are_the_configs(tmp_path, cli, monkeypatch):
    """What `electra prepare` was told is what its manifest records: every packing and tokenizer
    flag reaches PrepareConfig, and without flags the config is PrepareConfig's defaults."""
    from dataclasses import asdict

    def config(out, *args):
        result = cli("prepare", "--out", tmp_path / out, *args, "--quiet")
        assert result.returncode == 0, result.stderr
        return json.loads((tmp_path / out / "manifest.json").read_text())["config"]

    synthetic_corpus(tmp_path / "c.txt", documents=40)
    defaults = {**asdict(PrepareConfig()), "lowercase": True, "strip_accents": True}
    assert config("plain", "--corpus", tmp_path / "c.txt") == defaults
    docs = (tmp_path / "c.txt").read_text().split("\n\n")
    lines = "".join(json.dumps({"body": d, "text": "ignored"}) + "\n" for d in docs)
    (tmp_path / "c.data").write_text(lines)  # no suffix to go by: --format says
    flags = ["--format", "jsonl", "--text-field", "body", "--seq-len", "32", "--seed", "3"]
    flags += ["--validation-fraction", "0.2", "--rows-per-shard", "5", "--vocab-size", "200", "--limit-alphabet", "40"]
    assert config("flags", "--corpus", tmp_path / "c.data", *flags, "--no-strip-accents") == {
        **defaults,
        "format": "jsonl",
        "text_field": "body",
        "seq_len": 32,
        "seed": 3,
        "validation_fraction": 0.2,
        "rows_per_shard": 5,
        "vocab_size": 200,
        "limit_alphabet": 40,
        "strip_accents": False,
    }
    parts = ["--doc-per-file", "--num-parts", "2", "--part-index", "1", "--tokenizer", tmp_path / "plain"]
    (tmp_path / "d.txt").write_text((tmp_path / "c.txt").read_text())  # with --doc-per-file: 2 documents
    part = config("part", "--corpus", tmp_path / "c.txt", tmp_path / "d.txt", *parts)
    assert (part["doc_per_file"], part["num_parts"], part["part_index"]) == (True, 2, 1)
    assert config("cased", "--corpus", tmp_path / "c.txt", "--cased")["lowercase"] is False
    asked = []

    def hub_dataset(name, config, split):  # no network in tests: what the hub would be asked for
        asked.append((name, config, split))
        raise ValueError("offline")

    monkeypatch.setattr("electra.corpus.hub_dataset", hub_dataset)
    assert cli("prepare", "--dataset", "wikitext", "--out", tmp_path / "hub").returncode == 2
    hub = ["--dataset-config", "wikitext-2-raw-v1", "--dataset-split", "validation"]
    assert cli("prepare", "--dataset", "wikitext", *hub, "--out", tmp_path / "hub").returncode == 2
    assert asked == [("wikitext", None, "train"), ("wikitext", "wikitext-2-raw-v1", "validation")]


def test_a_shard_buffer_holds_the_rows_it_is_given_not_a_whole_shard_of_the_longest_rows(tmp_path):
    """seq_len 65536 is allowed; a buffer of a whole default shard of such rows would take 12 GB
    per split before the first row, and a small corpus at long rows would be killed for memory."""
    from electra.prepare import ShardWriter

    big = ShardWriter(tmp_path, "train", 4096, np.dtype(np.uint16), 65536, 0)
    big.add([2, 7, 3], [0, 0, 0])
    assert big.ids.nbytes + big.types.nbytes < 64 << 20
    w = ShardWriter(tmp_path, "valid", 8, np.dtype(np.uint16), 3000, 0)  # grows past its first size
    rows = [[2, *range(5, 5 + i % 5), 3] for i in range(3500)]
    for ids in rows:
        w.add(ids, [0] * len(ids))
    w.flush()
    assert [s["rows"] for s in w.shards] == [3000, 500]
    stored = np.concatenate([np.load(tmp_path / s["files"]["ids"]["path"]) for s in w.shards])
    assert stored.tolist() == [ids + [0] * (8 - len(ids)) for ids in rows]


def test_a_tokenizer_path_to_a_binary_file_is_named_not_a_bare_decode_error(tmp_path, prep):
    src = _write_txt(tmp_path / "c.txt")
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}\xf6\xff" * 10)
    r = prep("--corpus", str(src), "--out", str(tmp_path / "o"), "--tokenizer", str(tmp_path / "model.safetensors"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "model.safetensors is not a vocab.txt (not UTF-8 text" in r.stderr, r.stderr
    assert "tokenizer.json or vocab.txt" in r.stderr and not (tmp_path / "o").exists()
