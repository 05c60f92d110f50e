"""Shared fixtures: small Hugging Face GPT-2 checkpoints built locally, and the Shakespeare bins."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "shakespeare"

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
    """data/shakespeare prepared by the real script (once, whichever pytest worker comes first)."""
    from filelock import FileLock

    with FileLock(SHAKESPEARE / ".prepare.lock"):  # pytest -n 2: the other worker waits, then finds the bins
        if not (SHAKESPEARE / "train.bin").exists() or not (SHAKESPEARE / "val.bin").exists():
            subprocess.run([sys.executable, str(SHAKESPEARE / "prepare.py")], check=True, cwd=ROOT)
    return SHAKESPEARE


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python ARGS...` as a user would; returns the finished process (never raises on failure)."""
    full_env = os.environ | {"PYTHONPATH": str(ROOT)} | (env or {})
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """The command failed the way a user mistake should: exit 1, one `error:` line, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]
