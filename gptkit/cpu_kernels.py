"""CPU kernels for gptkit's model: the same numbers as the plain PyTorch ops, computed faster.

`model.py` imports two things from here and nothing else: `Linear`, an `nn.Linear` whose CPU
fp32 matmuls may go to oneDNN, and `cross_entropy`, which avoids 200 MB temporaries on CPU.
On GPUs, under autocast and under torch.compile both are exactly the PyTorch ops.
"""

import functools
import platform

import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

# --- CPU matmuls through oneDNN -------------------------------------------------------------
# PyTorch sends fp32 CPU matmuls to MKL. On AMD CPUs MKL never uses AVX-512, and its products of
# a few rows (decoding) run on one core; oneDNN, also inside PyTorch, has neither limit. Measured
# (benchmarks/README.md): on an AVX-512 EPYC oneDNN ran every matmul of training about twice as
# fast; on an AVX2 EPYC MKL won training's products, oneDNN decoding's. Elsewhere, as on Intel
# CPUs, nothing was measured, so PyTorch's choice stands. Same results up to float rounding.


class Linear(nn.Linear):
    """nn.Linear whose CPU fp32 matmuls go to oneDNN where it is the faster library (see above)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == self.weight.dtype == torch.float32:
            inputs = (x, self.weight, self.bias)
            needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
            if _onednn_route(training=needs_grad):
                if needs_grad:
                    return _OneDNNLinear.apply(*inputs)
                # Without the autograd.Function: decoding makes ~50 calls a token, and its
                # bookkeeping was 5% of the time.
                return _matmul_t(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class _OneDNNLinear(torch.autograd.Function):
    """F.linear with its forward and both backward matmuls done by oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        # x is needed only for the weight's gradient: a frozen layer (LoRA's base) need not keep it.
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight)
        ctx.has_bias = bias is not None
        return _matmul_t(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_2d = grad.reshape(-1, grad.size(-1))
        grad_x = _matmul_t(grad, weight.t()) if ctx.needs_input_grad[0] else None
        grad_w = _matmul_t(grad_2d.t(), x.reshape(-1, x.size(-1)).t()) if ctx.needs_input_grad[1] else None
        grad_b = grad_2d.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


# --- Cross-entropy over 50257 logits on CPU ---------------------------------------------------
# F.cross_entropy makes three tensors the size of the logits (200 MB for 4 x 256 tokens): the
# log-softmax, a zero-filled gradient for it, and the logits' gradient. On CPU each fresh one is
# paid for in page faults. Working through the rows a block at a time, only the logits' gradient
# is that big, and each block's softmax stays in cache. Measured: benchmarks/README.md.


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """F.cross_entropy(logits, targets, ignore_index=-1) for (N, vocab) logits and (N,) targets."""
    if logits.device.type == "cpu" and logits.dtype == torch.float32 and not _compiling_or_autocast():
        return _BlockwiseCrossEntropy.apply(logits, targets)
    return F.cross_entropy(logits, targets, ignore_index=-1)


class _BlockwiseCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy over the rows whose target is not -1; gradient softmax - one-hot."""

    ROWS = 32  # 32 x 50257 floats: 6 MB, within the L3 cache of any CPU that trains this

    @staticmethod
    def forward(ctx, logits, targets):
        valid = targets != -1
        picked = targets.clamp(min=0)  # -1 rows are masked out below; any index will do
        lse = torch.cat([torch.logsumexp(rows, dim=-1) for rows in logits.split(_BlockwiseCrossEntropy.ROWS)])
        count = valid.sum().to(logits.dtype)
        loss = ((lse - logits.gather(1, picked[:, None]).squeeze(1)) * valid).sum() / count
        ctx.save_for_backward(logits, targets, lse, count)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        logits, targets, lse, count = ctx.saved_tensors
        scale = (targets != -1).to(logits.dtype) * (grad_loss / count)  # d loss / d (row's loss)
        grad = torch.empty_like(logits)
        blocks = zip(
            *(t.split(_BlockwiseCrossEntropy.ROWS) for t in (logits, grad, lse, targets.clamp(min=0), scale)),
            strict=True,
        )
        for rows, out, row_lse, row_target, row_scale in blocks:
            torch.sub(rows, row_lse[:, None], out=out).exp_()  # softmax
            out.scatter_add_(1, row_target[:, None], torch.full_like(row_lse[:, None], -1.0))
            out.mul_(row_scale[:, None])
        return grad, None


def _matmul_t(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b.T (+ bias) by oneDNN; `a` may have leading batch dimensions, either may be a transposed view."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


def _onednn_route(training: bool) -> bool:
    """Whether a CPU fp32 matmul, of training (with gradients) or not, should go to oneDNN."""
    if _compiling_or_autocast():
        return False
    faster_for_training, faster_for_inference = _onednn_faster()
    return faster_for_training if training else faster_for_inference


def _compiling_or_autocast() -> bool:
    """Under torch.compile or CPU autocast, which choose kernels themselves, gptkit keeps the plain ops."""
    try:
        return torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu")
    except (AttributeError, TypeError):  # PyTorch < 2.4 cannot tell: stay on the plain path
        return True


@functools.cache
def _onednn_faster() -> tuple[bool, bool]:
    """(for training, for inference): where this CPU is one on which oneDNN beat MKL."""
    if not _onednn_works() or _cpu_vendor() != "AuthenticAMD":
        return False, False
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512"), True


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")), "")
    except OSError:  # not Linux; Windows names the vendor here
        return "AuthenticAMD" if "AuthenticAMD" in platform.processor() else ""


@functools.cache
def _onednn_works() -> bool:
    """Whether this PyTorch build runs fp32 matmuls on oneDNN (x86 builds with mkldnn do)."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return False
    try:
        return torch.equal(_matmul_t(torch.ones(2, 3), torch.ones(4, 3)), torch.full((2, 4), 3.0))
    except (AttributeError, RuntimeError):  # an older PyTorch without the op
        return False
