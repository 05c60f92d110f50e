"""gptkit.diagnostics: reading metrics, the turn-up detector, early-stop replay and plots.

Synthetic curves pin down each rule; a real tiny run built to overfit checks them end to end
against what `train` writes and does.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import tiny
from gptkit.config import TrainConfig
from gptkit.diagnostics import (
    RunMetrics,
    best_checkpoint,
    find_turn_up,
    plot_gap,
    plot_losses,
    plot_run,
    plot_sweeps,
    read_metrics,
    simulate_early_stop,
    smooth,
    summarize,
)
from gptkit.errors import GptkitError
from gptkit.prepare import prepare
from gptkit.train import train

ROOT = Path(__file__).resolve().parents[1]


def u_curve(n: int = 30, bottom: int = 12, noise: float = 0.0, seed: int = 0) -> RunMetrics:
    """Val loss falling to a minimum at evaluation `bottom`, then rising; train loss falling throughout."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    val = 3.0 + 0.01 * (i - bottom) ** 2 + rng.normal(0, noise, n)
    train_loss = 4.0 - 0.08 * i
    return RunMetrics.from_losses(i * 10, train_loss, val)


def write_metrics(out_dir: Path, lines: list[str], config: dict | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    if config is not None:
        (out_dir / "config.json").write_text(json.dumps(config))
    return out_dir


def ev(it: int, train: float, val: float) -> str:
    return json.dumps({"type": "eval", "iter": it, "train_loss": train, "val_loss": val, "lr": 1e-3})


# --- reading -------------------------------------------------------------------------------------


def test_read_metrics_from_dir_and_file(tmp_path):
    step = json.dumps({"type": "step", "iter": 0, "loss": 5.0, "lr": 1e-3, "dt": 0.1})
    out = write_metrics(tmp_path / "run", [ev(0, 5.0, 5.1), step, ev(10, 4.0, 4.5)], {"dropout": 0.1})
    for source in (out, out / "metrics.jsonl", str(out)):
        run = read_metrics(source)
        assert run.name == "run" and run.out_dir == out
        assert run.iters.tolist() == [0, 10]
        assert run.train_loss.tolist() == [5.0, 4.0] and run.val_loss.tolist() == [5.1, 4.5]
        assert run.gap.tolist() == pytest.approx([0.1, 0.5])
        assert [s["loss"] for s in run.steps] == [5.0]
        assert run.config == {"dropout": 0.1}
    assert read_metrics(out, name="mine").name == "mine"


def test_read_metrics_keeps_the_last_record_per_iteration_and_sorts(tmp_path):
    out = write_metrics(tmp_path / "r", [ev(10, 4.0, 4.5), ev(0, 5.0, 5.1), ev(10, 3.0, 3.5)])
    run = read_metrics(out)
    assert run.iters.tolist() == [0, 10] and run.val_loss.tolist() == [5.1, 3.5]


def test_read_metrics_tolerates_a_torn_last_line_only(tmp_path):
    out = write_metrics(tmp_path / "torn", [ev(0, 5.0, 5.1), '{"type": "eval", "it'])
    assert read_metrics(out).iters.tolist() == [0]
    bad = write_metrics(tmp_path / "bad", [ev(0, 5.0, 5.1), "not json", ev(10, 4.0, 4.5)])
    with pytest.raises(GptkitError, match="metrics.jsonl:2 is not JSON"):
        read_metrics(bad)


def test_read_metrics_missing_says_what_to_do(tmp_path):
    with pytest.raises(GptkitError, match="train first"):
        read_metrics(tmp_path / "nowhere")


# --- the turn-up ---------------------------------------------------------------------------------


def test_smooth_is_a_centred_moving_average():
    assert smooth([1, 2, 3, 4, 5], 3).tolist() == pytest.approx([1.5, 2, 3, 4, 4.5])
    assert smooth([1, 5, 1], 1).tolist() == [1, 5, 1]


def test_turn_up_found_at_the_bottom_of_a_clean_u():
    turn = find_turn_up(u_curve())
    assert turn is not None and turn.iter == 120 and turn.index == 12
    assert turn.rise == pytest.approx(smooth(u_curve().val_loss)[-1] - turn.val_loss)


@pytest.mark.parametrize("seed", range(5))
def test_turn_up_found_near_the_bottom_of_a_noisy_u(seed):
    turn = find_turn_up(u_curve(noise=0.03, seed=seed))
    assert turn is not None and abs(turn.index - 12) <= 2


@pytest.mark.parametrize("seed", range(5))
def test_no_turn_up_while_val_keeps_falling(seed):
    rng = np.random.default_rng(seed)
    i = np.arange(30)
    run = RunMetrics.from_losses(i, 5 - 0.1 * i, 5 - 0.05 * i + rng.normal(0, 0.02, 30))
    assert find_turn_up(run) is None


def test_one_bad_evaluation_is_not_a_turn_up():
    val = list(np.linspace(5, 3, 20))
    for spike_at in (10, 19):  # in the middle, and at the very end
        spiked = val.copy()
        spiked[spike_at] += 1.0
        assert find_turn_up(RunMetrics.from_losses(range(20), val, spiked)) is None


def test_a_plateau_is_not_a_turn_up():
    rng = np.random.default_rng(0)
    val = np.r_[np.linspace(5, 3, 10), 3 + rng.normal(0, 0.004, 20)]
    assert find_turn_up(RunMetrics.from_losses(range(30), val, val)) is None


def test_a_dip_that_recovers_is_not_a_turn_up():
    val = np.r_[np.linspace(5, 3, 10), np.linspace(3.2, 3.4, 5), np.linspace(3.3, 2.5, 10)]
    assert find_turn_up(RunMetrics.from_losses(range(25), val, val)) is None


def test_turn_up_needs_enough_evaluations_after_the_bottom():
    run = u_curve(n=15, bottom=13)  # only one evaluation after the minimum
    assert find_turn_up(run) is None
    assert find_turn_up(RunMetrics.from_losses([0, 1], [1, 1], [1, 2])) is None


def test_min_rise_sets_how_much_rise_counts():
    run = u_curve()  # rises by ~2.9 after the bottom
    assert find_turn_up(run, min_rise=1.0) is not None
    assert find_turn_up(run, min_rise=5.0) is None


# --- best checkpoint and early stopping ----------------------------------------------------------


def test_best_checkpoint_without_a_checkpoint_file():
    rec = best_checkpoint(u_curve())
    assert rec.iter == 120 and rec.checkpoint is None
    assert rec.val_loss == pytest.approx(3.0) and rec.gap == pytest.approx(rec.val_loss - rec.train_loss)
    assert "120" in rec.note


def test_best_checkpoint_of_an_empty_run_is_an_error():
    with pytest.raises(GptkitError, match="no evaluations"):
        best_checkpoint(RunMetrics("empty", []))


def test_simulate_early_stop_follows_trains_rule():
    val = [5.0, 4.0, 3.0, 3.5, 3.6, 3.0, 2.0]  # 3.0 again is no improvement
    run = RunMetrics.from_losses([0, 10, 20, 30, 40, 50, 60], val, val)
    stop = simulate_early_stop(run, patience=3)
    assert stop.stopped and stop.stop_iter == 50 and stop.best_iter == 20 and stop.iters_saved == 10
    never = simulate_early_stop(run, patience=4)
    assert not never.stopped and never.stop_iter == 60 and never.best_iter == 60 and never.iters_saved == 0
    # min_delta: improvements smaller than it do not reset the count.
    assert simulate_early_stop(run, patience=2, min_delta=0.6).stop_iter == 40


def test_simulate_early_stop_rejects_nonsense():
    with pytest.raises(GptkitError, match="patience"):
        simulate_early_stop(u_curve(), patience=0)


def test_summarize_names_the_turn_and_the_best():
    run = u_curve()
    text = summarize(run)
    assert "best val loss 3.0000 (perplexity 20.09) at iteration 120" in text  # e**3 = 20.0855
    assert "turned up after iteration 120" in text
    assert f"last val loss {run.val_loss[-1]:.4f} (perplexity {math.exp(run.val_loss[-1]):.2f})" in text


def test_summarize_a_diverged_run_says_inf_and_does_not_crash():
    text = summarize(RunMetrics.from_losses([0, 10], [900.0, 1e4], [1000.0, 1e5]))
    assert "best val loss 1000.0000 (perplexity inf)" in text


# --- plots ---------------------------------------------------------------------------------------


def test_plot_losses_draws_train_and_val_per_run_and_marks_the_turn():
    a, b = u_curve(), u_curve(bottom=20)
    b.name = "other"
    fig = plot_losses(a, b)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert {"run train", "run val", "other train", "other val"} <= set(labels)
    vertical = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert sorted(line.get_xdata()[0] for line in vertical) == [120, 200]


def test_plot_losses_reads_the_loss_axis_as_perplexity():
    run = u_curve()
    fig = plot_losses(run)
    FigureCanvasAgg(fig).draw()  # lays out the secondary axis as a saved figure has it
    ax = fig.axes[0]
    [right] = ax.child_axes
    assert "perplexity" in right.get_ylabel()
    # A perplexity on the right sits level with its loss on the left, for every point drawn.
    for loss in (*run.val_loss, *run.train_loss):
        at_loss = ax.transData.transform((0, loss))[1]
        assert right.transData.transform((0, math.exp(loss)))[1] == pytest.approx(at_loss, abs=1e-6)
    low, high = ax.get_ylim()
    ticks = [t for t in right.get_yticks() if math.exp(low) <= t <= math.exp(high)]
    assert ticks == [5, 10, 20, 50, 100, 200]  # 1-2-5 steps: even on the loss axis
    # A diverged run, whose perplexity exp cannot hold, is plotted without that axis.
    big = plot_losses(RunMetrics.from_losses([0, 10], [800.0, 900.0], [1000.0, 1100.0]))
    FigureCanvasAgg(big).draw()
    assert big.axes[0].child_axes == []


def test_plot_gap_and_sweeps(tmp_path):
    gap = plot_gap(u_curve())
    assert gap.axes[0].get_lines()[0].get_ydata().tolist() == pytest.approx(u_curve().gap.tolist())
    runs = []
    for lr in (1e-4, 1e-3, 1e-2):
        out = write_metrics(tmp_path / f"lr{lr}", [ev(0, 5, 5), ev(10, 4, 4.5 + lr)], {"learning_rate": lr})
        runs.append(read_metrics(out))
    fig = plot_sweeps({"learning_rate": runs})
    left, right = fig.axes
    assert right.get_xscale() == "log"
    assert right.get_lines()[0].get_xdata().tolist() == [1e-4, 1e-3, 1e-2]
    with pytest.raises(GptkitError, match="no dropout"):
        plot_sweeps({"dropout": runs})


def test_plot_run_writes_a_png(tmp_path):
    out = write_metrics(tmp_path / "run", [ev(0, 5.0, 5.1), ev(10, 4.0, 4.5)])
    path = plot_run(out)
    assert path == out / "loss.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other = plot_run(out, tmp_path / "plots" / "mine.png")
    assert other.is_file() and other.stat().st_size > 5000


# --- a real run built to overfit ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """700 training tokens of Shakespeare: a 2-layer model memorises them in a few dozen steps.

    Folded into a 256-token vocabulary (meta.json says so): the overfitting is the same story,
    without a 50,257-way output layer taking nearly all of every step.
    """
    root = tmp_path_factory.mktemp("tiny-data")
    text = (ROOT / "data" / "shakespeare" / "input.txt").read_text(encoding="utf-8")[:4000]
    (root / "tiny.txt").write_text(text, encoding="utf-8")
    meta = prepare(root / "tiny.txt", root / "tiny", val_fraction=0.4, block_size=32, progress=False)
    splits = {s: np.fromfile(root / "tiny" / f"{s}.bin", dtype=np.uint16) for s in ("train", "val")}
    tiny.write_folded(root / "tiny", splits, meta)
    return root


def overfit_config(data_root: Path, out_dir: Path, **changes) -> TrainConfig:
    settings = dict(
        out_dir=str(out_dir),
        dataset="tiny",
        data_root=str(data_root),
        init_from="scratch",
        n_layer=2,
        n_head=2,
        n_embd=64,
        block_size=32,
        batch_size=8,
        learning_rate=3e-3,
        decay_lr=False,
        max_iters=60,
        eval_interval=5,
        eval_iters=4,
        always_save_checkpoint=False,
        progress=False,
        device="cpu",
    )
    return TrainConfig(**(settings | changes))


def test_a_real_overfitting_run(tiny_data, tmp_path):
    summary = train(overfit_config(tiny_data, tmp_path / "overfit"))
    run = read_metrics(tmp_path / "overfit")
    assert run.iters.tolist() == list(range(0, 61, 5)) and len(run.steps) == 60
    assert run.config["learning_rate"] == 3e-3

    turn = find_turn_up(run)
    assert turn is not None, f"val loss {np.round(run.val_loss, 3).tolist()} should turn up"
    assert 0 < turn.iter < 60 and run.val_loss[-1] > run.val_loss.min()
    assert run.gap[-1] > run.gap[turn.index]  # memorising widens the gap
    assert run.train_loss[-1] < run.train_loss[turn.index]  # while train loss keeps falling

    for record in run.evals:  # perplexity beside every val loss
        assert record["val_ppl"] == pytest.approx(math.exp(record["val_loss"]))
        assert record["train_ppl"] == pytest.approx(math.exp(record["train_loss"]))

    rec = best_checkpoint(run)
    assert rec.iter == int(run.iters[np.argmin(run.val_loss)])
    assert rec.checkpoint == tmp_path / "overfit" / "ckpt.pt"  # saved on improvement only
    assert rec.val_loss == pytest.approx(summary["best_val_loss"])

    sim = simulate_early_stop(run, patience=3)
    assert sim.stopped and sim.best_iter == rec.iter
    stopped = train(overfit_config(tiny_data, tmp_path / "stopped", early_stop_patience=3))
    assert stopped["stopped_early"] and stopped["iter_num"] == sim.stop_iter
    replay = read_metrics(tmp_path / "stopped")
    assert replay.val_loss.tolist() == pytest.approx(run.val_loss[: len(replay.evals)].tolist(), abs=1e-5)


def test_best_checkpoint_notices_when_ckpt_holds_a_later_iteration(tiny_data, tmp_path):
    train(overfit_config(tiny_data, tmp_path / "always", max_iters=25, always_save_checkpoint=True))
    rec = best_checkpoint(tmp_path / "always")
    assert rec.iter < 25, "val loss of this run bottoms out before iteration 25"
    assert rec.checkpoint is None and "always_save_checkpoint=False" in rec.note
    assert "ckpt.pt holds iteration 25" in rec.note
