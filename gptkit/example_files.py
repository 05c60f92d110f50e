"""Reading a file of examples: UTF-8 text, and one JSON object a line (.jsonl) or a list (.json).

Every kind of example file (prompt → response, text → label, prompt → chosen / rejected) is read
here, so each reports a bad byte, bad JSON or an empty file the same way: one line naming the
file and the line or item, and what to do. `what` names the examples in those lines.
"""

import json
from pathlib import Path

from gptkit.errors import GptkitError


def read_utf8(path: Path, what: str = "examples, one JSON object a line (.jsonl) or a list (.json)") -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as editors and spreadsheets write, is not text
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise GptkitError(
            f"{path} line {line}: not UTF-8 (invalid byte at offset {e.start}); "
            "convert it first, e.g. iconv -f latin1 -t utf-8"
        ) from None
    if not text.strip():
        raise GptkitError(f"{path} is empty: give it {what}")
    return text


def json_records(path: Path, text: str, what: str = "examples") -> list[tuple[str, object]]:
    """(where, object) for each example: 'line N' in a .jsonl, 'item N' in a .json list."""
    if path.suffix.lower() == ".jsonl":
        numbered = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        return [(f"line {n}", _loads(path, line, n)) for n, line in numbered]
    data = _loads(path, text, None)
    if not isinstance(data, list):
        raise GptkitError(
            f"{path} holds a JSON {type(data).__name__}, not a list: a .json file is a list of {what} "
            "(or write a .jsonl file, one example a line)"
        )
    if not data:
        raise GptkitError(f"{path} is an empty list: give it {what}")
    return [(f"item {i}", obj) for i, obj in enumerate(data, 1)]


def _loads(path: Path, text: str, line: int | None) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = f"line {line}" if line is not None else f"line {e.lineno}"
        raise GptkitError(f"{path} {where}: not valid JSON ({e.msg} at column {e.colno})") from None
