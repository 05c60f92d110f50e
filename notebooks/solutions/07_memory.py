# %% [markdown]
# # Solutions · 7 · Memory and LoRA
#
# The solutions to the exercises of notebook 07_memory. Each runs gptkit's own check on it, as the
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

from gptkit.exercises import check_lora_forward, check_lora_params

# %% [markdown]
# ### Exercise 7.1: a LoRA forward

# %%
def my_lora_forward(x, W, b, A, B, alpha: float) -> torch.Tensor:
    r = A.size(0)
    return x @ W.T + b + (alpha / r) * (x @ A.T @ B.T)

# %%
assert check_lora_forward(my_lora_forward)

# %% [markdown]
# ### Exercise 7.2: LoRA's trainable parameters

# %%
SHAPES = {"c_attn": (1, 3), "attn.c_proj": (1, 1), "c_fc": (1, 4), "mlp.c_proj": (4, 1)}  # in, out / n_embd


def my_count_lora(config, rank: int, targets: list[str]) -> int:
    per_block = sum(rank * (SHAPES[t][0] + SHAPES[t][1]) * config.n_embd for t in targets)
    return config.n_layer * per_block

# %%
assert check_lora_params(my_count_lora)

# %% [markdown]
# Every check above passed on these solutions. Back to the lesson: **07_memory**.
