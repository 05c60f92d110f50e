"""Nothing lost when the machine says no: a full disk, two runs in one out_dir, Ctrl-C / SIGTERM.

Real processes, real signals, and a real small filesystem (a 4 MB tmpfs) where this machine
lets us mount one; elsewhere a per-file size limit (RLIMIT_FSIZE), under which the kernel
refuses writes the same way (EFBIG instead of ENOSPC). Files are compared byte for byte.
"""

import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny
from conftest import ROOT, assert_user_error, run_cli
from gptkit import checkpoint, cpu_kernels, files, runguard
from gptkit.config import TrainConfig
from gptkit.errors import GptkitError
from gptkit.errors import run_cli as gptkit_run_cli
from gptkit.export import export_hf
from gptkit.model import GPT, GPTConfig
from gptkit.prepare import prepare
from gptkit.train import train
from tiny import records

# A tiny model on a 256-token dataset: steps take milliseconds and a checkpoint ~450 KB.
TINY = tiny.TINY | dict(dropout=0.1, learning_rate=3e-3, dataset="tiny")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, shakespeare_bins) -> Path:
    """Shakespeare's tokens folded into a 256-token vocabulary (meta.json says so)."""
    root = tmp_path_factory.mktemp("data")
    splits = {s: np.fromfile(shakespeare_bins / f"{s}.bin", dtype=np.uint16)[:30_000] for s in ("train", "val")}
    tiny.write_folded(root / "tiny", splits)
    return root


def tiny_cfg(data_root: Path, out: Path, **kw) -> TrainConfig:
    return tiny.tiny_cfg(out, TINY, data_root=str(data_root), **kw)


def cli_args(data_root: Path, out: Path, **kw) -> list[str]:
    return ["-m", "gptkit.train", *tiny.cli_args(TINY | {"data_root": str(data_root), "out_dir": str(out)} | kw)]


def child_env() -> dict:
    return os.environ | {"PYTHONPATH": str(ROOT)}


def snapshot(root: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir()) if p.is_file()}


def steps_logged(out: Path) -> int:
    path = out / "metrics.jsonl"
    return path.read_text().count('"type": "step"') if path.exists() else 0


def wait_for_steps(job: subprocess.Popen, out: Path, n: int) -> None:
    deadline = time.time() + 90
    while steps_logged(out) < n:
        assert job.poll() is None, job.communicate()
        assert time.time() < deadline, "the run did not start training within 90 s"
        time.sleep(0.02)


# --- a full disk ----------------------------------------------------------------------------
class SmallDisk:
    """A folder where the machine refuses writes beyond `room` bytes."""

    def __init__(self, root: Path):
        self.root = root
        self.tmpfs = False
        if os.geteuid() == 0 and shutil.which("mount") and os.environ.get("GPTKIT_TEST_SMALL_DISK") != "rlimit":
            cmd = ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(root)]
            self.tmpfs = subprocess.run(cmd, capture_output=True).returncode == 0

    def close(self) -> None:
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.root)], check=True)

    @contextlib.contextmanager
    def full(self, room: int):
        """Within: a tmpfs with `room` bytes free, or `room` as this process's largest file size."""
        if self.tmpfs:
            ballast = self.root / "ballast"
            free = shutil.disk_usage(self.root).free
            with open(ballast, "wb") as f:
                f.write(b"\0" * max(0, free - room))
            try:
                yield
            finally:
                ballast.unlink()
        else:
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (room, hard))
            try:
                yield
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    def run(self, *args: str, room: int) -> subprocess.CompletedProcess:
        """`python ARGS` with only `room` bytes to write (the file size limit is set in the child only)."""
        if self.tmpfs:
            with self.full(room):
                return run_cli(*args)

        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (room, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

        return subprocess.run(
            [sys.executable, *args], env=child_env(), capture_output=True, text=True, timeout=300, preexec_fn=limit
        )


@pytest.fixture
def small_disk(tmp_path):
    (tmp_path / "disk").mkdir()
    disk = SmallDisk(tmp_path / "disk")
    yield disk
    disk.close()


def disk_full_line(result, *fragments) -> str:
    line = assert_user_error(result, "could not write", *fragments)
    assert re.search(r"\((free space unknown|[\d.,]+ (bytes|KiB|MiB|GiB) free) on its disk\)", line), line
    assert "run the command again" in line
    return line


def test_disk_full_during_training_keeps_the_checkpoint_and_the_log(small_disk, data_root):
    out = small_disk.root / "run"
    train(tiny_cfg(data_root, out, max_iters=2, eval_interval=2))
    before = snapshot(out)
    ckpt_bytes, log = (out / "ckpt.pt").read_bytes(), (out / "metrics.jsonl").read_text()

    # Room for the log, not for a checkpoint: the save at iteration 4 fails.
    result = small_disk.run(*cli_args(data_root, out, max_iters=4, eval_interval=2, init_from="resume"), room=64 << 10)
    disk_full_line(result, str(out / "ckpt.pt"))
    assert (out / "ckpt.pt").read_bytes() == ckpt_bytes
    assert checkpoint.load(out / "ckpt.pt").iter_num == 2
    grown = (out / "metrics.jsonl").read_text()
    assert grown.startswith(log) and grown.endswith("\n")
    assert [r["iter"] for r in records(out, "step")] == [0, 1, 2, 3]  # every line whole
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # no temp file left behind

    # No room at all: not even the log is written, and nothing changes.
    after_first = snapshot(out)
    with small_disk.full(room=0), pytest.raises(GptkitError) as failed:
        train(tiny_cfg(data_root, out, max_iters=4, eval_interval=2, init_from="resume"))
    assert f"could not write {out / 'metrics.jsonl'}: " in str(failed.value) and "\n" not in str(failed.value)
    assert snapshot(out) == after_first


def test_a_log_line_is_written_whole_or_not_at_all(small_disk):
    log = small_disk.root / "metrics.jsonl"
    log.write_text("x" * 4095 + "\n")  # one full page
    room = 4096 if small_disk.tmpfs else 8192  # one more page free, or a file size limit one page larger
    with small_disk.full(room), pytest.raises(GptkitError, match="could not write .*metrics.jsonl"):
        files.append_line(log, "y" * 10_000)  # the disk takes one more page of it, then no more
    assert log.read_text() == "x" * 4095 + "\n"


def test_disk_full_during_prepare_keeps_the_old_dataset(small_disk, tmp_path):
    text = (ROOT / "data" / "shakespeare" / "input.txt").read_text(encoding="utf-8")
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text(text[:20_000], encoding="utf-8")
    large.write_text(text[:400_000], encoding="utf-8")
    data = small_disk.root / "data"
    prepare(small, data / "x", block_size=64, progress=False)
    before = snapshot(data / "x")
    result = small_disk.run(
        "-m", "gptkit.prepare", str(large), "--name", "x", "--out-root", str(data), "--block-size", "64", room=64 << 10
    )
    disk_full_line(result, str(data / "x" / "train.bin"))
    assert snapshot(data / "x") == before  # train.bin, val.bin and meta.json as they were; no temp files


def test_disk_full_during_export_keeps_the_old_export(small_disk):
    out = small_disk.root / "hf"
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=256, n_layer=2, n_head=2, n_embd=32, bias=True))
    export_hf(model, out)
    before = snapshot(out)
    assert sorted(before) == ["config.json", "model.safetensors"]
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    with small_disk.full(room=8 << 10), pytest.raises(GptkitError) as failed:
        export_hf(model, out)
    assert f"could not write {out / 'model.safetensors'}: " in str(failed.value) and "\n" not in str(failed.value)
    assert snapshot(out) == before


# --- one run per out_dir; Ctrl-C ------------------------------------------------------------
def test_a_live_run_locks_its_out_dir_and_ctrl_c_saves_a_state_that_resumes_exactly(data_root, tmp_path, monkeypatch):
    """A second run on a live run's folder is refused; SIGINT then ends the live run after its
    step with latest.pt saved and exit 130; resuming gives exactly the run never interrupted."""
    settings = dict(max_iters=16, eval_interval=4, always_save_checkpoint=False)
    whole, out = tmp_path / "whole", tmp_path / "run"

    job = subprocess.Popen(
        [sys.executable, *cli_args(data_root, out, **settings)],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_steps(job, out, 3)
        job.send_signal(signal.SIGSTOP)  # alive and holding its lock, but not racing to the end meanwhile
        second = run_cli(*cli_args(data_root, out, max_iters=4, overwrite_out_dir=True))
        assert_user_error(second, f"{out} is in use by another run (pid {job.pid} on ", "-m gptkit.train")
        with pytest.raises(GptkitError, match=f"pid {job.pid}"):
            train(tiny_cfg(data_root, out, **settings, init_from="resume"))
        job.send_signal(signal.SIGINT)
        job.send_signal(signal.SIGCONT)
        _, err = job.communicate(timeout=60)
    finally:
        job.kill()
        job.communicate()
    assert job.returncode == 130, err
    assert "Traceback" not in err
    said = re.search(r"SIGINT: stopped at iteration (\d+); its state is saved in (\S+);", err)
    assert said, err
    it, path = int(said[1]), Path(said[2])
    assert 3 <= it < 16
    assert path == checkpoint.latest_in(out) and checkpoint.load(path).iter_num == it
    if (out / checkpoint.BEST).exists():  # ckpt.pt still holds an evaluated model, never the stop's
        assert checkpoint.load(out / checkpoint.BEST).iter_num % 4 == 0
    assert [r["iter"] for r in records(out, "step")] == list(range(it))
    assert not (out / runguard.LOCK).exists()

    # The run never interrupted, computing with the kernels the child measured for itself...
    routes = checkpoint.load(path).cpu_matmul
    monkeypatch.setattr(cpu_kernels, "measure_routes", lambda: routes)
    train(tiny_cfg(data_root, whole, **settings))
    assert checkpoint.load(checkpoint.latest_in(whole)).cpu_matmul == routes
    # ...and the resumed one, in a process that would take the other routes: it keeps its own.
    monkeypatch.setattr(cpu_kernels, "measure_routes", lambda: {key: not chosen for key, chosen in routes.items()})
    train(tiny_cfg(data_root, out, **settings, init_from="resume"))
    assert [r["loss"] for r in records(out, "step")] == [r["loss"] for r in records(whole, "step")]

    def evals(run):
        return [(r["iter"], r["train_loss"], r["val_loss"]) for r in records(run, "eval")]

    assert evals(out) == evals(whole)
    a, b = checkpoint.load(checkpoint.latest_in(whole)), checkpoint.load(checkpoint.latest_in(out))
    assert a.iter_num == b.iter_num == 16
    for name, value in a.model.items():
        assert torch.equal(value, b.model[name]), name


HOLD_LOCK = "import sys, time\nfrom gptkit.runguard import OutDirLock\nOutDirLock(sys.argv[1]).acquire()\n"
HOLD_LOCK += "print('locked', flush=True)\ntime.sleep(120)\n"


def test_a_killed_runs_lock_blocks_nothing(data_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)], cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(GptkitError, match=f"pid {holder.pid} on .*: python -c import sys, time") as refused:
            train(tiny_cfg(data_root, out, max_iters=1))
        assert "\n" not in str(refused.value)  # the holder's multi-line command, on one line
        holder.send_signal(signal.SIGKILL)  # dies without a chance to clean up
        holder.wait(timeout=30)
    finally:
        holder.kill()
        holder.communicate()
    assert json.loads((out / runguard.LOCK).read_text())["pid"] == holder.pid  # its lock file stays behind...
    assert train(tiny_cfg(data_root, out, max_iters=1, eval_interval=1))["iter_num"] == 1  # ...and is harmless
    assert not (out / runguard.LOCK).exists()


def test_train_releases_the_lock_however_it_ends(data_root, tmp_path):
    """The notebooks' panel calls train() again and again in one process, sometimes after an error."""
    out = tmp_path / "run"
    train(tiny_cfg(data_root, out, max_iters=1, eval_interval=1))
    train(tiny_cfg(data_root, out, max_iters=1, eval_interval=1, overwrite_out_dir=True))
    with pytest.raises(GptkitError, match="prepare the dataset first"):
        train(tiny_cfg(data_root, out, max_iters=1, overwrite_out_dir=True, dataset="missing"))
    with runguard.OutDirLock(out), pytest.raises(GptkitError, match=f"in use by another run \\(pid {os.getpid()} "):
        train(tiny_cfg(data_root, out, max_iters=2, init_from="resume"))
    assert train(tiny_cfg(data_root, out, max_iters=2, eval_interval=1, init_from="resume"))["iter_num"] == 2


def test_a_second_signal_quits_at_once():
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a pytest-xdist worker
    with runguard.StopSignals(announce=False) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # handlers run between bytecodes
        assert stop.requested == signal.SIGINT  # asked, not raised
        os.kill(os.getpid(), signal.SIGINT)  # the same Ctrl-C forwarded again (torchrun does): ignored
        time.sleep(runguard.SAME_REQUEST_S + 0.1)
        with pytest.raises(runguard.Interrupted) as raised:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert raised.value.signum == signal.SIGTERM and "without saving" in str(raised.value)
    assert signal.getsignal(signal.SIGINT) is before  # handlers given back
    with pytest.raises(SystemExit) as exited:
        gptkit_run_cli(lambda: (_ for _ in ()).throw(raised.value))
    assert exited.value.code == 143  # 128 + SIGTERM, as a shell reports a process killed by it
