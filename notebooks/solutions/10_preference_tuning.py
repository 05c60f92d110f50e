# %% [markdown]
# # Solutions · 10 · Preference tuning (DPO) and scoring by likelihood
#
# The solutions to the exercises of notebook 10_preference_tuning. Each runs gptkit's own check on it, as the
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
from torch.nn import functional as F

from gptkit.exercises import check_dpo_loss, check_ending_logps

# %% [markdown]
# ### Exercise 10.1: the DPO loss


# %%
def my_dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    return -F.logsigmoid(chosen_reward - rejected_reward).mean()


# %%
assert check_dpo_loss(my_dpo_loss)

# %% [markdown]
# ### Exercise 10.2: the score of an ending


# %%
def my_ending_logps(logits, ids, n):
    logps = torch.log_softmax(logits.float(), dim=-1)
    picked = logps[-n - 1 : -1].gather(1, ids[-n:, None]).squeeze(1)  # position t predicts token t + 1
    return picked.sum().item(), picked.mean().item()


# %%
assert check_ending_logps(my_ending_logps)

# %% [markdown]
# Every check above passed on these solutions. Back to the lesson: **10_preference_tuning**.
