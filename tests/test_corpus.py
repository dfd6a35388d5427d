"""Readers never crash on arbitrary input: they yield sentences or raise a CorpusError."""

import json

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
