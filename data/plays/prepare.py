"""Tokenize the `plays` task (speeches.jsonl beside this file) into its bins.

    python data/plays/prepare.py

The same as `python -m gptkit.prepare data/plays/speeches.jsonl --name plays --val-fraction 0.1
--test-fraction 0.1`: val and test are seeded, stratified draws (each play gives 10% of its
speeches to each). speeches.jsonl ships with gptkit; `build.py` rebuilds it from tiny Shakespeare.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone without installing

from gptkit.errors import run_cli  # noqa: E402
from gptkit.prepare import prepare, print_counts  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    print_counts(prepare(HERE / "speeches.jsonl", HERE, val_fraction=0.1, test_fraction=0.1, block_size=256))


if __name__ == "__main__":
    run_cli(main)
