"""Hugging Face interop: the one key map between our modules and transformers' Electra* classes.

Export writes folders that transformers loads without custom code (`config.json`,
`model.safetensors`, tokenizer files); import reads such folders (ours or released ones)
back into our modules. Both directions use `key_map`, so they cannot drift apart.
transformers itself is not needed for either.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from electra.atomic import publish_dir
from electra.config import EncoderConfig, ModelConfig
from electra.model import Electra, Encoder, QuestionAnswerer, SequenceClassifier, TokenClassifier
from electra.tokenizer import load_model_tokenizer, save_tokenizer

HF_ARCHITECTURES = {
    "discriminator": "ElectraForPreTraining",
    "generator": "ElectraForMaskedLM",
    "discriminator_lm": "ElectraForMaskedLM",  # the discriminator network with a masked-LM head (Replace MLM ...)
    "sequence": "ElectraForSequenceClassification",
    "token": "ElectraForTokenClassification",
    "span": "ElectraForQuestionAnswering",
    "encoder": "ElectraModel",
}

# Buffers that some transformers versions save; they hold no learned state.
_IGNORED_SUFFIXES = ("position_ids", "token_type_ids")


# ---------------------------------------------------------------------------------------
# The key map: (our key, [transformers keys]); several keys are concatenated along dim 0.
# ---------------------------------------------------------------------------------------


def _embedding_keys(ours: str, hf: str) -> list[tuple[str, list[str]]]:
    pairs = [("word", "word_embeddings"), ("position", "position_embeddings"), ("token_type", "token_type_embeddings")]
    keys = [(f"{ours}{a}.weight", [f"{hf}embeddings.{b}.weight"]) for a, b in pairs]
    keys += [(f"{ours}norm.{p}", [f"{hf}embeddings.LayerNorm.{p}"]) for p in ("weight", "bias")]
    return keys


def _transformer_keys(ours: str, hf: str, cfg: EncoderConfig) -> list[tuple[str, list[str]]]:
    keys = []
    if cfg.embedding_size != cfg.hidden_size:
        keys += [(f"{ours}project.{p}", [f"{hf}embeddings_project.{p}"]) for p in ("weight", "bias")]
    for i in range(cfg.num_layers):
        o, h = f"{ours}layers.{i}.", f"{hf}encoder.layer.{i}."
        for p in ("weight", "bias"):
            keys += [
                (f"{o}qkv.{p}", [f"{h}attention.self.{n}.{p}" for n in ("query", "key", "value")]),
                (f"{o}attn_out.{p}", [f"{h}attention.output.dense.{p}"]),
                (f"{o}attn_norm.{p}", [f"{h}attention.output.LayerNorm.{p}"]),
                (f"{o}ffn_in.{p}", [f"{h}intermediate.dense.{p}"]),
                (f"{o}ffn_out.{p}", [f"{h}output.dense.{p}"]),
                (f"{o}ffn_norm.{p}", [f"{h}output.LayerNorm.{p}"]),
            ]
    return keys


def _pairs(*items: tuple[str, str]) -> list[tuple[str, list[str]]]:
    return [(f"{o}.{p}", [f"{h}.{p}"]) for o, h in items for p in ("weight", "bias")]


def _masked_lm_keys(network: str, head: str, cfg: EncoderConfig) -> list[tuple[str, list[str]]]:
    """One of `Electra`'s networks and a `GeneratorHead` as an ElectraForMaskedLM."""
    return (
        _embedding_keys("embeddings.", "electra.")
        + _transformer_keys(f"{network}.", "electra.", cfg)
        + _pairs((f"{head}.dense", "generator_predictions.dense"), (f"{head}.norm", "generator_predictions.LayerNorm"))
        + [(f"{head}.bias", ["generator_lm_head.bias"])]
    )


def key_map(kind: str, cfg: EncoderConfig) -> list[tuple[str, list[str]]]:
    """Our state-dict keys and the transformers keys they become, for one export `kind`.

    discriminator/generator: keys of `Electra` -> ElectraForPreTraining/ElectraForMaskedLM;
    discriminator_lm: the discriminator with its masked-LM head (Replace MLM ...) -> ElectraForMaskedLM.
    encoder: keys of `Encoder` -> ElectraModel (under `electra.` as in every head model).
    sequence/token/span: keys of `SequenceClassifier`/`TokenClassifier`/`QuestionAnswerer` -> their
    transformers twins.
    """
    if kind == "discriminator":
        return (
            _embedding_keys("embeddings.", "electra.")
            + _transformer_keys("discriminator.", "electra.", cfg)
            + _pairs(
                ("discriminator_head.dense", "discriminator_predictions.dense"),
                ("discriminator_head.out", "discriminator_predictions.dense_prediction"),
            )
        )
    if kind == "generator":
        return _masked_lm_keys("generator", "generator_head", cfg)
    if kind == "discriminator_lm":
        return _masked_lm_keys("discriminator", "discriminator_lm_head", cfg)
    encoder = _embedding_keys("embeddings.", "electra.") + _transformer_keys("transformer.", "electra.", cfg)
    if kind == "encoder":
        return encoder
    encoder = [(f"encoder.{o}", h) for o, h in encoder]
    if kind == "sequence":
        return encoder + _pairs(("dense", "classifier.dense"), ("out", "classifier.out_proj"))
    if kind == "token":
        return encoder + _pairs(("out", "classifier"))
    if kind == "span":
        return encoder + _pairs(("out", "qa_outputs"))
    raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(HF_ARCHITECTURES)}")


def to_hf_state(state: dict[str, torch.Tensor], kind: str, cfg: EncoderConfig) -> dict[str, torch.Tensor]:
    out = {}
    for ours, theirs in key_map(kind, cfg):
        parts = state[ours].detach().cpu().chunk(len(theirs), dim=0)
        for name, part in zip(theirs, parts, strict=True):
            out[name] = part.contiguous().clone()
    return out


def from_hf_state(
    hf: dict[str, torch.Tensor], kind: str, cfg: EncoderConfig, where: str = "the checkpoint"
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Our state dict from transformers tensors; also returns the keys left unused."""
    if not any(k.startswith("electra.") for k in hf):  # a bare ElectraModel saves without the prefix
        hf = {f"electra.{k}": v for k, v in hf.items()}
    used, state, missing = set(), {}, []
    for ours, theirs in key_map(kind, cfg):
        absent = [t for t in theirs if t not in hf]
        if absent:
            missing += absent
            continue
        state[ours] = torch.cat([hf[t] for t in theirs], dim=0) if len(theirs) > 1 else hf[theirs[0]]
        used.update(theirs)
    if missing:
        raise ValueError(
            f"{where} lacks {len(missing)} tensors needed for an ELECTRA {kind}, e.g. {', '.join(missing[:3])}; "
            f"is it an ELECTRA {HF_ARCHITECTURES[kind]} folder?"
        )
    head, words = hf.get("generator_lm_head.weight"), hf["electra.embeddings.word_embeddings.weight"]
    if kind == "generator" and head is not None and not torch.equal(head, words):
        raise ValueError(
            f"{where}: its output layer (generator_lm_head.weight) is its own, not tied to its word embeddings "
            "(saved with tie_word_embeddings false); ELECTRA's generator shares one matrix for both, so this "
            "model would lose its trained output layer: continue from a generator with tied embeddings"
        )
    unused = sorted(
        k for k in hf if k not in used and not k.endswith(_IGNORED_SUFFIXES) and k != "generator_lm_head.weight"
    )  # tied to the word embeddings
    return state, unused


# ---------------------------------------------------------------------------------------
# config.json
# ---------------------------------------------------------------------------------------


def to_hf_config(cfg: EncoderConfig, kind: str, **extra) -> dict:
    return {
        "architectures": [HF_ARCHITECTURES[kind]],
        "model_type": "electra",
        "vocab_size": cfg.vocab_size,
        "embedding_size": cfg.embedding_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.ffn_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.max_positions,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": cfg.pad_token_id,
        "position_embedding_type": "absolute",
        "classifier_dropout": None,
        "tie_word_embeddings": True,
        **extra,
    }


def from_hf_config(d: dict, where: str = "config.json") -> EncoderConfig:
    if d.get("model_type", "electra") != "electra":
        raise ValueError(f"{where} describes a {d['model_type']!r} model, not an ELECTRA one")
    unsupported = {
        "hidden_act": ("gelu", d.get("hidden_act", "gelu")),
        "position_embedding_type": ("absolute", d.get("position_embedding_type", "absolute")),
        "is_decoder": (False, d.get("is_decoder", False)),
    }
    for name, (want, got) in unsupported.items():
        if got != want:
            raise ValueError(f"{where} sets {name}={got!r}; only {want!r} is supported")
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    if "data_sha256" in d:
        raise ValueError(
            f"{where} holds a pre-training run's settings, not a model's: export the run first "
            "(electra export RUN --out FOLDER) and point at that folder"
        )
    if missing := [k for k in required if k not in d]:
        raise ValueError(f"{where} has no {', '.join(missing)}: not a transformers ELECTRA config")
    return EncoderConfig(
        vocab_size=d["vocab_size"],
        embedding_size=d.get("embedding_size", 128),  # transformers' default, as it reads such a config
        hidden_size=d["hidden_size"],
        num_layers=d["num_hidden_layers"],
        num_heads=d["num_attention_heads"],
        ffn_size=d["intermediate_size"],
        max_positions=d.get("max_position_embeddings", 512),
        type_vocab_size=d.get("type_vocab_size", 2),
        dropout=d.get("hidden_dropout_prob", 0.1),
        attention_dropout=d.get("attention_probs_dropout_prob", 0.1),
        layer_norm_eps=d.get("layer_norm_eps", 1e-12),
        pad_token_id=d.get("pad_token_id") or 0,
        initializer_range=d.get("initializer_range", 0.02),
    )


# ---------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A local folder as is; anything else is fetched from the Hugging Face hub (cached)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; point at a model folder")
    if str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1:
        raise FileNotFoundError(f"model folder {path} does not exist")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise FileNotFoundError(
            f"{name_or_path} is not a local folder, and huggingface_hub is not installed to fetch it "
            "from the hub; pip install 'electra[hf]' or download the folder yourself"
        ) from e
    from electra import hub

    offline = hub.unreachable()  # then only the local hub cache can have it: asked without retrying the network
    try:
        return Path(
            snapshot_download(
                str(name_or_path),
                allow_patterns=["*.json", "*.safetensors", "*.bin", "vocab.txt"],
                local_files_only=offline is not None,
            )
        )
    except Exception as e:
        why = f"not in the local hub cache, and the hub cannot be reached: {offline}" if offline else None
        if path.parent.is_dir():  # "models/dsic" beside a local "models": a mistyped folder, most likely
            raise FileNotFoundError(
                f"model folder {path} does not exist ({path.parent} has {', '.join(_listing(path.parent))}), "
                f"and the Hugging Face hub has no model {name_or_path} reachable from here"
            ) from e
        raise FileNotFoundError(
            f"{name_or_path} is not a folder here, and could not be fetched from the Hugging Face hub "
            f"({why or f'{type(e).__name__}: {e}'}); "
            "download the folder where the hub is reachable and pass its local path"
        ) from e


def _listing(folder: Path, most: int = 8) -> list[str]:
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    return names[:most] + ["..."] * (len(names) > most) or ["nothing"]


def _read_json(path: Path) -> dict:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore the file or export the folder again") from e
    if not isinstance(found, dict):
        raise ValueError(f"{path} holds a JSON {type(found).__name__}, not an object; restore the file")
    return found


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no config.json; {_not_a_model(folder)}")
    return _read_json(path)


def _not_a_model(folder: Path) -> str:
    """What to pass instead of `folder`, a folder from another stage than a model's."""
    if (folder / "manifest.json").is_file():
        return (
            "it is prepared pre-training data (`electra prepare`); pass a model: a pre-training run, "
            "one of its checkpoints, or an exported or fine-tuned folder"
        )
    if folder.is_dir() and any(p.name.startswith("step-") for p in folder.iterdir() if p.is_dir()):
        return f"it holds a run's checkpoints; pass the run ({folder.parent}) or one checkpoint in it"
    return "is it a Hugging Face model folder?"


def read_results(folder: Path) -> dict:
    """The results.json `electra finetune` writes beside its model (task, labels, settings, the
    options it ran with), or {} for a folder from elsewhere."""
    path = folder / "results.json"
    return _read_json(path) if path.is_file() else {}


def fine_tuned_options(results: dict) -> dict:
    """The max_length, doc_stride, null_threshold and csv columns (text_field, pair_field,
    label_field, label_separator, label_columns) a model was fine-tuned and scored with (from
    `read_results`; None where not recorded): evaluating or answering with them scores its way."""
    given = results.get("config", {})
    fields = (
        "doc_stride",
        "null_threshold",
        "text_field",
        "pair_field",
        "label_field",
        "label_separator",
        "label_columns",
    )
    return {"max_length": results.get("settings", {}).get("max_length"), **{k: given.get(k) for k in fields}}


def csv_fields(results: dict) -> tuple[str | None, str | None]:
    """The text and pair columns (or JSONL fields) a `--task csv` model was fine-tuned on, from
    `read_results`; (None, None) for a model of any other task."""
    if results.get("task") != "csv":
        return None, None
    fine = fine_tuned_options(results)
    return fine["text_field"], fine["pair_field"]


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder: model.safetensors, its sharded form, or pytorch_model.bin."""
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").exists():
        files = [folder / "model.safetensors"]
    elif index.exists():
        try:
            files = [folder / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{index} is not a safetensors index ({e}); restore it or export the folder again") from e
    elif (folder / "pytorch_model.bin").exists():
        files = [folder / "pytorch_model.bin"]
    else:
        raise FileNotFoundError(f"{folder} has no model.safetensors or pytorch_model.bin")
    state = {}
    for path in files:
        try:
            if path.suffix == ".bin":  # weights_only: tensors and plain containers only, no code runs on load
                state.update(torch.load(path, map_location="cpu", weights_only=True))
            else:
                state.update(load_file(path))
        except Exception as e:  # a truncated download or copy, another format under this name
            first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
            raise ValueError(
                f"{path} cannot be read as weights ({first}): the file is damaged or not a weights file; "
                "download or export the folder again"
            ) from e
    return state


def _write_tokenizer(tokenizer_dir: str | os.PathLike | None, dest: Path, max_positions: int, vocab_size: int) -> None:
    """The tokenizer of `tokenizer_dir` (ours, or any transformers folder with tokenizer.json or
    vocab.txt) written afresh, with `model_max_length` the model's positions: pipelines that
    truncate to it then never feed the model more positions than it has."""
    if tokenizer_dir is None:
        return
    save_tokenizer(load_model_tokenizer(tokenizer_dir, vocab_size), dest, model_max_length=max_positions)


def _write(folder, state: dict, config: dict, tokenizer_dir, overwrite: bool, extra_files=None, together=None) -> Path:
    """Write the folder atomically. With `together` (an `atomic.Together`), it is published when
    that stack closes, with every other folder written into it: all of them, or on an error none
    (two exports of one run never leave one written and the other not; after a kill between
    their renames, the next write of either removes the one renamed)."""
    with contextlib.ExitStack() as own:
        tmp = (own if together is None else together).enter_context(publish_dir(folder, overwrite, together))
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        # the stored precision, which `from_pretrained(dtype="auto")` and the hub read
        stored = next(t.dtype for t in state.values() if t.is_floating_point())
        dtype = str(stored).removeprefix("torch.")
        config = {**config, "dtype": dtype, "torch_dtype": dtype}  # the name transformers before 4.56 reads
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        _write_tokenizer(tokenizer_dir, tmp, config["max_position_embeddings"], config["vocab_size"])
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return Path(folder)


def export_discriminator(
    model: Electra, folder, tokenizer_dir=None, overwrite: bool = False, extra_files=None, together=None
) -> Path:
    """An `ElectraForPreTraining` folder: the encoder to fine-tune. `extra_files` ({name: text},
    a model card) are written into it; `together`: see `_write`."""
    cfg = model.cfg.discriminator
    state = {**model.state_dict(), "embeddings.word.weight": model.discriminator_word_embeddings().detach()}
    return _write(
        folder,
        to_hf_state(state, "discriminator", cfg),
        to_hf_config(cfg, "discriminator"),
        tokenizer_dir,
        overwrite,
        extra_files,
        together,
    )


def export_generator(
    model: Electra, folder, tokenizer_dir=None, overwrite: bool = False, extra_files=None, together=None
) -> Path:
    """An `ElectraForMaskedLM` folder (fill-mask); its output layer is tied to the embeddings."""
    cfg = model.cfg.generator
    return _write(
        folder,
        to_hf_state(model.state_dict(), "generator", cfg),
        to_hf_config(cfg, "generator"),
        tokenizer_dir,
        overwrite,
        extra_files,
        together,
    )


def export_discriminator_lm(
    model: Electra, folder, tokenizer_dir=None, overwrite: bool = False, extra_files=None, together=None
) -> Path:
    """The discriminator network with its masked-LM head (a Replace MLM or All-Tokens MLM run's main
    network) as an `ElectraForMaskedLM` folder; the head's output layer is tied to the embeddings."""
    if model.discriminator_lm_head is None:
        raise ValueError("this model's discriminator has no masked-LM head; export it with export_discriminator")
    state = {**model.state_dict(), "embeddings.word.weight": model.discriminator_word_embeddings().detach()}
    cfg = model.cfg.discriminator
    return _write(
        folder,
        to_hf_state(state, "discriminator_lm", cfg),
        to_hf_config(cfg, "discriminator_lm"),
        tokenizer_dir,
        overwrite,
        extra_files,
        together,
    )


def _label_config(id2label: dict[int, str] | list[str], kind: str, cfg: EncoderConfig, **extra) -> dict:
    if not isinstance(id2label, dict):
        id2label = dict(enumerate(id2label))
    id2label = {int(i): str(label) for i, label in id2label.items()}
    return to_hf_config(
        cfg,
        kind,
        id2label={str(i): v for i, v in id2label.items()},
        label2id={v: i for i, v in id2label.items()},
        **extra,
    )


def export_sequence_classifier(
    model: SequenceClassifier,
    folder,
    id2label,
    tokenizer_dir=None,
    overwrite: bool = False,
    extra_files=None,
    multi_label: bool = False,
) -> Path:
    """An `ElectraForSequenceClassification` folder; one label means regression. `multi_label`:
    each label a yes/no of its own (problem_type multi_label_classification: transformers'
    pipeline then scores each label with a sigmoid)."""
    if len(id2label) != model.num_labels:
        raise ValueError(f"id2label has {len(id2label)} labels but the model predicts {model.num_labels}")
    problem = "multi_label_classification" if multi_label else "single_label_classification"
    problem = "regression" if model.num_labels == 1 else problem
    config = _label_config(id2label, "sequence", model.cfg, problem_type=problem)
    state = to_hf_state(model.state_dict(), "sequence", model.cfg)
    return _write(folder, state, config, tokenizer_dir, overwrite, extra_files)


def export_token_classifier(
    model: TokenClassifier, folder, id2label, tokenizer_dir=None, overwrite: bool = False, extra_files=None
) -> Path:
    if len(id2label) != model.num_labels:
        raise ValueError(f"id2label has {len(id2label)} labels but the model predicts {model.num_labels}")
    config = _label_config(id2label, "token", model.cfg)
    state = to_hf_state(model.state_dict(), "token", model.cfg)
    return _write(folder, state, config, tokenizer_dir, overwrite, extra_files)


def export_question_answerer(
    model: QuestionAnswerer, folder, tokenizer_dir=None, overwrite: bool = False, extra_files=None
) -> Path:
    """An `ElectraForQuestionAnswering` folder: `AutoModelForQuestionAnswering` loads it (transformers 5
    has no question-answering pipeline; `electra predict` answers questions with it)."""
    config = to_hf_config(model.cfg, "span", num_labels=2)
    state = to_hf_state(model.state_dict(), "span", model.cfg)
    return _write(folder, state, config, tokenizer_dir, overwrite, extra_files)


def load_question_answerer(folder: str | os.PathLike) -> QuestionAnswerer:
    """A fine-tuned `ElectraForQuestionAnswering` folder (ours, or one from transformers)."""
    return load_classifier(folder, ("span",))[0]


def _load(module: torch.nn.Module, state: dict[str, torch.Tensor], folder) -> None:
    # strict: every parameter of ours must be filled, and nothing may be left over
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:  # tensors of other shapes than config.json describes
        detail = next((line.strip().rstrip(".") for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise ValueError(
            f"{folder}: the weights do not match its config.json ({detail}); "
            "the folder mixes two models: restore the config.json saved with these weights"
        ) from e


def load_electra(
    discriminator: str | os.PathLike, generator: str | os.PathLike, disentangled_embeddings: bool = False
) -> Electra:
    """Our pre-training pair from two transformers folders, e.g. google/electra-small-*.

    The embeddings are shared, so the discriminator's are kept; a generator whose own
    embeddings differ is reported in the returned model's `import_notes`. With
    `disentangled_embeddings` the generator's word embeddings are kept and the discriminator's
    difference from them becomes the delta, so the discriminator's word embeddings come back as
    that sum (equal up to float rounding, about 1e-8); position and token-type embeddings and
    the embedding LayerNorm stay shared, the discriminator's.
    """
    dfolder, gfolder = resolve(discriminator), resolve(generator)
    dcfg = from_hf_config(read_config(dfolder), f"{dfolder}/config.json")
    gcfg = from_hf_config(read_config(gfolder), f"{gfolder}/config.json")
    model = Electra(ModelConfig(dcfg, gcfg, disentangled_embeddings))
    dstate, _ = from_hf_state(read_weights(dfolder), "discriminator", dcfg, str(dfolder))
    gstate, _ = from_hf_state(read_weights(gfolder), "generator", gcfg, str(gfolder))
    if disentangled_embeddings:
        word = gstate["embeddings.word.weight"]
        dstate["embedding_delta"] = dstate["embeddings.word.weight"] - word
        dstate["embeddings.word.weight"] = word
    notes = []
    for k in [k for k in gstate if k.startswith("embeddings.")]:
        if not torch.equal(gstate[k], dstate[k]):
            notes.append(f"generator {k} differs from the discriminator's; the discriminator's is shared")
        del gstate[k]
    _load(model, {**dstate, **gstate}, f"{dfolder} and {gfolder}")
    model.import_notes = notes
    return model


def load_encoder(folder: str | os.PathLike) -> Encoder:
    """The encoder of any ELECTRA folder (discriminator, generator, classifier, bare model)."""
    folder = resolve(folder)
    cfg = from_hf_config(read_config(folder), f"{folder}/config.json")
    state, _ = from_hf_state(read_weights(folder), "encoder", cfg, str(folder))
    encoder = Encoder(cfg)
    _load(encoder, state, folder)
    return encoder


def _labels(config: dict, head: torch.Tensor) -> dict[int, str]:
    """config.json's labels; transformers leaves out its default names (LABEL_0, LABEL_1, ...), so
    a folder without them has as many as its output layer has rows."""
    if "id2label" not in config:
        return {i: f"LABEL_{i}" for i in range(head.shape[0])}
    return {int(i): label for i, label in config["id2label"].items()}


def load_classifier(folder: str | os.PathLike, kinds: tuple[str, ...] = ("sequence", "token", "span")):
    """A fine-tuned folder of one of `kinds` ("sequence", "token", "span"): (model, id2label, kind);
    a question answerer ("span") has no labels."""
    folder = resolve(folder)
    config = read_config(folder)
    found = [k for k in kinds if HF_ARCHITECTURES[k] in (config.get("architectures") or [])]
    if not found:
        what = ", ".join(config.get("architectures") or []) or "no transformers architecture"
        run = "data_sha256" in config or "format" in config  # a run's settings or a checkpoint's config
        wanted = ", ".join(HF_ARCHITECTURES[k] for k in kinds)
        heads = [HF_ARCHITECTURES[k] for k in ("sequence", "token", "span")]
        if any(a in heads for a in config.get("architectures") or []):  # fine-tuned, for another kind of task
            raise ValueError(f"{folder} holds {what}, fine-tuned for another kind of task than this one ({wanted})")
        if run:
            raise ValueError(
                f"{folder} is a pre-training run, not a fine-tuned model ({wanted}); fine-tune it first "
                f"(electra finetune --model {folder} ...) and point at the folder that writes"
            )
        raise ValueError(f"{folder} holds {what}, not a fine-tuned model ({wanted}); point at a fine-tuned folder")
    kind = found[0]
    cfg = from_hf_config(config, f"{folder}/config.json")
    state, _ = from_hf_state(read_weights(folder), kind, cfg, str(folder))
    if kind == "span":
        model, id2label = QuestionAnswerer(cfg), {}
    else:
        id2label = _labels(config, state["out.weight"])
        model = (SequenceClassifier if kind == "sequence" else TokenClassifier)(cfg, num_labels=len(id2label))
    _load(model, state, folder)
    return model, id2label, kind


def load_sequence_classifier(folder: str | os.PathLike) -> tuple[SequenceClassifier, dict[int, str]]:
    """A fine-tuned `ElectraForSequenceClassification` folder and its id2label."""
    return load_classifier(folder, ("sequence",))[:2]


def load_token_classifier(folder: str | os.PathLike) -> tuple[TokenClassifier, dict[int, str]]:
    """A fine-tuned `ElectraForTokenClassification` folder and its id2label."""
    return load_classifier(folder, ("token",))[:2]
