"""Read a run's `metrics.jsonl` and tell when it began to overfit.

    run = read_metrics("out-shakespeare")
    find_turn_up(run)            # where val loss turned up for good, or None
    best_checkpoint(run)         # the evaluation to keep, and whether ckpt.pt holds it
    simulate_early_stop(run, 3)  # where --early_stop_patience=3 would have stopped
    plot_losses(run).savefig("loss.png")

`train` writes one `{"type": "eval", ...}` record per evaluation and one `{"type": "step", ...}`
record per logged step; everything here works on those records, so it applies to a finished
run, a run still in progress, or a synthetic curve built with `RunMetrics.from_losses`.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from gptkit import checkpoint
from gptkit.errors import GptkitError
from gptkit.metrics import METRICS, RunMetrics, perplexity, read_metrics  # noqa: F401  (re-exported: the README's entry point)


def _as_run(run) -> RunMetrics:
    return run if isinstance(run, RunMetrics) else read_metrics(run)


def smooth(values, window: int = 3) -> np.ndarray:
    """Centred moving average over `window` evaluations (fewer at the ends), so one noisy
    evaluation cannot pass for a trend."""
    v = np.asarray(values, dtype=np.float64)
    half = max(0, window // 2)
    return np.array([v[max(0, i - half) : i + half + 1].mean() for i in range(len(v))])


@dataclass
class TurnUp:
    """Where the smoothed val loss bottomed out before rising for good."""

    iter: int  # the evaluation at the bottom of the smoothed curve
    index: int  # its position among the evaluations
    val_loss: float  # smoothed val loss there
    rise: float  # how far the smoothed val loss has climbed since, at the last evaluation


def find_turn_up(run, window: int = 3, min_rise: float = 0.02, patience: int = 3) -> TurnUp | None:
    """The iteration where val loss turned up, or None while it has not (yet).

    A turn-up counts only when the smoothed val loss has stayed at least `min_rise` nats above
    its minimum for the last `patience` evaluations: a single bad evaluation, a plateau, or a
    curve that comes back down is not overfitting.
    """
    run = _as_run(run)
    if len(run.evals) < patience + 1:
        return None
    s = smooth(run.val_loss, window)
    low = int(np.argmin(s))
    after = s[low + 1 :]
    if len(after) < patience or not np.all(after[-patience:] >= s[low] + min_rise):
        return None
    return TurnUp(iter=int(run.iters[low]), index=low, val_loss=float(s[low]), rise=float(s[-1] - s[low]))


@dataclass
class Recommendation:
    """The evaluation worth keeping, and where its weights are."""

    iter: int
    val_loss: float
    train_loss: float
    gap: float
    checkpoint: Path | None  # OUT_DIR/ckpt.pt when it holds exactly this iteration
    note: str


def best_checkpoint(run) -> Recommendation:
    """The evaluation with the lowest val loss, and whether the run's ckpt.pt holds it."""
    run = _as_run(run)
    if not run.evals:
        raise GptkitError(f"run {run.name!r} has no evaluations yet: nothing to recommend")
    i = int(np.argmin(run.val_loss))
    it, val, train = int(run.iters[i]), float(run.val_loss[i]), float(run.train_loss[i])
    ckpt, saved_iter = None, None
    if run.out_dir is not None and (run.out_dir / checkpoint.BEST).is_file():
        saved_iter = checkpoint.load(run.out_dir / checkpoint.BEST).iter_num
        ckpt = run.out_dir / checkpoint.BEST if saved_iter == it else None
    if ckpt is not None:
        note = f"keep {ckpt} (iteration {it}, val loss {val:.4f})"
    elif saved_iter is not None:
        note = (
            f"the best val loss {val:.4f} was at iteration {it}, but ckpt.pt holds iteration {saved_iter}: "
            f"train with --always_save_checkpoint=False to keep the best one, or retrain with --max_iters={it}"
        )
    else:
        note = f"the best val loss {val:.4f} was at iteration {it}; this run has no ckpt.pt"
    return Recommendation(it, val, train, val - train, ckpt, note)


@dataclass
class EarlyStop:
    """What `--early_stop_patience` would have done to a run."""

    stopped: bool
    stop_iter: int  # the evaluation it stops at (the run's last one if it never stops)
    best_iter: int
    best_val_loss: float
    iters_saved: int  # iterations of the run that early stopping would have skipped


def simulate_early_stop(run, patience: int, min_delta: float = 0.0) -> EarlyStop:
    """Replay the run's evaluations through train's early-stopping rule.

    With `min_delta=0` this is exactly the rule `--early_stop_patience` applies: stop once
    `patience` evaluations in a row have not lowered the best val loss.
    """
    run = _as_run(run)
    if patience < 1:
        raise GptkitError(f"patience must be at least 1, not {patience}")
    if not run.evals:
        raise GptkitError(f"run {run.name!r} has no evaluations yet: nothing to simulate")
    best, best_iter, since = math.inf, int(run.iters[0]), 0
    last = int(run.iters[-1])
    for it, val in zip(run.iters.tolist(), run.val_loss.tolist(), strict=True):
        if val < best - min_delta:
            best, best_iter, since = val, it, 0
        else:
            since += 1
        if since >= patience:
            return EarlyStop(True, it, best_iter, best, last - it)
    return EarlyStop(False, last, best_iter, best, 0)


def summarize(run) -> str:
    """A few lines a person can read: best evaluation, gap, turn-up, early stopping."""
    run = _as_run(run)
    rec = best_checkpoint(run)
    turn = find_turn_up(run)
    last = float(run.val_loss[-1])
    lines = [
        f"{run.name}: {len(run.evals)} evaluations up to iteration {int(run.iters[-1])}",
        f"  best val loss {rec.val_loss:.4f} (perplexity {perplexity(rec.val_loss):.2f}) at iteration {rec.iter} "
        f"(train {rec.train_loss:.4f}, gap {rec.gap:+.4f})",
        f"  last val loss {last:.4f} (perplexity {perplexity(last):.2f}), gap {run.gap[-1]:+.4f}",
        (
            f"  val loss turned up after iteration {turn.iter} (+{turn.rise:.3f} since)"
            if turn
            else "  val loss has not turned up"
        ),
        f"  {rec.note}",
    ]
    return "\n".join(lines)


# --- plots -------------------------------------------------------------------------------------
# Each returns a matplotlib Figure that pyplot no longer tracks: a notebook shows it once (as
# the value of a cell, or through display()), a script saves it, and neither leaks open figures.


def _figure(figsize: tuple[float, float]) -> Figure:
    import matplotlib.pyplot as plt  # loads the notebook backend that knows how to show figures

    fig = plt.figure(figsize=figsize, layout="constrained")
    plt.close(fig)
    return fig


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _perplexity_axis(ax) -> None:
    """A right-hand axis that reads the loss axis as perplexity, exp(loss): the same curves, no new lines.

    Its ticks are 1, 2, 5, 10, 20, ...: evenly spaced on the loss axis, as exp makes them. A loss
    axis that reaches past what exp can hold (a diverged run) gets none."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    if not math.isfinite(perplexity(max(ax.get_ylim()))):
        return

    def to_ppl(loss):
        return perplexity(np.asarray(loss, dtype=np.float64))

    def to_loss(ppl):
        return np.log(np.maximum(np.asarray(ppl, dtype=np.float64), np.finfo(np.float64).tiny))

    right = ax.secondary_yaxis("right", functions=(to_ppl, to_loss))
    right.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    right.yaxis.set_minor_locator(LogLocator(base=10, subs="auto", numticks=12))
    right.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.6g}"))
    right.set_ylabel("perplexity (exp of loss)")


def plot_losses(
    *runs, title: str | None = None, steps: bool = False, mark: bool = True, ax=None, choices: bool = False
) -> Figure:
    """Train (dashed) and val (solid) loss per run, one colour each; the turn-up and the best
    evaluation marked; perplexity on the right-hand axis. `steps=True` adds the per-step training
    loss, faint. `choices=True` puts a `--watch_choices` run's multiple-choice acc_norm on the
    right-hand axis instead (squares, dotted): what the finetune keeps of the base's knowledge."""
    runs = [_as_run(r) for r in runs]
    fig = ax.figure if ax is not None else _figure((8, 4.5))
    ax = ax if ax is not None else fig.add_subplot()
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        if steps and run.steps:
            ax.plot([r["iter"] for r in run.steps], [r["loss"] for r in run.steps], color=color, alpha=0.25, lw=0.8)
        if not run.evals:
            continue
        ax.plot(run.iters, run.train_loss, "--", color=color, label=f"{run.name} train")
        ax.plot(run.iters, run.val_loss, "o-", color=color, ms=3, label=f"{run.name} val")
        if mark:
            best = int(np.argmin(run.val_loss))
            ax.plot(run.iters[best], run.val_loss[best], "*", color=color, ms=14, mec="black", zorder=5)
            turn = find_turn_up(run)
            if turn is not None:
                ax.axvline(turn.iter, color=color, ls=":", lw=1.5)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (nats per token)")
    if choices:
        _choices_axis(ax, runs)
    else:
        _perplexity_axis(ax)
    ax.set_title(title or "train (dashed) and val (solid) loss; * best val, dotted line: val turns up")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _choices_axis(ax, runs) -> None:
    """Each run's val_choices_acc_norm (from --watch_choices) on a right-hand axis."""
    right = ax.twinx()
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        points = [(r["iter"], r["val_choices_acc_norm"]) for r in run.evals if "val_choices_acc_norm" in r]
        if points:
            right.plot(*zip(*points, strict=True), "s:", color=color, ms=4, label=f"{run.name} choices acc_norm")
    right.set_ylabel("multiple-choice acc_norm (squares)")
    right.set_ylim(0, 1)


def plot_gap(*runs, title: str | None = None, ax=None) -> Figure:
    """The generalization gap (val - train) per run: it widens as the model memorizes."""
    runs = [_as_run(r) for r in runs]
    fig = ax.figure if ax is not None else _figure((8, 3.5))
    ax = ax if ax is not None else fig.add_subplot()
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        ax.plot(run.iters, run.gap, "o-", color=color, ms=3, label=run.name)
        turn = find_turn_up(run)
        if turn is not None:
            ax.axvline(turn.iter, color=color, ls=":", lw=1.5)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("val loss - train loss")
    ax.set_title(title or "generalization gap")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_sweeps(sweeps: dict[str, list]) -> Figure:
    """One row per swept setting: the val curves of its runs, and best val loss against the value.

    `sweeps` maps a TrainConfig key (e.g. "dropout", "learning_rate") to the runs that varied
    it; each run's value is read from its config.json.
    """
    fig = _figure((11, 3.6 * len(sweeps)))
    axes = fig.subplots(len(sweeps), 2, squeeze=False)
    for (key, runs), (left, right) in zip(sweeps.items(), axes, strict=True):
        runs = sorted((_as_run(r) for r in runs), key=lambda r: r.config.get(key, 0))
        values = [r.config.get(key) for r in runs]
        if None in values:
            raise GptkitError(f"a run in the {key} sweep has no {key} in its config.json")
        for run, value, color in zip(runs, values, _colors(len(runs)), strict=True):
            left.plot(run.iters, run.val_loss, "o-", ms=3, color=color, label=f"{key}={value:g}")
            left.plot(run.iters, run.train_loss, "--", color=color, alpha=0.6)
        left.set_title(f"{key} sweep: val (solid) and train (dashed)")
        left.set_xlabel("iteration")
        left.set_ylabel("loss")
        _perplexity_axis(left)
        left.grid(alpha=0.3)
        left.legend(fontsize=8)
        best = [float(r.val_loss.min()) for r in runs]
        final_train = [float(r.train_loss[-1]) for r in runs]
        right.plot(values, best, "o-", label="best val loss")
        right.plot(values, final_train, "s--", label="final train loss")
        if all(v > 0 for v in values) and max(values) / min(values) >= 3:
            right.set_xscale("log")  # learning rates are compared by factors, not differences
        right.set_xlabel(key)
        right.set_ylabel("loss")
        _perplexity_axis(right)
        right.set_title(f"best val loss against {key}")
        right.grid(alpha=0.3)
        right.legend(fontsize=8)
    return fig


def plot_run(out_dir: str | Path, path_png: str | Path | None = None) -> Path:
    """Save the loss plot of the run in `out_dir` as a PNG (default OUT_DIR/loss.png); returns its path."""
    run = read_metrics(out_dir)
    path = Path(path_png) if path_png is not None else Path(out_dir) / "loss.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_losses(run, steps=True, title=f"{run.name}: train and val loss").savefig(path, dpi=110)
    return path
