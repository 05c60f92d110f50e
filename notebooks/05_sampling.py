# %% [markdown]
# # 5 · Sampling: turning next-token probabilities into text
#
# *Takes about 30 s on a 2-core CPU with the offline stand-in once it is built (the first notebook
# that needs it pretrains it: a few minutes more, once) and 2 min with GPT-2 124M after
# notebook 4, 4 min opened alone, when it finetunes a short run first (measured top to bottom;
# GPT-2's time with random weights of its shape, from a local hub); about 4 min on a Colab or
# Kaggle T4 with GPT-2 (estimate: the KV-cache timing runs GPT-2 on the CPU).*
#
# The model outputs a probability for every one of 50,257 tokens; *sampling* decides which
# one to write next. In this notebook you will, on the model finetuned in notebook 4:
#
# 1. look at the real next-token distribution after a prompt;
# 2. reshape it with **temperature**, **top-k** and **top-p** — each written by hand first and
#    checked against `gptkit.model.next_token_probs`, the version `generate` uses;
# 3. compare **greedy** decoding with sampling;
# 4. build the **KV cache** of one attention layer by hand, check it against the model's
#    (`gptkit.model.KVCache`), and measure the speedup it brings;
# 5. sample from the finetuned checkpoint with `gptkit.sample`, the function behind
#    `python -m gptkit.sample`.

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
import time

import matplotlib.pyplot as plt
import torch
from torch.nn import functional as F

import gptkit
from gptkit.config import TrainConfig
from gptkit.model import KVCache, next_token_probs
from gptkit.notebook import load_or_standin, prepared_shakespeare, standin_path, workdir
from gptkit.plots import draw_kv_cache
from gptkit.sample import SampleConfig, sample
from gptkit.sources import load_model
from gptkit.tokenizer import get_encoding
from gptkit.train import train

SMOKE = gptkit.smoke()
OUT = workdir()  # everything this notebook writes goes here (GPTKIT_NOTEBOOK_OUT moves it)
STANDIN = standin_path()  # the offline stand-in (notebook 3), built on first use
RUN = OUT / "finetune"  # written by notebook 4 (run in the same folder)
enc = get_encoding()

# %% [markdown]
# The finetuned checkpoint comes from notebook 4. If you opened this notebook first, the next
# cell trains a short one now, the same way (offline: from the stand-in gptkit pretrains on
# tiny Shakespeare, notebook 3, a small model whose text is far from GPT-2's).

# %%
if not (RUN / "ckpt.pt").exists():
    _, loaded = load_or_standin("gpt2")
    real = loaded == "gpt2"  # GPT-2 124M: ~6 s a step here on 2 CPU cores, so fewer steps
    print(f"no checkpoint in {RUN}: finetuning {loaded} briefly (run notebook 4 for a better one)")
    train(
        TrainConfig(
            out_dir=str(RUN), init_from="gpt2" if real else str(STANDIN),
            data_root=str(prepared_shakespeare().parent),
            learning_rate=3e-5 if real else 3e-4, decay_lr=False, block_size=64 if SMOKE else 128,
            batch_size=4, max_iters=8 if SMOKE else (20 if real else 40),
            eval_interval=4 if SMOKE else 10, eval_iters=2,
            always_save_checkpoint=False, progress=False,
        )  # fmt: skip
    )
model = load_model("resume", str(RUN)).eval()
print(f"loaded {RUN / 'ckpt.pt'}: {model.num_params(non_embedding=False):,} parameters")

# %% [markdown]
# ## The real next-token distribution
#
# After the prompt below, here are the 15 most likely next tokens and their probabilities.
# Most of the 50,257 tokens get almost nothing; how much mass the top few hold says how sure
# the model is.

# %%
prompt = "JULIET:\nO Romeo, Romeo! wherefore art thou"
idx = torch.tensor([enc.encode_ordinary(prompt)])
with torch.no_grad():
    logits = model(idx)[0][:, -1, :]  # (1, vocab): the scores for the next token
probs = torch.softmax(logits, dim=-1)[0]
top = torch.topk(probs, 15)
names = [repr(enc.decode([t]))[1:-1] for t in top.indices.tolist()]
print("logits:", tuple(logits.shape), f" top-15 mass {top.values.sum():.1%}")
plt.figure(figsize=(10, 3))
plt.bar(names, top.values)
plt.xticks(rotation=60)
plt.ylabel("probability")
plt.title(f"next token after {prompt[-20:]!r}")
plt.tight_layout()

# %% [markdown]
# ## Temperature
#
# Dividing the logits by a temperature T before the softmax sharpens the distribution (T < 1:
# the likely tokens get likelier) or flattens it (T > 1: more surprises). T → 0 is greedy
# decoding, always the single most likely token.

# %%
def with_temperature(logits: torch.Tensor, t: float) -> torch.Tensor:
    return torch.softmax(logits / t, dim=-1)


fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.5))
for t in (0.5, 1.0, 1.5):
    p = with_temperature(logits, t)
    assert torch.allclose(p, next_token_probs(logits, temperature=t))  # gptkit's version agrees
    a.plot(range(15), p[0, top.indices], "o-", label=f"T={t}")
a.set_xticks(range(15), names, rotation=60)
a.set(ylabel="probability", title="the same 15 tokens at three temperatures")
a.legend()
temps = torch.linspace(0.2, 2.0, 19)
entropy = [-(p * p.clamp_min(1e-12).log()).sum().item() for p in (with_temperature(logits, t) for t in temps)]
b.plot(temps, entropy, "o-")
b.set(xlabel="temperature", ylabel="entropy (nats)", title="higher temperature, flatter distribution")
plt.tight_layout()
assert entropy == sorted(entropy), "entropy grows with temperature"

# %% [markdown]
# ### Exercise 5.1: temperature
#
# Without looking at `with_temperature` above: write `my_temperature(logits, t)`, the
# next-token probabilities (each row sums to 1) at temperature `t` > 0. The check compares
# with `gptkit.model.next_token_probs` at three temperatures.

# %%
def my_temperature(logits: torch.Tensor, t: float) -> torch.Tensor:
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_temperature

check_temperature(my_temperature)


# %% [markdown]
# ## Top-k
#
# Even at T = 1, thousands of unlikely tokens together hold real probability, and one bad pick
# derails the text. Top-k keeps only the k most likely tokens and renormalises.

# %%
def top_k_by_hand(logits: torch.Tensor, k: int) -> torch.Tensor:
    kth_largest = torch.sort(logits, descending=True).values[..., k - 1 : k]
    return torch.softmax(logits.masked_fill(logits < kth_largest, float("-inf")), dim=-1)


for k in (1, 10, 200):
    p = top_k_by_hand(logits, k)
    assert torch.allclose(p, next_token_probs(logits, top_k=k))
    print(f"top_k={k:<4} keeps {(p > 0).sum().item():>4} tokens; they held {probs[p[0] > 0].sum():.1%} of the mass")

# %% [markdown]
# ## Top-p (nucleus)
#
# A fixed k is too many when the model is sure and too few when it is not. Top-p keeps the
# smallest set of most likely tokens whose probabilities add up to p: a few tokens after a
# predictable prefix, many after an open one.

# %%
def top_p_by_hand(logits: torch.Tensor, p: float) -> torch.Tensor:
    sorted_probs, order = torch.sort(torch.softmax(logits, dim=-1), descending=True)
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the tokens ranked above each one
    keep_sorted = before < p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return torch.softmax(logits.masked_fill(~keep, float("-inf")), dim=-1)


open_prompt = "\n\n"
with torch.no_grad():
    open_logits = model(torch.tensor([enc.encode_ordinary(open_prompt)]))[0][:, -1, :]
fig, ax = plt.subplots(figsize=(7, 3.5))
for label, lg in ((repr(prompt[-12:]), logits), (repr(open_prompt) + " (open)", open_logits)):
    p = top_p_by_hand(lg, 0.9)
    assert torch.allclose(p, next_token_probs(lg, top_p=0.9))
    cum = torch.sort(torch.softmax(lg, -1), descending=True).values.cumsum(-1)[0]
    ax.plot(range(1, 2001), cum[:2000], label=f"after {label}: keeps {(p > 0).sum().item()} tokens")
ax.axhline(0.9, color="black", ls=":", label="p = 0.9")
ax.set(xscale="log", xlabel="number of most likely tokens", ylabel="probability they hold", title="top-p=0.9")
ax.legend(fontsize=8)


# %% [markdown]
# ### Exercise 5.2: a top-p filter
#
# Write `my_top_p(logits, p)` for logits of shape (rows, vocab): the probabilities after top-p,
# renormalised, with exactly 0 for every dropped token. Keep the smallest set of most likely
# tokens whose probabilities reach `p` (so the token that crosses `p` stays). The check compares
# which tokens you keep, and their probabilities, with `next_token_probs(logits, top_p=p)`.

# %%
def my_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_top_p

check_top_p(my_top_p)

# %% [markdown]
# `generate` applies the three in this order: temperature, then top-k, then top-p.
#
# ## Greedy against sampled text
#
# Greedy decoding (`temperature=0`) is deterministic and tends to loop; sampling is varied, and
# reproducible when you fix the random generator's seed.

# %%
n_new = 20 if SMOKE else 60
greedy = model.generate(idx, n_new, temperature=0)
assert torch.equal(greedy, model.generate(idx, n_new, temperature=0))  # same every time
assert greedy[0, idx.size(1)].item() == logits.argmax().item()  # the first pick is the argmax
print("GREEDY:\n" + enc.decode(greedy[0].tolist()), "\n")
for seed in (1, 2):
    g = torch.Generator().manual_seed(seed)
    out = model.generate(idx, n_new, temperature=0.8, top_k=200, generator=g)
    print(f"SAMPLED (T=0.8, top_k=200, seed {seed}):\n" + enc.decode(out[0].tolist()), "\n")


# %% [markdown]
# ### Exercise 5.3: greedy decoding
#
# Write `my_greedy(model, idx, max_new_tokens)`: `max_new_tokens` times, run the model on
# `idx` (1, T), pick the most likely next token and append it; return the prompt followed by
# the new tokens, as `model.generate(idx, max_new_tokens, temperature=0)` does (the check
# compares with it, on a tiny model whose context the prompts fit).

# %%
def my_greedy(model, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_greedy

check_greedy(my_greedy)

# %% [markdown]
# ## The KV cache
#
# Without a cache, generating token n+1 runs the model over all n tokens again, although the
# keys and values of the first n positions have not changed (each position only looks at the
# past). The KV cache keeps them, so each new token runs a single position through the
# blocks' matrices instead of all n: that work per token stops growing with the length.
# What does still grow is attention itself: the new token's query is compared with every
# cached key and mixes every cached value, n of them, and the cache holds n keys and values
# per layer in memory. The cache saves recomputing the past, not attending to it.
#
# The cache filling, step by step: the prompt's positions are computed at once, then each
# step computes one new position and reads the others from the cache.

# %%
draw_kv_cache(prompt_len=4, new_tokens=5)

# %% [markdown]
#
# ### One layer's cache, by hand
#
# In layer 0 the keys and values of a position come straight from its token and position
# embeddings: LayerNorm, then the key and value thirds of `c_attn`, split into heads. We keep
# them in a tensor of shape (heads, positions so far, head size) and, for every new token,
# append only that token's key and value. The model's `KVCache` (filled by `hidden_states` when
# it is given one, as `generate` does) must hold exactly ours; and attending over the cache
# alone, the new token must get exactly the attention output a full pass over the whole
# sequence, without any cache, gives at its position.

# %%
block = model.transformer.h[0]
C, H = model.config.n_embd, model.config.n_head
D = C // H  # head size


def qkv_by_hand(ids: torch.Tensor, start: int) -> tuple[torch.Tensor, ...]:
    """Layer 0's queries, keys and values, (heads, len(ids), head size), for `ids` at positions start, ..."""
    positions = torch.arange(start, start + ids.numel())
    x = model.transformer.wte(ids) + model.transformer.wpe(positions)  # block 0's input (eval: no dropout)
    q, k, v = block.attn.c_attn(block.ln_1(x)).split(C, dim=-1)
    return tuple(t.view(-1, H, D).transpose(0, 1) for t in (q, k, v))


n_steps = 4
cache = KVCache(model.config, batch_size=1, max_len=idx.size(1) + n_steps, device="cpu", dtype=torch.float32)
with torch.no_grad():
    _, K, V = qkv_by_hand(idx[0], start=0)  # the prompt: every position at once (the prefill)
    hidden = model.hidden_states(idx, cache)  # fills (layers, k|v, rows, heads, max_len, head size)
    print(f"prefill: {cache.pos} positions; layer 0's keys by hand {tuple(K.shape)}; KVCache {tuple(cache.kv.shape)}")
    seq = idx[0]
    for _ in range(n_steps):
        torch.testing.assert_close(cache.kv[0, 0, 0, :, : cache.pos], K)  # layer 0, keys, row 0
        torch.testing.assert_close(cache.kv[0, 1, 0, :, : cache.pos], V)  # layer 0, values
        new = model.lm_head(hidden[:, -1]).argmax(-1)  # the next token (greedy)
        seq = torch.cat([seq, new])
        q, k, v = qkv_by_hand(new, start=seq.numel() - 1)  # only the new position is computed ...
        K, V = torch.cat([K, k], dim=1), torch.cat([V, v], dim=1)  # ... and appended
        # its attention over the cache: no mask needed, every cached position is in its past
        y = F.softmax(q @ K.transpose(-2, -1) / math.sqrt(D), dim=-1) @ V  # (heads, 1, head size)
        cached_out = block.attn.c_proj(y.transpose(0, 1).reshape(1, C))
        full = model.transformer.wte(seq) + model.transformer.wpe(torch.arange(seq.numel()))
        full_out = block.attn(block.ln_1(full)[None])[0, -1:]  # the same position, recomputing everything
        torch.testing.assert_close(cached_out, full_out, atol=1e-5, rtol=1e-4)
        hidden = model.hidden_states(new[None], cache)  # the model: one position through every layer
        print(f"+ {enc.decode(new.tolist())!r:<12} cache holds {cache.pos} positions; its attention output matches")
    torch.testing.assert_close(cache.kv[0, :, 0, :, : cache.pos], torch.stack([K, V]))
print("layer 0's cache by hand == the model's KVCache; cached attention == a full pass")

# %% [markdown]
# ### How much faster
#
# Both paths must produce the same tokens; we check that, then time them on the model of
# notebook 3 (GPT-2 or the offline stand-in), whose context is long enough to show the
# difference.

# %%
kv_model, loaded = load_or_standin("gpt2")  # a full 1,024-token context
kv_model.eval()
rows = 1 if kv_model.num_params() > 50e6 else 8  # a batch of prompts keeps a small model busy enough to time
prompts = idx.repeat(rows, 1)
n_long = 64 if SMOKE else 200
timings = {}
for use_cache in (False, True):
    t0 = time.perf_counter()
    out = kv_model.generate(prompts, n_long, temperature=0, use_cache=use_cache)
    timings[use_cache] = (time.perf_counter() - t0, out)
assert torch.equal(timings[False][1], timings[True][1]), "the cache must not change the tokens"
speedup = timings[False][0] / timings[True][0]
p0 = idx.size(1)
print(f"{loaded}: {rows} x {n_long} new tokens: without cache {timings[False][0]:.2f} s, with {timings[True][0]:.2f} s")
positions = sum(p0 + i for i in range(n_long)), p0 + n_long - 1
print(f"speedup x{speedup:.1f}; positions computed per row: {positions[0]:,} without the cache, {positions[1]:,} with")
plt.figure(figsize=(5, 3))
plt.bar(["no cache", "KV cache"], [timings[False][0], timings[True][0]], color=["gray", "tab:blue"])
plt.ylabel("seconds")
plt.title(f"generating {n_long} tokens")
# What the cache saves is the blocks' work on the positions already seen; each new token's logits
# (the 50,257-way head) cost the same either way. So the FLOPs predict the speedup:
body = 2 * sum(p.numel() for p in kv_model.transformer.h.parameters())  # a position through the blocks
head = 2 * kv_model.config.n_embd * kv_model.config.vocab_size  # one token's logits
predicted = (body * positions[0] + head * n_long) / (body * positions[1] + head * n_long)
print(f"the FLOPs predict x{predicted:.1f}: blocks {body / 1e6:.1f} MFLOP a position, head {head / 1e6:.1f} a token")
if predicted > 3:
    assert speedup > 1.2, "the KV cache should make generation faster"
else:  # a tiny model is mostly its head: the cache has little to save, and timing noise decides
    print("this model's head is most of its work: the cache cannot save much here")

# %% [markdown]
# ## Samples from the finetuned checkpoint
#
# `gptkit.sample.sample` is what `python -m gptkit.sample --out_dir=...` runs: it loads
# `ckpt.pt`, encodes the prompt and draws all samples in one batch with the KV cache.

# %%
cfg = SampleConfig(out_dir=str(RUN), start="ROMEO:", num_samples=2, max_new_tokens=n_new, temperature=0.8, seed=1)
texts = sample(cfg)
for text in texts:
    print(text)
    print("---------------")
assert len(texts) == 2 and all(t.startswith("ROMEO:") for t in texts)
assert texts == sample(cfg), "the same seed gives the same samples"

# %% [markdown]
# ## What you learned / try this
#
# - The model gives a full distribution over 50,257 tokens; sampling picks from it.
# - Temperature rescales logits; top-k keeps a fixed number of tokens; top-p keeps a fixed
#   share of probability, so it adapts to how sure the model is.
# - Greedy decoding is deterministic and repetitive; seeded sampling is varied and reproducible.
# - The KV cache saves recomputing the keys and values of the past: each new token goes through
#   the blocks' matrices once, with the same tokens out; attending over the cache still grows
#   with the length, and so does the cache's memory.
#
# Try this:
# - `python -m gptkit.sample --out_dir=RUN --start="KING HENRY:" --top_p=0.9`, with RUN the folder
#   `print(RUN)` shows
# - Sample at temperature 1.5 without top-k: when does the text fall apart?
# - Time the KV cache on the real GPT-2 (notebook 3's model) with 400 tokens.
#
# Next: **06_overfitting**, reading the loss curves to know when to stop.
