# %% [markdown]
# # 10 · Preference tuning (DPO) and scoring by likelihood
#
# *Takes about 5 min on a 2-core CPU after notebook 8, whose SFT run it reuses (measured top to
# bottom); a few minutes more opened alone, when it trains that run itself.*
#
# Notebook 8 taught a model a task from examples of good answers: supervised finetuning (SFT).
# Preference tuning goes one step further: from *pairs* of a better and a worse answer to the same
# prompt, it teaches the model to prefer the first. gptkit does it with DPO (Direct Preference
# Optimization, Rafailov et al. 2023), the method of TRL's `DPOTrainer` and of chapter 7 of
# *LLMs from scratch*. In this notebook you will:
#
# 1. start from an SFT model (notebook 8's run if it is in the output folder, else a short SFT
#    run of our own on the dates task);
# 2. write the DPO loss by hand from the log-probabilities of chosen and rejected responses, and
#    check it against gptkit's (`gptkit.objectives.Preference`);
# 3. train with DPO and plot the rewards of the chosen and the rejected responses;
# 4. see what beta does to how far the policy drifts from its reference;
# 5. over-train on purpose: the margin keeps rising while the generations degrade;
# 6. score exact match before SFT, after SFT and after DPO;
# 7. score multiple-choice questions by likelihood by hand, against `gptkit.evaluate --choices`.
#
# The preference task ships with gptkit (`data/dates_preference`, built from `data/dates` by its
# `build.py`): the prompts of the dates task, with the right answer as `chosen` and a plausible
# wrong one as `rejected` (a neighbouring month, day or year, or the ISO date echoed back).
#
# The model is GPT-2's shape at 4 layers and 128 wide with random weights (notebook 3's offline
# stand-in before gptkit pretrains it), as in notebook 8, whatever weights are available, so
# that the whole notebook runs in minutes on a CPU; what it knows about dates, the SFT run
# taught it. Notebook 8 shows why not the pretrained stand-in: pretrained on Shakespeare, which
# holds hardly a digit or a month name, it learns dates worse on the same budget. With real
# GPT-2 weights the recipe is the same at a smaller learning rate (docs/preference-tuning.md).

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
import html
import json
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import HTML, display
from torch.nn import functional as F

import gptkit
from gptkit import GPT, checkpoint
from gptkit.config import TrainConfig
from gptkit.data import PairBatches
from gptkit.evaluate import EvaluateConfig, evaluate, evaluate_split, summarize
from gptkit.export import export_hf
from gptkit.metrics import read_metrics
from gptkit.model import IGNORE_INDEX
from gptkit.notebook import task_file, workdir
from gptkit.objectives import Preference, sequence_logps
from gptkit.prepare import prepare, print_counts
from gptkit.pretrained import build_offline_standin
from gptkit.tokenizer import get_encoding
from gptkit.train import train

SMOKE = gptkit.smoke()
OUT = workdir("preference_tuning")  # everything this notebook writes goes under OUT
STANDIN = build_offline_standin(workdir("models", "offline-standin"))  # GPT-2's shape at 4 layers
enc = get_encoding()
torch.manual_seed(0)

# %% [markdown]
# ## Preference pairs
#
# One JSON object a line, TRL's standard form: `prompt`, `chosen`, `rejected`. `gptkit.prepare`
# sees the keys and prepares a *preference* dataset (`kind: preference` in `meta.json`): the
# prompt and both responses tokenized each on its own, `<|endoftext|>` ending each response. We
# prepare the pairs, and the dates task of notebook 8 for the SFT run and for exact match.

# %%
for line in task_file("dates_preference", "train.jsonl").read_text(encoding="utf-8").splitlines()[:4]:
    print(line)
data_root = OUT / "data"
KEEP = 64 if SMOKE else None  # lines kept of each file: a DPO run computes its reference over every split


def kept(task, split):
    """The shipped file, or (smoke) a copy of its first KEEP lines."""
    lines = task_file(task, f"{split}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    path = OUT / "jsonl" / task / f"{split}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines[:KEEP]), encoding="utf-8")
    return path


for task in ("dates", "dates_preference"):
    files = {split: kept(task, split) for split in ("train", "val", "test")}
    meta = prepare(
        files["train"], data_root / task, val=files["val"], test=files["test"], block_size=32, progress=False
    )
    print(f"\n{task}: kind {meta.get('kind', 'examples')}")
    print_counts(meta)
assert json.loads((data_root / "dates_preference" / "meta.json").read_text())["kind"] == "preference"

# %% [markdown]
# ## The SFT model
#
# DPO starts from a model that can already do the task: it only shifts probability between
# answers the model would give. If notebook 8 ran in this output folder, its masked run is our
# SFT model; otherwise we train the same run here (the same settings, `gptkit.train.train`).
# Either way it is exported as a Hugging Face directory, which a DPO run starts from
# (`init_from`) and keeps, frozen, as its reference.

# %%
SFT_ITERS, BLOCK = (12, 32) if SMOKE else (300, 32)
notebook_8 = workdir("task_finetuning") / "masked"


def is_our_sft(out_dir):
    """A run of at least SFT_ITERS steps from this notebook's starting weights."""
    path = out_dir / "config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    return config.get("max_iters", 0) >= SFT_ITERS and config.get("init_from") == str(STANDIN)


if is_our_sft(notebook_8) and list(notebook_8.glob("*.pt")):
    sft_run = notebook_8
    print(f"using notebook 8's SFT run: {sft_run}")
else:
    sft_run = OUT / "sft"
    sft_cfg = TrainConfig(
        dataset="dates", data_root=str(data_root), init_from=str(STANDIN), out_dir=str(sft_run), block_size=BLOCK,
        batch_size=8 if SMOKE else 16, max_iters=SFT_ITERS, learning_rate=3e-3, decay_lr=True,
        warmup_iters=SFT_ITERS // 15, lr_decay_iters=SFT_ITERS, min_lr=3e-4, dropout=0.0, mask_prompt=True,
        eval_interval=SFT_ITERS, eval_iters=2 if SMOKE else 13, always_save_checkpoint=False,
        overwrite_out_dir=True, progress=False, device="cpu",
    )  # fmt: skip
    train(sft_cfg)
    print(f"trained an SFT run of our own: {sft_run}")


def load_best(out_dir):
    path = checkpoint.best_in(out_dir)
    return checkpoint.model_from_checkpoint(checkpoint.load(path), path).eval()


SFT_DIR = export_hf(load_best(sft_run), OUT / "sft-export")
models = {
    "before SFT (stand-in)": GPT.from_pretrained(STANDIN).eval(),
    "after SFT": GPT.from_pretrained(SFT_DIR).eval(),
}

# %% [markdown]
# ## Training with DPO
#
# A DPO run is a training run on the preference dataset: the dataset's kind selects the
# objective. The policy π starts as the SFT model; the reference is the SFT model, frozen. A
# response's *reward* is `beta * (log π(response | prompt) - log ref(response | prompt))`, the
# log-probabilities summed over the response's tokens, and the loss of a pair is
#
#     -log sigmoid(reward(chosen) - reward(rejected))
#
# At the first step the policy is the reference: every reward is 0 and the loss is
# ln 2 = 0.6931. The reference's log-probabilities are computed once before the first step
# (`dpo_reference="precompute"`, the default without LoRA): no second model in memory.

# %%
DPO_ITERS, DPO_LR, BETA = (4, 3e-4, 0.1) if SMOKE else (60, 3e-4, 0.1)
dpo_base = TrainConfig(
    dataset="dates_preference", data_root=str(data_root), init_from=str(SFT_DIR), block_size=BLOCK,
    batch_size=8 if SMOKE else 16, max_iters=DPO_ITERS, learning_rate=DPO_LR, decay_lr=False, dpo_beta=BETA,
    dropout=0.0, eval_interval=2 if SMOKE else 10, eval_iters=1 if SMOKE else 13, always_save_checkpoint=False,
    overwrite_out_dir=True, progress=False, device="cpu",
)  # fmt: skip


def dpo(name, **changes):
    cfg = dataclasses.replace(dpo_base, out_dir=str(OUT / name), **changes)
    train(cfg)
    return read_metrics(cfg.out_dir, name=name)


run = dpo("dpo")
first, last = run.evals[0], run.evals[-1]
print(f"step 0: val DPO loss {first['val_loss']:.4f} (ln 2 = {math.log(2):.4f}), margin {first['val_margin']:.4f}")
print(f"step {last['iter']}: val DPO loss {last['val_loss']:.4f}, reward accuracy {last['val_reward_accuracy']:.1%}")
assert abs(first["val_loss"] - math.log(2)) < 1e-5 and first["val_margin"] == 0.0, "the policy starts as the reference"
assert last["val_loss"] < first["val_loss"] and last["val_margin"] > 0, "DPO must raise chosen above rejected"

# %% [markdown]
# The rewards of the chosen and of the rejected responses over training (`metrics.jsonl` logs
# their means over the validation pairs at every evaluation): the margin between them is what
# the loss pushes up. Both can move the same way (the SFT model gave most of its probability
# to right answers already), DPO only asks that they move apart.


# %%
def plot_rewards(runs, title):
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for (name, r), colour in zip(runs.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False):
        it = r.iters
        ax.plot(it, [e["val_chosen_reward"] for e in r.evals], color=colour, label=f"{name}: chosen")
        ax.plot(
            it, [e["val_rejected_reward"] for e in r.evals], color=colour, linestyle="--", label=f"{name}: rejected"
        )
    ax.axhline(0, color="k", linewidth=0.5)
    ax.set(xlabel="iteration", ylabel="mean val reward", title=title)
    ax.legend(fontsize=8)
    plt.show()


plot_rewards({"beta 0.1": run}, "DPO: rewards of the chosen and the rejected responses")
margins = [e["val_margin"] for e in run.evals]
assert margins[-1] > margins[0]

# %% [markdown]
# ## The DPO loss, by hand
#
# On one batch of validation pairs: the policy (the DPO run's best checkpoint) and the
# reference (the SFT model). A batch of B pairs is 2B rows, prompt + chosen then prompt +
# rejected, with targets only on the response tokens (`IGNORE_INDEX` on prompts and padding).
# By hand: each row's log-probability summed over its response tokens from the logits, the
# rewards, the loss; against gptkit's `sequence_logps` and `Preference` on the same batch.

# %%
policy, reference = load_best(OUT / "dpo"), models["after SFT"]
val_pairs = PairBatches(data_root / "dates_preference", "val", batch_size=8, block_size=BLOCK)
x, y, _ = val_pairs.batch(np.arange(8))


@torch.no_grad()
def logps_by_hand(model, x, y):
    logits, _ = model(x)  # (rows, T, vocab): no targets given, every position
    token_logps = torch.log_softmax(logits.float(), dim=-1).gather(2, y.clamp(min=0)[..., None]).squeeze(2)
    return torch.where(y != IGNORE_INDEX, token_logps, 0.0).sum(1)  # summed over each response


pi, ref = logps_by_hand(policy, x, y), logps_by_hand(reference, x, y)
chosen_reward, rejected_reward = (BETA * (pi - ref)).chunk(2)
by_hand = -F.logsigmoid(chosen_reward - rejected_reward).mean()
with torch.no_grad():
    ref_gptkit = sequence_logps(reference, x, y)
    terms = Preference(beta=BETA)(policy, (x, y, ref_gptkit))
gptkit_loss = terms.loss / terms.sums["count"]
print(f"x {tuple(x.shape)}: {int((y != IGNORE_INDEX).sum())} response tokens in {len(x)} rows")
print(f"by hand {by_hand.item():.6f}   gptkit {gptkit_loss.item():.6f}")
print("chosen rewards  ", np.round(chosen_reward.numpy(), 3))
print("rejected rewards", np.round(rejected_reward.numpy(), 3))
assert torch.allclose(pi, sequence_logps(policy, x, y).detach(), atol=1e-4), "log π(response | prompt), summed"
assert torch.allclose(by_hand, gptkit_loss, atol=1e-5), "the hand-written DPO loss must equal gptkit's"
assert int(terms.sums["correct"]) == int((chosen_reward > rejected_reward).sum())


# %% [markdown]
# ### Exercise 10.1: the DPO loss
#
# Write `my_dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)`: four
# tensors of shape (pairs,), each the log-probability of a response summed over its tokens (the
# policy's and the reference's, of the chosen and of the rejected response). Return the mean DPO
# loss over the pairs, a scalar tensor, as gptkit computes it.


# %%
def my_dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_dpo_loss

check_dpo_loss(my_dpo_loss)

# %% [markdown]
# ## Beta: how far the policy may drift from its reference
#
# The same run at three betas. The loss of a pair saturates once its reward margin,
# `beta * (log-ratio of chosen - log-ratio of rejected)`, is a few units: a small beta needs the
# log-probabilities to move far before the loss is satisfied; a large beta is satisfied by small
# moves. The *drift* below is how far the policy's log-probabilities of the validation responses
# have moved from the reference's: the mean of |log π - log ref| over every chosen and rejected
# response (in nats, whatever the beta).

# %%
BETAS = (BETA, 0.5, 2.0)
beta_dirs = {beta: OUT / ("dpo" if beta == BETA else f"dpo-beta-{beta}") for beta in BETAS}
beta_runs = {beta: (run if beta == BETA else dpo(beta_dirs[beta].name, dpo_beta=beta)) for beta in BETAS}
all_val = PairBatches(data_root / "dates_preference", "val", batch_size=16, block_size=BLOCK)
val_batches = list(all_val.eval_batches(1 if SMOKE else None))


@torch.no_grad()
def drift(model):
    """Mean |log π(response) - log ref(response)| over the validation responses (nats)."""
    moved = [(sequence_logps(model, x, y) - sequence_logps(reference, x, y)).abs() for x, y, _ in val_batches]
    return torch.cat(moved).mean().item()


drifts = {beta: drift(load_best(beta_dirs[beta])) for beta in BETAS}
for beta, r in beta_runs.items():
    e = r.evals[-1]
    print(f"beta {beta:<5} drift {drifts[beta]:7.3f} nats   val margin {e['val_margin']:7.3f}   "
          f"reward accuracy {e['val_reward_accuracy']:.1%}")  # fmt: skip
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(BETAS, [drifts[b] for b in BETAS], marker="o")
ax.set(xscale="log", xlabel="beta", ylabel="drift from the reference (nats)", title=f"{DPO_ITERS} DPO steps")
plt.show()
assert drifts[BETAS[-1]] < drifts[BETAS[0]], "a larger beta holds the policy nearer its reference"

# %% [markdown]
# ## Over-training: the collapse DPO is known for
#
# *LLMs from scratch* trains DPO for one epoch at a small learning rate "because DPO is very
# prone to collapse". Here the same run, ten times the learning rate and three times the steps: the
# DPO loss goes on falling and the margin on rising, because pushing the rejected responses down
# is always rewarded, while nothing in the loss keeps the chosen responses likely, nor the model
# fluent outside them.

# %%
LONG_ITERS = DPO_ITERS * (2 if SMOKE else 3)
over = dpo(
    "dpo-overtrained", learning_rate=DPO_LR * 10, max_iters=LONG_ITERS, eval_interval=LONG_ITERS // (2 if SMOKE else 12)
)
plot_rewards({f"lr {DPO_LR:g}, {DPO_ITERS} steps": run, f"lr {DPO_LR * 10:g}, {LONG_ITERS} steps": over},
             "a short DPO run and an over-trained one")  # fmt: skip
print(f"val margin: {run.evals[-1]['val_margin']:.2f} short, {over.evals[-1]['val_margin']:.2f} over-trained")
if not SMOKE:
    assert over.evals[-1]["val_margin"] > run.evals[-1]["val_margin"], "the longer, faster run drives the margin up"
models["after DPO"] = policy
models["over-trained DPO"] = load_best(OUT / "dpo-overtrained")

# %% [markdown]
# ## Exact match: before SFT, after SFT, after DPO
#
# `gptkit.evaluate` generates each test prompt's answer greedily and compares it with the
# reference, as in notebook 8. The over-trained run's best checkpoint (the lowest val DPO loss) is scored too.

# %%
N_TEST, MAX_NEW = (8, 8) if SMOKE else (200, 12)
results = {
    name: evaluate_split(m, data_root / "dates", "test", num_examples=N_TEST, max_new_tokens=MAX_NEW)
    for name, m in models.items()
}
scores = {name: summarize(records) for name, records in results.items()}
rows_html = "".join(
    f"<tr><td>{html.escape(name)}</td><td>{s['exact_match']:.1%}</td><td>{s['f1']:.3f}</td></tr>"
    for name, s in scores.items()
)
display(HTML(f"<table><tr><th>model</th><th>exact match</th><th>F1</th></tr>{rows_html}</table>"))
table = ["<table><tr><th>prompt</th><th>reference</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in results)]
for i in range(min(6, N_TEST)):
    r0 = results["after SFT"][i]
    table.append(f"<tr><td>{html.escape(r0['prompt'])}</td><td>{html.escape(r0['reference'])}</td>")
    table += [
        f"<td style='font-family:monospace'>{html.escape(repr(rs[i]['generated']))}</td>" for rs in results.values()
    ]
display(HTML("".join(table) + "</tr></table>"))
assert scores["before SFT (stand-in)"]["exact_match"] == 0, "the stand-in was never taught the task"
for records in results.values():  # the scores are what the generations say
    for r in records[:20]:
        assert r["exact_match"] == int(r["generated"].strip() == r["reference"].strip())
if not SMOKE:
    assert scores["after SFT"]["exact_match"] >= 0.9, "SFT taught the task"
    assert scores["after DPO"]["exact_match"] >= 0.9, "a short DPO run keeps it"

# %% [markdown]
# ## Scoring by likelihood: multiple choice
#
# The log-probability of a response after a prompt also *measures* a model without generating:
# a multiple-choice question is answered by the ending the model finds most likely. This is how
# HellaSwag is scored in completion style (build-nanogpt, llm.c): the context's tokens, then each
# ending as the tokens of `" " + ending`; `acc` picks the ending of the highest *summed*
# log-probability, `acc_norm` the highest *mean* per token, which does not favour short endings.
# A choices file from the dates test prompts: the right answer against the two wrong ones of
# the pair and of its neighbour (`{"prompt", "choices", "answer"}` form).

# %%
test_pairs = [json.loads(line) for line in task_file("dates_preference", "test.jsonl").read_text().splitlines()]
N_CHOICES = 6 if SMOKE else 100
questions_rows = []
for i, pair in enumerate(test_pairs[:N_CHOICES]):
    wrong = [pair["rejected"].strip(), test_pairs[i + 1]["rejected"].strip()]
    wrong = list(dict.fromkeys(w for w in wrong if w != pair["chosen"].strip()))
    answer = i % (len(wrong) + 1)  # the right ending's place varies
    endings = wrong[:answer] + [pair["chosen"].strip()] + wrong[answer:]
    questions_rows.append({"prompt": pair["prompt"], "choices": endings, "answer": answer})
choices_file = OUT / "dates_choices.jsonl"
choices_file.write_text("".join(json.dumps(q) + "\n" for q in questions_rows), encoding="utf-8")
print(choices_file.read_text().splitlines()[0])


# %%
@torch.no_grad()
def ending_scores(model, context, ending):
    """(summed, mean) log-probability of the tokens of " " + ending after the context's tokens."""
    ctx, end = enc.encode_ordinary(context), enc.encode_ordinary(" " + ending)
    ids = torch.tensor([ctx + end])
    logits, _ = model(ids[:, :-1])  # position t predicts token t + 1
    logps = torch.log_softmax(logits[0].float(), dim=-1)
    picked = logps[len(ctx) - 1 :].gather(1, ids[0, len(ctx) :, None]).squeeze(1)  # the ending's tokens
    return picked.sum().item(), picked.mean().item()


def score_by_hand(model, rows):
    acc = acc_norm = 0
    for q in rows:
        sums, means = zip(*(ending_scores(model, q["prompt"], e) for e in q["choices"]), strict=True)
        acc += int(np.argmax(sums)) == q["answer"]
        acc_norm += int(np.argmax(means)) == q["answer"]
    return acc / len(rows), acc_norm / len(rows)


mc = {}
for name, folder, scores_dir in (
    ("before SFT (stand-in)", STANDIN, "choices-base"),
    ("after SFT", SFT_DIR, "choices-sft"),
):
    cfg = EvaluateConfig(init_from=str(folder), out_dir=str(OUT / scores_dir),
                         choices=str(choices_file), device="cpu", dtype="float32")  # fmt: skip
    mc[name] = evaluate(cfg)
    hand = score_by_hand(models[name], questions_rows)
    print(f"{name:<22} by hand: acc {hand[0]:.1%}, acc_norm {hand[1]:.1%}")
    assert hand == (mc[name]["acc"], mc[name]["acc_norm"]), "the hand scores must equal gptkit's"
records = [json.loads(line) for line in (OUT / "choices-sft" / "choices_dates_choices.jsonl").read_text().splitlines()]
sums, means = zip(
    *(ending_scores(models["after SFT"], questions_rows[0]["prompt"], e) for e in questions_rows[0]["choices"]),
    strict=True,
)
print("first question, summed log-probs:", np.round(sums, 3), " gptkit:", np.round(records[0]["sum_logprobs"], 3))
assert np.allclose(sums, records[0]["sum_logprobs"], atol=1e-4) and np.allclose(
    means, records[0]["mean_logprobs"], atol=1e-4
)
if not SMOKE:
    assert mc["after SFT"]["acc"] > mc["before SFT (stand-in)"]["acc"], "SFT taught the model which answer is right"


# %% [markdown]
# ### Exercise 10.2: the score of an ending
#
# Write `my_ending_logps(logits, ids, n)`: `ids` is one row of token ids, a context followed by
# an ending of `n` tokens, and `logits` (len(ids), vocab) the model's output for that row
# (position t's logits predict token t + 1). Return the summed and the mean log-probability of
# the ending's `n` tokens, two floats: what `gptkit.choices` uses for acc and acc_norm.


# %%
def my_ending_logps(logits, ids, n):
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_ending_logps

check_ending_logps(my_ending_logps)

# %% [markdown]
# ## What you learned / try this
#
# - DPO learns from pairs: a response's reward is `beta * (log π - log ref)`, summed over its
#   tokens, and the loss `-log sigmoid(reward(chosen) - reward(rejected))` starts at ln 2, when
#   the policy is still its reference.
# - The reference is the model the run started from, frozen; gptkit computes its
#   log-probabilities once before training (or, with LoRA, switches the adapters off).
# - Beta sets how far the policy may move from the reference before the loss is satisfied.
# - A rising margin is not a better model: trained too long or too fast, DPO pushes rejected
#   answers down without keeping good ones up. Keep runs short and check generations.
# - The same log-probabilities answer multiple-choice questions without generating: acc by the
#   sum, acc_norm by the mean per token.
#
# Your own pairs: `python -m gptkit.prepare pairs.jsonl --name mypairs`, then
# `python -m gptkit.train config/finetune_task.py --dataset=mypairs --init_from=YOUR_SFT_EXPORT
# --learning_rate=5e-6 --dpo_beta=0.1` (docs/preference-tuning.md).
#
# Try this:
# - `dpo_average_logps=True` (LLMs-from-scratch's per-token mean): at the same beta, how far does
#   the policy drift now?
# - Score the real HellaSwag validation file with GPT-2 124M (`python -m gptkit.evaluate
#   --init_from=gpt2 --out_dir=scores --choices hellaswag_val.jsonl`): build-nanogpt reports
#   28.6% acc and 29.6% acc_norm.
# - Watch forgetting during DPO: `watch_choices=` the choices file above logs acc_norm at every
#   evaluation.
