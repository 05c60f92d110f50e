"""Checkpoints: written atomically, read back safely.

A checkpoint is a plain dict saved with `torch.save`: model weights, optimizer and grad-scaler
state, the model's architecture (`model_args`), the training config, `iter_num`,
`best_val_loss`, RNG states and the data sampler's state; enough for `init_from=resume` to
continue exactly where a run stopped. Reading uses `weights_only=True`, so opening a
checkpoint never runs code from it.

Every file gptkit writes goes through here (`atomic_write`, `replacing`, `append_line`): whole
or not at all, and a write the machine refuses (disk full, quota) is one line naming the file
and the free space (`write_failed`), with the old file left as it was.

A LoRA run's checkpoint holds only its adapters as `model`, and under `lora` its settings and
the name or path of the frozen base it adapts.
"""

import contextlib
import errno
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
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
    new one, never half. A write the machine refuses (disk full, quota, ...) leaves the old file
    as it was and raises a GptkitError that names `path` and the free space (see `write_failed`).
    """
    with replacing(path) as tmp:
        with open(tmp, "wb") as raw:
            f = _ErrorRecorder(raw)
            try:
                write(f)
            except Exception as e:
                # torch.save turns the OSError of a full disk into a RuntimeError without its errno
                if f.error is not None and e is not f.error:
                    raise f.error from e
                raise


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to `path` to write by name; once written, fsync it and rename it over `path`.

    For writers that want a file name (safetensors, transformers); see `atomic_write`.
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(name, _mode_for(path))  # mkstemp's 0600 would hide a log from the live plot's user
    except OSError as e:
        raise write_failed(path, e) from None
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        err = _os_error(e)
        if err is not None:
            raise write_failed(path, err) from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def append_line(path: str | Path, line: str) -> None:
    """Append one line to a text file (a log): whole, or not at all.

    One `os.write` per line, and a short or failed write is cut back off, so a reader never
    sees half a line, even when the disk fills up mid-write.
    """
    data = (line.rstrip("\n") + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise write_failed(path, e) from None
    try:
        size = os.fstat(fd).st_size
        written = os.write(fd, data)
        if written != len(data):  # a full disk can take part of a write
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError as e:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise write_failed(path, e) from None
    finally:
        os.close(fd)


def write_failed(path: str | Path, err: OSError) -> GptkitError:
    """The one line for a write the machine refused: which file, why, the free space, what to do."""
    path = Path(path)
    where = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    try:
        free = f"{_human(shutil.disk_usage(where).free)} free"
    except OSError:
        free = "free space unknown"
    why = err.strerror or str(err) or type(err).__name__
    return GptkitError(
        f"could not write {path}: {why} ({free} on its disk); the files written before are intact: "
        "free some space (or use a folder on another disk) and run the command again"
    )


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, or those a plain open() would give a new file."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


class _ErrorRecorder:
    """A file wrapper that remembers the OSError its `write` raised."""

    def __init__(self, f: BinaryIO):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name):
        return getattr(self.f, name)


_OS_ERROR_IN_TEXT = re.compile(r"os error (\d+)")


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind `e`, also when a library wrapped it (safetensors: "... (os error 28)")."""
    if isinstance(e, OSError):
        return e
    if isinstance(e, Exception) and (m := _OS_ERROR_IN_TEXT.search(str(e))):
        code = int(m.group(1))
        return OSError(code, os.strerror(code))
    return None


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
    """The checkpoint `init_from=resume` continues from: the one with the highest iter_num.

    latest.pt on a tie (the same state). After a stop between evaluations, that is latest.pt,
    while ckpt.pt keeps the best evaluated model.
    """
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
