"""Tokenizing throughput: `gptkit.prepare` on all cores vs single-threaded `encode_ordinary`.

    python benchmarks/bench_prepare.py                    # tiny Shakespeare repeated to >= 20 MB

`gptkit.prepare` runs end to end (read, split train/val, tokenize, write the bins, hash the
source); the baseline reads the same file and calls tiktoken's `encode_ordinary` on the whole
text in one thread. Both are timed interleaved; the ids prepare writes are checked against the
baseline's (encoding train and val separately, as prepare does).
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from gptkit.data import BIN_DTYPE  # noqa: E402
from gptkit.prepare import prepare  # noqa: E402
from gptkit.tokenizer import get_encoding  # noqa: E402

SHAKESPEARE = Path(__file__).resolve().parents[1] / "data" / "shakespeare" / "input.txt"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=20.0, help="corpus size: Shakespeare repeated to at least this")
    parser.add_argument("--threads", type=int, default=0, help="prepare's threads (0: all cores)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--val_fraction", type=float, default=0.1)
    args = parser.parse_args(argv)
    threads = args.threads or os.cpu_count() or 1
    enc = get_encoding()
    base = SHAKESPEARE.read_text(encoding="utf-8")
    copies = max(1, -(-int(args.mb * 1e6) // len(base.encode("utf-8"))))

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text(base * copies, encoding="utf-8")
        mb = corpus.stat().st_size / 1e6

        def single():
            return enc.encode_ordinary(corpus.read_text(encoding="utf-8"))

        def parallel():
            return prepare(corpus, Path(tmp) / "out", args.val_fraction, progress=False, num_threads=threads)

        load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
        print(f"machine: {common.cpu_name()}, {os.cpu_count()} cores{load}")
        print(f"corpus: tiny Shakespeare x {copies} = {mb:.1f} MB; prepare with {threads} threads")
        contenders = {"prepare": parallel, "encode_ordinary": single}
        times = common.time_interleaved(contenders, args.repeats, args.warmup, "cpu")

        text = corpus.read_text(encoding="utf-8")
        cut = int(len(text) * (1 - args.val_fraction))
        for split, part in (("train", text[:cut]), ("val", text[cut:])):
            written = np.fromfile(Path(tmp) / "out" / f"{split}.bin", dtype=BIN_DTYPE)
            if not np.array_equal(written, np.asarray(enc.encode_ordinary(part), dtype=BIN_DTYPE)):
                raise SystemExit(f"prepare's {split}.bin differs from encode_ordinary")
    print("ids: prepare's train.bin and val.bin equal encode_ordinary's")
    speed = {name: mb / common.median(t) for name, t in times.items()}
    for name, value in speed.items():
        print(f"{name:>16}: {value:6.1f} MB/s  ({common.median(times[name]):.2f} s)")
    print(f"ratio prepare/encode_ordinary: {speed['prepare'] / speed['encode_ordinary']:.2f}x MB/s")


if __name__ == "__main__":
    main()
