"""Pictures for the notebooks: the model's blocks, LoRA's W + B·A, the KV cache filling, memory
as stacked bars, a logit lens. Each function returns a closed matplotlib Figure: a notebook
shows it when the cell ends with it (or passes it to `display`), a script saves it.

    draw_block_diagram(model.config)
    draw_lora(d_in=64, d_out=192, rank=4)
    draw_kv_cache(prompt_len=3, new_tokens=4)
    draw_memory_bars({"full": {"weights": 4e6, "gradients": 4e6, ...}, "LoRA": {...}})
    draw_logit_lens(probabilities, row_labels, column_labels)
    draw_attention_masks([5, 3, 7])          # a right-padded batch: who attends to what
    plot_accuracy(run)                       # a classifier's train and val accuracy
"""

import matplotlib.colors
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle


def _figure(figsize: tuple[float, float]) -> Figure:
    fig = plt.figure(figsize=figsize, layout="constrained")
    plt.close(fig)  # shown where the caller decides, never piled up in pyplot's list
    return fig


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str) -> None:
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", fc=color, ec="black", lw=0.8))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8)


def _arrow(ax, x: float, y0: float, y1: float) -> None:
    ax.annotate("", (x, y1), (x, y0), arrowprops=dict(arrowstyle="->", lw=0.8))


def draw_block_diagram(config) -> Figure:
    """GPT-2 from tokens to logits: embeddings, n_layer pre-LayerNorm blocks with their two
    residual additions, the final LayerNorm and the head, with the shapes at each step."""
    c, v, t = config.n_embd, config.vocab_size, "T"
    fig = _figure((7.5, 7))
    ax = fig.add_subplot()
    ax.set(xlim=(0, 10), ylim=(0, 14))
    ax.axis("off")
    rows = [  # (y, text, color), bottom to top
        (0.3, f"token ids ({t},)", "#e9ecef"),
        (1.5, f"wte[ids] + wpe[0..{t}-1]   ({t}, {c})", "#cfe2ff"),
        (3.0, f"ln_1 → attention: {config.n_head} heads, causal   ({t}, {c})", "#ffd8a8"),
        (5.2, f"ln_2 → MLP: {c} → {4 * c} → GELU → {c}   ({t}, {c})", "#c8f7c5"),
        (9.0, f"ln_f   ({t}, {c})", "#cfe2ff"),
        (10.5, f"lm_head (= wteᵀ, tied)   ({t}, {v})", "#cfe2ff"),
        (12.0, "softmax → next-token probabilities", "#e9ecef"),
    ]
    for y, text, color in rows:
        _box(ax, 2, y, 6, 0.8, text, color)
    for (y0, *_), (y1, *_) in zip(rows, rows[1:], strict=False):
        _arrow(ax, 5, y0 + 0.85, y1 - 0.05)
    ax.add_patch(Rectangle((1.2, 2.6), 7.6, 4.4, fill=False, ls="--", lw=1))
    ax.text(9.0, 4.8, f"× {config.n_layer}\nblocks", fontsize=10, va="center")
    for y in (4.1, 6.3):  # the residual additions: x = x + sublayer(x)
        ax.text(8.1, y, "⊕", fontsize=14, va="center")
        ax.text(0.05, y, "x + …", fontsize=8, va="center", color="gray")
    ax.text(5, 7.6, "residual stream: every block adds to it", ha="center", fontsize=8, color="gray")
    return fig


def draw_lora(d_in: int, d_out: int, rank: int) -> Figure:
    """W (d_out × d_in, frozen) + B (d_out × r) · A (r × d_in), drawn to scale, with their sizes."""
    fig = _figure((9, 3.4))
    ax = fig.add_subplot()
    scale = 2.6 / max(d_in, d_out)
    w, h, r = d_in * scale, d_out * scale, max(rank * scale, 0.04)
    pieces = [  # (x, width, height, label, color)
        (0.0, w, h, f"W  {d_out}×{d_in}\nfrozen\n{d_in * d_out:,}", "#ced4da"),
        (w + 0.7, r, h, f"B  {d_out}×{rank}\nzeros at step 0", "#ffd8a8"),
        (w + 1.1 + r, w, r, f"A  {rank}×{d_in}: random at step 0", "#c8f7c5"),
    ]
    for x, pw, ph, label, color in pieces:
        ax.add_patch(Rectangle((x, (h - ph) / 2), pw, ph, fc=color, ec="black"))
        above = pw < 0.5 or ph < 0.5  # a thin piece is labelled above it
        y = (h + ph) / 2 + 0.2 if above else h / 2
        ax.text(x + pw / 2, y, label, ha="center", va="bottom" if above else "center", fontsize=8)
    ax.text(w + 0.35, h / 2, "+", fontsize=18, ha="center", va="center")
    ax.text(w + 0.9 + r, h / 2, "·", fontsize=18, ha="center", va="center")
    trained = rank * (d_in + d_out)
    ax.set_title(
        f"y = W x + (alpha/r) · B A x   —   LoRA trains {trained:,} numbers, {trained / (d_in * d_out):.1%} of W"
    )
    ax.set(xlim=(-0.1, 2 * w + 1.3 + r), ylim=(-0.1, h + 0.6), aspect="equal")
    ax.axis("off")
    return fig


def draw_kv_cache(prompt_len: int, new_tokens: int) -> Figure:
    """One row per generation step: the keys and values the cache holds (grey), the position
    computed this step (blue), and what the query of the new token attends to (all of them)."""
    total = prompt_len + new_tokens
    fig = _figure((2.5 + 0.6 * total, 1.2 + 0.5 * (new_tokens + 1)))
    ax = fig.add_subplot()
    for step in range(new_tokens + 1):
        filled = prompt_len + step
        computed = range(prompt_len) if step == 0 else [filled - 1]
        for pos in range(total):
            color = "#4c72b0" if pos in computed else "#adb5bd" if pos < filled else "white"
            ax.add_patch(Rectangle((pos, -step), 0.9, 0.8, fc=color, ec="black", lw=0.6))
    ax.set(xlim=(-0.1, total), ylim=(-new_tokens - 0.1, 0.9))
    ax.set_yticks(
        [-s + 0.4 for s in range(new_tokens + 1)], ["prompt"] + [f"token {s}" for s in range(1, new_tokens + 1)]
    )
    ax.set_xticks([p + 0.45 for p in range(total)], range(total))
    ax.set_xlabel("position in the cache (keys and values of every layer)")
    title = "blue: computed this step · grey: read from the cache\nthe new token's query attends to every filled one"
    ax.set_title(title, fontsize=9)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    return fig


def draw_memory_bars(rows: dict[str, dict[str, float]], unit: float = 2**20, unit_name: str = "MiB") -> Figure:
    """Stacked bars, one per row (e.g. a training setting), one segment per part (weights,
    gradients, optimizer, activations ...): where the memory goes, at a glance."""
    parts = list(dict.fromkeys(p for parts in rows.values() for p in parts))
    fig = _figure((8, 0.9 + 0.55 * len(rows)))
    ax = fig.add_subplot()
    left = np.zeros(len(rows))
    colors = plt.get_cmap("tab10").colors
    for i, part in enumerate(parts):
        sizes = np.array([rows[name].get(part, 0) / unit for name in rows])
        ax.barh(list(rows), sizes, left=left, color=colors[i % 10], label=part)
        left += sizes
    for y, total in enumerate(left):
        ax.text(total, y, f" {total:,.1f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(unit_name)
    ax.set_xlim(0, left.max() * 1.15)
    ax.legend(fontsize=8, ncols=min(len(parts), 4), loc="lower right")
    return fig


def draw_logit_lens(values: np.ndarray, rows: list[str], columns: list[str], title: str = "") -> Figure:
    """A heatmap with each cell's value: e.g. the probability of the right next token (columns:
    positions) read from the residual stream after each block (rows)."""
    values = np.asarray(values)
    fig = _figure((1.2 + 0.8 * len(columns), 0.9 + 0.45 * len(rows)))
    ax = fig.add_subplot()
    ax.imshow(values, cmap="Blues", vmin=0, vmax=max(values.max(), 1e-9), aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        ax.text(
            j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > values.max() / 2 else "black"
        )
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_title(title, fontsize=9)
    return fig


def draw_attention_masks(lengths: list[int]) -> Figure:
    """What each position of a right-padded batch attends to (rows: queries, columns: keys), one
    panel per text: causal attention over real tokens (blue), over padding (grey; only padding
    queries ever see it), and the row a classifier reads, the last real token's (dark blue)."""
    width = max(lengths)
    fig = _figure((2.6 * len(lengths) + 0.6, 3.0))
    colors = matplotlib.colors.ListedColormap(["white", "#9ecae1", "#d9d9d9", "#08519c"])
    for i, n in enumerate(lengths):
        ax = fig.add_subplot(1, len(lengths), i + 1)
        query, key = np.arange(width)[:, None], np.arange(width)[None]
        grid = np.where(key <= query, np.where(key < n, 1, 2), 0)
        grid[n - 1, :n] = 3
        ax.imshow(grid, cmap=colors, vmin=0, vmax=3)
        ax.set_xticks(range(width), ["pad" if t >= n else str(t) for t in range(width)], fontsize=7, rotation=90)
        ax.set_yticks(range(width), ["pad" if t >= n else str(t) for t in range(width)], fontsize=7)
        ax.set_xlabel("key (attended to)", fontsize=8)
        ax.set_title(f"text {i}: {n} tokens, read at {n - 1}", fontsize=9)
    fig.axes[0].set_ylabel("query (position)", fontsize=8)
    return fig


def plot_accuracy(*runs, title: str = "train (dashed) and val (solid) accuracy") -> Figure:
    """A classification run's train and val accuracy at each evaluation, one colour per run
    (gptkit.metrics.RunMetrics, as read_metrics gives them)."""
    fig = _figure((8, 4))
    ax = fig.add_subplot()
    for run, color in zip(runs, plt.get_cmap("tab10").colors, strict=False):
        iters = [r["iter"] for r in run.evals]
        ax.plot(iters, [r["train_accuracy"] for r in run.evals], "--", color=color, label=f"{run.name} train")
        ax.plot(iters, [r["val_accuracy"] for r in run.evals], "o-", color=color, ms=3, label=f"{run.name} val")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_xlabel("iteration")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
