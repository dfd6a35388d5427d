"""How hard is replaced token detection for a discriminator on its own? It learns to find
replacements drawn uniformly from the vocabulary, or drawn by word frequency (a generator that
ignores context), with no generator training beside it.

    python examples/replacement_difficulty.py --data DATA [--steps 2500] [--replacements uniform,unigram]

DATA is a folder from `electra prepare`. Positions are chosen as ELECTRA chooses them (15% of
the real tokens); each gets a drawn token (counted as replaced only where it differs from the
original), and the discriminator (`--architecture`, default 2 layers of 64) trains on the binary
loss over every real token, as in pre-training. The table compares its loss with the prior: the
entropy of the replaced fraction, which a model that finds nothing reaches by predicting that
fraction everywhere. Uniform draws are mostly rare word pieces, found from the token alone;
frequency draws look like text and are found only from context.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from electra.config import EncoderConfig, ModelConfig, generator_config
from electra.data import Loader, Shards
from electra.model import Electra
from electra.objective import mask_tokens, replace_tokens, replaced_token_loss
from electra.pretrain import token_kinds

SIZES = {"embedding_size": 64, "hidden_size": 64, "num_layers": 2, "num_heads": 2, "ffn_size": 256}


def unigram(shards: Shards) -> torch.Tensor:
    """How often each token occurs in the training rows, specials and padding left out, as probabilities."""
    counts = np.zeros(shards.manifest["vocab_size"], np.float64)
    for ids, lengths in zip(shards.ids, shards.lengths, strict=True):
        rows, n = np.asarray(ids), np.asarray(lengths)
        counts += np.bincount(rows[np.arange(rows.shape[1]) < n[:, None]], minlength=len(counts))
    counts[[shards.manifest["special_tokens"][k] for k in ("pad", "cls", "sep", "mask", "unk")]] = 0
    return torch.tensor(counts / counts.sum(), dtype=torch.float32)


def prior_loss(fraction: float) -> float:
    """Binary cross-entropy of predicting `fraction` everywhere: what a discriminator that finds nothing reaches."""
    return -(fraction * math.log(fraction) + (1 - fraction) * math.log(1 - fraction))


def train(data: str, draw: str, steps: int, batch_size: int, lr: float, sizes: dict, seed: int = 0) -> dict:
    """The discriminator's mean loss, recall and precision over the last 10% of `steps`, and the prior."""
    torch.manual_seed(seed)
    shards = Shards(data)
    manifest = shards.manifest
    vocab = manifest["vocab_size"]
    disc = EncoderConfig(vocab_size=vocab, max_positions=shards.seq_len, **sizes)
    model = Electra(ModelConfig(discriminator=disc, generator=generator_config(disc, 0.5)))
    params = [p for name, p in model.named_parameters() if not name.startswith("generator")]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    special, mask_id = token_kinds(data, manifest, False), manifest["special_tokens"]["mask"]
    frequencies = unigram(shards) if draw == "unigram" else None
    loader, last = Loader(shards, batch_size, seed), []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:  # linear warmup over 100 steps, then constant
            group["lr"] = lr * min(1.0, step / 100)
        (b,) = loader.next()
        masked = mask_tokens(b.input_ids, b.attention_mask, special, b.rows, step, mask_id, 0.15)
        shape = masked.positions.shape
        if frequencies is None:
            drawn = torch.randint(len(manifest["special_tokens"]), vocab, shape)
        else:
            drawn = torch.multinomial(frequencies, shape.numel(), replacement=True).view(shape)
        corrupted, labels = replace_tokens(b.input_ids, masked, drawn)
        logits = model.discriminator_logits(corrupted, b.token_type_ids, b.attention_mask)
        loss = replaced_token_loss(logits, labels, b.attention_mask)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step > steps - max(1, steps // 10):
            real = b.attention_mask.bool()
            found, replaced = (logits > 0) & real, labels.bool() & real
            last.append(
                [
                    loss.item(),
                    (found & replaced).sum().item(),
                    replaced.sum().item(),
                    found.sum().item(),
                    real.sum().item(),
                ]
            )
    loss, hits, replaced, found, real = np.array(last).sum(0)
    return {
        "replacements": draw,
        "steps": steps,
        "seconds": time.perf_counter() - start,
        "loss": loss / len(last),
        "prior": prior_loss(replaced / real),
        "recall": hits / max(replaced, 1),
        "precision": hits / max(found, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a folder from electra prepare")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--replacements", default="uniform,unigram", help="comma-separated: uniform, unigram")
    ap.add_argument("--architecture", type=json.loads, default={}, help=f"sizes as JSON (default {SIZES})")
    args = ap.parse_args()
    print("| replacements | steps | seconds | loss (last 10%) | prior | recall | precision |")
    print("|---|---|---|---|---|---|---|")
    for draw in args.replacements.split(","):
        r = train(args.data, draw, args.steps, args.batch_size, args.lr, {**SIZES, **args.architecture})
        print(
            f"| {draw} | {r['steps']:,} | {r['seconds']:.0f} | {r['loss']:.4f} | {r['prior']:.4f} | "
            f"{r['recall']:.3f} | {r['precision']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
