"""Text or examples -> a dataset folder: bins + `meta.json`; the `python -m gptkit.prepare` command.

    python -m gptkit.prepare PATH --name NAME [--val-fraction 0.1]
    python -m gptkit.prepare EXAMPLES.jsonl --name NAME [--val VAL.jsonl] [--test TEST.jsonl]

`prepare` picks the pipeline by what PATH is: a `.jsonl` / `.json` file holds examples
(`gptkit.prepare_examples`: token ids, a loss mask and offsets per split); a text file or a
folder of `.txt` files is a stream (`gptkit.prepare_text`: `train.bin` / `val.bin`). Both
write through `gptkit.dataset_files`, so an interrupted run, or a full disk, never leaves half
a dataset behind.
"""

import argparse
import re
from pathlib import Path

from gptkit import prepare_labels, prepare_pairs
from gptkit.config import AlignedHelpFormatter
from gptkit.dataset_files import _BinWriter, _check_fraction, _commit, _tokenizer_meta, source_sha256  # noqa: F401
from gptkit.errors import GptkitError, run_cli
from gptkit.prepare_examples import (  # noqa: F401  (the readers other example pipelines build on)
    EXAMPLE_SUFFIXES,
    LENGTH_BUCKETS,
    SPLITS,
    _example_fractions,
    _write_examples,
    is_example_file,
    prepare_examples,
    read_examples,
    split_counts,
    split_indices,
    take,
    tokenize_examples,
)
from gptkit.prepare_text import pick_val_documents, prepare_stream, split_for_threads  # noqa: F401


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
    if is_example_file(source) and prepare_pairs.is_preference_file(source):
        val_fraction = _example_fractions(val, val_fraction, test, test_fraction)
        return prepare_pairs.prepare_pairs(source, out_dir, val, test, val_fraction, test_fraction, seed)
    if is_example_file(source):
        return prepare_examples(source, out_dir, val, test, val_fraction, test_fraction, seed, block_size)
    if val is not None or test is not None or test_fraction:
        raise GptkitError(
            "--val, --test and --test-fraction are for example files (.jsonl / .json); "
            "a text's val split is --val-fraction of it"
        )
    val_fraction = 0.1 if val_fraction is None else val_fraction
    return prepare_stream(source, out_dir, val_fraction, block_size, num_threads, progress)


# --- the command line -------------------------------------------------------------------------
def print_counts(meta: dict) -> None:
    if meta.get("kind") == "classification":
        prepare_labels.print_counts(meta)
        return
    if meta.get("kind") == "examples":
        print_example_counts(meta)
        return
    if meta.get("kind") == "preference":
        for split, c in meta["splits"].items():
            print(f"{split} has {c['pairs']:,} pairs, {c['tokens']:,} tokens; the longest row {c['longest']:,} tokens")
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
        formatter_class=AlignedHelpFormatter,
        description="Tokenize a text file, a folder of .txt files, a file of prompt -> response examples "
        "(.jsonl / .json), or labelled texts for a classifier (.jsonl / .json of {text, label}, or .csv / .tsv "
        "with text and label columns) into data/NAME/.",
    )
    parser.add_argument(
        "path",
        help="a UTF-8 text file, a folder of .txt files (one document each), or examples: a .jsonl file (one "
        "JSON object a line) or a .json list, with keys prompt/completion, instruction/input/output (Alpaca) "
        "or messages (chat); or preference pairs, prompt/chosen/rejected (gptkit.prepare_pairs)",
    )
    parser.add_argument("--name", required=True, help="dataset name: writes data/NAME/ (use --dataset=NAME to train)")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="share kept for validation (None: 0.1, or 0 with --val): of the text, or of the examples "
        "(whole ones, seeded)",
    )
    parser.add_argument("--val", metavar="FILE", help="examples: a separate validation file instead of --val-fraction")
    parser.add_argument(
        "--test", metavar="FILE", help="examples: a test file (held out from training, for gptkit.evaluate)"
    )
    parser.add_argument("--test-fraction", type=float, default=0.0, help="examples: share of PATH kept for test")
    parser.add_argument("--seed", type=int, default=1337, help="examples: which ones validate and test")
    parser.add_argument(
        "--block-size",
        type=int,
        default=1024,
        help="text: the val split must hold at least one block; examples: count those that training will cut",
    )
    parser.add_argument("--out-root", default="data", help="folder that holds the datasets")
    return parser


if __name__ == "__main__":
    run_cli(main)
