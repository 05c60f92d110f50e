"""LoRA (Hu et al. 2021): finetune a frozen GPT through small low-rank adapters.

A targeted layer computes `y = W x + b + (alpha / r) * B A dropout(x)`, with A (r x in) and
B (out x r). Only A and B train; W, b, the embeddings and the LayerNorms stay frozen. B starts
at zero, so before the first step the model is exactly the base model. For gpt2-xl with r=8 on
all four block layers that is 9.8M trainable parameters instead of 1558M: their gradients and
AdamW state take megabytes, and so does a checkpoint, which holds only A and B and a reference
to the base (`gptkit.checkpoint` rebuilds a LoRA run from its base and adapters).

    apply_lora(model, rank=8, alpha=16, dropout=0.05, targets=DEFAULT_TARGETS)
    lora_state_dict(model)   # the adapters only
    merge_lora(model)        # W + (alpha / r) B A: a plain GPT again, for sampling and export

Choices, and why:
- Default targets: all four linear layers of each block. Hu et al. adapted only the attention's
  query and value projections; QLoRA (Dettmers et al. 2023) found that adapting every linear
  layer is what matches a full finetune, at a cost that stays small (gpt2-xl: 0.6% of the
  weights at r=8). `--lora_targets=c_attn` is the paper's attention-only setting (on the fused
  q/k/v projection). The output head is never adapted: it is tied to the token embedding.
- Weight decay applies to A and B as configured (they are matrices, so
  `GPT.configure_optimizers` puts them in the decayed group), as peft with the transformers
  Trainer does: it pulls B A, the change to the model, towards zero, i.e. towards the base.
- A is initialised like peft and loralib (kaiming-uniform with a=sqrt(5), nn.Linear's own
  default), B with zeros.
- `hold_base_in(model, dtype)` keeps the frozen block matrices in the autocast dtype (bf16 or
  fp16), halving the biggest part of the memory; embeddings, LayerNorms and biases stay fp32,
  so the residual stream keeps full precision. Autocast computes those matmuls in that dtype
  anyway, so the result is the same as with an fp32 base up to rounding of W itself.
"""

import contextlib
import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from gptkit.errors import GptkitError
from gptkit.model import GPT, GPTConfig

# The Linears of a block LoRA can adapt, as --lora_targets spells them: (the block's sub-module,
# the Linear in it, its in and out width in multiples of n_embd).
TARGETS = {
    "c_attn": ("attn", "c_attn", 1, 3),
    "attn.c_proj": ("attn", "c_proj", 1, 1),
    "c_fc": ("mlp", "c_fc", 1, 4),
    "mlp.c_proj": ("mlp", "c_proj", 4, 1),
}
DEFAULT_TARGETS = ",".join(TARGETS)


class LoRALinear(nn.Linear):
    """A frozen `nn.Linear` plus a trainable low-rank update (alpha / r) * B A.

    It keeps the base layer's `weight` and `bias` Parameters under the same names (no copy), so
    base weights load into it unchanged and the adapters are the only new keys: `lora_A`, `lora_B`.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float):
        nn.Module.__init__(self)  # not nn.Linear's: it would allocate and initialise a weight of its own
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.adapters_on = True  # False: the base layer alone (`adapters_off`)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.adapters_on:
            return super().forward(x)
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return super().forward(x) + self.scaling * update

    def merged_weight(self) -> torch.Tensor:
        """W + (alpha / r) B A, computed in fp32, in W's dtype."""
        delta = self.scaling * (self.lora_B.float() @ self.lora_A.float())
        return (self.weight.float() + delta).to(self.weight.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha:g}"


def parse_targets(targets: str | tuple | list) -> list[str]:
    """The target names of `--lora_targets` (comma-separated), checked; one clear error otherwise."""
    names = [t.strip() for t in targets.split(",")] if isinstance(targets, str) else [str(t) for t in targets]
    names = [n for n in names if n]
    if not names:
        raise GptkitError(f"lora_targets is empty: name one or more of {', '.join(TARGETS)}")
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        both = " (attention and MLP each have a c_proj: name one)" if unknown[0] == "c_proj" else ""
        raise GptkitError(
            f"unknown lora_targets name {unknown[0]!r}{both}: use a comma-separated list of {', '.join(TARGETS)}"
        )
    return list(dict.fromkeys(names))  # in the order given, once each


def check_settings(rank: int, alpha: float, dropout: float, targets) -> None:
    """Raise GptkitError for LoRA settings that cannot work."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise GptkitError(f"lora_rank must be a whole number, 0 (full finetune) or more, not {rank!r}")
    if rank and alpha <= 0:
        raise GptkitError(f"lora_alpha must be positive, not {alpha}")
    if not 0.0 <= dropout < 1.0:
        raise GptkitError(f"lora_dropout must be in [0, 1), not {dropout}")
    parse_targets(targets)


def apply_lora(
    model: GPT, rank: int, alpha: float, dropout: float = 0.0, targets: str | tuple | list = DEFAULT_TARGETS
) -> GPT:
    """Freeze every weight of `model` and add rank-`rank` adapters to the `targets` layers (in place)."""
    check_settings(rank, alpha, dropout, targets)
    if rank == 0:
        raise GptkitError("apply_lora needs lora_rank of 1 or more (0 means a full finetune)")
    names = parse_targets(targets)
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise GptkitError("this model already has LoRA adapters")
    for p in model.parameters():
        p.requires_grad_(False)
    if model.score is not None:  # a classifier's head is new: it trains in full beside the adapters
        model.score.weight.requires_grad_(True)
    for block in model.transformer.h:
        for name in names:
            parent_name, child, _, _ = TARGETS[name]
            parent = getattr(block, parent_name)
            setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, dropout))
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def has_lora(model: nn.Module) -> bool:
    return bool(lora_layers(model))


@contextlib.contextmanager
def adapters_off(model: nn.Module):
    """Within the block, `model` computes as its frozen base: the adapters are skipped (not zeroed,
    not copied). DPO's reference for a LoRA run is this same model with its adapters off."""
    layers = list(lora_layers(model).values())
    for layer in layers:
        layer.adapters_on = False
    try:
        yield model
    finally:
        for layer in layers:
            layer.adapters_on = True


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters (`...lora_A`, `...lora_B`) and a classifier's head (`score.weight`): what a LoRA
    checkpoint stores, the weights that train."""
    return {
        k: v
        for k, v in model.state_dict().items()
        if k.rsplit(".", 1)[-1] in ("lora_A", "lora_B") or k == "score.weight"
    }


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_lora_params(config: GPTConfig, rank: int, targets=DEFAULT_TARGETS) -> int:
    """Trainable parameters of `apply_lora` on a GPT of this shape: r (in + out) per adapted layer."""
    per_layer = sum(rank * (TARGETS[t][2] + TARGETS[t][3]) * config.n_embd for t in parse_targets(targets))
    return config.n_layer * per_layer


def hold_base_in(model: GPT, dtype: torch.dtype) -> None:
    """Store the frozen block matrices in `dtype` (bf16/fp16 under autocast) to halve their memory.

    Embeddings (tied to the output head), LayerNorms, biases and the adapters stay fp32. One
    layer at a time, so at most one layer's weight exists twice.
    """
    for block in model.transformer.h:
        for parent_name, child, _, _ in TARGETS.values():
            layer = getattr(getattr(block, parent_name), child)
            layer.weight = nn.Parameter(layer.weight.detach().to(dtype), requires_grad=False)


def merge_lora(model: GPT) -> GPT:
    """Fold every adapter into its weight (W + (alpha / r) B A): a plain GPT again, in place.

    One layer at a time, each original freed before the next is merged: the weights are held
    once plus one matrix, not twice (a dict of all the layers would keep every original alive).
    """
    for name in list(lora_layers(model)):
        layer = model.get_submodule(name)
        parent_name, _, child = name.rpartition(".")
        plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        plain.weight = nn.Parameter(layer.merged_weight().detach(), requires_grad=False)
        plain.bias = layer.bias
        setattr(model.get_submodule(parent_name), child, plain)
    for p in model.parameters():  # not frozen any more: it is an ordinary model now
        p.requires_grad_(True)
    return model
