"""Finetune with DistributedDataParallel: one process per GPU (or per CPU slot), launched by torchrun.

    torchrun --standalone --nproc_per_node=4 scripts/ddp_finetune.py config/finetune_shakespeare.py
    torchrun --standalone --nproc_per_node=4 scripts/ddp_finetune.py config/finetune_shakespeare.py --fsdp=True
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST:29500 scripts/ddp_finetune.py config/finetune_shakespeare.py --batch_size=4

It takes the same config files and `--key=value` overrides as `python -m gptkit.train`. This
script only joins the process group torchrun describes (NCCL on CUDA, one GPU per local rank;
gloo on CPU) and then calls `gptkit.train.train`, whose loop shares the work out: each rank runs
gradient_accumulation_steps / WORLD_SIZE micro-steps of the same global batch, and rank 0 alone
prints, logs and checkpoints. With `--fsdp=True` the model, its gradients and AdamW state are
sharded across the processes instead of copied (FSDP2, see `gptkit.distributed`), for models
that do not fit one GPU. Run without torchrun, it is a plain single-process run.
"""

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from gptkit.config import TrainConfig, check_ranges, parse_args  # noqa: E402
from gptkit.device import resolve_device  # noqa: E402
from gptkit.errors import GptkitError  # noqa: E402
from gptkit.runguard import Interrupted  # noqa: E402
from gptkit.train import train  # noqa: E402

PROG = "torchrun --standalone --nproc_per_node=N scripts/ddp_finetune.py"
# How long a failing rank other than 0 waits before reporting. When every rank hits the same
# error (a bad setting, missing data), rank 0 reports it and torchrun stops the others within
# this time, so the message appears once; an error only this rank sees is still reported after it.
GRACE_S = 3.0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(cfg: TrainConfig) -> None:
    """Join the process group torchrun set up through RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT."""
    # What joining needs; every other setting is checked in train, once all ranks have joined, so
    # that they fail together and rank 0 alone reports it (see GRACE_S).
    check_ranges(cfg, ("ddp_timeout", "backend"))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(cfg.device).type
    device_id = None
    if device == "cuda":
        gpus = torch.cuda.device_count()
        if local_rank >= gpus:
            raise GptkitError(
                f"local rank {local_rank} has no GPU: this node has {gpus}; "
                f"set torchrun's --nproc_per_node to {gpus} or fewer"
            )
        backend = cfg.backend
        device_id = torch.device("cuda", local_rank)
        torch.cuda.set_device(device_id)
    elif device == "cpu":
        backend = "gloo"  # the one backend that reduces CPU tensors
    else:
        raise GptkitError(f"DDP does not run on device {device!r}; use --device=cpu, or a CUDA GPU per process")
    # The timeout bounds every collective, so a rank that hangs (not one that dies: torchrun
    # notices those at once) fails the job after ddp_timeout seconds instead of blocking it forever.
    dist.init_process_group(backend, timeout=timedelta(seconds=cfg.ddp_timeout), device_id=device_id)


def main(argv: list[str]) -> None:
    if launched_by_torchrun() and int(os.environ["RANK"]) > 0 and ({"-h", "--help"} & set(argv)):
        return  # rank 0 prints the help
    cfg = parse_args(TrainConfig, argv, PROG)
    if not launched_by_torchrun():
        train(cfg)
        return
    init_distributed(cfg)
    try:
        train(cfg)
    except Interrupted:
        leave_together()  # every rank stopped at the same iteration and the checkpoint is written
        raise
    leave_together()


def leave_together() -> None:
    # A rank tearing gloo down while rank 0 still writes its last checkpoint was seen to abort
    # ("terminate called without an active exception"), so no rank leaves before all are done.
    dist.barrier()
    dist.destroy_process_group()


def exit_now(code: int) -> None:
    """Leave without running C++ destructors at interpreter exit.

    Even after the barrier, a rank was seen to abort once in a loaded CI run while gloo's objects
    (still referenced by the DDP wrapper) were destroyed at exit. Every file is written and closed
    by now (checkpoints atomically), so nothing is lost by skipping that cleanup.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_rank(argv: list[str]) -> None:
    """Run `main` in this rank; user errors become one line on stderr and exit code 1."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    try:
        main(argv)
        if world > 1:
            exit_now(0)
    except GptkitError as e:
        if rank > 0:
            time.sleep(GRACE_S)
        where = f"rank {rank}: " if rank > 0 else ""
        print(f"error: {where}{e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:
        if rank == 0:
            print(str(e) or "interrupted", file=sys.stderr)
        if world > 1:
            exit_now(128 + getattr(e, "signum", 2))
        sys.exit(128 + getattr(e, "signum", 2))
    except Exception:
        # A rank that lost its peers fails with a communication error; the rank that failed first
        # holds the cause, and torchrun stops this one during the wait, before it adds noise.
        if world > 1:
            time.sleep(GRACE_S)
        raise


if __name__ == "__main__":
    run_rank(sys.argv[1:])
