"""The benchmark scripts keep working: each runs at a tiny size and prints its ratio line.

They time nothing that is asserted here: speed is measured by running them at full size
(benchmarks/README.md); this only guards against their rotting.
"""

import re

import pytest

from conftest import run_cli

TINY_MODEL = ("--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=64")


def ratios(stdout: str) -> dict[str, float]:
    """{label: value} for every `ratio LABEL: 1.23x ...` line."""
    return {m[1]: float(m[2]) for m in re.finditer(r"^ratio (.+?): ([0-9.]+)x", stdout, re.MULTILINE)}


def run_ok(*args: str, timeout: float = 120) -> str:
    result = run_cli(*args, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stdout


def test_bench_train_tiny():
    out = run_ok(
        "benchmarks/bench_train.py",
        *TINY_MODEL,
        "--seq_len=16",
        "--batch_size=2",
        "--steps=2",
        "--hf_dtypes=float32,bfloat16",
        "--breakdown",
    )
    assert set(ratios(out)) == {"gptkit/transformers"}, out
    # the ratio is gptkit's tokens/s over the faster transformers setting's, as printed above it
    tps = dict(re.findall(r"^ *(gptkit|transformers fp32|transformers bf16): +([0-9.]+) tokens/s", out, re.MULTILINE))
    tps = {k: float(v) for k, v in tps.items()}
    best = max(v for k, v in tps.items() if k.startswith("transformers"))
    assert ratios(out)["gptkit/transformers"] == pytest.approx(tps["gptkit"] / best, abs=0.006), out
    # gptkit at auto, transformers in both settings; each with throughput and MFU against a
    # peak measured in its own dtype
    assert re.search(r"^gptkit dtype: (float32|bfloat16)", out, re.MULTILINE), out
    mfus = dict(re.findall(r"^ *(gptkit|transformers fp32|transformers bf16): .* MFU (\d+)%", out, re.MULTILINE))
    assert set(mfus) == {"gptkit", "transformers fp32", "transformers bf16"}, out
    assert re.search(r"matmul peak fp32: \d+ GFLOP/s", out) and re.search(r"matmul peak bf16: \d+ GFLOP/s", out), out
    # --breakdown: each step split by kind of kernel, the parts adding up to the whole
    parts = re.findall(
        r"^ *(.+?): ([0-9.]+) s = matmuls ([0-9.]+), attention ([0-9.]+), optimizer ([0-9.]+), "
        r"the rest ([0-9.]+)$",
        out,
        re.MULTILINE,
    )
    assert {p[0] for p in parts} == {"gptkit", "transformers fp32", "transformers bf16"}, out
    for _, total, *kinds in parts:
        assert abs(sum(map(float, kinds)) - float(total)) <= 0.003, out
    assert re.search(r"^ceiling gptkit/transformers: [0-9.]+x if gptkit's step were only", out, re.MULTILINE), out


@pytest.mark.slow  # `make test-slow`; bench_train's and bench_task's tiny runs stay in `make test`
def test_bench_sample_tiny():
    out = run_ok(
        "benchmarks/bench_sample.py", *TINY_MODEL, "--new_tokens=6", "--batches=1,2", "--repeats=1", "--bandwidth_mb=32"
    )
    assert set(ratios(out)) == {
        "batch 1 gptkit/transformers",
        "batch 1 gptkit cache/no cache",
        "batch 2 gptkit/transformers",
    }, out
    # the greedy tokens are compared with transformers' inside the script
    assert out.count("greedy tokens identical") == 2, out
    # each contender is set against the memory-bandwidth bound measured on the machine
    assert re.search(r"memory read bandwidth: [0-9.]+ GB/s with all threads", out), out
    assert len(re.findall(r"tokens/s +\d+% of the bound", out)) == 7, out
    # and against the weight products alone, timed on their own (a ceiling for any decoder)
    assert len(re.findall(r"^ +products only: +[0-9.]+ tokens/s", out, re.MULTILINE)) == 2, out
    assert len(re.findall(r"% of the bound, +\d+% of products only", out)) == 5, out


def test_bench_prepare_tiny():
    out = run_ok("benchmarks/bench_prepare.py", "--mb=0.3", "--repeats=1", "--warmup=0")
    assert set(ratios(out)) == {"prepare/encode_ordinary"}, out
    assert "equal encode_ordinary's" in out, out


@pytest.mark.slow  # `make test-slow`: three child runs measured for peak memory
def test_bench_memory_tiny(tmp_path, shakespeare_bins):
    out = run_ok(
        "benchmarks/bench_memory.py",
        "--n_layer=2",
        "--n_head=2",
        "--n_embd=64",
        "--block_size=64",
        f"--models_dir={tmp_path}",
        f"--data_root={shakespeare_bins.parent}",
    )
    expected = {"loading peak/weights", "estimated/measured loading peak", "estimate/measured (LoRA + checkpointing)"}
    assert expected <= set(ratios(out)), out
    assert re.search(r"full finetune .* stopped by the memory check after [0-9.]+ s, exit 1", out), out
    assert re.search(r"^error: this run needs about .* it fits with .*--check_memory=False", out, re.MULTILINE), out
    bf16 = run_ok(
        "benchmarks/bench_memory.py",
        *("--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=64", "--dtype=bfloat16", "--loading_only"),
        *(f"--models_dir={tmp_path}", f"--data_root={shakespeare_bins.parent}"),
    )
    assert "loading stage in bfloat16" in bf16 and "estimated/measured loading peak" in ratios(bf16), bf16
    assert "1 iteration" not in bf16, bf16  # --loading_only: no training step


@pytest.mark.slow  # `make test-slow`: two child training runs measured for peak memory
def test_bench_allocator_tiny(tmp_path, shakespeare_bins):
    out = run_ok(
        "benchmarks/bench_allocator.py",
        *TINY_MODEL,
        "--batch_size=2",
        "--iters=2",
        "--pairs=1",
        f"--models_dir={tmp_path}",
        f"--data_root={shakespeare_bins.parent}",
        timeout=600,
    )
    found = set(ratios(out))
    assert {
        "step time gptkit (128 kB fixed)/glibc default",
        "estimate/highest peak (gptkit (128 kB fixed))",
    } <= found, out


def test_bench_task_tiny():
    out = run_ok("benchmarks/bench_task.py", *TINY_MODEL, "--batch_size=2", "--steps=2", "--hf_dtypes=float32")
    assert set(ratios(out)) == {"gptkit/transformers"}, out
    tps = dict(re.findall(r"^ *(gptkit|transformers fp32): +([0-9.]+) response tokens/s", out, re.MULTILINE))
    assert ratios(out)["gptkit/transformers"] == pytest.approx(
        float(tps["gptkit"]) / float(tps["transformers fp32"]), rel=0.01
    )


def test_bench_dpo_tiny():
    out = run_ok("benchmarks/bench_dpo.py", *TINY_MODEL, "--batch_size=2", "--steps=2")
    pps = dict(re.findall(r"^ *(gptkit|transformers): +([0-9.]+) pairs/s", out, re.MULTILINE))
    assert ratios(out)["gptkit/transformers"] == pytest.approx(
        float(pps["gptkit"]) / float(pps["transformers"]), rel=0.01
    )


def test_bench_classify_tiny():
    out = run_ok("benchmarks/bench_classify.py", *TINY_MODEL, "--batch_size=4", "--steps=2", "--hf_dtypes=float32")
    assert set(ratios(out)) == {"gptkit/transformers"}, out
    eps = dict(re.findall(r"^ *(gptkit|transformers fp32): +([0-9.]+) examples/s", out, re.MULTILINE))
    assert ratios(out)["gptkit/transformers"] == pytest.approx(
        float(eps["gptkit"]) / float(eps["transformers fp32"]), abs=0.006
    )
    assert "train_layers=last_block" in out, out
