"""`electra` command line:
prepare | pretrain | export | finetune | evaluate | predict | embed | serve | quickstart | report."""

from __future__ import annotations

import argparse
import codecs
import contextlib
import errno
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path


class UsageError(Exception):
    """A problem with the user's input: printed without a traceback, exit status 2."""


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def cmd_export(args: argparse.Namespace) -> None:
    from electra import hf
    from electra.atomic import Together, check_output
    from electra.card import checkpoint_card, hub_metadata, license_note
    from electra.checkpoint import load_checkpoint

    try:
        hub = hub_metadata(args.license, args.language or ())
    except ValueError as e:
        raise UsageError(str(e)) from None
    if note := license_note(args.license):
        print(f"note: {note}", file=sys.stderr)
    ckpt = load_checkpoint(args.checkpoint)
    tokenizer_dir = args.tokenizer or (ckpt.path if ckpt.has_tokenizer else None)
    objective = ckpt.meta.get("objective", "electra")
    mlm = objective == "mlm"
    if mlm and args.generator_out:
        raise UsageError("an MLM run has no generator: its one network is exported to --out; drop --generator-out")
    outs = [args.out]
    if args.generator_out is not None:
        a, b = Path(args.out).resolve(), Path(args.generator_out).resolve()
        if a == b or a in b.parents or b in a.parents:
            raise UsageError("--out and --generator-out must be two separate folders, neither inside the other")
        outs.append(args.generator_out)
    for out in outs:  # refused now rather than after the first folder is written
        check_output(out, args.force, inputs=[args.checkpoint, ckpt.path, args.tokenizer])
    if args.tokenizer and ckpt.has_tokenizer:
        from electra.tokenizer import load_tokenizer, reading_difference

        given, own = load_tokenizer(args.tokenizer), load_tokenizer(ckpt.path)
        if given.get_vocab() != own.get_vocab():
            raise UsageError(
                f"{ckpt.path} was trained with its own tokenizer, which differs from --tokenizer {args.tokenizer} "
                "(other ids for the same tokens); drop --tokenizer to export the run's own"
            )
        if differ := reading_difference(given, own):  # the same ids, but text would reach them otherwise
            a, b = differ
            raise UsageError(
                f"--tokenizer {args.tokenizer} {a}; the run's tokenizer {b}: drop --tokenizer to export the run's own"
            )
    if tokenizer_dir is None:
        print(
            "warning: the checkpoint holds no tokenizer and --tokenizer was not given; the exported "
            "folder will need tokenizer files before pipeline() can use it",
            file=sys.stderr,
        )

    def card(model: str, out: str) -> dict[str, str]:
        return {"README.md": checkpoint_card(ckpt, model, out, hub)}

    if mlm:  # the BERT-style baseline: the masked LM is the model
        out = hf.export_generator(ckpt.model, args.out, tokenizer_dir, args.force, card("mlm", args.out))
        print(f"exported the MLM baseline (ElectraForMaskedLM) from {ckpt.path} to {out}")
        return
    with Together() as together:  # both folders are published at its end, or neither
        if ckpt.model.discriminator_lm_head is not None:  # Replace MLM, All-Tokens MLM: the main network is an MLM
            what = f"the {objective} network (ElectraForMaskedLM)"
            hf.export_discriminator_lm(
                ckpt.model, args.out, tokenizer_dir, args.force, card(objective, args.out), together
            )
        else:
            what = "discriminator (ElectraForPreTraining)"
            disc = card("discriminator", args.out)
            hf.export_discriminator(ckpt.model, args.out, tokenizer_dir, args.force, disc, together)
        if args.generator_out:
            gen = card("generator", args.generator_out)
            hf.export_generator(ckpt.model, args.generator_out, tokenizer_dir, args.force, gen, together)
    print(f"exported {what} from {ckpt.path} to {args.out}")
    if args.generator_out:
        print(f"exported generator (ElectraForMaskedLM) to {args.generator_out}")


# what one preparation (a part) reads and how it packs; --merge takes the parts as they are
PART_OPTIONS = (
    "corpus",
    "dataset",
    "dataset_config",
    "dataset_split",
    "format",
    "text_field",
    "doc_per_file",
    "vocab_size",
    "limit_alphabet",
    "tokenizer",
    "cased",
    "strip_accents",
    "seq_len",
    "seed",
    "validation_fraction",
    "rows_per_shard",
    "num_parts",
    "part_index",
)


def cmd_prepare(args: argparse.Namespace) -> None:
    from electra import prepare as prep
    from electra.corpus import COMPRESSIONS, hub_dataset
    from electra.tokenizer import MAX_WORD_CHARS, guessed_reading

    defaults = vars(build_parser().parse_args(["prepare", "--out", args.out]))
    if args.merge:
        given = [k for k in PART_OPTIONS if getattr(args, k) != defaults[k]]
        if given:
            options = ", ".join("--" + k.replace("_", "-") for k in given)
            verb, them = ("belong", "them") if len(given) > 1 else ("belongs", "it")
            raise UsageError(
                f"--merge combines prepared parts as they are; {options} {verb} to each part's own run: drop {them}"
            )
        manifest = prep.merge(args.merge, args.out, overwrite=args.force)
        rows = {s: v["rows"] for s, v in manifest["splits"].items()}
        print(
            f"merged {_count(len(args.merge), 'part')} into {args.out}: {_count(rows['train'], 'train row')}, "
            f"{_count(rows['valid'], 'validation row')}"
        )
        missing = sorted(set(range(manifest["config"]["num_parts"])) - set(manifest["config"]["parts_merged"]))
        if missing:
            print(
                f"warning: {'part' if len(missing) == 1 else 'parts'} {', '.join(map(str, missing))} of "
                f"{manifest['config']['num_parts']} {'was' if len(missing) == 1 else 'were'} not merged",
                file=sys.stderr,
            )
        return
    if bool(args.corpus) == bool(args.dataset):
        raise UsageError("pass either --corpus PATH [PATH ...] or --dataset NAME (or --merge PART ...)")
    hub_only = [
        f"--{k.replace('_', '-')}"
        for k in ("dataset_config", "dataset_split")
        if args.corpus and getattr(args, k) != defaults[k]
    ]
    if hub_only:
        raise UsageError(
            f"{' and '.join(hub_only)} {'choose' if len(hub_only) > 1 else 'chooses'} what --dataset reads; "
            "--corpus reads its files whole: drop " + ("them" if len(hub_only) > 1 else "it")
        )
    shaping = (args.vocab_size, args.limit_alphabet, args.strip_accents)
    if (args.cased or any(v is not None for v in shaping)) and args.tokenizer:
        accents = "--strip-accents" if args.strip_accents else "--no-strip-accents"
        options = ("--vocab-size", "--limit-alphabet", accents)
        given = [o for o, v in zip(options, shaping, strict=True) if v is not None]
        given += ["--cased"] if args.cased else []
        raise UsageError(
            f"{' and '.join(given)} {'shape' if len(given) > 1 else 'shapes'} a new tokenizer and --tokenizer "
            "reuses one; pass only one"
        )
    cfg = prep.PrepareConfig(
        seq_len=args.seq_len,
        seed=args.seed,
        validation_fraction=args.validation_fraction,
        rows_per_shard=args.rows_per_shard,
        vocab_size=30522 if args.vocab_size is None else args.vocab_size,
        limit_alphabet=args.limit_alphabet,
        lowercase=not args.cased,
        strip_accents=args.strip_accents,
        text_field=args.text_field,
        format=args.format,
        doc_per_file=args.doc_per_file,
        num_parts=args.num_parts,
        part_index=args.part_index,
    )
    dataset = hub_dataset(args.dataset, args.dataset_config, args.dataset_split) if args.dataset else None
    source = {"name": args.dataset, "config": args.dataset_config, "split": args.dataset_split}
    if args.tokenizer and (reading := guessed_reading(args.tokenizer)):
        print(
            f"note: {args.tokenizer} has no tokenizer_config.json beside it, so it is read as a tokenizer that "
            f'{reading}; to say otherwise, put a tokenizer_config.json beside it with "do_lower_case" and '
            '"strip_accents" (false keeps accents)',
            file=sys.stderr,
        )
    result = prep.prepare(
        args.corpus or [],
        args.out,
        cfg,
        tokenizer=args.tokenizer,
        overwrite=args.force,
        quiet=args.quiet,
        dataset=dataset,
        dataset_source=source if args.dataset and not Path(args.dataset).exists() else None,  # a hub id, not a folder
    )
    m, s = result.manifest, result.stats
    train, valid = m["splits"]["train"], m["splits"]["valid"]
    mb = s.bytes / 1e6
    print(
        f"prepared {args.out}: {train['rows']:,} train rows ({train['tokens']:,} tokens) in "
        f"{_count(len(train['shards']), 'shard')}, {_count(valid['rows'], 'validation row')}; seq_len {cfg.seq_len}, "
        f"vocab {m['vocab_size']:,}"
    )
    print(
        f"read {_count(s.files, 'file')}, {mb:,.1f} MB on disk, "
        f"{_count(m['counts']['documents'], 'document')}; tokenizer "
        f"{result.tokenizer_seconds:.1f} s, packing {result.seconds:.1f} s ({mb / result.seconds:,.1f} MB/s, "
        f"{result.tokens_encoded / result.seconds:,.0f} tokens/s)"
    )
    if m["counts"]["tokens_truncated"]:
        print(
            f"the packing recipe trimmed {m['counts']['tokens_truncated']:,} tokens that overflowed rows "
            f"({m['counts']['tokens_truncated'] / max(result.tokens_encoded, 1):.1%})"
        )
    counts = m["counts"]
    long_share = counts["characters_in_words_too_long"] / max(counts["characters"], 1)
    if long_share > 0.01:  # each such word is one [UNK], however much text it holds
        print(
            f"warning: {long_share:.1%} of the text is in {counts['words_too_long']:,} words longer than "
            f"{MAX_WORD_CHARS} characters, which BERT's tokenizers (and transformers') read as one [UNK] each whatever "
            "the vocabulary: text in a script written without spaces (Thai, Lao, Khmer, Burmese) needs splitting "
            "into words before `electra prepare`"
        )
    unknown = counts["tokens_unknown"] - counts["words_too_long"]
    if unknown > 0.01 * result.tokens_encoded:  # a vocabulary fit for its corpus leaves well under 1% unknown
        if args.limit_alphabet is not None:
            why = f"--limit-alphabet {args.limit_alphabet} leaves out characters this corpus uses (raise it or drop it)"
        else:
            why = "the vocabulary is too small for this corpus (raise --vocab-size) or the tokenizer does not fit it"
        print(f"warning: {unknown / result.tokens_encoded:.1%} of tokens are [UNK]; {why}")
    if result.marks_stripped > 0.005:  # English has well under 0.1%
        print(
            f"note: lowercasing stripped accents and other marks from {result.marks_stripped:.1%} of the characters "
            "(in the first sentences: é to e, ё to е, が to か); where they carry meaning in this language, prepare "
            "again with --no-strip-accents (lowercase, marks kept) or --cased"
        )
    if not args.tokenizer and m["vocab_size"] < cfg.vocab_size:
        print(
            f"note: the vocabulary has {m['vocab_size']:,} entries, fewer than --vocab-size "
            + ("" if args.vocab_size else "(default) ")
            + f"{cfg.vocab_size:,}: this corpus has no more pieces that occur at least twice; the model's embedding "
            "takes the vocabulary's size"
        )
    if not valid["rows"] and cfg.validation_fraction > 0:
        print(f"note: no row was held out for validation ({cfg.validation_fraction:.0%} of a small corpus)")
    if s.invalid_utf8:
        files = sorted(s.invalid_by_file.items(), key=lambda kv: -kv[1])
        where = ", ".join(f"{path} ({n:,})" for path, n in files[:3]) + (
            f" and {len(files) - 3:,} more files" if len(files) > 3 else ""
        )
        first, convert = files[0][0], "iconv -f WINDOWS-1252 -t UTF-8"
        if first.lower().endswith(COMPRESSIONS):  # iconv reads the text, not the archive
            how = f"decompress {first} and {convert} the text"
        else:
            how = f"{convert} {first} > {first}.utf8"
        print(
            f"replaced {s.invalid_utf8:,} bytes of invalid UTF-8 (or lone surrogate escapes in JSON) with U+FFFD, in "
            f"{where}; a file in another encoding reads right once converted, e.g. from Latin-1 or Windows-1252: {how}"
        )
    for path, why in s.skipped.items():
        print(f"skipped {path}: {why}")


_PRETRAIN_FLAGS = (
    "data",
    "out",
    "preset",
    "objective",
    "max_steps",
    "max_tokens",
    "max_minutes",
    "batch_size",
    "micro_batches",
    "lr",
    "warmup_steps",
    "weight_decay",
    "clip_norm",
    "seed",
    "mask_prob",
    "rtd_weight",
    "temperature",
    "generator_fraction",
    "disentangled_embeddings",
    "whole_word_masking",
    "dropout",
    "strategy",
    "init_discriminator",
    "init_generator",
    "log_every",
    "eval_every",
    "eval_batches",
    "checkpoint_every",
    "keep_checkpoints",
    "device",
    "precision",
    "compile",
    "compile_mode",
    "compile_backend",
    "cuda_graph",
    "activation_checkpointing",
    "deterministic",
    "tensorboard",
)


def _alone(what: str) -> None:
    """A note for an option that only a torchrun launch uses, given to a single process."""
    from electra.parallel import from_env

    if not from_env().enabled:
        print(f"note: {what} applies under torchrun; this single process goes on without it", file=sys.stderr)


def _resumed_settings(run_record: Path, flags: dict):
    """The settings RUN/config.json records, but for the flags given; None (with a note) if it
    cannot be read: the flags alone then, as for a new run. The budget is the one given now
    when there is a checkpoint to go on from (pretrain.run then keeps the run's schedule)."""
    from electra.checkpoint import list_checkpoints
    from electra.pretrain import ModelConfigGiven, PretrainConfig

    budget = ("max_steps", "max_tokens", "max_minutes") if list_checkpoints(run_record.parent) else ()
    try:
        cfg = PretrainConfig.from_file(run_record, unset=budget, **flags)
    except ModelConfigGiven:
        raise UsageError(
            f"--resume: {run_record.parent} is a model folder (its config.json is a transformers model's), "
            "not a pre-training run; pass the run's folder"
        ) from None
    except ValueError as e:
        print(f"note: the run's settings are not readable ({e}); going on with the flags given", file=sys.stderr)
        return None
    if "data" not in flags and not Path(cfg.data).exists():
        raise UsageError(
            f"the run's data folder {cfg.data} does not exist (moved, or the run copied from elsewhere?): "
            "pass --data where it is now"
        )
    return cfg


def cmd_pretrain(args: argparse.Namespace) -> None:
    from electra.pretrain import PretrainConfig, run

    flags = {k: getattr(args, k) for k in _PRETRAIN_FLAGS if getattr(args, k) is not None}
    run_record = Path(args.out or "", "config.json")
    if args.config:
        cfg = PretrainConfig.from_file(args.config, **flags)
    elif args.resume and args.out and run_record.is_file():  # the run's own settings, but for the flags given
        cfg = _resumed_settings(run_record, flags)
    else:
        cfg = None
    if cfg is None:
        if args.resume and args.out and not args.data:  # a resume reads the rest from the run's folder
            raise UsageError(
                f"--resume: {args.out} holds no pre-training run (no config.json); check the path, or pass --data "
                "to start a run there"
            )
        if not (args.data and args.out):
            raise UsageError("pass --data and --out (or a --config file that sets them)")
        cfg = PretrainConfig(**flags)
    if cfg.strategy == "fsdp":
        _alone("--strategy fsdp")
    run(cfg, resume=args.resume, quiet=args.quiet)


def _hub_arguments(p: argparse.ArgumentParser) -> None:
    """What the model card declares to the Hugging Face hub (README.md's metadata)."""
    p.add_argument("--license", help="the model card's license, as the hub names it: apache-2.0, mit, cc-by-4.0 ...")
    p.add_argument(
        "--language",
        action="append",
        help="a language of the model's text (ISO 639: en, fr, zh, or en-US ...); repeat for more",
    )


# options that only some tasks read: elsewhere they would be ignored
TASK_OPTIONS = {
    "--doc-stride": ("squad", "squad_v2"),
    "--null-threshold": ("squad_v2",),
    "--text-field": ("csv",),
    "--pair-field": ("csv",),
    "--label-field": ("csv",),
    "--regression": ("csv",),
    "--multi-label": ("csv",),
    "--label-separator": ("csv",),
    "--label-columns": ("csv",),
}


def _column_names(value: str) -> tuple[str, ...]:
    """--label-columns: column names joined by commas."""
    names = tuple(name.strip() for name in value.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"{value!r} has an empty name; name the columns joined by commas: a,b,c")
    return names


def _task_options(args: argparse.Namespace) -> None:
    """Refuse an option the task does not read (the options a command lacks are skipped)."""
    for option, tasks in TASK_OPTIONS.items():
        if getattr(args, option[2:].replace("-", "_"), None) is not None and args.task not in tasks:
            raise UsageError(f"{option} is for --task {' or '.join(tasks)}, not {args.task}; drop it")


def cmd_finetune(args: argparse.Namespace) -> None:
    from electra.card import license_note
    from electra.finetune import FinetuneConfig, run, run_glue

    _task_options(args)
    if args.label_separator is not None and args.label_columns:
        raise UsageError(
            "--label-separator and --label-columns exclude each other (labels joined in a cell, or a 0/1 column "
            "each): drop one"
        )
    if args.label_separator is not None and not args.multi_label:
        raise UsageError("--label-separator splits the labels of a multi-label cell; add --multi-label or drop it")
    cfg = FinetuneConfig(
        model=args.model,
        task=args.task,
        data=args.data,
        out=args.out,
        seeds=args.seeds,
        epochs=args.epochs,
        lr=args.lr,
        layer_decay=args.layer_decay,
        batch_size=args.batch_size,
        max_length=args.max_length,
        doc_stride=args.doc_stride,
        null_threshold=args.null_threshold or 0.0,
        truncate=not args.no_truncate,
        text_field=args.text_field,
        pair_field=args.pair_field,
        label_field=args.label_field,
        regression=args.regression,
        multi_label=bool(args.multi_label or args.label_columns),
        label_separator="," if args.label_separator is None else args.label_separator,
        label_columns=args.label_columns or (),
        max_train_examples=args.max_train_examples,
        device=args.device,
        precision=args.precision,
        save_minutes=args.save_minutes,
        data_parallel=args.data_parallel,
        activation_checkpointing=args.activation_checkpointing,
        deterministic=args.deterministic,
        license=args.license,
        language=tuple(args.language or ()),
    )
    if (note := license_note(cfg.license)) and os.environ.get("RANK", "0") == "0":  # once under torchrun
        print(f"note: {note}", file=sys.stderr)
    if cfg.data_parallel:
        _alone("--data-parallel")
    if args.task == "glue":
        summary = run_glue(cfg, quiet=args.quiet, overwrite=args.force)
        if summary is None:  # under torchrun, not the first process: that one reports
            return
        print("| task | metric | median | min | max | seeds |\n|---|---|---|---|---|---|")
        for name, t in summary["tasks"].items():
            low, high = t["spread"]["min"], t["spread"]["max"]
            print(f"| {name} | {t['metric']} | {t['median']:.4f} | {low:.4f} | {high:.4f} | {t['seeds']} |")
        n = len(summary["tasks"])
        scope = "all 8 tasks" if summary["complete"] else f"{n} of the 8 tasks (not comparable to full GLUE scores)"
        print(f"GLUE score {summary['score']:.1f}: the mean of the main metrics over {scope}; wrote {args.out}")
        if summary.get("test_predictions"):
            files = ", ".join(summary["test_predictions"].values())
            print(f"test-set predictions for GLUE's server (the exported seeds'), in {args.out}: {files}")
        return
    results = run(cfg, quiet=args.quiet, overwrite=args.force)
    if results is None:
        return
    for dev, metrics in results["median"].items():
        spread = results["spread"][dev]
        text = ", ".join(
            f"{m} {v:.4f} (min {spread[m]['min']:.4f}, max {spread[m]['max']:.4f})" for m, v in metrics.items()
        )
        print(f"{results['task']} {dev}, median of {_count(len(results['seeds']), 'seed')}: {text}")
    print(f"wrote {args.out} (seed {results['exported_seed']}, the best on {results['main_metric']})")
    if results.get("test_predictions"):
        print(f"test-set predictions for GLUE's server: {', '.join(results['test_predictions'])}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from electra.atomic import publish_file
    from electra.evaluate import run

    _task_options(args)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    written = [(o, p) for o, p in (("--output", args.output), ("--predictions", args.predictions)) if p is not None]
    for option, path in written:
        _writable(option, path, {"--model": args.model, "--data": args.data})
    if len(written) == 2 and Path(args.output).resolve() == Path(args.predictions).resolve():
        raise UsageError("--output and --predictions name the same file; the second would replace the first")
    results = run(
        args.model,
        args.task,
        args.data,
        split=args.split,
        batch_size=args.batch_size,
        max_length=args.max_length,
        device=args.device,
        precision=args.precision,
        doc_stride=args.doc_stride,
        null_threshold=args.null_threshold,
        text_field=args.text_field,
        pair_field=args.pair_field,
        label_field=args.label_field,
        label_separator=args.label_separator,
        label_columns=args.label_columns,
        threshold=args.threshold,
        records=args.predictions is not None,
    )
    if results["fine_tuned_on"] not in (None, results["task"]):
        print(
            f"note: {args.model} was fine-tuned on {results['fine_tuned_on']}, not {results['task']}", file=sys.stderr
        )
    for split, metrics in results["metrics"].items():
        text = ", ".join(f"{m} {v:.4f}" for m, v in metrics.items())
        above = f", labels above {results['threshold']}" if "threshold" in results else ""  # multi-label
        print(f"{results['task']} {split} ({results['examples'][split]:,} examples{above}): {text}")
        if args.per_label and split in results["per_label"]:
            print(_label_table(results["per_label"][split], "entity" if args.task == "ner" else "label"))
    if args.per_label and not results["per_label"]:
        print("note: no per-label scores: this model gives scores or answers, not labels", file=sys.stderr)
    if results["truncated"]:
        print(f"{results['truncated']} examples truncated to {results['max_length']} tokens", file=sys.stderr)
    records = results.pop("records", {})
    if args.output is not None:
        publish_file(args.output, json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.output}")
    if args.predictions is not None:
        lines = (json.dumps({"split": split, **r}) + "\n" for split, rs in records.items() for r in rs)
        publish_file(args.predictions, "".join(lines))
        print(f"wrote {args.predictions}: each example's gold label and prediction")


def _label_table(scores: dict[str, dict], what: str) -> str:
    """Each label's precision, recall, F1 and support as aligned columns."""
    width = max(len(what), *(len(label) for label in scores))
    lines = [f"  {what:<{width}}  precision  recall      f1  support"]
    for label, s in scores.items():
        lines.append(
            f"  {label:<{width}}  {s['precision']:>9.4f}  {s['recall']:>6.4f}  {s['f1']:>6.4f}  {s['support']:>7,}"
        )
    return "\n".join(lines)


def cmd_predict(args: argparse.Namespace) -> None:
    from electra import hf
    from electra.atomic import publishing_file
    from electra.predict import FIELDED, Predictor, input_suffix, jsonl_line
    from electra.tasks import GLUE

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    text_field, pair_field = args.text_field, args.pair_field
    folder = hf.resolve(args.model)
    recorded = hf.read_results(folder)
    own_text, own_pair = hf.csv_fields(recorded)
    if hf.HF_ARCHITECTURES["span"] in (hf.read_config(folder).get("architectures") or []):
        text_field, pair_field = text_field or "question", pair_field or "context"  # a question answerer's input
    elif input_suffix(args.input, args.format) in FIELDED:  # a csv-task model's own columns
        text_field, pair_field = text_field or own_text, pair_field or own_pair
    inputs, texts = _read_texts(args, text_field, pair_field, "label", args.id_field)
    predictor = Predictor(*_model_settings(args))
    labelled = predictor.stream(texts, args.batch_size, not args.no_truncate)
    truncated = single = 0
    with contextlib.nullcontext(sys.stdout) if args.output in (None, "-") else publishing_file(args.output) as out:
        ascii = codecs.lookup(getattr(out, "encoding", None) or "utf-8").name != "utf-8"  # e.g. a latin-1 terminal
        for text, record, cut in labelled:  # written as each chunk is labelled: memory stays flat
            out.write(jsonl_line(text, record, ascii))
            truncated += cut
            single += text[1] is None
    hint = " (--stride tags them whole)" if predictor.tagger else ""
    task = recorded.get("task")
    paired = own_pair if task == "csv" else GLUE[task].pair if task in GLUE else None
    lone = f"read without a second text, though {args.model} was fine-tuned on pairs ({task}): see --pair-field"
    _say_counts(
        "predict",
        {
            ("blank line", "skipped"): inputs.blank,
            ("text", f"truncated{hint}"): truncated,
            ("text", lone): single if paired is not None else 0,
        },
    )


def _writable(option: str, path: str, inputs: dict[str, str | None]) -> None:
    """Refuse, before any work, an output file that is a folder or would replace an input: the
    input file itself, or anything inside an input folder (a model's, a dataset's)."""
    target = Path(path).resolve()
    if target.is_dir():
        raise UsageError(f"{option} {path} is a folder; name the file to write")
    for name, given in inputs.items():
        if given in (None, "-") or not Path(given).exists():
            continue
        source = Path(given).resolve()
        if target == source or source in target.parents:
            what = "is the" if target == source else "is inside the"
            raise UsageError(f"{option} {path} {what} {name} {given}: write it elsewhere, so that no input is replaced")
    from electra.atomic import check_writable

    check_writable(path)  # a read-only folder named now, not after the work (and not by a temporary file's name)


def _read_texts(args: argparse.Namespace, text_field, pair_field, verb: str, id_field=None):
    """The Inputs of --input and an iterator over its texts, refused now (before the model loads)
    when it is empty or is the --output file."""
    from electra.predict import Inputs

    if args.output not in (None, "-"):
        _writable("--output", args.output, {"--input": args.input, "--model": args.model})
    inputs = Inputs(args.input, text_field, pair_field, args.format, id_field)
    texts = iter(inputs)
    first = next(texts, None)
    if first is None:
        raise UsageError(f"no text to {verb} in {args.input or 'stdin'}")
    return inputs, itertools.chain([first], texts)


def _say_counts(command: str, counts: dict[tuple[str, str], int]) -> None:
    """One stderr line with the counts that are not zero, {(noun, what happened): count}:
    "electra predict: 2 blank lines skipped"."""
    said = [f"{_count(n, noun)} {what}" for (noun, what), n in counts.items() if n]
    if said:
        print(f"electra {command}: " + "; ".join(said), file=sys.stderr)


def cmd_embed(args: argparse.Namespace) -> None:
    import numpy as np

    from electra.atomic import publishing_file
    from electra.embed import Embedder

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not args.output.endswith(".npy") or Path(args.output).is_dir():
        raise UsageError(f"--output {args.output}: name the .npy file to write")
    if not Path(args.output).resolve().parent.is_dir():
        raise UsageError(
            f"--output {args.output}: the folder {Path(args.output).parent} does not exist; create it first"
        )
    inputs, texts = _read_texts(args, args.text_field, args.pair_field, "embed")
    embedder = Embedder(args.model, args.max_length, args.device, args.pooling, args.normalize, args.precision)
    rows = cut = 0
    with tempfile.TemporaryFile(dir=Path(args.output).resolve().parent) as raw:  # memory stays that of one chunk
        for vectors, n in embedder.stream(texts, args.batch_size):
            raw.write(vectors.tobytes())
            rows, cut = rows + len(vectors), cut + n
        raw.seek(0)
        with publishing_file(args.output, binary=True) as f:  # the .npy header needs the row count first
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False}
            np.lib.format.write_array_header_1_0(f, {**header, "shape": (rows, embedder.dim)})
            shutil.copyfileobj(raw, f)
    print(f"wrote {args.output}: {_count(rows, 'vector')} of {embedder.dim} ({args.pooling} pooling)")
    _say_counts("embed", {("blank line", "skipped"): inputs.blank, ("text", f"cut at {embedder.limit} tokens"): cut})


def cmd_serve(args: argparse.Namespace) -> None:
    from electra.predict import Predictor
    from electra.serve import make_server

    if args.batch_size < 1 or args.max_inputs < 1:
        raise UsageError(
            f"--batch-size and --max-inputs must be at least 1, got {args.batch_size} and {args.max_inputs}"
        )
    api_key = None
    if args.api_key_file is not None:
        try:
            api_key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read the API key from {args.api_key_file}: {e}") from e
        if not api_key:
            raise UsageError(f"{args.api_key_file} is empty; write the API key into it (one line)")
        if len(api_key.split()) > 1:  # a header cannot carry a line break, and a key with spaces is likely a mistake
            raise UsageError(f"{args.api_key_file} holds more than one word; write only the API key into it (one line)")
    predictor = Predictor(*_model_settings(args))
    server = make_server(predictor, args.host, args.port, args.batch_size, api_key, args.max_inputs)
    print(
        f"serving {predictor.folder} ({predictor.kind}) on {server.url}: POST /predict, GET /health"
        + (" (with the API key)" if api_key else ""),
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()


def cmd_quickstart(args: argparse.Namespace) -> None:
    from electra.quickstart import QuickstartConfig, run

    s = run(
        QuickstartConfig(
            out=args.out,
            corpus=tuple(args.corpus or ()),
            task_data=args.task_data,
            minutes=args.minutes,
            preset=args.preset,
            vocab_size=args.vocab_size,
            batch_size=args.batch_size,
            finetune_examples=args.finetune_examples,
            force=args.force,
        )
    )
    print(
        f"\nquickstart done: ELECTRA-{s['preset']} pre-trained {s['pretrain_steps']} steps on {s['train_rows']:,} rows "
        f"(loss {s['pretrain_loss']:.3f}), SST-2 dev accuracy {s['sst2_dev_accuracy']:.3f}"
    )
    for name, path in s["folders"].items():
        print(f"  {name:<14} {path}")
    for p in s["predictions"]:
        print(f"  {p['label']:<9} {p['score']:.3f}  {p['text']}")
    print(f"  summary        {s['out']}/summary.json")


def cmd_report(args: argparse.Namespace) -> None:
    from electra.report import draw

    out = draw(args.runs, args.out)
    print(f"wrote {out}")


def _version() -> str:
    from electra import __version__

    return __version__


# what finetune and evaluate take: GLUE's tasks, your own table, CoNLL tagging, SQuAD
TASKS = ("sst2", "cola", "mrpc", "stsb", "rte", "qnli", "qqp", "mnli", "wnli", "csv", "ner", "squad", "squad_v2")
PRECISION = (
    "default auto: bf16 autocast on CUDA GPUs that compute in it (Ampere and newer), fp16 with dynamic loss "
    "scaling on older ones (V100, T4), fp32 on CPU"
)
NULL_THRESHOLD = (
    "SQuAD 2.0: answer nothing only when no answer's logit beats the best span's by more than this "
    "(default 0; the official evaluation finds the best one from null_odds.json)"
)


THRESHOLD = (
    "multi-label classifiers: a label is given where its probability is above this (default 0.5, as fine-tuning "
    "scores); `electra evaluate --threshold` scores another on dev data"
)


def _model_settings(args: argparse.Namespace) -> tuple:
    """Predictor's arguments from the options `_model_options` adds."""
    return (
        args.model,
        args.max_length,
        args.device,
        args.stride,
        args.allow_no_answer,
        args.null_threshold,
        args.precision,
        args.all_scores,
        args.threshold,
    )


def _model_options(p: argparse.ArgumentParser, serve: bool = False) -> None:
    """The options of `predict` and `serve`: which model, and how it reads text."""
    p.add_argument(
        "--model",
        required=True,
        help="a fine-tuned folder: ElectraForSequenceClassification, ElectraForTokenClassification or "
        "ElectraForQuestionAnswering",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="requests that wait while the model runs share its next run, up to this many inputs (default 64)"
        if serve
        else "inputs per model run (default 64)",
    )
    p.add_argument("--max-length", type=int, help="default: the model's positions (question answerers: as fine-tuned)")
    p.add_argument(
        "--stride",
        type=int,
        help="token classifiers: tag longer texts whole, in windows of --max-length overlapping by this many tokens; "
        "question answerers: tokens shared by neighbouring windows of a context (default: the fine-tuning's, else 128 "
        "or half a window's context if less; fewer than a window's context)",
    )
    p.add_argument(
        "--allow-no-answer",
        action=argparse.BooleanOptionalAction,
        help='question answerers: answer "" when no span scores above no answer '
        "(default: when the folder was fine-tuned on squad_v2)",
    )
    p.add_argument(
        "--null-threshold",
        type=float,
        help="SQuAD 2.0 answerers: answer nothing only when no answer's logit beats the best span's by more than "
        "this (default: the fine-tuning's, else 0)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16", "auto"],
        default="fp32",
        help="fp32 (default: the numbers pipeline() gives), or bf16 / fp16 autocast: faster on GPUs, scores to about "
        "three digits; auto: bf16 or fp16 on CUDA as the GPU computes, fp32 on CPU",
    )
    p.add_argument(
        "--all-scores",
        action="store_true",
        help='sequence classifiers: also every label\'s score, likeliest first ("scores", as pipeline(top_k=None) '
        "gives them): to rank, or to choose one's own thresholds for a multi-label model",
    )
    p.add_argument("--threshold", type=float, help=THRESHOLD)


def _text_inputs(p: argparse.ArgumentParser, predict: bool = False) -> None:
    """Where `predict` and `embed` read texts from, and how (electra.predict.Inputs)."""
    p.add_argument("--input", help="input file (default: stdin)")
    p.add_argument(
        "--format",
        choices=("lines", "csv", "tsv", "jsonl"),
        help="how to read the input (default: its suffix; stdin: lines)",
    )
    own = "a csv-task folder's own, else " if predict else ""
    p.add_argument("--text-field", help=f"csv/tsv column or jsonl field with the text (default: {own}text)")
    pair = " (default: a csv-task folder's own)" if predict else ""
    p.add_argument("--pair-field", help=f"column or field with a second text{pair}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="electra",
        description="Pre-train, fine-tune and serve ELECTRA text encoders.",
    )
    parser.add_argument("--version", action="version", version=f"electra {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "prepare",
        help="corpus -> tokenizer + packed pre-training shards",
        description="Train (or reuse) a WordPiece tokenizer and pack the corpus into "
        "[CLS] A [SEP] B [SEP] rows in memory-mapped shards, published atomically.",
    )
    src = p.add_argument_group("input")
    src.add_argument(
        "--corpus",
        nargs="+",
        action="extend",  # --corpus A --corpus B reads both
        metavar="PATH",
        help="files, folders or globs: .txt .jsonl .json .csv .tsv (optionally .gz .bz2 .xz .zst), "
        ".parquet, or a saved Hugging Face dataset folder",
    )
    src.add_argument("--dataset", metavar="NAME", help="a Hugging Face hub dataset instead of --corpus")
    src.add_argument("--dataset-config", metavar="NAME", help="the hub dataset's configuration")
    src.add_argument("--dataset-split", default="train", help="the hub dataset's split (default: train)")
    src.add_argument(
        "--format",
        default="auto",
        choices=["auto", "txt", "jsonl", "json", "csv", "tsv", "parquet"],
        help="file format (default: from the extension)",
    )
    src.add_argument("--text-field", default="text", help="JSON field or table column with the text (default: text)")
    src.add_argument(
        "--doc-per-file",
        action="store_true",
        help=".txt: one document per file (blank lines separate paragraphs, not documents)",
    )
    p.add_argument("--out", required=True, help="output folder (must be new or empty, or use --force)")
    tok = p.add_mutually_exclusive_group()
    tok.add_argument("--vocab-size", type=int, help="train a WordPiece vocabulary of this size (default: 30522)")
    tok.add_argument("--tokenizer", help="reuse a tokenizer: an HF folder, tokenizer.json or vocab.txt")
    p.add_argument("--cased", action="store_true", help="train a cased vocabulary (default: lowercase)")
    p.add_argument(
        "--strip-accents",
        action=argparse.BooleanOptionalAction,
        help="remove accents and other combining marks (é -> e, ё -> е, が -> か); default: when lowercasing, "
        "as BERT's uncased models. --no-strip-accents lowercases but keeps them, for languages that need them",
    )
    p.add_argument(
        "--limit-alphabet",
        type=int,
        metavar="N",
        help="keep only the N most frequent characters in the trained vocabulary; words with others become [UNK] "
        "(default: every character)",
    )
    p.add_argument("--seq-len", type=int, default=128, help="tokens per row (default: 128)")
    p.add_argument("--seed", type=int, default=0, help="seed for packing and the split (default: 0)")
    p.add_argument("--validation-fraction", type=float, default=0.01, help="rows held out (default: 0.01)")
    p.add_argument(
        "--rows-per-shard",
        type=int,
        help="rows per shard file (default: 65,536, fewer for rows over 1,024 tokens: at most 64M tokens a shard)",
    )
    par = p.add_argument_group("many machines")
    par.add_argument("--num-parts", type=int, default=1, help="split the corpus's documents into this many parts")
    par.add_argument("--part-index", type=int, default=0, help="which part this run prepares (0-based)")
    par.add_argument("--merge", nargs="+", metavar="PART", help="combine prepared part folders into --out")
    p.add_argument("--force", action="store_true", help="replace an output folder that already holds files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser(
        "pretrain",
        help="pre-train a generator + discriminator with replaced token detection",
        description="Pre-train ELECTRA (or a BERT-style MLM baseline) on prepared shards. "
        "Defaults follow the paper for each preset; --config FILE (JSON) sets any "
        "option, and flags override it. Other sizes than a preset's: "
        '{"architecture": {"discriminator": {"num_layers": 6}, "generator": {...}}} in the file.',
    )
    p.add_argument("--data", help="folder made by `electra prepare`")
    p.add_argument("--out", help="run folder: checkpoints, metrics.jsonl, config.json")
    p.add_argument("--config", help="JSON file of options (names as in the flags, with underscores)")
    p.add_argument("--preset", choices=["tiny", "small", "base", "large"], help="model size (default: small)")
    p.add_argument(
        "--objective",
        choices=["electra", "electra-15", "replace-mlm", "all-tokens-mlm", "mlm"],
        help="electra (default); mlm, BERT's masked LM alone; or one of the paper's comparisons (Table 5): "
        "electra-15 (discriminator loss on the masked 15%% only), replace-mlm (predict the generator-replaced "
        "tokens), all-tokens-mlm (predict every token, with a copy mechanism)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in --out")
    stop = p.add_argument_group("budget (the first reached stops the run)")
    stop.add_argument("--max-steps", type=int, help="optimizer steps; the schedule decays to 0 here")
    stop.add_argument(
        "--max-tokens", type=int, help="tokens seen (sets the schedule's length if --max-steps is not given)"
    )
    stop.add_argument("--max-minutes", type=float, help="wall-clock budget")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=int, help="global batch in rows (default: the preset's)")
    opt.add_argument("--micro-batches", type=int, help="gradient accumulation: micro-batches per step")
    opt.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    opt.add_argument("--warmup-steps", type=int, help="default: min(10000, 10%% of the steps)")
    opt.add_argument("--weight-decay", type=float, help="default 0.01 (not on biases and LayerNorm)")
    opt.add_argument("--clip-norm", type=float, help="gradient norm clipped to this (default 1.0)")
    opt.add_argument("--seed", type=int, help="default 0")
    obj = p.add_argument_group("objective")
    obj.add_argument("--mask-prob", type=float, help="fraction of tokens masked (default 0.15, large 0.25)")
    obj.add_argument("--rtd-weight", type=float, help="weight of the discriminator loss (default 50)")
    obj.add_argument("--temperature", type=float, help="generator sampling temperature (default 1)")
    obj.add_argument("--generator-fraction", type=float, help="generator width / discriminator width")
    obj.add_argument("--dropout", type=float, help="hidden and attention dropout (default 0.1)")
    obj.add_argument(
        "--disentangled-embeddings",
        action=argparse.BooleanOptionalAction,
        help="DeBERTa-v3 gradient-disentangled embedding sharing (export carries the sum)",
    )
    obj.add_argument(
        "--whole-word-masking",
        action=argparse.BooleanOptionalAction,
        help="mask whole words (a token and the ## pieces after it) instead of single tokens",
    )
    obj.add_argument("--init-discriminator", help="continue pre-training: an ElectraForPreTraining folder")
    obj.add_argument("--init-generator", help="continue pre-training: an ElectraForMaskedLM folder")
    r = p.add_argument_group("run")
    r.add_argument("--log-every", type=int, help="steps between metric lines (default 10)")
    r.add_argument("--eval-every", type=int, help="steps between validations (default 500)")
    r.add_argument("--eval-batches", type=int, help="validation batches of 32 rows (default 20)")
    r.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 1000)")
    r.add_argument("--keep-checkpoints", type=int, help="complete checkpoints kept (default 3)")
    r.add_argument(
        "--strategy",
        choices=["ddp", "fsdp"],
        help="under torchrun: ddp (default) or fsdp (FSDP2, shards parameters and optimizer state)",
    )
    r.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    r.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], help=PRECISION)
    r.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile the training step (default: on CUDA in a single process; ~1 min of compiling)",
    )
    r.add_argument(
        "--compile-mode",
        choices=["default", "max-autotune"],
        help="max-autotune: inductor times GEMM templates and kernel configs for this GPU and shape "
        "(implies --compile; compiling takes minutes instead of about one)",
    )
    r.add_argument(
        "--compile-backend",
        choices=["inductor", "aot_eager", "eager"],
        help="torch.compile's backend (implies --compile): inductor (default) generates fused kernels; "
        "aot_eager traces and partitions the step the same way but runs PyTorch's own kernels: it "
        "compiles in seconds and tells a graph-capture problem from a kernel one; eager: capture only",
    )
    r.add_argument(
        "--cuda-graph",
        choices=["auto", "on", "off"],
        help="capture each whole update as one CUDA graph (default auto: on CUDA in a single process)",
    )
    r.add_argument(
        "--activation-checkpointing",
        action=argparse.BooleanOptionalAction,
        help="keep only each Transformer block's input and recompute the block in the backward pass: "
        "far less activation memory (larger batches, longer rows, Large models) for about a third more "
        "compute; the same results. Runs without a CUDA graph",
    )
    r.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        help="kernels that add in a fixed order, so that a run repeats (and a resume continues) bit for bit "
        "on CUDA too; by default cuDNN's attention backward adds in a varying order there, and such runs "
        "agree to rounding only. CPU runs repeat bit for bit either way",
    )
    r.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, help="also log to OUT/tensorboard")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser(
        "export",
        help="write a checkpoint as a Hugging Face folder",
        description="Export the discriminator (and optionally the generator) of a run or "
        "checkpoint as folders that transformers loads with from_pretrained.",
    )
    p.add_argument(
        "checkpoint",
        metavar="RUN_OR_CHECKPOINT",
        help="a run folder (its newest complete checkpoint is used) or a checkpoint folder",
    )
    p.add_argument("--out", required=True, help="folder for the discriminator (ElectraForPreTraining)")
    p.add_argument("--generator-out", help="also export the generator (ElectraForMaskedLM) here")
    p.add_argument("--tokenizer", help="tokenizer folder to include (default: the checkpoint's own)")
    p.add_argument("--force", action="store_true", help="replace output folders that already hold files")
    _hub_arguments(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "finetune",
        help="fine-tune an encoder on a classification, regression, tagging or question answering task",
        description="Fine-tune a pre-trained ELECTRA (a run, a checkpoint, or any ELECTRA folder) "
        "on a GLUE task, a CSV/TSV/JSONL dataset, CoNLL tagging or SQuAD; report the median "
        "over seeds and write an HF folder plus results.json. --task glue runs every GLUE task "
        "in --data, each into OUT/<task>, and reports the GLUE score.",
    )
    p.add_argument("--model", required=True, help="run folder, checkpoint, or HF ELECTRA folder / hub name")
    p.add_argument(
        "--task",
        required=True,
        choices=[*TASKS[:9], "glue", *TASKS[9:]],
        help="a GLUE task, glue (all of them: the GLUE score), csv (your own table), ner (CoNLL tagging), "
        "squad or squad_v2 (extractive question answering)",
    )
    p.add_argument(
        "--data",
        required=True,
        help="GLUE: the task's TSV folder, a folder of all GLUE tasks, a saved datasets folder, or 'glue' "
        "(the hub dataset); --task glue: a folder of GLUE task folders (SST-2, CoLA, ...) or 'glue'; "
        "csv/ner: a folder with train.* and dev.* files; squad/squad_v2: a folder with train*.json and "
        "dev*.json, a saved datasets folder, or the hub's squad / squad_v2",
    )
    p.add_argument(
        "--out", required=True, help="output folder (HF model + results.json; --task glue: a folder per task)"
    )
    p.add_argument("--seeds", type=int, default=1, help="runs with seeds 0..N-1; the median is reported")
    p.add_argument("--epochs", type=int, help="default: 3 (10 for RTE and STS-B, 2 for SQuAD)")
    p.add_argument("--lr", type=float, help="default: 3e-4 small, 1e-4 base, 5e-5 large, 2e-3 tiny")
    p.add_argument("--layer-decay", type=float, help="layer-wise LR decay (default 0.8; 0.9 for 24 layers)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per step (default 32)")
    p.add_argument(
        "--max-length", type=int, help="tokens per example (default 128; SQuAD 512, or the model's positions)"
    )
    p.add_argument("--null-threshold", type=float, help=NULL_THRESHOLD)
    p.add_argument(
        "--doc-stride",
        type=int,
        help="SQuAD: tokens shared by neighbouring windows of a long context (default 128, or half a window's context "
        "if less; fewer than a window's context)",
    )
    p.add_argument("--no-truncate", action="store_true", help="refuse longer examples instead of truncating")
    p.add_argument("--max-train-examples", type=int, help="train on a seeded random subset of this size")
    p.add_argument("--text-field", help="csv: text column (default text)")
    p.add_argument("--pair-field", help="csv: second text column, for sentence pairs")
    p.add_argument("--label-field", help="csv: label column (default label)")
    p.add_argument(
        "--regression",
        action="store_true",
        default=None,
        help="csv: labels are scores (default: inferred; numbers with fractions are scores)",
    )
    p.add_argument(
        "--multi-label",
        action="store_true",
        default=None,
        help="csv: each text has any number of the labels: a JSONL list, or a cell of labels joined by "
        "--label-separator (an empty cell is none); sigmoid per label, micro-F1",
    )
    p.add_argument("--label-separator", help="csv, --multi-label: what joins a cell's labels (default ,)")
    p.add_argument(
        "--label-columns",
        type=_column_names,
        help="csv: multi-label data with one column (or JSONL field) per label, holding 1 where the label "
        "applies and 0 where not: those columns' names, joined by commas (implies --multi-label)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto", help=PRECISION)
    p.add_argument(
        "--save-minutes",
        type=float,
        default=30.0,
        help="save a seed's progress this often (default 30): the same command after a stop continues it "
        "where it was, exactly",
    )
    p.add_argument(
        "--data-parallel",
        action="store_true",
        help="under torchrun: all processes train each seed together (DDP, each a slice of every batch) "
        "instead of sharing out the seeds; for fewer seeds than GPUs",
    )
    p.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="recompute each Transformer block in the backward pass instead of keeping its activations: "
        "far less memory (Large models, 512-token SQuAD windows) for about a third more compute; the same results",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="kernels that add in a fixed order, so that a seed repeats (and a stopped one continues) bit for "
        "bit on CUDA too; by default cuDNN's attention backward adds in a varying order there",
    )
    p.add_argument("--force", action="store_true", help="replace an output folder that holds files")
    _hub_arguments(p)
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar or progress lines (epoch scores); notes still show"
    )
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser(
        "evaluate",
        help="score a fine-tuned model on a task's labelled data",
        description="Score a fine-tuned folder (ours or any transformers ELECTRA classifier, tagger or question "
        "answerer) on the labelled splits of a task's data, read and scored as electra finetune reads and "
        "scores them: the dev sets, and a labelled test file for csv/ner. No training file is needed.",
    )
    p.add_argument("--model", required=True, help="a fine-tuned folder or hub name")
    p.add_argument(
        "--task",
        required=True,
        choices=TASKS,
        help="the task, as for finetune",
    )
    p.add_argument("--data", required=True, help="the task's data, as for finetune (a training file is not needed)")
    p.add_argument("--split", help="score only this split (dev, dev_matched, dev_mismatched, test ...)")
    p.add_argument("--batch-size", type=int, default=128, help="examples per model run (default 128)")
    p.add_argument("--max-length", type=int, help="default: the one it was fine-tuned with, else 128 (SQuAD 512)")
    p.add_argument(
        "--doc-stride", type=int, help="SQuAD: tokens shared by neighbouring windows (default: as fine-tuned, else 128)"
    )
    p.add_argument("--null-threshold", type=float, help="SQuAD 2.0: as for finetune (default: as fine-tuned, else 0)")
    p.add_argument("--text-field", help="csv: the text column (default: as fine-tuned, else text)")
    p.add_argument("--pair-field", help="csv: a second text column (default: as fine-tuned)")
    p.add_argument("--label-field", help="csv: the label column (default: as fine-tuned, else label)")
    p.add_argument(
        "--label-separator", help="csv, multi-label model: what joins a cell's labels (default: as fine-tuned, else ,)"
    )
    p.add_argument(
        "--label-columns",
        type=_column_names,
        help="csv, multi-label model: its labels' 0/1 columns, joined by commas (default: as fine-tuned)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        help="multi-label model: predict the labels whose probability is above this (default 0.5, as fine-tuned)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto", help=PRECISION)
    p.add_argument("--output", help="also write the results to this JSON file")
    p.add_argument(
        "--predictions", help="write each example's gold label and prediction to this JSONL file (to read the errors)"
    )
    p.add_argument(
        "--per-label",
        action="store_true",
        help="also print each label's (a tagger: each entity type's) precision, recall, F1 and support; "
        "--output holds them always",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict",
        help="label, tag or answer questions about text with a fine-tuned model",
        description="Read texts (plain lines, .csv/.tsv or .jsonl; stdin by default), batch "
        "them by length and write one JSON line per text: its label and score from a sequence "
        "classifier, or its entities from a token classifier (as transformers.pipeline gives them), "
        "or from a question answerer the answer to a question about a context (fields question and context).",
    )
    _model_options(p)
    _text_inputs(p, predict=True)
    p.add_argument(
        "--id-field",
        help='csv/tsv column or jsonl field copied to each output line as "id" (default: id, where present)',
    )
    p.add_argument("--output", help="output .jsonl (default: stdout)")
    p.add_argument("--no-truncate", action="store_true", help="refuse longer texts instead of truncating")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "embed",
        help="one vector per text from an encoder, to a .npy file",
        description="Read texts as predict does, run any ELECTRA folder's encoder (pre-trained or fine-tuned) "
        "over them in length-sorted batches and write an (N, hidden) float32 .npy file, one row per text in "
        "input order: the mean of its tokens' last hidden states, or the [CLS] token's.",
    )
    p.add_argument(
        "--model",
        required=True,
        help="an ELECTRA folder or hub name (discriminator, classifier ...), or a run or checkpoint",
    )
    _text_inputs(p)
    p.add_argument("--output", required=True, help="the .npy file to write")
    p.add_argument("--pooling", choices=("mean", "cls"), default="mean", help="mean over the tokens (default) or [CLS]")
    p.add_argument("--normalize", action="store_true", help="scale each vector to unit length")
    p.add_argument("--batch-size", type=int, default=64, help="texts per model run (default 64)")
    p.add_argument("--max-length", type=int, help="tokens per text, longer ones cut (default: the model's positions)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"], default="fp32", help="as for predict")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "serve",
        help="answer HTTP requests with a fine-tuned model",
        description="Load a fine-tuned model once and answer JSON over HTTP: POST /predict with "
        '{"inputs": ["a text", ...]} (pairs: {"text": ..., "pair": ...}; question answerers: '
        '{"question": ..., "context": ...}) returns {"outputs": [...]}, the records electra predict '
        "writes; GET /health describes the model.",
    )
    _model_options(p, serve=True)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for all; IPv6 such as ::1 or ::)",
    )
    p.add_argument("--port", type=int, default=8000, help="default 8000 (0: any free port)")
    p.add_argument(
        "--max-inputs",
        type=int,
        default=1024,
        help="inputs per request, more refused with 413 (default 1024: a request holds up the others while it runs)",
    )
    p.add_argument(
        "--api-key-file",
        help="answer only requests with the header 'Authorization: Bearer KEY', KEY being this file's one word "
        "(a file, so that the key stays out of the process list and shell history)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "report",
        help="draw a run's metrics to a PNG",
        description="Plot losses, accuracies, learning rate and tokens/s from metrics.jsonl; "
        "several runs are overlaid.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="a run folder of electra pretrain, or its metrics.jsonl")
    p.add_argument("--out", help="a .png file, or DIR/ for DIR/report.png (default: report.png in the first run)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "quickstart",
        help="prepare, pre-train, export and fine-tune end to end",
        description="The whole pipeline on one corpus and SST-2: prepare, pre-train for a time "
        "budget, export, fine-tune, and a pipeline() prediction. Without --corpus and "
        "--task-data it uses wikitext-103 and glue/sst2 from the Hugging Face hub.",
    )
    p.add_argument(
        "--corpus", nargs="+", action="extend", metavar="PATH", help="corpus files, folders, globs (default: wikitext)"
    )
    p.add_argument("--task-data", help="a GLUE SST-2 folder (default: glue/sst2 from the hub)")
    p.add_argument(
        "--minutes",
        type=float,
        default=5.0,
        help="pre-training budget (default 5); a timing probe of up to 60 steps runs first to size the schedule",
    )
    p.add_argument("--out", default="runs/quickstart", help="output folder (default runs/quickstart)")
    p.add_argument("--preset", choices=["tiny", "small", "base", "large"], help="default: small on CUDA, tiny on CPU")
    p.add_argument("--vocab-size", type=int, default=16000, help="WordPiece vocabulary (default 16000)")
    p.add_argument("--batch-size", type=int, help="pre-training batch (default: the preset's)")
    p.add_argument(
        "--force", action="store_true", help="start over (without it, the same command continues a stopped quickstart)"
    )
    p.add_argument("--finetune-examples", type=int, help="SST-2 training sentences (default: all on CUDA, 8000 on CPU)")
    p.set_defaults(func=cmd_quickstart)

    return parser


# how a command stopped by a signal goes on from what it saved
_CONTINUES = {
    "pretrain": "; the same command with --resume continues it",
    "finetune": "; the same command continues it",
}


def _peer_gone(e: Exception) -> bool:
    """Under torchrun: a collective failed because another process ended (its own error, or a
    kill); that process says why, so this one needs no traceback."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 or not isinstance(e, RuntimeError):
        return False
    dist_error = getattr(sys.modules.get("torch.distributed"), "DistError", ())
    return isinstance(e, dist_error) or any(
        text in str(e) for text in ("Connection closed by peer", "Connection reset by peer")
    )


# the commands that share their work among the processes torchrun starts
DISTRIBUTED = ("pretrain", "finetune")


@contextlib.contextmanager
def _one_voice(rank: str):
    """Under torchrun the first process speaks for all: the others' notes, warnings and progress
    (the same as its own) are dropped. Their errors are still said, by `main`, marked with the rank."""
    if rank == "0":
        yield
        return
    said = sys.stderr
    with open(os.devnull, "w") as sys.stderr:
        try:
            yield
        finally:
            sys.stderr = said


def _say(line: str) -> None:
    """One line to stderr in one write, so that the lines of processes sharing it never run together."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


# what an operating system error on a path means for the path a user gave
_OS_ERRORS = {
    errno.EISDIR: "is a folder, not a file: name the file",
    errno.ENOTDIR: "has a file where a folder is expected",
    errno.ENOENT: "does not exist",
    errno.EACCES: "cannot be read or written by this user (permission denied)",
}


def _plain(e: BaseException) -> str:
    """An error as said to the user: Python's "[Errno 21] Is a directory: 'x'" as "x is a folder,
    not a file: name the file"; every other error as its own message."""
    if isinstance(e, OSError) and e.filename and str(e).startswith("[Errno"):
        path = e.filename2 or e.filename  # a rename's destination is the path given, its source a temporary one
        return f"{path} {_OS_ERRORS.get(e.errno, f'cannot be used ({e.strerror})')}"
    return str(e)


def main(argv: list[str] | None = None) -> int:
    from electra.signals import Interrupted, Terminated, terminate_unwinds

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = os.environ.get("RANK", "0") if world > 1 else "0"
    with _one_voice(rank):  # a usage error, the same in every process, is printed by the first
        args = build_parser().parse_args(argv)
    if world > 1 and args.command not in DISTRIBUTED:  # each process would do the whole job, into the same files
        if rank == "0":
            _say(
                f"electra {args.command}: error: {args.command} runs in one process; run it without torchrun "
                f"(under torchrun: {' and '.join(DISTRIBUTED)})"
            )
        return 2
    who = f"electra {args.command}: " + ("" if rank == "0" else f"process {rank}: ")
    try:
        with terminate_unwinds(), _one_voice(rank):  # training loops take SIGTERM themselves, to save their step
            args.func(args)
    except BrokenPipeError:  # stdout's reader stopped early (`electra predict ... | head`), as SIGPIPE ends a tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush has nowhere to fail
        return 128 + signal.SIGPIPE
    except Exception as e:
        from electra.pretrain import TrainingDiverged

        if isinstance(e, Interrupted):  # stopped by a signal, its progress saved
            if rank == "0":  # under torchrun, once
                _say(f"{who}{e}{_CONTINUES.get(args.command, '')}")
            return 128 + e.signum
        if _peer_gone(e):
            first = str(e).strip().splitlines()[0][:200]
            _say(f"{who}stopped: another process of this launch ended first (see its message); {first}")
            return 1
        if not isinstance(e, (UsageError, OSError, ValueError, TrainingDiverged)):
            raise  # a bug, not bad input: keep the traceback
        from electra.atomic import WriteFailed

        again = " with --resume (the checkpoints before are complete)" if args.command == "pretrain" else ""
        _say(f"{who}error: {_plain(e)}{again if isinstance(e, WriteFailed) else ''}")
        return 2
    except KeyboardInterrupt:
        _say(f"{who}interrupted")
        return 130
    except Terminated:
        _say(f"{who}terminated (SIGTERM)")
        return 128 + signal.SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())
