"""What training minimizes and evaluation reports: one small class per objective.

The loop (`gptkit.train`) knows nothing of what is being learned. For each micro-batch it calls
the run's objective, `terms = objective(net, batch)`, and gets back:

- `terms.loss`: the batch's loss *summed* over its units (target tokens for a language model,
  examples for a classifier, pairs for preference tuning). A step divides each micro-batch's sum
  by the whole step's count of units (`Step.num_targets`), so every unit weighs the same wherever
  it lands, in any micro-batch and on any process.
- `terms.sums`: what an evaluation adds up over its batches and processes: always `"loss"` and
  `"count"`, and whatever else the objective's metrics need (`SUMS` names them, in order).
- `terms.positions`: the token positions the forward pass computed, for tokens/s and MFU.

After an evaluation, `objective.metrics(sums)` turns the added-up sums into the figures a run
prints and logs (`{"loss": ..., "ppl": ...}` for a language model), and `objective.score(metrics)`
says which of them picks the best checkpoint (lower is better).
"""

from typing import NamedTuple

import torch

from gptkit.metrics import perplexity
from gptkit.model import IGNORE_INDEX


class Terms(NamedTuple):
    loss: torch.Tensor  # summed over the batch's units; backpropagated
    sums: dict[str, torch.Tensor]  # for evaluation: "loss", "count" and the objective's other SUMS
    positions: int  # token positions computed


class LanguageModelling:
    """Next-token cross-entropy: every target token counts once (a stream, or example responses)."""

    name = "language modelling"
    unit = "target tokens"
    SUMS = ("loss", "count")

    def __call__(self, net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> Terms:
        x, y = batch
        # [1]: the logits are not kept: no name holds this micro-batch's (N x 50257) logits
        loss = net(x, y, reduction="sum")[1]
        return Terms(loss, {"loss": loss.detach(), "count": (y != IGNORE_INDEX).sum()}, x.numel())

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["loss"] / sums["count"]
        return {"loss": loss, "ppl": perplexity(loss)}

    def score(self, metrics: dict[str, float]) -> float:
        """What the best checkpoint and early stopping follow (lower is better): the loss."""
        return metrics["loss"]

    def eval_line(self, metrics: dict[str, dict[str, float]]) -> str:
        """The figures of one evaluation, as the run prints them after "step N: "."""
        train, val = metrics["train"], metrics["val"]
        return f"train loss {train['loss']:.4f}, val loss {val['loss']:.4f} (perplexity {val['ppl']:.2f})"


class Classification:
    """Cross-entropy of each example's label, read at its last real token: every example counts once.

    `best_by` says what the best checkpoint and early stopping follow: "accuracy" (the default:
    what a classifier is for) or "loss" (val loss, smoother on a small val split).
    """

    name = "classification"
    unit = "examples"
    SUMS = ("loss", "count", "correct")

    def __init__(self, best_by: str = "accuracy"):
        self.best_by = best_by

    def __call__(self, net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> Terms:
        x, last, labels = batch
        logits, loss = net(x, labels, reduction="sum", last=last)
        correct = (logits.argmax(-1) == labels).sum()
        return Terms(
            loss,
            {"loss": loss.detach(), "count": torch.tensor(len(labels), device=labels.device), "correct": correct},
            x.numel(),
        )

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {"loss": sums["loss"] / sums["count"], "accuracy": sums["correct"] / sums["count"]}

    def score(self, metrics: dict[str, float]) -> float:
        """What the best checkpoint and early stopping follow (lower is better): 1 - accuracy, or the loss."""
        return 1.0 - metrics["accuracy"] if self.best_by == "accuracy" else metrics["loss"]

    def eval_line(self, metrics: dict[str, dict[str, float]]) -> str:
        train, val = metrics["train"], metrics["val"]
        return (
            f"train loss {train['loss']:.4f}, val loss {val['loss']:.4f}, "
            f"train accuracy {train['accuracy']:.2%}, val accuracy {val['accuracy']:.2%}"
        )


def for_dataset(kind: str, best_by: str = "accuracy") -> LanguageModelling | Classification:
    """The objective a dataset of this `kind` (its meta.json) trains with."""
    if kind == "classification":
        return Classification(best_by)
    return LanguageModelling()
