"""How many bytes a training run needs, worked out from its settings before anything is allocated.

A training step holds four things: the **weights**, their **gradients**, AdamW's **state** (two
fp32 running averages per trainable parameter) and the **activations**, the tensors the
forward pass keeps for the backward pass. On top of those come short-lived buffers at the
start of the backward pass (the gradient of the logits, batch x tokens x 50,257 floats).

`estimate` adds these up from the model's shape and the run's settings: full finetune or LoRA
(only the low-rank factors have gradients and optimizer state), with or without activation
checkpointing (only each block's input is kept, one block is recomputed at a time), fp32 or
autocast, and sharded over `shards` processes (FSDP divides weights, gradients and optimizer
state). The activation counts are exact for what PyTorch saves on CPU (tests/test_memory.py
compares them with the saved tensors, and the whole estimate with measured peaks).

`saved_for_backward` measures what a forward pass really keeps, to check those counts against.

`check` is what `gptkit.train` calls first: it compares the estimate with the memory the device
has free and stops, in one line that says which settings would fit, before a run is killed by
the out-of-memory killer half way through loading or its first step.
"""

import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from gptkit import checkpoint, pretrained, sources
from gptkit.data import read_meta
from gptkit.device import available_bytes
from gptkit.errors import GptkitError
from gptkit.lora import DEFAULT_TARGETS, TARGETS, count_lora_params, parse_targets
from gptkit.model import GPTConfig

GIB = 2**30
# in and out width of each Linear of a block, in multiples of n_embd (LoRA's table of targets)
LINEAR_SHAPES = {name: (width_in, width_out) for name, (_, _, width_in, width_out) in TARGETS.items()}
# What glibc's heap holds beyond the tensors once gptkit.train has fixed its mmap threshold
# (gptkit.allocator: every tensor above 128 kB its own mapping, freed at once): 3% measured on
# a small LoRA run over 8 micro-steps, none at gpt2-xl (benchmarks/README.md). CUDA's caching
# allocator: not measured here.
ALLOCATOR_SHARE = {"cpu": 0.05}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs, per process; `peak` is what must fit."""

    weights: int
    gradients: int
    optimizer: int
    activations: int  # saved by the forward pass of one micro-batch
    transient: int  # alive with the activations at the start of the backward pass
    step_transient: int  # alive during the optimizer step (non-fused AdamW)
    loading: int  # the peak while the weights are loaded
    allocator_share: float = 0.0  # what the memory allocator holds beyond the tensors, as a share of them
    gradients_persist: bool = True  # kept from one micro-step to the next, beside its activations

    @property
    def training(self) -> int:
        """The most bytes of tensors alive at once in a training step."""
        backward = self.activations + self.transient
        if self.gradients_persist:
            step = self.gradients + max(backward, self.step_transient)
        else:
            # One micro-step per optimizer step: the step sets the gradients to None, so the forward
            # pass runs without them, and the backward pass makes them as it frees the activations.
            step = max(backward, self.gradients + self.step_transient)
        return self.weights + self.optimizer + step

    @property
    def tensors(self) -> int:
        """The most bytes of tensors alive at once, loading included."""
        return max(self.training, self.loading)

    @property
    def allocator(self) -> int:
        return int(self.allocator_share * self.tensors)

    @property
    def peak(self) -> int:
        return self.tensors + self.allocator

    def describe(self) -> str:
        parts = [
            ("weights", self.weights),
            ("grads", self.gradients),
            ("AdamW", self.optimizer),
            ("activations", self.activations),
            ("backward buffers", self.transient),
            ("allocator", int(self.allocator_share * self.training)),  # in the steps
        ]
        detail = ", ".join(f"{name} {b / GIB:.2f}" for name, b in parts)
        if self.loading > self.training:
            steps = gib(int(self.training * (1 + self.allocator_share)))
            return f"{gib(self.peak)} while the weights load, then {steps} ({detail})"
        return f"{gib(self.peak)} ({detail})"


def gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / 2**20:.0f} MiB"


def param_counts(model: GPTConfig, positions: int | None = None) -> tuple[int, int, int]:
    """(all parameters, of one block, of the largest tensor) for `model`; tied head counted once."""
    c = model.n_embd
    bias = c if model.bias else 0
    linear = sum(i * o * c * c + (o * bias if model.bias else 0) for i, o in LINEAR_SHAPES.values())
    block = linear + 2 * (c + bias)  # + two LayerNorms
    positions = model.block_size if positions is None else positions
    total = model.vocab_size * c + positions * c + model.n_layer * block + c + bias
    return total, block, max(model.vocab_size * c, 4 * c * c)


@dataclass(frozen=True)
class _Pass:
    """The sizes one forward pass is counted with (see `activation_bytes`)."""

    b: int  # sequences
    t: int  # tokens per sequence
    c: int  # n_embd
    h: int  # n_head
    v: int  # vocab_size
    e: int  # bytes of a matmul's inputs and outputs; the residual stream and LayerNorms stay fp32
    half: bool
    cpu: bool
    dropout: bool
    lora_rank: int
    lora_dropout: float
    targets: frozenset
    grad_checkpoint: bool

    @property
    def math_attention(self) -> bool:
        # with dropout, CPU attention takes the math path, which keeps the T x T probabilities,
        # their mask and their dropped version instead of the fused kernels' one log-sum-exp per row
        return self.dropout and self.cpu


def activation_bytes(
    model: GPTConfig,
    batch: int,
    seq: int,
    half: bool = False,
    device_type: str = "cpu",
    lora_rank: int = 0,
    lora_targets=(),
    lora_dropout: float = 0.0,
    half_base: bool = False,
    grad_checkpoint: bool = False,
) -> int:
    """Bytes the forward pass of one micro-batch keeps for the backward pass.

    `half`: matmuls under 16-bit autocast; `lora_rank` > 0: the base is frozen and only the
    `lora_targets` Linears have trainable factors; `half_base`: the frozen base is held in the
    16-bit dtype (no autocast copies of its weights); `grad_checkpoint`: each block keeps only
    its input, and one block's activations exist again while it is recomputed.
    """
    targets = frozenset(parse_targets(lora_targets)) if lora_rank > 0 else frozenset(LINEAR_SHAPES)
    s = _Pass(
        batch, seq, model.n_embd, model.n_head, model.vocab_size, 2 if half else 4, half, device_type == "cpu",
        model.dropout > 0, lora_rank, lora_dropout, targets, grad_checkpoint,
    )  # fmt: skip
    block = _block_bytes(s) + _linear_input_bytes(s)
    if half and not half_base:
        block += 2 * 12 * s.c * s.c  # autocast's 16-bit copies of the block's weight matrices
    base = _outside_blocks_bytes(s)
    if grad_checkpoint:
        # every block's fp32 input; one block at a time recomputed (its input counted already)
        btc = s.b * s.t * s.c
        return model.n_layer * 4 * btc + (block - 4 * btc) + base
    return model.n_layer * block + base


def _block_bytes(s: _Pass) -> int:
    """A block's LayerNorms, attention, GELU and dropout masks (the Linears' inputs aside)."""
    btc, bt = s.b * s.t * s.c, s.b * s.t
    ea = 4 if s.math_attention else s.e  # CPU autocast runs the math attention in fp32
    block = 4 * (2 * btc + 4 * bt)  # LayerNorm inputs and their mean / rstd
    block += ea * 3 * btc + s.e * 4 * btc  # q, k, v; the GELU's input
    if s.math_attention:
        block += 4 * 3 * s.b * s.h * s.t * s.t
    else:
        block += s.e * btc + 4 * s.b * s.h * s.t  # attention output (also c_proj's input) and log-sum-exp
    if s.dropout:
        mask = s.e if s.cpu else 1  # nn.Dropout's mask has the tensor's dtype on CPU, one byte elsewhere
        block += 2 * mask * btc  # attention and MLP output masks
    return block


def _linear_input_bytes(s: _Pass) -> int:
    """What a block's Linears keep for their weights' (or their adapters') gradients."""
    btc, bt, lora = s.b * s.t * s.c, s.b * s.t, s.lora_rank > 0
    block = 0
    for name, (width, width_out) in LINEAR_SHAPES.items():
        if name not in s.targets:
            continue
        if name == "attn.c_proj" and not s.math_attention:
            input_saved = 0  # the same tensor as the attention output, counted above
        else:
            input_saved = s.e * width * btc
        if lora and s.lora_dropout > 0:
            # the dropped input (cast for the matmul) and the mask, in the input's dtype on CPU:
            # fp32 after a LayerNorm, the matmul dtype after a matmul
            fp32_input = name in ("c_attn", "c_fc")
            input_saved = (s.e + ((4 if fp32_input else s.e) if s.cpu else 1)) * width * btc
        block += input_saved
        if lora:
            block += s.e * bt * s.lora_rank  # x A^T, for B's gradient
            if s.half:
                block += 2 * s.lora_rank * (width + width_out) * s.c  # autocast's copies of A and B
    return block


def _outside_blocks_bytes(s: _Pass) -> int:
    """The embeddings, the final LayerNorm, the head and the loss."""
    btc, bt = s.b * s.t * s.c, s.b * s.t
    lora = s.lora_rank > 0
    base = 4 * (btc + 2 * bt)  # final LayerNorm input and stats
    if s.half and s.cpu:
        base += 2 * bt * s.v + 4 * bt  # gptkit's blockwise loss keeps the 16-bit logits and an fp32 log-sum-exp
    elif s.half:
        base += 4 * bt * s.v  # F.cross_entropy under autocast keeps fp32 log-probabilities
    else:
        base += 4 * bt * s.v + 4 * bt  # the logits and the log-sum-exp per row
    base += bt  # which positions have a target (bool): the head runs at those only
    base += 0 if lora else s.e * btc  # the head's input, for its (tied) weight's gradient
    base += 2 * s.v * s.c if s.half else 0  # autocast's copy of the head (tied to the fp32 embedding)
    if not lora:
        base += 8 * (2 * bt + s.t) + 4  # token ids, targets, positions (int64), the loss's weight
        return base + ((4 if s.cpu else 1) * btc if s.dropout else 0)  # the (fp32) embeddings' dropout mask
    # Frozen embeddings: nothing before the first adapter needs a gradient, so neither the ids,
    # nor the embeddings' dropout mask, nor (unless checkpointed, which keeps every block's
    # input) the first block's first LayerNorm and first adapter keep anything.
    base += 8 * bt + 4  # targets (int64), the loss's weight
    if not s.grad_checkpoint:
        base -= 4 * (btc + 2 * bt)
        if "c_attn" in s.targets:
            base -= (4 if s.cpu else 1) * btc if s.lora_dropout > 0 else 0
            base -= 2 * s.lora_rank * s.c if s.half else 0  # nor its A's autocast copy
    return base


def saved_for_backward(module: torch.nn.Module, *inputs, bf16: bool = False, exclude=()) -> int:
    """Bytes of the distinct storages `module(*inputs)` keeps for its backward pass (measured).

    Parameters and the `exclude` tensors are left out; `bf16` runs it under CPU bf16 autocast.
    The measured counterpart of `activation_bytes`, through `saved_tensors_hooks`.
    """
    skip = {t.untyped_storage().data_ptr() for t in (*module.parameters(), *exclude)}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        module(*inputs)
    return sum(saved.values())


def estimate(
    model: GPTConfig,
    batch_size: int,
    block_size: int,
    *,
    device_type: str = "cpu",
    dtype: torch.dtype = torch.float32,
    lora_rank: int = 0,
    lora_targets=DEFAULT_TARGETS,
    lora_dropout: float = 0.0,
    half_base: bool | None = None,
    grad_checkpoint: bool = False,
    fused_adamw: bool = True,
    shards: int = 1,
    ddp: bool = False,
    gradients_persist: bool = True,
) -> MemoryEstimate:
    """Bytes per process for training `model` on micro-batches of batch_size x block_size tokens.

    `half_base` (default: LoRA under 16-bit autocast) holds the frozen block matrices in that
    dtype. `shards` > 1: FSDP, each process keeps 1/shards of the weights, gradients and
    optimizer state, plus two blocks' gathered weights. `ddp`: DistributedDataParallel's
    gradient buckets, a second copy of the gradients. `gradients_persist=False`: one micro-step
    per optimizer step in one process, so no forward pass runs beside gradients.
    """
    half = dtype in (torch.bfloat16, torch.float16)
    lora = lora_rank > 0
    if half_base is None:
        half_base = lora and half  # as gptkit.train does (gptkit.lora.hold_base_in)
    total, per_block, largest = param_counts(model, block_size)
    trainable = count_lora_params(model, lora_rank, lora_targets) if lora else total
    block_matrices = model.n_layer * 12 * model.n_embd**2  # what hold_base_in halves
    weights = 4 * total - (2 * block_matrices if half_base else 0) + (4 * trainable if lora else 0)
    gradients = 4 * trainable
    optimizer = 8 * trainable
    gathered = 0
    if shards > 1:
        weights, gradients, optimizer = (-(-x // shards) for x in (weights, gradients, optimizer))
        gathered = 2 * per_block * (2 if half_base else 4)
    if ddp and shards == 1:
        gradients *= 2
    acts = activation_bytes(
        model, batch_size, block_size, half, device_type,
        lora_rank, lora_targets, lora_dropout, half_base, grad_checkpoint,
    )  # fmt: skip
    btv = batch_size * block_size * model.vocab_size
    if device_type == "cpu":
        logits_grad = (2 if half else 4) * btv  # gptkit's blockwise cross-entropy makes only the logits' gradient
    else:
        logits_grad = (2 if half else 4) * btv + 8 * btv  # the logits, grads of log-probs and of logits
    # A micro-batch after the first adds a fresh gradient to each stored one: the largest is the head's.
    transient = logits_grad + gathered + (0 if lora else 4 * largest)
    step_transient = 0 if fused_adamw else 4 * trainable  # foreach AdamW's sqrt(v) for every tensor
    loading = loading_bytes(weights, block_matrices, model.n_embd, half_base and device_type == "cpu")
    return MemoryEstimate(
        weights, gradients, optimizer, acts, transient, step_transient, loading, ALLOCATOR_SHARE.get(device_type, 0.0),
        gradients_persist,
    )  # fmt: skip


def loading_bytes(weights: int, block_matrices: int, n_embd: int, loads_fp32_base: bool) -> int:
    """The peak while a model of `weights` bytes (as it trains) loads. The tensors read become the
    model's own; only a Conv1D matrix (4C x C at most) is copied, transposed, beside it, one at a
    time. `loads_fp32_base`: a LoRA base held in 16 bits on the CPU, which is loaded whole in fp32
    before gptkit.lora.hold_base_in halves its `block_matrices` parameters, in the memory the run
    trains in: for a large model, the run's peak (gpt2-xl: 6.3 GB, its steps 4.2; benchmarks/README.md)."""
    return weights + 4 * 4 * n_embd**2 + (2 * block_matrices if loads_fp32_base else 0)


# --- a classifier: no logits over the vocabulary, and frozen layers keep nothing ----------------
def classifier_trainable(model: GPTConfig, train_layers: str, lora_rank: int = 0, lora_targets=DEFAULT_TARGETS) -> int:
    """Parameters a classifier trains: the head (n_embd x labels) and LoRA's factors, or the last
    block with the final LayerNorm (`last_block`), or everything (`all`)."""
    total, per_block, _ = param_counts(model)
    head = model.n_embd * max(model.n_labels, 1)
    if lora_rank > 0:
        return count_lora_params(model, lora_rank, lora_targets) + head
    ln_f = 2 * model.n_embd if model.bias else model.n_embd
    return head + {"all": total, "last_block": per_block + ln_f, "head": 0}[train_layers]


def classifier_activation_bytes(
    model: GPTConfig, batch: int, seq: int, train_layers: str, half: bool = False, device_type: str = "cpu",
    lora_rank: int = 0, lora_targets=(), lora_dropout: float = 0.0, half_base: bool = False,
    grad_checkpoint: bool = False,
) -> int:  # fmt: skip
    """Bytes a classifier's forward keeps for the backward pass. Nothing below the first trained
    layer keeps anything (autograd stops there); the last block computes keys and values at every
    position but its query, attention and MLP at the one position read (`Block.forward_last`)."""
    targets = frozenset(parse_targets(lora_targets)) if lora_rank > 0 else frozenset(LINEAR_SHAPES)
    s = _Pass(
        batch, seq, model.n_embd, model.n_head, model.vocab_size, 2 if half else 4, half, device_type == "cpu",
        model.dropout > 0, lora_rank, lora_dropout, targets, grad_checkpoint,
    )  # fmt: skip
    one = replace(s, t=1)  # the last block past its keys and values: one position per row
    b, c, btc, bt = s.b, s.c, s.b * s.t * s.c, s.b * s.t
    head = 4 * (b * c + 2 * b) + s.e * b * c + 8 * b + 4  # ln_f at the read positions, the head's input, labels
    if train_layers == "head" and lora_rank == 0:
        return head
    copies = 2 * 12 * c * c if half and not half_base else 0  # autocast's 16-bit copies of a block's matrices
    # the last block: ln_1 over every position, c_attn's input, the keys and values; the rest at one position
    last = 4 * (btc + 2 * bt) + s.e * btc + s.e * 2 * btc + _block_bytes(one) + _linear_input_bytes(one) + copies
    if train_layers == "last_block" and lora_rank == 0:
        return last + head
    below = model.n_layer - 1
    if grad_checkpoint:  # every block's fp32 input; one recomputed at a time
        full = below * 4 * btc + _block_bytes(s) + _linear_input_bytes(s) + copies
    else:
        full = below * (_block_bytes(s) + _linear_input_bytes(s) + copies)
    embeddings = 8 * bt + ((4 if s.cpu else 1) * btc if s.dropout and not lora_rank else 0)  # ids, dropout mask
    return full + last + head + embeddings


def estimate_classifier(
    model: GPTConfig, batch_size: int, seq: int, train_layers: str = "last_block", *, device_type: str = "cpu",
    dtype: torch.dtype = torch.float32, lora_rank: int = 0, lora_targets=DEFAULT_TARGETS, lora_dropout: float = 0.0,
    grad_checkpoint: bool = False, fused_adamw: bool = True, shards: int = 1, ddp: bool = False,
    gradients_persist: bool = True,
) -> MemoryEstimate:  # fmt: skip
    """`estimate` for a classifier (`model.n_labels` > 0): gradients and AdamW state for the trained
    parameters only (`train_layers`, or LoRA's factors and the head), activations from the first
    trained layer up, and no logits over the vocabulary (nor their gradient) anywhere."""
    half = dtype in (torch.bfloat16, torch.float16)
    half_base = lora_rank > 0 and half
    lm = estimate(
        model,
        batch_size,
        seq,
        device_type=device_type,
        dtype=dtype,
        lora_rank=lora_rank,
        lora_targets=lora_targets,
        lora_dropout=lora_dropout,
        grad_checkpoint=grad_checkpoint,
        fused_adamw=fused_adamw,
        gradients_persist=gradients_persist,
    )  # fmt: skip  (one process: sharded below)
    trainable = classifier_trainable(model, train_layers, lora_rank, lora_targets)
    weights = lm.weights + 4 * model.n_embd * model.n_labels  # the language model's (LoRA's factors too) and the head
    gradients, optimizer = 4 * trainable, 8 * trainable
    if shards > 1:
        weights, gradients, optimizer = (-(-x // shards) for x in (weights, gradients, optimizer))
    if ddp and shards == 1:
        gradients *= 2
    acts = classifier_activation_bytes(
        model, batch_size, seq, train_layers, half, device_type, lora_rank, lora_targets, lora_dropout, half_base,
        grad_checkpoint,
    )  # fmt: skip
    # One block's working set, forward (frozen blocks too) or backward: the residual stream and
    # LayerNorm output in fp32, q/k/v, the MLP's 4C-wide input and output.
    btc, e = batch_size * seq * model.n_embd, 2 if half else 4
    working = 8 * btc + 9 * e * btc
    # The embeddings' gradient (the largest, counted in `gradients`) is the backward pass's last:
    # made once the activations are freed, it never adds to them, unlike a language model's, which
    # the tied head makes first. No head over the vocabulary: no logits, nor their gradient.
    embedding_grad = 4 * model.vocab_size * model.n_embd if train_layers == "all" and not lora_rank else 0
    _, per_block, _ = param_counts(model)
    gathered = 2 * per_block * (2 if half_base else 4) if shards > 1 else 0  # FSDP: two blocks' whole weights
    transient = max(0, working - embedding_grad // max(shards, 1)) + gathered
    step_transient = 0 if fused_adamw else 4 * trainable
    return replace(
        lm, weights=weights, gradients=gradients, optimizer=optimizer, activations=acts, transient=transient,
        step_transient=step_transient,
    )  # fmt: skip


# --- a run's settings -> its estimate ---------------------------------------------------------


def sequence_length(meta: dict, block_size: int) -> int:
    """Tokens per row of a micro-batch: block_size, or for examples the longest one (padded to it), if
    shorter. `meta`: the dataset's meta.json."""
    if meta.get("kind") not in ("examples", "preference"):
        return block_size
    longest = max((split.get("longest", block_size + 1) for split in meta.get("splits", {}).values()), default=0)
    return max(1, min(block_size, longest - 1))


def rows_per_batch(cfg, meta: dict) -> int:
    """Rows of a micro-batch: batch_size, twice that for preference pairs (chosen and rejected in one pass).
    DPO's reference adds no weights: a LoRA run's is its own base (adapters off), a full run's is
    precomputed log-probabilities (a few bytes a pair)."""
    return cfg.batch_size * (2 if meta.get("kind") == "preference" else 1)


def run_shape(cfg, resume: checkpoint.Resume | None = None) -> tuple[GPTConfig, dict] | None:
    """The architecture `cfg` trains and its LoRA settings ({} for a full finetune), from where the
    model comes from (`sources.for_training`) without loading a weight; None when they cannot be
    known yet (loading will then say what is wrong). `resume`: the checkpoint a resumed run
    continues from, already read."""
    try:
        source = sources.for_training(cfg, resume)
    except (GptkitError, OSError, KeyError, TypeError, ValueError):
        return None
    config = source.config
    return replace(config, dropout=cfg.dropout, block_size=min(config.block_size, cfg.block_size)), source.lora or {}


def estimate_run(
    cfg, device_type: str, dtype: torch.dtype, shards: int = 1, world: int = 1, resume=None
) -> MemoryEstimate | None:
    """The estimate for TrainConfig `cfg` on one process of `world` (None: architecture unknown yet)."""
    shape = run_shape(cfg, resume)
    if shape is None:
        return None
    model, lora = shape
    meta = read_meta(Path(cfg.data_root) / cfg.dataset)
    if meta.get("kind") == "classification":
        return classifier_estimate_run(cfg, meta, model, lora, device_type, dtype, shards, world)
    seq = sequence_length(meta, model.block_size)
    cfg = replace(cfg, batch_size=rows_per_batch(cfg, meta))
    if cfg.eval_only:  # no gradients, no optimizer state, nothing kept for a backward pass
        est = estimate(model, cfg.batch_size, seq, device_type=device_type, dtype=dtype, shards=shards)
        b, t, c = cfg.batch_size, seq, model.n_embd
        forward = 4 * b * t * model.vocab_size + 4 * 6 * b * t * c  # logits; the residual stream and MLP
        return replace(est, gradients=0, optimizer=0, activations=forward, transient=0)
    return estimate(
        model,
        cfg.batch_size,
        seq,
        device_type=device_type,
        dtype=dtype,
        lora_rank=lora.get("rank", 0),
        lora_targets=lora.get("targets", ()),
        lora_dropout=lora.get("dropout", 0.0),
        grad_checkpoint=cfg.grad_checkpoint,
        fused_adamw=device_type in ("cpu", "cuda"),
        shards=shards,
        ddp=world > 1 and shards == 1,
        gradients_persist=gradients_persist(cfg, world),
    )


def gradients_persist(cfg, world: int) -> bool:
    """Whether a run's gradients outlive a micro-step: more than one per optimizer step, or several
    processes (DDP's buckets and FSDP's shards are not counted as freed)."""
    return cfg.gradient_accumulation_steps > 1 or world > 1


def classifier_estimate_run(
    cfg, meta: dict, model: GPTConfig, lora: dict, device_type: str, dtype, shards: int, world: int
):
    """`estimate_run` on a classification dataset (`meta`, its meta.json): micro-batches as wide as
    the longest text, a head of the dataset's labels, what `train_layers` (or LoRA) trains."""
    longest = max((split.get("longest", 0) for split in meta.get("splits", {}).values()), default=0)
    seq = max(1, min(model.block_size, longest or model.block_size))
    model = replace(model, n_labels=model.n_labels or len(meta.get("labels", [])) or 2)
    rank = lora.get("rank", 0)
    est = estimate_classifier(
        model, cfg.batch_size, seq, cfg.train_layers, device_type=device_type, dtype=dtype, lora_rank=rank,
        lora_targets=lora.get("targets", DEFAULT_TARGETS), lora_dropout=lora.get("dropout", 0.0),
        grad_checkpoint=cfg.grad_checkpoint, fused_adamw=device_type in ("cpu", "cuda"), shards=shards,
        ddp=world > 1 and shards == 1, gradients_persist=gradients_persist(cfg, world),
    )  # fmt: skip
    if cfg.eval_only:  # no gradients, no optimizer state, nothing kept for a backward pass
        return replace(est, gradients=0, optimizer=0, activations=0)
    return est


def fitting_settings(cfg, device_type: str, dtype: torch.dtype, available: int, shards: int = 1, world: int = 1):
    """The least change to `cfg` whose estimate fits in `available`: ([--key=value ...], estimate), or None."""
    memory_options = [{"grad_checkpoint": True}]
    # LoRA is offered only where the run does not already name what trains (--train_layers refuses it)
    lora_possible = cfg.lora_rank == 0 and cfg.train_layers == type(cfg).train_layers
    if cfg.init_from not in ("scratch", "resume") and lora_possible:
        memory_options += [{"lora_rank": 8}, {"lora_rank": 8, "grad_checkpoint": True}]
    tried = list(memory_options)
    strongest = memory_options[-1]
    # then fewer tokens per micro-batch (the same tokens per step, by more accumulation), then shorter context
    batch, accum = cfg.batch_size, cfg.gradient_accumulation_steps
    while batch > 1:
        batch //= 2
        accum = cfg.gradient_accumulation_steps * cfg.batch_size // batch
        tried.append(strongest | {"batch_size": batch, "gradient_accumulation_steps": accum})
    block = cfg.block_size
    while block > 128:
        block //= 2
        tried.append(tried[-1] | {"block_size": block})
    # This model first; if nothing fits it, the smaller GPT-2 sizes, each with the least change that fits.
    sizes = list(pretrained.GPT2_SIZES)
    smaller = sizes[: sizes.index(cfg.init_from)][::-1] if cfg.init_from in sizes else []
    for model in [{}] + [{"init_from": name} for name in smaller]:
        for option in [{}] * bool(model) + tried:
            changed = {k: v for k, v in (model | option).items() if getattr(cfg, k) != v}
            if not changed:
                continue
            est = estimate_run(replace(cfg, **changed), device_type, dtype, shards, world)
            if est is not None and est.peak <= available:
                return [f"--{k}={v}" for k, v in changed.items()], est
    return None


def check(
    cfg, device: torch.device, dtype: torch.dtype, shards: int = 1, world: int = 1, resume=None
) -> MemoryEstimate | None:
    """The run's estimate; raises GptkitError (one line: need, have, what fits) if it exceeds free memory."""
    est = estimate_run(cfg, device.type, dtype, shards, world, resume)
    if est is None or not cfg.check_memory:
        return est
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world)) if device.type == "cpu" else 1
    available = available_bytes(device, local_world)
    if available is None or est.peak <= available:
        return est
    fit = fitting_settings(cfg, device.type, dtype, available, shards, world)
    if fit is None:
        advice = "not even the smallest GPT-2 with batch_size=1 fits: free memory or use a smaller model"
    else:
        advice = f"it fits with {' '.join(fit[0])} (about {gib(fit[1].peak)})"
    raise GptkitError(
        f"this run needs about {gib(est.peak)} but {device.type} has {gib(available)} available: {advice}; "
        "--check_memory=False runs it anyway"
    )
