"""Training-step throughput: gptkit's GPT vs transformers' GPT2LMHeadModel, side by side.

    python benchmarks/bench_train.py                      # GPT-2 124M, batch 4 x 256, fp32 on CPU
    python benchmarks/bench_train.py --device=cuda --dtype=bfloat16 --batch_size=16 --seq_len=1024

One step = forward with loss, backward, AdamW step, zero_grad. Both models start from the same
random weights (checked: equal loss before the first step) and run interleaved in one process.
Both use torch's AdamW with the same settings: lr 6e-4, betas (0.9, 0.95), weight decay 0.1 on
everything but biases and LayerNorm gains, and the fused kernel where the device has one, which
is what the transformers Trainer picks by default (optim="adamw_torch_fused", torch >= 2.8).
`--hf_optimizer=foreach` gives transformers the plain `torch.optim.AdamW(...)` default instead.
MFU is against the measured matmul peak: the best of torch.mm and oneDNN on a large square matmul.
"""

import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import torch  # noqa: E402

from benchmarks import common  # noqa: E402

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
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model first")
    parser.add_argument("--hf_optimizer", default="fused", choices=["fused", "foreach"])
    parser.add_argument("--peak_n", type=int, default=2048, help="size of the square matmul that measures the peak")
    args = parser.parse_args(argv)
    device = common.setup(args)
    dtype = getattr(torch, args.dtype)
    if device.type == "cpu" and dtype != torch.float32:
        print("note: CPU matmuls in bf16/fp16 are far slower than fp32 on most CPUs")

    ours, hf = common.twin_models(args)
    ours.train(), hf.train()
    B, T = args.batch_size, args.seq_len
    window = torch.randint(0, args.vocab_size, (B, T + 1), device=device)
    x, y = window[:, :-1], window[:, 1:]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()

    # Same weights, same task: HF shifts labels inside, so its loss over T-1 positions must
    # equal ours with the last target ignored.
    with torch.no_grad(), autocast:
        y_check = y.clone()
        y_check[:, -1] = -1
        ours_loss = ours(x, y_check)[1].item()
        hf_loss = hf(input_ids=x, labels=x).loss.item()
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    if abs(ours_loss - hf_loss) > tol:
        raise SystemExit(f"the two models disagree before training: loss {ours_loss:.6f} vs {hf_loss:.6f}")

    opt_ours = ours.configure_optimizers(WEIGHT_DECAY, LR, BETAS, device.type)
    opt_hf = hf_optimizer(hf, args.hf_optimizer, device.type)
    net_ours = torch.compile(ours) if args.compile else ours
    net_hf = torch.compile(hf) if args.compile else hf
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step_ours():
        with autocast:
            _, loss = net_ours(x, y)
        scaler.scale(loss).backward()
        scaler.step(opt_ours)
        scaler.update()
        opt_ours.zero_grad(set_to_none=True)

    def step_hf():
        with autocast:
            loss = net_hf(input_ids=x, labels=x).loss
        scaler.scale(loss).backward()
        scaler.step(opt_hf)
        scaler.update()
        opt_hf.zero_grad(set_to_none=True)

    print(f"machine: {common.describe_machine(device)}")
    print(f"model: {common.model_line(ours, args)}; batch {B} x {T} tokens, {args.dtype} on {device.type}")
    peaks = common.matmul_peak(device, torch.float32 if device.type == "cpu" else dtype, args.peak_n)
    times = common.time_interleaved({"gptkit": step_ours, "transformers": step_hf}, args.steps, args.warmup, device)
    # the peak again after the steps: the better of the two, as other load only lowers it
    peaks = {
        k: max(v, common.matmul_peak(device, torch.float32 if device.type == "cpu" else dtype, args.peak_n)[k])
        for k, v in peaks.items()
    }
    peak_route = max(peaks, key=peaks.get)
    peak = peaks[peak_route]
    others = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in peaks.items() if k != peak_route)
    print(f"matmul peak: {peak / 1e9:.0f} GFLOP/s ({peak_route}{'; ' + others if others else ''})")
    print(
        f"optimizers: gptkit {'fused' if opt_ours.defaults.get('fused') else 'foreach'} AdamW, "
        f"transformers {args.hf_optimizer} AdamW; {args.steps} timed steps each after {args.warmup} warm-up"
    )
    flops_per_token = ours.flops_per_token(T)
    tps = {}
    for name, t in times.items():
        dt = common.median(t)
        tps[name] = B * T / dt
        mfu = flops_per_token * B * T / dt / peak
        print(f"{name:>12}: {tps[name]:9.1f} tokens/s  step {dt:.3f} s (min {min(t):.3f})  MFU {100 * mfu:.0f}%")
    print(f"ratio gptkit/transformers: {tps['gptkit'] / tps['transformers']:.2f}x tokens/s")


if __name__ == "__main__":
    main()
