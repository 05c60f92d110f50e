"""Tokenize tiny Shakespeare into train.bin / val.bin next to this file.

    python data/shakespeare/prepare.py

The corpus ships with gptkit as input.txt; if it is missing, it is downloaded once from the
char-rnn project and checked against its known sha256.
"""

import hashlib
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone without installing

from gptkit.errors import GptkitError, run_cli  # noqa: E402
from gptkit.prepare import prepare, print_counts  # noqa: E402

HERE = Path(__file__).resolve().parent
URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def fetch(path: Path) -> None:
    try:
        with urllib.request.urlopen(URL, timeout=30) as r:
            data = r.read()
    except OSError as e:
        raise GptkitError(
            f"{path} is missing and downloading it from {URL} failed ({e}); "
            "connect to the internet once, or copy tiny Shakespeare's input.txt there"
        ) from None
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise GptkitError(f"the download from {URL} does not have the expected sha256 {SHA256}; try again")
    path.write_bytes(data)


def main() -> None:
    source = HERE / "input.txt"
    if not source.is_file():
        fetch(source)
    print_counts(prepare(source, HERE, val_fraction=0.1))


if __name__ == "__main__":
    run_cli(main)
