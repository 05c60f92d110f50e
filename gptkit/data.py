"""Token bins on disk -> (x, y) batches.

A prepared dataset is a folder with `train.bin` and `val.bin` (GPT-2 token ids as uint16,
one long stream) and `meta.json`. Training reads random windows of `block_size + 1` tokens
through `np.memmap`, so a corpus far larger than memory works; evaluation reads a fixed set
of windows, the same at every evaluation, so loss curves are comparable.
"""

import json
from pathlib import Path

import numpy as np
import torch

from gptkit.errors import GptkitError

BIN_DTYPE = np.uint16


def read_meta(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "meta.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def open_split(data_dir: str | Path, split: str) -> np.memmap:
    """The memmapped token stream of one split, with clear errors when it is missing or empty."""
    path = Path(data_dir) / f"{split}.bin"
    if not path.is_file():
        name = Path(data_dir).name
        hint = (
            "python data/shakespeare/prepare.py"
            if name == "shakespeare"
            else f"python -m gptkit.prepare YOUR_TEXT --name {name}"
        )
        raise GptkitError(f"{path} not found: prepare the dataset first ({hint})")
    if path.stat().st_size < 2 * np.dtype(BIN_DTYPE).itemsize:
        raise GptkitError(f"{path} holds fewer than 2 tokens: prepare the dataset again with more text")
    return np.memmap(path, dtype=BIN_DTYPE, mode="r")


class Batches:
    """Windows of one split of a prepared dataset, as int64 `(x, y)` tensors.

    `x` is `(batch_size, block_size)` token ids and `y` the same shifted by one. Random training
    windows come from a seeded generator whose state is saved in checkpoints, so a resumed run
    sees exactly the windows the uninterrupted run would have seen.
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str,
        batch_size: int,
        block_size: int,
        device: str | torch.device = "cpu",
        seed: int = 1337,
        vocab_size: int | None = None,
    ):
        self.data_dir, self.split = Path(data_dir), split
        self.batch_size, self.block_size = batch_size, block_size
        self.device = torch.device(device)
        tokens = open_split(data_dir, split)
        self.num_tokens = len(tokens)
        if self.num_tokens < block_size + 1:
            raise GptkitError(
                f"{self.data_dir / (split + '.bin')} has {self.num_tokens:,} tokens, fewer than "
                f"block_size + 1 = {block_size + 1}: lower --block_size or give the split more text"
            )
        if vocab_size is not None:
            top = int(tokens.max())
            if top >= vocab_size:
                raise GptkitError(
                    f"{self.data_dir / (split + '.bin')} holds token id {top}, but the model's vocab_size is "
                    f"{vocab_size}: the data was prepared with another tokenizer; prepare it again"
                )
        self.rng = np.random.default_rng(seed)

    def draw_offsets(self, n: int) -> np.ndarray:
        """`n` random window starts; advances the generator (call it the same way on every rank)."""
        return self.rng.integers(0, self.num_tokens - self.block_size, size=n)

    def eval_offsets(self, num_batches: int) -> np.ndarray:
        """`num_batches * batch_size` window starts spread evenly over the split: a fixed pass."""
        n = num_batches * self.batch_size
        last = self.num_tokens - self.block_size - 1
        return np.linspace(0, last, n).round().astype(np.int64)

    def windows(self, offsets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The `(x, y)` batch for these window starts, moved to the device."""
        # A fresh memmap per batch: a long-lived one keeps growing its resident pages.
        tokens = np.memmap(self.data_dir / f"{self.split}.bin", dtype=BIN_DTYPE, mode="r")
        idx = offsets[:, None] + np.arange(self.block_size + 1)
        chunk = torch.from_numpy(tokens[idx].astype(np.int64))
        x, y = chunk[:, :-1], chunk[:, 1:]
        if self.device.type == "cuda":
            return (
                x.pin_memory().to(self.device, non_blocking=True),
                y.pin_memory().to(self.device, non_blocking=True),
            )
        return x.contiguous().to(self.device), y.contiguous().to(self.device)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One random training batch."""
        return self.windows(self.draw_offsets(self.batch_size))

    def eval_batches(self, num_batches: int, rank: int = 0, world_size: int = 1):
        """Yield the fixed evaluation batches, the same ones at every call.

        Under DDP each rank reads only its share: batches rank, rank + world_size, ...
        """
        offsets = self.eval_offsets(num_batches)
        for i in range(rank, num_batches, world_size):
            yield self.windows(offsets[i * self.batch_size : (i + 1) * self.batch_size])

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
