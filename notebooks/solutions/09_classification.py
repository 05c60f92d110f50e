# %% [markdown]
# # Solutions · 9 · Classification
#
# The solutions to the exercises of notebook 09_classification. Each runs gptkit's own check on it, as the
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

from gptkit.exercises import check_classification_loss, check_label_scores, check_last_index

# %% [markdown]
# ### Exercise 9.1: the last real token's index


# %%
def my_last_index(attention_mask: torch.Tensor) -> torch.Tensor:
    return attention_mask.sum(dim=1) - 1  # right padding: the real tokens come first


# %%
assert check_last_index(my_last_index)

# %% [markdown]
# ### Exercise 9.2: the classification loss and accuracy


# %%
def my_loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    loss = F.cross_entropy(logits, labels)  # log_softmax, -log p(label), mean over the examples
    accuracy = (logits.argmax(dim=-1) == labels).float().mean()
    return loss.item(), accuracy.item()


# %%
assert check_classification_loss(my_loss_and_accuracy)

# %% [markdown]
# ### Exercise 9.3: per-label precision, recall and F1


# %%
def my_label_scores(truth: list[str], predicted: list[str], labels: list[str]) -> dict:
    scores = {}
    for name in labels:
        hits = sum(t == name and p == name for t, p in zip(truth, predicted, strict=True))
        said, real = predicted.count(name), truth.count(name)
        precision = hits / said if said else 0.0
        recall = hits / real if real else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[name] = (precision, recall, f1)
    return scores


# %%
assert check_label_scores(my_label_scores)

# %% [markdown]
# Every check above passed on these solutions. Back to the lesson: **09_classification**.
