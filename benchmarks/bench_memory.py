"""nanoGPT's gpt2-xl finetuning recipe on a 24 GB CPU machine: measured peak memory against gptkit.memory.

    python benchmarks/bench_memory.py                      # gpt2-xl shape (20-60 minutes, ~7 GB)
    python benchmarks/bench_memory.py --n_layer=2 --n_head=2 --n_embd=64 --block_size=64   # tiny
    python benchmarks/bench_memory.py --dtype=bfloat16 --loading_only   # gpt2-xl, bf16, up to the first step

1. Builds a random-weight Hugging Face GPT-2 directory of the given shape once, with
   `transformers`, under --models_dir (git-ignored `models/`).
2. Loads it with `GPT.from_pretrained` in a fresh process: peak resident memory
   over the weights (one copy: the model is built on the meta device and takes the tensors read).
3. Measures the LoRA run's loading stage alone, in the run's dtype (`--loading_only` stops here).
4. Runs ONE iteration of config/finetune_shakespeare_lora.py (LoRA + activation checkpointing,
   micro-batch 1 x block_size) with --gradient_accumulation_steps=1 (the recipe's 32 micro-steps
   take 32 times as long and reach the same peak from the second on) and --eval_iters=1, in a
   fresh process (benchmarks/peak_rss.py), and sets its peak RSS against the estimate.
5. Starts the full finetune of the same recipe (config/finetune_shakespeare.py) and times how soon
   the memory check stops it, with its one line. When the machine has room for the full
   finetune (a tiny shape), the check is given a smaller available figure, between the two
   estimates, through GPTKIT_AVAILABLE_MEMORY, and the line says so.
Only one of these processes runs at a time.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name  # noqa: E402

GB = 1e9


def run(args: list[str], env: dict | None = None, timeout: float = 3600) -> subprocess.CompletedProcess:
    full_env = os.environ | {"PYTHONPATH": str(ROOT)} | (env or {})
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def build(directory: Path, n_layer: int, n_head: int, n_embd: int) -> None:
    """A random-weight GPT-2 in Hugging Face format (built in its own process, so its memory goes)."""
    if (directory / "model.safetensors").is_file():
        return
    code = (
        "import sys, torch; from transformers import GPT2Config, GPT2LMHeadModel; torch.manual_seed(0); "
        f"GPT2LMHeadModel(GPT2Config(n_layer={n_layer}, n_head={n_head}, n_embd={n_embd}, n_positions=1024))"
        f".save_pretrained(sys.argv[1])"
    )
    result = run(["-c", code, str(directory)])
    if result.returncode != 0:
        raise SystemExit(f"building {directory} failed:\n{result.stderr[-3000:]}")


def measure_loading(directory: Path) -> dict:
    code = (
        "import json, resource, sys, torch; sys.path.insert(0, 'benchmarks'); "
        "from peak_rss import rss_now, warm_up; from gptkit.model import GPT; "
        "warm_up(); base = rss_now(); m = GPT.from_pretrained(sys.argv[1]); "
        "w = sum(p.numel() * p.element_size() for p in m.parameters()); "
        "print(json.dumps(dict(added=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base, weights=w)))"
    )
    result = run(["-c", code, str(directory)])
    if result.returncode != 0:
        raise SystemExit(f"loading failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n_layer", type=int, default=48)
    p.add_argument("--n_head", type=int, default=25)
    p.add_argument("--n_embd", type=int, default=1600)
    p.add_argument("--block_size", type=int, default=1024)
    p.add_argument("--models_dir", default=str(ROOT / "models"))
    p.add_argument("--data_root", default="data", help="the folder that holds shakespeare/ (prepared)")
    p.add_argument(
        "--dtype",
        default="auto",
        help="the runs' --dtype: auto (what gptkit.train picks on this machine), float32, bfloat16 or float16",
    )
    p.add_argument(
        "--loading_only",
        action="store_true",
        help="stop after the LoRA run's loading stage (where its first step would take hours, as bf16 where "
        "the CPU has no bf16 instructions)",
    )
    p.add_argument("--full_timeout", type=float, default=120, help="seconds the full finetune may take to be stopped")
    args = p.parse_args()

    name = f"random-gpt2-L{args.n_layer}-H{args.n_head}-C{args.n_embd}"
    directory = Path(args.models_dir) / name
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    t = time.perf_counter()
    build(directory, args.n_layer, args.n_head, args.n_embd)
    print(f"model: {directory} ({time.perf_counter() - t:.0f} s to build or find)")

    load = measure_loading(directory)
    print(
        f"from_pretrained: peak {load['added'] / GB:.2f} GB over the baseline for {load['weights'] / GB:.2f} GB "
        f"of weights"
    )
    print(f"ratio loading peak/weights: {load['added'] / load['weights']:.2f}x (1.00x: one copy)")

    common = [f"--init_from={directory}", f"--block_size={args.block_size}", "--progress=False"]
    common += [f"--data_root={args.data_root}", f"--dtype={args.dtype}"]
    out = Path(args.models_dir) / f"{name}-run"
    lora_args = [
        "config/finetune_shakespeare_lora.py",
        *common,
        "--max_iters=1",
        "--gradient_accumulation_steps=1",
        "--eval_iters=1",
        f"--out_dir={out}",
        "--overwrite_out_dir=True",
        "--device=cpu",
    ]
    result = run(["benchmarks/peak_rss.py", "--loading_stage", *lora_args])
    if result.returncode != 0 or not result.stdout.strip():
        raise SystemExit(f"the LoRA run's loading failed:\n{result.stderr[-3000:]}")
    stage = json.loads(result.stdout.splitlines()[-1])
    print(
        f"LoRA recipe's loading stage in {stage['dtype']} (the base read, adapters added, held in the run's "
        f"dtype): {stage['seconds']:.0f} s, peak {stage['added'] / GB:.2f} GB over the baseline (anonymous "
        f"{stage['anon_added'] / GB:.2f}), {stage['after'] / GB:.2f} GB held after for {stage['held'] / GB:.2f} GB "
        f"of weights; the estimate's loading term {stage['loading'] / GB:.2f} GB"
    )
    print(f"ratio estimated/measured loading peak: {stage['loading'] / stage['added']:.2f}x")
    if args.loading_only:
        return
    result = run(["benchmarks/peak_rss.py", *lora_args], timeout=4 * 3600)  # ~20 min quiet, an hour shared
    if result.returncode != 0 or not result.stdout.strip():
        raise SystemExit(f"the LoRA run failed:\n{result.stderr[-3000:]}")
    lora = json.loads(result.stdout.splitlines()[-1])
    if lora["error"]:
        raise SystemExit(f"the LoRA run stopped: {lora['error']}")
    parts = ", ".join(f"{k} {v / GB:.2f}" for k, v in lora["parts"].items() if k != "allocator_share")
    print(
        f"LoRA + checkpointing in {lora['dtype']}, 1 iteration of 1 x {args.block_size} tokens: "
        f"{lora['seconds']:.0f} s, "
        f"peak RSS {lora['peak'] / GB:.2f} GB in all, {lora['added'] / GB:.2f} GB over the baseline "
        f"of {lora['baseline'] / GB:.2f} GB; estimate {lora['estimate'] / GB:.2f} GB, of which tensors "
        f"{lora['tensors'] / GB:.2f} GB ({parts})"
    )
    print(
        f"where it is: anonymous memory (tensors, the allocator's heap) peaked {lora['anon_peak'] / GB:.2f} GB "
        f"({(lora['anon_peak'] - lora['anon_baseline']) / GB:.2f} over its baseline), mapped files "
        f"{lora['file_peak'] / GB:.2f} GB ({(lora['file_peak'] - lora['file_baseline']) / GB:.2f} over theirs); "
        f"sampled every 20 ms, (s, anon GB, files GB) by 64 MB moves: "
        + " ".join(f"({t:.0f}, {a / GB:.2f}, {f / GB:.2f})" for t, a, f in lora["timeline"])
    )
    print(f"ratio estimate/measured (LoRA + checkpointing): {lora['estimate'] / lora['added']:.2f}x")
    tensors_ratio = lora["tensors"] / lora["added"]
    print(f"ratio tensors/measured (LoRA + checkpointing, no allocator allowance): {tensors_ratio:.2f}x")

    # The full finetune: stopped by the check, before it loads anything.
    import torch

    from gptkit import device, memory
    from gptkit.config import TrainConfig, parse_args

    full_cfg = parse_args(TrainConfig, ["config/finetune_shakespeare.py", *common], "bench")
    full_estimate = memory.estimate_run(full_cfg, "cpu", device.pick_dtype(args.dtype, "cpu", autocast=True)).peak
    available = device.available_bytes(torch.device("cpu"))
    env, note = {}, "the machine's MemAvailable"
    if full_estimate <= available:
        simulated = (full_estimate + lora["estimate"]) // 2
        env, note = {device.AVAILABLE_ENV: str(simulated)}, f"a simulated {simulated / GB:.2f} GB available"
    t = time.perf_counter()
    result = run(
        ["-m", "gptkit.train", "config/finetune_shakespeare.py", *common, f"--out_dir={out}-full", "--device=cpu"],
        env=env,
        timeout=args.full_timeout,
    )
    seconds = time.perf_counter() - t
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    stopped = result.returncode == 1 and lines and "needs about" in lines[0]
    print(
        f"full finetune ({full_estimate / GB:.2f} GB estimated, against {note}): "
        f"{'stopped by the memory check' if stopped else 'NOT stopped by the check'} after {seconds:.1f} s, "
        f"exit {result.returncode}"
    )
    print(lines[0] if lines else result.stderr[-2000:])
    if not stopped:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
