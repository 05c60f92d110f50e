"""The memory table of docs/lora-and-memory.md: what fits where, computed by gptkit.memory (nothing is allocated).

    python scripts/memory_table.py

For nanoGPT's finetuning recipe (config/finetune_shakespeare.py: micro-batch 1 x 1024 tokens, AdamW) on
each GPT-2 size: a full finetune or LoRA (config/finetune_shakespeare_lora.py's rank 8 on all
four block layers, base frozen), each with and without activation checkpointing. GPUs train
under bf16 autocast (a LoRA run holds its frozen block matrices in bf16), the CPU in fp32.
A card fits a run when its estimate is at most the card's size less 0.5 GiB for the CUDA
context; a 24 GB CPU machine when it is at most the 21 GiB such a machine has available
(this one: 23.4 GiB total, ~21 GiB available when idle).
"""

import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gptkit.config import TrainConfig, parse_args  # noqa: E402
from gptkit.memory import GIB, estimate_run  # noqa: E402
from gptkit.pretrained import GPT2_SIZES  # noqa: E402

GPUS_GB = (16, 24, 40, 80)
CPU_AVAILABLE = 21 * GIB
SETTINGS = {
    "full": {},
    "full + checkpointing": {"grad_checkpoint": True},
    "LoRA r=8": {"lora_rank": 8},
    "LoRA r=8 + checkpointing": {"lora_rank": 8, "grad_checkpoint": True},
}


def gpu_capacity(gb: int) -> int:
    return int(gb * 1e9) - GIB // 2


def main() -> None:
    lora = parse_args(TrainConfig, ["config/finetune_shakespeare_lora.py"], "memory_table")
    seed = parse_args(TrainConfig, ["config/finetune_shakespeare.py"], "memory_table")
    base = replace(seed, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout, lora_targets=lora.lora_targets)
    header = "| model | setting | GPU bf16 | fits on | CPU fp32 | fits a 24 GB CPU machine |"
    print(header)
    print("|---|---|---|---|---|---|")
    for name in GPT2_SIZES:
        for label, change in SETTINGS.items():
            cfg = replace(base, init_from=name, **change)
            gpu = estimate_run(cfg, "cuda", torch.bfloat16).peak
            cpu = estimate_run(cfg, "cpu", torch.float32).peak
            fits = [f"{gb} GB" for gb in GPUS_GB if gpu <= gpu_capacity(gb)]
            print(
                f"| {name} | {label} | {gpu / GIB:.1f} GiB | {', '.join(fits) or 'none of these'} "
                f"| {cpu / GIB:.1f} GiB | {'yes' if cpu <= CPU_AVAILABLE else 'no'} |"
            )


if __name__ == "__main__":
    main()
