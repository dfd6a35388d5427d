"""`electra predict`: label text with a fine-tuned sequence classifier, in length-sorted batches."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import torch

from electra import hf
from electra.finetune import Encoded, batches
from electra.tasks import TaskError, jsonl_records
from electra.tokenizer import load_tokenizer


def read_inputs(
    source: str | os.PathLike | None, text_field: str = "text", pair_field: str | None = None
) -> tuple[list[tuple[str, str | None]], int]:
    """Texts (and pairs) from a file or stdin: .jsonl records, .csv/.tsv columns, or plain lines.

    Blank plain lines are skipped and counted; a record without the field is an error.
    """
    if source is None or str(source) == "-":
        return _read(sys.stdin, "stdin", ".txt", text_field, pair_field)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"input file {path} does not exist")
    with open(path, encoding="utf-8-sig", newline="") as f:
        return _read(f, str(path), path.suffix, text_field, pair_field)


def _read(stream, name: str, suffix: str, text_field: str, pair_field: str | None):
    fields = [f for f in (text_field, pair_field) if f]
    if suffix == ".jsonl":
        records = jsonl_records(stream, name, fields)
        return [(str(r[text_field]), None if pair_field is None else str(r[pair_field])) for _, r in records], 0
    if suffix in (".csv", ".tsv"):
        rows = csv.DictReader(stream, delimiter="\t" if suffix == ".tsv" else ",")
        missing = [f for f in fields if f not in (rows.fieldnames or [])]
        if missing:
            raise TaskError(
                f"{name} has no column {missing[0]!r} (columns: {', '.join(rows.fieldnames or [])}); pass --text-field"
            )
        return [(r[text_field], None if pair_field is None else r[pair_field]) for r in rows], 0
    texts, blank = [], 0
    for line in stream:
        line = line.rstrip("\r\n")
        if line.strip():
            texts.append((line, None))
        else:
            blank += 1
    return texts, blank


@torch.no_grad()
def predict(
    model_dir: str | os.PathLike,
    texts: list[tuple[str, str | None]],
    batch_size: int = 64,
    max_length: int | None = None,
    truncate: bool = True,
    device: str = "auto",
) -> tuple[list[dict], int]:
    """One {"label", "score"} per text (regression: {"score"}), in input order; and the truncation count."""
    folder = hf.resolve(model_dir)
    model, id2label = hf.load_sequence_classifier(folder)
    dev = torch.device(device if device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    model.to(dev).eval()
    tok = load_tokenizer(folder)
    limit = max_length or model.cfg.max_positions
    tok.enable_truncation(limit, strategy="longest_first")
    encodings = tok.encode_batch([t if p is None else (t, p) for t, p in texts])
    truncated = sum(1 for enc in encodings if enc.overflowing)
    if truncated and not truncate:
        first = next(i for i, enc in enumerate(encodings) if enc.overflowing)
        raise TaskError(f"input {first + 1} is longer than {limit} tokens; raise --max-length or drop --no-truncate")
    data = Encoded([e.ids for e in encodings], [e.type_ids for e in encodings], [0] * len(encodings))
    out: list[dict] = [{}] * len(encodings)
    # length-sorted, dynamically padded batches: similar lengths share a batch
    for group, ids, types, mask, _ in batches(data, batch_size, None, tok.token_to_id("[PAD]")):
        logits = model(ids.to(dev), types.to(dev), mask.to(dev)).float().cpu()
        if model.num_labels == 1:
            for r, i in enumerate(group):
                out[i] = {"score": float(logits[r, 0])}
        else:
            probs = logits.softmax(-1)
            for r, i in enumerate(group):
                k = int(probs[r].argmax())
                out[i] = {"label": id2label[k], "score": float(probs[r, k])}
    return out, truncated


def write_jsonl(records: Iterable[dict], texts, target: str | os.PathLike | None) -> None:
    lines = "".join(
        json.dumps({"text": t if p is None else [t, p], **r}) + "\n" for (t, p), r in zip(texts, records, strict=True)
    )
    if target is None or str(target) == "-":
        sys.stdout.write(lines)
    else:
        from electra.atomic import publish_file

        publish_file(target, lines)
