# %% [markdown]
# # 7 · Memory: finetuning a big model with LoRA
#
# *Takes about 1 min on a 2-core CPU (measured top to bottom), about 2 min on a Colab or Kaggle
# T4 (estimate; it runs on the CPU).*
#
# A full finetune trains every weight, so it keeps, for every parameter, its fp32 weight, its
# gradient and AdamW's two moving averages: 16 bytes. For gpt2-xl's 1558M parameters that is
# 24.9 GB (23.2 GiB) before any activation: nearly all of a 24 GB card (which holds 24 GiB),
# with no room left for the activations, and far more than a 16 GB Colab T4 holds.
#
# **LoRA** (Hu et al. 2021, *Low-Rank Adaptation*) freezes the pretrained weights and learns
# only a small low-rank *change* to some of them. In this notebook you will:
#
# 1. build LoRA on one layer by hand — W + (alpha/r)·B·A — and check it against `gptkit.lora`;
# 2. count the trainable parameters of LoRA for gpt2 … gpt2-xl;
# 3. pretrain a small base model, then finetune it twice on the same budget, fully and with
#    LoRA, and compare the loss curves on one plot;
# 4. see what a LoRA checkpoint holds (megabytes, not gigabytes), and export the finetuned
#    model, adapters merged, for Hugging Face `transformers`;
# 5. measure memory with and without LoRA and activation checkpointing, against the estimate
#    `gptkit.train` checks before every run, and see what nanoGPT's finetuning recipe needs on
#    16, 24 and 80 GB GPUs.

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
from pathlib import Path

import matplotlib.pyplot as plt  # noqa: F401  (the inline backend shows the figures below)
import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F
from transformers import GPT2Config, GPT2LMHeadModel

import gptkit
from gptkit import checkpoint
from gptkit.config import TrainConfig
from gptkit.data import BIN_DTYPE, open_split
from gptkit.diagnostics import plot_losses, read_metrics
from gptkit.export import export
from gptkit.lora import LoRALinear, apply_lora, count_lora_params, lora_state_dict, trainable_params
from gptkit.model import GPT, gpt2_config
from gptkit.notebook import preset, shakespeare_text, workdir
from gptkit.plots import draw_lora, draw_memory_bars
from gptkit.prepare import prepare
from gptkit.pretrained import GPT2_SIZES
from gptkit.sources import load_model
from gptkit.train import train

SMOKE = gptkit.smoke()
OUT = workdir("memory")  # everything this notebook writes goes here (GPTKIT_NOTEBOOK_OUT moves it)

# %% [markdown]
# ## LoRA by hand, on one layer
#
# Take one linear layer, `y = W x + b`, with W of shape (out, in). Finetuning changes W into
# W + ΔW. LoRA's bet is that the useful ΔW has a low *rank* r: it can be written as B·A with
# A of shape (r, in) and B of shape (out, r), r ≪ in, out. Then the layer computes
#
#     y = W x + b + (alpha / r) · B A x
#
# and only A and B train. Two details make it work well:
#
# - **B starts at zero**, so at step 0 the layer (and the whole model) is *exactly* the
#   pretrained one; A starts random, like an ordinary layer's weight.
# - **alpha / r** scales the update. It does not decide where the update starts: that is
#   zero for every rank, because B is. It decides how fast the update grows: B·A x sums r
#   terms, so without the 1/r a larger rank would move the output faster at the same
#   learning rate; with it, the update grows at about the same pace whatever r is, and you
#   tune the learning rate once (Hu et al., section 4.1).
#
# Here is a 64 → 192 layer (the shape of `c_attn` in a model 64 wide) with rank 4, drawn to
# scale: the frozen W, and the two thin matrices that train.

# %%
draw_lora(d_in=64, d_out=192, rank=4)

# %%
torch.manual_seed(0)
d_in, d_out, r, alpha = 64, 192, 4, 8.0
layer = nn.Linear(d_in, d_out)  # a layer of the model, as model.py builds it
A = torch.empty(r, d_in)
nn.init.kaiming_uniform_(A, a=math.sqrt(5))  # as nn.Linear initialises its own weight
B = torch.zeros(d_out, r)
x = torch.randn(2, 5, d_in)

with torch.no_grad():
    y_base = layer(x)
    y_lora = layer(x) + (alpha / r) * (x @ A.T @ B.T)
assert torch.equal(y_lora, y_base), "B = 0: the adapted layer is exactly the base layer"

# After some training B is no longer zero. Pretend it has learned something:
B = 0.1 * torch.randn(d_out, r)
with torch.no_grad():
    y_lora = layer(x) + (alpha / r) * (x @ A.T @ B.T)
    delta = (alpha / r) * B @ A  # the change to W: (out, in), but only rank r
    y_merged = F.linear(x, layer.weight + delta, layer.bias)
print(f"rank of the update B·A: {torch.linalg.matrix_rank(delta).item()} (of at most {min(d_in, d_out)})")
torch.testing.assert_close(y_merged, y_lora)  # merging: fold the update into W, and LoRA costs nothing at inference

# %% [markdown]
# `gptkit.lora.LoRALinear` is the same layer: it keeps the base layer's weight and bias (frozen)
# and adds `lora_A` and `lora_B`. Give it our A and B and it must agree with the hand-built
# version, and so must its merged weight.

# %%
lora_layer = LoRALinear(layer, rank=r, alpha=alpha, dropout=0.0)
with torch.no_grad():
    lora_layer.lora_A.copy_(A)
    lora_layer.lora_B.copy_(B)
    torch.testing.assert_close(lora_layer(x), y_lora)
    torch.testing.assert_close(lora_layer.merged_weight(), layer.weight + delta)
print(lora_layer)
full_count = layer.weight.numel() + layer.bias.numel()
adapter_count = lora_layer.lora_A.numel() + lora_layer.lora_B.numel()
print(f"a full finetune trains {full_count:,} numbers in this layer; LoRA trains r·(in + out) = {adapter_count:,}")

# %% [markdown]
# ## Trainable parameters, gpt2 … gpt2-xl
#
# `apply_lora(model, rank, alpha, dropout, targets)` freezes every weight of a GPT and puts
# adapters on the chosen layers of every block: by default all four, `c_attn` (q, k, v),
# `attn.c_proj`, `c_fc` and `mlp.c_proj`. Each adds r·(in + out) parameters, so a block of
# width d gets r·(4d + 2d + 5d + 5d) = 16·r·d. Hu et al. adapted two attention projections
# only, W_q and W_v. GPT-2 fuses W_q, W_k and W_v into one `c_attn`, so `--lora_targets=c_attn`
# adapts the keys too: close to the paper, not the same. Adapting all linear layers, as QLoRA
# does, comes closer to a full finetune and still trains well under 1% of the weights.
#
# The models below are built on PyTorch's `meta` device: real shapes, no memory.
#
# Every *trainable* parameter costs 12 more bytes during training: its fp32 gradient and
# AdamW's two moments. That is the part of the 16 bytes LoRA removes; the frozen weights
# stay (and may be held in bf16, see `gptkit.lora.hold_base_in`).

# %%
rank = 8
print(f"{'model':<12}{'parameters':>14}{'LoRA r=8':>14}{'share':>9}{'grad+AdamW full':>18}{'with LoRA':>12}")
for name in GPT2_SIZES:
    config = gpt2_config(name)
    with torch.device("meta"):
        model = apply_lora(GPT(config), rank=rank, alpha=16.0)
    total = sum(p.numel() for p in model.parameters())
    trainable = trainable_params(model)
    assert trainable == count_lora_params(config, rank) == 16 * rank * config.n_embd * config.n_layer
    base = total - trainable
    print(
        f"{name:<12}{base / 1e6:>13.0f}M{trainable / 1e6:>13.2f}M{100 * trainable / base:>8.2f}%"
        f"{12 * base / 1e9:>16.1f} GB{12 * trainable / 1e9:>10.2f} GB"
    )


# %% [markdown]
# ### Exercise 7.1: a LoRA forward
#
# Write `my_lora_forward(x, W, b, A, B, alpha)`: the output of a LoRA layer on `x` (…, in) for a
# base weight `W` (out, in) and bias `b`, adapters `A` (r, in) and `B` (out, r), and `alpha`;
# the rank r is `A`'s first dimension. The check compares with `LoRALinear` whose B has
# already learned something (so a forgotten term shows).

# %%
def my_lora_forward(x, W, b, A, B, alpha: float) -> torch.Tensor:
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_lora_forward

check_lora_forward(my_lora_forward)


# %% [markdown]
# ### Exercise 7.2: LoRA's trainable parameters
#
# Write `my_count_lora(config, rank, targets)`: how many parameters `apply_lora` trains on a GPT
# of this config, with adapters of rank `rank` on the layers named in `targets` (a list drawn
# from `c_attn`, `attn.c_proj`, `c_fc`, `mlp.c_proj`) of every block. Think of each layer's
# in and out width in multiples of `n_embd`. The check compares with `count_lora_params`.

# %%
def my_count_lora(config, rank: int, targets: list[str]) -> int:
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_lora_params

check_lora_params(my_count_lora)

# %% [markdown]
# ## A small base model to adapt
#
# LoRA adapts a *pretrained* model: on random weights there is nothing to adapt (gptkit
# refuses `--lora_rank` with `--init_from=scratch` for that reason). To compare LoRA with a
# full finetune on a CPU in seconds, we pretrain our own small base on the first half of
# Shakespeare's text; the finetuning data is the *second* half: the same style, other plays.
#
# A small base must be small in the right place. LoRA adapts the blocks and leaves the
# embeddings frozen; in gpt2-xl the blocks hold 95% of the weights. A small GPT with GPT-2's
# 50,257-token vocabulary is the other way round: at 128 wide its token embedding alone is
# 6.4M numbers against 0.8M in four blocks, so a comparison on it mostly asks who may train
# the embeddings, and LoRA loses for a reason that does not hold at GPT-2's size. So our base
# keeps GPT-2's shape but a small vocabulary, as the memory section below does too: the 1,023
# most common GPT-2 tokens of the first half keep an id of their own, every other token
# becomes one "other" id. Then the blocks hold most of the weights, as in GPT-2.

# %%
corpus = shakespeare_text()
half = len(corpus) // 2
for name, text in (("first-half", corpus[:half]), ("second-half", corpus[half:])):
    (OUT / f"{name}.txt").write_text(text, encoding="utf-8")
    prepare(OUT / f"{name}.txt", OUT / "data" / name, block_size=32, progress=False)

VOCAB = 1024  # the 1,023 most common tokens of the first half, and one id for every other token
counts = np.bincount(open_split(OUT / "data" / "first-half", "train"), minlength=50257)
new_id = np.full(50257, VOCAB - 1, dtype=BIN_DTYPE)
new_id[np.argsort(-counts, kind="stable")[: VOCAB - 1]] = np.arange(VOCAB - 1)
for name in ("first-half", "second-half"):
    for split in ("train", "val"):
        tokens = np.array(open_split(OUT / "data" / name, split))
        new_id[tokens].tofile(OUT / "data" / name / f"{split}.bin")
    other = np.mean(new_id[tokens] == VOCAB - 1)
    print(f"{name}: {other:.1%} of the val tokens are 'other' (a token outside the 1,023)")

# GPT-2's architecture with that vocabulary, random weights, as a Hugging Face directory
torch.manual_seed(0)
shape = GPT2Config(vocab_size=VOCAB, n_positions=32, n_layer=4, n_head=4, n_embd=128)
random_dir = OUT / "random-hf"
GPT2LMHeadModel(shape).save_pretrained(random_dir)
blocks = 12 * shape.n_layer * shape.n_embd**2  # per block: 4·d² attention + 8·d² MLP (biases aside)
embeddings = (VOCAB + shape.n_positions) * shape.n_embd
share = blocks / (blocks + embeddings)
print(f"blocks {blocks / 1e6:.2f}M, embeddings {embeddings / 1e6:.2f}M: {share:.0%} in the blocks")
assert blocks > 4 * embeddings

common = dict(
    data_root=str(OUT / "data"),
    block_size=32,
    batch_size=4 if SMOKE else 8,
    eval_iters=2 if SMOKE else 8,
    decay_lr=False,
    dropout=0.0,
    progress=False,
    device="cpu",  # small models: a GPU would spend its time waiting
    overwrite_out_dir=True,
)
pretrain_cfg = TrainConfig(
    out_dir=str(OUT / "base-run"),
    dataset="first-half",
    init_from=str(random_dir),  # pretraining: from random weights, at a pretraining learning rate
    learning_rate=3e-3,
    max_iters=40 if SMOKE else 600,
    eval_interval=40 if SMOKE else 100,
    **common,
)
train(pretrain_cfg)
base_dir = OUT / "base-hf"
if base_dir.exists():  # from an earlier run of this notebook: export writes only to new or empty folders
    for f in base_dir.iterdir():
        f.unlink()
export(pretrain_cfg.out_dir, base_dir)
print(sorted(p.name for p in base_dir.iterdir()))

# %% [markdown]
# ## LoRA against a full finetune, on the same budget
#
# Both runs start from that base, see the same batches of the second half for the same
# number of steps, and differ only in what trains. Each gets a learning rate that suits it:
# LoRA's update starts at zero and is low-rank, so it takes larger steps (as gptkit's configs
# do: 3e-5 in nanoGPT's finetuning recipe, 2e-4 in `config/finetune_shakespeare_lora.py`).

# %%
finetune = dict(dataset="second-half", init_from=str(base_dir), max_iters=20 if SMOKE else 200, **common)
finetune["eval_interval"] = 5 if SMOKE else 20
full_cfg = TrainConfig(out_dir=str(OUT / "full"), learning_rate=1e-3, **finetune)
lora_cfg = TrainConfig(out_dir=str(OUT / "lora"), learning_rate=3e-3, lora_rank=8, lora_alpha=16.0, **finetune)
train(full_cfg)
train(lora_cfg)
full_run = read_metrics(full_cfg.out_dir, name="full finetune")
lora_run = read_metrics(lora_cfg.out_dir, name="LoRA r=8")
for run in (full_run, lora_run):
    print(f"{run.name:<14} val loss {run.val_loss[0]:.3f} -> {run.val_loss.min():.3f}")
assert full_run.val_loss[0] == lora_run.val_loss[0], "step 0: LoRA's model is exactly the base"
assert full_run.val_loss[-1] < full_run.val_loss[0], "the full finetune learns from the new text"
full_gain, lora_gain = (run.val_loss[0] - run.val_loss.min() for run in (full_run, lora_run))
trained_full = sum(p.numel() for p in GPT.from_pretrained(base_dir).parameters())
trained_lora = trainable_params(apply_lora(GPT.from_pretrained(base_dir), rank=8, alpha=16.0))
print(f"trainable: full finetune {trained_full:,}, LoRA {trained_lora:,} ({trained_lora / trained_full:.1%})")
print(f"val loss gained: full finetune {full_gain:.3f}, LoRA {lora_gain:.3f} ({lora_gain / full_gain:.0%} of it)")
assert lora_run.train_loss[-1] < lora_run.train_loss[0], "LoRA learns too: its training loss falls"
assert lora_gain > 0, "and its val loss falls: the adapted blocks carry what the new text needs"
if not SMOKE:
    assert lora_gain > 0.3 * full_gain, "a fraction of the weights buys a good share of the gain"
plot_losses(full_run, lora_run, title="same base, same batches: full finetune against LoRA")

# %% [markdown]
# Both start from the same loss: at step 0 the LoRA model *is* the base. Then both fall; the
# numbers above say how far each got, and with what share of the weights trainable. On a base
# this small and a budget this short, the full finetune usually gains more: every one of its
# weights moves, and a base that has seen a few hundred thousand tokens still has much to
# learn everywhere. LoRA keeps a good share of that gain while training a few percent of the
# weights, with 12 bytes of gradient and AdamW state for each of those alone. The larger and
# better pretrained the base, the less a finetune needs to change, and the closer LoRA comes:
# Hu et al. matched full finetuning of GPT-2 medium and large with LoRA, and of GPT-3 175B
# with 0.01% of its parameters trainable. The "try this" list below starts from GPT-2.
#
# ## What a LoRA checkpoint holds
#
# A LoRA run's `ckpt.pt` keeps only the adapters, their optimizer state and, under `lora`, a
# reference to the frozen base. `--init_from=resume`, `python -m gptkit.sample` and
# `python -m gptkit.export` load the base from there and add the adapters.

# %%
full_ckpt = checkpoint.load(Path(full_cfg.out_dir) / checkpoint.BEST)
lora_ckpt = checkpoint.load(Path(lora_cfg.out_dir) / checkpoint.BEST)
print("LoRA settings and base:", lora_ckpt.lora)
print("weights in the LoRA checkpoint:", list(lora_ckpt.model)[:4], "...")
sizes = {"full": (Path(full_cfg.out_dir) / checkpoint.BEST).stat().st_size}
sizes["lora"] = (Path(lora_cfg.out_dir) / checkpoint.BEST).stat().st_size
print(f"ckpt.pt: full finetune {sizes['full'] / 1e6:.1f} MB, LoRA {sizes['lora'] / 1e6:.2f} MB")
assert sizes["lora"] < 2 * sizes["full"] * trained_lora / trained_full  # each holds its trainable weights
assert all(k.endswith(("lora_A", "lora_B")) for k in lora_ckpt.model)

# %% [markdown]
# ## Export: adapters merged into the weights
#
# `python -m gptkit.export OUT_DIR DEST` (here the function `export`) folds each adapter into
# its weight, W + (alpha/r)·B·A, and writes a plain GPT-2 directory: anyone can load it with
# `transformers`, and it runs as fast as the base model, with no trace of LoRA. Its logits
# equal those of the LoRA model it came from.

# %%
dest = OUT / "lora-hf"
if dest.exists():
    for f in dest.iterdir():
        f.unlink()
export(lora_cfg.out_dir, dest)
ids = torch.randint(0, VOCAB, (1, 32), generator=torch.Generator().manual_seed(0))
unmerged = checkpoint.model_from_checkpoint(lora_ckpt, Path(lora_cfg.out_dir) / checkpoint.BEST).eval()
with torch.no_grad():
    logits_lora = unmerged(ids)[0]
    logits_merged = load_model("resume", lora_cfg.out_dir).eval()(ids)[0]  # adapters merged
    logits_hf = GPT2LMHeadModel.from_pretrained(dest).eval()(ids).logits
print(f"largest difference, merged vs LoRA: {(logits_merged - logits_lora).abs().max().item():.1e}")
print(f"largest difference, transformers vs LoRA: {(logits_hf - logits_lora).abs().max().item():.1e}")
torch.testing.assert_close(logits_merged, logits_lora, atol=1e-5, rtol=1e-5)  # fp32 rounding of W + BA
torch.testing.assert_close(logits_hf, logits_lora, atol=1e-5, rtol=1e-5)
assert len(lora_state_dict(unmerged)) == shape.n_layer * 4 * 2  # blocks x 4 layers x (A, B)

# %% [markdown]
# ## Measured: memory with and without LoRA and checkpointing
#
# Training memory has four parts (notebook 02): weights, gradients, AdamW's state and the
# activations the forward pass keeps for the backward pass. LoRA removes almost all of the
# gradients and AdamW state, since only the adapters train. **Activation checkpointing**
# (`--grad_checkpoint=True`) attacks the activations: each block keeps only its input, and
# during the backward pass it runs its forward again to get the rest back, one block at a
# time. That costs about a third more compute (one more forward pass) and keeps only
# n_layer · B·T·C floats plus one block's worth.
#
# We measure all four on a small model, in the four combinations, and set them against
# `gptkit.memory.estimate`, the function `gptkit.train` uses to check that a run fits before
# it starts. Gradients and AdamW state are summed over the real tensors after one optimizer
# step; activations are what the forward pass saves for backward (seen through
# `torch.autograd.graph.saved_tensors_hooks`), plus, with checkpointing, the most that one
# block saves again while it is recomputed.

# %%
from gptkit.memory import GIB, estimate, saved_for_backward
from gptkit.model import GPTConfig

# GPT-2's shape with a small vocabulary, so that, as in gpt2-xl, the blocks hold most of the
# weights and activations (with 50257 tokens and n_embd=256 the embedding and logits would)
mem_config = GPTConfig(block_size=128, vocab_size=1024, n_layer=8, n_head=4, n_embd=256)
mem_batch = 4


def measure_memory(lora: bool, checkpointed: bool) -> dict[str, int]:
    torch.manual_seed(0)
    model = GPT(mem_config).train()
    if lora:
        apply_lora(model, rank=8, alpha=16, targets="c_attn,attn.c_proj,c_fc,mlp.c_proj")
    idx, targets = (torch.randint(0, mem_config.vocab_size, (mem_batch, mem_config.block_size)) for _ in range(2))
    model.grad_checkpoint = checkpointed
    activations = saved_for_backward(model, idx, targets)
    if checkpointed:  # + one block recomputed during backward (its input is already kept)
        model.grad_checkpoint = False
        x = torch.randn(mem_batch, mem_config.block_size, mem_config.n_embd, requires_grad=True)
        activations += saved_for_backward(model.transformer.h[1], x, exclude=[x])
        model.grad_checkpoint = True
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    model(idx, targets)[1].backward()
    optimizer.step()
    size = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    return {
        "weights": size(model.parameters()),
        "gradients": size(p.grad for p in model.parameters() if p.grad is not None),
        "optimizer": size(t for s in optimizer.state.values() for k, t in s.items() if k != "step"),
        "activations": activations,
    }


MIB = 2**20
rows = {}
print(f"{'':<28}{'weights':>9}{'grads':>9}{'AdamW':>9}{'activations':>13}   MiB, measured / estimated")
for lora in (False, True):
    for checkpointed in (False, True):
        label = ("LoRA r=8" if lora else "full") + (" + checkpointing" if checkpointed else "")
        measured = measure_memory(lora, checkpointed)
        est = estimate(
            mem_config, mem_batch, mem_config.block_size, lora_rank=8 if lora else 0, grad_checkpoint=checkpointed
        )
        rows[label] = measured
        cells = "".join(f"{measured[k] / MIB:>9.1f}" for k in ("weights", "gradients", "optimizer"))
        print(f"{label:<28}{cells}{measured['activations'] / MIB:>13.1f}")
        cells = "".join(f"{getattr(est, k) / MIB:>9.1f}" for k in ("weights", "gradients", "optimizer"))
        print(f"{'   estimate':<28}{cells}{est.activations / MIB:>13.1f}")
        # the estimate counts what PyTorch really holds, tensor for tensor
        for key in ("weights", "gradients", "optimizer"):
            assert measured[key] == getattr(est, key), (label, key)
        assert abs(measured["activations"] - est.activations) <= 0.01 * measured["activations"], label

full, ckpt = rows["full"], rows["full + checkpointing"]
lora_rows = rows["LoRA r=8"], rows["LoRA r=8 + checkpointing"]
assert ckpt["activations"] < full["activations"] / 3  # checkpointing: activations a fraction
assert all(r["gradients"] + r["optimizer"] < 0.05 * (full["gradients"] + full["optimizer"]) for r in lora_rows)
assert lora_rows[1]["activations"] < lora_rows[0]["activations"] < full["activations"]
draw_memory_bars(rows)  # measured, MiB

# %% [markdown]
# LoRA leaves the weights as they are (the frozen base is still there, plus the small
# adapters), removes nearly all gradients and AdamW state, and keeps somewhat fewer
# activations (frozen layers need not keep their inputs). Checkpointing leaves the first three
# columns alone and cuts the activations to a fraction. At gpt2-xl's size the activations of
# 1 × 1024 tokens through 48 blocks of width 1600 are gigabytes: both settings pay off there,
# as the next table shows.
#
# ## nanoGPT's finetuning recipe on 16, 24 and 80 GB GPUs
#
# `config/finetune_shakespeare.py` finetunes gpt2-xl with micro-batches of 1 × 1024 tokens;
# `config/finetune_shakespeare_lora.py` is the same recipe with LoRA (rank 8 on all four
# layers of every block) and checkpointing. On a GPU, gptkit trains under bf16 autocast and a
# LoRA run holds its frozen block matrices in bf16. `gptkit.memory.estimate_run` works out
# each run's peak from its settings alone, without loading a weight. A card "fits" when the
# estimate is at most its size less 0.5 GiB for the CUDA context.

# %%
import dataclasses

from gptkit.config import parse_args
from gptkit.memory import estimate_run, fitting_settings

full_recipe = parse_args(TrainConfig, [str(preset("finetune_shakespeare.py"))], "notebook")
lora_recipe = parse_args(TrainConfig, [str(preset("finetune_shakespeare_lora.py"))], "notebook")
recipes = {
    "full finetune (nanoGPT's)": full_recipe,
    "full + checkpointing": dataclasses.replace(full_recipe, grad_checkpoint=True),
    "LoRA, no checkpointing": dataclasses.replace(lora_recipe, grad_checkpoint=False),
    "LoRA + checkpointing (_lora.py)": lora_recipe,
}
gpus = {16: int(16e9) - GIB // 2, 24: int(24e9) - GIB // 2, 80: int(80e9) - GIB // 2}
print(f"{'gpt2-xl, 1 x 1024 tokens':<34}{'estimate':>10}   " + "".join(f"{gb:>4} GB" for gb in gpus))
estimates = {}
for label, cfg in recipes.items():
    est = estimate_run(cfg, "cuda", torch.bfloat16)
    estimates[label] = est.peak
    fits = "".join(f"{'fits' if est.peak <= cap else '-':>7}" for cap in gpus.values())
    print(f"{label:<34}{est.peak / GIB:>8.1f} GiB{fits}")
    print(f"{'':<4}{est.describe()}")

assert estimates["full finetune (nanoGPT's)"] > gpus[24]  # why nanoGPT's command fails on a 24 GB card
assert estimates["LoRA + checkpointing (_lora.py)"] <= gpus[16]  # and why the LoRA one runs on a T4
assert all(peak <= gpus[80] for peak in estimates.values())

# %% [markdown]
# When a run does not fit, `gptkit.train` stops before it loads anything and names the least
# change that fits, found with the same estimate. Here is what it would propose for nanoGPT's
# command on a 16 GB and on a 24 GB card:

# %%
for gb in (16, 24):
    change, est = fitting_settings(full_recipe, "cuda", torch.bfloat16, gpus[gb])
    print(f"{gb} GB: {' '.join(change)}  (about {est.peak / GIB:.1f} GiB)")
    assert est.peak <= gpus[gb]

# %% [markdown]
# ## What you learned / try this
#
# - LoRA learns a low-rank change B·A to frozen weights; B starts at zero, so training starts
#   from exactly the pretrained model, whatever the rank; alpha/r makes the update grow at
#   about the same pace whatever r is, so the learning rate need not change with it.
# - It trains under 1% of GPT-2's weights, which removes almost all of the gradient and
#   AdamW memory (12 bytes per trainable parameter) and makes checkpoints megabytes small.
# - Merging folds the adapters back into the weights: the exported model is an ordinary
#   GPT-2 with the same logits.
# - Activation checkpointing keeps only each block's input and recomputes the rest in the
#   backward pass: about a third more compute for a fraction of the activations.
# - `gptkit.memory` estimates a run's memory from its settings; `gptkit.train` prints it and
#   stops a run that cannot fit before loading anything, naming the least change that fits.
# - `python -m gptkit.train config/finetune_shakespeare_lora.py` is nanoGPT's gpt2-xl
#   finetune with LoRA and activation checkpointing: ~4.4 GiB on a GPU instead of ~30.
#
# Try this:
# - Online, finetune GPT-2 itself both ways: `init_from="gpt2"` in `finetune` above (and
#   `device="auto"`, LoRA's learning rate ~2e-4, the full one's 3e-5), and compare the curves.
# - Change the rank (`lora_rank=2`, `32`): how do the curve and the checkpoint size move?
# - Adapt only the attention (`lora_targets="c_attn"`): near the LoRA paper, which adapted
#   W_q and W_v (GPT-2's fused `c_attn` adapts W_k as well).
# - Give the LoRA run the full finetune's learning rate (1e-3): what happens in 30 steps?
# - Run `python scripts/memory_table.py`, or call `estimate_run` with `batch_size=8`: which
#   card does the LoRA recipe need then, with and without checkpointing?
