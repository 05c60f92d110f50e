"""Evaluation by generation (gptkit.evaluate) and sampling in a run's template (gptkit.sample --prompt)."""

import json
import string

import pytest
import torch

import tiny
from conftest import assert_user_error, run_cli, run_cli_in_process
from gptkit.errors import GptkitError
from gptkit.evaluate import greedy_responses, score, summarize
from gptkit.model import GPT
from gptkit.prompts import ALPACA_NO_INPUT, ALPACA_WITH_INPUT
from gptkit.sources import load_model
from gptkit.tokenizer import EOT_ID, get_encoding
from gptkit.train import train

ROWS = [{"prompt": f"Is {i} even?", "completion": " it is even" if i % 2 == 0 else " it is odd"} for i in range(48)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    """A tiny run that learned to answer " it is even": exact match 1/2 and F1 2/3 on odd numbers."""
    from gptkit.prepare import prepare

    root = tmp_path_factory.mktemp("parity")
    prepare(
        write_jsonl(root / "train.jsonl", ROWS[:40]),
        root / "parity",
        val=write_jsonl(root / "val.jsonl", ROWS[40:]),
        progress=False,
    )
    settings = dict(dataset="parity", data_root=str(root), max_iters=30, eval_interval=30, learning_rate=1e-2)
    train(tiny.tiny_cfg(root / "run", tiny.TINY, batch_size=4, decay_lr=False, dropout=0.0, **settings))
    return root


# An independent SQuAD-style scorer: the same rules, written another way.
def normalized_words(text: str) -> list[str]:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return [w for w in text.split() if w not in ("a", "an", "the")]


def reference_f1(generated: str, reference: str) -> float:
    got, want = normalized_words(generated), normalized_words(reference)
    if not got and not want:
        return 1.0
    common = 0
    remaining = list(want)
    for w in got:
        if w in remaining:
            remaining.remove(w)
            common += 1
    return 0.0 if common == 0 else 2 * common / (len(got) + len(want))


def test_scores_follow_squad():
    assert score("  it is even \n", "it is even") == {"exact_match": 1.0, "f1": 1.0}
    assert score("The cat, sat.", "cat sat") == {"exact_match": 0.0, "f1": 1.0}  # F1 normalizes, EM only trims
    assert score(" it is even", " it is odd")["f1"] == pytest.approx(2 / 3)
    assert score("", "") == {"exact_match": 1.0, "f1": 1.0}
    assert score("the", "an") == {"exact_match": 0.0, "f1": 1.0}  # both empty once articles go
    assert score("", "no")["f1"] == 0.0 and score("yes yes", "yes")["f1"] == pytest.approx(2 / 3)
    for got, want in [("a b c d", "b d e"), ("x, y!", "Y x"), ("one two two", "two two three")]:
        assert score(got, want)["f1"] == pytest.approx(reference_f1(got, want))
    assert summarize([score("a", "a"), score("b", "c")]) == {"exact_match": 0.5, "f1": 0.5, "examples": 2}


def test_evaluate_cli_writes_records_whose_scores_recompute(parity):
    run = parity / "run"
    result = run_cli("-m", "gptkit.evaluate", str(run), "--batch_size=3", "--max_new_tokens=8", "--device=cpu")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run / "eval_val.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == [r["prompt"] for r in ROWS[40:]]
    assert [r["reference"] for r in records] == [r["completion"] for r in ROWS[40:]]
    for r in records:
        assert set(r) == {"prompt", "reference", "generated", "exact_match", "f1"}
        assert r["exact_match"] == float(r["generated"].strip() == r["reference"].strip())
        assert r["f1"] == pytest.approx(reference_f1(r["generated"], r["reference"]))
        assert "<|endoftext|>" not in r["generated"]
    em = sum(r["exact_match"] for r in records) / len(records)
    f1 = sum(r["f1"] for r in records) / len(records)
    assert 0 < f1 and f"exact match {em:.1%}, F1 {f1:.1%} over 8 examples" in result.stdout
    # batches of 3 prompts: each answer is what the model generates for that prompt alone
    model = load_model("resume", str(run)).eval()
    enc = get_encoding()
    for r in records[:3]:
        ids = enc.encode(r["prompt"])
        row = model.generate(torch.tensor([ids]), 8, temperature=0)[0, len(ids) :].tolist()
        assert enc.decode(row[: row.index(EOT_ID)] if EOT_ID in row else row) == r["generated"]


def test_evaluate_a_model_never_finetuned(parity, tiny_hf_dir, tmp_path):
    dest = tmp_path / "before"
    args = [f"--init_from={tiny_hf_dir}", "--dataset=parity", f"--data_root={parity}", f"--out_dir={dest}"]
    result = run_cli_in_process(
        "-m", "gptkit.evaluate", *args, "--num_examples=3", "--max_new_tokens=4", "--device=cpu"
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (dest / "eval_val.jsonl").read_text().splitlines()]
    assert [r["reference"] for r in records] == [r["completion"] for r in ROWS[40:43]]
    model = GPT.from_pretrained(str(tiny_hf_dir)).eval()
    assert [r["generated"] for r in records] == greedy_responses(model, [r["prompt"] for r in ROWS[40:43]], 4)
    for r in records:
        assert r["f1"] == pytest.approx(reference_f1(r["generated"], r["reference"]))


@pytest.fixture(scope="module")
def stream_run(tmp_path_factory):
    """A run trained on a text stream: config.json and a checkpoint, 1 iteration."""
    from gptkit.prepare import prepare

    root = tmp_path_factory.mktemp("stream")
    (root / "text.txt").write_text("to be or not to be, that is the question. " * 200)
    prepare(root / "text.txt", root / "words", block_size=32, progress=False)
    train(tiny.tiny_cfg(root / "run", tiny.TINY, dataset="words", data_root=str(root), max_iters=1))
    return root / "run"


def test_evaluate_bad_input_is_one_line_and_writes_nothing(parity, stream_run, tmp_path):
    from gptkit import evaluate

    run = parity / "run"
    before = sorted(p.name for p in run.iterdir())
    assert_user_error(run_cli_in_process("-m", "gptkit.evaluate", str(stream_run), "--device=cpu"), "is a text stream")
    cases = [
        ([str(run), "--split=test"], "no test split"),
        ([str(tmp_path / "nowhere")], "not a folder"),
        ([str(tmp_path)], "holds no ckpt.pt"),
        (["--init_from=gpt2", f"--out_dir={tmp_path / 'dest'}"], "needs --dataset"),
        ([str(run), "--max_new_tokens=0"], "max_new_tokens must be at least 1"),
        ([str(run), str(stream_run)], "give one run folder"),
    ]
    for args, fragment in cases:
        with pytest.raises(GptkitError, match=fragment):
            evaluate.main([*args, "--device=cpu"])
    assert sorted(p.name for p in run.iterdir()) == before
    assert not list(tmp_path.rglob("eval_*.jsonl")) and not (tmp_path / "dest").exists()
    assert not list(stream_run.glob("eval_*.jsonl"))


@pytest.fixture(scope="module")
def alpaca_run(tmp_path_factory):
    """A run on an Alpaca-format dataset, trained 2 iterations: enough to sample from."""
    from gptkit.prepare import prepare

    root = tmp_path_factory.mktemp("alpaca")
    rows = [{"instruction": f"Say {i}.", "output": f"{i}"} for i in range(12)]
    prepare(write_jsonl(root / "train.jsonl", rows), root / "say", val_fraction=0.25, progress=False)
    cfg = tiny.tiny_cfg(root / "run", tiny.TINY, dataset="say", data_root=str(root), block_size=64, max_iters=2)
    train(cfg)
    return root / "run"


def test_sample_prompt_wraps_text_in_the_run_template(alpaca_run):
    args = ["-m", "gptkit.sample", f"--out_dir={alpaca_run}", "--prompt=Say 7.", "--temperature=0"]
    result = run_cli_in_process(*args, "--num_samples=1", "--max_new_tokens=6", "--device=cpu")
    assert result.returncode == 0, result.stderr
    text = result.stdout.split("\n---------------\n")[0]
    templated = ALPACA_NO_INPUT.format(instruction="Say 7.")
    assert text.startswith(templated)
    model = load_model("resume", str(alpaca_run)).eval()
    assert text == templated + greedy_responses(model, [templated], 6)[0]  # and it stopped at <|endoftext|>


def test_sample_prompt_takes_an_example_in_the_datasets_form(alpaca_run):
    """A JSON object fills the template's input section too; a response field is one line naming the fields."""
    example = '{"instruction": "Say 7.", "input": "the red cat"}'
    args = ["-m", "gptkit.sample", f"--out_dir={alpaca_run}", f"--prompt={example}", "--temperature=0"]
    result = run_cli_in_process(*args, "--num_samples=1", "--max_new_tokens=6", "--device=cpu")
    assert result.returncode == 0, result.stderr
    text = result.stdout.split("\n---------------\n")[0]
    templated = ALPACA_WITH_INPUT.format(instruction="Say 7.", input="the red cat")
    model = load_model("resume", str(alpaca_run)).eval()
    assert text == templated + greedy_responses(model, [templated], 6)[0]

    wrong = run_cli_in_process(*args[:3], '--prompt={"instruction": "Say 7.", "output": "7"}', "--device=cpu")
    assert_user_error(wrong, "--prompt: the alpaca template has no field 'output'", '"instruction"', '"input"')


def test_sample_prompt_bad_input(alpaca_run, stream_run):
    from gptkit import sample

    stream = run_cli_in_process("-m", "gptkit.sample", f"--out_dir={stream_run}", "--prompt=hi", "--device=cpu")
    assert_user_error(stream, "text stream", "--start")
    with pytest.raises(GptkitError, match="not both"):
        sample.main([f"--out_dir={alpaca_run}", "--prompt=Say 1.", "--start=x", "--device=cpu"])
    with pytest.raises(GptkitError, match="--prompt wraps TEXT"):
        sample.main(["--init_from=gpt2", "--prompt=hi", "--device=cpu"])
