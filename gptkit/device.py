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
KINDS = ("cpu", "cuda", "mps")  # what gptkit runs on
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def available_devices() -> list[str]:
    """The devices this machine and this PyTorch build can run on, e.g. ['cpu', 'cuda:0', 'cuda:1']."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if mps_available():
        names.append("mps")
    return names


def resolve_device(name: str) -> torch.device:
    """The device `--device=name` means here: `auto` picks cuda > mps > cpu; a name this machine
    cannot run (unknown, no such GPU, no driver, not a Mac) is one GptkitError saying what it has.

    Call it before anything is loaded or written, in every CLI that takes --device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    problem = None
    if device is None or device.type not in KINDS:
        problem = f"is not a device gptkit runs on ({', '.join(KINDS)})"
    elif device.type == "cuda" and not torch.cuda.is_available():
        problem = (
            "needs an NVIDIA GPU, but this PyTorch build has no CUDA support"
            if torch.version.cuda is None
            else "needs an NVIDIA GPU, but none is visible (no GPU or driver; on Colab: Runtime > Change runtime type)"
        )
    elif device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        problem = f"is past the last GPU: this machine has {torch.cuda.device_count()}"
    elif device.type == "mps" and not mps_available():
        problem = "needs Apple's Metal (MPS), which only Apple-silicon Macs have"
    if problem:
        raise GptkitError(
            f"device {name!r} {problem}; available here: {', '.join(available_devices())} "
            "(--device=auto picks the best)"
        )
    return device


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
        if device_type == "cuda":
            return cuda_dtype()
        return torch.float32, ""
    if name not in DTYPES:
        raise GptkitError(f"dtype {name!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[name], ""


def cuda_dtype() -> tuple[torch.dtype, str]:
    """bf16 where the current GPU computes it natively (compute capability 8.0 and up: A100, L4,
    H100, ...), else fp16 with the gradient scaler (7.x: T4, V100).

    Since PyTorch 2.3 `is_bf16_supported()` is true on 7.x as well, through emulation, which
    is much slower than fp16 there; only native support counts.
    """
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    gpu = f"{props.name} (compute capability {props.major}.{props.minor})"
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16, f"{gpu} computes bf16 natively"
    return torch.float16, f"{gpu} has no native bf16 (it would be emulated, slowly): fp16 with the gradient scaler"


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
