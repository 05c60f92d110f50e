"""Shared by the benchmark scripts: the machine, the matmul peak, interleaved timing, a size flag set.

Timings are taken side by side in one process, alternating which contender goes first, and
reported as medians: other work on the machine then slows both alike, and the ratio holds
better than either absolute figure.
"""

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from gptkit.cpu_kernels import _matmul_t, _onednn_works


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """FLOP/s of an n x n x n matmul, by each route this PyTorch offers (median of `repeats`)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    routes = {"torch.mm": lambda: torch.mm(a, b)}
    if device.type == "cpu" and dtype == torch.float32 and _onednn_works():
        routes["oneDNN"] = lambda: _matmul_t(a, b)
    times = time_interleaved(routes, repeats, warmup=1, device=device)
    return {name: 2 * n**3 / median(t) for name, t in times.items()}


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
    """A random-weight gptkit GPT and a transformers GPT2LMHeadModel (sdpa attention) with the same weights."""
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging

    from gptkit.model import GPT, GPTConfig
    from gptkit.pretrained import hf_config, to_hf_state_dict

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
    return ours.to(device), hf.to(device)


def model_line(model, args) -> str:
    n = model.num_params()
    return f"{n / 1e6:.0f}M parameters ({args.n_layer} layers, {args.n_head} heads, {args.n_embd} wide)"
