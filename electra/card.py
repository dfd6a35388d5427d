"""Model cards: the README.md written into every exported folder.

Its front matter is the metadata the Hugging Face hub reads when the folder is uploaded
(library, pipeline tag for the inference widget, tags, base model, and `model-index`: the
evaluation results it displays); the text says what the model is, how it was trained and how
to load it. Cards are plain strings built from what the run recorded (a checkpoint's settings
and metrics.jsonl, a fine-tuning's results.json), so writing one needs no extra package.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import shlex
from pathlib import Path

from electra.config import EncoderConfig
from electra.tasks import GLUE, GLUE_FOLDERS

# task kind (electra.tasks.Task.kind) -> the hub's pipeline tag
PIPELINE_TAGS = {
    "classification": "text-classification",
    "multilabel": "text-classification",
    "regression": "text-classification",
    "tagging": "token-classification",
    "span": "question-answering",
}
# our metric names -> the hub's metric types
METRIC_TYPES = {"matthews": "matthews_correlation", "spearman": "spearmanr", "pearson": "pearsonr"}
# the questions of SQuAD's dev sets (dev-v1.1.json, dev-v2.0.json): a dev set of another size is other data
SQUAD_DEV_QUESTIONS = {"squad": 10_570, "squad_v2": 11_873}
# examples in each validation split of the GLUE hub dataset (nyu-mll/glue): a dev set of another
# size (one's own data in GLUE's format) is not GLUE's and is not claimed as it
GLUE_DEV_EXAMPLES = {
    "cola": {"dev": 1043},
    "sst2": {"dev": 872},
    "mrpc": {"dev": 408},
    "stsb": {"dev": 1500},
    "qqp": {"dev": 40_430},
    "mnli": {"dev_matched": 9815, "dev_mismatched": 9832},
    "qnli": {"dev": 5463},
    "rte": {"dev": 277},
    "wnli": {"dev": 71},
}
# the hub's spellings: license ids, lower case (an upload whose id the hub does not know is
# refused), and ISO 639 language codes, optionally with a region or script (en-US, zh-Hans)
LICENSE = re.compile(r"[a-z0-9][a-z0-9.+-]*")
LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*|multilingual")
# the hub's license ids as its documentation lists them (docs/hub/repositories-licenses.md of
# huggingface/hub-docs); the hub adds ids now and then, so an unknown one gets a note, not a refusal
HUB_LICENSES = frozenset(
    """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
    bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc
    cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0
    cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0
    cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1
    agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc lppl-1.3c ms-pl mpl-2.0 odc-by odbl openrail++
    osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license llama2 gemma unknown
    other""".split()
)


def _closest(value: str, known) -> str:
    close = difflib.get_close_matches(value.lower(), sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def hub_metadata(license: str | None = None, language=()) -> dict:
    """The license and languages a card declares to the hub (its license filter and language
    pages), checked: {} when neither is given. See `license_note` for ids the hub may not know."""
    out: dict = {}
    if license is not None:
        if not isinstance(license, str) or not LICENSE.fullmatch(license):
            raise ValueError(
                f"license {license!r} is not a hub license id (lower case, such as apache-2.0, mit, cc-by-4.0 "
                f"or other){_closest(str(license), HUB_LICENSES)}"
            )
        out["license"] = license
    if isinstance(language, str):
        language = [language]
    for code in language:
        if not isinstance(code, str) or not LANGUAGE.fullmatch(code):
            lower = code.lower() if isinstance(code, str) else ""
            fix = f"; did you mean {lower!r}?" if LANGUAGE.fullmatch(lower) else ""
            raise ValueError(
                f"language {code!r} is not an ISO 639 code such as en, fr, zh (or en-US, multilingual){fix}"
            )
    if language:
        out["language"] = list(dict.fromkeys(language))
    return out


def license_note(license: str | None) -> str | None:
    """What to know about a well-formed license id: one the hub's list lacks (it would refuse the
    upload, unless the id is newer than that list), or `other`, which wants a name and a text."""
    if license is None or license in HUB_LICENSES - {"other"}:
        return None
    if license == "other":
        return "license 'other': before uploading, add license_name (and license_link) to README.md's metadata"
    return (
        f"license {license!r} is not among the hub's license ids known here{_closest(license, HUB_LICENSES)} "
        "The hub refuses an upload whose license id it does not know."
    )


# our dev sets are the GLUE hub dataset's validation splits, for model-index
SPLITS = {"dev": "validation", "dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"}


def _scalar(value) -> str:
    """A YAML scalar: JSON's spelling (quoting and escapes are exact in YAML too), except floats,
    which YAML 1.1 (the hub's parser) reads only with a "." and as .nan / .inf."""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return ".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"
        text = repr(float(value))  # numpy's float64 spells itself np.float64(...)
        return text.replace("e", ".0e", 1) if "e" in text and "." not in text else text
    return json.dumps(value)


def front_matter(meta: dict) -> str:
    """`meta` as a YAML block between --- lines: block mappings and lists of `_scalar`s."""

    def lines(value, indent: str) -> list[str]:
        out = []
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, dict | list) and v:
                    out += [f"{indent}{k}:", *lines(v, indent + "  ")]
                else:
                    out.append(f"{indent}{k}: {_scalar(v)}")
        else:
            for item in value:
                if isinstance(item, dict | list) and item:
                    first, *rest = lines(item, indent + "  ")
                    out += [f"{indent}- {first.lstrip()}", *rest]
                else:
                    out.append(f"{indent}- {_scalar(item)}")
        return out

    return "---\n" + "\n".join(lines(meta, "")) + "\n---\n"


def _table(rows: list[tuple[str, str]]) -> str:
    return "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def _architecture(cfg: EncoderConfig) -> list[tuple[str, str]]:
    return [
        ("layers", str(cfg.num_layers)),
        ("hidden size", str(cfg.hidden_size)),
        ("attention heads", str(cfg.num_heads)),
        ("feed-forward size", str(cfg.ffn_size)),
        ("embedding size", str(cfg.embedding_size)),
        ("vocabulary", f"{cfg.vocab_size:,}"),
        ("positions", str(cfg.max_positions)),
    ]


def _is_hub_name(model: str) -> bool:
    """A hub repository name (owner/name), not a folder on this machine: the only kind the hub's
    base_model accepts."""
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not Path(model).exists() and not model.startswith((".", "~"))


def run_metrics(checkpoint: str | os.PathLike, step: int | None = None) -> dict:
    """What its run logged up to a checkpoint RUN/checkpoints/step-N (at `step`, default N), from
    RUN/metrics.jsonl: the last line's figures (tokens seen, training losses) and the last
    validation's (valid_*, at valid_step); {} when there is no such log."""
    checkpoint = Path(checkpoint)
    log = checkpoint.parent.parent / "metrics.jsonl"
    if step is None:
        step = _step_of(checkpoint.name)
    if step is None or not log.is_file():
        return {}
    last: dict = {}
    valid: dict = {}
    with open(log, encoding="utf-8") as f:
        for line in f:  # a resumed run logs its steps again: the latest line wins
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a killed run
            if record.get("step", step + 1) <= step:
                last = record
                valid = record if any(k.startswith("valid_") for k in record) else valid
    out = {k: v for k, v in last.items() if not k.startswith("valid_")}
    if valid:
        out.update({k: v for k, v in valid.items() if k.startswith("valid_")}, valid_step=valid["step"])
    return out


def checkpoint_card(checkpoint, model: str, folder: str | os.PathLike, hub: dict | None = None) -> str:
    """`pretrained_card` of an `electra.checkpoint.Checkpoint` exported to `folder`."""
    meta = checkpoint.meta
    step = meta.get("step", _step_of(checkpoint.path.name))  # its own record: the folder may be renamed
    cfg = checkpoint.model.cfg.generator if model in ("generator", "mlm") else checkpoint.model.cfg.discriminator
    metrics = run_metrics(checkpoint.path, step)
    if "tokens" in meta:  # the count at the checkpoint's step, not at the log line before it
        metrics["tokens"] = meta["tokens"]
    return pretrained_card(model, cfg, meta.get("settings", {}), step, metrics, folder, hub)


def _step_of(name: str) -> int | None:
    """N of a checkpoint folder named step-N (older checkpoints record their step only so)."""
    return int(name[5:]) if name.startswith("step-") and name[5:].isdigit() else None


def _card(meta: dict, blocks: list[str]) -> str:
    """Front matter, then markdown blocks (headings, paragraphs, tables) separated by blank lines."""
    return front_matter(meta) + "\n" + "\n\n".join(b.strip("\n") for b in blocks) + "\n"


def _python(*lines: str) -> str:
    return "```python\n" + "\n".join(lines) + "\n```"


def pretrained_card(
    model: str,
    cfg: EncoderConfig,
    settings: dict,
    step: int | None,
    metrics: dict,
    folder: str | os.PathLike,
    hub: dict | None = None,
) -> str:
    """The card of a pre-trained export: `model` is "discriminator" (ElectraForPreTraining), "generator"
    (ElectraForMaskedLM), "mlm" (the MLM baseline's ElectraForMaskedLM) or "replace-mlm" / "all-tokens-mlm"
    (the main network of those comparison runs, an ElectraForMaskedLM); `settings` the run's
    resolved settings (a checkpoint's meta), `metrics` what `run_metrics` found; `folder` where it goes
    (named in the examples); `hub` its `hub_metadata`."""
    masked_lm = model != "discriminator"
    meta: dict = {"library_name": "transformers", **(hub or {})}
    if masked_lm:
        meta["pipeline_tag"] = "fill-mask"
    trained_as_lm = model in ("mlm", "replace-mlm", "all-tokens-mlm")
    meta["tags"] = ["electra", "masked-lm" if trained_as_lm else "replaced-token-detection"]
    what = {
        "discriminator": "the discriminator of an ELECTRA model (`ElectraForPreTraining`), which scores every "
        "token of its input as original or replaced by the generator. It is the encoder to fine-tune.",
        "generator": "the generator of an ELECTRA model (`ElectraForMaskedLM`): the small masked language model "
        "that corrupts the discriminator's input during pre-training.",
        "mlm": "a BERT-style masked language model (`ElectraForMaskedLM`), pre-trained with the masked-LM "
        "objective alone, the baseline for ELECTRA's replaced token detection.",
        "replace-mlm": "the main network of a Replace MLM run (`ElectraForMaskedLM`), one of the ELECTRA paper's "
        "comparisons: a masked language model whose masked tokens were replaced by a small generator's samples "
        "instead of [MASK].",
        "all-tokens-mlm": "the main network of an All-Tokens MLM run (`ElectraForMaskedLM`), one of the ELECTRA "
        "paper's comparisons: a masked language model, fed a generator-corrupted input, that predicts every "
        "token (the copy mechanism it was trained with is not part of this export).",
    }[model]
    blocks = [f"# ELECTRA {model}", f"This folder holds {what}", "## Architecture", _table(_architecture(cfg))]
    rows = []
    corpus = settings.get("corpus") or {}
    if corpus.get("dataset"):
        hub = corpus["dataset"]
        meta["datasets"] = [hub["name"]]
        part = ", ".join(str(hub[k]) for k in ("config", "split") if hub.get(k))
        rows.append(("pre-training data", f"`{hub['name']}`" + (f" ({part})" if part else "")))
    elif corpus.get("files"):  # files and saved datasets; bytes on disk (compressed, where they are)
        size = f", {corpus['bytes'] / 1e6:,.1f} MB on disk" if corpus.get("bytes") else ""
        rows.append(("pre-training data", f"{corpus['files']:,} source{'s' * (corpus['files'] != 1)}{size}"))
    if corpus.get("tokens"):
        rows.append(("tokens per epoch", f"{corpus['tokens']:,}"))
    if step is not None:
        rows.append(("optimizer steps", f"{step:,}"))
    if "tokens" in metrics:
        rows.append(("tokens seen", f"{metrics['tokens']:,}"))
    for key, name in (("batch_size", "batch (rows)"), ("lr", "peak learning rate"), ("warmup_steps", "warmup steps")):
        if key in settings:
            rows.append((name, str(settings[key])))
    objective = settings.get("objective") or {}
    if "kind" in objective:
        rows += [("objective", objective["kind"]), ("masked fraction", str(objective["mask_prob"]))]
    if objective.get("whole_word"):
        rows.append(("masking", "whole words"))
    if objective.get("kind") in ("electra", "electra-15"):
        rows.append(("RTD loss weight", str(objective["rtd_weight"])))
    if settings.get("disentangled_embeddings"):
        rows.append(("embedding sharing", "gradient-disentangled (the export holds the sum)"))
    if settings.get("init_discriminator"):
        started = f"`{settings['init_discriminator']}` and `{settings['init_generator']}`"
        rows.append(("continued from", started))
    main = "main network accuracy" if model in ("replace-mlm", "all-tokens-mlm") else "discriminator accuracy"
    lm = "masked LM accuracy" if objective.get("kind") == "mlm" else "generator accuracy"  # MLM: no generator
    for key, name in (("valid_disc_accuracy", main), ("valid_gen_accuracy", lm)):
        if key in metrics:
            rows.append((f"validation {name} (step {metrics['valid_step']:,})", f"{metrics[key]:.4f}"))
    if rows:
        blocks += ["## Pre-training", "Pre-trained with `electra pretrain`:", _table(rows)]
    load, where = "AutoModelForMaskedLM" if masked_lm else "AutoModelForPreTraining", json.dumps(str(folder))
    blocks += [
        "## Use",
        _python(
            f"from transformers import AutoTokenizer, {load}",
            "",
            f"tokenizer = AutoTokenizer.from_pretrained({where})",
            f"model = {load}.from_pretrained({where})",
        ),
    ]
    if model != "generator":
        line = f"electra finetune --model {shlex.quote(str(folder))} --task sst2 --data GLUE/SST-2 --out OUT"
        blocks.append(f"Fine-tune it: `{line}`.")
    return _card(meta, blocks)


def finetuned_card(results: dict, kind: str, cfg: EncoderConfig, folder: str | os.PathLike) -> str:
    """The card of a fine-tuned export to `folder` from its results.json (`electra.finetune.run`);
    `kind` the task's (electra.tasks.Task.kind), `cfg` its encoder's."""
    task, data, settings = results["task"], str(results["config"]["data"]), results.get("settings", {})
    examples = results.get("examples", {})
    sizes = GLUE_DEV_EXAMPLES.get(task, {})
    glue = [split for split in results["median"] if split in sizes and examples.get(split) == sizes[split]]
    claimed = list(results["median"])  # the splits whose results are claimed for the hub dataset
    if glue:  # GLUE's own dev sets
        dataset, claimed = {"name": f"GLUE {GLUE_FOLDERS[task]}", "type": "nyu-mll/glue", "config": task}, glue
    elif task in SQUAD_DEV_QUESTIONS and examples.get("dev") == SQUAD_DEV_QUESTIONS[task]:  # SQuAD's own dev set
        dataset = {"name": "SQuAD 2.0" if task == "squad_v2" else "SQuAD 1.1", "type": f"rajpurkar/{task}"}
    else:  # data of one's own, named by its folder; a dataset in GLUE's or SQuAD's format is not theirs
        dataset = {"name": Path(data).name or data}
    pipeline, seeds = PIPELINE_TAGS[kind], len(results["seeds"])
    declared = hub_metadata(results["config"].get("license"), results["config"].get("language") or ())
    meta: dict = {"library_name": "transformers", **declared, "pipeline_tag": pipeline, "tags": ["electra"]}
    if _is_hub_name(str(results["model"])):
        meta["base_model"] = str(results["model"])
    # the hub links a result to the dataset its type names, so only a hub dataset's results are
    # claimed there (as transformers' Trainer does); the text below tables every score
    if "type" in dataset:
        meta["datasets"] = [dataset["type"]]
        entries = [
            {
                "task": {"type": pipeline},
                "dataset": {**dataset, "split": SPLITS.get(split, split)},
                "metrics": [
                    {"type": METRIC_TYPES.get(m, m), "value": round(v, 4), "name": f"{m} (median of {seeds})"}
                    for m, v in metrics.items()
                ],
            }
            for split, metrics in results["median"].items()
            if split in claimed
        ]
        meta["model-index"] = [{"name": Path(folder).name, "results": entries}]

    many = " --multi-label" if results["config"].get("multi_label") else ""  # any number of labels per text
    if columns := results["config"].get("label_columns"):  # one 0/1 column each
        many = f" --label-columns {','.join(columns)}"
    about = f"Fine-tuned from `{results['model']}` with `electra finetune --task {task}{many}`"
    if "train" in results.get("examples", {}):
        about += f" on {results['examples']['train']:,} training examples"
    labels = results.get("label_names") or results.get("labels") or []
    named = kind in ("classification", "multilabel", "tagging")
    about += f"; labels: {', '.join(f'`{x}`' for x in labels)}." if named else "."
    scores = "| split | examples | metric | median | min | max |\n|---|---|---|---|---|---|\n"
    for split, metrics in results["median"].items():
        n = results.get("examples", {}).get(split)
        for m, v in metrics.items():
            spread = results.get("spread", {}).get(split, {}).get(m, {})
            low, high = spread.get("min", v), spread.get("max", v)
            scores += f"| {split} | {'-' if n is None else f'{n:,}'} | {m} | {v:.4f} | {low:.4f} | {high:.4f} |\n"
    given = {**results["config"], **settings}  # settings: the defaults resolved
    training = [("seeds", f"{seeds} (this folder: seed {results['exported_seed']})")]
    training += [
        (k.replace("_", " "), str(given[k]))
        for k in ("epochs", "lr", "layer_decay", "batch_size", "max_length")
        if given.get(k) is not None
    ]
    if kind == "span":  # transformers 5 has no question-answering pipeline
        use = [
            f"```bash\nelectra predict --model {shlex.quote(str(folder))} --input questions.jsonl"
            "   # fields question, context\n```",
            "`AutoModelForQuestionAnswering` loads it too: a start and an end logit for every token.",
        ]
    else:
        extra = {"tagging": ', aggregation_strategy="first"', "multilabel": ", top_k=None"}.get(kind, "")
        pair = GLUE[task].pair if task in GLUE else results["config"].get("pair_field")
        example = {
            "tagging": '"George Eliot was born in Warwickshire."',
            "pair": '{"text": "A man is playing a guitar.", "text_pair": "Someone plays music."}',
        }.get("pair" if pair else kind, '"A moving, beautifully made film."')
        use = [
            _python(
                "from transformers import pipeline",
                "",
                f'model = pipeline("{pipeline}", model={json.dumps(str(folder))}{extra})',
                f"model({example})",
            )
        ]
        if kind == "multilabel":
            use.append(
                "Each label is a yes or no of its own: `top_k=None` gives every label's probability (a sigmoid "
                "each), and the labels above 0.5 are the text's. `electra predict` lists them as `labels`."
            )
        if kind == "tagging":
            use.append(
                'Fine-tuning trained the tag of each word\'s first piece only, as BERT and ELECTRA tag: use `"first"` '
                'as above. `"simple"`, `"average"`, `"max"` or no aggregation also read the `##` pieces after it, '
                "whose outputs were never trained, and split or mislabel entities."
            )
    blocks = [
        f"# ELECTRA fine-tuned on {dataset['name']}",
        about,
        "## Results",
        f"Median over {seeds} fine-tuning seed{'s' * (seeds != 1)}:",
        scores,
        "## Training",
        _table(training),
        "## Model",
        _table(_architecture(cfg)),
        "## Use",
        *use,
    ]
    return _card(meta, blocks)
