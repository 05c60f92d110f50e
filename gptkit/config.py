"""Training settings: one dataclass, set from a config file and then `--key=value` overrides.

    python -m gptkit.train config/finetune_shakespeare.py --batch_size=4 --init_from=gpt2

A config file is plain Python of assignments, as in nanoGPT. Imports and `_private` names in
it are ignored; any other name must be a setting, and values are type-checked, so a typo is
an error that names the closest valid key instead of a silently ignored line.
"""

import argparse
import ast
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from gptkit.errors import GptkitError
from gptkit.lora import DEFAULT_TARGETS, check_settings
from gptkit.pretrained import GPT2_SIZES


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take; `words` is how --help and the error say it."""

    low: float
    high: float = math.inf
    low_open: bool = False  # low itself is out
    high_open: bool = False  # high itself is out
    words: str = ""

    def holds(self, value) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


AT_LEAST_1 = Range(1, words="at least 1")
NON_NEGATIVE = Range(0, words="0 or more")
POSITIVE = Range(0, low_open=True, words="positive")
FRACTION = Range(0, 1, high_open=True, words="in [0, 1)")
SEED = Range(0, 2**63, high_open=True, words="in [0, 2**63)")  # numpy's generators refuse negative seeds
DTYPES = ("auto", "float32", "bfloat16", "float16")
TRAIN_LAYERS = ("all", "last_block", "head")
BEST_BY = ("accuracy", "loss")


def setting(default, doc: str, check: Range | tuple | None = None):
    """A dataclass field with a one-line doc, shown by --help, and the range (or choices) it must be in."""
    return field(default=default, metadata={"doc": doc, "check": check})


@dataclass
class TrainConfig:
    # I/O
    out_dir: str = setting("out", "folder for ckpt.pt, latest.pt, metrics.jsonl and config.json")
    overwrite_out_dir: bool = setting(False, "allow a fresh run to replace the checkpoints already in out_dir")
    eval_interval: int = setting(2000, "evaluate (and maybe checkpoint) every this many iterations", AT_LEAST_1)
    log_interval: int = setting(1, "write a step record to metrics.jsonl every this many iterations", AT_LEAST_1)
    eval_iters: int = setting(200, "batches per split in each loss estimate", AT_LEAST_1)
    eval_only: bool = setting(False, "evaluate once and exit")
    always_save_checkpoint: bool = setting(True, "save ckpt.pt at every evaluation, not only when val improves")
    init_from: str = setting("scratch", "scratch | resume | gpt2[-medium|-large|-xl] | a HF or peft adapter dir")
    early_stop_patience: int = setting(
        0, "stop after this many evaluations without val improvement (0: never)", NON_NEGATIVE
    )
    progress: bool = setting(True, "show a tqdm progress bar")
    # logging
    tensorboard: bool = setting(False, "write the metrics to OUT_DIR/tensorboard/ too (needs: pip install tensorboard)")
    wandb_log: bool = setting(False, "log to Weights & Biases (needs: pip install wandb)")
    wandb_project: str = setting("gptkit", "wandb project")
    wandb_run_name: str = setting("run", "wandb run name")
    # data
    dataset: str = setting("shakespeare", "dataset folder under data_root (prepared train.bin / val.bin)")
    data_root: str = setting("data", "folder that holds the datasets")
    gradient_accumulation_steps: int = setting(
        1, "micro-batches per optimizer step (divided across DDP ranks)", AT_LEAST_1
    )
    batch_size: int = setting(12, "sequences per micro-batch", AT_LEAST_1)
    block_size: int = setting(1024, "tokens per sequence (crops a pretrained model's context if smaller)", AT_LEAST_1)
    seed: int = setting(1337, "seed for initialisation, dropout and the data windows", SEED)
    mask_prompt: bool = setting(
        True,
        "example datasets: loss on the responses only, as the prompts are given at use and need no learning "
        "(False: on whole examples)",
    )
    # classification datasets (kind: classification): what trains, and what picks the best checkpoint
    train_layers: str = setting(
        "last_block",
        "classifiers: which weights train: all | last_block (the last block, final LayerNorm and head) | head",
        TRAIN_LAYERS,
    )
    best_by: str = setting(
        "accuracy", "classifiers: the best checkpoint and early stopping follow val accuracy or val loss", BEST_BY
    )
    # preference datasets (kind: preference): DPO
    dpo_beta: float = setting(
        0.1, "DPO's beta: how far the policy may move from the reference (higher: less)", POSITIVE
    )
    dpo_average_logps: bool = setting(
        False, "DPO on the mean log-probability per response token (LLMs-from-scratch), not the sum (TRL)"
    )
    dpo_reference: str = setting(
        "auto",
        "auto (LoRA: the model with adapters off; else precompute), precompute (the starting model's "
        "log-probabilities of every pair, computed once), adapters (LoRA runs only)",
        ("auto", "precompute", "adapters"),
    )
    watch_choices: str = setting(
        "",
        "a multiple-choice .jsonl (gptkit.choices) scored at every evaluation and logged as val_choices_acc(_norm): "
        "does the finetune erode what the base knew?",
    )
    # model (used by init_from=scratch)
    n_layer: int = setting(12, "transformer blocks (scratch only)", AT_LEAST_1)
    n_head: int = setting(12, "attention heads (scratch only)", AT_LEAST_1)
    n_embd: int = setting(768, "embedding width (scratch only)", AT_LEAST_1)
    dropout: float = setting(
        0.0, "dropout; overrides a pretrained model's (0 for pretraining, 0.1+ to finetune)", FRACTION
    )
    bias: bool = setting(True, "biases in Linear and LayerNorm layers (scratch only)")
    # LoRA: train low-rank adapters on a frozen pretrained model (gptkit.lora)
    lora_rank: int = setting(
        0,
        "rank of the LoRA adapters; 0 trains every weight (a full finetune)",
        Range(0, words="0 (full finetune) or more"),
    )
    lora_alpha: float = setting(16.0, "LoRA scale: the update B A is multiplied by lora_alpha / lora_rank", POSITIVE)
    lora_dropout: float = setting(0.0, "dropout on the LoRA adapters' input", FRACTION)
    lora_targets: str = setting(DEFAULT_TARGETS, "comma-separated layers of each block that get adapters")
    # optimizer
    learning_rate: float = setting(6e-4, "peak learning rate", POSITIVE)
    max_iters: int = setting(600000, "optimizer steps in total", NON_NEGATIVE)
    weight_decay: float = setting(0.1, "AdamW weight decay on matrices", NON_NEGATIVE)
    beta1: float = setting(0.9, "AdamW beta1", FRACTION)
    beta2: float = setting(0.95, "AdamW beta2", FRACTION)
    grad_clip: float = setting(1.0, "clip the gradient norm to this (0: off)", NON_NEGATIVE)
    # learning-rate schedule
    decay_lr: bool = setting(True, "warmup + cosine decay; False keeps learning_rate constant")
    warmup_iters: int = setting(2000, "linear warmup steps", NON_NEGATIVE)
    lr_decay_iters: int = setting(600000, "cosine decay ends here (~max_iters per Chinchilla)", NON_NEGATIVE)
    min_lr: float = setting(6e-5, "learning rate after decay (~learning_rate / 10)", NON_NEGATIVE)
    # system
    backend: str = setting("nccl", "DDP backend on CUDA (CPU runs use gloo)", ("nccl", "gloo"))
    ddp_timeout: int = setting(
        1800,
        "seconds a DDP process waits for the others before failing (a hung rank)",
        Range(1, words="at least 1 second"),
    )
    fsdp: bool = setting(
        False, "under torchrun, shard weights, gradients and AdamW state across the processes (FSDP2), not copy them"
    )
    device: str = setting("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    dtype: str = setting(
        "auto",
        "auto (CUDA: bf16 where the GPU computes it natively, compute capability 8.0+, else fp16 with the gradient"
        " scaler; CPU: bf16 where native and measured faster, else fp32; fp32 elsewhere), float32, bfloat16, float16",
        DTYPES,
    )
    compile: bool = setting(False, "torch.compile the model (PyTorch 2, CUDA)")
    grad_checkpoint: bool = setting(
        False, "recompute each block's activations in the backward pass (saves memory, ~30% slower)"
    )
    check_memory: bool = setting(True, "estimate the run's memory first and stop if the device lacks it")
    mfu_peak_flops: float = setting(0.0, "peak FLOP/s for MFU (0: known GPUs' bf16 peak, none on CPU)", NON_NEGATIVE)


# --- --help: every CLI in the same two columns --------------------------------------------------
HELP_COLUMN_MAX = 40  # a longer `--setting=default` puts its meaning on the next line, in the column


def help_table(rows: list[tuple[str, str]]) -> str:
    """(setting and default, meaning) rows in two aligned columns, indented by two spaces."""
    width = max((len(left) for left, _ in rows if len(left) <= HELP_COLUMN_MAX), default=0) + 2
    lines = []
    for left, meaning in rows:
        if len(left) + 2 > width:
            lines += [f"  {left}", f"  {'':<{width}}{meaning}"]
        else:
            lines.append(f"  {left:<{width}}{meaning}")
    return "\n".join(lines)


def doc_of(cls) -> str:
    rows = []
    for f in dataclasses.fields(cls):
        check = f.metadata.get("check")
        where = f"; {check.words}" if isinstance(check, Range) else ""
        rows.append((f"--{f.name}={f.default!r}", f"{f.metadata.get('doc', '')}{where}"))
    return help_table(rows)


class AlignedHelpFormatter(argparse.HelpFormatter):
    """argparse's --help in the columns of the settings' help: `--option=default`, then the meaning."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=HELP_COLUMN_MAX + 4)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        shown = action.metavar or action.dest.upper() if action.required or action.metavar else repr(action.default)
        return f"{action.option_strings[-1]}={shown}"


# --- validation: each setting against its range, then settings against each other -------------
FSDP_NO_LORA = (
    "--fsdp=True does not shard LoRA runs (their optimizer state is small): leave --fsdp off to run LoRA with DDP"
)


def check_ranges(cfg, keys: tuple[str, ...] | None = None) -> None:
    """Every setting of `cfg` (a TrainConfig or SampleConfig; or only `keys`) whose field names a Range or choices."""
    for f in dataclasses.fields(cfg):
        if keys is not None and f.name not in keys:
            continue
        check, value = f.metadata.get("check"), getattr(cfg, f.name)
        if check is None or value is None:  # None: the setting's "off" (top_k, top_p)
            continue
        optional = " or None" if type(None) in _allowed_types(typing.get_type_hints(type(cfg))[f.name]) else ""
        if isinstance(check, tuple):
            if value not in check:
                raise GptkitError(f"{f.name} must be one of {', '.join(check)}, not {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float) or not check.holds(value):
            raise GptkitError(f"{f.name} must be {check.words}{optional}, not {value!r}")


def lora_and_train_layers(train_layers: str, lora: str) -> str:
    """The error for a run given both ways of choosing what trains (`lora`: the setting that makes it LoRA)."""
    return (
        f"train_layers={train_layers} and {lora} are two answers to what trains: LoRA trains its adapters "
        "and the head; drop --train_layers to train with LoRA, or set --lora_rank=0 (a full model, not an "
        "adapter) to train the layers train_layers names"
    )


def validate(cfg: "TrainConfig", world_size: int) -> None:
    """Settings that cannot work, caught before any file is touched."""
    check_ranges(cfg)
    check_settings(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    if cfg.gradient_accumulation_steps % world_size:
        raise GptkitError(
            f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} does not divide across "
            f"{world_size} processes: make it a multiple of {world_size}, or use another process count"
        )
    if cfg.fsdp and world_size > 1 and cfg.lora_rank:
        raise GptkitError(FSDP_NO_LORA)
    if cfg.lora_rank and cfg.train_layers != TrainConfig.train_layers:
        raise GptkitError(lora_and_train_layers(cfg.train_layers, f"lora_rank={cfg.lora_rank}"))
    if cfg.lora_rank and cfg.init_from == "scratch":
        raise GptkitError(
            f"lora_rank={cfg.lora_rank} with init_from=scratch would train adapters on a frozen random model, "
            "which learns next to nothing: LoRA adapts pretrained weights, so use --init_from=gpt2 "
            "(or a HF directory), or --lora_rank=0 to train from scratch"
        )
    if cfg.init_from == "scratch" and cfg.n_embd % cfg.n_head:
        raise GptkitError(
            f"n_embd={cfg.n_embd} does not split into n_head={cfg.n_head} heads: make n_embd a multiple of n_head"
        )
    if cfg.init_from in GPT2_SIZES and cfg.block_size > 1024:
        raise GptkitError(f"block_size {cfg.block_size} is larger than GPT-2's context of 1024: use 1024 or less")


# Settings of one kind of dataset (its meta.json's "kind"), and what the error adds; on another
# kind they would do nothing, so a run given one there stops instead of quietly ignoring it.
ONE_KIND_SETTINGS = {
    "mask_prompt": ("examples", ", or prepare a .jsonl of examples"),
    "train_layers": ("classification", " (every weight trains here; to train fewer, use LoRA: --lora_rank=8)"),
    "best_by": ("classification", " (the best checkpoint and early stopping follow the val loss here)"),
    "dpo_beta": ("preference", ""),
    "dpo_average_logps": ("preference", ""),
    "dpo_reference": ("preference", ""),
}
KIND_NAMES = {  # a dataset kind: (the datasets of that kind, one of them)
    "stream": ("text streams", "a text stream"),
    "examples": ("example datasets (prompt -> response)", "an example dataset (prompt -> response)"),
    "classification": ("classification datasets", "a classification dataset"),
    "preference": ("preference datasets (DPO pairs)", "a preference dataset (DPO pairs)"),
}


def check_dataset_settings(cfg: "TrainConfig", kind: str, data_dir: str | Path) -> None:
    """A setting given (command line or config file) for another kind of dataset than `kind`, the
    one in `data_dir`, is an error: it would be silently ignored."""
    given = given_settings(cfg)
    for key, (applies, advice) in ONE_KIND_SETTINGS.items():
        if key in given and applies != kind:
            this = KIND_NAMES[kind][1] if kind in KIND_NAMES else f"a dataset of kind {kind!r}"
            raise GptkitError(
                f"{key} applies to {KIND_NAMES[applies][0]} only, but {data_dir} is {this}: "
                f"drop {key}={getattr(cfg, key)} from the command line or config file{advice}"
            )


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


def parse_given(cls, argv: list[str], prog: str) -> tuple:
    """`(cfg, given)`: `cls` built from `[CONFIG_FILE ...] [--key=value ...]` (files first, then
    overrides), and the names of the settings a file or the command line set (defaults never count)."""
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
    return cls(**values), frozenset(values)


def parse_args(cls, argv: list[str], prog: str):
    """`cls` from the command line, as `parse_given`; `given_settings(cfg)` tells which were given."""
    cfg, given = parse_given(cls, argv, prog)
    cfg._given = given
    return cfg


def given_settings(cfg) -> frozenset[str]:
    """The settings given explicitly: as parsed, or for a config built in Python, those off their default."""
    given = getattr(cfg, "_given", None)
    if given is not None:
        return given
    return frozenset(f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != f.default)
