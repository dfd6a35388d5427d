"""`electra quickstart`: the whole pipeline on one corpus and one sentiment task.

corpus ──prepare──▶ shards ──pretrain (time budget)──▶ run ──export──▶ HF folder
       ──finetune SST-2──▶ classifier ──pipeline("sentiment-analysis")──▶ predictions
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from electra.atomic import check_output, publish_file
from electra.config import check_options
from electra.corpus import CorpusError

EXAMPLES = ["A gripping, beautifully acted film.", "The plot is dull and the jokes fall flat."]
HUB_HINT = (
    "pass local files instead: electra quickstart --corpus '../shared/data/corpus/gutenberg/*.txt' "
    "--task-data ../shared/data/glue/SST-2"
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
            self, minutes="positive", vocab_size="count", batch_size="count", finetune_examples="count", seed="count0"
        )


def _stage(n: int, text: str) -> None:
    print(f"\n[{n}/5] {text}", file=sys.stderr, flush=True)


def _hub_corpus(limit_rows: int = 400_000):
    from electra.corpus import hub_dataset

    try:
        return hub_dataset("wikitext", "wikitext-103-raw-v1").take(limit_rows)
    except CorpusError as e:
        raise CorpusError(f"{e}\n{HUB_HINT}") from e


def _hub_sst2(folder: Path) -> Path:
    try:
        import datasets

        ds = datasets.load_dataset("glue", "sst2")
    except Exception as e:
        raise CorpusError(
            f"could not load glue/sst2 from the Hugging Face hub ({type(e).__name__}: {e})\n{HUB_HINT}"
        ) from e
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train.tsv"), ("validation", "dev.tsv")):
        rows = ["sentence\tlabel"] + [f"{r['sentence'].strip()}\t{r['label']}" for r in ds[split]]
        publish_file(folder / name, "\n".join(rows) + "\n")
    return folder


def run(cfg: QuickstartConfig) -> dict:
    out = Path(cfg.out)
    check_output(out, cfg.force, inputs=[*cfg.corpus, cfg.task_data])
    if cfg.task_data:  # read now, not after the pre-training
        from electra.finetune import FinetuneConfig, load_task

        load_task(FinetuneConfig(model="", task="sst2", data=cfg.task_data, out=""))
    if out.exists() and cfg.force:
        shutil.rmtree(out)
    try:
        return _pipeline(cfg, out)
    except BaseException:
        if out.exists():
            print(f"\nquickstart stopped: {out} holds the stages that finished; --force starts over", file=sys.stderr)
        raise


def _pipeline(cfg: QuickstartConfig, out: Path) -> dict:
    from electra import hf
    from electra.finetune import FinetuneConfig
    from electra.finetune import run as finetune
    from electra.prepare import PrepareConfig, prepare
    from electra.pretrain import PretrainConfig, steps_for_budget
    from electra.pretrain import run as pretrain

    cuda = torch.cuda.is_available()
    preset = cfg.preset or ("small" if cuda else "tiny")
    examples = cfg.finetune_examples if cfg.finetune_examples is not None else (None if cuda else 8000)
    cfg = QuickstartConfig(**{**cfg.__dict__, "preset": preset})

    _stage(1, "prepare: train a WordPiece vocabulary and pack the corpus into shards")
    dataset = None if cfg.corpus else _hub_corpus()
    task_data = Path(cfg.task_data) if cfg.task_data else None
    if task_data is None:
        task_data = _hub_sst2(out / "sst2-data")
    prepared = prepare(
        list(cfg.corpus),
        out / "data",
        PrepareConfig(vocab_size=cfg.vocab_size, doc_per_file=cfg.doc_per_file, seed=cfg.seed),
        dataset=dataset,
    )
    train_rows = prepared.manifest["splits"]["train"]["rows"]

    _stage(2, f"pretrain: ELECTRA-{preset} for about {cfg.minutes:g} minutes")
    steps = steps_for_budget(
        PretrainConfig(
            data=str(out / "data"), out=str(out / "probe"), preset=preset, batch_size=cfg.batch_size, seed=cfg.seed
        ),
        cfg.minutes,
    )
    logged = pretrain(
        PretrainConfig(
            data=str(out / "data"),
            out=str(out / "pretrain"),
            preset=preset,
            batch_size=cfg.batch_size,
            max_steps=steps,
            max_minutes=cfg.minutes * 1.1,
            eval_every=max(1, steps // 5),
            checkpoint_every=max(1, steps // 5),
            seed=cfg.seed,
        )
    )

    _stage(3, "export: the discriminator as a Hugging Face folder")
    from electra.card import checkpoint_card
    from electra.checkpoint import load_checkpoint

    ckpt = load_checkpoint(out / "pretrain")
    card = {"README.md": checkpoint_card(ckpt, "discriminator", out / "discriminator")}
    hf.export_discriminator(ckpt.model, out / "discriminator", tokenizer_dir=ckpt.path, extra_files=card)

    _stage(4, "finetune: SST-2 sentiment" + (f" on {examples:,} training sentences" if examples else ""))
    results = finetune(
        FinetuneConfig(
            model=str(out / "discriminator"),
            task="sst2",
            data=str(task_data),
            out=str(out / "sst2"),
            epochs=3,
            max_train_examples=examples,
            seed=cfg.seed,
        )
    )

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
