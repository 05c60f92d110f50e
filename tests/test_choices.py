"""Scoring by likelihood: `gptkit.evaluate --choices` against transformers' log-probabilities."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import assert_user_error, run_cli_in_process
from gptkit.tokenizer import get_encoding

HELLASWAG = [
    {
        "ctx": "A man is sitting on a roof. He",
        "endings": [
            "is using wrap to wrap a pair of skis.",
            "starts pulling up roofing on a roof.",
            "is ripping level tiles off.",
            "holds a ladder.",
        ],
        "label": 1,
    },  # noqa: E501
    {"ctx": "The cat", "endings": ["sat.", "jumped over the lazy brown dog twice."], "label": "0"},
    {
        "ctx": "Water boils at",
        "endings": ["one hundred degrees.", "noon.", "the library of the old town hall"],
        "label": 2,
    },  # noqa: E501
]
SIMPLE = [
    {"prompt": "The capital of France is", "choices": ["Paris", "Berlin and Rome"], "answer": 0},
    {"prompt": "2 + 2 =", "choices": ["4", "five", "22"], "answer": 0},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def transformers_scores(hf_dir, context: str, endings: list[str]) -> tuple[list[float], list[float]]:
    """Summed and mean log-probability of each `" " + ending` after the context, by transformers."""
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    enc = get_encoding()
    sums, means = [], []
    for ending in endings:
        ctx, end = enc.encode_ordinary(context), enc.encode_ordinary(" " + ending)
        ids = torch.tensor([ctx + end])
        with torch.no_grad():
            logp = model(ids).logits[0, :-1].double().log_softmax(-1)
        picked = logp[len(ctx) - 1 :].gather(1, ids[0, len(ctx) :, None])
        sums.append(picked.sum().item())
        means.append(picked.mean().item())
    return sums, means


@pytest.mark.parametrize(
    "rows, keys", [(HELLASWAG, ("ctx", "endings", "label")), (SIMPLE, ("prompt", "choices", "answer"))]
)
def test_scores_equal_transformers_log_probabilities(tiny_hf_dir, tmp_path, rows, keys):
    source = write_jsonl(tmp_path / "q.jsonl", rows)
    out = tmp_path / "out"
    result = run_cli_in_process(
        "-m", "gptkit.evaluate", f"--init_from={tiny_hf_dir}", f"--out_dir={out}", "--choices", str(source),
        "--device=cpu", "--dtype=float32", "--batch_size=3",  # batches cut across questions, rows padded
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (out / "choices_q.jsonl").read_text().splitlines()]
    correct, correct_norm = 0, 0
    for row, record in zip(rows, records, strict=True):
        sums, means = transformers_scores(tiny_hf_dir, row[keys[0]], row[keys[1]])
        assert record["sum_logprobs"] == pytest.approx(sums, abs=1e-4)
        assert record["mean_logprobs"] == pytest.approx(means, abs=1e-4)
        label = int(row[keys[2]])
        correct += int(np.argmax(sums)) == label
        correct_norm += int(np.argmax(means)) == label
    n = len(rows)
    assert f"acc {correct / n:.1%}" in result.stdout and f"acc_norm {correct_norm / n:.1%}" in result.stdout


@pytest.mark.parametrize(
    "rows, fragment",
    [
        ([{"ctx": "a", "endings": ["b", "c"], "label": 2}], "line 1: 'label' is 2"),
        ([{"ctx": "a", "endings": ["b"], "label": 0}], "line 1: 'endings' holds 1 ending(s)"),
        ([SIMPLE[0], HELLASWAG[1]], "line 2: the question is in the hellaswag form"),
    ],
)
def test_bad_choices_files_are_one_line_and_write_nothing(tiny_hf_dir, tmp_path, rows, fragment):
    source = write_jsonl(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "out"
    result = run_cli_in_process(
        "-m", "gptkit.evaluate", f"--init_from={tiny_hf_dir}", f"--out_dir={out}", f"--choices={source}"
    )
    assert_user_error(result, str(source), fragment)
    assert not out.exists()


def test_watch_choices_logs_the_score_beside_val_loss(tiny_hf_dir, shakespeare_bins, tmp_path):
    import tiny
    from gptkit.choices import read_choices, score_choices
    from gptkit.diagnostics import plot_losses
    from gptkit.model import GPT
    from gptkit.sources import load_model
    from gptkit.train import train

    questions = write_jsonl(tmp_path / "q.jsonl", HELLASWAG + [dict(r, label=0) for r in HELLASWAG])
    out = tmp_path / "run"
    settings = dict(init_from=str(tiny_hf_dir), data_root=str(shakespeare_bins.parent), dataset="shakespeare")
    cfg = tiny.tiny_cfg(out, tiny.TINY_RUN | settings, block_size=32, max_iters=4, eval_interval=2, dtype="float32")
    train(dataclasses.replace(cfg, watch_choices=str(questions), learning_rate=1e-2, decay_lr=False))
    evals = tiny.records(out, "eval")
    assert [e["iter"] for e in evals] == [0, 2, 4] and all("val_loss" in e for e in evals)
    parsed = read_choices(questions)
    base = score_choices(GPT.from_pretrained(str(tiny_hf_dir)).eval(), parsed)[0]
    final = score_choices(load_model("resume", str(out)).eval(), parsed)[0]
    assert (evals[0]["val_choices_acc"], evals[0]["val_choices_acc_norm"]) == (base["acc"], base["acc_norm"])
    assert (evals[-1]["val_choices_acc"], evals[-1]["val_choices_acc_norm"]) == (final["acc"], final["acc_norm"])
    fig = plot_losses(out, choices=True)
    right = fig.axes[-1]
    assert list(right.lines[0].get_ydata()) == [e["val_choices_acc_norm"] for e in evals]
