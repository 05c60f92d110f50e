"""Token bins on disk -> (x, y) batches.

A prepared dataset is a folder with `meta.json` and, per split, `SPLIT.bin` (GPT-2 token ids
as uint16). Its `kind` says how to read them:

- `stream` (`Batches`): one long stream of text. Training reads random windows of
  `block_size + 1` tokens through `np.memmap`, so a corpus far larger than memory works;
  evaluation reads a fixed set of windows, the same at every evaluation, so loss curves are
  comparable.
- `examples` (`ExampleBatches`): prompt -> response examples end to end, with
  `SPLIT.offsets.npy` (where each starts) and `SPLIT.mask.bin` (1 on response tokens). A batch
  holds whole examples, right-padded to its longest; the targets of padding, and with
  `mask_prompt` of the prompts, are IGNORE_INDEX, so the loss is on the responses only.
- `preference` (`PairBatches`): prompt / chosen / rejected segments with `SPLIT.offsets.npy`
  (`gptkit.prepare_pairs`); a batch of pairs is their chosen rows, then their rejected rows,
  with targets on the responses only.
- `classification` (`LabelledBatches`): texts end to end with `SPLIT.offsets.npy` and
  `SPLIT.labels.npy` (a label id per text). A batch is `(x, last, labels)`: the texts
  right-padded to the longest, the position of each one's last real token, and the label ids.
"""

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from gptkit.errors import GptkitError
from gptkit.model import IGNORE_INDEX
from gptkit.tokenizer import EOT_ID

BIN_DTYPE = np.uint16
MASK_DTYPE = np.uint8
LABEL_DTYPE = np.int32


def read_meta(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "meta.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def dataset_kind(data_dir: str | Path) -> str:
    """ "stream", "examples", "preference" or "classification"; a dataset prepared before meta.json said is a stream."""
    return read_meta(data_dir).get("kind", "stream")


def _missing(path: Path, data_dir: str | Path) -> GptkitError:
    data_dir = Path(data_dir)
    if data_dir.name == "shakespeare":
        hint = "python data/shakespeare/prepare.py"
    elif (data_dir / "prepare.py").is_file():  # a dataset that ships with its own script
        hint = f"python {data_dir / 'prepare.py'}"
    else:
        hint = f"python -m gptkit.prepare YOUR_TEXT --name {data_dir.name}"
    return GptkitError(f"{path} not found: prepare the dataset first ({hint})")


def open_split(data_dir: str | Path, split: str) -> np.memmap:
    """The memmapped token stream of one split, with clear errors when it is missing or empty."""
    path = Path(data_dir) / f"{split}.bin"
    if not path.is_file():
        raise _missing(path, data_dir)
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

    def draw_step(self, micro_steps: int, rank: int = 0, world_size: int = 1) -> "Step":
        """The windows of one optimizer step: `micro_steps` micro-batches on each of `world_size`
        processes. Every rank draws the whole step, so the generators stay in step and the global
        batch is the same whatever the number of ranks; this rank takes its consecutive share."""
        offsets = self.draw_offsets(micro_steps * world_size * self.batch_size)
        offsets = offsets.reshape(micro_steps * world_size, self.batch_size)
        mine = list(offsets[rank * micro_steps : (rank + 1) * micro_steps])
        return Step(mine, offsets.size * self.block_size)  # every position is a target

    def batch(self, offsets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.windows(offsets)

    def eval_count(self, num_batches: int) -> int:
        """How many batches an evaluation of `num_batches` reads (all of them: windows never run out)."""
        return num_batches

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


def _to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


# --- examples ---------------------------------------------------------------------------------
class Examples(NamedTuple):
    """One split of an example dataset, memory-mapped: example i is tokens[offsets[i]:offsets[i + 1]]."""

    tokens: np.ndarray  # BIN_DTYPE token ids
    mask: np.ndarray  # MASK_DTYPE: 1 on response tokens (each response's <|endoftext|> included)
    offsets: np.ndarray  # int64, one more than there are examples

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def open_examples(data_dir: str | Path, split: str) -> Examples:
    """The memmapped examples of one split, with clear errors when its files are missing or disagree."""
    data_dir = Path(data_dir)
    paths = [data_dir / f"{split}{suffix}" for suffix in (".bin", ".mask.bin", ".offsets.npy")]
    for path in paths:
        if not path.is_file():
            raise _missing(path, data_dir)
    tokens = np.memmap(paths[0], dtype=BIN_DTYPE, mode="r")
    mask = np.memmap(paths[1], dtype=MASK_DTYPE, mode="r")
    offsets = np.load(paths[2])
    if len(tokens) != len(mask) or len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(tokens):
        raise GptkitError(f"the files of {data_dir / split} do not agree with each other: prepare the dataset again")
    return Examples(tokens, mask, offsets)


class Step(NamedTuple):
    """The examples of one optimizer step, as `ExampleBatches.draw_step` gives them.

    For every token to weigh the same, each micro-batch's loss is its summed cross-entropy
    divided by `num_targets`, the step's count of targets over all processes:
    `model(x, y, reduction="sum") / num_targets`, times world_size under DDP (which averages
    the gradients of the processes where this wants their sum).
    """

    micro_batches: list[np.ndarray]  # this process's example indices, one array per micro-batch
    num_targets: int  # target tokens in the whole step, all processes together


class ExampleBatches:
    """Micro-batches of whole examples from one split of an example dataset, as int64 `(x, y)`.

    A batch holds `batch_size` examples (fewer at the end of an evaluation pass), right-padded to
    its longest, at most `block_size` positions: an example longer than `block_size + 1`
    tokens is cut (`num_cut` counts them). `y` is `x` shifted by one, with IGNORE_INDEX where
    there is no target: on padding, and with `mask_prompt` on every token that is not part of
    a response. Each response's `<|endoftext|>` stays a target, so the model learns to stop.

    Training draws examples without replacement in an order reshuffled every epoch from
    (seed, epoch); `state_dict()` is (epoch, position), so a resumed run draws exactly what the
    uninterrupted run would have.
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str,
        batch_size: int,
        block_size: int,
        device: str | torch.device = "cpu",
        seed: int = 1337,
        mask_prompt: bool = True,
        vocab_size: int | None = None,
    ):
        self.data_dir, self.split = Path(data_dir), split
        self.batch_size, self.block_size, self.mask_prompt = batch_size, block_size, mask_prompt
        self.device, self.seed = torch.device(device), seed
        self.examples = open_examples(data_dir, split)
        self.lengths = np.minimum(self.examples.lengths, block_size + 1)  # as trained: cut to fit
        self.num_examples = len(self.lengths)
        self.num_cut = int((self.examples.lengths > block_size + 1).sum())
        self.targets = self._count_targets()
        self._check(vocab_size)
        self.epoch, self.position = 0, 0
        self.order = self._permutation(0)

    def _count_targets(self) -> np.ndarray:
        """Targets per example, as cut: every token after the first, or (mask_prompt) its response tokens."""
        if not self.mask_prompt:
            return self.lengths - 1
        mask, starts = self.examples.mask, self.examples.offsets[:-1]
        # response tokens of each whole example, less its first token's (never a target: nothing predicts it)
        counts = np.add.reduceat(mask, starts, dtype=np.int64) - mask[starts]
        for i in np.flatnonzero(self.examples.lengths > self.lengths):  # the few that are cut: count what is kept
            counts[i] = int(mask[starts[i] + 1 : starts[i] + self.lengths[i]].sum())
        return counts

    def _check(self, vocab_size: int | None) -> None:
        where = self.data_dir / self.split
        if self.num_cut == self.num_examples:
            raise GptkitError(
                f"every example of {where} is longer than block_size + 1 = {self.block_size + 1} tokens (the "
                f"shortest has {int(self.examples.lengths.min())}): raise --block_size or shorten the examples"
            )
        if self.targets.sum() == 0:
            raise GptkitError(f"no example of {where} keeps a response token within block_size {self.block_size}")
        if vocab_size is not None and len(self.examples.tokens) and int(self.examples.tokens.max()) >= vocab_size:
            raise GptkitError(
                f"{where}.bin holds token id {int(self.examples.tokens.max())}, but the model's vocab_size is "
                f"{vocab_size}: the data was prepared with another tokenizer; prepare it again"
            )

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    @property
    def epochs_done(self) -> float:
        """Epochs of training drawn so far, fractional (for metrics.jsonl)."""
        return self.epoch + self.position / self.num_examples

    def draw_examples(self, n: int) -> np.ndarray:
        """The next `n` example indices of the training order; an epoch's end reshuffles."""
        picked = []
        while n > 0:
            take = self.order[self.position : self.position + n]
            picked.append(take)
            n -= len(take)
            self.position += len(take)
            if self.position == self.num_examples:
                self.epoch, self.position = self.epoch + 1, 0
                self.order = self._permutation(self.epoch)
        return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)

    def draw_step(self, micro_steps: int, rank: int = 0, world_size: int = 1) -> Step:
        """The examples of one optimizer step: `micro_steps` micro-batches on each of `world_size`
        processes (call it the same way on every rank). The step's examples are sorted by length
        before they are dealt out, so a micro-batch holds examples of similar length: less padding,
        and the same gradient, as each token weighs the same wherever it lands."""
        indices = self.draw_examples(micro_steps * world_size * self.batch_size)
        indices = indices[np.argsort(self.lengths[indices], kind="stable")]
        chunks = np.split(indices, micro_steps * world_size)
        return Step(chunks[rank::world_size], self.num_targets(indices))

    def num_targets(self, indices: np.ndarray) -> int:
        """How many target tokens these examples hold (as cut to block_size)."""
        return int(self.targets[indices].sum())

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The `(x, y)` micro-batch of these examples: right-padded to the longest, moved to the device."""
        lengths = self.lengths[indices]
        width = int(lengths.max()) - 1
        x = np.full((len(indices), width), EOT_ID, dtype=np.int64)  # any id: a pad is never a target
        y = np.full((len(indices), width), IGNORE_INDEX, dtype=np.int64)
        for row, (i, n) in enumerate(zip(indices, lengths, strict=True)):
            start = self.examples.offsets[i]
            ids = self.examples.tokens[start : start + n].astype(np.int64)
            x[row, : n - 1] = ids[:-1]
            keep = self.examples.mask[start + 1 : start + n] == 1 if self.mask_prompt else True
            y[row, : n - 1] = np.where(keep, ids[1:], IGNORE_INDEX)
        return _to_device(torch.from_numpy(x), torch.from_numpy(y), self.device)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One training micro-batch (for a loop that does not need the step's target count)."""
        return self.batch(self.draw_examples(self.batch_size))

    def eval_indices(self, num_batches: int | None = None) -> list[np.ndarray]:
        """The fixed evaluation pass: the examples in file order, in micro-batches; all of them, or
        the first `num_batches` micro-batches. The same at every call, so val losses compare."""
        chunks = np.split(np.arange(self.num_examples), range(self.batch_size, self.num_examples, self.batch_size))
        return chunks if num_batches is None else chunks[:num_batches]

    def eval_count(self, num_batches: int | None = None) -> int:
        """How many micro-batches an evaluation of (at most) `num_batches` reads."""
        return len(self.eval_indices(num_batches))

    def eval_batches(self, num_batches: int | None = None, rank: int = 0, world_size: int = 1):
        """Yield the fixed evaluation micro-batches; under DDP rank r reads r, r + world_size, ...

        Average the loss token-weighted: sum each batch's summed loss and its count of targets
        (over the ranks too), then divide; a mean of batch means would weigh short examples more.
        """
        for indices in self.eval_indices(num_batches)[rank::world_size]:
            yield self.batch(indices)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self.order = self._permutation(self.epoch)


# --- preference pairs -------------------------------------------------------------------------
def open_pairs(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, offsets) of one split of a preference dataset: pair i is the segments 3i (prompt),
    3i + 1 (chosen) and 3i + 2 (rejected), segment j being tokens[offsets[j]:offsets[j + 1]]."""
    data_dir = Path(data_dir)
    paths = [data_dir / f"{split}{suffix}" for suffix in (".bin", ".offsets.npy")]
    for path in paths:
        if not path.is_file():
            raise _missing(path, data_dir)
    tokens, offsets = np.memmap(paths[0], dtype=BIN_DTYPE, mode="r"), np.load(paths[1])
    if len(offsets) < 4 or (len(offsets) - 1) % 3 or offsets[0] != 0 or offsets[-1] != len(tokens):
        raise GptkitError(f"the files of {data_dir / split} do not agree with each other: prepare the dataset again")
    return tokens, offsets


class PairBatches(ExampleBatches):
    """Micro-batches of preference pairs, as `(x, y, reference)`.

    A batch of B pairs is 2B rows: prompt + chosen in rows 0..B-1, prompt + rejected in rows
    B..2B-1 (so the policy scores both in one forward pass), right-padded to the longest and cut
    to block_size + 1 tokens. `y` is IGNORE_INDEX except on response tokens (each response's
    `<|endoftext|>` included): a row's log-probability is the sum over its response. `reference`
    is the reference model's log-probabilities of those 2B rows when they were computed ahead
    (`set_reference`), else None. Drawing, evaluation order and exact resume are ExampleBatches'.
    A step's unit is the pair: `num_targets` counts pairs.
    """

    def __init__(self, data_dir, split, batch_size, block_size, device="cpu", seed=1337, vocab_size=None):
        self.data_dir, self.split = Path(data_dir), split
        self.batch_size, self.block_size, self.mask_prompt = batch_size, block_size, True
        self.device, self.seed = torch.device(device), seed
        self.tokens, self.offsets = open_pairs(data_dir, split)
        self.segments = np.diff(self.offsets).reshape(-1, 3)  # prompt, chosen, rejected lengths
        rows = self.segments[:, :1] + self.segments[:, 1:]
        self.lengths = np.minimum(rows.max(axis=1), block_size + 1)  # the pair's longer row, as cut
        self.num_examples = len(self.segments)
        self.num_cut = int((rows > block_size + 1).any(axis=1).sum())
        self.targets = np.ones(self.num_examples, dtype=np.int64)  # what a step counts: pairs
        self.reference = None
        self._check_pairs(vocab_size)
        self.epoch, self.position = 0, 0
        self.order = self._permutation(0)

    def _check_pairs(self, vocab_size: int | None) -> None:
        where = self.data_dir / self.split
        full = int((self.segments[:, 0] >= self.block_size + 1).sum())
        if full:
            raise GptkitError(
                f"{full} pair(s) of {where} have prompts of block_size + 1 = {self.block_size + 1} tokens or more, "
                "leaving no response to compare: raise --block_size or shorten the prompts"
            )
        if vocab_size is not None and len(self.tokens) and int(self.tokens.max()) >= vocab_size:
            raise GptkitError(
                f"{where}.bin holds token id {int(self.tokens.max())}, but the model's vocab_size is "
                f"{vocab_size}: the data was prepared with another tokenizer; prepare it again"
            )

    def set_reference(self, logps: np.ndarray) -> None:
        """The reference model's (chosen, rejected) log-probabilities of every pair, (num_pairs, 2)."""
        if logps.shape != (self.num_examples, 2):
            raise GptkitError(
                f"the reference log-probabilities hold {logps.shape[0]} pairs, but {self.data_dir / self.split} "
                f"has {self.num_examples}: the dataset changed since the run began; start a new run"
            )
        self.reference = logps

    def num_targets(self, indices: np.ndarray) -> int:
        return len(indices)

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The `(x, y, reference)` micro-batch of these pairs: chosen rows first, then rejected."""
        rows = [(i, 1) for i in indices] + [(i, 2) for i in indices]
        width = int(self.lengths[indices].max()) - 1
        x = np.full((len(rows), width), EOT_ID, dtype=np.int64)  # any id: a pad is never a target
        y = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
        for row, (i, part) in enumerate(rows):
            prompt = self.tokens[self.offsets[3 * i] : self.offsets[3 * i + 1]]
            response = self.tokens[self.offsets[3 * i + part] : self.offsets[3 * i + part + 1]]
            ids = np.concatenate([prompt, response]).astype(np.int64)[: self.block_size + 1]
            n = len(ids)
            x[row, : n - 1] = ids[:-1]
            y[row, len(prompt) - 1 : n - 1] = ids[len(prompt) :]
        x, y = _to_device(torch.from_numpy(x), torch.from_numpy(y), self.device)
        if self.reference is None:
            return x, y, None
        ref = torch.from_numpy(np.ascontiguousarray(self.reference[indices].T).reshape(-1)).to(self.device)
        return x, y, ref


# --- labelled examples (classification) ------------------------------------------------------
class Labelled(NamedTuple):
    """One split of a classification dataset, memory-mapped: text i is tokens[offsets[i]:offsets[i + 1]]."""

    tokens: np.ndarray  # BIN_DTYPE token ids
    offsets: np.ndarray  # int64, one more than there are texts
    labels: np.ndarray  # LABEL_DTYPE label ids (places in meta.json's "labels")

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def open_labelled(data_dir: str | Path, split: str) -> Labelled:
    """The memmapped texts and labels of one split, with clear errors when its files are missing or disagree."""
    data_dir = Path(data_dir)
    paths = [data_dir / f"{split}{suffix}" for suffix in (".bin", ".offsets.npy", ".labels.npy")]
    for path in paths:
        if not path.is_file():
            raise _missing(path, data_dir)
    tokens = np.memmap(paths[0], dtype=BIN_DTYPE, mode="r")
    offsets, labels = np.load(paths[1]), np.load(paths[2], mmap_mode="r")
    if len(offsets) != len(labels) + 1 or len(labels) == 0 or offsets[0] != 0 or offsets[-1] != len(tokens):
        raise GptkitError(f"the files of {data_dir / split} do not agree with each other: prepare the dataset again")
    return Labelled(tokens, offsets, labels)


class LabelledBatches(ExampleBatches):
    """Micro-batches of labelled texts from one split of a classification dataset: `(x, last, labels)`.

    A batch holds `batch_size` texts right-padded to its longest (not to `block_size`); a text
    longer than `block_size` tokens keeps its first `block_size` (`num_cut` counts them). The
    unit of the loss is the example: `Step.num_targets` is the step's number of texts, so each
    weighs the same in any micro-batch and on any process. Sampling, the exact-resume state and
    the evaluation pass are `ExampleBatches`'.
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
        self.device, self.seed = torch.device(device), seed
        self.examples = open_labelled(data_dir, split)
        self.lengths = np.minimum(self.examples.lengths, block_size)  # as trained: cut to fit
        self.num_examples = len(self.lengths)
        self.num_cut = int((self.examples.lengths > block_size).sum())
        self.targets = np.ones(self.num_examples, dtype=np.int64)  # one label each
        tokens = self.examples.tokens
        if vocab_size is not None and len(tokens) and int(tokens.max()) >= vocab_size:
            raise GptkitError(
                f"{self.data_dir / split}.bin holds token id {int(tokens.max())}, but the model's vocab_size is "
                f"{vocab_size}: the data was prepared with another tokenizer; prepare it again"
            )
        self.epoch, self.position = 0, 0
        self.order = self._permutation(0)

    def num_targets(self, indices: np.ndarray) -> int:
        """How many examples: each is one target."""
        return len(indices)

    def eval_indices(self, num_batches: int | None = None) -> list[np.ndarray]:
        """The fixed evaluation pass: all the examples, or `num_batches` micro-batches of them spread
        evenly over the split (a file grouped by label would otherwise be scored on its first labels)."""
        n = self.num_examples if num_batches is None else min(self.num_examples, num_batches * self.batch_size)
        picked = np.linspace(0, self.num_examples - 1, n).round().astype(np.int64)  # distinct: n <= num_examples
        return np.split(picked, range(self.batch_size, n, self.batch_size))

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(x, last, labels)` for these texts: right-padded to the longest, moved to the device."""
        lengths = self.lengths[indices]
        x = np.full((len(indices), int(lengths.max())), EOT_ID, dtype=np.int64)  # any id: pads are never read
        for row, (i, n) in enumerate(zip(indices, lengths, strict=True)):
            start = self.examples.offsets[i]
            x[row, :n] = self.examples.tokens[start : start + n]
        last = torch.from_numpy(lengths.astype(np.int64) - 1)
        labels = torch.from_numpy(np.asarray(self.examples.labels[indices], dtype=np.int64))
        x = torch.from_numpy(x)
        if self.device.type == "cuda":
            return tuple(t.pin_memory().to(self.device, non_blocking=True) for t in (x, last, labels))
        return x.to(self.device), last.to(self.device), labels.to(self.device)
