# %% [markdown]
# # Solutions · 6 · Overfitting
#
# The solutions to the exercises of notebook 06_overfitting. Each runs gptkit's own check on it, as the
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

from gptkit.diagnostics import smooth
from gptkit.exercises import check_early_stop, check_turn_up

# %% [markdown]
# ### Exercise 6.1: a turn-up detector

# %%
def my_turned_up(val_losses: list[float], min_rise: float = 0.02, patience: int = 3) -> int | None:
    s = smooth(val_losses, 3)
    low = int(np.argmin(s))
    after = s[low + 1 :]
    if len(after) < patience or not np.all(after[-patience:] >= s[low] + min_rise):
        return None
    return low

# %%
assert check_turn_up(my_turned_up)

# %% [markdown]
# ### Exercise 6.2: early stopping

# %%
def my_stop_at(val_losses: list[float], patience: int) -> int | None:
    best, since = float("inf"), 0
    for i, loss in enumerate(val_losses):
        if loss < best:
            best, since = loss, 0
        else:
            since += 1
        if since >= patience:
            return i
    return None

# %%
assert check_early_stop(my_stop_at)

# %% [markdown]
# Every check above passed on these solutions. Back to the lesson: **06_overfitting**.
