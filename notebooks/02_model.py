# %% [markdown]
# # 2 · The model: from token ids to next-token probabilities
#
# *Takes about 15 s on a 2-core CPU (measured top to bottom), about 1 min on a Colab or Kaggle
# T4 (estimate; its work stays on the CPU).*
#
# GPT-2 is a stack of identical *blocks* between an embedding layer and an output layer. In
# this notebook we take `gptkit.model.GPT` apart and rebuild each piece by hand, checking at
# every step that our version gives the same numbers as gptkit's:
#
# 1. token and position **embeddings**;
# 2. **causal self-attention** (with a plot of the mask and of an attention map);
# 3. the **MLP**, the **residual stream** and a whole block;
# 4. **weight tying** between the input embedding and the output layer;
# 5. **parameter counts** of the four GPT-2 sizes and **how much memory** training them takes;
# 6. the **loss at initialisation**, which should be ln(50257).
#
# We use a tiny configuration so everything runs instantly on a CPU; the code is the same for
# the 124M model.

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
import torch
from torch.nn import functional as F

import gptkit
from gptkit import cpu_kernels
from gptkit.data import Batches
from gptkit.memory import activation_bytes, saved_for_backward
from gptkit.model import GPT, GPTConfig, gpt2_config
from gptkit.plots import draw_block_diagram
from gptkit.pretrained import GPT2_SIZES
from gptkit.tokenizer import get_encoding

SMOKE = gptkit.smoke()
torch.manual_seed(0)
enc = get_encoding()

# %% [markdown]
# A tiny GPT: 2 blocks, 4 heads, 64-dimensional embeddings, 16 positions, and GPT-2's real
# 50,257-token vocabulary.

# %%
config = GPTConfig(block_size=16, vocab_size=enc.n_vocab, n_layer=2, n_head=4, n_embd=64)
model = GPT(config).eval()
print(config)
print(f"{model.num_params(non_embedding=False):,} parameters")

idx = torch.tensor([enc.encode_ordinary("First Citizen:\nBefore we proceed any further, hear me speak.")[:12]])
B, T = idx.shape
C, H = config.n_embd, config.n_head
print("input ids:", tuple(idx.shape), "(batch, time)")

# %% [markdown]
# The whole model on one page, for this config (GPT-2 124M is the same picture with 12 blocks,
# 12 heads and 768 dimensions). Ids become vectors; each block reads the *residual stream*
# through a LayerNorm and adds its attention's output to it, then its MLP's; a last LayerNorm
# and the head (the token embedding again, transposed) turn the stream into one score per
# vocabulary token at every position. The sections below build each box by hand.

# %%
draw_block_diagram(config)

# %% [markdown]
# ## 1. Embeddings
#
# Each id picks a row of the token embedding table `wte` (vocab × C); each position picks a
# row of the position table `wpe` (block_size × C). Their sum is the input of the first block:
# one C-dimensional vector per position. This sum is the start of the **residual stream**.

# %%
wte, wpe = model.transformer.wte, model.transformer.wpe
tok = wte(idx)
pos = wpe(torch.arange(T))
x = tok + pos  # the position vectors broadcast over the batch
print("wte:", tuple(wte.weight.shape), " wpe:", tuple(wpe.weight.shape))
print("token embeddings:", tuple(tok.shape), " position embeddings:", tuple(pos.shape), " x:", tuple(x.shape))

# %% [markdown]
# ## 2. Causal self-attention, by hand
#
# Every position makes a **query**, a **key** and a **value** (one linear layer `c_attn` makes
# all three). The score of position *i* attending to position *j* is q_i · k_j / sqrt(head size).
# A *causal mask* sets scores with j > i to −∞, so a position only sees the past: that is what
# lets the model be trained to predict every next token at once. Softmax turns each row of
# scores into weights that sum to 1, and the output is the weighted sum of the values. With
# several heads, C is split into H pieces that attend independently.

# %%
block = model.transformer.h[0]
h = block.ln_1(x)  # pre-LayerNorm: attention reads a normalised copy of the stream
q, k, v = block.attn.c_attn(h).split(C, dim=2)
q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))  # (B, H, T, head size)
print("q, k, v:", tuple(q.shape), "(batch, heads, time, head size)")

scores = q @ k.transpose(-2, -1) / math.sqrt(C // H)  # (B, H, T, T)
mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
scores = scores.masked_fill(~mask, float("-inf"))
weights = F.softmax(scores, dim=-1)
y = (weights @ v).transpose(1, 2).reshape(B, T, C)  # heads side by side again
attn_by_hand = block.attn.c_proj(y)
print("attention weights:", tuple(weights.shape), " output:", tuple(attn_by_hand.shape))

# gptkit computes the same thing with PyTorch's fused scaled_dot_product_attention.
attn_gptkit = block.attn(h)
print("max difference to gptkit:", (attn_by_hand - attn_gptkit).abs().max().item())
assert torch.allclose(attn_by_hand, attn_gptkit, atol=1e-5)
assert torch.allclose(weights.sum(-1), torch.ones(B, H, T))  # each row is a distribution

# %% [markdown]
# The mask on the left: position *i* (row) may look at positions *j* ≤ *i* (columns). On the
# right, the weights of head 0. This model is untrained, so each position spreads its attention
# almost evenly over the past (row *i* is about 1/(i+1) everywhere); a trained model learns
# sharp patterns, such as attending to the previous token.

# %%
labels = [enc.decode([t]) for t in idx[0].tolist()]
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
a.imshow(mask, cmap="Greys")
a.set(title="causal mask (black: may attend)", xlabel="key position j", ylabel="query position i")
im = b.imshow(weights[0, 0].detach(), cmap="viridis")
b.set_xticks(range(T), labels, rotation=90)
b.set_yticks(range(T), labels)
b.set_title("attention weights, block 0, head 0 (untrained)")
fig.colorbar(im, ax=b)
plt.tight_layout()


# %% [markdown]
# ### Exercise 2.1: causal self-attention
#
# Write `my_attention(q, k, v)` for tensors of shape (batch, heads, time, head size): the
# scores q·kᵀ / √(head size), the causal mask (position i sees j ≤ i), the softmax over each
# row, and the weighted sum of the values; return (batch, heads, time, head size). The check
# compares with the fused attention gptkit calls, on random q, k, v.

# %%
def my_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_attention

check_attention(my_attention)

# %% [markdown]
# ## 3. The MLP, the residual stream, a whole block
#
# After attention mixes information *across* positions, the MLP processes each position on its
# own: expand to 4C, apply GELU (GPT-2 uses its tanh approximation), project back to C.
#
# Each sub-layer *adds* its output to the stream instead of replacing it: x + attn(ln(x)), then
# + mlp(ln(x)). That residual path lets gradients flow straight through deep stacks.

# %%
z = torch.linspace(-4, 4, 200)
plt.figure(figsize=(5, 3))
plt.plot(z, F.gelu(z, approximate="tanh"), label="GELU (tanh approx.)")
plt.plot(z, F.relu(z), "--", label="ReLU")
plt.legend()
plt.title("the MLP's nonlinearity")
plt.grid(alpha=0.3)

# %%
x1 = x + attn_by_hand  # residual add after attention
m = block.mlp
hidden = F.gelu(m.c_fc(block.ln_2(x1)), approximate="tanh")
print("MLP hidden:", tuple(hidden.shape), "= (batch, time, 4C)")
x2 = x1 + m.c_proj(hidden)
assert torch.allclose(x2, block(x), atol=1e-5)
print("our block == gptkit's Block: True; output", tuple(x2.shape))

# %% [markdown]
# The whole model by hand: embeddings, every block, a final LayerNorm, and the output layer
# `lm_head` that scores every vocabulary entry at every position. These *logits* must match
# `model(idx)` exactly.

# %%
stream = x
norms = [stream.norm(dim=-1).mean().item()]
for blk in model.transformer.h:
    stream = blk(stream)
    norms.append(stream.norm(dim=-1).mean().item())
logits_by_hand = model.lm_head(model.transformer.ln_f(stream))
logits, _ = model(idx)
print("logits:", tuple(logits.shape), "(batch, time, vocab)")
assert torch.allclose(logits_by_hand, logits, atol=1e-5)
print("mean norm of the residual stream after the embedding and each block:", [round(n, 3) for n in norms])

# %% [markdown]
# ## 4. Weight tying
#
# Reading token *t* in (row *t* of `wte`) and scoring token *t* out (row *t* of `lm_head`)
# use **the same tensor**. This saves vocab × C parameters, 38.6M of GPT-2's 124M.

# %%
print("lm_head.weight is wte.weight:", model.lm_head.weight is model.transformer.wte.weight)
assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
print(f"saved by tying at gpt2 size: {50257 * 768:,} parameters")

# %% [markdown]
# ## 5. Parameter counts of the four GPT-2 sizes
#
# Per block: attention has 3C² + 3C (q, k, v) + C² + C (output projection), the MLP 4C² + 4C
# + 4C² + C, two LayerNorms 4C, in all **12C² + 13C**. Add the tied token embedding V·C,
# the positions 1024·C, and the final LayerNorm 2C. We check the formula against gptkit's
# models, built on PyTorch's *meta* device: shapes without memory, so even the 1.5B model
# costs nothing to build.

# %%
def params_by_formula(cfg: GPTConfig) -> int:
    c = cfg.n_embd
    return cfg.vocab_size * c + cfg.block_size * c + cfg.n_layer * (12 * c * c + 13 * c) + 2 * c


counts = {}
print(f"{'model':<12}{'layers':>7}{'heads':>6}{'C':>6}{'parameters':>16}{'formula':>16}")
for name in GPT2_SIZES:
    cfg = gpt2_config(name)
    with torch.device("meta"):
        n = GPT(cfg).num_params(non_embedding=False)
    counts[name] = n
    print(f"{name:<12}{cfg.n_layer:>7}{cfg.n_head:>6}{cfg.n_embd:>6}{n:>16,}{params_by_formula(cfg):>16,}")
    assert n == params_by_formula(cfg)
assert [round(n / 1e6) for n in counts.values()] == [124, 355, 774, 1558]


# %% [markdown]
# ### Exercise 2.2: the parameter count of a config
#
# Write `my_count_params(cfg)`: the number of parameters of `GPT(cfg)`, from `cfg.vocab_size`,
# `cfg.block_size`, `cfg.n_layer` and `cfg.n_embd` alone (do not build the model). Mind what
# is tied. The check compares with gptkit's models of three configs, GPT-2 124M among them.

# %%
def my_count_params(cfg: GPTConfig) -> int:
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_param_count

check_param_count(my_count_params)

# %% [markdown]
# ## 6. How much memory does training take?
#
# Training holds four things:
#
# - **weights**: N parameters;
# - **gradients**: one per parameter;
# - **AdamW state**: two running averages (`exp_avg`, `exp_avg_sq`) per parameter, kept in fp32;
# - **activations**: the tensors the forward pass keeps for the backward pass; they grow with
#   batch size × sequence length.
#
# On a GPU gptkit trains in **bf16 autocast**: weights, gradients and AdamW state stay fp32 (16
# bytes per parameter in all); matrix multiplications run in bf16, so most saved activations
# take 2 bytes instead of 4 (LayerNorm inputs stay fp32; the loss keeps the bf16 logits and one
# fp32 log-sum-exp per row), and autocast keeps a bf16 copy of each weight matrix during the step.
# CPUs with bf16 instructions (AMX, AVX512_BF16) train this way too, where it measures faster.
#
# Counting what each operation saves (PyTorch's fused attention keeps q, k, v, its output and
# one log-sum-exp per row, never the T × T score matrix) gives a formula, which gptkit keeps in
# `gptkit.memory.activation_bytes` (it also covers dropout, LoRA and activation checkpointing;
# notebook 07 uses it to check a run fits before it starts). Per block, in fp32, it counts 16
# tensors the size of the residual stream (B·T·C), one log-sum-exp per head and row, and the
# LayerNorms' statistics. Rather than trust it, we **measure** what the tiny model's forward
# pass saves for backward (`gptkit.memory.saved_for_backward` sums the distinct storages that
# `torch.autograd.graph.saved_tensors_hooks` sees, parameters left out), and also the sizes
# of its weights and of AdamW's state after one step. The model computes as `gptkit.train` has it
# compute on a CPU: `cpu_kernels.speed_up` gives it the blockwise loss, which keeps the logits and
# one log-sum-exp per row (plain `F.cross_entropy` keeps its log-softmax instead), and that is what
# the formula counts.

# %%
train_model = cpu_kernels.speed_up(GPT(config).train(), cpu_kernels.measure_routes())
ids, targets = (torch.randint(0, config.vocab_size, (3, config.block_size)) for _ in range(2))
for bf16 in (False, True):
    measured = saved_for_backward(train_model, ids, targets, bf16=bf16)
    formula = activation_bytes(config, 3, config.block_size, bf16)
    label = "bf16 autocast" if bf16 else "fp32"
    print(f"{label:<14} activations measured {measured:>11,} B   formula {formula:>11,} B")
    assert measured == formula

n = train_model.num_params(non_embedding=False)
weight_bytes = sum(p.numel() * p.element_size() for p in train_model.parameters())
_, loss = train_model(ids, targets)
loss.backward()
opt = train_model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cpu")
opt.step()
adam_bytes = sum(
    t.numel() * t.element_size() for s in opt.state.values() for key, t in s.items() if key != "step"
)
print(f"weights {weight_bytes:,} B = 4 x {n:,};  AdamW state {adam_bytes:,} B = 8 x {n:,}")
assert weight_bytes == 4 * n and adam_bytes == 8 * n

# %% [markdown]
# The formula checks out, so we can trust it at full size. Here is the table for a batch of
# 8 sequences of 1,024 tokens (bf16 here means gptkit's autocast; for *inference only*, the
# weights alone take 4 bytes per parameter in fp32 and 2 in bf16).

# %%
GIB = 2**30
batch, seq = 8, 1024
print(f"training memory for batch {batch} x {seq} tokens, in GiB")
print(f"{'model':<12}{'precision':<15}{'weights':>9}{'grads':>9}{'AdamW':>9}{'activations':>13}{'total':>9}")
for name, n in counts.items():
    cfg = gpt2_config(name)
    for bf16 in (False, True):
        row = [4 * n, 4 * n, 8 * n, activation_bytes(cfg, batch, seq, bf16)]
        cells = "".join(f"{b / GIB:>9.1f}" for b in row[:3]) + f"{row[3] / GIB:>13.1f}"
        print(f"{name:<12}{'bf16 autocast' if bf16 else 'fp32':<15}{cells}{sum(row) / GIB:>9.1f}")

# %% [markdown]
# Two things stand out. Activations, not weights, dominate at this batch size (the
# log-probabilities over 50,257 tokens alone are B·T·V·4 bytes = 1.5 GiB). And the optimizer
# state is twice the weights. That is why the finetuning configs use a small `batch_size`
# with `gradient_accumulation_steps`, and a cropped `block_size` on small machines: both shrink
# activations without changing what an optimizer step sees.
#
# ## 7. The loss at initialisation
#
# An untrained GPT-2 gives every token about the same probability, so its cross-entropy on
# real text should be close to ln(50257) ≈ 10.82 nats. gptkit initialises weights with a
# standard deviation of 0.02 (and smaller for the projections into the residual stream) so
# that this holds. We check it on Shakespeare's validation split.

# %%
from gptkit.notebook import prepared_shakespeare

data_dir = prepared_shakespeare()  # notebook 1's bins, in this notebook's output folder (made if missing)
val = Batches(data_dir, "val", batch_size=4, block_size=config.block_size)
with torch.no_grad():
    losses = [model(xb, yb)[1].item() for xb, yb in val.eval_batches(2 if SMOKE else 10)]
init_loss = sum(losses) / len(losses)
print(f"loss at init {init_loss:.3f}, ln(vocab) = {math.log(config.vocab_size):.3f}")
assert abs(init_loss - math.log(config.vocab_size)) < 0.15

# %% [markdown]
# ## What you learned / try this
#
# - A GPT is embeddings → N × (attention + MLP, each added to a residual stream) → LayerNorm →
#   a linear layer tied to the token embedding.
# - Causal self-attention is softmax(q·kᵀ/√d + mask)·v per head; we rebuilt it and matched
#   gptkit's fused version.
# - GPT-2 sizes are 124M / 355M / 774M / 1558M parameters, 12C² + 13C per block.
# - Training memory = weights + gradients + 2× AdamW state + activations; activations scale
#   with batch × sequence and usually dominate.
# - An untrained model's loss is ≈ ln(50257) ≈ 10.8.
#
# Try this:
# - Set `batch, seq = 1, 256` in the memory table: could you finetune gpt2-medium on your GPU?
# - Remove the mask (`scores.masked_fill(...)`) and see that the hand-made attention no longer
#   matches gptkit's.
# - Build `GPTConfig(n_layer=12, n_head=12, n_embd=768)` and count its parameters without
#   weight tying.
#
# Next: **03_pretrained**, the same model with OpenAI's trained weights.
