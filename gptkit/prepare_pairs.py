"""Preference pairs -> per split `SPLIT.bin` + `SPLIT.offsets.npy` + meta.json (`kind: preference`).

    python -m gptkit.prepare PAIRS.jsonl --name NAME [--val VAL.jsonl] [--test TEST.jsonl]

A pair is TRL's standard form, one JSON object a line (or a `.json` list):
`{"prompt": ..., "chosen": ..., "rejected": ...}`: for one prompt, the response to prefer and
the one to avoid. The prompt may also be written in the other formats of `gptkit.prompts`:
Alpaca's `instruction` (+ `input`), or chat `messages` ending with the user's turn; the template
fills it in as it does for examples, and every pair of a dataset uses one format.

The prompt, the chosen and the rejected response are tokenized each on its own (the boundaries
are exact), `<|endoftext|>` ending each response, and stored once each: pair i is the three
segments 3i, 3i + 1, 3i + 2 of `SPLIT.bin`, segment j being tokens offsets[j]:offsets[j + 1].
`gptkit.data.PairBatches` reads them back as (prompt + chosen, prompt + rejected) rows.
Everything is read and checked before anything is written: a mistake is one line naming the
file and line, and leaves the folder as it was.
"""

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from gptkit import files
from gptkit.data import BIN_DTYPE
from gptkit.errors import GptkitError
from gptkit.example_files import json_records, read_utf8
from gptkit.prompts import ALPACA, CHAT, PLAIN, render, template
from gptkit.tokenizer import EOT_ID, get_encoding

RESPONSES = ("chosen", "rejected")
PROMPT_KEYS = {PLAIN: "prompt", ALPACA: "instruction", CHAT: "messages"}


def is_preference_file(path: Path) -> bool:
    """True when the first object of a .jsonl / .json file is a pair (has `chosen` or `rejected`)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            if path.suffix.lower() == ".jsonl":
                first = next((line for line in f if line.strip()), "")
                obj = json.loads(first)
            else:
                data = json.load(f)
                obj = data[0] if isinstance(data, list) and data else {}
    except (OSError, ValueError):
        return False  # the examples reader names what is wrong with the file
    return isinstance(obj, dict) and any(k in obj for k in RESPONSES)


def read_pairs(path: Path, expected: str | None = None) -> tuple[str, list[tuple[list[str], str, str]]]:
    """(prompt format, [(prompt segments, chosen, rejected)]) of a pairs file, every line checked."""
    path = Path(path)
    if not path.is_file():
        raise GptkitError(f"{path} does not exist: pass a .jsonl or .json file of preference pairs")
    fmt, first, pairs = expected, "the training file" if expected else None, []
    for where, obj in json_records(path, read_utf8(path, "pairs, one JSON object a line"), "pairs"):
        try:
            found = prompt_format(obj)
            if fmt is not None and found != fmt:
                raise GptkitError(f"the prompt is in the {found} format, but {first} is {fmt}: one format per dataset")
            fmt, first = found, first or where
            pairs.append(render_pair(obj, found))
        except GptkitError as e:
            raise GptkitError(f"{path} {where}: {e}") from None
    return fmt, pairs


def prompt_format(obj: object) -> str:
    if not isinstance(obj, dict):
        raise GptkitError('expected a JSON object {"prompt", "chosen", "rejected"}')
    found = [fmt for fmt, key in PROMPT_KEYS.items() if key in obj]
    if len(found) != 1:
        what = "no prompt" if not found else "the prompt keys of " + " and ".join(found)
        raise GptkitError(
            f"the pair has {what}: give one of 'prompt', 'instruction' (+ 'input', Alpaca) or 'messages' (chat)"
        )
    return found[0]


def render_pair(obj: dict, fmt: str) -> tuple[list[str], str, str]:
    """The prompt as text segments (tokenized apart, `<|endoftext|>` after each but the last: a chat
    history's earlier answers end as they did in training), and the two responses."""
    chosen, rejected = (_response(obj, key) for key in RESPONSES)
    if chosen == rejected:
        raise GptkitError("chosen and rejected are the same text: a pair needs two different responses")
    if fmt == CHAT:
        messages = obj["messages"]
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
            if messages[-1].get("role") == "assistant":
                raise GptkitError("the last message is the assistant's: the prompt ends with the user's turn")
        pieces = render({"messages": [*messages, {"role": "assistant", "content": chosen}]}, CHAT)
        segments = [text for piece in pieces[:-1] for text in piece] + [pieces[-1].prompt]
        return segments, chosen, rejected
    stand_in = {k: v for k, v in obj.items() if k not in RESPONSES} | {"completion": chosen, "output": chosen}
    if fmt == ALPACA:
        stand_in.pop("completion")
    else:
        stand_in.pop("output")
    return [render(stand_in, fmt)[0].prompt], chosen, rejected


def _response(obj: dict, key: str) -> str:
    value = obj.get(key)
    if value is None:
        raise GptkitError(f"{key!r} is missing: every pair needs a chosen and a rejected response")
    if not isinstance(value, str):
        raise GptkitError(f"{key!r} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise GptkitError(f"{key!r} is empty: every pair needs a chosen and a rejected response")
    return value


def tokenize_pairs(pairs: list[tuple[list[str], str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, offsets): per pair its prompt, chosen + <|endoftext|>, rejected + <|endoftext|>."""
    enc = get_encoding()
    texts = [t for segments, chosen, rejected in pairs for t in (*segments, chosen, rejected)]
    ids = iter(enc.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1))
    tokens, lengths = [], []
    for segments, _, _ in pairs:
        prompt = []
        for i in range(len(segments)):
            prompt += next(ids) + ([EOT_ID] if i % 2 == 1 else [])  # a chat history's answers end with EOT
        chosen, rejected = next(ids) + [EOT_ID], next(ids) + [EOT_ID]
        tokens += prompt + chosen + rejected
        lengths += [len(prompt), len(chosen), len(rejected)]
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    return np.array(tokens, dtype=BIN_DTYPE), offsets


def split_pairs(tokens: np.ndarray, offsets: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs at `indices`, end to end, with their offsets."""
    spans = [(offsets[3 * i], offsets[3 * i + 3]) for i in indices]
    lengths = np.diff(offsets).reshape(-1, 3)[indices].reshape(-1)
    new_offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    parts = [tokens[a:b] for a, b in spans]
    return (np.concatenate(parts) if parts else tokens[:0]), new_offsets


def pair_counts(offsets: np.ndarray) -> dict:
    lengths = np.diff(offsets).reshape(-1, 3)
    rows = lengths[:, :1] + lengths[:, 1:]  # prompt + chosen, prompt + rejected
    return {
        "pairs": len(lengths),
        "tokens": int(offsets[-1]),
        "prompt_tokens": int(lengths[:, 0].sum()),
        "chosen_tokens": int(lengths[:, 1].sum()),
        "rejected_tokens": int(lengths[:, 2].sum()),
        "longest": int(rows.max()),  # the longest row a batch holds, in tokens
    }


def prepare_pairs(source: Path, out_dir, val=None, test=None, val_fraction=0.1, test_fraction=0.0, seed=1337) -> dict:
    """Pairs from `source` (and `val` / `test` files) -> bins, offsets and meta.json in `out_dir`.

    `val_fraction` and `test_fraction` (checked by the caller) carve those shares of the source's
    pairs when no file is given for the split, as for examples.
    """
    fmt, source_pairs = read_pairs(source)
    sources = {"train": Path(source), "val": Path(val) if val else None, "test": Path(test) if test else None}
    others = {s: read_pairs(p, fmt)[1] for s, p in sources.items() if p is not None and s != "train"}
    picked = _split_indices(len(source_pairs), 0.0 if val else val_fraction, 0.0 if test else test_fraction, seed)
    tokens, offsets = tokenize_pairs(source_pairs)
    splits = {s: split_pairs(tokens, offsets, idx) for s, idx in picked.items() if len(idx)}
    splits |= {s: tokenize_pairs(p) for s, p in others.items()}
    meta = {
        "kind": "preference",
        "tokenizer": "gpt2",
        "vocab_size": get_encoding().n_vocab,
        "dtype": np.dtype(BIN_DTYPE).name,
        "format": fmt,
        "template": template(fmt),
        "splits": {s: pair_counts(o) | {"source": str(sources[s] or source)} for s, (_, o) in splits.items()},
        "seed": seed,
    }
    _write(files.check_writable_dir(out_dir, "--out-dir"), splits, meta)
    return meta


def _split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    n_val = max(1, round(n * val_fraction)) if val_fraction else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction else 0
    if n_val + n_test >= n:
        raise GptkitError(f"{n} pair(s) are too few to keep {n_val + n_test} for val/test: give more, or a --val file")
    order = np.random.default_rng(seed).permutation(n)
    val, test, train = np.split(order, [n_val, n_val + n_test])
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def _write(out_dir: Path, splits: dict, meta: dict) -> None:
    """Every file to a temporary name first; all of them replace the old ones only once all are written."""
    with contextlib.ExitStack() as stack:  # replaced in reverse order: meta.json last
        meta_tmp = stack.enter_context(files.replacing(out_dir / "meta.json"))
        for split, (tokens, offsets) in splits.items():
            stack.enter_context(files.replacing(out_dir / f"{split}.bin")).write_bytes(tokens.tobytes())
            with open(stack.enter_context(files.replacing(out_dir / f"{split}.offsets.npy")), "wb") as f:
                np.save(f, offsets)
        meta_tmp.write_text(json.dumps(meta, indent=2) + "\n")
