"""Evaluation by generation: does the finetuned model give the right answers to held-out prompts?
(On a classification dataset: accuracy, per-label precision/recall/F1, macro-F1 and the majority
baseline, by `gptkit.classify.evaluate_classifier`.)

    python -m gptkit.evaluate out-dates                  # the run's val split
    python -m gptkit.evaluate out-dates --split=test --num_examples=100
    python -m gptkit.evaluate --init_from=gpt2 --dataset=dates --out_dir=out-gpt2-dates   # before finetuning

Each prompt of the split (already in the dataset's template) is continued greedily, in batches
with the KV cache, until `<|endoftext|>`; prompts of different lengths share a batch through left
padding, and give exactly the tokens each gives alone. Each response is scored against the
example's reference with exact match (whitespace-trimmed) and SQuAD's token-level F1. The records
go to OUT_DIR/eval_SPLIT.jsonl (prompt, reference, generated, exact_match, f1), the means to stdout.
"""

import json
import re
import string
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gptkit import checkpoint, choices, classify, cpu_kernels, files, lora, objectives
from gptkit.config import AT_LEAST_1, DTYPES, check_ranges, given_settings, parse_args, setting
from gptkit.data import PairBatches, dataset_kind, open_examples, read_meta
from gptkit.device import pick_dtype, resolve_device
from gptkit.errors import GptkitError, run_cli
from gptkit.generation import generate_padded, left_padded
from gptkit.model import GPT
from gptkit.sample import run_dataset
from gptkit.sources import load_model
from gptkit.tokenizer import EOT_ID, EOT_TOKEN, get_encoding


# --- generation ---------------------------------------------------------------------------------
@torch.no_grad()
def greedy_ids(model: GPT, prompts: list[list[int]], max_new_tokens: int = 32, batch_size: int = 16) -> list[list[int]]:
    """The greedy continuation of each prompt (token ids), up to and without `<|endoftext|>`.

    Prompts are batched by length (less padding) and left-padded; each one's tokens are those it
    gives alone (`gptkit.generation`). The answers come back in the prompts' order.
    """
    if any(len(p) == 0 for p in prompts):
        raise GptkitError("a prompt is empty: there is nothing to continue")
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        idx, pad = left_padded([prompts[i] for i in rows], EOT_ID, device)
        generated = generate_padded(model, idx, pad, max_new_tokens, temperature=0, stop_token=EOT_ID)
        for i, row in zip(rows, generated[:, idx.size(1) :].tolist(), strict=True):
            out[i] = row[: row.index(EOT_ID)] if EOT_ID in row else row
    return out


def greedy_responses(model: GPT, prompts: list[str], max_new_tokens: int = 32, batch_size: int = 16) -> list[str]:
    """The greedy response to each prompt (already-templated text), ended at `<|endoftext|>`."""
    enc = get_encoding()
    ids = [enc.encode(p, allowed_special={EOT_TOKEN}) for p in prompts]
    return [enc.decode(r) for r in greedy_ids(model, ids, max_new_tokens, batch_size)]


# --- scores -------------------------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """SQuAD's normalization: lowercase, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(generated: str, reference: str) -> float:
    """SQuAD's token-level F1: the overlap of the two bags of normalized words."""
    got, want = normalize_answer(generated).split(), normalize_answer(reference).split()
    if not got or not want:
        return float(got == want)  # both empty: a match; one empty: none
    same = sum((Counter(got) & Counter(want)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(got), same / len(want)
    return 2 * precision * recall / (precision + recall)


def score(generated: str, reference: str) -> dict:
    """{"exact_match": 1.0 or 0.0 (whitespace-trimmed), "f1": SQuAD's token F1}."""
    return {"exact_match": float(generated.strip() == reference.strip()), "f1": token_f1(generated, reference)}


def summarize(records: list[dict]) -> dict:
    """The mean exact match and F1 of scored records, and how many there are."""
    if not records:
        raise GptkitError("no examples were evaluated: check --num_examples and the split")
    n = len(records)
    return {
        "exact_match": sum(r["exact_match"] for r in records) / n,
        "f1": sum(r["f1"] for r in records) / n,
        "examples": n,
    }


# --- a split of an example dataset --------------------------------------------------------------
def check_split(data_dir: str | Path, split: str) -> None:
    """One line unless `data_dir` is an example dataset with the split `split`."""
    data_dir = Path(data_dir)
    if not (data_dir / "meta.json").is_file():
        raise GptkitError(f"no prepared dataset at {data_dir}: prepare it first (python -m gptkit.prepare ...)")
    if dataset_kind(data_dir) != "examples":
        raise GptkitError(
            f"{data_dir} is a text stream, with no prompts or reference answers: evaluation by generation needs "
            "an example dataset (python -m gptkit.prepare EXAMPLES.jsonl --name NAME); use gptkit.sample for text"
        )
    splits = list(read_meta(data_dir).get("splits", {}))
    if split not in splits:
        hint = " (prepare it with --test FILE or --test-fraction)" if split == "test" else ""
        raise GptkitError(f"{data_dir} has no {split} split, only {', '.join(splits)}{hint}")


def prompts_and_references(data_dir: str | Path, split: str, num_examples: int | None = None):
    """(prompt ids, reference ids) of the first `num_examples` examples of a split: the prompt is the
    example's opening tokens outside the response, the reference its first response without
    `<|endoftext|>`."""
    examples = open_examples(data_dir, split)
    n = len(examples.offsets) - 1 if num_examples is None else min(num_examples, len(examples.offsets) - 1)
    out = []
    for start, end in zip(examples.offsets[:n], examples.offsets[1 : n + 1], strict=True):
        tokens, mask = examples.tokens[start:end].tolist(), np.asarray(examples.mask[start:end])
        first = int(np.argmax(mask == 1))  # where the response starts
        stop = first + int(np.argmax(mask[first:] == 0)) if (mask[first:] == 0).any() else len(tokens)
        reference = tokens[first:stop]
        if reference and reference[-1] == EOT_ID:
            reference = reference[:-1]
        out.append((tokens[:first], reference))
    return out


def evaluate_split(
    model: GPT,
    data_dir: str | Path,
    split: str = "val",
    num_examples: int | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 16,
) -> list[dict]:
    """Generate the response to each prompt of a split and score it: one record per example."""
    check_split(data_dir, split)
    pairs = prompts_and_references(data_dir, split, num_examples)
    generated = greedy_ids(model, [p for p, _ in pairs], max_new_tokens, batch_size)
    enc, records = get_encoding(), []
    for (prompt, reference), answer in zip(pairs, generated, strict=True):
        ref_text, gen_text = enc.decode(reference), enc.decode(answer)
        records.append({"prompt": enc.decode(prompt), "reference": ref_text, "generated": gen_text})
        records[-1] |= score(gen_text, ref_text)
    return records


# --- the command line ---------------------------------------------------------------------------
@dataclass
class EvaluateConfig:
    out_dir: str = setting("", "the run to evaluate (or give it first); with --init_from, where the scores go")
    init_from: str = setting(
        "resume", "resume (the run's best checkpoint) | gpt2[-medium|-large|-xl] | a HF directory | a peft adapter dir"
    )
    dataset: str = setting("", "example dataset under data_root (default: the run's)")
    data_root: str = setting("data", "folder that holds the datasets (default: the run's)")
    split: str = setting("val", "the split to evaluate", ("val", "test", "train"))
    num_examples: int | None = setting(None, "evaluate the first N examples of the split (None: all)", AT_LEAST_1)
    max_new_tokens: int = setting(32, "longest response generated", AT_LEAST_1)
    batch_size: int = setting(16, "prompts generated together", AT_LEAST_1)
    device: str = setting("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    dtype: str = setting("auto", "auto, float32, bfloat16, float16", DTYPES)
    choices: str = setting(
        "", "a multiple-choice .jsonl (HellaSwag's ctx/endings/label, or prompt/choices/answer) to score by likelihood"
    )


def data_dir_of(cfg: EvaluateConfig) -> Path:
    """The dataset to evaluate on: --dataset/--data_root where given, else the run's."""
    given = given_settings(cfg)
    if cfg.init_from != "resume":
        if not cfg.dataset:
            raise GptkitError(f"--init_from={cfg.init_from} needs --dataset=NAME: the example dataset to score it on")
        return Path(cfg.data_root) / cfg.dataset
    trained = run_dataset(cfg.out_dir)
    root = Path(cfg.data_root) if "data_root" in given else trained.parent
    return root / (cfg.dataset or trained.name)


def evaluate(cfg: EvaluateConfig) -> dict:
    """Score a model on a split as `cfg` says; writes OUT_DIR/eval_SPLIT.jsonl, returns the summary."""
    check_ranges(cfg)
    if not cfg.out_dir:
        raise GptkitError("say where: python -m gptkit.evaluate OUT_DIR (a run), or --out_dir=DEST with --init_from")
    device = resolve_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device.type)
    if cfg.choices:
        return evaluate_choices(cfg, device, dtype)
    data_dir = data_dir_of(cfg)
    if (data_dir / "meta.json").is_file() and dataset_kind(data_dir) == "preference":
        return evaluate_pairs(cfg, data_dir, device, dtype)
    if dataset_kind(data_dir) == "classification":
        return evaluate_labels(cfg, data_dir, device, dtype)
    check_split(data_dir, cfg.split)
    model = load_model(cfg.init_from, cfg.out_dir).eval().to(device=device, dtype=dtype)
    if model.score is not None:
        raise GptkitError(
            f"{cfg.out_dir if cfg.init_from == 'resume' else cfg.init_from} is a classifier: evaluate it on its "
            "classification dataset (drop --dataset), or label texts with python -m gptkit.classify"
        )
    if device.type == "cpu":  # oneDNN matmuls where they measured faster on this CPU
        cpu_kernels.speed_up(model, cpu_kernels.measure_routes())
    out = files.check_writable_dir(cfg.out_dir, "--out_dir")  # once the model loaded: no empty folder left behind
    records = evaluate_split(model, data_dir, cfg.split, cfg.num_examples, cfg.max_new_tokens, cfg.batch_size)
    path = out / f"eval_{cfg.split}.jsonl"
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    files.atomic_write(path, lambda f: f.write(text.encode()))
    summary = summarize(records)
    print(
        f"{cfg.split} of {data_dir}: exact match {summary['exact_match']:.1%}, F1 {summary['f1']:.1%} "
        f"over {summary['examples']} examples -> {path}"
    )
    return summary


REFERENCE_FILE = "reference_logps.npz"  # gptkit.train's precomputed DPO reference, per split


def run_settings(out_dir: str) -> dict:
    path = Path(out_dir) / "config.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


@torch.no_grad()
def pair_scores(model: GPT, data: PairBatches, average: bool, stored: np.ndarray | None) -> list[tuple]:
    """(policy chosen, policy rejected, reference chosen, reference rejected) log-probabilities per
    pair; the reference is the LoRA model with adapters off, or `stored` (None: no reference)."""
    out = []
    for indices in data.eval_indices():
        x, y, _ = data.batch(indices)
        policy = objectives.sequence_logps(model, x, y, average).view(2, -1).T.tolist()
        if lora.has_lora(model):
            ref = objectives.AdaptersOff(model)(x, y, average).view(2, -1).T.tolist()
        else:
            ref = stored[indices].tolist() if stored is not None else [[None, None]] * len(indices)
        out += [(*p, *r) for p, r in zip(policy, ref, strict=True)]
    return out


def evaluate_pairs(cfg: EvaluateConfig, data_dir: Path, device: torch.device, dtype: torch.dtype) -> dict:
    """A preference split: the policy's own preference accuracy (chosen more likely than rejected)
    and, for a run, the reward accuracy against its DPO reference; records in OUT_DIR/eval_SPLIT.jsonl."""
    splits = read_meta(data_dir).get("splits", {})
    if cfg.split not in splits:
        raise GptkitError(f"{data_dir} has no {cfg.split} split, only {', '.join(splits)}")
    settings = run_settings(cfg.out_dir) if cfg.init_from == "resume" else {}
    if cfg.init_from == "resume":  # unmerged: a LoRA run's reference is its model with adapters off
        path = checkpoint.best_in(cfg.out_dir)
        model = checkpoint.model_from_checkpoint(checkpoint.load(path), path)
    else:
        model = load_model(cfg.init_from, cfg.out_dir)
    model = model.eval().to(device=device, dtype=dtype)
    stored = None
    if (Path(cfg.out_dir) / REFERENCE_FILE).is_file() and cfg.init_from == "resume":
        with np.load(Path(cfg.out_dir) / REFERENCE_FILE) as saved:
            stored = saved[cfg.split] if cfg.split in saved else None
    data = PairBatches(data_dir, cfg.split, cfg.batch_size, model.config.block_size, device)
    rows = pair_scores(model, data, bool(settings.get("dpo_average_logps")), stored)
    records = [
        {"policy_chosen": pc, "policy_rejected": pr, "ref_chosen": rc, "ref_rejected": rr}
        | {"policy_prefers_chosen": pc > pr}
        | ({"reward_margin": (pc - rc) - (pr - rr)} if rc is not None else {})
        for pc, pr, rc, rr in rows
    ]
    summary = {"preference_accuracy": float(np.mean([r["policy_prefers_chosen"] for r in records]))}
    if all("reward_margin" in r for r in records):
        summary["reward_accuracy"] = float(np.mean([r["reward_margin"] > 0 for r in records]))
    out = files.check_writable_dir(cfg.out_dir, "--out_dir")
    path = out / f"eval_{cfg.split}.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in records)
    files.atomic_write(path, lambda f: f.write(text.encode()))
    reward = f", reward accuracy {summary['reward_accuracy']:.1%}" if "reward_accuracy" in summary else ""
    print(
        f"{cfg.split} of {data_dir}: the policy prefers the chosen response in "
        f"{summary['preference_accuracy']:.1%} of {len(records)} pairs{reward} -> {path}"
    )
    return summary | {"pairs": len(records)}


def evaluate_choices(cfg: EvaluateConfig, device: torch.device, dtype: torch.dtype) -> dict:
    """Score the model on a multiple-choice file; writes OUT_DIR/choices_NAME.jsonl (one record a question)."""
    questions = choices.read_choices(cfg.choices)  # checked before a model loads or a file is written
    model = load_model(cfg.init_from, cfg.out_dir).eval().to(device=device, dtype=dtype)
    out = files.check_writable_dir(cfg.out_dir, "--out_dir")
    summary, records = choices.score_choices(model, questions, cfg.batch_size)
    path = out / f"choices_{Path(cfg.choices).stem}.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in records)
    files.atomic_write(path, lambda f: f.write(text.encode()))
    print(
        f"{cfg.choices}: acc {summary['acc']:.1%} (summed log-probability), acc_norm {summary['acc_norm']:.1%} "
        f"(mean per token) over {summary['questions']} questions -> {path}"
    )
    return summary


def evaluate_labels(cfg: EvaluateConfig, data_dir: Path, device, dtype) -> dict:
    """A classifier (the run's, or `--init_from` with a new head: the "before") on a split of `data_dir`."""
    if cfg.init_from == "resume":
        model, labels = classify.load_classifier(cfg.out_dir)
    else:
        labels = read_meta(data_dir)["labels"]
        model = classify.untrained_classifier(cfg.init_from, labels)
    model = model.eval().to(device=device, dtype=dtype)
    out = files.check_writable_dir(cfg.out_dir, "--out_dir")
    summary = classify.evaluate_classifier(model, labels, data_dir, cfg.split, out, cfg.batch_size)
    classify.print_summary(summary, f"{cfg.split} of {data_dir}")
    print(f"-> {out / f'eval_{cfg.split}.jsonl'}, {out / f'confusion_{cfg.split}.png'}")
    return summary


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--choices" in argv[:-1]:  # `--choices FILE` as well as `--choices=FILE`
        i = argv.index("--choices")
        argv = [*argv[:i], f"--choices={argv[i + 1]}", *argv[i + 2 :]]
    runs = [a for a in argv if not a.startswith("-")]  # OUT_DIR may come first, without --out_dir=
    if len(runs) > 1:
        raise GptkitError(f"give one run folder, not {len(runs)}: {' '.join(runs)}")
    options = [a for a in argv if a.startswith("-")] + [f"--out_dir={r}" for r in runs]
    evaluate(parse_args(EvaluateConfig, options, "python -m gptkit.evaluate [OUT_DIR]"))


if __name__ == "__main__":
    run_cli(main)
