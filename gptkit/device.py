"""Where and in what precision a run computes: the device, the dtype, and the device's peak FLOP/s.

Decided on the machine at hand: CUDA by what the GPU reports, CPUs by a short measurement
(`gptkit.cpu_kernels`), never by a vendor's name.
"""

import torch

from gptkit.cpu_kernels import cpu_autocast_dtype
from gptkit.errors import GptkitError

# bf16 dense peaks, for MFU on GPUs we can name (override with --mfu_peak_flops).
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "4090": 165e12}


def pick_device(name: str) -> str:
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(name: str, device_type: str, autocast: bool = False) -> torch.dtype:
    return dtype_choice(name, device_type, autocast)[0]


def dtype_choice(name: str, device_type: str, autocast: bool = False) -> tuple[torch.dtype, str]:
    """The dtype `--dtype=name` means here, and why where it was `auto` ("" otherwise).

    `autocast`: for mixed-precision training (fp32 weights), where CPUs with native bf16 gain;
    a model cast whole to bf16 (sampling) would change the tokens, so there CPUs stay fp32.
    """
    if name == "auto":
        if device_type == "cpu" and autocast:
            return cpu_autocast_dtype()
        if device_type != "cuda":
            return torch.float32, ""
        return (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16), ""
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise GptkitError(f"dtype {name!r} is not one of auto, {', '.join(dtypes)}")
    return dtypes[name], ""


def peak_flops(device_type: str, override: float = 0.0) -> float:
    """Peak FLOP/s for MFU: `override` if set, else a known GPU's bf16 peak, else 0 (unknown)."""
    if override > 0:
        return override
    if device_type == "cuda":
        name = torch.cuda.get_device_name()
        return next((v for k, v in GPU_PEAK_FLOPS.items() if k in name), 0.0)
    return 0.0
