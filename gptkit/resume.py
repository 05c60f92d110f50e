"""The resume policy: which settings a resumed run may change, and the run header's line for it.

A run continued with `init_from=resume` reads its checkpoint (`checkpoint.Resume`); the
settings given on the command line are compared with the ones it was trained with. Those that
decide what the saved state means are refused if they differ, the rest are applied and listed.
"""

import dataclasses

from gptkit.config import TrainConfig, given_settings
from gptkit.errors import GptkitError
from gptkit.lora import parse_targets

# The checkpoint fixes the model's shape, its LoRA adapters and precision; the dataset (the best
# val loss and the sampler's position are that data's); the seed (the saved generators go on
# instead); and AdamW's weight decay and betas (loading the optimizer state restores them).
RESUME_FIXED = (
    "n_layer",
    "n_head",
    "n_embd",
    "bias",
    "block_size",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_targets",
    "train_layers",
    "dtype",
    "dataset",
    "dpo_average_logps",
    "dpo_reference",
    "seed",
    "weight_decay",
    "beta1",
    "beta2",
)
RESUME_UNCOMPARED = ("init_from", "out_dir")  # resume itself, and the folder it reads (which may have moved)


def _same(key: str, old, new, saved_dtype: str | None) -> bool:
    if key == "lora_targets":
        return parse_targets(old) == parse_targets(new)
    if key == "dtype":  # auto keeps the saved precision; naming the precision it chose is no change
        return new in ("auto", old, saved_dtype)
    return old == new


def resume_changes(cfg: TrainConfig, given, saved_config: dict, saved_dtype: str | None = None) -> tuple[dict, dict]:
    """`(applied, refused)`: the given settings that differ from the checkpoint's `saved_config`,
    each `{name: (old, new)}`, split into those a resumed run applies and those it cannot change.

    `saved_dtype` is the precision the checkpoint was trained in (what its `auto` chose).
    """
    applied, refused = {}, {}
    for key in sorted(given, key=[f.name for f in dataclasses.fields(cfg)].index):
        if key in RESUME_UNCOMPARED or key not in saved_config:  # a setting older checkpoints lack
            continue
        old, new = saved_config[key], getattr(cfg, key)
        if not _same(key, old, new, saved_dtype):
            (refused if key in RESUME_FIXED else applied)[key] = (old, new)
    return applied, refused


def _changes(changes: dict) -> str:
    return ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())


def check_resume(cfg: TrainConfig, saved_config: dict, source, saved_dtype: str | None = None) -> dict:
    """The settings a resumed run applies (as `resume_changes`); GptkitError naming any it cannot change."""
    applied, refused = resume_changes(cfg, given_settings(cfg), saved_config, saved_dtype)
    if refused:
        rank = saved_config.get("lora_rank", 0)
        kind = f"a LoRA run of rank {rank}" if rank else "a full run (no LoRA)"
        raise GptkitError(
            f"{source} is {kind}; a resumed run keeps its settings, and these differ: {_changes(refused)}. "
            "Drop them (or give the saved values), or start a new run in another --out_dir"
        )
    return applied


def describe_resume(path, iter_num: int, applied: dict, best: tuple[str, float] | None = None) -> str:
    """The run header's line for a resumed run: from where, which given settings changed, and (`best`:
    the objective's followed figure and its value) the best so far."""
    changed = f"changed: {_changes(applied)}" if applied else "no setting given differs from the checkpoint's"
    so_far = f"; best {best[0]} so far {best[1]:.4f}" if best else ""
    return f"resuming from {path} at iteration {iter_num}; {changed}{so_far}"
