"""glibc's mmap threshold for CPU training: speed and peak memory, gptkit's fixed setting vs glibc's default.

    python benchmarks/bench_allocator.py                          # GPT-2 124M shape, full finetune, 4 x 256
    python benchmarks/bench_allocator.py --n_layer=6 --n_embd=128 --n_head=4 -- --lora_rank=8 --grad_checkpoint=True

`gptkit.train` fixes glibc's mmap threshold at the start of a CPU run (`gptkit.allocator`). This
runs the same training (a random-weight GPT-2-shaped directory, `benchmarks/peak_rss.py` in a fresh
process each time, as the setting lasts for a process's life) alternately with gptkit's setting,
with glibc's default (`GLIBC_TUNABLES=glibc.malloc.perturb=0`: a value that changes nothing but
tells gptkit to leave malloc alone) and with each of `--thresholds` (`MALLOC_MMAP_THRESHOLD_`),
`--pairs` rounds, the order alternating. Per setting: the median step time (iterations after the
first, from metrics.jsonl), the peak memory the run added (`ru_maxrss` over the warmed-up
baseline) against `gptkit.memory`'s estimate, and the step time as a ratio to glibc's default.
Arguments after `--` go to `gptkit.train`.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_memory import build, run  # noqa: E402
from benchmarks.common import cpu_name  # noqa: E402

MB = 2**20
DEFAULT = "glibc default"
GPTKIT = "gptkit (128 kB fixed)"


def settings(thresholds: list[int]) -> dict[str, dict]:
    """Setting name -> environment of the child."""
    envs = {GPTKIT: {}, DEFAULT: {"GLIBC_TUNABLES": "glibc.malloc.perturb=0"}}
    for t in thresholds:
        envs[f"MALLOC_MMAP_THRESHOLD_={t // 1024} kB"] = {"MALLOC_MMAP_THRESHOLD_": str(t)}
    return envs


def one_run(model_dir: Path, out_dir: Path, env: dict, args, extra: list[str]) -> dict:
    train_args = [
        f"--init_from={model_dir}", f"--out_dir={out_dir}", f"--data_root={args.data_root}",
        f"--block_size={args.block_size}", f"--batch_size={args.batch_size}", f"--max_iters={args.iters}",
        f"--gradient_accumulation_steps={args.accumulation}", "--eval_interval=100000", "--eval_iters=1",
        "--device=cpu", f"--dtype={args.dtype}", "--progress=False", "--check_memory=False", "--overwrite_out_dir=True",
        "--always_save_checkpoint=False", *extra,
    ]  # fmt: skip
    base_env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    result = run(["benchmarks/peak_rss.py", *train_args], env=base_env | env)
    if result.returncode != 0:
        raise SystemExit(f"the run failed:\n{result.stderr[-3000:]}")
    record = json.loads(result.stdout.splitlines()[-1])
    if record["error"]:
        raise SystemExit(record["error"])
    with open(out_dir / "metrics.jsonl") as f:
        steps = [r["dt"] for r in map(json.loads, f) if r["type"] == "step" and r["iter"] >= 1]
    return dict(added=record["added"], estimate=record["estimate"], tensors=record["tensors"], steps=steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n_layer", type=int, default=12)
    p.add_argument("--n_head", type=int, default=12)
    p.add_argument("--n_embd", type=int, default=768)
    p.add_argument("--block_size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--accumulation", type=int, default=1, help="micro-steps per iteration")
    p.add_argument("--iters", type=int, default=4, help="iterations per run; the first is not timed")
    p.add_argument("--pairs", type=int, default=3, help="rounds of one run per setting")
    p.add_argument("--thresholds", default="", help="comma-separated bytes, e.g. 1048576,4194304")
    p.add_argument("--models_dir", default=str(ROOT / "models"))
    p.add_argument("--data_root", default="data", help="the folder that holds shakespeare/ (prepared)")
    args, extra = p.parse_known_args()
    extra = [a for a in extra if a != "--"]

    model_dir = Path(args.models_dir) / f"random-gpt2-L{args.n_layer}-H{args.n_head}-C{args.n_embd}"
    build(model_dir, args.n_layer, args.n_head, args.n_embd)
    envs = settings([int(t) for t in args.thresholds.split(",") if t])
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    shape = f"{args.batch_size} x {args.block_size} tokens x {args.accumulation}, {args.dtype}"
    print(f"model: {model_dir.name}, {shape}, {extra}")
    results = {name: [] for name in envs}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.pairs):
            names = list(envs) if round_ % 2 == 0 else list(envs)[::-1]
            for name in names:
                r = one_run(model_dir, Path(tmp) / "out", envs[name], args, extra)
                results[name].append(r)
                steps = [round(s, 2) for s in r["steps"]]
                print(f"  round {round_}: {name}: steps {steps} s, added {r['added'] / MB:.0f} MB", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    base = statistics.median(s for r in results[DEFAULT] for s in r["steps"])
    for name, runs in results.items():
        step = statistics.median(s for r in runs for s in r["steps"])
        added = [r["added"] / MB for r in runs]
        est, tensors = runs[0]["estimate"] / MB, runs[0]["tensors"] / MB
        print(
            f"{name}: median step {step:.2f} s; peak added {min(added):.0f}-{max(added):.0f} MB against the "
            f"estimate {est:.0f} MB (tensors {tensors:.0f})"
        )
        print(f"ratio step time {name}/{DEFAULT}: {step / base:.2f}x")
        print(f"ratio estimate/highest peak ({name}): {est / max(added):.2f}x")


if __name__ == "__main__":
    main()
