# %% [markdown]
# # Solutions · 4 · Finetuning
#
# The solutions to the exercises of notebook 04_finetuning. Each runs gptkit's own check on it, as the
# lesson does on your attempt; CI runs this notebook, so every solution here is known to pass.
# Try the exercise in the lesson first: the check's hint says what differs.

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

import torch
from torch.nn import functional as F

from gptkit.exercises import check_accumulation, check_lr_schedule, check_next_token_loss

# %% [markdown]
# ### Exercise 4.1: the shifted cross-entropy

# %%
def my_next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    predictions = logits[:, :-1]  # the last position has no next token in the batch
    targets = ids[:, 1:]
    return F.cross_entropy(predictions.flatten(0, 1), targets.flatten())

# %%
assert check_next_token_loss(my_next_token_loss)

# %% [markdown]
# ### Exercise 4.2: gradient accumulation

# %%
def my_accumulate(model, micro_batches) -> None:
    for x, y in micro_batches:
        _, loss = model(x, y)
        (loss / len(micro_batches)).backward()

# %%
assert check_accumulation(my_accumulate)

# %% [markdown]
# ### Exercise 4.3: the learning-rate schedule

# %%
def my_lr(it: int, learning_rate: float, min_lr: float, warmup_iters: int, lr_decay_iters: int) -> float:
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)

# %%
assert check_lr_schedule(my_lr)

# %% [markdown]
# Every check above passed on these solutions. Back to the lesson: **04_finetuning**.
