"""A trained classifier at work: a label for a text, and scores on a held-out split.

    python -m gptkit.classify out-speakers "Now is the winter of our discontent"
    python -m gptkit.classify out-speakers --file lines.txt     # one text a line

prints each text's most likely label and its probability. `gptkit.evaluate OUT_DIR` on a
classification run comes here too (`evaluate_classifier`): accuracy, per-label precision, recall
and F1, macro-F1 and the majority-label baseline; `eval_SPLIT.jsonl` (text, label, predicted,
probabilities) and `confusion_SPLIT.png` go to OUT_DIR.

Texts are tokenized as `gptkit.prepare` tokenized the training texts (no `<|endoftext|>` added),
cut to the model's context, batched by length and right-padded: a text's label is the one it gets alone.
"""

import argparse
import io
import json
from pathlib import Path

import numpy as np
import torch

from gptkit import checkpoint, files, unpadding
from gptkit.data import open_labelled, read_meta
from gptkit.errors import GptkitError, run_cli
from gptkit.lora import merge_lora
from gptkit.model import GPT
from gptkit.sources import load_model
from gptkit.tokenizer import EOT_ID, get_encoding


def not_a_classifier(where) -> GptkitError:
    return GptkitError(
        f"{where} is a language model, not a classifier: train one on a classification dataset "
        "(python -m gptkit.prepare LABELLED.jsonl --name NAME, then --dataset=NAME), or use gptkit.sample"
    )


def load_classifier(out_dir: str | Path) -> tuple[GPT, list]:
    """A run's best classifier (LoRA folded in) and its label names, in the order of its outputs."""
    path = checkpoint.best_in(out_dir)
    ckpt = checkpoint.load(path)
    labels = ckpt.labels
    if not labels or not ckpt.model_args.get("n_labels"):
        raise not_a_classifier(out_dir)
    return merge_lora(checkpoint.model_from_checkpoint(ckpt, path)), labels


def untrained_classifier(init_from: str, labels: list, seed: int = 1337) -> GPT:
    """A pretrained model (`gpt2`, a HF directory, a peft adapter merged) with its own head, or a new,
    seeded one: the "before" of a finetune, or a classifier's adapter (task_type SEQ_CLS) exported elsewhere."""
    model = load_model(init_from)
    if model.score is None:
        torch.manual_seed(seed)
        model.add_classifier(len(labels))
    elif model.config.n_labels != len(labels):
        raise GptkitError(f"{init_from} has a head for {model.config.n_labels} labels, the dataset {len(labels)}")
    return model


@torch.no_grad()
def probabilities(model: GPT, texts: list[list[int]], batch_size: int = 16) -> np.ndarray:
    """(len(texts), n_labels) label probabilities of token-id texts: batched by length, right-padded."""
    if any(len(t) == 0 for t in texts):
        raise GptkitError("a text is empty: there is nothing to classify")
    device, block = next(model.parameters()).device, model.config.block_size
    texts = [t[:block] for t in texts]  # as training cuts them
    out = np.zeros((len(texts), model.config.n_labels), dtype=np.float64)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(texts[i]) for i in rows)
        x = torch.tensor([texts[i] + [EOT_ID] * (width - len(texts[i])) for i in rows], device=device)
        last = torch.tensor([len(texts[i]) - 1 for i in rows], device=device)
        real = unpadding.rows_to_compute(last + 1, width)  # the blocks compute the real tokens only
        out[rows] = model(x, last=last, rows=real)[0].float().softmax(-1).cpu().numpy()
    return out


def classify_texts(model: GPT, labels: list, texts: list[str], batch_size: int = 16) -> list[tuple[str, float]]:
    """(label, probability) of each text's most likely label."""
    enc = get_encoding()
    probs = probabilities(model, [enc.encode_ordinary(t) for t in texts], batch_size)
    return [(labels[int(p.argmax())], float(p.max())) for p in probs]


# --- scores -------------------------------------------------------------------------------------
def summarize(records: list[dict], labels: list, majority: str) -> dict:
    """Accuracy, per-label precision/recall/F1, macro-F1 and the accuracy of always saying `majority`."""
    truth = np.array([str(r["label"]) for r in records])
    guess = np.array([str(r["predicted"]) for r in records])
    per_label = {}
    for name in map(str, labels):
        tp = int(((guess == name) & (truth == name)).sum())
        precision = tp / max(1, int((guess == name).sum()))
        recall = tp / max(1, int((truth == name).sum()))
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int((truth == name).sum())}
    return {
        "examples": len(records),
        "accuracy": float((truth == guess).mean()),
        "macro_f1": float(np.mean([s["f1"] for s in per_label.values()])),
        "majority_label": str(majority),
        "majority_baseline": float((truth == str(majority)).mean()),
        "per_label": per_label,
    }


def confusion(records: list[dict], labels: list) -> np.ndarray:
    """Counts: row = the true label, column = the predicted one, in the order of `labels`."""
    index = {str(name): i for i, name in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for r in records:
        matrix[index[str(r["label"])], index[str(r["predicted"])]] += 1
    return matrix


def confusion_png(matrix: np.ndarray, labels: list, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display needed: a file
    import matplotlib.pyplot as plt

    size = 2 + 0.5 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), [str(n) for n in labels], rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), [str(n) for n in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true label")
    ax.set_title(title)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def evaluate_classifier(model: GPT, labels: list, data_dir: Path, split: str, out: Path, batch_size: int) -> dict:
    """Score `model` on a split of a classification dataset; writes eval_SPLIT.jsonl and confusion_SPLIT.png."""
    meta = read_meta(data_dir)
    if list(map(str, meta["labels"])) != list(map(str, labels)):
        raise GptkitError(f"the model's labels {labels[:10]} are not those of {data_dir} ({meta['labels'][:10]})")
    if split not in meta["splits"]:
        hint = " (prepare it with --test FILE or --test-fraction)" if split == "test" else ""
        raise GptkitError(f"{data_dir} has no {split} split, only {', '.join(meta['splits'])}{hint}")
    data, enc = open_labelled(data_dir, split), get_encoding()
    texts = [data.tokens[a:b].tolist() for a, b in zip(data.offsets[:-1], data.offsets[1:], strict=True)]
    probs = probabilities(model, texts, batch_size)
    records = [
        {
            "text": enc.decode(ids),
            "label": labels[int(y)],
            "predicted": labels[int(p.argmax())],
            "probabilities": {str(name): round(float(q), 6) for name, q in zip(labels, p, strict=True)},
        }
        for ids, y, p in zip(texts, data.labels, probs, strict=True)
    ]
    train_counts = meta["splits"]["train"]["per_label"]
    majority = next(name for name in labels if train_counts[str(name)] == max(train_counts.values()))
    summary = summarize(records, labels, majority)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    files.atomic_write(out / f"eval_{split}.jsonl", lambda f: f.write(text.encode()))
    png = confusion_png(
        confusion(records, labels), labels, f"{split} of {data_dir.name}: accuracy {summary['accuracy']:.1%}"
    )
    files.atomic_write(out / f"confusion_{split}.png", lambda f: f.write(png))
    return summary


def print_summary(summary: dict, where: str) -> None:
    print(
        f"{where}: accuracy {summary['accuracy']:.1%}, macro-F1 {summary['macro_f1']:.1%} over "
        f"{summary['examples']} examples (majority baseline {summary['majority_baseline']:.1%}: "
        f"always {summary['majority_label']})"
    )
    width = max(len(name) for name in summary["per_label"])
    print(f"{'label':<{width}}  precision  recall     F1  support")
    for name, s in summary["per_label"].items():
        print(f"{name:<{width}}  {s['precision']:9.1%} {s['recall']:7.1%} {s['f1']:6.1%} {s['support']:8,}")


# --- the command line ---------------------------------------------------------------------------
def read_lines(path: str) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise GptkitError(f"cannot read {path} ({type(e).__name__}): give a UTF-8 file, one text a line") from None
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise GptkitError(f"{path} holds no text: one text a line")
    return texts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gptkit.classify", description="Label texts with a trained classifier."
    )
    parser.add_argument("out_dir", help="a classification run's folder (its best checkpoint is used)")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--file", help="a UTF-8 file of texts, one a line")
    parser.add_argument("--batch_size", type=int, default=16, help="texts classified together")
    args = parser.parse_args(argv)
    texts = list(args.texts) + (read_lines(args.file) if args.file else [])
    if not texts or any(not t.strip() for t in texts):
        raise GptkitError('give a text to classify: python -m gptkit.classify OUT_DIR "some text" (or --file FILE)')
    model, labels = load_classifier(args.out_dir)
    model.eval()
    for text, (label, p) in zip(texts, classify_texts(model, labels, texts, args.batch_size), strict=True):
        print(f"{label}\t{p:.4f}" + (f"\t{text}" if len(texts) > 1 else ""))


if __name__ == "__main__":
    run_cli(main)
