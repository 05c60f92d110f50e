"""Text or examples -> `train.bin` / `val.bin` (uint16 GPT-2 token ids) + `meta.json`.

    python -m gptkit.prepare PATH --name NAME [--val-fraction 0.1]
    python -m gptkit.prepare EXAMPLES.jsonl --name NAME [--val VAL.jsonl] [--test TEST.jsonl]

Examples (a `.jsonl` file, one JSON object a line, or a `.json` list; formats in
`gptkit.prompts`) become, per split, `SPLIT.bin` (the token ids of the examples end to end),
`SPLIT.mask.bin` (one uint8 a token: 1 on response tokens, each response's `<|endoftext|>`
included) and `SPLIT.offsets.npy` (example i is tokens offsets[i]:offsets[i + 1]), all
memory-mappable; meta.json says `kind: examples`, the format, the template and the counts.
The rest of this docstring is about text (`kind: stream`).

PATH is one text file (split by characters: the first 90% trains, the rest validates, as
nanoGPT's Shakespeare script does) or a folder of `.txt` files (each file one document,
documents separated by `<|endoftext|>`). A folder's val split is whole documents when some
of them add up to within 10% of the asked share (`pick_val_documents`), else the last
val_fraction of every document's characters; the share achieved goes to meta.json.

Text is read and tokenized in bounded pieces on all cores, and the bins are written to
temporary files that replace the old ones only once complete, so an interrupted run, or a
full disk, never leaves half a dataset behind.
"""

import argparse
import codecs
import contextlib
import hashlib
import json
import os
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gptkit import files, prepare_labels
from gptkit.data import BIN_DTYPE, MASK_DTYPE, Examples
from gptkit.errors import GptkitError, run_cli
from gptkit.files import write_failed
from gptkit.prompts import Piece, detect_format, render, template
from gptkit.tokenizer import EOT_ID, get_encoding

READ_CHARS = 8 << 20  # characters read per step: bounds memory whatever the corpus size
PIECE_CHARS = 256 << 10  # characters per piece handed to one tokenizer thread

# A newline between two non-space characters always stands alone in GPT-2's pre-tokenization,
# so cutting the text right after it gives exactly the tokens of the uncut text.
_SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)")


def split_for_threads(text: str, piece_chars: int = PIECE_CHARS) -> tuple[list[str], str]:
    """Cut `text` into pieces that tokenize independently; returns (pieces, unfinished tail)."""
    pieces, start = [], 0
    while len(text) - start > piece_chars:
        match = _SAFE_CUT.search(text, start + piece_chars)
        if match is None:
            break
        pieces.append(text[start : match.start()])
        start = match.start()
    return pieces, text[start:]


def encode_ordinary_array(text: str) -> np.ndarray:
    """`encode_ordinary(text)` as a BIN_DTYPE array, without the Python list of ints in between."""
    enc = get_encoding()
    try:
        # With no special token allowed or disallowed, encode is encode_ordinary; the numpy
        # variant skips boxing every id into a Python int, a good part of the single-thread time.
        ids = enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
    except (AttributeError, UnicodeEncodeError):  # tiktoken < 0.8, or lone surrogates (encode_ordinary mends them)
        ids = enc.encode_ordinary(text)
    return np.asarray(ids, dtype=BIN_DTYPE)


def _read_text_chunks(path: Path, bar: tqdm) -> Iterator[str]:
    """Decode a UTF-8 file in bounded chunks, with a clear error on invalid bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        while True:
            raw = f.read(READ_CHARS)
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                raise GptkitError(
                    f"{path} is not UTF-8 text (invalid byte at offset {offset + e.start}); "
                    "convert it first, e.g. iconv -f latin1 -t utf-8"
                ) from None
            offset += len(raw)
            bar.update(len(raw))
            if text:
                yield text
            if not raw:
                return


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


def _count_chars(path: Path) -> int:
    return sum(len(chunk) for chunk in _read_text_chunks(path, tqdm(disable=True)))


class _StreamEncoder:
    """Tokenizes text fed in chunks of any size, cutting only where the tokens cannot change.

    Pieces go to the thread pool as soon as they are cut (tiktoken releases the GIL, so threads
    use all cores) and are written in order as they finish, so reading and writing overlap
    with tokenizing instead of idling the pool.
    """

    def __init__(self, writer: _BinWriter, pool: ThreadPoolExecutor, num_threads: int):
        self.writer, self.pool, self.tail = writer, pool, ""
        self.pending: deque[Future] = deque()
        self.max_pending = 4 * num_threads  # a few pieces per thread: busy threads, bounded memory

    def feed(self, text: str) -> None:
        pieces, self.tail = split_for_threads(self.tail + text)
        for piece in pieces:
            self.pending.append(self.pool.submit(encode_ordinary_array, piece))
            self._write_finished(self.max_pending)

    def finish(self) -> None:
        if self.tail:
            self.pending.append(self.pool.submit(encode_ordinary_array, self.tail))
        self.tail = ""
        self._write_finished(0)

    def _write_finished(self, keep: int) -> None:
        while self.pending and (len(self.pending) > keep or self.pending[0].done()):
            self.writer.write(self.pending.popleft().result())


def _split_by_characters(path: Path, writers: dict, val_fraction: float, pool, num_threads: int, bar: tqdm) -> None:
    """The first 1 - val_fraction of the characters of `path` train, the rest validates."""
    total_chars = _count_chars(path)
    n_train, seen = int(total_chars * (1 - val_fraction)), 0
    # Train and val are tokenized separately, as in the seed: no token spans the cut.
    encoders = {s: _StreamEncoder(w, pool, num_threads) for s, w in writers.items()}
    for text in _read_text_chunks(path, bar):
        cut = max(0, min(len(text), n_train - seen))
        encoders["train"].feed(text[:cut])
        encoders["val"].feed(text[cut:])
        seen += len(text)
    for e in encoders.values():
        e.finish()


def _prepare_file(path: Path, writers: dict, val_fraction: float, num_threads: int, bar: tqdm) -> str:
    if path.stat().st_size == 0:
        raise GptkitError(f"{path} is empty: give it some text")
    with ThreadPoolExecutor(num_threads) as pool:
        _split_by_characters(path, writers, val_fraction, pool, num_threads, bar)
    return "characters"


# The folder rule: whole documents validate when a set of them comes within this share of
# the asked val size (0.1 asked: 0.09 to 0.11); otherwise the tail of every document does.
SPLIT_TOLERANCE = 0.1


def pick_val_documents(sizes: list[int], val_fraction: float, tolerance: float = SPLIT_TOLERANCE) -> list[int] | None:
    """Indices of whole documents whose sizes add up to within `tolerance` of the asked val share, or None.

    From the last document (by sorted path) back to the first, each one joins val unless it
    would overshoot; one document always stays in train.
    """
    target = val_fraction * sum(sizes)
    picked, total = [], 0
    for i in range(len(sizes) - 1, 0, -1):  # never index 0: train keeps at least one document
        if total + sizes[i] <= target * (1 + tolerance):
            picked.append(i)
            total += sizes[i]
        if total >= target * (1 - tolerance):
            return sorted(picked)
    return None


def _prepare_folder(folder: Path, writers: dict, val_fraction: float, num_threads: int, bar: tqdm) -> str:
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if len(files) < 2:
        raise GptkitError(
            f"{folder} holds {len(files)} .txt file(s); a folder needs at least two documents "
            "(or pass a single text file to split it by characters)"
        )
    sizes = [p.stat().st_size for p in files]
    if sum(sizes) == 0:
        raise GptkitError(f"the .txt files in {folder} are all empty: give them some text")
    eot = np.asarray([EOT_ID], dtype=BIN_DTYPE)
    val_docs = pick_val_documents(sizes, val_fraction)
    with ThreadPoolExecutor(num_threads) as pool:
        for i, (path, size) in enumerate(zip(files, sizes, strict=True)):
            if size == 0:
                continue
            if val_docs is None:  # too few or too uneven documents: the tail of each one validates
                _split_by_characters(path, writers, val_fraction, pool, num_threads, bar)
                for w in writers.values():
                    w.write(eot)
                continue
            split = "val" if i in val_docs else "train"
            encoder = _StreamEncoder(writers[split], pool, num_threads)
            for text in _read_text_chunks(path, bar):
                encoder.feed(text)
            encoder.finish()
            writers[split].write(eot)
    return "documents" if val_docs is not None else "tail of each document"


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


def prepare(
    source: str | Path,
    out_dir: str | Path,
    val_fraction: float | None = None,
    block_size: int = 1024,
    num_threads: int | None = None,
    progress: bool = True,
    val: str | Path | None = None,
    test: str | Path | None = None,
    test_fraction: float = 0.0,
    seed: int = 1337,
) -> dict:
    """Tokenize `source` into `out_dir`; returns the meta dict.

    A `.jsonl` / `.json` file holds examples (`prepare_examples`); a text file or a folder of
    .txt files is a stream (`prepare_stream`).
    """
    source = Path(source)
    if not source.exists():
        raise GptkitError(f"{source} does not exist: pass a text file, a folder of .txt files, or a .jsonl/.json file")
    if prepare_labels.is_labelled(source):  # {"text", "label"} rows, or a .csv / .tsv table
        return prepare_labels.prepare_labelled(
            source, out_dir, val, test, val_fraction, test_fraction, seed, block_size
        )
    if is_example_file(source):
        return prepare_examples(source, out_dir, val, test, val_fraction, test_fraction, seed, block_size)
    if val is not None or test is not None or test_fraction:
        raise GptkitError(
            "--val, --test and --test-fraction are for example files (.jsonl / .json); "
            "a text's val split is --val-fraction of it"
        )
    val_fraction = 0.1 if val_fraction is None else val_fraction
    return prepare_stream(source, out_dir, val_fraction, block_size, num_threads, progress)


def _check_fraction(option: str, value: float, low_ok: bool = False) -> None:
    if not (0 <= value < 1 if low_ok else 0 < value < 1):
        bounds = "at least 0 and below 1" if low_ok else "between 0 and 1 (exclusive)"
        raise GptkitError(f"{option} must be {bounds}, not {value}")


# --- a stream: one text file, or a folder of .txt documents -----------------------------------
def prepare_stream(
    source: Path,
    out_dir: str | Path,
    val_fraction: float = 0.1,
    block_size: int = 1024,
    num_threads: int | None = None,
    progress: bool = True,
) -> dict:
    """Tokenize a text file or a folder of .txt files into `train.bin` / `val.bin` + meta.json."""
    _check_fraction("--val-fraction", val_fraction)
    out_dir = files.check_writable_dir(out_dir, "--out-dir")
    writers = {s: _BinWriter(out_dir / f"{s}.bin") for s in ("train", "val")}
    bar = tqdm(
        total=_source_bytes(source), unit="B", unit_scale=True, desc=f"tokenizing {source.name}", disable=not progress
    )
    try:
        split = _tokenize_stream(source, writers, val_fraction, num_threads or os.cpu_count() or 1, bar)
        _check_stream_counts(source, writers, block_size)
        meta = _stream_meta(source, writers, val_fraction, split)
        _commit(out_dir, list(writers.values()), meta)
    except BaseException:
        for w in writers.values():
            w.discard()
        raise
    finally:
        bar.close()
    return meta


def _source_bytes(source: Path) -> int:
    if source.is_file():
        return source.stat().st_size
    return sum(p.stat().st_size for p in source.rglob("*.txt") if p.is_file())


def _tokenize_stream(source: Path, writers: dict, val_fraction: float, num_threads: int, bar: tqdm) -> str:
    """Write the train and val tokens of `source`; returns how it was split."""
    if source.is_file():
        return _prepare_file(source, writers, val_fraction, num_threads, bar)
    return _prepare_folder(source, writers, val_fraction, num_threads, bar)


def _check_stream_counts(source: Path, writers: dict, block_size: int) -> None:
    if writers["train"].count == 0:
        raise GptkitError(f"{source} gave no training tokens: give it more text or a smaller --val-fraction")
    if writers["val"].count < block_size + 1:
        raise GptkitError(
            f"the val split of {source} has {writers['val'].count:,} tokens, fewer than one block "
            f"({block_size + 1}): give it more text, raise --val-fraction, or lower --block-size"
        )


def _stream_meta(source: Path, writers: dict, val_fraction: float, split: str) -> dict:
    n_train, n_val = writers["train"].count, writers["val"].count
    return {
        "kind": "stream",
        **_tokenizer_meta(),
        "train_tokens": n_train,
        "val_tokens": n_val,
        "val_fraction": val_fraction,
        "val_share": round(n_val / (n_train + n_val), 6),  # what the split achieved, in tokens
        "split": split,
        "source": str(source),
        "source_sha256": source_sha256(source),
    }


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


# --- examples: .jsonl (one object a line) or .json (a list of objects) --------------------------
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
    records = _json_records(path, _read_utf8(path))
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


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not text
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise GptkitError(
            f"{path} line {line}: not UTF-8 (invalid byte at offset {e.start}); "
            "convert it first, e.g. iconv -f latin1 -t utf-8"
        ) from None
    if not text.strip():
        raise GptkitError(f"{path} is empty: give it examples, one JSON object a line (.jsonl) or a list (.json)")
    return text


def _json_records(path: Path, text: str) -> list[tuple[str, object]]:
    """(where, object) for each example: 'line N' in a .jsonl, 'item N' in a .json list."""
    if path.suffix.lower() == ".jsonl":
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                records.append((f"line {n}", _loads(path, line, n)))
        return records
    data = _loads(path, text, None)
    if not isinstance(data, list):
        raise GptkitError(
            f"{path} holds a JSON {type(data).__name__}, not a list: a .json file is a list of examples "
            "(or write a .jsonl file, one example a line)"
        )
    if not data:
        raise GptkitError(f"{path} is an empty list: give it examples")
    return [(f"item {i}", obj) for i, obj in enumerate(data, 1)]


def _loads(path: Path, text: str, line: int | None) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = f"line {line}" if line is not None else f"line {e.lineno}"
        raise GptkitError(f"{path} {where}: not valid JSON ({e.msg} at column {e.colno})") from None


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


# --- the command line -------------------------------------------------------------------------
def print_counts(meta: dict) -> None:
    if meta.get("kind") == "classification":
        prepare_labels.print_counts(meta)
        return
    if meta.get("kind") == "examples":
        print_example_counts(meta)
        return
    print(f"train has {meta['train_tokens']:,} tokens")
    print(f"val has {meta['val_tokens']:,} tokens")
    if "val_share" in meta:
        print(
            f"val share {meta['val_share']:.1%} of the tokens (asked {meta['val_fraction']:.1%}; "
            f"split by {meta['split']})"
        )


def print_example_counts(meta: dict) -> None:
    print(f"format {meta['format']}, template {meta['template']['name']}")
    for split, c in meta["splits"].items():
        print(
            f"{split} has {c['examples']:,} examples, {c['tokens']:,} tokens ({c['prompt_tokens']:,} prompt, "
            f"{c['response_tokens']:,} response); the longest {c['longest']:,} tokens"
        )
        if c["longer_than_block"]:
            print(
                f"  {c['longer_than_block']:,} {split} examples are longer than block size "
                f"{meta['block_size']} (+1): training cuts them"
            )


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if not re.fullmatch(r"[\w.-]+", args.name):
        raise GptkitError(f"--name {args.name!r} must be a plain folder name (letters, digits, '_', '-', '.')")
    out = Path(args.out_root) / args.name
    meta = prepare(
        args.path,
        out,
        args.val_fraction,
        args.block_size,
        val=args.val,
        test=args.test,
        test_fraction=args.test_fraction,
        seed=args.seed,
    )
    print_counts(meta)
    names = ",".join(meta["splits"]) if "splits" in meta else "train,val"
    print(f"wrote {out}/{{{names}}}.bin and meta.json")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gptkit.prepare",
        description="Tokenize a text file, a folder of .txt files, a file of prompt -> response examples "
        "(.jsonl / .json), or labelled texts for a classifier (.jsonl / .json of {text, label}, or .csv / .tsv "
        "with text and label columns) into data/NAME/.",
    )
    parser.add_argument(
        "path",
        help="a UTF-8 text file, a folder of .txt files (one document each), or examples: a .jsonl file (one "
        "JSON object a line) or a .json list, with keys prompt/completion, instruction/input/output (Alpaca) "
        "or messages (chat)",
    )
    parser.add_argument("--name", required=True, help="dataset name: writes data/NAME/ (use --dataset=NAME to train)")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="share kept for validation (default 0.1): of the text, or of the examples (whole ones, seeded)",
    )
    parser.add_argument("--val", help="examples: a separate validation file instead of --val-fraction")
    parser.add_argument("--test", help="examples: a test file (held out from training, for gptkit.evaluate)")
    parser.add_argument("--test-fraction", type=float, default=0.0, help="examples: share of PATH kept for test")
    parser.add_argument("--seed", type=int, default=1337, help="examples: which ones validate and test")
    parser.add_argument(
        "--block-size",
        type=int,
        default=1024,
        help="text: the val split must hold at least one block; examples: count those that training will cut",
    )
    parser.add_argument("--out-root", default="data", help="folder that holds the datasets (default: data)")
    return parser


if __name__ == "__main__":
    run_cli(main)
