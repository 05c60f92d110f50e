"""scripts/ddp_finetune.py under torchrun: 2 gloo processes on CPU against 1 plain process.

Every run here is a real subprocess (torchrun, or `python -m gptkit.train`) training a tiny
model on the prepared Shakespeare bins, so the process group, DistributedDataParallel's gradient
all-reduce (or FSDP's sharding, with `--fsdp=True`), the window slicing per rank and rank 0's
checkpointing are all the real thing.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tiny
from conftest import HELPERS, ROOT
from gptkit.config import TrainConfig, validate
from gptkit.errors import GptkitError

SCRIPT = ROOT / "scripts" / "ddp_finetune.py"
TOL = 1e-5  # the bound; fp32 reductions in another order differ by ~1e-7

# One tiny model, trained by every run below; a config file, as users pass one.
TINY_CONFIG = """\
init_from = "scratch"
n_layer = 2
n_head = 2
n_embd = 32
block_size = 32
batch_size = 2
gradient_accumulation_steps = 4  # 2 micro-steps per rank under 2 processes
device = "cpu"
dtype = "float32"
dropout = 0.0
progress = False
compile = False
# Large enough that the weights move far more than TOL in a few steps. At 1e-2, FSDP's final
# weights drifted 6e-5 from one process's (after one step: 3e-8): AdamW divides the tiny
# gradients of rare tokens' embedding rows by their own size, so last-bit differences in the
# matmuls grow from step to step; the gradients themselves are compared in fsdp_grads_worker.
learning_rate = 2e-3
grad_clip = 0.05  # well under the gradient norm (~1): every step is clipped, so clipping is compared too
warmup_iters = 2
lr_decay_iters = 6
eval_interval = 3
eval_iters = 3  # uneven across 2 ranks (2 + 1 batches): the all-reduced mean must still be exact
"""


def torchrun_cmd(nproc: int, script: Path = SCRIPT) -> list[str]:
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return [*launcher, "--standalone", f"--nproc_per_node={nproc}", str(script)]


def child_env() -> dict:
    # One thread per process: 2 ranks on 2 cores, and the same kernels as the 1-process run.
    return os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def launch(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout)


def launch_together(*cmds: list[str], timeout: float = 180) -> list[subprocess.CompletedProcess]:
    """Run independent commands at the same time (their start-ups overlap); wait for all."""
    jobs = [
        subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in cmds
    ]
    done = []
    for cmd, job in zip(cmds, jobs, strict=True):
        try:
            out, err = job.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for j in jobs:
                j.kill()
            raise
        done.append(subprocess.CompletedProcess(cmd, job.returncode, out, err))
    return done


def check_ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def records(out_dir: Path, kind: str) -> dict[int, dict]:
    return {r["iter"]: r for r in tiny.records(out_dir, kind)}


def final_state(out_dir: Path) -> dict:
    return torch.load(out_dir / "ckpt.pt", map_location="cpu", weights_only=True)


def assert_same_run(a: Path, b: Path) -> None:
    """Same per-step and eval losses (within TOL) and the same final weights."""
    steps_a, steps_b = records(a, "step"), records(b, "step")
    assert sorted(steps_a) == sorted(steps_b) == list(range(6))
    for it in steps_a:
        assert steps_b[it]["loss"] == pytest.approx(steps_a[it]["loss"], abs=TOL), f"step {it}"
        assert steps_b[it]["tokens"] == steps_a[it]["tokens"]  # the same global batch per iteration
    evals_a, evals_b = records(a, "eval"), records(b, "eval")
    assert sorted(evals_a) == sorted(evals_b) == [0, 3, 6]
    for it in evals_a:
        for key in ("train_loss", "val_loss"):
            assert evals_b[it][key] == pytest.approx(evals_a[it][key], abs=TOL), f"{key} at {it}"
    ckpt_a, ckpt_b = final_state(a), final_state(b)
    assert ckpt_a["iter_num"] == ckpt_b["iter_num"] == 6
    assert ckpt_a["model"].keys() == ckpt_b["model"].keys()
    for name, wa in ckpt_a["model"].items():
        diff = (wa - ckpt_b["model"][name]).abs().max().item()
        assert diff <= TOL, f"{name} differs by {diff}"


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, shakespeare_bins) -> Path:
    path = tmp_path_factory.mktemp("ddp-config") / "tiny.py"
    path.write_text(TINY_CONFIG + f"data_root = {str(shakespeare_bins.parent)!r}\n")
    return path


@pytest.fixture(scope="module")
def single(tmp_path_factory, config_file) -> Path:
    """The reference: one plain process, 4 micro-steps of 2 sequences per iteration."""
    out = tmp_path_factory.mktemp("single")
    check_ok(launch([sys.executable, "-m", "gptkit.train", str(config_file), f"--out_dir={out}", "--max_iters=6"]))
    return out


@pytest.fixture(scope="module")
def ddp(tmp_path_factory, config_file) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    proc = check_ok(launch([*torchrun_cmd(2), str(config_file), f"--out_dir={out}", "--max_iters=6"]))
    assert "over 2 processes" in proc.stdout
    # Only rank 0 prints: each evaluation line appears once.
    assert proc.stdout.count("step 3: train loss") == 1
    return out


def test_two_processes_match_one(single, ddp):
    steps = records(single, "step")
    assert abs(steps[5]["loss"] - steps[0]["loss"]) > 100 * TOL  # training moved: equality is not trivial
    assert_same_run(single, ddp)
    assert sorted(p.name for p in ddp.iterdir()) == ["ckpt.pt", "config.json", "metrics.jsonl"]


def test_script_runs_plainly_as_one_process(single, config_file, tmp_path):
    out = tmp_path / "plain"
    proc = check_ok(launch([sys.executable, str(SCRIPT), str(config_file), f"--out_dir={out}", "--max_iters=6"]))
    assert "processes" not in proc.stdout
    assert_same_run(single, out)


def test_resume_under_ddp_continues_the_run(config_file, tmp_path):
    # With dropout on, each rank draws its own masks, so this also checks that every rank's RNG
    # comes back from the checkpoint, not only rank 0's.
    run = [*torchrun_cmd(2), str(config_file), "--dropout=0.1"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    check_ok(launch([*run, f"--out_dir={whole}", "--max_iters=6"]))
    check_ok(launch([*run, f"--out_dir={resumed}", "--max_iters=3"]))
    assert final_state(resumed)["iter_num"] == 3
    # Both ranks load ckpt.pt (onto the CPU) and carry on to iteration 6.
    check_ok(launch([*run, f"--out_dir={resumed}", "--max_iters=6", "--init_from=resume"]))
    assert_same_run(whole, resumed)


def test_accumulation_steps_must_divide_across_ranks(config_file, tmp_path):
    out = tmp_path / "uneven"
    proc = launch([*torchrun_cmd(2), str(config_file), f"--out_dir={out}", "--gradient_accumulation_steps=3"])
    assert proc.returncode != 0
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("error:")]
    assert errors == [
        "error: gradient_accumulation_steps=3 does not divide across 2 processes: "
        "make it a multiple of 2, or use another process count"
    ]
    assert "GptkitError" not in proc.stderr  # no traceback from the ranks themselves
    assert not out.exists()  # refused before anything was written


def test_rank0_refuses_to_overwrite_a_checkpoint(single, config_file):
    before = (single / "ckpt.pt").read_bytes()
    proc = launch([*torchrun_cmd(2), str(config_file), f"--out_dir={single}", "--max_iters=6"])
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "already holds ckpt.pt" in errors[0], proc.stderr[-2000:]
    assert (single / "ckpt.pt").read_bytes() == before


# --- FSDP: the same runs with the model sharded across the processes --------------------------
def same_checkpoint_format(a: dict, b: dict) -> None:
    """Two checkpoints hold the same entries in the same layout (values compared elsewhere)."""
    assert a.keys() == b.keys()
    assert a["model"].keys() == b["model"].keys()
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]  # indices, lr, betas, ...
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for i, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert (value - b["optimizer"]["state"][i][key]).abs().max().item() <= TOL, f"optimizer {i} {key}"
    for ckpt in (a, b):  # the head's weight is the token embedding's: one tensor in the file
        model = ckpt["model"]
        assert model["lm_head.weight"].untyped_storage().data_ptr() == (
            model["transformer.wte.weight"].untyped_storage().data_ptr()
        )


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory, config_file) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("fsdp")
    # With activation checkpointing too: each block's forward runs again in the backward pass,
    # gathering the block's weights again (the resume test below runs FSDP without it).
    cmd = [*torchrun_cmd(2), str(config_file), f"--out_dir={out}", "--max_iters=6", "--fsdp=True"]
    proc = check_ok(launch([*cmd, "--grad_checkpoint=True"]))
    return out, proc.stdout


def test_fsdp_matches_one_process(single, fsdp):
    out, stdout = fsdp
    # Evaluated and checkpointed at iteration 3 (gathering the shards) and trained on: still the same run.
    assert_same_run(single, out)
    assert sorted(p.name for p in out.iterdir()) == ["ckpt.pt", "config.json", "metrics.jsonl"]
    same_checkpoint_format(final_state(single), final_state(out))


def test_fsdp_each_process_stores_half_the_parameters(fsdp):
    # Printed by rank 0 from every rank's local shard sizes (DTensor.to_local()), gathered.
    line = next(ln for ln in fsdp[1].splitlines() if ln.startswith("FSDP:"))
    total = int(line.split()[1].replace(",", ""))
    shares = [int(n.replace(",", "")) for n in line.split("storing ")[1].split(" / ")]
    assert len(shares) == 2 and sum(shares) == total
    for share in shares:
        assert abs(share - total / 2) <= 0.001 * total, line  # uneven first dimensions leave a row or so


def test_fsdp_gradients_and_state_match_plain_pytorch(tmp_path):
    """Gradients (averaged, not summed), clipping, tying, state gathering and loading, fp16's inf check."""
    check_ok(launch([*torchrun_cmd(2, HELPERS / "fsdp_grads_worker.py"), str(tmp_path)]))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["built"] == [0] and ranks[1]["built"] == []  # rank 1 never held the whole model
    for r in ranks:
        assert r["error"] == "no such base"
        assert r["tied"]
        assert r["local_numel"] * 2 == pytest.approx(r["total_numel"], rel=0.01)
        assert r["grad_norm_ratio"] == pytest.approx(1.0, abs=1e-6)  # 2.0 when gloo sums (#162338)
        assert r["grad_diff"] < 1e-6
        assert r["norm"] == pytest.approx(r["ref_norm"], rel=1e-6) and r["norm"] > 10 * 0.05  # it clips
        assert r["clipped_grad_diff"] < 1e-7
        assert r["loaded_state_diff"] < 1e-6
        assert r["found_inf"] == 1.0  # the overflow was in the last rank's shard only
    assert ranks[0]["param_groups_equal"] and ranks[0]["state_keys_equal"] and ranks[0]["model_keys_equal"]
    assert ranks[0]["state_diff"] < 1e-6 and ranks[0]["weights_diff"] < 1e-5
    assert ranks[0]["tied_in_state"] and ranks[1]["empty_off_rank0"]


def test_every_rank_trains_in_the_dtype_rank_0_chose(tmp_path):
    """`--dtype=auto`'s measured choice is rank 0's everywhere, even where a rank would choose otherwise."""
    check_ok(launch([*torchrun_cmd(2, HELPERS / "dtype_agreement_worker.py"), str(tmp_path)]))
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert got == [{"dtype": "torch.bfloat16", "why": "rank 0's measurement"}] * 2, got


@pytest.mark.slow  # `make test-slow`; DDP's resume and FSDP's match stay in `make test`
def test_fsdp_resumes_under_fsdp_and_under_one_process(single, config_file, tmp_path):
    run = [*torchrun_cmd(2), str(config_file), "--fsdp=True"]
    sharded, alone = tmp_path / "sharded", tmp_path / "alone"
    check_ok(launch([*run, f"--out_dir={sharded}", "--max_iters=3"]))
    shutil.copytree(sharded, alone)
    # Both read the same FSDP-written ckpt.pt and carry on to iteration 6.
    one = [sys.executable, "-m", "gptkit.train", str(config_file), f"--out_dir={alone}"]
    for proc in launch_together(
        [*run, f"--out_dir={sharded}", "--max_iters=6", "--init_from=resume"],
        [*one, "--max_iters=6", "--init_from=resume"],
    ):
        check_ok(proc)
    assert_same_run(single, sharded)
    assert_same_run(single, alone)


def test_sample_reads_an_fsdp_checkpoint(single, fsdp):
    args = ["--num_samples=1", "--max_new_tokens=16", "--temperature=0", "--device=cpu", "--start=ROMEO:"]
    sharded, alone = (
        check_ok(proc).stdout
        for proc in launch_together(
            *([sys.executable, "-m", "gptkit.sample", f"--out_dir={out}", *args] for out in (fsdp[0], single))
        )
    )
    assert sharded.startswith("ROMEO:") and len(sharded) > len("ROMEO:\n---------------\n")
    assert sharded == alone  # greedy: the same tokens from the same weights


def test_fsdp_refuses_lora_before_touching_files():
    # validate() runs first in every rank, before out_dir is made or a weight loaded.
    cfg = TrainConfig(fsdp=True, lora_rank=4, init_from="gpt2", gradient_accumulation_steps=2)
    with pytest.raises(GptkitError, match="does not shard LoRA runs"):
        validate(cfg, world_size=2)
    validate(cfg, world_size=1)  # one process: an ordinary LoRA run
    validate(TrainConfig(fsdp=True, init_from="gpt2", gradient_accumulation_steps=2), world_size=2)


# --- a rank that dies or hangs ends the job ---------------------------------------------------
def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError):
        return None  # gone


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def worker_pid(torchrun: subprocess.Popen, rank: int) -> int:
    """The pid of torchrun's worker process with this RANK, found through /proc."""
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit() or parent_of(int(proc_dir.name)) != torchrun.pid:
            continue
        try:
            env = (proc_dir / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # exited meanwhile
        if f"RANK={rank}".encode() in env:
            return int(proc_dir.name)
    raise AssertionError(f"torchrun has no worker with RANK={rank}")


def steps_logged(out: Path) -> int:
    text = (out / "metrics.jsonl").read_text() if (out / "metrics.jsonl").exists() else ""
    return text[: text.rfind("\n") + 1].count('"type": "step"')  # whole lines only: rank 0 is writing


def start_long_run(config_file: Path, out: Path, *extra: str) -> subprocess.Popen:
    """A 2-process run far longer than the test; returns once it has trained 2 steps."""
    cmd = [*torchrun_cmd(2), str(config_file), f"--out_dir={out}", "--max_iters=100000", "--eval_interval=100000"]
    job = subprocess.Popen(
        [*cmd, *extra], cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 60
    while steps_logged(out) < 2:
        assert job.poll() is None, job.communicate()[0][-3000:]
        assert time.time() < deadline, "the run did not start training within 60 s"
        time.sleep(0.2)
    return job


def stop_all(job: subprocess.Popen, *pids: int) -> None:
    """Leave nothing behind if an assertion failed: the workers still under torchrun, then torchrun."""
    for pid in pids:
        if parent_of(pid) == job.pid:  # still our worker, not a reused pid
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
    if job.poll() is None:
        job.kill()
    job.communicate()


# The FSDP case of a failing rank takes as long again: `make test-slow` runs it, `make test` the DDP one.
FSDP_SLOW = pytest.param(["--fsdp=True"], marks=pytest.mark.slow)
SHARDING = pytest.mark.parametrize("mode", [[], FSDP_SLOW], ids=["ddp", "fsdp"])


@SHARDING
def test_a_crashed_rank_fails_the_job(config_file, tmp_path, mode):
    job = start_long_run(config_file, tmp_path / "crash", *mode)
    rank1 = worker_pid(job, 1)
    try:
        os.kill(rank1, signal.SIGKILL)  # as the kernel's OOM killer would
        killed = time.time()
        output, _ = job.communicate(timeout=60)
        took = time.time() - killed
    finally:
        stop_all(job, rank1)
    assert job.returncode != 0, output[-3000:]
    assert took < 30  # torchrun stops rank 0 at once; it does not wait out ddp_timeout


@SHARDING
def test_a_hung_rank_times_out(config_file, tmp_path, mode):
    timeout_s = 4
    job = start_long_run(config_file, tmp_path / "hang", f"--ddp_timeout={timeout_s}", *mode)
    rank0, rank1 = worker_pid(job, 0), worker_pid(job, 1)
    try:
        # A stopped process is alive, so torchrun sees no failure: only the process group's
        # timeout can end rank 0's wait in the gradient all-reduce.
        os.kill(rank1, signal.SIGSTOP)
        stopped = time.time()
        while alive(rank0):
            assert time.time() - stopped < timeout_s + 30, "rank 0 still waits for the hung rank"
            time.sleep(0.1)
        waited = time.time() - stopped
        # torchrun now stops rank 1; let it, rather than wait out torchrun's 30 s for a stopped process.
        os.kill(rank1, signal.SIGCONT)
        output, _ = job.communicate(timeout=60)
    finally:
        stop_all(job, rank0, rank1)
    assert job.returncode != 0
    assert waited >= timeout_s
    assert "Timed out" in output, output[-3000:]


def test_sigterm_stops_every_rank_at_one_iteration(config_file, tmp_path):
    """SIGTERM to torchrun (as a cluster scheduler sends it): it forwards the signal to every rank;
    the ranks agree on one iteration and save latest.pt with each rank's RNG."""
    out = tmp_path / "stopped"
    job = start_long_run(config_file, out)
    try:
        job.send_signal(signal.SIGTERM)
        output, _ = job.communicate(timeout=60)
    finally:
        stop_all(job)
    said = [ln for ln in output.splitlines() if ln.startswith("SIGTERM: stopped at iteration")]
    assert len(said) == 1, output[-3000:]  # rank 0 says it, once
    it = int(said[0].split()[4].rstrip(";"))
    assert str(out / "latest.pt") in said[0]
    ckpt = torch.load(out / "latest.pt", map_location="cpu", weights_only=True)
    assert ckpt["iter_num"] == it >= 2
    assert len(ckpt["rng"]) == 2 and not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    assert sorted(records(out, "step")) == list(range(it))
    assert not (out / ".lock").exists()
    # That the state resumes exactly under DDP is test_resume_under_ddp_continues_the_run: the same save.


@pytest.mark.slow  # `make test-slow`; LoRA on one process and plain DDP stay in `make test`
def test_lora_two_processes_match_one(config_file, tiny_hf_dir, tmp_path):
    """Frozen base, trainable adapters: DDP reduces only the adapters' gradients, with no
    find_unused_parameters (every adapter is used in every forward), and matches one process."""
    lora = [f"--init_from={tiny_hf_dir}", "--lora_rank=4", "--lora_alpha=8", "--max_iters=6"]
    one, two = tmp_path / "one", tmp_path / "two"
    check_ok(launch([sys.executable, "-m", "gptkit.train", str(config_file), f"--out_dir={one}", *lora]))
    check_ok(launch([*torchrun_cmd(2), str(config_file), f"--out_dir={two}", *lora]))
    steps = records(one, "step")
    assert abs(steps[5]["loss"] - steps[0]["loss"]) > 100 * TOL
    assert all(k.endswith(("lora_A", "lora_B")) for k in final_state(two)["model"])
    assert_same_run(one, two)


def test_example_data_trains_the_same_on_two_processes_as_on_one(tmp_path, config_file):
    """Padded examples hold different numbers of targets: the token weighting must hold across processes."""
    from gptkit.prepare import prepare

    rows = [{"prompt": f"Q: {'very ' * (i % 6)}big {i}?\nA:", "completion": f" {i * 7}"} for i in range(48)]
    (tmp_path / "ex.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepare(tmp_path / "ex.jsonl", tmp_path / "data" / "qa", val_fraction=0.25)
    args = [str(config_file), "--dataset=qa", f"--data_root={tmp_path / 'data'}", "--max_iters=6"]
    one, two = tmp_path / "one", tmp_path / "two"
    check_ok(launch([sys.executable, "-m", "gptkit.train", *args, f"--out_dir={one}"]))
    check_ok(launch([*torchrun_cmd(2), *args, f"--out_dir={two}"], timeout=180))
    assert_same_run(one, two)
