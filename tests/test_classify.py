"""A trained classifier at work: gptkit.evaluate on a classification run, gptkit.classify, and their bad input."""

import json
from collections import Counter

import pytest
import torch
from test_classification import BASE, LORA_BASE, colours  # noqa: F401  (the labelled dataset fixture)

import tiny
from conftest import assert_user_error, run_cli_in_process
from gptkit import checkpoint
from gptkit.evaluate import EvaluateConfig, evaluate
from gptkit.tokenizer import get_encoding
from gptkit.train import train


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, colours):  # noqa: F811
    out = tmp_path_factory.mktemp("cls-run")
    settings = BASE | dict(data_root=str(colours), max_iters=30, eval_interval=10, batch_size=8, eval_iters=10)
    train(tiny.tiny_cfg(out, settings))
    return out


def recomputed(records: list[dict], labels: list[str], majority: str) -> dict:
    """Accuracy, per-label precision/recall/F1 and macro-F1 counted from the records alone."""
    pairs = Counter((r["label"], r["predicted"]) for r in records)
    out = {"accuracy": sum(n for (t, p), n in pairs.items() if t == p) / len(records), "f1": {}}
    for name in labels:
        tp = pairs[(name, name)]
        said = sum(n for (t, p), n in pairs.items() if p == name)
        real = sum(n for (t, p), n in pairs.items() if t == name)
        precision, recall = (tp / said if said else 0.0), (tp / real if real else 0.0)
        out["f1"][name] = 2 * precision * recall / (precision + recall) if tp else 0.0
    out["macro_f1"] = sum(out["f1"].values()) / len(labels)
    out["majority_baseline"] = sum(r["label"] == majority for r in records) / len(records)
    return out


def test_evaluate_writes_records_whose_figures_it_reports(classifier, colours):  # noqa: F811
    result = run_cli_in_process("-m", "gptkit.evaluate", str(classifier), "--split=test", "--device=cpu")
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and "macro-F1" in result.stdout and "majority baseline" in result.stdout
    records = [json.loads(line) for line in (classifier / "eval_test.jsonl").read_text().splitlines()]
    meta = json.loads((colours / "colours" / "meta.json").read_text())
    assert len(records) == meta["splits"]["test"]["examples"]
    labels = meta["labels"]
    for r in records:
        assert set(r) == {"text", "label", "predicted", "probabilities"} and list(r["probabilities"]) == labels
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert r["predicted"] == max(r["probabilities"], key=r["probabilities"].get)
    summary = evaluate(EvaluateConfig(out_dir=str(classifier), split="test", device="cpu"))
    train_counts = meta["splits"]["train"]["per_label"]
    majority = max(labels, key=lambda name: (train_counts[name], -labels.index(name)))
    again = recomputed(records, labels, majority)
    assert summary["accuracy"] == pytest.approx(again["accuracy"])
    assert summary["macro_f1"] == pytest.approx(again["macro_f1"])
    assert summary["majority_baseline"] == pytest.approx(again["majority_baseline"])
    assert {k: v["f1"] for k, v in summary["per_label"].items()} == pytest.approx(again["f1"])
    assert f"accuracy {again['accuracy']:.1%}" in result.stdout
    assert (classifier / "confusion_test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_text_gets_the_label_and_probability_it_gets_alone(classifier):
    records = [json.loads(line) for line in (classifier / "eval_test.jsonl").read_text().splitlines()]
    model = checkpoint.model_from_checkpoint(checkpoint.load(classifier / checkpoint.BEST)).eval()
    labels = checkpoint.load(classifier / checkpoint.BEST).labels
    for r in records[:4]:
        ids = torch.tensor([get_encoding().encode_ordinary(r["text"])])
        with torch.no_grad():
            alone = model(ids, last=torch.tensor([ids.size(1) - 1]))[0].softmax(-1)[0]
        assert [r["probabilities"][name] for name in labels] == pytest.approx(alone.tolist(), abs=1e-6)
    texts = [r["text"] for r in records[:3]]
    result = run_cli_in_process("-m", "gptkit.classify", str(classifier), *texts)
    assert result.returncode == 0, result.stderr
    for line, r in zip(result.stdout.splitlines(), records[:3], strict=True):
        label, p, text = line.split("\t")
        assert (label, text) == (r["predicted"], r["text"])
        assert float(p) == pytest.approx(max(r["probabilities"].values()), abs=1e-4)
    single = run_cli_in_process("-m", "gptkit.classify", str(classifier), texts[0])
    assert single.stdout.strip() == result.stdout.splitlines()[0].rsplit("\t", 1)[0]


def test_before_finetuning_scores_an_untrained_head(tmp_path, colours, tiny_hf_dir):  # noqa: F811
    cfg = EvaluateConfig(
        out_dir=str(tmp_path / "before"), init_from=str(tiny_hf_dir), dataset="colours", data_root=str(colours)
    )
    summary = evaluate(cfg)
    assert summary["examples"] == 24 and 0 <= summary["accuracy"] <= 1
    assert (tmp_path / "before" / "eval_val.jsonl").is_file()


def test_classifier_commands_on_the_wrong_kind_of_run(tmp_path, classifier, colours, shakespeare_bins):  # noqa: F811
    lm = tmp_path / "lm"
    train(tiny.tiny_cfg(lm, max_iters=1, eval_iters=1))
    assert_user_error(
        run_cli_in_process("-m", "gptkit.classify", str(lm), "some text"), f"{lm} is a language model, not a classifier"
    )
    result = run_cli_in_process(
        "-m", "gptkit.evaluate", str(lm), "--dataset=colours", f"--data_root={colours}", "--device=cpu"
    )
    assert_user_error(result, "is a language model, not a classifier")
    result = run_cli_in_process("-m", "gptkit.sample", f"--out_dir={classifier}", "--device=cpu")
    assert_user_error(result, f"{classifier} is a classifier: it labels texts")
    assert_user_error(run_cli_in_process("-m", "gptkit.classify", str(classifier)), "give a text to classify")
    assert not (lm / "eval_val.jsonl").exists()


# --- export: where Hugging Face users look for a classifier -----------------------------------
def pipeline_probabilities(dest, texts: list[str]) -> list[dict]:
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(dest), top_k=None, device="cpu")
    return [{d["label"]: d["score"] for d in row} for row in classifier(texts, batch_size=4)]  # padded batches


def gptkit_probabilities(run, texts: list[str]) -> list[dict]:
    from gptkit.classify import load_classifier, probabilities

    model, labels = load_classifier(run)
    probs = probabilities(model.eval(), [get_encoding().encode_ordinary(t) for t in texts], batch_size=3)
    return [dict(zip(labels, p.tolist(), strict=True)) for p in probs]


def assert_same_answers(ours: list[dict], theirs: list[dict]) -> None:
    for a, b in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys() and max(a, key=a.get) == max(b, key=b.get)
        assert [a[k] for k in a] == pytest.approx([b[k] for k in a], abs=1e-5)


def texts_of(root, n: int = 10) -> list[str]:
    lines = (root / "c.jsonl").read_text().splitlines()[:n]
    return [json.loads(line)["text"] for line in lines]


def test_export_gives_a_pipeline_with_gptkits_labels_and_probabilities(tmp_path, classifier, colours):  # noqa: F811
    dest = tmp_path / "hf"
    result = run_cli_in_process("-m", "gptkit.export", str(classifier), str(dest))
    assert result.returncode == 0, result.stderr
    config = json.loads((dest / "config.json").read_text())
    assert config["architectures"] == ["GPT2ForSequenceClassification"] and config["pad_token_id"] == 50256
    assert config["id2label"] == {"0": "blue", "1": "green", "2": "red"}
    texts = texts_of(colours)
    assert len({len(get_encoding().encode_ordinary(t)) for t in texts}) > 2  # batches really padded
    assert_same_answers(gptkit_probabilities(classifier, texts), pipeline_probabilities(dest, texts))
    assert "pipeline_tag: text-classification" in (dest / "README.md").read_text()


def test_a_lora_classifier_exports_merged_and_as_peft_adapters(tmp_path, classifier, colours, tiny_hf_dir):  # noqa: F811
    from peft import PeftModel
    from transformers import AutoTokenizer, GPT2ForSequenceClassification

    run = tmp_path / "lora"
    settings = LORA_BASE | dict(data_root=str(colours), init_from=str(tiny_hf_dir), lora_rank=2, max_iters=4)
    train(tiny.tiny_cfg(run, settings, learning_rate=1e-2))
    texts = texts_of(colours)
    ours = gptkit_probabilities(run, texts)
    merged, adapters = tmp_path / "merged", tmp_path / "adapters"
    assert run_cli_in_process("-m", "gptkit.export", str(run), str(merged)).returncode == 0
    assert_same_answers(ours, pipeline_probabilities(merged, texts))
    assert run_cli_in_process("-m", "gptkit.export", str(run), str(adapters), "--adapters").returncode == 0
    config = json.loads((adapters / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and config["modules_to_save"] == ["score"]
    base = GPT2ForSequenceClassification.from_pretrained(tiny_hf_dir, num_labels=3, pad_token_id=50256)
    model = PeftModel.from_pretrained(base, adapters).eval()
    tok = AutoTokenizer.from_pretrained(adapters)
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = model(**batch).logits.softmax(-1)
    labels = ["blue", "green", "red"]
    assert_same_answers(ours, [dict(zip(labels, p.tolist(), strict=True)) for p in probs])
    # and gptkit reads the adapter back: evaluate --init_from=ADAPTER_DIR gives the run's probabilities
    data = ["--dataset=colours", f"--data_root={colours}", "--device=cpu", "--dtype=float32"]
    for where, source in (
        ("run", [str(run)]),
        ("adapter", [f"--init_from={adapters}", f"--out_dir={tmp_path / 'ev'}"]),
    ):
        result = run_cli_in_process("-m", "gptkit.evaluate", *source, *data)
        assert result.returncode == 0, (where, result.stderr[-2000:])
    scored = [json.loads(line) for line in (run / "eval_val.jsonl").read_text().splitlines()]
    again = [json.loads(line) for line in (tmp_path / "ev" / "eval_val.jsonl").read_text().splitlines()]
    assert len(scored) == 24 and [r["predicted"] for r in scored] == [r["predicted"] for r in again]
    assert_same_answers([r["probabilities"] for r in scored], [r["probabilities"] for r in again])
    # train continues it as a LoRA run; its adapters choose what trains, not --train_layers
    args = [
        f"--init_from={adapters}",
        *data[:2],
        "--max_iters=1",
        "--eval_iters=2",
        "--batch_size=4",
        "--block_size=64",
    ]
    result = run_cli_in_process("-m", "gptkit.train", *args, f"--out_dir={tmp_path / 'more'}")
    assert result.returncode == 0 and "parameters train (LoRA adapters and head" in result.stdout, result.stderr[-2000:]
    result = run_cli_in_process("-m", "gptkit.train", *args, "--train_layers=head", f"--out_dir={tmp_path / 'no'}")
    assert_user_error(result, "train_layers=head and init_from=", "drop --train_layers")
    assert not (tmp_path / "no").exists()
