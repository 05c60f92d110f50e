"""Train, once, a tiny GPT-2 for real on the Shakespeare train split, and save it as a Hugging Face
GPT-2 directory (config.json + model.safetensors, GPT-2's real 50,257-token vocabulary).
It trains on a lower-cased copy of the text, so that, like GPT-2, it has not seen the exact
text the notebooks finetune on and a finetune has something to learn.

The tests serve it through a local hub as `openai-community/gpt2`, so the notebooks' branches
that run only with real pretrained weights execute on a machine without internet. It is not
GPT-2: it has seen only lower-case Shakespeare, for a minute. It is cached outside the checkout, in
the user's cache (`~/.cache/gptkit/test-models`, or under `$XDG_CACHE_HOME`), in a folder named by
this script's sha256, so any change here builds a new one.

    python scripts/build_trained_tiny_gpt2.py   # prints the directory
"""

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout: gptkit need not be installed

from gptkit.config import TrainConfig  # noqa: E402
from gptkit.export import export  # noqa: E402
from gptkit.prepare import prepare  # noqa: E402
from gptkit.train import train  # noqa: E402

DATA = ROOT / "data" / "shakespeare"
POSITIONS = 1024  # GPT-2's context
# Small enough for about a minute of one CPU core (the 50,257-way output layer is most of the work),
# large enough to predict Shakespeare far better than chance (ln(50257) = 10.8 nats); it prints its val loss.
# Dropout 0.1 as GPT-2 was trained (the notebooks finetune with it); 120 steps: quick to build.
RECIPE = dict(
    init_from="scratch", n_layer=2, n_head=2, n_embd=32, block_size=64, bias=True, dropout=0.1,
    batch_size=4, gradient_accumulation_steps=1, max_iters=120, learning_rate=2e-2, warmup_iters=10,
    lr_decay_iters=120, min_lr=2e-3, weight_decay=0.1, eval_interval=120, eval_iters=4, seed=1337,
    device="cpu", dtype="float32", always_save_checkpoint=True, progress=False, check_memory=False,
)  # fmt: skip


CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gptkit" / "test-models"


def destination(models: Path = CACHE) -> Path:
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    return models / f"trained-tiny-gpt2-{digest}"


def is_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def train_once(models: Path) -> Path:
    """The trained weights (a 64-position HF directory), cached by the recipe: the slow part."""
    digest = hashlib.sha256(json.dumps(RECIPE | {"text": "lower-cased"}, sort_keys=True).encode()).hexdigest()[:12]
    trained = models / f"trained-tiny-gpt2-weights-{digest}"
    if is_model(trained):
        return trained
    models.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one summation order on every machine: the same weights everywhere
    with tempfile.TemporaryDirectory(dir=models) as tmp:
        # GPT-2 never saw this text: a lower-cased copy keeps the finetune on the real one something to learn
        lower = Path(tmp) / "lower"
        lower.mkdir()
        (lower / "input.txt").write_text((DATA / "input.txt").read_text(encoding="utf-8").lower(), encoding="utf-8")
        prepare(lower / "input.txt", lower, progress=False)
        run = Path(tmp) / "run"
        try:
            summary = train(TrainConfig(out_dir=str(run), data_root=tmp, dataset="lower", **RECIPE))
        finally:
            torch.set_num_threads(threads)
        print(f"trained: val loss {summary['last_val_loss']:.3f}", file=sys.stderr)
        export(run, Path(tmp) / "hf")
        (Path(tmp) / "hf").rename(trained)  # whole or not at all: a stopped build leaves no half model
    return trained


def build(models: Path = CACHE) -> Path:
    """The model's directory, with GPT-2's 1,024 positions (those past 64 keep their random init,
    as nothing trained them), so code that crops GPT-2's context works on it as on GPT-2."""
    dest = destination(models)
    if is_model(dest):
        return dest
    trained = train_once(models)
    state = load_file(trained / "model.safetensors")
    wpe = state["transformer.wpe.weight"]
    wider = torch.empty(POSITIONS, wpe.shape[1]).normal_(0.0, 0.02, generator=torch.Generator().manual_seed(0))
    wider[: wpe.shape[0]] = wpe
    state["transformer.wpe.weight"] = wider
    config = json.loads((trained / "config.json").read_text()) | {"n_positions": POSITIONS, "n_ctx": POSITIONS}
    with tempfile.TemporaryDirectory(dir=models) as tmp:
        save_file(state, Path(tmp) / "model.safetensors", metadata={"format": "pt"})
        (Path(tmp) / "config.json").write_text(json.dumps(config, indent=2))
        Path(tmp).rename(dest)
        Path(tmp).mkdir()  # for TemporaryDirectory's clean-up
    return dest


if __name__ == "__main__":
    print(build())
