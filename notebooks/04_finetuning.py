# %% [markdown]
# # 4 · Finetuning GPT-2 on Shakespeare
#
# *Takes about 4 min on a 2-core CPU with the offline stand-in once it is built (the first notebook
# that needs it pretrains it: a few minutes more, once) and 6.5 min with GPT-2 124M
# (measured top to bottom; GPT-2's time with random weights of its shape, from a local hub),
# about 3 min on a Colab or Kaggle T4 with GPT-2 (estimate).*
#
# Finetuning is pretraining's loop with different settings: start from trained weights, use a
# small learning rate, stop early. In this notebook you will:
#
# 1. read nanoGPT's finetuning recipe key by key, next to the pretraining defaults;
# 2. write one training step by hand (forward, shifted cross-entropy, backward, gradient
#    accumulation, clipping, the AdamW update) and check it against `gptkit.train`'s step;
# 3. finetune through `gptkit.train.train`, watching train and val loss live;
# 4. see that a checkpoint is written only when val loss improves;
# 5. resume the run where it stopped;
# 6. play with the learning rate and dropout using sliders, and compare runs on one plot.
#
# As in notebook 3, when GPT-2's weights cannot be downloaded the notebook says so and
# finetunes the offline stand-in instead: GPT-2's shape at 4 layers, pretrained by gptkit for
# a few minutes on tiny Shakespeare's train split. It is finetuned the way GPT-2 is, with a
# small constant learning rate, and its val loss falls too; but it has seen this text in
# pretraining, so its finetune goes on with what it started, where GPT-2's would carry its
# English over to Shakespeare, from a far lower loss.

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
import dataclasses
from pathlib import Path

from IPython.display import display

import gptkit
from gptkit import checkpoint
from gptkit.config import TrainConfig, read_config_file
from gptkit.diagnostics import best_checkpoint, plot_losses, read_metrics, summarize
from gptkit.notebook import load_or_standin, prepared_shakespeare, preset, standin_path, workdir
from gptkit.widgets import FinetunePanel, SamplePanel, train_live

SMOKE = gptkit.smoke()
NAME = "gpt2"
OUT = workdir()  # everything this notebook writes goes here (GPTKIT_NOTEBOOK_OUT moves it)
STANDIN = standin_path()  # the offline stand-in, built on first use
data_dir = prepared_shakespeare()  # notebook 1's bins, in this notebook's output folder (made if missing)

# %% [markdown]
# ## nanoGPT's finetuning recipe, key by key
#
# `config/finetune_shakespeare.py` is the recipe this project started from: finetune the
# largest GPT-2 on tiny Shakespeare. Next to each setting: gptkit's default, which is GPT-2's
# *pretraining* recipe (as in nanoGPT), and why finetuning differs.

# %%
nanogpt_recipe = read_config_file(preset("finetune_shakespeare.py"))  # config/ in a clone, shipped with gptkit
pretrain = TrainConfig()
WHY = {
    "out_dir": "a folder of its own for this run's checkpoints and metrics",
    "eval_interval": "a short run: evaluate every few steps to catch the moment val loss turns up",
    "eval_iters": "fewer batches per estimate: evaluating is a bigger share of a short run",
    "wandb_log": "optional logging to Weights & Biases",
    "wandb_project": "(logging only)",
    "wandb_run_name": "(logging only)",
    "dataset": "the prepared tokens of notebook 1",
    "init_from": "start from OpenAI's weights instead of random ones: the whole point",
    "always_save_checkpoint": "keep the best model, not the last: finetuning overfits quickly",
    "batch_size": "a 1.5B model leaves room for one sequence at a time ...",
    "gradient_accumulation_steps": "... so 32 micro-batches add up to 32 x 1024 tokens per step",
    "max_iters": "20 steps x 32,768 tokens ~ 2 epochs of Shakespeare; more would overfit",
    "learning_rate": "20x smaller: nudge the pretrained weights, do not overwrite them",
    "decay_lr": "constant LR: with 20 steps there is no long schedule to decay over",
}
assert set(nanogpt_recipe) <= set(WHY), f"explain the new settings too: {sorted(set(nanogpt_recipe) - set(WHY))}"
print(f"{'setting':<28}{'pretraining':<16}  {'finetune recipe':<18}  why")
for key, value in nanogpt_recipe.items():
    default = getattr(pretrain, key)
    print(f"{key:<28}{default!s:<16.16}  {value!s:<18.18}  {WHY[key]}")

# %% [markdown]
# That recipe needs a large GPU. On a laptop CPU we keep the same ideas with smaller pieces:
# `config/finetune_shakespeare_cpu.py` finetunes the 124M model with 256-token windows.

# %%
cpu_recipe = read_config_file(preset("finetune_shakespeare_cpu.py"))
print(cpu_recipe)
model, loaded = load_or_standin(NAME)
REAL = loaded == NAME
del model  # train() loads the weights itself from init_from
if REAL:
    # The preset's 40 iterations of 2 x 4 x 256 tokens take ~25 min on 2 CPU cores; 12 of half the
    # size, ~4 min, are enough to watch the val loss fall. The full run: see "Try this".
    recipe = cpu_recipe | dict(
        init_from=NAME, gradient_accumulation_steps=1, max_iters=12, eval_interval=4, eval_iters=2,
    )  # fmt: skip
    print(f"finetuning OpenAI's {NAME}")
else:
    # A small model, pretrained: a small constant LR (a tenth of its pretraining peak), cheap steps.
    recipe = cpu_recipe | dict(
        init_from=str(STANDIN), learning_rate=3e-4, dropout=0.0, block_size=128, batch_size=8,
        gradient_accumulation_steps=1, max_iters=40, eval_interval=10, eval_iters=5,
    )  # fmt: skip
    print(
        f"OFFLINE: GPT-2's weights cannot be downloaded here, so we finetune the OFFLINE STAND-IN at\n"
        f"{STANDIN}: GPT-2's shape at 4 layers, pretrained by gptkit on tiny Shakespeare's train split."
    )
if SMOKE:
    recipe |= dict(max_iters=8, eval_interval=4, eval_iters=2)
    recipe |= dict(block_size=64, batch_size=4, gradient_accumulation_steps=1)
# device: the CPU recipe pins the CPU; here a GPU is used when there is one
cfg = dataclasses.replace(
    TrainConfig(**recipe), out_dir=str(OUT / "finetune"), data_root=str(data_dir.parent), overwrite_out_dir=True,
    progress=False, device="auto",
)  # fmt: skip
print(cfg)

# %% [markdown]
# ## One training step, written out
#
# `gptkit.train` repeats one step `max_iters` times. Here is that step by hand, on the model we
# are about to finetune:
#
# 1. draw the step's windows: `gradient_accumulation_steps` micro-batches of `batch_size`
#    windows each, from the run's seeded generator (`gptkit.data.Batches`, notebook 1);
# 2. for each micro-batch: logits for every position, then the cross-entropy between the
#    logits at position t and the token at t + 1 (the targets `y` are the inputs `x` shifted by
#    one), divided by the number of micro-batches, and backpropagated: `.grad` *adds up* over
#    the micro-batches, so their mean gradient is that of one big batch (accumulation);
# 3. clip: if the gradients' global norm exceeds `grad_clip`, scale them all down to it;
# 4. AdamW, written out: shrink the matrices toward zero (decoupled weight decay, not on biases
#    and LayerNorm gains), update the moving averages m (of g) and v (of g²), correct their
#    bias toward zero at the start, and step by lr · m̂ / (√v̂ + ε).
#
# Then `train()` runs exactly one iteration from the same weights and seed, and what it saves
# (weights and AdamW's moments) must equal ours. This one step takes a large learning rate, so
# that every term of the update, weight decay included, shows in the weights; and fp32 on the
# CPU, so that the two agree to float rounding.

# %%
import torch
from torch.nn import functional as F

from gptkit.data import Batches
from gptkit.model import GPT
from gptkit.sources import load_model
from gptkit.train import train

one = dataclasses.replace(
    cfg, out_dir=str(OUT / "one-step"), max_iters=1, eval_interval=1, eval_iters=1, always_save_checkpoint=True,
    batch_size=2, gradient_accumulation_steps=2, block_size=64, learning_rate=1e-2, decay_lr=False, dropout=0.0,
    device="cpu", dtype="float32",
)  # fmt: skip
model = GPT.from_pretrained(one.init_from, {"dropout": one.dropout})  # what train() starts from, too
model.crop_block_size(one.block_size)
params = dict(model.named_parameters())  # the head shares the token embedding's tensor: it comes once
before = {name: p.detach().clone() for name, p in params.items()}

# 1. the windows: the run's generator, seeded as train() seeds it
windows = Batches(data_dir, "train", one.batch_size, one.block_size, seed=one.seed)
offsets = windows.draw_offsets(one.gradient_accumulation_steps * one.batch_size)
# 2. forward, shifted cross-entropy, backward, accumulated over the micro-batches
losses = []
for rows in offsets.reshape(one.gradient_accumulation_steps, one.batch_size):
    x, y = windows.windows(rows)
    assert torch.equal(x[:, 1:], y[:, :-1])  # the targets are the inputs, one token later
    logits = model(x)[0]  # (batch, block, vocab): a prediction at every position
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())  # position t against token t + 1
    (loss / one.gradient_accumulation_steps).backward()  # .grad += this micro-batch's share
    losses.append(loss.item())
# 3. clip the global gradient norm
norm = torch.sqrt(sum((p.grad**2).sum() for p in params.values()))
scale = min(1.0, one.grad_clip / (norm.item() + 1e-6))
for p in params.values():
    p.grad.mul_(scale)
print(f"loss {sum(losses) / len(losses):.4f} over {len(losses)} micro-batches; gradient norm {norm:.3f}", end="")
print(f" -> clipped to {one.grad_clip}" if scale < 1 else " (under grad_clip: unchanged)")
# 4. AdamW, its first step (t = 1), from moments at zero
lr, (beta1, beta2), eps, t = one.learning_rate, (one.beta1, one.beta2), 1e-8, 1
moments = {}
with torch.no_grad():
    for name, p in params.items():
        g = p.grad
        if p.dim() >= 2:  # matrices and embeddings decay; biases and LayerNorm gains do not
            p.mul_(1 - lr * one.weight_decay)
        m = (1 - beta1) * g  # beta1 * m + (1 - beta1) * g, with m = 0 before the first step
        v = (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)  # undo the pull toward the zero start
        p.sub_(lr * m_hat / (v_hat.sqrt() + eps))
        moments[name] = m, v
        p.grad = None

# %% [markdown]
# Now the same step through `gptkit.train.train`, and the comparison: the loss it logged, the
# weights in its checkpoint, and AdamW's moments in its optimizer state (they hold the clipped,
# accumulated gradient: a mistake in steps 2 or 3 would show there even where the weights,
# after Adam's first step of about ±lr per weight, hide it).

# %%
train(one)
logged = read_metrics(one.out_dir).steps[0]  # the step record of iteration 0
print(f"loss: by hand {sum(losses) / len(losses):.6f}, train() {logged['loss']:.6f}")
assert abs(logged["loss"] - sum(losses) / len(losses)) < 1e-4
after = load_model("resume", one.out_dir)  # the weights train() saved after its one step
optimizer = after.configure_optimizers(one.weight_decay, lr, (beta1, beta2), "cpu")
optimizer.load_state_dict(checkpoint.load(Path(one.out_dir) / checkpoint.BEST).optimizer)
worst = rule = 0.0
for name, theirs in after.named_parameters():
    ours, start = params[name].detach(), before[name]
    # measured against the size of the step itself, which is what the comparison is about
    worst = max(worst, ((ours - theirs).norm() / (ours - start).norm()).item())
    m, v = optimizer.state[theirs]["exp_avg"], optimizer.state[theirs]["exp_avg_sq"]
    for mine, gptkit_moment in zip(moments[name], (m, v), strict=True):
        # to fp32 rounding: a trained model's gradient is a small sum of large per-token terms,
        # so two summation orders differ by up to ~3e-4 of it (gptkit's is the closer to float64)
        assert (mine - gptkit_moment).norm() <= 1e-3 * gptkit_moment.norm() + 1e-12, name
    # our update rule applied to gptkit's own moments must give gptkit's weights
    decayed = start * (1 - lr * one.weight_decay) if start.dim() >= 2 else start
    expected = decayed - lr * (m / (1 - beta1)) / ((v / (1 - beta2)).sqrt() + eps)
    rule = max(rule, ((expected - theirs).norm() / (expected - start).norm()).item())
print(f"AdamW's moments agree; our update on gptkit's moments: largest difference {rule:.1e} of the step")
print(f"our weights against gptkit's: largest difference {worst:.1e} of the step's size")
assert rule < 1e-5, "the hand-written AdamW update must be gptkit's"
# Adam's first step is about +-lr wherever the gradient is not zero, however small it is: where
# a trained model's gradient entry is as small as its rounding, the two steps can differ fully
assert worst < 0.2, "the hand-written step must be gptkit's step"
del model, after, optimizer


# %% [markdown]
# ### Exercise 4.1: the shifted cross-entropy
#
# Write `my_next_token_loss(logits, ids)`: `logits` (batch, time, vocab) are the model's output
# on `ids` (batch, time). Return the mean cross-entropy of every prediction the batch can check:
# the logits at position t against the token at t + 1. The check compares with gptkit's
# `model(x, y)` loss on random batches.

# %%
def my_next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_next_token_loss

check_next_token_loss(my_next_token_loss)


# %% [markdown]
# ### Exercise 4.2: gradient accumulation
#
# Write `my_accumulate(model, micro_batches)`: for each `(x, y)` in `micro_batches`, compute
# `model(x, y)`'s loss and backpropagate it, so that afterwards every `.grad` holds the gradient
# of one big batch made of all the micro-batches (of equal size). Return nothing. The check
# compares the gradients with one backward pass over the whole batch.

# %%
def my_accumulate(model: GPT, micro_batches: list) -> None:
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_accumulation

check_accumulation(my_accumulate)


# %% [markdown]
# ### Exercise 4.3: the learning-rate schedule
#
# With `decay_lr=True` (pretraining's default), gptkit's `lr_at` warms up linearly, as
# `learning_rate * (it + 1) / (warmup_iters + 1)` for `it < warmup_iters`, then follows a cosine
# from `learning_rate` at `warmup_iters` down to `min_lr` at `lr_decay_iters`, and stays at
# `min_lr` after it. Write `my_lr(it, learning_rate, min_lr, warmup_iters, lr_decay_iters)`; the
# check compares every iteration of three schedules with `gptkit.train.lr_at`.

# %%
def my_lr(it: int, learning_rate: float, min_lr: float, warmup_iters: int, lr_decay_iters: int) -> float:
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_lr_schedule

check_lr_schedule(my_lr)

# %% [markdown]
# ## Finetune, watching the loss live
#
# `train_live(cfg)` calls `gptkit.train.train(cfg)` (the same function as
# `python -m gptkit.train`) and redraws the curves from the run's `metrics.jsonl` every two
# seconds. Dashed: train loss, solid: val loss, both measured on the same fixed batches at each
# evaluation; the faint line is the loss of each training step.

# %%
summary = train_live(cfg)
print(summary)

# %%
run = read_metrics(cfg.out_dir, name="finetune")
print(summarize(run))
assert run.val_loss.min() < run.val_loss[0], "finetuning must lower the val loss"
plot_losses(run, steps=True)

# %% [markdown]
# ## A checkpoint only when val loss improves
#
# With `always_save_checkpoint=False`, `ckpt.pt` is written only at an evaluation that beats
# the best val loss so far; other evaluations write `latest.pt` (the state to resume from).
# So `ckpt.pt` always holds the best model, which is what `gptkit.diagnostics.best_checkpoint`
# checks.

# %%
rec = best_checkpoint(run)
print(rec.note)
saved = checkpoint.load(Path(cfg.out_dir) / "ckpt.pt")
print("ckpt.pt holds iteration", saved.iter_num, "with best val loss", round(saved.best_val_loss, 4))
print("it contains:", sorted(saved.to_dict()))
assert rec.checkpoint is not None and saved.iter_num == rec.iter
print("files:", sorted(p.name for p in Path(cfg.out_dir).iterdir()))

# %% [markdown]
# ## Resume
#
# `init_from="resume"` continues from the newest state in `out_dir`: weights, AdamW's moments,
# the iteration count, the random generators and the data sampler, so the resumed run goes on
# as if it had never stopped. Here we extend the run by a quarter of its length.

# %%
more = max(cfg.eval_interval, cfg.max_iters // 4)
resumed = dataclasses.replace(cfg, init_from="resume", max_iters=cfg.max_iters + more)
summary2 = train_live(resumed, others=[run])
run2 = read_metrics(cfg.out_dir, name="finetune + resume")
print(summarize(run2))
assert summary2["iter_num"] == resumed.max_iters
assert run2.evals[: len(run.evals)] == run.evals, "the records before the resume point are kept as they were"
assert run2.iters[-1] == resumed.max_iters

# %% [markdown]
# ## Sliders: learning rate and dropout
#
# The panel below launches a short finetune (the same config, fewer iterations, its own
# folder) with the learning rate and dropout you pick, and adds the run to the plot. The
# learning-rate slider is logarithmic: useful values span several orders of magnitude.
#
# The button calls `gptkit.widgets.short_finetune(base, learning_rate, dropout)`, a plain
# function; the next cell runs it once with the sliders' starting values, so the notebook
# works without a browser too.

# %%
base = dataclasses.replace(
    cfg,
    out_dir=str(OUT / "panel"),
    max_iters=4 if SMOKE else (6 if REAL else 40),  # a click on GPT-2 costs ~45 s on 2 CPU cores
    eval_interval=2 if SMOKE else (3 if REAL else 10),
    block_size=64 if SMOKE or REAL else 128,
    gradient_accumulation_steps=1,
)
panel = FinetunePanel(base, lr_exponents=(-6.0, -2.0))
display(panel.widget)

# %%
first = panel.run()  # what a click does, with the sliders' starting values
assert first.config["learning_rate"] == base.learning_rate and first.config["dropout"] == base.dropout

# %% [markdown]
# Setting a slider from code is the same as dragging it; `button.click()` is the same as
# pressing it. (This cell doubles as a test that the whole callback path runs.)

# %%
panel.lr.value = base.learning_rate / 10
panel.dropout.value = 0.2
panel.button.click()
assert len(panel.runs) == 2, panel.status.value
assert panel.runs[-1].config["learning_rate"] == panel.lr.value and panel.runs[-1].config["dropout"] == 0.2
print(panel.status.value)
plot_losses(*panel.runs, title="panel runs: train (dashed) and val (solid)")

# %% [markdown]
# Without widgets, the same comparison is a loop over `short_finetune`:
#
# ```python
# from gptkit.widgets import short_finetune
# runs = [short_finetune(base, lr, dropout=0.1) for lr in (1e-5, 3e-5, 1e-4)]
# plot_losses(*runs)
# ```

# %% [markdown]
# ## Try your model
#
# A prompt box, a temperature, a number of tokens and a button over the finetuned run's best
# checkpoint: each click is `python -m gptkit.sample --out_dir=... --start=PROMPT` with those
# settings and a fixed seed (notebook 5 explains temperature). The cell generates once with the
# starting values, so it works without a browser too.

# %%
sampler = SamplePanel(cfg.out_dir, prompt="ROMEO:")
display(sampler.widget)
print(sampler.generate())

# %% [markdown]
# ## What you learned / try this
#
# - Finetuning = pretraining's loop with trained weights, a ~20x smaller constant learning
#   rate, few iterations and the best checkpoint kept.
# - `train` logs every evaluation to `metrics.jsonl`; `gptkit.diagnostics` reads it for plots.
# - `always_save_checkpoint=False` makes `ckpt.pt` the best model; `init_from="resume"`
#   continues a run exactly.
#
# Try this:
# - Drag the learning rate 10x up and down: which run overfits first?
# - Raise dropout to 0.3 on a longer run and compare the gap between train and val loss.
# - The preset's full run, from a terminal in a clone (~25 min on 2 CPU cores):
#   `python -m gptkit.train config/finetune_shakespeare_cpu.py` (add `--init_from=resume --max_iters=80` to go on).
#
# Next: **05_sampling**, writing text with the finetuned checkpoint.
