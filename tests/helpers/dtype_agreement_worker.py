"""Launched by tests/test_ddp.py under torchrun: every rank trains in the dtype rank 0 chose.

`--dtype=auto` on CPU rests on a timing, and a timing can tip the other way on another rank
(another core, another moment), which would train the ranks in different precisions. Here each
rank's own decision is made to differ on purpose; `cpu_autocast_dtype` must still return rank
0's on all of them. Each rank writes what it got to OUT_DIR/rank{R}.json.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from gptkit import device


def main(out_dir: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    # What each rank would decide alone: bf16 on rank 0, fp32 on the others.
    own = (torch.bfloat16, "rank 0's measurement") if rank == 0 else (torch.float32, f"rank {rank}'s measurement")
    device.choose_cpu_autocast = lambda native, measure: own
    dtype, why = device.cpu_autocast_dtype()
    (out_dir / f"rank{rank}.json").write_text(json.dumps({"dtype": str(dtype), "why": why}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
