"""`electra finetune`: a pre-trained encoder -> a task model, evaluated on the dev set, over seeds.

Classification (one label per text, or any number: multi-label), regression and tagging here;
SQuAD's windows and answer spans in electra.qa.

encoder (our run / checkpoint, or any ELECTRA HF folder) + task data
  ──tokenize (truncate and count)──▶ length-grouped, dynamically padded batches
  ──AdamW, layer-wise LR decay, 10% warmup × linear decay──▶ dev scores after the last epoch
  ──over N seeds──▶ median and spread ──▶ HF folder of the best seed + results.json
"""

from __future__ import annotations

import collections
import contextlib
import copy
import hashlib
import json
import math
import os
import pickle
import random
import statistics
import sys
import time
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from electra import hf, parallel, qa
from electra.atomic import (
    OutputExistsError,
    check_output,
    check_writable,
    delete_out_of_sight,
    folder_lock,
    publish_file,
    publishing_file,
    refuse_overlap,
    remove_leftovers,
)
from electra.card import finetuned_card, hub_metadata
from electra.checkpoint import is_checkpoint, list_checkpoints, load_checkpoint
from electra.config import check_flags, check_options
from electra.model import Encoder, QuestionAnswerer, SequenceClassifier, TokenClassifier, checkpoint_activations
from electra.optim import adamw, lr_factor, set_lr
from electra.parallel import allow_tf32, autocast
from electra.progress import progress_bar
from electra.signals import Interrupted, StopRequest
from electra.tasks import (
    GLUE,
    GLUE_FOLDERS,
    METRICS,
    Example,
    MissingColumn,
    Task,
    TaskError,
    both_orders,
    entity_scores,
    glue_folder,
    glue_from_datasets,
    glue_test,
    glue_test_from_datasets,
    hub_glue,
    joined_labels,
    label_list,
    read_conll,
    read_table,
    through_datasets,
)
from electra.tokenizer import load_model_tokenizer, vocab_in_order

SQUAD = ("squad", "squad_v2")  # SQuAD 1.1 and 2.0 (questions without an answer)


@dataclass(frozen=True)
class FinetuneConfig:
    model: str
    task: str
    data: str
    out: str
    seeds: int = 1
    seed: int = 0  # seeds used: seed, seed + 1, ...
    epochs: int | None = None  # default: the paper's for the task (3; 10 for RTE and STS-B)
    lr: float | None = None  # default by size: 3e-4 (hidden <= 256), 1e-4 (<= 768), 5e-5; 2e-3 below 128
    layer_decay: float | None = None  # default 0.8 (0.9 for 24 layers or more)
    batch_size: int = 32
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_length: int | None = None  # default 128; SQuAD 512 (at most the model's positions)
    doc_stride: int | None = None  # SQuAD: tokens shared by neighbouring windows (128, at most half of one)
    null_threshold: float = 0.0  # SQuAD 2.0: no answer when [CLS] beats the best span by more than this
    max_train_examples: int | None = None  # a seeded random subset of the training set (quick runs)
    truncate: bool = True  # False: refuse texts longer than max_length
    text_field: str | None = None  # csv task: column names
    pair_field: str | None = None
    label_field: str | None = None
    regression: bool | None = None  # csv: None infers it (all labels numbers, some with a fraction)
    multi_label: bool = False  # csv: each text has any number of the labels (a JSON list, or a cell of them)
    label_separator: str = ","  # csv, multi-label: what separates the labels in a table cell
    label_columns: tuple[str, ...] = ()  # csv, multi-label: one 0/1 column per label, not label_field
    device: str = "auto"
    precision: str = "auto"  # as in pre-training: bf16 on CUDA (fp16, loss-scaled, before Ampere), fp32 on CPU
    save_minutes: float = 30.0  # a seed's progress is saved this often: a stopped run resumes mid-seed
    data_parallel: bool = False  # under torchrun: every process trains every seed, on a slice of each batch
    activation_checkpointing: bool = False  # recompute each block in backward: less memory, the same results
    deterministic: bool = False  # kernels that add in a fixed order: bitwise-repeatable seeds on CUDA too
    license: str | None = None  # what the model card declares to the hub (electra.card.hub_metadata)
    language: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_flags(self)
        check_options(
            self,
            **dict.fromkeys(("epochs", "batch_size", "max_train_examples"), "count"),
            seeds="seeds",
            seed="seed",
            doc_stride="count0",
            lr="positive",
            layer_decay="share",
            warmup_fraction="fraction",
            weight_decay="non-negative",
            save_minutes="non-negative",
        )
        if self.max_length is not None and self.max_length < 3:
            raise ValueError(f"max-length must be at least 3 ([CLS], a token, [SEP]), got {self.max_length}")
        if self.multi_label and self.task != "csv":
            raise ValueError(f"multi-label is for --task csv (one's own data), not {self.task}")
        if self.multi_label and self.regression:
            raise ValueError("--regression and --multi-label exclude each other (multi-label classifies): drop one")
        if self.label_columns:
            _check_label_columns(self)
        if not isinstance(self.label_separator, str) or not self.label_separator:
            given = self.label_separator
            raise ValueError(f"label-separator must be one character or more, such as ',' or '|', got {given!r}")
        if self.precision not in parallel.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(parallel.PRECISIONS)}, got {self.precision!r}")
        hub_metadata(self.license, self.language)


def _check_label_columns(cfg: FinetuneConfig) -> None:
    columns = cfg.label_columns
    if not isinstance(columns, tuple | list) or not all(isinstance(c, str) and c.strip() for c in columns):
        raise ValueError(f"label-columns must be column names, such as ('toxic', 'insult'), got {columns!r}")
    if not cfg.multi_label:
        raise ValueError("label-columns are a multi-label task's 0/1 columns, one per label: set multi-label too")
    if cfg.label_field is not None:
        raise ValueError("--label-field and --label-columns exclude each other (a column of labels, or a column each)")
    if len(columns) < 2:
        raise ValueError(
            f"label-columns names one column ({columns[0]!r}); a yes/no is a single-label task: fine-tune with "
            f"--label-field {columns[0]} and without --multi-label"
        )
    if len(set(columns)) < len(columns):
        twice = next(c for c in columns if columns.count(c) > 1)
        raise ValueError(f"label-columns names {twice!r} twice; name each column once")


# --------------------------------------------------------------------------------------
# Loading the pre-trained encoder
# --------------------------------------------------------------------------------------


def load_pretrained(path: str | os.PathLike) -> tuple[Encoder, Path]:
    """The encoder to fine-tune and the folder holding its tokenizer."""
    p = Path(path)
    if p.is_dir() and (is_checkpoint(p) or list_checkpoints(p)):
        ckpt = load_checkpoint(p)
        part = "generator" if ckpt.meta.get("objective") == "mlm" else "discriminator"
        if not ckpt.has_tokenizer:
            raise ValueError(f"{ckpt.path} holds no tokenizer files; export it with --tokenizer first")
        return ckpt.model.encoder(part), ckpt.path
    folder = hf.resolve(path)
    if _is_generator(folder, str(path)):
        print(
            f"note: {path} is an ELECTRA generator (ElectraForMaskedLM), the small network that corrupts the "
            "discriminator's input; ELECTRA's results come from fine-tuning the discriminator "
            "(ElectraForPreTraining, `electra export`'s --out)",
            file=sys.stderr,
        )
    return hf.load_encoder(folder), folder


def _is_generator(folder: Path, name: str) -> bool:
    """An ELECTRA generator's folder: a masked LM that our export's card calls a generator, or a
    released one named so (google/electra-small-generator)."""
    if hf.read_config(folder).get("architectures") != [hf.HF_ARCHITECTURES["generator"]]:
        return False
    card = folder / "README.md"
    ours = card.is_file() and "# ELECTRA generator" in card.read_text(encoding="utf-8", errors="replace")
    return ours or "generator" in Path(name).name.lower()


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


DEV_NAMES = ("dev", "validation", "valid")


TABLES = ("tsv", "csv", "jsonl")  # the file kinds `--task csv` reads
TAGGED = ("txt", "conll", "tsv")  # CoNLL files, as `--task ner` reads them (token<TAB>tag lines are often .tsv)


def _present(folder: Path, stem: str, kinds: tuple[str, ...]) -> list[Path]:
    """The task files named `stem` (train, dev, validation, test) of these `kinds` in `folder`."""
    return [f for x in kinds if (f := folder / f"{stem}.{x}").exists()]


def _find(folder: Path, stem: str, kinds: tuple[str, ...]) -> Path:
    found = _present(folder, stem, kinds)
    if len(found) > 1:
        raise TaskError(f"{folder} holds {' and '.join(f.name for f in found)}; keep the one to use")
    if not found:
        stems = DEV_NAMES if stem == "dev" else (stem,)
        names = "/".join(stems)
        others = [f.name for n in stems for x in TABLES + TAGGED if (f := folder / f"{n}.{x}").exists()]
        other = f" ({', '.join(others)} is for --task {'ner' if kinds == TABLES else 'csv'})" if others else ""
        raise TaskError(f"{folder} has no {names}.{'/.'.join(kinds)}{other}")
    return found[0]


def _entities_opened_by_inside_tags(examples: list[Example]) -> int:
    """Entities whose first tag is I-X (after O, another type, or the sentence start)."""
    count = 0
    for e in examples:
        before = "O"
        for tag in e.label:
            if tag.startswith("I-") and before[2:] != tag[2:]:
                count += 1
            before = tag
    return count


def _unscored(error: TaskError, test: Path, text: str, pair: str | None, labels: str) -> str:
    """Why a test file that could not be read with labels (`labels` names their column) is not scored."""
    if isinstance(error, MissingColumn):
        try:
            read_table(test, text, pair, None)
            return f"has no {labels} labels: it is not scored"
        except TaskError:
            pass
    return f"is not scored: {error}"


def _test_file(folder: Path, kinds: tuple[str, ...]) -> Path | None:
    return _find(folder, "test", kinds) if _present(folder, "test", kinds) else None


def load_task(cfg: FinetuneConfig, with_train: bool = True) -> tuple[Task, list[Example], dict[str, list[Example]]]:
    """The task and its training and dev examples (several dev sets for MNLI; a labelled test set
    beside them for csv and ner). Without `with_train` the training file is not read (evaluation).
    A split without examples is refused: it would score 0 (or NaN), as if it had been scored."""
    task, train, devs = _read_task(cfg, with_train)
    splits = {"train": train, **devs} if with_train else devs
    for name, examples in splits.items():
        if not examples:
            raise TaskError(f"{cfg.data} has no {name} examples for {cfg.task} (an empty file?); fill or remove it")
    return task, train, devs


def _read_task(cfg: FinetuneConfig, with_train: bool) -> tuple[Task, list[Example], dict[str, list[Example]]]:
    data = Path(cfg.data)
    if cfg.task in GLUE:
        task = GLUE[cfg.task]
        if through_datasets(cfg.data):
            train, devs = glue_from_datasets(task, cfg.data)
            return task, train, devs
        folder = glue_folder(data, task)
        own = f"GLUE's {GLUE_FOLDERS[task.name]}"
        read = lambda f: read_table(folder / f, task.text, task.pair, task.label, task.header, own, task.labels)  # noqa: E731
        return task, read(task.train) if with_train else [], {Path(f).stem: read(f) for f in task.dev}
    if cfg.task in SQUAD:
        task = Task(cfg.task, "span", ("f1", "exact_match"), epochs=2)  # the paper's 2 epochs for SQuAD
        if data.is_file():  # evaluation reads a dev file as it is; fine-tuning needs both splits
            if with_train:
                raise TaskError(
                    f"{data} is a file; put the train and dev SQuAD JSON files (train-v1.1.json, dev-v1.1.json) "
                    "in one folder and pass the folder"
                )
            train, dev = [], qa.read_squad(data)
        elif not data.is_dir() or (data / "dataset_dict.json").exists():  # a hub name or a saved DatasetDict
            train, dev = qa.squad_from_datasets(cfg.data)
        else:
            train = qa.read_squad(_squad_file(data, "train")) if with_train else []
            dev = qa.read_squad(_squad_file(data, "dev"))
        if cfg.task == "squad" and (unanswerable := sum(not e.label for e in (*train, *dev))):
            print(
                f"note: {unanswerable:,} of the {len(train) + len(dev):,} questions have no answer, as in SQuAD 2.0; "
                "--task squad never answers nothing (--task squad_v2 does)",
                file=sys.stderr,
            )
        return task, train, {"dev": dev}
    if not data.is_dir():
        raise TaskError(f"{data} is not a folder; put train and dev files in one folder")
    # the dev file by any of its usual names (CoNLL-2003's text release calls it valid.txt)
    kinds = TAGGED if cfg.task == "ner" else TABLES
    dev_stem = next((s for s in DEV_NAMES if _present(data, s, kinds)), "dev")
    if cfg.task == "ner":
        task = Task("ner", "tagging", ("f1", "precision", "recall"))
        devs = {"dev": read_conll(_find(data, dev_stem, kinds))}
        if test := _test_file(data, kinds):  # labelled, as CoNLL-2003's: scored beside dev, never used to choose
            try:
                devs["test"] = read_conll(test)
            except TaskError as e:  # tokens without tags: nothing to score
                print(f"{test.name} is not scored: {e}", file=sys.stderr)
        train = read_conll(train_file := _find(data, "train", kinds)) if with_train else []
        if opened := _entities_opened_by_inside_tags(train):
            print(
                f"note: {opened:,} entities in {train_file.name} begin with an I- tag (IOB1 tagging, or slips): the "
                "model learns the tags as written and scoring reads each as an entity's start; for BIO (IOB2) begin "
                "every entity with B-",
                file=sys.stderr,
            )
        return task, train, devs
    if cfg.task == "csv":
        text, many, columns = cfg.text_field or "text", cfg.multi_label, tuple(cfg.label_columns)
        label = None if columns else cfg.label_field or "label"
        read = lambda f: read_table(f, text, cfg.pair_field, label, empty_label=many, label_columns=columns)  # noqa: E731
        train = read(train_file := _find(data, "train", kinds)) if with_train else []
        devs = {"dev": read(dev_file := _find(data, dev_stem, kinds))}
        if test := _test_file(data, kinds):
            try:
                devs["test"] = read(test)
            except TaskError as e:  # an unlabelled test set is not scored, nor a partly labelled one
                named = ", ".join(map(repr, columns)) if columns else repr(label)
                print(f"{test.name} {_unscored(e, test, text, cfg.pair_field, named)}", file=sys.stderr)
        files = {"train": train_file if with_train else None, "dev": dev_file, "test": test}
        if many:
            train = _label_lists(train, cfg.label_separator, files["train"])
            devs = {k: _label_lists(v, cfg.label_separator, files[k]) for k, v in devs.items()}
            if devs["dev"] and not any(e.label for e in devs["dev"]):
                raise TaskError(
                    f"{dev_file} has no label in any row: a dev set without labels scores nothing; label it "
                    f"(or check {'--label-columns' if columns else '--label-field'})"
                )
            if "test" in devs and not any(e.label for e in devs["test"]):  # empty cells: a test set not labelled
                print(f"{test.name} is not scored: no row has a label", file=sys.stderr)
                del devs["test"]
            metrics = ("micro_f1", "macro_f1", "subset_accuracy")
            return Task("csv", "multilabel", metrics, labels=columns), train, devs  # columns: the labels, in order
        for name, examples in {"train": train, **devs}.items():
            if n := next((i + 1 for i, e in enumerate(examples) if isinstance(e.label, list)), None):
                fix = "pass --multi-label" if with_train else "evaluate a model fine-tuned with --multi-label"
                raise TaskError(f"{files[name]} example {n} has a list of labels (multi-label data); {fix}")
        labelled = train or devs["dev"]
        regression = cfg.regression
        if regression is None:  # numbers with a fraction somewhere are scores; "0"/"1" are classes
            regression = all(_is_number(e.label) for e in labelled) and any(
                math.isfinite(float(e.label)) and float(e.label) != int(float(e.label)) for e in labelled
            )
        binary = len({e.label for e in labelled}) <= 2
        task = Task(
            "csv",
            "regression" if regression else "classification",
            ("pearson", "spearman") if regression else ("accuracy", "f1" if binary else "macro_f1"),
        )
        return task, train, devs
    raise TaskError(f"unknown task {cfg.task!r}; use one of {', '.join([*GLUE, 'csv', 'ner', *SQUAD])}")


def _label_lists(examples: list[Example], separator: str, path: Path) -> list[Example]:
    return [replace(e, label=label_list(e.label, separator, f"{path} example {i}")) for i, e in enumerate(examples, 1)]


def _squad_file(folder: Path, split: str) -> Path:
    """SQuAD's own names (train-v1.1.json, dev-v2.0.json) or train.json / dev.json."""
    found = sorted(folder.glob(f"{split}*.json"))
    if len(found) != 1:
        what = f"{len(found)}: {', '.join(f.name for f in found)}" if found else "none"
        raise TaskError(f"{folder} needs one {split}*.json SQuAD file (such as {split}-v1.1.json); found {what}")
    return found[0]


def _is_number(x) -> bool:
    try:
        float(x)
        return True
    except (TypeError, ValueError):
        return False


def label_set(task: Task, train: list[Example], devs: dict[str, list[Example]]) -> list[str]:
    if task.kind == "regression":
        return ["score"]
    if task.kind == "span":
        return []
    many = task.kind in ("tagging", "multilabel")  # labels per example
    seen = {t for e in train for t in (e.label if many else [e.label])}
    labels = list(task.labels) if task.labels else sorted(seen, key=str)  # key: 1.0 and "pos" in one file
    if task.kind == "multilabel" and len(labels) < 2:  # one label is a yes/no: a classifier of two classes
        named = f"one label ({labels[0]!r})" if labels else "no label in any row"
        raise TaskError(
            f"train has {named}; multi-label fine-tuning learns two labels or more: for one, label each row "
            "with it or another class (such as 'none') and fine-tune without --multi-label"
        )
    if len(labels) < 2:  # one label is nothing to learn, and one output would read as a regression score
        raise TaskError(
            f"train has only one label ({', '.join(map(repr, labels)) or 'none'}); a classifier learns to tell "
            "at least two apart: add examples of the others"
        )
    if task.kind == "tagging" and "O" in labels:
        labels.remove("O")
        labels.insert(0, "O")
    known = set(labels)
    for name, examples in {"train": train, **devs}.items():
        for i, e in enumerate(examples):
            for w, t in enumerate(e.label if many else [e.label]):
                if t not in known:
                    what = f"not one of {task.name}'s labels" if task.labels else "unseen in training"
                    scores = not task.labels and all(map(_is_number, [t, *labels]))
                    raise TaskError(
                        f"{name} {_example_at(task, e, i, w)} has label {t!r}, {what} "
                        f"(known: {', '.join(sorted(map(str, known)))})"
                        + ("; if the labels are scores, pass --regression" if scores else "")
                    )
    if task.labels and len(seen) < 2:  # a GLUE task's labels are fixed: its data may still hold only one
        raise TaskError(
            f"train has only one of {task.name}'s labels ({', '.join(map(repr, sorted(seen, key=str))) or 'none'}); "
            f"a classifier learns to tell at least two apart: add examples of {', '.join(sorted(known - seen))}"
        )
    return labels


def label_notes(task: Task, train: list[Example]) -> list[str]:
    """Labels of one's own data that look like slips: names that differ only in case or spacing
    ("Pos" beside "pos"), or numbers among words ("3" beside "pos"). Each becomes a class
    of its own (and more than two classes change the main metric to macro-F1), so they are said.
    Multi-label: also names that look like several labels joined by another separator."""
    if task.labels or task.kind not in ("classification", "multilabel"):
        return []
    many = task.kind == "multilabel"
    counts = collections.Counter(t for e in train for t in (e.label if many else [e.label]))
    notes = []
    if many and (joined := joined_labels(counts, counts)):
        name, c = joined
        notes.append(
            f"labels such as {name!r} look like several joined by {c!r}; if they are, pass --label-separator {c!r}"
        )
    alike = collections.defaultdict(list)
    for label in counts:
        alike[" ".join(str(label).split()).casefold()].append(label)
    for group in alike.values():
        if len(group) > 1:
            named = ", ".join(f"{x!r} ({counts[x]:,} example{'s' * (counts[x] != 1)})" for x in sorted(group, key=str))
            notes.append(
                f"labels {named} differ only in case or spacing and are separate classes; "
                "if they are one, write them alike"
            )
    if {_is_number(x) for x in counts} == {True, False}:
        numbers = sorted((x for x in counts if _is_number(x)), key=str)
        notes.append(f"labels mix numbers ({', '.join(map(repr, numbers[:5]))}) with texts; each is a class of its own")
    return notes


def _example_at(task: Task, e: Example, i: int, word: int) -> str:
    """Where a label sits, findable in the file: the example's number and its text's start (a
    tagged sentence's first words and the word itself)."""
    if task.kind == "tagging":
        start = " ".join(e.text[:6]) + (" ..." if len(e.text) > 6 else "")
        return f"sentence {i + 1} ({start!r}): word {word + 1} {e.text[word]!r}"
    text = e.text if len(e.text) <= 40 else e.text[:40] + "..."
    return f"example {i + 1} ({text!r})"


@dataclass
class Encoded:
    ids: list  # token ids per row: int32 arrays (or lists)
    types: list
    labels: list  # int / float per example, or a list per token (-100 where not scored)
    words: list[list[int | None]] | None = None  # tagging: the word of each token
    tags: list[list[int]] | None = None  # tagging: every word's gold tag, those cut or without tokens too
    windows: qa.Windows | None = None  # SQuAD: rows are windows of these questions
    questions: list[Example] | None = None


def encode(
    tok,
    task: Task,
    examples: list[Example],
    labels: list[str],
    max_length: int,
    truncate: bool,
    where: str,
    numbers: list[int] | None = None,
    stride: int | None = None,
) -> tuple[Encoded, int]:
    """Token ids, types and aligned labels; returns the number of truncated examples too.

    `numbers` are the examples' places in their file (1-based) for error messages, when
    `examples` is a subset; by default their places in `examples`. SQuAD: one row per window
    of a context (`stride` tokens shared by neighbours); questions cut to 64 tokens count as truncated;
    training questions whose answer is not at its answer_start are left out.
    """
    if task.kind == "span":
        if where == "train":  # a label from an answer that is not where it says would teach the wrong span
            placed = [e for e in examples if qa.answer_placed(e)]
            if len(placed) < len(examples):
                left = len(examples) - len(placed)
                print(f"train: left out {left} questions whose answer is not at its answer_start", file=sys.stderr)
            examples = placed
        w = qa.encode_windows(tok, examples, max_length, stride, keep_offsets=where != "train")
        if any(w.cut) and not truncate:
            raise TaskError(
                f"{where} question {w.cut.index(True) + 1} is longer than {qa.QUESTION_TOKENS} tokens; allow truncation"
            )
        return Encoded(w.ids, w.types, w.labels, windows=w, questions=list(examples)), sum(w.cut)
    index = {label: i for i, label in enumerate(labels)}
    tok.enable_truncation(max_length, strategy="longest_first")  # pairs: trim the longer text first
    tok.no_padding()
    if task.kind == "tagging":
        encodings = tok.encode_batch([e.text for e in examples], is_pretokenized=True)
    elif examples and examples[0].pair is not None:
        encodings = tok.encode_batch([(e.text, e.pair or "") for e in examples])
    else:
        encodings = tok.encode_batch([e.text for e in examples])
    out = Encoded([], [], [], *([[], []] if task.kind == "tagging" else []))
    truncated = 0
    for i, (e, enc) in enumerate(zip(examples, encodings, strict=True)):
        ids, types = enc.ids, enc.type_ids
        n = numbers[i] if numbers else i + 1
        if enc.overflowing:
            if not truncate:
                raise TaskError(
                    f"{where} example {n} (counted from 1 in its file) is longer than --max-length {max_length} "
                    "tokens; raise it (up to the model's positions), shorten the example, or drop --no-truncate"
                )
            truncated += 1
        out.ids.append(np.array(ids, dtype=np.int32))  # a tenth of a list's memory on MNLI-sized sets
        out.types.append(np.array(types, dtype=np.int8))
        if task.kind == "tagging":
            words = enc.word_ids[: len(ids)]
            tags, previous = [], None
            for w in words:  # the first piece of each word carries its tag
                tags.append(index[e.label[w]] if w is not None and w != previous else -100)
                previous = w
            out.labels.append(tags)
            out.words.append(words)
            out.tags.append([index[t] for t in e.label])
        elif task.kind == "multilabel":  # one 0/1 target per label
            hot = np.zeros(len(labels), dtype=np.float32)
            hot[[index[t] for t in e.label]] = 1
            out.labels.append(hot)
        elif task.kind == "regression":
            if not (_is_number(e.label) and math.isfinite(float(e.label))):
                raise TaskError(f"{where} example {n} has score {e.label!r}, not a finite number")
            out.labels.append(float(e.label))
        else:
            out.labels.append(index[e.label])
    return out, truncated


def batches(data: Encoded, batch_size: int, seed: int | None, pad_id: int = 0, skip: int = 0):
    """Dynamically padded batches; in training, lengths grouped in shuffled chunks of 50 batches.
    `skip` leaves out the first batches of the order (a seed resumed part-way through an epoch)."""
    order = list(range(len(data.ids)))
    if seed is not None:
        rng = random.Random(seed)
        rng.shuffle(order)
        chunk = batch_size * 50
        order = [
            i for s in range(0, len(order), chunk) for i in sorted(order[s : s + chunk], key=lambda i: len(data.ids[i]))
        ]
        groups = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        rng.shuffle(groups)
    else:
        order.sort(key=lambda i: len(data.ids[i]))
        groups = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    for group in groups[skip:]:
        T = max(len(data.ids[i]) for i in group)
        ids = torch.full((len(group), T), pad_id, dtype=torch.long)
        types = torch.zeros((len(group), T), dtype=torch.long)
        mask = torch.zeros((len(group), T), dtype=torch.long)
        for row, i in enumerate(group):
            n = len(data.ids[i])
            ids[row, :n] = torch.as_tensor(data.ids[i])
            types[row, :n] = torch.as_tensor(data.types[i])
            mask[row, :n] = 1
        if isinstance(data.labels[group[0]], list):
            labels = torch.full((len(group), T), -100, dtype=torch.long)
            for row, i in enumerate(group):
                labels[row, : len(data.labels[i])] = torch.tensor(data.labels[i])
        elif isinstance(data.labels[group[0]], np.ndarray):  # multi-label: (B, labels) of 0/1
            labels = torch.from_numpy(np.stack([data.labels[i] for i in group]))
        else:
            labels = torch.tensor([data.labels[i] for i in group])
        yield group, ids, types, mask, labels


# --------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------


def layer_scales(encoder: Encoder, decay: float) -> dict[str, float]:
    """LR factors as in Google's ELECTRA (`_get_layer_lrs`): depth 0 for the embeddings and their
    projection, i + 1 for layer i, L + 2 for the task head; factor decay^(L + 2 - depth). The
    head gets the base rate, the top layer decay^2 of it, the embeddings decay^(L + 2)."""
    L = encoder.cfg.num_layers
    scales = {"encoder.embeddings.": decay ** (L + 2), "encoder.transformer.project.": decay ** (L + 2)}
    scales.update({f"encoder.transformer.layers.{i}.": decay ** (L + 1 - i) for i in range(L)})
    return scales


def _loss(task: Task, logits: torch.Tensor, labels: torch.Tensor, total: torch.Tensor | None = None) -> torch.Tensor:
    """The batch's mean loss, or, given `total` (`_loss_terms` of a whole batch this one is a slice
    of), this slice's sum over it: the slices' losses then add up to the whole batch's mean."""
    reduction = "mean" if total is None else "sum"
    if task.kind == "regression":  # on targets / scale, the units the head learns in (the model multiplies back)
        scale = task.target_scale
        loss = F.mse_loss(logits.squeeze(-1).float() / scale, labels.float() / scale, reduction=reduction)
    elif task.kind == "multilabel":  # each label a yes/no: transformers' BCEWithLogitsLoss, mean over all of them
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction=reduction)
    elif task.kind == "span":  # (B, T, 2) against (B, 2): the mean of the start and end cross-entropies
        loss = F.cross_entropy(logits.float().transpose(1, 2).flatten(0, 1), labels.flatten(), reduction=reduction)
    else:
        loss = F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=-100, reduction=reduction)
    return loss if total is None else loss / total


def _loss_terms(task: Task, labels: torch.Tensor) -> torch.Tensor:
    """How many terms `_loss` averages over: rows (span: their starts and ends; multi-label: every
    row's every label), or labelled words."""
    if task.kind == "tagging":
        return (labels != -100).sum().clamp(min=1)
    return torch.tensor(labels.numel())


@torch.no_grad()
def predictions(
    model,
    task: Task,
    data: Encoded,
    device,
    batch_size: int = 128,
    precision: str = "fp32",
    null_threshold=0.0,
    dist: parallel.Dist | None = None,
    progress: str | None = None,
    everywhere: bool = False,
    threshold: float = 0.5,
) -> list:
    """Each example's prediction: a label index, a score, 0/1 per label (multi-label: 1 where its
    probability is above `threshold`), a label index per token, or (SQuAD) a qa.Answer.

    Under data-parallel fine-tuning (`dist`, every process holding the same weights) each process
    runs every N-th batch and they exchange the logits: every process returns every prediction.
    `progress` names a bar over the examples, shown on a terminal (`everywhere`: in a log file too)."""
    dist = dist or parallel.Dist()
    model.eval()
    groups, computed = [], {}
    hidden = True if progress is None or not dist.main else False if everywhere else None  # None: on a terminal
    unit = "window" if task.kind == "span" else "example"
    with progress_bar(total=len(data.ids), desc=progress, unit=unit, disable=hidden) as bar:
        for k, (group, ids, types, mask, _) in enumerate(batches(data, batch_size, None)):
            groups.append(group)
            if k % dist.world_size == dist.rank:
                with autocast(device, precision):
                    computed[k] = model(ids.to(device), types.to(device), mask.to(device)).float().cpu()
            bar.update(len(group))
    model.train()
    computed = parallel.all_gather_tensors(computed, dist)
    cut = math.log(check_threshold(threshold) / (1 - threshold))  # sigmoid(x) > p where x > log(p / (1 - p))
    preds: list = [None] * len(data.ids)
    for k, group in enumerate(groups):
        logits = computed[k]
        for row, i in enumerate(group):
            if task.kind == "regression":
                preds[i] = float(logits[row, 0])
            elif task.kind == "tagging":
                n = len(data.ids[i])
                preds[i] = logits[row, :n].argmax(-1).tolist()
            elif task.kind == "span":
                preds[i] = logits[row, : len(data.ids[i])].numpy()  # (T, 2): start and end logits
            elif task.kind == "multilabel":
                preds[i] = (logits[row] > cut).numpy().astype(np.float32)
            else:
                preds[i] = int(logits[row].argmax())
    if task.kind == "span":
        contexts = [e.pair for e in data.questions]
        return qa.best_answers(preds, data.windows, contexts, task.name == "squad_v2", null_threshold)
    return preds


def check_threshold(p: float) -> float:
    """A multi-label model's threshold: a label is predicted where its probability is above it."""
    if not (isinstance(p, int | float) and 0 < p < 1):
        raise ValueError(f"--threshold is a probability between 0 and 1 (not either), got {p!r}")
    return float(p)


def evaluate(
    model,
    task: Task,
    data: Encoded,
    labels: list[str],
    device,
    batch_size: int = 128,
    precision: str = "fp32",
    null_threshold: float = 0.0,
    dist: parallel.Dist | None = None,
    progress: str | None = None,
) -> dict:
    preds = predictions(model, task, data, device, batch_size, precision, null_threshold, dist, progress)
    return score(task, data, labels, preds)


def score(task: Task, data: Encoded, labels: list[str], preds: list) -> dict:
    """The task's metrics of `predictions` against the labels of `data`."""
    if task.kind == "span":
        return qa.answer_scores([a.text for a in preds], [[text for text, _ in e.label] for e in data.questions])
    if task.kind == "tagging":
        return entity_scores(*sentence_tags(data, labels, preds))
    return {m: METRICS[m](preds, data.labels) for m in task.metrics}


def sentence_tags(data: Encoded, labels: list[str], preds: list) -> tuple[list[list[str]], list[list[str]]]:
    """A tagger's predicted and gold tags of every word, sentence by sentence (`word_tags`)."""
    tags = [word_tags(p, w, g, labels) for p, w, g in zip(preds, data.words, data.tags, strict=True)]
    return [predicted for predicted, _ in tags], [gold for _, gold in tags]


def word_tags(
    pred: list[int], words: list[int | None], gold: list[int], labels: list[str]
) -> tuple[list[str], list[str]]:
    """(predicted, gold) tags of every word of a sentence: a word takes the tag predicted at its
    first piece (`words` gives each piece's word); one the model did not see (cut by the length
    limit, or without tokens) is predicted "O", so that its gold entities count as missed."""
    first: dict[int, int] = {}
    for k, w in enumerate(words):
        if w is not None:
            first.setdefault(w, k)
    predicted = [labels[pred[first[w]]] if w in first else "O" for w in range(len(gold))]
    return predicted, [labels[t] for t in gold]


def settings(cfg: FinetuneConfig, task: Task, encoder: Encoder) -> dict:
    """The learning rate, layer decay, epochs and tokens per example a run uses: the config's, or the
    defaults for the task and the encoder's size (the paper's rates by width; below 128 wide, 2e-3:
    docs/finetuning.md; 128 tokens, or for SQuAD 512 or the model's positions if fewer)."""
    width, layers = encoder.cfg.hidden_size, encoder.cfg.num_layers
    lr = 2e-3 if width < 128 else 3e-4 if width <= 256 else 1e-4 if width <= 768 else 5e-5
    return {
        "lr": lr if cfg.lr is None else cfg.lr,
        "layer_decay": (0.9 if layers >= 24 else 0.8) if cfg.layer_decay is None else cfg.layer_decay,
        "epochs": task.epochs if cfg.epochs is None else cfg.epochs,
        "max_length": cfg.max_length or (min(512, encoder.cfg.max_positions) if task.kind == "span" else 128),
    }


def task_model(task: Task, cfg, labels: list[str], encoder: Encoder | None = None) -> torch.nn.Module:
    """The model a task trains: the encoder with the task's head."""
    if task.kind == "span":
        return QuestionAnswerer(cfg, encoder=encoder)
    if task.kind == "tagging":
        return TokenClassifier(cfg, len(labels), encoder=encoder)
    if task.kind == "regression":
        return SequenceClassifier(cfg, 1, encoder=encoder, scale=task.target_scale)
    return SequenceClassifier(cfg, len(labels), encoder=encoder)


def train_one(
    cfg: FinetuneConfig,
    task: Task,
    encoder: Encoder,
    labels: list[str],
    train: Encoded,
    devs: dict[str, Encoded],
    seed: int,
    device,
    quiet: bool,
    used: dict,
    store: Path | None = None,
    key: dict | None = None,
    dist: parallel.Dist | None = None,
) -> tuple[dict, dict, list[dict]]:
    """One seed: the dev metrics after the last epoch (as the paper reports them), its weights,
    and the dev metrics of every epoch (shown, never used to pick a model: that would tune on dev).

    With a seed `store` (and the settings `key`), its progress (weights, optimizer, random
    state, step, the epochs' metrics) is saved there every `cfg.save_minutes`; a seed stopped
    part-way continues from there, exactly as if it had not stopped.

    With `dist` (a process group of several), the processes train the seed together (DDP): each
    takes every N-th row of each batch, and the gradients add up to the whole batch's. Only the
    first process saves progress."""
    dist = dist or parallel.Dist()
    torch.manual_seed(seed)
    model = task_model(task, encoder.cfg, labels, copy.deepcopy(encoder)).to(device).train()
    checkpoint_activations(model, cfg.activation_checkpointing)
    forward = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    lr, epochs = used["lr"], used["epochs"]  # from `settings`
    scales = layer_scales(encoder, used["layer_decay"])
    optimizer = adamw(model, lr, cfg.weight_decay, lr_scale=scales, fused=device.type == "cuda")
    per_epoch = -(-len(train.ids) // cfg.batch_size)
    total = epochs * per_epoch
    warmup = int(cfg.warmup_fraction * total)
    history, step = [], 0
    fp16 = parallel.resolve_precision(cfg.precision, device) == "fp16"
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)  # fp16 gradients need loss scaling
    if store is not None and (progress := _progress(store, seed, key)) is not None:
        model.load_state_dict(progress["model"])
        optimizer.load_state_dict(progress["optimizer"])
        scaler.load_state_dict(progress["scaler"])
        history, step = json.loads(progress["history"]), progress["step"]
        torch.set_rng_state(progress["rng"])  # dropout continues its stream
        if device.type == "cuda" and progress["cuda_rng"] is not None:  # None: saved by a run on the CPU
            torch.cuda.set_rng_state(progress["cuda_rng"], device)
        if not quiet:
            print(f"{task.name} seed {seed}: continuing from step {step} of {total}", file=sys.stderr)
    saved_at = time.monotonic()

    def save_progress(now: bool = False) -> None:
        nonlocal saved_at
        due = now or time.monotonic() - saved_at >= 60 * cfg.save_minutes
        if dist.main and store is not None and step < total and due:
            _save_progress(store, seed, key, step, history, model, optimizer, scaler, device)
            saved_at = time.monotonic()

    # a stop signal saves the step in progress and ends the run (a seed store holds the save)
    request = StopRequest(lambda text: print(text, file=sys.stderr) if dist.main else None)

    agreement = parallel.Agreement(dist)

    def stop_if_asked() -> None:
        """After a step (or an epoch's evaluation): save and stop if a signal came; the processes
        of a data-parallel seed take it at the same step, one after the first saw it."""
        if step == total:
            return  # a finished seed is kept anyway
        (asked,) = agreement([request.signum is not None])
        if asked:
            save_progress(now=True)
            parallel.barrier(dist)  # the others wait for the save: torchrun ends them all once one exits
            where = f"in {task.name} seed {seed} at step {step} of {total}; progress {store}/seed-{seed}.progress.pt"
            raise Interrupted(request.signum, where)

    bar = progress_bar(total=total, initial=step, desc=f"{task.name} seed {seed}", unit="step", disable=quiet)
    if store is not None:
        request.install()
    try:
        for epoch in range(step // per_epoch, epochs):
            for _, ids, types, mask, y in batches(train, cfg.batch_size, seed * 1000 + epoch, skip=step % per_epoch):
                set_lr(optimizer, lr, lr_factor(step, warmup, total))
                if dist.enabled:  # this process's rows; DDP averages the processes' gradients, so N x
                    torch.manual_seed(parallel.dropout_seed(seed, dist.rank, step))
                    total_terms, rows = _loss_terms(task, y).to(device), slice(dist.rank, None, dist.world_size)
                    weight = float(dist.world_size)
                    if len(y) <= dist.rank:  # a last batch smaller than N: a zero-weight row keeps DDP in step
                        rows, weight = slice(0, 1), 0.0
                    ids, types, mask, y = ids[rows], types[rows], mask[rows], y[rows]
                with autocast(device, cfg.precision):
                    logits = forward(ids.to(device), types.to(device), mask.to(device))
                if dist.enabled:
                    loss = _loss(task, logits, y.to(device), total_terms) * weight
                else:
                    loss = _loss(task, logits, y.to(device))
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)  # skipped when fp16 gradients overflowed
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.update(1)
                if step % 20 == 0 or step == total:  # reading the loss waits for the GPU: not every step
                    bar.set_postfix_str(f"loss {loss.item():.4f}", refresh=False)
                if step % per_epoch:  # an epoch's last step is saved after its evaluation
                    save_progress()
                    stop_if_asked()
            scores = {  # under data parallelism each process evaluates its share of the batches
                name: evaluate(
                    model,
                    task,
                    dev,
                    labels,
                    device,
                    precision=cfg.precision,
                    null_threshold=cfg.null_threshold,
                    dist=dist,
                    progress=None if quiet else f"{task.name} seed {seed} {name}",
                )
                for name, dev in devs.items()
            }
            history.append(scores)
            if not quiet:
                text = ", ".join(f"{name} {m} {v:.4f}" for name, s in scores.items() for m, v in s.items())
                bar.write(f"{task.name} seed {seed} epoch {epoch + 1}: {text}")
            save_progress()
            stop_if_asked()
    finally:
        request.restore()
        agreement.close()
    bar.close()
    return history[-1], {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, history


def _ranked(score: float) -> float:
    """A score as seeds are ranked by it: NaN (a seed whose training diverged) below every number."""
    return -math.inf if math.isnan(score) else score


def summarize(per_seed: list[dict]) -> tuple[dict, dict]:
    """Median and spread (min, max, std) of every metric over seeds; a NaN ranks lowest, so
    the figures do not depend on the seeds' order."""
    median, spread = {}, {}
    for name in per_seed[0]:
        median[name], spread[name] = {}, {}
        for metric in per_seed[0][name]:
            values = sorted((s[name][metric] for s in per_seed), key=_ranked)
            mid = len(values) // 2
            median[name][metric] = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
            spread[name][metric] = {
                "min": values[0],
                "max": values[-1],
                "std": float(np.std(values)),  # of the population (statistics.pstdev fails on a NaN)
            }
    return median, spread


def run(cfg: FinetuneConfig, quiet: bool = False, overwrite: bool = False) -> dict | None:
    """Fine-tune `cfg.seeds` seeds, write OUT (the best seed's model, results.json, the model card,
    test-set predictions) and return the results.

    Under torchrun the seeds are shared out among the processes (seed i to process i mod N, each
    on its own GPU), which leave them in the seed store; the first process waits for all, writes
    OUT and returns the results, the others return None. Every seed trains exactly as it would
    alone, so the results equal a single process's. One command at a time fine-tunes into OUT:
    a second is refused while the first runs.
    """
    out = Path(cfg.out)
    if parallel.from_env().main:
        check_writable(out)  # before the lock beside it: named as OUT, not as the seed store
        remove_leftovers(seed_store(out), f"run into {out}")  # a seed store whose removal a kill cut short
    held = folder_lock(seed_store(out), "fine-tuning", out) if parallel.from_env().main else contextlib.nullcontext()
    with held, parallel.deterministic(cfg.deterministic):
        return _run(cfg, quiet, overwrite)


def _run(cfg: FinetuneConfig, quiet: bool, overwrite: bool) -> dict | None:
    out = Path(cfg.out)
    check_output(out, overwrite, inputs=[cfg.model, cfg.data])
    task, train_examples, dev_examples = load_task(cfg)
    data_sha256 = examples_sha256(train_examples, dev_examples)
    labels = label_set(task, train_examples, dev_examples)
    if parallel.from_env().main:
        for note in label_notes(task, train_examples):
            print(f"note: {note}", file=sys.stderr)
    numbers = None  # the sampled examples' places in the file, for messages
    if cfg.max_train_examples is not None and cfg.max_train_examples < len(train_examples):
        picked = random.Random(cfg.seed).sample(range(len(train_examples)), cfg.max_train_examples)
        train_examples, numbers = [train_examples[i] for i in picked], [i + 1 for i in picked]
    if task.both_orders:  # unordered pairs (MRPC, STS-B): each in both orders, as Google's double_unordered
        numbers = (numbers or list(range(1, len(train_examples) + 1))) * 2
        train_examples = both_orders(train_examples)
    encoder, tokenizer_dir = load_pretrained(cfg.model)
    # what was read, not only where: a seed trained on other data or weights at the same paths is not reused
    fingerprints = {"data_sha256": data_sha256, "model_sha256": weights_sha256(encoder)}
    used = settings(cfg, task, encoder)
    max_length = used["max_length"]
    if max_length > encoder.cfg.max_positions:
        raise ValueError(f"--max-length {max_length} exceeds the model's {encoder.cfg.max_positions} positions")
    tok = load_model_tokenizer(tokenizer_dir, encoder.cfg.vocab_size)
    vocab_in_order(tok)  # the export writes vocab.txt: a tokenizer that cannot be written fails now, not after training
    train, n_trunc = encode(
        tok, task, train_examples, labels, max_length, cfg.truncate, "train", numbers, cfg.doc_stride
    )
    devs, dev_trunc = {}, 0
    for name, examples in dev_examples.items():
        devs[name], n = encode(tok, task, examples, labels, max_length, cfg.truncate, name, stride=cfg.doc_stride)
        dev_trunc += n
    tests = {}  # GLUE's unlabelled test rows, encoded now: a bad test file stops the run before any training
    for name, rows in test_sets(cfg, task).items():
        blank = 0.0 if task.kind == "regression" else labels[0]  # encoding needs a label; predictions ignore it
        unlabelled = [replace(e, label=blank) for e in rows]
        tests[name] = rows, encode(tok, task, unlabelled, labels, max_length, cfg.truncate, "test")[0]
    if n_trunc or dev_trunc:
        print(
            f"{task.name}: truncated {n_trunc} training and {dev_trunc} dev examples to "
            + (f"{qa.question_limit(max_length)} question tokens" if task.kind == "span" else f"{max_length} tokens"),
            file=sys.stderr,
        )
    store, key = seed_store(out), {**_comparable(asdict(cfg)), "task": cfg.task, "seeds": None, **fingerprints}
    if task.target_scale != 1:  # seeds of a head that learned the targets as they are do not carry on here
        key["target_scale"] = task.target_scale
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    together = cfg.data_parallel  # every process trains every seed (DDP), or (torchrun) each its share alone
    owned = together and not torch.distributed.is_initialized()  # else the caller's group (run_glue's)
    if together:
        d, device = parallel.init(cfg.device)
    else:
        d = parallel.from_env()
        device = parallel.process_device(cfg.device, d)
    try:
        quiet = quiet or not d.main  # one progress display
        allow_tf32(device)  # as in pre-training
        for seed in seeds if together else seeds[d.rank :: d.world_size]:
            if _kept_seed(store, seed, key) is not None:
                if d.main:
                    print(
                        f"{task.name} seed {seed}: finished by an earlier run with these settings; kept",
                        file=sys.stderr,
                    )
                continue
            final, state, history = train_one(
                cfg, task, encoder, labels, train, devs, seed, device, quiet, used, store, key, d if together else None
            )
            if d.main or not together:
                _keep_seed(store, seed, key, final, state, history)
            if together:
                parallel.barrier(d)  # every process sees this seed kept before the next one's check
    finally:
        if owned:
            parallel.shutdown()
    if not d.main:
        return None  # the first process gathers every seed from the store and writes OUT
    runs = _wait_for_seeds(store, seeds, key, quiet)
    median, spread = summarize([r["metrics"] for r in runs])
    main_dev, main = next(iter(devs)), task.metrics[0]
    chosen = max(runs, key=lambda r: _ranked(r["metrics"][main_dev][main]))
    results = {
        "task": task.name,
        "model": str(cfg.model),
        "model_read": str(Path(tokenizer_dir).resolve()),  # the folder or checkpoint (its step) that was read
        "labels": labels,
        "label_names": list(task.names) or labels,
        "main_metric": f"{main_dev}/{main}",
        "median": median,
        "spread": spread,
        "exported_seed": chosen["seed"],
        "seeds": runs,
        "truncated": {"train": n_trunc, "dev": dev_trunc},
        "examples": {
            k: len(v.ids if v.questions is None else v.questions) for k, v in {"train": train, **devs}.items()
        },
        "config": asdict(cfg),  # as given; `settings` holds the defaults it resolved to
        "settings": used,
        "fingerprints": fingerprints,
    }
    if "f1" in task.metrics and task.kind == "classification":  # binary F1 scores one class: the second label
        results["positive_label"] = results["label_names"][1]
    if task.kind == "span":
        results["windows"] = {k: len(v.ids) for k, v in {"train": train, **devs}.items()}
    model = task_model(task, encoder.cfg, labels)
    model.load_state_dict(load_file(store / f"seed-{chosen['seed']}.safetensors"))
    model.to(device)
    files = {}  # written into the folder with the model
    if task.kind == "span":  # the exported seed's dev answers, in the official evaluation's format
        dev = devs["dev"]
        answers = predictions(
            model,
            task,
            dev,
            device,
            precision=cfg.precision,
            null_threshold=cfg.null_threshold,
            progress=None if quiet else f"{task.name} dev answers",
        )
        ids = [e.id or str(n) for n, e in enumerate(dev.questions)]
        files["predictions.json"] = json.dumps(dict(zip(ids, (a.text for a in answers), strict=True)), indent=1) + "\n"
        if task.name == "squad_v2":  # the official script's --na-prob-file: it finds the best null threshold
            odds = dict(zip(ids, (a.null_margin for a in answers), strict=True))
            files["null_odds.json"] = json.dumps(odds, indent=1) + "\n"
    for name, (rows, data) in tests.items():  # GLUE: the exported seed's test predictions
        progress = None if quiet else f"{name} test"
        files[f"{name}.tsv"] = test_predictions(model, task, rows, data, labels, device, cfg.precision, progress)
        results.setdefault("test_predictions", []).append(f"{name}.tsv")
    files["results.json"] = json.dumps(results, indent=2) + "\n"
    files["README.md"] = finetuned_card(results, task.kind, encoder.cfg, out)  # the hub's model card
    model.cpu()
    if isinstance(model, SequenceClassifier):
        model.fold_scale()  # transformers' head has no scale: out_proj carries it
    if task.kind == "span":
        hf.export_question_answerer(model, out, tokenizer_dir, overwrite, files)
    else:
        names = list(task.names) or labels
        if task.kind == "tagging":
            hf.export_token_classifier(model, out, names, tokenizer_dir, overwrite, files)
        else:
            multi = task.kind == "multilabel"
            hf.export_sequence_classifier(model, out, names, tokenizer_dir, overwrite, files, multi_label=multi)
    if store.exists():  # the seeds are in OUT now (a kill part way leaves what the next command for OUT removes)
        delete_out_of_sight(store, ignore_errors=True)
    return results


def seed_store(out: Path) -> Path:
    """Where each finished seed waits for the others, beside OUT (hidden): a run stopped after
    some seeds keeps them, and the same command trains only the rest. Removed once OUT is written."""
    return out.parent / f".{out.name}.seeds"


def _keep_seed(store: Path, seed: int, key: dict, final: dict, state: dict, history: list) -> None:
    from safetensors.torch import save

    with publishing_file(store / f"seed-{seed}.safetensors", binary=True) as f:
        f.write(save(state))
    record = {"settings": key, "metrics": final, "per_epoch": history}
    publish_file(store / f"seed-{seed}.json", json.dumps(record) + "\n")  # last: it marks the seed complete
    (store / f"seed-{seed}.progress.pt").unlink(missing_ok=True)


def _save_progress(
    store: Path, seed: int, key: dict, step: int, history: list, model, optimizer, scaler, device
) -> None:
    """A seed part-way: everything its training needs to go on exactly (see `train_one`)."""
    state = {
        "settings": json.dumps(key),
        "step": step,
        "history": json.dumps(history),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    with publishing_file(store / f"seed-{seed}.progress.pt", binary=True) as f:
        torch.save(state, f)


def _progress(store: Path, seed: int, key: dict) -> dict | None:
    """A seed's saved progress with the same settings, loaded without unpickling code; else None."""
    path = store / f"seed-{seed}.progress.pt"
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing = {"settings", "step", "history", "model", "optimizer", "scaler", "rng", "cuda_rng"} - set(state)
        if missing:
            raise KeyError(f"it lacks {', '.join(sorted(missing))}")
        if json.loads(state["settings"]) != json.loads(json.dumps(key)):
            print(f"seed {seed}'s progress in {store} was made with other settings; starting it over", file=sys.stderr)
            return None
        return state
    except (RuntimeError, ValueError, KeyError, OSError, pickle.UnpicklingError) as e:
        print(f"seed {seed}'s progress in {store} is unreadable ({e}); starting it over", file=sys.stderr)
        return None


def _kept_seed(store: Path, seed: int, key: dict, quiet: bool = False) -> dict | None:
    """A seed finished (here or by another process, now or by an earlier run) with the same
    settings: {"metrics": final dev metrics, "per_epoch": every epoch's}; None if there is none."""
    record, weights = store / f"seed-{seed}.json", store / f"seed-{seed}.safetensors"
    if not (record.exists() and weights.exists()):
        return None
    try:
        saved = json.loads(record.read_text())
        if saved["settings"] != json.loads(json.dumps(key)):  # compared as JSON keeps them
            if not quiet:
                said = f"seed {seed} in {store} was finished with other settings; this run's replaces it"
                print(said, file=sys.stderr)
            return None
        return {"metrics": saved["metrics"], "per_epoch": saved["per_epoch"]}
    except (ValueError, KeyError, OSError) as e:
        if not quiet:
            print(f"seed {seed} in {store} is unreadable ({e}); training it again", file=sys.stderr)
        return None


def _wait_for_seeds(store: Path, seeds: list[int], key: dict, quiet: bool, poll_s: float = 2.0) -> list[dict]:
    """Every seed's {"seed", "metrics", "per_epoch"} from the store, once all are there: those of the
    other processes under torchrun too (which stops every process if one fails, so this never
    waits on a dead one)."""
    found = {s: kept for s in seeds if (kept := _kept_seed(store, s, key, quiet=True)) is not None}
    if len(found) < len(seeds) and not quiet:
        missing = [s for s in seeds if s not in found]
        which = f"seed{'s' * (len(missing) > 1)} {', '.join(map(str, missing))}"
        print(f"waiting for {which} from the other processes", file=sys.stderr)
    while len(found) < len(seeds):
        time.sleep(poll_s)
        found |= {s: kept for s in seeds if s not in found and (kept := _kept_seed(store, s, key, quiet=True))}
    return [{"seed": s, **found[s]} for s in seeds]


def test_sets(cfg: FinetuneConfig, task: Task) -> dict[str, list[Example]]:
    """A GLUE task's unlabelled test rows, where its folder or dataset has them, by submission name."""
    data = Path(cfg.data)
    if cfg.task not in GLUE:
        return {}
    if through_datasets(cfg.data):
        return glue_test_from_datasets(task, cfg.data)
    return glue_test(task, glue_folder(data, task))


def test_predictions(
    model,
    task: Task,
    rows: list[Example],
    data: Encoded,
    labels: list[str],
    device,
    precision: str,
    progress: str | None = None,
) -> str:
    """GLUE's submission format: a header, then each row's index (held in its label) and predicted
    label (STS-B: its score, clipped to the task's 0 to 5)."""
    preds = predictions(model, task, data, device, precision=precision, progress=progress)
    if task.kind == "regression":
        return "index\tprediction\n" + "".join(
            f"{e.label}\t{min(max(p, 0.0), 5.0):.3f}\n" for e, p in zip(rows, preds, strict=True)
        )
    return "index\tprediction\n" + "".join(f"{e.label}\t{labels[p]}\n" for e, p in zip(rows, preds, strict=True))


# --------------------------------------------------------------------------------------
# The GLUE benchmark: every task, one score
# --------------------------------------------------------------------------------------

# The tasks the paper's GLUE score averages (WNLI is left out, as in BERT and ELECTRA), with
# Matthews correlation for CoLA, Spearman for STS-B and accuracy for the rest: each task's
# main metric, on its (first) dev set.
GLUE_SCORE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")
_PER_TASK = ("task", "out", "device")  # settings that may differ between the tasks of one benchmark run
# settings that do not change what a run computes (the separator's effect is in the data's hash)
_NO_EFFECT = ("save_minutes", "activation_checkpointing", "deterministic", "label_separator", "license", "language")


def glue_tasks(data: str) -> list[str]:
    """The GLUE tasks `data` holds: all of them for the hub (`glue`), else the task folders present."""
    if hub_glue(data):
        return list(GLUE_SCORE_TASKS)
    root = Path(data)
    if not root.is_dir():
        raise TaskError(f"{data} is not a folder; for --task glue pass a folder holding GLUE's task folders")
    found = [t for t in GLUE_SCORE_TASKS if (root / GLUE_FOLDERS[t] / GLUE[t].train).exists()]
    for t in GLUE_SCORE_TASKS:
        if t not in found and (root / GLUE_FOLDERS[t]).is_dir():
            print(f"note: {root / GLUE_FOLDERS[t]} has no {GLUE[t].train}; {t} is left out", file=sys.stderr)
    if not found:
        names = ", ".join(GLUE_FOLDERS[t] for t in GLUE_SCORE_TASKS)
        one = next((t for t in GLUE_SCORE_TASKS if root.name == GLUE_FOLDERS[t]), None)
        hint = f"; {root} is {one}'s own folder: --task {one} fine-tunes on it alone" if one else ""
        raise TaskError(f"{data} holds none of GLUE's task folders ({names}), each with its {GLUE['sst2'].train}{hint}")
    return found


def run_glue(cfg: FinetuneConfig, quiet: bool = False, overwrite: bool = False) -> dict | None:
    """Fine-tune on every GLUE task in `cfg.data`, each into OUT/<task>, and write OUT/glue.json.

    The score is the mean of the tasks' main metrics (x100), over the tasks found; `complete`
    says whether all eight were. A task already in OUT with the same settings is kept, so a
    stopped run resumes where it was; `overwrite` re-runs every task. Under torchrun each task's
    seeds are shared out as in `run`, and only the first process writes and returns the summary.
    """
    out = Path(cfg.out)
    tasks = glue_tasks(cfg.data)
    refuse_overlap(out, [cfg.model, cfg.data])
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder; choose another output path")
    ours = {*tasks, "glue.json"}  # and hidden temporary folders a killed run may leave
    others = sorted(p.name for p in out.iterdir() if p.name not in ours and p.name[0] != ".") if out.exists() else []
    if others:  # never replaced, even with --force: this command writes task folders one by one into OUT
        raise OutputExistsError(f"{out} holds files of something else ({', '.join(others[:3])}); choose a new folder")
    wanted = _comparable(asdict(cfg))
    summary: dict = {"model": cfg.model, "data": cfg.data, "tasks": {}}
    # every task's data is read now: a bad file stops the run before hours on the tasks before it
    model_sha256 = weights_sha256(load_pretrained(cfg.model)[0])
    prints = {
        t: {"data_sha256": examples_sha256(*load_task(replace(cfg, task=t))[1:]), "model_sha256": model_sha256}
        for t in tasks
    }
    done = {}
    for t in [] if overwrite else tasks:  # checked before any work
        if (results := _finished(out / t, wanted)) is None:
            continue
        if results.get("fingerprints") == prints[t]:
            done[t] = results
        else:  # a note, not progress: shown under --quiet too
            print(f"glue: {t} was fine-tuned on other data or weights; fine-tuning it again", file=sys.stderr)
    if cfg.data_parallel:  # one process group for all the tasks
        parallel.init(cfg.device)
    try:
        _glue_tasks(cfg, tasks, done, summary, quiet)
    finally:
        if cfg.data_parallel:
            parallel.shutdown()
    return summary if parallel.from_env().main else None


def _glue_tasks(cfg: FinetuneConfig, tasks: list[str], done: dict, summary: dict, quiet: bool) -> None:
    out = Path(cfg.out)
    for i, name in enumerate(tasks, 1):
        results = done.get(name)
        if results is None:
            if not quiet:
                print(f"glue: {name} ({i} of {len(tasks)})", file=sys.stderr)
            results = run(replace(cfg, task=name, out=str(out / name)), quiet=quiet, overwrite=True)
        if results is None:  # under torchrun, a process other than the first: it wrote its seeds
            continue
        dev, metric = results["main_metric"].split("/")
        summary["tasks"][name] = {
            "metric": metric,
            "median": results["median"][dev][metric],
            "spread": results["spread"][dev][metric],
            "seeds": len(results["seeds"]),
        }
        for file in results.get("test_predictions", []):  # GLUE's submission files, where test sets were found
            summary.setdefault("test_predictions", {})[file] = f"{name}/{file}"
        scores = [t["median"] for t in summary["tasks"].values()]
        summary["score"] = 100 * statistics.mean(scores)
        summary["complete"] = set(summary["tasks"]) == set(GLUE_SCORE_TASKS)
        publish_file(out / "glue.json", json.dumps(summary, indent=2) + "\n")  # after every task: progress survives


def examples_sha256(train: list[Example], devs: dict[str, list[Example]]) -> str:
    """A hash of a task's examples (texts, pairs, labels), whatever files or names they came from."""
    h = hashlib.sha256()
    for name, examples in {"train": train, **devs}.items():
        h.update(json.dumps(name).encode())
        for e in examples:
            h.update(json.dumps([e.text, e.pair, e.label]).encode())
    return h.hexdigest()


def weights_sha256(module: torch.nn.Module) -> str:
    """A hash of a module's weights (names and bytes), wherever they were loaded from."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _comparable(config: dict) -> dict:
    """A task's settings, less those that may differ between tasks; local paths resolved, so
    that `runs/x` and `./runs/x` are the same model. An option newer than the folder counts at its default."""
    defaults = {f.name: f.default for f in fields(FinetuneConfig) if f.default is not MISSING}
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in {**defaults, **config}.items()}  # as JSON keeps them
    out = {k: v for k, v in out.items() if k not in (*_PER_TASK, *_NO_EFFECT)}
    out["max_length"] = out["max_length"] or 128  # GLUE's default, which older folders wrote out
    for key in ("model", "data"):
        if isinstance(out.get(key), str) and Path(out[key]).exists():
            out[key] = str(Path(out[key]).resolve())
    return out


def _finished(task_out: Path, wanted: dict) -> dict | None:
    """The results of a task fine-tuned earlier into `task_out` with the settings `wanted`, if any."""
    path = task_out / "results.json"
    if not path.exists():
        if task_out.exists():
            raise OutputExistsError(f"{task_out} holds no results.json; remove it, or pass --force to redo every task")
        return None
    try:
        results = json.loads(path.read_text())
        had = _comparable(results["config"])
    except (ValueError, KeyError, AttributeError) as e:
        raise OutputExistsError(f"{path} is damaged ({e}); remove {task_out}, or pass --force") from e
    if had != wanted:
        resolved = results.get("settings", {})  # what a default came to

        def shown(value, default=None) -> str:
            if value is not None:
                return repr(value)
            return "the default" + ("" if default is None else f" ({default!r})")

        diff = ", ".join(
            f"{k} {shown(had.get(k), resolved.get(k))} -> {shown(v)}" for k, v in wanted.items() if had.get(k) != v
        )
        raise OutputExistsError(
            f"{task_out} was fine-tuned with other settings ({diff}); pass --force to redo every task, "
            "or choose another --out"
        )
    return results
