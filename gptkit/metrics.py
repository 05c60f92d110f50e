"""`metrics.jsonl`, a run's log: the one writer training uses and the one reader everything else uses.

Each line is one JSON record: `{"type": "eval", "iter", "train_loss", "val_loss", ...}` per
evaluation, `{"type": "step", "iter", "loss", "lr", "tokens_per_s", ...}` per logged step.
Lines are appended whole (`gptkit.files.append_line`), so a live reader never sees half of one.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gptkit import files
from gptkit.errors import GptkitError

METRICS = "metrics.jsonl"


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
    """Appends JSON lines to OUT_DIR/metrics.jsonl (rank 0 only)."""

    def __init__(self, path: Path, resume_iter: int | None):
        self.path = path
        if resume_iter is None:
            files.atomic_write(path, lambda f: None)
        elif path.exists():
            # Drop what a crashed run logged after the checkpoint it resumes from: the resumed
            # run repeats the steps from resume_iter on (its eval at resume_iter is not repeated).
            def before_resume(r: dict) -> bool:
                return r["iter"] < resume_iter or (r["iter"] == resume_iter and r["type"] == "eval")

            records = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
            text = "".join(json.dumps(r) + "\n" for r in records if before_resume(r))
            files.atomic_write(path, lambda f: f.write(text.encode()))

    def write(self, **record) -> None:
        files.append_line(self.path, json.dumps(record))  # whole lines only, even on a full disk
