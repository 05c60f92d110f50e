"""gptkit.plots: each picture draws what it is given (read back from the figure's artists), and
returns a closed figure (a notebook shows it when a cell ends with it)."""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_hex
from matplotlib.patches import Rectangle

from gptkit.metrics import RunMetrics
from gptkit.model import gpt2_config
from gptkit.plots import (
    draw_attention_masks,
    draw_block_diagram,
    draw_kv_cache,
    draw_logit_lens,
    draw_lora,
    draw_memory_bars,
    plot_accuracy,
)


def texts(fig) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in [*ax.texts, ax.title])


def test_every_picture_is_a_closed_figure():
    figures = [
        draw_block_diagram(gpt2_config("gpt2")),
        draw_lora(64, 192, 4),
        draw_kv_cache(3, 2),
        draw_memory_bars({"a": {"weights": 1.0}}),
        draw_logit_lens(np.eye(2), ["x", "y"], ["p", "q"]),
        draw_attention_masks([3, 2]),
        plot_accuracy(classifier_run()),
    ]
    assert not any(plt.fignum_exists(f.number) for f in figures if getattr(f, "number", None))
    assert all(f.axes for f in figures)


def test_block_diagram_names_the_configs_shapes():
    shown = texts(draw_block_diagram(gpt2_config("gpt2-medium")))
    assert "× 24" in shown and "16 heads" in shown and "1024 → 4096" in shown and "(T, 50257)" in shown


def test_lora_counts_what_trains():
    shown = texts(draw_lora(64, 192, 4))
    assert f"{4 * (64 + 192):,} numbers" in shown and f"{64 * 192:,}" in shown


def test_kv_cache_colours_one_new_position_a_step():
    prompt, new = 3, 4
    ax = draw_kv_cache(prompt, new).axes[0]
    colours = [to_hex(p.get_facecolor()) for p in ax.patches if isinstance(p, Rectangle)]
    assert len(colours) == (new + 1) * (prompt + new)
    assert colours.count("#4c72b0") == prompt + new  # every position is computed exactly once
    assert colours.count("#adb5bd") == sum(prompt + s - 1 for s in range(1, new + 1))  # then read from the cache


def test_memory_bars_stack_the_parts():
    rows = {"full": {"weights": 3 * 2**20, "gradients": 2**20}, "LoRA": {"weights": 3 * 2**20}}
    ax = draw_memory_bars(rows).axes[0]
    widths = [p.get_width() for p in ax.patches]
    assert widths == [3.0, 3.0, 1.0, 0.0]  # weights for each row, then gradients for each row
    assert ax.patches[2].get_x() == 3.0  # the gradients start where the weights end


def test_logit_lens_shows_the_values():
    values = np.array([[0.1, 0.2], [0.3, 0.9]])
    ax = draw_logit_lens(values, ["emb", "block 1"], ["a", "b"]).axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), values)
    assert [t.get_text() for t in ax.texts] == ["0.10", "0.20", "0.30", "0.90"]


def test_attention_masks_are_causal_and_mark_the_row_read():
    lengths = [5, 3, 7]
    for ax, n in zip(draw_attention_masks(lengths).axes, lengths, strict=True):
        grid = np.asarray(ax.images[0].get_array())
        assert grid.shape == (7, 7)
        assert (grid[np.triu_indices(7, 1)] == 0).all()  # nothing attends to a later position
        assert (grid[n - 1, :n] == 3).all() and (grid[n - 1, n:] == 0).all()  # the row read sees every real token
        assert (grid[:n, n:] == 0).all()  # no real token sees padding
        assert (grid[np.tril_indices(7)][np.tril_indices(7)[1] >= n] == 2).all()  # only padding queries do


def classifier_run() -> RunMetrics:
    evals = [
        {"iter": i, "train_accuracy": a, "val_accuracy": b}
        for i, a, b in ((0, 0.2, 0.25), (10, 0.5, 0.4), (20, 0.8, 0.6))
    ]
    return RunMetrics("cls", evals)


def test_accuracy_curves_plot_train_and_val():
    ax = plot_accuracy(classifier_run()).axes[0]
    train, val = ax.lines
    assert list(train.get_xdata()) == [0, 10, 20] and list(train.get_ydata()) == [0.2, 0.5, 0.8]
    assert list(val.get_ydata()) == [0.25, 0.4, 0.6] and train.get_linestyle() == "--"
