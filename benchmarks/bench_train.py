"""Training-step throughput: gptkit's GPT vs transformers' GPT2LMHeadModel, side by side.

    python benchmarks/bench_train.py                      # GPT-2 124M, batch 4 x 256, on CPU
    python benchmarks/bench_train.py --device=cuda --dtype=bfloat16 --batch_size=16 --seq_len=1024

One step = forward with loss, backward, AdamW step, zero_grad. Both models start from the same
random weights (checked: equal fp32 loss before the first step) and run interleaved in one process.
gptkit runs at `--dtype` (default `auto`: what `gptkit.train` picks on this machine, printed
with its reason); transformers runs in each of `--hf_dtypes` (default: fp32, and bf16 autocast
where the CPU has bf16 instructions, as `Trainer(bf16=True)` would), and the ratio is against
the fastest of them, as a Trainer user who tried both would choose.
Both use torch's AdamW with the same settings: lr 6e-4, betas (0.9, 0.95), weight decay 0.1 on
everything but biases and LayerNorm gains, and the fused kernel where the device has one, which
is what the transformers Trainer picks by default (optim="adamw_torch_fused", torch >= 2.8).
`--hf_optimizer=foreach` gives transformers the plain `torch.optim.AdamW(...)` default instead.
MFU is against the matmul peak measured in each contender's dtype on the step's own product
shapes (forward and backward; the best of PyTorch's default and oneDNN), before and after the
steps, so no contender can pass 100% (up to timing noise).
`--breakdown` (CPU) profiles two more steps of each and splits them into matmuls, attention,
the optimizer and the rest (the least of the two for each); the "ceiling" line is how far
ahead of transformers gptkit would be if its step were nothing but the first three, the
kernels every implementation runs.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from gptkit.device import dtype_choice, native_bf16  # noqa: E402

LR, BETAS, WEIGHT_DECAY = 6e-4, (0.9, 0.95), 0.1


def hf_optimizer(hf, kind: str, device_type: str) -> torch.optim.AdamW:
    """AdamW as the transformers Trainer builds it: no decay for biases and LayerNorm weights."""
    no_decay = {name for name, module in hf.named_modules() if isinstance(module, torch.nn.LayerNorm)}
    decay, rest = [], []
    for name, p in hf.named_parameters():
        (rest if "bias" in name or name.rsplit(".", 1)[0] in no_decay else decay).append(p)
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}]
    fused = {"fused": True} if kind == "fused" and device_type in ("cuda", "cpu") else {}
    return torch.optim.AdamW(groups, lr=LR, betas=BETAS, **fused)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_model_args(parser)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--hf_dtypes", default="", help="comma-separated; default float32 (+ bfloat16, see above)")
    parser.add_argument("--also", default="", help="comma-separated extra dtypes to time gptkit in, e.g. float32")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per contender")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per contender first")
    parser.add_argument("--hf_optimizer", default="fused", choices=["fused", "foreach"])
    parser.add_argument(
        "--breakdown", action="store_true", help="CPU: profile two more steps of each, time by kind of kernel"
    )
    args = parser.parse_args(argv)
    device = common.setup(args)
    dtype, why = choose_dtype(args.dtype, device.type)
    hf_dtypes = [getattr(torch, d) for d in args.hf_dtypes.split(",") if d] or default_hf_dtypes(device, dtype)
    our_dtypes = list(dict.fromkeys([dtype] + [getattr(torch, d) for d in args.also.split(",") if d]))

    ours, hf = common.twin_models(args)
    ours.train(), hf.train()
    B, T = args.batch_size, args.seq_len
    window = torch.randint(0, args.vocab_size, (B, T + 1), device=device)
    x, y = window[:, :-1], window[:, 1:]

    # Same weights, same task: HF shifts labels inside, so its loss over T-1 positions must
    # equal ours with the last target ignored.
    with torch.no_grad():
        y_check = y.clone()
        y_check[:, -1] = -1
        ours_loss = ours(x, y_check)[1].item()
        hf_loss = hf(input_ids=x, labels=x).loss.item()
    if abs(ours_loss - hf_loss) > 1e-4:
        raise SystemExit(f"the two models disagree before training: loss {ours_loss:.6f} vs {hf_loss:.6f}")

    opt_ours = ours.configure_optimizers(WEIGHT_DECAY, LR, BETAS, device.type)
    opt_hf = hf_optimizer(hf, args.hf_optimizer, device.type)
    net_ours = torch.compile(ours) if args.compile else ours
    net_hf = torch.compile(hf) if args.compile else hf

    # Each contender trains its own copy of the weights: ours in each of our dtypes shares one
    # model, which is fine as only time is measured.
    contenders, dtype_of = {}, {}
    for d in our_dtypes:
        name = "gptkit" if d == dtype else f"gptkit {short(d)}"
        contenders[name] = common.training_step(opt_ours, lambda: net_ours(x, y)[1], d, device.type)
        dtype_of[name] = d
    for d in hf_dtypes:
        name = f"transformers {short(d)}"
        contenders[name] = common.training_step(opt_hf, lambda: net_hf(input_ids=x, labels=x).loss, d, device.type)
        dtype_of[name] = d

    print(f"machine: {common.describe_machine(device)}")
    print(f"model: {common.model_line(ours, args)}; batch {B} x {T} tokens on {device.type}")
    print(f"gptkit dtype: {why}")
    shapes = common.step_products(ours.config, B * T)
    peaks = {d: common.matmul_peak(device, d, shapes) for d in set(dtype_of.values())}
    times = common.time_interleaved(contenders, args.steps, args.warmup, device)
    # the peaks again after the steps: the better of the two, as other load only lowers them
    for d, before in peaks.items():
        after = common.matmul_peak(device, d, shapes)
        peaks[d] = {k: max(v, after[k]) for k, v in before.items()}
    for d, routes in peaks.items():
        listed = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in routes.items())
        print(f"matmul peak {short(d)}: {max(routes.values()) / 1e9:.0f} GFLOP/s on the step's shapes ({listed})")
    print(
        f"optimizers: gptkit {'fused' if opt_ours.defaults.get('fused') else 'foreach'} AdamW, "
        f"transformers {args.hf_optimizer} AdamW; {args.steps} timed steps each after {args.warmup} warm-up"
    )
    flops_per_token = ours.flops_per_token(T)
    tps = {}
    for name, t in times.items():
        dt = common.median(t)
        tps[name] = B * T / dt
        mfu = flops_per_token * B * T / dt / max(peaks[dtype_of[name]].values())
        print(f"{name:>18}: {tps[name]:9.1f} tokens/s  step {dt:.3f} s (min {min(t):.3f})  MFU {100 * mfu:.0f}%")
    best_hf = max((n for n in tps if n.startswith("transformers")), key=tps.get)
    print(f"ratio gptkit/transformers: {tps['gptkit'] / tps[best_hf]:.2f}x tokens/s (against {best_hf})")
    if args.breakdown and device.type == "cpu":
        print_breakdown(contenders, min(times[best_hf]), best_hf)


# Kernels every implementation of the step runs, by op name (profiler self time): the products,
# attention, the optimizer. What is left (LayerNorm, GELU, residual adds, embedding, the loss,
# autocast's casts, allocation) is where implementations differ.
KERNEL_KINDS = {
    "matmuls": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise"),
    "attention": ("scaled_dot_product",),
    "optimizer": ("adamw", "aten::_foreach_"),
}


def step_breakdown(step, repeats: int = 2) -> dict[str, float]:
    """Seconds of one `step()` by kind of kernel: CPU self time of its ops under torch.profiler,
    the least of `repeats` profiled steps for each kind (other load only ever adds time)."""
    from torch.profiler import ProfilerActivity, profile

    best = dict.fromkeys([*KERNEL_KINDS, "the rest"], float("inf"))
    for _ in range(repeats):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        seconds = dict.fromkeys(best, 0.0)
        for event in prof.key_averages():
            kind = next((k for k, names in KERNEL_KINDS.items() if any(n in event.key for n in names)), "the rest")
            seconds[kind] += event.self_cpu_time_total / 1e6
        best = {k: min(v, seconds[k]) for k, v in best.items()}
    return best


def print_breakdown(contenders: dict, best_hf_step: float, best_hf: str) -> None:
    """Where each contender's step goes, and how far gptkit could get ahead with none of "the rest"."""
    print("profiled steps, seconds by kind of kernel (the least of 2 for each):")
    for name, step in contenders.items():
        parts = step_breakdown(step)
        listed = ", ".join(f"{k} {v:.3f}" for k, v in parts.items())
        print(f"{name:>18}: {sum(parts.values()):.3f} s = {listed}")
        if name == "gptkit":
            floor = sum(v for k, v in parts.items() if k != "the rest")
    print(
        f"ceiling gptkit/transformers: {best_hf_step / floor:.2f}x if gptkit's step were only its matmuls, "
        f"attention and optimizer ({floor:.2f} s) against {best_hf}'s fastest whole step ({best_hf_step:.2f} s)"
    )


def choose_dtype(name: str, device_type: str) -> tuple[torch.dtype, str]:
    """gptkit's dtype and why: `auto` is decided exactly as `gptkit.train` decides it."""
    dtype, why = dtype_choice(name, device_type, autocast=True)
    return dtype, f"{str(dtype)[6:]} ({f'auto: {why}' if why else name})"


def default_hf_dtypes(device: torch.device, ours: torch.dtype) -> list[torch.dtype]:
    """fp32, and the lower precision a Trainer user would try: bf16 on CPUs that have it, ours on GPUs."""
    if device.type == "cpu":
        return [torch.float32] + ([torch.bfloat16] if native_bf16() else [])
    return list(dict.fromkeys([torch.float32, ours]))


def short(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


if __name__ == "__main__":
    main()
