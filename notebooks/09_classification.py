# %% [markdown]
# # 9 · Classification: GPT-2 as a classifier
#
# *Takes about 3 min on a 2-core CPU once the offline stand-in is built (the first notebook that
# needs it pretrains it: a few minutes more, once; measured top to bottom); its four training runs
# of 300 short steps are most of it. With GPT-2 124M the runs are shorter, each step far dearer.*
#
# The most common practical GPT-2 finetune is not a language model but a classifier: spam or
# not, the sentiment of a review, the topic of a question. The model reads a text and answers
# with one of a few labels. It is the same network with one small layer added, the *head*, and
# the same training loop with another loss. In this notebook you will:
#
# 1. see why a classifier reads the **last real token** of each text (causal attention; the
#    attention masks of a right-padded batch drawn), and measure what reading the first token or
#    the last padded position costs;
# 2. build the head by hand, a `Linear(n_embd, labels)`, and check it against gptkit's `score`;
# 3. decide what to train, the head only, the last block, everything, or LoRA: trainable
#    parameters against accuracy on one chart;
# 4. pad each batch to its longest text or to a fixed length: time and accuracy;
# 5. read accuracy curves, a confusion matrix and the texts the model gets wrong;
# 6. export the classifier for Hugging Face and check `pipeline("text-classification")` gives
#    gptkit's labels and probabilities, checked against `GPT2ForSequenceClassification`;
# 7. try your classifier in a small panel.
#
# The task ships with gptkit (`data/plays`, built by `data/plays/build.py` from tiny
# Shakespeare): which of five plays a speech comes from, Coriolanus, Measure for Measure, Romeo
# and Juliet, The Taming of the Shrew or The Winter's Tale. The speaker's name is not in the text.
#
# The base model is GPT-2 (124M) when its weights can be had. Offline, it is gptkit's **offline
# stand-in**: GPT-2's architecture at 4 layers and 128 wide, pretrained by gptkit for a few minutes
# on tiny Shakespeare's train split (notebook 3). It knows Shakespeare's words a little and English
# hardly at all; GPT-2's features are far richer, so with GPT-2 every accuracy below is higher,
# and the head alone gets much further (LLMs-from-scratch's ablations on SMS spam with GPT-2:
# head only 72%, last block 98%, all 97%, LoRA 97%). Where a claim holds at the stand-in's
# scale, the notebook asserts it; the claims that need GPT-2 are asserted only with GPT-2.

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
import json
import time

import matplotlib.pyplot as plt  # noqa: F401  (the inline backend shows the figures below)
import numpy as np
import torch
from IPython.display import Image, display
from torch.nn import functional as F

import gptkit
from gptkit.classify import evaluate_classifier, load_classifier, print_summary, probabilities
from gptkit.config import TrainConfig
from gptkit.data import LabelledBatches, open_labelled
from gptkit.export import export
from gptkit.lora import count_lora_params
from gptkit.metrics import read_metrics
from gptkit.model import GPT
from gptkit.notebook import load_or_standin, standin_path, task_file, workdir
from gptkit.plots import draw_attention_masks, plot_accuracy
from gptkit.prepare import prepare, print_counts
from gptkit.tokenizer import EOT_ID, get_encoding
from gptkit.train import train
from gptkit.widgets import ClassifierPanel

SMOKE = gptkit.smoke()
OUT = workdir("classification")  # everything this notebook writes goes here (GPTKIT_NOTEBOOK_OUT moves it)
enc = get_encoding()

base, loaded = load_or_standin("gpt2")
REAL = loaded == "gpt2"
BASE = "gpt2" if REAL else str(standin_path())  # what the runs' init_from names
# The stand-in was pretrained on 128-token windows: its later positions never trained.
BLOCK = min(256, base.config.block_size) if REAL else 128
print(f"base: {loaded}" if REAL else f"OFFLINE: GPT-2's weights cannot be had here; the base is the {loaded}")
base.crop_block_size(BLOCK)
base.eval()
print(f"{base.config.n_layer} layers, {base.config.n_embd} wide, {base.num_params(False) / 1e6:.2f}M parameters")

# %% [markdown]
# ## The task: labelled speeches
#
# `gptkit.prepare` reads labelled examples (`{"text": ..., "label": ...}` lines, or a CSV) and
# stores the texts as GPT-2 token ids with their label ids. Val and test are seeded, stratified
# draws: each play gives 10% of its speeches to each, so the splits keep the plays' proportions.
# The *majority baseline*, always answering the most common play, is the figure to beat.

# %%
rows = [json.loads(line) for line in task_file("plays", "speeches.jsonl").read_text(encoding="utf-8").splitlines()]
for row in rows[:: len(rows) // 3][:3]:
    print(f"[{row['label']}] {row['text'][:160]!r}")
data_dir = workdir("data", "plays")
meta = prepare(
    task_file("plays", "speeches.jsonl"), data_dir, val_fraction=0.1, test_fraction=0.1, block_size=BLOCK,
    progress=False,
)  # fmt: skip
print_counts(meta)
LABELS = meta["labels"]
train_counts = meta["splits"]["train"]["per_label"]
majority = max(train_counts.values()) / sum(train_counts.values())
print(f"majority baseline: {majority:.1%} (always {max(train_counts, key=train_counts.get)})")

# %% [markdown]
# ## Why the last *real* token
#
# GPT-2 turns every position into a vector of `n_embd` numbers, and its attention is **causal**:
# position t mixes in positions 0 … t only. So the first position has seen one token, and only
# the last one has seen the whole text. A classifier reads one vector per text, and it must be
# that last one.
#
# Texts differ in length, so a batch pads the shorter ones **on the right** to the longest. The
# pictures below are what each position attends to in a batch of three texts of 5, 3 and 7
# tokens. No real token attends to the padding after it (it lies in the future), so the row a
# classifier reads (dark) sees every real token and no padding: the padding changes nothing that
# is read. Only padding positions see padding, and nothing reads them, *unless* the classifier
# reads the last position of the padded batch: then a short text is classified from a padding
# token's view of it.

# %%
draw_attention_masks([5, 3, 7])

# %% [markdown]
# Now with numbers, on the base model: three speeches right-padded into one batch. The final
# hidden state at each text's last real token is the same as when the text runs alone, to float
# rounding; at the last position of the batch it is not (that is padding for the shorter texts).
# And the first position's state depends on the first token only: two texts that start with the
# same word have the same first state, whatever follows.

# %%
texts = [enc.encode_ordinary(rows[i]["text"])[:40] for i in (0, 1, 2)]
lengths = [len(t) for t in texts]
width = max(lengths)
x = torch.tensor([t + [EOT_ID] * (width - len(t)) for t in texts])  # right-padded with <|endoftext|>
last = torch.tensor(lengths) - 1
print("batch", tuple(x.shape), "lengths", lengths, "last real token at", last.tolist())
with torch.no_grad():
    h = base.hidden_states(x)  # (B, T, n_embd)
    for i, t in enumerate(texts):
        alone = base.hidden_states(torch.tensor([t]))[0]  # (T_i, n_embd)
        at_last = (h[i, last[i]] - alone[-1]).abs().max().item()
        at_end = (h[i, -1] - alone[-1]).abs().max().item()
        print(
            f"text {i}: {len(t):2d} tokens; last real token vs alone {at_last:.1e}; last padded position {at_end:.2f}"
        )
        assert at_last < 1e-4, "right padding changes nothing at the last real token"
        assert len(t) == width or at_end > 1e-2, "the last padded position is not the text's last token"
    same_start = [enc.encode_ordinary(s) for s in ("My lord, I will go", "My lord, the king is dead")]
    firsts = [base.hidden_states(torch.tensor([s]))[0, 0] for s in same_start]
    assert torch.equal(firsts[0], firsts[1]), "the first position has seen only the first token"
print("the first position of 'My lord, I will go' and 'My lord, the king is dead': the same state")

# %% [markdown]
# ### Exercise 9.1: the last real token's index
#
# A Hugging Face tokenizer gives a right-padded batch an `attention_mask` (batch, time): 1 on a
# real token, 0 on padding. Write `my_last_index(attention_mask)` that returns, for each row, the
# index of its last real token, as a (batch,) int64 tensor: what gptkit passes to
# `model(x, last=...)`. The check compares with the positions gptkit's batches give the model.


# %%
def my_last_index(attention_mask: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_last_index

check_last_index(my_last_index)

# %% [markdown]
# ## Which position to read, measured
#
# Keep the base frozen and train only a head on its hidden states read at three places: the
# first token, the last real token, and the last position of batches of 16 padded to their
# longest. With the base frozen the hidden states are computed once, and training a head on them
# takes a second (a *linear probe*). Same data, same head, same steps: only the position differs.


# %%
def read_positions(split: str, limit: int | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Final hidden states of a split's texts (cut to BLOCK) at three positions, and their labels."""
    data = open_labelled(data_dir, split)
    n = len(data.labels) if limit is None else min(limit, len(data.labels))
    ends = zip(data.offsets[:n], data.offsets[1 : n + 1], strict=True)
    ids = [data.tokens[a:b][:BLOCK].astype(np.int64) for a, b in ends]
    out = {"first token": [], "last real token": [], "last padded position": []}
    with torch.no_grad():
        for start in range(0, n, 16):  # batches of 16 in file order, each padded to its longest
            batch = ids[start : start + 16]
            x = torch.full((len(batch), max(map(len, batch))), EOT_ID)
            for row, t in enumerate(batch):
                x[row, : len(t)] = torch.from_numpy(t)
            h = base.hidden_states(x)
            last = torch.tensor([len(t) - 1 for t in batch])
            out["first token"].append(h[:, 0])
            out["last real token"].append(h[torch.arange(len(batch)), last])
            out["last padded position"].append(h[:, -1])
    return {k: torch.cat(v) for k, v in out.items()}, torch.from_numpy(data.labels[:n].astype(np.int64))


train_h, train_y = read_positions("train", limit=256 if SMOKE else None)
val_h, val_y = read_positions("val")
print({k: tuple(v.shape) for k, v in train_h.items()}, "labels", tuple(train_y.shape))

# %% [markdown]
# ## The head, by hand
#
# The head is one `Linear(n_embd, number of labels)` without bias, applied to the final hidden
# state at the last real token: it gives one score (a *logit*) per label, and softmax turns them
# into probabilities. gptkit calls it `score`, as Hugging Face's `GPT2ForSequenceClassification`
# does, and `GPT.add_classifier(n)` gives a language model a fresh one. With the same weights, our
# head on our hidden states must give what `model(x, last=...)` gives. (gptkit's forward computes
# the last block at the read position only: the rest of the last block is never read.)

# %%
torch.manual_seed(0)
head = torch.nn.Linear(base.config.n_embd, len(LABELS), bias=False)
classifier = GPT(dataclasses.replace(base.config))
classifier.load_state_dict(base.state_dict())
classifier.add_classifier(len(LABELS))
classifier.eval()
with torch.no_grad():
    head.weight.copy_(classifier.score.weight)
    ours = head(classifier.hidden_states(x)[torch.arange(len(x)), last])  # (B, labels)
    theirs = classifier(x, last=last)[0]
print("head", tuple(head.weight.shape), "logits", tuple(ours.shape))
torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
print("our head on the last real token's state = gptkit's score output")

# %% [markdown]
# ### Exercise 9.2: the classification loss and accuracy
#
# Training minimises the cross-entropy of each text's label, -log p(label), averaged over the
# texts; the accuracy is the share of texts whose highest logit is their label. Write
# `my_loss_and_accuracy(logits, labels)`: `logits` (batch, labels), `labels` (batch,) label ids;
# return the mean loss and the accuracy, two numbers. The check compares with
# `gptkit.objectives.Classification`, the objective `gptkit.train` uses for classifiers.


# %%
def my_loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_classification_loss

check_classification_loss(my_loss_and_accuracy)

# %% [markdown]
# Now the probe: the same head trained on the three positions' states, full batch, with AdamW.


# %%
def probe(train_states: torch.Tensor, val_states: torch.Tensor, steps: int = 40 if SMOKE else 300) -> float:
    """Val accuracy of a head trained on frozen states (a linear probe)."""
    torch.manual_seed(0)
    head = torch.nn.Linear(train_states.size(1), len(LABELS), bias=False)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(steps):
        loss = F.cross_entropy(head(train_states), train_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (head(val_states).argmax(-1) == val_y).float().mean().item()


read_at = {where: probe(train_h[where], val_h[where]) for where in train_h}
for where, accuracy in read_at.items():
    print(f"{where:<22} val accuracy {accuracy:.1%}")
plt.figure(figsize=(6, 3))
plt.barh(list(read_at), list(read_at.values()), color=["gray", "C0", "C3"])
plt.axvline(majority, color="black", ls=":", label="majority baseline")
plt.xlabel("val accuracy of a head on the frozen base")
plt.legend()
plt.gca().invert_yaxis()
if REAL and not SMOKE:
    assert read_at["last real token"] > read_at["first token"], "the last real token has seen the whole text"

# %% [markdown]
# With GPT-2, the last real token's state carries the most of the text: the first token's has
# seen one word, and the last padded position's sees the text through padding (LLMs-from-scratch
# measured the finetuned versions on SMS spam: 98.3% at the last real token, 95.0% at the last
# padded position, 75.0% at the first token). The offline stand-in's frozen states carry little
# of the play at any position: its three bars sit near the majority baseline, and the gaps between
# them are small and change order with the probe's learning rate. That is the stand-in's size (4 layers, a few minutes
# of pretraining), not the mechanism, which the cells above showed holds for any GPT-2-shaped
# model; and it is why the next sections train more than a head.

# %% [markdown]
# ## What to train: head, last block, all, or LoRA
#
# `gptkit.train` trains a classifier when the dataset is one (`kind: classification` in its
# `meta.json`): a new head, seeded, and the cross-entropy of each text's label, every text
# weighing the same. `train_layers` says what learns:
#
# - `head`: the head only, 5 × n_embd numbers; the features stay the base's;
# - `last_block`: the last block, the final LayerNorm and the head (LLMs-from-scratch's recipe);
#   the frozen blocks below get no backward pass at all, so it is also cheap;
# - `all`: every weight, the embeddings included;
# - LoRA (`lora_rank=8`): low-rank adapters in every block, and the head in full.
#
# Four short runs on the same examples, steps and learning rate (higher for the head alone and for
# LoRA, whose few new weights start from nothing), each evaluated on the same val texts (all 326
# with the stand-in; 128 of them, spread over the split, with GPT-2, whose steps cost more).

# %%
steps = 12 if SMOKE else (60 if REAL else 300)
recipe = dict(
    dataset="plays", data_root=str(data_dir.parent), init_from=BASE, block_size=BLOCK, batch_size=16,
    gradient_accumulation_steps=1, max_iters=steps, eval_interval=steps // 3,
    eval_iters=4 if SMOKE else (8 if REAL else 21), learning_rate=1e-4 if REAL else 1e-3, decay_lr=False,
    dropout=0.0, always_save_checkpoint=False, overwrite_out_dir=True, progress=False, device="auto",
)  # fmt: skip
choices = {
    "head": dict(train_layers="head", learning_rate=10 * recipe["learning_rate"]),
    "last block": dict(train_layers="last_block"),
    "all": dict(train_layers="all"),
    "LoRA r=8": dict(lora_rank=8, lora_alpha=16.0, learning_rate=10 * recipe["learning_rate"]),
}
configs = {
    name: TrainConfig(**(recipe | {"out_dir": str(OUT / name.replace(" ", "_"))} | kw)) for name, kw in choices.items()
}
timings = {}
for name, cfg in configs.items():
    print(f"--- {name}")
    start = time.perf_counter()
    train(cfg)
    timings[name] = time.perf_counter() - start
runs = {name: read_metrics(cfg.out_dir, name=name) for name, cfg in configs.items()}

# %% [markdown]
# How many parameters each choice trains, counted from the model, against the best val accuracy
# each run reached (the run headers above print the same counts):

# %%
score = base.config.n_embd * len(LABELS)  # the head
trainable = {
    "head": score,
    "last block": sum(p.numel() for p in [*base.transformer.h[-1].parameters(), *base.transformer.ln_f.parameters()])
    + score,
    "all": base.num_params(non_embedding=False) + score,
    "LoRA r=8": count_lora_params(base.config, 8) + score,
}
best = {name: max(r["val_accuracy"] for r in run.evals) for name, run in runs.items()}
print("clearly above the majority baseline (5 points or more):", [n for n in best if best[n] > majority + 0.05])
for name in configs:
    print(
        f"{name:<11} {trainable[name]:>12,} parameters train; best val accuracy {best[name]:.1%}; {timings[name]:.0f} s"
    )
plt.figure(figsize=(7, 4))
for name in configs:
    plt.scatter(trainable[name], best[name], s=60)
    plt.annotate(f" {name}", (trainable[name], best[name]))
plt.axhline(majority, color="black", ls=":", label="majority baseline")
plt.xscale("log")
plt.xlabel("trainable parameters (log scale)")
plt.ylabel("best val accuracy")
plt.title(f"what to train: {steps} steps of 16 speeches on the {'GPT-2' if REAL else 'offline stand-in'} base")
plt.legend()
if not SMOKE:
    assert max(best.values()) > majority + 0.05, "a short finetune beats the majority baseline clearly"
if REAL and not SMOKE:
    assert best["last block"] > best["head"], "GPT-2's features need adapting: the last block beats the head alone"

# %% [markdown]
# With GPT-2, the last block and the head get most of what training everything gets, for a
# fraction of the parameters, and LoRA comes close with fewer still (LLMs-from-scratch on SMS spam:
# head only 72%, last block 98%, all 97%, LoRA 97%). With the offline stand-in, look at where the
# points sit against the baseline: its frozen blocks know little about the plays, so the choices
# that keep them frozen have little to build on in a short run, while training every weight also
# trains the token embeddings, the names and words of each play. The ranking of the
# cheap choices is a property of a good pretrained base, not of classification.

# %% [markdown]
# ## Accuracy curves
#
# Every evaluation logs train and val loss **and accuracy** to `metrics.jsonl` (the eval lines
# printed above). `best_by="accuracy"` (the default for classifiers) keeps the checkpoint of the
# best val accuracy in `ckpt.pt`, and early stopping follows it.

# %%
plot_accuracy(*runs.values())

# %% [markdown]
# ## Padding: to the longest in the batch, or to a fixed length
#
# gptkit pads each micro-batch to its longest text, and sorts a step's texts by length before
# dealing them into micro-batches, so texts of similar length share one. Padding every text to
# `block_size` instead (what a fixed-shape pipeline does) computes the same logits at the last
# real token, since no real token sees the padding, so the accuracy is the same; it only costs
# time. Here, one forward and backward pass of the last-block setup over the val texts, in
# batches of similar length as a training step makes them, in both shapes:

# %%
model = GPT(dataclasses.replace(base.config))
model.load_state_dict(base.state_dict())
model.add_classifier(len(LABELS))
for p in model.parameters():
    p.requires_grad_(False)
for module in (model.transformer.h[-1], model.transformer.ln_f, model.score):
    module.requires_grad_(True)
val = LabelledBatches(data_dir, "val", batch_size=16, block_size=BLOCK)
by_length = np.argsort(val.lengths, kind="stable")  # as a training step deals its texts: similar lengths together
batches = [val.batch(rows) for rows in np.array_split(by_length, len(by_length) // 16)][:: 4 if SMOKE else 1]


def pass_over(batches: list, fixed: bool) -> tuple[float, torch.Tensor]:
    """Seconds for a forward and backward pass over the batches, and the predicted labels."""
    predicted = []
    start = time.perf_counter()
    for x, last, labels in batches:
        if fixed:
            x = F.pad(x, (0, BLOCK - x.size(1)), value=EOT_ID)  # every text padded to block_size
        logits, loss = model(x, labels, last=last)
        loss.backward()
        predicted.append(logits.argmax(-1))
    return time.perf_counter() - start, torch.cat(predicted)


pass_over(batches[:1], fixed=False)  # warm up
longest_s, longest_pred = pass_over(batches, fixed=False)
fixed_s, fixed_pred = pass_over(batches, fixed=True)
widths = [x.size(1) for x, _, _ in batches]
print(f"padded to the longest: {np.mean(widths):.0f} positions a text on average, {longest_s:.2f} s")
print(f"padded to {BLOCK}:        {BLOCK} positions a text, {fixed_s:.2f} s ({fixed_s / longest_s:.1f}x)")
assert torch.equal(longest_pred, fixed_pred), "the same predictions: the padding is never read"
assert fixed_s > longest_s, "padding to block_size computes more positions"
plt.figure(figsize=(6, 2.5))
plt.barh([f"to the longest (~{np.mean(widths):.0f})", f"to block_size ({BLOCK})"], [longest_s, fixed_s])
plt.xlabel(f"seconds for {len(widths)} batches, forward + backward; the same predictions")
plt.gca().invert_yaxis()

# %% [markdown]
# LLMs-from-scratch's ablation found padding to 1,024 tokens *lost* accuracy (78% against 98%):
# its classifier reads the last position of the batch, which is padding for nearly every text
# once everything is padded to 1,024. Read at the last real token, padding costs time only.

# %% [markdown]
# ## Scores on the test split: per label, the confusion matrix, the mistakes
#
# `python -m gptkit.evaluate OUT_DIR --split=test` on a classification run prints accuracy,
# per-label precision, recall and F1, macro-F1 and the majority baseline, and writes
# `eval_test.jsonl` (each text, its label, the prediction and every probability) and
# `confusion_test.png`. Here the same through its functions, on the best checkpoint of the run
# that reached the best val accuracy above.

# %%
RUN = configs[max(best, key=best.get)].out_dir
print("scoring", RUN)
trained, run_labels = load_classifier(RUN)  # the best checkpoint, by val accuracy
trained.eval()
summary = evaluate_classifier(trained, run_labels, data_dir, "test", OUT, batch_size=16)
print_summary(summary, "test")
if not SMOKE:
    assert summary["accuracy"] > summary["majority_baseline"] + 0.05, "the finetune beats always saying one play"
display(Image(filename=str(OUT / "confusion_test.png")))

# %% [markdown]
# Rows are the true play, columns the predicted one: the diagonal is right. Below, the texts it
# got wrong with the most confidence.

# %%
records = [json.loads(line) for line in (OUT / "eval_test.jsonl").read_text(encoding="utf-8").splitlines()]
wrong = [r for r in records if r["label"] != r["predicted"]]
print(f"{len(wrong)} of {len(records)} test speeches misclassified")
for r in sorted(wrong, key=lambda r: -r["probabilities"][r["predicted"]])[:5]:
    said = r["probabilities"][r["predicted"]]
    print(f"- {r['label']} read as {r['predicted']} ({said:.0%}): {r['text'][:110]!r}")

# %% [markdown]
# ### Exercise 9.3: per-label precision, recall and F1
#
# Accuracy hides which labels suffer. For one label: **precision** is, of the texts predicted
# with it, the share that have it; **recall** is, of the texts that have it, the share predicted
# with it; **F1** is their harmonic mean, 2PR / (P + R). Write `my_label_scores(truth, predicted,
# labels)` (two lists of label names and the list of all labels) returning `{label: (precision,
# recall, f1)}`; a label never predicted has precision 0 (not a division by zero), and F1 is 0
# when both are. The check compares with `gptkit.classify.summarize`, what `gptkit.evaluate`
# prints.


# %%
def my_label_scores(truth: list[str], predicted: list[str], labels: list[str]) -> dict:
    raise NotImplementedError  # your code here


# %%
from gptkit.exercises import check_label_scores

check_label_scores(my_label_scores)

# %% [markdown]
# ## Export for Hugging Face, and `pipeline("text-classification")`
#
# `python -m gptkit.export OUT_DIR DEST` writes a classifier run as a `GPT2ForSequenceClassification`
# directory: the weights (GPT-2's Conv1D layout), `id2label`, `pad_token_id` and the tokenizer
# padding with `<|endoftext|>`. Loaded by `transformers`, with the same weights, it must give
# gptkit's logits on a right-padded batch (transformers finds each row's last real token from
# the pad id); and `pipeline("text-classification")` must give gptkit's label and probabilities.

# %%
from transformers import GPT2ForSequenceClassification, pipeline

dest = OUT / "exported"
if dest.exists():  # from an earlier run of this notebook: export writes only to new or empty folders
    for f in dest.iterdir():
        f.unlink()
export(RUN, dest)
print("exported to", dest, sorted(p.name for p in dest.iterdir()))
hf = GPT2ForSequenceClassification.from_pretrained(dest).eval()
print("id2label", hf.config.id2label, "pad_token_id", hf.config.pad_token_id)
sample = [r["text"] for r in records[:8]]
ids = [enc.encode_ordinary(t)[:BLOCK] for t in sample]
width = max(map(len, ids))
x = torch.tensor([t + [EOT_ID] * (width - len(t)) for t in ids])
last = torch.tensor([len(t) - 1 for t in ids])
with torch.no_grad():
    theirs = hf(input_ids=x).logits
    ours = trained(x, last=last)[0]
torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
print(
    f"GPT2ForSequenceClassification's logits = gptkit's on a padded batch of {len(x)} (widths {sorted(map(len, ids))})"
)

classify_pipe = pipeline("text-classification", model=str(dest), top_k=None, device="cpu")
answers = classify_pipe(sample, batch_size=4)  # batched: padded as above
gptkit_probs = probabilities(trained, ids)
for text, answer, p in zip(sample, answers, gptkit_probs, strict=True):
    top = max(answer, key=lambda d: d["score"])
    assert top["label"] == run_labels[int(p.argmax())]
    for d in answer:
        assert abs(d["score"] - p[run_labels.index(d["label"])]) < 1e-4, (text, d)
    print(f"{top['label']:<24} {top['score']:.3f}  {text[:60]!r}")
print("pipeline: the same labels and probabilities as gptkit.classify")

# %% [markdown]
# ## Try your classifier
#
# A text box and a button over that run's best checkpoint: each click is `python -m
# gptkit.classify OUT_DIR "TEXT"`, and shows every play's probability. The cell classifies once
# with a starting text, so it works without a browser too.

# %%
panel = ClassifierPanel(RUN, text="O Romeo, Romeo, wherefore art thou Romeo?")
display(panel.widget)
answer = panel.classify()
print(answer)
assert abs(sum(answer.values()) - 1) < 1e-5 and list(answer) == sorted(answer, key=answer.get, reverse=True)

# %% [markdown]
# ## What you learned / try this
#
# - A GPT-2 classifier is GPT-2 plus one `Linear(n_embd, labels)`, the head `score`, read at the
#   **last real token**: with causal attention it is the only position that has seen the whole
#   text, and with right padding no real token sees the padding.
# - Reading the first token sees one word; reading the last position of a padded batch reads
#   padding for the shorter texts.
# - `train_layers` trades trainable parameters for accuracy: the head alone is cheapest and
#   weakest, the last block is LLMs-from-scratch's recipe, LoRA trains few parameters in every
#   block.
# - Padding to the longest in the batch, not to `block_size`, saves time and changes nothing read.
# - `gptkit.evaluate` gives per-label scores and the confusion matrix; `gptkit.export` gives a
#   `GPT2ForSequenceClassification` that `pipeline("text-classification")` loads.
#
# Try this:
# - Run the last-block setup for longer (`max_iters`) or with `best_by="loss"`, and compare the
#   curves.
# - Your own task, from a terminal in a clone (docs/classification.md):
#   `python -m gptkit.prepare reviews.csv --name reviews --test-fraction 0.1`, then
#   `python -m gptkit.train config/finetune_classifier.py --dataset=reviews`.
#
# Next: **10_preference_tuning**, tuning a model on pairs of answers.
