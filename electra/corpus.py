"""Corpus readers: files, folders, globs and Hugging Face datasets -> a stream of sentences.

The stream is flat and bounded in memory: `str` items are sentences, `None` ends a document.
Nothing holds a whole document, let alone a whole corpus: a document of one enormous line is
cut into pieces as it is read.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import glob
import gzip
import io
import json
import lzma
import os
import re
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

DECOMPRESS = {".gz": "gunzip", ".bz2": "bunzip2", ".xz": "unxz", ".zst": "unzstd"}  # the command for each
COMPRESSIONS = tuple(DECOMPRESS)
FORMATS = ("txt", "jsonl", "json", "csv", "tsv", "parquet")
_FORMAT_OF = {
    ".txt": "txt",
    ".text": "txt",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
}

MAX_SENTENCE_CHARS = 2000  # longer "sentences" (no punctuation) are cut at whitespace
_READ_CHUNK = 1 << 20  # characters per read: bounds memory on files with enormous lines

# Sentence ends: . ! ? (and Arabic ؟, Devanagari । ॥) then optional closing quotes/brackets, then
# whitespace; or CJK 。！？ with their closing quotes/brackets, which need no whitespace after them.
_SENTENCE_END = re.compile(
    r"([.!?\u061f\u0964\u0965][\"'\u201d\u2019)\]]*)\s+|([\u3002\uff01\uff1f\uff61][\"'\u201d\u2019)\]\u300d\u300f\uff09]*)\s*"
)
# C0/C1 control characters except tab and newline; the BOM; other zero-width junk.
_CONTROL = dict.fromkeys([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0), 0xFEFF])


@dataclass
class ReadStats:
    """What reading found: counted, reported, never silently dropped."""

    files: int = 0
    bytes: int = 0
    invalid_utf8: int = 0
    invalid_by_file: dict[str, int] = field(default_factory=dict)  # path -> bytes replaced there
    reading: str = ""  # the file being decoded (one at a time)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason
    noted: set[str] = field(default_factory=set)  # notes said: one reading may take several passes

    def count_invalid(self, n: int) -> None:
        self.invalid_utf8 += n
        self.invalid_by_file[self.reading] = self.invalid_by_file.get(self.reading, 0) + n


class CorpusError(ValueError):
    """Bad corpus input: the message names the file and what to do."""


# --------------------------------------------------------------------------------------
# Text normalisation and sentence splitting
# --------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Drop control characters and the BOM; CRLF/CR became LF when the file was decoded."""
    return text.translate(_CONTROL)


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of one paragraph (its line breaks already joined)."""
    out = []
    for s in _SENTENCE_END.sub(lambda m: (m[1] or m[2]) + "\n", paragraph).split("\n"):
        s = s.strip()
        while len(s) > MAX_SENTENCE_CHARS:
            cut = s.rfind(" ", 0, MAX_SENTENCE_CHARS)
            cut = cut if cut > 0 else MAX_SENTENCE_CHARS
            out.append(s[:cut])
            s = s[cut:].lstrip()
        if s:
            out.append(s)
    return out


def document_sentences(text: str) -> Iterator[str]:
    """Sentences of a whole document given as one string; blank lines separate paragraphs."""
    for paragraph in re.split(r"\n\s*\n", normalize(text)):
        yield from split_sentences(" ".join(paragraph.split()))


# --------------------------------------------------------------------------------------
# Opening files
# --------------------------------------------------------------------------------------


class _Counter:
    """A decode error handler that replaces invalid UTF-8 with U+FFFD and counts it."""

    def __init__(self, stats: ReadStats):
        self.stats = stats

    def __call__(self, err: UnicodeDecodeError):
        self.stats.count_invalid(err.end - err.start)
        return "\ufffd", err.end


def _handler_name(stats: ReadStats) -> str:
    name = f"electra-count-{id(stats)}"
    try:
        codecs.lookup_error(name)
    except LookupError:
        codecs.register_error(name, _Counter(stats))
    return name


def _open_binary(path: Path):
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    if suffix == ".xz":
        return lzma.open(path, "rb")
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError as e:
            raise CorpusError(f"{path} is zstd-compressed; pip install zstandard to read it") from e
        return io.BufferedReader(_Zstd(open(path, "rb"), zstandard.ZstdDecompressor()), buffer_size=1 << 16)
    return open(path, "rb")


class _Zstd(io.RawIOBase):
    """A .zst file (one or more frames) as a binary stream. zstandard's own reader ends quietly
    at a truncated frame; this one raises EOFError there, as gzip, bz2 and lzma do."""

    def __init__(self, file, decompressor):
        self._file, self._decompressor = file, decompressor
        self._frame = decompressor.decompressobj()
        self._out, self._pos, self._in_frame = b"", 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._pos == len(self._out):
            data = self._file.read(1 << 16)
            if not data:
                if self._in_frame:
                    raise EOFError("compressed file ended before the end-of-stream marker was reached")
                return 0
            out = []
            while data:
                if self._frame.eof:  # the next frame of a multi-frame file
                    self._frame = self._decompressor.decompressobj()
                out.append(self._frame.decompress(data))
                self._in_frame = not self._frame.eof
                data = self._frame.unused_data if self._frame.eof else b""
            self._out, self._pos = b"".join(out), 0
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def format_of(path: Path) -> str | None:
    name = path.name.lower()
    for c in COMPRESSIONS:
        if name.endswith(c):
            name = name[: -len(c)]
    return _FORMAT_OF.get(os.path.splitext(name)[1])


# byte-order marks, longest first: UTF-32's LE mark begins with UTF-16's
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _encoding(head: bytes) -> str:
    """UTF-16 or UTF-32 when the file opens with that byte-order mark, else UTF-8."""
    return next((name for bom, name in _BOMS if head.startswith(bom)), "utf-8-sig")


def _binary_reason(path: Path) -> str | None:
    """Why a file is not text (NUL bytes in UTF-8), or None when it is."""
    with _open_binary(path) as f:
        head = f.read(8192)
    if _encoding(head) != "utf-8-sig" or b"\x00" not in head:
        return None
    quarters = [head[i::4] for i in range(4)]
    for order, zeros in (("LE", quarters[2] + quarters[3]), ("BE", quarters[0] + quarters[1])):
        if not any(zeros):  # UTF-32 of the Basic Multilingual Plane: two NUL bytes in every four
            return _unmarked(f"UTF-32{order}")
    even, odd = head[0::2], head[1::2]
    for order, zeros, text in (("LE", odd, even), ("BE", even, odd)):  # UTF-16: NULs mostly on one side
        # ASCII's high bytes, against characters such as U+4E00; and more than a stray NUL in UTF-8 text
        if zeros.count(0) > 4 * text.count(0) and zeros.count(0) >= max(2, len(zeros) // 100):
            return _unmarked(f"UTF-16{order}")
    return "binary (NUL bytes), not text (text with a few stray NUL bytes can be kept: tr -d '\\000' removes them)"


def _unmarked(encoding: str) -> str:
    return f"NUL bytes: {encoding} text without a byte-order mark? convert it to UTF-8 (iconv -f {encoding} -t UTF-8)"


def _open_text(path: Path, stats: ReadStats) -> io.TextIOWrapper:
    """UTF-8 (a leading BOM dropped), or UTF-16/32 by their BOM; newline=None turns CRLF and CR into LF."""
    with _open_binary(path) as f:
        encoding = _encoding(f.read(4))
    stats.reading = str(path)
    return io.TextIOWrapper(_open_binary(path), encoding=encoding, errors=_handler_name(stats), newline=None)


# --------------------------------------------------------------------------------------
# Readers: each yields sentences and None at the end of every document
# --------------------------------------------------------------------------------------


def _read_txt(path: Path, stats: ReadStats, doc_per_file: bool) -> Iterator[str | None]:
    """Blank lines end a document (or a paragraph, with doc_per_file); long lines arrive in chunks."""
    with _open_text(path, stats) as f:
        buffer: list[str] = []  # pieces of the current paragraph
        size = 0
        in_doc = False
        while True:
            line = f.readline(_READ_CHUNK)
            if line and line.strip():
                buffer.append(line)
                size += len(line)
                if size > _READ_CHUNK:  # a huge paragraph: emit all but the last partial sentence
                    sentences = split_sentences(" ".join(normalize("".join(buffer)).split()))
                    tail = sentences.pop() if len(sentences) > 1 else ""
                    if tail and buffer[-1][-1:].isspace():  # the piece ended between words: keep them apart
                        tail += " "
                    yield from sentences
                    in_doc = True
                    buffer, size = ([tail], len(tail)) if tail else ([], 0)
                continue
            if buffer:
                yield from split_sentences(" ".join(normalize("".join(buffer)).split()))
                buffer, size, in_doc = [], 0, True
            if in_doc and (not doc_per_file or not line):
                yield None
                in_doc = False
            if not line:
                return


# a JSON escape like \ud800 that pairs with no other decodes to a lone surrogate: not Unicode
# text, and nothing can encode it as UTF-8
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _field(record, key: str, where: str, stats: ReadStats):
    if not isinstance(record, dict):
        raise CorpusError(f"{where}: expected a JSON object with a {key!r} field, got {type(record).__name__}")
    if key not in record:
        fields = ", ".join(map(repr, list(record)[:10])) or "none"
        raise CorpusError(f"{where} has no field {key!r} (fields: {fields}); pass --text-field NAME")
    value = record[key]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CorpusError(
            f"{where}: field {key!r} holds {type(value).__name__}, not text; name the text field with --text-field NAME"
        )
    value, lone = LONE_SURROGATE.subn("\ufffd", value)
    if lone:
        stats.count_invalid(lone)  # counted with invalid UTF-8: replaced by U+FFFD alike
    return value


def _documents(texts: Iterable[str]) -> Iterator[str | None]:
    for text in texts:
        sentences = list(document_sentences(text))
        if sentences:
            yield from sentences
            yield None


def _read_jsonl(path: Path, stats: ReadStats, key: str) -> Iterator[str | None]:
    def texts():
        with _open_text(path, stats) as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise CorpusError(
                            f"{path}:{n} is not valid JSON ({e.msg} at column {e.colno}); fix or remove that line"
                        ) from e
                    yield _field(record, key, f"{path}:{n}", stats)

    return _documents(texts())


def _read_json(path: Path, stats: ReadStats, key: str) -> Iterator[str | None]:
    with _open_text(path, stats) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise CorpusError(
                f"{path} is not valid JSON ({e.msg} at line {e.lineno}); for one object per line name the file .jsonl"
            ) from e
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise CorpusError(f"{path}: expected a list of objects with a {key!r} field")
    return _documents(_field(r, key, f"{path}[{i}]", stats) for i, r in enumerate(data))


def _read_csv(path: Path, stats: ReadStats, key: str, delimiter: str) -> Iterator[str | None]:
    def texts():
        with _open_text(path, stats) as f:
            # strict: a quote never closed is an error, not a field that swallows the rest of the file
            quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
            rows = csv.DictReader(f, delimiter=delimiter, quoting=quoting, strict=True)
            if rows.fieldnames is None:
                return
            if key not in rows.fieldnames:
                raise CorpusError(
                    f"{path} has no column {key!r} (columns: {', '.join(rows.fieldnames)}); pass --text-field NAME"
                )
            start = rows.line_num + 1  # the line the next row starts on
            try:
                for row in rows:
                    if None in row:  # more fields than the header: a delimiter inside unquoted text
                        n, header = len(rows.fieldnames) + len(row[None]), len(rows.fieldnames)
                        fix = "replace a tab inside a field" if delimiter == "\t" else "quote a field holding a comma"
                        raise CorpusError(
                            f"{path}:{start} has {n} fields, but the header {header}: {fix}, or remove that row"
                        )
                    yield row[key] or ""
                    start = rows.line_num + 1
            except csv.Error as e:
                raise CorpusError(
                    f"{path}:{start} is not valid CSV ({e}); close or double the quotes in that row, or remove it"
                ) from e

    csv.field_size_limit(1 << 30)
    return _documents(texts())


def _read_parquet(path: Path, key: str) -> Iterator[str | None]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise CorpusError(f"{path} is Parquet; pip install pyarrow to read it") from e
    if path.suffix.lower() in COMPRESSIONS:
        raise CorpusError(
            f"{path}: Parquet is read in place, by columns, and compresses its own columns; decompress it first "
            f"({DECOMPRESS[path.suffix.lower()]} {path})"
        )
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise CorpusError(f"{path} is not a readable Parquet file ({e})") from e
    if key not in pf.schema_arrow.names:
        raise CorpusError(
            f"{path} has no column {key!r} (columns: {', '.join(pf.schema_arrow.names)}); pass --text-field NAME"
        )

    def texts():
        for batch in pf.iter_batches(columns=[key], batch_size=1024):
            yield from batch.column(0).to_pylist()

    return _documents(_text_values(texts(), key, str(path)))


def _text_values(values: Iterable, key: str, where: str) -> Iterator[str]:
    """A column's values as texts (a null one empty); a column of numbers or lists is refused."""
    for value in values:
        if value is not None and not isinstance(value, str):
            raise CorpusError(
                f"{where}: column {key!r} holds {type(value).__name__} values, not text; pass --text-field NAME "
                "of a text column"
            )
        yield value or ""


def read_records(dataset, key: str, where: str) -> Iterator[str | None]:
    names = getattr(dataset, "column_names", None)
    if names is not None and key not in names:
        raise CorpusError(f"{where} has no column {key!r} (columns: {', '.join(names)}); pass --text-field NAME")
    return _documents(_text_values((row[key] for row in dataset), key, where))


# --------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists()
    )


def source_kind(path: Path, fmt: str = "auto") -> str:
    """How a source is read: one of FORMATS, or "records" for a saved dataset."""
    return "records" if _is_saved_dataset(path) else (format_of(path) if fmt == "auto" else fmt) or "unknown"


def _is_output(folder: Path) -> bool:
    """Written by a tool, not gathered as text: prepared data, a tokenizer, model or checkpoint
    (each with a tokenizer_config.json), or a pre-training run (config.json and metrics.jsonl).
    Their vocab.txt, tokenizer.json, config.json and logs are not corpus."""
    has = lambda name: (folder / name).is_file()  # noqa: E731
    return has("tokenizer_config.json") or (has("config.json") and has("metrics.jsonl"))


def _missing(path: Path) -> str:
    if path.is_symlink():
        return (
            f"{path} is a symbolic link to {os.readlink(path)}, which cannot be followed (it does not exist, or "
            "leads back to itself); fix or remove the link"
        )
    return f"{path} does not exist"


def expand(paths: Iterable[str | os.PathLike], fmt: str = "auto") -> list[Path]:
    """Files (and saved datasets) named by paths, folders and globs, in a stable order."""
    out: list[Path] = []
    skipped: set[Path] = set()  # output folders among the corpus, whose files are not read
    for p in paths:
        p = str(p)
        matches = sorted(glob.glob(p, recursive=True)) if glob.has_magic(p) else [p]
        if not matches:
            raise CorpusError(f"no files match {p!r}")
        if glob.has_magic(p):  # a name given whole is read, whatever folder it is in
            outputs = {f for f in {Path(m).parent for m in matches} if _is_output(f)}  # each folder looked at once
            skipped |= {Path(m).parent for m in matches if Path(m).parent in outputs and Path(m).is_file()}
            matches = [m for m in matches if Path(m).parent not in outputs or not Path(m).is_file()]
        for m in map(Path, matches):
            if not m.exists():
                raise CorpusError(_missing(m))
            if _is_saved_dataset(m):
                out.append(m)
            elif m.is_dir():
                found = []
                for where, folders, files in os.walk(m):  # a saved dataset below is one source, not its files
                    here = Path(where)
                    if fmt == "auto":  # --format FMT reads only that kind of file
                        found += [here / d for d in folders if _is_saved_dataset(here / d)]
                    outputs = {d for d in folders if _is_output(here / d)}
                    skipped |= {here / d for d in outputs}
                    folders[:] = [d for d in folders if d not in outputs and not _is_saved_dataset(here / d)]
                    found += [
                        f
                        for f in map(here.joinpath, files)
                        if not f.name.startswith(".") and format_of(f) and (fmt == "auto" or format_of(f) == fmt)
                    ]
                found.sort()
                if broken := next((f for f in found if not f.exists()), None):  # a link to nothing, or a loop
                    raise CorpusError(_missing(broken))
                if not found:
                    kinds = ", ".join(f".{k}" for k in FORMATS)
                    if fmt != "auto" and any(format_of(f) for _, _, fs in os.walk(m) for f in map(Path, fs)):
                        raise CorpusError(f"{m} holds no .{fmt} files, only other kinds; drop --format {fmt}")
                    raise CorpusError(f"{m} holds no corpus files ({kinds}, optionally {', '.join(COMPRESSIONS)})")
                out += found
            else:
                out.append(m)
    if skipped:
        names = ", ".join(map(str, sorted(skipped)[:3])) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        print(
            f"note: not reading {names}: prepared data, a tokenizer, model or pre-training run, not corpus text "
            "(name a file in it to read it anyway)",
            file=sys.stderr,
        )
    if not out:
        raise CorpusError("no corpus given; pass files, folders or globs with --corpus")
    unique: dict[Path, Path] = {}  # each file once, where it is first named
    for m in out:
        unique.setdefault(m.resolve(), m)
    if len(unique) < len(out):
        repeats = len(out) - len(unique)
        print(f"note: {repeats} corpus name(s) repeat a file named before; each file is read once", file=sys.stderr)
    return list(unique.values())


def read_source(
    path: Path, stats: ReadStats, fmt: str = "auto", text_field: str = "text", doc_per_file: bool = False
) -> Iterator[str | None]:
    """Sentences and document ends of one file or saved dataset."""
    if _is_saved_dataset(path):
        try:
            import datasets
        except ImportError as e:
            raise CorpusError(f"{path} is a saved Hugging Face dataset; pip install datasets to read it") from e
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds and len(ds) != 1:
                raise CorpusError(
                    f"{path} holds the splits {', '.join(ds)} and no 'train'; pass one split's folder, "
                    f"e.g. {path / next(iter(ds))}"
                )
            note = f"note: {path} has no 'train' split; reading its only split, {next(iter(ds))!r}"
            if "train" not in ds and note not in stats.noted:
                stats.noted.add(note)
                print(note, file=sys.stderr)
            ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
        return read_records(ds, text_field, str(path))
    kind = format_of(path) if fmt == "auto" else fmt
    if kind is None:
        raise CorpusError(f"{path}: unknown file type; use one of .{', .'.join(FORMATS)} or pass --format")
    if not os.access(path, os.R_OK):
        raise CorpusError(f"{path} cannot be read (permission denied)")
    reason = None if kind == "parquet" else _binary_reason(path)
    if reason:
        stats.skipped[str(path)] = reason
        return iter(())
    if kind == "txt":
        return _read_txt(path, stats, doc_per_file)
    if kind == "jsonl":
        return _read_jsonl(path, stats, text_field)
    if kind == "json":
        return _read_json(path, stats, text_field)
    if kind in ("csv", "tsv"):
        return _read_csv(path, stats, text_field, "\t" if kind == "tsv" else ",")
    return _read_parquet(path, text_field)


def hub_dataset(name: str, config: str | None = None, split: str = "train"):
    """A Hugging Face hub dataset, streamed; needs the `datasets` extra and the hub."""
    try:
        import datasets
    except ImportError as e:
        raise CorpusError("reading a hub dataset needs the datasets package; pip install datasets") from e
    from electra import hub

    if why := hub.unreachable():  # streaming reads the hub as it goes: no cache to fall back on
        raise CorpusError(
            f"could not load dataset {name!r}: the Hugging Face hub cannot be reached ({why}); download it "
            "where the hub is reachable and pass the saved folder or its files with --corpus"
        )
    try:
        return datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as e:
        raise CorpusError(
            f"could not load dataset {name!r} ({type(e).__name__}: {e}); download it where the "
            "hub is reachable and pass the saved folder or its files with --corpus"
        ) from e


def _zstd_error() -> type[Exception]:
    try:
        import zstandard
    except ImportError:
        return OSError
    return zstandard.ZstdError


def stream(
    paths: list[Path], stats: ReadStats, fmt: str = "auto", text_field: str = "text", doc_per_file: bool = False
) -> Iterator[str | None]:
    """Every sentence of every source, `None` after each document; counts files and bytes into
    `stats` (a file skipped as binary is reported in `stats.skipped` instead)."""
    for path in paths:
        try:
            items = read_source(path, stats, fmt, text_field, doc_per_file)
            if str(path) not in stats.skipped:
                stats.files += 1
                stats.bytes += path.stat().st_size if path.is_file() else 0
            yield from items
        except (OSError, EOFError, lzma.LZMAError, csv.Error, zlib.error, _zstd_error()) as e:
            damaged = path.suffix.lower() in COMPRESSIONS and not isinstance(e, PermissionError)
            fix = "; it is damaged or cut short: fetch it again, or leave it out" if damaged else ""
            raise CorpusError(f"{path} could not be read ({type(e).__name__}: {e}){fix}") from e
