"""gptkit.metrics: metrics.jsonl and the sinks that mirror it (TensorBoard, W&B), and perplexity.

TensorBoard's event files are read back with TensorBoard's own reader (EventAccumulator, which
applies purge_step as the TensorBoard UI does); W&B's offline run file with W&B's own protobufs.
"""

import contextlib
import io
import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, assert_user_error, run_cli
from gptkit.config import TrainConfig
from gptkit.errors import GptkitError
from gptkit.metrics import TAGS, MetricsWriter, TensorBoardSink, perplexity, read_metrics, scalars
from gptkit.prepare import prepare
from gptkit.train import train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-data")
    text = (ROOT / "data" / "shakespeare" / "input.txt").read_text(encoding="utf-8")[:4000]
    (root / "tiny.txt").write_text(text, encoding="utf-8")
    prepare(root / "tiny.txt", root / "tiny", val_fraction=0.4, block_size=16, progress=False)
    return root


TINY = dict(
    dataset="tiny",
    init_from="scratch",
    n_layer=1,
    n_head=2,
    n_embd=32,
    block_size=16,
    batch_size=2,
    learning_rate=3e-3,
    warmup_iters=2,
    lr_decay_iters=8,
    min_lr=3e-4,
    max_iters=4,
    eval_interval=2,
    eval_iters=1,
    progress=False,
    device="cpu",
    dtype="float32",
)


def tiny_cfg(data_root: Path, out_dir: Path, **changes) -> TrainConfig:
    return TrainConfig(**(TINY | {"data_root": str(data_root), "out_dir": str(out_dir)} | changes))


@pytest.fixture(scope="module")
def tensorboard_run(tiny_data, tmp_path_factory) -> tuple[Path, str]:
    """A 4-iteration run with --tensorboard=True, and what it printed."""
    out = tmp_path_factory.mktemp("tb") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        train(tiny_cfg(tiny_data, out, tensorboard=True))
    return out, printed.getvalue()


def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard shows for `log_dir`: tag -> [(step, value), ...] in file order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def expected_scalars(out_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """What metrics.jsonl says (one record per iteration and type, as read_metrics keeps), by tag."""
    run = read_metrics(out_dir)
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in run.evals + run.steps:
        for tag, value in scalars(record).items():
            expected.setdefault(tag, []).append((record["iter"], value))
    return {tag: sorted(points) for tag, points in expected.items()}


def assert_same_points(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for tag in want:
        steps = [s for s, _ in got[tag]]
        assert steps == sorted(set(steps)), f"{tag}: a step shown twice or out of order: {steps}"
        assert [s for s, _ in want[tag]] == steps, tag
        # event files hold float32
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in want[tag]], rel=1e-6), tag


# --- perplexity -----------------------------------------------------------------------------------


def test_perplexity_of_a_uniform_guess_is_the_vocabulary_size():
    vocab = 50257
    loss = torch.nn.functional.cross_entropy(torch.zeros(3, vocab), torch.tensor([0, 7, 50256])).item()
    assert perplexity(loss) == pytest.approx(vocab, rel=1e-5)
    assert perplexity(0.0) == 1.0


def test_perplexity_never_overflows():
    assert perplexity(1000.0) == math.inf and perplexity(math.inf) == math.inf
    assert math.isnan(perplexity(math.nan))
    with np.errstate(over="raise"):
        assert perplexity(np.array([0.0, 2.0, 1000.0])).tolist() == [1.0, pytest.approx(math.e**2), math.inf]


def test_eval_records_and_the_eval_line_carry_perplexity(tensorboard_run):
    out, printed = tensorboard_run
    run = read_metrics(out)
    assert run.iters.tolist() == [0, 2, 4]
    for record in run.evals:
        assert record["val_ppl"] == pytest.approx(math.exp(record["val_loss"]), rel=1e-12)
        assert record["train_ppl"] == pytest.approx(math.exp(record["train_loss"]), rel=1e-12)
        line = (
            f"step {record['iter']}: train loss {record['train_loss']:.4f}, "
            f"val loss {record['val_loss']:.4f} (perplexity {math.exp(record['val_loss']):.2f})"
        )
        assert line in printed
    assert run.val_ppl.tolist() == pytest.approx([r["val_ppl"] for r in run.evals])


# --- TensorBoard ----------------------------------------------------------------------------------


def test_tensorboard_shows_what_metrics_jsonl_holds_across_a_resume(tensorboard_run, tiny_data, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tensorboard_run[0], out)
    want = expected_scalars(out)
    assert {"loss/train", "loss/val", "perplexity/train", "perplexity/val", "loss/step", "lr"} <= set(want)
    assert "speed/tokens_per_s" in want and "speed/mfu" not in want  # no MFU on a CPU without a peak
    assert_same_points(tensorboard_scalars(out / "tensorboard"), want)

    train(tiny_cfg(tiny_data, out, tensorboard=True, init_from="resume", max_iters=8))
    want = expected_scalars(out)
    assert [s for s, _ in want["loss/val"]] == [0, 2, 4, 6, 8] and len(want["loss/step"]) == 8
    assert_same_points(tensorboard_scalars(out / "tensorboard"), want)


def test_a_resume_over_a_crashed_sessions_log_shows_each_step_once(tmp_path):
    """A session that logged past its last checkpoint (iteration 4) before dying, then a resume from it."""

    def step(it, loss):
        return dict(type="step", iter=it, loss=loss, lr=1e-3, tokens_per_s=100.0 + it, mfu=None)

    def ev(it, val):
        return dict(
            type="eval",
            iter=it,
            train_loss=val - 0.1,
            val_loss=val,
            train_ppl=math.exp(val - 0.1),
            val_ppl=math.exp(val),
        )

    log = tmp_path / "tensorboard"
    with MetricsWriter(tmp_path / "metrics.jsonl", None, (TensorBoardSink(log, None),)) as first:
        for record in [ev(0, 5.0), *(step(i, 5.0 - i / 10) for i in range(4)), ev(4, 4.6), step(4, 9.0), step(5, 9.0)]:
            first.write(**record)  # the checkpoint at iteration 4; the steps after it die with the process
    with MetricsWriter(tmp_path / "metrics.jsonl", 4, (TensorBoardSink(log, 4),)) as resumed:
        for record in [step(4, 4.55), step(5, 4.5), ev(6, 4.4)]:
            resumed.write(**record)
    got, want = tensorboard_scalars(log), expected_scalars(tmp_path)
    assert want["loss/step"] == [(0, 5.0), (1, 4.9), (2, 4.8), (3, 4.7), (4, 4.55), (5, 4.5)]
    assert want["loss/val"] == [(0, 5.0), (4, 4.6), (6, 4.4)]
    assert_same_points(got, want)

    # A new run in the same out_dir starts both logs afresh.
    with MetricsWriter(tmp_path / "metrics.jsonl", None, (TensorBoardSink(log, None),)) as again:
        again.write(**ev(0, 3.0))
    assert tensorboard_scalars(log) == {tag: [(0, pytest.approx(v))] for tag, v in scalars(ev(0, 3.0)).items()}


def test_missing_tensorboard_is_one_line_and_writes_nothing(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    # sitecustomize runs before gptkit: `import tensorboard` fails as if it were not installed
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['tensorboard'] = None\n")
    out = tmp_path / "out"
    result = run_cli(
        "-m",
        "gptkit.train",
        f"--out_dir={out}",
        "--tensorboard=True",
        "--device=cpu",
        env={"PYTHONPATH": f"{hide}:{ROOT}"},
    )
    assert_user_error(result, "--tensorboard=True needs tensorboard: pip install tensorboard")
    assert not out.exists()


def test_missing_wandb_is_one_line_and_writes_nothing(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "wandb", None)  # import wandb fails, installed or not
    with pytest.raises(GptkitError, match=r"^--wandb_log=True needs wandb: pip install wandb") as e:
        train(tiny_cfg(tiny_data, tmp_path / "out", wandb_log=True))
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


# --- W&B (offline) --------------------------------------------------------------------------------


def wandb_history(run_file: Path) -> dict[int, dict[str, float]]:
    """The history rows of an offline W&B run file: step -> {key: value}.

    The file is a LevelDB-style log (7-byte header, 32 KiB blocks of CRC'd chunks) of
    wandb_internal_pb2.Record messages, which W&B's Python package no longer reads itself.
    """
    from wandb.proto import wandb_internal_pb2

    data, block = run_file.read_bytes(), 32768
    assert data[:4] == b":W&B", data[:7]
    pos, chunk, rows = 7, b"", {}
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                rows[int(items.pop("_step"))] = {k: v for k, v in items.items() if not k.startswith("_")}
    return rows


def test_wandb_offline_run_logs_what_metrics_jsonl_holds(tiny_data, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")  # a test dependency; gptkit itself runs without it
    out, wandb_dir = tmp_path / "run", tmp_path / "wandb"
    wandb_dir.mkdir()
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir), "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WANDB_CONSOLE", "off")  # leave pytest's capture of stdout alone
    try:
        train(tiny_cfg(tiny_data, out, wandb_log=True, wandb_run_name="t", max_iters=2))
    finally:
        wandb.teardown()  # stop W&B's service process now, not at interpreter exit
    [run_file] = wandb_dir.glob("wandb/offline-run-*/run-*.wandb")
    rows = wandb_history(run_file)
    want: dict[int, dict[str, float]] = {}
    for tag, points in expected_scalars(out).items():
        for it, value in points:
            want.setdefault(it, {})[tag] = value
    assert sorted(rows) == sorted(want) == [0, 1, 2]
    for it, row in want.items():
        assert rows[it] == pytest.approx(row, rel=1e-12), it
    assert set(rows[0]) == set(TAGS["eval"].values()) | (set(TAGS["step"].values()) - {"speed/mfu"})
