"""`electra predict`: label, tag or answer questions about text with a fine-tuned model, in length-sorted batches."""

from __future__ import annotations

import io
import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from electra import hf, qa
from electra.finetune import Encoded, batches, check_threshold
from electra.parallel import autocast, pick_device, resolve_precision
from electra.progress import progress_bar
from electra.tasks import Example, TaskError, jsonl_records, table_rows, unicode_text, utf8
from electra.tokenizer import encode_cut, head_chars, load_model_tokenizer

FORMATS = ("lines", "csv", "tsv", "jsonl")
FIELDED = (".csv", ".tsv", ".jsonl")  # inputs read by column or field


def input_suffix(source: str | os.PathLike | None, fmt: str | None) -> str:
    """How an input is read, as a suffix: `fmt`'s, else the file's; stdin (None or "-") is .txt."""
    stdin = source is None or str(source) == "-"
    return f".{fmt}" if fmt else ".txt" if stdin else Path(source).suffix.lower()


NO_ID = object()  # an input without an id (None is a JSON record's null id)


class Text(tuple):
    """One input, (text, pair), and its `id`: a record's or row's identifier, or NO_ID."""

    def __new__(cls, text: str, pair: str | None, ident=NO_ID):
        self = super().__new__(cls, (text, pair))
        self.id = ident
        return self


class Inputs:
    """Texts (and pairs) streamed from a file or stdin: .jsonl records, .csv/.tsv columns, or plain lines.

    `fmt` (one of FORMATS) overrides the file's suffix; stdin is plain lines unless it is given.
    Iterating reads the source once, as it goes, yielding a `Text` per input; blank plain lines
    are skipped and counted in `blank`; a record without the field is an error when it is reached.
    Each Text's `id` is its record's `id_field` (a field or column; an error where one lacks
    it), else its "id" where it has one.
    """

    def __init__(
        self,
        source: str | os.PathLike | None,
        text_field: str | None = None,
        pair_field: str | None = None,
        fmt: str | None = None,
        id_field: str | None = None,
    ):
        self.stdin = source is None or str(source) == "-"
        self.name = "stdin" if self.stdin else str(source)
        if fmt is not None and fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        self.suffix = input_suffix(source, fmt)
        if self.suffix == ".json":  # one JSON document is none of the formats: read as lines, it would be garbage
            raise ValueError(
                f"{source} is a .json file; inputs are .jsonl (one JSON object per line), .csv/.tsv or plain lines: "
                "save it as one of those, or pass --format to say how to read it"
            )
        if self.suffix not in FIELDED and (text_field or pair_field or id_field):
            raise ValueError(
                f"{self.name} is read as plain lines, which have no fields; for columns or JSON fields pass "
                "--format csv, tsv or jsonl (or an --input file with that suffix)"
            )
        if not self.stdin and not Path(source).exists():
            raise FileNotFoundError(f"input file {source} does not exist")
        if not self.stdin and Path(source).is_dir():
            raise IsADirectoryError(f"input {source} is a folder; name the file to read (or - for stdin)")
        self.text_field, self.pair_field, self.id_field = text_field or "text", pair_field, id_field
        self.blank = 0

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        if self.stdin:  # read as a file is: strict UTF-8 (not Python's escapes of bad bytes), any line end
            raw = getattr(sys.stdin, "buffer", None)
            stream = sys.stdin if raw is None else io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            try:
                with utf8("stdin"):
                    yield from self._read(stream)
            finally:
                if raw is not None:
                    stream.detach()  # stdin stays open
            return
        with open(self.name, encoding="utf-8-sig", newline="") as f, utf8(self.name):
            yield from self._read(f)

    def _read(self, stream) -> Iterator[Text]:
        text, pair, ident = self.text_field, self.pair_field, self.id_field
        if self.suffix == ".jsonl":  # without --pair-field, a record's "pair" is its second text, as serve reads it
            required = {"text": text, "pair": pair, "id": ident}
            for n, r in jsonl_records(stream, self.name, required, null_pair=True):
                second = (r.get("pair") if text != "pair" else None) if pair is None else r[pair]
                if pair is None and second is not None:
                    unicode_text(second, f"{self.name}:{n}: 'pair'")
                yield Text(r[text], second, r.get(ident or "id", NO_ID))
        elif self.suffix in (".csv", ".tsv"):  # read as fine-tuning reads them (GLUE's TSVs are unquoted)
            tsv, optional = self.suffix == ".tsv", ident is None
            found = pair is None and text != "pair"  # without --pair-field, a "pair" column, as in .jsonl
            second_field = "pair" if found else pair
            rows = table_rows(
                stream,
                self.name,
                tsv,
                text,
                second_field,
                None,
                ident=ident or "id",
                ident_optional=optional,
                pair_optional=found,
            )
            for e in rows:  # a found "pair" column's empty cell is a single text, as a null pair is
                second = e.pair if pair is not None or e.pair else None
                yield Text(e.text, second, NO_ID if e.id is None else e.id)
        else:
            for line in stream:
                line = line.rstrip("\r\n")
                if line.strip():
                    yield Text(line, None)
                else:
                    self.blank += 1


class Predictor:
    """A fine-tuned model (folder or hub name) loaded once, for any number of calls.

    A sequence classifier gives each text {"label", "score"} ({"score"} for regression), as
    pipeline("sentiment-analysis") does, scores included: softmax over the labels, or sigmoid
    for a multi-label folder or a single logit not marked regression (`scores_function`); a
    multi-label folder's records also hold "labels": every label scored above `threshold` (default
    0.5, as fine-tuning scores), likeliest first.
    With `all_scores`, a sequence classifier's records hold "scores" too: every label's
    {"label", "score"}, likeliest first, as pipeline(top_k=None) gives them.
    A token classifier gives {"entities": [...]}, each
    {"entity_group", "score", "word", "start", "end"}, as pipeline("token-classification",
    aggregation_strategy="first") does: a word takes the tag of its first piece (the piece
    fine-tuning scores), B-/I- runs of one type form an entity, and "O" words are left out.
    With `stride`, a tagger reads a text longer than `max_length` tokens whole, in windows
    that overlap by `stride` tokens (the pipeline's `stride`), instead of cutting it.
    A question answerer reads (question, context) pairs and gives {"answer", "score", "start",
    "end"}: the best span over windows of the context (`stride` tokens shared, as in
    fine-tuning; see electra.qa), its probability, and its characters in the context. With
    `allow_no_answer` (default: when the folder was fine-tuned on SQuAD 2.0) the answer may
    be "" when the model scores no answer above every span by more than `null_threshold`.
    `precision` fp32 (the default: the pipeline's numbers) or bf16 / fp16 autocast, faster on
    GPUs (and bf16 on CPUs with AMX) at about three significant digits; auto as in fine-tuning.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        max_length: int | None = None,
        device: str = "auto",
        stride: int | None = None,
        allow_no_answer: bool | None = None,
        null_threshold: float | None = None,
        precision: str = "fp32",
        all_scores: bool = False,
        threshold: float | None = None,
    ):
        self.folder = folder = hf.resolve(model_dir)
        self.model, self.id2label, self.kind = hf.load_classifier(folder)
        if self.kind != "span" and (allow_no_answer is not None or null_threshold is not None):
            raise ValueError(
                f"--allow-no-answer and --null-threshold are for question answerers; {folder} is a {self.kind} "
                "classifier: drop them"
            )
        if self.kind == "span":  # answer as fine-tuning evaluated: its windows and threshold
            recorded = hf.read_results(folder)
            fine = hf.fine_tuned_options(recorded)
            max_length = fine["max_length"] if max_length is None else max_length
            if stride is None and max_length is not None:
                stride = qa.fine_tuned_stride(max_length, fine["doc_stride"], "--stride")
            null_threshold = fine["null_threshold"] if null_threshold is None else null_threshold
            if allow_no_answer is None:
                allow_no_answer = recorded.get("task") == "squad_v2"
        self.tagger = self.kind == "token"
        self.all_scores = all_scores
        problem = hf.read_config(folder).get("problem_type")
        self.scores = scores_function(problem, len(self.id2label))
        self.multi_label = problem == "multi_label_classification"
        regression = self.scores == "none" and len(self.id2label) == 1
        if all_scores and (self.kind != "sequence" or regression):
            what = "a regression model (one score)" if regression else f"a {self.kind} model"
            raise ValueError(f"--all-scores is for classifiers' labels; {folder} is {what}: drop it")
        if threshold is not None and not self.multi_label:
            what = "a regression model" if regression else f"a {self.kind} classifier of one label per input"
            raise ValueError(f"--threshold is for multi-label classifiers; {folder} is {what}: drop it")
        self.threshold = check_threshold(0.5 if threshold is None else threshold)
        self.device = pick_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model.to(self.device).eval()
        self.tok = load_model_tokenizer(folder, self.model.cfg.vocab_size)
        self.pad_id, self.unk_id = self.tok.token_to_id("[PAD]"), self.tok.token_to_id("[UNK]")
        self.join = self.tok.decoder.decode if self.tok.decoder is not None else " ".join  # word pieces -> text
        self.limit = self.model.cfg.max_positions if max_length is None else max_length
        if not 3 <= self.limit <= self.model.cfg.max_positions:
            raise ValueError(
                f"max-length must be 3 ([CLS], a token, [SEP]) to the model's {self.model.cfg.max_positions} "
                f"positions, got {self.limit}"
            )
        self.stride = stride
        self.allow_no_answer = bool(allow_no_answer)
        self.null_threshold = null_threshold or 0.0
        if self.kind == "span":
            qa.window_stride(self.limit, stride)  # a bad stride is refused now, not at the first question
            return  # electra.qa windows each chunk itself
        if stride is not None:
            if not self.tagger:
                raise ValueError("--stride reads long texts in windows for a token classifier; this is a classifier")
            special = self.tok.post_processor
            room = self.limit - (special.num_special_tokens_to_add(False) if special is not None else 0)
            if not 0 <= stride < room:
                raise ValueError(f"stride must be 0 to {room - 1} (a window holds {room} text tokens), got {stride}")
        self.tok.enable_truncation(self.limit, stride=stride or 0, strategy="longest_first")
        self.head_chars = head_chars(self.tok, self.limit) if stride is None else None  # see encode_cut

    def __call__(
        self,
        texts: list[tuple[str, str | None]],
        batch_size: int = 64,
        truncate: bool = True,
        chunk_size: int = 8192,
        progress: bool | None = None,
    ) -> tuple[list[dict], int]:
        """One record per text (see the class), in input order; and the truncation count."""
        out, truncated = [], 0
        for _, record, cut in self.stream(texts, batch_size, truncate, chunk_size, len(texts), progress):
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
        progress: bool | None = None,
    ) -> Iterator[tuple[tuple[str, str | None], dict, bool]]:
        """((text, pair), record, truncated) for each input, in input order, `chunk_size` at a time.

        Memory stays flat however many texts there are; within a chunk they are sorted by
        length, so that a batch pads little. `total` only sizes the progress bar, shown on a
        terminal unless `progress` says otherwise.
        """
        if batch_size < 1 or chunk_size < 1:
            raise ValueError(f"batch size and chunk size must be at least 1, got {batch_size} and {chunk_size}")
        texts = iter(texts)
        done = 0
        disable = None if progress is None else not progress
        with progress_bar(total=total, desc="predict", unit="text", disable=disable) as bar:
            while part := list(itertools.islice(texts, chunk_size)):
                label = self._answers if self.kind == "span" else self._labels
                records, cut = label(part, batch_size, truncate, done, bar)
                yield from zip(part, records, cut, strict=True)
                done += len(part)

    def _labels(self, part: list[tuple[str, str | None]], batch_size: int, truncate: bool, done: int, bar):
        """Classifier and tagger records of one chunk, and which texts were cut."""
        if self.tagger and any(p is not None for _, p in part):
            raise TaskError(
                'a token classifier tags single texts, not pairs; drop --pair-field (or the "pair" of .jsonl records)'
            )
        encodings = encode_cut(self.tok, part, self.head_chars, self.limit)
        if self.stride is None:  # one row per text, cut at the limit
            cut = [bool(enc.overflowing) for enc in encodings]
            rows = list(enumerate(encodings))
        else:  # one row per window
            cut = [False] * len(encodings)
            rows = [(i, window) for i, enc in enumerate(encodings) for window in (enc, *enc.overflowing)]
        if not truncate and any(cut):
            room = self.model.cfg.max_positions
            fix = f"raise --max-length (up to {room}) or" if self.limit < room else "shorten it or"
            raise TaskError(
                f"input {done + cut.index(True) + 1} is longer than {self.limit} tokens; {fix} drop --no-truncate"
                + (" (or tag it in windows with --stride)" if self.tagger else "")
            )
        data = Encoded([e.ids for _, e in rows], [e.type_ids for _, e in rows], [0] * len(rows))
        logits = self._logits(data, [i for i, _ in rows], batch_size, bar)
        if not self.tagger:
            return [self._record(x) for x in logits], cut
        windows: list[list[list[dict]]] = [[] for _ in part]
        for (i, enc), x in zip(rows, logits, strict=True):
            windows[i].append(self._entities(part[i][0], enc, x.numpy()))
        return [{"entities": w[0] if len(w) == 1 else overlapping(sum(w, []))} for w in windows], cut

    def _answers(self, part: list[tuple[str, str | None]], batch_size: int, truncate: bool, done: int, bar):
        """Question answerer records of one chunk, and which questions were cut."""
        if any(p is None for _, p in part):
            raise TaskError(
                "a question answerer needs a question and its context: read .jsonl or .csv/.tsv input with "
                "--text-field QUESTION and --pair-field CONTEXT (default question and context)"
            )
        w = qa.encode_windows(self.tok, [Example(q, c) for q, c in part], self.limit, self.stride)
        if not truncate and any(w.cut):
            raise TaskError(
                f"input {done + w.cut.index(True) + 1}'s question is longer than the "
                f"{qa.question_limit(self.limit)} tokens a question keeps in windows of {self.limit}; "
                "drop --no-truncate"
            )
        data = Encoded(w.ids, w.types, [0] * len(w.ids))
        logits = self._logits(data, w.question, batch_size, bar)
        contexts = [c for _, c in part]
        answers = qa.best_answers([x.numpy() for x in logits], w, contexts, self.allow_no_answer, self.null_threshold)
        return [{"answer": a.text, "score": a.score, "start": a.start, "end": a.end} for a in answers], w.cut

    def _logits(self, data: Encoded, text_of: list[int], batch_size: int, bar) -> list[torch.Tensor]:
        """Each row's logits, (labels,) or (T, ...) for its own tokens; rows in length-sorted batches.
        `text_of` gives each row's text, so that the bar counts a text when its last row is done."""
        out: list = [None] * len(data.ids)
        last = [j + 1 == len(text_of) or text_of[j + 1] != i for j, i in enumerate(text_of)]
        for group, ids, types, mask, _ in batches(data, batch_size, None, self.pad_id):
            with autocast(self.device, self.precision):
                logits = self.model(ids.to(self.device), types.to(self.device), mask.to(self.device))
            logits = logits.float().cpu()
            for r, j in enumerate(group):
                out[j] = logits[r] if logits.dim() == 2 else logits[r, : len(data.ids[j])]
            bar.update(sum(last[j] for j in group))
        return out

    def _record(self, logits: torch.Tensor) -> dict:
        if self.scores == "none" and self.model.num_labels == 1:
            return {"score": float(logits[0])}
        probs = {"softmax": logits.softmax(-1), "sigmoid": logits.sigmoid(), "none": logits}[self.scores]
        k = int(probs.argmax())
        record = {"label": self.id2label[k], "score": float(probs[k])}
        if not (self.multi_label or self.all_scores):
            return record
        order = probs.argsort(descending=True, stable=True)
        if self.multi_label:  # every label the model scores above the threshold, likeliest first
            record["labels"] = [self.id2label[int(j)] for j in order if probs[j] > self.threshold]
        if self.all_scores:
            record["scores"] = [{"label": self.id2label[int(j)], "score": float(probs[j])} for j in order]
        return record

    def _entities(self, text: str, enc, logits: np.ndarray) -> list[dict]:
        """The entities of one text from its token logits (T, labels), as the pipeline groups them."""
        scores = np.exp(logits - logits.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        words: list[dict] = []  # each word tagged by its first piece
        previous = None
        for i, w in enumerate(enc.word_ids):
            if enc.special_tokens_mask[i]:
                continue
            start, end = enc.offsets[i]
            piece = text[start:end] if enc.ids[i] == self.unk_id else enc.tokens[i]  # [UNK] shows what it stands for
            if words and w == previous:
                words[-1]["pieces"].append(piece)
                words[-1]["end"] = end
            else:
                k = int(scores[i].argmax())
                words.append(
                    {"tag": self.id2label[k], "score": scores[i, k], "pieces": [piece], "start": start, "end": end}
                )
            previous = w
        return entities_of(words, self.join)


def scores_function(problem_type: str | None, num_labels: int) -> str:
    """How a sequence classifier's logits become scores, as pipeline("text-classification") decides
    from config.json: "none" for regression, "sigmoid" for multi-label or a single logit, else "softmax"."""
    if problem_type == "regression":
        return "none"
    if problem_type == "multi_label_classification" or num_labels == 1:
        return "sigmoid"
    return "softmax"


def entities_of(words: list[dict], join=" ".join) -> list[dict]:
    """Entities from tagged words, each {"tag", "score", "pieces", "start", "end"}, as the pipeline groups them.

    A word continues the entity before it when it has the same type and does not start with
    B-; an entity's score is the mean of its words' scores; "O" runs are left out. `join`
    turns word pieces into text (the tokenizer's decoder).
    """
    groups: list[list[dict]] = []
    for word in words:
        bi, kind = _bio(word["tag"])
        if groups and kind == _bio(groups[-1][-1]["tag"])[1] and bi != "B":
            groups[-1].append(word)
        else:
            groups.append([word])
    return [
        {
            "entity_group": g[0]["tag"].split("-", 1)[-1],
            "score": float(np.mean(np.array([w["score"] for w in g], dtype=np.float32))),
            "word": join([join(w["pieces"]) for w in g]),
            "start": g[0]["start"],
            "end": g[-1]["end"],
        }
        for g in groups
        if g[0]["tag"].split("-", 1)[-1] != "O"
    ]


def overlapping(entities: list[dict]) -> list[dict]:
    """Entities found in overlapping windows of one text, each span once: of entities that
    overlap, the pipeline's rule keeps the longer, or at equal length the higher score."""
    entities = sorted(entities, key=lambda e: e["start"])
    kept: list[dict] = []
    for e in entities:
        if kept and kept[-1]["start"] <= e["start"] < kept[-1]["end"]:
            longer = e["end"] - e["start"] - (kept[-1]["end"] - kept[-1]["start"])
            if longer > 0 or longer == 0 and e["score"] > kept[-1]["score"]:
                kept[-1] = e
        else:
            kept.append(e)
    return kept


def _bio(tag: str) -> tuple[str, str]:
    """("B" or "I", entity type) of a tag; a tag without a B-/I- prefix continues its type."""
    if tag.startswith(("B-", "I-")):
        return tag[0], tag[2:]
    return "I", tag


def predict(
    model_dir: str | os.PathLike,
    texts: list[tuple[str, str | None]],
    batch_size: int = 64,
    max_length: int | None = None,
    truncate: bool = True,
    device: str = "auto",
    chunk_size: int = 8192,
    stride: int | None = None,
    allow_no_answer: bool | None = None,
    null_threshold: float | None = None,
    precision: str = "fp32",
    all_scores: bool = False,
    threshold: float | None = None,
) -> tuple[list[dict], int]:
    """Load `model_dir` and label, tag or answer `texts` (see `Predictor`)."""
    settings = (max_length, device, stride, allow_no_answer, null_threshold, precision, all_scores, threshold)
    predictor = Predictor(model_dir, *settings)
    return predictor(texts, batch_size, truncate, chunk_size)


def jsonl_line(text: tuple[str, str | None], record: dict, ascii: bool = False) -> str:
    """An output line: the input's id (a `Text` with one), its text (or [text, pair]) and `record`;
    text as it is (Köln, 北京), or with `ascii` as \\u escapes (for an output that cannot hold it)."""
    t, p = text
    ident = getattr(text, "id", NO_ID)
    line = {**({} if ident is NO_ID else {"id": ident}), "text": t if p is None else [t, p], **record}
    return json.dumps(line, ensure_ascii=ascii) + "\n"
