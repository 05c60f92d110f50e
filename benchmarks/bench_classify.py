"""Classifier-finetuning throughput on the shipped `plays` task: gptkit vs transformers, in examples/s.

    python benchmarks/bench_classify.py                      # GPT-2 124M shapes, 16 speeches a step, on CPU

The same micro-batches of the same speeches (data/plays' training split, prepared into a temporary
folder, padded to each batch's longest) go to both models, which start from the same random weights,
head included (checked: equal loss before the first step), and train the same layers
(`--train_layers`, as `gptkit.train` freezes them: the last block, the final LayerNorm and the
head by default), interleaved in one process. gptkit trains as `gptkit.train` does on a
classification dataset: `LabelledBatches`, its objective with unpadding (`gptkit.unpadding`: the
blocks compute the real tokens only), the summed loss over the step's examples, the CPU kernels
`gptkit.train` applies, at `--dtype` (default `auto`); "gptkit padded" is the same model computing
every padded position, to show what unpadding gives. transformers gets
`GPT2ForSequenceClassification` (sdpa attention) with right padding, `attention_mask` and
`pad_token_id`, in each of `--hf_dtypes` (fp32, and bf16 autocast where the CPU has bf16
instructions); the ratio is against the fastest. Both use fused AdamW with
the same settings (benchmarks/bench_train.py). Neither computes a backward pass below its first
trained layer (autograd needs none); gptkit also computes its last block's query, attention output
and MLP at each text's last real token only, the one position its head reads.
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
from gptkit import cpu_kernels, objectives  # noqa: E402
from gptkit.data import LabelledBatches  # noqa: E402
from gptkit.prepare import prepare  # noqa: E402
from gptkit.tokenizer import EOT_ID  # noqa: E402

PLAYS = Path(__file__).resolve().parents[1] / "data" / "plays"
N_LABELS = 5


def twin_classifiers(args):
    """A random-weight gptkit classifier and a transformers GPT2ForSequenceClassification with the same weights."""
    from transformers import GPT2ForSequenceClassification
    from transformers.utils import logging

    from gptkit.export import hf_config, to_hf_state_dict
    from gptkit.model import GPT, GPTConfig

    logging.set_verbosity_error()
    config = GPTConfig(args.block_size, args.vocab_size, args.n_layer, args.n_head, args.n_embd, 0.0, True)
    ours = GPT(config)
    ours.add_classifier(N_LABELS)
    hf_cfg = hf_config(ours.config, [str(i) for i in range(N_LABELS)])
    hf_cfg._attn_implementation = "sdpa"
    hf = GPT2ForSequenceClassification(hf_cfg)
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    if args.device == "cpu":
        cpu_kernels.speed_up(ours, cpu_kernels.measure_routes())  # as gptkit.train does on a CPU
    return ours, hf


def freeze(model: torch.nn.Module, trained: list[torch.nn.Module]) -> int:
    for p in model.parameters():
        p.requires_grad_(False)
    for module in trained:
        for p in module.parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def trained_parts(ours, hf, layers: str) -> tuple[list, list]:
    if layers == "all":
        return [ours], [hf]
    if layers == "head":
        return [ours.score], [hf.score]
    return (
        [ours.score, ours.transformer.h[-1], ours.transformer.ln_f],
        [hf.score, hf.transformer.h[-1], hf.transformer.ln_f],
    )


def hf_batch(x: torch.Tensor, last: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    attention = (torch.arange(x.size(1), device=x.device) <= last[:, None]).long()
    return {"input_ids": x, "attention_mask": attention, "labels": labels}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_model_args(parser)
    parser.add_argument(
        "--batch_size", type=int, default=16, help="speeches per step (config/finetune_classifier.py's)"
    )
    parser.add_argument("--max_len", type=int, default=256, help="longer speeches are cut (the config's block_size)")
    parser.add_argument("--train_layers", default="last_block", choices=["all", "last_block", "head"])
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--hf_dtypes", default="", help="comma-separated; default float32 (+ bfloat16, see above)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per contender")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per contender first")
    args = parser.parse_args(argv)
    device = common.setup(args)
    dtype, why = choose_dtype(args.dtype, device.type)
    hf_dtypes = [getattr(torch, d) for d in args.hf_dtypes.split(",") if d] or default_hf_dtypes(device, dtype)

    tmp = tempfile.TemporaryDirectory()
    data_dir = Path(tmp.name) / "plays"
    prepare(PLAYS / "speeches.jsonl", data_dir, val_fraction=0.1, test_fraction=0.1)
    data = LabelledBatches(data_dir, "train", args.batch_size, min(args.max_len, args.block_size), device, args.seed)
    steps = [data.draw_examples(args.batch_size) for _ in range(args.steps + args.warmup)]
    steps = [s[np.argsort(data.lengths[s], kind="stable")] for s in steps]
    ours_batches = [data.batch(i) for i in steps]
    hf_batches = [hf_batch(*b) for b in ours_batches]

    ours, hf = twin_classifiers(args)
    ours, hf = ours.to(device).train(), hf.to(device).train()
    mine, theirs = trained_parts(ours, hf, args.train_layers)
    n_ours, n_hf = freeze(ours, mine), freeze(hf, theirs)
    assert n_ours == n_hf, (n_ours, n_hf)
    with torch.no_grad():
        ours_loss = (objectives.Classification(unpad=True)(ours, ours_batches[0]).loss / len(steps[0])).item()
        hf_loss = hf(**hf_batches[0]).loss.item()
    if abs(ours_loss - hf_loss) > 1e-4:
        raise SystemExit(f"the two models disagree before training: loss {ours_loss:.6f} vs {hf_loss:.6f}")
    opt_ours = ours.configure_optimizers(WEIGHT_DECAY, LR, BETAS, device.type)
    opt_hf = hf_optimizer(hf, "fused", device.type)
    assert hf.config.pad_token_id == EOT_ID

    def stepper(opt, loss_of, step_dtype):
        on = itertools.cycle(range(len(steps)))  # each contender goes through the same batches in order
        return common.training_step(opt, lambda: loss_of(next(on)), step_dtype, device.type)

    def ours_loss_of(objective):
        return lambda k: objective(ours, ours_batches[k]).loss / len(steps[k])

    contenders = {
        "gptkit": stepper(opt_ours, ours_loss_of(objectives.Classification(unpad=True)), dtype),
        "gptkit padded": stepper(opt_ours, ours_loss_of(objectives.Classification(unpad=False)), dtype),
    }
    for d in hf_dtypes:
        contenders[f"transformers {short(d)}"] = stepper(opt_hf, lambda k: hf(**hf_batches[k]).loss, d)

    padded = sum(b[0].numel() for b in ours_batches)
    real = sum(int(b[1].sum()) + len(b[1]) for b in ours_batches)
    print(f"machine: {common.describe_machine(device)}")
    print(f"model: {common.model_line(ours, args)}; {args.batch_size} speeches a step on {device.type}")
    print(
        f"train_layers={args.train_layers}: {n_ours:,} parameters train; {padded / len(steps):.1f} padded positions "
        f"a step (the longest speech of each batch), {real / padded:.0%} of them real tokens; gptkit dtype: {why}"
    )
    times = common.time_interleaved(contenders, args.steps, args.warmup, device)
    timed = sum(len(s) for s in steps[args.warmup :])
    eps = {}
    for name, t in times.items():
        eps[name] = timed / sum(t)
        print(f"{name:>18}: {eps[name]:9.2f} examples/s  step {common.median(t):.3f} s (min {min(t):.3f})")
    best_hf = max((n for n in eps if n.startswith("transformers")), key=eps.get)
    print(f"ratio gptkit/transformers: {eps['gptkit'] / eps[best_hf]:.2f}x examples/s (against {best_hf})")
    tmp.cleanup()


if __name__ == "__main__":
    main()
