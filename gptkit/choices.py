"""Scoring by likelihood: multiple-choice questions answered by the log-probability of each ending.

A choices file is JSONL, one question a line, in one of two forms (one form per file):

- HellaSwag's: `{"ctx": ..., "endings": [...], "label": i}` (the validation file of
  https://github.com/rowanz/hellaswag, `data/hellaswag_val.jsonl`, is used as is);
- a simpler one: `{"prompt": ..., "choices": [...], "answer": i}`.

Completion style, as build-nanogpt scores HellaSwag: the context's tokens, then each ending as the
tokens of `" " + ending`; the model's log-probability of the ending's tokens after the context is
its score. `acc` picks the ending of the highest summed log-probability, `acc_norm` the highest
mean per ending token (build-nanogpt's "lowest average loss", which does not favour short
endings). The rows of every question are scored in batches, padded, with logits only for the
ending tokens (`objectives.sequence_logps`).
"""

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from gptkit.errors import GptkitError
from gptkit.model import GPT, IGNORE_INDEX
from gptkit.objectives import sequence_logps
from gptkit.tokenizer import EOT_ID, get_encoding

FORMS = {"hellaswag": ("ctx", "endings", "label"), "prompt/choices": ("prompt", "choices", "answer")}


class Question(NamedTuple):
    context: str
    endings: list[str]
    label: int


def read_choices(path: str | Path) -> list[Question]:
    """The questions of a choices file, every line checked: one GptkitError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise GptkitError(f"{path} does not exist: pass a .jsonl file of multiple-choice questions")
    form, first, out = None, None, []
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            found, question = _question(line)
            if form is not None and found != form:
                raise GptkitError(f"the question is in the {found} form, but {first} is {form}: one form per file")
            form, first = found, first or f"line {n}"
            out.append(question)
        except GptkitError as e:
            raise GptkitError(f"{path} line {n}: {e}") from None
    if not out:
        raise GptkitError(f"{path} holds no questions: one JSON object a line, {_forms()}")
    return out


def _question(line: str) -> tuple[str, Question]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise GptkitError(f"not valid JSON ({e.msg})") from None
    matches = [name for name, keys in FORMS.items() if isinstance(obj, dict) and keys[0] in obj]
    if len(matches) != 1:
        raise GptkitError(f"expected {_forms()}")
    form = matches[0]
    context_key, endings_key, label_key = FORMS[form]
    context, endings, label = obj.get(context_key), obj.get(endings_key), obj.get(label_key)
    if not isinstance(context, str):
        raise GptkitError(f"{context_key!r} must be a string")
    if not isinstance(endings, list) or not all(isinstance(e, str) and e.strip() for e in endings):
        raise GptkitError(f"{endings_key!r} must be a list of non-empty strings")
    if len(endings) < 2:
        raise GptkitError(f"{endings_key!r} holds {len(endings)} ending(s): a choice needs two or more")
    if isinstance(label, str) and label.isdigit():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(endings):
        raise GptkitError(
            f"{label_key!r} is {label!r}: it must be the index of the right ending, 0 to {len(endings) - 1}"
        )
    return form, Question(context, endings, label)


def _forms() -> str:
    return '{"ctx", "endings", "label"} (HellaSwag) or {"prompt", "choices", "answer"}'


def rows_of(question: Question, block_size: int) -> list[tuple[list[int], int]]:
    """(tokens, ending length) of each ending after the context; a row too long for the model
    loses the start of its context."""
    enc = get_encoding()
    context = enc.encode_ordinary(question.context) if question.context else [EOT_ID]
    out = []
    for ending in question.endings:
        ids = enc.encode_ordinary(" " + ending)
        out.append(((context + ids)[-(block_size + 1) :], min(len(ids), block_size)))
    return out


@torch.no_grad()
def ending_logps(model: GPT, questions: list[Question], batch_size: int = 16) -> list[tuple[np.ndarray, np.ndarray]]:
    """(summed log-probability, ending length) of every ending of every question."""
    device = next(model.parameters()).device
    per_question = [rows_of(q, model.config.block_size) for q in questions]
    rows = [row for q_rows in per_question for row in q_rows]
    sums = np.zeros(len(rows))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(ids) for ids, _ in chunk) - 1
        x = torch.full((len(chunk), width), EOT_ID, dtype=torch.long)
        y = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        for r, (ids, n) in enumerate(chunk):
            t = torch.tensor(ids)
            x[r, : len(ids) - 1] = t[:-1]
            y[r, len(ids) - 1 - n : len(ids) - 1] = t[-n:]
        sums[start : start + len(chunk)] = sequence_logps(model, x.to(device), y.to(device)).double().cpu().numpy()
    out, k = [], 0
    for q_rows in per_question:
        lengths = np.array([n for _, n in q_rows])
        out.append((sums[k : k + len(lengths)], lengths))
        k += len(lengths)
    return out


def score_choices(model: GPT, questions: list[Question], batch_size: int = 16) -> tuple[dict, list[dict]]:
    """({"acc", "acc_norm", "questions"}, one record per question) of `model` on `questions`, without dropout."""
    training = model.training
    model.eval()
    scored = ending_logps(model, questions, batch_size)
    model.train(training)
    records = []
    for i, (q, (sums, lengths)) in enumerate(zip(questions, scored, strict=True)):
        means = sums / lengths
        pred, pred_norm = int(np.argmax(sums)), int(np.argmax(means))
        records.append(
            {
                "index": i,
                "label": q.label,
                "sum_logprobs": sums.tolist(),
                "mean_logprobs": means.tolist(),
                "pred": pred,
                "pred_norm": pred_norm,
                "correct": pred == q.label,
                "correct_norm": pred_norm == q.label,
            }
        )
    n = len(records)
    summary = {
        "acc": sum(r["correct"] for r in records) / n,
        "acc_norm": sum(r["correct_norm"] for r in records) / n,
        "questions": n,
    }
    return summary, records
