"""A DPO step on the shipped `dates_preference` pairs: gptkit vs a plain transformers implementation, in pairs/s.

    python benchmarks/bench_dpo.py                        # GPT-2 124M shapes, 8 pairs a step, on CPU

Both start from the same random weights (checked: equal log-probabilities of the first batch) and
run interleaved in one process, fp32, fused AdamW with the same settings. gptkit trains as
`gptkit.train` does on a preference dataset: `PairBatches` (chosen and rejected rows in one
pass, logits only at response positions) and the `Preference` objective, with the reference's
log-probabilities computed once before training (`precompute`, the default for a full finetune;
its one-time cost is printed, per pair, beside the step). transformers gets what a from-scratch
DPO (LLMs-from-scratch's, TRL's without precomputing) does: a policy `GPT2LMHeadModel` and a
frozen copy as the reference, chosen and rejected padded together in one batch, labels -100 on
the prompt and the padding, log-probabilities from the full logits.
"""

import argparse
import contextlib
import copy
import itertools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.bench_train import BETAS, LR, WEIGHT_DECAY, hf_optimizer  # noqa: E402
from gptkit.data import PairBatches  # noqa: E402
from gptkit.objectives import Preference, reference_logps, sequence_logps  # noqa: E402
from gptkit.prepare import prepare  # noqa: E402
from gptkit.tokenizer import EOT_ID  # noqa: E402

PAIRS = Path(__file__).resolve().parents[1] / "data" / "dates_preference"
BETA = 0.1


def hf_batch(data: PairBatches, indices: np.ndarray) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows, prompt + response right-padded, labels -100 off the responses."""
    rows = []
    for part in (1, 2):
        for i in indices:
            prompt = data.tokens[data.offsets[3 * i] : data.offsets[3 * i + 1]].astype(np.int64)
            response = data.tokens[data.offsets[3 * i + part] : data.offsets[3 * i + part + 1]].astype(np.int64)
            rows.append((prompt, response))
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((len(rows), width), EOT_ID)
    labels = torch.full((len(rows), width), -100)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for k, (p, r) in enumerate(rows):
        n = len(p) + len(r)
        ids[k, :n] = torch.from_numpy(np.concatenate([p, r]))
        attention[k, :n] = 1
        labels[k, len(p) : n] = torch.from_numpy(r)
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def hf_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    picked = logits.log_softmax(-1).gather(2, labels.clamp(min=0)[..., None]).squeeze(-1)
    return (picked * mask).sum(-1)


def hf_dpo_loss(policy, reference, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        ref = hf_logps(reference, batch)
    chosen, rejected = (BETA * (hf_logps(policy, batch) - ref)).chunk(2)
    return -F.logsigmoid(chosen - rejected).mean()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_model_args(parser)
    parser.add_argument("--batch_size", type=int, default=8, help="pairs per step")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per contender")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per contender first")
    args = parser.parse_args(argv)
    device = common.setup(args)

    tmp = tempfile.TemporaryDirectory()
    data_dir = Path(tmp.name) / "pairs"
    prepare(PAIRS / "train.jsonl", data_dir, val=PAIRS / "val.jsonl", progress=False)
    # The 200 pairs of the val split: the reference is precomputed over all of them in little time.
    data = PairBatches(data_dir, "val", args.batch_size, args.block_size, device, seed=args.seed)
    steps = [data.draw_examples(args.batch_size) for _ in range(args.steps + args.warmup)]

    ours, hf = common.twin_models(args)
    reference = copy.deepcopy(hf).eval().requires_grad_(False)
    hf_batches = [{k: v.to(device) for k, v in hf_batch(data, i).items()} for i in steps]
    t0 = time.perf_counter()
    data.set_reference(reference_logps(ours, data, False, contextlib.nullcontext))
    precompute = (time.perf_counter() - t0) / data.num_examples
    ours_batches = [data.batch(i) for i in steps]
    ours.train(), hf.train()
    with torch.no_grad():
        a, b = sequence_logps(ours, *ours_batches[0][:2]), hf_logps(hf, hf_batches[0])
    if (a - b).abs().max() > 1e-3:
        raise SystemExit(f"the two models disagree before training: {a.tolist()} vs {b.tolist()}")
    objective = Preference(BETA)
    opt_ours = ours.configure_optimizers(WEIGHT_DECAY, LR, BETAS, device.type)
    opt_hf = hf_optimizer(hf, "fused", device.type)

    def stepper(opt, loss_of):
        on = itertools.cycle(range(len(steps)))  # each contender goes through the same batches in order
        return common.training_step(opt, lambda: loss_of(next(on)), torch.float32, device.type)

    contenders = {
        "gptkit": stepper(opt_ours, lambda k: objective(ours, ours_batches[k]).loss / args.batch_size),
        "transformers": stepper(opt_hf, lambda k: hf_dpo_loss(hf, reference, hf_batches[k])),
    }
    print(f"machine: {common.describe_machine(device)}")
    print(f"model: {common.model_line(ours, args)}; {args.batch_size} dates_preference pairs a step on {device.type}")
    print(f"gptkit's reference, precomputed once before training: {precompute * 1e3:.1f} ms a pair")
    times = common.time_interleaved(contenders, args.steps, args.warmup, device)
    pps = {}
    for name, t in times.items():
        pps[name] = args.batch_size * len(t) / sum(t)
        print(f"{name:>14}: {pps[name]:8.2f} pairs/s  step {common.median(t):.3f} s (min {min(t):.3f})")
    print(f"ratio gptkit/transformers: {pps['gptkit'] / pps['transformers']:.2f}x pairs/s")
    tmp.cleanup()


if __name__ == "__main__":
    main()
