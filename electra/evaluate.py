"""`electra evaluate`: score a fine-tuned folder on a task's labelled data, without training.

fine-tuned folder (ours, or any transformers ElectraFor* classifier, tagger or question answerer)
+ task data ──encode as fine-tuning does──▶ predictions ──▶ the task's metrics on every labelled split
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from electra import hf, qa
from electra.finetune import SQUAD, Encoded, FinetuneConfig, encode, load_task, predictions, score, sentence_tags
from electra.parallel import pick_device
from electra.tasks import Example, Task, TaskError, entity_type_scores, joined_labels, label_scores
from electra.tokenizer import load_model_tokenizer


def run(
    model_dir: str | os.PathLike,
    task_name: str,
    data: str,
    split: str | None = None,
    batch_size: int = 128,
    max_length: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    doc_stride: int | None = None,
    null_threshold: float | None = None,
    text_field: str | None = None,
    pair_field: str | None = None,
    label_field: str | None = None,
    label_separator: str | None = None,
    label_columns: tuple[str, ...] | None = None,
    threshold: float | None = None,
    records: bool = False,
    quiet: bool = False,
) -> dict:
    """The task's metrics for the model in `model_dir` on each labelled split of `data` (the dev
    sets, and a labelled test set where csv/ner data has one), or only on `split`.

    Data is read and encoded as `electra finetune` reads it, and scored by the same code, so a
    folder fine-tuned here scores what its results.json says its seed scored. `max_length`,
    `doc_stride`, `null_threshold`, csv's fields and a multi-label model's `label_separator` or
    `label_columns` default to the ones it was fine-tuned with (results.json), else the task's
    defaults. A multi-label model predicts the labels above `threshold` (default 0.5, as
    fine-tuning scores). With `records`, the results also hold each example's prediction beside
    its gold label, by split (see `example_records`). `quiet` hides the progress bars.
    """
    folder = hf.resolve(model_dir)
    head = "span" if task_name in SQUAD else "token" if task_name == "ner" else "sequence"
    model, id2label, _ = hf.load_classifier(folder, (head,))  # a folder the task cannot use is refused first
    recorded = hf.read_results(folder)
    fine = hf.fine_tuned_options(recorded)  # the fine-tuning's own options: score its windows, its way
    if doc_stride is None:
        length = fine["max_length"] if max_length is None else max_length
        doc_stride = fine["doc_stride"] if length is None else qa.fine_tuned_stride(length, fine["doc_stride"])
    null_threshold = (fine["null_threshold"] or 0.0) if null_threshold is None else null_threshold
    multi_label = hf.read_config(folder).get("problem_type") == "multi_label_classification"
    if multi_label and task_name != "csv":
        raise TaskError(f"{folder} is a multi-label classifier; {task_name} has one label per example: use --task csv")
    for option, given in (
        ("--label-separator", label_separator),
        ("--label-columns", label_columns),
        ("--threshold", threshold),
    ):
        if given is not None and not multi_label:
            raise TaskError(f"{option} is for multi-label classifiers; {folder} is not one: drop it")
    if task_name == "csv" and recorded.get("task") == "csv":  # the columns it was fine-tuned on, unless told others
        text_field, pair_field = text_field or fine["text_field"], pair_field or fine["pair_field"]
        if label_columns is None and label_field is None:
            label_field = fine["label_field"]
            label_columns = None if label_separator is not None else fine["label_columns"]
        label_separator = label_separator or fine["label_separator"]
    cfg = FinetuneConfig(
        model=str(folder),
        task=task_name,
        data=data,
        out="",
        max_length=max_length,
        doc_stride=doc_stride,
        null_threshold=null_threshold,
        text_field=text_field,
        pair_field=pair_field,
        label_field=label_field,
        regression=len(id2label) == 1 and not multi_label if task_name == "csv" else None,  # as the model scores
        multi_label=multi_label,
        label_separator=label_separator or ",",
        label_columns=tuple(label_columns or ()),
        device=device,
        precision=precision,
    )
    task, _, splits = load_task(cfg, with_train=False)
    if split is not None:
        if split not in splits:
            raise TaskError(f"{data} has no labelled {split!r} split for {task_name}; it has {', '.join(splits)}")
        splits = {split: splits[split]}
    labels = model_labels(task, id2label, recorded.get("labels"), splits, folder)
    if task.name == "csv" and task.kind == "classification":  # the model's label count decides, not the data's
        task = replace(task, metrics=("accuracy", "f1" if len(labels) <= 2 else "macro_f1"))
    positions = model.cfg.max_positions
    length = max_length or fine["max_length"]
    length = length or (min(512, positions) if task.kind == "span" else 128)
    if length > positions:
        raise ValueError(f"--max-length {length} exceeds the model's {positions} positions")
    tok = load_model_tokenizer(folder, model.cfg.vocab_size)
    where = pick_device(device)
    model.to(where)
    metrics, per_label, counts, truncated, per_example = {}, {}, {}, 0, {}
    above = {"threshold": 0.5 if threshold is None else threshold} if multi_label else {}
    for name, examples in splits.items():
        encoded, cut = encode(tok, task, examples, labels, length, True, name, stride=doc_stride)
        shown = {"progress": None if quiet else f"{task.name} {name}", "everywhere": True}  # in a log file too
        preds = predictions(model, task, encoded, where, batch_size, precision, null_threshold, **shown, **above)
        metrics[name] = score(task, encoded, labels, preds)
        if (scores := label_breakdown(task, encoded, labels, preds)) is not None:
            per_label[name] = scores
        counts[name], truncated = len(examples), truncated + cut
        if records:
            per_example[name] = example_records(task, examples, encoded, labels, preds)
    out = {
        "model": str(folder),
        "fine_tuned_on": recorded.get("task"),  # None for a folder from elsewhere
        "task": task.name,
        "data": str(data),
        "metrics": metrics,
        "per_label": per_label,
        "examples": counts,
        "truncated": truncated,
        "max_length": length,
        **above,
    }
    if records:
        out["records"] = per_example
    return out


def label_breakdown(task: Task, data: Encoded, labels: list[str], preds: list) -> dict | None:
    """Each label's (a tagger: each entity type's) precision, recall, F1 and support; None for
    regression and question answering."""
    if task.kind in ("classification", "multilabel"):
        return label_scores(preds, data.labels, labels)
    if task.kind == "tagging":
        return entity_type_scores(*sentence_tags(data, labels, preds))
    return None


def example_records(task: Task, examples: list[Example], data: Encoded, labels: list[str], preds: list) -> list[dict]:
    """Each example with its gold label and the model's prediction, for reading the errors:
    {"text", "pair", "label", "prediction"} (a tagger: "words", and a tag per word; multi-label:
    lists of labels; a question answerer: "id", "question", "answers", "prediction" and its "score")."""
    if task.kind == "span":
        return [
            {"id": e.id, "question": e.text, "answers": [t for t, _ in e.label], "prediction": a.text, "score": a.score}
            for e, a in zip(data.questions, preds, strict=True)
        ]
    if task.kind == "tagging":
        predicted, gold = sentence_tags(data, labels, preds)
        return [
            {"words": e.text, "label": g, "prediction": p} for e, p, g in zip(examples, predicted, gold, strict=True)
        ]
    if task.kind == "multilabel":
        return [
            {"text": e.text, "pair": e.pair, "label": e.label, "prediction": [labels[j] for j in np.flatnonzero(p)]}
            for e, p in zip(examples, preds, strict=True)
        ]
    if task.kind == "regression":
        return [
            {"text": e.text, "pair": e.pair, "label": float(e.label), "prediction": p}
            for e, p in zip(examples, preds, strict=True)
        ]
    return [
        {"text": e.text, "pair": e.pair, "label": e.label, "prediction": labels[p]}
        for e, p in zip(examples, preds, strict=True)
    ]


def model_labels(
    task: Task, id2label: dict[int, str], recorded: list[str] | None, splits: dict[str, list[Example]], folder: Path
) -> list[str]:
    """The data's label for each of the model's outputs, in output order.

    A folder fine-tuned here records them (results.json `labels`), and only those count; otherwise
    the model's own label names when they name the data's labels (NER tags, "entailment"), else the outputs are
    the data's labels 0, 1, ... in order (GLUE's integer labels: a model whose outputs are named
    NEGATIVE/POSITIVE or LABEL_0/LABEL_1 read "0"/"1").
    """
    if task.kind == "span":
        return []
    if task.kind == "regression":
        if len(id2label) != 1:
            raise TaskError(f"{folder} is a classifier with {len(id2label)} labels; {task.name} scores a regression")
        return ["score"]
    if len(id2label) == 1 and task.kind != "multilabel":
        raise TaskError(f"{folder} is a regression model (one score); {task.name} is a classification task")
    if task.labels and task.kind == "classification" and len(id2label) != len(task.labels):
        # an output no label names would count its predictions as wrong, and score the data all the same
        raise TaskError(
            f"{folder} has {len(id2label)} outputs; {task.name} has {len(task.labels)} labels "
            f"({', '.join(task.labels)}): point at a model fine-tuned for {task.name}"
        )
    many = task.kind in ("tagging", "multilabel")  # labels per example
    gold = {t for examples in splits.values() for e in examples for t in (e.label if many else [e.label])}
    names = [id2label[i] for i in range(len(id2label))]
    # a folder fine-tuned here knows its labels: never guess its outputs' order then
    for labels in [recorded] if recorded is not None else [names, [str(i) for i in range(len(names))]]:
        if len(labels) == len(names) and gold <= set(labels):
            return list(labels)
    hint = ""
    if task.kind == "multilabel" and (joined := joined_labels(gold - set(recorded or names), recorded or names)):
        hint = f"; are labels such as {joined[0]!r} joined by {joined[1]!r}? pass --label-separator {joined[1]!r}"
    raise TaskError(
        f"the labels of {folder} ({', '.join(map(str, recorded or names))}) do not name the data's "
        f"({', '.join(sorted(map(str, gold)))}); evaluate it on data labelled as it was trained{hint}"
    )
