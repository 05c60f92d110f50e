"""LoRA adapters in peft's format, both ways: a gptkit LoRA run <-> a peft adapter directory.

    to_peft_dir(adapters, settings, dest)   # what PeftModel.from_pretrained(GPT2LMHeadModel, dest) loads
    read_peft_dir(path)                     # the base it names, with its adapters: (GPT, lora settings)

A classifier's adapter (`task_type: SEQ_CLS`, for GPT2ForSequenceClassification) also holds its
head, trained in full: peft lists it in `modules_to_save` and saves it whole; both ways keep it.

A peft adapter directory holds `adapter_config.json` (the base's name or path, target modules,
r, lora_alpha, lora_dropout, ...) and `adapter_model.safetensors`. peft wraps Hugging Face's
GPT-2, whose layers are `Conv1D` (weights stored in x out), but its `lora_A` (r x in) and
`lora_B` (out x r) have nn.Linear's orientation whatever the base layer, exactly like gptkit's:
only the key names differ (`base_model.model.transformer.h.0.attn.c_attn.lora_A.weight` here is
`transformer.h.0.attn.c_attn.lora_A` in gptkit). `fan_in_fan_out=True` tells peft that the base
weight is Conv1D's transpose when it merges; peft forces it on for GPT-2 anyway.

gptkit implements plain LoRA on the four block layers of `gptkit.lora.TARGETS`, one rank and
alpha for all; an adapter that needs more (DoRA, rsLoRA, trained biases, extra modules but a
classifier's head, per-layer
ranks, ...) is refused with the option's name rather than loaded into a model that would compute
something else.
"""

import json
import re
from pathlib import Path

import torch

from gptkit import checkpoint
from gptkit.errors import GptkitError
from gptkit.files import replacing
from gptkit.lora import TARGETS, apply_lora, lora_state_dict, parse_targets
from gptkit.model import GPT
from gptkit.pretrained import GPT2_SIZES, HUB_REPOS, WeightsUnavailable

CONFIG = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PREFIX = "base_model.model."  # what PeftModel puts before the wrapped model's module names
# gptkit's target names -> the module names they have inside GPT2LMHeadModel's blocks (and ours).
PEFT_TARGETS = {name: f"{parent}.{child}" for name, (parent, child, _, _) in TARGETS.items()}
# LoraConfig options that change what the adapted model computes, and that gptkit does not
# implement: each must be off (None, False, empty) for an adapter to load.
UNSUPPORTED = (
    "use_dora",
    "use_rslora",
    "use_qalora",
    "use_bdlora",
    "lora_bias",
    "layers_to_transform",
    "layers_pattern",
    "exclude_modules",
    "rank_pattern",
    "alpha_pattern",
    "trainable_token_indices",
    "layer_replication",
    "target_parameters",
    "alora_invocation_tokens",
    "megatron_config",
    "loftq_config",
    "arrow_config",
    "kasa_config",
    "velora_config",
    "monteclora_config",
)
# init_lora_weights values that only choose A and B's starting values (others rewrite the base too).
PLAIN_INITS = (True, False, "gaussian", "eva", "orthogonal")
# A SEQ_CLS adapter's modules_to_save: the names peft lists for sequence-classification heads
# (0.22 added `pre_classifier`), of which GPT-2 has `score` only (trained in full, saved whole as
# `base_model.model.score.weight`); the others name no module of GPT-2.
HEAD = "score"
SEQ_CLS_SAVED = ("classifier", "pre_classifier", HEAD)


def is_peft_dir(path: str | Path) -> bool:
    """A folder that holds a peft adapter (or what is left of one: a config or weights)."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in (CONFIG, *WEIGHTS))


# --- gptkit -> peft ---------------------------------------------------------------------------
def peft_base_name(base: str) -> str:
    """How adapter_config.json names a gptkit base: a GPT-2 size by its hub id, a folder by its path."""
    return HUB_REPOS.get(base, base)


def adapter_config(settings: dict, classifier: bool = False) -> dict:
    """adapter_config.json for a gptkit LoRA run's settings (`checkpoint.lora_settings`); a classifier's
    (`classifier`) is a SEQ_CLS adapter whose head, trained in full, peft keeps in `modules_to_save`."""
    return {
        "peft_type": "LORA",
        "task_type": "SEQ_CLS" if classifier else "CAUSAL_LM",
        "base_model_name_or_path": peft_base_name(settings["base"]),
        "r": settings["rank"],
        "lora_alpha": settings["alpha"],
        "lora_dropout": settings["dropout"],
        "target_modules": [PEFT_TARGETS[t] for t in parse_targets(settings["targets"])],
        "fan_in_fan_out": True,  # GPT-2's Conv1D keeps its weight as in x out
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": ["score"] if classifier else None,
        "layers_to_transform": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "init_lora_weights": True,
        "inference_mode": True,
        "revision": None,
    }


def to_peft_dir(adapters: dict[str, torch.Tensor], settings: dict, dest: str | Path) -> Path:
    """Write a LoRA run's adapters (gptkit names) and settings into the folder `dest` in peft's format;
    a classifier's head (`score.weight`) goes as peft saves a module to save: under its own name."""
    from safetensors.torch import save_file

    dest = Path(dest)
    tensors, classifier = {}, "score.weight" in adapters
    for key, value in adapters.items():
        module, _, kind = key.rpartition(".")  # "transformer.h.0.attn.c_attn", "lora_A"
        name = f"{PREFIX}{key}" if key == "score.weight" else f"{PREFIX}{module}.{kind}.weight"
        tensors[name] = value.detach().float().contiguous().cpu()
    with replacing(dest / WEIGHTS[0]) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
    text = json.dumps(adapter_config(settings, classifier), indent=2) + "\n"
    with replacing(dest / CONFIG) as tmp:
        tmp.write_text(text)
    return dest


# --- peft -> gptkit ---------------------------------------------------------------------------
def read_config(path: Path) -> dict:
    """adapter_config.json, checked for what gptkit can compute exactly; one clear error otherwise."""
    file = path / CONFIG
    if not file.is_file():
        raise GptkitError(f"{path} has no {CONFIG}: it is not a complete peft adapter directory")
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GptkitError(f"{file} is not valid JSON ({e}); save the adapter again with peft") from None
    if not isinstance(config, dict):
        raise GptkitError(f"{file} is not a peft adapter config (a JSON object); save the adapter again with peft")
    if config.get("peft_type", "LORA") != "LORA":
        raise GptkitError(f"{path} holds a {config['peft_type']} adapter; gptkit reads LoRA adapters only")
    for option in UNSUPPORTED:
        if config.get(option) not in (None, False, {}, [], ""):
            raise GptkitError(f"{file} sets {option}={config[option]!r}, which gptkit does not implement")
    saved = config.get("modules_to_save")
    if saved not in (None, []) and not (
        config.get("task_type") == "SEQ_CLS" and isinstance(saved, list) and set(saved) <= set(SEQ_CLS_SAVED)
    ):
        raise GptkitError(
            f"{file} sets modules_to_save={saved!r}, which gptkit does not implement: it keeps a classifier's "
            f"head ({HEAD}) of a task_type SEQ_CLS adapter, nothing else"
        )
    if config.get("bias", "none") != "none":
        raise GptkitError(f"{file} sets bias={config['bias']!r} (trained biases), which gptkit does not implement")
    if config.get("init_lora_weights", True) not in PLAIN_INITS:
        raise GptkitError(
            f"{file} sets init_lora_weights={config['init_lora_weights']!r}, which changes the base weights "
            "too; gptkit does not implement it"
        )
    r, alpha, dropout = config.get("r"), config.get("lora_alpha"), config.get("lora_dropout", 0.0)
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise GptkitError(f"{file} has r={r!r}; a LoRA rank is a whole number of 1 or more")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise GptkitError(f"{file} has lora_alpha={alpha!r}; it must be a positive number")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise GptkitError(f"{file} has lora_dropout={dropout!r}; it must be in [0, 1)")
    return config


def module_names(n_layer: int) -> list[str]:
    """Every module of GPT2LMHeadModel's (peft matches target_modules against these names)."""
    names = ["transformer", "transformer.wte", "transformer.wpe", "transformer.drop", "transformer.h"]
    for i in range(n_layer):
        block = f"transformer.h.{i}"
        names += [block, f"{block}.ln_1", f"{block}.attn", f"{block}.ln_2", f"{block}.mlp"]
        names += [f"{block}.attn.{m}" for m in ("c_attn", "c_proj", "attn_dropout", "resid_dropout")]
        names += [f"{block}.mlp.{m}" for m in ("c_fc", "c_proj", "act", "dropout")]
    return names + ["transformer.ln_f", "lm_head"]


def targeted(target_modules, name: str) -> bool:
    """peft's rule: a string is a regex the whole name must match; a list names modules or their suffixes."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


def resolve_targets(config: dict, n_layer: int, file: Path) -> list[str]:
    """The gptkit target names an adapter config adapts, the same in every block, or one clear error."""
    wanted = config.get("target_modules")
    if wanted == "all-linear":  # peft: every linear layer but the output head, i.e. gptkit's four
        return list(TARGETS)
    if not wanted or not isinstance(wanted, (str, list)):
        raise GptkitError(f"{file} names no target_modules; save the adapter again with peft")
    hit = [n for n in module_names(n_layer) if targeted(wanted, n)]
    layer = re.compile(r"transformer\.h\.\d+\.")
    ours = {f"{parent}.{child}" for parent, child, _, _ in TARGETS.values()}
    other = [n for n in hit if not (layer.match(n) and layer.sub("", n, count=1) in ours)]
    if other:
        raise GptkitError(
            f"{file} targets {other[0]}, which gptkit does not adapt: gptkit's LoRA targets are "
            f"{', '.join(PEFT_TARGETS.values())} in each block"
        )
    if not hit:
        raise GptkitError(f"{file}'s target_modules {wanted!r} match no layer of GPT-2")
    names = [t for t, module in PEFT_TARGETS.items() if any(n.endswith("." + module) for n in hit)]
    if len(hit) != len(names) * n_layer:
        raise GptkitError(f"{file} adapts some blocks only ({len(hit)} layers); gptkit adapts the same ones in all")
    return names


def base_of(config: dict, path: Path) -> str:
    """The base an adapter names, as gptkit's from_pretrained takes it (a GPT-2 size or a folder)."""
    base = config.get("base_model_name_or_path")
    mapping = config.get("auto_mapping") or {}
    model_class = mapping.get("base_model_class") if isinstance(mapping, dict) else None
    if model_class and not model_class.startswith("GPT2"):
        raise GptkitError(f"{path} adapts a {model_class}, not GPT-2: gptkit loads adapters for GPT-2 only")
    if not base or not isinstance(base, str):
        raise GptkitError(f"{path / CONFIG} names no base_model_name_or_path: add the base model's name or folder")
    by_hub_id = {repo: name for name, repo in HUB_REPOS.items()}
    if base in GPT2_SIZES or base in by_hub_id:
        return by_hub_id.get(base, base)
    if Path(base).expanduser().is_dir():
        return str(Path(base).expanduser().resolve())
    if Path(base).is_absolute() or base.startswith((".", "~")):
        raise GptkitError(
            f"the adapter in {path} was trained on base {base}, which is missing: restore that folder, "
            f"or set base_model_name_or_path in {CONFIG} to where the base now is"
        )
    raise GptkitError(
        f"the adapter in {path} names base {base!r}, which is not GPT-2 as gptkit loads it: gptkit's bases are "
        f"{', '.join(GPT2_SIZES)} or a local Hugging Face GPT-2 folder (set base_model_name_or_path to one)"
    )


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The adapter tensors under gptkit's names (`transformer.h.0.attn.c_attn.lora_A`)."""
    for name in WEIGHTS:
        file = path / name
        if not file.is_file():
            continue
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                state = load_file(file)
            else:
                state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:
            raise GptkitError(f"{file} could not be read ({type(e).__name__}); save the adapter again") from None
        return {k.removeprefix(PREFIX).removesuffix(".weight"): v for k, v in state.items()}
    raise GptkitError(f"{path} has no {' or '.join(WEIGHTS)}: the adapter's weights are missing")


def load_adapters(model: GPT, state: dict[str, torch.Tensor], path: Path, base: str) -> None:
    """Copy the adapter tensors into `model`'s LoRA layers, after checking they are the ones it has."""
    ours = lora_state_dict(model)
    missing, unexpected = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
    if missing or unexpected:
        what = f"no weights for {missing[0]}" if missing else f"weights for {unexpected[0]}, which it does not target"
        raise GptkitError(f"the adapter in {path} holds {what}: its weights do not match its config and base {base}")
    for key, value in state.items():
        if value.shape != ours[key].shape:
            raise GptkitError(
                f"the adapter in {path} does not fit base {base}: {key} is {tuple(value.shape)}, "
                f"the base needs {tuple(ours[key].shape)}; load it with the base it was trained on"
            )
    with torch.no_grad():
        for key, value in state.items():
            ours[key].copy_(value)


def head_labels(path: Path, config: dict) -> int:
    """The number of labels a SEQ_CLS adapter's head scores (read from the weights' header), 0 for
    an adapter without a head of its own (a language model's, or one whose base brings the head)."""
    if config.get("task_type") != "SEQ_CLS" or HEAD not in (config.get("modules_to_save") or []):
        return 0
    file = path / WEIGHTS[0]
    if file.is_file():
        from safetensors import safe_open

        try:
            with safe_open(file, "pt") as f:
                key = f"{PREFIX}{HEAD}.weight"
                return f.get_slice(key).get_shape()[0] if key in f.keys() else 0
        except Exception as e:
            raise GptkitError(f"{file} could not be read ({type(e).__name__}); save the adapter again") from None
    head = read_weights(path).get(HEAD)
    return 0 if head is None else head.size(0)


def load_head(model: GPT, head: torch.Tensor | None, path: Path, config: dict) -> None:
    """A SEQ_CLS adapter's head into `model` (added if its base is a language model), before the adapters."""
    if head is None:
        if config.get("task_type") == "SEQ_CLS" and model.score is None:
            raise GptkitError(
                f"the adapter in {path} is a classifier's (task_type SEQ_CLS), but neither it nor its base holds "
                f"the head ({HEAD}): save it with modules_to_save=[{HEAD!r}]"
            )
        return
    if head.dim() != 2 or head.size(1) != model.config.n_embd:
        raise GptkitError(
            f"the adapter in {path} has a head of shape {tuple(head.shape)}; its base needs (labels, "
            f"{model.config.n_embd}): load it with the base it was trained on"
        )
    if model.score is None or model.config.n_labels != head.size(0):
        model.add_classifier(head.size(0))
    with torch.no_grad():
        model.score.weight.copy_(head)


def read_peft_dir(path: str | Path, dropout: float = 0.0, lora_rank: int = 0) -> tuple[GPT, dict]:
    """The base a peft adapter directory names, with its adapters added (not merged), and the
    LoRA settings a gptkit run keeps for it (`checkpoint.lora_settings`).

    `dropout` is the model's; the adapters' comes from the config. `lora_rank`, if not 0, must be
    the adapter's (a run asked for one rank cannot continue an adapter of another).
    """
    path = Path(path)
    config = read_config(path)
    base = base_of(config, path)
    if lora_rank and lora_rank != config["r"]:
        raise GptkitError(
            f"the adapter in {path} has rank {config['r']}, not --lora_rank={lora_rank}: its {CONFIG} sets "
            "the LoRA settings; drop --lora_rank"
        )
    state = read_weights(path)
    try:
        model = GPT.from_pretrained(base, {"dropout": dropout})
    except WeightsUnavailable as e:
        raise GptkitError(f"the adapter in {path} adapts {base}, which cannot be loaded: {e}") from None
    except GptkitError as e:
        raise GptkitError(f"the adapter in {path} adapts {base}, which does not load as GPT-2: {e}") from None
    targets = resolve_targets(config, model.config.n_layer, path / CONFIG)
    r, alpha, lora_dropout = config["r"], float(config["lora_alpha"]), float(config.get("lora_dropout", 0.0))
    settings = checkpoint.lora_settings(r, alpha, lora_dropout, targets, base, model)
    load_head(model, state.pop(HEAD, None) if config.get("task_type") == "SEQ_CLS" else None, path, config)
    apply_lora(model, r, alpha, lora_dropout, targets)
    if model.score is not None:  # a classifier's head is among the weights a LoRA run keeps: in place already
        state[f"{HEAD}.weight"] = model.score.weight.detach().clone()
    load_adapters(model, state, path, base)
    return model, settings
