"""The generator's vocabulary stage, forward and backward: LM head at the masked slots,
cross-entropy, accuracy and sampling, the way the library does it against the previous way.

    python benchmarks/vocab_stage.py [--device cuda] [--batch 128] [--seq 128] [--compile]

`full-cdf` is the previous formulation (softmax, a cumulative sum over the whole vocabulary,
one search; accuracy from a separate argmax); `library` is `electra.objective` today (a
two-level CDF search over blocks of 128 tokens; accuracy from the maximum the cross-entropy
already takes). Both draw from the same distribution. ELECTRA-Small shapes by default: K =
round(0.15 T) slots per row, embedding width 128, the 30,522-token BERT vocabulary.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from electra.objective import Masked, _generator_metrics, masked_lm_loss, num_slots, rates, sample_tokens, uniform


def full_cdf_sample(logits: torch.Tensor, seed: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    probs = torch.softmax(logits.float(), dim=-1)
    cdf = probs.cumsum(-1)
    u = uniform(seed, rows, logits.shape[1], stream=4) * cdf[..., -1]
    return torch.searchsorted(cdf, u[..., None]).squeeze(-1).clamp_(max=logits.shape[-1] - 1)


def full_cdf_stage(h, weight, bias, masked, seed, rows):
    logits = F.linear(h, weight, bias)  # (B, K, V)
    loss = masked_lm_loss(logits, masked)
    with torch.no_grad():
        hit = (logits.argmax(-1) == masked.targets).float()
        accuracy = (hit * masked.weights).sum() / masked.weights.sum()
        sampled = full_cdf_sample(logits.detach(), seed, rows)
    return loss, accuracy, sampled


def library_stage(h, weight, bias, masked, seed, rows):
    logits = F.linear(h, weight, bias)
    loss = masked_lm_loss(logits, masked)
    with torch.no_grad():
        accuracy = rates(_generator_metrics(logits, masked))["gen_accuracy"]
        sampled = sample_tokens(logits.detach(), seed, rows)
    return loss, accuracy, sampled


def measure(stage, args, device, dtype) -> dict:
    torch.manual_seed(0)
    B, K, E, V = args.batch, num_slots(args.seq, 0.15), args.embedding, args.vocab
    h = torch.randn(B, K, E, device=device, requires_grad=True)
    weight = (torch.randn(V, E, device=device) * 0.02).requires_grad_()
    bias = torch.zeros(V, device=device, requires_grad=True)
    masked = Masked(None, None, torch.randint(V, (B, K), device=device), torch.ones(B, K, device=device))
    seed, rows = torch.zeros((), dtype=torch.int64, device=device), torch.arange(B, device=device)
    fn = torch.compile(stage) if args.compile else stage

    def step(i: int):
        seed.fill_(i)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss, accuracy, sampled = fn(h, weight, bias, masked, seed, rows)
        loss.backward()
        return sampled

    for i in range(args.warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(args.steps):
        sampled = step(args.warmup + i)
    sampled.cpu()  # waits for the device
    ms = (time.perf_counter() - start) / args.steps * 1e3
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return {"ms": ms, "peak_mb": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--embedding", type=int, default=128)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--compile", action="store_true", help="torch.compile each stage (as the training step is)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    device, dtype = torch.device(args.device), {"fp32": torch.float32, "bf16": torch.bfloat16}[args.precision]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    K = num_slots(args.seq, 0.15)
    print(f"{name}; torch {torch.__version__}; {args.precision}; compiled: {args.compile}")
    print(f"{args.batch} rows x {K} slots x {args.vocab} tokens, embedding {args.embedding}; {args.steps} steps\n")
    results = {
        v: measure(s, args, device, dtype) for v, s in (("full-cdf", full_cdf_stage), ("library", library_stage))
    }
    base = results["full-cdf"]["ms"]
    print(f"| {'variant':<9} | {'ms / step':>9} | {'speed-up':>8} | {'peak MB':>8} |")
    print(f"|{'-' * 11}|{'-' * 10}:|{'-' * 9}:|{'-' * 9}:|")
    for v, r in results.items():
        peak = f"{r['peak_mb']:.0f}" if device.type == "cuda" else "-"
        print(f"| {v:<9} | {r['ms']:>9.3f} | {base / r['ms']:>7.2f}x | {peak:>8} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "vocab_stage", "args": vars(args), "device": name, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
