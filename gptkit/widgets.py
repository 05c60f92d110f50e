"""Notebook helpers: live loss curves while `train` runs, a learning-rate / dropout panel, and a
panel to try a finished run.

    summary = train_live(cfg)            # train(cfg), redrawing the curves as metrics.jsonl grows
    run = short_finetune(base, 3e-4, 0.1)  # what the panel's button does, callable headless
    FinetunePanel(base)                  # sliders + button; each click adds a run to the plot
    SamplePanel(out_dir)                 # prompt, temperature, max tokens, generate: gptkit.sample
    ClassifierPanel(out_dir)             # a text box and a button: gptkit.classify's label and probabilities

Training always runs through `gptkit.train.train` in the calling thread (so errors and
Ctrl-C behave as usual); a background thread only reads metrics.jsonl and redraws.
"""

import base64
import contextvars
import dataclasses
import io
import threading
from collections.abc import Callable
from pathlib import Path

from gptkit.classify import load_classifier, probabilities
from gptkit.config import TrainConfig
from gptkit.diagnostics import plot_losses
from gptkit.metrics import METRICS, RunMetrics, read_metrics
from gptkit.sample import SampleConfig, sample
from gptkit.tokenizer import get_encoding
from gptkit.train import train


def _png(fig) -> bytes:
    # Rendered here rather than left to the notebook's matplotlib backend, which may not be set up.
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _display_handle_show() -> Callable:
    """A `show(fig)` that draws into one output area of the current cell, replacing it each time."""
    from IPython.display import Image, display

    handle = None

    def show(fig) -> None:
        nonlocal handle
        image = Image(data=_png(fig), format="png")
        if handle is None:
            handle = display(image, display_id=True)
        else:
            handle.update(image)

    return show


def train_live(
    cfg: TrainConfig, every: float = 2.0, show: Callable | None = None, others: list[RunMetrics] = ()
) -> dict:
    """`train(cfg)`, redrawing train/val loss every `every` seconds; returns train's summary.

    `show(fig)` displays a figure (default: one updating output in the current cell);
    `others` are finished runs drawn alongside for comparison.
    """
    show = show or _display_handle_show()
    path = Path(cfg.out_dir) / METRICS
    stop = threading.Event()
    # train() truncates metrics.jsonl when it starts; until then the file may be an older run's.
    last_drawn = path.read_bytes() if path.is_file() else None

    def draw() -> None:
        nonlocal last_drawn
        if not path.is_file():
            return
        text = path.read_bytes()
        if text == last_drawn:
            return
        last_drawn = text
        run = read_metrics(cfg.out_dir)
        if run.evals or run.steps:
            show(plot_losses(*others, run, steps=True, title=f"{run.name} (live)"))

    def watch() -> None:
        while not stop.wait(every):
            try:
                draw()
            except Exception:  # a redraw racing the run's own writes: the next one catches up
                continue  # (errors that last show in the final draw, on the caller's thread)

    # The copied context carries the notebook cell's identity, so figures land in this cell.
    watcher = threading.Thread(target=contextvars.copy_context().run, args=(watch,), daemon=True)
    watcher.start()
    try:
        summary = train(cfg)
    finally:
        stop.set()
        watcher.join()
    draw()
    return summary


def run_name(learning_rate: float, dropout: float) -> str:
    """How `short_finetune` labels a run in plots."""
    return f"lr={learning_rate:.1e} dropout={dropout:g}"


def short_finetune(
    base: TrainConfig, learning_rate: float, dropout: float, show: Callable | None = None, others: list = ()
) -> RunMetrics:
    """Run `base` with this learning rate and dropout, in a folder of its own under base.out_dir.

    This is the panel's button callback as a plain function: call it without widgets to get
    the same run. With `show`, the curves are redrawn live (see `train_live`), next to `others`.
    """
    out_dir = Path(base.out_dir) / f"lr{learning_rate:.1e}-dropout{dropout:g}"
    cfg = dataclasses.replace(
        base, learning_rate=learning_rate, dropout=dropout, out_dir=str(out_dir), overwrite_out_dir=True
    )
    if show is None:
        train(cfg)
    else:
        train_live(cfg, show=show, others=others)
    return read_metrics(out_dir, name=run_name(learning_rate, dropout))


class FinetunePanel:
    """A log slider for the learning rate, a dropout slider and a button that runs a short finetune.

    Each click calls `short_finetune(base, lr, dropout)` and redraws every run so far, so runs
    with different settings can be compared on one plot. `panel.runs` holds their metrics;
    show the panel with `panel.widget`.
    """

    def __init__(self, base: TrainConfig, lr_exponents: tuple[float, float] = (-5.0, -2.0), max_dropout: float = 0.5):
        import ipywidgets as w

        self.base = base
        self.runs: list[RunMetrics] = []
        self.lr = w.FloatLogSlider(
            value=base.learning_rate,
            base=10,
            min=lr_exponents[0],
            max=lr_exponents[1],
            step=0.1,
            description="learning rate",
            readout_format=".1e",
            style={"description_width": "initial"},
        )
        self.dropout = w.FloatSlider(
            value=base.dropout, min=0.0, max=max_dropout, step=0.05, description="dropout", readout_format=".2f"
        )
        self.button = w.Button(description=f"finetune {base.max_iters} iterations", button_style="primary")
        self.status = w.Label(value="choose a learning rate and dropout, then press the button")
        self.output = w.Output()
        self.button.on_click(lambda _button: self.run())
        self.widget = w.VBox([w.HBox([self.lr, self.dropout, self.button]), self.status, self.output])

    def _show(self, fig) -> None:
        data = {"image/png": base64.b64encode(_png(fig)).decode("ascii"), "text/plain": repr(fig)}
        # Replacing the widget's outputs directly works from the drawing thread too.
        self.output.outputs = ({"output_type": "display_data", "data": data, "metadata": {}},)

    def run(self) -> RunMetrics:
        """Finetune with the sliders' current values; also what a click does."""
        lr, dropout = self.lr.value, self.dropout.value
        self.button.disabled = True
        self.status.value = f"training with learning rate {lr:.1e}, dropout {dropout:g} ..."
        try:
            earlier = [r for r in self.runs if r.name != run_name(lr, dropout)]  # a rerun replaces its namesake
            run = short_finetune(self.base, lr, dropout, show=self._show, others=earlier)
        except Exception as e:
            self.status.value = f"failed: {e}"
            raise
        finally:
            self.button.disabled = False
        self.runs = earlier + [run]
        self._show(plot_losses(*self.runs, title="runs so far: train (dashed) and val (solid)"))
        best = min(self.runs, key=lambda r: r.val_loss.min())
        self.status.value = f"done: {len(self.runs)} run(s); lowest val loss {best.val_loss.min():.3f} with {best.name}"
        return run


class SamplePanel:
    """Try a run: a prompt box, temperature and max-tokens sliders, a generate button, the text.

    Each click calls `gptkit.sample.sample` on `out_dir`'s checkpoint (the best one, as
    `python -m gptkit.sample --out_dir=...` does) with the widgets' values and `seed`, so the
    same values give the same text as the CLI. With `templated=True` the prompt is wrapped in the
    run's example template and generation ends at <|endoftext|> (`--prompt`), for task runs.
    """

    def __init__(self, out_dir: str | Path, prompt: str = "ROMEO:", templated: bool = False, seed: int = 1337):
        import ipywidgets as w

        self.out_dir, self.templated, self.seed = str(out_dir), templated, seed
        self.prompt = w.Textarea(value=prompt, description="prompt", layout=w.Layout(width="60%"))
        self.temperature = w.FloatSlider(value=0.8, min=0.0, max=2.0, step=0.05, description="temperature")
        self.max_tokens = w.IntSlider(value=60, min=1, max=500, description="max tokens")
        self.button = w.Button(description="generate", button_style="primary")
        self.status = w.Label(value=f"generates from {self.out_dir}")
        self.output = w.Output()
        self.text = ""  # the last generation, prompt included
        self.button.on_click(lambda _button: self.generate())
        controls = w.VBox([self.temperature, self.max_tokens, self.button])
        self.widget = w.VBox([w.HBox([self.prompt, controls]), self.status, self.output])

    def config(self) -> SampleConfig:
        """The `gptkit.sample` settings the widgets hold now."""
        text = {"prompt": self.prompt.value} if self.templated else {"start": self.prompt.value}
        return SampleConfig(
            out_dir=self.out_dir, num_samples=1, max_new_tokens=self.max_tokens.value,
            temperature=self.temperature.value, seed=self.seed, **text,
        )  # fmt: skip

    def generate(self) -> str:
        """Generate with the widgets' current values; also what a click does."""
        cfg = self.config()
        self.button.disabled = True
        self.status.value = f"generating {cfg.max_new_tokens} tokens at temperature {cfg.temperature:g} ..."
        try:
            (self.text,) = sample(cfg)
        except Exception as e:
            self.status.value = f"failed: {e}"
            raise
        finally:
            self.button.disabled = False
        self.output.outputs = ({"output_type": "stream", "name": "stdout", "text": self.text + "\n"},)
        self.status.value = f"done: seed {cfg.seed}, temperature {cfg.temperature:g}, up to {cfg.max_new_tokens} tokens"
        return self.text


class ClassifierPanel:
    """Try a classifier: a text box, a classify button, and every label's probability as a bar.

    Each click scores the text with `out_dir`'s best checkpoint, as `python -m gptkit.classify
    OUT_DIR "TEXT"` does (the same label and probability); the model is loaded on the first click.
    `panel.probabilities` holds the last answer, label -> probability, most likely first.
    """

    def __init__(self, out_dir: str | Path, text: str = ""):
        import ipywidgets as w

        self.out_dir = str(out_dir)
        self.model, self.labels = None, []
        self.text = w.Textarea(value=text, description="text", layout=w.Layout(width="60%", height="6em"))
        self.button = w.Button(description="classify", button_style="primary")
        self.status = w.Label(value=f"classifies with {self.out_dir}")
        self.output = w.Output()
        self.probabilities: dict[str, float] = {}
        self.button.on_click(lambda _button: self.classify())
        self.widget = w.VBox([w.HBox([self.text, self.button]), self.status, self.output])

    def classify(self) -> dict[str, float]:
        """Score the text box's text; also what a click does."""
        self.button.disabled = True
        try:
            if self.model is None:
                model, self.labels = load_classifier(self.out_dir)
                self.model = model.eval()
            probs = probabilities(self.model, [get_encoding().encode_ordinary(self.text.value)])[0]
        except Exception as e:
            self.status.value = f"failed: {e}"
            raise
        finally:
            self.button.disabled = False
        ranked = sorted(zip(map(str, self.labels), probs.tolist(), strict=True), key=lambda lp: -lp[1])
        self.probabilities = dict(ranked)
        width = max(len(label) for label, _ in ranked)
        lines = "".join(f"{label:<{width}}  {p:6.1%}  {'█' * round(40 * p)}\n" for label, p in ranked)
        self.output.outputs = ({"output_type": "stream", "name": "stdout", "text": lines},)
        label, p = ranked[0]
        self.status.value = f"{label} ({p:.1%})"
        return self.probabilities
