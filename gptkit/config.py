"""Training settings: one dataclass, set from a config file and then `--key=value` overrides.

    python -m gptkit.train config/finetune_shakespeare.py --batch_size=4 --init_from=gpt2

A config file is plain Python of assignments, as in nanoGPT. Imports and `_private` names in
it are ignored; any other name must be a setting, and values are type-checked, so a typo is
an error that names the closest valid key instead of a silently ignored line.
"""

import ast
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from gptkit.errors import GptkitError
from gptkit.lora import DEFAULT_TARGETS


def setting(default, doc: str):
    """A dataclass field with a one-line doc, shown by --help."""
    return field(default=default, metadata={"doc": doc})


@dataclass
class TrainConfig:
    # I/O
    out_dir: str = setting("out", "folder for ckpt.pt, latest.pt, metrics.jsonl and config.json")
    overwrite_out_dir: bool = setting(False, "allow a fresh run to replace the checkpoints already in out_dir")
    eval_interval: int = setting(2000, "evaluate (and maybe checkpoint) every this many iterations")
    log_interval: int = setting(1, "write a step record to metrics.jsonl every this many iterations")
    eval_iters: int = setting(200, "batches per split in each loss estimate")
    eval_only: bool = setting(False, "evaluate once and exit")
    always_save_checkpoint: bool = setting(True, "save ckpt.pt at every evaluation, not only when val improves")
    init_from: str = setting("scratch", "scratch | resume | gpt2[-medium|-large|-xl] | a HF or peft adapter dir")
    early_stop_patience: int = setting(0, "stop after this many evaluations without val improvement (0: never)")
    progress: bool = setting(True, "show a tqdm progress bar")
    # logging
    wandb_log: bool = setting(False, "log to Weights & Biases (needs: pip install wandb)")
    wandb_project: str = setting("gptkit", "wandb project")
    wandb_run_name: str = setting("run", "wandb run name")
    # data
    dataset: str = setting("shakespeare", "dataset folder under data_root (prepared train.bin / val.bin)")
    data_root: str = setting("data", "folder that holds the datasets")
    gradient_accumulation_steps: int = setting(1, "micro-batches per optimizer step (divided across DDP ranks)")
    batch_size: int = setting(12, "sequences per micro-batch")
    block_size: int = setting(1024, "tokens per sequence (crops a pretrained model's context if smaller)")
    seed: int = setting(1337, "seed for initialisation, dropout and the data windows")
    # model (used by init_from=scratch)
    n_layer: int = setting(12, "transformer blocks (scratch only)")
    n_head: int = setting(12, "attention heads (scratch only)")
    n_embd: int = setting(768, "embedding width (scratch only)")
    dropout: float = setting(0.0, "dropout; overrides a pretrained model's (0 for pretraining, 0.1+ to finetune)")
    bias: bool = setting(True, "biases in Linear and LayerNorm layers (scratch only)")
    # LoRA: train low-rank adapters on a frozen pretrained model (gptkit.lora)
    lora_rank: int = setting(0, "rank of the LoRA adapters; 0 trains every weight (a full finetune)")
    lora_alpha: float = setting(16.0, "LoRA scale: the update B A is multiplied by lora_alpha / lora_rank")
    lora_dropout: float = setting(0.0, "dropout on the LoRA adapters' input")
    lora_targets: str = setting(DEFAULT_TARGETS, "comma-separated layers of each block that get adapters")
    # optimizer
    learning_rate: float = setting(6e-4, "peak learning rate")
    max_iters: int = setting(600000, "optimizer steps in total")
    weight_decay: float = setting(0.1, "AdamW weight decay on matrices")
    beta1: float = setting(0.9, "AdamW beta1")
    beta2: float = setting(0.95, "AdamW beta2")
    grad_clip: float = setting(1.0, "clip the gradient norm to this (0: off)")
    # learning-rate schedule
    decay_lr: bool = setting(True, "warmup + cosine decay; False keeps learning_rate constant")
    warmup_iters: int = setting(2000, "linear warmup steps")
    lr_decay_iters: int = setting(600000, "cosine decay ends here (~max_iters per Chinchilla)")
    min_lr: float = setting(6e-5, "learning rate after decay (~learning_rate / 10)")
    # system
    backend: str = setting("nccl", "DDP backend on CUDA (CPU runs use gloo)")
    ddp_timeout: int = setting(1800, "seconds a DDP process waits for the others before failing (a hung rank)")
    fsdp: bool = setting(
        False, "under torchrun, shard weights, gradients and AdamW state across the processes (FSDP2), not copy them"
    )
    device: str = setting("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    dtype: str = setting(
        "auto",
        "auto (CUDA: bf16 if supported, else fp16; CPU: bf16 where native and measured faster, else fp32;"
        " fp32 elsewhere), float32, bfloat16, float16",
    )
    compile: bool = setting(False, "torch.compile the model (PyTorch 2, CUDA)")
    grad_checkpoint: bool = setting(
        False, "recompute each block's activations in the backward pass (saves memory, ~30% slower)"
    )
    check_memory: bool = setting(True, "estimate the run's memory first and stop if the device lacks it")
    mfu_peak_flops: float = setting(0.0, "peak FLOP/s for MFU (0: known GPUs' bf16 peak, none on CPU)")


def doc_of(cls) -> str:
    lines = []
    for f in dataclasses.fields(cls):
        lines.append(f"  --{f.name}={f.default!r:<16} {f.metadata.get('doc', '')}")
    return "\n".join(lines)


def _allowed_types(tp) -> tuple:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(tp))
    return (tp,)


def coerce(cls, key: str, value, source: str):
    """Check `value` against the type of setting `key`; ints are fine where floats are expected."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    if key not in names:
        close = difflib.get_close_matches(key, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise GptkitError(f"unknown setting {key!r} in {source}{hint}; see --help for the list")
    hints = typing.get_type_hints(cls)
    allowed = _allowed_types(hints[key])
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and bool not in allowed:
        value = None  # True is an int in Python; never accept it for a number
    if any(t is not type(None) and isinstance(value, t) for t in allowed):
        return value
    want = " or ".join(t.__name__ for t in allowed)
    raise GptkitError(f"{key} in {source} must be {want}, not {value!r}")


def read_config_file(path: str | Path) -> dict:
    """The settings a config file assigns (imports and _private names left out)."""
    path = Path(path)
    if not path.is_file():
        raise GptkitError(f"config file {path} not found; the shipped ones are in config/")
    namespace: dict = {}
    try:
        tree = ast.parse(path.read_text(), str(path))
        exec(compile(tree, str(path), "exec"), namespace)
    except SyntaxError as e:
        raise GptkitError(f"{path}:{e.lineno}: {e.msg}") from None
    except Exception as e:
        raise GptkitError(f"{path} failed to run: {type(e).__name__}: {e}") from None
    imported = {
        (alias.asname or alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    return {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_")
        and k not in imported
        and not isinstance(v, types.ModuleType | types.FunctionType | type)
    }


def parse_value(raw: str):
    """A command-line value as a Python literal; anything else (a path, a name) stays a string."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def parse_args(cls, argv: list[str], prog: str):
    """Build `cls` from `[CONFIG_FILE ...] [--key=value ...]` (files first, then overrides)."""
    values: dict = {}
    for arg in argv:
        if arg in ("-h", "--help"):
            print(
                f"usage: {prog} [CONFIG_FILE.py ...] [--key=value ...]\n\nsettings (default, meaning):\n{doc_of(cls)}"
            )
            raise SystemExit(0)
        if arg.startswith("--"):
            key, eq, raw = arg[2:].partition("=")
            if not eq:
                raise GptkitError(f"{arg} needs a value: write --{key}=VALUE")
            value = parse_value(raw)
            if str in _allowed_types(typing.get_type_hints(cls).get(key)) and not isinstance(value, str):
                value = raw  # --dataset=2024 names a folder, it is no number
            values[key] = coerce(cls, key, value, "the command line")
        else:
            for key, value in read_config_file(arg).items():
                values[key] = coerce(cls, key, value, arg)
    return cls(**values)
