"""gptkit.checkpoint: the format, which file a run continues from, and reading it once."""

import math
import os

import pytest
import torch

from gptkit import checkpoint
from gptkit.errors import GptkitError
from gptkit.model import GPT, GPTConfig

CONFIG = GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=8)


def saved(out_dir, name: str, iter_num: int) -> dict:
    model = GPT(CONFIG)
    ckpt = checkpoint.training_checkpoint(
        model={f"_orig_mod.{k}": v for k, v in model.state_dict().items()},  # as torch.compile names them
        optimizer={},
        scaler={},
        model_config=CONFIG,
        config={"learning_rate": 1e-3},
        dtype=torch.bfloat16,
        progress={"iter_num": iter_num, "best_val_loss": 2.5, "evals_since_best": 1, "tokens_seen": 640},
        rngs=[{"torch": torch.get_rng_state()}],
        sampler={},
        lora=None,
        cpu_matmul={"forward": True, "backward": False, "inference": False},
    )
    checkpoint.write(ckpt, out_dir, best=name == checkpoint.BEST)
    return ckpt


def test_a_checkpoint_round_trips_and_rebuilds_its_model(tmp_path):
    ckpt = saved(tmp_path, checkpoint.BEST, 4)
    back = checkpoint.load(tmp_path / checkpoint.BEST)
    assert back.dtype == "bfloat16" and back.model_args["n_embd"] == 8
    assert back.cpu_matmul == {"forward": True, "backward": False, "inference": False}
    assert back.progress == {"iter_num": 4, "best_val_loss": 2.5, "evals_since_best": 1, "tokens_seen": 640}
    model = checkpoint.model_from_checkpoint(back, tmp_path / checkpoint.BEST)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt.model[k]), k  # prefixes stripped, every weight back


def test_older_checkpoints_get_default_counters():
    older = {"model": {}, "model_args": {}, "iter_num": 7, "best_val_loss": 1.0}  # no format_version
    assert checkpoint.Checkpoint.from_dict(older).progress == {
        "iter_num": 7,
        "best_val_loss": 1.0,
        "evals_since_best": 0,
        "tokens_seen": 0,
    }


def test_a_version_1_checkpoint_is_migrated_to_the_current_format():
    """What gptkit wrote before the format had a version, read as the current version says."""
    rng = {"torch": torch.get_rng_state()}
    lora = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": "c_attn", "base": "gpt2"}
    old = {"model": {}, "model_args": {}, "rng": rng, "cpu_matmul": {"training": True, "inference": False}}
    ckpt = checkpoint.Checkpoint.from_dict(old | {"lora": lora})
    assert ckpt.format_version == checkpoint.FORMAT_VERSION
    assert ckpt.rng == [rng]  # one state a rank
    assert ckpt.cpu_matmul == {"forward": True, "backward": True, "inference": False}
    assert ckpt.lora == lora | {"base_fingerprint": None} and ckpt.dtype is None
    assert ckpt.progress == {"iter_num": 0, "best_val_loss": math.inf, "evals_since_best": 0, "tokens_seen": 0}
    assert "training" in old["cpu_matmul"] and "format_version" not in old  # the file's dict is left as read


def test_a_checkpoint_from_a_newer_gptkit_is_one_line(tmp_path):
    path = tmp_path / checkpoint.BEST
    torch.save({"model": {}, "model_args": {}, "format_version": checkpoint.FORMAT_VERSION + 1}, path)
    with pytest.raises(GptkitError, match="newer than this gptkit"):
        checkpoint.load(path)


def test_resume_takes_the_newer_file_and_sampling_the_best(tmp_path):
    saved(tmp_path, checkpoint.BEST, 4)
    assert checkpoint.latest_in(tmp_path) == checkpoint.best_in(tmp_path) == tmp_path / checkpoint.BEST
    saved(tmp_path, checkpoint.LATEST, 6)  # an evaluation that did not improve
    assert checkpoint.latest_in(tmp_path) == tmp_path / checkpoint.LATEST
    assert checkpoint.best_in(tmp_path) == tmp_path / checkpoint.BEST
    saved(tmp_path, checkpoint.BEST, 8)  # a best one again: latest.pt goes
    assert not (tmp_path / checkpoint.LATEST).exists()


def test_resume_reads_once_and_again_only_if_the_file_changed(tmp_path, monkeypatch):
    saved(tmp_path, checkpoint.BEST, 4)
    resume = checkpoint.Resume.find(tmp_path)
    assert resume.path == tmp_path / checkpoint.BEST and resume.ckpt.iter_num == 4
    reads = []
    real_load = checkpoint.load
    monkeypatch.setattr(checkpoint, "load", lambda *a, **k: reads.append(a) or real_load(*a, **k))
    assert resume.checked() is resume and reads == []  # unchanged: not read again
    saved(tmp_path, checkpoint.BEST, 6)  # another run wrote it meanwhile
    fresh = resume.checked()
    assert fresh.ckpt.iter_num == 6 and len(reads) == 1


def test_a_missing_checkpoint_is_reported_when_checked_not_when_found(tmp_path):
    resume = checkpoint.Resume.find(tmp_path)  # no error yet: the out_dir lock's message comes first
    assert resume.ckpt is None
    with pytest.raises(GptkitError, match="nothing to resume in"):
        resume.checked()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a zip at all"])
def test_a_broken_file_is_one_line(tmp_path, content):
    path = tmp_path / checkpoint.BEST
    path.write_bytes(content)
    with pytest.raises(GptkitError, match="truncated or corrupt") as info:
        checkpoint.load(path)
    assert "\n" not in str(info.value)


def test_a_foreign_file_is_named_as_such(tmp_path):
    path = tmp_path / checkpoint.BEST
    torch.save({"state_dict": {}}, path)
    with pytest.raises(GptkitError, match="not a gptkit checkpoint"):
        checkpoint.load(path)
    os.remove(path)
    with pytest.raises(GptkitError, match=f"holds no {checkpoint.BEST}"):
        checkpoint.best_in(tmp_path)
