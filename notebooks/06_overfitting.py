# %% [markdown]
# # 6 · Overfitting: reading the loss curves
#
# *Takes about 6 min on a 2-core CPU with the offline stand-in once it is built (the first notebook
# that needs it pretrains it: a few minutes more, once) and 8 min with GPT-2 124M
# (measured top to bottom; GPT-2's time with random weights of its shape, from a local hub),
# about 7 min on a Colab or Kaggle T4 (estimate; its small runs stay on the CPU).*
#
# A model that keeps training on the same small dataset eventually *memorises* it: train loss
# keeps falling while val loss — the loss on text it never trains on — stops falling and turns
# up. From then on, more training makes the model worse at what we care about. In this
# notebook we build a run that overfits on purpose and use `gptkit.diagnostics` to:
#
# 1. plot train against val loss, and the **generalization gap** between them;
# 2. find the step where val loss **turns up**, robustly (not fooled by one noisy evaluation);
# 3. pick the **best checkpoint**, and check that **early stopping** would have stopped there;
# 4. compare **dropout** and **learning-rate** sweeps on one figure;
# 5. compare a **pretrained** start with training **from scratch** on the same budget.
#
# To overfit quickly on a CPU we train small models on a *tiny* slice of Shakespeare: about
# 700 training tokens.

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

import matplotlib.pyplot as plt  # noqa: F401  (the inline backend shows the figures below)
import numpy as np

import gptkit
from gptkit.config import TrainConfig
from gptkit.diagnostics import (
    best_checkpoint,
    find_turn_up,
    plot_gap,
    plot_losses,
    plot_sweeps,
    read_metrics,
    simulate_early_stop,
    smooth,
    summarize,
)
from gptkit.notebook import load_or_standin, shakespeare_text, standin_path, workdir
from gptkit.prepare import prepare, print_counts
from gptkit.train import train
from gptkit.widgets import short_finetune

SMOKE = gptkit.smoke()
OUT = workdir("overfitting")  # everything this notebook writes goes here (GPTKIT_NOTEBOOK_OUT moves it)
STANDIN = standin_path()  # the offline stand-in (notebook 3), built on first use

# %% [markdown]
# ## A dataset small enough to memorise
#
# The first 4,000 characters of Shakespeare, 60% to train and 40% to validate, prepared with
# the same `gptkit.prepare` as notebook 1.

# %%
corpus = shakespeare_text()
(OUT / "tiny.txt").write_text(corpus[:4000], encoding="utf-8")
meta = prepare(OUT / "tiny.txt", OUT / "data" / "tiny", val_fraction=0.4, block_size=32, progress=False)
print_counts(meta)

# %% [markdown]
# ## A run built to overfit
#
# A small GPT from scratch (2 layers, 64-dimensional), a high constant learning rate, no
# dropout, many passes over ~700 tokens. Each batch holds 8 × 32 = 256 tokens, so every 3
# iterations the model has seen the whole training set once more. `always_save_checkpoint=False`
# keeps in `ckpt.pt` the model with the lowest val loss.

# %%
base = TrainConfig(
    out_dir=str(OUT / "runs"),
    dataset="tiny",
    data_root=str(OUT / "data"),
    init_from="scratch",
    n_layer=2,
    n_head=2,
    n_embd=64,
    block_size=32,
    batch_size=4 if SMOKE else 8,
    learning_rate=3e-3,
    decay_lr=False,
    dropout=0.0,
    max_iters=60 if SMOKE else 120,
    eval_interval=5,
    eval_iters=4,
    always_save_checkpoint=False,
    progress=False,
    device="cpu",  # small models: a GPU would spend its time waiting
)

# %% tags=["no-pretrained-weights"]
overfit = short_finetune(base, base.learning_rate, base.dropout)  # train, then read its metrics.jsonl
print(summarize(overfit))

# %% tags=["no-pretrained-weights"]
plot_losses(overfit, steps=True, title="train (dashed) and val (solid); * lowest val, dotted: val turns up")

# %% [markdown]
# Train loss keeps falling; val loss falls at first — the model learns what all Shakespeare
# has in common — then turns up as it starts memorising the training text.
#
# ## The generalization gap
#
# The gap, val loss minus train loss, measures how much of the training progress is
# memorisation. It stays near zero while the model learns general patterns and widens once
# it overfits.

# %% tags=["no-pretrained-weights"]
plot_gap(overfit)

# %% [markdown]
# ## Where does val loss turn up?
#
# The lowest single evaluation can be noise. `find_turn_up` first smooths the val curve (a
# moving average over 3 evaluations), finds its minimum, and accepts it as a turn-up only if
# the smoothed curve then stays at least `min_rise` above that minimum for the last `patience`
# evaluations. A single bad evaluation, a plateau, or a dip that recovers is not overfitting.

# %% tags=["no-pretrained-weights"]
turn = find_turn_up(overfit, window=3, min_rise=0.02, patience=3)
print(turn)
assert turn is not None, "this run was built to overfit: the diagnostics must find where"
assert turn.iter < overfit.iters[-1] and turn.rise > 0.05
end_gap, gap_at_turn = overfit.gap[-1], overfit.gap[turn.index]
print(f"gap at the turn {gap_at_turn:.3f} -> at the end {end_gap:.3f}")
assert end_gap > gap_at_turn + 0.5, "after the turn-up, the gap must widen"

smoothed = smooth(overfit.val_loss, 3)
print("val loss:     ", np.round(overfit.val_loss, 2))
print("smoothed (3): ", np.round(smoothed, 2))


# %% [markdown]
# ### Exercise 6.1: a turn-up detector
#
# Write `my_turned_up(val_losses)`: the index of the evaluation where the val loss turned up,
# or `None` while it has not, with `find_turn_up`'s rule at window 3, `min_rise=0.02` and
# `patience=3`: smooth the curve with `smooth(val_losses, 3)` (imported above), find the minimum
# of the smoothed curve, and accept it only when at least 3 evaluations follow it and the last 3
# smoothed values are all at least 0.02 above it. The check runs six curves: U-shaped, still
# falling, one bad evaluation at the end, a dip that recovers, a plateau, a noisy U.

# %%
def my_turned_up(val_losses: list[float]) -> int | None:
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_turn_up

check_turn_up(my_turned_up)

# %% [markdown]
# ## The best checkpoint, and early stopping
#
# The model worth keeping is the one with the lowest val loss. Because this run saved only on
# improvement, `ckpt.pt` holds exactly that model: `best_checkpoint` checks it.
#
# Early stopping (`early_stop_patience=N`) ends training after N evaluations in a row without
# a new best val loss. `simulate_early_stop` replays this run's evaluations through that rule;
# then we really train with it and check the run stops where the simulation said.

# %% tags=["no-pretrained-weights"]
rec = best_checkpoint(overfit)
print(rec.note)
assert rec.checkpoint is not None and rec.iter == int(overfit.iters[np.argmin(overfit.val_loss)])
assert abs(rec.iter - turn.iter) <= 2 * base.eval_interval  # the turn-up and the best model agree

sim = simulate_early_stop(overfit, patience=3)
print(sim)
assert sim.stopped and sim.best_iter == rec.iter

stopped_cfg = dataclasses.replace(base, out_dir=str(OUT / "early-stop"), early_stop_patience=3, overwrite_out_dir=True)
summary = train(stopped_cfg)
early = read_metrics(stopped_cfg.out_dir, name="early stop (patience 3)")
print(summary)
assert summary["stopped_early"] and summary["iter_num"] == sim.stop_iter
assert np.allclose(early.val_loss, overfit.val_loss[: len(early.evals)], atol=1e-5)  # same run, cut short
print(f"early stopping saved {sim.iters_saved} of {int(overfit.iters[-1])} iterations")
plot_losses(overfit, early, title="early stopping ends the run soon after val loss turns up")


# %% [markdown]
# ### Exercise 6.2: early stopping
#
# Write `my_stop_at(val_losses, patience)`: the index of the evaluation at which
# `early_stop_patience=patience` ends training, i.e. the first one that makes `patience`
# evaluations in a row without a new best (lowest) val loss; `None` if training never stops.
# The check compares with `simulate_early_stop` on six curves at patience 2 and 3.

# %%
def my_stop_at(val_losses: list[float], patience: int) -> int | None:
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_early_stop

check_early_stop(my_stop_at)

# %% [markdown]
# ## Dropout and learning-rate sweeps
#
# Two knobs change how fast a model overfits:
#
# - **dropout** randomly zeroes activations during training, so the model cannot rely on any
#   single path to memorise: train loss falls more slowly and the gap stays smaller;
# - the **learning rate** sets how fast the model moves: higher rates reach the bottom of the
#   val curve sooner, and overfit sooner.
#
# Each run is the run above with one setting changed (the same `short_finetune` the sliders of
# notebook 4 call).

# %% tags=["no-pretrained-weights"]
dropouts = [0.0, 0.2] if SMOKE else [0.0, 0.1, 0.3]
lrs = [3e-3] if SMOKE else [3e-4, 3e-3, 1e-2]  # smoke: one new run, the run above for the other
dropout_runs = [overfit if d == base.dropout else short_finetune(base, base.learning_rate, d) for d in dropouts]
lr_runs = [overfit if lr == base.learning_rate else short_finetune(base, lr, base.dropout) for lr in lrs]
plot_sweeps({"dropout": dropout_runs, "learning_rate": lr_runs})

# %% tags=["no-pretrained-weights"]
for run in dropout_runs + lr_runs:
    t = find_turn_up(run)
    print(f"{run.name:<28} final gap {run.gap[-1]:6.3f}   turns up {'at ' + str(t.iter) if t else 'not (yet)'}")
no_dropout, most_dropout = dropout_runs[0], dropout_runs[-1]
assert most_dropout.gap[-1] < no_dropout.gap[-1], "dropout must narrow the generalization gap"
slow, fast = find_turn_up(lr_runs[0]), find_turn_up(lr_runs[lrs.index(base.learning_rate)])
assert fast is not None and (slow is None or slow.iter >= fast.iter), "a lower LR must not overfit sooner"

# %% [markdown]
# ## Pretrained against from scratch, on the same budget
#
# Same data, same number of steps and tokens: one run starts from GPT-2's weights, the other
# from random weights of the same shape. A pretrained model already knows English, so on a
# tiny dataset it reaches a far lower val loss before it overfits.
#
# Offline, the pretrained model is notebook 3's stand-in: GPT-2's shape at 4 layers, which
# gptkit pretrained for a few minutes on the train split of tiny Shakespeare. It has seen the
# first 4,000 characters above, so this comparison uses 4,000 characters from the end of the
# corpus instead, in the validation split that no model here has trained on. Its head start
# is smaller than GPT-2's (a few minutes of pretraining against weeks), and it is a head start
# in Shakespeare, where GPT-2's is in English.

# %%
(OUT / "unseen.txt").write_text(corpus[-4000:], encoding="utf-8")  # in notebook 1's val split
prepare(OUT / "unseen.txt", OUT / "data" / "unseen", val_fraction=0.4, block_size=32, progress=False)
model, loaded = load_or_standin("gpt2")
REAL = loaded == "gpt2"
shape = dict(n_layer=model.config.n_layer, n_head=model.config.n_head, n_embd=model.config.n_embd)
del model
# GPT-2 124M takes ~3.5 s a step of 256 tokens on 2 CPU cores (the stand-in a fraction of that):
# 20 steps keep this section to ~3.5 min there; the head start shows from the first evaluation
budget = dict(max_iters=10 if SMOKE else (20 if REAL else 100), eval_interval=5)
pretrained_cfg = dataclasses.replace(
    base, out_dir=str(OUT / "pretrained"), dataset="unseen", init_from="gpt2" if REAL else str(STANDIN),
    learning_rate=3e-5 if REAL else 3e-4, overwrite_out_dir=True, device="auto", **budget,
)  # fmt: skip
scratch_cfg = dataclasses.replace(
    base, out_dir=str(OUT / "scratch"), dataset="unseen", init_from="scratch", learning_rate=6e-4 if REAL else 2e-3,
    overwrite_out_dir=True, device="auto", **shape, **budget,
)  # fmt: skip
train(pretrained_cfg)
train(scratch_cfg)
pretrained_run = read_metrics(pretrained_cfg.out_dir, name=f"from {loaded}")
scratch_run = read_metrics(scratch_cfg.out_dir, name="from scratch")
print(summarize(pretrained_run))
print(summarize(scratch_run))
start_gap = scratch_run.val_loss[0] - pretrained_run.val_loss[0]
best_gap = scratch_run.val_loss.min() - pretrained_run.val_loss.min()
print(f"the pretrained run starts {start_gap:.2f} nats below the scratch run, and its best is {best_gap:.2f} below")
assert start_gap > 0.5, "the pretrained run starts ahead"
if REAL or not SMOKE:  # smoke mode's stand-in had seconds of pretraining: its lead shows at the start only
    # GPT-2 knows English; the stand-in knows some Shakespeare, from minutes of pretraining
    assert best_gap > (1.0 if REAL else 0.5), "pretraining pays off on little data: it stays ahead"
plot_losses(pretrained_run, scratch_run, title=f"same budget: {loaded} against scratch")

# %% [markdown]
# ## What you learned / try this
#
# - Overfitting shows as train loss falling while val loss turns up; the generalization gap
#   widens from that point.
# - `find_turn_up` smooths the val curve and requires a sustained rise, so noise does not
#   trigger it; `best_checkpoint` names the model to keep; `simulate_early_stop` predicts
#   exactly where `early_stop_patience` stops a run.
# - Dropout narrows the gap; a higher learning rate overfits sooner; pretrained weights reach
#   a lower val loss on little data.
# - For your own runs: `gptkit.diagnostics.summarize("out-shakespeare")`, or
#   `plot_run("out-shakespeare")` to save the plot as a PNG.
#
# Try this:
# - Double the dataset (`corpus[:8000]`): does the turn-up come later?
# - Run the sweep with `weight_decay` instead of dropout.
# - Point `read_metrics` at notebook 4's run (`workdir("finetune")`) and look for a turn-up there.
