"""Shared fixtures: small Hugging Face GPT-2 checkpoints built locally, and the Shakespeare bins."""

import atexit
import contextlib
import io
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
HELPERS = ROOT / "tests" / "helpers"  # tiny configs and records, worker scripts, the test hub
SHAKESPEARE = ROOT / "data" / "shakespeare"  # read only: the tests prepare a copy outside the checkout
sys.path.insert(0, str(HELPERS))

# The datasets tests prepare live outside the checkout, in one folder per test run: made when the
# first pytest process imports this file, and handed to its workers (and every child process)
# through the environment; tiny.TINY_RUN points data_root at it. The first process removes it.
if "GPTKIT_TEST_DATA_ROOT" not in os.environ:
    os.environ["GPTKIT_TEST_DATA_ROOT"] = tempfile.mkdtemp(prefix="gptkit-test-data-")
    atexit.register(shutil.rmtree, os.environ["GPTKIT_TEST_DATA_ROOT"], ignore_errors=True)
DATA_ROOT = Path(os.environ["GPTKIT_TEST_DATA_ROOT"])

# The hub is unreachable here; make any attempt fail fast instead of retrying for seconds.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Threads per process: `make test` runs two pytest workers on two cores, one thread each, and
# every child process a test starts (CLIs, notebooks' kernels) takes the same count.
THREADS = os.environ.setdefault("OMP_NUM_THREADS", str(min(2, os.cpu_count() or 1)))
torch.set_num_threads(int(THREADS))


def build_hf_gpt2(path: Path, seed: int = 0, **size) -> Path:
    """A random-weight GPT-2 in Hugging Face format, with the real 50257-token vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(**({"n_layer": 2, "n_head": 4, "n_embd": 64, "n_positions": 128} | size))
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory) -> Path:
    return build_hf_gpt2(tmp_path_factory.mktemp("tiny-hf"))


@pytest.fixture(scope="session")
def shakespeare_bins() -> Path:
    """data/shakespeare prepared by its real script, run on a copy in the test run's data root
    (outside the checkout): once per run, whichever pytest worker comes first."""
    from filelock import FileLock

    folder = DATA_ROOT / "shakespeare"
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(DATA_ROOT / "shakespeare.lock"):  # pytest -n 2: the other worker waits, then finds the bins
        if not (folder / "train.bin").exists() or not (folder / "val.bin").exists():
            for name in ("input.txt", "prepare.py"):
                shutil.copy(SHAKESPEARE / name, folder / name)
            subprocess.run([sys.executable, str(folder / "prepare.py")], check=True, cwd=DATA_ROOT)
    return folder


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python ARGS...` as a user would; returns the finished process (never raises on failure)."""
    full_env = os.environ | {"PYTHONPATH": str(ROOT)} | (env or {})
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def run_cli_in_process(
    *args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`python ARGS...` run by runpy in this process, as `python` runs `-m MODULE` or a script:
    the same `__main__` code, argv, working folder and environment, its output and exit status
    captured. For tests of what a command prints and writes (bad input above all), where starting
    Python and torch (~3 s of CPU) would be most of the test; test_cli_errors checks that a process
    of its own prints the same. Runs under torchrun, signals and crashes keep their own processes.
    Past `timeout` seconds it raises subprocess.TimeoutExpired, as run_cli does."""

    def timed_out(signum, frame):
        raise subprocess.TimeoutExpired(args, timeout)

    argv = list(args)
    saved = dict(os.environ), os.getcwd(), list(sys.path), list(sys.argv)
    stdout, stderr = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    previous_handler = signal.signal(signal.SIGALRM, timed_out)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        os.environ.update(env or {})
        os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), warnings.catch_warnings():
            # the module is imported already (this process imports gptkit): runpy runs it afresh as __main__
            warnings.filterwarnings("ignore", message=".*found in sys.modules", category=RuntimeWarning)
            try:
                if argv[0] == "-m":
                    sys.argv[:] = [argv[1], *argv[2:]]
                    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
                else:
                    sys.argv[:] = argv
                    runpy.run_path(argv[0], run_name="__main__")
            except SystemExit as e:
                code = e.code
            except subprocess.TimeoutExpired:
                raise
            except Exception:  # what the interpreter would print, and its exit status
                traceback.print_exc()
                code = 1
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        os.environ.clear()
        os.environ.update(saved[0])
        os.chdir(saved[1])
        sys.path[:], sys.argv[:] = saved[2], saved[3]
        torch.set_num_threads(int(THREADS))
    return subprocess.CompletedProcess(args, code or 0, stdout.getvalue(), stderr.getvalue())


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """The command failed the way a user mistake should: exit 1, one `error:` line, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]
