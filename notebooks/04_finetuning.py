# %% [markdown]
# # 4 · Finetuning GPT-2 on Shakespeare
#
# Finetuning is pretraining's loop with different settings: start from trained weights, use a
# small learning rate, stop early. In this notebook you will:
#
# 1. read the seed's finetuning config key by key, next to the pretraining defaults;
# 2. finetune through `gptkit.train.train`, watching train and val loss live;
# 3. see that a checkpoint is written only when val loss improves;
# 4. resume the run where it stopped;
# 5. play with the learning rate and dropout using sliders, and compare runs on one plot.
#
# As in notebook 3, when GPT-2's weights cannot be downloaded the notebook says so and
# finetunes the small random-weight stand-in instead (which is then really training from
# scratch, so it gets a larger learning rate).

# %%
import os
from pathlib import Path

if Path.cwd().name == "notebooks":
    os.chdir("..")  # every path below is relative to the repository root

import dataclasses

from IPython.display import display

import gptkit
from gptkit import checkpoint
from gptkit.config import TrainConfig, read_config_file
from gptkit.diagnostics import best_checkpoint, plot_losses, read_metrics, summarize
from gptkit.pretrained import load_or_standin
from gptkit.widgets import FinetunePanel, train_live

SMOKE = gptkit.smoke()
NAME = "gpt2"
STANDIN = Path("models/offline-standin")
OUT = Path("out-notebooks")

data_dir = Path("data/shakespeare")
if not (data_dir / "train.bin").exists():
    from gptkit.prepare import prepare

    prepare(data_dir / "input.txt", data_dir, progress=False)

# %% [markdown]
# ## The seed's config, key by key
#
# `config/finetune_shakespeare.py` is the recipe this project started from: finetune the
# largest GPT-2 on tiny Shakespeare. Next to each setting: gptkit's default, which is GPT-2's
# *pretraining* recipe (as in nanoGPT), and why finetuning differs.

# %%
seed = read_config_file("config/finetune_shakespeare.py")
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
assert set(seed) <= set(WHY), f"explain the new settings too: {sorted(set(seed) - set(WHY))}"
print(f"{'setting':<28}{'pretraining':<16}  {'seed finetune':<18}  why")
for key, value in seed.items():
    default = getattr(pretrain, key)
    print(f"{key:<28}{default!s:<16.16}  {value!s:<18.18}  {WHY[key]}")

# %% [markdown]
# That recipe needs a large GPU. On a laptop CPU we keep the same ideas with smaller pieces:
# `config/finetune_shakespeare_cpu.py` finetunes the 124M model with 256-token windows.

# %%
cpu_recipe = read_config_file("config/finetune_shakespeare_cpu.py")
print(cpu_recipe)
model, loaded = load_or_standin(NAME, STANDIN)
REAL = loaded == NAME
del model  # train() loads the weights itself from init_from
if REAL:
    recipe = cpu_recipe | {"init_from": NAME}
    print(f"finetuning OpenAI's {NAME}")
else:
    # Random weights are not a pretrained model: they need a far larger LR and many cheap steps.
    recipe = cpu_recipe | dict(
        init_from=str(STANDIN), learning_rate=2e-3, dropout=0.0, block_size=128, batch_size=8,
        gradient_accumulation_steps=1, max_iters=300, eval_interval=25,
    )  # fmt: skip
    print(
        f"OFFLINE: GPT-2's weights cannot be downloaded here, so we finetune the random-weight stand-in\n"
        f"at {STANDIN} instead: the same code path, but this is really training from scratch."
    )
if SMOKE:
    recipe |= dict(max_iters=8, eval_interval=4, eval_iters=2)
    recipe |= dict(block_size=64, batch_size=4, gradient_accumulation_steps=1)
cfg = dataclasses.replace(
    TrainConfig(**recipe), out_dir=str(OUT / "finetune"), overwrite_out_dir=True, progress=False, device="auto"
)  # device: the CPU recipe pins the CPU; here a GPU is used when there is one
print(cfg)

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
print("ckpt.pt holds iteration", saved["iter_num"], "with best val loss", round(saved["best_val_loss"], 4))
print("it contains:", sorted(saved))
assert rec.checkpoint is not None and saved["iter_num"] == rec.iter
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
    max_iters=4 if SMOKE else (20 if REAL else 100),
    eval_interval=2 if SMOKE else (5 if REAL else 20),
    block_size=64 if SMOKE else 128,
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
# - From a terminal: `python -m gptkit.train config/finetune_shakespeare_cpu.py --max_iters=80`.
#
# Next: **05_sampling**, writing text with the finetuned checkpoint.
