"""Every file gptkit writes goes through here: whole or not at all.

- `atomic_write` / `atomic_save` / `replacing`: write beside the target, fsync, rename over it;
  a reader or a killed process sees the old file or the new one, never half.
- `append_line`: one whole line appended to a log, or nothing.
- `write_failed`: the one line for a write the machine refuses (disk full, quota), naming the
  file and the free space, with the files written before left intact.
- `check_writable_dir`: an output folder created if need be, and one line when it cannot be used.
"""

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import torch

from gptkit.errors import GptkitError


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


def check_writable_dir(path: str | Path, option: str) -> Path:
    """Create the folder `path` if it is missing and check that files can be made in it.

    `option` is the setting that chose it (`--out-dir`, `--out_dir`): the error says to change it.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GptkitError(f"cannot create {path}: {e.strerror}; choose another {option}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise GptkitError(f"{path} is not writable: choose another {option} or fix its permissions")
    return path


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
