"""What one training step costs under each pre-training objective, same model, batch and data.

    python benchmarks/objective_cost.py [--preset tiny] [--batch 16] [--seq 128] [--vocab 16000] [--steps 10]

ELECTRA's efficiency analysis (Table 5) compares objectives at equal compute; on a given
machine, "equal compute" is equal time, and the objectives do not cost the same per step:
the MLM baseline has no discriminator, Replace MLM runs a second vocabulary head at the
masked positions, All-Tokens MLM one at every position. `electra-whole-words` is ELECTRA with
--whole-word-masking, a fifth of the tokens continuing a word. The table gives the median step
(objective, backward, AdamW) in milliseconds, tokens/s, and the cost relative to ELECTRA's.
Random weights and tokens: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KINDS = ("electra", "electra-whole-words", "electra-15", "replace-mlm", "all-tokens-mlm", "mlm")
WORD_PIECES = 0.2  # electra-whole-words: this share of the vocabulary (and so of the tokens) are "##" pieces


def measure(kind: str, preset: str, batch: int, seq: int, vocab: int, steps: int, warmup: int) -> float:
    """Median seconds of one step."""
    import torch

    from electra.config import ModelConfig, generator_config
    from electra.config import preset as model_preset
    from electra.model import Electra
    from electra.objective import CONTINUES, MAIN_LM_HEAD, OBJECTIVES, SPECIAL, ObjectiveConfig
    from electra.optim import adamw

    whole_word = kind == "electra-whole-words"
    kind = "electra" if whole_word else kind
    cfg = model_preset(preset, vocab_size=vocab)
    if kind == "mlm":  # as `electra pretrain` builds it: the masked LM is the full-size network
        cfg = ModelConfig(cfg.discriminator, generator_config(cfg.discriminator, 1.0))
    cfg = dataclasses.replace(cfg, discriminator_lm_head=kind in MAIN_LM_HEAD)
    torch.manual_seed(0)
    model = Electra(cfg).train()
    optimizer = adamw(model, 1e-4, 0.01)
    special = torch.zeros(vocab, dtype=torch.int8)
    special[:5] = SPECIAL  # [PAD], [UNK], [CLS], [SEP], [MASK] in `electra prepare`'s vocabularies
    special[round(vocab * (1 - WORD_PIECES)) :] = CONTINUES
    ids = torch.randint(5, vocab, (batch, seq))
    ids[:, 0], ids[:, -1] = 2, 3
    types, mask, rows = torch.zeros_like(ids), torch.ones_like(ids), torch.arange(batch)
    objective, ocfg = OBJECTIVES[kind], ObjectiveConfig(kind=kind, whole_word=whole_word)
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        loss, _ = objective(model, ids, types, mask, special, rows, step, 4, ocfg)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small", "base", "large"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=16000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--objectives", default=",".join(KINDS), help=f"comma-separated, from {', '.join(KINDS)}")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    kinds = args.objectives.split(",")
    if unknown := [k for k in kinds if k not in KINDS]:
        ap.error(f"unknown objective(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    if min(args.batch, args.seq, args.steps) < 1 or args.vocab < 6 or args.warmup < 0:
        ap.error("--batch, --seq and --steps must be at least 1, --vocab at least 6, --warmup at least 0")

    rows = []
    for kind in kinds:
        seconds = measure(kind, args.preset, args.batch, args.seq, args.vocab, args.steps, args.warmup)
        rows.append({"objective": kind, "ms": seconds * 1000, "tokens_per_s": args.batch * args.seq / seconds})
    base = next((r["ms"] for r in rows if r["objective"] == "electra"), rows[0]["ms"])
    print(f"{args.preset}, batch {args.batch} x {args.seq}, vocabulary {args.vocab:,}, median of {args.steps} steps")
    print("| objective | ms per step | tokens/s | x ELECTRA's step |\n|---|---|---|---|")
    for r in rows:
        r["relative"] = r["ms"] / base
        print(f"| {r['objective']} | {r['ms']:.1f} | {r['tokens_per_s']:,.0f} | {r['relative']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
