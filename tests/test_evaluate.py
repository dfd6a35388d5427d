"""`electra evaluate`: refusals of a model whose head or options do not fit the task, and its defaults."""

import dataclasses
import json

import pytest
import torch

from electra import hf
from electra.config import tiny
from electra.evaluate import example_records, label_breakdown, model_labels
from electra.evaluate import run as evaluate_folder
from electra.finetune import Encoded
from electra.model import QuestionAnswerer, SequenceClassifier
from electra.tasks import GLUE, Example, Task, TaskError


@pytest.fixture
def sst(tmp_path):
    (tmp_path / "sst").mkdir()
    (tmp_path / "sst" / "dev.tsv").write_text("sentence\tlabel\nthe movie was great\t1\nthe worst plot\t0\n")
    return tmp_path / "sst"


def test_a_multi_label_classifier_is_not_scored_on_a_single_label_task(tmp_path, tokenizer, tokenizer_dir, sst):
    cfg = tiny(vocab_size=tokenizer.get_vocab_size()).discriminator
    torch.manual_seed(0)
    folder = hf.export_sequence_classifier(
        SequenceClassifier(cfg, 2), tmp_path / "multi", ["0", "1"], tokenizer_dir, multi_label=True
    )
    with pytest.raises(TaskError, match="is a multi-label classifier; sst2 has one label per example: use --task csv"):
        evaluate_folder(folder, "sst2", str(sst), device="cpu", quiet=True)


def test_max_length_beyond_the_models_positions_is_refused(tmp_path, tokenizer, tokenizer_dir, sst):
    cfg = tiny(vocab_size=tokenizer.get_vocab_size()).discriminator
    folder = hf.export_sequence_classifier(SequenceClassifier(cfg, 2), tmp_path / "clf", ["0", "1"], tokenizer_dir)
    with pytest.raises(ValueError, match="--max-length 129 exceeds the model's 128 positions"):
        evaluate_folder(folder, "sst2", str(sst), max_length=129, device="cpu", quiet=True)


def test_a_question_answerer_from_elsewhere_reads_windows_of_up_to_512_tokens(tmp_path, tokenizer, tokenizer_dir):
    """Without a results.json, SQuAD is read in windows of min(512, the model's positions), as
    fine-tuning reads it by default; other tasks in 128. A question read in several windows counts once."""
    cfg = dataclasses.replace(tiny(vocab_size=tokenizer.get_vocab_size()).discriminator, max_positions=256)
    torch.manual_seed(0)
    folder = hf.export_question_answerer(QuestionAnswerer(cfg), tmp_path / "qa", tokenizer_dir)
    context = "the movie was great and a lot of fun"
    qas = [{"id": "1", "question": "what was great", "answers": [{"text": "the movie", "answer_start": 0}]}]
    (tmp_path / "dev.json").write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}))
    scored = evaluate_folder(folder, "squad", str(tmp_path / "dev.json"), device="cpu", quiet=True)
    assert scored["max_length"] == 256 and scored["examples"] == {"dev": 1}
    long = context + " and the plot was weak" * 80  # a context read in several windows: still one question
    (tmp_path / "dev.json").write_text(json.dumps({"data": [{"paragraphs": [{"context": long, "qas": qas}]}]}))
    scored = evaluate_folder(folder, "squad", str(tmp_path / "dev.json"), max_length=64, device="cpu", quiet=True)
    assert scored["examples"] == {"dev": 1}


def test_a_head_of_the_wrong_kind_for_the_task_is_named(tmp_path):
    dev = {"dev": [Example("a", None, "1.5")]}
    with pytest.raises(TaskError, match="m is a classifier with 2 labels; stsb scores a regression"):
        model_labels(GLUE["stsb"], {0: "a", 1: "b"}, None, dev, tmp_path / "m")
    csv = Task("csv", "classification", ("accuracy",))
    with pytest.raises(TaskError, match="m is a regression model \\(one score\\); csv is a classification task"):
        model_labels(csv, {0: "score"}, None, {"dev": [Example("a", None, "pos")]}, tmp_path / "m")


def test_multi_label_options_are_refused_for_a_single_label_model(tmp_path, tokenizer, tokenizer_dir, sst):
    cfg = tiny(vocab_size=tokenizer.get_vocab_size()).discriminator
    folder = hf.export_sequence_classifier(SequenceClassifier(cfg, 2), tmp_path / "clf", ["0", "1"], tokenizer_dir)
    for option, given in (("threshold", 0.3), ("label_separator", "|"), ("label_columns", ("a", "b"))):
        flag = "--" + option.replace("_", "-")
        with pytest.raises(TaskError, match=f"{flag} is for multi-label classifiers; .*clf is not one: drop it"):
            evaluate_folder(folder, "csv", str(sst), device="cpu", quiet=True, **{option: given})


def test_a_regression_model_scores_csv_data_whose_scores_are_all_whole_numbers(tmp_path, tokenizer, tokenizer_dir):
    """Ratings 1 to 5 would read as five classes; the model's one output says it is a regression."""
    cfg = tiny(vocab_size=tokenizer.get_vocab_size()).discriminator
    torch.manual_seed(0)
    folder = hf.export_sequence_classifier(SequenceClassifier(cfg, 1), tmp_path / "reg", ["score"], tokenizer_dir)
    (tmp_path / "d").mkdir()
    rows = ["the movie was great,5", "the worst plot,1", "a lot of fun,4", "a weak plot,2", "the music,3"]
    (tmp_path / "d" / "dev.csv").write_text("\n".join(["text,label", *rows]) + "\n")
    scored = evaluate_folder(folder, "csv", str(tmp_path / "d"), device="cpu", quiet=True)
    assert set(scored["metrics"]["dev"]) == {"pearson", "spearman"}


def test_each_evaluate_flag_reaches_the_scoring_and_the_defaults_are_its_own(tmp_path, cli, monkeypatch):
    """`electra evaluate`'s flags are passed to electra.evaluate.run (replaced here: most of them,
    batch size, device, precision, change no score a test could read), and the flags left out
    pass run's own defaults."""
    import inspect

    calls = []

    def run(model, task, data, **kwargs):
        calls.append((model, task, data, kwargs))
        return {"task": task, "fine_tuned_on": None, "metrics": {}, "examples": {}, "per_label": {}, "truncated": 0}

    monkeypatch.setattr("electra.evaluate.run", run)
    assert cli("evaluate", "--model", "m", "--task", "sst2", "--data", "d").returncode == 0
    model, task, data, kwargs = calls.pop()
    defaults = {k: p.default for k, p in inspect.signature(evaluate_folder).parameters.items() if k in kwargs}
    assert (model, task, data, kwargs) == ("m", "sst2", "d", defaults)
    common = ["--split", "test", "--batch-size", "7", "--max-length", "64", "--device", "cpu", "--precision", "bf16"]
    csv = ["--text-field", "t", "--pair-field", "p", "--label-field", "l", "--label-separator", "|"]
    csv += ["--label-columns", "a, b", "--threshold", "0.3", "--predictions", tmp_path / "p.jsonl"]
    result = cli("evaluate", "--model", "m", "--task", "csv", "--data", "d", *common, *csv)
    assert result.returncode == 0, result.stderr
    shared = {"split": "test", "batch_size": 7, "max_length": 64, "device": "cpu", "precision": "bf16"}
    assert calls.pop()[3] == {
        **defaults,
        **shared,
        "text_field": "t",
        "pair_field": "p",
        "label_field": "l",
        "label_separator": "|",
        "label_columns": ("a", "b"),
        "threshold": 0.3,
        "records": True,
    }
    squad = ["--doc-stride", "32", "--null-threshold", "-1.5"]
    assert cli("evaluate", "--model", "m", "--task", "squad_v2", "--data", "d", *common, *squad).returncode == 0
    assert calls.pop()[3] == {**defaults, **shared, "doc_stride": 32, "null_threshold": -1.5}


def test_a_model_from_elsewhere_reads_its_own_label_names_before_its_output_order(tmp_path):
    """Output names that name the data's labels say which output is which, in any order; names
    that do not (NEGATIVE/POSITIVE) leave the outputs as the data's labels 0, 1 in order."""
    dev = {"dev": [Example("a", None, "0"), Example("b", None, "1")]}
    assert model_labels(GLUE["sst2"], {0: "1", 1: "0"}, None, dev, tmp_path / "m") == ["1", "0"]
    assert model_labels(GLUE["sst2"], {0: "NEGATIVE", 1: "POSITIVE"}, None, dev, tmp_path / "m") == ["0", "1"]
    recorded = ["0", "1"]  # a folder fine-tuned here: its results.json decides, not its names
    assert model_labels(GLUE["sst2"], {0: "1", 1: "0"}, recorded, dev, tmp_path / "m") == ["0", "1"]


def test_each_labels_breakdown_and_each_examples_record_name_the_predicted_label():
    """pos predicted 3 times, 2 of them right, gold twice: precision 2/3, recall 1; neg predicted
    once (right) of 2 gold: precision 1, recall 1/2. Each record shows the label predicted."""
    task = Task("csv", "classification", ("accuracy", "f1"))
    labels, preds = ["neg", "pos"], [1, 1, 1, 0]
    examples = [Example(t, None, y) for t, y in (("a", "pos"), ("b", "neg"), ("c", "pos"), ("d", "neg"))]
    data = Encoded(ids=[[2, 3]] * 4, types=[[0, 0]] * 4, labels=[1, 0, 1, 0])
    scores = label_breakdown(task, data, labels, preds)
    assert scores["pos"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8), "support": 2}
    assert scores["neg"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    records = example_records(task, examples, data, labels, preds)
    assert [(r["text"], r["label"], r["prediction"]) for r in records] == [
        ("a", "pos", "pos"),
        ("b", "neg", "pos"),
        ("c", "pos", "pos"),
        ("d", "neg", "neg"),
    ]
