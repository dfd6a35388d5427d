"""Model cards: the hub's own parser reads the metadata we write, with the run's figures."""

import json
import math
import shutil
from unittest.mock import ANY

import pytest

from electra.card import finetuned_card, front_matter, pretrained_card, run_metrics
from electra.checkpoint import save_checkpoint, step_dir
from electra.config import tiny
from electra.model import Electra

yaml = pytest.importorskip("yaml")
ModelCard = pytest.importorskip("huggingface_hub").ModelCard


def test_front_matter_is_yaml_that_reads_back_exactly():
    meta = {
        "name": 'a "quoted": value # not a comment',
        "unicode": "naïve – ✓",
        "lines": "one\ntwo",
        "numbers": [1, 0.25, -3e-7, 1e20, 2.5e-5],
        "flags": [True, False, None],
        "looks_like_other_types": ["yes", "no", "1.0", "null", "~", "- item"],
        "empty": [],
        "nested": [{"task": {"type": "text-classification"}, "metrics": [{"type": "f1", "value": 0.5}]}],
    }
    text = front_matter(meta)
    assert text.startswith("---\n") and text.endswith("\n---\n")
    assert yaml.safe_load(text.strip("-\n")) == meta
    assert yaml.safe_load(front_matter({"x": float("inf"), "y": [float("-inf")]}).strip("-\n")) == {
        "x": float("inf"),
        "y": [float("-inf")],
    }


def test_run_metrics_takes_the_latest_lines_up_to_the_checkpoint(tmp_path):
    lines = [
        {"step": 10, "tokens": 100, "loss": 9.0},
        {"step": 20, "tokens": 200, "loss": 8.0, "valid_loss": 8.5, "valid_disc_accuracy": 0.6},
        {"step": 30, "tokens": 300, "loss": 7.0},  # logged by a run killed after the step-20 checkpoint
    ]
    resumed = [{"step": 30, "tokens": 301, "loss": 6.5}, {"step": 40, "tokens": 401, "loss": 6.0, "valid_loss": 7.0}]
    log = "".join(json.dumps(x) + "\n" for x in lines) + '{"step": 35, "tok' + "\n"
    (tmp_path / "run" / "checkpoints" / "step-00000030").mkdir(parents=True)
    (tmp_path / "run" / "metrics.jsonl").write_text(log + "".join(json.dumps(x) + "\n" for x in resumed))
    found = run_metrics(tmp_path / "run" / "checkpoints" / "step-00000030")
    assert found == {
        "step": 30,
        "tokens": 301,
        "loss": 6.5,
        "valid_loss": 8.5,
        "valid_disc_accuracy": 0.6,
        "valid_step": 20,
    }
    assert run_metrics(tmp_path / "elsewhere" / "step-00000030") == {}


def test_exported_folders_carry_a_card_with_the_run(tmp_path, tokenizer, tokenizer_dir, cli):
    model = Electra(tiny(vocab_size=tokenizer.get_vocab_size()))
    settings = {
        "batch_size": 16,
        "lr": 1e-3,
        "warmup_steps": 2,
        "objective": {"kind": "electra", "mask_prob": 0.15, "rtd_weight": 50.0},
    }
    save_checkpoint(step_dir(tmp_path / "run", 5), model, tokenizer_dir=tokenizer_dir, meta={"settings": settings})
    (tmp_path / "run" / "metrics.jsonl").write_text(
        json.dumps({"step": 5, "tokens": 12345, "valid_disc_accuracy": 0.875, "valid_gen_accuracy": 0.125}) + "\n"
    )
    out = [str(tmp_path / "my disc"), str(tmp_path / "gen")]
    assert cli("export", tmp_path / "run", "--out", out[0], "--generator-out", out[1]).returncode == 0

    disc = ModelCard.load(tmp_path / "my disc" / "README.md")
    assert disc.data.to_dict() == {"library_name": "transformers", "tags": ["electra", "replaced-token-detection"]}
    for row in (
        "| optimizer steps | 5 |",
        "| tokens seen | 12,345 |",
        "| peak learning rate | 0.001 |",
        "| validation discriminator accuracy (step 5) | 0.8750 |",
        "| hidden size | 32 |",
    ):
        assert row in disc.text
    assert f'AutoModelForPreTraining.from_pretrained("{out[0]}")' in disc.text
    assert f"`electra finetune --model '{out[0]}' --task sst2" in disc.text  # a shell line that runs as written
    gen = ModelCard.load(tmp_path / "gen" / "README.md")
    assert gen.data.pipeline_tag == "fill-mask" and "| hidden size | 16 |" in gen.text
    declared = ["--license", "apache-2.0", "--language", "en", "--language", "fr"]  # the hub's filters read these
    assert cli("export", tmp_path / "run", "--out", tmp_path / "declared", *declared).returncode == 0
    data = ModelCard.load(tmp_path / "declared" / "README.md").data
    assert data.license == "apache-2.0" and data.language == ["en", "fr"]
    for bad, message in [
        (["--license", "Apache 2.0"], "license 'Apache 2.0' is not a hub license id (lower case, such as apache-2.0"),
        (["--license", "MIT"], "; did you mean 'mit'?"),
        (["--language", "English"], "language 'English' is not an ISO 639 code such as en"),
        (["--language", "EN"], "; did you mean 'en'?"),
    ]:
        result = cli("export", tmp_path / "run", "--out", tmp_path / "refused", *bad)
        assert result.returncode == 2 and message in result.stderr and not (tmp_path / "refused").exists()
    # an id the hub's list lacks is written, with a note: the hub may have added it since
    result = cli("export", tmp_path / "run", "--out", tmp_path / "noted", "--license", "apache2")
    assert result.returncode == 0 and ModelCard.load(tmp_path / "noted" / "README.md").data.license == "apache2"
    assert "note: license 'apache2' is not among the hub's license ids known here; did you mean 'apache-2.0'?" in (
        result.stderr
    )
    assert "license" not in cli("export", tmp_path / "run", "--out", tmp_path / "mit", "--license", "mit").stderr

    # a checkpoint records its own step and tokens: the card holds them when its step was not logged
    meta = {"settings": settings, "step": 6, "tokens": 14000}  # logged last at step 5
    save_checkpoint(step_dir(tmp_path / "run", 6), model, tokenizer_dir=tokenizer_dir, meta=meta)
    shutil.copytree(step_dir(tmp_path / "run", 6), tmp_path / "renamed")  # and away from its run, renamed
    for source in (step_dir(tmp_path / "run", 6), tmp_path / "renamed"):
        assert cli("export", source, "--out", tmp_path / "six", "--force").returncode == 0
        text = (tmp_path / "six" / "README.md").read_text()
        assert "| optimizer steps | 6 |" in text and "| tokens seen | 14,000 |" in text


def test_a_pretraining_card_names_what_shaped_the_run():
    from electra.card import pretrained_card

    settings = {
        "objective": {"kind": "mlm", "mask_prob": 0.15},
        "disentangled_embeddings": True,
        "init_discriminator": "released/disc",
        "init_generator": "released/gen",
    }
    metrics = {"valid_gen_accuracy": 0.5, "valid_step": 7}
    files = {"dataset": None, "files": 114, "bytes": 74_899_730, "tokens": 14_680_978}
    text = pretrained_card("mlm", tiny().discriminator, {**settings, "corpus": files}, 7, metrics, "out")
    assert "| validation masked LM accuracy (step 7) | 0.5000 |" in text  # an MLM run has no generator
    assert "| embedding sharing | gradient-disentangled (the export holds the sum) |" in text
    assert "| continued from | `released/disc` and `released/gen` |" in text
    assert "| pre-training data | 114 sources, 74.9 MB on disk |" in text
    assert "| tokens per epoch | 14,680,978 |" in text
    assert "datasets" not in yaml.safe_load(text.split("---")[1])
    # a hub dataset is named, and in the metadata the hub links
    hub = {**files, "dataset": {"name": "Salesforce/wikitext", "config": "wikitext-103-raw-v1", "split": "train"}}
    text = pretrained_card("discriminator", tiny().discriminator, {"corpus": hub}, 7, {}, "out")
    assert "| pre-training data | `Salesforce/wikitext` (wikitext-103-raw-v1, train) |" in text
    assert yaml.safe_load(text.split("---")[1])["datasets"] == ["Salesforce/wikitext"]


def test_a_card_names_a_hub_encoder_as_its_base_model_and_scores_each_split():
    from electra.card import finetuned_card

    results = {
        "task": "stsb",
        "model": "google/electra-small-discriminator",
        "config": {"data": "glue", "batch_size": 32, "license": "mit", "language": ["en"]},
        "settings": {"epochs": 10, "lr": 3e-4},
        "median": {"dev": {"spearman": 0.8712345, "pearson": float("nan")}},
        "spread": {"dev": {"spearman": {"min": 0.86, "max": 0.88}}},
        "seeds": [{}, {}, {}],
        "exported_seed": 2,
        "examples": {"train": 5749, "dev": 1500},
    }
    card = finetuned_card(results, "regression", tiny().discriminator, "models/stsb")
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model"] == "google/electra-small-discriminator" and meta["datasets"] == ["nyu-mll/glue"]
    assert meta["license"] == "mit" and meta["language"] == ["en"]
    (entry,) = meta["model-index"][0]["results"]
    assert entry["dataset"] == {"name": "GLUE STS-B", "type": "nyu-mll/glue", "config": "stsb", "split": "validation"}
    spearman, pearson = entry["metrics"]
    assert spearman == {"type": "spearmanr", "value": 0.8712, "name": "spearman (median of 3)"}
    assert pearson["type"] == "pearsonr" and math.isnan(pearson["value"])
    assert (
        "| dev | 1,500 | spearman | 0.8712 | 0.8600 | 0.8800 |" in card
        and "| seeds | 3 (this folder: seed 2) |" in card
    )
    assert "| batch size | 32 |" in card and "on 5,749 training examples." in card
    # the hub's own parser reads the medians back
    got = {(r.dataset_type, r.dataset_split, r.metric_type): r.metric_value for r in ModelCard(card).data.eval_results}
    assert got == {("nyu-mll/glue", "validation", "spearmanr"): 0.8712, ("nyu-mll/glue", "validation", "pearsonr"): ANY}


@pytest.mark.parametrize(
    "examples, claimed",
    [
        ({"dev_matched": 9815, "dev_mismatched": 9832}, {"validation_matched", "validation_mismatched"}),
        ({"dev_matched": 9815, "dev_mismatched": 500}, {"validation_matched"}),
        ({"dev_matched": 400, "dev_mismatched": 500}, set()),  # GLUE's format, other examples: not GLUE
    ],
)
def test_a_glue_card_claims_only_the_dev_sets_of_glues_own_size(examples, claimed):
    from electra.card import finetuned_card

    results = {
        "task": "mnli",
        "model": "models/disc",
        "config": {"data": "data/my-nli"},
        "median": {"dev_matched": {"accuracy": 0.8}, "dev_mismatched": {"accuracy": 0.7}},
        "seeds": [{}],
        "exported_seed": 0,
        "examples": {"train": 100, **examples},
    }
    card = finetuned_card(results, "classification", tiny().discriminator, "models/nli")
    meta = yaml.safe_load(card.split("---")[1])
    got = {r["dataset"]["split"] for r in meta.get("model-index", [{"results": []}])[0]["results"]}
    assert got == claimed and ("datasets" in meta) == bool(claimed)
    assert ("# ELECTRA fine-tuned on GLUE MNLI" in card) == bool(claimed)
    assert "| dev_matched | " in card and "| dev_mismatched | " in card  # the text tables every score


@pytest.mark.parametrize(
    "task, dev, dataset",
    [
        ("squad", 10_570, {"name": "SQuAD 1.1", "type": "rajpurkar/squad"}),
        ("squad_v2", 11_873, {"name": "SQuAD 2.0", "type": "rajpurkar/squad_v2"}),
        ("squad", 60, None),  # SQuAD's format, other questions: not SQuAD, and no other hub dataset either
    ],
)
def test_a_question_answering_card_claims_squad_only_for_squads_own_dev_set(task, dev, dataset):
    from electra.card import finetuned_card

    results = {
        "task": task,
        "model": "models/disc",
        "config": {"data": "data/my-qa"},
        "median": {"dev": {"f1": 0.5, "exact_match": 0.4}},
        "spread": {"dev": {"f1": {"min": 0.5, "max": 0.5}, "exact_match": {"min": 0.4, "max": 0.4}}},
        "seeds": [{}],
        "exported_seed": 0,
        "examples": {"train": 100, "dev": dev},
    }
    card = finetuned_card(results, "span", tiny().discriminator, "models/qa")
    meta = yaml.safe_load(card.split("---")[1])
    if dataset is None:  # the hub would link a result to the dataset of that name: the scores stay in the text
        assert "model-index" not in meta and "datasets" not in meta
        assert "# ELECTRA fine-tuned on my-qa" in card and "| dev | 60 | f1 | 0.5000 |" in card
    else:
        assert meta["model-index"][0]["results"][0]["dataset"] == {**dataset, "split": "validation"}
        assert meta["datasets"] == [dataset["type"]]


def test_a_tagger_card_shows_the_aggregation_that_reads_what_was_trained():
    from electra.card import finetuned_card

    results = {
        "task": "ner",
        "model": "models/disc",
        "config": {"data": "data/conll"},
        "labels": ["O", "B-PER", "I-PER"],
        "median": {"dev": {"f1": 0.9}},
        "spread": {"dev": {"f1": {"min": 0.9, "max": 0.9}}},
        "seeds": [{}],
        "exported_seed": 0,
    }
    card = finetuned_card(results, "tagging", tiny().discriminator, "models/ner")
    assert 'pipeline("token-classification", model="models/ner", aggregation_strategy="first")' in card
    assert "each word's first piece only" in card and "never trained" in card
    assert "; labels: `O`, `B-PER`, `I-PER`." in card
    sentiment = finetuned_card({**results, "task": "csv"}, "classification", tiny().discriminator, "models/clf")
    assert "aggregation" not in sentiment


def test_the_glue_dev_sizes_cards_check_are_those_of_glues_files():
    """A card claims GLUE's dev set only for a dev set of GLUE's size: the sizes are the files'."""
    from electra.card import GLUE_DEV_EXAMPLES
    from electra.finetune import FinetuneConfig, load_task
    from tests.conftest import SHARED_DATA

    glue = SHARED_DATA / "glue"
    folders = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "rte": "RTE"}
    if not all((glue / f).is_dir() for f in folders.values()):
        pytest.skip("../shared/data/glue is not present")
    for task, folder in folders.items():
        cfg = FinetuneConfig(model="", task=task, data=str(glue / folder), out="")
        _, _, devs = load_task(cfg, with_train=False)
        assert {name: len(rows) for name, rows in devs.items()} == GLUE_DEV_EXAMPLES[task], task


def test_a_glue_pair_task_card_names_its_labels_shows_a_pair_and_the_hubs_metric_type():
    from electra.card import finetuned_card

    results = {
        "task": "cola",
        "model": "models/disc",
        "config": {"data": "data/CoLA"},
        "labels": ["0", "1"],
        "label_names": ["unacceptable", "acceptable"],
        "median": {"dev": {"matthews": 0.5, "accuracy": 0.8}},
        "seeds": [{}],
        "exported_seed": 0,
        "examples": {"train": 8551, "dev": 1043},
    }
    card = finetuned_card(results, "classification", tiny().discriminator, "models/cola")
    assert "labels: `unacceptable`, `acceptable`." in card  # what its pipeline answers, not the data's codes
    metrics = yaml.safe_load(card.split("---")[1])["model-index"][0]["results"]
    assert {m["type"] for r in metrics for m in r["metrics"]} == {"matthews_correlation", "accuracy"}
    assert "text_pair" not in card
    mrpc = finetuned_card({**results, "task": "mrpc"}, "classification", tiny().discriminator, "models/mrpc")
    assert '{"text": "A man is playing a guitar.", "text_pair": "Someone plays music."}' in mrpc
    pairs = {**results, "task": "csv", "config": {"data": "data/mine", "pair_field": "second"}}
    assert "text_pair" in finetuned_card(pairs, "classification", tiny().discriminator, "models/mine")


def _meta(card: str) -> dict:
    return yaml.safe_load(card.split("---")[1])


def test_a_local_folder_that_looks_like_a_hub_name_is_no_base_model(tmp_path, monkeypatch):
    """Fine-tuned from ./models/disc: the hub would link base_model to a repository "models/disc"
    (someone else's, or none); a folder here is named in the text only."""
    (tmp_path / "models" / "disc").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    results = {
        "task": "sst2",
        "model": "models/disc",
        "config": {"data": "data/SST-2"},
        "median": {"dev": {"accuracy": 0.9}},
        "seeds": [{}],
        "exported_seed": 0,
    }
    card = finetuned_card(results, "classification", tiny().discriminator, "out")
    assert "base_model" not in _meta(card) and "Fine-tuned from `models/disc`" in card
    assert (
        _meta(finetuned_card({**results, "model": "someone/disc"}, "classification", tiny().discriminator, "out"))[
            "base_model"
        ]
        == "someone/disc"
    )


@pytest.mark.parametrize("model", ["mlm", "replace-mlm", "all-tokens-mlm", "generator"])
def test_every_masked_lm_export_is_tagged_for_the_fill_mask_widget(model):
    card = pretrained_card(model, tiny().discriminator, {}, 5, {}, "out")
    meta = _meta(card)
    assert meta["pipeline_tag"] == "fill-mask" and "AutoModelForMaskedLM" in card
    trained = "replaced-token-detection" if model == "generator" else "masked-lm"  # what the network learned
    assert meta["tags"] == ["electra", trained]
    assert ("electra finetune --model" in card) == (model != "generator")  # a generator is no encoder to fine-tune


def test_a_card_declares_each_language_once():
    results = {
        "task": "csv",
        "model": "models/disc",
        "config": {"data": "data/mine", "language": ["en", "fr", "en"]},
        "median": {"dev": {"accuracy": 0.9}},
        "seeds": [{}],
        "exported_seed": 0,
    }
    assert _meta(finetuned_card(results, "classification", tiny().discriminator, "out"))["language"] == ["en", "fr"]
