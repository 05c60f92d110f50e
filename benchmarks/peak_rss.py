"""Run `gptkit.train` with the given arguments in this process; print its peak memory and estimate.

    python benchmarks/peak_rss.py CONFIG.py --key=value ...
    python benchmarks/peak_rss.py --loading_stage CONFIG.py --key=value ...   # up to the first step

Prints one JSON line: `baseline` is the resident memory after one optimizer step of a
model of a few thousand parameters (what any run pays before its model: torch and the
libraries its optimizer and kernels load on first use, about 300 MB), `peak` the process's
peak resident memory (getrusage's ru_maxrss), `tensors` gptkit.memory's peak of the tensors
alive at once for the same settings, `estimate` that plus its allowance for the allocator.
`added`, `peak - baseline` less the growth of mapped files (`files_added`, see `mapped_files`),
is the memory the run itself added: the figure the estimate stands for. Run
it in a fresh process each time: ru_maxrss never goes down.

`anon_peak` and `file_peak` split the peak by kind, sampled every 20 ms from /proc/self/status
(ru_maxrss cannot): anonymous memory (tensors, the allocator's heap) and resident pages of
mapped files (libraries' code, and a weights file if one were mapped); `timeline` gives
(seconds, RssAnon, RssFile) in bytes each time either moved by 64 MB, to see which stage holds
the peak.
"""

import json
import resource
import sys
import threading
import time

import torch

from gptkit import allocator, memory
from gptkit.config import TrainConfig, parse_args
from gptkit.device import pick_dtype, resolve_device
from gptkit.model import GPT, GPTConfig
from gptkit.train import Precision, build_model, train


def rss_now(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def mapped_files() -> int:
    """Resident pages of mapped files (libraries' code): no tensor lives there.

    Where the kernel keeps a library's page cache in 2 MB huge pages (FileHugePages), touching
    one new function maps 2 MB: the same run then measured up to ~130 MB more after a long test
    session than alone. These pages only grow, so their growth up to the end bounds what they
    added to the peak.
    """
    return rss_now("RssFile") + rss_now("RssShmem")


class ResidentSampler(threading.Thread):
    """Samples RssAnon and RssFile until stopped; keeps the peak of each and of their sum."""

    def __init__(self, interval: float = 0.02, step: int = 64 * 2**20):
        super().__init__(daemon=True)
        self.interval, self.step, self.stopped = interval, step, threading.Event()
        self.anon_peak = self.file_peak = self.sum_peak = 0
        self.at_sum_peak, self.timeline, self.start_time = (0, 0), [], time.perf_counter()
        self.weights_mapped = False  # whether a .safetensors file was ever seen mapped into the process

    def run(self) -> None:
        last = (0, 0)
        while not self.stopped.wait(self.interval):
            anon, files = rss_now("RssAnon"), rss_now("RssFile") + rss_now("RssShmem")
            self.anon_peak, self.file_peak = max(self.anon_peak, anon), max(self.file_peak, files)
            if anon + files > self.sum_peak:
                self.sum_peak, self.at_sum_peak = anon + files, (anon, files)
            self.weights_mapped = self.weights_mapped or weights_file_mapped()
            if abs(anon - last[0]) >= self.step or abs(files - last[1]) >= self.step:
                self.timeline.append((round(time.perf_counter() - self.start_time, 1), anon, files))
                last = (anon, files)

    def stop(self) -> dict:
        self.stopped.set()
        self.join()
        return dict(
            anon_peak=self.anon_peak,
            file_peak=self.file_peak,
            at_peak=self.at_sum_peak,
            timeline=self.timeline,
            weights_mapped=self.weights_mapped,
        )


def weights_file_mapped() -> bool:
    """Whether a safetensors file is mapped into this process now (its pages would count as resident)."""
    with open("/proc/self/maps") as f:
        return any(line.rstrip().endswith(".safetensors") for line in f)


def warm_up() -> None:
    """One training step of a tiny model: loads what every run loads, so the baseline holds it."""
    model = GPT(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=1, n_embd=8))
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))[1].backward()
    opt.step()


def loading_stage(cfg: TrainConfig, dtype: torch.dtype) -> dict:
    """Only the run's loading stage (`gptkit.train.build_model`: the base read, adapters added, a
    LoRA base held in `dtype`): its peak over the warmed-up baseline, for a shape whose first
    step is out of reach on this CPU (gpt2-xl in emulated bf16: hours)."""
    allocator.fix_mmap_threshold("cpu")  # as gptkit.train does first
    warm_up()
    baseline, anon_baseline = rss_now(), rss_now("RssAnon")
    sampler = ResidentSampler()
    sampler.start()
    start = time.perf_counter()
    model, _ = build_model(cfg, None, Precision(dtype, "", "cpu"))
    seconds = time.perf_counter() - start
    sampled = sampler.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    return dict(
        baseline=baseline, added=peak - baseline, anon_added=sampled["anon_peak"] - anon_baseline,
        held=held, after=rss_now() - baseline, seconds=seconds, timeline=sampled["timeline"],
    )  # fmt: skip


def main(argv: list[str]) -> None:
    only_loading = argv[:1] == ["--loading_stage"]
    cfg = parse_args(TrainConfig, argv[only_loading:], "benchmarks/peak_rss.py")
    device = resolve_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device.type, autocast=True)
    est = memory.estimate_run(cfg, device.type, dtype)
    if only_loading:
        record = dict(dtype=str(dtype).removeprefix("torch."), loading=est.loading, estimate=est.peak)
        print(json.dumps(record | loading_stage(cfg, dtype)))
        return
    warm_up()
    baseline, files_before, anon_baseline = rss_now(), mapped_files(), rss_now("RssAnon")
    sampler = ResidentSampler()
    sampler.start()
    start = time.perf_counter()
    error = None
    try:
        train(cfg)
    except Exception as e:  # the memory check's stop is a result here, not a crash
        error = f"{type(e).__name__}: {e}"
    seconds = time.perf_counter() - start
    sampled = sampler.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(
        json.dumps(
            dict(
                dtype=str(dtype).removeprefix("torch."),
                baseline=baseline,
                peak=peak,
                added=peak - baseline - (mapped_files() - files_before),
                files_added=mapped_files() - files_before,
                estimate=est.peak if est else None,
                tensors=est.tensors if est else None,
                parts=est.__dict__ if est else None,
                seconds=seconds,
                error=error,
                anon_baseline=anon_baseline,
                file_baseline=files_before,
                **sampled,
            )
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
