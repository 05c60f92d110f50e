"""gptkit: understand and do GPT-2 finetuning."""

import os

from gptkit.errors import GptkitError
from gptkit.model import GPT, GPTConfig
from gptkit.tokenizer import get_encoding

__all__ = ["GPT", "GPTConfig", "GptkitError", "get_encoding", "smoke"]
__version__ = "0.1.0"


def smoke() -> bool:
    """True when GPTKIT_SMOKE=1: notebooks and demos shrink sizes and iteration counts, never the code path."""
    return os.environ.get("GPTKIT_SMOKE") == "1"
