"""Shared by the benchmark scripts: the machine, matmul peaks, interleaved timing, a size flag set.

Timings are taken side by side in one process, alternating which contender goes first, and
reported as medians: other work on the machine then slows both alike, and the ratio holds
better than either absolute figure.
"""

import argparse
import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from gptkit.cpu_kernels import matmul_t, onednn_works


def cpu_name() -> str:
    """The CPU's model name, with its family and model numbers where Linux gives them: a VM's name
    alone ("AMD EPYC") does not tell one generation from the next."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def describe_machine(device: torch.device) -> str:
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{where}; torch {torch.__version__}{load}"


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int, device) -> dict[str, list[float]]:
    """Seconds per call of each function, calls interleaved; the order flips every round."""
    names = list(fns)
    times = {name: [] for name in names}
    for i in range(warmup + repeats):
        for name in names if i % 2 == 0 else reversed(names):
            sync(device)
            start = time.perf_counter()
            fns[name]()
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def training_step(opt, loss_of: Callable[[], torch.Tensor], dtype: torch.dtype, device_type: str) -> Callable[[], None]:
    """One optimizer step on `loss_of()`: autocast below fp32, the gradient scaler for fp16, as gptkit.train."""
    autocast = torch.autocast(device_type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    scaler = torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)

    def step():
        with autocast:
            loss = loss_of()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def step_products(config, rows: int) -> list[tuple[int, int, int]]:
    """(rows, in, out) of the MLP's products in a training step of `rows` tokens: forward, and the
    backward's two (input gradient, weight gradient). The MLP's are the step's largest but the
    output head's, which is slower per FLOP on every CPU measured and too big to time often."""
    c = config.n_embd
    shapes = []
    for n_in, n_out in ((c, 4 * c), (4 * c, c)):
        shapes += [(rows, n_in, n_out), (rows, n_out, n_in), (n_out, rows, n_in)]
    return shapes


def _onednn_offers(a: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether oneDNN's direct product runs for these operands (no bf16 one on CPUs without bf16 instructions)."""
    if not onednn_works():
        return False
    try:
        matmul_t(a[:1], w)
    except RuntimeError:
        return False
    return True


def matmul_peak(
    device: torch.device, dtype: torch.dtype, shapes: list[tuple[int, int, int]], repeats: int = 3
) -> dict[str, float]:
    """Best FLOP/s over `shapes` (rows, in, out) of `F.linear` in `dtype`, by each route PyTorch offers."""
    best = {}
    for rows, n_in, n_out in shapes:
        a = torch.randn(rows, n_in, device=device, dtype=dtype)
        w = torch.randn(n_out, n_in, device=device, dtype=dtype)
        routes = {"torch": lambda a=a, w=w: F.linear(a, w)}
        if device.type == "cpu" and dtype in (torch.float32, torch.bfloat16) and _onednn_offers(a, w):
            routes["oneDNN"] = lambda a=a, w=w: matmul_t(a, w)
        times = time_interleaved(routes, repeats, warmup=1, device=device)
        for name, t in times.items():
            best[name] = max(best.get(name, 0.0), 2 * rows * n_in * n_out / min(t))
    return best


def read_bandwidth(device: torch.device, mb: int = 512, repeats: int = 5) -> float:
    """Bytes/s of reading an `mb`-MB fp32 buffer once (a sum over it; best of `repeats`).

    Far larger than any CPU cache, so it measures memory, the limit of one-token decoding.
    """
    buf = torch.ones(mb * 2**20 // 4, device=device)
    times = time_interleaved({"sum": lambda: buf.sum()}, repeats, warmup=1, device=device)["sum"]
    return buf.numel() * buf.element_size() / min(times)


def weight_bytes_per_step(model) -> int:
    """Bytes of parameters one decoding step reads: all of them once, but for the position table's one row."""
    return sum(p.numel() * p.element_size() for name, p in model.named_parameters() if "wpe" not in name)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """GPT-2 124M by default; smaller shapes for quick checks."""
    parser.add_argument("--n_layer", type=int, default=12)
    parser.add_argument("--n_head", type=int, default=12)
    parser.add_argument("--n_embd", type=int, default=768)
    parser.add_argument("--vocab_size", type=int, default=50257)
    parser.add_argument("--block_size", type=int, default=1024, help="the model's context (position embeddings)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave PyTorch's default)")
    parser.add_argument("--seed", type=int, default=0)


def setup(args) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is built locally
    return torch.device(args.device)


def twin_models(args, dropout: float = 0.0):
    """A random-weight gptkit GPT and a transformers GPT2LMHeadModel (sdpa attention) with the same
    weights; on a CPU gptkit's with the speed-ups its programs apply (`gptkit.cpu_kernels`)."""
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging

    from gptkit import cpu_kernels
    from gptkit.export import hf_config, to_hf_state_dict
    from gptkit.model import GPT, GPTConfig

    logging.set_verbosity_error()  # its notes about loss_type and generation defaults are noise here
    config = GPTConfig(args.block_size, args.vocab_size, args.n_layer, args.n_head, args.n_embd, dropout, True)
    ours = GPT(config)
    hf_cfg = hf_config(config)
    hf_cfg._attn_implementation = "sdpa"
    hf = GPT2LMHeadModel(hf_cfg)
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours), strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    hf.tie_weights()
    assert hf.config._attn_implementation == "sdpa", hf.config._attn_implementation
    device = torch.device(args.device)
    if device.type == "cpu":
        cpu_kernels.speed_up(ours, cpu_kernels.measure_routes())
    return ours.to(device), hf.to(device)


def model_line(model, args) -> str:
    n = model.num_params()
    return f"{n / 1e6:.0f}M parameters ({args.n_layer} layers, {args.n_head} heads, {args.n_embd} wide)"
