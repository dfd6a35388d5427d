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

    for name, text in [
        ("prepare", "corpus -> tokenizer + packed pre-training shards"),
        ("pretrain", "pre-train a generator + discriminator with replaced token detection"),
    ]:
        sub.add_parser(name, help=text, description=text).set_defaults(func=_not_yet(name))

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
    except (UsageError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"electra {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"electra {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
