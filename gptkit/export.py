"""Export a run's best model as a Hugging Face GPT-2 directory.

    python -m gptkit.export OUT_DIR DEST

Reads OUT_DIR/ckpt.pt (the best model by val loss; latest.pt when val never improved), folds
a LoRA run's adapters into its base's weights, and writes DEST/config.json and
DEST/model.safetensors, which `transformers.GPT2LMHeadModel.from_pretrained(DEST)` loads, and
`--init_from=DEST` too. DEST must be new or empty: nothing is overwritten, and DEST appears
only once it is complete (written beside it, then renamed).
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from gptkit import checkpoint
from gptkit.errors import GptkitError, run_cli
from gptkit.lora import merge_lora
from gptkit.model import GPT
from gptkit.pretrained import export_hf

USAGE = "usage: python -m gptkit.export OUT_DIR DEST  (a run's folder, and a new folder for the Hugging Face model)"


def best_checkpoint_path(out_dir: str | os.PathLike) -> Path:
    """OUT_DIR/ckpt.pt, or latest.pt when the run never saved a best model."""
    out = Path(out_dir)
    for name in (checkpoint.BEST, checkpoint.LATEST):
        if (out / name).is_file():
            return out / name
    if not out.is_dir():
        raise GptkitError(f"{out} is not a folder: pass a training run's --out_dir")
    raise GptkitError(f"{out} holds no {checkpoint.BEST} or {checkpoint.LATEST}: train a run there first")


def check_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise GptkitError(f"{dest} is a file: choose a new folder for the export")
    if dest.is_dir() and any(dest.iterdir()):
        raise GptkitError(f"{dest} exists and is not empty: choose a new folder, or empty it first")


def load_merged(out_dir: str | os.PathLike) -> GPT:
    """The model a run's best checkpoint holds, LoRA adapters merged: a plain GPT."""
    path = best_checkpoint_path(out_dir)
    return merge_lora(checkpoint.model_from_checkpoint(checkpoint.load(path), path)).eval()


def export(out_dir: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Write OUT_DIR's best model to DEST (new or empty) as a Hugging Face GPT-2 directory."""
    dest = Path(dest)
    check_dest(dest)  # before loading anything: a multi-GB load should not end in this error
    model = load_merged(out_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        export_hf(model, staging, release=True)  # the model is not needed afterwards: convert it in place
        check_dest(dest)  # still empty? (another process may have written there meanwhile)
        if dest.is_dir():
            dest.rmdir()
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if set(argv) & {"-h", "--help"}:
        print(USAGE)
        return
    if len(argv) != 2:
        raise GptkitError(f"expected 2 arguments, got {len(argv)}; {USAGE}")
    out_dir, dest = argv
    written = export(out_dir, dest)
    print(f"wrote {written}: load it with transformers.GPT2LMHeadModel.from_pretrained({str(written)!r})")


if __name__ == "__main__":
    run_cli(main)
