"""What the tests share: the tiny model and run settings, and reading a run's metrics back."""

import json
import os
from pathlib import Path

import numpy as np

from gptkit.config import TrainConfig

# A 2-layer, 32-wide GPT on 32-token windows: a step takes milliseconds on a CPU.
TINY_MODEL = dict(init_from="scratch", n_layer=2, n_head=2, n_embd=32, block_size=32)
# data_root: the test run's datasets, outside the checkout (tests/conftest.py makes the folder)
TINY_RUN = dict(batch_size=2, eval_iters=2, device="cpu", progress=False, data_root=os.environ["GPTKIT_TEST_DATA_ROOT"])
TINY = TINY_MODEL | TINY_RUN
# Short warmup and decay, so a few steps already see every part of the schedule.
SCHEDULE = dict(decay_lr=True, warmup_iters=2, lr_decay_iters=10)


def tiny_cfg(out_dir, base: dict = TINY, **kw) -> TrainConfig:
    """A TrainConfig of `base` writing to `out_dir`, with `kw` on top."""
    return TrainConfig(**(base | {"out_dir": str(out_dir)} | kw))


def cli_args(settings: dict) -> list[str]:
    """The same settings as `--key=value` arguments."""
    return [f"--{k}={v}" for k, v in settings.items()]


def records(out_dir: str | Path, kind: str) -> list[dict]:
    """The run's metrics.jsonl records of one type ("eval" or "step"), oldest first."""
    lines = (Path(out_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


FOLDED_VOCAB = 256


def write_folded(dataset: Path, splits: dict[str, np.ndarray], meta: dict | None = None) -> None:
    """Write each split's GPT-2 token ids folded into a 256-token vocabulary, and a meta.json that
    says so: the same text statistics, without a 50,257-way output layer taking every step."""
    dataset.mkdir(parents=True, exist_ok=True)
    for split, tokens in splits.items():
        (tokens % FOLDED_VOCAB).astype(np.uint16).tofile(dataset / f"{split}.bin")
    (dataset / "meta.json").write_text(json.dumps((meta or {}) | {"vocab_size": FOLDED_VOCAB}))


def counted_by_hand(micro_batches: list[np.ndarray]) -> tuple[int, int, int]:
    """(real tokens, positions computed, attention's sum over them of their row's length) of a step
    whose micro-batches' rows need these positions each: a micro-batch is as wide as its widest
    row, and computes its real tokens alone where they are 90% of its positions or less."""
    from gptkit.unpadding import MAX_REAL_FRACTION

    tokens = positions = attended = 0
    for need in micro_batches:
        real, rows, width = int(need.sum()), len(need), int(need.max())
        tokens += real
        if real <= MAX_REAL_FRACTION * rows * width:
            positions, attended = positions + real, attended + int((need.astype(np.int64) ** 2).sum())
        else:
            positions, attended = positions + rows * width, attended + rows * width * width
    return tokens, positions, attended


def logged_counts(out_dir: str | Path) -> tuple[list[float], list[int]]:
    """Per logged step: the positions it computed (its tokens/s times its time) and the tokens seen so far."""
    steps = records(out_dir, "step")
    return [r["tokens_per_s"] * r["dt"] for r in steps], [r["tokens"] for r in steps]


def check_logged_counts(out_dir: str | Path, need: list[list[np.ndarray]]) -> list[tuple[int, int, int]]:
    """The run in `out_dir` logged, step by step, the positions computed and the running count of
    real tokens that `need` (per step, per micro-batch: what each row needs) gives by hand, and its
    blocks skipped padding that x.numel() would count. Returns the hand counts, per step."""
    import itertools

    import pytest

    counted = [counted_by_hand(step) for step in need]
    padded = sum(len(rows) * int(rows.max()) for step in need for rows in step)
    assert sum(c[1] for c in counted) < 0.9 * padded
    positions, tokens = logged_counts(out_dir)
    assert positions == pytest.approx([c[1] for c in counted], rel=1e-9)
    assert tokens == list(itertools.accumulate(c[0] for c in counted))
    return counted
