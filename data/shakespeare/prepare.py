"""Tokenize tiny Shakespeare into train.bin / val.bin next to this file.

    python data/shakespeare/prepare.py

The corpus ships with gptkit as input.txt (an installed gptkit holds it as gptkit/corpus/input.txt);
if it is missing, it is downloaded once from the char-rnn project and checked against its known sha256.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone without installing

from gptkit.errors import run_cli  # noqa: E402
from gptkit.notebook import fetch_shakespeare  # noqa: E402
from gptkit.prepare import prepare, print_counts  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    source = HERE / "input.txt"
    if not source.is_file():
        fetch_shakespeare(source)
    print_counts(prepare(source, HERE, val_fraction=0.1))


if __name__ == "__main__":
    run_cli(main)
