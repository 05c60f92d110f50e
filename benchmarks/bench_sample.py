"""Decoding throughput: gptkit `generate` (KV cache), gptkit without cache, transformers `generate`.

    python benchmarks/bench_sample.py                     # GPT-2 124M, 200 new tokens, batch 1 and 8

Greedy decoding of `--new_tokens` tokens after a random `--prompt_len`-token prompt, the same
random weights in both models, interleaved in one process; tokens/s counts new tokens over the
whole batch. transformers runs `GPT2LMHeadModel.generate(do_sample=False)` with its default
dynamic KV cache and sdpa attention. The tokens of both are compared: they must be the same.
Without a cache every step re-reads the whole context, so it is timed at `--nocache_batches` only.

Each decoding step reads every weight once, so memory bandwidth caps tokens/s: the script
measures how fast this machine reads memory (a sum over a large buffer, with all threads and
with one) and reports each contender's share of that bound. "products only", timed alongside,
runs nothing but the weight matmuls of each step: how close the kernels themselves get to the
bound, which no decoder built on them can pass.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import torch  # noqa: E402

from benchmarks import common  # noqa: E402


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_model_args(parser)
    parser.add_argument("--prompt_len", type=int, default=16)
    parser.add_argument("--new_tokens", type=int, default=200)
    parser.add_argument("--batches", type=int_list, default=[1, 8], help="comma-separated batch sizes")
    parser.add_argument("--nocache_batches", type=int_list, default=[1], help="batch sizes also timed without cache")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--bandwidth_mb", type=int, default=512, help="buffer that measures memory bandwidth")
    args = parser.parse_args(argv)
    device = common.setup(args)
    ours, hf = common.twin_models(args)
    ours.eval(), hf.eval()
    n = args.new_tokens
    print(f"machine: {common.describe_machine(device)}")
    print(f"model: {common.model_line(ours, args)}; float32 on {device.type}; {n} new tokens after {args.prompt_len}")

    bandwidth = measure_bandwidth(args, device)
    step_bytes = common.weight_bytes_per_step(ours)
    where = ", ".join(f"{v / 1e9:.1f} GB/s with {k}" for k, v in bandwidth.items())
    print(f"memory read bandwidth: {where}; a step reads {step_bytes / 1e6:.0f} MB of weights")
    for B in args.batches:
        bench_batch(ours, hf, args, B, device, B * bandwidth["all threads"] / step_bytes)


def products_only(model, B: int, device: torch.device, steps: int):
    """A decoding run of `steps` steps that did nothing but the weight products: every Linear of
    the model once a step, in order, on B rows, through the model's own layers (so gptkit's
    routing). Its share of the bound is what the matmul kernels themselves stream; a real step only
    adds to it (attention, LayerNorm, GELU, sampling), so no decoder on these kernels beats it."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(B, m.in_features, device=device) for m in linears]

    def run():
        for _ in range(steps):
            for m, x in zip(linears, inputs, strict=True):
                m(x)

    return run


def measure_bandwidth(args, device: torch.device) -> dict[str, float]:
    bandwidth = {"all threads": common.read_bandwidth(device, args.bandwidth_mb)}
    if device.type == "cpu" and torch.get_num_threads() > 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        bandwidth["1 thread"] = common.read_bandwidth(device, args.bandwidth_mb)
        torch.set_num_threads(threads)
    return bandwidth


def bench_batch(ours, hf, args, B: int, device: torch.device, bound: float) -> None:
    n = args.new_tokens
    prompt = torch.randint(0, args.vocab_size, (B, args.prompt_len), device=device)
    out = {}

    def run_ours(cache=True):
        out["gptkit" if cache else "no cache"] = ours.generate(prompt, n, temperature=0, use_cache=cache)

    def run_hf():
        out["transformers"] = hf.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=n,
            min_new_tokens=n,  # never stop early at <|endoftext|>: the same work as ours
            do_sample=False,
            pad_token_id=50256,
        )

    fns = {"gptkit": run_ours, "transformers": run_hf, "products only": products_only(ours, B, device, n)}
    if B in args.nocache_batches:
        fns["gptkit no cache"] = lambda: run_ours(cache=False)
    with torch.no_grad():
        times = common.time_interleaved(fns, args.repeats, args.warmup, device)
    same = all(torch.equal(out["gptkit"], tokens) for tokens in out.values())
    tps = {name: B * n / common.median(t) for name, t in times.items()}
    products = tps.pop("products only")
    print(f"batch {B}: greedy tokens {'identical' if same else 'DIFFERENT'} in all runs")
    print(f"{'bound':>16}: {bound:8.1f} tokens/s (reading the weights once a step, nothing else)")
    alone = f"{100 * products / bound:3.0f}% of the bound (the weight matmuls alone)"
    print(f"{'products only':>16}: {products:8.1f} tokens/s  {alone}")
    for name, value in tps.items():
        share = f"{100 * value / bound:3.0f}% of the bound, {100 * value / products:3.0f}% of products only"
        print(f"{name:>16}: {value:8.1f} tokens/s  {share}")
    print(f"ratio batch {B} gptkit/transformers: {tps['gptkit'] / tps['transformers']:.2f}x tokens/s")
    if "gptkit no cache" in tps:
        print(f"ratio batch {B} gptkit cache/no cache: {tps['gptkit'] / tps['gptkit no cache']:.2f}x tokens/s")
    if not same:
        raise SystemExit("greedy tokens differ between gptkit and transformers")


if __name__ == "__main__":
    main()
