"""Tokenize the `dates_preference` pairs (train / val / test .jsonl beside this file) into their bins.

    python data/dates_preference/prepare.py

The same as `python -m gptkit.prepare data/dates_preference/train.jsonl --name dates_preference --val
data/dates_preference/val.jsonl --test data/dates_preference/test.jsonl`. The .jsonl files ship with gptkit;
`build.py` rebuilds them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone without installing

from gptkit.errors import run_cli  # noqa: E402
from gptkit.prepare import prepare, print_counts  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    print_counts(prepare(HERE / "train.jsonl", HERE, val=HERE / "val.jsonl", test=HERE / "test.jsonl"))


if __name__ == "__main__":
    run_cli(main)
