"""gptkit.memory: its activation counts against the tensors PyTorch saves, its whole estimate
against measured peaks, and the check that stops a run before it starts."""

import pytest
import torch

from gptkit import allocator, cpu_kernels
from gptkit.memory import activation_bytes, param_counts, saved_for_backward
from gptkit.model import GPT, GPTConfig


def saved_bytes(model: GPT, idx, targets, bf16: bool) -> int:
    """Distinct storages the forward pass saves for backward (checkpointing included), parameters excluded."""
    return saved_for_backward(model, idx, targets, bf16=bf16)


def recompute_bytes(model: GPT, idx, targets, bf16: bool) -> int:
    """With checkpointing: what the forward keeps, plus the most one block's recomputation saves."""
    assert model.grad_checkpoint
    kept = saved_bytes(model, idx, targets, bf16)
    model.grad_checkpoint = False
    with torch.no_grad():
        x = model.transformer.drop(model.transformer.wte(idx) + model.transformer.wpe(torch.arange(idx.size(1))))
    recomputed = saved_for_backward(model.transformer.h[0], x.requires_grad_(), bf16=bf16, exclude=[x])
    model.grad_checkpoint = True
    return kept + recomputed


def cpu_training_model(model: GPT) -> GPT:
    """The model as a CPU training run computes with it: gptkit.train applies the CPU kernels
    (the blockwise loss keeps a log-sum-exp per row, F.cross_entropy none), and so does the formula."""
    return cpu_kernels.speed_up(model, cpu_kernels.measure_routes())


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("grad_checkpoint", [False, True], ids=["plain", "checkpointed"])
def test_activation_formula_equals_what_pytorch_saves(bf16, dropout, grad_checkpoint):
    cfg = GPTConfig(block_size=48, vocab_size=160, n_layer=2, n_head=4, n_embd=32, dropout=dropout)
    torch.manual_seed(0)
    model = cpu_training_model(GPT(cfg).train())
    model.grad_checkpoint = grad_checkpoint
    idx, targets = (torch.randint(0, cfg.vocab_size, (3, cfg.block_size)) for _ in range(2))  # as Batches
    measure = recompute_bytes if grad_checkpoint else saved_bytes
    measured = measure(model, idx, targets, bf16)
    formula = activation_bytes(cfg, 3, cfg.block_size, half=bf16, grad_checkpoint=grad_checkpoint)
    assert formula == measured


def test_param_counts_match_the_model():
    for bias in (True, False):
        cfg = GPTConfig(block_size=64, vocab_size=300, n_layer=3, n_head=2, n_embd=40, bias=bias)
        with torch.device("meta"):
            model = GPT(cfg)
        total, per_block, _ = param_counts(cfg)
        assert total == model.num_params(non_embedding=False)
        assert per_block == sum(p.numel() for p in model.transformer.h[0].parameters())


# --- the check: one line, before anything is written or loaded --------------------------------


def test_check_stops_nanogpts_recipe_with_one_line_and_writes_nothing(tmp_path, shakespeare_bins):
    """gpt2-xl needs ~28 GiB for a full finetune: with 20 GiB 'available' it stops at once, and says what fits."""
    from conftest import assert_user_error, run_cli_in_process

    out = tmp_path / "out"
    result = run_cli_in_process(
        "-m",
        "gptkit.train",
        "config/finetune_shakespeare.py",
        f"--out_dir={out}",
        env={"GPTKIT_AVAILABLE_MEMORY": "20GiB", "HF_HUB_OFFLINE": "1"},
        timeout=60,
    )
    line = assert_user_error(result, "needs about", "20.0 GiB available", "it fits with", "--check_memory=False")
    fix = line.split("it fits with ")[1].split(" (about ")[0].split()
    assert not out.exists()  # stopped before out_dir was made, long before weights were looked for
    # what it proposes really fits, by the same estimate
    from gptkit.config import TrainConfig, parse_args
    from gptkit.memory import GIB, estimate_run

    fixed = parse_args(TrainConfig, ["config/finetune_shakespeare.py", *fix], "test")
    assert estimate_run(fixed, "cpu", torch.float32).peak <= 20 * GIB
    plain = parse_args(TrainConfig, ["config/finetune_shakespeare.py"], "test")
    assert estimate_run(plain, "cpu", torch.float32).peak > 20 * GIB
    # evaluating the same model needs its weights and a forward pass only
    evaluate = parse_args(TrainConfig, ["config/finetune_shakespeare.py", "--eval_only=True"], "test")
    assert estimate_run(evaluate, "cpu", torch.float32).peak < 8 * GIB


def test_what_fits_never_proposes_lora_to_a_run_that_names_its_trained_layers(shakespeare_bins):
    """--train_layers and --lora_rank refuse each other: the check's proposal must be a run that starts."""
    from dataclasses import replace

    from gptkit.config import TrainConfig, parse_args, validate
    from gptkit.memory import GIB, fitting_settings

    cfg = parse_args(TrainConfig, ["config/finetune_shakespeare.py"], "test")
    proposal, _ = fitting_settings(cfg, "cpu", torch.float32, 20 * GIB)
    assert any(arg.startswith("--lora_rank") for arg in proposal)  # LoRA is the least change here...
    named = replace(cfg, train_layers="all")
    proposal, est = fitting_settings(named, "cpu", torch.float32, 20 * GIB)
    assert not any(arg.startswith("--lora_rank") for arg in proposal), proposal  # ...but not with train_layers
    fixed = parse_args(TrainConfig, ["config/finetune_shakespeare.py", "--train_layers=all", *proposal], "test")
    validate(fixed, world_size=1)
    assert est.peak <= 20 * GIB


def test_check_memory_false_skips_the_check(tmp_path, shakespeare_bins):
    from conftest import run_cli_in_process

    args = (
        "-m",
        "gptkit.train",
        "--init_from=scratch",
        "--n_layer=1",
        "--n_head=2",
        "--n_embd=16",
        "--block_size=16",
        "--batch_size=2",
        "--max_iters=1",
        "--eval_iters=1",
        "--progress=False",
        f"--data_root={shakespeare_bins.parent}",
    )
    tiny = {"GPTKIT_AVAILABLE_MEMORY": "1MiB"}
    stopped = run_cli_in_process(*args, f"--out_dir={tmp_path / 'a'}", env=tiny, timeout=60)
    assert stopped.returncode == 1 and "error: this run needs about" in stopped.stderr
    ran = run_cli_in_process(*args, f"--out_dir={tmp_path / 'b'}", "--check_memory=False", env=tiny, timeout=60)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "memory estimate" in ran.stdout and (tmp_path / "b" / "ckpt.pt").exists()


def test_check_real_case_no_machine_has_this_much(tmp_path, shakespeare_bins):
    """No injected figure: a scratch model of ~4 TB of weights is refused against the real MemAvailable."""
    from conftest import assert_user_error, run_cli_in_process

    result = run_cli_in_process(
        "-m",
        "gptkit.train",
        "--init_from=scratch",
        "--n_layer=2000",
        "--n_head=8",
        "--n_embd=8192",
        "--block_size=64",
        "--device=cpu",
        f"--out_dir={tmp_path / 'big'}",
        timeout=60,
    )
    assert_user_error(result, "needs about", "cpu has", "available")
    assert not (tmp_path / "big").exists()


# --- the estimate against measured peaks ------------------------------------------------------

# A pretrained-style model (LoRA needs one) of ~7.6M parameters, 6.4M in the 50257-token
# embedding; logits and activations of the same order as the weights, so each term matters.
MEASURED_RUN = (
    "--block_size=256",
    "--batch_size=2",
    "--max_iters=2",
    "--eval_interval=100",
    "--eval_iters=1",
    "--device=cpu",
    "--dtype=float32",
    "--progress=False",
    "--check_memory=False",
    "--overwrite_out_dir=True",
)


@pytest.fixture(scope="module")
def measured_hf_dir(tmp_path_factory):
    from conftest import build_hf_gpt2

    return build_hf_gpt2(tmp_path_factory.mktemp("measured-hf"), n_layer=6, n_head=4, n_embd=128, n_positions=256)


def measure(hf_dir, out_dir, *extra: str, env: dict | None = None, timeout: float = 240) -> dict:
    """benchmarks/peak_rss.py in a fresh process: peak RSS over its warmed-up baseline, and the estimate.

    The run fixes glibc's mmap threshold itself (gptkit.allocator), as every CPU training run
    does; `env` is added to the child's environment.
    """
    import json

    from conftest import DATA_ROOT, run_cli

    result = run_cli(
        "benchmarks/peak_rss.py",
        *MEASURED_RUN,
        f"--init_from={hf_dir}",
        f"--out_dir={out_dir}",
        f"--data_root={DATA_ROOT}",
        *extra,
        env=env,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout.splitlines()[-1])
    assert record["error"] is None, record["error"]
    return record


def anon_added(run: dict) -> int:
    """The sampled anonymous memory a run added, not ru_maxrss: a child forked from this pytest
    process (hundreds of MB, torch and transformers loaded) keeps the parent's resident size as its
    high-water mark through exec, above the ~80 MB a last_block classifier run adds to its baseline."""
    return run["anon_peak"] - run["anon_baseline"]


# After a few hundred tests in one pytest process, the same child runs measured 85-130 MB more
# (anonymous memory, not mapped files; the environment was ruled out; cause not found), so
# `make test` runs this first, in a pytest process of its own.
@pytest.mark.quiet_process
def test_estimate_is_within_15_percent_of_the_measured_peak(tmp_path, measured_hf_dir, shakespeare_bins):
    """Full finetune, checkpointed, LoRA: the estimate within 15% of the peak each really reaches,
    and the savings in the order the estimate gives them."""

    def within(run: dict) -> bool:
        # The estimate spans the tensors alone (what the fixed mmap threshold should leave) up to
        # the tensors plus glibc's allowance (what the check uses); the peak must lie within 15%
        # of that span.
        return 0.85 * run["tensors"] <= run["added"] <= 1.15 * run["estimate"]

    def lowest_peak(name: str, *extra: str) -> dict:
        # Noise here only adds (the allocator's retention), so an outlier is measured once more
        # and the lower peak counts, as benchmarks take the fastest time.
        run = measure(measured_hf_dir, tmp_path / name, *extra)
        if not within(run):
            again = measure(measured_hf_dir, tmp_path / name, *extra)
            run = min(run, again, key=lambda r: r["added"])
        return run

    full = lowest_peak("full")
    ckpt = lowest_peak("ckpt", "--grad_checkpoint=True")
    lora = lowest_peak("lora", "--lora_rank=8", "--grad_checkpoint=True")
    for run in (full, ckpt, lora):
        assert run["added"] > 200 * 2**20, run  # the model, not the runtime, dominates what is measured
        assert within(run), run
    assert full["estimate"] > ckpt["estimate"] > lora["estimate"]
    # At this size checkpointing saves 19 MB of 362 (the logits dominate), no more than the
    # run-to-run noise of these peaks (10-16 MB measured: full 331-348 MB, checkpointed
    # 326-342), so only a clear reversal fails; LoRA's saving (~100 MB) must show outright.
    noise = 0.05 * full["tensors"]
    assert ckpt["added"] < full["added"] + noise, (full, ckpt)
    assert lora["added"] < min(full["added"], ckpt["added"]), (full, ckpt, lora)


@pytest.fixture(scope="module")
def long_texts(tmp_path_factory):
    """A classification dataset of texts of 150-220 tokens: activations that count beside the weights."""
    import json
    import random

    from gptkit.prepare import prepare

    root, rng = tmp_path_factory.mktemp("long-texts"), random.Random(0)
    words = "the a big small old new very and of it apple cherry grass leaf sky sea".split()
    rows = []
    for _ in range(120):
        label = rng.choice(["red", "green", "blue"])
        rows.append({"text": " ".join(rng.choice(words) for _ in range(rng.randint(150, 220))), "label": label})
    (root / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepare(root / "long.jsonl", root / "long", val_fraction=0.2)
    return root


@pytest.mark.quiet_process  # measures a child's memory: alone, as the test above
def test_classifier_estimate_is_within_15_percent_of_the_measured_peak(tmp_path, measured_hf_dir, long_texts):
    """A classifier's run has no logits over the vocabulary, and with train_layers=last_block no
    gradients or AdamW state for the frozen layers nor activations below the last block: the
    estimate follows the peak it really reaches (as the language model's above), and the language
    model's formula for the same shapes would be far off."""
    from gptkit import memory

    def within(run: dict) -> bool:
        return 0.85 * run["tensors"] <= anon_added(run) <= 1.15 * run["estimate"]

    data = (f"--data_root={long_texts}", "--dataset=long")
    runs = {}
    for layers, batch in (("all", 8), ("last_block", 32)):
        extra = (*data, f"--train_layers={layers}", f"--batch_size={batch}")
        run = measure(measured_hf_dir, tmp_path / layers, *extra)
        if not within(run):  # noise only adds: once more, the lower peak counts
            run = min(run, measure(measured_hf_dir, tmp_path / layers, *extra), key=anon_added)
        assert within(run), (layers, anon_added(run), run)
        runs[layers] = run
    assert runs["last_block"]["estimate"] < 0.6 * runs["all"]["estimate"]
    assert anon_added(runs["last_block"]) < anon_added(runs["all"]) / 2
    shape = memory.GPTConfig(block_size=256, vocab_size=50257, n_layer=6, n_head=4, n_embd=128)
    as_a_language_model = memory.estimate(shape, 8, 221).peak  # logits of 8 x 221 x 50257 and their gradient
    assert as_a_language_model > 3 * anon_added(runs["all"])


@pytest.mark.quiet_process  # measures a child's memory: alone, as the test above
def test_loading_keeps_the_weights_file_out_of_resident_memory(tmp_path, measured_hf_dir, shakespeare_bins):
    """Where a run's peak lies: the weights are read into anonymous memory (counted by the estimate),
    and the weights file is never mapped, so its pages never add to the peak (benchmarks/README.md,
    gpt2-xl: its 6.2 GB file would otherwise be resident beside the model)."""
    run = measure(measured_hf_dir, tmp_path / "lora", "--lora_rank=8", "--grad_checkpoint=True")
    file_bytes = (measured_hf_dir / "model.safetensors").stat().st_size
    assert not run["weights_mapped"], run  # sampled every 20 ms from /proc/self/maps
    anon_grew = run["anon_peak"] - run["anon_baseline"]
    assert anon_grew > file_bytes and anon_grew >= 0.85 * run["tensors"], run  # the model and the run's tensors
    assert run["anon_peak"] + run["file_peak"] <= run["peak"] + 2**20  # the split adds up to at most ru_maxrss


def test_the_mmap_threshold_is_left_alone_off_cpu_and_where_the_user_set_malloc(monkeypatch):
    """Only CPU runs get the fixed threshold, and a user's own malloc settings win (the test above
    shows that it is set where neither holds)."""
    assert allocator.environment_sets_malloc({"MALLOC_ARENA_MAX": "2"})
    assert allocator.environment_sets_malloc({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"})
    assert not allocator.environment_sets_malloc({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2", "PATH": "/bin"})
    assert not allocator.fix_mmap_threshold("cuda")
    assert not allocator.fix_mmap_threshold("mps")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert not allocator.fix_mmap_threshold("cpu")


# glibc's malloc as it ships: a tunable at its default value changes nothing, but tells
# gptkit.allocator that the user set malloc, so it leaves the threshold adaptive.
GLIBC_DEFAULT = {"GLIBC_TUNABLES": "glibc.malloc.perturb=0"}


@pytest.mark.quiet_process  # measures a child's memory: alone, as the tests above
@pytest.mark.skipif(allocator.glibc() is None, reason="the mmap threshold is glibc's (this C library is not glibc)")
def test_fixed_mmap_threshold_keeps_many_micro_steps_within_the_estimate(tmp_path, measured_hf_dir, shakespeare_bins):
    """A LoRA run over 8 micro-steps stays within 15% of the estimate because gptkit.train fixes
    glibc's mmap threshold: the same run under glibc's adaptive threshold grows its heap past it
    (benchmarks/README.md: 1.4x the estimate here, 18-30% over at gpt2-xl)."""
    run_args = ("--lora_rank=8", "--grad_checkpoint=True", "--gradient_accumulation_steps=8", "--max_iters=1")
    fixed = measure(measured_hf_dir, tmp_path / "fixed", *run_args, timeout=600)
    if fixed["added"] > 1.15 * fixed["estimate"]:  # noise only adds: an outlier is measured once more
        fixed = min(
            fixed, measure(measured_hf_dir, tmp_path / "fixed", *run_args, timeout=600), key=lambda r: r["added"]
        )
    assert 0.85 * fixed["tensors"] <= fixed["added"] <= 1.15 * fixed["estimate"], fixed
    adaptive = measure(measured_hf_dir, tmp_path / "adaptive", *run_args, env=GLIBC_DEFAULT, timeout=600)
    assert adaptive["added"] > 1.15 * fixed["estimate"], (fixed, adaptive)  # the setting is what keeps it within


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A text of single digits, one a line: GPT-2 token ids below 256, so a model with a 256-token
    vocabulary trains on it and its block matrices, not its embeddings, make up its weights."""
    import random

    from gptkit.prepare import prepare

    root, rng = tmp_path_factory.mktemp("digits"), random.Random(0)
    (root / "digits.txt").write_text("".join(f"{rng.randint(0, 9)}\n" for _ in range(4000)))
    prepare(root / "digits.txt", root / "digits", block_size=32, progress=False)
    return root


@pytest.fixture(scope="module")
def wide_hf_dir(tmp_path_factory):
    """GPT-2's width and 8 blocks over a 256-token vocabulary: block matrices are its weights."""
    from conftest import build_hf_gpt2

    return build_hf_gpt2(
        tmp_path_factory.mktemp("wide-hf"), n_layer=8, n_head=12, n_embd=768, n_positions=64, vocab_size=256
    )


def measured_within(hf_dir, tmp_path_factory, *extra: str) -> dict:
    """`measure`, once more where the peak is over 15% above the estimate (noise only adds)."""
    run = measure(hf_dir, tmp_path_factory.mktemp("run") / "out", *extra)
    if anon_added(run) > 1.15 * run["estimate"]:
        run = min(run, measure(hf_dir, tmp_path_factory.mktemp("again") / "out", *extra), key=anon_added)
    return run


@pytest.mark.quiet_process  # measures a child's memory: alone, as the tests above
def test_a_lora_base_held_in_bf16_peaks_while_it_loads_and_the_estimate_counts_it(
    tmp_path_factory, wide_hf_dir, digits
):
    """Under bf16 autocast a LoRA run holds its frozen block matrices in bf16, but the base is
    loaded whole in fp32 before they are halved: where they are most of the model (gpt2-xl), that
    loading is the run's peak, and the estimate must say so (the first step needs far less)."""
    lora_bf16 = ("--lora_rank=8", "--grad_checkpoint=True", "--dtype=bfloat16", "--block_size=32", "--batch_size=1")
    extra = (f"--data_root={digits}", "--dataset=digits", "--max_iters=1", *lora_bf16)
    run = measured_within(wide_hf_dir, tmp_path_factory, *extra)
    added = anon_added(run)
    assert 0.85 * run["tensors"] <= added <= 1.15 * run["estimate"], (added, run)
    parts = run["parts"]
    fp32_weights = sum(p.stat().st_size for p in wide_hf_dir.glob("*.safetensors"))
    assert parts["loading"] == run["tensors"], parts  # loading, not the step, is the estimate's peak
    assert parts["weights"] < 0.6 * fp32_weights, parts  # the base trains in bf16 ...
    assert added > fp32_weights, (added, fp32_weights)  # ... but was whole in fp32 first


@pytest.mark.quiet_process  # measures a child's memory: alone, as the tests above
def test_gradients_meet_the_next_forward_pass_only_when_micro_steps_accumulate(tmp_path_factory, wide_hf_dir, digits):
    """A full finetune of one micro-step per optimizer step frees its gradients (set to None) after
    the step, so the next forward pass and its activations run without them; with two micro-steps
    the second runs beside the first's. The estimate follows both (benchmarks/README.md: GPT-2
    124M, 2.5 GB against 3.0 GB)."""
    full = (f"--data_root={digits}", "--dataset=digits", "--block_size=64", "--batch_size=8", "--max_iters=2")
    one = measured_within(wide_hf_dir, tmp_path_factory, *full)
    two = measured_within(wide_hf_dir, tmp_path_factory, *full, "--gradient_accumulation_steps=2")
    gradients = one["parts"]["gradients"]
    for run in (one, two):
        assert 0.85 * run["tensors"] <= anon_added(run) <= 1.15 * run["estimate"], (anon_added(run), run)
    assert two["tensors"] - one["tensors"] > gradients / 2, (one["parts"], two["parts"])
    assert anon_added(two) - anon_added(one) > gradients / 2, (anon_added(one), anon_added(two), gradients)


ALL = "c_attn,attn.c_proj,c_fc,mlp.c_proj"


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("targets,lora_dropout,dropout", [(ALL, 0.0, 0.0), ("c_attn", 0.05, 0.0), (ALL, 0.05, 0.1)])
@pytest.mark.parametrize("grad_checkpoint", [False, True], ids=["plain", "checkpointed"])
def test_lora_activation_formula_equals_what_pytorch_saves(bf16, targets, lora_dropout, dropout, grad_checkpoint):
    from gptkit.lora import apply_lora, hold_base_in

    cfg = GPTConfig(block_size=48, vocab_size=160, n_layer=2, n_head=4, n_embd=32, dropout=dropout)
    torch.manual_seed(0)
    model = cpu_training_model(apply_lora(GPT(cfg), rank=4, alpha=8, dropout=lora_dropout, targets=targets).train())
    if bf16:
        hold_base_in(model, torch.bfloat16)  # as gptkit.train does for a LoRA run under autocast
    idx, targets_ = (torch.randint(0, cfg.vocab_size, (3, cfg.block_size)) for _ in range(2))  # as Batches
    model.grad_checkpoint = grad_checkpoint
    measured = (recompute_bytes if grad_checkpoint else saved_bytes)(model, idx, targets_, bf16)
    formula = activation_bytes(
        cfg,
        3,
        cfg.block_size,
        half=bf16,
        lora_rank=4,
        lora_targets=targets,
        lora_dropout=lora_dropout,
        half_base=bf16,
        grad_checkpoint=grad_checkpoint,
    )
    assert formula == measured


def test_the_header_says_when_loading_is_the_peak():
    """gpt2-xl's LoRA recipe in bf16 on a CPU peaks while its fp32 base loads: the run's header
    says so, and its parts add up to what the steps need; in fp32 the steps are the peak."""
    from gptkit.memory import GIB, estimate
    from gptkit.model import gpt2_config

    recipe = dict(lora_rank=8, grad_checkpoint=True)
    bf16 = estimate(gpt2_config("gpt2-xl"), 1, 1024, dtype=torch.bfloat16, **recipe)
    line = bf16.describe()
    assert line.startswith(f"{bf16.peak / GIB:.1f} GiB while the weights load, then"), line
    parts = [float(p.rsplit(" ", 1)[1]) for p in line.split("(", 1)[1].rstrip(")").split(", ")]
    assert f"then {sum(parts):.1f} GiB" in line, line
    assert bf16.loading > bf16.training
    fp32 = estimate(gpt2_config("gpt2-xl"), 1, 1024, dtype=torch.float32, **recipe)
    assert "load" not in fp32.describe() and fp32.training > fp32.loading
