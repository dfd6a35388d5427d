"""Readers never crash on arbitrary input: they yield sentences or raise a CorpusError."""

import codecs
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from electra import corpus

SUFFIXES = [".txt", ".jsonl", ".json", ".csv", ".tsv", ".txt.gz", ".jsonl.bz2", ".txt.xz"]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read(path):
    stats = corpus.ReadStats()
    try:
        items = list(corpus.stream([path], stats))
    except corpus.CorpusError:
        return None, stats
    assert all(i is None or (isinstance(i, str) and i.strip() and len(i) <= corpus.MAX_SENTENCE_CHARS) for i in items)
    return items, stats


@FAST
@given(data=st.binary(max_size=3000), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_never_crash_a_reader(tmp_path, data, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    _read(path)


@FAST
@given(text=st.text(max_size=2000))
def test_random_unicode_survives_every_text_format(tmp_path, text):
    (tmp_path / "a.txt").write_text(text, encoding="utf-8", newline="")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": text}) + "\n", encoding="utf-8")
    items, stats = _read(tmp_path / "a.txt")
    assert stats.invalid_utf8 == 0
    if items is not None and "\x00" not in text:
        # every visible word of the input survives reading (control characters are dropped)
        words = corpus.normalize(text).split()
        assert " ".join(i for i in items if i).split() == words
    items, _ = _read(tmp_path / "b.jsonl")
    assert items is not None


def test_sentence_splitting():
    assert corpus.split_sentences('He said "Stop." Then he left! Did he? Yes') == [
        'He said "Stop."',
        "Then he left!",
        "Did he?",
        "Yes",
    ]
    # CJK full stops need no space after them; Arabic and Devanagari have their own marks
    assert corpus.split_sentences("我爱北京。天安门很大！「你去过吗？」他问。 هل أنت بخير؟ نعم. यह है। वह भी।") == [
        *("我爱北京。", "天安门很大！", "「你去过吗？」", "他问。"),
        *("هل أنت بخير؟", "نعم.", "यह है।", "वह भी।"),
    ]
    long = "word " * 1000
    pieces = corpus.split_sentences(long.strip())
    assert all(len(p) <= corpus.MAX_SENTENCE_CHARS for p in pieces)
    assert " ".join(pieces).split() == long.split()


def _items(tmp_path, name, content, **kw):
    path = tmp_path / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content, encoding="utf-8")
    return list(corpus.stream([tmp_path / name], corpus.ReadStats(), **kw))


def test_each_format_ends_documents_where_its_documents_end(tmp_path):
    # a line of spaces is a blank line; with --doc-per-file it ends a paragraph, the file the document
    assert _items(tmp_path, "a.txt", "One. Two.\n   \t\nThree.\n") == ["One.", "Two.", None, "Three.", None]
    assert _items(tmp_path, "a.txt", "One.\n  \nTwo.\n", doc_per_file=True) == ["One.", "Two.", None]
    # a record's own blank lines (spaces on them too) separate paragraphs, not documents
    assert _items(tmp_path, "r.jsonl", json.dumps({"text": "A title\n \nIts text."}) + "\n") == [
        "A title",
        "Its text.",
        None,
    ]
    # an empty record or cell is no document; a row short of the text column is an empty cell
    records = [{"text": ""}, {"text": "A."}, {"text": None}]
    assert _items(tmp_path, "r.jsonl", "".join(json.dumps(r) + "\n" for r in records)) == ["A.", None]
    assert _items(tmp_path, "r.csv", "id,text\n1\n2,Hello.\n3,\n") == ["Hello.", None]
    # a JSON file holds a list of records, or {"data": [records]}
    wrapped = json.dumps({"data": [{"text": "X."}, {"text": "Y."}]})
    assert _items(tmp_path, "d.json", wrapped) == ["X.", None, "Y.", None]
    # TSV cells are taken as they are: a quote mark opens no quoted field across rows
    rows = 'text\n"Stop," she said.\nNext row.\n'
    assert _items(tmp_path, "t.tsv", rows) == ['"Stop," she said.', None, "Next row.", None]


def test_corpus_paths_expand_sorted_recursive_without_hidden_files_and_each_once(tmp_path, capsys):
    names = ["m.txt", "b.txt", "z.txt", "a.txt", "sub/c.txt", "sub/deeper/d.jsonl", ".hidden.txt", "notes.md"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("Text.\n")
    want = ["a.txt", "b.txt", "m.txt", "sub/c.txt", "sub/deeper/d.jsonl", "z.txt"]
    assert [p.relative_to(tmp_path).as_posix() for p in corpus.expand([tmp_path])] == want
    found = corpus.expand([str(tmp_path / "**" / "*.txt")])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.txt", "b.txt", "m.txt", "sub/c.txt", "z.txt"]
    again = corpus.expand([tmp_path / "a.txt", tmp_path / "sub" / ".." / "a.txt", tmp_path])
    assert again[0] == tmp_path / "a.txt" and len(again) == len(want)  # each file once, where first named
    assert "2 corpus name(s) repeat a file named before" in capsys.readouterr().err


def test_prepared_data_models_and_runs_inside_a_corpus_folder_are_not_read_as_text(tmp_path, tiny_data, capsys):
    """A corpus folder that also holds earlier outputs (data/ with data/prepared/ in it): their
    vocab.txt, tokenizer.json, config.json and metrics.jsonl are not corpus text, by folder or
    by glob; a file named whole is still read."""
    import shutil

    root = tmp_path / "corp"
    (root / "books").mkdir(parents=True)
    (root / "books" / "a.txt").write_text("Text.\n")
    (root / "b.jsonl").write_text('{"text": "More."}\n')
    shutil.copytree(tiny_data, root / "prepared")  # manifest.json, vocab.txt, tokenizer.json ...
    (root / "run").mkdir()
    (root / "run" / "config.json").write_text("{}")
    (root / "run" / "metrics.jsonl").write_text('{"step": 1}\n')
    (root / "run" / "model").mkdir()
    for name in ("config.json", "tokenizer_config.json", "vocab.txt"):
        (root / "run" / "model" / name).write_text("{}")
    want = [root / "b.jsonl", root / "books" / "a.txt"]
    assert corpus.expand([root]) == want
    assert f"note: not reading {root / 'prepared'}, {root / 'run'}: prepared data" in capsys.readouterr().err
    assert corpus.expand([str(root / "**" / "*.txt")]) == [root / "books" / "a.txt"]
    err = capsys.readouterr().err
    assert f"not reading {root / 'prepared'}, {root / 'run' / 'model'}: " in err
    assert corpus.expand([str(root / "**" / "*.json*")]) == [root / "b.jsonl"]
    assert "not reading" in capsys.readouterr().err
    assert corpus.expand([root / "prepared" / "vocab.txt"]) == [root / "prepared" / "vocab.txt"]
    assert "not reading" not in capsys.readouterr().err


def test_a_paragraph_longer_than_a_read_reads_as_a_short_one(tmp_path):
    """A paragraph is read in pieces of about a megabyte: the sentence cut at a piece's end is
    carried into the next, and the document still ends at its blank line."""
    sentences = [f"Sentence number {i} of the one long paragraph." for i in range(60_000)]  # ~2.9 MB
    text = " ".join(sentences) + "\n\nThe next document.\n"
    assert len(text) > 2.5 * corpus._READ_CHUNK
    assert _items(tmp_path, "long.txt", text) == [*sentences, None, "The next document.", None]
    one = " ".join(["word"] * 300_000) + ".\n\nNext.\n"  # one sentence of 1.5 MB: cut only at the sentence limit
    items = _items(tmp_path, "one.txt", one)
    assert items[-3:] == [None, "Next.", None] and None not in items[:-3]
    assert " ".join(items[:-3]) == one.split("\n")[0]


def test_a_paragraph_of_many_lines_longer_than_a_read_keeps_its_words_apart(tmp_path):
    """The sentence carried from one piece into the next stays a word apart from the text after
    it: a line break, or a space where a read ended, separates words there as anywhere else."""
    lines = [f"Sentence number {i} of the one long paragraph." for i in range(30_000)]  # ~1.4 MB, one per line
    assert _items(tmp_path, "lines.txt", "\n".join(lines) + "\n") == [*lines, None]
    unpunctuated = "\n".join(["alpha beta gamma delta"] * 70_000) + "\n"  # ~1.6 MB, no sentence ends
    assert " ".join(_items(tmp_path, "words.txt", unpunctuated)[:-1]).split() == unpunctuated.split()
    spaced = "abc " * 600_000 + "\n"  # one line: the read that ends at 2 MiB falls just after a space
    assert " ".join(_items(tmp_path, "one.txt", spaced)[:-1]).split() == spaced.split()


def test_invalid_utf8_counts_bytes_and_byte_order_marks_inside_text_are_dropped(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"Caf\xe2\x82 au \xf0\x9f\x98 lait \xff.\n")  # cut sequences, a stray byte
    stats = corpus.ReadStats()
    assert list(corpus.stream([tmp_path / "bad.txt"], stats)) == ["Caf\ufffd au \ufffd lait \ufffd.", None]
    assert stats.invalid_utf8 == 6
    assert _items(tmp_path, "bom.txt", "Joined\ufeff files.\n") == ["Joined files.", None]


def test_every_frame_of_a_zstandard_file_is_read(tmp_path):
    """Files joined with `cat`, or written by pzstd, hold several frames: each is part of the text."""
    import pytest

    zstd = pytest.importorskip("zstandard").ZstdCompressor()
    (tmp_path / "two.txt.zst").write_bytes(zstd.compress(b"First document.\n\n") + zstd.compress(b"Second one.\n"))
    assert list(corpus.stream([tmp_path / "two.txt.zst"], corpus.ReadStats())) == [
        "First document.",
        None,
        "Second one.",
        None,
    ]


def test_a_sentence_with_no_space_to_cut_at_keeps_every_character():
    """Text written without spaces or sentence marks (a URL, base64, unpunctuated Thai) is cut at the
    limit itself: the pieces join back into the text."""
    text = "".join(chr(0x0E01 + i % 40) for i in range(5 * corpus.MAX_SENTENCE_CHARS + 7))
    pieces = corpus.split_sentences(text)
    assert len(pieces) == 6 and all(len(p) <= corpus.MAX_SENTENCE_CHARS for p in pieces)
    assert "".join(pieces) == text


def test_files_saved_with_a_utf8_byte_order_mark_read_in_every_format(tmp_path):
    """Windows editors and Excel's "CSV UTF-8" open files with a BOM: it is no part of the first record."""
    bom = codecs.BOM_UTF8
    assert _items(tmp_path, "a.jsonl", bom + json.dumps({"text": "One."}).encode() + b"\n") == ["One.", None]
    assert _items(tmp_path, "b.json", bom + json.dumps([{"text": "Two."}]).encode()) == ["Two.", None]
    assert _items(tmp_path, "c.csv", bom + b"text,id\nThree.,1\n") == ["Three.", None]
    assert _items(tmp_path, "d.txt", bom + b"Four.\n") == ["Four.", None]


def test_blank_lines_in_a_jsonl_file_are_skipped(tmp_path):
    lines = "\n" + json.dumps({"text": "A."}) + "\n\n  \n" + json.dumps({"text": "B."}) + "\n\n"
    assert _items(tmp_path, "r.jsonl", lines) == ["A.", None, "B.", None]


def test_a_csv_cell_longer_than_the_csv_modules_default_limit_is_read(tmp_path):
    """Python's csv refuses fields over 128 KiB by default; a whole book in one cell is a document."""
    words = " ".join(f"w{i % 50}" for i in range(60_000))  # ~240 KB, one sentence per 2000 characters
    items = _items(tmp_path, "big.csv", f'id,text\n1,"{words}."\n2,Next.\n')
    assert items[-3:] == [None, "Next.", None] and " ".join(items[:-3]) == words + "."


def test_a_corpus_path_that_does_not_exist_is_named_as_missing(tmp_path):
    with pytest.raises(corpus.CorpusError, match="nope.txt does not exist"):
        corpus.expand([tmp_path / "nope.txt"])


def test_a_saved_dataset_dict_is_read_from_its_train_split_whatever_its_order(tmp_path):
    datasets = pytest.importorskip("datasets")
    splits = {"test": ["Held out."], "train": ["Train one.", "Train two."]}  # test first
    datasets.DatasetDict({k: datasets.Dataset.from_dict({"text": v}) for k, v in splits.items()}).save_to_disk(
        str(tmp_path / "ds")
    )
    items = list(corpus.stream(corpus.expand([tmp_path / "ds"]), corpus.ReadStats()))
    assert items == ["Train one.", None, "Train two.", None]


@pytest.mark.parametrize("target", ["loop.txt", "gone.txt"])
def test_a_broken_or_looping_link_in_a_corpus_folder_is_named_as_such(tmp_path, target):
    (tmp_path / "a.txt").write_text("Some text.\n")
    (tmp_path / "loop.txt").symlink_to(target)
    with pytest.raises(corpus.CorpusError, match=f"loop.txt is a symbolic link to {target}, which cannot be followed"):
        corpus.expand([tmp_path])
    with pytest.raises(corpus.CorpusError, match="loop.txt is a symbolic link"):
        corpus.expand([str(tmp_path / "*.txt")])


def test_a_csv_quote_never_closed_is_named_with_its_line_not_read_to_the_end(tmp_path):
    # csv reads on past newlines looking for the closing quote: every later row would become one field
    content = 'id,text\n1,First row.\n2,"An open quote.\n3,Third row.\n4,Fourth row.\n'
    with pytest.raises(corpus.CorpusError, match=r"q.csv:3 is not valid CSV \(unexpected end of data\)"):
        _items(tmp_path, "q.csv", content)


@pytest.mark.parametrize("name, row", [("r.csv", "2,Cut here, and the rest is lost."), ("r.tsv", "2\tA tab\tinside.")])
def test_a_row_with_more_fields_than_the_header_is_refused_not_cut(tmp_path, name, row):
    sep = "\t" if name.endswith(".tsv") else ","
    content = f"id{sep}text\n1{sep}Fine.\n{row}\n"
    with pytest.raises(corpus.CorpusError, match=rf"{name}:3 has 3 fields, but the header 2"):
        _items(tmp_path, name, content)


def test_a_compressed_parquet_file_is_refused_with_the_way_to_read_it(tmp_path):
    pytest.importorskip("pyarrow")
    (tmp_path / "t.parquet.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    with pytest.raises(
        corpus.CorpusError, match=r"t.parquet.gz: Parquet is read in place.* decompress it first \(gunzip "
    ):
        list(corpus.stream([tmp_path / "t.parquet.gz"], corpus.ReadStats()))


def test_a_stray_nul_byte_in_utf8_text_is_not_taken_for_utf16(tmp_path):
    (tmp_path / "n.txt").write_bytes(b"Plain text here. " * 50 + b"\x00" + b"More plain text. " * 50)
    stats = corpus.ReadStats()
    assert list(corpus.stream([tmp_path / "n.txt"], stats)) == []
    reason = stats.skipped[str(tmp_path / "n.txt")]
    assert "UTF-16" not in reason and reason.startswith("binary (NUL bytes)") and "tr -d" in reason
