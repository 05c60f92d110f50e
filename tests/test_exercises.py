"""The notebooks' exercises: every check passes on its solution (the solutions notebooks' own
functions), fails with its hint on a plausible wrong answer, and says "not attempted" on the
placeholder; every notebook has 2-4 of them, and every solutions notebook is paired, clean and
run by the notebook lane."""

import contextlib
import io
import math
import runpy
import subprocess
import sys
from pathlib import Path

import jupytext
import numpy as np
import pytest
import torch
from jupytext.config import load_jupytext_config
from torch.nn import functional as F

from gptkit import exercises
from gptkit.diagnostics import smooth
from gptkit.model import IGNORE_INDEX
from gptkit.tokenizer import EOT_ID

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOLUTIONS = NOTEBOOKS / "solutions"
LESSONS = sorted(NOTEBOOKS.glob("*.py"))


@pytest.fixture(scope="module")
def solutions() -> dict:
    """Every name the solutions notebooks define, run as scripts (their checks assert they pass)."""
    names = {}
    for path in sorted(SOLUTIONS.glob("*.py")):
        with contextlib.redirect_stdout(io.StringIO()):
            names |= runpy.run_path(str(path))
    return names


def run_check(check, fn) -> tuple[bool | None, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = check(fn)
    return result, out.getvalue()


def placeholder(*args):
    raise NotImplementedError


# --- plausible wrong answers ----------------------------------------------------------------------
def merge_leftmost(parts, enc):
    """Merges the first pair in the vocabulary, whatever its rank."""
    for i in range(len(parts) - 1):
        with contextlib.suppress(KeyError):
            enc.encode_single_token(parts[i] + parts[i + 1])
            return parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
    return parts


def windows_unshifted(stream, offsets, block_size):
    x = torch.from_numpy(np.stack([stream[o : o + block_size] for o in offsets]).astype(np.int64))
    return x, x.clone()


def windows_uint16(stream, offsets, block_size):
    chunks = np.stack([stream[o : o + block_size + 1] for o in offsets])
    return chunks[:, :-1], chunks[:, 1:]


def attention_unmasked(q, k, v):
    return F.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1) @ v


def attention_unscaled(q, k, v):
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)).masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool)), float("-inf"))
    return F.softmax(scores, dim=-1) @ v


def count_untied(cfg):
    c = cfg.n_embd
    return 2 * cfg.vocab_size * c + cfg.block_size * c + cfg.n_layer * (12 * c * c + 13 * c) + 2 * c


def transpose_when_shapes_differ(name, stored):
    """Looks at shapes only: the square attn.c_proj slips through untransposed."""
    expected_rows = {"c_attn": 3, "c_fc": 4}
    turned = any(f".{key}.weight" in name for key in expected_rows) or name.endswith("mlp.c_proj.weight")
    return stored.t() if turned else stored


def transpose_every_matrix(name, stored):
    return stored.t() if stored.dim() == 2 else stored


def crop_last(wpe, block_size):
    return wpe[-block_size:]


def loss_unshifted(logits, ids):
    return F.cross_entropy(logits.flatten(0, 1), ids.flatten())


def accumulate_unscaled(model, micro_batches):
    for x, y in micro_batches:
        model(x, y)[1].backward()


def lr_warmup_from_zero(it, learning_rate, min_lr, warmup_iters, lr_decay_iters):
    if it < warmup_iters:
        return learning_rate * it / warmup_iters
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def temperature_multiplied(logits, t):
    return torch.softmax(logits * t, dim=-1)


def top_p_one_too_few(logits, p):
    """Keeps tokens while the mass *including* each stays below p: the crossing token is lost."""
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    keep_sorted = sorted_probs.cumsum(-1) < p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    kept = probs * keep
    return kept / kept.sum(-1, keepdim=True)


def top_p_not_renormalised(logits, p):
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, sorted_probs.cumsum(-1) - sorted_probs < p)
    return probs * keep


def greedy_new_tokens_only(model, idx, max_new_tokens):
    start = idx.size(1)
    for _ in range(max_new_tokens):
        idx = torch.cat([idx, model(idx)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx[:, start:]


def turned_up_raw_argmin(val_losses):
    """No smoothing, no patience: any minimum before the end is a turn-up."""
    low = int(np.argmin(val_losses))
    return low if low < len(val_losses) - 1 else None


def stop_one_late(val_losses, patience):
    best, since = float("inf"), 0
    for i, loss in enumerate(val_losses):
        best, since = (loss, 0) if loss < best else (best, since + 1)
        if since > patience:
            return i
    return None


def lora_without_scaling(x, W, b, A, B, alpha):
    return x @ W.T + b + x @ A.T @ B.T


def lora_count_one_block(config, rank, targets):
    shapes = {"c_attn": 4, "attn.c_proj": 2, "c_fc": 5, "mlp.c_proj": 5}
    return sum(rank * shapes[t] * config.n_embd for t in targets)


def collate_masked_by_input(examples):
    width = max(len(t) for t, _ in examples) - 1
    x = torch.full((len(examples), width), EOT_ID)
    y = torch.full((len(examples), width), IGNORE_INDEX)
    for row, (tokens, mask) in enumerate(examples):
        n = len(tokens) - 1
        x[row, :n] = torch.tensor(tokens[:-1])
        y[row, :n] = torch.where(torch.tensor(mask[:-1]) == 1, torch.tensor(tokens[1:]), IGNORE_INDEX)
    return x, y


def collate_pad_is_eos(examples):
    """The pad = EOS recipe: every <|endoftext|> target masked, the one that ends a response too."""
    x, y = collate_masked_by_input(examples)
    for row, (tokens, mask) in enumerate(examples):
        n = len(tokens) - 1
        y[row, :n] = torch.where(torch.tensor(mask[1:]) == 1, torch.tensor(tokens[1:]), IGNORE_INDEX)
    return x, torch.where(y == EOT_ID, IGNORE_INDEX, y)


def f1_unnormalised(generated, reference):
    got, want = generated.split(), reference.split()
    if not got or not want:
        return float(got == want)
    same = len(set(got) & set(want))
    return 0.0 if same == 0 else 2 * (same / len(got)) * (same / len(want)) / (same / len(got) + same / len(want))


def dpo_without_beta(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    return -F.logsigmoid((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)).mean()


def dpo_without_reference(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    return -F.logsigmoid(beta * (policy_chosen - policy_rejected)).mean()


def ending_unshifted(logits, ids, n):
    """Reads each ending token's log-probability at its own position, not the one before."""
    picked = torch.log_softmax(logits, dim=-1)[-n:].gather(1, ids[-n:, None]).squeeze(1)
    return picked.sum().item(), picked.mean().item()


def ending_mean_over_row(logits, ids, n):
    """The right sum, but the mean over every token of the row."""
    picked = torch.log_softmax(logits, dim=-1)[-n - 1 : -1].gather(1, ids[-n:, None]).squeeze(1)
    return picked.sum().item(), picked.sum().item() / (len(ids) - 1)


def last_index_is_the_length(attention_mask):
    return attention_mask.sum(dim=1)


def last_index_is_the_last_position(attention_mask):
    """The last position of the padded batch: padding, for every row shorter than the longest."""
    return torch.full((attention_mask.size(0),), attention_mask.size(1) - 1)


def last_index_before_the_first_pad(attention_mask):
    """argmin finds the first 0, but a row without padding has none: it gives -1 there."""
    return attention_mask.argmin(dim=1) - 1


def classification_softmax_twice(logits, labels):
    return F.cross_entropy(logits.softmax(-1), labels).item(), (logits.argmax(-1) == labels).float().mean().item()


def classification_counts_correct(logits, labels):
    return F.cross_entropy(logits, labels).item(), (logits.argmax(-1) == labels).sum().item()


def label_scores_with(f1):
    def label_scores(truth, predicted, labels):
        scores = {}
        for name in labels:
            hits = sum(t == p == name for t, p in zip(truth, predicted, strict=True))
            said, real = predicted.count(name), truth.count(name)
            precision, recall = hits / said if said else 0.0, hits / real if real else 0.0
            scores[name] = (precision, recall, f1(precision, recall))
        return scores

    return label_scores


label_scores_arithmetic_f1 = label_scores_with(lambda p, r: (p + r) / 2)


def label_scores_swapped(truth, predicted, labels):
    right = label_scores_with(lambda p, r: 2 * p * r / (p + r) if p + r else 0.0)(truth, predicted, labels)
    return {name: (recall, precision, f1) for name, (precision, recall, f1) in right.items()}


def label_scores_divide_by_zero(truth, predicted, labels):
    """Precision as hits / predicted, with no care for a label never predicted."""
    return {
        name: (sum(t == p == name for t, p in zip(truth, predicted, strict=True)) / predicted.count(name), 0.0, 0.0)
        for name in labels
    }


# (check, the solution's name in notebooks/solutions, [(wrong answer, a fragment of its hint)])
CASES = [
    ("check_merge_step", "my_merge_step", [(merge_leftmost, "lowest-rank pair merges first")]),
    ("check_windows", "my_windows", [(windows_unshifted, "shifted by 0"), (windows_uint16, "dtype uint16")]),
    (
        "check_attention",
        "my_attention",
        [(attention_unmasked, "attends to the future"), (attention_unscaled, "sqrt(head size)")],
    ),
    ("check_param_count", "my_count_params", [(count_untied, "tied")]),
    (
        "check_conv1d",
        "my_to_gptkit",
        [(transpose_when_shapes_differ, "attn.c_proj.weight is square"), (transpose_every_matrix, "wte.weight")],
    ),
    ("check_crop", "my_crop", [(crop_last, "keep the first rows")]),
    ("check_next_token_loss", "my_next_token_loss", [(loss_unshifted, "must predict token t + 1")]),
    ("check_accumulation", "my_accumulate", [(accumulate_unscaled, "divide each micro-batch's loss by 4")]),
    ("check_lr_schedule", "my_lr", [(lr_warmup_from_zero, "at iteration 0 (warmup")]),
    ("check_temperature", "my_temperature", [(temperature_multiplied, "divide them by T")]),
    (
        "check_top_p",
        "my_top_p",
        [(top_p_one_too_few, "the token that crosses p stays"), (top_p_not_renormalised, "not 1")],
    ),
    ("check_greedy", "my_greedy", [(greedy_new_tokens_only, "the prompt followed by the new tokens")]),
    ("check_turn_up", "my_turned_up", [(turned_up_raw_argmin, "one bad evaluation at the end")]),
    ("check_early_stop", "my_stop_at", [(stop_one_late, "patience 2")]),
    ("check_lora_forward", "my_lora_forward", [(lora_without_scaling, "by alpha / r = 2")]),
    ("check_lora_params", "my_count_lora", [(lora_count_one_block, "one block's adapters")]),
    (
        "check_collate",
        "my_collate",
        [(collate_masked_by_input, "mask of the target token"), (collate_pad_is_eos, "must stay a target")],
    ),
    ("check_f1", "my_f1", [(f1_unnormalised, "normalise both texts first")]),
    (
        "check_dpo_loss",
        "my_dpo_loss",
        [(dpo_without_beta, "multiply the log-ratio difference by beta"), (dpo_without_reference, "log π - log ref")],
    ),
    (
        "check_ending_logps",
        "my_ending_logps",
        [(ending_unshifted, "one position earlier"), (ending_mean_over_row, "divide the sum by the ending's")],
    ),
    (
        "check_last_index",
        "my_last_index",
        [
            (last_index_is_the_length, "indices start at 0"),
            (last_index_is_the_last_position, "is padding; read the last *real* token"),
            (last_index_before_the_first_pad, "has no padding at all"),
        ],
    ),
    (
        "check_classification_loss",
        "my_loss_and_accuracy",
        [
            (classification_softmax_twice, "it applies the softmax itself"),
            (classification_counts_correct, "a count; gptkit"),
        ],
    ),
    (
        "check_label_scores",
        "my_label_scores",
        [
            (label_scores_swapped, "precision and recall are swapped"),
            (label_scores_arithmetic_f1, "harmonic mean"),
            (label_scores_divide_by_zero, "ZeroDivisionError"),
        ],
    ),
]


@pytest.mark.parametrize("check_name, solution, wrong", CASES, ids=[c[0] for c in CASES])
def test_a_check_passes_the_solution_hints_at_a_wrong_answer_and_waits_for_a_placeholder(
    solutions, check_name, solution, wrong
):
    check = getattr(exercises, check_name)
    result, printed = run_check(check, solutions[solution])
    assert result is True and "passed" in printed, printed
    for answer, hint in wrong:
        result, printed = run_check(check, answer)
        assert result is False, f"{answer.__name__} passed {check_name}"
        assert printed.startswith(exercises.FAIL) and hint in printed, printed
        assert printed.count("\n") == 1, "one line"
    result, printed = run_check(check, placeholder)
    assert result is None and "not attempted" in printed and printed.count("\n") == 1, printed


def test_every_check_is_tested_here():
    checks = {name for name in dir(exercises) if name.startswith("check_")}
    assert checks == {c[0] for c in CASES}


def test_a_failing_function_is_a_hint_not_a_traceback():
    def broken(logits, t):
        return logits.softmax(dim=7)

    result, printed = run_check(exercises.check_temperature, broken)
    assert result is False and printed.startswith(f"{exercises.FAIL} temperature: your function raised IndexError")
    result, printed = run_check(exercises.check_temperature, lambda logits, t: None)
    assert result is False and "returned None" in printed


def test_a_check_leaves_the_notebooks_random_state_alone(solutions):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_check(exercises.check_accumulation, solutions["my_accumulate"])
    assert torch.equal(torch.rand(3), expected)


def test_the_turn_up_solution_uses_gptkits_smoothing(solutions):
    assert solutions["smooth"] is smooth  # the exercise asks for gptkit's moving average, not a copy of it


# --- the notebooks' side -------------------------------------------------------------------------
def exercise_cells(path: Path) -> list[tuple[str, str, str]]:
    """(heading, code cell, check cell) for each markdown cell whose heading says "Exercise"."""
    cells = jupytext.read(path).cells
    found = []
    for i, cell in enumerate(cells):
        if cell.cell_type == "markdown" and cell.source.lstrip("# ").startswith("Exercise"):
            found.append((cell.source, cells[i + 1].source, cells[i + 2].source))
    return found


def checks_called(text: str) -> list[str]:
    return [name for name in dir(exercises) if name.startswith("check_") and f"{name}(" in text]


@pytest.mark.parametrize("py", LESSONS, ids=lambda p: p.stem)
def test_every_notebook_has_two_to_four_exercises_and_a_solutions_notebook(py):
    found = exercise_cells(py)
    assert 2 <= len(found) <= 4, f"{py.name} has {len(found)} exercises"
    for heading, code, check in found:
        assert "raise NotImplementedError" in code, f"{py.name}: {heading.splitlines()[0]} has no placeholder"
        assert len(checks_called(check)) == 1 and "raise" not in check, heading
    solution = SOLUTIONS / py.name
    assert solution.is_file(), f"{py.name} has no solutions notebook {solution}"
    assert sorted(checks_called("".join(c for _, _, c in found))) == sorted(checks_called(solution.read_text()))
    for heading, _, check in exercise_cells(solution):
        assert check.startswith("assert check_"), f"{solution.name}: {heading}: the solution must be asserted"


@pytest.mark.parametrize("py", sorted(SOLUTIONS.glob("*.py")), ids=lambda p: p.stem)
def test_solutions_notebooks_are_paired_clean_and_have_a_kernel(py):
    twin = py.with_suffix(".ipynb")
    assert twin.is_file(), f"{py.name} has no {twin.name}: run make sync-notebooks"
    config = load_jupytext_config(str(SOLUTIONS))
    nb = jupytext.read(twin)
    assert jupytext.writes(nb, fmt="py:percent", config=config) == py.read_text(), f"{twin} is out of sync"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")


def test_the_notebook_lane_runs_the_solutions():
    """make test-notebooks runs nbval over notebooks/: it collects the solutions too."""
    makefile = (ROOT / "Makefile").read_text()
    assert "--nbval-lax --nbval-current-env -p no:cacheprovider notebooks" in makefile
    collect = [sys.executable, "-m", "pytest", "--collect-only", "-q", "--nbval-lax", "-p", "no:cacheprovider"]
    listed = subprocess.run([*collect, "notebooks"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for solution in sorted(SOLUTIONS.glob("*.ipynb")):
        assert f"notebooks/solutions/{solution.name}::" in listed, listed[-2000:]
