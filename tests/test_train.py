import json
import math

import pytest
import torch

import tiny
from conftest import run_cli, run_cli_in_process
from gptkit import checkpoint, cpu_kernels
from gptkit.config import TrainConfig
from gptkit.data import ExampleBatches
from gptkit.errors import GptkitError
from gptkit.train import lr_at, train
from tiny import records

TINY = tiny.TINY | tiny.SCHEDULE | dict(gradient_accumulation_steps=2, learning_rate=3e-3, dropout=0.1, min_lr=3e-4)


def tiny_cfg(out_dir, **kw) -> TrainConfig:
    return tiny.tiny_cfg(out_dir, TINY, **kw)


def weights(path):
    return checkpoint.load(path).model


def test_resume_is_exact(tmp_path, shakespeare_bins):
    """2N iterations in one go == N iterations, then init_from=resume to 2N: every loss, every weight."""
    full, half = tmp_path / "full", tmp_path / "half"
    train(tiny_cfg(full, max_iters=8, eval_interval=2))
    train(tiny_cfg(half, max_iters=4, eval_interval=2))
    first = [r["loss"] for r in records(half, "step")]
    train(tiny_cfg(half, max_iters=8, eval_interval=2, init_from="resume"))
    losses_full = [r["loss"] for r in records(full, "step")]
    losses_half = [r["loss"] for r in records(half, "step")]
    assert len(losses_full) == 8 and losses_half[:4] == first
    assert losses_half == losses_full  # bit for bit: same windows, dropout masks, optimizer state
    assert [r["val_loss"] for r in records(half, "eval")] == [r["val_loss"] for r in records(full, "eval")]
    a, b = checkpoint.latest_in(full), checkpoint.latest_in(half)
    assert checkpoint.load(a).iter_num == checkpoint.load(b).iter_num == 8
    for key, value in weights(a).items():
        assert torch.equal(value, weights(b)[key]), key


def as_written_by_version_1(path) -> None:
    """Rewrite a checkpoint as gptkit wrote it before checkpoints named their format: no
    format_version, dtype or newer counters, one RNG state, one "training" CPU matmul route."""
    raw = torch.load(path, weights_only=True)
    for key in ("format_version", "dtype", "evals_since_best", "tokens_seen", "lora"):
        del raw[key]
    raw["rng"] = raw["rng"][0]
    routes = raw["cpu_matmul"]
    assert routes["forward"] == routes["backward"]  # one route can stand for both
    raw["cpu_matmul"] = {"training": routes["forward"], "inference": routes["inference"]}
    torch.save(raw, path)


def test_a_checkpoint_of_the_older_format_loads_and_resumes_exactly(tmp_path, shakespeare_bins, monkeypatch):
    """A version-1 file resumes as its run would have gone on: same losses, same weights."""
    full, half = tmp_path / "full", tmp_path / "half"
    onednn = {"forward": True, "backward": True, "inference": False}  # what the old file can say
    with monkeypatch.context() as measured:
        measured.setattr(cpu_kernels, "measure_routes", lambda: onednn)
        train(tiny_cfg(full, max_iters=8, eval_interval=2, dtype="float32"))
        train(tiny_cfg(half, max_iters=4, eval_interval=2, dtype="float32"))
    as_written_by_version_1(checkpoint.latest_in(half))
    old = checkpoint.load(checkpoint.latest_in(half))
    assert old.format_version == checkpoint.FORMAT_VERSION and old.dtype is None and old.tokens_seen == 0
    assert old.cpu_matmul == onednn and len(old.rng) == 1
    train(tiny_cfg(half, max_iters=8, eval_interval=2, dtype="float32", init_from="resume"))
    assert [r["loss"] for r in records(half, "step")] == [r["loss"] for r in records(full, "step")]
    a, b = checkpoint.latest_in(full), checkpoint.latest_in(half)
    for key, value in weights(a).items():
        assert torch.equal(value, weights(b)[key]), key


def test_checkpoint_contents_and_best_vs_latest(tmp_path, shakespeare_bins):
    out = tmp_path / "run"
    # A learning rate this high makes val loss rise after a few steps: ckpt.pt must stay at the best.
    summary = train(
        tiny_cfg(out, max_iters=12, eval_interval=2, learning_rate=0.05, decay_lr=False, always_save_checkpoint=False)
    )
    evals = records(out, "eval")
    best = min(evals, key=lambda r: r["val_loss"])
    ckpt = checkpoint.load(out / checkpoint.BEST)
    assert ckpt.iter_num == best["iter"] and ckpt.best_val_loss == pytest.approx(best["val_loss"])
    assert summary["best_val_loss"] == pytest.approx(best["val_loss"])
    if best["iter"] != 12:
        assert checkpoint.load(out / checkpoint.LATEST).iter_num == 12
        assert checkpoint.latest_in(out) == out / checkpoint.LATEST
    raw = torch.load(out / checkpoint.BEST, weights_only=True)  # loads without unpickling code
    for key in ("model", "optimizer", "scaler", "model_args", "config", "iter_num", "best_val_loss", "rng", "sampler"):
        assert key in raw
    assert raw["format_version"] == checkpoint.FORMAT_VERSION
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in ckpt.model)


def test_metrics_and_seed_log_format(tmp_path, shakespeare_bins):
    result = run_cli_in_process(
        "-m",
        "gptkit.train",
        *(f"--{k}={v}" for k, v in TINY.items()),
        f"--out_dir={tmp_path}",
        "--max_iters=4",
        "--eval_interval=2",
    )
    assert result.returncode == 0, result.stderr
    for it in (0, 2, 4):
        assert f"step {it}: train loss " in result.stdout
    steps = records(tmp_path, "step")
    assert [r["iter"] for r in steps] == [0, 1, 2, 3]
    assert " | 128 tokens per iteration (2 x 2 x 32) | " in result.stdout
    positions, tokens = tiny.logged_counts(tmp_path)  # a stream: every position of 2 x 2 windows of 32
    assert positions == pytest.approx([2 * 2 * 32] * 4, rel=1e-9) and tokens == [128, 256, 384, 512]
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 for r in steps)
    assert {"train_loss", "val_loss", "lr", "tokens", "time"} <= set(records(tmp_path, "eval")[0])
    assert json.loads((tmp_path / "config.json").read_text())["max_iters"] == 4


def test_eval_uses_the_same_batches_every_time(tmp_path, shakespeare_bins):
    # With a zero learning rate nothing changes, so every evaluation must give the same numbers.
    train(tiny_cfg(tmp_path, max_iters=4, eval_interval=1, decay_lr=False, learning_rate=1e-30, weight_decay=0.0))
    vals = {(r["train_loss"], r["val_loss"]) for r in records(tmp_path, "eval")}
    assert len(vals) == 1


def test_training_lowers_the_loss(tmp_path, shakespeare_bins):
    train(tiny_cfg(tmp_path, max_iters=30, eval_interval=30, decay_lr=False, learning_rate=1e-2, dropout=0.0))
    evals = records(tmp_path, "eval")
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 2.0


def test_early_stop(tmp_path, shakespeare_bins):
    summary = train(
        tiny_cfg(
            tmp_path,
            max_iters=200,
            eval_interval=1,
            learning_rate=0.5,
            decay_lr=False,
            early_stop_patience=2,
            grad_clip=0.0,
        )
    )
    assert summary["stopped_early"]
    evals = records(tmp_path, "eval")
    assert len(evals) < 200
    best = min(r["val_loss"] for r in evals)
    assert evals[-1]["val_loss"] > best and evals[-2]["val_loss"] > best


def test_nan_loss_stops_without_a_checkpoint(tmp_path, shakespeare_bins):
    with pytest.raises(GptkitError, match="loss became"):
        train(
            tiny_cfg(
                tmp_path,
                max_iters=50,
                eval_interval=1000,
                learning_rate=1e12,
                decay_lr=False,
                grad_clip=0.0,
                always_save_checkpoint=False,
            )
        )
    # only the eval at step 0 ran, and it never writes a checkpoint for an untrained model
    assert not (tmp_path / checkpoint.BEST).exists() and not (tmp_path / checkpoint.LATEST).exists()


@pytest.mark.slow  # `make test-slow`; the hub test trains from a downloaded HF checkpoint in `make test`
def test_finetune_from_local_hf_checkpoint_end_to_end(tmp_path, tiny_hf_dir, shakespeare_bins):
    """The issue's 'done when': nanoGPT's finetuning config, a tiny local HF checkpoint, CPU, offline."""
    out = tmp_path / "ft"
    result = run_cli(
        "-m",
        "gptkit.train",
        "config/finetune_shakespeare.py",
        f"--init_from={tiny_hf_dir}",
        "--device=cpu",
        f"--out_dir={out}",
        "--gradient_accumulation_steps=2",
        "--block_size=128",
        "--eval_iters=4",
        "--max_iters=10",
        "--progress=False",
        "--learning_rate=1e-3",
        f"--data_root={shakespeare_bins.parent}",
    )
    assert result.returncode == 0, result.stderr
    assert "step 10: train loss" in result.stdout
    ckpt = checkpoint.load(out / checkpoint.BEST)
    assert ckpt.model_args["n_layer"] == 2 and ckpt.config["init_from"] == str(tiny_hf_dir)
    sample = run_cli(
        "-m",
        "gptkit.sample",
        f"--out_dir={out}",
        "--num_samples=2",
        "--max_new_tokens=8",
        "--device=cpu",
        "--start=ROMEO:",
    )
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.count("ROMEO:") == 2


def test_lr_schedule():
    cfg = TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110)
    assert lr_at(0, cfg) == pytest.approx(1 / 11)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)
    assert lr_at(110, cfg) == pytest.approx(0.1) and lr_at(500, cfg) == 0.1
    assert lr_at(5, TrainConfig(learning_rate=0.3, decay_lr=False)) == 0.3


def header_of(cfg: TrainConfig, capsys) -> list[str]:
    """The learning-rate lines a real run prints before its first step (its metrics checked beside)."""
    train(cfg)
    return [ln for ln in capsys.readouterr().out.splitlines() if "learning rate" in ln or "max_iters=" in ln]


def test_header_says_when_max_iters_cuts_the_schedule_short(tmp_path, shakespeare_bins, capsys):
    # nanoGPT's defaults on a short run: the warmup (2000) outlasts the run; the rate never reaches 3e-3
    cfg = tiny_cfg(tmp_path / "short", max_iters=4, eval_interval=4, warmup_iters=2000, lr_decay_iters=600000)
    schedule, cut = header_of(cfg, capsys)
    assert schedule == "learning rate: warmup to 0.003 at iteration 2000, cosine down to min_lr 0.0003 at 600000"
    highest = max(r["lr"] for r in records(tmp_path / "short", "step"))  # what the run really used
    assert highest == pytest.approx(lr_at(3, cfg)) and highest < cfg.learning_rate / 100
    assert cut.startswith("  max_iters=4 stops inside the warmup: the highest rate this run reaches is ")
    assert f" {highest:.3g}, not 0.003; " in cut and "--decay_lr=False" in cut

    # warmup done, but the cosine cut off: where the rate ends, and which setting decays it fully
    cfg = tiny_cfg(tmp_path / "decay", max_iters=4, eval_interval=4, warmup_iters=1, lr_decay_iters=20)
    _, cut = header_of(cfg, capsys)
    last = records(tmp_path / "decay", "step")[-1]["lr"]
    assert last == pytest.approx(lr_at(3, cfg)) and last > 2 * cfg.min_lr
    assert f"the rate reaches 0.003 and ends at {last:.3g}," in cut
    assert cut.endswith("--lr_decay_iters=4 decays it fully")

    # a schedule that fits the run, and a constant rate: one line each
    fits = header_of(tiny_cfg(tmp_path / "fits", max_iters=10, eval_interval=10), capsys)
    assert fits == ["learning rate: warmup to 0.003 at iteration 2, cosine down to min_lr 0.0003 at 10"]
    constant = header_of(tiny_cfg(tmp_path / "constant", max_iters=2, eval_interval=2, decay_lr=False), capsys)
    assert constant == ["learning rate: constant 0.003"]


def test_fp16_grad_scaler_path_trains_and_resumes(tmp_path, shakespeare_bins):
    """float16 autocast with a GradScaler (CUDA's path where bf16 is missing) also runs on CPU."""
    out = tmp_path / "fp16"
    train(tiny_cfg(out, max_iters=4, eval_interval=2, dtype="float16", dropout=0.0, always_save_checkpoint=True))
    scaler = checkpoint.load(out / checkpoint.BEST).scaler
    assert scaler and scaler["scale"] > 0  # the scaler's state is checkpointed
    summary = train(tiny_cfg(out, max_iters=6, eval_interval=2, dtype="float16", dropout=0.0, init_from="resume"))
    assert summary["iter_num"] == 6
    assert [r["iter"] for r in records(out, "step")] == list(range(6))
    assert all(math.isfinite(r["loss"]) for r in records(out, "step"))


def test_grad_checkpoint_run_trains_like_the_plain_run(tmp_path, shakespeare_bins):
    """--grad_checkpoint=True changes memory, not the numbers: the same losses as the plain run."""
    plain, ckpt = tmp_path / "plain", tmp_path / "ckpt"
    train(tiny_cfg(plain, max_iters=3, eval_interval=3))
    train(tiny_cfg(ckpt, max_iters=3, eval_interval=3, grad_checkpoint=True))
    a, b = [r["loss"] for r in records(plain, "step")], [r["loss"] for r in records(ckpt, "step")]
    assert len(a) == 3 and a == pytest.approx(b, rel=1e-5)
    assert records(ckpt, "eval")[-1]["val_loss"] == pytest.approx(records(plain, "eval")[-1]["val_loss"], rel=1e-5)


def test_resumed_auto_run_keeps_the_dtype_it_was_trained_in(tmp_path, shakespeare_bins, monkeypatch):
    """On CPU --dtype=auto is a measurement; a resumed run must not flip precision when it comes out otherwise."""
    import gptkit.device as device_module

    full, half = tmp_path / "full", tmp_path / "half"
    monkeypatch.setattr(device_module, "cpu_autocast_dtype", lambda: (torch.float32, "measured: fp32 faster"))
    train(tiny_cfg(full, max_iters=6, eval_interval=3, dtype="auto"))
    train(tiny_cfg(half, max_iters=3, eval_interval=3, dtype="auto"))
    assert checkpoint.load(checkpoint.latest_in(half)).dtype == "float32"
    # The resumed process measures bf16 as faster; the run goes on in fp32 all the same.
    monkeypatch.setattr(device_module, "cpu_autocast_dtype", lambda: (torch.bfloat16, "measured: bf16 faster"))
    train(tiny_cfg(half, max_iters=6, eval_interval=3, dtype="auto", init_from="resume"))
    assert [r["loss"] for r in records(half, "step")] == [r["loss"] for r in records(full, "step")]
    assert checkpoint.load(checkpoint.latest_in(half)).dtype == "float32"


# --- example datasets: whole examples, padded, the loss on the responses ----------------------
@pytest.fixture(scope="module")
def qa_root(tmp_path_factory):
    """40 prompt -> completion examples of different lengths, 32 to train and 8 to validate."""
    from gptkit.prepare import prepare

    root = tmp_path_factory.mktemp("qa")
    rows = [{"prompt": f"Q: {'how ' * (i % 5)}much is {i} + {i}?\nA:", "completion": f" {2 * i}"} for i in range(40)]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:32]))
    (root / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[32:]))
    prepare(root / "train.jsonl", root / "qa", val=root / "val.jsonl")
    return root


def qa_cfg(out_dir, qa_root, **kw) -> TrainConfig:
    settings = dict(dataset="qa", data_root=str(qa_root), dropout=0.0, eval_interval=3, max_iters=6, decay_lr=False)
    return tiny_cfg(out_dir, **(settings | kw))


def test_examples_train_on_responses_and_resume_exactly(tmp_path, qa_root, capsys):
    full, half = tmp_path / "full", tmp_path / "half"
    train(qa_cfg(full, qa_root, dropout=0.1))
    assert "32 training examples" in capsys.readouterr().out
    train(qa_cfg(half, qa_root, dropout=0.1, max_iters=3))
    train(qa_cfg(half, qa_root, dropout=0.1, init_from="resume"))
    a, b = records(full, "step"), records(half, "step")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bit for bit: same examples, masks, order
    assert [r["tokens"] for r in a] == [r["tokens"] for r in b]  # tokens_seen goes on from the checkpoint
    # 2 x 2 examples a step from 32: the epoch is recorded and ticks over after 8 steps
    assert [r["epoch"] for r in a] == [(i + 1) * 4 / 32 for i in range(6)]
    for k, v in weights(full / checkpoint.BEST).items():
        assert torch.equal(v, weights(half / checkpoint.BEST)[k]), k


def test_every_target_token_weighs_the_same_in_accumulation(tmp_path, qa_root):
    """4 micro-batches of 1 example are 1 micro-batch of 4: the same losses and weights."""
    # eval_iters=8: both evaluate all 8 val examples (in 2 batches of 4, or 8 of 1)
    one = train(qa_cfg(tmp_path / "one", qa_root, batch_size=4, gradient_accumulation_steps=1, eval_iters=8))
    four = train(qa_cfg(tmp_path / "four", qa_root, batch_size=1, gradient_accumulation_steps=4, eval_iters=8))
    assert one["best_val_loss"] == pytest.approx(four["best_val_loss"], rel=1e-5)
    a, b = records(tmp_path / "one", "step"), records(tmp_path / "four", "step")
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-5)
    wa, wb = weights(tmp_path / "one" / checkpoint.BEST), weights(tmp_path / "four" / checkpoint.BEST)
    for k, v in wa.items():
        # AdamW moves a weight by up to lr a step whatever the size of its gradient: where a gradient
        # is itself rounding noise, the two runs can part by that much. A handful of weights, where a
        # wrong weighting of the tokens would move most of them.
        close = torch.isclose(v, wb[k], rtol=1e-3, atol=1e-4)
        assert close.float().mean() > 0.995, (k, int((~close).sum()), v.numel())
        assert (v - wb[k]).abs().max() <= 6 * TrainConfig().learning_rate, k


def test_example_val_loss_equals_transformers_on_the_response_tokens(tmp_path, qa_root, tiny_hf_dir):
    """The val loss training reports, recomputed independently: HF GPT-2 with -100 on prompt and padding."""
    from transformers import GPT2LMHeadModel

    from gptkit.data import open_examples

    summary = train(qa_cfg(tmp_path / "hf", qa_root, init_from=str(tiny_hf_dir), eval_only=True, eval_iters=10))
    val = open_examples(qa_root / "qa", "val")
    hf = GPT2LMHeadModel.from_pretrained(tiny_hf_dir).eval()
    width = int(val.lengths.max())
    ids = torch.full((len(val.lengths), width), 50256)
    labels = torch.full((len(val.lengths), width), -100)
    for i, (start, end) in enumerate(zip(val.offsets[:-1], val.offsets[1:], strict=True)):
        tokens = torch.from_numpy(val.tokens[start:end].astype("int64"))
        ids[i, : end - start] = tokens
        labels[i, : end - start] = torch.where(torch.from_numpy(val.mask[start:end] == 1), tokens, -100)
    with torch.no_grad():
        logits = hf(ids).logits[:, :-1]
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], reduction="sum")
    expected = (losses / (labels[:, 1:] != -100).sum()).item()
    assert summary["last_val_loss"] == pytest.approx(expected, abs=1e-5)


@pytest.fixture(scope="module")
def ragged_root(tmp_path_factory):
    """40 prompt -> completion examples of about 10 to 50 tokens: a micro-batch of them is much padding."""
    from gptkit.prepare import prepare

    root = tmp_path_factory.mktemp("ragged")
    rows = [
        {"prompt": f"Q: {'and ' * (5 * (i % 8))}what is {i} + {i}?\nA:", "completion": f" {2 * i}"} for i in range(40)
    ]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:32]))
    (root / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[32:]))
    prepare(root / "train.jsonl", root / "ragged", val=root / "val.jsonl")
    return root


def test_tokens_per_s_and_mfu_count_the_positions_computed_on_examples(tmp_path, ragged_root, capsys):
    """Each micro-batch's rows counted by hand: tokens/s counts the real tokens of an unpadded one,
    tokens_seen the real tokens, and MFU's attention term each token's row length, not block_size."""
    peak, iters = 1e12, 5
    train(tiny_cfg(tmp_path, dataset="ragged", data_root=str(ragged_root), batch_size=4, block_size=64,
                   max_iters=iters, eval_interval=iters, mfu_peak_flops=peak))  # fmt: skip
    header = "at most 512 token positions per iteration (4 x 2 x 64; padding included, tokens/s and MFU count the "
    assert header + "positions computed)" in capsys.readouterr().out
    data = ExampleBatches(ragged_root / "ragged", "train", 4, 64, seed=TrainConfig().seed)
    assert data.num_cut == 0  # x holds each example but its last token, the last target
    draws = [data.draw_step(TINY["gradient_accumulation_steps"]).micro_batches for _ in range(iters)]
    need = [[data.lengths[rows] - 1 for rows in step] for step in draws]
    counted = tiny.check_logged_counts(tmp_path, need)
    # PaLM's 6 FLOPs a weight and a token, and 12 L C for each position times its row's length
    state = checkpoint.load(checkpoint.latest_in(tmp_path)).model
    n = sum(v.numel() for k, v in state.items() if k not in ("transformer.wpe.weight", "lm_head.weight"))
    attention = 12 * TINY["n_layer"] * TINY["n_embd"]
    for record, (_, computed, attended) in zip(records(tmp_path, "step"), counted, strict=True):
        assert record["mfu"] * record["dt"] * peak == pytest.approx(6 * n * computed + attention * attended, rel=1e-9)


def test_mask_prompt_on_a_text_stream_is_one_line(tmp_path, shakespeare_bins):
    result = run_cli_in_process(
        "-m",
        "gptkit.train",
        *tiny.cli_args(TINY),
        f"--out_dir={tmp_path / 'run'}",
        "--max_iters=1",
        "--mask_prompt=True",
    )
    assert result.returncode == 1 and "mask_prompt applies to example datasets" in result.stderr
    assert "Traceback" not in result.stderr
