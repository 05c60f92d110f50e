# %% [markdown]
# # 3 · Pretrained GPT-2: loading OpenAI's weights into our model
#
# Training GPT-2 from scratch took OpenAI a lot of compute; finetuning starts from their
# weights instead. In this notebook you will:
#
# 1. load GPT-2 (124M) into `gptkit.model.GPT` — what `init_from="gpt2"` does in training;
# 2. check that it computes exactly the same logits as Hugging Face `transformers`;
# 3. override dropout and crop the context (`block_size`), two things finetuning configs do;
# 4. sample from it before any finetuning;
# 5. compare its loss on Shakespeare with a randomly initialised model.
#
# **Offline?** The weights come from the Hugging Face hub (about 500 MB, cached after the first
# download). When they cannot be had, gptkit builds a *small GPT-2-shaped model with random
# weights* in Hugging Face format on this machine and loads it through the very same code.
# Every cell still runs; only the text the model writes and its loss are not those of a
# trained model, and the notebook tells you where that matters.

# %%
import os
from pathlib import Path

if Path.cwd().name == "notebooks":
    os.chdir("..")  # every path below is relative to the repository root

import math
from dataclasses import replace

import matplotlib.pyplot as plt
import torch

import gptkit
from gptkit.config import TrainConfig
from gptkit.errors import GptkitError
from gptkit.pretrained import from_pretrained, load_or_standin, resolve_hub_dir
from gptkit.tokenizer import get_encoding
from gptkit.train import train

SMOKE = gptkit.smoke()
NAME = "gpt2"  # try "gpt2-medium" on a machine with more memory
STANDIN = Path("models/offline-standin")
torch.manual_seed(0)
enc = get_encoding()

# %%
model, loaded = load_or_standin(NAME, STANDIN)
REAL = loaded == NAME
model.eval()
if REAL:
    print(f"Loaded OpenAI's {NAME} from the Hugging Face cache.")
else:
    print(
        f"OFFLINE: the weights of {NAME!r} are not in the Hugging Face cache and the hub cannot be reached,\n"
        f"so this notebook uses a small GPT-2-shaped model with RANDOM weights, built locally at {STANDIN}\n"
        "and loaded through the same code. Its samples are gibberish and its loss is that of an untrained\n"
        "model; run the notebook once with internet access to see the real GPT-2."
    )
hf_dir = resolve_hub_dir(NAME) if REAL else STANDIN
print(f"{model.num_params(non_embedding=False):,} parameters, config: {model.config}")
print("Hugging Face directory:", hf_dir, "->", sorted(p.name for p in Path(hf_dir).iterdir()))

# %% [markdown]
# ## Same logits as Hugging Face `transformers`
#
# A Hugging Face GPT-2 directory holds `config.json` and `model.safetensors`. gptkit maps each
# tensor onto the parameter of the same name. One twist: OpenAI's code used `Conv1D` layers,
# whose weight matrices are the *transpose* of `nn.Linear`'s, so four kinds of weights are
# transposed on the way in. If any mapping were wrong, the logits would differ.

# %%
from transformers import GPT2LMHeadModel

hf = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
print("HF   c_attn.weight:", tuple(hf.transformer.h[0].attn.c_attn.weight.shape), "(Conv1D: in, out)")
print("ours c_attn.weight:", tuple(model.transformer.h[0].attn.c_attn.weight.shape), "(Linear: out, in)")

prompt = "ROMEO:\nBut, soft! what light through yonder window breaks?"
idx = torch.tensor([enc.encode_ordinary(prompt)])
with torch.no_grad():
    ours = model(idx)[0]
    theirs = hf(idx).logits
diff = (ours - theirs).abs().max().item()
print("logits:", tuple(ours.shape), f" largest difference: {diff:.2e}")
assert diff < 1e-3, "gptkit's GPT must reproduce transformers' logits"
assert torch.equal(ours.argmax(-1), theirs.argmax(-1))
del hf

# %% [markdown]
# The most likely next tokens after the prompt, according to the model:

# %%
probs = torch.softmax(ours[0, -1], dim=-1)
top = torch.topk(probs, 8)
for p, t in zip(top.values.tolist(), top.indices.tolist(), strict=True):
    print(f"{p:7.2%}  {enc.decode([t])!r}")

# %% [markdown]
# ## Overriding dropout
#
# gptkit loads GPT-2 with dropout off (0.0, as nanoGPT does); when finetuning on a small
# dataset, a little dropout (0.1) fights overfitting (notebook 6 measures it). Dropout is the
# only setting you may override on a pretrained model: changing its shape would not fit the
# weights. Dropout acts in training mode only: in eval mode the model is deterministic again.

# %%
dropped = from_pretrained(hf_dir, {"dropout": 0.1})
print("dropout:", dropped.config.dropout)
dropped.train()
with torch.no_grad():
    a, b = dropped(idx)[0], dropped(idx)[0]
print("train mode, two forward passes differ:", not torch.equal(a, b))
assert not torch.equal(a, b)
dropped.eval()
with torch.no_grad():
    assert torch.allclose(dropped(idx)[0], ours, atol=1e-5)
print("eval mode: same logits as without dropout")

try:
    from_pretrained(hf_dir, {"n_layer": 6})
except GptkitError as e:
    print("refused:", e)

# %% [markdown]
# ## Cropping the context
#
# GPT-2 has 1,024 learned position embeddings. Attention costs grow with the square of the
# sequence length, so on a small machine we train on shorter windows: `block_size=256` keeps
# the first 256 position embeddings and drops the rest. Nothing changes for sequences that
# fit; longer ones are refused.

# %%
cropped = from_pretrained(hf_dir)
print("wpe before:", tuple(cropped.transformer.wpe.weight.shape))
cropped.crop_block_size(256)
print("wpe after: ", tuple(cropped.transformer.wpe.weight.shape))
with torch.no_grad():
    assert torch.allclose(cropped.eval()(idx)[0], ours, atol=1e-5)
try:
    cropped(torch.zeros(1, 300, dtype=torch.long))
except ValueError as e:
    print("300 tokens:", e)

# %% [markdown]
# ## Samples before finetuning
#
# `GPT.generate` continues a prompt one token at a time (notebook 5 explains temperature and
# top-k). The real GPT-2 writes fluent English, but not Shakespeare's; the offline stand-in
# writes random tokens.

# %%
gen = torch.Generator().manual_seed(42)
out = model.generate(idx, 20 if SMOKE else 60, temperature=0.8, top_k=200, generator=gen)
print(enc.decode(out[0].tolist()))
assert out.shape == (1, idx.size(1) + (20 if SMOKE else 60))

# %% [markdown]
# ## Loss on Shakespeare: pretrained against random
#
# The validation split of notebook 1 is text neither model has trained on. A random model of
# the same shape starts at about ln(50257) ≈ 10.8 nats per token. OpenAI's GPT-2 already
# predicts Shakespeare far better, before seeing a line of it: that head start is what
# finetuning builds on.
#
# We measure both with the training loop itself: `eval_only=True` estimates train and val
# loss on the same fixed batches a training run evaluates on, and writes no checkpoint.

# %%
data_dir = Path("data/shakespeare")
if not (data_dir / "val.bin").exists():
    from gptkit.prepare import prepare

    prepare(data_dir / "input.txt", data_dir, progress=False)
shape = dict(n_layer=model.config.n_layer, n_head=model.config.n_head, n_embd=model.config.n_embd)
evaluate = TrainConfig(
    eval_only=True, block_size=64 if SMOKE else 256, batch_size=4, eval_iters=2 if SMOKE else 10, progress=False,
    **shape,
)  # fmt: skip
pretrained_eval = replace(evaluate, init_from=str(hf_dir), out_dir="out-notebooks/eval-pretrained")
random_eval = replace(evaluate, init_from="scratch", out_dir="out-notebooks/eval-random")
loss_pretrained = train(pretrained_eval)["last_val_loss"]
loss_random = train(random_eval)["last_val_loss"]
print(f"val loss: {loaded}: {loss_pretrained:.3f}   random: {loss_random:.3f}   ln(50257) = {math.log(50257):.3f}")

plt.figure(figsize=(5, 3.5))
plt.bar([loaded if REAL else "offline stand-in", "random init"], [loss_pretrained, loss_random], color=["C0", "gray"])
plt.axhline(math.log(50257), color="black", ls=":", label="ln(50257)")
plt.ylabel("val loss (nats per token)")
plt.legend()
plt.title("Shakespeare val loss before finetuning")

assert abs(loss_random - math.log(50257)) < 0.3
if REAL:
    # OpenAI's GPT-2 (124M and up) sits more than 5 nats below chance here. A small model served in
    # its place (a mirror's, or the tests' tiny one trained on Shakespeare for a minute) is held to 3.
    margin = 5 if model.num_params() > 50e6 else 3
    assert loss_pretrained < loss_random - margin, "pretrained weights should beat chance by far on Shakespeare"
else:
    print("offline stand-in: both models are random, so both sit near ln(50257)")
    assert abs(loss_pretrained - loss_random) < 0.5

# %% [markdown]
# ## What you learned / try this
#
# - `init_from="gpt2"` (or `from_pretrained("gpt2")`) loads OpenAI's weights into gptkit's
#   GPT; its logits equal Hugging Face's, Conv1D transposes and all.
# - Only dropout can be overridden on a pretrained model; `block_size` can be cropped.
# - Pretrained GPT-2 starts far below a random model's ln(50257) on Shakespeare: finetuning
#   only has to adapt it.
#
# Try this:
# - `NAME = "gpt2-medium"` (355M) and compare the val loss with the 124M model.
# - Crop to `block_size=64` and look at the loss on 64-token windows: less context, higher loss?
# - Export the model with `gptkit.pretrained.export_hf(model, "out-notebooks/my-gpt2")` and load
#   it back with `transformers`.
#
# Next: **04_finetuning**, adapting the model to Shakespeare.
