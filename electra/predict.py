"""`electra predict`: label text with a fine-tuned sequence classifier, in length-sorted batches."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import torch
from tqdm import tqdm

from electra import hf
from electra.finetune import Encoded, batches
from electra.parallel import pick_device
from electra.tasks import TaskError, jsonl_records, table_rows, utf8
from electra.tokenizer import load_tokenizer

FORMATS = ("lines", "csv", "tsv", "jsonl")


def read_inputs(
    source: str | os.PathLike | None,
    text_field: str | None = None,
    pair_field: str | None = None,
    fmt: str | None = None,
) -> tuple[list[tuple[str, str | None]], int]:
    """Texts (and pairs) from a file or stdin: .jsonl records, .csv/.tsv columns, or plain lines.

    `fmt` (one of FORMATS) overrides the file's suffix; stdin is plain lines unless it is given.
    Blank plain lines are skipped and counted; a record without the field is an error.
    """
    stdin = source is None or str(source) == "-"
    name = "stdin" if stdin else str(source)
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    suffix = f".{fmt}" if fmt else ".txt" if stdin else Path(source).suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl") and (text_field or pair_field):
        raise ValueError(
            f"{name} is read as plain lines, which have no fields; for columns or JSON fields pass "
            "--format csv, tsv or jsonl (or an --input file with that suffix)"
        )
    if stdin:
        with utf8("stdin"):
            return _read(sys.stdin, name, suffix, text_field or "text", pair_field)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"input file {path} does not exist")
    with open(path, encoding="utf-8-sig", newline="") as f, utf8(str(path)):
        return _read(f, str(path), suffix, text_field or "text", pair_field)


def _read(stream, name: str, suffix: str, text_field: str, pair_field: str | None):
    if suffix == ".jsonl":
        records = jsonl_records(stream, name, [f for f in (text_field, pair_field) if f])
        return [(str(r[text_field]), None if pair_field is None else str(r[pair_field])) for _, r in records], 0
    if suffix in (".csv", ".tsv"):  # read as fine-tuning reads them (GLUE's TSVs are unquoted)
        return [(e.text, e.pair) for e in table_rows(stream, name, suffix == ".tsv", text_field, pair_field, None)], 0
    texts, blank = [], 0
    for line in stream:
        line = line.rstrip("\r\n")
        if line.strip():
            texts.append((line, None))
        else:
            blank += 1
    return texts, blank


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

    @torch.no_grad()
    def __call__(
        self, texts: list[tuple[str, str | None]], batch_size: int = 64, truncate: bool = True, chunk_size: int = 8192
    ) -> tuple[list[dict], int]:
        """One {"label", "score"} per text (regression: {"score"}), in input order; and the truncation count.

        Texts are encoded `chunk_size` at a time (memory stays flat however many there are) and
        sorted by length within a chunk, so that a batch pads little.
        """
        if batch_size < 1 or chunk_size < 1:
            raise ValueError(f"batch size and chunk size must be at least 1, got {batch_size} and {chunk_size}")
        pad_id = self.tok.token_to_id("[PAD]")
        out: list[dict] = [{}] * len(texts)
        truncated = 0
        bar = tqdm(total=len(texts), desc="predict", unit="text", disable=None, dynamic_ncols=True)
        for start in range(0, len(texts), chunk_size):
            part = texts[start : start + chunk_size]
            encodings = self.tok.encode_batch([t if p is None else (t, p) for t, p in part])
            over = [i for i, enc in enumerate(encodings) if enc.overflowing]
            if over and not truncate:
                bar.close()
                raise TaskError(
                    f"input {start + over[0] + 1} is longer than {self.limit} tokens; raise --max-length or "
                    "drop --no-truncate"
                )
            truncated += len(over)
            data = Encoded([e.ids for e in encodings], [e.type_ids for e in encodings], [0] * len(encodings))
            del encodings
            for group, ids, types, mask, _ in batches(data, batch_size, None, pad_id):
                logits = self.model(ids.to(self.device), types.to(self.device), mask.to(self.device)).float().cpu()
                for r, i in enumerate(group):
                    out[start + i] = self._record(logits[r])
                bar.update(len(group))
        bar.close()
        return out, truncated

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


def write_jsonl(records: Iterable[dict], texts, target: str | os.PathLike | None) -> None:
    lines = "".join(
        json.dumps({"text": t if p is None else [t, p], **r}) + "\n" for (t, p), r in zip(texts, records, strict=True)
    )
    if target is None or str(target) == "-":
        sys.stdout.write(lines)
    else:
        from electra.atomic import publish_file

        publish_file(target, lines)
