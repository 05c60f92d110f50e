"""gptkit.files: every write is whole or not at all."""

import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from gptkit import checkpoint
from gptkit.errors import GptkitError
from gptkit.files import append_line, atomic_save, atomic_write


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"old": true}')

    def half_then_fail(f):
        f.write(b'{"new":')
        raise OSError("disk full")

    with pytest.raises(GptkitError, match="could not write .*config.json: disk full"):  # one line for the user
        atomic_write(path, half_then_fail)
    assert path.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp file left behind
    atomic_write(path, lambda f: f.write(b'{"new": true}'))
    assert path.read_text() == '{"new": true}'


def test_atomic_save_killed_mid_write_leaves_the_old_checkpoint(tmp_path):
    """The writer is killed while the new file is half written: the old one is still whole."""
    path = tmp_path / "ckpt.pt"
    atomic_save({"model": {"w": torch.zeros(3)}, "model_args": {}, "iter_num": 0}, path)
    writer = (
        "import sys, time\nfrom gptkit.files import atomic_write\n"
        "def half(f):\n    f.write(b'PK' + bytes(1_000_000)); f.flush()\n"
        "    print('half', flush=True); time.sleep(60)\n"
        "atomic_write(sys.argv[1], half)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "half"  # the new bytes are on disk, not yet renamed
        half_written = [p for p in tmp_path.iterdir() if p.name != "ckpt.pt"]
        assert len(half_written) == 1 and half_written[0].stat().st_size > 1_000_000
    finally:
        proc.kill()
        proc.wait()
    ckpt = checkpoint.load(path)
    assert ckpt.iter_num == 0 and torch.equal(ckpt.model["w"], torch.zeros(3))


def test_append_line_adds_whole_lines(tmp_path):
    log = tmp_path / "metrics.jsonl"
    append_line(log, '{"a": 1}')
    append_line(log, '{"b": 2}\n')  # a trailing newline is not doubled
    assert log.read_text() == '{"a": 1}\n{"b": 2}\n'


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path):
    missing = tmp_path / "no" / "such" / "folder" / "x.json"
    with pytest.raises(GptkitError, match="could not write .*x.json") as info:
        atomic_write(missing, lambda f: f.write(b"{}"))
    assert "\n" not in str(info.value)
