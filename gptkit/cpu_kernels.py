"""CPU kernels for gptkit: the plain PyTorch ops' numbers, computed faster, applied explicitly.

`gptkit.model` is plain PyTorch (`nn.Linear`, `F.cross_entropy`). A program that wants the CPU
speed-ups (train, sample, evaluate, the benchmarks) measures once at start-up and applies them:

    routes = cpu_kernels.measure_routes()   # or the routes a resumed run's checkpoint recorded
    cpu_kernels.speed_up(model, routes)

Its `nn.Linear` layers then send their CPU fp32 matmuls to oneDNN on the routes that measured
faster here, and its loss avoids logits-sized temporaries on CPU (for fp32 logits, and bf16 ones
under autocast). Nothing here runs by itself: no forward pass measures or chooses anything. On
GPUs, under torch.compile and (for the matmuls) under autocast, both are exactly the PyTorch ops.
"""

import functools
import platform
import time

import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

# --- CPU matmuls through oneDNN -------------------------------------------------------------
# PyTorch sends fp32 CPU matmuls to MKL. On some CPUs oneDNN, also inside PyTorch, is faster: MKL
# never uses AVX-512 on AMD CPUs, and runs products of a few rows (decoding) on one core. Which
# library wins differs between CPUs, and between products: training's forward, its backward (two
# products, which hand oneDNN transposed operands) and decoding's (benchmarks/README.md).
# So each is measured once per process on the machine at hand (`measure_routes`), and a layer
# computes with the routes `speed_up` gave it; a training run keeps the routes it started with
# (its checkpoint records them). Same results up to float rounding.

ROUTES = ("forward", "backward", "inference")  # what is routed: training's forward, its backward, decoding


def speed_up(model: nn.Module, routes: dict[str, bool]) -> nn.Module:
    """Give `model`'s nn.Linear layers the oneDNN `routes` (as `measure_routes` gives them) and
    its loss (a `cross_entropy` attribute, as GPT's) the blockwise cross-entropy; in place.

    Each layer stays the same object, with the same Parameters: weight tying, state_dict keys and
    an optimizer made before are unchanged. A subclass of nn.Linear (LoRA's adapter layer) gets
    the routes for its base product, the `super().forward(x)` it calls.
    """
    flags = route_flags(routes)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.__class__ = _routed_class(type(module))
            module.routes = flags
    if hasattr(model, "cross_entropy"):
        model.cross_entropy = cross_entropy
    return model


@functools.cache
def _routed_class(cls: type) -> type:
    """`cls` with Linear's routed forward under its own: nn.Linear becomes Linear; a subclass keeps its
    name and forward, whose super().forward now reaches Linear's."""
    if issubclass(cls, Linear):
        return cls
    if cls is nn.Linear:
        return Linear
    return type(cls.__name__, (cls, Linear), {"__module__": cls.__module__})


def route_flags(routes: dict[str, bool]) -> tuple[bool, ...]:
    """One flag for each of ROUTES from `routes` as `measure_routes` (or a checkpoint) gives them.

    On a machine without oneDNN (a checkpoint from one with it) every route is PyTorch's.
    """
    works = onednn_works()
    return tuple(works and bool(routes.get(name, False)) for name in ROUTES)


class Linear(nn.Linear):
    """nn.Linear whose CPU fp32 matmuls go to oneDNN on the `routes` `speed_up` set (see above)."""

    routes: tuple[bool, ...] = (False,) * len(ROUTES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == self.weight.dtype == torch.float32 and not _compiling_or_autocast():
            inputs = (x, self.weight, self.bias)
            if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
                if self.routes[0] or self.routes[1]:
                    return _OneDNNLinear.apply(*inputs, self.routes)
            elif self.routes[2]:
                # Without the autograd.Function: decoding makes ~50 calls a token, and its
                # bookkeeping was 5% of the time.
                return matmul_t(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class _OneDNNLinear(torch.autograd.Function):
    """F.linear with its forward, and its backward's two products, done by oneDNN or by PyTorch's default, as routed."""

    @staticmethod
    def forward(ctx, x, weight, bias, routes):
        # x is needed only for the weight's gradient: a frozen layer (LoRA's base) need not keep it.
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight)
        ctx.has_bias, ctx.routes = bias is not None, routes
        return matmul_t(x, weight, bias) if routes[0] else F.linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        onednn = ctx.routes[1]
        grad_2d = grad.reshape(-1, grad.size(-1))
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = matmul_t(grad, weight.t()) if onednn else grad @ weight
        if ctx.needs_input_grad[1]:
            x_2d = x.reshape(-1, x.size(-1))
            grad_w = matmul_t(grad_2d.t(), x_2d.t()) if onednn else grad_2d.t() @ x_2d
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


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100, reduction: str = "mean"
) -> torch.Tensor:
    """F.cross_entropy(logits, targets, ignore_index=..., reduction=...) for (N, vocab) logits and
    (N,) targets; `reduction` is "mean" (over the targets not ignored), "sum" or "none".

    The loss is fp32 also for bf16 logits, as under autocast (which computes it in fp32).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
    if reduction == "none":  # one loss a row (a sequence's log-probability, for preference tuning)
        return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index, reduction="none")
    if logits.device.type == "cpu" and logits.dtype in (torch.float32, torch.bfloat16) and not _compiling():
        return _BlockwiseCrossEntropy.apply(logits, targets, ignore_index, reduction == "sum")
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction=reduction)


class _BlockwiseCrossEntropy(torch.autograd.Function):
    """Cross-entropy summed, or averaged, over the rows whose target is not `ignore_index`;
    gradient softmax - one-hot."""

    ROWS = 32  # 32 x 50257 floats: 6 MB, within the L3 cache of any CPU that trains this

    @staticmethod
    def forward(ctx, logits, targets, ignore_index, summed):
        valid = targets != ignore_index
        picked = torch.where(valid, targets, 0)  # ignored rows are masked out below; any index will do
        blocks = logits.split(_BlockwiseCrossEntropy.ROWS)
        lse = torch.cat([torch.logsumexp(rows.float(), dim=-1) for rows in blocks])
        count = torch.ones((), device=logits.device) if summed else valid.sum().float()
        loss = ((lse - logits.gather(1, picked[:, None]).squeeze(1).float()) * valid).sum() / count
        # the targets themselves, not `picked` and `valid`: the backward pass derives them again
        # instead of keeping 9 more bytes per token alive through the whole backward pass
        ctx.save_for_backward(logits, targets, lse, count)
        ctx.ignore_index = ignore_index
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        logits, targets, lse, count = ctx.saved_tensors
        valid = targets != ctx.ignore_index
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
        return grad, None, None, None


def matmul_t(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b.T (+ bias) by oneDNN; `a` may have leading batch dimensions, either may be a transposed view."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


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


# Products of the shapes GPT-2 small runs, the timings a routing choice rests on: training
# multiplies a few hundred rows at once, decoding a batch of one to eight.
ROUTED_PRODUCT = (128, 768, 3072)  # rows x in_features x out_features; every process that trains times it
DECODING_PRODUCT = (8, 768, 2304)


def measure_routes() -> dict[str, bool]:
    """{product: whether oneDNN measured clearly faster than PyTorch's default here} for each of
    ROUTES (about 0.1 s, once per process: later calls give the first answer)."""
    return dict(zip(ROUTES, _onednn_faster(), strict=True))


@functools.cache
def _onednn_faster() -> tuple[bool, ...]:
    """For each of ROUTES: whether oneDNN beat PyTorch's default on this machine, measured once."""
    if not onednn_works():
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
    x, weight = random_operands(rows, n_in, n_out)
    fns = {"forward": (lambda: F.linear(x, weight), lambda: matmul_t(x, weight))}
    if "backward" in passes:
        wide_x, narrow_w, grad = random_operands(rows, n_out, 1)[0], weight.t().contiguous(), x  # n_out -> n_in
        fns["backward"] = (
            lambda: (grad @ narrow_w, grad.t() @ wide_x),
            lambda: (matmul_t(grad, narrow_w.t()), matmul_t(grad.t(), wide_x.t())),
        )
    return {p: best_times({"torch": fns[p][0], "oneDNN": fns[p][1]}, repeats) for p in passes}


def random_operands(rows: int, n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random x and weight from a generator of their own: a measurement must not move the global
    RNG (dropout masks, batches), so a run that measures computes as one that takes recorded routes."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(rows, n_in, generator=gen), torch.randn(n_out, n_in, generator=gen)


def best_times(fns: dict, repeats: int) -> dict[str, float]:
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


@functools.cache
def onednn_works() -> bool:
    """Whether this PyTorch build runs fp32 matmuls on oneDNN (x86 builds with mkldnn do)."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return False
    try:
        return torch.equal(matmul_t(torch.ones(2, 3), torch.ones(4, 3)), torch.full((2, 4), 3.0))
    except (AttributeError, RuntimeError):  # an older PyTorch without the op
        return False
