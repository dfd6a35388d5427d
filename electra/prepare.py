"""`electra prepare`: corpus -> tokenizer -> packed, memory-mapped pre-training shards.

    DIR/
      tokenizer.json, vocab.txt, tokenizer_config.json
      train-00000.ids.npy     (rows, seq_len) uint16, or uint32 for vocabularies over 65,536
      train-00000.types.npy   (rows, seq_len) uint8 token types
      train-00000.lengths.npy (rows,) uint16/uint32 tokens before padding
      valid-00000.*.npy       the held-out split, same layout
      manifest.json           counts, sha256 of every file, tokenizer hash, the full config

Rows follow ELECTRA's recipe (Clark et al. 2020, and Google's build_pretraining_dataset):
consecutive sentences of one document fill `[CLS] A [SEP] B [SEP]` up to a target length;
10% of rows keep one segment; after 5% of rows the next target is a random shorter length;
rows never cross documents. Everything is seeded: same input, config and seed give
byte-identical output. The folder is published atomically.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import queue
import random
import shutil
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from electra import corpus
from electra.atomic import check_output, file_sha256, publish_dir, within
from electra.config import check_options
from electra.progress import progress_bar
from electra.tokenizer import (
    TOKENIZER_FILES,
    check_special_tokens,
    is_lowercase,
    load_tokenizer,
    register_specials,
    save_tokenizer,
    strips_accents,
    tokenizer_hash,
    train_wordpiece,
    vocab_in_order,
)

MANIFEST_FORMAT = "electra-shards-v1"
SPLITS = ("train", "valid")
SHARD_TOKENS = 1 << 26  # tokens a default shard holds at most


@dataclass(frozen=True)
class PrepareConfig:
    seq_len: int = 128
    seed: int = 0
    validation_fraction: float = 0.01
    one_segment_prob: float = 0.1  # paper: 10% of examples are a single segment
    short_target_prob: float = 0.05  # paper: 5% of examples get a random shorter length
    rows_per_shard: int | None = None  # None: 65,536 rows, fewer where rows are longer than 1,024 tokens
    vocab_size: int | None = 30522  # size of the vocabulary to train; None when reusing a tokenizer
    limit_alphabet: int | None = None  # keep only this many characters (the most frequent) in a trained one
    lowercase: bool = True
    strip_accents: bool | None = None  # None: strip them when lowercasing (BERT's uncased); False: keep them
    text_field: str = "text"
    format: str = "auto"
    doc_per_file: bool = False
    num_parts: int = 1  # documents are dealt round-robin over parts prepared on many machines
    part_index: int = 0

    def __post_init__(self) -> None:
        if not 8 <= self.seq_len <= 1 << 16:
            raise ValueError(f"seq_len {self.seq_len} is out of range; use 8 to 65536 (128 or 512 are typical)")
        if self.rows_per_shard is None:  # a shard holds at most 64M tokens: 128 MB of ids, written from memory
            object.__setattr__(self, "rows_per_shard", min(65536, max(1024, SHARD_TOKENS // self.seq_len)))
        check_options(
            self,
            **dict.fromkeys(("num_parts", "vocab_size", "rows_per_shard", "limit_alphabet"), "count"),
            part_index="count0",
            seed="seed",
            validation_fraction="fraction",
        )
        if not 0 <= self.part_index < self.num_parts:
            raise ValueError(f"part index {self.part_index} is outside 0..{self.num_parts - 1}")
        if self.format not in ("auto", *corpus.FORMATS):
            raise ValueError(f"unknown format {self.format!r}; use auto or one of {', '.join(corpus.FORMATS)}")


def too_long_words(tok: Tokenizer, text: str) -> list[str]:
    """The words of `text` (as the tokenizer cuts it) longer than its WordPiece model spells: each
    encodes as one [UNK], whatever the vocabulary. Text in a script written without spaces
    (Thai, Khmer) is such a word per phrase."""
    limit = getattr(tok.model, "max_input_chars_per_word", None)
    if limit is None or tok.pre_tokenizer is None:
        return []
    text = tok.normalizer.normalize_str(text) if tok.normalizer is not None else text
    return [w for w, _ in tok.pre_tokenizer.pre_tokenize_str(text) if len(w) > limit]


# --------------------------------------------------------------------------------------
# Packing: a pure, seeded state machine over token-id sentences
# --------------------------------------------------------------------------------------


class RowPacker:
    """Packs sentences (lists of ids, no specials) of one document at a time into rows.

    Each row is (ids, types) with ids = [CLS] A [SEP] (B [SEP]), unpadded.
    """

    def __init__(
        self,
        seq_len: int,
        cls_id: int,
        sep_id: int,
        rng: random.Random,
        one_segment_prob: float = 0.1,
        short_target_prob: float = 0.05,
    ):
        self.seq_len, self.cls, self.sep, self.rng = seq_len, cls_id, sep_id, rng
        self.one_segment_prob, self.short_target_prob = one_segment_prob, short_target_prob
        self.sentences: list[list[int]] = []
        self.length = 0
        self.target = seq_len
        self.truncated = 0  # tokens cut off by the recipe's trimming, reported in the manifest

    def add(self, sentence: list[int]) -> list[tuple[list[int], list[int]]]:
        """Add one sentence; returns the rows it completes (none, one, or several)."""
        rows = []
        limit = self.seq_len - 3  # room for [CLS] and two [SEP]s
        # a sentence longer than a whole row fills rows exactly, so none of its text is dropped
        while len(sentence) > limit:
            room = limit - self.length
            if room > 0:
                self._push(sentence[:room])
                sentence = sentence[room:]
            rows.append(self._row())
        if sentence:
            self._push(sentence)
            if self.length >= self.target:
                rows.append(self._row())
        return rows

    def _push(self, sentence: list[int]) -> None:
        self.sentences.append(sentence)
        self.length += len(sentence)

    def end_document(self) -> list[tuple[list[int], list[int]]]:
        return [self._row()] if self.sentences else []

    def _row(self) -> tuple[list[int], list[int]]:
        if self.rng.random() < self.one_segment_prob:
            first_target = 1 << 30  # everything in segment A, even the sentence that overflows
        else:
            first_target = (self.target - 3) // 2
        a: list[int] = []
        b: list[int] = []
        for s in self.sentences:
            # into A while it is empty or the sentence fits; a sentence that overflows A goes
            # there half the time when B is still empty, as in Google's recipe
            if not a or len(a) + len(s) < first_target or (not b and len(a) < first_target and self.rng.random() < 0.5):
                a += s
            else:
                b += s
        total = len(a) + len(b)
        a = a[: self.seq_len - 2]
        b = b[: max(0, self.seq_len - len(a) - 3)]
        self.truncated += total - len(a) - len(b)
        self.sentences, self.length = [], 0
        if self.rng.random() < self.short_target_prob:
            self.target = self.rng.randint(5, self.seq_len)
        else:
            self.target = self.seq_len
        ids = [self.cls, *a, self.sep]
        types = [0] * len(ids)
        if b:
            ids += [*b, self.sep]
            types += [1] * (len(b) + 1)
        return ids, types


# --------------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------------


def id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


class ShardWriter:
    """Buffers rows of one split and writes a shard of `rows_per_shard` rows at a time."""

    def __init__(self, folder: Path, split: str, seq_len: int, ids_dtype: np.dtype, rows_per_shard: int, pad_id: int):
        self.folder, self.split, self.seq_len, self.rows_per_shard = folder, split, seq_len, rows_per_shard
        self.ids_dtype, self.pad_id = ids_dtype, pad_id
        # the buffers grow with the rows given, up to a shard: a whole shard of long rows (65,536 of
        # 65,536 tokens) would take gigabytes before the first row, for a corpus that may fill a few
        self._allocate(min(rows_per_shard, 1024))
        self.n = 0
        self.shards: list[dict] = []
        self.rows = self.tokens = 0

    def _allocate(self, rows: int) -> None:
        self.ids = np.full((rows, self.seq_len), self.pad_id, dtype=self.ids_dtype)
        self.types = np.zeros((rows, self.seq_len), dtype=np.uint8)
        self.lengths = np.zeros(rows, dtype=np.uint16 if self.seq_len < 1 << 16 else np.uint32)

    def _grow(self) -> None:
        ids, types, lengths = self.ids, self.types, self.lengths
        self._allocate(min(2 * len(lengths), self.rows_per_shard))
        self.ids[: self.n], self.types[: self.n], self.lengths[: self.n] = ids, types, lengths

    def add(self, ids: list[int], types: list[int]) -> None:
        if self.n == len(self.lengths):
            self._grow()
        k = len(ids)
        self.ids[self.n, :k] = ids
        self.types[self.n, :k] = types
        self.lengths[self.n] = k
        self.n += 1
        self.rows += 1
        self.tokens += k
        if self.n == self.rows_per_shard:
            self.flush()

    def flush(self) -> None:
        if self.n == 0:
            return
        name = f"{self.split}-{len(self.shards):05d}"
        files = {}
        for kind, array in (("ids", self.ids), ("types", self.types), ("lengths", self.lengths)):
            path = self.folder / f"{name}.{kind}.npy"
            np.save(path, array[: self.n])
            files[kind] = {"path": path.name, "sha256": file_sha256(path)}
        self.shards.append({"name": name, "rows": self.n, "tokens": int(self.lengths[: self.n].sum()), "files": files})
        self.ids.fill(self.pad_id)
        self.types.fill(0)
        self.n = 0


# --------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------


@dataclass
class PrepareResult:
    out: Path
    manifest: dict
    stats: corpus.ReadStats
    seconds: float  # packing: read, encode, pack, write (after the tokenizer is ready)
    tokens_encoded: int = 0
    tokenizer_seconds: float = 0.0  # training (or loading) the tokenizer
    marks_stripped: float = 0.0  # share of the first sentences' characters that lost an accent or other mark


MARKS_SAMPLE = 5000  # sentences whose accents are counted


def marks(text: str) -> int:
    """Accents and other combining marks in `text`, those accent stripping removes (é holds one)."""
    return sum(unicodedata.category(c) == "Mn" for c in unicodedata.normalize("NFD", text))


def _batches(items: Iterator[str | None], max_chars: int = 1 << 20) -> Iterator[list[str | None]]:
    batch, size = [], 0
    for item in items:
        batch.append(item)
        if item is not None:
            size += len(item)
            if size >= max_chars:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


class _Prefetch:
    """Run an iterator in a background thread, `depth` items ahead.

    Tokenizers release the GIL while encoding, so reading, encoding and packing overlap.
    Errors in the thread are re-raised in the consumer; closing stops the thread.
    """

    _DONE = object()

    def __init__(self, iterator: Iterator, depth: int = 4):
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(iterator,), daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, iterator: Iterator) -> None:
        try:
            for item in iterator:
                if not self._put((item, None)):
                    return
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._put((None, e))
            return
        self._put((self._DONE, None))

    def __iter__(self):
        try:
            while True:
                item, error = self.queue.get()
                if error is not None:
                    raise error
                if item is self._DONE:
                    return
                yield item
        finally:
            self.stop.set()


def _own_part(items: Iterator[str | None], num_parts: int, part: int) -> Iterator[str | None]:
    """Keep the documents dealt to this part: document i goes to part i % num_parts."""
    doc = 0
    for item in items:
        if doc % num_parts == part:
            yield item
        if item is None:
            doc += 1


def _progress(total_bytes: int, quiet: bool, desc: str):
    return progress_bar(
        total=total_bytes or None,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=quiet,
        smoothing=0.1,
    )


def _tokenizer(tokenizer, cfg: PrepareConfig, read, total_bytes: int, quiet: bool) -> Tokenizer:
    """The given tokenizer, or one trained on the corpus (`read()` streams it afresh)."""
    if isinstance(tokenizer, Tokenizer):
        check_special_tokens(tokenizer, "the tokenizer")
        return register_specials(Tokenizer.from_str(tokenizer.to_str()))  # a copy: the caller's stays as it is
    if tokenizer is not None:
        return load_tokenizer(tokenizer)

    passes = itertools.count(1)

    def texts() -> Iterator[list[str]]:  # the trainer reads twice: alphabet, then merges
        stats = corpus.ReadStats()
        with _progress(total_bytes, quiet, f"tokenizer, pass {next(passes)} of 2") as bar:
            for batch in _batches(read(stats)):
                yield [s for s in batch if s is not None]
                bar.update(stats.bytes - bar.n)

    return train_wordpiece(
        texts,
        30522 if cfg.vocab_size is None else cfg.vocab_size,
        lowercase=cfg.lowercase,
        show_progress=False,
        limit_alphabet=cfg.limit_alphabet,
        strip_accents=cfg.strip_accents,
    )


def _check_reading_options(cfg: PrepareConfig, paths: list[Path], dataset) -> None:
    """Refuse a reading option that none of the sources would use (it would be silently ignored)."""
    kinds = {"records"} if dataset is not None else {corpus.source_kind(p, cfg.format) for p in paths}
    if cfg.text_field != "text" and kinds == {"txt"}:
        raise ValueError(
            "--text-field names a field of JSON, CSV, Parquet or dataset records; every source here is plain "
            "text (.txt), which has no fields: drop it"
        )
    if cfg.doc_per_file and "txt" not in kinds:
        raise ValueError(
            "--doc-per-file makes each .txt file one document; these sources are records (each one document "
            "already) with no .txt among them: drop it"
        )


def prepare(
    corpus_paths: list[str | os.PathLike],
    out: str | os.PathLike,
    cfg: PrepareConfig | None = None,
    tokenizer: str | os.PathLike | Tokenizer | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    dataset=None,
    dataset_source: dict | None = None,
) -> PrepareResult:
    """Turn a corpus into a tokenizer and shards under `out`; see the module docstring.

    `tokenizer` reuses an existing one (folder, tokenizer.json or vocab.txt); without it a
    WordPiece vocabulary of `cfg.vocab_size` is trained on the corpus. `dataset` is an
    iterable of records (e.g. a Hugging Face dataset) read instead of files; `dataset_source`
    says where it came from (a hub dataset's name, config and split), for the manifest and the
    model cards of models trained on it.
    """
    cfg = cfg or PrepareConfig()
    if tokenizer is not None:  # the vocabulary comes from the tokenizer
        if cfg.limit_alphabet is not None:
            raise ValueError("limit_alphabet shapes a vocabulary to train; a reused tokenizer has its own characters")
        cfg = dataclasses.replace(cfg, vocab_size=None)
    if cfg.num_parts > 1 and tokenizer is None:
        raise ValueError(
            "preparing in parts needs one shared tokenizer: train it first (a one-part run, or "
            "a subset) and pass --tokenizer to every part"
        )
    start = time.perf_counter()
    paths = corpus.expand(corpus_paths, cfg.format) if dataset is None else []
    _check_reading_options(cfg, paths, dataset)
    total_bytes = sum(p.stat().st_size for p in paths if p.is_file())
    check_output(out, overwrite, inputs=[*paths, None if isinstance(tokenizer, Tokenizer) else tokenizer])

    for folder in (p for p in (corpus_paths if dataset is None else ()) if Path(p).is_dir()):
        if within(out, folder):  # (the folder itself as the output is refused above, as an input)
            raise ValueError(
                f"the output {out} is inside the corpus folder {folder}: preparing that folder again would read "
                "the shards' tokenizer files as text; choose an output outside it"
            )

    noted: set[str] = set()  # the passes over the corpus share what they said

    def read(stats: corpus.ReadStats) -> Iterator[str | None]:
        stats.noted = noted
        if dataset is not None:
            return corpus.read_records(dataset, cfg.text_field, "the dataset")
        return corpus.stream(paths, stats, cfg.format, cfg.text_field, cfg.doc_per_file)

    with publish_dir(out, overwrite=overwrite) as tmp:
        tok = _tokenizer(tokenizer, cfg, read, total_bytes, quiet)
        tokenizer_seconds = time.perf_counter() - start
        start = time.perf_counter()
        save_tokenizer(tok, tmp, model_max_length=max(512, cfg.seq_len))
        vocab = tok.get_vocab_size(with_added_tokens=True)
        special = {name: tok.token_to_id(f"[{name.upper()}]") for name in ("pad", "unk", "cls", "sep", "mask")}
        # corpus text is plain text, as in Google's pipeline: "[SEP]" written in a book is not a separator
        tok.encode_special_tokens = True

        rng = random.Random(f"{cfg.seed}/{cfg.part_index}")  # one stream per part, stable across runs
        packer = RowPacker(
            cfg.seq_len, special["cls"], special["sep"], rng, cfg.one_segment_prob, cfg.short_target_prob
        )
        writers = {
            s: ShardWriter(tmp, s, cfg.seq_len, id_dtype(vocab), cfg.rows_per_shard, special["pad"]) for s in SPLITS
        }

        def emit(rows) -> None:
            for ids, types in rows:
                writers["valid" if rng.random() < cfg.validation_fraction else "train"].add(ids, types)

        stats = corpus.ReadStats()
        encoded = documents = sentences = unknown = long_words = chars = long_chars = 0
        unk = special["unk"]
        # how much of the text accent stripping changes (the first sentences'), when it was BERT's default
        watch_marks = tokenizer is None and cfg.strip_accents is None and cfg.lowercase
        sample_chars = sample_marks = 0
        items = _own_part(read(stats), cfg.num_parts, cfg.part_index)
        encoded_batches = _Prefetch(
            (batch, tok.encode_batch_fast([s for s in batch if s is not None], add_special_tokens=False))
            for batch in _Prefetch(_batches(items))
        )
        with _progress(total_bytes, quiet, "prepare") as bar:
            for batch, encodings in encoded_batches:
                encodings = iter(encodings)
                for item in batch:
                    if item is None:
                        documents += 1
                        emit(packer.end_document())
                    else:
                        sentences += 1
                        chars += len(item)
                        if watch_marks and sentences <= MARKS_SAMPLE:
                            sample_chars += len(item)
                            sample_marks += marks(item)
                        ids = next(encodings).ids
                        encoded += len(ids)
                        if unk in ids:
                            unknown += ids.count(unk)
                            long = too_long_words(tok, item)
                            long_words += len(long)
                            long_chars += sum(map(len, long))
                        emit(packer.add(ids))
                bar.update(stats.bytes - bar.n)
                rate = encoded / max(bar.format_dict["elapsed"], 1e-9)
                bar.set_postfix_str(f"{documents:,} docs, {encoded:,} tokens, {rate:,.0f} tok/s", refresh=False)
        emit(packer.end_document())
        for w in writers.values():
            w.flush()

        if writers["train"].rows == 0:
            where = ", ".join(map(str, corpus_paths)) if dataset is None else "the dataset"
            skipped = "".join(f"\n  skipped {p}: {why}" for p, why in stats.skipped.items())
            if cfg.num_parts > 1:  # the corpus may have text, none of it dealt to this part
                raise corpus.CorpusError(
                    f"part {cfg.part_index} of {cfg.num_parts} got no documents from {where} (document i goes to part "
                    f"i mod {cfg.num_parts}): it holds no text, or fewer than {cfg.part_index + 1} documents; "
                    f"use fewer parts{skipped}"
                )
            raise corpus.CorpusError(f"no text found in {where}; nothing to prepare{skipped}")

        manifest = {
            "format": MANIFEST_FORMAT,
            "seq_len": cfg.seq_len,
            "vocab_size": vocab,
            "ids_dtype": str(id_dtype(vocab)),
            "special_tokens": special,
            "tokenizer_sha256": tokenizer_hash(tok),
            "tokenizer_source": "trained"
            if tokenizer is None
            else str(tokenizer)
            if isinstance(tokenizer, (str, os.PathLike))
            else "given",
            # a reused tokenizer's own casing and accents
            "config": {**asdict(cfg), "lowercase": is_lowercase(tok), "strip_accents": strips_accents(tok)},
            "sources": [str(p) for p in paths] if dataset is None else ["<dataset>"],
            "dataset": dataset_source,
            "counts": {
                "files": stats.files,
                "bytes": stats.bytes,
                "documents": documents,
                "sentences": sentences,
                "tokens_encoded": encoded,
                "tokens_truncated": packer.truncated,
                "tokens_unknown": unknown,  # [UNK]: characters or words the vocabulary cannot spell
                "words_too_long": long_words,  # of those, whole words over the model's length limit
                "characters": chars,  # of the sentences read
                "characters_in_words_too_long": long_chars,  # text those [UNK]s stand for
                "invalid_utf8_bytes": stats.invalid_utf8,
                "skipped_files": stats.skipped,
            },
            "splits": {s: {"rows": w.rows, "tokens": w.tokens, "shards": w.shards} for s, w in writers.items()},
        }
        write_manifest(tmp, manifest)
    seconds = time.perf_counter() - start
    stripped = sample_marks / max(sample_chars, 1)
    return PrepareResult(Path(out), manifest, stats, seconds, encoded, tokenizer_seconds, stripped)


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_manifest(folder: str | os.PathLike) -> dict:
    path = Path(folder) / "manifest.json"
    if not Path(folder).exists():
        raise FileNotFoundError(f"{folder} does not exist; pass the folder `electra prepare --out` wrote")
    if not Path(folder).is_dir():
        raise NotADirectoryError(f"{folder} is a file; pass the folder `electra prepare --out` wrote")
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no manifest.json; prepare data with `electra prepare` first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged ({e}); prepare the data again") from e
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not an electra shard manifest ({MANIFEST_FORMAT})")
    return manifest


def verify(folder: str | os.PathLike) -> dict:
    """Check every shard file against its sha256 in the manifest, its shape against the manifest's
    rows and length, and the tokenizer files against each other and the manifest's vocab_size;
    returns the manifest. Damage is named here, before a run is started on it, not steps later."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    again = "the data folder is damaged or mixed up; prepare the data again"
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            for f in shard["files"].values():
                path = folder / f["path"]
                if not path.exists():
                    raise FileNotFoundError(f"{path} is missing; the data folder is incomplete: prepare it again")
                if file_sha256(path) != f["sha256"]:
                    raise ValueError(f"{path} does not match its sha256 in manifest.json; {again}")
            files = shard["files"]
            want = {"ids": (shard["rows"], manifest["seq_len"]), "types": (shard["rows"], manifest["seq_len"])}
            for name, shape in {**want, "lengths": (shard["rows"],)}.items():
                array = np.load(folder / files[name]["path"], mmap_mode="r")
                if array.shape != shape or (name == "ids" and array.dtype != np.dtype(manifest["ids_dtype"])):
                    raise ValueError(
                        f"{folder / files[name]['path']} holds {array.dtype} rows of shape {array.shape}, but "
                        f"manifest.json says {shape}"
                        + (f" of {manifest['ids_dtype']}" if name == "ids" else "")
                        + f"; {again}"
                    )
    _verify_tokenizer(folder, manifest, again)
    return manifest


def _verify_tokenizer(folder: Path, manifest: dict, again: str) -> None:
    """tokenizer.json is readable and of the manifest's vocab_size, and vocab.txt and
    tokenizer_config.json (which transformers reads, and checkpoints and exports copy) go with it."""
    for name in TOKENIZER_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing; the data folder is incomplete: prepare it again")
    try:
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as e:  # tokenizers raises a bare Exception on malformed files
        raise ValueError(f"{folder / 'tokenizer.json'} is not a valid tokenizer.json ({e}); {again}") from e
    # (not compared with manifest.json's tokenizer_sha256: that hashes the serialisation of the
    # tokenizers version that wrote it, which a later version may write otherwise)
    if tok.get_vocab_size() != manifest["vocab_size"]:
        raise ValueError(
            f"{folder / 'manifest.json'} says vocab_size {manifest['vocab_size']}, but tokenizer.json has "
            f"{tok.get_vocab_size()} entries; {again}"
        )
    written = ("\n".join(vocab_in_order(tok)) + "\n").encode("utf-8")  # as save_tokenizer writes it
    if (folder / "vocab.txt").read_bytes() != written:
        raise ValueError(f"{folder / 'vocab.txt'} does not list tokenizer.json's vocabulary in order; {again}")
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{folder / 'tokenizer_config.json'} is not JSON ({e}); {again}") from e
    if not isinstance(config, dict):
        raise ValueError(f"{folder / 'tokenizer_config.json'} is not a JSON object; {again}")


# settings every part of one preparation shares (rows_per_shard may differ: shards are renumbered)
PART_SETTINGS = (
    "seed",
    "validation_fraction",
    "one_segment_prob",
    "short_target_prob",
    "lowercase",
    "strip_accents",
    "text_field",
    "format",
    "doc_per_file",
)


def _part_setting(manifest: dict, key: str):
    config = manifest["config"]
    if key == "strip_accents" and key not in config:  # prepared before it was recorded: BERT's, as lowercase
        return config.get("lowercase")
    return config.get(key)


def merge(parts: list[str | os.PathLike], out: str | os.PathLike, overwrite: bool = False) -> dict:
    """Combine folders prepared with --num-parts into one (shards hard-linked where possible)."""
    if not parts:
        raise ValueError("nothing to merge; pass the part folders")
    manifests = [verify(p) for p in parts]
    first = manifests[0]
    for p, m in zip(parts, manifests, strict=True):
        one = "only parts of one preparation (the same corpus, tokenizer and options) can be merged"
        same = {  # the same rows, packing and noise
            **{k: (m[k], first[k]) for k in ("seq_len", "tokenizer_sha256", "ids_dtype")},
            "dataset": (m.get("dataset"), first.get("dataset")),  # hub parts read no files to compare
            **{k: (_part_setting(m, k), _part_setting(first, k)) for k in PART_SETTINGS},
        }
        for key, (mine, theirs) in same.items():
            if mine != theirs:
                raise ValueError(f"{p} was prepared with {key}={mine!r}, but {parts[0]} with {theirs!r}; {one}")
        read = [(c.get("bytes"), c.get("files")) for c in (m["counts"], first["counts"])]
        if read[0] != read[1]:  # every part reads the whole corpus, wherever it lies
            (b, f), (b0, f0) = read
            raise ValueError(f"{p} read {b:,} bytes in {f} file(s), but {parts[0]} {b0:,} in {f0}; {one}")
    seen: dict[int, str | os.PathLike] = {}
    for p, m in zip(parts, manifests, strict=True):
        index, num = m["config"].get("part_index"), m["config"].get("num_parts", 1)
        if index is None:
            raise ValueError(f"{p} is already a merged folder; merge the part folders it was made from")
        if num != first["config"].get("num_parts", 1):
            raise ValueError(
                f"{p} is part {index} of {num}, but {parts[0]} is part of {first['config'].get('num_parts', 1)}; "
                "only parts of one preparation can be merged"
            )
        if index in seen:
            raise ValueError(f"{seen[index]} and {p} are both part {index}; its rows would be merged twice")
        seen[index] = p
    indices = sorted(seen)
    check_output(out, overwrite, inputs=parts)
    with publish_dir(out, overwrite=overwrite) as tmp:
        for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
            shutil.copy2(Path(parts[0]) / name, tmp / name)
        splits = {s: {"rows": 0, "tokens": 0, "shards": []} for s in SPLITS}
        # every part reads the whole corpus (and keeps its share of the documents): the reading's
        # counts are each part's, what was kept adds up
        read = ("bytes", "files", "invalid_utf8_bytes", "skipped_files")
        counts: dict = {k: v for k, v in first["counts"].items() if k in read}
        for p, m in zip(parts, manifests, strict=True):
            for k, v in m["counts"].items():
                if k not in read:
                    counts[k] = counts.get(k, 0) + v
            for s in SPLITS:
                for shard in m["splits"][s]["shards"]:
                    name = f"{s}-{len(splits[s]['shards']):05d}"
                    files = {}
                    for kind, f in shard["files"].items():
                        dest = tmp / f"{name}.{kind}.npy"
                        try:
                            os.link(Path(p) / f["path"], dest)
                        except OSError:
                            shutil.copy2(Path(p) / f["path"], dest)
                        files[kind] = {"path": dest.name, "sha256": f["sha256"]}
                    splits[s]["shards"].append({**shard, "name": name, "files": files})
                    splits[s]["rows"] += shard["rows"]
                    splits[s]["tokens"] += shard["tokens"]
        manifest = {
            **first,
            "counts": counts,
            "splits": splits,
            "config": {**first["config"], "part_index": None, "parts_merged": indices},
            "sources": sorted({s for m in manifests for s in m["sources"]}),
        }
        write_manifest(tmp, manifest)
    return manifest
