"""The offline stand-in: a small GPT-2 that gptkit pretrains once on tiny Shakespeare and caches.

When GPT-2's weights cannot be had (offline, nothing cached), the notebooks and `make demo`
finetune this model instead, through the same loading code (a local Hugging Face directory):

    directory, unavailable = dir_or_pretrained_standin("gpt2", prepared_data_dir, models_dir)

It is GPT-2's architecture at 4 layers and 128 wide (`pretrained.STANDIN_SIZE`), started from
the random stand-in and trained on the train split of the prepared corpus for a few minutes of
a CPU: far better than chance on Shakespeare, far from GPT-2. Unlike GPT-2 it has seen this very
text, so finetuning it on Shakespeare goes on where its pretraining stopped, where GPT-2 would
move from web text to Shakespeare. It is cached in `models_dir`, in a folder named by its recipe,
and built whole or not at all; smoke mode (GPTKIT_SMOKE=1) trains it for fewer steps, into a
folder of its own.
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

from gptkit import smoke
from gptkit.config import TrainConfig
from gptkit.export import export
from gptkit.pretrained import STANDIN_SIZE, WeightsUnavailable, build_offline_standin, resolve_hub_dir
from gptkit.train import train

# A pretraining recipe for the stand-in: a pretraining learning rate with warmup and cosine decay,
# about two thirds of an epoch of the 302k-token train split (the 50,257-way head is most of the cost).
RECIPE = dict(
    block_size=128, batch_size=8, gradient_accumulation_steps=1, max_iters=160, learning_rate=3e-3,
    warmup_iters=10, lr_decay_iters=160, min_lr=3e-4, weight_decay=0.1, dropout=0.0, seed=1337,
    eval_interval=160, eval_iters=4,
)  # fmt: skip
SMOKE_RECIPE = dict(max_iters=6, warmup_iters=2, lr_decay_iters=6, eval_interval=6, eval_iters=1)
VERSION = 1  # change when the build changes in a way the recipe does not show


def recipe() -> dict:
    return RECIPE | (SMOKE_RECIPE if smoke() else {})


def standin_dir(models_dir: str | os.PathLike) -> Path:
    """Where the pretrained stand-in of this recipe lives (built or not)."""
    key = json.dumps(recipe() | STANDIN_SIZE | {"version": VERSION}, sort_keys=True)
    return Path(models_dir) / f"offline-standin-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def is_built(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def build_pretrained_standin(data_dir: str | os.PathLike, models_dir: str | os.PathLike) -> Path:
    """The stand-in's directory, pretrained on `data_dir`'s train split on the first call (minutes)."""
    dest = standin_dir(models_dir)
    if is_built(dest):
        return dest
    data_dir = Path(data_dir).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"pretraining the offline stand-in once ({recipe()['max_iters']} steps), cached at {dest}")
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}-", dir=dest.parent) as tmp:
        random = build_offline_standin(Path(tmp) / "random")
        run = Path(tmp) / "run"
        cfg = TrainConfig(
            out_dir=str(run), init_from=str(random), dataset=data_dir.name, data_root=str(data_dir.parent),
            device="cpu", dtype="float32", always_save_checkpoint=True, progress=False, check_memory=False,
            **recipe(),
        )  # fmt: skip
        summary = train(cfg)
        print(f"offline stand-in pretrained: val loss {summary['last_val_loss']:.3f}")
        export(run, Path(tmp) / "hf")
        widen_positions(Path(tmp) / "hf", random)
        try:
            (Path(tmp) / "hf").rename(dest)  # whole or not at all: a stopped build leaves no half model
        except OSError:
            pass  # another process finished first: its copy is the same recipe's
    return dest


def widen_positions(trained: Path, random: Path) -> None:
    """Give the trained model GPT-2's 1,024 positions back: training cropped them to its block_size;
    those past it keep the random stand-in's initial values, as nothing trained them."""
    state = load_file(trained / "model.safetensors")
    wide = load_file(random / "model.safetensors")["transformer.wpe.weight"].clone()
    short = state["transformer.wpe.weight"]
    wide[: short.shape[0]] = short
    state["transformer.wpe.weight"] = wide
    save_file({k: v.contiguous() for k, v in state.items()}, trained / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((trained / "config.json").read_text())
    config |= {"n_positions": wide.shape[0], "n_ctx": wide.shape[0]}
    (trained / "config.json").write_text(json.dumps(config, indent=2))


def dir_or_pretrained_standin(
    name: str, data_dir: str | os.PathLike, models_dir: str | os.PathLike
) -> tuple[Path, WeightsUnavailable | None]:
    """The local directory of `name`'s weights, or of the pretrained stand-in when they cannot be had.

    The second value is None for the real weights, else the reason they were unavailable.
    """
    try:
        return resolve_hub_dir(name), None
    except WeightsUnavailable as e:
        return build_pretrained_standin(data_dir, models_dir), e
