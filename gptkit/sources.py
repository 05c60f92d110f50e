"""Where a model comes from: `init_from` -> its architecture, its LoRA settings and a loader.

`init_from` is `scratch` (a new model of the run's shape), `resume` (a run's checkpoint), a GPT-2
size (`gpt2` ... `gpt2-xl`), a local Hugging Face GPT-2 directory, or a peft adapter directory
(the base it names, with its adapters). `find` turns any of them into a `Source`; training
(through `for_training`, which adds a run's new LoRA adapters), the memory check, sampling,
evaluation and export all ask it, so they agree on what each one means.

A source's `config` and `lora` are read without loading a weight (a config file, a checkpoint's
header), so the memory check knows a run's size before anything is allocated; `load` reads the
weights.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from gptkit import checkpoint, peft_format, pretrained
from gptkit.data import dataset_kind, read_meta
from gptkit.errors import GptkitError
from gptkit.lora import apply_lora, merge_lora, parse_targets
from gptkit.model import GPT, GPTConfig, gpt2_config

# dropout (None: as stored) -> the model, LoRA adapters added but not merged, and its LoRA settings
Loader = Callable[[float | None], tuple[GPT, dict | None]]


@dataclass(frozen=True)
class Source:
    """A model's origin: what it is, known before a weight is read, and how to load it."""

    config: GPTConfig  # the architecture as stored: its whole context, its own dropout
    lora: dict | None  # its LoRA settings (rank, alpha, dropout, targets, ...); None: no adapters
    loader: Loader
    ckpt: checkpoint.Checkpoint | None = None  # the checkpoint, for a run (what export describes)

    def load(self, dropout: float | None = None) -> tuple[GPT, dict | None]:
        """The model and its LoRA settings as a run keeps them (with its base's fingerprint)."""
        return self.loader(dropout)


def find(init_from: str, out_dir=None, *, resume=None, scratch: GPTConfig | None = None, lora_rank: int = 0) -> Source:
    """The source `init_from` names. `resume`: a run's best checkpoint in `out_dir`, or the
    `checkpoint.Resume` given (training continues from the latest); `scratch`: the shape of a
    new model; `lora_rank`, if not 0, must be a peft adapter's own rank."""
    if init_from == "resume":
        if resume is None:
            path = checkpoint.best_in(out_dir)
            return from_checkpoint(checkpoint.load(path), path)
        if resume.ckpt is None:
            raise resume.error
        return from_checkpoint(resume.ckpt, resume.path)
    if init_from == "scratch" and scratch is not None:
        return Source(scratch, None, lambda dropout: (GPT(_with_dropout(scratch, dropout)), None))
    if peft_format.is_peft_dir(init_from):
        return from_peft_dir(Path(init_from), lora_rank)
    return Source(base_config(init_from), None, lambda dropout: (_pretrained(init_from, dropout), None))


def from_checkpoint(ckpt: checkpoint.Checkpoint, path: Path) -> Source:
    """A run's model, as its checkpoint holds it (a LoRA run's base found and verified on loading)."""

    def load(dropout):
        return checkpoint.model_from_checkpoint(ckpt, path, dropout), ckpt.lora

    return Source(ckpt.model_config(path), ckpt.lora, load, ckpt)


def from_peft_dir(path: Path, lora_rank: int = 0) -> Source:
    """The base a peft adapter directory names, with its adapters."""
    adapter = peft_format.read_config(path)
    base = peft_format.base_of(adapter, path)
    try:
        config = base_config(base)
    except GptkitError as e:
        raise GptkitError(f"the adapter in {path} adapts {base}, which does not load as GPT-2: {e}") from None
    targets = peft_format.resolve_targets(adapter, config.n_layer, path / peft_format.CONFIG)
    if n_labels := peft_format.head_labels(path, adapter):  # a classifier's adapter brings its head
        config = replace(config, n_labels=n_labels)
    lora = {
        "rank": adapter["r"],
        "alpha": float(adapter["lora_alpha"]),
        "dropout": float(adapter.get("lora_dropout", 0.0)),
        "targets": ",".join(targets),
    }
    return Source(config, lora, lambda dropout: peft_format.read_peft_dir(path, dropout or 0.0, lora_rank))


def for_training(cfg, resume=None) -> Source:
    """The source of TrainConfig `cfg`'s model (`resume`: the checkpoint it continues, read once);
    on a pretrained model, `--lora_rank` adds new adapters when it loads."""
    if cfg.init_from == "resume" and resume is None:
        resume = checkpoint.Resume.find(cfg.out_dir)
    scratch = scratch_config(cfg) if cfg.init_from == "scratch" else None
    source = find(cfg.init_from, cfg.out_dir, resume=resume, scratch=scratch, lora_rank=cfg.lora_rank)
    if not cfg.lora_rank or source.lora is not None or cfg.init_from in ("scratch", "resume"):
        return source
    rank, alpha, lora_dropout, targets = cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets

    def load(dropout):
        model, _ = source.load(dropout)
        settings = checkpoint.lora_settings(rank, alpha, lora_dropout, targets, cfg.init_from, model)
        add_classifier(cfg, model)  # before the adapters: the head trains in full beside them
        apply_lora(model, rank, alpha, lora_dropout, targets)
        return model, settings

    lora = {
        "rank": rank,
        "alpha": float(alpha),
        "dropout": float(lora_dropout),
        "targets": ",".join(parse_targets(targets)),
    }
    return replace(source, lora=lora, loader=load)


def add_classifier(cfg, model: GPT) -> None:
    """On a classification dataset, a model without a head (pretrained, scratch) gets one, seeded."""
    labels = read_meta(Path(cfg.data_root) / cfg.dataset).get("labels") or []
    if model.score is None and dataset_kind(Path(cfg.data_root) / cfg.dataset) == "classification":
        model.add_classifier(len(labels))
    elif model.score is not None and model.config.n_labels != len(labels):
        raise GptkitError(
            f"the model has a head for {model.config.n_labels} labels, but {cfg.dataset} has {len(labels)}: "
            "train on the dataset it was trained on, or start from a language model"
        )


def load_model(init_from: str, out_dir=None) -> GPT:
    """The model to sample or evaluate, LoRA adapters merged into its weights: a run's best
    checkpoint in `out_dir` (`resume`), a GPT-2 size, a Hugging Face directory or a peft adapter."""
    model, _ = find(init_from, out_dir).load()
    return merge_lora(model)


def scratch_config(cfg) -> GPTConfig:
    """The model `init_from=scratch` builds: the settings' shape, the dataset's vocabulary."""
    vocab = read_meta(Path(cfg.data_root) / cfg.dataset).get("vocab_size", 50257)
    return GPTConfig(cfg.block_size, vocab, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.dropout, cfg.bias)


def base_config(name_or_dir: str) -> GPTConfig:
    """A pretrained model's architecture, without its weights: a GPT-2 size, or a HF directory's config."""
    if name_or_dir in pretrained.GPT2_SIZES:
        return gpt2_config(name_or_dir)
    return GPTConfig(**pretrained.read_config(pretrained.find_weights(name_or_dir)))


def _pretrained(name_or_dir: str, dropout: float | None) -> GPT:
    return GPT.from_pretrained(name_or_dir, {} if dropout is None else {"dropout": dropout})


def _with_dropout(config: GPTConfig, dropout: float | None) -> GPTConfig:
    return config if dropout is None else replace(config, dropout=dropout)
