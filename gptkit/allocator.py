"""How a CPU run's freed tensors go back to the system, so that its resident memory is its tensors.

PyTorch takes CPU tensors from the C library's malloc. glibc serves a block above its mmap
threshold with a mapping of its own, returned to the system when freed, and anything smaller
from its heap, which keeps freed blocks resident for reuse. That threshold adapts: each freed
mapped block raises it to the block's size, up to 32 MB, so after the first backward pass a
training run's activations and gradients (6.5 MB for 1 x 1024 x 1600 fp32 values at gpt2-xl)
come from the heap, which fragments and grows with every micro-step: gpt2-xl LoRA peaked 18-30%
above the tensors alive, past what `gptkit.memory` promises (benchmarks/README.md).

`fix_mmap_threshold` sets the threshold once, which also stops it adapting: every tensor above
it is a mapping of its own again, and the run's resident memory stays what `gptkit.memory`
counts. The price is a page fault for each fresh page of a big tensor, measured side by side in
benchmarks/README.md. A user who sets glibc's malloc in the environment (`MALLOC_*` variables,
`glibc.malloc.*` in `GLIBC_TUNABLES`, e.g. to keep freed memory for speed) keeps that choice.
"""

import ctypes
import os

MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value: tensors above it are mapped on their own
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)


def environment_sets_malloc(env=os.environ) -> bool:
    """Whether the environment configures glibc's malloc itself (then gptkit leaves it alone)."""
    own = any(name.startswith("MALLOC_") for name in env)  # MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, ...
    return own or "glibc.malloc." in env.get("GLIBC_TUNABLES", "")


def glibc() -> ctypes.CDLL | None:
    """This process's C library if it is glibc (not macOS's, not musl), else None."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
    except (AttributeError, ValueError, OSError):  # no confstr, or a libc that does not know the name
        return None
    return ctypes.CDLL(None)


def fix_mmap_threshold(device_type: str) -> bool:
    """For a CPU run under glibc, map every tensor above MMAP_THRESHOLD on its own (see above).

    True when set; False for other devices (their tensors are not malloc's), other C libraries,
    or where the environment sets glibc's malloc. Process-wide and lasting: call it before the
    run allocates.
    """
    if device_type != "cpu" or environment_sets_malloc():
        return False
    libc = glibc()
    return libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
