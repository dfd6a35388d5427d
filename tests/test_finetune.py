"""Fine-tuning, evaluation and prediction: metrics, task readers, training, export, predict."""

import copy
import dataclasses
import errno
import io
import itertools
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from electra import hf
from electra.cli import main
from electra.config import tiny
from electra.finetune import FinetuneConfig, encode, label_set, layer_scales, run, score, word_tags
from electra.model import Electra, Encoder
from electra.tasks import (
    GLUE,
    Example,
    Task,
    TaskError,
    accuracy,
    entity_scores,
    entity_spans,
    f1,
    glue_folder,
    macro_f1,
    matthews,
    micro_f1,
    pearson,
    read_table,
    spearman,
    subset_accuracy,
)
from tests.conftest import SHARED_DATA

TEXT = dict(capture_output=True, text=True)

GLUE_DATA = SHARED_DATA / "glue"


def test_metrics_equal_hand_computed_values():
    pred, gold = [1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0]
    assert accuracy(pred, gold) == pytest.approx(4 / 6)
    assert f1(pred, gold) == pytest.approx(2 * 2 / (3 + 3))  # tp 2, 3 predicted, 3 gold
    # tp 2, tn 2, fp 1, fn 1: (4 - 1) / sqrt(3 * 3 * 3 * 3)
    assert matthews(pred, gold) == pytest.approx(3 / 9)
    assert matthews([1, 1, 1], [1, 0, 1]) == 0.0  # undefined: reported as 0, as GLUE does
    # deviations (-1.5, -0.5, 0.5, 1.5) and (-3.125, -1.125, 0.875, 3.375): 10.75 / sqrt(5 * 23.1875)
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8.5]) == pytest.approx(10.75 / math.sqrt(5 * 23.1875))
    # ties share the average rank: x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4)
    want = pearson([1, 2.5, 2.5, 4], [1, 2, 3, 4])
    assert spearman([0.1, 0.5, 0.5, 0.9], [1, 2, 3, 4]) == pytest.approx(want)
    assert spearman([3, 1, 2], [30, 10, 20]) == pytest.approx(1.0)
    # three classes, F1 = 2 tp / (predicted + gold) each: class 0 2/4, class 1 2/3, class 2 2/3
    assert macro_f1([0, 0, 1, 2, 2], [0, 1, 1, 2, 0]) == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    assert macro_f1([0, 0, 1, 2, 2], [0, 2, 1, 2, 2]) == pytest.approx((2 / 3 + 1.0 + 4 / 5) / 3)


def test_multi_label_metrics_equal_hand_computed_values():
    # three examples, four labels; the last label occurs nowhere and is left out of the macro mean
    pred = [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0]]
    gold = [[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]]
    assert micro_f1(pred, gold) == pytest.approx(2 * 3 / (5 + 3))  # tp 3, 5 predicted, 3 gold
    # label 0: tp 2 (2 predicted, 2 gold) -> 1; label 1: tp 1 (2, 1) -> 2/3; label 2: tp 0 (1, 0) -> 0
    assert macro_f1(pred, gold) == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert subset_accuracy(pred, gold) == pytest.approx(1 / 3)  # only the second set is exactly right
    assert subset_accuracy([[0, 0]], [[0, 0]]) == 1.0 and micro_f1([[0, 0]], [[0, 0]]) == 0.0


def test_scores_of_each_label_equal_hand_computed_values():
    from electra.tasks import entity_type_scores, label_scores

    # class indices: label b predicted 3 times (2 right), gold 2 times; c never predicted, gold once
    got = label_scores([0, 1, 1, 1, 0], [0, 1, 1, 2, 0], ["a", "b", "c"])
    assert got["b"] == {"precision": 2 / 3, "recall": 1.0, "f1": pytest.approx(0.8), "support": 2}
    assert got["a"]["f1"] == 1.0 and got["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    many = label_scores([[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0]], [[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]], "wxyz")
    assert [many[x]["f1"] for x in "wxyz"] == pytest.approx([1.0, 2 / 3, 0.0, 0.0])  # as macro_f1's terms above
    assert [many[x]["support"] for x in "wxyz"] == [2, 1, 0, 0]
    pred = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    gold = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]  # PER right, a LOC that is an ORG, ORG right
    types = entity_type_scores(pred, gold)
    assert list(types) == ["LOC", "ORG", "PER"]
    assert types["ORG"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert types["LOC"]["precision"] == 0.0 and types["LOC"]["support"] == 0 and types["PER"]["f1"] == 1.0


def test_csv_tasks_pick_their_metrics_from_the_labels(tmp_path):
    from electra.finetune import load_task

    # scores (a number with a fraction somewhere): Pearson first, the one seeds are chosen by
    cases = [("ab", ("accuracy", "f1")), ("abc", ("accuracy", "macro_f1"))]
    cases.append((["0.5", "2", "4.25"], ("pearson", "spearman")))
    for labels, metrics in cases:
        rows = "text,label\n" + "".join(f"t{i},{c}\n" for i, c in enumerate(list(labels) * 2))
        (tmp_path / "train.csv").write_text(rows)
        (tmp_path / "dev.csv").write_text(rows)
        task, _, _ = load_task(FinetuneConfig(model="", task="csv", data=str(tmp_path), out=""))
        assert task.metrics == metrics


def test_entity_scores_need_exact_spans():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "B-ORG", "I-ORG", "O"]]
    # gold: PER(0,2), LOC(3,4), ORG(1,4); predicted: PER(0,2), ORG(3,4), ORG(1,3): one exact match
    assert entity_spans(gold[1]) == {("ORG", 1, 4)}
    s = entity_scores(pred, gold)
    assert s["precision"] == pytest.approx(1 / 3) and s["recall"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(1 / 3)
    assert entity_spans(["I-PER", "I-PER", "B-PER"]) == {("PER", 0, 2), ("PER", 2, 3)}  # IOB1-style start
    assert entity_spans(["B-LOC", "I-PER", "I-PER"]) == {("LOC", 0, 1), ("PER", 1, 3)}  # a new type, a new span


def test_conll_files_read_the_last_column_and_skip_document_markers(tmp_path):
    from electra.tasks import read_conll

    (tmp_path / "c.txt").write_text(
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n-DOCSTART- -X- -X- O\nPeter NNP B-NP B-PER\n"
    )  # CoNLL-2003: token, part of speech, chunk, entity; a marker line need not have a blank line after it
    assert read_conll(tmp_path / "c.txt") == [
        Example(["EU", "rejects"], None, ["B-ORG", "O"]),
        Example(["Peter"], None, ["B-PER"]),
    ]


def test_glue_label_codes_name_what_glue_and_the_hubs_glue_dataset_mean():
    """GLUE's files label CoLA 1 = acceptable, MRPC 1 = equivalent, QQP 1 = duplicate, SST-2 1 =
    positive; the hub's `glue` dataset numbers MNLI entailment, neutral, contradiction and
    QNLI/RTE entailment, not_entailment. A swapped pair would export id2label naming the opposite."""
    from electra.tasks import HUB_GLUE

    named = {name: dict(zip(t.labels, t.names, strict=True)) for name, t in GLUE.items() if t.names}
    assert named == {
        "sst2": {"0": "NEGATIVE", "1": "POSITIVE"},
        "cola": {"0": "unacceptable", "1": "acceptable"},
        "mrpc": {"0": "not_equivalent", "1": "equivalent"},
        "qqp": {"0": "not_duplicate", "1": "duplicate"},
        "wnli": {"0": "not_entailment", "1": "entailment"},
    }
    hub = {name: names for name, (_, _, names) in HUB_GLUE.items() if names}
    assert hub == {
        "rte": ("entailment", "not_entailment"),
        "qnli": ("entailment", "not_entailment"),
        "mnli": ("entailment", "neutral", "contradiction"),
    }


def test_glue_test_files_are_read_by_their_own_headers(tmp_path):
    """GLUE's test files differ from their training files: CoLA's has a header and a `sentence`
    column, QQP's index is `id`; each submission is named as GLUE's server expects."""
    from electra.tasks import glue_test

    (tmp_path / "CoLA").mkdir()
    (tmp_path / "CoLA" / "test.tsv").write_text("index\tsentence\n0\tThe book was read.\n1\tRead book the.\n")
    (tmp_path / "QQP").mkdir()
    (tmp_path / "QQP" / "test.tsv").write_text("id\tquestion1\tquestion2\n7\tWhy?\tHow?\n")
    cola = glue_test(GLUE["cola"], tmp_path / "CoLA")
    assert cola == {"CoLA": [Example("The book was read.", None, "0"), Example("Read book the.", None, "1")]}
    assert glue_test(GLUE["qqp"], tmp_path / "QQP") == {"QQP": [Example("Why?", "How?", "7")]}


def test_glue_tasks_report_glues_metrics_and_the_glue_score_averages_the_papers_eight(tmp_path):
    """Each task's metrics, the first the one the GLUE score and seed selection use (the ELECTRA
    paper's dev-set figures: Matthews for CoLA, Spearman for STS-B, accuracy for the rest); the
    score leaves WNLI out, as BERT and ELECTRA do, even where its folder is there."""
    from electra.finetune import GLUE_SCORE_TASKS, glue_tasks
    from electra.tasks import GLUE_FOLDERS

    assert {name: t.metrics for name, t in GLUE.items()} == {
        "sst2": ("accuracy",),
        "cola": ("matthews", "accuracy"),
        "mrpc": ("accuracy", "f1"),
        "stsb": ("spearman", "pearson"),
        "rte": ("accuracy",),
        "qnli": ("accuracy",),
        "qqp": ("accuracy", "f1"),
        "mnli": ("accuracy",),
        "wnli": ("accuracy",),
    }
    assert GLUE["mnli"].dev[0] == "dev_matched.tsv"  # the first dev set is the one scored
    for name, folder in GLUE_FOLDERS.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / GLUE[name].train).write_text("")
    assert glue_tasks(str(tmp_path)) == list(GLUE_SCORE_TASKS)
    assert sorted(GLUE_SCORE_TASKS) == sorted(set(GLUE) - {"wnli"})


@pytest.mark.skipif(not GLUE_DATA.is_dir(), reason="../shared/data/glue is not present")
def test_predicted_words_group_into_entities_as_the_pipeline_groups_them():
    from electra.predict import entities_of, overlapping

    def word(tag, score, pieces, start):
        return {"tag": tag, "score": score, "pieces": pieces, "start": start, "end": start + 3}

    words = [
        word("B-PER", 0.5, ["ann"], 0),
        word("I-PER", 1.0, ["le", "##e"], 4),  # joins the B- before it; pieces joined by the tokenizer
        word("B-PER", 0.25, ["bob"], 8),  # a new B- starts a new entity of the same type
        word("O", 0.9, ["in"], 12),
        word("I-LOC", 0.75, ["new"], 16),  # an I- after O still starts an entity
        word("I-LOC", 0.25, ["york"], 20),
        word("I-PER", 0.5, ["sue"], 24),  # another type: a new entity
        word("MISC", 0.5, ["x"], 28),  # no prefix: continues its own type
        word("MISC", 1.0, ["y"], 32),
    ]
    entities = entities_of(words, lambda parts: " ".join(parts).replace(" ##", ""))
    assert entities == [
        {"entity_group": "PER", "score": 0.75, "word": "ann lee", "start": 0, "end": 7},
        {"entity_group": "PER", "score": 0.25, "word": "bob", "start": 8, "end": 11},
        {"entity_group": "LOC", "score": 0.5, "word": "new york", "start": 16, "end": 23},
        {"entity_group": "PER", "score": 0.5, "word": "sue", "start": 24, "end": 27},
        {"entity_group": "MISC", "score": 0.75, "word": "x y", "start": 28, "end": 35},
    ]
    assert entities_of([word("O", 0.9, ["a"], 0)]) == []

    def span(start, end, score):
        return {"entity_group": "PER", "score": score, "word": "w", "start": start, "end": end}

    # windows overlap: an entity found twice is kept once; the longer wins, then the higher score
    windows = [span(0, 4, 0.9), span(10, 14, 0.5), span(20, 23, 0.9), span(10, 14, 0.6), span(12, 20, 0.1)]
    windows += [span(20, 23, 0.8), span(30, 35, 0.7)]
    assert overlapping(windows) == [span(0, 4, 0.9), span(12, 20, 0.1), span(20, 23, 0.9), span(30, 35, 0.7)]


@pytest.mark.skipif(not GLUE_DATA.is_dir(), reason="../shared/data/glue is not present")
@pytest.mark.parametrize(
    "name, rows, first_label",
    [
        ("sst2", 872, "1"),
        ("cola", 1043, "1"),
        ("mrpc", 408, "1"),
        ("stsb", 1500, "5.000"),
        ("rte", 277, "not_entailment"),
    ],
)
def test_glue_dev_sets_read_with_their_official_row_counts(name, rows, first_label):
    task = GLUE[name]
    folder = glue_folder(GLUE_DATA, task)
    dev = read_table(folder / "dev.tsv", task.text, task.pair, task.label, task.header)
    assert len(dev) == rows and dev[0].label == first_label
    assert (dev[0].pair is not None) == (task.pair is not None)
    assert all(e.text for e in dev)


def test_mrpc_and_stsb_train_on_each_pair_in_both_orders_and_score_the_dev_set_as_it_is():
    from electra.tasks import both_orders

    ordered = [Example("a cat sits", "a cat is sitting", "4.5"), Example("it rains", "dogs bark", "0.2")]
    swapped = [Example("a cat is sitting", "a cat sits", "4.5"), Example("dogs bark", "it rains", "0.2")]
    assert both_orders(ordered) == [*ordered, *swapped]
    assert GLUE["mrpc"].both_orders and GLUE["stsb"].both_orders
    assert not GLUE["rte"].both_orders  # entailment has a direction


def test_stsb_learns_scores_over_5_as_google_does_and_exports_a_plain_head(tmp_path):
    transformers = pytest.importorskip("transformers")
    from electra.finetune import _loss, task_model

    task = GLUE["stsb"]
    cfg = tiny().discriminator
    model = task_model(task, cfg, []).eval()
    plain = task_model(dataclasses.replace(task, target_scale=1.0), cfg, []).eval()
    plain.load_state_dict(model.state_dict())
    ids = torch.randint(5, cfg.vocab_size, (3, 9))
    types, mask = torch.zeros_like(ids), torch.ones_like(ids)
    with torch.no_grad():
        scores, raw = model(ids, types, mask), plain(ids, types, mask)
    torch.testing.assert_close(scores, 5 * raw)  # the head's own outputs are scores / 5
    labels = torch.tensor([4.5, 0.2, 3.0])
    expected = ((raw.squeeze(-1) - labels / 5) ** 2).mean()  # Google's: (prediction - score / 5)^2
    torch.testing.assert_close(_loss(task, scores, labels), expected)
    model.fold_scale()
    assert model.scale == 1.0
    with torch.no_grad():
        torch.testing.assert_close(model(ids, types, mask), scores)
    hf.export_sequence_classifier(model, tmp_path / "stsb", {0: "LABEL_0"})
    theirs = transformers.ElectraForSequenceClassification.from_pretrained(tmp_path / "stsb").eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids, token_type_ids=types, attention_mask=mask).logits, scores)
    from electra.predict import Predictor

    with pytest.raises(ValueError, match="--all-scores is for classifiers' labels; .* is a regression model"):
        Predictor(tmp_path / "stsb", device="cpu", all_scores=True)  # one score has no labels to list


def test_another_glue_tasks_file_is_named_as_such(tmp_path):
    from electra.finetune import load_task

    (tmp_path / "CoLA").mkdir()  # SST-2's rows where CoLA's headerless four columns belong
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "CoLA" / name).write_text("sentence\tlabel\na fine film\t1\n")
    with pytest.raises(TaskError, match="train.tsv:1 has 2 columns, expected at least 4; GLUE's CoLA files have 4 or"):
        load_task(FinetuneConfig(model="m", task="cola", data=str(tmp_path), out="o"))


def test_a_local_folder_named_glue_is_read_as_a_folder_not_the_hub(tmp_path, monkeypatch):
    from electra.finetune import glue_tasks, load_task

    (tmp_path / "glue" / "RTE").mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        rows = ["index\tsentence1\tsentence2\tlabel", "0\tit rains\tit is wet\tentailment"]
        (tmp_path / "glue" / "RTE" / name).write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    assert glue_tasks("glue") == ["rte"]
    task, train, devs = load_task(FinetuneConfig(model="m", task="rte", data="glue", out="o"))
    assert train == devs["dev"] == [Example("it rains", "it is wet", "entailment")]
    monkeypatch.chdir(tmp_path / "glue")  # no such folder here: "glue" is the hub's dataset
    assert glue_tasks("glue") == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"]


def test_task_folders_that_could_mislead_are_named(tmp_path, capsys):
    from electra.finetune import glue_tasks, load_task

    def load(task, **kw):
        return load_task(FinetuneConfig(model="m", task=task, data=str(tmp_path), out="o", **kw))

    (tmp_path / "train.csv").write_text("text,label\ngood,pos\nbad,neg\n")
    with pytest.raises(TaskError, match="has no dev/validation/valid.tsv/.csv/.jsonl"):  # the names the docs give
        load("csv")
    (tmp_path / "valid.csv").write_text("text,label\nokay,pos\n")  # as CoNLL-2003's text release names it
    assert load("csv")[2]["dev"] == [Example("okay", None, "pos")]
    with pytest.raises(TaskError, match=r"has no dev/validation/valid.txt/.conll/.tsv \(valid.csv is for --task csv\)"):
        load("ner")  # a table is not read as CoNLL
    (tmp_path / "valid.tsv").write_text("okay\tO\n")  # token<TAB>tag lines, as many tagging sets ship them
    (tmp_path / "train.tsv").write_text("good\tB-X\n")
    assert load("ner")[2]["dev"] == [Example(["okay"], None, ["O"])]
    (tmp_path / "valid.tsv").unlink()
    (tmp_path / "train.tsv").unlink()
    (tmp_path / "valid.csv").unlink()
    (tmp_path / "dev.csv").write_text("text,label\nfine,pos\n")
    (tmp_path / "test.csv").write_text("text\nunlabelled\n")
    assert "test" not in load("csv")[2]
    assert capsys.readouterr().err == "test.csv has no 'label' labels: it is not scored\n"
    (tmp_path / "test.csv").write_text("text,label\nrated,pos\nunrated,\n")  # partly labelled: named by row
    assert "test" not in load("csv")[2]
    want = f"test.csv is not scored: {tmp_path / 'test.csv'}:3 has an empty label; label the row or remove it\n"
    assert capsys.readouterr().err == want
    (tmp_path / "test.csv").unlink()
    (tmp_path / "test.jsonl").write_text('{"text": "rated", "label": "pos"}\n{"text": "unrated"}\n')
    assert "test" not in load("csv")[2]
    assert "test.jsonl is not scored: " in capsys.readouterr().err
    (tmp_path / "test.jsonl").write_text('{"text": "unrated"}\n')
    assert "test" not in load("csv")[2]
    assert capsys.readouterr().err == "test.jsonl has no 'label' labels: it is not scored\n"
    (tmp_path / "test.jsonl").unlink()
    (tmp_path / "train.csv").write_text("text;label\ngood;pos\nbad;neg\n")  # another delimiter: named
    with pytest.raises(TaskError, match="has one column, 'text;label': are its fields separated by ';'.*or tabs"):
        load("csv")
    (tmp_path / "train.csv").write_text("text\tlabel\ngood\tpos\nbad\tneg\n")
    with pytest.raises(TaskError, match=r"separated by '\\t'\? .*: name it .tsv$"):
        load("csv")
    (tmp_path / "train.csv").write_text("text,label\ngood,pos\nbad,neg\n")
    (tmp_path / "train.jsonl").write_text('{"text": "good", "label": "pos"}\n')
    with pytest.raises(TaskError, match="holds train.csv and train.jsonl; keep the one to use"):
        load("csv")
    (tmp_path / "train.jsonl").unlink()
    (tmp_path / "train.tsv").write_text("text\tlabel\ngood\t1\n")  # SST-2's columns are sentence, label
    with pytest.raises(TaskError, match="no column 'sentence' .*; GLUE's SST-2 files have it; is this the task's own"):
        load("sst2")
    (tmp_path / "CoLA").mkdir()
    with pytest.raises(TaskError, match="holds none of GLUE's task folders"):
        glue_tasks(str(tmp_path))
    assert "CoLA has no train.tsv; cola is left out" in capsys.readouterr().err
    (tmp_path / "SST-2").mkdir()  # one task's folder given for all of them
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    with pytest.raises(TaskError, match="SST-2 is sst2's own folder: --task sst2 fine-tunes on it alone"):
        glue_tasks(str(tmp_path / "SST-2"))


def test_layer_scales_follow_googles_depths():
    """Google's _get_layer_lrs: embeddings depth 0, layer i depth i + 1, head depth L + 2."""
    enc = Encoder(tiny().discriminator)  # 2 layers; the head (no prefix here) keeps factor 1
    s = layer_scales(enc, 0.8)
    assert s["encoder.transformer.layers.1."] == pytest.approx(0.64)
    assert s["encoder.transformer.layers.0."] == pytest.approx(0.512)
    assert s["encoder.embeddings."] == s["encoder.transformer.project."] == pytest.approx(0.4096)


def test_fine_tuning_gives_each_parameter_its_layers_learning_rate(sentiment_tokenizer_dir, tmp_path, monkeypatch):
    """The scales reach the optimizer: every parameter of the encoder under one depth's prefix."""
    from electra import finetune

    original, built = finetune.adamw, []

    def adamw(model, *args, **kwargs):  # the model, its optimizer, and the rates as built (before the schedule's)
        optimizer = original(model, *args, **kwargs)
        built.append((model, optimizer, {g["lr"] for g in optimizer.param_groups}))
        return optimizer

    monkeypatch.setattr(finetune, "adamw", adamw)
    root = sentiment_tokenizer_dir
    cfg = FinetuneConfig(model=str(root / "model"), task="csv", data=str(root / "data"), out=str(tmp_path / "o"))
    run(dataclasses.replace(cfg, lr=1e-3, epochs=1, max_train_examples=8), quiet=True)
    ((model, optimizer, lrs),) = built
    scale = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    want = {"encoder.embeddings": 0.8**4, "encoder.transformer.project": 0.8**4, "encoder.transformer.layers.0": 0.8**3}
    want |= {"encoder.transformer.layers.1": 0.8**2, "dense": 1.0, "out": 1.0}  # the head: the base rate
    for name, p in model.named_parameters():
        (where,) = [w for w in want if name.startswith(w + ".")]
        assert scale[id(p)] == pytest.approx(want[where]), name
    assert sorted(lrs) == pytest.approx(sorted({1e-3 * s for s in scale.values()}))


def test_word_piece_labels_go_to_the_first_piece_of_each_word(tokenizer):
    task = Task("ner", "tagging", ("f1",))
    examples = [Example(["the", "moviegoers", "loved"], None, ["O", "B-X", "O"])]
    enc, truncated = encode(copy.deepcopy(tokenizer), task, examples, ["O", "B-X"], 64, True, "test")
    pieces = [tokenizer.id_to_token(i) for i in enc.ids[0]]
    assert truncated == 0 and len(pieces) > 5  # [CLS] the movie ##go ##ers ... [SEP]
    labelled = [(p, t) for p, t in zip(pieces, enc.labels[0], strict=True) if t != -100]
    assert [t for _, t in labelled] == [0, 1, 0]
    assert not labelled[1][0].startswith("##")


def test_gold_entities_the_model_does_not_see_count_as_missed(tokenizer):
    task = Task("ner", "tagging", ("f1", "precision", "recall"))
    labels = ["O", "B-PER", "I-PER"]
    examples = [
        Example(["ann", "was", "great", "bob", "lee"], None, ["B-PER", "O", "O", "B-PER", "I-PER"]),
        Example(["\u200b", "was", "ann"], None, ["B-PER", "O", "B-PER"]),  # a zero-width space has no tokens
    ]
    own = type(tokenizer).from_str(tokenizer.to_str())  # encode sets truncation: not on the shared fixture
    enc, truncated = encode(own, task, examples, labels, 5, True, "dev")  # cuts bob lee
    assert truncated == 1 and 3 not in enc.words[0] and 0 not in enc.words[1]
    seen = [[max(t, 0) for t in tags] for tags in enc.labels]  # right wherever the model sees a word
    scores = score(task, enc, labels, seen)
    assert scores == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3)}
    assert list(scores) == ["f1", "precision", "recall"]  # the main figure first, as every task prints it
    assert word_tags(seen[1], enc.words[1], enc.tags[1], labels) == (["O", "O", "B-PER"], ["B-PER", "O", "B-PER"])


def test_a_tag_unseen_in_training_is_named_with_its_sentence_and_word():
    task = Task("ner", "tagging", ("f1", "precision", "recall"))
    train = [Example(["ann", "ran"], None, ["B-PER", "O"])]
    dev = [Example(["ann", "ran"], None, ["B-PER", "O"]), Example(list("abcdefgh"), None, ["O"] * 6 + ["B-LOC", "O"])]
    assert label_set(task, train, {"dev": dev[:1]}) == ["O", "B-PER"]
    where = "^dev sentence 2 \\('a b c d e f ...'\\): word 7 'g' "
    with pytest.raises(TaskError, match=where + "has label 'B-LOC', unseen in training"):
        label_set(task, train, {"dev": dev})


# ---------------------------------------------------------------------------------------
# End to end on synthetic tasks
# ---------------------------------------------------------------------------------------

POSITIVE = ["great", "good", "lovely", "fine"]
NEGATIVE = ["bad", "awful", "poor", "dull"]


def _sentiment(folder, n_train=240, n_dev=60, multi_label=False):
    """Short texts whose one sentiment word decides the label, pos or neg. With `multi_label`,
    texts holding any number of the two labels: "pos" where a positive word is in it, "neg"
    where a negative one is, joined by | (an empty cell where neither)."""
    import random

    rng = random.Random(0)
    filler = "the a movie film plot story was is and it this".split()
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("dev", n_dev)):
        lines = ["text,label"]
        for _ in range(n):
            if multi_label:
                labels = [label for label in ("pos", "neg") if rng.random() < 0.5]
            else:
                labels = ["pos" if rng.randint(0, 1) else "neg"]
            words = [rng.choice(filler) for _ in range(rng.randint(3, 8))]
            for label in labels:
                words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
            lines.append(f"{' '.join(words)},{'|'.join(labels)}")
        (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tokenizer, tokenizer_dir):
    """A tiny exported discriminator with a tokenizer that knows the sentiment words."""
    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    model = Electra(tiny(vocab_size=tokenizer.get_vocab_size()))
    return hf.export_discriminator(model, root / "disc", tokenizer_dir=tokenizer_dir)


@pytest.fixture(scope="module")
def sentiment_tokenizer_dir(tmp_path_factory):
    from electra.tokenizer import save_tokenizer, train_wordpiece

    folder = tmp_path_factory.mktemp("sent")
    data = _sentiment(folder / "data")
    texts = [line.split(",")[0] for line in (data / "train.csv").read_text().splitlines()[1:]]
    save_tokenizer(train_wordpiece(texts * 3, vocab_size=150, show_progress=False), folder / "tok")
    torch.manual_seed(0)
    vocab = json.loads((folder / "tok" / "tokenizer.json").read_text())["model"]["vocab"]
    hf.export_discriminator(Electra(tiny(vocab_size=len(vocab))), folder / "model", tokenizer_dir=folder / "tok")
    return folder


def test_finetune_learns_an_easy_task_and_exports_a_transformers_classifier(sentiment_tokenizer_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    root = sentiment_tokenizer_dir
    cfg = FinetuneConfig(
        model=str(root / "model"),
        task="csv",
        data=str(root / "data"),
        out=str(tmp_path / "clf"),
        seeds=2,
        epochs=6,
        lr=5e-3,  # a random 2-layer encoder under Google's layer decay (its top layer at 0.64 of this)
        batch_size=16,
    )
    results = run(cfg, quiet=True)
    assert [s["seed"] for s in results["seeds"]] == [0, 1]
    assert results["median"]["dev"]["accuracy"] > 0.9  # one sentiment word decides the label
    accs = [s["metrics"]["dev"]["accuracy"] for s in results["seeds"]]
    assert results["median"]["dev"]["accuracy"] == pytest.approx(sorted(accs)[0] / 2 + sorted(accs)[1] / 2)
    assert results["spread"]["dev"]["accuracy"]["max"] == max(accs)
    for seed in results["seeds"]:  # the reported score is the last epoch's, not the best one's
        assert len(seed["per_epoch"]) == 6 and seed["per_epoch"][-1] == seed["metrics"]
    saved = json.loads((tmp_path / "clf" / "results.json").read_text())
    assert saved["labels"] == ["neg", "pos"] and saved["exported_seed"] in (0, 1)
    assert saved["model_read"] == str((root / "model").resolve())  # as typed under "model"; this one is absolute
    assert saved["positive_label"] == "pos"  # the class F1 scores
    assert saved["settings"] == {"lr": 5e-3, "layer_decay": 0.8, "epochs": 6, "max_length": 128}  # defaults, resolved
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "clf")
    assert model.config.id2label == {0: "neg", 1: "pos"}
    # the model card: what the hub reads from README.md (its own parser), the medians included
    card = pytest.importorskip("huggingface_hub").ModelCard.load(tmp_path / "clf" / "README.md")
    assert card.data.pipeline_tag == "text-classification" and card.data.library_name == "transformers"
    assert card.data.base_model is None  # a folder on this machine is not a hub model
    assert card.data.eval_results is None  # data of one's own: the hub would link "data" to a dataset of that name
    for m, v in results["median"]["dev"].items():  # the medians are in the text
        assert f"| dev | {saved['examples']['dev']:,} | {m} | {v:.4f} |" in card.text
    assert f'pipeline("text-classification", model="{tmp_path / "clf"}")' in card.text
    assert "labels: `neg`, `pos`." in card.text and "Median over 2 fine-tuning seeds" in card.text
    scope = {}  # the card's example runs as written
    exec(card.text.split("```python\n")[1].split("```")[0], scope)
    assert scope["model"]("a great film") == transformers.pipeline("text-classification", model=str(tmp_path / "clf"))(
        "a great film"
    )


def test_finetune_under_bf16_autocast_learns_the_same_task(sentiment_tokenizer_dir, tmp_path):
    root = sentiment_tokenizer_dir
    common = dict(model=str(root / "model"), task="csv", data=str(root / "data"), epochs=6, lr=5e-3, batch_size=16)
    results = run(FinetuneConfig(**common, out=str(tmp_path / "bf16"), precision="bf16"), quiet=True)
    assert results["median"]["dev"]["accuracy"] > 0.9
    assert results["config"]["precision"] == "bf16"
    # autocast really ran: one epoch under bf16 ends at other weights than under fp32 (the CPU default)
    run(FinetuneConfig(**common | {"epochs": 1}, out=str(tmp_path / "fp32")), quiet=True)
    run(FinetuneConfig(**common | {"epochs": 1}, out=str(tmp_path / "bf16-1"), precision="bf16"), quiet=True)
    fp32, bf16 = hf.read_weights(tmp_path / "fp32"), hf.read_weights(tmp_path / "bf16-1")
    assert not all(torch.equal(fp32[k], bf16[k]) for k in fp32)
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16, got 'fp8'"):
        FinetuneConfig(**common, out=str(tmp_path / "x"), precision="fp8")


def test_finetune_under_fp16_scales_the_loss_learns_and_resumes_exactly(sentiment_tokenizer_dir, tmp_path, monkeypatch):
    from electra import finetune
    from electra.finetune import seed_store

    root = sentiment_tokenizer_dir
    common = dict(model=str(root / "model"), task="csv", data=str(root / "data"), lr=5e-3, batch_size=16)
    common |= dict(precision="fp16", save_minutes=0)
    results = run(FinetuneConfig(**common, epochs=6, out=str(tmp_path / "learns")), quiet=True)
    assert results["median"]["dev"]["accuracy"] > 0.9

    whole = run(FinetuneConfig(**common, epochs=2, out=str(tmp_path / "whole")), quiet=True)
    real_loss, calls = finetune._loss, []

    def stopped_at_step_20(*args):
        calls.append(1)
        if len(calls) == 20:
            raise KeyboardInterrupt
        return real_loss(*args)

    monkeypatch.setattr(finetune, "_loss", stopped_at_step_20)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run(FinetuneConfig(**common, epochs=2, out=str(out)), quiet=True)
    saved = torch.load(seed_store(out) / "seed-0.progress.pt", weights_only=True)
    assert (saved["scaler"]["scale"], saved["scaler"]["_growth_tracker"]) == (2.0**16, 19)  # the scaler's state too
    monkeypatch.setattr(finetune, "_loss", real_loss)
    resumed = run(FinetuneConfig(**common, epochs=2, out=str(out)), quiet=True)
    assert resumed["seeds"] == whole["seeds"]
    ours, theirs = hf.read_weights(out), hf.read_weights(tmp_path / "whole")
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_auto_precision_is_bf16_where_the_gpu_computes_in_it_else_fp16_and_fp32_on_cpu():
    from electra.parallel import resolve_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("auto", cuda, native_bf16=True) == "bf16"  # Ampere and newer
    assert resolve_precision("auto", cuda, native_bf16=False) == "fp16"  # V100, T4
    assert [resolve_precision(p, cpu) for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16, got 'half'"):
        resolve_precision("half", cpu)


def test_a_run_stopped_between_seeds_keeps_them_and_ends_as_an_uninterrupted_one(
    sentiment_tokenizer_dir, tmp_path, monkeypatch
):
    from electra import finetune
    from electra.finetune import seed_store

    root = sentiment_tokenizer_dir
    common = dict(model=str(root / "model"), task="csv", data=str(root / "data"), seeds=3, epochs=1, lr=2e-3)
    whole = run(FinetuneConfig(**common, out=str(tmp_path / "whole")), quiet=True)

    real, trained = finetune.train_one, []

    def stopped_at_seed_2(cfg, task, encoder, labels, train, devs, seed, *rest):
        trained.append(seed)
        if seed == 2:
            raise KeyboardInterrupt  # as Ctrl-C during the third seed
        return real(cfg, task, encoder, labels, train, devs, seed, *rest)

    out = tmp_path / "resumed"
    monkeypatch.setattr(finetune, "train_one", stopped_at_seed_2)
    with pytest.raises(KeyboardInterrupt):  # first with another learning rate
        run(FinetuneConfig(**common | {"lr": 1e-3}, out=str(out)), quiet=True)
    trained.clear()
    with pytest.raises(KeyboardInterrupt):  # other settings: nothing is kept, seeds 0 and 1 train again
        run(FinetuneConfig(**common, out=str(out)), quiet=True)
    assert trained == [0, 1, 2]
    assert not out.exists() and sorted(p.name for p in seed_store(out).iterdir()) == [
        "seed-0.json",
        "seed-0.safetensors",
        "seed-1.json",
        "seed-1.safetensors",
    ]
    trained.clear()
    monkeypatch.setattr(finetune, "train_one", lambda *a: trained.append(a[6]) or real(*a))
    from electra.atomic import folder_lock

    busy = "resumed is in use by another fine-tuning that is still running"
    with folder_lock(seed_store(out)), pytest.raises(FileExistsError, match=busy):  # as a command still running
        run(FinetuneConfig(**common, out=str(out)), quiet=True)
    assert trained == [] and len(list(seed_store(out).iterdir())) == 4
    resumed = run(FinetuneConfig(**common, out=str(out)), quiet=True)
    assert trained == [2]  # seeds 0 and 1 came from the stopped run
    assert resumed["seeds"] == whole["seeds"] and resumed["exported_seed"] == whole["exported_seed"]
    ours, theirs = hf.read_weights(out), hf.read_weights(tmp_path / "whole")
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert not seed_store(out).exists()


def test_a_kill_while_the_seed_store_is_removed_leaves_nothing_after_the_next_command(
    sentiment_tokenizer_dir, tmp_path, monkeypatch, capsys
):
    root = sentiment_tokenizer_dir
    common = dict(model=str(root / "model"), task="csv", data=str(root / "data"), seeds=1, epochs=1, lr=2e-3)
    cfg = FinetuneConfig(**common, out=str(tmp_path / "out"))
    rmtree = shutil.rmtree

    class Killed(BaseException):
        pass

    def killed(path, *args, **kwargs):  # kill -9 part way through deleting the seed store, OUT written
        if ".seeds" in str(path):
            (Path(path) / "seed-0.json").unlink()
            raise Killed
        rmtree(path, *args, **kwargs)

    with monkeypatch.context() as patched, pytest.raises(Killed):
        patched.setattr(shutil, "rmtree", killed)
        run(cfg, quiet=True)
    assert (tmp_path / "out" / "results.json").is_file()
    with pytest.raises(FileExistsError, match="already holds files"):  # done: the same command is refused, as before
        run(cfg, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # but the store's remains are gone
    assert "left behind by an interrupted run into" in capsys.readouterr().err


def test_a_seed_stopped_part_way_continues_from_its_saved_progress_exactly(
    sentiment_tokenizer_dir, tmp_path, monkeypatch, capsys
):
    from electra import finetune
    from electra.finetune import seed_store

    root = sentiment_tokenizer_dir  # 240 examples at batch 16: 15 steps an epoch, dropout 0.1
    common = dict(model=str(root / "model"), task="csv", data=str(root / "data"), epochs=2, batch_size=16)
    whole = run(FinetuneConfig(**common, out=str(tmp_path / "whole")), quiet=True)

    real_loss, calls = finetune._loss, []

    def stopped_at_step_20(*args):
        calls.append(1)
        if len(calls) == 20:  # as a kill during the 5th step of the second epoch
            raise KeyboardInterrupt
        return real_loss(*args)

    out = tmp_path / "resumed"
    monkeypatch.setattr(finetune, "_loss", stopped_at_step_20)
    with pytest.raises(KeyboardInterrupt):
        run(FinetuneConfig(**common, out=str(out), save_minutes=0), quiet=True)  # progress saved after every step
    assert not out.exists() and [p.name for p in seed_store(out).iterdir()] == ["seed-0.progress.pt"]
    saved = torch.load(seed_store(out) / "seed-0.progress.pt", weights_only=True)
    assert saved["step"] == 19 and len(json.loads(saved["history"])) == 1  # the first epoch's scores kept
    saved_bytes = (seed_store(out) / "seed-0.progress.pt").read_bytes()

    calls.clear()
    resumed = run(FinetuneConfig(**common, out=str(out), save_minutes=0), quiet=True)
    assert len(calls) == 11  # steps 20 to 30 only
    assert resumed["seeds"] == whole["seeds"]  # both epochs' dev scores, as uninterrupted
    ours, theirs = hf.read_weights(out), hf.read_weights(tmp_path / "whole")
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert not seed_store(out).exists()

    damaged = tmp_path / "damaged"  # a progress file cut short: the seed starts over, and ends the same
    seed_store(damaged).mkdir()
    (seed_store(damaged) / "seed-0.progress.pt").write_bytes(saved_bytes[:1000])
    calls.clear()
    monkeypatch.setattr(finetune, "_loss", lambda *args: calls.append(1) or real_loss(*args))
    again = run(FinetuneConfig(**common, out=str(damaged)), quiet=True)
    assert len(calls) == 30 and again["seeds"] == whole["seeds"]
    assert "seed 0's progress in" in capsys.readouterr().err

    other = tmp_path / "other"  # a seed stopped part-way, then run with another rate: it starts over
    monkeypatch.setattr(finetune, "_loss", stopped_at_step_20)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        run(FinetuneConfig(**common, out=str(other), save_minutes=0), quiet=True)
    calls.clear()
    monkeypatch.setattr(finetune, "_loss", lambda *args: calls.append(1) or real_loss(*args))
    run(FinetuneConfig(**common, out=str(other), lr=1e-3), quiet=True)
    assert len(calls) == 30 and "with other settings; starting it over" in capsys.readouterr().err


def test_a_stop_signal_saves_the_seed_in_progress_and_the_same_command_continues_it(
    sentiment_tokenizer_dir, tmp_path, monkeypatch, cli
):
    """SIGTERM in the 20th of 30 steps (no timed save due): that step is saved, the command exits
    143, and running it again trains steps 21 to 30 only, to the weights of an uninterrupted run."""
    import os
    import signal

    from electra import finetune

    root = sentiment_tokenizer_dir
    args = ["finetune", "--model", root / "model", "--task", "csv", "--data", root / "data", "--quiet"]
    args += ["--epochs", "2", "--batch-size", "16"]
    assert cli(*args, "--out", tmp_path / "whole").returncode == 0
    real_loss, calls = finetune._loss, []

    def signalled_in_step_20(*a):
        calls.append(1)
        if len(calls) == 20:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_loss(*a)

    monkeypatch.setattr(finetune, "_loss", signalled_in_step_20)
    stopped = cli(*args, "--out", tmp_path / "out")
    assert stopped.returncode == 143, stopped.stderr
    assert "stopped by SIGTERM in csv seed 0 at step 20 of 30" in stopped.stderr
    assert "the same command continues it" in stopped.stderr
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is gone with the run
    calls.clear()
    assert cli(*args, "--out", tmp_path / "out").returncode == 0 and len(calls) == 10
    ours, theirs = hf.read_weights(tmp_path / "out"), hf.read_weights(tmp_path / "whole")
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_pipeline_and_electra_predict_agree(sentiment_tokenizer_dir, tmp_path, cli, monkeypatch):
    transformers = pytest.importorskip("transformers")
    root = sentiment_tokenizer_dir
    run(
        FinetuneConfig(
            model=str(root / "model"),
            task="csv",
            data=str(root / "data"),
            out=str(tmp_path / "clf"),
            epochs=2,
            lr=2e-3,
            batch_size=16,
        ),
        quiet=True,
    )
    texts = ["the movie was great", "this plot is awful and dull"]
    (tmp_path / "in.txt").write_text("\n".join(texts[:1]) + "\n\n" + texts[1] + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "electra",
            "predict",
            "--model",
            str(tmp_path / "clf"),
            "--input",
            str(tmp_path / "in.txt"),
            "--output",
            str(tmp_path / "out.jsonl"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "1 blank line skipped" in result.stderr
    ours = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    theirs = transformers.pipeline("sentiment-analysis", model=str(tmp_path / "clf"))(texts)
    assert [o["text"] for o in ours] == texts
    for o, t in zip(ours, theirs, strict=True):
        assert o["label"] == t["label"]
        assert o["score"] == pytest.approx(t["score"], abs=1e-5)
    from electra.predict import Predictor

    every, _ = Predictor(tmp_path / "clf", device="cpu", all_scores=True)([(t, None) for t in texts])
    theirs = transformers.pipeline("sentiment-analysis", model=str(tmp_path / "clf"), top_k=None)(texts)
    for o, t in zip(every, theirs, strict=True):  # softmax over the labels, likeliest first
        assert [s["label"] for s in o["scores"]] == [s["label"] for s in t] and "labels" not in o
        assert [s["score"] for s in o["scores"]] == pytest.approx([s["score"] for s in t], abs=1e-5)
    predict_cli = ["predict", "--model", str(tmp_path / "clf")]
    (tmp_path / "accents.txt").write_text("très great, grüße\n", encoding="utf-8")
    assert cli(*predict_cli, "--input", tmp_path / "accents.txt", "--output", tmp_path / "a.jsonl").returncode == 0
    assert '"text": "très great, grüße"' in (tmp_path / "a.jsonl").read_text(encoding="utf-8")  # not \\u escapes
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")  # a terminal that cannot show them gets escapes
    with monkeypatch.context() as patched:
        patched.setattr("sys.stdout", ascii_out)
        assert main([*predict_cli, "--input", str(tmp_path / "accents.txt")]) == 0
        ascii_out.flush()
    assert json.loads(ascii_out.buffer.getvalue())["text"] == "très great, grüße"
    table = "review,other\n" + "".join(f"{t},x\n" for t in texts)
    piped = cli(*predict_cli, "--format", "csv", "--text-field", "review", input=table)
    assert [json.loads(x)["label"] for x in piped.stdout.splitlines()] == [o["label"] for o in ours]
    for precision in ("bf16", "fp16"):  # autocast: the same labels, scores to about three digits
        fast = cli(*predict_cli, "--precision", precision, input="\n".join(texts) + "\n")
        fast = [json.loads(x) for x in fast.stdout.splitlines()]
        assert [f["label"] for f in fast] == [o["label"] for o in ours]
        assert [f["score"] for f in fast] == pytest.approx([o["score"] for o in ours], abs=2e-2)
        assert [f["score"] for f in fast] != [o["score"] for o in ours]  # it did run in lower precision
    refused = cli(*predict_cli, "--text-field", "review", input=table)
    assert refused.returncode == 2 and "read as plain lines" in refused.stderr
    (tmp_path / "in.json").write_text(json.dumps([{"text": t} for t in texts]))
    refused = cli(*predict_cli, "--input", tmp_path / "in.json")  # not labelled line by line
    assert refused.returncode == 2 and "in.json is a .json file; inputs are .jsonl" in refused.stderr
    same = str(tmp_path / "in.txt")
    refused = cli(*predict_cli, "--input", same, "--output", same)
    assert refused.returncode == 2 and f"--output {same} is the --input {same}: write it elsewhere" in refused.stderr
    for output, message in [(tmp_path / "clf" / "config.json", "is inside the --model"), (tmp_path, "is a folder")]:
        refused = cli(*predict_cli, "--input", same, "--output", output)  # before labelling a line
        assert refused.returncode == 2 and message in refused.stderr
    piped = cli(*predict_cli, "--input", "-", "--output", "-", input="a fine film\n")  # stdin to stdout
    assert piped.returncode == 0 and json.loads(piped.stdout)["text"] == "a fine film"
    for length in (2, 129):
        refused = cli(*predict_cli, "--max-length", length, input="hello\n")
        assert refused.returncode == 2 and f"to the model's 128 positions, got {length}" in refused.stderr
    refused = cli("predict", "--model", tmp_path / "missing", "--batch-size", 0, input="hello\n")  # before loading
    assert refused.returncode == 2 and "--batch-size must be at least 1, got 0" in refused.stderr
    for option in (["--null-threshold", "1"], ["--allow-no-answer"]):
        refused = cli(*predict_cli, *option, input="hello\n")
        assert refused.returncode == 2 and "are for question answerers" in refused.stderr
    reader = subprocess.Popen(  # a reader that stops after one line, as `| head -1` does
        [sys.executable, "-m", "electra", *predict_cli],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reader.stdin.write(b"a fine film\n" * 4000)
    reader.stdin.close()
    assert json.loads(reader.stdout.readline())["text"] == "a fine film"
    reader.stdout.close()
    assert reader.wait(timeout=120) == 141 and reader.stderr.read() == b""  # as SIGPIPE ends a tool, no traceback

    # chunked encoding: the same answers in input order, and input numbers count across chunks
    from electra.predict import predict

    many = [(w * n, None) for n in (3, 1, 7, 2, 5) for w in ("great movie ", "awful dull plot ")]
    whole, _ = predict(tmp_path / "clf", many)
    chunked, _ = predict(tmp_path / "clf", many, batch_size=2, chunk_size=3)
    assert [r["label"] for r in chunked] == [r["label"] for r in whole]
    assert [r["score"] for r in chunked] == pytest.approx([r["score"] for r in whole], abs=1e-6)
    with pytest.raises(ValueError, match="--stride reads long texts in windows for a token classifier"):
        predict(tmp_path / "clf", many, stride=4)
    with pytest.raises(TaskError, match="input 7 is longer than 8 tokens; raise --max-length \\(up to 128\\) or drop"):
        predict(tmp_path / "clf", [("great", None)] * 5 + many, max_length=8, truncate=False, chunk_size=4)
    with pytest.raises(TaskError, match="input 1 is longer than 128 tokens; shorten it or drop --no-truncate"):
        predict(tmp_path / "clf", [("great " * 200, None)], truncate=False)  # no --max-length reads more

    # streaming: a chunk's answers come out before the next chunk is read, so memory stays flat
    from electra.predict import Predictor

    def texts_then_failure():
        yield from many[:4]
        raise RuntimeError("read past the first chunk")

    stream = Predictor(tmp_path / "clf").stream(texts_then_failure(), batch_size=2, chunk_size=4)
    assert [r["label"] for _, r, _ in itertools.islice(stream, 4)] == [r["label"] for r in whole[:4]]
    # a bad record far into the input: nothing is written, neither the output nor a temporary file
    (tmp_path / "in.jsonl").write_text('{"text": "fine"}\n' * 3 + '{"other": 1}\n')
    out = tmp_path / "written" / "out.jsonl"
    failed = cli(*predict_cli, "--input", tmp_path / "in.jsonl", "--output", out)
    assert failed.returncode == 2 and "in.jsonl:4 has no field 'text'" in failed.stderr
    for fmt in ("lines", "jsonl"):  # bytes that are not UTF-8 on stdin: named as in a file, not a traceback
        bad = cli(*predict_cli, "--format", fmt, input=b'{"text": "hi \xff there"}\n')
        assert bad.returncode == 2 and "stdin is not UTF-8 text (invalid start byte)" in bad.stderr, bad.stderr
    assert "name the text field with --text-field" in failed.stderr  # predict has no --label-field
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_glue_runs_every_task_found_scores_them_and_resumes(sentiment_tokenizer_dir, tmp_path, capsys):
    from electra.atomic import OutputExistsError
    from electra.finetune import run_glue

    root = sentiment_tokenizer_dir
    rows = [line.split(",") for line in (root / "data" / "train.csv").read_text().splitlines()[1:80]]
    glue = tmp_path / "glue"
    for folder, header, row in (
        ("SST-2", "sentence\tlabel", lambda i, t, y: f"{t}\t{int(y == 'pos')}"),
        (
            "RTE",
            "index\tsentence1\tsentence2\tlabel",
            lambda i, t, y: f"{i}\t{t}\tit was\t{y == 'pos' and 'entailment' or 'not_entailment'}",
        ),
    ):
        (glue / folder).mkdir(parents=True)
        for split, part in (("train", rows[:60]), ("dev", rows[60:])):
            lines = [header, *(row(i, t, y) for i, (t, y) in enumerate(part))]
            (glue / folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    test = [(t, "it was") for t, _ in rows[:25]]  # unlabelled, with an index column, as GLUE ships RTE's
    (glue / "RTE" / "test.tsv").write_text(
        "index\tsentence1\tsentence2\n" + "".join(f"{i}\t{t}\t{p}\n" for i, (t, p) in enumerate(test))
    )
    (glue / "STS-B").mkdir()
    for split, part in (("train", rows[:60]), ("dev", rows[60:])):
        scored = [f"{i}\t{t}\tit was\t{4.5 if y == 'pos' else 0.5}" for i, (t, y) in enumerate(part)]
        (glue / "STS-B" / f"{split}.tsv").write_text("\n".join(["index\tsentence1\tsentence2\tscore", *scored]) + "\n")
    (glue / "STS-B" / "test.tsv").write_text(
        "index\tsentence1\tsentence2\n" + "".join(f"{i}\t{t}\t{p}\n" for i, (t, p) in enumerate(test))
    )
    (glue / "QNLI").mkdir()  # a folder without its train.tsv is not a task
    cfg = FinetuneConfig(model=str(root / "model"), task="glue", data=str(glue), out=str(tmp_path / "out"), epochs=1)
    summary = run_glue(cfg, quiet=True)
    assert list(summary["tasks"]) == ["sst2", "stsb", "rte"] and not summary["complete"]
    mains = {}
    for name in ("sst2", "rte"):
        results = json.loads((tmp_path / "out" / name / "results.json").read_text())
        assert results["task"] == name and results["config"]["epochs"] == 1
        mains[name] = results["median"]["dev"]["accuracy"]
        assert summary["tasks"][name]["median"] == mains[name]
    stsb = json.loads((tmp_path / "out" / "stsb" / "results.json").read_text())
    mains["stsb"] = stsb["median"]["dev"]["spearman"]
    assert stsb["examples"]["train"] == 120 and stsb["examples"]["dev"] == len(rows) - 60  # its pairs both ways
    from electra.evaluate import run as evaluate_folder

    scored = evaluate_folder(tmp_path / "out" / "stsb", "stsb", str(glue / "STS-B"), records=True)
    shown = scored["records"]["dev"]  # scores as numbers, gold and predicted, scored as the metrics say
    assert [r["label"] for r in shown] == [4.5 if y == "pos" else 0.5 for _, y in rows[60:]]
    pred, gold = [r["prediction"] for r in shown], [r["label"] for r in shown]
    assert pearson(pred, gold) == pytest.approx(scored["metrics"]["dev"]["pearson"])
    assert summary["score"] == pytest.approx(100 * (mains["sst2"] + mains["stsb"] + mains["rte"]) / 3)
    assert json.loads((tmp_path / "out" / "glue.json").read_text()) == summary
    # the exported seed's test predictions, in GLUE's submission format, as predict labels the rows
    assert summary["test_predictions"] == {"STS-B.tsv": "stsb/STS-B.tsv", "RTE.tsv": "rte/RTE.tsv"}
    submitted = (tmp_path / "out" / "rte" / "RTE.tsv").read_text().splitlines()
    from electra.predict import predict

    labelled, _ = predict(tmp_path / "out" / "rte", test)
    assert submitted == ["index\tprediction", *(f"{i}\t{r['label']}" for i, r in enumerate(labelled))]
    scored, _ = predict(tmp_path / "out" / "stsb", test)  # STS-B: scores, clipped to 0..5
    submitted = (tmp_path / "out" / "stsb" / "STS-B.tsv").read_text().splitlines()
    assert submitted == ["index\tprediction", *(f"{i}\t{min(max(r['score'], 0), 5):.3f}" for i, r in enumerate(scored))]

    # run again: the finished tasks are kept (not trained again), and the same summary comes out
    written = (tmp_path / "out" / "rte" / "results.json").stat().st_mtime_ns
    assert run_glue(dataclasses.replace(cfg, model=str(root / "model") + "/"), quiet=True)["tasks"] == summary["tasks"]
    assert run_glue(cfg, quiet=True) == summary
    assert (tmp_path / "out" / "rte" / "results.json").stat().st_mtime_ns == written
    older = tmp_path / "out" / "rte" / "results.json"  # from before --precision existed: counts at its default
    saved = json.loads(older.read_text())
    del saved["config"]["precision"]
    older.write_text(json.dumps(saved))
    written = older.stat().st_mtime_ns
    assert run_glue(cfg, quiet=True)["tasks"] == summary["tasks"] and older.stat().st_mtime_ns == written
    shutil.rmtree(tmp_path / "out" / "sst2")  # as if stopped during sst2: the settings are checked before it runs
    with pytest.raises(OutputExistsError, match="stsb was fine-tuned with other settings \\(epochs 1 -> 2\\)"):
        run_glue(dataclasses.replace(cfg, epochs=2), quiet=True)
    lr = json.loads((tmp_path / "out" / "stsb" / "results.json").read_text())["settings"]["lr"]
    with pytest.raises(OutputExistsError, match=re.escape(f"(lr the default ({lr!r}) -> 0.123)")):  # not None
        run_glue(dataclasses.replace(cfg, lr=0.123), quiet=True)
    assert not (tmp_path / "out" / "sst2").exists()
    assert run_glue(dataclasses.replace(cfg, epochs=2), quiet=True, overwrite=True)["tasks"].keys() == {
        "sst2",
        "stsb",
        "rte",
    }
    assert json.loads((tmp_path / "out" / "rte" / "results.json").read_text())["config"]["epochs"] == 2
    # the same paths, other data: that task is fine-tuned again, the others are kept
    rte_train = glue / "RTE" / "train.tsv"
    rte_train.write_text("".join(rte_train.read_text().splitlines(keepends=True)[:-1]))  # a row fewer
    written = {t: (tmp_path / "out" / t / "results.json").stat().st_mtime_ns for t in ("sst2", "rte")}
    capsys.readouterr()
    run_glue(dataclasses.replace(cfg, epochs=2), quiet=True)
    assert (
        "glue: rte was fine-tuned on other data or weights; fine-tuning it again" in capsys.readouterr().err
    )  # quiet too
    assert (tmp_path / "out" / "sst2" / "results.json").stat().st_mtime_ns == written["sst2"]
    assert (tmp_path / "out" / "rte" / "results.json").stat().st_mtime_ns != written["rte"]
    assert json.loads((tmp_path / "out" / "rte" / "results.json").read_text())["examples"]["train"] == 59
    again = [*("--model", cfg.model, "--task", "glue", "--data", cfg.data, "--out", cfg.out, "--epochs", "2")]
    printed = subprocess.run([sys.executable, "-m", "electra", "finetune", *again], **TEXT)  # kept, so quick
    score = json.loads((tmp_path / "out" / "glue.json").read_text())["score"]
    assert printed.returncode == 0 and "| rte | accuracy |" in printed.stdout
    assert "test-set predictions for GLUE's server (the exported seeds'), in " in printed.stdout
    assert "stsb/STS-B.tsv, rte/RTE.tsv" in printed.stdout
    assert f"GLUE score {score:.1f}: the mean of the main metrics over 3 of the 8 tasks" in printed.stdout
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="holds files of something else \\(notes.txt\\)"):
        run_glue(cfg, quiet=True, overwrite=True)  # never deleted, even with --force
    with pytest.raises(TaskError, match="holds none of GLUE's task folders"):
        run_glue(dataclasses.replace(cfg, data=str(glue / "SST-2"), out=str(tmp_path / "o2")), quiet=True)


def test_sts_b_submissions_clip_scores_to_glues_range():
    """GLUE scores STS-B test predictions on its 0-5 scale: a model's score beyond it is clipped."""
    from electra.finetune import Encoded, test_predictions
    from electra.model import SequenceClassifier

    model = SequenceClassifier(tiny().discriminator, 1).eval()
    ids = [[2, 10, 3], [2, 11, 12, 3]]
    rows = [Example("a", "b", "4"), Example("c", "d", "9")]
    data = Encoded(ids=ids, types=[[0] * len(x) for x in ids], labels=[0.0, 0.0])
    for bias, shown in ((100.0, "5.000"), (-100.0, "0.000")):
        with torch.no_grad():
            model.out.weight.zero_()
            model.out.bias.fill_(bias)
        written = test_predictions(model, GLUE["stsb"], rows, data, ["score"], torch.device("cpu"), "fp32")
        assert written == f"index\tprediction\n4\t{shown}\n9\t{shown}\n"


def test_mnli_labels_both_test_sets_and_glues_diagnostic(sentiment_tokenizer_dir, tmp_path):
    from electra.predict import predict
    from electra.tasks import glue_test

    root = sentiment_tokenizer_dir
    rows = [line.split(",") for line in (root / "data" / "train.csv").read_text().splitlines()[1:76]]
    glue, names = tmp_path / "glue", ("entailment", "neutral", "contradiction")
    mnli = glue / "MNLI"
    mnli.mkdir(parents=True)
    labelled = [f"{i}\t{t}\tit was\t{names[i % 3] if y == 'pos' else 'contradiction'}" for i, (t, y) in enumerate(rows)]
    for file, part in (
        ("train.tsv", labelled[:45]),
        ("dev_matched.tsv", labelled[45:60]),
        ("dev_mismatched.tsv", labelled[60:]),
    ):
        (mnli / file).write_text("index\tsentence1\tsentence2\tgold_label\n" + "\n".join(part) + "\n")
    pairs = [(t, "it was") for t, _ in rows[:12]]
    for file in ("test_matched.tsv", "test_mismatched.tsv", "../diagnostic/diagnostic.tsv"):
        (mnli / file).parent.mkdir(exist_ok=True)
        (mnli / file).write_text(
            "index\tsentence1\tsentence2\n" + "".join(f"{i}\t{t}\t{p}\n" for i, (t, p) in enumerate(pairs))
        )
    cfg = FinetuneConfig(model=str(root / "model"), task="mnli", data=str(glue), out=str(tmp_path / "mnli"), epochs=1)
    results = run(cfg, quiet=True)
    assert results["main_metric"] == "dev_matched/accuracy"  # matched, as GLUE's MNLI-m
    assert results["test_predictions"] == ["MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv"]
    answers, _ = predict(tmp_path / "mnli", pairs)  # AX is labelled by the MNLI model, as GLUE's server expects
    submitted = (tmp_path / "mnli" / "AX.tsv").read_text().splitlines()
    assert submitted == ["index\tprediction", *(f"{i}\t{r['label']}" for i, r in enumerate(answers))]
    assert {r["label"] for r in answers} <= set(names)
    from electra.evaluate import run as evaluate_folder

    scored = results["seeds"][0]["metrics"]  # evaluate scores both dev sets as fine-tuning did,
    assert evaluate_folder(tmp_path / "mnli", "mnli", str(glue))["metrics"] == scored
    shutil.copytree(tmp_path / "mnli", tmp_path / "foreign")  # and without results.json, by the model's label names
    (tmp_path / "foreign" / "results.json").unlink()
    (mnli / "train.tsv").unlink()  # evaluation finds the task's folder by its dev files alone
    assert evaluate_folder(tmp_path / "foreign", "mnli", str(mnli), split="dev_mismatched")["metrics"] == {
        "dev_mismatched": scored["dev_mismatched"]
    }
    card = pytest.importorskip("huggingface_hub").ModelCard.load(tmp_path / "mnli" / "README.md")
    assert not card.data.eval_results  # 15 dev examples in GLUE's format are not GLUE's 9,815 (test_card)

    (glue / "diagnostic" / "diagnostic.tsv").rename(mnli / "AX.tsv")  # a copy in MNLI's own folder is found too
    assert [e.pair for e in glue_test(GLUE["mnli"], mnli)["AX"]] == ["it was"] * 12
    (mnli / "AX.tsv").unlink()
    assert list(glue_test(GLUE["mnli"], mnli)) == ["MNLI-m", "MNLI-mm"]


def test_multi_label_fine_tuning_scores_and_predicts_as_transformers_does(sentiment_tokenizer_dir, tmp_path, cli):
    transformers = pytest.importorskip("transformers")
    from electra.finetune import _loss

    data, clf = _sentiment(tmp_path / "data", multi_label=True), tmp_path / "clf"
    args = ["--task", "csv", "--data", data, "--out", clf, "--epochs", "30", "--lr", "5e-3", "--batch-size", "16"]
    args += ["--multi-label", "--label-separator", "|", "--license", "mit", "--language", "en"]
    result = cli("finetune", "--model", sentiment_tokenizer_dir / "model", *args)
    assert result.returncode == 0, result.stderr
    results = json.loads((clf / "results.json").read_text())
    assert results["labels"] == ["neg", "pos"] and results["main_metric"] == "dev/micro_f1"
    gold = [[int("neg" in row), int("pos" in row)] for row in (data / "dev.csv").read_text().splitlines()[1:]]
    dev = results["median"]["dev"]  # above answering every label everywhere, or none
    assert dev["micro_f1"] > micro_f1([[1, 1]] * len(gold), gold) + 0.1
    assert dev["subset_accuracy"] > 2 * subset_accuracy([[0, 0]] * len(gold), gold)

    model = transformers.AutoModelForSequenceClassification.from_pretrained(clf)
    assert model.config.problem_type == "multi_label_classification"
    texts = ["a great film", "an awful plot", "the movie", "a good and bad story"]
    batch = transformers.AutoTokenizer.from_pretrained(clf)(texts, padding=True, return_tensors="pt")
    targets = torch.tensor([[0, 1], [1, 0], [0, 0], [1, 1]], dtype=torch.float)
    with torch.no_grad():
        out = model(**batch, labels=targets)  # transformers' loss for this problem_type is the one trained
    torch.testing.assert_close(_loss(Task("csv", "multilabel", ("micro_f1",)), out.logits, targets), out.loss)

    pipe = transformers.pipeline("text-classification", model=str(clf), top_k=None)
    predicted = cli("predict", "--model", clf, "--all-scores", input="\n".join(texts) + "\n")
    records = [json.loads(line) for line in predicted.stdout.splitlines()]
    for record, scores in zip(records, pipe(texts), strict=True):  # the pipeline's top label, then every one above 1/2
        assert record["label"] == scores[0]["label"] and record["score"] == pytest.approx(scores[0]["score"], abs=1e-5)
        assert record["labels"] == [s["label"] for s in scores if s["score"] > 0.5]
        assert [s["label"] for s in record["scores"]] == [s["label"] for s in scores]  # every label, as top_k=None
        assert [s["score"] for s in record["scores"]] == pytest.approx([s["score"] for s in scores], abs=1e-5)
    assert [r["labels"] for r in records[:3]] == [["pos"], ["neg"], []]
    dev = [r.rsplit(",", 1)[0] for r in (data / "dev.csv").read_text().splitlines()[1:]]
    scored = [{s["label"]: s["score"] for s in r} for r in pipe(dev)]
    cut = sorted(s for r in scored for s in r.values())[len(dev)] + 1e-4  # below it, a quarter of the scores
    predicted = cli("predict", "--model", clf, "--threshold", str(cut), input="\n".join(dev) + "\n")
    labels = [json.loads(line)["labels"] for line in predicted.stdout.splitlines()]
    assert labels == [sorted((y for y in s if s[y] > cut), key=s.get, reverse=True) for s in scored]
    assert labels != [sorted((y for y in s if s[y] > 0.5), key=s.get, reverse=True) for s in scored]
    said = [[int(s[y] > cut) for y in ("neg", "pos")] for s in scored]
    evaluated = cli("evaluate", "--model", clf, "--task", "csv", "--data", data, "--threshold", str(cut))
    assert f"dev (60 examples, labels above {cut}): micro_f1 {micro_f1(said, gold):.4f}" in evaluated.stdout
    evaluated = cli("evaluate", "--model", clf, "--task", "csv", "--data", data, "--threshold", "1")
    assert evaluated.returncode == 2 and "--threshold is a probability between 0 and 1" in evaluated.stderr

    scored = cli(
        "evaluate", "--model", clf, "--task", "csv", "--data", data, "--output", tmp_path / "scores.json",
        "--predictions", tmp_path / "predictions.jsonl",
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr  # the separator as fine-tuned
    written = json.loads((tmp_path / "scores.json").read_text())
    scores = written["metrics"]
    assert scores == {"dev": results["seeds"][0]["metrics"]["dev"]}
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    said = [[int(y in r["prediction"]) for y in ("neg", "pos")] for r in rows]  # each row's labels, as scored
    assert [[int(y in r["label"]) for y in ("neg", "pos")] for r in rows] == gold
    assert micro_f1(said, gold) == pytest.approx(scores["dev"]["micro_f1"])
    for j, y in enumerate(("neg", "pos")):  # each label's own scores, from the same predictions
        hits = sum(p[j] and g[j] for p, g in zip(said, gold, strict=True))
        shown = written["per_label"]["dev"][y]
        assert (shown["support"], shown["recall"]) == (sum(g[j] for g in gold), hits / sum(g[j] for g in gold))
    commas = tmp_path / "commas"  # the same rows, their labels joined by commas
    commas.mkdir()
    rows = (data / "dev.csv").read_text().splitlines()
    (commas / "dev.csv").write_text(
        "\n".join([rows[0], *(f'{t},"{y.replace("|", ",")}"' for t, y in (r.split(",") for r in rows[1:]))])
    )
    scored = cli("evaluate", "--model", clf, "--task", "csv", "--data", commas)
    assert scored.returncode == 2 and "joined by ','? pass --label-separator ','" in scored.stderr
    scored = cli("evaluate", "--model", clf, "--task", "csv", "--data", commas, "--label-separator", ",")
    assert scored.returncode == 0 and f"micro_f1 {scores['dev']['micro_f1']:.4f}" in scored.stdout
    card = (clf / "README.md").read_text()
    assert "`electra finetune --task csv --multi-label`" in card and "labels: `neg`, `pos`." in card
    assert card.startswith('---\nlibrary_name: "transformers"\nlicense: "mit"\nlanguage:\n  - "en"\n')
    scope = {}  # the card's example runs as written
    exec(card.split("```python\n")[1].split("```")[0], scope)
    assert scope["model"]("a great film") == pipe("a great film")


def test_multi_label_data_is_read_as_lists_and_misuse_is_named(tokenizer, tmp_path, cli):
    from electra.finetune import label_notes, load_task

    data = tmp_path / "d"
    data.mkdir()
    (data / "train.csv").write_text('text,label\nthe cat,"x, y"\na dog,\nthe bird,y\n')
    records = [{"text": "a cat", "label": ["y", "x", "y"]}, {"text": "a dog", "label": []}, {"text": "x", "label": "x"}]
    (data / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = FinetuneConfig(model="m", task="csv", data=str(data), out="o", multi_label=True)
    task, train, devs = load_task(cfg)
    assert task.kind == "multilabel" and task.metrics == ("micro_f1", "macro_f1", "subset_accuracy")
    assert [e.label for e in train] == [["x", "y"], [], ["y"]]
    assert [e.label for e in devs["dev"]] == [["y", "x"], [], ["x"]]  # each once
    labels = label_set(task, train, devs)
    assert labels == ["x", "y"]
    encoded, _ = encode(copy.deepcopy(tokenizer), task, train, labels, 16, True, "train")  # encode sets truncation
    assert [x.tolist() for x in encoded.labels] == [[1, 1], [0, 0], [0, 1]]
    with pytest.raises(TaskError, match="dev example 1 \\('a cat'\\) has label 'z', unseen in training"):
        label_set(task, train, {"dev": [Example("a cat", None, ["x", "z"])]})

    # lists as pandas' to_csv writes them, a TSV cell quoted by a spreadsheet, a space as separator
    (data / "train.csv").write_text("text,label\nthe cat,\"['x', 'y']\"\na dog,[]\n")
    assert [e.label for e in load_task(cfg)[1]] == [["x", "y"], []]
    (data / "train.tsv").write_text('text\tlabel\nthe cat\t"x,y"\n')
    (data / "train.csv").unlink()
    assert [e.label for e in load_task(cfg)[1]] == [["x", "y"]]
    assert [e.label for e in load_task(dataclasses.replace(cfg, label_separator=" "))[1]] == [["x,y"]]
    (data / "train.tsv").write_text("text\tlabel\nthe cat\t[x y]\n")
    with pytest.raises(TaskError, match="tsv example 1 has label '\\[x y\\]', which looks like a list but is not"):
        load_task(cfg)
    (data / "train.tsv").unlink()
    (data / "train.csv").write_text('text,label\nthe cat,"x|y"\na dog,"y|x"\na cow,x\n')  # another separator
    task, train, _ = load_task(cfg)
    assert label_notes(task, train) == [
        "labels such as 'x|y' look like several joined by '|'; if they are, pass --label-separator '|'"
    ]
    (data / "train.csv").write_text("text,label\nthe cat,x\na dog,\n")
    with pytest.raises(TaskError, match="train has one label \\('x'\\); .* fine-tune without --multi-label"):
        label_set(*load_task(cfg))
    (data / "train.csv").write_text("text,label\nthe cat,\n")
    with pytest.raises(TaskError, match="train has no label in any row"):
        label_set(*load_task(cfg))
    (data / "test.csv").write_text("text,label\nthe cat,\n")  # a test set of empty cells is unlabelled
    assert list(load_task(cfg)[2]) == ["dev"]
    (data / "dev.jsonl").write_text('{"text": "a cat", "label": []}\n')
    with pytest.raises(TaskError, match="dev.jsonl has no label in any row"):
        load_task(cfg)
    (data / "dev.jsonl").write_text('{"text": "a cat", "label": null}\n')
    with pytest.raises(TaskError, match="dev.jsonl:1: 'label' is null; label the record \\(a list, \\[\\] for none\\)"):
        load_task(cfg)
    (data / "dev.jsonl").write_text('{"text": "a cat", "label": {"x": 1}}\n')
    with pytest.raises(TaskError, match="jsonl:1: 'label' is \\{'x': 1\\}; a label is a string, a number or a list"):
        load_task(cfg)

    (data / "train.csv").write_text("text,label\nthe cat,x\nthe bird,y\n")  # one label a row, but lists elsewhere
    (data / "dev.jsonl").write_text('{"text": "a cat", "label": "x"}\n')
    (data / "test.csv").unlink()
    (data / "test.jsonl").write_text('{"text": "a cat", "label": ["x"]}\n')
    single = dataclasses.replace(cfg, multi_label=False)
    with pytest.raises(TaskError, match="test.jsonl example 1 has a list of labels \\(multi-label data\\); pass"):
        load_task(single)
    with pytest.raises(TaskError, match="\\(multi-label data\\); evaluate a model fine-tuned with --multi-label"):
        load_task(single, with_train=False)
    with pytest.raises(ValueError, match="--regression and --multi-label exclude each other .*: drop one"):
        dataclasses.replace(cfg, regression=True)
    with pytest.raises(ValueError, match="multi-label is for --task csv"):
        dataclasses.replace(cfg, task="sst2")
    with pytest.raises(ValueError, match="license 'MIT License' is not a hub license id"):
        dataclasses.replace(cfg, license="MIT License")
    finetune = ["finetune", "--model", "m", "--data", data, "--out", tmp_path / "o"]
    result = cli(*finetune, "--task", "sst2", "--multi-label")
    assert result.returncode == 2 and "--multi-label is for --task csv, not sst2; drop it" in result.stderr
    result = cli(*finetune, "--task", "csv", "--label-separator", "|")
    assert result.returncode == 2 and "add --multi-label or drop it" in result.stderr


def _one_column_per_label(joined, wide, columns=("neg", "pos"), jsonl=False):
    """`joined`'s csv files (labels joined by | in one cell) with one 0/1 column per label instead,
    or (`jsonl`) as JSON lines whose label fields are true or false."""
    wide.mkdir()
    for f in joined.glob("*.csv"):
        rows = [r.split(",") for r in f.read_text().splitlines()[1:]]
        if jsonl:
            records = [{"text": t, **{c: c in y.split("|") for c in columns}} for t, y in rows]
            (wide / f"{f.stem}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        else:
            lines = [",".join((t, *(str(int(c in y.split("|"))) for c in columns))) for t, y in rows]
            (wide / f.name).write_text("\n".join([",".join(("text", *columns)), *lines]) + "\n")
    return wide


def test_one_column_per_label_trains_as_the_same_labels_joined_in_one_cell(sentiment_tokenizer_dir, tmp_path, cli):
    joined = _sentiment(tmp_path / "joined", multi_label=True)
    common = ["finetune", "--model", sentiment_tokenizer_dir / "model", "--task", "csv", "--epochs", "2"]
    common += ["--lr", "5e-3", "--batch-size", "16"]
    result = cli(*common, "--data", joined, "--out", tmp_path / "a", "--multi-label", "--label-separator", "|")
    assert result.returncode == 0, result.stderr
    expected = json.loads((tmp_path / "a" / "results.json").read_text())
    for name, jsonl in (("csv", False), ("jsonl", True)):
        wide = _one_column_per_label(joined, tmp_path / name, jsonl=jsonl)
        result = cli(*common, "--data", wide, "--out", tmp_path / f"clf-{name}", "--label-columns", "neg,pos")
        assert result.returncode == 0, result.stderr
        results = json.loads((tmp_path / f"clf-{name}" / "results.json").read_text())
        assert results["labels"] == ["neg", "pos"] and results["config"]["multi_label"]
        assert results["median"] == expected["median"] and results["seeds"] == expected["seeds"]
    card = (tmp_path / "clf-csv" / "README.md").read_text()
    assert "`electra finetune --task csv --label-columns neg,pos`" in card

    scored = cli("evaluate", "--model", tmp_path / "clf-csv", "--task", "csv", "--data", tmp_path / "csv")
    assert scored.returncode == 0, scored.stderr  # the columns as fine-tuned
    assert f"micro_f1 {expected['median']['dev']['micro_f1']:.4f}" in scored.stdout
    micro = f"micro_f1 {expected['median']['dev']['micro_f1']:.4f}"
    assert micro in scored.stdout
    evaluate = ["evaluate", "--task", "csv", "--model"]
    scored = cli(*evaluate, tmp_path / "clf-csv", "--data", joined, "--label-separator", "|")  # its labels in a cell
    assert scored.returncode == 0 and micro in scored.stdout
    swapped = _one_column_per_label(joined, tmp_path / "swapped", columns=("pos", "neg"))  # columns in another order
    scored = cli(*evaluate, tmp_path / "a", "--data", swapped, "--label-columns", "pos,neg")
    assert scored.returncode == 0 and micro in scored.stdout


def test_label_columns_read_ones_and_zeros_and_name_what_else_they_hold(tmp_path, cli):
    from electra.finetune import load_task

    data = tmp_path / "d"
    data.mkdir()
    (data / "train.csv").write_text("id,text,toxic,insult,threat\n1,a,1,0,0\n2,b,0,0,0\n3,c,true,1.0,False\n")
    records = [{"text": "a", "toxic": 1, "insult": False, "threat": "1"}]
    records += [{"text": "b", "toxic": 0, "insult": True, "threat": 0.0}]
    (data / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    columns = ("threat", "toxic", "insult")
    cfg = FinetuneConfig(model="m", task="csv", data=str(data), out="o", multi_label=True, label_columns=columns)
    task, train, devs = load_task(cfg)
    assert task.kind == "multilabel" and task.labels == ("threat", "toxic", "insult")
    assert [e.label for e in train] == [["toxic"], [], ["toxic", "insult"]]
    assert [e.label for e in devs["dev"]] == [["threat", "toxic"], ["insult"]]
    assert label_set(task, train, devs) == ["threat", "toxic", "insult"]  # the columns' order, unseen ones too

    for cell, shown in (("-1", "'-1'"), ("", "''"), ("yes", "'yes'"), ("2", "'2'")):
        (data / "train.csv").write_text(f"text,toxic,insult,threat\na,1,0,0\nb,0,{cell},0\n")
        message = f"train.csv:3: label column 'insult' holds {shown}; each label column holds 1 .* or 0"
        with pytest.raises(TaskError, match=message):
            load_task(cfg)
    (data / "train.csv").write_text("text,toxic,insult\na,1,0\n")
    with pytest.raises(TaskError, match="train.csv has no column 'threat' .*; list the label columns with --label-col"):
        load_task(cfg)
    (data / "train.csv").write_text("text,toxic,insult,threat\na,1,0,0\n")
    (data / "dev.jsonl").write_text('{"text": "a", "toxic": 1, "threat": 0}\n')
    with pytest.raises(TaskError, match="dev.jsonl:1 has no field 'insult' .*; list the label fields with --label-col"):
        load_task(cfg)
    (data / "dev.jsonl").write_text('{"text": "a", "toxic": 1, "insult": null, "threat": 0}\n')
    with pytest.raises(TaskError, match="dev.jsonl:1: label column 'insult' holds None"):
        load_task(cfg)
    (data / "dev.jsonl").write_text('{"text": "a", "toxic": 1, "insult": 0, "threat": 0}\n')
    (data / "test.csv").write_text("text\nan unlabelled row\n")
    assert list(load_task(cfg)[2]) == ["dev"]  # a test file without the columns is not scored

    for bad, message in (
        ({"label_columns": ("toxic",)}, "names one column \\('toxic'\\); a yes/no is a single-label task"),
        ({"label_columns": ("toxic", "insult", "toxic")}, "names 'toxic' twice"),
        ({"label_columns": ("toxic", " ")}, "label-columns must be column names"),
        ({"label_field": "label"}, "--label-field and --label-columns exclude each other"),
        ({"multi_label": False}, "label-columns are a multi-label task's 0/1 columns, one per label: set multi-label"),
    ):
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(cfg, **bad)
    finetune = ["finetune", "--model", "m", "--data", data, "--out", tmp_path / "o"]
    result = cli(*finetune, "--task", "sst2", "--label-columns", "a,b")
    assert result.returncode == 2 and "--label-columns is for --task csv, not sst2; drop it" in result.stderr
    result = cli(*finetune, "--task", "csv", "--label-columns", "a,b", "--label-separator", "|")
    assert result.returncode == 2 and "--label-separator and --label-columns exclude each other" in result.stderr
    result = cli(*finetune, "--task", "csv", "--label-columns", "a,,b")
    assert result.returncode == 2 and "'a,,b' has an empty name" in result.stderr


def _sentiment_cfg(root, out, **settings) -> FinetuneConfig:
    """Fine-tuning `sentiment_tokenizer_dir`'s model on its sentiment data into `out`."""
    return FinetuneConfig(model=str(root / "model"), task="csv", data=str(root / "data"), out=str(out), **settings)


def test_seeds_are_summarised_by_rank_whatever_their_order():
    from electra.finetune import summarize

    scores = [0.5, 0.9, math.nan, 0.6]
    for order in itertools.permutations(scores):
        median, spread = summarize([{"dev": {"accuracy": x}} for x in order])
        assert median == {"dev": {"accuracy": (0.5 + 0.6) / 2}}  # NaN ranks lowest: between 0.5 and 0.6
        assert math.isnan(spread["dev"]["accuracy"]["min"]) and spread["dev"]["accuracy"]["max"] == 0.9
    median, spread = summarize([{"dev": {"f1": x}} for x in (0.5, 0.9, 0.6)])
    assert median["dev"]["f1"] == 0.6 and spread["dev"]["f1"] == {
        "min": 0.5,
        "max": 0.9,
        "std": pytest.approx(statistics.pstdev([0.5, 0.9, 0.6])),
    }


def test_the_best_seed_is_exported_and_the_median_is_the_middle_seeds(sentiment_tokenizer_dir, tmp_path, monkeypatch):
    """Three seeds with known dev scores: the best on the main metric is exported (its weights,
    its number in results.json); the median is the middle score, not the mean. A seed whose
    training diverged (a NaN score) ranks lowest, wherever it comes."""
    from electra import finetune

    real = finetune.train_one
    accuracy = {3: math.nan, 4: 0.9, 5: 0.6}  # seeds 3, 4, 5 (--seed 3): the best is the middle one

    def scored(cfg, task, encoder, labels, train, devs, seed, *rest):
        final, state, _ = real(cfg, task, encoder, labels, train, devs, seed, *rest)
        final = {"dev": {**final["dev"], "accuracy": accuracy[seed]}}
        return final, state, [final]

    monkeypatch.setattr(finetune, "train_one", scored)
    cfg = _sentiment_cfg(sentiment_tokenizer_dir, tmp_path / "o", seeds=3, seed=3, epochs=1, batch_size=16)
    results = run(cfg, quiet=True)
    assert [s["seed"] for s in results["seeds"]] == [3, 4, 5]
    assert results["exported_seed"] == 4 and results["main_metric"] == "dev/accuracy"
    assert results["median"]["dev"]["accuracy"] == 0.6  # not the mean
    spread = results["spread"]["dev"]["accuracy"]
    assert math.isnan(spread["min"]) and spread["max"] == 0.9
    # the exported folder holds seed 4's weights: those of seed 4 fine-tuned alone
    monkeypatch.setattr(finetune, "train_one", real)
    run(dataclasses.replace(cfg, seeds=1, seed=4, out=str(tmp_path / "alone")), quiet=True)
    ours, alone = hf.read_weights(tmp_path / "o"), hf.read_weights(tmp_path / "alone")
    assert all(torch.equal(ours[k], alone[k]) for k in alone)


def test_each_step_follows_the_schedule_clips_gradients_and_reshuffles_every_epoch(
    sentiment_tokenizer_dir, tmp_path, monkeypatch
):
    """232 examples at batch 16: 15 steps an epoch (the last batch of 8 counts), 30 in all, 3 of
    warmup (10%): the LR factor of every step is the paper's warmup times linear decay, every
    step's gradients are clipped to norm 1, --weight-decay reaches the optimizer, and each epoch
    draws another order."""
    from electra import finetune
    from electra.optim import lr_factor

    factors, clipped, optimizers, orders = [], [], [], {}
    real_set_lr, real_clip, real_adamw, real_batches = (
        finetune.set_lr,
        torch.nn.utils.clip_grad_norm_,
        finetune.adamw,
        finetune.batches,
    )
    monkeypatch.setattr(finetune, "set_lr", lambda opt, lr, f: factors.append(f) or real_set_lr(opt, lr, f))

    def clip(params, max_norm, *a, **k):
        clipped.append(max_norm)
        return real_clip(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    monkeypatch.setattr(finetune, "adamw", lambda *a, **k: optimizers.append(real_adamw(*a, **k)) or optimizers[-1])

    def batches(data, batch_size, seed, *a, **k):
        for b in real_batches(data, batch_size, seed, *a, **k):
            if seed is not None:  # training: the seed is seed * 1000 + epoch
                orders.setdefault(seed, []).append(tuple(b[0]))
            yield b

    monkeypatch.setattr(finetune, "batches", batches)
    settings = {"epochs": 2, "batch_size": 16, "max_train_examples": 232, "weight_decay": 0.05}
    cfg = _sentiment_cfg(sentiment_tokenizer_dir, tmp_path / "o", **settings)
    results = run(cfg, quiet=True)
    assert len(results["seeds"][0]["per_epoch"]) == 2
    assert factors == pytest.approx([lr_factor(s, 3, 30) for s in range(30)])
    assert factors[0] == pytest.approx(1 / 3) and factors[2] == pytest.approx(28 / 30)
    assert factors[-1] == pytest.approx(1 / 30)  # the last step still learns: decay reaches 0 after it
    assert clipped == [1.0] * 30
    ((optimizer,),) = [optimizers]
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.05, 0.0}  # biases and LayerNorm: none
    assert sorted(orders) == [0, 1] and [len(o) for o in orders.values()] == [15, 15]
    assert orders[0] != orders[1]  # reshuffled: not the same batches in the same order every epoch


@pytest.mark.parametrize(
    "width, layers, lr, decay",
    [
        (64, 2, 2e-3, 0.8),
        (128, 12, 3e-4, 0.8),
        (256, 12, 3e-4, 0.8),
        (257, 12, 1e-4, 0.8),
        (768, 12, 1e-4, 0.8),
        (1024, 24, 5e-5, 0.9),
        (1024, 23, 5e-5, 0.8),
    ],
)
def test_default_settings_are_the_papers_by_size(width, layers, lr, decay):
    """ELECTRA-Small (256 wide) 3e-4, Base (768) 1e-4, Large (1024, 24 layers) 5e-5 and layer decay 0.9;
    below 128 wide 2e-3 (docs/finetuning.md); 128 tokens, SQuAD 512 or the model's positions."""
    from types import SimpleNamespace

    from electra.finetune import settings
    from electra.tasks import GLUE

    encoder = SimpleNamespace(cfg=SimpleNamespace(hidden_size=width, num_layers=layers, max_positions=384))
    cfg = FinetuneConfig(model="m", task="rte", data="d", out="o")
    assert settings(cfg, GLUE["rte"], encoder) == {"lr": lr, "layer_decay": decay, "epochs": 10, "max_length": 128}
    squad = Task("squad", "span", ("f1", "exact_match"), epochs=2)
    assert settings(dataclasses.replace(cfg, task="squad"), squad, encoder)["max_length"] == 384  # not 512


def test_a_train_subset_is_a_seeded_random_draw_not_the_files_head(sentiment_tokenizer_dir, tmp_path, monkeypatch):
    """--max-train-examples on a file sorted by label (all neg, then all pos): the subset holds
    both classes, drawn by the seed, not the first rows."""
    import random

    from electra import finetune

    data = tmp_path / "sorted"
    data.mkdir()
    texts = [f"film {i}" for i in range(240)]
    rows = "".join(f"{t},{'neg' if i < 120 else 'pos'}\n" for i, t in enumerate(texts))
    (data / "train.csv").write_text("text,label\n" + rows)
    shutil.copy(sentiment_tokenizer_dir / "data" / "dev.csv", data / "dev.csv")
    real, seen = finetune.encode, {}

    def encode(tok, task, examples, labels, *rest, **kw):
        seen.setdefault(rest[2], examples)  # rest: max_length, truncate, where, ...
        return real(tok, task, examples, labels, *rest, **kw)

    monkeypatch.setattr(finetune, "encode", encode)
    cfg = _sentiment_cfg(sentiment_tokenizer_dir, tmp_path / "o", epochs=1, max_train_examples=20)
    cfg = dataclasses.replace(cfg, data=str(data))
    results = run(cfg, quiet=True)
    assert results["examples"]["train"] == 20
    assert {e.label for e in seen["train"]} == {"neg", "pos"}
    assert [e.text for e in seen["train"]] == [texts[i] for i in random.Random(0).sample(range(240), 20)]


def test_results_count_the_truncated_examples_of_each_split(sentiment_tokenizer_dir, tmp_path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(sentiment_tokenizer_dir / "tok" / "tokenizer.json"))  # [CLS] text [SEP]

    def longer(split: str, limit: int = 9) -> int:
        rows = (sentiment_tokenizer_dir / "data" / f"{split}.csv").read_text().splitlines()[1:]
        return sum(len(tok.encode(row.rsplit(",", 1)[0]).ids) > limit for row in rows)

    results = run(_sentiment_cfg(sentiment_tokenizer_dir, tmp_path / "o", epochs=1, max_length=9), quiet=True)
    assert results["truncated"] == {"train": longer("train"), "dev": longer("dev")}
    assert 0 < longer("dev") < longer("train")


def test_seeds_kept_by_a_stopped_run_are_trained_again_when_the_data_changed(
    sentiment_tokenizer_dir, tmp_path, monkeypatch
):
    """A run stopped after seed 0, then its train file edited in place (same path, other rows): the
    kept seed is not reused (the seed store is keyed by the data's and weights' hashes, not paths)."""
    from electra import finetune

    data = tmp_path / "data"
    shutil.copytree(sentiment_tokenizer_dir / "data", data)
    real, trained = finetune.train_one, []

    def stopped_at_seed_1(cfg, task, encoder, labels, train, devs, seed, *rest):
        trained.append(seed)
        if seed == 1:
            raise KeyboardInterrupt
        return real(cfg, task, encoder, labels, train, devs, seed, *rest)

    monkeypatch.setattr(finetune, "train_one", stopped_at_seed_1)
    cfg = _sentiment_cfg(sentiment_tokenizer_dir, tmp_path / "o", seeds=2, epochs=1)
    cfg = dataclasses.replace(cfg, data=str(data))
    with pytest.raises(KeyboardInterrupt):
        run(cfg, quiet=True)
    lines = (data / "train.csv").read_text().splitlines()
    (data / "train.csv").write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # one row fewer, same path
    trained.clear()
    monkeypatch.setattr(finetune, "train_one", lambda *a: trained.append(a[6]) or real(*a))
    run(cfg, quiet=True)
    assert trained == [0, 1]


def test_multi_label_dev_predictions_take_every_label_above_one_half():
    """Fine-tuning scores a multi-label dev set as predict labels it: every label whose
    probability is above 0.5 (logit > 0), as transformers' multi-label pipeline does."""
    import numpy as np

    from electra.finetune import Encoded, predictions

    class Fixed(torch.nn.Module):
        def forward(self, ids, types, mask):
            return torch.tensor([[0.3, -0.3, 0.0]]).expand(len(ids), 3)

    data = Encoded([np.array([1, 5, 2], dtype=np.int32)], [np.zeros(3, dtype=np.int8)], [np.zeros(3, dtype=np.float32)])
    (p,) = predictions(Fixed(), Task("csv", "multilabel", ("micro_f1",)), data, torch.device("cpu"))
    assert p.tolist() == [1.0, 0.0, 0.0]  # sigmoid(0.3) = 0.57 is a yes; sigmoid(0) = 0.5 is not


def test_each_seed_starts_its_task_head_from_its_own_initialisation(sentiment_tokenizer_dir, tmp_path, monkeypatch):
    """Seeds differ in the head's random initialisation (torch.manual_seed(seed)), not only in data order."""
    from electra import finetune

    real, heads = finetune.task_model, []

    def task_model(task, cfg, labels, encoder=None):
        model = real(task, cfg, labels, encoder)
        if encoder is not None:  # training (the export builds one without an encoder)
            heads.append(model.out.weight.detach().clone())
        return model

    monkeypatch.setattr(finetune, "task_model", task_model)
    run(_sentiment_cfg(sentiment_tokenizer_dir, tmp_path / "o", seeds=2, epochs=1, max_train_examples=16), quiet=True)
    assert len(heads) == 2 and not torch.equal(heads[0], heads[1])


def test_finetune_flags_and_defaults_reach_the_config(monkeypatch, tmp_path):
    from electra import cli, finetune

    got = []
    monkeypatch.setattr(finetune, "run", lambda cfg, quiet=False, overwrite=False: got.append(cfg))

    def parsed(*flags):
        args = cli.build_parser().parse_args(
            ["finetune", "--model", "m", "--data", "d", "--out", str(tmp_path / "o"), *flags]
        )
        args.func(args)
        return got[-1]

    cfg = parsed("--task", "squad_v2", "--null-threshold", "1.5", "--doc-stride", "64", "--no-truncate")
    assert (cfg.null_threshold, cfg.doc_stride, cfg.truncate) == (1.5, 64, False)
    cfg = parsed("--task", "squad_v2", "--max-length", "256")
    assert cfg.max_length == 256
    cfg = parsed("--task", "sst2")  # the documented defaults
    assert (cfg.seeds, cfg.seed, cfg.batch_size, cfg.save_minutes) == (1, 0, 32, 30.0)
    assert (cfg.null_threshold, cfg.truncate) == (0.0, True)
    assert (cfg.epochs, cfg.lr, cfg.layer_decay, cfg.max_length, cfg.precision) == (None, None, None, None, "auto")
    assert not cfg.deterministic and parsed("--task", "sst2", "--deterministic").deterministic


def test_deterministic_fine_tunes_under_fixed_order_kernels_and_restores_the_setting(monkeypatch, tmp_path):
    from electra import finetune

    seen = []
    monkeypatch.setattr(finetune, "_run", lambda *a: seen.append(torch.are_deterministic_algorithms_enabled()))
    cfg = FinetuneConfig(model="m", task="sst2", data="d", out=str(tmp_path / "o"))
    finetune.run(cfg)
    finetune.run(dataclasses.replace(cfg, deterministic=True))
    assert seen == [False, True] and not torch.are_deterministic_algorithms_enabled()


def test_a_masked_lm_run_is_fine_tuned_from_its_generator(tiny_data, tmp_path):
    """An `--objective mlm` run trains its generator alone (BERT's masked LM, full width): that
    network is the one fine-tuning starts from, not the untrained discriminator beside it."""
    from electra.checkpoint import load_checkpoint
    from electra.finetune import load_pretrained
    from electra.pretrain import PretrainConfig
    from electra.pretrain import run as pretrain

    cfg = PretrainConfig(data=str(tiny_data), out=str(tmp_path / "mlm"), preset="tiny", objective="mlm")
    pretrain(dataclasses.replace(cfg, batch_size=8, max_steps=2, eval_every=100), quiet=True)
    encoder, tokenizer_folder = load_pretrained(tmp_path / "mlm")
    model = load_checkpoint(tmp_path / "mlm").model
    ours = encoder.transformer.state_dict()
    for name, value in model.generator.state_dict().items():
        assert torch.equal(ours[name], value), name
    assert any(not torch.equal(ours[k], v) for k, v in model.discriminator.state_dict().items())
    assert (tokenizer_folder / "tokenizer.json").is_file()


@pytest.mark.parametrize("kind", ["single-label", "multi-label", "regression"])
def test_deterministic_fine_tuning_calls_nothing_a_gpu_refuses_in_that_mode(sentiment_tokenizer_dir, tmp_path, kind):
    """Training steps and evaluation under --deterministic: on a GPU torch would stop at an
    operation without a deterministic CUDA kernel."""
    from tests.conftest import refused_on_cuda_when_deterministic

    root, settings = sentiment_tokenizer_dir, {}
    data = _sentiment(tmp_path / "data", n_train=32, n_dev=16, multi_label=kind == "multi-label")
    if kind == "multi-label":
        settings = dict(multi_label=True, label_separator="|")
    if kind == "regression":
        rows = [f"{'good ' * (i % 5 + 1)}film,{(i % 5) * 1.25:.2f}" for i in range(32)]
        (data / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
        (data / "dev.csv").write_text("text,label\n" + "\n".join(rows[:16]) + "\n")
    cfg = FinetuneConfig(model=str(root / "model"), task="csv", data=str(data), out=str(tmp_path / "o"), epochs=1)
    with refused_on_cuda_when_deterministic() as refused:
        run(dataclasses.replace(cfg, deterministic=True, **settings), quiet=True)
    assert refused == []


def test_evaluate_scores_a_folder_as_finetune_scored_its_seed(sentiment_tokenizer_dir, tmp_path, cli):
    from electra.evaluate import run as evaluate_folder

    root = sentiment_tokenizer_dir
    cfg = FinetuneConfig(model=str(root / "model"), task="csv", data=str(root / "data"), out=str(tmp_path / "clf"))
    results = run(dataclasses.replace(cfg, epochs=1), quiet=True)
    shutil.copytree(root / "data", tmp_path / "dev-only")
    (tmp_path / "dev-only" / "train.csv").unlink()  # evaluation reads no training file
    got = evaluate_folder(tmp_path / "clf", "csv", str(tmp_path / "dev-only"))
    assert got["metrics"] == {"dev": results["seeds"][0]["metrics"]["dev"]} and got["examples"] == {"dev": 60}

    out = tmp_path / "scores.json"
    cmd = ["evaluate", "--model", str(tmp_path / "clf"), "--task", "csv"]
    listed = tmp_path / "predictions.jsonl"
    args = ["--data", str(tmp_path / "dev-only"), "--output", str(out), "--predictions", str(listed)]
    result = cli(*cmd, *args, "--per-label")
    assert result.returncode == 0, result.stderr
    accuracy = results["seeds"][0]["metrics"]["dev"]["accuracy"]
    assert f"csv dev (60 examples): accuracy {accuracy:.4f}" in result.stdout
    per_label = json.loads(out.read_text())["per_label"]["dev"]  # the positive label's F1 is the task's F1
    assert per_label["pos"]["f1"] == pytest.approx(got["metrics"]["dev"]["f1"])
    assert per_label["neg"]["support"] + per_label["pos"]["support"] == 60
    assert f"  pos       {per_label['pos']['precision']:.4f}  {per_label['pos']['recall']:.4f}" in result.stdout
    assert "csv dev: 100%|" in result.stderr and "| 60/60 " in result.stderr  # a bar, in a log file too
    assert json.loads(out.read_text())["metrics"] == got["metrics"]
    records = [json.loads(line) for line in listed.read_text().splitlines()]  # each example, gold and predicted
    dev_rows = (tmp_path / "dev-only" / "dev.csv").read_text().splitlines()[1:]
    assert [(r["split"], r["text"], r["label"]) for r in records] == [("dev", *row.split(",")) for row in dev_rows]
    assert sum(r["label"] == r["prediction"] for r in records) / 60 == accuracy
    for where, message in [
        (["--output", tmp_path / "dev-only" / "dev.csv"], "is inside the --data"),  # the dev set it scores
        (["--predictions", tmp_path / "clf" / "config.json"], "is inside the --model"),
        (["--output", out, "--predictions", out], "--output and --predictions name the same file"),
    ]:
        result = cli(*cmd, "--data", tmp_path / "dev-only", *where)
        assert result.returncode == 2 and message in result.stderr
    assert (tmp_path / "dev-only" / "dev.csv").read_text().splitlines()[1:] == dev_rows
    renamed = tmp_path / "renamed"  # columns named at fine-tuning are evaluate's defaults
    renamed.mkdir()
    (renamed / "dev.csv").write_text("\n".join(["review,sentiment", *dev_rows]) + "\n")
    saved = (tmp_path / "clf" / "results.json").read_text()
    recorded = json.loads(saved)
    recorded["config"] |= {"text_field": "review", "label_field": "sentiment"}
    (tmp_path / "clf" / "results.json").write_text(json.dumps(recorded))
    assert evaluate_folder(tmp_path / "clf", "csv", str(renamed))["metrics"] == got["metrics"]
    labelled = cli("predict", "--model", tmp_path / "clf", "--input", renamed / "dev.csv")  # predict's too
    assert labelled.returncode == 0 and [json.loads(x)["text"] for x in labelled.stdout.splitlines()] == [
        r.split(",")[0] for r in dev_rows
    ]
    recorded["config"]["pair_field"] = "second"  # as if fine-tuned on pairs: single texts are named
    (tmp_path / "clf" / "results.json").write_text(json.dumps(recorded))
    lone = cli("predict", "--model", tmp_path / "clf", input="a good film\na bad film\n")
    assert lone.returncode == 0 and "2 texts read without a second text, though" in lone.stderr
    assert "was fine-tuned on pairs (csv): see --pair-field" in lone.stderr
    (tmp_path / "clf" / "results.json").write_text(saved)
    assert "second text" not in cli("predict", "--model", tmp_path / "clf", input="a film\n").stderr
    for command, option in [
        (cmd, ["--null-threshold", "1"]),
        (["finetune", "--model", root / "model"], ["--doc-stride", "64"]),
    ]:
        result = cli(*command, "--task", "csv", "--data", renamed, "--out", tmp_path / "o", *option)
        assert result.returncode == 2 and f"{option[0]} is for --task squad" in result.stderr  # not ignored
    result = cli(*cmd, "--task", "sst2", "--data", renamed, "--text-field", "review")
    assert result.returncode == 2 and "--text-field is for --task csv, not sst2; drop it" in result.stderr

    # data labelled otherwise, a split it lacks, a head the task cannot use: refused with the reason
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "dev.csv").write_text("text,label\na good film,good\na bad film,bad\n")
    result = cli(*cmd, "--data", tmp_path / "other")
    assert result.returncode == 2 and "(neg, pos) do not name the data's (bad, good)" in result.stderr
    (tmp_path / "other" / "dev.csv").write_text("text,label\na good film,1\na bad film,0\n")  # not read by position
    result = cli(*cmd, "--data", tmp_path / "other")
    assert result.returncode == 2 and "(neg, pos) do not name the data's (0, 1)" in result.stderr
    result = cli(*cmd, "--data", tmp_path / "dev-only", "--split", "test")
    assert result.returncode == 2 and "has no labelled 'test' split for csv; it has dev" in result.stderr
    with pytest.raises(ValueError, match="fine-tuned for another kind of task than this one \\(ElectraForQuestion"):
        evaluate_folder(tmp_path / "clf", "squad", str(tmp_path / "dev-only"))
    from electra import hf
    from electra.model import SequenceClassifier

    encoder = hf.load_encoder(root / "model")  # three outputs: one that no SST-2 label names would score as wrong
    three = SequenceClassifier(encoder.cfg, 3, encoder=encoder)
    hf.export_sequence_classifier(three, tmp_path / "three", {i: f"LABEL_{i}" for i in range(3)}, root / "model")
    (tmp_path / "sst").mkdir()
    (tmp_path / "sst" / "dev.tsv").write_text("sentence\tlabel\na good film\t1\na bad film\t0\n")
    with pytest.raises(TaskError, match="three has 3 outputs; sst2 has 2 labels \\(0, 1\\): point at a model"):
        evaluate_folder(tmp_path / "three", "sst2", str(tmp_path / "sst"))


def test_json_numbers_that_are_equal_are_one_label(tmp_path):
    from electra.tasks import read_table

    (tmp_path / "d.jsonl").write_text("".join(f'{{"text": "t", "label": {y}}}\n' for y in (1, 1.0, 0, 0.0, 2.5)))
    assert [e.label for e in read_table(tmp_path / "d.jsonl", "text", None, "label")] == ["1", "1", "0", "0", 2.5]


def test_files_saved_with_a_byte_order_mark_read_as_without(tmp_path):
    from electra.tasks import read_conll

    bom = b"\xef\xbb\xbf"
    (tmp_path / "d.jsonl").write_bytes(bom + b'{"text": "a film", "label": "pos"}\n')
    assert read_table(tmp_path / "d.jsonl", "text", None, "label") == [Example("a film", None, "pos")]
    (tmp_path / "train.txt").write_bytes(bom + b"Ann B-PER\nran O\n")
    assert read_conll(tmp_path / "train.txt") == [Example(["Ann", "ran"], None, ["B-PER", "O"])]
    (tmp_path / "tabs.txt").write_text("New York\tNNP\tB-LOC\nis\tVBZ\tO \n\nok O\n")  # a token with a space
    assert read_conll(tmp_path / "tabs.txt") == [
        Example(["New York", "is"], None, ["B-LOC", "O"]),
        Example(["ok"], None, ["O"]),
    ]
    with pytest.raises(TaskError, match="train.txt is a file; point --data at the task's GLUE folder"):
        glue_folder(tmp_path / "train.txt", GLUE["sst2"])


def test_predict_reads_tables_as_finetune_does(tmp_path):
    """GLUE's TSVs are unquoted: a leading quote is text, and must not swallow the rows after it."""
    from electra.predict import NO_ID, Inputs
    from electra.tasks import read_table

    rows = ["id\ttext\tpair", '1\t"Quoted start\tsecond', '2\tplain "mid" quote\tx', "", '3\tlast\t"open']
    (tmp_path / "in.tsv").write_text("\n".join(rows) + "\n")
    texts = list(Inputs(tmp_path / "in.tsv", "text", "pair"))
    assert texts == [('"Quoted start', "second"), ('plain "mid" quote', "x"), ("last", '"open')]
    assert texts == [(e.text, e.pair) for e in read_table(tmp_path / "in.tsv", "text", "pair", None)]
    (tmp_path / "in.csv").write_text('text,pair\n"a, quoted",b\n')
    assert list(Inputs(tmp_path / "in.csv", "text", "pair")) == [("a, quoted", "b")]
    shutil.copy(tmp_path / "in.csv", tmp_path / "IN.CSV")  # as some spreadsheets name their exports
    assert list(Inputs(tmp_path / "IN.CSV", "text", "pair")) == [("a, quoted", "b")]
    (tmp_path / "two.csv").write_text("text,pair\na,b\nc,\n")  # a "pair" column is read as .jsonl's "pair" is
    assert list(Inputs(tmp_path / "two.csv")) == [("a", "b"), ("c", None)]  # an empty cell: a single text
    assert list(Inputs(tmp_path / "two.csv", "pair")) == [("b", None), ("", None)]  # named otherwise: not read twice
    (tmp_path / "short.tsv").write_text("text\tpair\nonly\n")
    with pytest.raises(TaskError, match="short.tsv:2 has 1 columns, expected at least 2"):
        list(Inputs(tmp_path / "short.tsv", "text", "pair"))
    with pytest.raises(IsADirectoryError, match="is a folder; name the file to read"):
        Inputs(tmp_path)
    (tmp_path / "in.jsonl").write_text('{"text": "a", "pair": null}\n{"text": "b", "pair": "c"}\n')
    assert list(Inputs(tmp_path / "in.jsonl", "text", "pair")) == [("a", None), ("b", "c")]  # null: a single text
    assert list(Inputs(tmp_path / "in.jsonl")) == [("a", None), ("b", "c")]  # a record's "pair", as serve reads it
    (tmp_path / "odd.jsonl").write_text('{"text": "a", "pair": 3}\n')
    with pytest.raises(TaskError, match="odd.jsonl:1: 'pair' is 3, not a text string"):
        list(Inputs(tmp_path / "odd.jsonl"))
    (tmp_path / "q.csv").write_text('text\n"an unclosed quote\nthe rest\n')
    with pytest.raises(TaskError, match="q.csv:2: a quoted field opened on this row never closes"):
        list(Inputs(tmp_path / "q.csv"))
    # each input's id: --id-field's, else an "id" field or column where there is one
    assert [t.id for t in Inputs(tmp_path / "in.tsv", "text", "pair")] == ["1", "2", "3"]
    assert [t.id for t in Inputs(tmp_path / "in.tsv", "text", id_field="pair")] == ["second", "x", '"open']
    assert [t.id for t in Inputs(tmp_path / "in.csv", "text")] == [NO_ID]
    (tmp_path / "short_id.tsv").write_text("text\tid\nfoo\t5\nbar\n")  # the default id column is optional
    assert [(t, t.id) for t in Inputs(tmp_path / "short_id.tsv")] == [(("foo", None), "5"), (("bar", None), NO_ID)]
    with pytest.raises(
        TaskError, match="in.csv has no column 'key' \\(columns: text, pair\\); name the id column with --id-f"
    ):
        list(Inputs(tmp_path / "in.csv", "text", id_field="key"))
    (tmp_path / "ids.jsonl").write_text('{"text": "a", "id": 7}\n{"text": "b"}\n')
    assert [(t, t.id) for t in Inputs(tmp_path / "ids.jsonl")] == [(("a", None), 7), (("b", None), NO_ID)]
    with pytest.raises(
        TaskError,
        match="ids.jsonl:2 has no field 'id' \\(fields: text\\); name the id field with --id-field \\(now 'id'\\)",
    ):
        list(Inputs(tmp_path / "ids.jsonl", id_field="id"))
    with pytest.raises(ValueError, match="read as plain lines, which have no fields"):
        Inputs(tmp_path / "in.txt", id_field="id")
    from electra.predict import Text, jsonl_line

    assert jsonl_line(Text("a", None, 7), {"label": "pos"}) == '{"id": 7, "text": "a", "label": "pos"}\n'
    assert jsonl_line(Text("a", None, None), {}) == '{"id": null, "text": "a"}\n'  # a null id is kept: it joins
    assert jsonl_line(("a", "b"), {"label": "pos"}) == '{"text": ["a", "b"], "label": "pos"}\n'
    (tmp_path / "d.jsonl").write_text('{"text": "a", "pair": null, "label": "x"}\n')
    with pytest.raises(TaskError, match="d.jsonl:1: 'pair' is None, not a text string"):  # training data: pairs
        read_table(tmp_path / "d.jsonl", "text", "pair", "label")


def test_token_classification_end_to_end(tokenizer_dir, pretrained, tmp_path):
    transformers = pytest.importorskip("transformers")
    data = tmp_path / "ner"
    data.mkdir()
    rows = [
        ("the", "O"),
        ("acting", "B-ASPECT"),
        ("and", "O"),
        ("the", "O"),
        ("music", "B-ASPECT"),
        ("plot", "I-ASPECT"),
        ("was", "O"),
        ("great", "O"),
    ]
    block = "\n".join(f"{w} {t}" for w, t in rows) + "\n\n"
    (data / "train.txt").write_text(block * 20)
    (data / "dev.txt").write_text(block * 2)
    (data / "test.txt").write_text(block * 2)  # labelled, as CoNLL-2003's test set: scored, never chosen on
    results = run(
        FinetuneConfig(model=str(pretrained), task="ner", data=str(data), out=str(tmp_path / "tagger"), epochs=1),
        quiet=True,
    )
    assert set(results["median"]["dev"]) == {"precision", "recall", "f1"} and results["main_metric"] == "dev/f1"
    assert results["median"]["test"] == results["median"]["dev"]  # the same sentences, scored alike
    assert results["labels"] == ["O", "B-ASPECT", "I-ASPECT"]
    model = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path / "tagger")
    assert model.config.id2label[1] == "B-ASPECT"
    from electra.evaluate import run as evaluate_folder  # the tags name the data's: scored as in fine-tuning

    (tmp_path / "tagger" / "results.json").unlink()
    scored = evaluate_folder(tmp_path / "tagger", "ner", str(data), records=True)
    assert scored["metrics"] == results["median"]
    (aspect,) = scored["per_label"]["dev"].items()  # one entity type: its scores are the tagger's
    assert aspect[0] == "ASPECT" and aspect[1]["f1"] == pytest.approx(scored["metrics"]["dev"]["f1"])
    from electra.predict import Predictor

    with pytest.raises(ValueError, match="--all-scores is for classifiers' labels; .* is a token model: drop it"):
        Predictor(tmp_path / "tagger", device="cpu", all_scores=True)
    first = scored["records"]["dev"][0]  # a tag per word, gold and predicted
    assert first["words"] == [w for w, _ in rows] and first["label"] == [t for _, t in rows]
    assert len(first["prediction"]) == len(rows) and set(first["prediction"]) <= {"O", "B-ASPECT", "I-ASPECT"}
    (data / "test.txt").write_text("\n".join(w for w, _ in rows) + "\n\n")  # tokens without tags: not scored
    scored = evaluate_folder(tmp_path / "tagger", "ner", str(data))
    assert list(scored["metrics"]) == ["dev"]


def test_predict_tags_entities_as_the_token_classification_pipeline_does(tokenizer, tokenizer_dir, tmp_path, cli):
    transformers = pytest.importorskip("transformers")
    from electra.model import TokenClassifier
    from tests.conftest import perturb

    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "MISC"]  # MISC: a tag without B-/I- continues its type
    torch.manual_seed(0)
    model = perturb(TokenClassifier(tiny(vocab_size=tokenizer.get_vocab_size()).discriminator, len(tags)))
    with torch.no_grad():  # large label weights: the tags change from word to word, so groups form and break
        model.out.weight.normal_(0.0, 1.0)
        model.out.bias.zero_()
    hf.export_token_classifier(model, tmp_path / "tagger", dict(enumerate(tags)), tokenizer_dir=tokenizer_dir)
    texts = [
        "The Movie was GREAT, and a lot of fun!",
        "Ünïcode café — naïve 🙂 story’s end",  # accents, a dash, an emoji ([UNK]), split words
        "i loved the acting and the music of Paris and New York",
        "x",
    ]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    out = tmp_path / "out.jsonl"
    tag = ["predict", "--model", str(tmp_path / "tagger"), "--batch-size", "3"]
    result = cli(*tag, "--input", tmp_path / "in.txt", "--output", out)
    assert result.returncode == 0, result.stderr
    ours = [json.loads(line) for line in out.read_text().splitlines()]
    pipe = transformers.pipeline("token-classification", model=str(tmp_path / "tagger"), aggregation_strategy="first")
    assert [o["text"] for o in ours] == texts
    grouped = 0
    for o, text in zip(ours, texts, strict=True):
        theirs = pipe(text)
        assert [{k: v for k, v in e.items() if k != "score"} for e in o["entities"]] == [
            {k: v for k, v in e.items() if k != "score"} for e in theirs
        ]
        assert [e["score"] for e in o["entities"]] == pytest.approx([float(e["score"]) for e in theirs], abs=1e-5)
        grouped += sum(" " in e["word"] for e in o["entities"])
    assert grouped >= 2 and sum(len(o["entities"]) for o in ours) >= 10  # the comparison covered real grouping
    refused = cli(*tag, "--format", "tsv", "--text-field", "a", "--pair-field", "b", input="a\tb\nx\ty\n")
    assert refused.returncode == 2 and "tags single texts, not pairs" in refused.stderr

    # a text longer than the model's 128 positions: cut at them, or tagged whole in overlapping windows
    long = " ".join([texts[0], texts[2]] * 8)  # about 300 tokens
    cut = cli(*tag, input=long + "\n")
    assert cut.returncode == 0 and "1 text truncated (--stride tags them whole)" in cut.stderr
    assert json.loads(cut.stdout)["entities"][-1]["end"] < len(long) // 2
    from electra.predict import predict

    for stride in (0, 16):
        (whole,), truncated = predict(tmp_path / "tagger", [(long, None)], stride=stride)
        theirs = pipe(long, stride=stride)
        assert truncated == 0 and whole["entities"][-1]["end"] > len(long) - 10
        assert [{k: v for k, v in e.items() if k != "score"} for e in whole["entities"]] == [
            {k: v for k, v in e.items() if k != "score"} for e in theirs
        ]
        assert [e["score"] for e in whole["entities"]] == pytest.approx([float(e["score"]) for e in theirs], abs=1e-5)
    with pytest.raises(ValueError, match="stride must be 0 to 125 \\(a window holds 126 text tokens\\), got 126"):
        predict(tmp_path / "tagger", [("x", None)], stride=126)


def test_bad_task_input_is_refused_with_a_message(sentiment_tokenizer_dir, tmp_path, cli):
    root = sentiment_tokenizer_dir
    data = tmp_path / "d"
    data.mkdir()
    (data / "train.csv").write_text("text,label\na good film,pos\na bad film,neg\n")
    (data / "dev.csv").write_text("text,label\nan odd film,meh\n")
    cfg = FinetuneConfig(model=str(root / "model"), task="csv", data=str(data), out=str(tmp_path / "o"))
    unseen = "^dev example 1 \\('an odd film'\\) has label 'meh', unseen in training \\(known: neg, pos\\)$"
    with pytest.raises(TaskError, match=unseen):
        run(cfg, quiet=True)
    (data / "train.csv").write_text("text,label\na good film,4\na bad film,1\n")
    (data / "dev.csv").write_text("text,label\nan odd film,2.5\n")  # classes in train, a score in dev
    with pytest.raises(TaskError, match="label '2.5', unseen in training .*; if the labels are scores, pass --regr"):
        run(cfg, quiet=True)
    (data / "train.csv").write_text("text,label\na good film,pos\na fine film,pos\n")
    with pytest.raises(TaskError, match="train has only one label \\('pos'\\); a classifier learns to tell"):
        run(cfg, quiet=True)  # one output would be exported as a regression
    from electra.finetune import label_notes, load_task

    (data / "train.csv").write_text("text,label\na good film,pos\na fine film,pos\na bad film,neg\nok,Pos \nso,3\n")
    task, train, _ = load_task(cfg)
    assert label_notes(task, train) == [  # each a class of its own, as written: said, not refused
        "labels 'Pos' (1 example), 'pos' (2 examples) differ only in case or spacing and are separate classes; "
        "if they are one, write them alike",
        "labels mix numbers ('3') with texts; each is a class of its own",
    ]
    sst = tmp_path / "sst"  # a GLUE task knows its labels: its data may still hold only one of them
    sst.mkdir()
    (sst / "train.tsv").write_text("sentence\tlabel\na good film\t1\na fine film\t1\n")
    (sst / "dev.tsv").write_text("sentence\tlabel\nan odd film\t0\n")
    glue_cfg = FinetuneConfig(model=str(root / "model"), task="sst2", data=str(sst), out=str(tmp_path / "o"))
    with pytest.raises(TaskError, match=r"train has only one of sst2's labels \('1'\); .* add examples of 0$"):
        run(glue_cfg, quiet=True)
    (sst / "train.tsv").write_text("sentence\tlabel\na good film\t1\na bad\tfilm\t0\n")  # a stray tab
    with pytest.raises(TaskError, match=r"train.tsv:3 has 3 columns, its header 2: a field holds a tab; remove"):
        run(glue_cfg, quiet=True)  # was: "train example 2 ('a bad') has label 'film'"
    (sst / "train.tsv").unlink()
    (sst / "train.tsv").mkdir()  # a folder where the file should be: said so, not "[Errno 21] Is a directory"
    folder = cli("finetune", "--model", root / "model", "--task", "sst2", "--data", sst, "--out", tmp_path / "o")
    assert folder.returncode == 2 and f"error: {sst / 'train.tsv'} is a folder, not a file" in folder.stderr
    from electra.cli import _plain

    renamed = OSError(errno.EISDIR, "Is a directory", "/x/.plots.png.tmp-1", None, "/x/plots.png")
    assert _plain(renamed) == "/x/plots.png is a folder, not a file: name the file"  # a rename: its destination
    (data / "train.csv").write_text("text,label\na good film,pos\na bad film,neg\n")
    (data / "dev.csv").write_text("sentence,label\nan odd film,pos\n")
    with pytest.raises(TaskError, match="has no column 'text' .*; name the text column with --text-field"):
        run(cfg, quiet=True)
    (data / "dev.csv").write_text("text,stars\nan odd film,pos\n")
    with pytest.raises(TaskError, match="has no column 'label' .*; name the label column with --label-field"):
        run(cfg, quiet=True)
    (data / "dev.csv").write_text("text,label\n")  # a header alone: no split to score, not a score of 0
    with pytest.raises(TaskError, match="has no dev examples for csv \\(an empty file\\?\\)"):
        run(cfg, quiet=True)
    (data / "dev.csv").write_text("text,label\nthis film, honestly, was great,pos\n")  # not a class 'honestly'
    with pytest.raises(TaskError, match="dev.csv:2 has 4 columns, its header 2: a field holds a comma; quote"):
        run(cfg, quiet=True)
    (data / "dev.csv").write_text("text,label\nan odd film,pos\nno label here, \n")  # not a third class
    with pytest.raises(TaskError, match="dev.csv:3 has an empty label; label the row or remove it"):
        run(cfg, quiet=True)
    (data / "dev.csv").write_text('text,label\nan odd film,pos\n"an unclosed quote,neg\nand the rest,pos\n')
    with pytest.raises(TaskError, match="dev.csv:3: a quoted field opened on this row never closes"):
        run(cfg, quiet=True)  # not one example holding the rest of the file
    (data / "dev.csv").unlink()
    for label, shown in (("null", "null"), ('""', '""')):
        (data / "dev.jsonl").write_text(f'{{"text": "fine", "label": "pos"}}\n{{"text": "odd", "label": {label}}}\n')
        with pytest.raises(TaskError, match=f"dev.jsonl:2: 'label' is {shown}; label the record or remove it"):
            run(cfg, quiet=True)
    (data / "dev.jsonl").unlink()
    (data / "dev.csv").write_text("text,label\nan odd film,pos\n")
    (data / "sst").mkdir()
    (data / "sst" / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t2\n")
    (data / "sst" / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    with pytest.raises(TaskError, match="label '2', not one of sst2's labels \\(known: 0, 1\\)"):
        run(dataclasses.replace(cfg, task="sst2", data=str(data / "sst")), quiet=True)
    shutil.rmtree(data / "sst")
    result = cli("finetune", "--model", root / "model", "--task", "sst2", "--data", data, "--out", tmp_path / "o")
    assert result.returncode == 2 and "has no train.tsv or dev.tsv for sst2" in result.stderr
    assert not (tmp_path / "o").exists()
    long_text = "text,label\n" + "good " * 300 + ",pos\nbad,neg\n"
    (data / "train.csv").write_text(long_text)
    (data / "dev.csv").write_text("text,label\nbad,neg\n")
    with pytest.raises(TaskError, match="longer than --max-length 128"):
        run(
            FinetuneConfig(
                model=str(root / "model"), task="csv", data=str(data), out=str(tmp_path / "o"), truncate=False
            ),
            quiet=True,
        )
    # in a sampled subset the message still names the example's place in the file (the 7th row)
    rows = [f"film {i},{'pos' if i % 2 else 'neg'}" if i != 7 else "good " * 300 + ",pos" for i in range(1, 11)]
    (data / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(TaskError, match="train example 7 \\(counted from 1 in its file\\) is longer"):
        run(
            FinetuneConfig(
                model=str(root / "model"),
                task="csv",
                data=str(data),
                out=str(tmp_path / "o"),
                truncate=False,
                max_train_examples=9,  # seed 0 draws the 7th row first
            ),
            quiet=True,
        )
    result = cli("predict", "--model", root / "model", input="hello\n")
    assert result.returncode == 2
    assert "not a fine-tuned model (ElectraForSequenceClassification, ElectraForTokenClassification" in result.stderr

    def refused(message, **kw):
        with pytest.raises((ValueError, OSError), match=message):
            run(FinetuneConfig(**{"model": str(root / "model"), "task": "csv", "data": str(data), **kw}), quiet=True)

    refused("epochs must be a whole number of at least 1, got 0", out=str(tmp_path / "o"), epochs=0)  # not "3"
    refused("batch-size must be a whole number of at least 1", out=str(tmp_path / "o"), batch_size=0)
    refused("lr must be a finite number above 0", out=str(tmp_path / "o"), lr=0.0)
    refused("max-train-examples must be a whole number of at least 1", out=str(tmp_path / "o"), max_train_examples=0)
    refused("layer-decay must be a number in \\(0, 1\\]", out=str(tmp_path / "o"), layer_decay=-1.0)
    refused("seeds must be a whole number from 1 to 1000", out=str(tmp_path / "o"), seeds=10**20)  # a traceback, or GBs
    refused("seed must be a whole number from 0 to 4294967295", out=str(tmp_path / "o"), seed=-1)
    from electra.parallel import dropout_seed

    torch.manual_seed(dropout_seed(2**32 - 1, 7, 10**6))  # the largest seed reseeds data-parallel steps too
    (tmp_path / "afile").write_text("x")
    refused("afile exists and is not a folder", out=str(tmp_path / "afile"))  # before any training
    with pytest.raises(OSError, match="would replace that input"):
        run(FinetuneConfig(model=str(root / "model"), task="csv", data=str(data), out=str(data)), overwrite=True)
    assert sorted(f.name for f in data.iterdir()) == ["dev.csv", "train.csv"]
    (data / "train.csv").write_bytes("text,label\ncaf\xe9 film,pos\n".encode("latin-1"))
    refused("train.csv is not UTF-8 text", out=str(tmp_path / "o"))
    (data / "train.csv").unlink()
    (data / "train.jsonl").write_text('{"text": "a film", "label": "pos"}\n{"text": 5, "label": "neg"}\n')
    refused("train.jsonl:2: 'text' is 5, not a text string", out=str(tmp_path / "o"))
    (data / "train.jsonl").write_text('{"text": "a film", "label": 1.5}\n{"text": "b", "label": "n/a"}\n')
    (data / "dev.csv").write_text("text,label\nbad,2.5\n")
    refused("train example 2 has score 'n/a', not a finite number", out=str(tmp_path / "o"), regression=True)
    (data / "train.jsonl").write_text('{"text": "a film", "label": 1.5}\n{"text": "b", "label": "inf"}\n')
    refused("train example 2 has score 'inf', not a finite number", out=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_a_labelled_test_file_is_scored_beside_dev_and_an_unlabelled_one_is_not(sentiment_tokenizer_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sentiment_tokenizer_dir / "data", data)
    shutil.copy(data / "dev.csv", data / "test.csv")
    cfg = FinetuneConfig(model=str(sentiment_tokenizer_dir / "model"), task="csv", data=str(data), epochs=1, out="")
    results = run(dataclasses.replace(cfg, out=str(tmp_path / "a")), quiet=True)
    assert results["median"]["test"] == results["median"]["dev"] and results["main_metric"] == "dev/accuracy"
    assert results["examples"] == {"train": 240, "dev": 60, "test": 60}
    (data / "test.csv").write_text("text\na film\n")  # no labels: not scored, and said so
    results = run(dataclasses.replace(cfg, out=str(tmp_path / "b")), quiet=True)
    assert list(results["median"]) == ["dev"]


def test_regression_is_detected_for_numeric_labels(sentiment_tokenizer_dir, tmp_path):
    root = sentiment_tokenizer_dir
    data = tmp_path / "reg"
    data.mkdir()
    rows = [f"{'good ' * (i % 5 + 1)}film,{(i % 5) * 1.25:.2f}" for i in range(60)]
    (data / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    (data / "dev.csv").write_text("text,label\n" + "\n".join(rows[:15]) + "\n")
    results = run(
        FinetuneConfig(model=str(root / "model"), task="csv", data=str(data), out=str(tmp_path / "o"), epochs=1),
        quiet=True,
    )
    assert set(results["median"]["dev"]) == {"pearson", "spearman"}
    assert results["labels"] == ["score"]
    assert not math.isnan(results["median"]["dev"]["pearson"])


def test_glue_through_datasets_matches_the_tsv_labels(sentiment_tokenizer_dir, tmp_path):
    datasets = pytest.importorskip("datasets")
    from electra.tasks import glue_from_datasets

    rte = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"sentence1": ["a b", "c d"], "sentence2": ["a", "e"], "label": [0, 1]}
            ),
            "validation": datasets.Dataset.from_dict({"sentence1": ["f"], "sentence2": ["g"], "label": [1]}),
        }
    )
    rte.save_to_disk(str(tmp_path / "rte"))
    train, devs = glue_from_datasets(GLUE["rte"], str(tmp_path / "rte"))
    assert [e.label for e in train] == ["entailment", "not_entailment"] and train[0].pair == "a"
    assert list(devs) == ["dev"] and devs["dev"][0].label == "not_entailment"

    rows = (sentiment_tokenizer_dir / "data" / "train.csv").read_text().splitlines()[1:]
    sst2 = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {"sentence": [r.rsplit(",", 1)[0] for r in part], "label": [int(r.endswith("pos")) for r in part]}
            )
            for split, part in (("train", rows[:160]), ("validation", rows[160:]))
        }
    )
    test = [r.rsplit(",", 1)[0] for r in rows[:30]]  # the hub's test splits: label -1, an idx column
    sst2["test"] = datasets.Dataset.from_dict({"sentence": test, "label": [-1] * 30, "idx": list(range(100, 130))})
    sst2.save_to_disk(str(tmp_path / "sst2"))
    results = run(
        FinetuneConfig(
            model=str(sentiment_tokenizer_dir / "model"),
            task="sst2",
            data=str(tmp_path / "sst2"),
            out=str(tmp_path / "clf"),
            epochs=1,
        ),
        quiet=True,
    )
    assert results["labels"] == ["0", "1"] and results["label_names"] == ["NEGATIVE", "POSITIVE"]
    assert results["examples"] == {"train": 160, "dev": 80}
    from electra.predict import predict  # GLUE writes SST-2's labels 0 and 1, the folder names them

    labelled, _ = predict(tmp_path / "clf", [(t, None) for t in test])
    codes = [str(["NEGATIVE", "POSITIVE"].index(r["label"])) for r in labelled]
    assert results["test_predictions"] == ["SST-2.tsv"]
    submitted = (tmp_path / "clf" / "SST-2.tsv").read_text().splitlines()
    assert submitted == ["index\tprediction", *(f"{100 + i}\t{c}" for i, c in enumerate(codes))]


@pytest.mark.parametrize("kind", ["classification", "multilabel", "regression", "tagging", "span"])
def test_slices_of_a_batch_add_up_to_its_mean_loss(kind):
    """What data-parallel fine-tuning relies on: each process's slice, divided by the whole
    batch's terms, sums to the single-process loss (tagging: a mean over labelled words)."""
    from electra.finetune import _loss, _loss_terms
    from electra.tasks import Task

    g = torch.Generator().manual_seed(0)
    task = Task("t", kind, ("accuracy",))
    B, T = 7, 9
    if kind == "classification":
        logits, labels = torch.randn(B, 3, generator=g), torch.randint(0, 3, (B,), generator=g)
    elif kind == "regression":
        logits, labels = torch.randn(B, 1, generator=g), torch.rand(B, generator=g) * 5
    elif kind == "multilabel":
        logits, labels = torch.randn(B, 4, generator=g), (torch.rand(B, 4, generator=g) < 0.3).float()
    elif kind == "tagging":  # rows with different numbers of labelled words
        logits, labels = torch.randn(B, T, 4, generator=g), torch.randint(0, 4, (B, T), generator=g)
        labels[torch.rand(B, T, generator=g) < 0.4] = -100
    else:
        logits, labels = torch.randn(B, T, 2, generator=g), torch.randint(0, T, (B, 2), generator=g)
    whole = _loss(task, logits, labels)
    total = _loss_terms(task, labels)
    parts = [_loss(task, logits[r::3], labels[r::3], total) for r in range(3)]
    torch.testing.assert_close(sum(parts), whole)


def test_data_parallel_dropout_is_a_function_of_seed_rank_and_step():
    """Each process draws its own masks (one seed would repeat a process's masks on another's rows)
    and a resumed seed draws the ones an uninterrupted run drew, with no random state saved."""
    from electra.parallel import dropout_seed

    seeds = {dropout_seed(seed, rank, step) for seed in range(3) for rank in range(4) for step in range(1000)}
    assert len(seeds) == 3 * 4 * 1000
    # a pure function of its arguments, the same in every process and every interpreter (no hash())
    assert dropout_seed(2, 1, 517) == 2_000_013_000_538
    assert dropout_seed(2**32 - 1, 7, 123) == 6_125_067_704_960_955_079  # wrapped into torch's 64-bit seeds


def test_activation_checkpointing_fine_tunes_to_the_same_weights(sentiment_tokenizer_dir, tmp_path, monkeypatch):
    from electra import model as model_module

    root = sentiment_tokenizer_dir
    cfg = FinetuneConfig(model=str(root / "model"), task="csv", data=str(root / "data"), out="", epochs=1)
    plain = run(dataclasses.replace(cfg, out=str(tmp_path / "a")), quiet=True)
    recomputed = []  # each block run under torch.utils.checkpoint: the setting reached the model
    original = model_module.checkpoint
    monkeypatch.setattr(model_module, "checkpoint", lambda *a, **k: recomputed.append(1) or original(*a, **k))
    ckpt = run(dataclasses.replace(cfg, out=str(tmp_path / "b"), activation_checkpointing=True), quiet=True)
    assert len(recomputed) == 8 * 2  # 8 training steps (240 examples, 32 a batch) x 2 blocks
    assert ckpt["seeds"] == plain["seeds"]  # dropout on: the recomputation replays its masks
    from safetensors.torch import load_file

    a, b = (load_file(tmp_path / n / "model.safetensors") for n in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_entities_opened_by_inside_tags_are_noted(tmp_path, capsys):
    from electra.finetune import load_task

    (tmp_path / "dev.txt").write_text("Ann B-PER\nran O\n")
    iob1 = "Ann B-PER\nLee I-PER\nran O\n\nin O\nOslo I-LOC\nNorway I-LOC\nand O\nBo I-PER\n"  # Oslo, Bo: I- opens
    (tmp_path / "train.txt").write_text(iob1)
    cfg = FinetuneConfig(model="m", task="ner", data=str(tmp_path), out="o")
    load_task(cfg)
    assert "note: 2 entities in train.txt begin with an I- tag (IOB1 tagging, or slips)" in capsys.readouterr().err
    (tmp_path / "train.txt").write_text("Ann B-PER\nLee I-PER\nran O\n\nin O\nOslo B-LOC\nBo B-PER\n")  # BIO
    load_task(cfg)
    assert capsys.readouterr().err == ""


def test_fine_tuning_an_electra_generator_gets_a_note(tmp_path, capsys):
    from electra.finetune import load_pretrained

    model = Electra(tiny())
    hf.export_discriminator(model, tmp_path / "disc")
    hf.export_generator(model, tmp_path / "mlm")  # a masked LM: a generator, or an MLM baseline's network
    capsys.readouterr()
    for folder in ("disc", "mlm"):
        load_pretrained(tmp_path / folder)
        assert "generator" not in capsys.readouterr().err
    (tmp_path / "mlm" / "README.md").write_text("---\ntags: [electra]\n---\n# ELECTRA generator\n")  # our card's
    encoder, _ = load_pretrained(tmp_path / "mlm")
    assert "mlm is an ELECTRA generator (ElectraForMaskedLM)" in capsys.readouterr().err
    assert encoder.cfg.hidden_size == tiny().generator.hidden_size  # still fine-tuned, as asked
    (tmp_path / "mlm" / "README.md").unlink()
    (tmp_path / "mlm").rename(tmp_path / "electra-small-generator")  # a released one, by its name
    load_pretrained(tmp_path / "electra-small-generator")
    assert "electra-small-generator is an ELECTRA generator" in capsys.readouterr().err


def test_a_process_waits_for_the_seeds_another_one_trains(tmp_path, capsys):
    import threading

    from electra.finetune import _keep_seed, _wait_for_seeds

    key = {"task": "sst2", "lr": 1e-4}
    weights = {"w": torch.zeros(2)}
    _keep_seed(tmp_path, 0, key, {"dev": {"accuracy": 0.5}}, weights, [])
    later = threading.Timer(0.3, _keep_seed, (tmp_path, 2, key, {"dev": {"accuracy": 0.75}}, weights, []))
    later.start()  # as another process finishes its seed
    runs = []
    waiting = threading.Thread(
        target=lambda: runs.extend(_wait_for_seeds(tmp_path, [0, 2], key, False, poll_s=0.05)), daemon=True
    )
    waiting.start()
    waiting.join(timeout=20)
    assert not waiting.is_alive(), "still waiting after every seed was there"
    assert [(r["seed"], r["metrics"]["dev"]["accuracy"]) for r in runs] == [(0, 0.5), (2, 0.75)]
    assert "waiting for seed 2 from the other processes" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# From a mutation review of fine-tuning: batching, padding, pair truncation, gradients
# ---------------------------------------------------------------------------------------


def test_training_batches_hold_neighbouring_lengths_but_come_in_a_shuffled_order():
    """Training groups rows of like length (little padding), then shuffles the batches: batches
    that came shortest first would teach the long examples only at each epoch's end."""
    import numpy as np

    from electra.finetune import Encoded, batches

    lengths = list(range(3, 43))  # 40 rows, each of its own length: one chunk of 50 batches
    data = Encoded([np.full(n, 7, dtype=np.int32) for n in lengths], [np.zeros(n, np.int8) for n in lengths], [0] * 40)
    got = list(batches(data, 4, seed=0))
    assert sorted(i for group, *_ in got for i in group) == list(range(40))  # every row once
    for group, *_ in got:
        assert max(lengths[i] for i in group) - min(lengths[i] for i in group) == 3  # 4 neighbouring lengths
    widths = [ids.shape[1] for _, ids, *_ in got]
    assert widths != sorted(widths) and widths != sorted(widths, reverse=True)


def test_a_tagging_batch_never_scores_its_padding():
    """Rows of a tagging batch padded to its longest: the pads' labels are -100, which the loss
    ignores; a pad labelled 0 ("O") would teach the model to tag padding and outweigh short rows."""
    import numpy as np
    import torch.nn.functional as F

    from electra.finetune import Encoded, _loss, batches

    ids = [np.array([2, 7, 8, 9, 3], dtype=np.int32), np.array([2, 7, 3], dtype=np.int32)]
    data = Encoded(ids, [np.zeros(len(x), np.int8) for x in ids], [[-100, 1, 2, 0, -100], [-100, 1, -100]])
    ((group, _, _, mask, labels),) = batches(data, 2, None)
    assert labels[mask == 0].tolist() == [-100, -100]
    logits = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    scored = labels != -100
    want = F.cross_entropy(logits[scored], labels[scored])  # the mean over the 4 labelled words
    torch.testing.assert_close(_loss(Task("ner", "tagging", ("f1",)), logits, labels), want)


def test_a_pair_too_long_is_cut_from_its_longer_text(tokenizer):
    """Pairs beyond --max-length lose tokens from the longer of the two texts first (transformers'
    longest_first), whichever it is: a short first text is never cut away to keep a long second."""
    task = Task("csv", "classification", ("accuracy",))
    short, long = "the movie", "a terrible , boring film with a weak plot and the worst acting"
    own = type(tokenizer).from_str(tokenizer.to_str())  # encode sets truncation: not on the shared fixture
    whole = len(own.encode(short).ids) - 2  # the short text's tokens, without [CLS] and [SEP]
    for pair in ((short, long), (long, short)):
        examples = [Example(pair[0], pair[1], "pos")]
        enc, truncated = encode(own, task, examples, ["neg", "pos"], 12, True, "train")
        types = enc.types[0].tolist()
        assert truncated == 1 and len(enc.ids[0]) == 12
        kept = (types.count(0) - 2, types.count(1) - 1)  # tokens of each text: [CLS] a [SEP] b [SEP]
        assert sorted(kept) == [whole, 12 - 3 - whole]
        assert kept[pair.index(short)] == whole  # the short text whole, the long one cut


def test_every_step_trains_with_dropout_on_the_gradient_of_its_own_batch_only(
    sentiment_tokenizer_dir, tmp_path, monkeypatch
):
    """Each step runs in training mode (dropout on), the epochs after a dev evaluation too, and the
    gradient it clips and applies is its batch's loss's alone: none of the step before's is
    carried over."""
    from electra import finetune

    real_loss, real_clip, own, checked = finetune._loss, torch.nn.utils.clip_grad_norm_, {}, []

    def loss(task, logits, labels, *rest):
        assert own["model"].training, "a training step with dropout off"
        value = real_loss(task, logits, labels, *rest)
        params = [p for p in own["model"].parameters() if p.requires_grad]
        own["grads"] = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        return value

    def clip(params, max_norm, *a, **k):
        params = [p for p in params if p.requires_grad]
        for p, g in zip(params, own["grads"], strict=True):
            if g is None:  # a weight this loss does not reach
                assert p.grad is None or not p.grad.any()
            else:
                torch.testing.assert_close(p.grad, g)
        checked.append(len(params))
        return real_clip(params, max_norm, *a, **k)

    real_task_model = finetune.task_model

    def task_model(*args, **kwargs):
        own["model"] = real_task_model(*args, **kwargs)
        return own["model"]

    monkeypatch.setattr(finetune, "_loss", loss)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    monkeypatch.setattr(finetune, "task_model", task_model)
    cfg = _sentiment_cfg(sentiment_tokenizer_dir, tmp_path / "o", epochs=2, batch_size=8, max_train_examples=16)
    run(cfg, quiet=True)
    assert len(checked) == 4  # 16 examples at batch 8, 2 epochs: every step checked


def test_a_seed_reports_its_last_epochs_scores_even_when_an_earlier_epoch_scored_higher(
    sentiment_tokenizer_dir, tmp_path, monkeypatch
):
    """The paper reports the dev scores after the last epoch: choosing the best epoch would tune on dev."""
    from electra import finetune

    scores = iter([0.9, 0.5, 0.7])  # epoch 1 best, epoch 2 worst, epoch 3 between
    monkeypatch.setattr(finetune, "evaluate", lambda *a, **k: {"accuracy": next(scores), "f1": 0.5})
    cfg = _sentiment_cfg(sentiment_tokenizer_dir, tmp_path / "o", epochs=3, batch_size=16, max_train_examples=16)
    (seed,) = run(cfg, quiet=True)["seeds"]
    assert [e["dev"]["accuracy"] for e in seed["per_epoch"]] == [0.9, 0.5, 0.7]
    assert seed["metrics"] == {"dev": {"accuracy": 0.7, "f1": 0.5}}


def test_a_max_length_beyond_the_models_positions_is_refused_before_training(sentiment_tokenizer_dir, tmp_path):
    """128 positions: --max-length 128 is the most, 129 is refused with the reason (not an index
    error in the position embeddings at the first long example); 3 ([CLS], a token, [SEP]) the least."""
    with pytest.raises(ValueError, match="max-length must be at least 3 \\(\\[CLS\\], a token, \\[SEP\\]\\), got 2"):
        _sentiment_cfg(sentiment_tokenizer_dir, tmp_path / "o", max_length=2)
    assert _sentiment_cfg(sentiment_tokenizer_dir, tmp_path / "o", max_length=3).max_length == 3
    cfg = _sentiment_cfg(sentiment_tokenizer_dir, tmp_path / "o", epochs=1, max_train_examples=8, max_length=129)
    with pytest.raises(ValueError, match="^--max-length 129 exceeds the model's 128 positions$"):
        run(cfg, quiet=True)
    assert run(dataclasses.replace(cfg, max_length=128), quiet=True)["settings"]["max_length"] == 128


def test_a_seed_stopped_during_an_epochs_evaluation_continues_with_that_epochs_score(
    sentiment_tokenizer_dir, tmp_path, monkeypatch
):
    """An epoch's last step is saved only with its evaluation: a stop while the dev set is being
    scored resumes from the step before, so the epoch is scored and the run ends as an uninterrupted one."""
    from electra import finetune

    cfg = _sentiment_cfg(sentiment_tokenizer_dir, tmp_path / "whole", epochs=2, batch_size=16, max_train_examples=32)
    cfg = dataclasses.replace(cfg, save_minutes=0)  # progress saved after every step it may be
    whole = run(cfg, quiet=True)
    real_evaluate = finetune.evaluate

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill while the first epoch's dev set is scored

    monkeypatch.setattr(finetune, "evaluate", stopped)
    out = dataclasses.replace(cfg, out=str(tmp_path / "resumed"))
    with pytest.raises(KeyboardInterrupt):
        run(out, quiet=True)
    monkeypatch.setattr(finetune, "evaluate", real_evaluate)
    resumed = run(out, quiet=True)
    assert len(resumed["seeds"][0]["per_epoch"]) == 2 and resumed["seeds"] == whole["seeds"]


def test_a_glue_task_written_with_max_length_128_is_kept_by_a_run_of_the_default(tmp_path):
    """Older folders wrote GLUE's default length out (128): the same run without --max-length keeps them."""
    from electra.finetune import _comparable, _finished

    cfg = FinetuneConfig(model="m", task="sst2", data="d", out=str(tmp_path / "sst2"))
    (tmp_path / "sst2").mkdir()
    written = {"config": dataclasses.asdict(dataclasses.replace(cfg, max_length=128)), "task": "sst2"}
    (tmp_path / "sst2" / "results.json").write_text(json.dumps(written))
    assert _finished(tmp_path / "sst2", _comparable(dataclasses.asdict(cfg)))["config"]["max_length"] == 128


def test_predict_skips_lines_of_only_spaces_and_reads_a_jsonl_pair_field_once(tmp_path):
    """Plain lines of spaces or tabs are blank (skipped and counted, as empty ones); a .jsonl text
    field named "pair" is the text, not also the second text (as for a table's column)."""
    from electra.predict import Inputs

    (tmp_path / "in.txt").write_text("a fine film\n   \n\t\n\nthe end\n")
    inputs = Inputs(tmp_path / "in.txt")
    assert list(inputs) == [("a fine film", None), ("the end", None)] and inputs.blank == 3
    (tmp_path / "in.jsonl").write_text('{"text": "a", "pair": "b"}\n')
    assert list(Inputs(tmp_path / "in.jsonl", "pair")) == [("b", None)]  # named otherwise: not read twice


def test_the_datas_fingerprint_changes_with_any_text_pair_or_label_of_any_split():
    """Kept seeds and GLUE tasks are reused only for the same examples: a pair edited in place counts too."""
    from electra.finetune import examples_sha256

    base = [Example("a film", "it was", "pos")]
    edits = [[Example("a flim", "it was", "pos")], [Example("a film", "it is", "pos")]]
    edits += [[Example("a film", "it was", "neg")]]
    prints = {examples_sha256(base, {"dev": base})}
    prints |= {examples_sha256(edit, {"dev": base}) for edit in edits}
    prints |= {examples_sha256(base, {"dev": edit}) for edit in edits}
    assert len(prints) == 7 and examples_sha256(base, {"dev": base}) == examples_sha256(list(base), {"dev": base})


def test_finetune_flags_given_reach_the_config(monkeypatch, tmp_path):
    """Every training flag, given, reaches the run as given (a flag dropped on the way would run the default)."""
    from electra import cli, finetune

    got = []
    monkeypatch.setattr(finetune, "run", lambda cfg, quiet=False, overwrite=False: got.append(cfg))
    flags = ["--seeds", "5", "--epochs", "4", "--lr", "2e-4", "--layer-decay", "0.7", "--batch-size", "8"]
    flags += ["--max-length", "64", "--max-train-examples", "100", "--precision", "bf16", "--save-minutes", "5"]
    flags += ["--device", "cpu", "--activation-checkpointing"]
    args = cli.build_parser().parse_args(
        ["finetune", "--model", "m", "--task", "sst2", "--data", "d", "--out", str(tmp_path / "o"), *flags]
    )
    args.func(args)
    (cfg,) = got
    assert (cfg.seeds, cfg.epochs, cfg.lr, cfg.layer_decay, cfg.batch_size) == (5, 4, 2e-4, 0.7, 8)
    assert (cfg.max_length, cfg.max_train_examples, cfg.precision, cfg.save_minutes) == (64, 100, "bf16", 5.0)
    assert (cfg.device, cfg.activation_checkpointing) == ("cpu", True)
