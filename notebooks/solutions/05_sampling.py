# %% [markdown]
# # Solutions · 5 · Sampling
#
# The solutions to the exercises of notebook 05_sampling. Each runs gptkit's own check on it, as the
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
import torch

from gptkit.exercises import check_greedy, check_temperature, check_top_p

# %% [markdown]
# ### Exercise 5.1: temperature

# %%
def my_temperature(logits: torch.Tensor, t: float) -> torch.Tensor:
    return torch.softmax(logits / t, dim=-1)

# %%
assert check_temperature(my_temperature)

# %% [markdown]
# ### Exercise 5.2: a top-p filter

# %%
def my_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    above = sorted_probs.cumsum(-1) - sorted_probs  # the mass ranked above each token
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, above < p)
    kept = probs * keep
    return kept / kept.sum(-1, keepdim=True)

# %%
assert check_top_p(my_top_p)

# %% [markdown]
# ### Exercise 5.3: greedy decoding

# %%
def my_greedy(model, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    for _ in range(max_new_tokens):
        logits, _ = model(idx)
        next_id = logits[:, -1].argmax(-1, keepdim=True)
        idx = torch.cat([idx, next_id], dim=1)
    return idx

# %%
assert check_greedy(my_greedy)

# %% [markdown]
# Every check above passed on these solutions. Back to the lesson: **05_sampling**.
