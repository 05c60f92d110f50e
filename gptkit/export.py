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

import torch

from gptkit import checkpoint
from gptkit.errors import GptkitError, run_cli
from gptkit.files import replacing, write_failed
from gptkit.lora import merge_lora
from gptkit.model import GPT, GPTConfig
from gptkit.pretrained import TRANSPOSED

USAGE = "usage: python -m gptkit.export OUT_DIR DEST  (a run's folder, and a new folder for the Hugging Face model)"


def hf_config(config: GPTConfig):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        activation_function="gelu_new",
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        layer_norm_epsilon=1e-5,
        bos_token_id=50256,
        eos_token_id=50256,
    )


def to_hf_state_dict(model: GPT, release: bool = False) -> dict[str, torch.Tensor]:
    """`model`'s weights under Hugging Face GPT-2 names and layouts.

    The block matrices are stored transposed there (Conv1D), so each is copied. With
    `release=True` each original is freed as soon as its copy exists, so the weights are held
    once plus one matrix, not twice (6 GB less for gpt2-xl); `model` is left unusable.
    """
    state = {}
    # Parameters one at a time (a state_dict kept alive here would hold every original until the
    # end). The tied head comes once, as transformer.wte.weight: HF rebuilds lm_head from it.
    for key, param in model.named_parameters():
        transposed = key.endswith(TRANSPOSED)
        state[key] = (param.detach().t() if transposed else param.detach()).contiguous().cpu()
        if release and transposed:
            param.data = torch.empty(0, dtype=param.dtype, device=param.device)
    return state


def export_hf(model: GPT, out_dir: str | os.PathLike, release: bool = False) -> Path:
    """Write `model` as a Hugging Face GPT-2 directory (config.json + model.safetensors).

    `release=True`: free the model's weights while converting them (see `to_hf_state_dict`).
    """
    from safetensors.torch import save_file

    if not model.config.bias:
        raise GptkitError("export_hf needs bias=True: Hugging Face GPT-2 layers always have biases")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_failed(out, e) from None
    # Each file is replaced whole, and a full disk is one clear line (gptkit.files.replacing).
    with replacing(out / "model.safetensors") as tmp:
        save_file(to_hf_state_dict(model, release), tmp, metadata={"format": "pt"})
    with replacing(out / "config.json") as tmp:
        hf_config(model.config).to_json_file(tmp)
    return out


def check_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise GptkitError(f"{dest} is a file: choose a new folder for the export")
    if dest.is_dir() and any(dest.iterdir()):
        raise GptkitError(f"{dest} exists and is not empty: choose a new folder, or empty it first")


def load_merged(out_dir: str | os.PathLike) -> GPT:
    """The model a run's best checkpoint holds, LoRA adapters merged: a plain GPT."""
    path = checkpoint.best_in(out_dir)
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
