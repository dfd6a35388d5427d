"""`electra` command line: prepare | pretrain | export | finetune | predict | quickstart."""

from __future__ import annotations

import argparse
import sys


class UsageError(Exception):
    """A problem with the user's input: printed without a traceback, exit status 2."""


def cmd_export(args: argparse.Namespace) -> None:
    from electra import hf
    from electra.checkpoint import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    tokenizer_dir = args.tokenizer or (ckpt.path if ckpt.has_tokenizer else None)
    if tokenizer_dir is None:
        print(
            "warning: the checkpoint holds no tokenizer and --tokenizer was not given; the exported "
            "folder will need tokenizer files before pipeline() can use it",
            file=sys.stderr,
        )
    out = hf.export_discriminator(ckpt.model, args.out, tokenizer_dir, overwrite=args.force)
    print(f"exported discriminator (ElectraForPreTraining) from {ckpt.path} to {out}")
    if args.generator_out:
        out = hf.export_generator(ckpt.model, args.generator_out, tokenizer_dir, overwrite=args.force)
        print(f"exported generator (ElectraForMaskedLM) to {out}")


def cmd_prepare(args: argparse.Namespace) -> None:
    from electra import prepare as prep
    from electra.corpus import hub_dataset

    if args.merge:
        manifest = prep.merge(args.merge, args.out, overwrite=args.force)
        rows = {s: v["rows"] for s, v in manifest["splits"].items()}
        print(
            f"merged {len(args.merge)} parts into {args.out}: {rows['train']:,} train rows, "
            f"{rows['valid']:,} validation rows"
        )
        return
    if bool(args.corpus) == bool(args.dataset):
        raise UsageError("pass either --corpus PATH [PATH ...] or --dataset NAME (or --merge PART ...)")
    if args.vocab_size is not None and args.tokenizer:
        raise UsageError("--vocab-size trains a new tokenizer and --tokenizer reuses one; pass only one")
    cfg = prep.PrepareConfig(
        seq_len=args.seq_len,
        seed=args.seed,
        validation_fraction=args.validation_fraction,
        rows_per_shard=args.rows_per_shard,
        vocab_size=args.vocab_size or 30522,
        lowercase=not args.cased,
        text_field=args.text_field,
        format=args.format,
        doc_per_file=args.doc_per_file,
        num_parts=args.num_parts,
        part_index=args.part_index,
    )
    dataset = hub_dataset(args.dataset, args.dataset_config, args.dataset_split) if args.dataset else None
    result = prep.prepare(
        args.corpus or [],
        args.out,
        cfg,
        tokenizer=args.tokenizer,
        overwrite=args.force,
        quiet=args.quiet,
        dataset=dataset,
    )
    m, s = result.manifest, result.stats
    train, valid = m["splits"]["train"], m["splits"]["valid"]
    mb = s.bytes / 1e6
    print(
        f"prepared {args.out}: {train['rows']:,} train rows ({train['tokens']:,} tokens) in "
        f"{len(train['shards'])} shards, {valid['rows']:,} validation rows; seq_len {cfg.seq_len}, "
        f"vocab {m['vocab_size']:,}"
    )
    print(
        f"read {s.files:,} files, {mb:,.1f} MB, {m['counts']['documents']:,} documents in {result.seconds:.1f} s "
        f"({mb / result.seconds:,.1f} MB/s, {result.tokens_encoded / result.seconds:,.0f} tokens/s)"
    )
    if m["counts"]["tokens_truncated"]:
        print(
            f"the packing recipe trimmed {m['counts']['tokens_truncated']:,} tokens that overflowed rows "
            f"({m['counts']['tokens_truncated'] / max(result.tokens_encoded, 1):.1%})"
        )
    if s.invalid_utf8:
        print(f"replaced {s.invalid_utf8:,} bytes of invalid UTF-8 with U+FFFD")
    for path, why in s.skipped.items():
        print(f"skipped {path}: {why}")


def _not_yet(name: str):
    def run(args: argparse.Namespace) -> None:
        raise UsageError(f"`electra {name}` is not available in electra {_version()} yet")

    return run


def _version() -> str:
    from electra import __version__

    return __version__


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
        metavar="PATH",
        help="files, folders or globs: .txt .jsonl .json .csv .tsv .parquet (optionally .gz "
        ".bz2 .xz .zst), or a saved Hugging Face dataset folder",
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
    p.add_argument("--seq-len", type=int, default=128, help="tokens per row (default: 128)")
    p.add_argument("--seed", type=int, default=0, help="seed for packing and the split (default: 0)")
    p.add_argument("--validation-fraction", type=float, default=0.01, help="rows held out (default: 0.01)")
    p.add_argument("--rows-per-shard", type=int, default=65536, help="rows per shard file (default: 65536)")
    par = p.add_argument_group("many machines")
    par.add_argument("--num-parts", type=int, default=1, help="split the corpus's documents into this many parts")
    par.add_argument("--part-index", type=int, default=0, help="which part this run prepares (0-based)")
    par.add_argument("--merge", nargs="+", metavar="PART", help="combine prepared part folders into --out")
    p.add_argument("--force", action="store_true", help="replace an output folder that already holds files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    sub.add_parser(
        "pretrain",
        help="pre-train a generator + discriminator with replaced token detection",
        description="pre-train a generator + discriminator with replaced token detection",
    ).set_defaults(func=_not_yet("pretrain"))

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
    p.set_defaults(func=cmd_export)

    for name, text in [
        ("finetune", "fine-tune an encoder on a classification, regression or tagging task"),
        ("predict", "label text with a fine-tuned model"),
        ("quickstart", "prepare, pre-train, export and fine-tune end to end"),
    ]:
        sub.add_parser(name, help=text, description=text).set_defaults(func=_not_yet(name))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UsageError, OSError, ValueError) as e:
        print(f"electra {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"electra {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
