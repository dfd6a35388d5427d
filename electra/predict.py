"""`electra predict`: label text with a fine-tuned sequence classifier, in length-sorted batches."""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from electra import hf
from electra.finetune import Encoded, batches
from electra.parallel import pick_device
from electra.tasks import TaskError, jsonl_records, table_rows, utf8
from electra.tokenizer import load_tokenizer

FORMATS = ("lines", "csv", "tsv", "jsonl")


class Inputs:
    """Texts (and pairs) streamed from a file or stdin: .jsonl records, .csv/.tsv columns, or plain lines.

    `fmt` (one of FORMATS) overrides the file's suffix; stdin is plain lines unless it is given.
    Iterating reads the source once, as it goes; blank plain lines are skipped and counted in
    `blank`; a record without the field is an error when it is reached.
    """

    def __init__(
        self,
        source: str | os.PathLike | None,
        text_field: str | None = None,
        pair_field: str | None = None,
        fmt: str | None = None,
    ):
        self.stdin = source is None or str(source) == "-"
        self.name = "stdin" if self.stdin else str(source)
        if fmt is not None and fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        self.suffix = f".{fmt}" if fmt else ".txt" if self.stdin else Path(source).suffix.lower()
        if self.suffix not in (".csv", ".tsv", ".jsonl") and (text_field or pair_field):
            raise ValueError(
                f"{self.name} is read as plain lines, which have no fields; for columns or JSON fields pass "
                "--format csv, tsv or jsonl (or an --input file with that suffix)"
            )
        if not self.stdin and not Path(source).exists():
            raise FileNotFoundError(f"input file {source} does not exist")
        self.text_field, self.pair_field = text_field or "text", pair_field
        self.blank = 0

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        if self.stdin:
            with utf8("stdin"):
                yield from self._read(sys.stdin)
            return
        with open(self.name, encoding="utf-8-sig", newline="") as f, utf8(self.name):
            yield from self._read(f)

    def _read(self, stream) -> Iterator[tuple[str, str | None]]:
        text, pair = self.text_field, self.pair_field
        if self.suffix == ".jsonl":
            for _, r in jsonl_records(stream, self.name, {"text": text, "pair": pair}):
                yield str(r[text]), None if pair is None else str(r[pair])
        elif self.suffix in (".csv", ".tsv"):  # read as fine-tuning reads them (GLUE's TSVs are unquoted)
            for e in table_rows(stream, self.name, self.suffix == ".tsv", text, pair, None):
                yield e.text, e.pair
        else:
            for line in stream:
                line = line.rstrip("\r\n")
                if line.strip():
                    yield line, None
                else:
                    self.blank += 1


class Predictor:
    """A fine-tuned sequence classifier (folder or hub name) loaded once, for any number of calls."""

    def __init__(self, model_dir: str | os.PathLike, max_length: int | None = None, device: str = "auto"):
        folder = hf.resolve(model_dir)
        self.model, self.id2label = hf.load_sequence_classifier(folder)
        self.device = pick_device(device)
        self.model.to(self.device).eval()
        self.tok = load_tokenizer(folder)
        self.limit = self.model.cfg.max_positions if max_length is None else max_length
        if not 3 <= self.limit <= self.model.cfg.max_positions:
            raise ValueError(
                f"max-length must be 3 ([CLS], a token, [SEP]) to the model's {self.model.cfg.max_positions} "
                f"positions, got {self.limit}"
            )
        self.tok.enable_truncation(self.limit, strategy="longest_first")

    def __call__(
        self, texts: list[tuple[str, str | None]], batch_size: int = 64, truncate: bool = True, chunk_size: int = 8192
    ) -> tuple[list[dict], int]:
        """One {"label", "score"} per text (regression: {"score"}), in input order; and the truncation count."""
        out, truncated = [], 0
        for _, record, cut in self.stream(texts, batch_size, truncate, chunk_size, total=len(texts)):
            out.append(record)
            truncated += cut
        return out, truncated

    @torch.no_grad()
    def stream(
        self,
        texts: Iterable[tuple[str, str | None]],
        batch_size: int = 64,
        truncate: bool = True,
        chunk_size: int = 8192,
        total: int | None = None,
    ) -> Iterator[tuple[tuple[str, str | None], dict, bool]]:
        """((text, pair), record, truncated) for each input, in input order, `chunk_size` at a time.

        Memory stays flat however many texts there are; within a chunk they are sorted by
        length, so that a batch pads little. `total` only sizes the progress bar.
        """
        if batch_size < 1 or chunk_size < 1:
            raise ValueError(f"batch size and chunk size must be at least 1, got {batch_size} and {chunk_size}")
        pad_id = self.tok.token_to_id("[PAD]")
        texts = iter(texts)
        done = 0
        with tqdm(total=total, desc="predict", unit="text", disable=None, dynamic_ncols=True) as bar:
            while part := list(itertools.islice(texts, chunk_size)):
                encodings = self.tok.encode_batch([t if p is None else (t, p) for t, p in part])
                cut = [bool(enc.overflowing) for enc in encodings]
                if not truncate and any(cut):
                    raise TaskError(
                        f"input {done + cut.index(True) + 1} is longer than {self.limit} tokens; raise --max-length "
                        "or drop --no-truncate"
                    )
                data = Encoded([e.ids for e in encodings], [e.type_ids for e in encodings], [0] * len(encodings))
                del encodings
                records: list[dict] = [{}] * len(part)
                for group, ids, types, mask, _ in batches(data, batch_size, None, pad_id):
                    logits = self.model(ids.to(self.device), types.to(self.device), mask.to(self.device)).float().cpu()
                    for r, i in enumerate(group):
                        records[i] = self._record(logits[r])
                    bar.update(len(group))
                yield from zip(part, records, cut, strict=True)
                done += len(part)

    def _record(self, logits: torch.Tensor) -> dict:
        if self.model.num_labels == 1:
            return {"score": float(logits[0])}
        probs = logits.softmax(-1)
        k = int(probs.argmax())
        return {"label": self.id2label[k], "score": float(probs[k])}


def predict(
    model_dir: str | os.PathLike,
    texts: list[tuple[str, str | None]],
    batch_size: int = 64,
    max_length: int | None = None,
    truncate: bool = True,
    device: str = "auto",
    chunk_size: int = 8192,
) -> tuple[list[dict], int]:
    """Load `model_dir` and label `texts` (see `Predictor`)."""
    return Predictor(model_dir, max_length, device)(texts, batch_size, truncate, chunk_size)


def jsonl_line(text: tuple[str, str | None], record: dict) -> str:
    t, p = text
    return json.dumps({"text": t if p is None else [t, p], **record}) + "\n"
