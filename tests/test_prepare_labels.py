"""Labelled examples -> a classification dataset (gptkit.prepare_labels, through gptkit.prepare)."""

import json
import shutil

import numpy as np
import pytest

from conftest import assert_user_error, run_cli_in_process
from gptkit.data import LabelledBatches, open_labelled, read_meta
from gptkit.errors import GptkitError
from gptkit.prepare import prepare
from gptkit.tokenizer import get_encoding


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows(n_per_label: dict, text="text {i} of {label}") -> list[dict]:
    return [
        {"text": text.format(i=i, label=label), "label": label} for label, n in n_per_label.items() for i in range(n)
    ]


def test_jsonl_round_trips_texts_and_labels_with_stratified_splits(tmp_path):
    src = write_jsonl(tmp_path / "x.jsonl", rows({"spam": 30, "ham": 70, "eggs": 10}))
    meta = prepare(src, tmp_path / "x", val_fraction=0.2, test_fraction=0.1, seed=3)
    assert meta["kind"] == "classification" and meta["labels"] == ["eggs", "ham", "spam"]
    # stratified: every label gives round(n * fraction) to val and to test
    assert meta["splits"]["val"]["per_label"] == {"eggs": 2, "ham": 14, "spam": 6}
    assert meta["splits"]["test"]["per_label"] == {"eggs": 1, "ham": 7, "spam": 3}
    assert meta["splits"]["train"]["per_label"] == {"eggs": 7, "ham": 49, "spam": 21}
    enc, seen = get_encoding(), []
    for split in ("train", "val", "test"):
        data = open_labelled(tmp_path / "x", split)
        for i in range(len(data.labels)):
            ids = data.tokens[data.offsets[i] : data.offsets[i + 1]].tolist()
            text = enc.decode(ids)
            assert ids == enc.encode_ordinary(text)  # no <|endoftext|> added: what HF's tokenizer gives
            label = meta["labels"][int(data.labels[i])]
            assert text.endswith(f"of {label}")
            seen.append(text)
    assert sorted(seen) == sorted(r["text"] for r in rows({"spam": 30, "ham": 70, "eggs": 10}))
    again = prepare(src, tmp_path / "y", val_fraction=0.2, test_fraction=0.1, seed=3)
    assert again["splits"] == {s: c | {"source": str(src)} for s, c in meta["splits"].items()}
    assert (tmp_path / "x" / "val.labels.npy").read_bytes() == (tmp_path / "y" / "val.labels.npy").read_bytes()


def test_csv_and_tsv_with_integer_labels_and_files_per_split(tmp_path):
    (tmp_path / "train.csv").write_text('label,text\n1,"one, with a comma"\n0,zero\n1,uno\n0,nil\n')
    (tmp_path / "val.tsv").write_text("text\tlabel\nein\t1\n")
    meta = prepare(tmp_path / "train.csv", tmp_path / "d", val=tmp_path / "val.tsv")
    assert meta["labels"] == ["0", "1"]  # a table's labels are its strings
    data = open_labelled(tmp_path / "d", "train")
    assert get_encoding().decode(data.tokens[: data.offsets[1]].tolist()) == "one, with a comma"
    assert data.labels.tolist() == [1, 0, 1, 0]
    src = write_jsonl(tmp_path / "i.jsonl", rows({10: 5, 2: 5}, "number {i}"))
    assert prepare(src, tmp_path / "i", val_fraction=0.4)["labels"] == [2, 10]  # integers sort as numbers


def test_batches_are_padded_to_the_longest_and_long_texts_cut(tmp_path):
    src = write_jsonl(tmp_path / "x.jsonl", [{"text": "a " * n, "label": n % 2} for n in range(1, 21)])
    prepare(src, tmp_path / "x", val_fraction=0.2)
    data = LabelledBatches(tmp_path / "x", "train", batch_size=4, block_size=12)
    lengths = open_labelled(tmp_path / "x", "train").lengths
    assert data.num_cut == int((lengths > 12).sum()) > 0
    x, last, labels = data.batch(np.array([0, 1, 2]))
    assert x.shape == (3, min(12, int(lengths[:3].max())))  # the longest of these three, not block_size
    assert last.tolist() == [min(12, int(n)) - 1 for n in lengths[:3]]
    assert labels.tolist() == open_labelled(tmp_path / "x", "train").labels[:3].tolist()
    step = data.draw_step(micro_steps=2, rank=0, world_size=1)
    assert step.num_targets == 8 and [len(m) for m in step.micro_batches] == [4, 4]


GOOD = '{"text": "fine", "label": "a"}\n{"text": "also fine", "label": "b"}\n' * 5


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("x.jsonl", GOOD + '{"text": "no label"}\n', "x.jsonl line 11: no label"),
        ("x.jsonl", GOOD + '{"label": "a"}\n', "x.jsonl line 11: no text"),
        ("x.jsonl", GOOD + '{"text": "  ", "label": "a"}\n', "x.jsonl line 11: the text is empty"),
        ("x.jsonl", GOOD + '{"text": "t", "label": 1.5}\n', "line 11: the label 1.5 is not a string or an integer"),
        ("x.jsonl", GOOD + '{"text": "t", "label": 1}\n', "labels mix strings and integers"),
        ("x.jsonl", '{"text": "t", "label": "a"}\n' * 10, "the training split has a single label ('a')"),
        ("x.jsonl", GOOD + '{"prompt": "Q", "completion": "A"}\n', "line 11: has keys ['completion', 'prompt']"),
        ("x.jsonl", GOOD + '{"text": "t", "label": "a", "prompt": "Q"}\n', "one format per dataset"),
        ("x.jsonl", GOOD.encode() + b'{"text": "caf\xe9", "label": "a"}\n', "x.jsonl line 11: not UTF-8"),
        ("x.csv", "fine,a\nalso,b\n", "x.csv line 1: the header row must name a 'text' and a 'label' column"),
        ("x.csv", "text,category\nfine,a\n", "the header row must name a 'text' and a 'label'"),
        ("x.csv", "text,label\n", "has a header but no rows"),
        ("x.csv", "text,label\nfine,a\n,b\n", "x.csv line 3: the text is empty"),
        ("x.tsv", "text\tlabel\nfine\ta\nfine\t\n", "x.tsv line 3: no label"),
        ("x.json", '[{"text": "t", "label": "a"}, 3]', "x.json item 2: not a JSON object"),
    ],
)
def test_bad_labelled_files_write_nothing(tmp_path, name, content, message):
    src = tmp_path / name
    src.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "data" / "x"
    with pytest.raises(GptkitError) as e:
        prepare(src, out)
    assert message in str(e.value) and str(src) in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()  # everything is read and checked before anything is written


def test_a_label_only_val_has_is_named_and_the_old_dataset_stays(tmp_path):
    data = tmp_path / "data"
    good = write_jsonl(tmp_path / "train.jsonl", rows({"a": 5, "b": 5}))
    prepare(good, data / "x")
    before = {p.name: p.read_bytes() for p in (data / "x").iterdir()}
    assert read_meta(data / "x")["kind"] == "classification"
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "t", "label": "a"}, {"text": "u", "label": "zebra"}])
    result = run_cli_in_process(
        "-m", "gptkit.prepare", str(good), "--val", str(val), "--name", "x", "--out-root", str(data)
    )
    assert_user_error(result, f"{val} line 2: label 'zebra' is not in the training split")
    other = write_jsonl(tmp_path / "o.jsonl", [{"prompt": "Q", "completion": "A"}])
    result = run_cli_in_process(
        "-m", "gptkit.prepare", str(good), "--val", str(other), "--name", "x", "--out-root", str(data)
    )
    assert_user_error(result, f"{other} line 1: has keys ['completion', 'prompt'] besides text and label")
    assert {p.name: p.read_bytes() for p in (data / "x").iterdir()} == before
    result = run_cli_in_process("-m", "gptkit.prepare", str(good), "--name", "y", "--out-root", str(data))
    assert result.returncode == 0 and "2 labels: a, b" in result.stdout


def test_the_plays_task_ships_rebuilds_and_prepares(tmp_path):
    import importlib.util

    from conftest import ROOT, run_cli

    spec = importlib.util.spec_from_file_location("build_plays", ROOT / "data/plays/build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.build(tmp_path).read_bytes() == (ROOT / "data/plays/speeches.jsonl").read_bytes()
    rows = [json.loads(line) for line in (ROOT / "data/plays/speeches.jsonl").read_text().splitlines()]
    source = (ROOT / "data/shakespeare/input.txt").read_text()
    assert all(f"\n{r['text']}\n" in source for r in rows[:50])  # speeches as they are, without the speaker
    copy = tmp_path / "plays"  # the real script, on a copy outside the checkout
    copy.mkdir()
    for name in ("speeches.jsonl", "prepare.py"):
        shutil.copy(ROOT / "data/plays" / name, copy / name)
    result = run_cli(str(copy / "prepare.py"))
    assert result.returncode == 0, result.stderr
    meta = read_meta(copy)
    assert meta["kind"] == "classification" and len(meta["labels"]) == 5
    counts = {s: c["examples"] for s, c in meta["splits"].items()}
    assert counts["train"] >= 1000 and counts["val"] >= 300 and counts["test"] >= 300
    for label, n in meta["splits"]["train"]["per_label"].items():  # stratified: 10% of each play
        whole = sum(r["label"] == label for r in rows)
        assert abs(meta["splits"]["val"]["per_label"][label] - 0.1 * whole) <= 1 and n > 0.75 * whole


def test_a_partial_evaluation_spreads_over_the_split(tmp_path):
    """A file grouped by label: evaluating a few batches must not score its first label only."""
    src = write_jsonl(tmp_path / "x.jsonl", rows({"a": 40, "b": 40, "c": 40}))
    prepare(src, tmp_path / "x", val_fraction=0.1)
    data = LabelledBatches(tmp_path / "x", "train", batch_size=4, block_size=16)
    picked = np.concatenate(data.eval_indices(3))
    assert len(set(picked.tolist())) == 12 and set(data.examples.labels[picked].tolist()) == {0, 1, 2}
    assert np.array_equal(np.concatenate(data.eval_indices()), np.arange(data.num_examples))
    assert [len(b) for b in data.eval_indices(100)][-1] == data.num_examples % 4 or data.num_examples % 4 == 0
