"""gptkit.prepare on example files: tokens, masks, splits, meta.json, and every bad input."""

import json

import numpy as np
import pytest

from conftest import ROOT, assert_user_error, run_cli, run_cli_in_process
from gptkit.data import open_examples
from gptkit.errors import GptkitError
from gptkit.prepare import prepare
from gptkit.prompts import ALPACA_NO_INPUT, ALPACA_WITH_INPUT
from gptkit.tokenizer import EOT_ID, get_encoding

ALPACA_ROWS = [
    {"instruction": "Add the numbers.", "input": "2 3", "output": "5"},
    {"instruction": "Say hi.", "output": "hi there"},
    {"instruction": "Reverse the word.", "input": "stop", "output": "pots"},
    {"instruction": "Name a colour.", "input": "", "output": "teal"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def expected_tokens(prompt: str, response: str) -> tuple[list[int], list[int]]:
    enc = get_encoding()
    p, r = enc.encode_ordinary(prompt), enc.encode_ordinary(response) + [EOT_ID]
    return p + r, [0] * len(p) + [1] * len(r)


def test_alpaca_examples_with_a_val_file(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", ALPACA_ROWS)
    val = write_jsonl(tmp_path / "val.jsonl", ALPACA_ROWS[:1])
    meta = prepare(train, tmp_path / "out", val=val, block_size=40)
    examples = open_examples(tmp_path / "out", "train")
    assert len(examples.offsets) == len(ALPACA_ROWS) + 1
    for i, row in enumerate(ALPACA_ROWS):
        template = ALPACA_WITH_INPUT if row.get("input") else ALPACA_NO_INPUT
        tokens, mask = expected_tokens(template.format(**row), row["output"])
        a, b = examples.offsets[i], examples.offsets[i + 1]
        assert examples.tokens[a:b].tolist() == tokens
        assert examples.mask[a:b].tolist() == mask  # the response and its <|endoftext|>, nothing else
    assert open_examples(tmp_path / "out", "val").tokens.tolist() == examples.tokens[: examples.offsets[1]].tolist()
    assert meta["kind"] == "examples" and meta["format"] == "alpaca" and meta["template"]["name"] == "alpaca"
    c = meta["splits"]["train"]
    lengths = np.diff(examples.offsets)
    assert c["examples"] == 4 and c["tokens"] == len(examples.tokens) == meta["train_tokens"]
    assert c["response_tokens"] == int(examples.mask.sum()) and c["prompt_tokens"] == c["tokens"] - c["response_tokens"]
    assert c["longest"] == lengths.max() and c["longer_than_block"] == int((lengths - 1 > 40).sum()) > 0
    assert c["longer_than"]["64"] == 0
    assert set(meta["splits"]) == {"train", "val"} and meta["splits"]["val"]["source"]["path"] == str(val)
    on_disk = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert on_disk == meta


def test_prompt_and_response_are_tokenized_apart():
    """Joined, a prompt ending in a space merges it into the response's first token; apart, the
    boundary is exact: the response's tokens are those of the response alone."""
    from gptkit.prepare import tokenize_examples
    from gptkit.prompts import Piece

    enc = get_encoding()
    prompt, response = "Q: 2+2= ", "4"
    apart = enc.encode_ordinary(prompt) + enc.encode_ordinary(response)
    assert enc.encode_ordinary(prompt + response) != apart  # " 4" is one token when joined
    out = tokenize_examples([[Piece(prompt, response)]])
    assert out.tokens.tolist() == apart + [EOT_ID]
    assert out.mask.tolist() == [0] * len(enc.encode_ordinary(prompt)) + [1, 1]  # "4" and <|endoftext|>


def test_chat_and_plain_formats_and_a_json_list(tmp_path):
    chat = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Bye!"},
        ]
    }
    src = tmp_path / "chat.json"
    src.write_text(json.dumps([chat] * 3))
    meta = prepare(src, tmp_path / "c", val_fraction=0.34)
    assert meta["format"] == "chat" and meta["splits"]["train"]["examples"] == 2
    t1, m1 = expected_tokens("### User:\nHi\n\n### Assistant:\n", "Hello.")
    t2, m2 = expected_tokens("### User:\nBye\n\n### Assistant:\n", "Bye!")
    val = open_examples(tmp_path / "c", "val")
    assert val.tokens.tolist() == t1 + t2 and val.mask.tolist() == m1 + m2  # two responses, two EOTs

    plain = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": f"Q{i}:", "completion": f" A{i}"} for i in range(3)])
    meta = prepare(plain, tmp_path / "p", val_fraction=0.3)
    assert meta["format"] == "prompt/completion" and meta["template"]["name"] == "verbatim"


def test_val_and_test_fractions_split_whole_examples_seeded(tmp_path):
    rows = [{"prompt": f"Q{i}:", "completion": f" A{i}"} for i in range(50)]
    src = write_jsonl(tmp_path / "qa.jsonl", rows)

    def split_rows(out, split):
        ex = open_examples(out, split)
        enc = get_encoding()
        return [enc.decode(ex.tokens[a:b].tolist()) for a, b in zip(ex.offsets[:-1], ex.offsets[1:], strict=True)]

    meta = prepare(src, tmp_path / "a", val_fraction=0.2, test_fraction=0.1, seed=3)
    assert {s: c["examples"] for s, c in meta["splits"].items()} == {"train": 35, "val": 10, "test": 5}
    seen = [r for s in ("train", "val", "test") for r in split_rows(tmp_path / "a", s)]
    assert sorted(seen) == sorted(r["prompt"] + r["completion"] + "<|endoftext|>" for r in rows)  # each once
    prepare(src, tmp_path / "b", val_fraction=0.2, test_fraction=0.1, seed=3)
    prepare(src, tmp_path / "c", val_fraction=0.2, test_fraction=0.1, seed=4)
    assert split_rows(tmp_path / "a", "val") == split_rows(tmp_path / "b", "val")
    assert split_rows(tmp_path / "a", "val") != split_rows(tmp_path / "c", "val")
    train = split_rows(tmp_path / "a", "train")
    assert train == sorted(train, key=lambda t: int(t.split(":")[0][1:]))  # file order within a split


def test_stream_meta_says_stream(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text((ROOT / "data/shakespeare/input.txt").read_text(encoding="utf-8")[:5000], encoding="utf-8")
    assert prepare(src, tmp_path / "s", block_size=64, progress=False)["kind"] == "stream"
    with pytest.raises(GptkitError, match="--val, --test and --test-fraction are for example files"):
        prepare(src, tmp_path / "s", val=src)


GOOD = '{"prompt": "Q:", "completion": " A"}\n'


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("x.jsonl", GOOD + '{"prompt": "Q:", "completion": " A"\n', "x.jsonl line 2: not valid JSON"),
        ("x.json", '[\n{"prompt": "Q:",\n "completion" " A"}]', "x.json line 3: not valid JSON"),
        ("x.json", '{"prompt": "Q:", "completion": " A"}', "holds a JSON dict, not a list"),
        ("x.json", "[]", "is an empty list"),
        (
            "x.jsonl",
            GOOD + '{"question": "Q", "answer": "A"}\n',
            "line 2: the object (keys: 'question', 'answer') is none",
        ),
        (
            "x.jsonl",
            GOOD + "\n" + '{"instruction": "Q", "output": "A"}\n',
            "line 3: the format is alpaca, but line 1 is prompt/completion",
        ),
        ("x.jsonl", GOOD + '{"prompt": "Q:"}\n', "line 2: 'completion' is missing"),
        ("x.jsonl", GOOD + '{"prompt": "", "completion": " A"}\n', "line 2: 'prompt' is empty"),
        ("x.jsonl", GOOD + '{"prompt": "Q", "completion": 4}\n', "line 2: 'completion' must be a string"),
        ("x.jsonl", GOOD + '{"prompt": "Q", "completion": ""}\n', "line 2: 'completion' is empty: an empty response"),
        ("x.jsonl", "\n  \n", "is empty: give it examples"),
        ("x.jsonl", b"", "is empty"),
        ("x.jsonl", GOOD.encode() + b'{"prompt": "caf\xe9", "completion": " A"}\n', "x.jsonl line 2: not UTF-8"),
        ("x.jsonl", GOOD, "has 1 example(s): too few"),
    ],
)
def test_bad_example_files_write_nothing(tmp_path, name, content, message):
    src = tmp_path / name
    src.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "data" / "x"
    with pytest.raises(GptkitError) as e:
        prepare(src, out)
    assert message in str(e.value) and str(src) in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()  # everything is read and checked before anything is written


def test_bad_example_files_from_the_command_line(tmp_path):
    """One `error:` line, exit 1, the old dataset intact; a val file of another format too."""
    data = tmp_path / "data"
    good = write_jsonl(tmp_path / "good.jsonl", [{"prompt": f"Q{i}:", "completion": " A"} for i in range(5)])
    prepare(good, data / "x")
    before = {p.name: p.read_bytes() for p in (data / "x").iterdir()}
    assert set(before) == {f"{s}{x}" for s in ("train", "val") for x in (".bin", ".mask.bin", ".offsets.npy")} | {
        "meta.json"
    }
    bad = tmp_path / "bad.jsonl"
    bad.write_text(GOOD + "not json\n")
    result = run_cli_in_process("-m", "gptkit.prepare", str(bad), "--name", "x", "--out-root", str(data))
    assert_user_error(result, f"{bad} line 2: not valid JSON")
    other = write_jsonl(tmp_path / "val.jsonl", [{"instruction": "Q", "output": "A"}])
    result = run_cli_in_process(
        "-m", "gptkit.prepare", str(good), "--val", str(other), "--name", "x", "--out-root", str(data)
    )
    assert_user_error(result, f"{other} line 1: the format is alpaca, but the training file is prompt/completion")
    with pytest.raises(GptkitError, match="give --val FILE or --val-fraction, not both"):
        prepare(good, data / "x", val=good, val_fraction=0.2)
    assert {p.name: p.read_bytes() for p in (data / "x").iterdir()} == before


def test_the_dates_task_ships_and_rebuilds_byte_for_byte(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_dates", ROOT / "data/dates/build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    paths = build.build(tmp_path)
    for split, path in paths.items():
        assert path.read_bytes() == (ROOT / "data/dates" / f"{split}.jsonl").read_bytes()
    rows = {s: [json.loads(line) for line in p.read_text().splitlines()] for s, p in paths.items()}
    assert {s: len(r) for s, r in rows.items()} == {"train": 2000, "val": 200, "test": 200}
    inputs = {s: {r["prompt"] for r in rs} for s, rs in rows.items()}
    assert (
        not inputs["train"] & inputs["val"]
        and not inputs["train"] & inputs["test"]
        and not inputs["val"] & inputs["test"]
    )
    import datetime

    for r in rows["test"]:
        day = datetime.date.fromisoformat(r["prompt"].split()[1])
        assert r["completion"] == day.strftime(" %B ") + f"{day.day}, {day.year}"


def test_the_dates_task_prepares_with_its_script(tmp_path):
    import shutil

    from gptkit.data import ExampleBatches

    copy = tmp_path / "dates"  # the real script, on a copy outside the checkout
    shutil.copytree(ROOT / "data/dates", copy, ignore=shutil.ignore_patterns("*.bin", "*.npy", "meta.json"))
    result = run_cli(str(copy / "prepare.py"))
    assert result.returncode == 0, result.stderr
    assert "train has 2,000 examples, 28,000 tokens (18,000 prompt, 10,000 response)" in result.stdout
    meta = json.loads((copy / "meta.json").read_text())
    assert meta["kind"] == "examples" and {s: c["examples"] for s, c in meta["splits"].items()} == {
        "train": 2000,
        "val": 200,
        "test": 200,
    }
    data = ExampleBatches(copy, "test", batch_size=8, block_size=32)
    assert data.num_cut == 0 and data.num_targets(np.arange(200)) == 200 * 5  # month, day, ",", year, EOT
