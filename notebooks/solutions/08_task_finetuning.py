# %% [markdown]
# # Solutions · 8 · Finetuning on a task
#
# The solutions to the exercises of notebook 08_task_finetuning. Each runs gptkit's own check on it, as the
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
import re
import string
from collections import Counter

import torch

from gptkit.exercises import check_collate, check_f1
from gptkit.model import IGNORE_INDEX
from gptkit.tokenizer import EOT_ID

# %% [markdown]
# ### Exercise 8.1: a masked collate

# %%
def my_collate(examples: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(tokens) for tokens, _ in examples) - 1
    x = torch.full((len(examples), width), EOT_ID)
    y = torch.full((len(examples), width), IGNORE_INDEX)
    for row, (tokens, mask) in enumerate(examples):
        n = len(tokens) - 1
        x[row, :n] = torch.tensor(tokens[:-1])
        targets = torch.tensor(tokens[1:])
        y[row, :n] = torch.where(torch.tensor(mask[1:]) == 1, targets, IGNORE_INDEX)
    return x, y

# %%
assert check_collate(my_collate)

# %% [markdown]
# ### Exercise 8.2: token F1

# %%
def normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def my_f1(generated: str, reference: str) -> float:
    got, want = normalize(generated).split(), normalize(reference).split()
    if not got or not want:
        return float(got == want)
    same = sum((Counter(got) & Counter(want)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(got), same / len(want)
    return 2 * precision * recall / (precision + recall)

# %%
assert check_f1(my_f1)

# %% [markdown]
# Every check above passed on these solutions. Back to the lesson: **08_task_finetuning**.
