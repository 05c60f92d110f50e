"""Checkpoints: written atomically, read back safely.

A checkpoint is a plain dict saved with `torch.save`: model weights, optimizer and grad-scaler
state, the model's architecture (`model_args`), the training config, `iter_num`,
`best_val_loss`, RNG states and the data sampler's state; enough for `init_from=resume` to
continue exactly where a run stopped. Reading uses `weights_only=True`, so opening a
checkpoint never runs code from it. A LoRA run's checkpoint holds only its adapters as
`model`, and under `lora` its settings and the name or path of the frozen base it adapts.
"""

import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch

from gptkit.errors import GptkitError
from gptkit.lora import model_from_lora_checkpoint
from gptkit.model import GPT, GPTConfig

BEST = "ckpt.pt"  # the best model so far (by val loss), or the latest with always_save_checkpoint
LATEST = "latest.pt"  # the latest training state, when it is not also the best


def atomic_save(obj, path: str | Path) -> None:
    """torch.save `obj` to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(file)` on a temp file in the same folder, fsync it, then rename it over `path`.

    A process killed at any moment, or a reader at any moment, sees either the old file or the
    new one, never half.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def load(path: str | Path, map_location="cpu") -> dict:
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
    return ckpt


def clean_state_dict(state: dict) -> dict:
    """Strip the prefixes torch.compile (`_orig_mod.`) and DDP (`module.`) add to parameter names."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            k = k.removeprefix(prefix)
        out[k] = v
    return out


def model_from_checkpoint(ckpt: dict, path: str | Path = "checkpoint", dropout: float | None = None) -> GPT:
    """Build the GPT a checkpoint describes and load its weights.

    A LoRA run's checkpoint holds only adapters: its base is loaded from where the checkpoint
    says, and the adapters are added, not merged (`gptkit.lora.merge_lora` folds them in).
    """
    if ckpt.get("lora"):
        return model_from_lora_checkpoint(ckpt, path, dropout)
    args = dict(ckpt["model_args"])
    if dropout is not None:
        args["dropout"] = dropout
    try:
        config = GPTConfig(**args)
    except TypeError as e:
        raise GptkitError(f"{path} has model_args this gptkit does not know ({e})") from None
    model = GPT(config)
    state = clean_state_dict(ckpt["model"])
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


def latest_in(out_dir: str | Path) -> Path:
    """The checkpoint `init_from=resume` continues from: the one with the highest iter_num."""
    out_dir = Path(out_dir)
    found = [out_dir / name for name in (LATEST, BEST) if (out_dir / name).is_file()]
    if not found:
        raise GptkitError(
            f"nothing to resume in {out_dir}: it has no {BEST} or {LATEST}; "
            "start with --init_from=gpt2 (or scratch), or point --out_dir at an earlier run"
        )
    if len(found) == 1:
        return found[0]
    return max(found, key=lambda p: load(p).get("iter_num", -1))
