"""Where and in what precision a run computes: the device, the dtype, and the device's peak FLOP/s.

Decided on the machine at hand: CUDA by what the GPU reports, CPUs by a short measurement
(`cpu_autocast_dtype`, with `gptkit.cpu_kernels`' timing helpers), never by a vendor's name.
"""

import functools
import os
import platform
import re

import torch
import torch.distributed
from torch.nn import functional as F

from gptkit import cpu_kernels
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
TRAINING_PRODUCT = (256, 768, 3072)  # GPT-2 small's MLP on 256 tokens: 1.2 GFLOP


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
    x, weight = cpu_kernels.random_operands(*TRAINING_PRODUCT)
    x16, weight16 = x.bfloat16(), weight.bfloat16()
    fns = {"fp32": lambda: F.linear(x, weight), "bf16": lambda: F.linear(x16, weight16)}
    if cpu_kernels.onednn_works():
        fns["fp32 oneDNN"] = lambda: cpu_kernels.matmul_t(x, weight)
    # On one thread: the ratio is the core's, and a busy second core cannot skew it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seconds = cpu_kernels.best_times(fns, repeats=5)
    finally:
        torch.set_num_threads(threads)
    return min(seconds["fp32"], seconds.get("fp32 oneDNN", float("inf"))), seconds["bf16"]


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
