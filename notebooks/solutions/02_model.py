# %% [markdown]
# # Solutions · 2 · The model
#
# The solutions to the exercises of notebook 02_model. Each runs gptkit's own check on it, as the
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

from gptkit.exercises import check_attention, check_param_count

# %% [markdown]
# ### Exercise 2.1: causal self-attention

# %%
def my_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    return F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v

# %%
assert check_attention(my_attention)

# %% [markdown]
# ### Exercise 2.2: the parameter count of a config

# %%
def my_count_params(cfg) -> int:
    c = cfg.n_embd
    per_block = 12 * c * c + 13 * c
    return cfg.vocab_size * c + cfg.block_size * c + cfg.n_layer * per_block + 2 * c

# %%
assert check_param_count(my_count_params)

# %% [markdown]
# Every check above passed on these solutions. Back to the lesson: **02_model**.
