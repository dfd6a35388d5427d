"""Throughput and peak memory of `electra prepare`, against the tokenizer's own encode_batch.

    python benchmarks/prepare_throughput.py [--corpus DIR] [--synthetic-gb 1.0] [--work DIR]

Rows of the printed table:
  encode_batch alone       the same sentences, already in memory, through Tokenizer.encode_batch
  encode_batch_fast alone  the same through encode_batch_fast (no offsets), which prepare uses
  prepare (corpus)         `electra prepare` end to end on the corpus: read, normalise, split,
                           encode, pack, write shards, hash (a subprocess; wall time, peak RSS)
  prepare (synthetic)      the same on a corpus of >= --synthetic-gb GB made by repeating the
                           corpus (symbolic links), for the memory figure
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "corpus" / "gutenberg"


def run_prepare(corpus: list[str], out: Path, tokenizer: Path) -> tuple[float, float, dict]:
    """Wall seconds, peak RSS in MB, and the manifest of one `electra prepare` subprocess."""
    cmd = [
        sys.executable,
        "-m",
        "electra",
        "prepare",
        "--corpus",
        *corpus,
        "--doc-per-file",
        "--tokenizer",
        str(tokenizer),
        "--out",
        str(out),
        "--force",
        "--quiet",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"electra prepare failed with status {status}: {' '.join(cmd)}")
    manifest = json.loads((out / "manifest.json").read_text())
    return seconds, usage.ru_maxrss / 1024, manifest  # ru_maxrss is in KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder of .txt books")
    ap.add_argument("--vocab-size", type=int, default=30522)
    ap.add_argument("--synthetic-gb", type=float, default=1.0, help="0 skips the synthetic run")
    ap.add_argument("--work", type=Path, default=Path("/tmp/electra-prepare-bench"))
    args = ap.parse_args()

    from electra import corpus
    from electra.prepare import _batches
    from electra.tokenizer import save_tokenizer, train_wordpiece

    books = sorted(args.corpus.glob("*.txt"))
    if not books:
        raise SystemExit(f"no .txt files in {args.corpus}")
    args.work.mkdir(parents=True, exist_ok=True)
    total_mb = sum(b.stat().st_size for b in books) / 1e6

    def sentence_batches():
        items = corpus.stream(books, corpus.ReadStats(), doc_per_file=True)
        return ([s for s in b if s is not None] for b in _batches(items))

    start = time.perf_counter()
    tok = train_wordpiece(sentence_batches, args.vocab_size, show_progress=False)
    train_s = time.perf_counter() - start
    tok_dir = args.work / "tokenizer"
    save_tokenizer(tok, tok_dir)

    rows = []
    batches = list(sentence_batches())
    for name, encode in (("encode_batch alone", tok.encode_batch), ("encode_batch_fast alone", tok.encode_batch_fast)):
        start = time.perf_counter()
        tokens = sum(len(e.ids) for b in batches for e in encode(b, add_special_tokens=False))
        s = time.perf_counter() - start
        rows.append((name, total_mb, s, tokens, None))
    del batches

    s, rss, m = run_prepare([str(b) for b in books], args.work / "out-corpus", tok_dir)
    rows.append((f"prepare ({args.corpus.name})", m["counts"]["bytes"] / 1e6, s, m["counts"]["tokens_encoded"], rss))

    if args.synthetic_gb > 0:
        synthetic = args.work / "synthetic"
        shutil.rmtree(synthetic, ignore_errors=True)
        synthetic.mkdir()
        copies = int(args.synthetic_gb * 1e9 / (total_mb * 1e6)) + 1
        for c in range(copies):
            for b in books:
                (synthetic / f"{c:03d}-{b.name}").symlink_to(b.resolve())
        s, rss, m = run_prepare([str(synthetic)], args.work / "out-synthetic", tok_dir)
        rows.append(
            (f"prepare (synthetic, {copies} copies)", m["counts"]["bytes"] / 1e6, s, m["counts"]["tokens_encoded"], rss)
        )
        shutil.rmtree(args.work / "out-synthetic")

    base = rows[0][3] / rows[0][2]
    print(
        f"\ncorpus {args.corpus} ({len(books)} files, {total_mb:.1f} MB), vocab {tok.get_vocab_size():,}, "
        f"{os.cpu_count()} cores; tokenizer training took {train_s:.1f} s\n"
    )
    print(
        f"| {'run':<34} | {'MB':>8} | {'seconds':>8} | {'MB/s':>6} | {'tokens/s':>10} | "
        f"{'vs encode_batch':>15} | {'peak RSS MB':>11} |"
    )
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|{'-' * 8}|{'-' * 12}|{'-' * 17}|{'-' * 13}|")
    for name, mb, s, tokens, rss in rows:
        rss_text = f"{rss:,.0f}" if rss is not None else "-"
        print(
            f"| {name:<34} | {mb:>8,.1f} | {s:>8.1f} | {mb / s:>6.2f} | {tokens / s:>10,.0f} | "
            f"{tokens / s / base:>14.2f}x | {rss_text:>11} |"
        )


if __name__ == "__main__":
    main()
