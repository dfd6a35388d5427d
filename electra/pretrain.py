"""`electra pretrain`: the training loop, top to bottom.

    data ──Loader──▶ batch ──objective (mask, generator, sample, discriminator)──▶ loss
    loss ──backward (accumulated)──▶ clip 1.0 ──AdamW, warmup × linear decay──▶ checkpoint

Exact resume: every random draw is a function of (seed, step) (the objective's hash noise;
dropout re-seeded each step and process), the loader's state is two integers, and checkpoints are
atomic folders. A run resumed from any checkpoint reproduces an uninterrupted one bitwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from electra import checkpoint as ckpt
from electra import parallel
from electra.atomic import check_writable, folder_lock, publish_file, refuse_overlap, remove_leftovers_in
from electra.config import (
    GENERATOR_FRACTION,
    ModelConfig,
    check_architecture,
    check_flags,
    check_options,
    preset,
    sized,
)
from electra.data import Loader, Prefetcher, Shards, iterate
from electra.model import Electra, checkpoint_activations
from electra.objective import CONTINUES, MAIN_LM_HEAD, OBJECTIVES, SPECIAL, ObjectiveConfig, rates
from electra.optim import adamw, lr_factor, set_lr
from electra.progress import progress_bar
from electra.signals import Interrupted, StopRequest
from electra.step import Update

# The paper's pre-training hyperparameters (Clark et al. 2020, Table 6).
PRESET_TRAINING = {
    "tiny": {"lr": 1e-3, "batch_size": 16, "max_steps": 1000, "mask_prob": 0.15},
    "small": {"lr": 5e-4, "batch_size": 128, "max_steps": 1_000_000, "mask_prob": 0.15},
    "base": {"lr": 2e-4, "batch_size": 256, "max_steps": 766_000, "mask_prob": 0.15},
    "large": {"lr": 2e-4, "batch_size": 2048, "max_steps": 400_000, "mask_prob": 0.25},
}

# Settings that must match to resume: they change what the weights mean or which rows come next.
RESUME_KEYS = (
    "data_sha256",
    "preset",
    "model",  # generator size, dropout and embedding sharing, resolved: the preset's default equals itself
    "objective",
    "batch_size",
    "lr",
    "warmup_steps",
    "seed",
    "weight_decay",
    "init_discriminator",
    "init_generator",
)

# Settings added since runs began recording them: a run saved before holds the default
RESUME_DEFAULTS = {"objective.whole_word.": False}  # keys as `_flat` spells them

# What a run folder holds before its first checkpoint (a run stopped early, or a start that was refused)
RUN_FILES = {"config.json", "metrics.jsonl", "tensorboard", "checkpoints", "report.png"}

# Validation batches have a fixed size, so that valid_* figures do not depend on the number of
# processes, micro-batches or the batch size, and a run compares with any other on the same data.
EVAL_BATCH = 32

# inductor's options per --compile-mode; its own CUDA graphs stay off, `Update` captures the whole update
COMPILE_MODES = {"default": {}, "max-autotune": {"max_autotune": True, "coordinate_descent_tuning": True}}
# inductor generates kernels; aot_eager traces and partitions the step as inductor would, then runs
# ATen's own kernels (quick to compile: tells a capture problem from a kernel one); eager: capture only
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")


def compile_options(mode: str, device: torch.device) -> dict:
    """inductor's options for a training step: the mode's, and on CUDA combo_kernels (independent
    small kernels run as one launch): ELECTRA-Small's step at 128 x 128 ran 1.08x faster with it on
    an H200 (docs/performance.md)."""
    return {**COMPILE_MODES[mode], **({"combo_kernels": True} if device.type == "cuda" else {})}


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row; the last good checkpoint is intact."""


class ModelConfigGiven(ValueError):
    """A model folder's config.json where pre-training options were expected."""


@dataclass(frozen=True)
class PretrainConfig:
    data: str
    out: str
    preset: str = "small"
    objective: str = "electra"
    max_steps: int | None = None  # default: the preset's
    max_tokens: int | None = None  # stop (and end the schedule) after this many tokens
    max_minutes: float | None = None  # stop after this wall-clock time (the schedule is by steps)
    batch_size: int | None = None  # global batch, default: the preset's
    micro_batches: int = 1  # gradient accumulation: micro-batches per step
    lr: float | None = None
    warmup_steps: int | None = None  # default: min(10,000, 10% of the steps)
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    mask_prob: float | None = None
    rtd_weight: float = 50.0
    temperature: float = 1.0
    generator_fraction: float | None = None
    # sizes other than the preset's, from a --config file: {"discriminator": {"num_layers": 6}, "generator": {...}}
    architecture: dict | None = None
    disentangled_embeddings: bool = False  # DeBERTa-v3 gradient-disentangled embedding sharing
    whole_word_masking: bool = False  # choose whole words (a token and its ## pieces), not single tokens
    dropout: float | None = None  # hidden and attention dropout (default: the preset's 0.1)
    strategy: str = "ddp"  # under torchrun: ddp, or fsdp (FSDP2) for models that do not fit
    seed: int = 0
    log_every: int = 10
    eval_every: int = 500
    eval_batches: int = 20
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    max_bad_steps: int = 20  # non-finite steps in a row before giving up
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast on CUDA (fp16 with loss scaling before Ampere), fp32 on CPU
    compile: bool | None = None  # torch.compile the step; default: on CUDA in a single process
    compile_mode: str = "default"  # or max-autotune: inductor benchmarks GEMM and kernel configs (longer compile)
    compile_backend: str = "inductor"  # or aot_eager, eager: torch.compile's backend
    cuda_graph: str = "auto"  # capture the whole update as a CUDA graph: auto (CUDA, one process), on, off
    activation_checkpointing: bool = False  # recompute each block in backward: less memory, more compute
    deterministic: bool = False  # kernels that add in a fixed order: bitwise-repeatable runs on CUDA too
    tensorboard: bool = False
    init_discriminator: str | None = None  # continue pre-training a released model (HF folders)
    init_generator: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_flags(self)
        if self.strategy not in parallel.STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; use {' or '.join(parallel.STRATEGIES)}")
        if self.preset not in PRESET_TRAINING:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESET_TRAINING)}")
        if (self.init_discriminator is None) != (self.init_generator is None):
            raise ValueError("continuing pre-training needs both --init-discriminator and --init-generator")
        if self.init_discriminator is not None and self.generator_fraction is not None:
            raise ValueError(
                "--generator-fraction sizes a new generator; with --init-* the folders give both networks' sizes: "
                "drop --generator-fraction"
            )
        check_architecture(self.architecture)
        if self.init_discriminator is not None and self.architecture is not None:
            raise ValueError("architecture sizes a new model; the --init-* folders give both networks' sizes: drop it")
        if self.objective == "mlm" and (self.architecture or {}).get("generator"):
            raise ValueError(
                "--objective mlm trains one network, sized by architecture.discriminator: drop architecture.generator"
            )
        if self.init_discriminator is not None and self.objective not in ("electra", "electra-15"):
            raise ValueError(
                f"--objective {self.objective} trains a new masked LM from scratch; continuing a released "
                f"generator + discriminator pair is the ELECTRA objective: drop --objective {self.objective} "
                "or the --init-* flags"
            )
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")
        if self.compile_backend not in COMPILE_BACKENDS:
            raise ValueError(
                f"compile_backend must be one of {', '.join(COMPILE_BACKENDS)}, got {self.compile_backend!r}"
            )
        for name, default in (("compile_mode", "default"), ("compile_backend", "inductor")):
            if self.compile is False and getattr(self, name) != default:
                raise ValueError(f"{name} {getattr(self, name)!r} needs compiling; drop --no-compile")
        if self.compile_backend != "inductor" and self.compile_mode != "default":
            raise ValueError(f"compile_mode {self.compile_mode!r} is inductor's; drop --compile-backend")
        if self.precision not in parallel.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(parallel.PRECISIONS)}, got {self.precision!r}")
        if self.cuda_graph not in ("auto", "on", "off"):
            raise ValueError(f"cuda_graph must be auto, on or off, got {self.cuda_graph!r}")
        if self.cuda_graph == "on" and self.activation_checkpointing:
            raise ValueError("--activation-checkpointing runs without a CUDA graph; drop --cuda-graph on")
        for name in ("data", "out"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a folder path, got {getattr(self, name)!r}")
        check_options(
            self,
            **dict.fromkeys(("max_steps", "max_tokens", "batch_size", "micro_batches", "log_every"), "count"),
            **dict.fromkeys(("eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints"), "count"),
            max_bad_steps="count",
            warmup_steps="count0",
            seed="seed",
            **dict.fromkeys(("max_minutes", "lr", "clip_norm", "temperature"), "positive"),
            weight_decay="non-negative",
            rtd_weight="non-negative",
            mask_prob="open fraction",
            dropout="fraction",
            generator_fraction="share",
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike, unset: tuple[str, ...] = (), **overrides) -> PretrainConfig:
        """The options a JSON file sets (a run's RUN/config.json too), but `unset` ones, then the
        `overrides` that are not None (the flags given)."""
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read config file {path}: {e}") from e
        if not isinstance(values, dict):
            raise ValueError(f'{path} must hold one JSON object of options, like {{"data": ..., "out": ...}}')
        if "model_type" in values:
            raise ModelConfigGiven(
                f"{path} is a transformers model's config.json, not pre-training options; to start from that "
                "model, pass its folder to --init-discriminator"
            )
        recorded, run_record = None, "data_sha256" in values
        if run_record:  # a run's RUN/config.json: its settings, minus what a run derives
            base, recorded = values.get("working_dir"), values.get("model")
            derived = values.get("derived", [])
            run_only = (
                "data_sha256",
                "corpus",
                "model",
                "working_dir",
                "derived",
                *(derived if isinstance(derived, list) else []),
            )
            values = {k: v for k, v in values.items() if k not in run_only}
            if isinstance(values.get("objective"), dict):
                values["objective"] = values["objective"]["kind"]
            if isinstance(base, str):  # its relative paths were typed there: read them back from anywhere
                values.update({k: located(values.get(k), base) for k in PATH_KEYS if values.get(k) is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        flags = sorted(set(values) & {"resume", "quiet"})  # how this command runs, not what the run is
        if flags:
            raise ValueError(
                f"{path} sets {' and '.join(flags)}, which only the command line gives: drop it there and "
                f"pass {' '.join('--' + f for f in flags)}"
            )
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path} sets unknown options {', '.join(unknown)}")
        if recorded is not None:
            edits = _model_edits(cls(**values), recorded)
            if edits:
                raise ValueError(
                    f'{path} records a model its settings do not build ({"; ".join(edits[:3])}): its "model" '
                    'section is the run\'s record and is not read back; set sizes under "architecture" instead, '
                    'like {"architecture": {"discriminator": {"num_layers": 6}}}'
                )
        if run_record and overrides.get("out") is None and isinstance(values.get("out"), str):
            typed_in = base if isinstance(base, str) else os.getcwd()
            holder = Path(path).parent
            if os.path.realpath(os.path.join(typed_in, values["out"])) != os.path.realpath(holder):
                raise ValueError(
                    f"{path} records the run in {values['out']}, not the folder {holder} that holds it (moved or "
                    f"copied?): pass --out {holder} to go on with the run there, or --out NEW to start a new one"
                )
        values = {k: v for k, v in values.items() if k not in unset}
        values = {**values, **{k: v for k, v in overrides.items() if v is not None}}
        missing = [name for name in ("data", "out") if name not in values]
        if missing:
            raise ValueError(f"{path} does not set {' and '.join(missing)}; set it there or pass --{missing[0]}")
        return cls(**values)

    def resolved(self, row_tokens: float) -> dict:
        """Every setting with the preset's defaults filled in, for rows of `row_tokens` real tokens
        on average (the data's: rows end short at documents' ends)."""
        p = PRESET_TRAINING[self.preset]
        d = asdict(self)
        for name in ("batch_size", "lr", "mask_prob", "max_steps"):
            d[name] = p[name] if d[name] is None else d[name]
        if self.max_steps is None and self.max_tokens is not None:  # the schedule ends with the token budget
            d["max_steps"] = math.ceil(self.max_tokens / (d["batch_size"] * row_tokens))
        d["warmup_steps"] = self.warmup_steps if self.warmup_steps is not None else min(10_000, d["max_steps"] // 10)
        # filled in, not given: --config RUN/config.json derives them again (from its own preset and steps)
        d["derived"] = [
            k for k in ("batch_size", "lr", "mask_prob", "max_steps", "warmup_steps") if getattr(self, k) is None
        ]
        if d["warmup_steps"] and d["warmup_steps"] >= d["max_steps"]:  # warmup x decay would never near the peak
            raise ValueError(
                f"warmup-steps {d['warmup_steps']} is not below max-steps {d['max_steps']}: the learning rate would "
                "never reach its peak; choose fewer warmup steps"
            )
        return d


# the row length the paper's models were pre-trained on (Google's configure_pretraining.py: 512 for Base and Large)
PAPER_SEQ_LEN = {"small": 128, "base": 512, "large": 512}


def data_notes(data: str, manifest: dict, preset: str | None = None) -> list[str]:
    """What a run should know of its data: a part of a preparation, no validation rows, or rows
    shorter than the paper's for `preset`."""
    prepared = manifest.get("config", {})
    num, index, merged = prepared.get("num_parts", 1), prepared.get("part_index"), prepared.get("parts_merged")
    notes = []
    if num > 1 and index is not None:
        notes.append(
            f"{data} is part {index} of {num} of a preparation: it trains on that part's documents alone; "
            "`electra prepare --merge` the parts to train on all of them"
        )
    elif merged is not None and len(merged) < num:
        notes.append(f"{data} merges parts {', '.join(map(str, merged))} of {num}: the others' documents are left out")
    if not manifest["splits"]["valid"]["rows"]:
        notes.append(
            f"{data} has no validation rows, so no valid_* figures are logged "
            "(prepare with a larger --validation-fraction)"
        )
    if (paper := PAPER_SEQ_LEN.get(preset, 0)) > manifest["seq_len"]:
        notes.append(
            f"{data} has rows of {manifest['seq_len']} tokens; the paper pre-trains ELECTRA-{preset.capitalize()} on "
            f"rows of {paper} (prepare with --seq-len {paper} to match it: {paper / manifest['seq_len']:.2g}x the "
            "tokens per step, and positions past the rows' length stay untrained)"
        )
    return notes


def _model_edits(cfg: PretrainConfig, recorded) -> list[str]:
    """Where a run file's "model" record differs from the model its settings build: a hand edit."""
    if cfg.init_discriminator is not None:  # the model came from folders; --dropout is all that changes it
        return []
    try:
        settings = {**asdict(cfg), "objective": {"kind": cfg.objective}}
        built = model_config(settings, recorded["discriminator"]["vocab_size"]).to_dict()
    except (KeyError, TypeError) as e:
        return [f"its model section is incomplete ({e})"]
    return _differences(recorded, built)


def _differences(recorded, built, where: str = "") -> list[str]:
    if isinstance(recorded, dict) and isinstance(built, dict):
        keys = sorted(recorded)  # a key added since the run was recorded holds its default
        return [d for k in keys for d in _differences(recorded.get(k), built.get(k), f"{where}.{k}".lstrip("."))]
    return [] if recorded == built else [f"{where} is {recorded!r}, the settings build {built!r}"]


def build_model(cfg: dict, vocab_size: int, seq_len: int) -> Electra:
    if cfg["init_discriminator"]:
        from electra.hf import load_electra

        model = load_electra(cfg["init_discriminator"], cfg["init_generator"], cfg["disentangled_embeddings"])
        for note in model.import_notes:
            print(f"note: {note}", file=sys.stderr)
        if model.cfg.discriminator.vocab_size < vocab_size:
            raise ValueError(
                f"the initial model's vocabulary has {model.cfg.discriminator.vocab_size} entries but "
                f"the data's tokenizer {vocab_size}; prepare the data with the model's tokenizer "
                f"(--tokenizer {cfg['init_discriminator']})"
            )
        _check_same_tokenizer(cfg["data"], [cfg["init_discriminator"], cfg["init_generator"]])
        if cfg["dropout"] is not None:  # the released configs carry their own; --dropout replaces it
            state = model.state_dict()
            model = Electra(model.cfg.with_dropout(cfg["dropout"]))
            model.load_state_dict(state)
        positions = min(model.cfg.discriminator.max_positions, model.cfg.generator.max_positions)
        if seq_len > positions:
            raise ValueError(
                f"the data's rows of {seq_len} tokens exceed the initial model's {positions} positions; "
                f"prepare the data with --seq-len {positions} or less"
            )
        return model
    mcfg = model_config(cfg, vocab_size)
    if seq_len > mcfg.discriminator.max_positions:
        raise ValueError(
            f"the data's rows of {seq_len} tokens exceed the model's {mcfg.discriminator.max_positions} "
            f"positions; prepare the data with --seq-len {mcfg.discriminator.max_positions} or less, or set "
            f'{{"architecture": {{"discriminator": {{"max_positions": {seq_len}}}}}}} in a --config file'
        )
    return Electra(mcfg)


def model_config(cfg: dict, vocab_size: int) -> ModelConfig:
    """The new model that resolved settings describe (preset, architecture, generator size,
    dropout, sharing)."""
    kind = cfg["objective"]["kind"]
    # the BERT baseline's masked LM is the full-size network
    fraction = 1.0 if kind == "mlm" else cfg["generator_fraction"] or GENERATOR_FRACTION[cfg["preset"]]
    disc, gen = sized(preset(cfg["preset"], vocab_size=vocab_size).discriminator, fraction, cfg.get("architecture"))
    mcfg = ModelConfig(
        disc,
        gen,
        disentangled_embeddings=cfg["disentangled_embeddings"],
        discriminator_lm_head=kind in MAIN_LM_HEAD,
    )
    return mcfg if cfg["dropout"] is None else mcfg.with_dropout(cfg["dropout"])


def _check_same_tokenizer(data: str, model_dirs: list[str]) -> None:
    """Ids mean the same tokens in the data and in the models to continue (those that ship a
    tokenizer), and text reached them the same way (lowercased or not, accents kept or not)."""
    from electra import hf
    from electra.tokenizer import load_tokenizer, reading_difference

    ours = load_tokenizer(data)
    for model_dir in model_dirs:
        try:
            theirs = load_tokenizer(hf.resolve(model_dir))
        except FileNotFoundError:
            continue  # a folder of weights alone: the vocabulary-size check is all there is
        if ours.get_vocab() != theirs.get_vocab():
            raise ValueError(
                f"{data} was prepared with another tokenizer than {model_dir}'s, so its token ids would "
                f"mean other words to the model; prepare the data with --tokenizer {model_dir}"
            )
        if differ := reading_difference(ours, theirs):
            a, b = differ
            raise ValueError(
                f"{data} was prepared with a tokenizer that {a}, and {model_dir}'s {b}; "
                f"prepare the data with --tokenizer {model_dir}"
            )


def token_kinds(data: str, manifest: dict, whole_word: bool) -> torch.Tensor:
    """The (V,) table the objective masks by: specials (never masked) and, for whole-word masking,
    the vocabulary's word pieces ("##ing"), which are masked with the word they continue."""
    kinds = torch.zeros(manifest["vocab_size"], dtype=torch.int8)
    specials = manifest["special_tokens"]
    if whole_word:
        from electra.tokenizer import load_tokenizer

        pieces = [i for token, i in load_tokenizer(data).get_vocab().items() if token.startswith("##")]
        if not pieces:
            raise ValueError(
                f"whole-word masking needs a WordPiece vocabulary whose word pieces start with ##, and {data}'s "
                "tokenizer has none; drop --whole-word-masking or prepare the data with a WordPiece tokenizer"
            )
        kinds[pieces] = CONTINUES
    kinds[[specials[k] for k in ("pad", "cls", "sep", "mask")]] = SPECIAL  # never masked
    return kinds


def _flat(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    return {k: v for key, value in d.items() for k, v in _flat(value, f"{prefix}{key}.").items()}


PATH_KEYS = ("data", "out", "init_discriminator", "init_generator")


def located(path, base: str):
    """`path` as seen from the folder `base` when it is a relative path that exists there (an --init-*
    value may also be a hub name, which stays as it is)."""
    if not isinstance(path, str) or os.path.isabs(path) or not os.path.exists(os.path.join(base, path)):
        return path
    return os.path.normpath(os.path.join(base, path))


def _check_resume(saved: dict, now: dict) -> None:
    if saved.get("init_discriminator") and not now.get("init_discriminator"):
        raise ValueError(
            f"cannot resume: the run was started from {saved['init_discriminator']} and "
            f"{saved['init_generator']}; pass --init-discriminator and --init-generator again "
            "(or --config RUN/config.json, which holds every setting)"
        )
    cwd = os.getcwd()  # the same folders, typed from different working folders, are the same setting
    saved = {**saved, **{k: located(saved.get(k), saved.get("working_dir", cwd)) for k in PATH_KEYS}}
    now = {**now, **{k: located(now.get(k), cwd) for k in PATH_KEYS}}
    was = {**RESUME_DEFAULTS, **_flat({k: saved.get(k) for k in RESUME_KEYS})}
    new = _flat({k: now.get(k) for k in RESUME_KEYS})
    diffs = [
        f"data: {now.get('data')} holds other rows or another tokenizer than the run's {saved.get('data')}"
        if k.rstrip(".") == "data_sha256"  # the hashes themselves say nothing to a reader
        else f"{k.rstrip('.')}: checkpoint {was.get(k)!r}, now {new.get(k)!r}"
        for k in new
        if was.get(k) != new[k]
    ]
    if diffs:
        raise ValueError(
            "cannot resume: the run was started with other settings ("
            + "; ".join(diffs)
            + "). Use a new --out folder, or the original settings (--config RUN/config.json holds them all)"
        )


def _truncate_metrics(path: Path, step: int) -> int:
    """Drop log lines written after the checkpoint we resume from (a killed run may have some),
    and lines that do not parse (one cut short by the kill); returns how many did not parse."""
    if not path.exists():
        return 0
    keep, unreadable = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            unreadable += bool(line.strip())
    publish_file(path, "".join(line + "\n" for line in keep))
    return unreadable


@torch.no_grad()
def evaluate(
    step, shards: Shards, special, mask_id: int, batch_size: int, max_batches: int, device, autocast
) -> dict[str, float]:
    """Mean losses and metrics on the held-out rows, with fixed noise so values compare over time."""
    step.eval()
    totals: dict[str, torch.Tensor] = {}
    n = 0
    for i, batch in enumerate(iterate(shards, batch_size)):
        if i == max_batches:
            break
        b = batch.to(device)
        seed = torch.full((), 1_000_003 + i, dtype=torch.int64, device=device)  # a tensor: no recompiles
        with autocast():
            loss, metrics = step(b.input_ids, b.token_type_ids, b.attention_mask, special, b.rows, seed, mask_id)
        rows = len(b.rows)  # a shard's last batch may be short: weigh each batch's losses by its rows
        for k, v in {"loss": loss, **metrics}.items():
            v = v.detach().double() * (1 if v.dim() else rows)  # rates add their (hits, count)
            totals[k] = totals[k] + v if k in totals else v
        n += rows
    step.train()
    values = rates({k: v if v.dim() else v / max(n, 1) for k, v in totals.items()})
    return {f"valid_{k}": float(v) for k, v in values.items()}


def run(
    cfg: PretrainConfig, resume: bool = False, quiet: bool = False, *, announce_stop: bool = True, clock_from: int = 0
) -> dict:
    """Train until the step, token or time budget; returns the last logged metrics.

    Under `torchrun` every process runs this; each reads its slice of every global batch,
    and only rank 0 prints, logs and writes checkpoints. `quiet` hides the progress bar,
    `announce_stop=False` the closing line (where it stopped, the last checkpoint).
    `clock_from`: the time budget counts from the end of this many steps, not from the start
    (the timing probe's: compiling the step must not use up its minutes).
    """

    d, device = parallel.init(cfg.device)
    try:  # one run at a time writes a run folder: two would interleave their logs and checkpoints
        if d.main:
            check_writable(cfg.out)  # before any work: not below a file, not read-only
        lock = folder_lock(cfg.out) if d.main else contextlib.nullcontext()
        with lock, parallel.deterministic(cfg.deterministic):
            return _run(cfg, resume, quiet or not d.main, d, device, announce_stop, clock_from)
    finally:
        parallel.shutdown()


def _run(
    cfg: PretrainConfig,
    resume: bool,
    quiet: bool,
    d: parallel.Dist,
    device: torch.device,
    announce_stop: bool,
    clock_from: int = 0,
) -> dict:
    from electra.prepare import verify

    def say(text: str) -> None:
        if d.main:
            print(text, file=sys.stderr)

    out = Path(cfg.out)
    manifest = verify(cfg.data)
    for note in data_notes(cfg.data, manifest, None if cfg.init_discriminator else cfg.preset):
        say(f"note: {note}")
    seq_len = manifest["seq_len"]
    train = manifest["splits"]["train"]
    settings = cfg.resolved(train["tokens"] / max(train["rows"], 1))
    shard_hashes = ",".join(
        f["sha256"][:16] for s in manifest["splits"].values() for sh in s["shards"] for f in sh["files"].values()
    )
    settings["data_sha256"] = manifest["tokenizer_sha256"] + ":" + shard_hashes
    settings["working_dir"] = os.getcwd()  # what relative paths in these settings are relative to
    settings["corpus"] = {  # what the data was made from, for model cards
        "dataset": manifest.get("dataset"),
        "files": manifest["counts"]["files"],
        "bytes": manifest["counts"]["bytes"],
        "tokens": train["tokens"],
    }
    ocfg = ObjectiveConfig(
        cfg.objective, settings["mask_prob"], cfg.rtd_weight, cfg.temperature, cfg.whole_word_masking
    )
    settings["objective"] = asdict(ocfg)
    special = token_kinds(cfg.data, manifest, ocfg.whole_word)  # refused here, before anything is written
    B, steps = settings["batch_size"], settings["max_steps"]
    if B % (d.world_size * cfg.micro_batches):
        raise ValueError(
            f"batch size {B} does not split into {d.world_size} process{'es' * (d.world_size > 1)} x "
            f"{cfg.micro_batches} micro-batches; choose a multiple"
        )

    if cfg.cuda_graph == "on" and (device.type != "cuda" or d.enabled):
        raise ValueError("--cuda-graph on needs a CUDA device and a single process; use auto or off")
    parallel.allow_tf32(device)
    autocast = functools.partial(parallel.autocast, device, cfg.precision)

    # ── model: new, or the newest complete checkpoint ─────────────────────────────────────
    refuse_overlap(out, [cfg.data, cfg.init_discriminator, cfg.init_generator])
    existing = ckpt.list_checkpoints(out)
    if existing and not resume:
        raise FileExistsError(f"{out} already holds checkpoints; pass --resume to continue it, or use a new --out")
    foreign = [p.name for p in out.iterdir() if p.name not in RUN_FILES and p.name[0] != "."] if out.is_dir() else []
    if foreign and not existing:
        raise FileExistsError(f"{out} holds files that are not a pre-training run; choose a new or empty --out")
    state = None
    if resume and not existing:
        say(f"note: {out} holds no checkpoint to resume; starting a new run")
    if resume and existing:
        saved = ckpt.load_checkpoint(out, with_train_state=True)
        if cfg.init_discriminator:  # the model came from folders: only --dropout can change it now
            now = saved.model.cfg if cfg.dropout is None else saved.model.cfg.with_dropout(cfg.dropout)
        else:  # what these flags would build, with the preset's defaults resolved
            now = model_config(settings, manifest["vocab_size"])
        settings["model"] = now.to_dict()
        if cfg.max_steps is None and cfg.max_tokens is None:  # the run's own schedule, not the preset's default
            for key in ("max_steps", "max_tokens", "derived"):
                settings[key] = saved.meta["settings"].get(key, settings[key])
            steps = settings["max_steps"]
        budget = f"--max-steps {steps}"  # as it was given: --max-tokens sets the steps too
        if cfg.max_tokens is not None:
            budget = f"--max-tokens {cfg.max_tokens:,} ({steps} steps)"
        if cfg.warmup_steps is None:  # the default (10% of the steps) stays the run's, whatever --max-steps is now
            settings["warmup_steps"] = saved.meta["settings"].get("warmup_steps", settings["warmup_steps"])
            if settings["warmup_steps"] and settings["warmup_steps"] >= steps:
                raise ValueError(
                    f"cannot resume: the run warms up over {settings['warmup_steps']} steps, not below {budget}; "
                    "the learning rate would never reach its peak: pass a larger --max-steps"
                )
        _check_resume(saved.meta["settings"], settings)
        model, state = saved.model, saved.train_state
        if state["step"] > steps:
            raise ValueError(
                f"cannot resume: {saved.path} is at step {state['step']}, past {budget}; "
                "pass a larger --max-steps to train on"
            )
        say(f"resuming from {saved.path} (step {state['step']} of {steps:,}) on {d.world_size} process(es)")
        say(f"data: {cfg.data}")  # a copied run reads the folder its record names unless --data says otherwise
        before = saved.meta["settings"].get("max_steps")
        if before and before != steps:  # the schedule's end moved: the learning rate jumps to the new curve
            at, warmup = state["step"], settings["warmup_steps"] or 0
            was = settings["lr"] * lr_factor(at - 1, warmup, before)  # step `at` ran at this rate (0-based below)
            now = settings["lr"] * lr_factor(at, warmup, steps)
            say(
                f"the schedule now ends at step {steps:,}, not {before:,}: the learning rate goes from {was:.3g} "
                f"(step {at:,}) to {now:.3g} (step {at + 1:,})"
            )
    else:
        torch.manual_seed(cfg.seed)  # the initial weights are a function of the seed
        model = build_model(settings, manifest["vocab_size"], seq_len)
        settings["model"] = model.cfg.to_dict()
    model.to(device).train()
    # a token budget stops the run; when it also set the steps, the schedule's end is the budget's
    max_tokens = settings["max_tokens"]
    by_tokens = max_tokens is not None and "max_steps" in settings["derived"]
    checkpoint_activations(model, cfg.activation_checkpointing)
    step_module = parallel.TrainStep(model, OBJECTIVES[ocfg.kind], ocfg)
    train_step = eval_step = parallel.wrap(step_module, d, cfg.strategy, device)
    # validation stays eager: a few batches now and then are not worth a second compile
    chosen = cfg.compile_mode != "default" or cfg.compile_backend != "inductor"
    if cfg.compile or (cfg.compile is None and (chosen or (device.type == "cuda" and not d.enabled))):
        # dynamic=False: every batch has one shape, and a process that compiled the step before at
        # another shape (a probe, a notebook) recompiles it static, never with symbolic sizes
        options = compile_options(cfg.compile_mode, device) if cfg.compile_backend == "inductor" else {}
        train_step = torch.compile(train_step, backend=cfg.compile_backend, options=options or None, dynamic=False)
        took = "several minutes (max-autotune)" if cfg.compile_mode == "max-autotune" else "about a minute"
        if cfg.compile_backend != "inductor":
            took = "seconds"
        say(f"the first step compiles the training step: {took}, once; --no-compile skips it")
    # `model` stays unwrapped: saved keys never carry wrapper prefixes

    # fused AdamW (CPU and CUDA) can skip a non-finite update on the device, without a host sync
    optimizer = adamw(model, settings["lr"], settings["weight_decay"], fused=True)
    loader = Loader(Shards(cfg.data, "train"), B, seed=cfg.seed, rank=d.rank, world_size=d.world_size)
    valid = Shards(cfg.data, "valid") if manifest["splits"]["valid"]["rows"] else None
    step = tokens = skipped = 0
    trained_s = 0.0
    if state is not None:
        parallel.load_optimizer_state(model, optimizer, state["optimizer"])
        loader.load_state_dict(state["loader"])
        step, tokens, skipped = state["step"], state["tokens"], state["skipped"]
        trained_s = state.get("elapsed_s", 0.0)  # the time of the runs before this one (older checkpoints: 0)
    special = special.to(device)
    mask_id = manifest["special_tokens"]["mask"]

    # ── logs ──────────────────────────────────────────────────────────────────────────────
    metrics_path = out / "metrics.jsonl"
    writer = None
    if d.main:
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard") from e
        out.mkdir(parents=True, exist_ok=True)
        remove_leftovers_in(out / "checkpoints")  # of checkpoints a kill cut short, whatever their step
        publish_file(out / "config.json", json.dumps(settings, indent=2, sort_keys=True) + "\n")
        dropped = _truncate_metrics(metrics_path, step)
        if dropped:
            say(f"note: dropped {dropped} unreadable line(s) of {metrics_path}")
        if cfg.tensorboard:
            # a resume drops what a killed run logged after its checkpoint, as metrics.jsonl does
            writer = SummaryWriter(str(out / "tensorboard"), purge_step=step + 1 if step else None)

    def save(at_step: int) -> None:
        model_state, optim_state = parallel.full_state(model, optimizer)  # a collective under FSDP2
        if d.main:
            for g in optim_state["param_groups"]:  # a CUDA-graph run's settings, as any run's
                g["lr"], g["capturable"] = float(g["lr"]), False
            train_state = {
                "step": at_step,
                "tokens": tokens,
                "skipped": skipped,
                "elapsed_s": trained_s + time.perf_counter() - start_time,
                "optimizer": optim_state,
                "loss_scale": None if update.loss_scale is None else update.loss_scale.tolist(),
                # random draws need no state: they are functions of (seed, step)
                "loader": batches.state_dict(),
            }
            ckpt.save_checkpoint(
                ckpt.step_dir(out, at_step),
                model,
                train_state=train_state,
                meta={"settings": settings, "objective": ocfg.kind, "step": at_step, "tokens": tokens},
                tokenizer_dir=cfg.data,
                overwrite=True,
                model_state=model_state,
            )
            ckpt.prune_checkpoints(out, cfg.keep_checkpoints)
        parallel.barrier(d)

    # ── the loop ──────────────────────────────────────────────────────────────────────────
    # activation checkpointing reads and restores the random state from the host, which a capture does not allow
    auto_graph = device.type == "cuda" and not d.enabled and not cfg.activation_checkpointing
    use_graph = cfg.cuda_graph == "on" or (cfg.cuda_graph == "auto" and auto_graph)
    update = Update(
        train_step,
        model,
        optimizer,
        special,
        mask_id,
        ocfg.mask_prob,
        cfg.clip_norm,
        d,
        device,
        autocast,
        cuda_graph=use_graph,
        skipped=skipped,
        fp16=parallel.resolve_precision(cfg.precision, device) == "fp16",
        loss_scale=None if state is None else state.get("loss_scale"),
        whole_word=ocfg.whole_word,
    )
    batches = Prefetcher(loader, cfg.micro_batches, pin=device.type == "cuda")
    split = f"{batches.micro_batches} micro-batches" if batches.micro_batches > 1 else "one batch"
    say(f"each step: {B:,} rows of {seq_len} tokens, {parallel.layout(eval_step, d)}, {split} a process")

    def check_health() -> int:
        """Updates skipped so far; stops the run once `max_bad_steps` of them came in a row."""
        skipped, _, worst = (int(x) for x in update.counts.tolist())
        if worst >= cfg.max_bad_steps:
            bar.close()
            raise TrainingDiverged(
                f"{worst} non-finite steps in a row by step {step}; stopping. The last good "
                f"checkpoint is intact under {out / 'checkpoints'}; lower --lr or check the data"
            )
        return skipped

    start_time = time.perf_counter()
    first_step, budget_start = step, (start_time if clock_from == 0 else None)  # None: the clock not yet running
    last = {"time": start_time, "tokens": tokens, "skipped": skipped}
    logged: dict = {}
    saved_step = step if state is not None else None
    limit_s = None if cfg.max_minutes is None else cfg.max_minutes * 60
    bar = progress_bar(total=steps, initial=step, desc="pretrain", unit="step", disable=quiet, limit_s=limit_s)
    stop_reason = "max steps"
    request = StopRequest(say)
    request.install()
    agreement = parallel.Agreement(d)
    try:
        while step < steps:
            if max_tokens is not None and tokens >= max_tokens:  # resumed with its budget spent
                stop_reason = "max tokens"
                break
            seed = cfg.seed * 1_000_003 + step  # with the global row numbers, this fixes every random draw
            torch.manual_seed(parallel.dropout_seed(cfg.seed, d.rank, step))  # each process its own masks
            lr = set_lr(optimizer, settings["lr"], lr_factor(step, settings["warmup_steps"], steps))
            micro, batch_tokens = batches.next()
            out_metrics = update(micro, seed)  # stays on the device until a log line needs it
            step += 1
            tokens += batch_tokens
            bar.update(1)
            if step - first_step == clock_from:
                budget_start = time.perf_counter()

            # the last step of a run is logged, validated and saved, whichever budget ends it
            stop = "max steps" if step == steps else None
            # without --max-steps, the steps are the token budget's estimate: their end is the budget's
            if max_tokens is not None and (tokens >= max_tokens or (stop and by_tokens)):
                stop = "max tokens"
            # the time budget and a stop signal are agreed by all processes, so they stop at the same step
            late = (
                cfg.max_minutes is not None
                and budget_start is not None
                and time.perf_counter() - budget_start > cfg.max_minutes * 60
            )
            late, signalled = agreement([late, request.signum is not None])
            if stop is None:
                stop = "time budget" if late else "signal" if signalled else None
            # a stop signal saves without validating: a scheduler's notice may leave only seconds
            evaluate_now = valid is not None and (step % cfg.eval_every == 0 or stop not in (None, "signal"))
            if step % cfg.log_every == 0 or stop is not None or evaluate_now:
                values = dict(zip(update.names, out_metrics.tolist(), strict=True))
                skipped = check_health()
                if skipped > last["skipped"] and update.loss_scale is None:
                    say(f"step {step}: {skipped - last['skipped']} update(s) skipped for a non-finite loss or gradient")
                now = time.perf_counter()
                logged = {
                    "step": step,
                    "lr": lr,
                    "grad_norm": values.pop("grad_norm"),
                    "tokens": tokens,
                    "tokens_per_s": (tokens - last["tokens"]) / max(now - last["time"], 1e-9),
                    "elapsed_s": trained_s + now - start_time,  # over every run of it, resumes included
                    "skipped": skipped,
                    **values,
                }
                if update.loss_scale is not None:  # fp16: overflows skip updates and lower the scale, as designed
                    logged["loss_scale"] = update.loss_scale[0].item()
                last = {"time": now, "tokens": tokens, "skipped": skipped}
                if evaluate_now:  # every process evaluates: FSDP2 needs all of them for a forward
                    logged.update(
                        evaluate(
                            eval_step,
                            valid,
                            special,
                            mask_id,
                            EVAL_BATCH,
                            cfg.eval_batches,
                            device,
                            autocast,
                        )
                    )
                    last["time"] = time.perf_counter()  # tokens_per_s is the training's: validation is left out
                if d.main:
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(logged) + "\n")
                    if writer is not None:
                        for k, v in logged.items():
                            if k != "step":
                                writer.add_scalar(k, v, step)
                bar.set_postfix_str(f"loss {logged['loss']:.3f}, {logged['tokens_per_s']:,.0f} tok/s", refresh=False)
            if step % cfg.checkpoint_every == 0 or stop is not None:
                skipped = check_health()  # reads from the device: the steps so far are done
                paused = time.perf_counter()
                save(step)
                saved_step = step
                last["time"] += time.perf_counter() - paused  # nor is writing checkpoints
            if stop is not None:
                stop_reason = stop
                break
        skipped = check_health()
        if saved_step != step:
            save(step)
    finally:
        request.restore()
        agreement.close()
        batches.close()
        bar.close()
    if writer is not None:
        writer.close()
    if stop_reason == "signal":
        raise Interrupted(request.signum, f"at step {step}; checkpoint {ckpt.step_dir(out, step)}")
    if announce_stop:
        say(f"stopped at step {step} ({stop_reason}); checkpoint {ckpt.step_dir(out, step)}")
    return logged


def steps_for_budget(
    cfg: PretrainConfig,
    minutes: float,
    probe_steps: int = 60,
    warmup_steps: int = 5,
    probe_minutes: float | None = None,
) -> int:
    """Optimizer steps that fit `minutes`, from a timed run of the same settings in `cfg.out`
    (removed afterwards), so that a time-budgeted run's schedule still decays to zero.

    The rate is measured over the probe's steps after `warmup_steps` (compilation, graph
    capture and the loader's start stay out of it), as tokens over elapsed time across the
    whole window: single-step timings on a busy machine are too noisy to take a median of.
    The probe stops after `probe_steps`, or after `probe_minutes` (default max(2 minutes, 10%
    of the budget)) counted from the end of its warm-up steps: compiling the step (a minute on an
    H200, several with few CPU cores or --compile-mode max-autotune) is not counted against it.
    """
    probe = dataclasses.replace(
        cfg,
        max_steps=probe_steps,
        max_minutes=max(2.0, 0.1 * minutes) if probe_minutes is None else probe_minutes,
        max_tokens=None,
        warmup_steps=1,
        log_every=1,
        eval_every=10**9,
        checkpoint_every=10**9,
        tensorboard=False,
    )
    print(f"timing up to {probe_steps} steps to fit the schedule into a {minutes:g}-minute budget", file=sys.stderr)
    try:
        # with its bar: up to minutes of work; its checkpoint is removed below
        run(probe, announce_stop=False, clock_from=warmup_steps)
    except Interrupted as e:  # the checkpoint it names would be thrown away: the probe starts over
        shutil.rmtree(cfg.out, ignore_errors=True)
        raise Interrupted(e.signum, "during the timing probe, whose steps are not kept") from e
    lines = [json.loads(x) for x in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(cfg.out)
    window = lines[warmup_steps - 1 :] if len(lines) > warmup_steps + 1 else lines
    if len(window) < 2:
        raise ValueError(
            f"one step of these settings takes longer than the probe's {probe.max_minutes:g} minutes; "
            "give a larger budget or a smaller model"
        )
    first, last = window[0], window[-1]
    rate = (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])
    tokens_per_step = last["tokens"] / last["step"]
    steps = max(10, int(minutes * 60 * rate / tokens_per_step * 0.9))  # 10% for validation and checkpoints
    print(f"{rate:,.0f} tokens/s, {tokens_per_step:,.0f} per step: the schedule runs {steps:,} steps", file=sys.stderr)
    return steps
