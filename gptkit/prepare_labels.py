"""Labelled examples (text -> label) -> a classification dataset in data/NAME/.

    python -m gptkit.prepare reviews.csv --name reviews [--val VAL.csv] [--test TEST.csv]
    python -m gptkit.prepare reviews.jsonl --name reviews --val-fraction 0.1 --test-fraction 0.1

A `.jsonl` file (one `{"text": ..., "label": ...}` a line), a `.json` list of such objects, or a
`.csv` / `.tsv` file whose header row names a `text` and a `label` column. Labels are strings or
integers; the label set is the train split's, sorted, and a label's id is its place in that list.

Per split: `SPLIT.bin` (GPT-2 token ids of the texts end to end, uint16), `SPLIT.offsets.npy`
(text i is tokens offsets[i]:offsets[i + 1]) and `SPLIT.labels.npy` (label ids), all
memory-mappable; `meta.json` says `kind: classification`, the labels and, per split, the counts
per label and the token lengths. The texts are tokenized as they are, with no `<|endoftext|>`
added, exactly as a Hugging Face GPT-2 tokenizer does, so an exported classifier reads the same ids.

Without `--val`/`--test` files, the val (and test) split is a seeded, stratified draw: each
label gives the same share of its examples, so a rare label is not left out of val by chance.
Everything is read and checked before anything is written; a mistake is one line naming the file
and the row.
"""

import contextlib
import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from gptkit import files
from gptkit.data import BIN_DTYPE, LABEL_DTYPE
from gptkit.errors import GptkitError
from gptkit.example_files import json_records, read_utf8
from gptkit.tokenizer import get_encoding

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
JSON_SUFFIXES = (".jsonl", ".json")
COLUMNS = ("text", "label")
LABELLED, LABELLED_JSON = "labelled examples (text and label)", "{text, label} objects"


def is_labelled(path: Path) -> bool:
    """A .csv/.tsv file, or a .jsonl/.json file whose first example has a "label"."""
    suffix = path.suffix.lower()
    if not path.is_file() or suffix not in (*TABLE_SUFFIXES, *JSON_SUFFIXES):
        return False
    if suffix in TABLE_SUFFIXES:
        return True
    with contextlib.suppress(GptkitError):
        rows = json_records(path, read_utf8(path, LABELLED), LABELLED_JSON)
        return bool(rows) and isinstance(rows[0][1], dict) and "label" in rows[0][1]
    return False


# --- reading ----------------------------------------------------------------------------------
def _table_rows(path: Path, text: str) -> list[tuple[str, dict]]:
    """(where, row) for each data row of a .csv / .tsv file with a header naming text and label."""
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=TABLE_SUFFIXES[path.suffix.lower()])
    header = [h.strip() for h in reader.fieldnames or []]
    if not all(c in header for c in COLUMNS):
        raise GptkitError(
            f"{path} line 1: the header row must name a 'text' and a 'label' column (found {header[:6]}); "
            "add a header row such as: text,label"
        )
    reader.fieldnames = header
    return [(f"line {reader.line_num}", row) for row in reader]


def read_labelled(path: Path) -> tuple[list[str], list[str | int], list[str]]:
    """(texts, labels, where each row is) of one labelled file, every row checked."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise GptkitError(f"{path} does not exist: pass a .jsonl, .json, .csv or .tsv file of labelled examples")
    if suffix not in (*TABLE_SUFFIXES, *JSON_SUFFIXES):
        raise GptkitError(f"{path} is not a .jsonl, .json, .csv or .tsv file: labelled examples are one of those")
    text = read_utf8(path, LABELLED)
    rows = _table_rows(path, text) if suffix in TABLE_SUFFIXES else json_records(path, text, LABELLED_JSON)
    if not rows:
        raise GptkitError(f"{path} has a header but no rows: give it labelled examples")
    texts, labels, where = [], [], []
    for at, row in rows:
        t, label = _check_row(path, at, row, suffix in TABLE_SUFFIXES)
        texts.append(t), labels.append(label), where.append(at)
    kinds = {type(label) for label in labels}
    if len(kinds) > 1:
        first_str = next(w for w, label in zip(where, labels, strict=True) if isinstance(label, str))
        raise GptkitError(f"{path} {first_str}: labels mix strings and integers; use one kind for every label")
    return texts, labels, where


def _check_row(path: Path, at: str, row, table: bool) -> tuple[str, str | int]:
    if not isinstance(row, dict):
        raise GptkitError(f'{path} {at}: not a JSON object; each example is {{"text": ..., "label": ...}}')
    extra = sorted(set(row) - set(COLUMNS)) if not table else []
    if extra:
        raise GptkitError(
            f"{path} {at}: has keys {extra} besides text and label: one format per dataset (a labelled "
            'example is {"text": ..., "label": ...}; prompt/response examples go in a file of their own)'
        )
    text, label = row.get("text"), row.get("label")
    if text is None or label is None or label == "":
        missing = "text" if text is None else "label"
        raise GptkitError(f"{path} {at}: no {missing}; every example needs a text and a label")
    if not isinstance(text, str) or not text.strip():
        raise GptkitError(f"{path} {at}: the text is empty (or not a string); remove the row or give it text")
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise GptkitError(f"{path} {at}: the label {label!r} is not a string or an integer")
    return text, label


# --- splitting --------------------------------------------------------------------------------
def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Indices per split: each held-out split takes max(1, round(n * fraction)) examples, shared out
    among the labels in proportion to their counts (largest remainders), each label's drawn by
    `seed`; train keeps the rest, at least one of every label. Every split in file order."""
    rng = np.random.default_rng(seed)
    names = np.unique(labels)
    pools = {label: list(rng.permutation(np.flatnonzero(labels == label))) for label in names}
    counts = np.array([len(pools[label]) for label in names])
    picked = {}
    for split, fraction in fractions.items():
        quota = counts * fraction
        take = np.floor(quota).astype(int)
        want = max(1, int(round(len(labels) * fraction)))
        for i in np.argsort(-(quota - take), kind="stable")[: max(0, want - take.sum())]:
            take[i] += 1
        take = np.minimum(take, np.array([len(pools[label]) - 1 for label in names]))  # train keeps one of each
        picked[split] = [pools[label][:n] for label, n in zip(names, take, strict=True)]
        for label, n in zip(names, take, strict=True):
            pools[label] = pools[label][n:]
    picked["train"] = list(pools.values())
    order = ("train", *fractions)  # train first, as meta.json lists the splits
    return {s: np.sort(np.concatenate([np.asarray(p, dtype=np.int64) for p in picked[s]])) for s in order}


def label_ids(labels: list, names: list, path: Path, where: list[str]) -> np.ndarray:
    """Each label's place in `names` (the train split's sorted labels); a label train lacks is an error."""
    index = {name: i for i, name in enumerate(names)}
    for label, at in zip(labels, where, strict=True):
        if label not in index:
            raise GptkitError(
                f"{path} {at}: label {label!r} is not in the training split (its labels: {names[:10]}); "
                "add examples of it to the training file, or remove the row"
            )
    return np.array([index[label] for label in labels], dtype=LABEL_DTYPE)


# --- the pipeline -----------------------------------------------------------------------------
def prepare_labelled(
    source: Path,
    out_dir: str | Path,
    val: str | Path | None = None,
    test: str | Path | None = None,
    val_fraction: float | None = None,
    test_fraction: float = 0.0,
    seed: int = 1337,
    block_size: int = 1024,
) -> dict:
    """Labelled examples from `source` (and `val` / `test` files) -> a classification dataset; the meta."""
    source = Path(source)
    if val is not None and val_fraction is not None:
        raise GptkitError("give --val FILE or --val-fraction, not both")
    if test is not None and test_fraction:
        raise GptkitError("give --test FILE or --test-fraction, not both")
    fractions = {"val": 0.1 if val_fraction is None else val_fraction} if val is None else {}
    if test is None and test_fraction:
        fractions["test"] = test_fraction
    if any(not 0 < f < 1 for f in fractions.values()) or sum(fractions.values()) >= 1:
        raise GptkitError(
            f"the held-out fractions {fractions} must each be between 0 and 1 and leave examples to train"
        )
    texts, labels, where = read_labelled(source)
    sources = {"train": source, "val": Path(val) if val else None, "test": Path(test) if test else None}
    picked = stratified_split(np.array(labels), fractions, seed) if fractions else {"train": np.arange(len(labels))}
    splits = {
        s: ([texts[i] for i in idx], [labels[i] for i in idx], [where[i] for i in idx]) for s, idx in picked.items()
    }
    for s in ("val", "test"):
        if sources[s] is not None:
            splits[s] = read_labelled(sources[s])
    names = sorted(set(splits["train"][1]))
    if len(names) < 2:
        raise GptkitError(
            f"{source}: the training split has a single label ({names[0]!r}); a classifier needs at least two"
        )
    if len(splits["val"][0]) == 0:
        raise GptkitError(f"{source} has too few examples for a val split: give more, or a --val file")
    encoded = {}
    for s, (t, lab, at) in splits.items():
        ids = label_ids(lab, names, sources[s] or source, at)
        encoded[s] = (*tokenize_texts(t), ids)
    meta = _meta(names, encoded, sources, fractions, seed, block_size)
    _write(files.check_writable_dir(out_dir, "--out-dir"), encoded, meta)
    return meta


def tokenize_texts(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(token ids end to end, offsets) of the texts, each encoded on its own."""
    ids = get_encoding().encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)
    offsets = np.concatenate([[0], np.cumsum([len(i) for i in ids], dtype=np.int64)]).astype(np.int64)
    tokens = np.fromiter((t for row in ids for t in row), dtype=BIN_DTYPE, count=int(offsets[-1]))
    return tokens, offsets


def _meta(names: list, encoded: dict, sources: dict, fractions: dict, seed: int, block_size: int) -> dict:
    def counts(tokens, offsets, ids) -> dict:
        lengths = np.diff(offsets)
        return {
            "examples": len(ids),
            "tokens": len(tokens),
            "per_label": {str(name): int((ids == i).sum()) for i, name in enumerate(names)},
            "longest": int(lengths.max()),
            "mean_length": round(float(lengths.mean()), 2),
            "longer_than_block": int((lengths > block_size).sum()),
        }

    enc = get_encoding()
    return {
        "kind": "classification",
        "tokenizer": "gpt2",
        "vocab_size": enc.n_vocab,
        "dtype": np.dtype(BIN_DTYPE).name,
        "labels": names,
        "splits": {s: counts(*e) | {"source": str(sources[s] or sources["train"])} for s, e in encoded.items()},
        "val_fraction": fractions.get("val", 0.0),
        "test_fraction": fractions.get("test", 0.0),
        "seed": seed,
        "block_size": block_size,
    }


def _write(out_dir: Path, encoded: dict, meta: dict) -> None:
    """Every file written beside its target first; all renamed into place only once all are written."""
    with contextlib.ExitStack() as stack:
        meta_tmp = stack.enter_context(files.replacing(out_dir / "meta.json"))  # renamed last
        for split, (tokens, offsets, ids) in encoded.items():
            for suffix, array in ((".bin", tokens), (".offsets.npy", offsets), (".labels.npy", ids)):
                tmp = stack.enter_context(files.replacing(out_dir / f"{split}{suffix}"))
                with open(tmp, "wb") as f:
                    np.save(f, array, allow_pickle=False) if suffix.endswith(".npy") else f.write(array.tobytes())
        meta_tmp.write_text(json.dumps(meta, indent=2) + "\n")


def print_counts(meta: dict) -> None:
    print(f"{len(meta['labels'])} labels: {', '.join(map(str, meta['labels'][:20]))}")
    for split, c in meta["splits"].items():
        per = ", ".join(f"{k} {v:,}" for k, v in list(c["per_label"].items())[:10])
        print(f"{split} has {c['examples']:,} examples ({per}), {c['tokens']:,} tokens; the longest {c['longest']:,}")
        if c["longer_than_block"]:
            print(f"  {c['longer_than_block']:,} are longer than block size {meta['block_size']}: training cuts them")
