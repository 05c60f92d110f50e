"""Bad input: one clear line, exit code 1, no traceback, and no file of the user's changed.

The commands run in the test's own process (conftest.run_cli_in_process: the same `__main__`
code, without ~3 s of starting Python and torch each); the first test shows that `python` in a
process of its own fails the same way."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, assert_user_error, run_cli, run_cli_in_process
from gptkit import checkpoint
from gptkit.config import TrainConfig
from gptkit.train import train

TINY = [
    "--init_from=scratch",
    "--n_layer=2",
    "--n_head=2",
    "--n_embd=32",
    "--block_size=32",
    "--batch_size=2",
    "--eval_iters=2",
    "--eval_interval=2",
    "--max_iters=2",
    "--device=cpu",
    "--progress=False",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, shakespeare_bins) -> Path:
    """A user's folder: prepared data and a finished run with its checkpoint."""
    ws = tmp_path_factory.mktemp("ws")
    shutil.copytree(shakespeare_bins, ws / "data" / "shakespeare")
    cfg = TrainConfig(
        init_from="scratch",
        n_layer=2,
        n_head=2,
        n_embd=32,
        block_size=32,
        batch_size=2,
        eval_iters=2,
        eval_interval=2,
        max_iters=2,
        device="cpu",
        progress=False,
        out_dir=str(ws / "run"),
        data_root=str(ws / "data"),
    )
    train(cfg)
    assert (ws / "run" / checkpoint.BEST).is_file()
    return ws


def snapshot(root: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def train_cli(ws: Path, *args: str):
    return run_cli_in_process("-m", "gptkit.train", *TINY, f"--data_root={ws / 'data'}", *args, cwd=ws)


def check(ws: Path, result, *fragments: str) -> None:
    assert_user_error(result, *fragments)


@pytest.fixture
def unchanged(workspace):
    before = snapshot(workspace)
    yield workspace
    assert snapshot(workspace) == before, "a failed command changed the user's files"


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize(
    "command",
    [
        ("-m", "gptkit.train", "--out_dir=run", "--learnig_rate=1e-4"),
        ("-m", "gptkit.sample", "--out_dir=run", "--top_p=1.5", "--device=cpu"),
        (str(ROOT / "scripts" / "ddp_finetune.py"), "--out_dir=ddp-run", "--device=cuda"),
    ],
)
def test_a_command_fails_the_same_in_a_process_of_its_own(unchanged, command):
    alone, here = run_cli(*command, cwd=unchanged), run_cli_in_process(*command, cwd=unchanged)
    assert_user_error(alone)
    assert (here.returncode, here.stdout, error_lines(here)) == (alone.returncode, alone.stdout, error_lines(alone))


def test_config_file_missing(unchanged):
    check(unchanged, train_cli(unchanged, "config/nope.py", "--out_dir=run"), "config file", "not found")


def test_unknown_key(unchanged):
    check(unchanged, train_cli(unchanged, "--out_dir=run", "--learnig_rate=1e-4"), "learnig_rate", "learning_rate")


def test_unknown_key_in_file(unchanged, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("import time\nbatchsize = 4\n")
    check(unchanged, train_cli(unchanged, str(conf), "--out_dir=run"), "batchsize", "batch_size")


def test_mistyped_value(unchanged):
    check(unchanged, train_cli(unchanged, "--out_dir=run", "--max_iters=abc"), "max_iters", "int")


def test_dataset_bins_missing(unchanged):
    result = train_cli(unchanged, "--out_dir=new-run", "--dataset=poems")
    check(unchanged, result, "train.bin not found", "python -m gptkit.prepare YOUR_TEXT --name poems")
    result = train_cli(unchanged, "--out_dir=new-run", f"--data_root={unchanged / 'nowhere'}")
    check(unchanged, result, "python data/shakespeare/prepare.py")


def test_token_ids_beyond_the_vocabulary(unchanged, tmp_path):
    bad = tmp_path / "data" / "wide"
    bad.mkdir(parents=True)
    np.array(list(range(100)) * 20 + [60000], dtype=np.uint16).tofile(bad / "train.bin")
    np.arange(200, dtype=np.uint16).tofile(bad / "val.bin")
    result = train_cli(unchanged, "--out_dir=new-run", f"--data_root={tmp_path / 'data'}", "--dataset=wide")
    check(unchanged, result, "token id 60000", "vocab_size")


def test_val_split_shorter_than_a_block(unchanged, tmp_path):
    short = tmp_path / "data" / "short"
    short.mkdir(parents=True)
    np.arange(1000, dtype=np.uint16).tofile(short / "train.bin")
    np.arange(20, dtype=np.uint16).tofile(short / "val.bin")
    result = train_cli(unchanged, "--out_dir=new-run", f"--data_root={tmp_path / 'data'}", "--dataset=short")
    check(unchanged, result, "val.bin has 20 tokens", "block_size")


def test_block_size_beyond_the_pretrained_context(unchanged, tiny_hf_dir):
    check(unchanged, train_cli(unchanged, "--out_dir=run2", "--init_from=gpt2", "--block_size=2048"), "1024")
    result = train_cli(unchanged, "--out_dir=run2", f"--init_from={tiny_hf_dir}", "--block_size=256")
    check(unchanged, result, "block_size 256", "context of 128")


@pytest.mark.parametrize(
    "config, fragment",
    [("not json", "is not valid JSON"), ("{}", "names no model_type"), ('{"model_type": "llama"}', "a 'llama' model")],
)
def test_a_base_that_does_not_load_leaves_no_empty_out_dir(unchanged, tmp_path, config, fragment):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(config)
    check(unchanged, train_cli(unchanged, f"--out_dir={tmp_path / 'new-run'}", f"--init_from={base}"), fragment)
    assert not (tmp_path / "new-run").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made is theirs: it stays
    check(unchanged, train_cli(unchanged, f"--out_dir={tmp_path / 'mine'}", f"--init_from={base}"), fragment)
    assert (tmp_path / "mine").is_dir() and not list((tmp_path / "mine").iterdir())


@pytest.mark.parametrize(
    "arg, applies",
    [
        ("--train_layers=head", "classification datasets"),
        ("--best_by=loss", "classification datasets"),
        ("--dpo_beta=0.5", "preference datasets (DPO pairs)"),
    ],
)
def test_a_setting_of_another_kind_of_dataset(unchanged, tmp_path, arg, applies):
    """On a text stream a classifier's (or DPO's) setting would do nothing: refused, before the base
    model is read (this one does not load) or out_dir made."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("not json")
    key, value = arg[2:].split("=")
    result = train_cli(unchanged, f"--out_dir={tmp_path / 'run'}", f"--init_from={base}", arg)
    where = unchanged / "data" / "shakespeare"
    check(unchanged, result, f"{key} applies to {applies} only, but {where} is a text stream: drop {key}={value} ")
    assert not (tmp_path / "run").exists()


def test_a_config_file_setting_of_another_kind_of_dataset(unchanged, tmp_path):
    """A config file's setting counts as given: a classifier's recipe on a text stream is refused,
    while a setting left at its default (the workspace's run above) never is."""
    config = tmp_path / "classifier.py"
    config.write_text("train_layers = 'all'\n")
    result = train_cli(unchanged, str(config), f"--out_dir={tmp_path / 'run'}")
    check(unchanged, result, "train_layers applies to classification datasets only", "drop train_layers=all")
    assert not (tmp_path / "run").exists()


def test_resume_without_a_checkpoint(unchanged):
    check(unchanged, train_cli(unchanged, "--out_dir=empty-run", "--init_from=resume"), "nothing to resume")


def corrupt_copy(ws: Path, name: str, mutate) -> Path:
    target = ws.parent / f"{ws.name}-{name}"
    shutil.copytree(ws / "run", target)
    mutate(target / checkpoint.BEST)
    return target


@pytest.mark.parametrize("cut", [0.5, 0.01])
def test_truncated_checkpoint(unchanged, cut):
    def truncate(p):
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * cut)])

    run = corrupt_copy(unchanged, f"cut{cut}", truncate)
    before = snapshot(run)
    check(unchanged, train_cli(unchanged, f"--out_dir={run}", "--init_from=resume", "--max_iters=4"), "corrupt")
    check(unchanged, run_cli_in_process("-m", "gptkit.sample", f"--out_dir={run}", "--device=cpu"), "corrupt")
    assert snapshot(run) == before


def test_checkpoint_of_a_different_architecture(unchanged):
    def widen(p):
        ckpt = torch.load(p, weights_only=True)
        ckpt["model_args"]["n_layer"] = 3
        torch.save(ckpt, p)

    run = corrupt_copy(unchanged, "arch", widen)
    before = snapshot(run)
    result = train_cli(unchanged, f"--out_dir={run}", "--init_from=resume", "--max_iters=4")
    check(unchanged, result, "different architecture")
    assert snapshot(run) == before


def test_foreign_file_as_checkpoint(unchanged):
    run = corrupt_copy(unchanged, "foreign", lambda p: torch.save({"weights": torch.zeros(2)}, p))
    check(
        unchanged,
        run_cli_in_process("-m", "gptkit.sample", f"--out_dir={run}", "--device=cpu"),
        "not a gptkit checkpoint",
    )


def test_out_dir_not_writable(unchanged):
    blocker = unchanged / "run" / "metrics.jsonl"  # a file where a folder should be
    check(unchanged, train_cli(unchanged, f"--out_dir={blocker / 'sub'}"), "cannot create", "--out_dir")


@pytest.mark.parametrize("arg", ["--gradient_accumulation_steps=0", "--batch_size=0", "--batch_size=-3"])
def test_counts_below_one(unchanged, arg):
    check(unchanged, train_cli(unchanged, "--out_dir=run", arg), arg[2:].split("=")[0], "at least 1")


def test_fresh_run_refuses_to_overwrite_a_checkpoint(unchanged):
    check(unchanged, train_cli(unchanged, "--out_dir=run"), "already holds ckpt.pt", "--init_from=resume")


def test_sample_bad_values(unchanged):
    result = run_cli_in_process("-m", "gptkit.sample", f"--out_dir={unchanged / 'run'}", "--top_p=1.5", "--device=cpu")
    check(unchanged, result, "top_p")
    result = run_cli_in_process(
        "-m",
        "gptkit.sample",
        f"--out_dir={unchanged / 'run'}",
        "--start=FILE:/no/such/file",
        "--device=cpu",
        "--max_new_tokens=2",
    )
    check(unchanged, result, "prompt file")


# --- LoRA ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "arg, fragments",
    [
        ("--lora_rank=-4", ("lora_rank", "0 (full finetune) or more")),
        ("--lora_rank=abc", ("lora_rank", "int")),
        ("--lora_targets=c_attn,c_proj", ("'c_proj'", "c_attn, attn.c_proj, c_fc, mlp.c_proj")),
    ],
)
def test_bad_lora_settings(unchanged, tiny_hf_dir, arg, fragments):
    result = train_cli(unchanged, "--out_dir=lora-run", f"--init_from={tiny_hf_dir}", "--lora_rank=4", arg)
    check(unchanged, result, *fragments)
    assert not (unchanged / "lora-run").exists()


def test_lora_on_a_scratch_model_is_refused(unchanged):
    check(unchanged, train_cli(unchanged, "--out_dir=lora-run", "--lora_rank=4"), "init_from=scratch", "pretrained")


@pytest.fixture(scope="module")
def lora_run_on_own_base(workspace, tmp_path_factory):
    """A LoRA run whose base is a folder of its own, so tests can move or replace that base."""
    from conftest import build_hf_gpt2

    root = tmp_path_factory.mktemp("lora-ws")
    base = build_hf_gpt2(root / "base")
    result = train_cli(workspace, f"--out_dir={root / 'run'}", f"--init_from={base}", "--lora_rank=4")
    assert result.returncode == 0, result.stderr
    return root


@pytest.mark.slow  # `make test-slow`: trains three LoRA runs
def test_lora_run_whose_base_is_missing_reshaped_or_replaced(unchanged, lora_run_on_own_base):
    from conftest import build_hf_gpt2

    root = lora_run_on_own_base
    run, base = root / "run", root / "base"
    before = snapshot(run)
    resume = [f"--out_dir={run}", "--init_from=resume", "--max_iters=4"]
    base.rename(root / "moved")
    try:
        for result in (
            train_cli(unchanged, *resume),
            run_cli_in_process("-m", "gptkit.sample", f"--out_dir={run}", "--device=cpu"),
            run_cli_in_process("-m", "gptkit.export", str(run), str(root / "hf")),
        ):
            check(unchanged, result, f"trained on base {base}", "missing", "restore")
        build_hf_gpt2(base, n_layer=3)  # the same path, another shape
        check(unchanged, train_cli(unchanged, *resume), "another shape", "n_layer=3 (was 2)")
        shutil.rmtree(base)
        build_hf_gpt2(base, seed=1)  # the same path and shape, other weights
        for result in (
            train_cli(unchanged, *resume),
            run_cli_in_process("-m", "gptkit.sample", f"--out_dir={run}", "--device=cpu"),
            run_cli_in_process("-m", "gptkit.export", str(run), str(root / "hf")),
        ):
            check(unchanged, result, f"trained on base {base}", "weights have changed", "restore")
    finally:
        if (root / "moved").exists():
            shutil.rmtree(base, ignore_errors=True)
            (root / "moved").rename(base)
    assert snapshot(run) == before and not (root / "hf").exists()


def test_resuming_a_lora_run_with_another_rank(unchanged, lora_run_on_own_base):
    run = lora_run_on_own_base / "run"
    before = snapshot(run)
    result = train_cli(unchanged, f"--out_dir={run}", "--init_from=resume", "--lora_rank=8", "--max_iters=4")
    check(unchanged, result, "LoRA run of rank 4", "keeps its settings")
    assert snapshot(run) == before


# --- devices this machine lacks (it has no GPU), and settings out of range -----------------------
@pytest.mark.parametrize(
    "cli, device, fragment",
    [
        ("gptkit.train", "cuda:1", "needs an NVIDIA GPU"),
        ("gptkit.train", "tpu", "is not a device gptkit runs on"),
        ("gptkit.sample", "mps", "needs Apple's Metal (MPS)"),
        ("scripts/ddp_finetune.py", "cuda", "needs an NVIDIA GPU"),
    ],
)
def test_device_this_machine_lacks(unchanged, cli, device, fragment):
    module = ["-m", cli] if cli.startswith("gptkit") else [str(Path(__file__).parents[1] / cli)]
    args = [*TINY, f"--data_root={unchanged / 'data'}"] if cli != "gptkit.sample" else []
    result = run_cli_in_process(
        *module, *args, f"--out_dir={unchanged / 'device-run'}", f"--device={device}", cwd=unchanged
    )
    check(unchanged, result, f"device '{device}' {fragment}", "available here: cpu (--device=auto picks the best)")
    assert not (unchanged / "device-run").exists()


@pytest.mark.parametrize("arg", ["--weight_decay=-1", "--warmup_iters=-1"])  # each range: tests/test_config.py
def test_settings_out_of_range(unchanged, arg):
    key = arg[2:].split("=")[0]
    check(unchanged, train_cli(unchanged, "--out_dir=range-run", arg), f"{key} must be 0 or more")
    assert not (unchanged / "range-run").exists()


# --- resume: the header names what changed; a setting the checkpoint fixes is refused -----------
def test_resume_header_and_refused_settings(unchanged):
    run = unchanged.parent / f"{unchanged.name}-resume"
    shutil.copytree(unchanged / "run", run)
    before = snapshot(run)
    result = train_cli(unchanged, f"--out_dir={run}", "--init_from=resume", "--n_layer=3", "--seed=7", "--max_iters=4")
    check(unchanged, result, "a resumed run keeps its settings", "seed 1337 -> 7, n_layer 2 -> 3")
    assert snapshot(run) == before
    result = train_cli(unchanged, f"--out_dir={run}", "--init_from=resume", "--max_iters=4", "--learning_rate=1e-3")
    assert result.returncode == 0, result.stderr
    changed = "changed: learning_rate 0.0006 -> 0.001, max_iters 2 -> 4"  # in the order of --help
    assert f"resuming from {run / checkpoint.BEST} at iteration 2; {changed}" in result.stdout.splitlines()
    assert checkpoint.load(run / checkpoint.BEST).iter_num == 4
