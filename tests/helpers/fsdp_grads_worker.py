"""Launched by tests/test_ddp.py under torchrun: FSDP's gradients and state against plain PyTorch.

A loss-equality test cannot see a gradient that is uniformly too large (PyTorch issue #162338:
FSDP2 over gloo summed gradients instead of averaging them): AdamW divides the gradient by
its own running magnitude, and clipping rescales it anyway. So this looks at the gradients
themselves. Every rank builds the same tiny GPT twice: one sharded by `gptkit.distributed`,
one plain reference that sees the whole global batch. Each rank writes what it saw to
OUT_DIR/rank{R}.json; the test asserts on it.
"""

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from gptkit import distributed
from gptkit.errors import GptkitError
from gptkit.model import GPT, GPTConfig

CLIP = 0.05  # well under the gradient norm (~1): the clipped path is the one compared


def raise_(error: Exception):
    raise error


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def main(out_dir: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(1234 + rank)  # different on purpose: every rank must start from rank 0's weights
    model = GPT(GPTConfig(block_size=16, vocab_size=96, n_layer=2, n_head=2, n_embd=32, dropout=0.0))
    ref = copy.deepcopy(model)
    dist.broadcast_object_list(objs := [ref.state_dict()], src=0)
    ref.load_state_dict(objs[0])
    built = []  # only rank 0 may build the whole model

    def build():
        built.append(rank)
        return model

    model = distributed.shard_from_rank0(build, torch.device("cpu"), torch.float32)
    # A user error on rank 0 (a missing base, say) stops every rank with its message.
    try:
        distributed.shard_from_rank0(lambda: raise_(GptkitError("no such base")), torch.device("cpu"), torch.float32)
    except GptkitError as e:
        error = str(e)
    report = {
        "built": built,
        "error": error,
        "tied": model.lm_head.weight is model.transformer.wte.weight,
        "local_numel": distributed.local_numel(model),
        "total_numel": sum(p.numel() for p in ref.parameters()),
    }

    # One optimizer step's backward, as train.Run.step does it: a global batch of 8 sequences,
    # 2 micro-steps of 2 on each of 2 ranks; the reference takes all 8 in 4 micro-steps.
    gen = torch.Generator().manual_seed(7)
    x = torch.randint(0, 96, (8, 16), generator=gen)
    y = torch.randint(0, 96, (8, 16), generator=gen)
    micro = x.view(4, 2, 16), y.view(4, 2, 16)
    local = 4 // world
    for i in range(rank * local, (rank + 1) * local):
        (model(micro[0][i], micro[1][i])[1] / local).backward()
    for i in range(4):
        (ref(micro[0][i], micro[1][i])[1] / 4).backward()
    params = dict(model.named_parameters())
    ref_params = dict(ref.named_parameters())
    grads = {n: p.grad.full_tensor() for n, p in params.items()}
    report["grad_diff"] = max(max_diff(grads[n], ref_params[n].grad) for n in params)
    report["grad_norm_ratio"] = (
        torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads.values()]))
        / torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ref_params.values()]))
    ).item()

    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), CLIP)
    report["norm"], report["ref_norm"] = norm.full_tensor().item(), ref_norm.item()
    report["clipped_grad_diff"] = max(max_diff(params[n].grad.full_tensor(), ref_params[n].grad) for n in params)

    # AdamW's state, gathered by full_state, is what the plain optimizer's state_dict() holds.
    opt = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
    ref_opt = ref.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
    opt.step()
    ref_opt.step()
    model_state, opt_state = distributed.full_state(model, opt)
    if rank == 0:
        ref_state = ref_opt.state_dict()
        report["param_groups_equal"] = opt_state["param_groups"] == ref_state["param_groups"]
        report["state_keys_equal"] = opt_state["state"].keys() == ref_state["state"].keys()
        report["state_diff"] = max(
            max_diff(s[k].float(), ref_state["state"][i][k].float())
            for i, s in opt_state["state"].items()
            for k in ("exp_avg", "exp_avg_sq", "step")
        )
        report["weights_diff"] = max(max_diff(v, ref.state_dict()[k]) for k, v in model_state.items())
        report["model_keys_equal"] = model_state.keys() == ref.state_dict().keys()
        report["tied_in_state"] = model_state["lm_head.weight"] is model_state["transformer.wte.weight"]
    else:
        report["empty_off_rank0"] = model_state == {} and opt_state == {}

    # And back: the whole state (as a checkpoint holds it) into a freshly sharded optimizer.
    whole = [ref_opt.state_dict()]
    dist.broadcast_object_list(whole, src=0)
    fresh = distributed.shard_from_rank0(lambda: copy.deepcopy(ref), torch.device("cpu"), torch.float32)
    fresh_opt = fresh.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
    distributed.load_optimizer_state(fresh, fresh_opt, whole[0])
    report["loaded_state_diff"] = max(
        max_diff(fresh_opt.state[fp][k].to_local(), opt.state[p][k].to_local())
        for fp, p in zip(fresh.parameters(), model.parameters(), strict=True)
        for k in ("exp_avg", "exp_avg_sq")
    )
    # fp16's scaler: an overflow in one rank's shard only must make every rank skip the step.
    scaler = distributed.ShardedGradScaler("cpu", enabled=True)
    scaler.scale(torch.ones(()))  # creates the scale
    if rank == world - 1:
        model.transformer.wte.weight.grad.to_local().view(-1)[0] = float("inf")
    scaler.unscale_(opt)
    report["found_inf"] = sum(f.item() for f in scaler._per_optimizer_states[id(opt)]["found_inf_per_device"].values())
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
