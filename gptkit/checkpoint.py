"""Checkpoints: the one place that knows their format. Written atomically, read back safely.

A checkpoint is a `Checkpoint`, saved with `torch.save` as a plain dict of its fields: model
weights, optimizer and grad-scaler state, the model's architecture (`model_args`), the
training config, the dtype training ran in, the loop's counters (`iter_num`, `best_val_loss`,
...), every rank's RNG state and the data sampler's state; enough for `init_from=resume` to
continue exactly where a run stopped. The file names its `format_version`; `migrate` reads
every earlier one as the current format, so no other module needs to know the history.
Reading uses `weights_only=True`, so opening a checkpoint never runs code from it, and
`mmap=True`, so reading its header costs no weights.

A run's folder holds `ckpt.pt` (the best model by val loss) and, after an evaluation that did
not improve or a stop between evaluations, `latest.pt`: `latest_in` is what a resume continues
from, `best_in` what sampling and export use.

A LoRA run's checkpoint holds only its adapters as `model`, and under `lora` its settings and
the name or path of the frozen base it adapts.
"""

import hashlib
import math
import os
import pickle
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from gptkit import files
from gptkit.errors import GptkitError
from gptkit.lora import apply_lora, lora_state_dict, parse_targets
from gptkit.model import GPT, GPTConfig
from gptkit.pretrained import WeightsUnavailable

BEST = "ckpt.pt"  # the best model so far (by val loss), or the latest with always_save_checkpoint
LATEST = "latest.pt"  # the latest training state, when it is not also the best
FORMAT_VERSION = 2  # 1: the files written before checkpoints named their format (see `migrate`)


@dataclass
class Checkpoint:
    """What a checkpoint file holds. A new field takes a default, which is what older files read as."""

    model: dict  # the weights (a LoRA run's adapters only), without torch.compile's or DDP's prefixes
    model_args: dict  # the GPTConfig's fields
    config: dict = field(default_factory=dict)  # the TrainConfig's fields
    lora: dict | None = None  # a LoRA run's settings and its base (`lora_settings`); None: no adapters
    dtype: str | None = None  # the precision it was trained in (what --dtype=auto chose); None: not recorded
    cpu_matmul: dict | None = None  # CPU matmul routes it computed with ({route: bool}); None on a GPU
    iter_num: int = 0
    best_val_loss: float = math.inf
    evals_since_best: int = 0
    tokens_seen: int = 0
    rng: list | None = None  # every rank's RNG state, rank 0's first
    sampler: dict | None = None  # the training batches' position (`Batches.state_dict`)
    optimizer: dict | None = None
    scaler: dict | None = None
    labels: list | None = None  # a classifier's label names, in its head's output order; None: a language model
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        """The plain dict `torch.save` writes (loadable with weights_only=True)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: dict) -> "Checkpoint":
        """A saved dict of any format version, read as this one."""
        current = migrate(raw)
        return cls(**{f.name: current[f.name] for f in fields(cls) if f.name in current})

    @property
    def progress(self) -> dict:
        """The loop's counters (`TrainState`'s fields)."""
        return {key: getattr(self, key) for key in PROGRESS}

    def model_config(self, path: str | Path = "checkpoint", dropout: float | None = None) -> GPTConfig:
        """The architecture it holds (`dropout`: in place of the saved one)."""
        args = dict(self.model_args)
        if dropout is not None:
            args["dropout"] = dropout
        try:
            return GPTConfig(**args)
        except TypeError as e:
            raise GptkitError(f"{path} has model_args this gptkit does not know ({e})") from None


PROGRESS = ("iter_num", "best_val_loss", "evals_since_best", "tokens_seen")


def migrate(raw: dict) -> dict:
    """A saved checkpoint dict of any format version, as the current version writes it.

    Version 1 (no `format_version` key) may lack any of: `dtype` (a resumed `auto` run then
    measures again), `evals_since_best` and `tokens_seen` (they start from 0), `cpu_matmul` (the
    process measures its own), `lora`'s `base_fingerprint` (the base is then not compared);
    it may keep one RNG state rather than one a rank, and one "training" CPU matmul route for
    training's forward and backward together.
    """
    version = raw.get("format_version", 1)
    if version > FORMAT_VERSION:
        raise GptkitError(
            f"this checkpoint has format version {version}, newer than this gptkit's {FORMAT_VERSION}: "
            "read it with the gptkit that wrote it, or a newer one"
        )
    if version == FORMAT_VERSION:
        return raw
    out = dict(raw)
    if isinstance(out.get("rng"), dict):
        out["rng"] = [out["rng"]]
    routes = out.get("cpu_matmul")
    if routes and "training" in routes:
        training = bool(routes["training"])
        out["cpu_matmul"] = {"forward": training, "backward": training, "inference": bool(routes.get("inference"))}
    if out.get("lora"):
        out["lora"] = {"base_fingerprint": None, **out["lora"]}
    out["format_version"] = FORMAT_VERSION
    return out


def load(path: str | Path, map_location="cpu") -> Checkpoint:
    """Read a gptkit checkpoint, with one clear error for missing, corrupt or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise GptkitError(f"no checkpoint at {path}: train first, or point --out_dir at a run's folder")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as e:
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise GptkitError(f"{path} is truncated or corrupt ({reason}); use another checkpoint or train again") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise GptkitError(f"{path} is not a gptkit checkpoint (no model / model_args); was it saved by another tool?")
    try:
        return Checkpoint.from_dict(ckpt)
    except GptkitError as e:
        raise GptkitError(f"{path}: {e}") from None


def clean_state_dict(state: dict) -> dict:
    """Strip the prefixes torch.compile (`_orig_mod.`) and DDP (`module.`) add to parameter names."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            k = k.removeprefix(prefix)
        out[k] = v
    return out


def model_from_checkpoint(ckpt: Checkpoint, path: str | Path = "checkpoint", dropout: float | None = None) -> GPT:
    """Build the GPT a checkpoint describes and load its weights.

    A LoRA run's checkpoint holds only adapters: its base is loaded from where the checkpoint
    says, and the adapters are added, not merged (`gptkit.lora.merge_lora` folds them in).
    """
    if ckpt.lora:
        return model_from_lora_checkpoint(ckpt, path, dropout)
    model = GPT(ckpt.model_config(path, dropout))
    state = clean_state_dict(ckpt.model)
    _check_shapes(model, state, path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to wte
    if missing or unexpected:
        raise GptkitError(
            f"{path} holds weights of a different architecture than its model_args say "
            f"(missing {missing[:2]}, unexpected {unexpected[:2]}); it cannot be loaded"
        )
    return model


def _check_shapes(model: GPT, state: dict, path) -> None:
    ours = model.state_dict()
    for k, v in state.items():
        if k in ours and ours[k].shape != v.shape:
            raise GptkitError(
                f"{path} holds weights of a different architecture: {k} is {tuple(v.shape)}, "
                f"but its model_args give {tuple(ours[k].shape)}"
            )


def training_checkpoint(
    *,
    model,
    optimizer,
    scaler,
    model_config,
    config: dict,
    dtype,
    progress: dict,
    rngs,
    sampler,
    lora,
    cpu_matmul,
    labels: list | None = None,
) -> Checkpoint:
    """A training run's state; `progress` holds the loop's counters (`PROGRESS`).

    `rngs` holds every rank's RNG state, rank 0's first; `lora` a LoRA run's settings (None otherwise);
    `cpu_matmul` the CPU matmul routes it computed with (None on a GPU): a resumed run computes as this one did;
    `labels` a classifier's label names, in the order of its head's outputs (None for a language model).
    """
    return Checkpoint(
        model=clean_state_dict(model),
        model_args=asdict(model_config),
        config=config,
        lora=lora,
        dtype=str(dtype).removeprefix("torch."),  # what --dtype=auto chose
        cpu_matmul=cpu_matmul,
        **{key: progress[key] for key in PROGRESS},
        rng=rngs,
        sampler=sampler,
        optimizer=optimizer,
        scaler=scaler,
        labels=labels,
    )


def write(ckpt: Checkpoint, out_dir: str | Path, best: bool) -> Path:
    """Save `ckpt` as out_dir/ckpt.pt (`best`: latest.pt goes, ckpt.pt is the latest now) or latest.pt."""
    out_dir = Path(out_dir)
    path = out_dir / (BEST if best else LATEST)
    files.atomic_save(ckpt.to_dict(), path)
    if best:
        (out_dir / LATEST).unlink(missing_ok=True)
    return path


def best_in(out_dir: str | Path) -> Path:
    """The checkpoint to sample or export: ckpt.pt, or latest.pt when val never improved on step 0."""
    out = Path(out_dir)
    for name in (BEST, LATEST):
        if (out / name).is_file():
            return out / name
    if not out.is_dir():
        raise GptkitError(f"{out} is not a folder: pass a training run's --out_dir")
    raise GptkitError(f"{out} holds no {BEST} or {LATEST}: train a run there first")


def _latest(out_dir: Path) -> tuple[Path, Checkpoint]:
    found = [out_dir / name for name in (LATEST, BEST) if (out_dir / name).is_file()]
    if not found:
        raise GptkitError(
            f"nothing to resume in {out_dir}: it has no {BEST} or {LATEST}; "
            "start with --init_from=gpt2 (or scratch), or point --out_dir at an earlier run"
        )
    loaded = [(path, load(path)) for path in found]  # headers only (mmap)
    return max(loaded, key=lambda pc: pc[1].iter_num)  # latest.pt on a tie: listed first


def latest_in(out_dir: str | Path) -> Path:
    """The checkpoint `init_from=resume` continues from: the one with the highest iter_num.

    latest.pt on a tie (the same state). After a stop between evaluations, that is latest.pt,
    while ckpt.pt keeps the best evaluated model.
    """
    return _latest(Path(out_dir))[0]


@dataclass
class Resume:
    """The checkpoint a resumed run continues from, read once (`ckpt` None when there is none).

    Training reads it before it locks out_dir (the memory check needs its shape), so the error
    of a missing or broken checkpoint waits until `checked()`, after the lock's own.
    """

    out_dir: Path
    path: Path | None
    ckpt: Checkpoint | None
    error: GptkitError | None
    stamp: tuple | None

    @classmethod
    def find(cls, out_dir: str | Path) -> "Resume":
        out_dir = Path(out_dir)
        try:
            path, ckpt = _latest(out_dir)
        except GptkitError as e:
            return cls(out_dir, None, None, e, None)
        return cls(out_dir, path, ckpt, None, _stamp(path))

    def checked(self) -> "Resume":
        """Itself, or read again if the file changed since (another run ended meanwhile); raises its error."""
        fresh = self if self.path is not None and _stamp(self.path) == self.stamp else Resume.find(self.out_dir)
        if fresh.error is not None:
            raise fresh.error
        return fresh


def _stamp(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


# --- LoRA runs: the base they adapt, and rebuilding them -------------------------------------
def base_reference(init_from: str) -> str:
    """How a checkpoint names its base: a GPT-2 size as is, a directory by its absolute path."""
    path = Path(init_from)
    return str(path.resolve()) if path.is_dir() else init_from


def base_fingerprint(model: GPT) -> str:
    """A digest of a base model's weights as loaded (before cropping, adapters or casts).

    The checkpoint names its base by path or size, so a base later overwritten by other weights
    of the same shape would load without complaint and silently change every result; the
    digest tells them apart. It hashes an evenly spaced sample of each tensor (up to 4096
    values), enough to see any retrained or re-exported model, without reading gpt2-xl twice.
    """
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            flat = tensor.reshape(-1)
            sample = flat[:: max(1, flat.numel() // 4096)][:4096]
            digest.update(name.encode())
            digest.update(sample.float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def lora_settings(rank: int, alpha: float, dropout: float, targets, init_from: str, base: GPT) -> dict:
    """The LoRA settings a run keeps (and checkpoints), with the reference to its base."""
    return {
        "rank": rank,
        "alpha": float(alpha),
        "dropout": float(dropout),
        "targets": ",".join(parse_targets(targets)),
        "base": base_reference(init_from),
        "base_fingerprint": base_fingerprint(base),
    }


SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "vocab_size")


def model_from_lora_checkpoint(ckpt: Checkpoint, path: str | Path, dropout: float | None = None) -> GPT:
    """The base model a LoRA checkpoint names, with its adapters loaded (not merged)."""
    settings, args = ckpt.lora, dict(ckpt.model_args)
    base = settings["base"]
    where = f"the LoRA run in {Path(path).parent} was trained on base {base}"
    if Path(base).is_absolute() and not Path(base).is_dir():
        raise GptkitError(
            f"{where}, which is missing: restore that folder (the checkpoint holds only the adapters), "
            "or train a new run"
        )
    try:
        model = GPT.from_pretrained(base, {"dropout": args["dropout"] if dropout is None else dropout})
    except WeightsUnavailable as e:
        raise GptkitError(f"{where}, which cannot be loaded: {e}") from None
    except GptkitError as e:
        raise GptkitError(f"{where}, which no longer loads ({e}); restore the original base") from None
    got = {k: getattr(model.config, k) for k in SHAPE_KEYS}
    want = {k: args[k] for k in SHAPE_KEYS}
    if got != want or model.config.block_size < args["block_size"]:
        differ = ", ".join(f"{k}={got[k]} (was {want[k]})" for k in SHAPE_KEYS if got[k] != want[k])
        differ = differ or f"block_size={model.config.block_size} (was {args['block_size']})"
        raise GptkitError(f"{where}, which now has another shape: {differ}; restore the original base to use this run")
    saved = settings["base_fingerprint"]  # None: an older file that did not record it (see `migrate`)
    if saved is not None and saved != base_fingerprint(model):
        raise GptkitError(
            f"{where}, whose weights have changed since (same shape, other values): "
            "restore the original base to use this run"
        )
    if args["block_size"] < model.config.block_size:
        model.crop_block_size(args["block_size"])
    if args.get("n_labels"):  # a classifier: its head is in the checkpoint beside the adapters
        model.add_classifier(args["n_labels"])
    apply_lora(model, settings["rank"], settings["alpha"], settings["dropout"], settings["targets"])
    adapters = lora_state_dict(model)
    state = clean_state_dict(ckpt.model)
    if set(state) != set(adapters) or any(state[k].shape != adapters[k].shape for k in adapters):
        raise GptkitError(f"{path} holds adapters that do not fit its LoRA settings; it cannot be loaded")
    with torch.no_grad():
        for k, v in state.items():
            adapters[k].copy_(v)
    return model
