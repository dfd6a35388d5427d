"""`electra quickstart`: the whole pipeline on one corpus and one sentiment task.

corpus ──prepare──▶ shards ──pretrain (time budget)──▶ run ──export──▶ HF folder
       ──finetune SST-2──▶ classifier ──pipeline("sentiment-analysis")──▶ predictions
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from electra.atomic import check_output, publish_file
from electra.config import check_options
from electra.corpus import CorpusError
from electra.tasks import TaskError

EXAMPLES = ["A gripping, beautifully acted film.", "The plot is dull and the jokes fall flat."]
HUB_HINT = (
    "pass local files instead: electra quickstart --corpus 'BOOKS/*.txt' --task-data SST-2 (any text files, and "
    "a folder with GLUE's SST-2 train.tsv and dev.tsv)"
)


@dataclass(frozen=True)
class QuickstartConfig:
    out: str = "runs/quickstart"
    corpus: tuple[str, ...] = ()  # empty: wikitext-103 from the hub
    task_data: str | None = None  # a GLUE SST-2 folder; None: glue/sst2 from the hub
    minutes: float = 5.0
    preset: str | None = None  # default: small on CUDA, tiny on CPU
    vocab_size: int = 16000
    batch_size: int | None = None
    finetune_examples: int | None = None  # default: all on CUDA, 8000 on CPU
    doc_per_file: bool = True
    seed: int = 0
    force: bool = False  # replace what an earlier (perhaps unfinished) quickstart left in `out`

    def __post_init__(self) -> None:
        check_options(
            self, minutes="positive", vocab_size="count", batch_size="count", finetune_examples="count", seed="seed"
        )


def _stage(n: int, text: str) -> None:
    print(f"\n[{n}/5] {text}", file=sys.stderr, flush=True)


HUB_ROWS = 400_000  # of wikitext-103's 1.8M
HUB_CORPUS = {"name": "wikitext", "config": "wikitext-103-raw-v1", "split": f"train[:{HUB_ROWS}]"}


def _hub_corpus():
    from electra.corpus import hub_dataset

    try:
        return hub_dataset(HUB_CORPUS["name"], HUB_CORPUS["config"]).take(HUB_ROWS)
    except CorpusError as e:
        raise CorpusError(f"{e}\n{HUB_HINT}") from e


def _hub_sst2(folder: Path) -> Path:
    from electra import hub

    why = hub.cache_only_if_unreachable()
    try:
        import datasets

        ds = datasets.load_dataset("glue", "sst2")
    except Exception as e:
        raise CorpusError(
            f"could not load glue/sst2 from the Hugging Face hub ({hub.failure(why, e)})\n{HUB_HINT}"
        ) from e
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train.tsv"), ("validation", "dev.tsv")):
        rows = ["sentence\tlabel"] + [f"{r['sentence'].strip()}\t{r['label']}" for r in ds[split]]
        publish_file(folder / name, "\n".join(rows) + "\n")
    return folder


RECORD = "quickstart.json"  # in OUT: the settings, the sized schedule and the stages done


def _save(out: Path, record: dict) -> None:
    publish_file(out / RECORD, json.dumps(record, indent=2) + "\n")


def _settings(cfg: QuickstartConfig) -> dict:
    """What the stages' results depend on, as a rerun must give it to continue them."""
    cuda = torch.cuda.is_available()
    return {
        "corpus": [os.path.abspath(c) for c in cfg.corpus],
        "task_data": cfg.task_data and os.path.abspath(cfg.task_data),
        "minutes": cfg.minutes,
        "preset": cfg.preset or ("small" if cuda else "tiny"),
        "vocab_size": cfg.vocab_size,
        "batch_size": cfg.batch_size,
        "finetune_examples": cfg.finetune_examples if cfg.finetune_examples is not None else (None if cuda else 8000),
        "doc_per_file": cfg.doc_per_file,
        "seed": cfg.seed,
    }


def _shown(value) -> str:
    return "default" if value is None else repr(value)


def _earlier(out: Path, settings: dict) -> dict | None:
    """The record of an earlier quickstart in `out` with these settings (its stages are continued),
    None for a new one; one with other settings is refused."""
    try:
        record = json.loads((out / RECORD).read_text(encoding="utf-8"))
        was = dict(record["settings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no quickstart here: check_output says what the folder holds
    changed = [f"{k} {_shown(was.get(k))} → {_shown(v)}" for k, v in settings.items() if was.get(k) != v]
    if changed:
        raise ValueError(
            f"{out} holds a quickstart with other settings ({'; '.join(changed)}); pass --force to start over, "
            "or choose another --out"
        )
    return record


def run(cfg: QuickstartConfig) -> dict:
    """Run the stages into `cfg.out`; a rerun with the same settings continues an unfinished one
    (the stages done are kept, the pre-training resumes from its checkpoint)."""
    out = Path(cfg.out)
    settings = _settings(cfg)
    record = None if cfg.force else _earlier(out, settings)
    check_output(out, cfg.force or record is not None, inputs=[*cfg.corpus, cfg.task_data])
    if cfg.task_data:  # read now, not after the pre-training
        from electra.finetune import FinetuneConfig, load_task

        try:
            load_task(FinetuneConfig(model="", task="sst2", data=cfg.task_data, out=""))
        except TaskError as e:
            raise TaskError(str(e).replace("--data", "--task-data")) from e
    if out.exists() and cfg.force:
        shutil.rmtree(out)
    created = not out.exists()
    if record is None:
        record = {"settings": settings, "pretrain_steps": None, "done": []}
        out.mkdir(parents=True, exist_ok=True)
        _save(out, record)
    else:
        print(f"continuing the quickstart in {out} (done: {', '.join(record['done']) or 'no stage'})", file=sys.stderr)
    try:
        return _pipeline(cfg, out, record)
    except BaseException:
        if record["done"]:
            print(
                f"\nquickstart stopped: {out} holds the stages that finished ({', '.join(record['done'])}); the same "
                "command continues it, --force starts over",
                file=sys.stderr,
            )
        elif created:  # nothing finished: leave no folder behind
            shutil.rmtree(out, ignore_errors=True)
        else:
            (out / RECORD).unlink(missing_ok=True)
        raise


def _damaged(out: Path, stage: str) -> str | None:
    """What is wrong with the folder of a stage recorded as done, or None when it can be used."""
    from electra.checkpoint import list_checkpoints
    from electra.prepare import verify

    if stage == "prepare":
        try:
            verify(out / "data")
        except (OSError, ValueError) as e:
            return str(e)
        return None
    if stage == "pretrain":
        run = out / "pretrain"
        if not list_checkpoints(run) or not (run / "metrics.jsonl").is_file():
            return f"{run} holds no complete checkpoint or no metrics.jsonl"
        return None
    folder = out / ("discriminator" if stage == "export" else "sst2")
    files = ["config.json", "model.safetensors", "tokenizer.json"] + (["results.json"] if stage == "finetune" else [])
    missing = [name for name in files if not (folder / name).is_file()]
    return f"{folder} has no {', '.join(missing)}" if missing else None


def _pipeline(cfg: QuickstartConfig, out: Path, record: dict) -> dict:
    from electra import hf
    from electra.checkpoint import list_checkpoints
    from electra.finetune import FinetuneConfig
    from electra.finetune import run as finetune
    from electra.prepare import PrepareConfig, prepare, read_manifest
    from electra.pretrain import PretrainConfig, steps_for_budget
    from electra.pretrain import run as pretrain

    preset, examples = record["settings"]["preset"], record["settings"]["finetune_examples"]
    done = record["done"]
    for stage in list(done):  # a stage's folder damaged since (deleted files, a partial copy): it and the later again
        if why := _damaged(out, stage):
            print(f"note: {why}; doing the {stage} stage and the ones after it again", file=sys.stderr)
            del done[done.index(stage) :]
            if stage == "pretrain":
                shutil.rmtree(out / "pretrain", ignore_errors=True)
            _save(out, record)
            break

    def finished(stage: str) -> None:
        done.append(stage)
        _save(out, record)

    _stage(1, "prepare: train a WordPiece vocabulary and pack the corpus into shards")
    task_data = Path(cfg.task_data) if cfg.task_data else None
    if "prepare" in done:
        print(f"done before: {out / 'data'}", file=sys.stderr)
    else:
        dataset = None if cfg.corpus else _hub_corpus()
        if task_data is None:
            _hub_sst2(out / "sst2-data")
        prepare(
            list(cfg.corpus),
            out / "data",
            PrepareConfig(vocab_size=cfg.vocab_size, doc_per_file=cfg.doc_per_file, seed=cfg.seed),
            dataset=dataset,
            dataset_source=None if dataset is None else HUB_CORPUS,
            overwrite=True,  # a folder left by a prepare that ended before its stage was recorded
        )
        finished("prepare")
    task_data = task_data or out / "sst2-data"
    train_rows = read_manifest(out / "data")["splits"]["train"]["rows"]

    _stage(2, f"pretrain: ELECTRA-{preset} for about {cfg.minutes:g} minutes")
    run_cfg = PretrainConfig(
        data=str(out / "data"), out=str(out / "pretrain"), preset=preset, batch_size=cfg.batch_size, seed=cfg.seed
    )
    if "pretrain" in done:
        print(f"done before: {out / 'pretrain'}", file=sys.stderr)
    else:
        if record["pretrain_steps"] is None:
            shutil.rmtree(out / "probe", ignore_errors=True)  # what a stopped probe left
            probe = dataclasses.replace(run_cfg, out=str(out / "probe"))
            record["pretrain_steps"] = steps_for_budget(probe, cfg.minutes)
            _save(out, record)
        steps = record["pretrain_steps"]
        run_cfg = dataclasses.replace(
            run_cfg,
            max_steps=steps,
            max_minutes=cfg.minutes * 1.1,
            eval_every=max(1, steps // 5),
            checkpoint_every=max(1, steps // 5),
        )
        pretrain(run_cfg, resume=bool(list_checkpoints(out / "pretrain")))
        finished("pretrain")
    logged = json.loads((out / "pretrain" / "metrics.jsonl").read_text().splitlines()[-1])  # the last step's

    _stage(3, "export: the discriminator as a Hugging Face folder")
    from electra.card import checkpoint_card
    from electra.checkpoint import load_checkpoint

    if "export" in done:
        print(f"done before: {out / 'discriminator'}", file=sys.stderr)
    else:
        ckpt = load_checkpoint(out / "pretrain")
        card = {"README.md": checkpoint_card(ckpt, "discriminator", out / "discriminator")}
        hf.export_discriminator(
            ckpt.model, out / "discriminator", tokenizer_dir=ckpt.path, extra_files=card, overwrite=True
        )
        finished("export")

    _stage(4, "finetune: SST-2 sentiment" + (f" on {examples:,} training sentences" if examples else ""))
    if "finetune" in done:
        print(f"done before: {out / 'sst2'}", file=sys.stderr)
        results = json.loads((out / "sst2" / "results.json").read_text())
    else:
        config = FinetuneConfig(
            model=str(out / "discriminator"),
            task="sst2",
            data=str(task_data),
            out=str(out / "sst2"),
            epochs=3,
            max_train_examples=examples,
            seed=cfg.seed,
        )
        results = finetune(config, overwrite=True)  # a stopped fine-tuning resumes from its saved progress
        finished("finetune")

    _stage(5, 'predict: transformers.pipeline("sentiment-analysis", model=...)')
    import transformers

    predictions = transformers.pipeline("sentiment-analysis", model=str(out / "sst2"))(EXAMPLES)
    summary = {
        "out": str(out),
        "preset": preset,
        "train_rows": train_rows,
        "pretrain_steps": logged.get("step"),
        "pretrain_loss": logged.get("loss"),
        "valid_disc_accuracy": logged.get("valid_disc_accuracy"),
        "sst2_dev_accuracy": results["median"]["dev"]["accuracy"],
        "predictions": [{"text": t, **p} for t, p in zip(EXAMPLES, predictions, strict=True)],
        "folders": {
            "data": str(out / "data"),
            "run": str(out / "pretrain"),
            "discriminator": str(out / "discriminator"),
            "classifier": str(out / "sst2"),
        },
    }
    publish_file(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
