"""A run's log: the one writer training uses and the one reader everything else uses.

`metrics.jsonl` holds one JSON record a line: `{"type": "eval", "iter", "train_loss", "val_loss",
"train_ppl", "val_ppl", ...}` per evaluation, `{"type": "step", "iter", "loss", "lr", "tokens_per_s",
"mfu", ...}` per logged step. `tokens` is the real tokens trained on so far (padding left out);
`tokens_per_s` and `mfu` count the token positions the model computed (an example batch's real
tokens where it is computed unpadded: `gptkit.unpadding`). Lines are appended whole
(`gptkit.files.append_line`), so a live reader never sees half of one. `MetricsWriter` also hands
each record to the sinks a run asks for: TensorBoard (`--tensorboard=True`, OUT_DIR/tensorboard/)
and Weights & Biases (`--wandb_log=True`).
"""

import dataclasses
import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gptkit import files
from gptkit.errors import GptkitError

METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"  # OUT_DIR/tensorboard/: the event files `tensorboard --logdir` reads


def perplexity(loss):
    """exp(mean cross-entropy in nats): the number of tokens the model is as unsure as a uniform
    choice among. A loss too large for exp gives inf, not an OverflowError; works on arrays too."""
    if isinstance(loss, np.ndarray):
        with np.errstate(over="ignore"):
            return np.exp(loss)
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


@dataclass
class RunMetrics:
    """The evaluation and step records of one run, oldest first."""

    name: str
    evals: list[dict]
    steps: list[dict] = field(default_factory=list)
    out_dir: Path | None = None
    config: dict = field(default_factory=dict)  # the run's config.json, when there is one

    @classmethod
    def from_losses(cls, iters, train_loss, val_loss, name: str = "run") -> "RunMetrics":
        """A run made of evaluation records only: for synthetic curves and tests."""
        evals = [
            {"type": "eval", "iter": int(i), "train_loss": float(t), "val_loss": float(v)}
            for i, t, v in zip(iters, train_loss, val_loss, strict=True)
        ]
        return cls(name, evals)

    @property
    def iters(self) -> np.ndarray:
        return np.array([r["iter"] for r in self.evals], dtype=np.int64)

    @property
    def train_loss(self) -> np.ndarray:
        return np.array([r["train_loss"] for r in self.evals], dtype=np.float64)

    @property
    def val_loss(self) -> np.ndarray:
        return np.array([r["val_loss"] for r in self.evals], dtype=np.float64)

    @property
    def train_ppl(self) -> np.ndarray:
        return perplexity(self.train_loss)

    @property
    def val_ppl(self) -> np.ndarray:
        return perplexity(self.val_loss)

    @property
    def gap(self) -> np.ndarray:
        """The generalization gap, val loss minus train loss, at each evaluation."""
        return self.val_loss - self.train_loss


def read_metrics(source: str | Path, name: str | None = None) -> RunMetrics:
    """The records of a run: `source` is its out_dir or the path of its metrics.jsonl."""
    path = Path(source)
    out_dir = path if path.is_dir() else path.parent
    if path.is_dir():
        path = path / METRICS
    if not path.is_file():
        raise GptkitError(f"no metrics at {path}: train first, or point at a run's out_dir")
    evals: dict[int, dict] = {}
    steps: dict[int, dict] = {}
    lines = path.read_text().splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            # A run killed mid-write leaves at most a torn last line; anything else is a broken file.
            if lineno == len(lines):
                continue
            raise GptkitError(f"{path}:{lineno} is not JSON; is this a gptkit metrics.jsonl?") from None
        # A later record for the same iteration replaces an earlier one (a run resumed over it).
        if record.get("type") == "eval":
            evals[record["iter"]] = record
        elif record.get("type") == "step":
            steps[record["iter"]] = record
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return RunMetrics(
        name=name or out_dir.name,
        evals=[evals[i] for i in sorted(evals)],
        steps=[steps[i] for i in sorted(steps)],
        out_dir=out_dir,
        config=config,
    )


class MetricsWriter:
    """Appends records to OUT_DIR/metrics.jsonl (rank 0 only) and hands each one to `sinks`.

    Use it as a context manager (or call `close`), so the sinks flush what they hold.
    """

    def __init__(self, path: Path, resume_iter: int | None, sinks: tuple = ()):
        self.path = path
        self.sinks = sinks
        kept: list[dict] = []
        if resume_iter is None:
            files.atomic_write(path, lambda f: None)
        elif path.exists():
            # Drop what a crashed run logged after the checkpoint it resumes from: the resumed
            # run repeats the steps from resume_iter on (its eval at resume_iter is not repeated).
            def before_resume(r: dict) -> bool:
                return r["iter"] < resume_iter or (r["iter"] == resume_iter and r["type"] == "eval")

            records = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
            kept = [r for r in records if before_resume(r)]
            text = "".join(json.dumps(r) + "\n" for r in kept)
            files.atomic_write(path, lambda f: f.write(text.encode()))
        for sink in sinks:
            sink.resume(kept, resume_iter)

    @classmethod
    def for_run(cls, cfg, out_dir: Path, resume_iter: int | None) -> "MetricsWriter":
        """The writer for a training run: metrics.jsonl, plus TensorBoard and W&B if `cfg` asks."""
        sinks = []
        if cfg.tensorboard:
            sinks.append(TensorBoardSink(out_dir / TENSORBOARD, resume_iter))
        if cfg.wandb_log:
            sinks.append(WandbSink(cfg.wandb_project, cfg.wandb_run_name, config=dataclasses.asdict(cfg)))
        return cls(out_dir / METRICS, resume_iter, tuple(sinks))

    def write(self, **record) -> None:
        files.append_line(self.path, json.dumps(record))  # whole lines only, even on a full disk
        for sink in self.sinks:
            sink.write(record)

    def close(self, failed: bool = False) -> None:
        for sink in self.sinks:
            sink.close(failed)

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)


# --- sinks -----------------------------------------------------------------------------------------
# The scalars each record type shows, under the tags TensorBoard and W&B group them by (the part
# before "/" is the panel). Only step records give the lr: an evaluation's is the lr of the step
# at the same iteration.
TAGS = {
    "eval": {
        "train_loss": "loss/train",
        "val_loss": "loss/val",
        "train_ppl": "perplexity/train",
        "val_ppl": "perplexity/val",
    },
    "step": {
        "loss": "loss/step",
        "lr": "lr",
        "tokens_per_s": "speed/tokens_per_s",
        "mfu": "speed/mfu",
    },
}

# The optional packages: the setting that asks for each, what to import, and how to install it.
OPTIONAL = {
    "tensorboard": ("torch.utils.tensorboard", "pip install tensorboard"),
    "wandb_log": ("wandb", "pip install wandb"),
}


def scalars(record: dict) -> dict[str, float]:
    """The tagged scalars of one record (None, e.g. MFU on a CPU, is left out)."""
    tags = TAGS.get(record.get("type"), {})
    return {tag: float(record[key]) for key, tag in tags.items() if record.get(key) is not None}


def check_sinks(cfg) -> None:
    """Refuse, before any file is written, a sink whose package is not installed."""
    for setting, (module, pip) in OPTIONAL.items():
        if getattr(cfg, setting, False):
            try:
                importlib.import_module(module)
            except ImportError:
                raise GptkitError(
                    f"--{setting}=True needs {module.split('.')[-1]}: {pip} (or set --{setting}=False)"
                ) from None


class TensorBoardSink:
    """Scalars in TensorBoard event files under `log_dir`, one file per session of the run."""

    def __init__(self, log_dir: Path, resume_iter: int | None):
        from torch.utils.tensorboard import SummaryWriter

        earlier = sorted(log_dir.glob("events.out.tfevents.*"))
        if resume_iter is None:
            for path in earlier:  # a new run replaces metrics.jsonl, and so these
                path.unlink()
        self.fresh = resume_iter is None or not earlier
        # On resume, purge_step makes TensorBoard hide what earlier sessions logged from
        # resume_iter on: the resumed run writes those steps again.
        self.writer = SummaryWriter(str(log_dir), purge_step=None if self.fresh else resume_iter)

    def resume(self, kept: list[dict], resume_iter: int | None) -> None:
        # Purged from resume_iter on, so the kept evaluation at resume_iter is written again; a
        # run that turns TensorBoard on only now gets the whole log so far.
        for record in kept:
            if self.fresh or record["iter"] >= resume_iter:
                self.write(record)

    def write(self, record: dict) -> None:
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, record["iter"])
        if record.get("type") == "eval":
            self.writer.flush()  # a live `tensorboard --logdir` sees each evaluation when it happens

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class WandbSink:
    """Scalars in a Weights & Biases run (WANDB_MODE=offline keeps it on this machine)."""

    def __init__(self, project: str, name: str, config: dict):
        import wandb

        try:
            self.run = wandb.init(project=project, name=name, config=config)
        except wandb.errors.Error as e:  # not logged in, no network, ...
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise GptkitError(
                f"W&B did not start: {first}; run `wandb login`, set WANDB_MODE=offline, or --wandb_log=False"
            ) from None

    def resume(self, kept: list[dict], resume_iter: int | None) -> None:
        # Every init is a new W&B run: it gets the log so far, so its curves start at iteration 0.
        for record in kept:
            self.write(record)

    def write(self, record: dict) -> None:
        self.run.log(scalars(record), step=record["iter"])

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)
