"""Text -> `train.bin` / `val.bin` (uint16 GPT-2 token ids) + meta.json (`kind: stream`).

A source is one text file (split by characters: the first 90% trains, the rest validates, as
nanoGPT's Shakespeare script does) or a folder of `.txt` files (each file one document,
documents separated by `<|endoftext|>`). A folder's val split is whole documents when some
of them add up to within 10% of the asked share (`pick_val_documents`), else the last
val_fraction of every document's characters; the share achieved goes to meta.json.

Text is read and tokenized in bounded pieces on all cores, and the bins are written to
temporary files that replace the old ones only once complete (`gptkit.dataset_files`).
"""

import codecs
import os
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gptkit import files
from gptkit.data import BIN_DTYPE
from gptkit.dataset_files import _BinWriter, _check_fraction, _commit, _tokenizer_meta, source_sha256
from gptkit.errors import GptkitError
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
    # Train and val are tokenized separately, as in nanoGPT's shakespeare prepare.py: no token spans the cut.
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
