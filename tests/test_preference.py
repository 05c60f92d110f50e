"""Preference tuning: pairs prepared exactly, the DPO loss against an independent transformers
computation, its reference (precomputed, or the LoRA model with adapters off), accumulation,
2 processes, exact resume, the memory check, and every bad input."""

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tiny
from conftest import ROOT, assert_user_error, run_cli_in_process
from gptkit import checkpoint, lora, memory, objectives
from gptkit.config import given_settings
from gptkit.data import PairBatches, open_pairs
from gptkit.export import export
from gptkit.prepare import prepare
from gptkit.prompts import ALPACA_NO_INPUT
from gptkit.tokenizer import EOT_ID, get_encoding
from gptkit.train import train

BETA = 0.5  # larger than the default, so a few steps move the rewards well past rounding
TOL = 1e-5


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def date_pairs(first: int, n: int) -> list[dict]:
    """The dates task as pairs: the right answer in words, against the ISO date echoed back."""
    rows = []
    for k in range(first, first + n):
        year, month, day = 1970 + k % 50, 1 + k % 12, 1 + k % 28
        iso = f"{year}-{month:02d}-{day:02d}"
        words = f" {['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'][month - 1]} {day}, {year}"  # noqa: E501
        rows.append({"prompt": f"Write {iso} in words:", "chosen": words, "rejected": f" {iso}"})
    return rows


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    train_file = write_jsonl(root / "train.jsonl", date_pairs(0, 24))
    val_file = write_jsonl(root / "val.jsonl", date_pairs(100, 6))
    test_file = write_jsonl(root / "test.jsonl", date_pairs(200, 5))
    prepare(train_file, root / "data" / "dates_pref", val=val_file, test=test_file)
    return root


def dpo_cfg(out, pairs_dir, hf_dir, **kw):
    settings = dict(
        init_from=str(hf_dir),
        dataset="dates_pref",
        data_root=str(pairs_dir / "data"),
        block_size=32,
        batch_size=2,
        eval_iters=3,  # 3 batches of 2: every val pair
        eval_interval=3,
        max_iters=6,
        dropout=0.0,
        dtype="float32",
        decay_lr=False,
        learning_rate=3e-3,
        dpo_beta=BETA,
        compile=False,
    )
    return tiny.tiny_cfg(out, tiny.TINY_RUN | settings | kw)


def hf_logps(model, prompt: str, response: str, average: bool = False) -> float:
    """log p(response <|endoftext|> | prompt), summed (or averaged per token), by transformers."""
    enc = get_encoding()
    p, r = enc.encode_ordinary(prompt), enc.encode_ordinary(response) + [EOT_ID]
    ids = torch.tensor([p + r])
    with torch.no_grad():
        logp = model(ids).logits[0, :-1].double().log_softmax(-1)
    picked = logp[len(p) - 1 :].gather(1, ids[0, len(p) :, None])
    return (picked.mean() if average else picked.sum()).item()


def hf_dpo(policy_dir, reference_dir, rows, beta=BETA, average=False) -> dict:
    """The DPO loss, reward accuracy and rewards of `rows`, computed with transformers alone."""
    from transformers import GPT2LMHeadModel

    policy, ref = (GPT2LMHeadModel.from_pretrained(d).eval() for d in (policy_dir, reference_dir))
    losses, chosen_r, rejected_r = [], [], []
    for row in rows:
        c, r = (
            beta * (hf_logps(policy, row["prompt"], row[k], average) - hf_logps(ref, row["prompt"], row[k], average))
            for k in ("chosen", "rejected")
        )
        losses.append(-F.logsigmoid(torch.tensor(c - r, dtype=torch.float64)).item())
        chosen_r.append(c)
        rejected_r.append(r)
    return {
        "loss": float(np.mean(losses)),
        "reward_accuracy": float(np.mean([c > r for c, r in zip(chosen_r, rejected_r, strict=True)])),
        "chosen_reward": float(np.mean(chosen_r)),
        "rejected_reward": float(np.mean(rejected_r)),
    }


# --- data ------------------------------------------------------------------------------------
def test_pairs_are_tokenized_apart_and_stored_once(pairs_dir):
    enc = get_encoding()
    tokens, offsets = open_pairs(pairs_dir / "data" / "dates_pref", "val")
    rows = date_pairs(100, 6)
    assert len(offsets) == 3 * len(rows) + 1
    for i, row in enumerate(rows):
        segments = [tokens[offsets[3 * i + k] : offsets[3 * i + k + 1]].tolist() for k in range(3)]
        assert segments[0] == enc.encode_ordinary(row["prompt"])
        assert segments[1] == enc.encode_ordinary(row["chosen"]) + [EOT_ID]
        assert segments[2] == enc.encode_ordinary(row["rejected"]) + [EOT_ID]
    meta = json.loads((pairs_dir / "data" / "dates_pref" / "meta.json").read_text())
    assert meta["kind"] == "preference" and meta["splits"]["val"]["pairs"] == 6


def test_a_pair_batch_is_chosen_rows_then_rejected_rows(pairs_dir):
    enc = get_encoding()
    data = PairBatches(pairs_dir / "data" / "dates_pref", "val", batch_size=2, block_size=32)
    x, y, ref = data.batch(np.array([0, 3]))
    rows = date_pairs(100, 6)
    assert x.shape[0] == 4 and ref is None
    for b, (i, key) in enumerate([(0, "chosen"), (3, "chosen"), (0, "rejected"), (3, "rejected")]):
        p, r = enc.encode_ordinary(rows[i]["prompt"]), enc.encode_ordinary(rows[i][key]) + [EOT_ID]
        targets = y[b][y[b] != -1].tolist()
        assert targets == r  # the response and its <|endoftext|>, nothing of the prompt
        assert x[b, : len(p) + len(r) - 1].tolist() == (p + r)[:-1]


def test_alpaca_and_chat_prompts(tmp_path):
    alpaca = [{"instruction": f"Say {w}.", "chosen": w, "rejected": w + "!"} for w in ("hi", "yo", "ok")]
    prepare(write_jsonl(tmp_path / "a.jsonl", alpaca), tmp_path / "a", val_fraction=0.34)
    tokens, offsets = open_pairs(tmp_path / "a", "train")
    assert meta_of(tmp_path / "a")["format"] == "alpaca"
    prompt = tokens[offsets[0] : offsets[1]].tolist()
    assert get_encoding().decode(prompt) in {ALPACA_NO_INPUT.format(instruction=r["instruction"]) for r in alpaca}
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    chat = [
        {"messages": [*history, {"role": "user", "content": f"N{i}?"}], "chosen": "Yes", "rejected": "No"}
        for i in range(3)
    ]
    prepare(write_jsonl(tmp_path / "c.jsonl", chat), tmp_path / "c", val_fraction=0.34)
    tokens, offsets = open_pairs(tmp_path / "c", "train")
    prompt = tokens[offsets[0] : offsets[1]].tolist()
    assert EOT_ID in prompt  # the history's answer ends as it did in training: with <|endoftext|>
    expected = {
        f"### User:\nHi\n\n### Assistant:\nHello.<|endoftext|>### User:\nN{i}?\n\n### Assistant:\n" for i in range(3)
    }
    assert get_encoding().decode(prompt) in expected


def meta_of(path):
    return json.loads((path / "meta.json").read_text())


@pytest.mark.parametrize(
    "rows, fragments",
    [
        ([{"prompt": "a", "chosen": "b"}], ["line 1", "'rejected' is missing"]),
        (
            [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "", "rejected": "c"}],
            ["line 2", "'chosen' is empty"],
        ),  # fmt: skip
        (
            [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": " b", "rejected": " b"}],
            ["line 2", "the same text"],
        ),  # fmt: skip
        (
            [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"instruction": "a", "chosen": "b", "rejected": "c"}],
            ["line 2", "one format per dataset"],
        ),  # fmt: skip
        (
            [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "completion": "b"}],
            ["line 2", "'chosen' is missing"],
        ),  # fmt: skip
    ],
)
def test_bad_pairs_are_one_line_and_write_nothing(tmp_path, rows, fragments):
    source = write_jsonl(tmp_path / "pairs.jsonl", rows * 1)
    result = run_cli_in_process("-m", "gptkit.prepare", str(source), "--name", "p", "--out-root", str(tmp_path / "d"))
    assert_user_error(result, str(source), *fragments)
    assert not (tmp_path / "d" / "p").exists() or not any((tmp_path / "d" / "p").iterdir())


# --- training --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, pairs_dir, tiny_hf_dir):
    out = tmp_path_factory.mktemp("dpo")
    train(dpo_cfg(out, pairs_dir, tiny_hf_dir))
    return out


def test_step_0_is_ln_2_and_no_pair_ranked_right(dpo_run):
    first = tiny.records(dpo_run, "eval")[0]
    assert first["iter"] == 0
    assert first["val_loss"] == pytest.approx(math.log(2), abs=1e-7)
    assert first["train_loss"] == pytest.approx(math.log(2), abs=1e-7)
    # policy == reference: every reward is 0, and a tie is not a pair ranked right
    assert first["val_reward_accuracy"] == 0.0 and first["val_margin"] == 0.0


def test_val_dpo_loss_equals_transformers(dpo_run, tiny_hf_dir, tmp_path):
    last = tiny.records(dpo_run, "eval")[-1]
    assert last["iter"] == 6
    expected = hf_dpo(export(dpo_run, tmp_path / "policy"), tiny_hf_dir, date_pairs(100, 6))
    assert abs(expected["loss"] - math.log(2)) > 100 * TOL  # training moved: equality is not trivial
    for key in ("loss", "reward_accuracy", "chosen_reward", "rejected_reward"):
        assert last[f"val_{key}"] == pytest.approx(expected[key], abs=TOL), key
    assert last["val_margin"] == pytest.approx(expected["chosen_reward"] - expected["rejected_reward"], abs=TOL)
    assert (dpo_run / "reference_logps.npz").is_file()


def test_the_per_token_mean_option_equals_transformers(pairs_dir, tiny_hf_dir, tmp_path):
    out = tmp_path / "mean"
    train(dpo_cfg(out, pairs_dir, tiny_hf_dir, dpo_average_logps=True, max_iters=3, learning_rate=1e-2))
    last = tiny.records(out, "eval")[-1]
    expected = hf_dpo(export(out, tmp_path / "policy"), tiny_hf_dir, date_pairs(100, 6), average=True)
    summed = hf_dpo(tmp_path / "policy", tiny_hf_dir, date_pairs(100, 6))
    assert abs(expected["loss"] - summed["loss"]) > 100 * TOL  # the option changes what is computed
    assert last["val_loss"] == pytest.approx(expected["loss"], abs=TOL)
    assert last["val_margin"] == pytest.approx(expected["chosen_reward"] - expected["rejected_reward"], abs=TOL)


def test_evaluate_reports_held_out_reward_and_preference_accuracy(dpo_run, tiny_hf_dir, tmp_path):
    from transformers import GPT2LMHeadModel

    result = run_cli_in_process(
        "-m", "gptkit.evaluate", str(dpo_run), "--split=test", "--device=cpu", "--dtype=float32"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (dpo_run / "eval_test.jsonl").read_text().splitlines()]
    rows = date_pairs(200, 5)
    policy = GPT2LMHeadModel.from_pretrained(export(dpo_run, tmp_path / "policy")).eval()
    base = GPT2LMHeadModel.from_pretrained(tiny_hf_dir).eval()
    prefers, ranked = [], []
    for row, record in zip(rows, records, strict=True):
        pc, pr = (hf_logps(policy, row["prompt"], row[k]) for k in ("chosen", "rejected"))
        rc, rr = (hf_logps(base, row["prompt"], row[k]) for k in ("chosen", "rejected"))
        assert [record[k] for k in ("policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected")] == pytest.approx(
            [pc, pr, rc, rr], abs=1e-4
        )
        prefers.append(pc > pr)
        ranked.append((pc - rc) - (pr - rr) > 0)
    assert f"prefers the chosen response in {np.mean(prefers):.1%} of 5 pairs" in result.stdout
    assert f"reward accuracy {np.mean(ranked):.1%}" in result.stdout


def test_sample_treats_the_policy_as_a_language_model(dpo_run, tmp_path):
    """--prompt fills the preference dataset's template, and the policy writes the same greedy
    answer as its export does from the same text."""
    args = ["--max_new_tokens=6", "--temperature=0", "--device=cpu", "--dtype=float32"]
    run = run_cli_in_process(
        "-m", "gptkit.sample", f"--out_dir={dpo_run}", "--prompt=Write 1999-01-02 in words:", *args
    )
    assert run.returncode == 0, run.stderr[-2000:]
    exported = export(dpo_run, tmp_path / "policy")
    start = "--start=Write 1999-01-02 in words:"
    plain = run_cli_in_process("-m", "gptkit.sample", f"--init_from={exported}", start, "--stop_at_eot=True", *args)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert run.stdout.splitlines()[0].startswith("Write 1999-01-02 in words:")
    assert run.stdout == plain.stdout


def test_lora_reference_is_the_model_with_adapters_off(pairs_dir, tiny_hf_dir, tmp_path):
    out = tmp_path / "lora"
    train(dpo_cfg(out, pairs_dir, tiny_hf_dir, lora_rank=4, learning_rate=2e-2))
    assert not (out / "reference_logps.npz").exists()  # no precompute: the base is the reference
    ckpt = checkpoint.load(checkpoint.best_in(out))
    model = checkpoint.model_from_checkpoint(ckpt, out).eval()
    data = PairBatches(pairs_dir / "data" / "dates_pref", "val", batch_size=6, block_size=32)
    x, y, _ = data.batch(np.arange(6))
    off = objectives.AdaptersOff(model)(x, y, False)
    with torch.no_grad():
        on = objectives.sequence_logps(model, x, y)
    rows = date_pairs(100, 6)
    from transformers import GPT2LMHeadModel

    base = GPT2LMHeadModel.from_pretrained(tiny_hf_dir).eval()
    expected = [hf_logps(base, r["prompt"], r[k]) for k in ("chosen", "rejected") for r in rows]
    assert off.tolist() == pytest.approx(expected, abs=TOL)
    assert (on - off).abs().max() > 100 * TOL  # the adapters moved the policy
    last = tiny.records(out, "eval")[-1]
    assert last["val_loss"] == pytest.approx(
        hf_dpo(export(out, tmp_path / "merged"), tiny_hf_dir, rows)["loss"], abs=TOL
    )
    # gptkit.evaluate's reward accuracy of a LoRA run uses the same reference: the adapters-off model
    result = run_cli_in_process("-m", "gptkit.evaluate", str(out), "--split=val", "--device=cpu", "--dtype=float32")
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (out / "eval_val.jsonl").read_text().splitlines()]
    refs = [r[k] for k in ("ref_chosen", "ref_rejected") for r in records]
    assert refs == pytest.approx(expected, abs=1e-4)
    policy = [r[k] for k in ("policy_chosen", "policy_rejected") for r in records]
    assert policy == pytest.approx(on.tolist(), abs=1e-4)


def test_adapters_off_leaves_them_on_afterwards(tiny_hf_dir):
    from gptkit.model import GPT

    model = lora.apply_lora(GPT.from_pretrained(str(tiny_hf_dir)), 2, 4.0)
    for layer in lora.lora_layers(model).values():
        torch.nn.init.normal_(layer.lora_B)
    x = torch.randint(0, 100, (1, 5))
    before = model(x)[0]
    with lora.adapters_off(model):
        assert not torch.equal(model(x)[0], before)
    assert torch.equal(model(x)[0], before)


def test_gradient_accumulation_equals_one_big_batch(pairs_dir, tiny_hf_dir, tmp_path):
    one = tmp_path / "one"
    two = tmp_path / "accum"
    train(dpo_cfg(one, pairs_dir, tiny_hf_dir, batch_size=4, eval_iters=3))
    train(dpo_cfg(two, pairs_dir, tiny_hf_dir, batch_size=2, gradient_accumulation_steps=2, eval_iters=6))
    assert_same_losses(one, two)


def assert_same_losses(a, b):
    steps_a, steps_b = tiny.records(a, "step"), tiny.records(b, "step")
    assert [s["loss"] for s in steps_a] == pytest.approx([s["loss"] for s in steps_b], abs=TOL)
    evals_a, evals_b = tiny.records(a, "eval"), tiny.records(b, "eval")
    for key in ("val_loss", "train_loss", "val_reward_accuracy", "val_margin"):
        assert [e[key] for e in evals_a] == pytest.approx([e[key] for e in evals_b], abs=TOL), key


def test_exact_resume(pairs_dir, tiny_hf_dir, tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train(dpo_cfg(whole, pairs_dir, tiny_hf_dir, dropout=0.1))
    train(dpo_cfg(resumed, pairs_dir, tiny_hf_dir, dropout=0.1, max_iters=3))
    train(dataclasses.replace(dpo_cfg(resumed, pairs_dir, tiny_hf_dir, dropout=0.1), init_from="resume"))
    a = [(r["iter"], r["val_loss"], r["train_loss"]) for r in tiny.records(whole, "eval")]
    b = [(r["iter"], r["val_loss"], r["train_loss"]) for r in tiny.records(resumed, "eval")]
    assert a == b  # bit for bit: the same reference, pairs and dropout masks
    assert [r["loss"] for r in tiny.records(whole, "step")] == [r["loss"] for r in tiny.records(resumed, "step")]


def test_tokens_per_s_counts_the_rows_real_tokens(tiny_hf_dir, tmp_path):
    """Pairs whose responses differ in length, each micro-batch counted by hand from its rows (prompt +
    chosen, prompt + rejected): tokens/s the positions computed, tokens_seen the real tokens."""
    rows = [row | {"chosen": row["chosen"] + " yes" * (3 * (k % 6))} for k, row in enumerate(date_pairs(0, 24))]
    write_jsonl(tmp_path / "train.jsonl", rows)
    prepare(tmp_path / "train.jsonl", tmp_path / "data" / "ragged", val=write_jsonl(tmp_path / "v.jsonl", rows[:4]))
    run = tmp_path / "run"
    cfg = dpo_cfg(run, tmp_path, tiny_hf_dir, dataset="ragged", gradient_accumulation_steps=2, max_iters=4)
    train(cfg)
    data = PairBatches(tmp_path / "data" / "ragged", "train", cfg.batch_size, cfg.block_size, seed=cfg.seed)
    steps = [data.draw_step(2).micro_batches for _ in range(4)]
    # each pair's two rows: the prompt and one response, cut to block_size + 1 tokens, less the last (a target)
    lengths = data.segments[:, :1] + data.segments[:, 1:]  # (pairs, 2)
    need = [[(np.minimum(lengths[pairs], cfg.block_size + 1) - 1).ravel() for pairs in step] for step in steps]
    tiny.check_logged_counts(run, need)


def test_two_processes_equal_one(pairs_dir, tiny_hf_dir, tmp_path):
    settings = dpo_cfg(tmp_path, pairs_dir, tiny_hf_dir, gradient_accumulation_steps=2, batch_size=2)
    # the settings off their default (one for another kind of dataset would be refused, default or not)
    args = [f"--{k}={getattr(settings, k)}" for k in sorted(given_settings(settings)) if k != "out_dir"]
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    runs = {
        "one": [sys.executable, "-m", "gptkit.train", *args, f"--out_dir={tmp_path / 'one'}"],
        "two": [*torchrun, str(ROOT / "scripts" / "ddp_finetune.py"), *args, f"--out_dir={tmp_path / 'two'}"],
    }
    for name, cmd in runs.items():
        proc = subprocess.run(cmd, cwd=ROOT, env=os.environ | env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ("over 2 processes" in proc.stdout) == (name == "two")
    assert_same_losses(tmp_path / "one", tmp_path / "two")


def test_memory_counts_two_rows_a_pair_and_one_model(pairs_dir, tiny_hf_dir, tmp_path):
    """The LoRA reference is the model itself: the weights are counted once; a micro-batch of
    B pairs is 2B rows of the longest pair."""
    examples = pairs_dir / "data" / "as_examples"
    examples.mkdir(exist_ok=True)
    meta = meta_of(pairs_dir / "data" / "dates_pref")
    (examples / "meta.json").write_text(json.dumps(meta | {"kind": "examples"}))
    dpo = dpo_cfg(tmp_path, pairs_dir, tiny_hf_dir, lora_rank=4)
    sft = dataclasses.replace(dpo, dataset="as_examples", batch_size=4)
    assert memory.estimate_run(dpo, "cpu", torch.float32) == memory.estimate_run(sft, "cpu", torch.float32)
    shutil.rmtree(examples)


@pytest.mark.parametrize(
    "settings, fragment",
    [
        (dict(dpo_beta=0), "dpo_beta must be positive"),
        (dict(init_from="scratch", n_layer=1, n_head=1, n_embd=8), "no reference worth keeping"),
        (dict(dpo_reference="adapters"), "needs a LoRA run"),
    ],
)
def test_bad_dpo_settings_are_one_line_and_write_nothing(pairs_dir, tiny_hf_dir, tmp_path, settings, fragment):
    cfg = dataclasses.replace(dpo_cfg(tmp_path / "out", pairs_dir, tiny_hf_dir), **settings)
    args = [f"--{k}={getattr(cfg, k)}" for k in sorted(given_settings(cfg))]
    assert_user_error(run_cli_in_process("-m", "gptkit.train", *args), fragment)
    assert not (tmp_path / "out").exists()


def test_the_dates_preference_task_ships_rebuilds_and_prepares(tmp_path):
    """Its pairs are the dates task's prompts and right answers, against a wrong answer each."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_pairs", ROOT / "data/dates_preference/build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for split, path in build.build(tmp_path).items():
        assert path.read_bytes() == (ROOT / "data/dates_preference" / f"{split}.jsonl").read_bytes()
        pairs = [json.loads(line) for line in path.read_text().splitlines()]
        dates = [json.loads(line) for line in (ROOT / "data/dates" / f"{split}.jsonl").read_text().splitlines()]
        assert [(p["prompt"], p["chosen"]) for p in pairs] == [(d["prompt"], d["completion"]) for d in dates]
        assert all(p["rejected"] != p["chosen"] for p in pairs)
    meta = prepare(ROOT / "data/dates_preference/train.jsonl", tmp_path / "prepared", val=tmp_path / "val.jsonl")
    assert meta["kind"] == "preference" and meta["splits"]["train"]["pairs"] == 2000
