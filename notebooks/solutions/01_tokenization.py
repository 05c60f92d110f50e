# %% [markdown]
# # Solutions · 1 · Tokenization
#
# The solutions to the exercises of notebook 01_tokenization. Each runs gptkit's own check on it, as the
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
import numpy as np
import torch

from gptkit.exercises import check_merge_step, check_windows

# %% [markdown]
# ### Exercise 1.1: one BPE merge step

# %%
def my_merge_step(parts: list[bytes], enc) -> list[bytes]:
    ranked = []
    for i in range(len(parts) - 1):
        try:
            ranked.append((enc.encode_single_token(parts[i] + parts[i + 1]), i))
        except KeyError:
            pass  # a pair GPT-2 never merged
    if not ranked:
        return parts
    _, i = min(ranked)  # the lowest rank, the leftmost on a tie
    return parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]

# %%
assert check_merge_step(my_merge_step)

# %% [markdown]
# ### Exercise 1.2: the (x, y) windows

# %%
def my_windows(stream: np.ndarray, offsets: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    chunks = np.stack([stream[o : o + block_size + 1] for o in offsets]).astype(np.int64)
    return torch.from_numpy(chunks[:, :-1]), torch.from_numpy(chunks[:, 1:])

# %%
assert check_windows(my_windows)

# %% [markdown]
# Every check above passed on these solutions. Back to the lesson: **01_tokenization**.
