"""Training a classifier: the head against transformers, the weighting of examples, resume, DDP, what trains."""

import json
import random

import pytest
import torch

import tiny
from gptkit import checkpoint
from gptkit.config import TrainConfig
from gptkit.data import LabelledBatches, open_labelled
from gptkit.model import GPT
from gptkit.prepare import prepare
from gptkit.train import train
from tiny import records

LABELS = {"red": ["apple", "cherry", "brick"], "green": ["grass", "leaf", "frog"], "blue": ["sky", "sea", "ink"]}
FILLER = ["the", "a", "big", "small", "old", "new", "very", "and", "of", "it"]


def labelled_rows(n: int, seed: int = 0) -> list[dict]:
    """Texts of 2 to 20 words whose label is the colour of the one coloured word in them."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(LABELS))
        words = [rng.choice(FILLER) for _ in range(rng.randint(1, 19))]
        words.insert(rng.randint(0, len(words)), rng.choice(LABELS[label]))
        rows.append({"text": " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    (root / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labelled_rows(120)))
    prepare(root / "c.jsonl", root / "colours", val_fraction=0.2, test_fraction=0.1)
    return root


BASE = tiny.TINY | dict(dataset="colours", dropout=0.0, decay_lr=False, learning_rate=3e-3, max_iters=6)
BASE |= dict(eval_interval=3, train_layers="all", check_memory=False)
LORA_BASE = {k: v for k, v in BASE.items() if k != "train_layers"}  # LoRA chooses what trains


def cfg(out_dir, colours, **kw) -> TrainConfig:
    return tiny.tiny_cfg(out_dir, LORA_BASE if kw.get("lora_rank") else BASE, data_root=str(colours), **kw)


def weights(path):
    return checkpoint.load(path).model


@pytest.fixture(scope="module")
def hf_classifier(tmp_path_factory):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=128, num_labels=3, pad_token_id=50256)
    path = tmp_path_factory.mktemp("hf-cls")
    GPT2ForSequenceClassification(config).save_pretrained(path)
    return path


def right_padded(data, rows) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = [int(data.offsets[i + 1] - data.offsets[i]) for i in rows]
    ids = torch.full((len(rows), max(lengths)), 50256)
    for r, i in enumerate(rows):
        ids[r, : lengths[r]] = torch.from_numpy(data.tokens[data.offsets[i] : data.offsets[i + 1]].astype("int64"))
    return ids, torch.tensor(lengths)


def test_val_loss_and_probabilities_equal_transformers(tmp_path, colours, hf_classifier):
    """gptkit's val loss, and its probabilities on a right-padded batch, recomputed by HF's classifier."""
    from transformers import GPT2ForSequenceClassification

    summary = train(cfg(tmp_path / "hf", colours, init_from=str(hf_classifier), eval_only=True, eval_iters=50))
    val = open_labelled(colours / "colours", "val")
    hf = GPT2ForSequenceClassification.from_pretrained(hf_classifier).eval()
    ids, lengths = right_padded(val, range(len(val.labels)))
    assert len(set(lengths.tolist())) > 3  # really padded
    labels = torch.from_numpy(val.labels.astype("int64"))
    with torch.no_grad():
        out = hf(ids, attention_mask=(torch.arange(ids.size(1)) < lengths[:, None]).long(), labels=labels)
        ours = GPT.from_pretrained(str(hf_classifier)).eval()(ids, last=lengths - 1)[0]
    assert summary["last_val_loss"] == pytest.approx(out.loss.item(), abs=1e-5)
    torch.testing.assert_close(ours.softmax(-1), out.logits.softmax(-1), atol=1e-5, rtol=0)
    # the first position would give other answers: the head reads the last real token
    with torch.no_grad():
        first = GPT.from_pretrained(str(hf_classifier)).eval()(ids, last=torch.zeros_like(lengths))[0]
    assert not torch.allclose(first, out.logits, atol=1e-3)


def test_every_example_weighs_the_same_in_accumulation(tmp_path, colours):
    """4 micro-batches of 1 example are 1 micro-batch of 4: the same losses and weights."""
    one = train(cfg(tmp_path / "one", colours, batch_size=4, gradient_accumulation_steps=1, eval_iters=84))
    four = train(cfg(tmp_path / "four", colours, batch_size=1, gradient_accumulation_steps=4, eval_iters=84))
    assert one["best_val_loss"] == pytest.approx(four["best_val_loss"], abs=1e-6)
    a, b = records(tmp_path / "one", "step"), records(tmp_path / "four", "step")
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-5)
    ea, eb = records(tmp_path / "one", "eval"), records(tmp_path / "four", "eval")
    for key in ("val_loss", "val_accuracy", "train_accuracy"):
        assert [r[key] for r in ea] == pytest.approx([r[key] for r in eb], rel=1e-5), key
    wa, wb = weights(tmp_path / "one" / checkpoint.BEST), weights(tmp_path / "four" / checkpoint.BEST)
    for k, v in wa.items():
        close = torch.isclose(v, wb[k], rtol=1e-3, atol=1e-4)
        assert close.float().mean() > 0.995, (k, int((~close).sum()), v.numel())


def test_tokens_per_s_counts_the_texts_real_tokens(tmp_path, colours):
    """Each micro-batch counted by hand from its texts' lengths: tokens/s the positions computed
    (the real tokens where the batch is unpadded), tokens_seen the real tokens."""
    train(cfg(tmp_path, colours, batch_size=4, gradient_accumulation_steps=2, max_iters=4, eval_interval=4))
    data = LabelledBatches(colours / "colours", "train", 4, BASE["block_size"], seed=TrainConfig().seed)
    need = [[data.lengths[rows] for rows in data.draw_step(2).micro_batches] for _ in range(4)]
    tiny.check_logged_counts(tmp_path, need)


def test_resume_is_exact_and_the_checkpoint_keeps_the_labels(tmp_path, colours, capsys):
    full, half = tmp_path / "full", tmp_path / "half"
    train(cfg(full, colours, dropout=0.1, train_layers="last_block", always_save_checkpoint=False))
    out = capsys.readouterr().out
    assert "84 training examples, 3 labels" in out and "val accuracy" in out
    train(cfg(half, colours, dropout=0.1, train_layers="last_block", always_save_checkpoint=False, max_iters=3))
    train(cfg(half, colours, dropout=0.1, train_layers="last_block", always_save_checkpoint=False, init_from="resume"))
    a, b = records(full, "step"), records(half, "step")
    assert len(a) == 6 and [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["tokens"] for r in a] == [r["tokens"] for r in b]  # tokens_seen goes on from the checkpoint
    assert [r["val_accuracy"] for r in records(full, "eval")] == [r["val_accuracy"] for r in records(half, "eval")]
    ckpt = checkpoint.load(checkpoint.latest_in(half))
    assert ckpt.labels == ["blue", "green", "red"] and ckpt.model_args["n_labels"] == 3
    for k, v in weights(checkpoint.latest_in(full)).items():
        assert torch.equal(v, ckpt.model[k]), k


@pytest.mark.parametrize("layers", ["head", "last_block"])
def test_train_layers_leave_the_rest_untouched(tmp_path, colours, layers, capsys):
    from gptkit.train import Precision, build_model

    settings = cfg(tmp_path / layers, colours, train_layers=layers, max_iters=3, eval_interval=3)
    torch.manual_seed(settings.seed)  # as the run does: the same scratch weights and head
    start = {
        k: v.clone()
        for k, v in build_model(settings, None, Precision(torch.float32, "", "cpu"))[0].state_dict().items()
    }
    train(settings)
    n, n_labels = 32, 3
    # two LayerNorms, q/k/v, the attention's projection, the MLP's two layers (weights and biases)
    block = 2 * 2 * n + (3 * n * n + 3 * n) + (n * n + n) + (4 * n * n + 4 * n) + (4 * n * n + n)
    trained = n * n_labels + (block + 2 * n if layers == "last_block" else 0)  # + the final LayerNorm
    assert f"{trained:,} parameters train (train_layers={layers}" in capsys.readouterr().out
    end = weights(tmp_path / layers / checkpoint.BEST)
    for name, before in start.items():
        if name == "lm_head.weight":
            continue  # tied to wte
        moved = not torch.equal(before, end[name])
        last = name.startswith(("transformer.h.1.", "transformer.ln_f"))
        assert moved == (name == "score.weight" or (layers == "last_block" and last)), name


def test_lora_trains_adapters_and_head_and_resumes(tmp_path, colours, hf_classifier, tiny_hf_dir, capsys):
    run = tmp_path / "lora"
    settings = dict(init_from=str(tiny_hf_dir), lora_rank=2, always_save_checkpoint=True)
    train(cfg(run, colours, **settings, max_iters=3))
    assert "parameters train (LoRA adapters and head" in capsys.readouterr().out
    ckpt = checkpoint.load(run / checkpoint.BEST)
    assert "score.weight" in ckpt.model and all("lora_" in k or k == "score.weight" for k in ckpt.model)
    model = checkpoint.model_from_checkpoint(ckpt, run / checkpoint.BEST)
    assert torch.equal(model.score.weight, ckpt.model["score.weight"])
    train(cfg(run, colours, **settings | dict(init_from="resume")))
    assert len(records(run, "step")) == 6


def test_messages_name_the_followed_figure(tmp_path, colours, capsys):
    """best_by=accuracy: best_val_loss holds 1 - accuracy, but the header, the early stop, the summary
    and the resume line speak of val accuracy, with the accuracy metrics.jsonl logged."""
    out = tmp_path / "acc"
    # a learning rate too small to move any answer: accuracy cannot improve after step 0
    still = dict(learning_rate=1e-9, train_layers="head", early_stop_patience=1, max_iters=30)
    summary = train(cfg(out, colours, **still))
    printed = capsys.readouterr().out
    evals = records(out, "eval")
    assert "follow val accuracy (best_by=accuracy)" in printed
    assert summary["stopped_early"] and summary["best_by"] == "val accuracy"
    assert summary["best"] == pytest.approx(evals[0]["val_accuracy"]) and evals[0]["val_accuracy"] < 0.9
    assert summary["best_val_loss"] == pytest.approx(1 - evals[0]["val_accuracy"])  # the checkpoint format's score
    assert f"early stop: val accuracy has not improved for 1 evaluations (best val accuracy {summary['best']:.4f})" in (
        printed
    )
    assert "val loss has not improved" not in printed
    train(cfg(out, colours, **still | dict(init_from="resume", early_stop_patience=0, max_iters=6)))
    assert f"; best val accuracy so far {summary['best']:.4f}" in capsys.readouterr().out
    by_loss = train(cfg(tmp_path / "loss", colours, best_by="loss", max_iters=3))
    assert "follow val loss (best_by=loss)" in capsys.readouterr().out
    assert by_loss["best_by"] == "val loss" and by_loss["best"] == by_loss["best_val_loss"]
    assert by_loss["best"] == pytest.approx(min(r["val_loss"] for r in records(tmp_path / "loss", "eval")))


def test_train_layers_with_lora_is_one_clear_error(tmp_path, colours, tiny_hf_dir):
    """--train_layers off its default and --lora_rank: refused in one line, nothing written; at its
    default, LoRA is the choice."""
    from conftest import assert_user_error, run_cli_in_process

    args = [f"--{k}={v}" for k, v in LORA_BASE.items()] + [f"--data_root={colours}", f"--init_from={tiny_hf_dir}"]
    for layers in ("head", "all"):
        out = tmp_path / layers
        result = run_cli_in_process(
            "-m", "gptkit.train", *args, f"--out_dir={out}", "--lora_rank=2", f"--train_layers={layers}"
        )
        assert_user_error(result, f"train_layers={layers} and lora_rank=2", "drop --train_layers", "--lora_rank=0")
        assert not out.exists()
    out = tmp_path / "default"
    result = run_cli_in_process("-m", "gptkit.train", *args, f"--out_dir={out}", "--lora_rank=2", "--max_iters=1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "parameters train (LoRA adapters and head" in result.stdout


def test_a_setting_of_another_kind_of_dataset_is_one_clear_error(tmp_path, colours):
    """mask_prompt chooses the targets of prompt -> response examples: on labelled texts it would do nothing."""
    from conftest import assert_user_error, run_cli_in_process

    args = [f"--{k}={v}" for k, v in BASE.items()] + [f"--data_root={colours}", f"--out_dir={tmp_path / 'run'}"]
    result = run_cli_in_process("-m", "gptkit.train", *args, "--mask_prompt=False")
    assert_user_error(
        result, f"mask_prompt applies to example datasets (prompt -> response) only, but {colours / 'colours'} is "
        "a classification dataset: drop mask_prompt=False"
    )  # fmt: skip
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("sharding", [[], ["--fsdp=True"]], ids=["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, colours, sharding):
    """scripts/ddp_finetune.py under torchrun, 2 gloo processes, DDP or FSDP (the model sharded, the
    frozen layers frozen on every shard): the same losses, accuracies and weights as 1 process."""
    import sys

    from test_ddp import check_ok, launch_together, torchrun_cmd

    settings = BASE | dict(data_root=str(colours), batch_size=2, gradient_accumulation_steps=4, eval_iters=5)
    settings |= dict(dtype="float32", train_layers="last_block")
    config = tmp_path / "cls.py"
    config.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
    one, two = tmp_path / "one", tmp_path / "two"
    procs = launch_together(
        [sys.executable, "-m", "gptkit.train", str(config), f"--out_dir={one}"],
        [*torchrun_cmd(2), str(config), f"--out_dir={two}", *sharding],
    )
    for proc in procs:
        check_ok(proc)
    assert "over 2 processes" in procs[1].stdout and procs[1].stdout.count("step 3: train loss") == 1
    trained = [next(ln for ln in p.stdout.splitlines() if "parameters train" in ln) for p in procs]
    assert trained[0] == trained[1] and "(train_layers=last_block" in trained[0]  # frozen under FSDP too
    a, b = records(one, "step"), records(two, "step")
    assert len(a) == 6 and [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=1e-5)
    for key in ("val_loss", "val_accuracy", "train_accuracy"):
        assert [r[key] for r in records(one, "eval")] == pytest.approx([r[key] for r in records(two, "eval")], abs=1e-6)
    wa, wb = weights(one / checkpoint.BEST), weights(two / checkpoint.BEST)
    assert wa.keys() == wb.keys()
    for k, v in wa.items():
        diff = (v - wb[k]).abs()
        if k.endswith("c_attn.bias"):
            # The key bias's gradient is zero but for rounding (softmax ignores a shift shared by all
            # keys), and AdamW moves a weight by up to lr whatever its gradient's size: it may part.
            assert diff.max() <= 6 * BASE["learning_rate"], k
            diff = torch.cat([diff[:32], diff[64:]])  # the query and value biases
        assert diff.max() <= 1e-5, k
