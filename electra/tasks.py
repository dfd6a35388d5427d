"""Fine-tuning tasks: the GLUE table, generic CSV/TSV/JSONL datasets, CoNLL tagging, and metrics.

Every reader returns `Example`s; every metric is a plain function of predictions and gold
labels, as GLUE defines it.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from electra.corpus import LONE_SURROGATE


class TaskError(ValueError):
    """Bad task data: the message names the file, the row and what to do."""


class MissingColumn(TaskError):
    """A table without a column (or JSON lines whose first record lacks a field) that was asked for."""


@contextlib.contextmanager
def utf8(name: str):
    """Name the file when its text turns out not to be UTF-8 while it is read."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise TaskError(f"{name} is not UTF-8 text ({e.reason}); convert it, e.g. iconv -f latin1 -t utf-8") from None


def unicode_text(value, where: str) -> str:
    """`value` (from JSON), refused when it is no string or holds a lone surrogate (what an
    escape like \\ud800 without its pair decodes to): no tokenizer can read either."""
    if not isinstance(value, str):
        raise TaskError(f"{where} is {value!r}, not a text string")
    if m := LONE_SURROGATE.search(value):
        raise TaskError(f"{where} holds a lone surrogate ({ascii(m.group())}), not Unicode text; fix that JSON escape")
    return value


@dataclass
class Example:
    text: str | list[str]  # one text, a pair, or (tagging) the words of a sentence
    pair: str | None = None
    label: str | float | list[str] | list[tuple[str, int]] | None = None  # SQuAD: (answer, character start)s
    id: str | None = None  # SQuAD: the question's id


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def accuracy(pred: Sequence, gold: Sequence) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(gold))) if len(gold) else 0.0


def f1(pred: Sequence[int], gold: Sequence[int], positive: int = 1) -> float:
    p, g = np.asarray(pred) == positive, np.asarray(gold) == positive
    tp = float(np.sum(p & g))
    return 2 * tp / (p.sum() + g.sum()) if p.sum() + g.sum() else 0.0


def macro_f1(pred: Sequence, gold: Sequence) -> float:
    """The mean of every class's F1 (each class in turn the positive one), over the classes that
    occur in the predictions or the gold labels: the F1 of a task with more than two classes.
    Multi-label (rows of 0/1 per label): the mean of each label's F1, over the labels that occur."""
    p, g = np.asarray(pred), np.asarray(gold)
    if p.ndim == 2:
        used = (p != 0).any(0) | (g != 0).any(0)
        return float(np.mean([f1(p[:, j], g[:, j]) for j in np.flatnonzero(used)])) if used.any() else 0.0
    classes = sorted(set(p.tolist()) | set(g.tolist()))
    return float(np.mean([f1(pred, gold, c) for c in classes])) if classes else 0.0


def micro_f1(pred: Sequence, gold: Sequence) -> float:
    """Multi-label F1 over every (example, label) decision: rows of 0/1 per label."""
    return f1(np.asarray(pred).ravel(), np.asarray(gold).ravel())


def subset_accuracy(pred: Sequence, gold: Sequence) -> float:
    """Multi-label: the share of examples whose predicted set of labels is exactly the gold one."""
    p, g = np.asarray(pred) != 0, np.asarray(gold) != 0
    return float(np.mean((p == g).all(-1))) if len(g) else 0.0


def matthews(pred: Sequence[int], gold: Sequence[int]) -> float:
    p, g = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp, tn = float(np.sum(p & g)), float(np.sum(~p & ~g))
    fp, fn = float(np.sum(p & ~g)), float(np.sum(~p & g))
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denom if denom else 0.0


def pearson(pred: Sequence[float], gold: Sequence[float]) -> float:
    x, y = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks, ties sharing the mean of their positions (as Spearman needs)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(pred: Sequence[float], gold: Sequence[float]) -> float:
    """Pearson of the ranks; NaN where a value is NaN (a diverged model's prediction), as scipy's
    spearmanr gives it: NaN has no rank, and sorting would give it one by its place in the data."""
    x, y = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if np.isnan(x).any() or np.isnan(y).any():
        return math.nan
    return pearson(_ranks(x), _ranks(y))


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, start, end) spans from BIO/IOB2 tags; an I- tag that starts a span counts as B-."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, t = tag.partition("-")
        if start is not None and (prefix in ("B", "O") or t != kind or prefix not in ("I",)):
            spans.add((kind, start, i))
            start = kind = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, t
    return spans


def _prf(tp: int, predicted: int, gold: int) -> dict:
    precision = tp / predicted if predicted else 0.0
    recall = tp / gold if gold else 0.0
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f, "support": gold}


def label_scores(pred: Sequence, gold: Sequence, labels: Sequence[str]) -> dict[str, dict]:
    """Precision, recall, F1 and support (gold count) of each label, for reading where a
    classifier errs: `pred` and `gold` are label indices, or rows of 0/1 per label (multi-label)."""
    p, g = np.asarray(pred), np.asarray(gold)
    if p.ndim == 1:  # one label each: label j is the positive class in turn
        p, g = p[:, None] == np.arange(len(labels)), g[:, None] == np.arange(len(labels))
    p, g = p != 0, g != 0
    return {
        str(label): _prf(int((p[:, j] & g[:, j]).sum()), int(p[:, j].sum()), int(g[:, j].sum()))
        for j, label in enumerate(labels)
    }


def _entity_counts(pred: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict[str, list[int]]:
    """Each entity type's [exact span matches, predicted, gold] over every sentence."""
    counts: dict[str, list[int]] = {}
    for p, g in zip(pred, gold, strict=True):
        ps, gs = entity_spans(p), entity_spans(g)
        for kind, spans in enumerate((ps & gs, ps, gs)):
            for t, _, _ in spans:
                counts.setdefault(t, [0, 0, 0])[kind] += 1
    return counts


def entity_type_scores(pred: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict[str, dict]:
    """`label_scores` of a tagger: each entity type's precision, recall and F1 (exact spans)."""
    counts = _entity_counts(pred, gold)
    return {t: _prf(*counts[t]) for t in sorted(counts)}


def entity_scores(pred: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level F1 (the main figure, first), precision and recall: a predicted entity counts
    only on an exact span match. The counts of every type together (`entity_type_scores` per type)."""
    counts = list(_entity_counts(pred, gold).values())
    s = _prf(*(sum(c[k] for c in counts) for k in range(3)))
    return {"f1": s["f1"], "precision": s["precision"], "recall": s["recall"]}


# --------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------


def both_orders(examples: list[Example]) -> list[Example]:
    """Pairs in their order, then each swapped: training data for a task whose pairs are
    unordered (Google's ELECTRA fine-tuning, `double_unordered`)."""
    return examples + [replace(e, text=e.pair, pair=e.text) for e in examples]


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "classification", "multilabel" (any number of labels per text), "regression", "tagging" or "span"
    metrics: tuple[str, ...]  # the first is the one model selection uses
    epochs: int = 3
    labels: tuple[str, ...] = ()  # empty: learned from the training data
    train: str = "train.tsv"
    dev: tuple[str, ...] = ("dev.tsv",)
    text: str | int = "sentence"  # header name, or column index for headerless files
    pair: str | int | None = None
    label: str | int = "label"
    header: bool = True
    names: tuple[str, ...] = ()  # what id2label shows for `labels`, when the data's values are codes
    both_orders: bool = False  # a pair's order means nothing: train on each in both (Google's double_unordered)
    target_scale: float = 1.0  # regression: the head learns score / this (Google's STS-B: 0-5 scores as 0-1)


GLUE = {
    "sst2": Task("sst2", "classification", ("accuracy",), labels=("0", "1"), names=("NEGATIVE", "POSITIVE")),
    "cola": Task(
        "cola",
        "classification",
        ("matthews", "accuracy"),
        labels=("0", "1"),
        text=3,
        label=1,
        header=False,
        names=("unacceptable", "acceptable"),
    ),
    "mrpc": Task(
        "mrpc",
        "classification",
        ("accuracy", "f1"),
        labels=("0", "1"),
        text="#1 String",
        pair="#2 String",
        label="Quality",
        names=("not_equivalent", "equivalent"),
        both_orders=True,
    ),
    "stsb": Task(
        "stsb",
        "regression",
        ("spearman", "pearson"),
        epochs=10,
        text="sentence1",
        pair="sentence2",
        label="score",
        both_orders=True,
        target_scale=5.0,
    ),
    "rte": Task(
        "rte",
        "classification",
        ("accuracy",),
        epochs=10,
        labels=("entailment", "not_entailment"),
        text="sentence1",
        pair="sentence2",
    ),
    "qnli": Task(
        "qnli",
        "classification",
        ("accuracy",),
        labels=("entailment", "not_entailment"),
        text="question",
        pair="sentence",
    ),
    "qqp": Task(
        "qqp",
        "classification",
        ("accuracy", "f1"),
        labels=("0", "1"),
        text="question1",
        pair="question2",
        label="is_duplicate",
        names=("not_duplicate", "duplicate"),
    ),
    "mnli": Task(
        "mnli",
        "classification",
        ("accuracy",),
        labels=("contradiction", "entailment", "neutral"),
        dev=("dev_matched.tsv", "dev_mismatched.tsv"),
        text="sentence1",
        pair="sentence2",
        label="gold_label",
    ),
    "wnli": Task(
        "wnli",
        "classification",
        ("accuracy",),
        labels=("0", "1"),
        text="sentence1",
        pair="sentence2",
        names=("not_entailment", "entailment"),
    ),
}
GLUE_FOLDERS = {
    "sst2": "SST-2",
    "cola": "CoLA",
    "mrpc": "MRPC",
    "stsb": "STS-B",
    "rte": "RTE",
    "qnli": "QNLI",
    "qqp": "QQP",
    "mnli": "MNLI",
    "wnli": "WNLI",
}

# GLUE's unlabelled test files and the names GLUE's submission server expects for their predictions.
GLUE_TEST = {
    "cola": (("test.tsv", "CoLA"),),
    "sst2": (("test.tsv", "SST-2"),),
    "mrpc": (("test.tsv", "MRPC"),),
    "stsb": (("test.tsv", "STS-B"),),
    "qqp": (("test.tsv", "QQP"),),
    "mnli": (("test_matched.tsv", "MNLI-m"), ("test_mismatched.tsv", "MNLI-mm")),
    "qnli": (("test.tsv", "QNLI"),),
    "rte": (("test.tsv", "RTE"),),
    "wnli": (("test.tsv", "WNLI"),),
}


# GLUE's diagnostic set (AX), labelled by the MNLI model: where GLUE's download puts it beside
# the task folders, or copied into MNLI's own folder.
DIAGNOSTIC = (Path("..", "diagnostic", "diagnostic.tsv"), Path("diagnostic.tsv"), Path("AX.tsv"))


def glue_test(task: Task, folder: Path) -> dict[str, list[Example]]:
    """The test rows found in a GLUE task folder, by submission name; each Example's label holds
    its row's index (the submission's first column). Test files have a header, CoLA's too.
    For MNLI, also the diagnostic set (AX) where it is found (see DIAGNOSTIC)."""
    out = {}
    for file, name in GLUE_TEST[task.name]:
        if (folder / file).exists():
            text = "sentence" if task.name == "cola" else task.text
            index = "id" if task.name == "qqp" else "index"
            out[name] = read_table(folder / file, text, task.pair, index, fixed=f"GLUE's {GLUE_FOLDERS[task.name]}")
    if task.name == "mnli" and (found := [folder / f for f in DIAGNOSTIC if (folder / f).is_file()]):
        out["AX"] = read_table(found[0], "sentence1", "sentence2", "index", fixed="GLUE's diagnostic")
    return out


# The `glue` dataset of the Hugging Face hub: (text column, pair column, names of the integer labels).
_NLI = ("entailment", "not_entailment")
HUB_GLUE = {
    "sst2": ("sentence", None, None),
    "cola": ("sentence", None, None),
    "mrpc": ("sentence1", "sentence2", None),
    "stsb": ("sentence1", "sentence2", None),
    "rte": ("sentence1", "sentence2", _NLI),
    "qnli": ("question", "sentence", _NLI),
    "qqp": ("question1", "question2", None),
    "mnli": ("premise", "hypothesis", ("entailment", "neutral", "contradiction")),
    "wnli": ("sentence1", "sentence2", None),
}


def hub_glue(source: str) -> bool:
    """Whether `source` names the hub's `glue` dataset: "glue", unless a local path of that name exists."""
    return source == "glue" and not Path(source).exists()


def through_datasets(source: str) -> bool:
    """Whether a GLUE task's `source` is read through `datasets`: the hub's, or a saved DatasetDict."""
    return hub_glue(source) or (Path(source) / "dataset_dict.json").exists()


def _glue_dataset(name: str, source: str):
    """GLUE's `name` configuration from the hub (source "glue"), or a DatasetDict saved to disk."""
    from electra import hub

    why = hub.cache_only_if_unreachable() if hub_glue(source) else None
    try:
        import datasets
    except ImportError as e:
        raise TaskError("reading GLUE through datasets needs the datasets package: pip install datasets") from e
    try:
        return datasets.load_dataset("glue", name) if hub_glue(source) else datasets.load_from_disk(source)
    except Exception as e:
        raise TaskError(
            f"could not load GLUE {name} from {source} ({hub.failure(why, e)}); pass the task's TSV folder instead"
        ) from e


def glue_test_from_datasets(task: Task, source: str) -> dict[str, list[Example]]:
    """The test splits of a GLUE task through `datasets` (as `glue_from_datasets` reads it), by
    submission name; each Example's label holds its row's `idx` (the hub's; else its place)."""
    ds = _glue_dataset(task.name, source)
    text, pair, _ = HUB_GLUE[task.name]
    names = ("test_matched", "test_mismatched") if task.name == "mnli" else ("test",)
    splits = dict(zip(names, GLUE_TEST[task.name], strict=True))
    out = {
        name: [
            Example(r[text], None if pair is None else r[pair], str(r.get("idx", n))) for n, r in enumerate(ds[split])
        ]
        for split, (_, name) in splits.items()
        if split in ds
    }
    if task.name == "mnli" and hub_glue(source):  # the hub's diagnostic set: glue/ax, one test split
        ax = _glue_dataset("ax", source)["test"]
        out["AX"] = [Example(r["premise"], r["hypothesis"], str(r["idx"])) for r in ax]
    return out


def glue_from_datasets(task: Task, source: str) -> tuple[list[Example], dict[str, list[Example]]]:
    """Train and dev examples of a GLUE task from the `glue` hub dataset (source "glue") or a
    `DatasetDict` saved with `save_to_disk`, labelled as in the original TSV files."""
    ds = _glue_dataset(task.name, source)
    text, pair, names = HUB_GLUE[task.name]

    def examples(split: str) -> list[Example]:
        if split not in ds:
            raise TaskError(f"{source} has no {split!r} split (splits: {', '.join(ds)})")
        out = []
        for r in ds[split]:
            y = r["label"]
            label = str(float(y)) if task.kind == "regression" else names[y] if names else str(y)
            out.append(Example(r[text], None if pair is None else r[pair], label))
        return out

    devs = ("validation_matched", "validation_mismatched") if task.name == "mnli" else ("validation",)
    return examples("train"), {d.replace("validation", "dev"): examples(d) for d in devs}


METRICS: dict[str, Callable] = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "micro_f1": micro_f1,
    "subset_accuracy": subset_accuracy,
    "matthews": matthews,
    "pearson": pearson,
    "spearman": spearman,
}


def glue_folder(data: str | os.PathLike, task: Task) -> Path:
    """The task's files: DATA itself, or DATA/<GLUE name> (a folder holding all of GLUE); the
    one with the task's training file, or (evaluation needs no training file) its dev file."""
    data = Path(data)
    if data.is_file():
        raise TaskError(
            f"{data} is a file; point --data at the task's GLUE folder (holding {task.dev[0]}, and {task.train} "
            "to fine-tune)"
        )
    for candidate in (data, data / GLUE_FOLDERS.get(task.name, task.name)):
        if any((candidate / f).exists() for f in (task.train, *task.dev)):
            return candidate
    raise TaskError(
        f"{data} has no {task.train} or {task.dev[0]} for {task.name} (nor {data / GLUE_FOLDERS.get(task.name, '')}); "
        "point --data at the task's GLUE folder"
    )


def _advice(role: str, kind: str, key: str) -> str:
    """How to point the option of `role` (text, pair, label or labels: --label-columns) at
    another column or field (`kind`) than `key`."""
    if role == "labels":
        return f"list the label {kind}s with --label-columns (now {key!r} among them)"
    return f"name the {role} {kind} with --{role}-field (now {key!r})"


def label_flags(cells: Sequence, columns: Sequence[str], where: str) -> list[str]:
    """The labels of a row with one column per label (`columns`, a multi-label task's), each
    cell 1 where its label applies and 0 where not (also true/false, 1.0/0.0); anything else
    is refused, an empty cell or -1 (how some test sets mark rows left unscored) included."""
    out = []
    for column, cell in zip(columns, cells, strict=True):
        value = cell.strip().lower() if isinstance(cell, str) else cell
        if value in (1, "1", "1.0", "true"):  # True == 1, and 1.0
            out.append(column)
        elif value not in (0, "0", "0.0", "false"):
            raise TaskError(
                f"{where}: label column {column!r} holds {cell!r}; each label column holds 1 (the label "
                "applies) or 0 (it does not)"
            )
    return out


def _column(header: list[str] | None, key: str | int, path: str | Path, role: str, fixed: str | None) -> int:
    """The index of column `key`; `role` (text, pair, label, or labels: --label-columns) names the
    option that sets it, or `fixed` names the dataset whose own columns these are (GLUE's)."""
    if isinstance(key, int):
        return key
    if header is None or key not in header:
        advice = _advice(role, "column", key)
        if header and len(header) == 1 and (seps := [c for c in ",\t;|" if c in header[0]]):
            fix = {",": "name it .csv", "\t": "name it .tsv"}.get(seps[0], "convert it to commas (.csv) or tabs (.tsv)")
            raise MissingColumn(
                f"{path} has one column, {header[0]!r}: are its fields separated by {seps[0]!r}? .csv files are "
                f"read as comma-separated and .tsv files as tab-separated: {fix}"
            )
        if fixed:
            advice = f"{fixed} files have it; is this the task's own file?"
        raise MissingColumn(f"{path} has no column {key!r} (columns: {', '.join(header or [])}); {advice}")
    return header.index(key)


def read_table(
    path: Path,
    text: str | int,
    pair: str | int | None,
    label: str | int | None,
    header: bool = True,
    fixed: str | None = None,
    labels: tuple[str, ...] = (),
    empty_label: bool = False,
    label_columns: tuple[str, ...] = (),
) -> list[Example]:
    """Rows of a CSV/TSV (GLUE's TSVs are unquoted) or JSONL file as examples. `fixed` names the
    dataset whose files have these columns (no --text-field to set them), `labels` its labels;
    with `empty_label` an empty label is read as "" (a multi-label example of no label), else refused.
    With `label_columns` (and no `label`) each example's label is the list of those columns that
    hold 1 (`label_flags`)."""
    if not path.exists():
        raise TaskError(f"{path} does not exist")
    if path.suffix == ".jsonl":
        return _read_jsonl(path, text, pair, label, empty_label, label_columns)
    with open(path, encoding="utf-8-sig", newline="") as f, utf8(str(path)):
        tsv = path.suffix == ".tsv"
        options = {"labels": labels, "empty_label": empty_label, "label_columns": label_columns}
        return list(table_rows(f, str(path), tsv, text, pair, label, header, fixed, **options))


def _csv_rows(stream, name: str, tsv: bool) -> Iterator[list[str]]:
    """The rows of a CSV (quoted, strictly: an unclosed quote would swallow the rest of the file
    into one field) or TSV stream (unquoted, as GLUE's are)."""
    rows = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE) if tsv else csv.reader(stream, strict=True)
    line = 1
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as e:
            if "unexpected end of data" in str(e):
                raise TaskError(
                    f"{name}:{line}: a quoted field opened on this row never closes (the file ends inside it); "
                    "close the quote"
                ) from None
            raise TaskError(
                f"{name}:{line}: {e}; a quoted field ends with a quote before the next comma, and a quote "
                'inside it is written twice ("")'
            ) from None
        yield row
        line = rows.line_num + 1


def table_rows(
    stream,
    name: str,
    tsv: bool,
    text: str | int,
    pair: str | int | None,
    label: str | int | None,
    header: bool = True,
    fixed: str | None = None,
    ident: str | None = None,
    ident_optional: bool = False,
    pair_optional: bool = False,
    labels: tuple[str, ...] = (),
    empty_label: bool = False,
    label_columns: tuple[str, ...] = (),
) -> Iterator[Example]:
    """Rows of a CSV or TSV stream as examples, as they are read; blank rows skipped, short ones named.

    `ident` names a column whose value is each example's id (with `ident_optional`, only where
    the header has it); with `pair_optional`, the `pair` column is read only where the header has it.
    With `label_columns` each example's label is the list of those columns that hold 1."""
    rows = _csv_rows(stream, name, tsv)
    head = next(rows, None) if header else None
    if header and head is None:
        raise TaskError(f"{name} is empty")
    if pair_optional and not (head and pair in head):
        pair = None
    t = _column(head, text, name, "text", fixed)
    p = None if pair is None else _column(head, pair, name, "pair", fixed)
    y = None if label is None else _column(head, label, name, "label", fixed)
    if ident_optional and not (head and ident in head):
        ident = None
    i = None if ident is None else _column(head, ident, name, "id", fixed)
    ys = [_column(head, c, name, "labels", fixed) for c in label_columns]
    # the columns each row needs (an optional id may be left out)
    need = max(c for c in (t, p, y, *ys, None if ident_optional else i) if c is not None)
    for n, row in enumerate(rows, 2 if header else 1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) <= need:
            mine = f"; {fixed} files have {need + 1} or more: is this the task's own file?" if fixed else ""
            raise TaskError(f"{name}:{n} has {len(row)} columns, expected at least {need + 1}{mine}")
        # its columns would shift: a label from the text (a fixed dataset's row only where the label
        # it would get is not one: its files are read by their known columns)
        wrong = not fixed or (labels and y is not None and row[y].strip() not in labels)
        if head is not None and wrong and len(row) > len(head):
            sep = "tab" if tsv else "comma"
            raise TaskError(
                f"{name}:{n} has {len(row)} columns, its header {len(head)}: a field holds a {sep}; "
                + ("remove the tab" if tsv else 'quote the field ("a, b")')
            )
        if y is not None and not row[y].strip() and not empty_label:
            raise TaskError(f"{name}:{n} has an empty label; label the row or remove it")
        label = label_flags([row[j] for j in ys], label_columns, f"{name}:{n}") if ys else None
        yield Example(
            row[t],
            None if p is None else row[p],
            label if y is None else row[y].strip(),
            None if i is None or i >= len(row) else row[i],
        )


def jsonl_records(stream, name: str, required: dict[str, str | None], null_pair: bool = False):
    """(line number, record) of a JSON-lines stream; blank lines skipped, bad ones named.

    `required` maps roles (text, pair, label: the --ROLE-field option) to the fields each
    record must have; None entries are not required. Text and pair fields must hold strings,
    or with `null_pair` the pair may be null (a single text, as serve reads it).
    """
    first = True
    for n, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"{name}:{n} is not valid JSON ({e.msg})") from e
        if not isinstance(r, dict):
            raise TaskError(f"{name}:{n} is a JSON {type(r).__name__}, not an object of fields")
        missing = [(role, k) for role, k in required.items() if k is not None and k not in r]
        if missing:
            role, k = missing[0]
            raise (MissingColumn if first else TaskError)(
                f"{name}:{n} has no field {k!r} (fields: {', '.join(r)}); {_advice(role, 'field', k)}"
            )
        for role in ("text", "pair"):
            if (k := required.get(role)) is not None and not (role == "pair" and null_pair and r[k] is None):
                unicode_text(r[k], f"{name}:{n}: {k!r}")
        first = False
        yield n, r


def _read_jsonl(path: Path, text, pair, label, empty_label: bool = False, label_columns=()) -> list[Example]:
    out = []
    with open(path, encoding="utf-8-sig") as f, utf8(str(path)):  # -sig: a byte order mark is not text
        for n, r in jsonl_records(f, str(path), {"text": text, "pair": pair, "label": label}):
            if missing := [c for c in label_columns if c not in r]:
                raise (MissingColumn if not out else TaskError)(
                    f"{path}:{n} has no field {missing[0]!r} (fields: {', '.join(r)}); "
                    + _advice("labels", "field", missing[0])
                )
            if label_columns:
                flags = label_flags([r[c] for c in label_columns], label_columns, f"{path}:{n}")
                out.append(Example(r[text], None if pair is None else r[pair], flags))
                continue
            value = None if label is None else r[label]
            empty = value is None or (isinstance(value, str) and not value.strip())
            if label is not None and empty and not (empty_label and isinstance(value, str)):
                none = " (a list, [] for none)" if empty_label else ""
                raise TaskError(f"{path}:{n}: {label!r} is {json.dumps(value)}; label the record{none} or remove it")
            if isinstance(value, float) and value.is_integer():  # 1.0 is the class 1 (or, among fractions, a score)
                value = int(value)
            if isinstance(value, list):  # a multi-label record's labels
                value = _list_labels(value, f"{path}:{n}: {label!r}")
            elif isinstance(value, dict):
                raise TaskError(f"{path}:{n}: {label!r} is {value!r}; a label is a string, a number or a list")
            out.append(
                Example(
                    r[text],
                    None if pair is None else r[pair],
                    None if value is None else value if isinstance(value, float | list) else str(value).strip(),
                )
            )
    return out


def _list_labels(items: list, where: str) -> list[str]:
    """The labels of a list (a JSON record's, or a cell holding one): strings or integers."""
    out = []
    for x in items:
        if isinstance(x, float) and x.is_integer():
            x = int(x)
        if not isinstance(x, str | int) or isinstance(x, bool):
            raise TaskError(f"{where} is {items!r}; a list of labels holds strings or integers")
        out.append(str(x).strip())
    return out


def label_list(value: str | list[str], separator: str, where: str) -> list[str]:
    """A multi-label example's labels, each once, in order: a JSON list, or a table cell of
    labels joined by `separator` ("sports,politics"; an empty cell is no label). A cell that
    holds a list written out (`['sports', 'politics']`, as pandas' to_csv writes a list column)
    is read as that list, and one quoted whole in a TSV file (as spreadsheets save a cell that
    holds a comma) without its quotes. `where` names the example for messages."""
    if isinstance(value, list):
        labels = value
    else:
        cell = str(value).strip()
        if len(cell) >= 2 and cell[0] == cell[-1] == '"':
            cell = cell[1:-1].replace('""', '"').strip()
        if cell.startswith("[") and cell.endswith("]"):
            try:
                items = ast.literal_eval(cell)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                items = None
            if not isinstance(items, list | tuple):
                raise TaskError(
                    f"{where} has label {cell!r}, which looks like a list but is not one; write "
                    f"['a', 'b'] (or join the labels with {separator!r})"
                )
            labels = _list_labels(list(items), f"{where}: label")
        else:
            labels = cell.split(separator)
    return list(dict.fromkeys(x.strip() for x in labels if x.strip()))


def joined_labels(names, known) -> tuple[str, str] | None:
    """(a name, a character) where label `names` look like several labels joined by that
    character ("food|politics" beside "music|food", or whose parts are all `known` labels):
    a separator other than --label-separator. None where none do."""
    names = [str(n) for n in names]
    for c in ",|;/+":
        joined = [n for n in names if c in n]
        parts = {p.strip() for n in joined for p in n.split(c)} - {""}
        if joined and (len(joined) >= 2 or parts <= set(map(str, known))):
            return joined[0], c
    return None


def read_conll(path: Path, token_column: int = 0, tag_column: int = -1) -> list[Example]:
    """CoNLL-style tagging: one token per line (token and tag columns), blank lines between sentences."""
    if not path.exists():
        raise TaskError(f"{path} does not exist")
    out, words, tags = [], [], []
    with open(path, encoding="utf-8-sig") as f, utf8(str(path)):
        for n, line in enumerate(f, 1):
            # tab-separated columns may hold spaces (a multiword token); else any whitespace separates
            cols = [c.strip() for c in line.split("\t")] if "\t" in line.strip() else line.split()
            cols = [c for c in cols if c]
            if not cols or cols[0] == "-DOCSTART-":
                if words:
                    out.append(Example(words, None, tags))
                words, tags = [], []
                continue
            if len(cols) < 2:
                raise TaskError(f"{path}:{n} has one column; expected a token and a tag")
            tag = cols[tag_column]
            if tag != "O" and not tag.startswith(("B-", "I-")):
                raise TaskError(f"{path}:{n}: tag {tag!r} is not BIO/IOB2 (O, B-X, I-X)")
            words.append(cols[token_column])
            tags.append(tag)
    if words:
        out.append(Example(words, None, tags))
    return out
