# %% [markdown]
# # Solutions · 3 · Pretrained weights
#
# The solutions to the exercises of notebook 03_pretrained. Each runs gptkit's own check on it, as the
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

from gptkit.exercises import check_conv1d, check_crop

# %% [markdown]
# ### Exercise 3.1: the Conv1D transpose

# %%
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def my_to_gptkit(name: str, stored: torch.Tensor) -> torch.Tensor:
    return stored.t() if name.endswith(CONV1D) else stored

# %%
assert check_conv1d(my_to_gptkit)

# %% [markdown]
# ### Exercise 3.2: cropping the context

# %%
def my_crop(wpe: torch.Tensor, block_size: int) -> torch.Tensor:
    return wpe[:block_size]

# %%
assert check_crop(my_crop)

# %% [markdown]
# Every check above passed on these solutions. Back to the lesson: **03_pretrained**.
