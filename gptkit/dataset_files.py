"""A prepared dataset's files: each written beside its final name, then all put in place together.

Both pipelines (`prepare_text`, `prepare_examples`) write through `_BinWriter` and `_commit`: an
interrupted run, or a full disk, never leaves half a dataset behind, and meta.json only ever
describes the bins beside it. `_tokenizer_meta` and `source_sha256` are what every meta.json
says of the tokenizer and of the source.
"""

import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from gptkit import files
from gptkit.data import BIN_DTYPE
from gptkit.errors import GptkitError
from gptkit.files import write_failed
from gptkit.tokenizer import get_encoding


class _BinWriter:
    """Appends arrays to `NAME.tmp`; `finish()` makes it durable, `commit()` renames it over `NAME`.

    A write the machine refuses (disk full) becomes a GptkitError naming `NAME` and the free space.
    """

    def __init__(self, path: Path):
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")
        try:
            self.file = open(self.tmp, "wb")
        except OSError as e:
            raise write_failed(self.path, e) from None
        self.count = 0

    def write(self, ids: np.ndarray, npy: bool = False) -> None:
        """Append the raw values, or (npy) the whole array as a .npy file with its header."""
        try:
            if npy:
                np.lib.format.write_array(self.file, ids, allow_pickle=False)
            else:
                self.file.write(ids.tobytes())
        except OSError as e:
            raise write_failed(self.path, e) from None
        self.count += len(ids)

    def finish(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        except OSError as e:
            raise write_failed(self.path, e) from None

    def commit(self) -> None:
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        with contextlib.suppress(OSError):  # closing flushes, which fails again on a full disk
            self.file.close()
        self.tmp.unlink(missing_ok=True)


def _tokenizer_meta() -> dict:
    return {"tokenizer": "gpt2", "vocab_size": get_encoding().n_vocab, "dtype": np.dtype(BIN_DTYPE).name}


def _commit(out_dir: Path, writers: list["_BinWriter"], meta: dict) -> None:
    """Make every file durable, then put them all in place together with meta.json.

    Everything is written and synced before anything replaces the old dataset, so a full disk
    leaves the old bins and meta.json together, as they were.
    """
    for w in writers:
        w.finish()
    meta_text = json.dumps(meta, indent=2) + "\n"
    with files.replacing(out_dir / "meta.json") as meta_tmp:
        meta_tmp.write_text(meta_text)
        for w in writers:
            w.commit()


def source_sha256(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.txt") if p.is_file())
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _check_fraction(option: str, value: float, low_ok: bool = False) -> None:
    if not (0 <= value < 1 if low_ok else 0 < value < 1):
        bounds = "at least 0 and below 1" if low_ok else "between 0 and 1 (exclusive)"
        raise GptkitError(f"{option} must be {bounds}, not {value}")
