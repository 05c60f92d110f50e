"""Where and in what precision a run computes: the device, the dtype, and the device's peak FLOP/s.

Decided on the machine at hand: CUDA by what the GPU reports, CPUs by a short measurement
(`gptkit.cpu_kernels`), never by a vendor's name.
"""

import os
import re

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


# --- how much memory it has free ---------------------------------------------------------------
AVAILABLE_ENV = "GPTKIT_AVAILABLE_MEMORY"  # e.g. "8GiB": pretend the device has this much free


def parse_bytes(text: str) -> int:
    """'8GiB', '8G', '512MB', '1e9' -> bytes (binary units: a K, M or G is a power of 1024)."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgGtT]?)i?[bB]?\s*", text)
    if not m:
        raise GptkitError(f"{AVAILABLE_ENV}={text!r} is not a size: write e.g. 8GiB, 512MiB or a number of bytes")
    return int(float(m[1]) * 1024 ** " KMGT".index(m[2].upper() or " "))


def available_bytes(device: torch.device, local_world: int = 1) -> int | None:
    """Free memory this process may count on: CUDA's free memory, or on CPU the available RAM
    shared by the processes of this machine. None where it cannot be told (MPS, non-Linux)."""
    if os.environ.get(AVAILABLE_ENV):
        return parse_bytes(os.environ[AVAILABLE_ENV])
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
    return kib * 1024 // local_world
