"""Fully sharded data parallel (FSDP2): how the training loop shards a model across processes.

Under DDP every process holds the whole model, its gradients and AdamW's two moments: 16
bytes per parameter in fp32, however many GPUs there are. FSDP (`--fsdp=True` under torchrun)
splits each of those tensors along its first dimension, so every process keeps 1/N of them
and gathers one transformer block's weights at a time, for its forward and backward, then
frees them again. The training loop is the same for both; what differs is here:

- `shard_from_rank0(build, ...)`: only rank 0 builds (or loads) the whole model, on its CPU;
  every process makes the same model on the meta device (shapes, no memory), `fully_shard`s
  each block, then the whole model (the embeddings, the final LayerNorm and the head, whose
  weight is the token embedding's: tied, one Parameter), and takes its shards of rank 0's
  values. N processes on one machine so load gpt2-xl's 6 GB once, not N times, and no GPU
  ever holds more than its shards.
- `full_state(model, optimizer)`: the model's and the optimizer's full state dicts, gathered
  onto rank 0's CPU in exactly the format a one-process run saves (the optimizer's keyed by
  parameter index, as `torch.optim` keys it), so checkpoints stay single files that
  `gptkit.sample`, a one-process resume, and an FSDP run with any process count read as they are.
- `load_optimizer_state(model, optimizer, state)`: the reverse, each process keeping its shard.
- `idle_forwards(...)`: evaluation shares out batches unevenly when they do not divide; every
  forward gathers weights from all processes, so the ones with fewer batches run empty ones.
"""

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict

import torch
import torch.distributed as dist
import torch.nn as nn

from gptkit.errors import GptkitError
from gptkit.model import GPT, GPTConfig


def _fsdp_api():
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:  # fully_shard became public API in PyTorch 2.6
        raise GptkitError(
            f"--fsdp=True needs PyTorch 2.6 or newer (this is {torch.__version__}): upgrade torch, "
            "or leave --fsdp off to run DDP"
        ) from None
    return fully_shard, MixedPrecisionPolicy


def shard_from_rank0(build: Callable[[], GPT], device: torch.device, dtype: torch.dtype) -> GPT:
    """The model `build()` makes on rank 0, sharded over all processes of the default group.

    Call before making the optimizer. Only rank 0 calls `build` (the other ranks never hold the
    whole model), and a GptkitError it raises is raised on every rank, so none waits for a model
    that will not come. The blocks are the units of gathering: one block's weights are whole at
    a time (two while the next is prefetched). With a low-precision `dtype` the gathered weights
    are cast to it for compute and the gradients are reduced in fp32, while the sharded
    weights, gradients and optimizer state stay fp32, like autocast's master weights under DDP.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    fully_shard, MixedPrecisionPolicy = _fsdp_api()
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import register_fsdp_forward_method

    whole, shared = None, [None]
    if dist.get_rank() == 0:
        try:
            whole = build()
            shared = [asdict(whole.config)]
        except GptkitError as e:
            shared = [e]
    dist.broadcast_object_list(shared, src=0)
    if isinstance(shared[0], GptkitError):
        raise shared[0]
    with torch.device("meta"):
        model = GPT(GPTConfig(**shared[0]))
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=dtype if dtype != torch.float32 else None, reduce_dtype=torch.float32)
    # FSDP warns that the model returns views (the loss): an in-place change to them would skip
    # a gather. The training loop only ever reads them.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    units = [*model.transformer.h, model]  # the root last: it takes every parameter the blocks did not
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    for block in model.transformer.h:
        # A classifier's last block runs `forward_last`, not `forward`: FSDP must gather its weights for it too.
        register_fsdp_forward_method(block, "forward_last")
    if dist.get_backend() == "gloo":
        # PyTorch issue #162338: FSDP2 asked gloo for an averaging reduce-scatter that summed
        # instead, so gradients came out world_size times too large. Summing and then dividing
        # by the process count ourselves (through FSDP) is right on every version.
        for unit in units:
            if not hasattr(unit, "set_force_sum_reduction_for_comms"):
                raise GptkitError(
                    f"FSDP over gloo needs a newer PyTorch than {torch.__version__} (older ones can sum "
                    "gradients instead of averaging them): upgrade torch, or leave --fsdp off"
                )
            unit.set_force_sum_reduction_for_comms(True)
    # The shards get memory, then rank 0's values, one tensor at a time.
    model.to_empty(device=device)
    state = whole.state_dict() if whole is not None else {}
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    # Weight tying must survive sharding: the head and the token embedding share one (sharded) Parameter.
    if model.lm_head.weight is not model.transformer.wte.weight:
        raise RuntimeError("FSDP untied lm_head.weight from transformer.wte.weight")
    return model


class ShardedGradScaler(torch.amp.GradScaler):
    """fp16's gradient scaler for sharded gradients: all ranks skip a step if any shard overflowed.

    Each rank checks only its own shards for inf/nan; left alone, one rank would skip the step
    (and lower its scale) while the others apply theirs. (torch's own ShardedGradScaler does
    this too, but its found-inf flag has a shape the fused AdamW step rejects on DTensors.)
    """

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        super().unscale_(optimizer)
        if not self.is_enabled():
            return
        for found_inf in self._per_optimizer_states[id(optimizer)]["found_inf_per_device"].values():
            dist.all_reduce(found_inf, op=dist.ReduceOp.MAX)


def local_numel(model: nn.Module) -> int:
    """Parameter elements this process stores (its shards; the whole model when unsharded)."""
    return sum(getattr(p, "_local_tensor", p).numel() for p in model.parameters())


def describe_shards(model: nn.Module) -> str:
    """One line saying how many parameter elements each process stores. A collective."""
    counts: list = [None] * dist.get_world_size()
    dist.all_gather_object(counts, local_numel(model))
    total = sum(p.numel() for p in model.parameters())
    return (
        f"FSDP: {total:,} parameters sharded over {len(counts)} processes, each storing "
        f"{' / '.join(f'{c:,}' for c in counts)}"
    )


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(model state dict, optimizer state dict), whole, on rank 0's CPU; empty dicts elsewhere.

    A collective: every process must call it.
    """
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    if not model_state:
        return {}, {}
    # Gathered one name at a time, tied weights come back as two tensors: share one again, as
    # `model.state_dict()` does, so the file is the size and shape a one-process run writes.
    for names in _tied_names(model):
        for name in names[1:]:
            if name in model_state:
                model_state[name] = model_state[names[0]]
    # torch.distributed.checkpoint keys the optimizer's state by parameter name; torch.optim
    # (and so every checkpoint a one-process run writes) by the parameter's position across the
    # param groups. The groups list the names in that order.
    index = {}
    for group in optim_state["param_groups"]:
        for name in group["params"]:
            index.setdefault(name, len(index))
    return model_state, {
        "state": {index[name]: s for name, s in optim_state["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in optim_state["param_groups"]],
    }


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a whole optimizer state dict (torch.optim's format) into a sharded optimizer.

    Every process passes the same whole state and keeps its own shard of each tensor.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    name_of = {id(p): name for name, p in model.named_parameters()}  # a tied weight under its first name
    names = [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
    by_name = {
        "state": {names[i]: s for i, s in state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))


def _tied_names(model: nn.Module) -> list[list[str]]:
    """Groups of state-dict names that hold one Parameter (e.g. wte and lm_head)."""
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


@torch.no_grad()
def idle_forwards(model: nn.Module, batches: int, rank: int, world: int, device: torch.device) -> None:
    """Make this process's evaluation forwards as many as the busiest process's.

    Batches rank, rank + world, ... are this process's; each forward of a sharded model gathers
    every block from all processes, so a process with one batch fewer runs one forward of a
    single token, which costs the gathering and nothing else, and whose loss is not counted.
    """
    idle = math.ceil(batches / world) - len(range(rank, batches, world))
    token = torch.zeros((1, 1), dtype=torch.long, device=device)
    for _ in range(idle):
        model(token, token)
