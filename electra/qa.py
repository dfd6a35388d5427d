"""Extractive question answering (SQuAD 1.1 and 2.0): reading, windows, answer spans, EM and F1.

question + context ──encode──▶ windows of at most `max_length` tokens, [CLS] question [SEP]
context part [SEP], the context parts overlapping by `stride` tokens, each labelled with the
answer's first and last token ((0, 0), [CLS], where the window does not hold it)
──start and end logits──▶ the best span over all windows of a question (or no answer)
──▶ exact match and F1 against every gold answer, as the official evaluation computes them
"""

from __future__ import annotations

import json
import re
import string
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from electra.tasks import Example, TaskError, unicode_text, utf8

QUESTION_TOKENS = 64  # questions are cut to this many tokens, as in BERT's and ELECTRA's SQuAD code
N_BEST = 20  # start and end candidates considered per window
MAX_ANSWER_TOKENS = 30
DOC_STRIDE = 128  # tokens shared by neighbouring windows (at most half a window's context)


def question_limit(max_length: int) -> int:
    """The tokens a question keeps in windows of `max_length`: 64, or less where windows are short."""
    return min(QUESTION_TOKENS, (max_length - 3) // 2)


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _answer(answer: dict, where: str) -> tuple[str, int]:
    start = answer["answer_start"]
    if isinstance(start, str) and start.isdecimal():
        start = int(start)
    if not isinstance(start, int):
        raise TaskError(f"{where} has an answer_start that is no character position: {start!r}")
    return unicode_text(answer["text"], f"{where}'s answer"), start


def read_squad(path: str | Path) -> list[Example]:
    """SQuAD JSON (data -> paragraphs -> qas): one Example per question, text the question, pair
    the context, label the list of (answer text, character start) pairs: empty for a SQuAD 2.0
    question that has no answer."""
    path = Path(path)
    with open(path, encoding="utf-8-sig") as f, utf8(str(path)):
        try:
            doc = json.load(f)
        except ValueError as e:
            raise TaskError(f"{path} is not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise TaskError(f'{path} is not SQuAD JSON: expected {{"data": [articles with paragraphs and qas]}}')
    out, seen = [], {}
    place = "the top"  # where a missing field or a wrong type is, for the message
    try:
        for i, article in enumerate(doc["data"], 1):
            place = f"article {i}"
            for j, paragraph in enumerate(article["paragraphs"], 1):
                place = f"article {i}, paragraph {j}"
                context = paragraph["context"]
                for k, qa in enumerate(paragraph["qas"], 1):
                    place = f"article {i}, paragraph {j}, question {k}"
                    answers = [] if qa.get("is_impossible") else qa["answers"]
                    where = f"{path}: question {qa.get('id', len(out))!r}"
                    spans = [_answer(a, where) for a in answers]
                    question, context = unicode_text(qa["question"], where), unicode_text(context, f"{where}'s context")
                    out.append(Example(question, context, spans, str(qa.get("id", len(out)))))
                    if out[-1].id in seen:  # predictions and the official evaluation go by id
                        raise TaskError(f"{where} repeats question {seen[out[-1].id] + 1}'s id; give each its own")
                    seen[out[-1].id] = len(out) - 1
    except KeyError as e:
        raise TaskError(f"{path} is not SQuAD JSON: {place} lacks {e}") from None
    except TypeError:  # e.g. answers as {"text": [...], "answer_start": [...]}, the hub's columns
        raise TaskError(
            f"{path} is not SQuAD JSON at {place}: expected data -> paragraphs (context, qas) -> qas (question, id, "
            'answers: [{"text", "answer_start"}])'
        ) from None
    return out


def squad_from_datasets(source: str) -> tuple[list[Example], list[Example]]:
    """Train and dev questions from the hub's `squad` / `squad_v2` datasets or a `DatasetDict`
    saved with `save_to_disk` (columns question, context, answers {text, answer_start})."""
    from electra import hub

    why = None if Path(source).is_dir() else hub.cache_only_if_unreachable()
    try:
        import datasets
    except ImportError as e:
        raise TaskError("reading SQuAD through datasets needs the datasets package: pip install datasets") from e
    try:
        ds = datasets.load_from_disk(source) if Path(source).is_dir() else datasets.load_dataset(source)
    except Exception as e:
        raise TaskError(f"could not load {source} ({hub.failure(why, e)}); pass a folder of SQuAD JSON files") from e

    def split(name: str) -> list[Example]:
        if name not in ds:
            raise TaskError(f"{source} has no {name!r} split (splits: {', '.join(ds)})")
        try:
            return [
                Example(
                    r["question"],
                    r["context"],
                    list(zip(r["answers"]["text"], r["answers"]["answer_start"], strict=True)),
                    str(r.get("id", n)),
                )
                for n, r in enumerate(ds[name])
            ]
        except (KeyError, TypeError) as e:
            raise TaskError(
                f"{source} {name} lacks {e}: SQuAD rows have question, context and answers "
                "{text: [...], answer_start: [...]}"
            ) from None

    return split("train"), split("validation")


# --------------------------------------------------------------------------------------
# Windows and answer spans
# --------------------------------------------------------------------------------------


@dataclass
class Windows:
    """The encoded windows of a list of questions."""

    ids: list[np.ndarray]  # int32, one array per window
    types: list[np.ndarray]  # int8
    labels: list[tuple[int, int]]  # the answer's first and last token; (0, 0) ([CLS]) when not in the window
    question: list[int]  # the question each window belongs to
    offsets: list[list[tuple[int, int] | None]]  # each token's characters in the context; None outside it
    cut: list[bool]  # for each question: longer than QUESTION_TOKENS, and cut


def encode_windows(
    tok, examples: Sequence[Example], max_length: int, stride: int | None = None, keep_offsets: bool = True
) -> Windows:
    """Every question's windows over its context; the answer (the first one) labelled in each.
    `stride` tokens are shared by neighbouring windows: by default 128, or half a window's
    context if that is less. Without `keep_offsets` (training needs only the labels) `offsets`
    stays empty: on SQuAD's training set they would take gigabytes."""
    limit, stride = window_stride(max_length, stride)
    tok.no_truncation()
    questions, cut = [], []
    for e, q in zip(examples, tok.encode_batch([e.text for e in examples], add_special_tokens=False), strict=True):
        if len(q.ids) > limit:  # cut before the first word that does not fit whole: the same tokens again
            first = q.word_ids.index(q.word_ids[limit])
            questions.append(e.text[: q.offsets[first][0] if first > 0 else q.offsets[limit - 1][1]])
        else:
            questions.append(e.text)
        cut.append(len(q.ids) > limit)
    tok.enable_truncation(max_length, stride=stride, strategy="only_second")
    out = Windows([], [], [], [], [], cut)
    encodings = tok.encode_batch([(q, e.pair) for q, e in zip(questions, examples, strict=True)])
    for n, (e, enc) in enumerate(zip(examples, encodings, strict=True)):
        answer = e.label[0] if e.label and answer_placed(e) else None
        if answer is not None:  # its characters without the spaces some answers carry around them
            text, at = answer
            answer = (at + len(text) - len(text.lstrip()), at + len(text.rstrip()))
            answer = None if answer[1] <= answer[0] else answer
        for w in (enc, *enc.overflowing):
            in_context = [s == 1 for s in w.sequence_ids]
            offsets = [o if c else None for o, c in zip(w.offsets, in_context, strict=True)]
            out.ids.append(np.array(w.ids, dtype=np.int32))  # a tenth of a list's memory
            out.types.append(np.array(w.type_ids, dtype=np.int8))
            out.question.append(n)
            if keep_offsets:
                out.offsets.append(offsets)
            out.labels.append((0, 0) if answer is None else answer_tokens(offsets, *answer))
    tok.no_truncation()
    return out


def fine_tuned_stride(max_length: int, stride: int | None, option: str = "--doc-stride") -> int | None:
    """The stride a model was fine-tuned with, or None (the default for `max_length`) where windows
    of `max_length` tokens cannot share that many: the user asked for the length, not the stride
    (which the command's `option` sets)."""
    try:
        window_stride(max_length, stride)
        return stride
    except TaskError:
        pass
    fitted = window_stride(max_length, None)[1]
    print(
        f"note: the model was fine-tuned with windows sharing {stride} tokens, more than windows of {max_length} "
        f"tokens can; they share {fitted} ({option} sets it)",
        file=sys.stderr,
    )
    return None


def window_stride(max_length: int, stride: int | None) -> tuple[int, int]:
    """The question's token limit and the stride for windows of `max_length` tokens: `stride`,
    checked (less than the context a window holds), or by default 128 or half a window's context
    if that is less."""
    limit = question_limit(max_length)
    room = max_length - 3 - limit  # context tokens a window holds at the least
    if stride is None:
        stride = min(DOC_STRIDE, room // 2)
    if not 0 <= stride < room:
        raise TaskError(
            f"the window stride must be 0 to {room - 1} at max-length {max_length} (a window holds at least "
            f"{room} context tokens after a question of up to {limit}), got {stride}"
        )
    return limit, stride


def answer_placed(e: Example) -> bool:
    """Whether a question's (first) answer stands at its answer_start in the context, or it has none."""
    return not e.label or e.pair[e.label[0][1] : e.label[0][1] + len(e.label[0][0])] == e.label[0][0]


def answer_tokens(offsets: Sequence[tuple[int, int] | None], start: int, end: int) -> tuple[int, int]:
    """The first and last token covering characters [start, end) of the context, or (0, 0) when
    the window does not hold all of them."""
    inside = [(i, o) for i, o in enumerate(offsets) if o is not None]
    if not inside or inside[0][1][0] > start or inside[-1][1][1] < end:
        return 0, 0
    first = max(i for i, o in inside if o[0] <= start)
    last = min(i for i, o in inside if o[1] >= end)
    return first, last


@dataclass
class Answer:
    text: str  # "" for no answer
    start: int  # its characters in the context: context[start:end]
    end: int
    logit: float  # start + end logit: what picks the answer
    score: float  # its probability in its window: softmax of the start logits x of the end logits
    null_margin: float = 0.0  # [CLS]'s logit (its lowest over windows) minus the best span's: SQuAD's na_prob


def best_answers(
    logits: Sequence[np.ndarray],
    windows: Windows,
    contexts: Sequence[str],
    allow_none: bool,
    null_threshold: float = 0.0,
) -> list[Answer]:
    """Each question's answer: the span with the highest start + end logit over its windows
    (the N_BEST starts and ends of each window, at most MAX_ANSWER_TOKENS long, inside the
    context). With `allow_none` (SQuAD 2.0) the answer is "" when [CLS]'s start + end logit,
    its lowest over the windows, beats the best span's by more than `null_threshold`. A context
    with no span to answer from gets "", with its no-answer probability only under `allow_none`
    (else score 0)."""
    best: list[Answer | None] = [None] * len(contexts)
    null: list[Answer | None] = [None] * len(contexts)
    for scores, n, offsets in zip(logits, windows.question, windows.offsets, strict=True):
        start, end = scores[:, 0].astype(np.float64), scores[:, 1].astype(np.float64)  # (T,) each
        valid = np.array([o is not None for o in offsets])
        candidates = valid.copy()
        candidates[0] = True  # probabilities over the context and [CLS] (no answer)
        norm = _logsumexp(start[candidates]) + _logsumexp(end[candidates])
        cls = float(start[0] + end[0])
        if null[n] is None or cls < null[n].logit:
            null[n] = Answer("", 0, 0, cls, float(np.exp(cls - norm)))
        starts = [i for i in np.argsort(-start, kind="stable") if valid[i]][:N_BEST]
        ends = [i for i in np.argsort(-end, kind="stable") if valid[i]][:N_BEST]
        for s in starts:
            for e in ends:
                logit = float(start[s] + end[e])
                if s <= e < s + MAX_ANSWER_TOKENS and (best[n] is None or logit > best[n].logit):
                    a, b = offsets[s][0], offsets[e][1]
                    best[n] = Answer(contexts[n][a:b], a, b, logit, float(np.exp(logit - norm)))
    out = []
    for n, b in enumerate(best):
        margin = np.inf if b is None else null[n].logit - b.logit
        chosen = null[n] if b is None or (allow_none and margin > null_threshold) else b
        if b is None and not allow_none:  # no span to give (an empty context), and "no answer" is not one
            chosen = replace(chosen, score=0.0)
        out.append(replace(chosen, null_margin=float(margin)))
    return out


def _logsumexp(x: np.ndarray) -> float:
    top = x.max()
    return float(top + np.log(np.exp(x - top).sum()))


# --------------------------------------------------------------------------------------
# The official metrics
# --------------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a, an, the, and collapse whitespace (SQuAD's rule)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def answer_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:  # no answer: right only against no answer
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Exact match and F1, each the best over a question's gold answers, averaged over questions.
    A question without gold answers (SQuAD 2.0) is answered right by "" only."""
    exact, f1 = [], []
    for p, g in zip(predictions, golds, strict=True):
        g = [a for a in g if normalize_answer(a)] or [""]
        exact.append(max(float(normalize_answer(p) == normalize_answer(a)) for a in g))
        f1.append(max(answer_f1(p, a) for a in g))
    return {"f1": float(np.mean(f1)), "exact_match": float(np.mean(exact))}
