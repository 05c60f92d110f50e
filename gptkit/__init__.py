"""gptkit: understand and do GPT-2 finetuning."""

from gptkit.errors import GptkitError
from gptkit.model import GPT, GPTConfig
from gptkit.tokenizer import get_encoding

__all__ = ["GPT", "GPTConfig", "GptkitError", "get_encoding"]
__version__ = "0.1.0"
