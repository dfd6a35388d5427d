"""Training-step throughput and peak memory: our ELECTRA update against the same RTD step built
from transformers' ElectraForMaskedLM + ElectraForPreTraining with shared embeddings.

    python benchmarks/pretrain_throughput.py --preset small --batch 128 --seq 128 [--precision bf16|fp16]
        [--variants transformers,ours,ours-graph,ours-compiled,ours-compiled-graph,ours-autotuned-graph,
                    ours-checkpointed,ours-compiled-checkpointed,ours-streams,ours-graph-streams,
                    ours-compiled-graph-streams] [--deterministic]

Each variant runs in its own subprocess so that peak memory (RSS on CPU, allocator peak on
CUDA) belongs to it alone. All do the whole step: mask, generator, sample, discriminator,
loss = MLM + 50 x RTD, backward, clip, AdamW. Ours is the training loop's own `Update`
(batches copied from pinned host memory each step, learning rate set each step); the
`-graph` variants replay it as one CUDA graph, the `-compiled` ones torch.compile the
objective and both networks, `-autotuned` the same with `electra pretrain --compile-mode
max-autotune` (inductor times GEMM templates and kernel configs), `-checkpointed` with
`--activation-checkpointing` (each block recomputed in backward), `-streams` with the objective
split in two (`TwoStreams`): the generator's half on a second CUDA stream, so that its backward
runs beside the discriminator's, each half compiled on its own. The baseline is what users
write today: the generator's LM head and cross-entropy run over every position (labels -100
elsewhere). `--precision fp16` trains both with loss scaling: ours on the device (as
`electra pretrain` does on GPUs without bf16), the baseline with torch.amp.GradScaler.

`--inductor KEY=VALUE` gives torch.compile an inductor option in every compiled variant, over
the training loop's own (`electra.pretrain.compile_options`: combo_kernels on CUDA, so
`--inductor combo_kernels=False` measures the step without it), and `--profile PREFIX` writes
each variant's top kernels and its time per step grouped by kind (matmul, attention,
LayerNorm/dropout, GELU, vocabulary, optimizer). `--deterministic` runs every variant under
fixed-order kernels (`electra pretrain --deterministic`), to measure what they cost.

TFLOP/s counts the model's useful work: 6 x multiply-adds per token of every linear layer
and attention product, with the LM head on the masked 15% only, the same for every variant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time

import torch

PAD, CLS, SEP, MASK = 0, 2, 3, 4  # the ids our tokenizers give the specials
VARIANTS = (
    "transformers",
    "ours",
    "ours-graph",
    "ours-compiled",
    "ours-compiled-graph",
    "ours-autotuned-graph",
    "ours-checkpointed",
    "ours-compiled-checkpointed",
    "ours-streams",
    "ours-graph-streams",
    "ours-compiled-graph-streams",
)


def make_batch(B: int, T: int, vocab: int, device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (B, T), generator=g)
    ids[:, 0], ids[:, -1], ids[:, T // 2] = CLS, SEP, SEP
    types = torch.zeros_like(ids)
    types[:, T // 2 + 1 :] = 1
    mask = torch.ones_like(ids)
    return ids.to(device), types.to(device), mask.to(device)


def ours_step(args, device):
    from electra.config import preset
    from electra.data import Batch
    from electra.model import Electra, checkpoint_activations
    from electra.objective import ObjectiveConfig, electra_loss
    from electra.optim import adamw, set_lr
    from electra.parallel import Dist, TrainStep
    from electra.pretrain import compile_options
    from electra.step import Update

    model = Electra(preset(args.preset)).to(device).train()
    checkpoint_activations(model, "checkpointed" in args.variant)
    compiled = "compiled" in args.variant or "autotuned" in args.variant
    options = compile_options("max-autotune" if "autotuned" in args.variant else "default", device)
    options |= parse_inductor(args.inductor)  # --inductor over the training loop's own options
    if "streams" in args.variant:
        train_step = TwoStreams(model, ObjectiveConfig(), device, options if compiled else None)
    else:
        train_step = TrainStep(model, electra_loss, ObjectiveConfig())
        if compiled:
            train_step = torch.compile(train_step, options=options or None, dynamic=False)
    opt = adamw(model, 5e-4, fused=True)
    special = torch.zeros(model.cfg.discriminator.vocab_size, dtype=torch.bool, device=device)
    special[[PAD, CLS, SEP, MASK]] = True
    ids, types, mask = make_batch(args.batch, args.seq, model.cfg.discriminator.vocab_size, torch.device("cpu"))
    batch = Batch(ids, types, mask, torch.arange(args.batch))
    if device.type == "cuda":
        batch = batch.pin_memory()

    def autocast():
        return _autocast(device, args.precision)

    graph, fp16 = "graph" in args.variant, args.precision == "fp16"  # fp16: loss scaling on the device
    update = Update(
        train_step, model, opt, special, MASK, 0.15, 1.0, Dist(), device, autocast, cuda_graph=graph, fp16=fp16
    )

    def step(i):
        torch.manual_seed(i)
        set_lr(opt, 5e-4, 1.0 - i / 10_000)
        return update([batch], i)[0]

    return step, model.cfg


def generator_half(model, input_ids, token_type_ids, attention_mask, special, rows, seed, mask_id, cfg, totals):
    """ELECTRA's objective up to the corrupted input: mask, generator, MLM loss, sample."""
    from electra.objective import _corrupt, _generator_metrics

    masked, gen_logits, mlm, corrupted, labels = _corrupt(
        model, input_ids, token_type_ids, attention_mask, special, rows, seed, mask_id, cfg, totals
    )
    with torch.no_grad():
        metrics = _generator_metrics(gen_logits, masked)
    return mlm, corrupted, labels, metrics


def discriminator_half(model, corrupted, labels, token_type_ids, attention_mask, totals):
    """The rest: the discriminator on the corrupted input and its replaced-token loss."""
    from electra.objective import _discriminator_metrics, replaced_token_loss

    logits = model.discriminator_logits(corrupted, token_type_ids, attention_mask)
    rtd = replaced_token_loss(logits, labels, attention_mask, None if totals is None else totals[1])
    with torch.no_grad():
        metrics = _discriminator_metrics(logits, labels, attention_mask)
    return rtd, metrics


class TwoStreams(torch.nn.Module):
    """`TrainStep(model, electra_loss, cfg)` as two halves, the generator's on a second CUDA stream.

    Autograd runs each backward op on its forward's stream, so the generator's backward (a
    64-wide network in Small: small kernels that leave most of the GPU idle) can run beside the
    discriminator's; a CUDA graph captures both streams. Each half is compiled on its own, as
    one compiled graph launches its kernels on one stream. The discriminator's forward needs the
    generator's samples, so only the backward passes overlap. The same loss and metrics as
    electra_loss (ELECTRA's objective, not ELECTRA 15%); on a CPU, one stream.
    """

    def __init__(self, model, cfg, device: torch.device, compile_options: dict | None = None):
        super().__init__()
        self.model, self.cfg = model, cfg
        self.side = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.generator_half, self.discriminator_half = generator_half, discriminator_half
        if compile_options is not None:
            self.generator_half = torch.compile(generator_half, options=compile_options or None, dynamic=False)
            self.discriminator_half = torch.compile(discriminator_half, options=compile_options or None, dynamic=False)

    def forward(self, input_ids, token_type_ids, attention_mask, special, rows, seed, mask_id, totals=None):
        inputs = (input_ids, token_type_ids, attention_mask, special, rows, seed)
        main = None if self.side is None else torch.cuda.current_stream(self.side.device)
        if main is not None:
            self.side.wait_stream(main)
        with contextlib.nullcontext() if main is None else torch.cuda.stream(self.side):
            mlm, corrupted, labels, gen_metrics = self.generator_half(self.model, *inputs, mask_id, self.cfg, totals)
        if main is not None:
            main.wait_stream(self.side)
            # memory each stream still reads is not handed out again until that stream is done with it
            for t in [*inputs, *([] if totals is None else [totals])]:
                t.record_stream(self.side)
            for t in [mlm, corrupted, labels, *gen_metrics.values()]:
                t.record_stream(main)
        rtd, disc_metrics = self.discriminator_half(self.model, corrupted, labels, *inputs[1:3], totals)
        metrics = {"gen_loss": mlm.detach(), "disc_loss": rtd.detach(), **gen_metrics, **disc_metrics}
        return mlm + self.cfg.rtd_weight * rtd, metrics


def _autocast(device, precision: str):
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32")


def hf_step(args, device):
    import transformers

    from electra.config import preset
    from electra.hf import to_hf_config
    from electra.objective import mask_tokens, sample_tokens
    from electra.optim import adamw

    mcfg = preset(args.preset)
    gen = transformers.ElectraForMaskedLM(transformers.ElectraConfig(**to_hf_config(mcfg.generator, "generator")))
    disc = transformers.ElectraForPreTraining(
        transformers.ElectraConfig(**to_hf_config(mcfg.discriminator, "discriminator"))
    )
    gen.electra.embeddings = disc.electra.embeddings  # shared embeddings, tied LM head
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
    model = torch.nn.ModuleDict({"gen": gen, "disc": disc}).to(device).train()
    opt = adamw(model, 5e-4, fused=device.type == "cuda")
    special = torch.zeros(mcfg.discriminator.vocab_size, dtype=torch.bool, device=device)
    special[[PAD, CLS, SEP, MASK]] = True
    ids, types, mask = make_batch(args.batch, args.seq, mcfg.discriminator.vocab_size, device)
    rows = torch.arange(args.batch, device=device)

    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")  # how fp16 is usually trained

    def step(i):
        with _autocast(device, args.precision):
            m = mask_tokens(ids, mask, special, rows, i, MASK)
            labels = torch.full_like(ids, -100).scatter(1, m.positions, m.targets)
            out = gen(input_ids=m.input_ids, token_type_ids=types, attention_mask=mask, labels=labels)
            logits = torch.gather(out.logits, 1, m.positions[..., None].expand(-1, -1, out.logits.shape[-1]))
            sampled = sample_tokens(logits.detach(), i, rows)
            corrupted = m.input_ids.scatter(1, m.positions, sampled)
            rtd = disc(input_ids=corrupted, token_type_ids=types, attention_mask=mask, labels=(corrupted != ids).long())
            loss = out.loss + 50 * rtd.loss
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return loss

    return step, mcfg


def train_flops_per_token(mcfg, seq: int, mask_prob: float = 0.15) -> float:
    """6 x multiply-adds per token of every linear layer and attention product (forward + backward)."""

    def encoder(c) -> float:
        H, F = c.hidden_size, c.ffn_size
        layer = 4 * H * H + 2 * H * F + 2 * seq * H  # QKV + output, FFN, scores and weighted values
        return c.num_layers * layer + (c.embedding_size * H if c.embedding_size != H else 0)

    d, g = mcfg.discriminator, mcfg.generator
    disc = encoder(d) + d.hidden_size * d.hidden_size + d.hidden_size  # RTD head
    gen = encoder(g) + mask_prob * (g.hidden_size * g.embedding_size + g.embedding_size * g.vocab_size)
    return 6.0 * (disc + gen)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(args) -> dict:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if "graph" in args.variant and device.type != "cuda":
        raise SystemExit(f"{args.variant} needs a CUDA device")
    step, mcfg = (hf_step if args.variant == "transformers" else ours_step)(args, device)
    rss_before = _rss_mb()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warmup_start = time.perf_counter()
    for i in range(max(args.warmup, 5 if "graph" in args.variant else 0)):
        if i == 3 and "graph" in args.variant and device.type == "cuda":
            # the 4th step captures the graph: its private memory pool is allocated then, and
            # replays allocate nothing, so the peak from here on is the graph's whole footprint
            torch.cuda.reset_peak_memory_stats()
        step(i)
    sync()
    warmup_s = time.perf_counter() - warmup_start
    if device.type == "cuda" and "graph" not in args.variant:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(args.steps):
        loss = step(args.warmup + i)
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    tokens = args.batch * args.seq
    result = {
        "variant": args.variant,
        "step_s": seconds,
        "tokens_per_s": tokens / seconds,
        "warmup_s": warmup_s,
        "loss": float(loss.detach()),
        "device": str(device),
    }
    # CPU: the high-water RSS above what the process held once the model was built
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before
    if device.type == "cuda":
        result["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20  # the allocator's cache included
        result["tflops"] = train_flops_per_token(mcfg, args.seq) * tokens / seconds / 1e12
    if args.profile:  # where the device time of a few more steps goes, kernel by kernel
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU]
        with profile(activities=activities) as prof:
            for i in range(5):
                step(i)
            sync()
        key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        events = prof.key_averages()
        groups = group_time({e.key: getattr(e, key) / 1e3 / 5 for e in events})
        result["profile_ms_per_step"] = groups
        with open(f"{args.profile}.{args.variant}.txt", "w") as f:
            f.write(events.table(sort_by=key, row_limit=40, max_name_column_width=90))
            f.write("\n\nms per step, every kernel grouped by name:\n")
            f.write("".join(f"{ms:9.3f}  {group}\n" for group, ms in groups.items()))
    return result


# Kernel (CUDA) or operator (CPU) names -> what the time is spent on; the first match wins.
KERNEL_GROUPS = (
    ("attention", r"sdpa|flash|fmha|attention|cudnn"),
    ("matmul", r"nvjet|gemm|cutlass|xmma|splitK|aten::(mm|addmm|bmm|linear)$"),
    ("optimizer (AdamW, clipping)", r"multi_tensor_apply|adam|foreach|clip"),
    ("vocabulary (softmax, cross-entropy, sampling)", r"softmax|nll|cumsum|searchsorted|argmax|amax"),
    ("embeddings", r"embedding"),
    ("LayerNorm, dropout, residual", r"layer_norm|dropout"),
    ("GELU", r"gelu"),
    ("copies and memsets", r"Memcpy|Memset|copy_"),
)


def group_time(ms_by_name: dict[str, float]) -> dict[str, float]:
    """Sum per-step times into KERNEL_GROUPS (plus "other"), largest first; "total" last."""
    import re

    sums: dict[str, float] = {}
    for name, ms in ms_by_name.items():
        group = next((g for g, pattern in KERNEL_GROUPS if re.search(pattern, name, re.IGNORECASE)), "other")
        sums[group] = sums.get(group, 0.0) + ms
    return {**dict(sorted(sums.items(), key=lambda kv: -kv[1])), "total": sum(sums.values())}


def _inductor_owner(key: str):
    """("triton.cudagraphs") -> (torch._inductor.config.triton, "cudagraphs"); AttributeError if unknown."""
    import torch._inductor.config as config

    *parents, name = key.split(".")
    owner = config
    for part in parents:
        owner = getattr(owner, part)
    getattr(owner, name)
    return owner, name


def parse_inductor(items: list[str]) -> dict:
    """["combo_kernels=True", ...] -> {"combo_kernels": True}, checked against torch._inductor.config."""
    import ast

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            _inductor_owner(key)
        except AttributeError:
            raise SystemExit(f"--inductor {item}: torch._inductor.config has no {key!r}") from None
        try:
            options[key] = ast.literal_eval(value) if sep else True
        except (ValueError, SyntaxError):
            raise SystemExit(f"--inductor {item}: the value must be a Python literal (True, 4, 'x')") from None
    return options


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="fp16: with loss scaling")
    ap.add_argument(
        "--variants",
        default="transformers,ours,ours-compiled",
        help=f"comma-separated, from: {', '.join(VARIANTS)} (-graph variants need CUDA)",
    )
    ap.add_argument("--timeout", type=float, default=900, help="seconds allowed to each variant")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--profile", metavar="PREFIX", help="profile 5 more steps of each variant into PREFIX.VARIANT.txt")
    ap.add_argument(
        "--inductor",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an inductor option (torch._inductor.config.KEY, e.g. combo_kernels=False, "
        "triton.cooperative_reductions=True) for the compiled variants, over the training loop's own; repeatable",
    )
    ap.add_argument(
        "--deterministic",
        action="store_true",
        help="run every variant under fixed-order kernels, as `electra pretrain --deterministic` does",
    )
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    inductor = parse_inductor(args.inductor)
    if args.variant:
        from electra.parallel import deterministic

        with deterministic(args.deterministic):
            print(json.dumps(measure(args)))
        return

    results = []
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        cmd = [sys.executable, __file__, "--variant", variant, *sys.argv[1:]]
        try:  # a variant that fails or hangs is reported, and the others still run
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            if proc.returncode != 0:
                print(f"{variant} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                continue
        except subprocess.TimeoutExpired:
            print(f"{variant} did not finish within {args.timeout} s", file=sys.stderr)
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    if not results:
        raise SystemExit("every variant failed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "torch": torch.__version__, "results": results}, f, indent=1)
    print(
        f"\npreset {args.preset}, batch {args.batch} x seq {args.seq}, {args.precision}, "
        f"device {results[0]['device']}, {os.cpu_count()} cores, torch {torch.__version__}"
        + "".join(f", inductor {k}={v!r}" for k, v in inductor.items())
        + ", deterministic" * args.deterministic
        + "\n"
    )
    base = next((r["tokens_per_s"] for r in results if r["variant"] == "transformers"), None)
    mem = "peak MB" if results[0]["device"].startswith("cuda") else "step MB"  # CPU: RSS above the built model
    print(
        f"| {'variant':<19} | {'tokens/s':>10} | {'step ms':>8} | {mem:>8} | {'TFLOP/s':>7} | "
        f"{'vs transformers':>15} | {'warm-up s':>9} |"
    )
    print(f"|{'-' * 21}|{'-' * 12}|{'-' * 10}|{'-' * 10}|{'-' * 9}|{'-' * 17}|{'-' * 11}|")
    for r in results:
        tflops = f"{r['tflops']:.1f}" if "tflops" in r else "-"
        ratio = f"{r['tokens_per_s'] / base:.2f}x" if base else "-"
        print(
            f"| {r['variant']:<19} | {r['tokens_per_s']:>10,.0f} | {r['step_s'] * 1e3:>8.2f} | {r['peak_mb']:>8,.0f} | "
            f"{tflops:>7} | {ratio:>15} | {r['warmup_s']:>9.1f} |"
        )


if __name__ == "__main__":
    main()
