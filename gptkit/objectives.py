"""What training minimizes and evaluation reports: one small class per objective.

The loop (`gptkit.train`) knows nothing of what is being learned. For each micro-batch it calls
the run's objective, `terms = objective(net, batch)`, and gets back:

- `terms.loss`: the batch's loss *summed* over its units (target tokens for a language model,
  examples for a classifier, pairs for preference tuning). A step divides each micro-batch's sum
  by the whole step's count of units (`Step.num_targets`), so every unit weighs the same wherever
  it lands, in any micro-batch and on any process.
- `terms.sums`: what an evaluation adds up over its batches and processes: always `"loss"` and
  `"count"`, and whatever else the objective's metrics need (`SUMS` names them, in order).
- `terms.work`: what the forward pass computed (`Work`): the batch's real tokens (`tokens_seen`),
  the token positions the model computed (tokens/s), and what MFU's attention share needs.

After an evaluation, `objective.metrics(sums)` turns the added-up sums into the figures a run
prints and logs (`{"loss": ..., "ppl": ...}` for a language model), and `objective.score(metrics)`
says which of them picks the best checkpoint (lower is better; a checkpoint keeps it as
`best_val_loss`). `objective.followed` names that figure for the user ("val accuracy"), and
`objective.unscore(score)` turns a score back into it.

An objective that needs more than the batch (DPO's reference model) is given it when it is made.

With `unpad` (`gptkit.train` sets it), an objective has the model compute the real tokens of a
right-padded batch only (`gptkit.unpadding`): the same numbers up to float rounding, less work.
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from gptkit import lora, unpadding
from gptkit.data import PairBatches
from gptkit.metrics import perplexity
from gptkit.model import IGNORE_INDEX


class Work(NamedTuple):
    """What the forward pass over a micro-batch computed: the loop adds these up over a step."""

    tokens: int  # the batch's real tokens, padding left out: what `tokens_seen` counts
    positions: int  # token positions computed: the real tokens of an unpadded batch, all of a padded one
    attended: int  # the sum over those positions of their row's computed length: attention's FLOPs
    forward_only: int = 0  # positions a further pass computed without backward (DPO's reference)


def work_of(lengths: torch.Tensor, width: int, unpad: bool) -> Work:
    """The `Work` of a pass over rows of `width` whose first `lengths` (B,) positions are needed:
    only those where `gptkit.unpadding` computes the batch unpadded, else every position."""
    tokens, squares = torch.stack([lengths.sum(), (lengths * lengths).sum()]).tolist()  # one wait, not two
    if unpad and unpadding.worth_unpadding(tokens, len(lengths), width):
        return Work(tokens, tokens, squares)
    return Work(tokens, len(lengths) * width, len(lengths) * width * width)


class Terms(NamedTuple):
    loss: torch.Tensor  # summed over the batch's units; backpropagated
    sums: dict[str, torch.Tensor]  # for evaluation: "loss", "count" and the objective's other SUMS
    work: Work  # what the forward pass computed


class LanguageModelling:
    """Next-token cross-entropy: every target token counts once (a stream, or example responses)."""

    name = "language modelling"
    unit = "target tokens"
    SUMS = ("loss", "count")

    def __init__(self, unpad: bool = False):
        self.unpad = unpad

    def __call__(self, net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> Terms:
        x, y = batch
        lengths = unpadding.target_lengths(y)
        rows = unpadding.rows_to_compute(lengths, y.size(1)) if self.unpad else None
        work = work_of(lengths, y.size(1), self.unpad)  # before the forward pass: no wait for it
        # [1]: the logits are not kept: no name holds this micro-batch's (N x 50257) logits
        loss = net(x, y, reduction="sum", rows=rows)[1]
        return Terms(loss, {"loss": loss.detach(), "count": (y != IGNORE_INDEX).sum()}, work)

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["loss"] / sums["count"]
        return {"loss": loss, "ppl": perplexity(loss)}

    followed = "val loss"  # what `score` follows, as a user reads it

    def score(self, metrics: dict[str, float]) -> float:
        """What the best checkpoint and early stopping follow (lower is better): the loss."""
        return metrics["loss"]

    def unscore(self, score: float) -> float:
        """The followed figure back from its score (`best_val_loss`): here the val loss itself."""
        return score

    def eval_line(self, metrics: dict[str, dict[str, float]]) -> str:
        """The figures of one evaluation, as the run prints them after "step N: "."""
        train, val = metrics["train"], metrics["val"]
        return f"train loss {train['loss']:.4f}, val loss {val['loss']:.4f} (perplexity {val['ppl']:.2f})"


# --- preference tuning: DPO ------------------------------------------------------------------
def sequence_logps(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, average: bool = False, unpad: bool = False
) -> torch.Tensor:
    """log p(response | prompt) of each row of `x`: summed over its targets (those of `y` that are
    not IGNORE_INDEX), or with `average` their mean. The forward pass computes logits for those
    positions only: prompts and padding cost no output layer (with `unpad`, padding no block either)."""
    real = unpadding.rows_for_targets(y) if unpad else None
    _, token_losses = net(x, y, reduction="none", rows=real)  # -log p of each target, in row-major order
    keep = y != IGNORE_INDEX
    rows = keep.nonzero()[:, 0]
    logps = torch.zeros(len(x), device=x.device, dtype=torch.float32).index_add(0, rows, -token_losses.float())
    return logps / keep.sum(1).clamp(min=1) if average else logps


class AdaptersOff:
    """A LoRA run's reference: its own model with the adapters skipped, without dropout; no copy."""

    def __init__(self, model: torch.nn.Module, unpad: bool = False):
        self.model, self.unpad = model, unpad

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor, average: bool) -> torch.Tensor:
        training = self.model.training
        self.model.eval()
        try:
            with lora.adapters_off(self.model):
                return sequence_logps(self.model, x, y, average, self.unpad)
        finally:
            self.model.train(training)


@torch.no_grad()
def reference_logps(
    model: torch.nn.Module, data: PairBatches, average: bool, autocast: Callable, unpad: bool = False
) -> np.ndarray:
    """(num_pairs, 2): `model`'s log-probabilities of every pair's chosen and rejected response,
    without dropout: the reference computed once, before the first step changes the model."""
    training = model.training
    model.eval()
    out = np.zeros((data.num_examples, 2), dtype=np.float32)
    for indices in data.eval_indices():
        x, y, _ = data.batch(indices)
        with autocast():
            logps = sequence_logps(model, x, y, average, unpad)
        out[indices] = logps.view(2, -1).T.cpu().numpy()
    model.train(training)
    return out


class Preference:
    """DPO (Rafailov et al. 2023), per pair:
    -log sigmoid(beta * ((log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x)))).

    A batch is `(x, y, reference)`: chosen rows then rejected rows, one forward pass for both.
    `reference` holds the reference model's log-probabilities of those rows when they were
    computed ahead; otherwise `reference_model(x, y, average)` computes them (AdaptersOff).
    The rewards are beta * (log pi - log ref); a pair is ranked right when the chosen one's is the
    higher (a tie, as at the first step, is not). Each pair weighs the same: the unit is the pair.
    """

    name = "preference (DPO)"
    unit = "pairs"
    SUMS = ("loss", "count", "correct", "chosen_reward", "rejected_reward")

    def __init__(
        self,
        beta: float = 0.1,
        average: bool = False,
        reference_model: Callable | None = None,
        unpad: bool = False,
    ):
        self.beta, self.average, self.reference_model, self.unpad = beta, average, reference_model, unpad

    def __call__(self, net: torch.nn.Module, batch: tuple) -> Terms:
        x, y, ref = batch
        work = work_of(unpadding.target_lengths(y), y.size(1), self.unpad)
        logps = sequence_logps(net, x, y, self.average, self.unpad)
        if ref is None:  # the reference's forward pass, over the same rows, runs in this step
            ref = self.reference_model(x, y, self.average)
            work = work._replace(forward_only=work.positions)
        chosen, rejected = (self.beta * (logps - ref.float())).chunk(2)
        loss = -F.logsigmoid(chosen - rejected).sum()
        sums = {
            "loss": loss.detach(),
            "count": torch.tensor(float(len(chosen)), device=x.device),
            "correct": (chosen > rejected).sum(),
            "chosen_reward": chosen.detach().sum(),
            "rejected_reward": rejected.detach().sum(),
        }
        return Terms(loss, sums, work)

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = sums["count"]
        chosen, rejected = sums["chosen_reward"] / n, sums["rejected_reward"] / n
        return {
            "loss": sums["loss"] / n,
            "reward_accuracy": sums["correct"] / n,
            "chosen_reward": chosen,
            "rejected_reward": rejected,
            "margin": chosen - rejected,
        }

    followed = "val DPO loss"

    def score(self, metrics: dict[str, float]) -> float:
        """The best checkpoint is the one of the lowest val DPO loss."""
        return metrics["loss"]

    def unscore(self, score: float) -> float:
        return score

    def eval_line(self, metrics: dict[str, dict[str, float]]) -> str:
        train, val = metrics["train"], metrics["val"]
        return (
            f"train DPO loss {train['loss']:.4f}, val DPO loss {val['loss']:.4f} (reward accuracy "
            f"{val['reward_accuracy']:.1%}, chosen {val['chosen_reward']:+.4f}, "
            f"rejected {val['rejected_reward']:+.4f}, margin {val['margin']:.4f})"
        )


# --- classification ---------------------------------------------------------------------------
class Classification:
    """Cross-entropy of each example's label, read at its last real token: every example counts once.

    `best_by` says what the best checkpoint and early stopping follow: "accuracy" (the default:
    what a classifier is for) or "loss" (val loss, smoother on a small val split).
    """

    name = "classification"
    unit = "examples"
    SUMS = ("loss", "count", "correct")

    def __init__(self, best_by: str = "accuracy", unpad: bool = False):
        self.best_by, self.unpad = best_by, unpad

    def __call__(self, net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> Terms:
        x, last, labels = batch
        rows = unpadding.rows_to_compute(last + 1, x.size(1)) if self.unpad else None
        work = work_of(last + 1, x.size(1), self.unpad)
        logits, loss = net(x, labels, reduction="sum", last=last, rows=rows)
        correct = (logits.argmax(-1) == labels).sum()
        return Terms(
            loss,
            {"loss": loss.detach(), "count": torch.tensor(len(labels), device=labels.device), "correct": correct},
            work,
        )

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {"loss": sums["loss"] / sums["count"], "accuracy": sums["correct"] / sums["count"]}

    @property
    def followed(self) -> str:
        return "val accuracy" if self.best_by == "accuracy" else "val loss"

    def score(self, metrics: dict[str, float]) -> float:
        """What the best checkpoint and early stopping follow (lower is better): 1 - accuracy, or the loss."""
        return 1.0 - metrics["accuracy"] if self.best_by == "accuracy" else metrics["loss"]

    def unscore(self, score: float) -> float:
        """The followed figure back from its score: the accuracy from 1 - accuracy, or the loss."""
        return 1.0 - score if self.best_by == "accuracy" else score

    def eval_line(self, metrics: dict[str, dict[str, float]]) -> str:
        train, val = metrics["train"], metrics["val"]
        return (
            f"train loss {train['loss']:.4f}, val loss {val['loss']:.4f}, "
            f"train accuracy {train['accuracy']:.2%}, val accuracy {val['accuracy']:.2%}"
        )


def for_dataset(
    kind: str,
    *,
    best_by: str = "accuracy",
    beta: float = 0.1,
    average: bool = False,
    reference_model: Callable | None = None,
    unpad: bool = False,
) -> LanguageModelling | Classification | Preference:
    """The objective a dataset of this `kind` (its meta.json) trains with: a classifier's follows
    `best_by`; a preference dataset's DPO objective takes beta, the per-token-mean option and
    (LoRA) its reference model. `unpad`: compute right-padded batches' real tokens only."""
    if kind == "classification":
        return Classification(best_by, unpad)
    if kind == "preference":
        return Preference(beta, average, reference_model, unpad)
    return LanguageModelling(unpad)
