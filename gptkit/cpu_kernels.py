"""CPU kernels and choices for gptkit: the plain PyTorch ops' numbers, computed faster.

`model.py` imports `IGNORE_INDEX` and two ops from here, nothing else: `Linear`, an `nn.Linear` whose CPU
fp32 matmuls may go to oneDNN, and `cross_entropy`, which avoids logits-sized temporaries on CPU
(for fp32 logits, and bf16 ones under autocast). `train.py` asks `cpu_autocast_dtype()` whether
`--dtype=auto` means bf16 autocast on this CPU. Each choice is measured once per process, on the
machine at hand. On GPUs and under torch.compile both layers are exactly the PyTorch ops.
"""

import contextlib
import functools
import platform
import time

import torch
import torch.distributed
import torch.nn as nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

# --- CPU matmuls through oneDNN -------------------------------------------------------------
# PyTorch sends fp32 CPU matmuls to MKL. On some CPUs oneDNN, also inside PyTorch, is faster: MKL
# never uses AVX-512 on AMD CPUs, and runs products of a few rows (decoding) on one core. Which
# library wins differs between CPUs, and between products: training's forward, its backward (two
# products, which hand oneDNN transposed operands) and decoding's (benchmarks/README.md).
# So each is measured once per process on the machine at hand (`_onednn_faster`); a training run
# keeps the routes it started with (`pinned_matmul_routes`). Same results up to float rounding.

ROUTES = ("forward", "backward", "inference")  # what is routed: training's forward, its backward, decoding


class Linear(nn.Linear):
    """nn.Linear whose CPU fp32 matmuls go to oneDNN where it measured faster (see above)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == self.weight.dtype == torch.float32 and not _compiling_or_autocast():
            inputs = (x, self.weight, self.bias)
            routes = _pinned_routes or _onednn_faster()
            if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
                if routes[0] or routes[1]:
                    return _OneDNNLinear.apply(*inputs, routes)
            elif routes[2]:
                # Without the autograd.Function: decoding makes ~50 calls a token, and its
                # bookkeeping was 5% of the time.
                return _matmul_t(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class _OneDNNLinear(torch.autograd.Function):
    """F.linear with its forward, and its backward's two products, done by oneDNN or by PyTorch's default, as routed."""

    @staticmethod
    def forward(ctx, x, weight, bias, routes):
        # x is needed only for the weight's gradient: a frozen layer (LoRA's base) need not keep it.
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight)
        ctx.has_bias, ctx.routes = bias is not None, routes
        return _matmul_t(x, weight, bias) if routes[0] else F.linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        onednn = ctx.routes[1]
        grad_2d = grad.reshape(-1, grad.size(-1))
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _matmul_t(grad, weight.t()) if onednn else grad @ weight
        if ctx.needs_input_grad[1]:
            x_2d = x.reshape(-1, x.size(-1))
            grad_w = _matmul_t(grad_2d.t(), x_2d.t()) if onednn else grad_2d.t() @ x_2d
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_2d.sum(0)
        return grad_x, grad_w, grad_b, None


# --- Cross-entropy over 50257 logits on CPU ---------------------------------------------------
# F.cross_entropy makes three tensors the size of the logits (200 MB for 4 x 256 tokens): the
# log-softmax, a zero-filled gradient for it, and the logits' gradient. On CPU each fresh one is
# paid for in page faults. Working through the rows a block at a time, only the logits' gradient
# is that big, and each block's softmax stays in cache. Under bf16 autocast the logits are bf16:
# autocast would copy them to fp32 (another 200 MB) before the loss; here only each block is
# taken to fp32, and the gradient comes back in bf16 as autocast's would. Measured:
# benchmarks/README.md.


IGNORE_INDEX = -1  # a target that is no target: padding, and the prompt of an example under mask_prompt


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction=...) for (N, vocab)
    logits and (N,) targets; `reduction` is "mean" (over the targets not ignored), "sum" or "none".

    The loss is fp32 also for bf16 logits, as under autocast (which computes it in fp32).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
    if reduction == "none":  # one loss a row (a sequence's log-probability, for preference tuning)
        return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="none")
    if logits.device.type == "cpu" and logits.dtype in (torch.float32, torch.bfloat16) and not _compiling():
        return _BlockwiseCrossEntropy.apply(logits, targets, reduction == "sum")
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction=reduction)


class _BlockwiseCrossEntropy(torch.autograd.Function):
    """Cross-entropy summed, or averaged, over the rows whose target is not IGNORE_INDEX;
    gradient softmax - one-hot."""

    ROWS = 32  # 32 x 50257 floats: 6 MB, within the L3 cache of any CPU that trains this

    @staticmethod
    def forward(ctx, logits, targets, summed):
        valid = targets != IGNORE_INDEX
        picked = torch.where(valid, targets, 0)  # ignored rows are masked out below; any index will do
        blocks = logits.split(_BlockwiseCrossEntropy.ROWS)
        lse = torch.cat([torch.logsumexp(rows.float(), dim=-1) for rows in blocks])
        count = torch.ones((), device=logits.device) if summed else valid.sum().float()
        loss = ((lse - logits.gather(1, picked[:, None]).squeeze(1).float()) * valid).sum() / count
        # the targets themselves, not `picked` and `valid`: the backward pass derives them again
        # instead of keeping 9 more bytes per token alive through the whole backward pass
        ctx.save_for_backward(logits, targets, lse, count)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        logits, targets, lse, count = ctx.saved_tensors
        valid = targets != IGNORE_INDEX
        picked = torch.where(valid, targets, 0)
        scale = valid.float() * (grad_loss / count)  # d loss / d (row's loss)
        grad = torch.empty_like(logits)
        blocks = zip(
            *(t.split(_BlockwiseCrossEntropy.ROWS) for t in (logits, grad, lse, picked, scale)),
            strict=True,
        )
        fp32 = logits.dtype == torch.float32
        for rows, out, row_lse, row_target, row_scale in blocks:
            work = out if fp32 else torch.empty(rows.shape)  # bf16: this block in fp32, then rounded
            torch.sub(rows, row_lse[:, None], out=work).exp_()  # softmax
            work.scatter_add_(1, row_target[:, None], torch.full_like(row_lse[:, None], -1.0))
            work.mul_(row_scale[:, None])
            if not fp32:
                out.copy_(work)
        return grad, None, None


def _matmul_t(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b.T (+ bias) by oneDNN; `a` may have leading batch dimensions, either may be a transposed view."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


_pinned_routes: tuple[bool, ...] | None = None  # one flag for each of ROUTES, as _onednn_faster gives them


def matmul_routes() -> dict[str, bool]:
    """{product: whether this process sends it to oneDNN} for each of ROUTES (CPU fp32 matmuls)."""
    return dict(zip(ROUTES, _pinned_routes or _onednn_faster(), strict=True))


@contextlib.contextmanager
def pinned_matmul_routes(routes: dict[str, bool] | None):
    """Inside the block, CPU fp32 matmuls take `routes` (as `matmul_routes` gives them) whatever
    this process measured; None keeps the measurement.

    The two libraries round differently, and a measurement near the margin can come out either way
    in another process: a resumed run (or another DDP rank) must compute with the same kernels.
    A checkpoint that recorded one "training" route for training's forward and backward is read so.
    """
    global _pinned_routes
    before = _pinned_routes
    if routes is not None:
        works = _onednn_works()  # a checkpoint from a machine with oneDNN, resumed on one without
        _pinned_routes = tuple(works and bool(routes.get(name, routes.get("training", False))) for name in ROUTES)
    try:
        yield
    finally:
        _pinned_routes = before


def _compiling_or_autocast() -> bool:
    """Under torch.compile or CPU autocast, which choose kernels themselves, gptkit keeps the plain ops."""
    try:
        return _compiling() or torch.is_autocast_enabled("cpu")
    except TypeError:  # PyTorch < 2.4 cannot tell: stay on the plain path
        return True


def _compiling() -> bool:
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # PyTorch < 2.3: stay on the plain path
        return True


# Products of the shapes GPT-2 small runs, the timings a routing or dtype choice rests on:
# training multiplies a few hundred rows at once, decoding a batch of one to eight.
TRAINING_PRODUCT = (256, 768, 3072)  # rows x in_features x out_features: 1.2 GFLOP
ROUTED_PRODUCT = (128, 768, 3072)  # half the rows: every process that trains times it
DECODING_PRODUCT = (8, 768, 2304)


@functools.cache
def _onednn_faster() -> tuple[bool, ...]:
    """For each of ROUTES: whether oneDNN beat PyTorch's default on this machine, measured once."""
    if not _onednn_works():
        return (False,) * len(ROUTES)
    training = _time_routes(ROUTED_PRODUCT, repeats=1)  # one timed call each: every training process pays it
    decoding = _time_routes(DECODING_PRODUCT, ("forward",), repeats=10)
    return onednn_wins(training["forward"]), onednn_wins(training["backward"]), onednn_wins(decoding["forward"])


def onednn_wins(seconds: dict[str, float]) -> bool:
    """Route to oneDNN only when it is clearly faster: a near tie keeps PyTorch's own choice."""
    return seconds["oneDNN"] < 0.9 * seconds["torch"]


def _time_routes(shape: tuple[int, int, int], passes=("forward", "backward"), repeats: int = 2) -> dict:
    """{pass: best seconds by PyTorch's default ("torch") and by oneDNN} for fp32 products as
    `_OneDNNLinear` computes them: the forward x @ W.T of `shape`; the backward grad @ W and
    grad.T @ x of the reverse layer (an MLP's narrowing one, where oneDNN's transposed operands
    cost most)."""
    rows, n_in, n_out = shape
    x, weight = _operands(rows, n_in, n_out)
    fns = {"forward": (lambda: F.linear(x, weight), lambda: _matmul_t(x, weight))}
    if "backward" in passes:
        wide_x, narrow_w, grad = _operands(rows, n_out, 1)[0], weight.t().contiguous(), x  # n_out -> n_in
        fns["backward"] = (
            lambda: (grad @ narrow_w, grad.t() @ wide_x),
            lambda: (_matmul_t(grad, narrow_w.t()), _matmul_t(grad.t(), wide_x.t())),
        )
    return {p: _best_times({"torch": fns[p][0], "oneDNN": fns[p][1]}, repeats) for p in passes}


def _operands(rows: int, n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random x and weight from a generator of their own: a measurement made lazily in the middle
    of a run must not move the global RNG (dropout masks), or resuming would not be exact."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(rows, n_in, generator=gen), torch.randn(n_out, n_in, generator=gen)


def _best_times(fns: dict, repeats: int) -> dict[str, float]:
    """The fastest of `repeats` timed calls of each function, after one untimed call; calls interleaved.

    The minimum, not the mean: other work on the machine only ever adds time.
    """
    best = dict.fromkeys(fns, float("inf"))
    for i in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


# --- bf16 autocast on CPU ---------------------------------------------------------------------
# CPUs with AMX (Intel Sapphire Rapids and later) or AVX512_BF16 (those, and AMD Zen 4 and later)
# multiply bf16 natively, 2x (AVX512_BF16) to 5x (AMX) faster than fp32; elsewhere bf16 is
# emulated and slower than fp32. So `--dtype=auto` trains under bf16 autocast where the CPU has
# the instructions AND a training-sized product measures clearly faster in bf16 than the best
# fp32 route, and in fp32 everywhere else. The margin covers what autocast adds around the
# matmuls (casting weights to bf16 and their gradients back, every step) and stays well below
# what native bf16 gives (2x with AVX512_BF16, more with AMX), so that a busy machine does not
# tip the choice: on a Zen 4 a product measured 1.6-2.1x, the whole step 1.3x.
BF16_MARGIN = 1.3


def native_bf16() -> str | None:
    """The instructions with which this CPU multiplies bf16 natively, or None."""
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        return "AMX"
    if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "AVX512_BF16"
    if platform.machine().lower() in ("aarch64", "arm64") and "bf16" in _cpu_flags():
        return "Arm BF16"
    return None


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def choose_cpu_autocast(native: str | None, measure) -> tuple[torch.dtype, str]:
    """(dtype, why) for CPU training: bf16 where `native` instructions exist and `measure()` finds it faster.

    `measure()` returns (fp32, bf16) seconds of the same product; it is called only where
    `native` is set, so CPUs without bf16 instructions never pay for it.
    """
    if native is None:
        return torch.float32, "this CPU has no bf16 matmul instructions (AMX, AVX512_BF16)"
    fp32, bf16 = measure()
    speedup = fp32 / bf16
    if speedup >= BF16_MARGIN:
        return torch.bfloat16, f"{native} bf16 matmuls measured {speedup:.1f}x as fast as fp32"
    return torch.float32, f"{native} bf16 matmuls measured only {speedup:.1f}x as fast as fp32"


@functools.cache
def cpu_autocast_dtype() -> tuple[torch.dtype, str]:
    """`--dtype=auto` for training on CPU: (torch.bfloat16 or torch.float32, why, for the run header).

    Decided once per process. Under torch.distributed every rank takes rank 0's choice, as a
    timing could tip the other way on another rank.
    """
    choice = choose_cpu_autocast(native_bf16(), _time_bf16_vs_fp32)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        shared = [choice]
        torch.distributed.broadcast_object_list(shared, src=0)
        choice = shared[0]
    return choice


def _time_bf16_vs_fp32() -> tuple[float, float]:
    """Seconds of a training-sized product by the best fp32 route, and in bf16 (about 0.2 s in all)."""
    x, weight = _operands(*TRAINING_PRODUCT)
    x16, weight16 = x.bfloat16(), weight.bfloat16()
    fns = {"fp32": lambda: F.linear(x, weight), "bf16": lambda: F.linear(x16, weight16)}
    if _onednn_works():
        fns["fp32 oneDNN"] = lambda: _matmul_t(x, weight)
    # On one thread: the ratio is the core's, and a busy second core cannot skew it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seconds = _best_times(fns, repeats=5)
    finally:
        torch.set_num_threads(threads)
    return min(seconds["fp32"], seconds.get("fp32 oneDNN", float("inf"))), seconds["bf16"]


@functools.cache
def _onednn_works() -> bool:
    """Whether this PyTorch build runs fp32 matmuls on oneDNN (x86 builds with mkldnn do)."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return False
    try:
        return torch.equal(_matmul_t(torch.ones(2, 3), torch.ones(4, 3)), torch.full((2, 4), 3.0))
    except (AttributeError, RuntimeError):  # an older PyTorch without the op
        return False
