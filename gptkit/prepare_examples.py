"""Examples -> per split token ids, a loss mask and offsets + meta.json (`kind: examples`).

Examples (a `.jsonl` file, one JSON object a line, or a `.json` list; formats in
`gptkit.prompts`) become, per split, `SPLIT.bin` (the token ids of the examples end to end),
`SPLIT.mask.bin` (one uint8 a token: 1 on response tokens, each response's `<|endoftext|>`
included) and `SPLIT.offsets.npy` (example i is tokens offsets[i]:offsets[i + 1]), all
memory-mappable; meta.json says `kind: examples`, the format, the template and the counts.

The readers (`read_examples`, `split_indices`, `tokenize_examples`) are what other example
pipelines build on.
"""

import os
from pathlib import Path

import numpy as np

from gptkit import files
from gptkit.data import BIN_DTYPE, MASK_DTYPE, Examples
from gptkit.dataset_files import _BinWriter, _check_fraction, _commit, _tokenizer_meta, source_sha256
from gptkit.errors import GptkitError
from gptkit.example_files import json_records, read_utf8
from gptkit.prompts import Piece, detect_format, render, template
from gptkit.tokenizer import EOT_ID, get_encoding

EXAMPLE_SUFFIXES = (".jsonl", ".json")
SPLITS = ("train", "val", "test")
LENGTH_BUCKETS = (64, 128, 256, 512, 1024, 2048)  # block sizes meta.json counts the longer examples for


def is_example_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in EXAMPLE_SUFFIXES


def take(examples: Examples, indices: np.ndarray) -> Examples:
    """The examples at `indices`, end to end in that order."""
    pieces = [slice(examples.offsets[i], examples.offsets[i + 1]) for i in indices]
    offsets = np.concatenate([[0], np.cumsum([s.stop - s.start for s in pieces], dtype=np.int64)]).astype(np.int64)
    if not pieces:
        return Examples(examples.tokens[:0], examples.mask[:0], offsets)
    return Examples(*(np.concatenate([a[s] for s in pieces]) for a in (examples.tokens, examples.mask)), offsets)


def prepare_examples(
    source: Path,
    out_dir: str | Path,
    val: str | Path | None = None,
    test: str | Path | None = None,
    val_fraction: float | None = None,
    test_fraction: float = 0.0,
    seed: int = 1337,
    block_size: int = 1024,
) -> dict:
    """Examples from `source` (and `val` / `test` files, when given) -> per split `SPLIT.bin`
    (token ids), `SPLIT.mask.bin` (1 on response tokens) and `SPLIT.offsets.npy` + meta.json.

    Without a `val` file, `val_fraction` (default 0.1) of the source's examples validate; with
    `test_fraction`, that share of them is the test split. Whole examples, picked by `seed`.
    Everything is read and checked before anything is written.
    """
    val_fraction = _example_fractions(val, val_fraction, test, test_fraction)
    fmt, source_pieces = read_examples(source)
    sources = {"train": source, "val": Path(val) if val else None, "test": Path(test) if test else None}
    pieces = {s: read_examples(p, fmt)[1] for s, p in sources.items() if p is not None and s != "train"}
    picked = split_indices(len(source_pieces), val_fraction, test_fraction, seed, source)
    tokenized = tokenize_examples(source_pieces)
    splits = {s: take(tokenized, idx) for s, idx in picked.items() if len(idx)}
    splits |= {s: tokenize_examples(p) for s, p in pieces.items()}
    meta = _examples_meta(fmt, splits, sources, val_fraction, test_fraction, seed, block_size)
    _write_examples(files.check_writable_dir(out_dir, "--out-dir"), splits, meta)
    return meta


def _example_fractions(val, val_fraction: float | None, test, test_fraction: float) -> float:
    """The val share to carve from the source (0 with a --val file), after checking the options."""
    if val is not None and val_fraction is not None:
        raise GptkitError("give --val FILE or --val-fraction, not both")
    if test is not None and test_fraction:
        raise GptkitError("give --test FILE or --test-fraction, not both")
    val_fraction = 0.1 if val_fraction is None else val_fraction
    if val is None:
        _check_fraction("--val-fraction", val_fraction)
    _check_fraction("--test-fraction", test_fraction, low_ok=True)
    if val is None and val_fraction + test_fraction >= 1:
        raise GptkitError(f"--val-fraction {val_fraction} and --test-fraction {test_fraction} leave nothing to train")
    return 0.0 if val is not None else val_fraction


def read_examples(path: Path, expected: str | None = None) -> tuple[str, list[list[Piece]]]:
    """(format, pieces of every example) of a .jsonl or .json file, all checked.

    Every mistake is one GptkitError naming the file and the line (or item) that has it.
    `expected` is the format another file of the same dataset has: this one must match it.
    """
    path = Path(path)
    if not path.is_file():
        raise GptkitError(f"{path} does not exist: pass a .jsonl or .json file of examples")
    if path.suffix.lower() not in EXAMPLE_SUFFIXES:
        raise GptkitError(f"{path} is not a .jsonl or .json file: example files are one of those")
    records = json_records(path, read_utf8(path))
    fmt, first, out = expected, "the training file" if expected else None, []
    for where, obj in records:
        try:
            found = detect_format(obj)
            if fmt is not None and found != fmt:
                raise GptkitError(f"the format is {found}, but {first} is {fmt}: one format per dataset")
            fmt, first = found, first or where
            out.append(render(obj, found))
        except GptkitError as e:
            raise GptkitError(f"{path} {where}: {e}") from None
    return fmt, out


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int, source: Path) -> dict[str, np.ndarray]:
    """Which of `n` examples train, validate and test: whole examples, a seeded draw, each split in file order."""
    n_val = max(1, round(n * val_fraction)) if val_fraction else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction else 0
    if n_val + n_test >= n:
        raise GptkitError(
            f"{source} has {n} example(s): too few to keep {n_val + n_test} for val/test and train on the rest; "
            "give more examples, or a separate --val file"
        )
    order = np.random.default_rng(seed).permutation(n)
    val, test, train = np.split(order, [n_val, n_val + n_test])
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def tokenize_examples(examples: list[list[Piece]]) -> Examples:
    """Each prompt and each response tokenized on its own, `<|endoftext|>` after every response.

    Tokenizing the parts separately makes the boundary exact: tokenizing the joined text could
    merge the prompt's last characters with the response's first into one token.
    """
    enc = get_encoding()
    texts = [t for example in examples for piece in example for t in piece]
    ids = enc.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)
    tokens, mask, lengths, k = [], [], [], 0
    for example in examples:
        length = 0
        for _ in example:
            prompt, response = ids[k], ids[k + 1] + [EOT_ID]
            tokens += prompt + response
            mask += [0] * len(prompt) + [1] * len(response)
            length += len(prompt) + len(response)
            k += 2
        lengths.append(length)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    return Examples(np.array(tokens, dtype=BIN_DTYPE), np.array(mask, dtype=MASK_DTYPE), offsets)


def split_counts(split: Examples, block_size: int) -> dict:
    """What meta.json says of a split; an example of L tokens trains at block_size >= L - 1
    (its last token is only a target), so longer ones are cut."""
    lengths = split.lengths
    response = int(split.mask.sum())
    return {
        "examples": len(lengths),
        "tokens": len(split.tokens),
        "prompt_tokens": len(split.tokens) - response,
        "response_tokens": response,
        "longest": int(lengths.max()),
        "mean_length": round(float(lengths.mean()), 2),
        "longer_than_block": int((lengths - 1 > block_size).sum()),
        "longer_than": {str(b): int((lengths - 1 > b).sum()) for b in LENGTH_BUCKETS},
    }


def _examples_meta(
    fmt: str, splits: dict, sources: dict, val_fraction: float, test_fraction: float, seed: int, block_size: int
) -> dict:
    def source(split: str) -> dict:
        path = sources[split] or sources["train"]
        return {"path": str(path), "sha256": source_sha256(path)}

    return {
        "kind": "examples",
        **_tokenizer_meta(),
        "format": fmt,
        "template": template(fmt),
        "splits": {s: split_counts(t, block_size) | {"source": source(s)} for s, t in splits.items()},
        **{f"{s}_tokens": len(t.tokens) for s, t in splits.items()},
        "block_size": block_size,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
    }


def _write_examples(out_dir: Path, splits: dict[str, Examples], meta: dict) -> None:
    writers = []
    try:
        for split, data in splits.items():
            for suffix, array in ((".bin", data.tokens), (".mask.bin", data.mask), (".offsets.npy", data.offsets)):
                writers.append(w := _BinWriter(out_dir / f"{split}{suffix}"))
                w.write(array, npy=suffix.endswith(".npy"))
        _commit(out_dir, writers, meta)
    except BaseException:
        for w in writers:
            w.discard()
        raise
