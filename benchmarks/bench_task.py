"""Finetuning-step throughput on the shipped `dates` task: gptkit vs transformers, in response tokens/s.

    python benchmarks/bench_task.py                       # GPT-2 124M shapes, 16 examples a step, on CPU

The same micro-batches of the same examples (data/dates' training split, prepared into a temporary
folder) go to both models, which start from the same random weights (checked: equal loss before
the first step) and run interleaved in one process. gptkit trains as `gptkit.train` does on
example data: `ExampleBatches` (padded to the batch's longest, IGNORE_INDEX on prompt and padding),
its objective with unpadding (`gptkit.unpadding`, where a batch is padded enough for it to pay),
the summed loss over the step's target count, at `--dtype` (default `auto`, as `gptkit.train`
picks it). transformers gets `GPT2LMHeadModel` with what `DataCollatorForSeq2Seq` builds:
right padding, `attention_mask`, labels -100 on the prompt and the padding; in each of
`--hf_dtypes` (fp32, and bf16 autocast where the CPU has bf16 instructions), the ratio against the
fastest. Both use fused AdamW with the same settings (benchmarks/bench_train.py).
A step counts its response tokens (the targets): they are what a task finetune pays for; gptkit
computes the output head at those positions only, transformers at every position.
"""

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.bench_train import BETAS, LR, WEIGHT_DECAY, choose_dtype, default_hf_dtypes, hf_optimizer, short  # noqa: E402
from gptkit import objectives  # noqa: E402
from gptkit.data import ExampleBatches  # noqa: E402
from gptkit.prepare import prepare  # noqa: E402
from gptkit.tokenizer import EOT_ID  # noqa: E402

DATES = Path(__file__).resolve().parents[1] / "data" / "dates"


def hf_batch(data: ExampleBatches, indices: np.ndarray) -> dict[str, torch.Tensor]:
    """What DataCollatorForSeq2Seq gives a GPT-2 Trainer: whole examples right-padded, -100 labels."""
    ex, lengths = data.examples, data.lengths[indices]
    width = int(lengths.max())
    ids = torch.full((len(indices), width), EOT_ID)
    labels = torch.full((len(indices), width), -100)
    attention = torch.zeros((len(indices), width), dtype=torch.long)
    for row, (i, n) in enumerate(zip(indices, lengths, strict=True)):
        start = ex.offsets[i]
        tokens = torch.from_numpy(ex.tokens[start : start + n].astype(np.int64))
        ids[row, :n], attention[row, :n] = tokens, 1
        labels[row, :n] = torch.where(torch.from_numpy(ex.mask[start : start + n] == 1), tokens, -100)
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_model_args(parser)
    parser.add_argument("--batch_size", type=int, default=16, help="examples per step (config/finetune_task.py's)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--hf_dtypes", default="", help="comma-separated; default float32 (+ bfloat16, see above)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per contender")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per contender first")
    args = parser.parse_args(argv)
    device = common.setup(args)
    dtype, why = choose_dtype(args.dtype, device.type)
    hf_dtypes = [getattr(torch, d) for d in args.hf_dtypes.split(",") if d] or default_hf_dtypes(device, dtype)

    tmp = tempfile.TemporaryDirectory()
    data_dir = Path(tmp.name) / "dates"
    prepare(DATES / "train.jsonl", data_dir, val=DATES / "val.jsonl", progress=False)
    data = ExampleBatches(data_dir, "train", args.batch_size, args.block_size, device, seed=args.seed)
    steps = [data.draw_examples(args.batch_size) for _ in range(args.steps + args.warmup)]
    ours_batches = [data.batch(i) for i in steps]
    hf_batches = [{k: v.to(device) for k, v in hf_batch(data, i).items()} for i in steps]
    targets = [data.num_targets(i) for i in steps]

    ours, hf = common.twin_models(args)
    ours.train(), hf.train()
    with torch.no_grad():
        ours_loss = (ours(*ours_batches[0], reduction="sum")[1] / targets[0]).item()
        hf_loss = hf(**hf_batches[0]).loss.item()
    if abs(ours_loss - hf_loss) > 1e-4:
        raise SystemExit(f"the two models disagree before training: loss {ours_loss:.6f} vs {hf_loss:.6f}")
    opt_ours = ours.configure_optimizers(WEIGHT_DECAY, LR, BETAS, device.type)
    opt_hf = hf_optimizer(hf, "fused", device.type)

    def stepper(opt, loss_of, step_dtype):
        on = itertools.cycle(range(len(steps)))  # each contender goes through the same batches in order
        return common.training_step(opt, lambda: loss_of(next(on)), step_dtype, device.type)

    objective = objectives.LanguageModelling(unpad=True)
    contenders = {"gptkit": stepper(opt_ours, lambda k: objective(ours, ours_batches[k]).loss / targets[k], dtype)}
    for d in hf_dtypes:
        contenders[f"transformers {short(d)}"] = stepper(opt_hf, lambda k: hf(**hf_batches[k]).loss, d)

    padded = sum(b["input_ids"].numel() for b in hf_batches)
    print(f"machine: {common.describe_machine(device)}")
    print(f"model: {common.model_line(ours, args)}; {args.batch_size} dates examples a step on {device.type}")
    print(
        f"response tokens {sum(targets) / len(steps):.1f} a step of {padded / len(steps):.1f} padded positions "
        f"({sum(targets) / padded:.0%}); gptkit dtype: {why}"
    )
    times = common.time_interleaved(contenders, args.steps, args.warmup, device)
    timed = sum(targets[args.warmup :])  # every contender timed the same steps: all but the warm-up's
    tps = {}
    for name, t in times.items():
        tps[name] = timed / sum(t)
        print(f"{name:>18}: {tps[name]:9.1f} response tokens/s  step {common.median(t):.3f} s (min {min(t):.3f})")
    best_hf = max((n for n in tps if n.startswith("transformers")), key=tps.get)
    print(f"ratio gptkit/transformers: {tps['gptkit'] / tps[best_hf]:.2f}x response tokens/s (against {best_hf})")
    tmp.cleanup()


if __name__ == "__main__":
    main()
