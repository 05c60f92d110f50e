"""gptkit.standin: the offline stand-in is pretrained (it beats random weights on unseen text), built
once, deterministic, GPT-2-shaped with 1,024 positions, and what transformers computes from it is
what gptkit computes. Smoke mode: its recipe's few steps, the same code."""

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import GPT2LMHeadModel

from gptkit import GPT
from gptkit.pretrained import STANDIN_SIZE, WeightsUnavailable
from gptkit.standin import build_pretrained_standin, dir_or_pretrained_standin, standin_dir


@pytest.fixture(scope="module")
def built(tmp_path_factory, shakespeare_bins):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPTKIT_SMOKE", "1")
        models = tmp_path_factory.mktemp("models")
        return build_pretrained_standin(shakespeare_bins, models), models


def val_loss(model: GPT, data_dir, n: int = 8, t: int = 128) -> float:
    tokens = np.fromfile(data_dir / "val.bin", dtype=np.uint16)[: n * t + 1].astype(np.int64)
    x, y = torch.from_numpy(tokens[:-1]).view(n, t), torch.from_numpy(tokens[1:]).view(n, t)
    with torch.no_grad():
        return model.eval()(x, y)[1].item()


def test_the_standin_is_pretrained_gpt2_shaped_and_loads_as_transformers_does(built, shakespeare_bins):
    folder, _ = built
    model = GPT.from_pretrained(folder)
    assert {k: getattr(model.config, k) for k in ("n_layer", "n_head", "n_embd")} == {
        k: v for k, v in STANDIN_SIZE.items() if k != "n_positions"
    }
    assert model.config.block_size == 1024 and model.config.vocab_size == 50257
    torch.manual_seed(0)
    untrained = GPT(model.config)
    trained, chance = val_loss(model, shakespeare_bins), val_loss(untrained, shakespeare_bins)
    assert abs(chance - math.log(50257)) < 0.3
    assert trained < chance - 0.5, f"even smoke mode's few steps must beat random weights: {trained} vs {chance}"
    ids = torch.randint(0, 50257, (2, 200), generator=torch.Generator().manual_seed(1))  # past the trained 128
    with torch.no_grad():
        ours = model(ids)[0]
        theirs = GPT2LMHeadModel.from_pretrained(folder).eval()(ids).logits
    torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=1e-4)


def test_it_is_built_once_and_deterministically(built, shakespeare_bins, tmp_path, monkeypatch):
    folder, models = built
    monkeypatch.setenv("GPTKIT_SMOKE", "1")
    before = (folder / "model.safetensors").stat().st_mtime_ns
    assert build_pretrained_standin(shakespeare_bins, models) == folder == standin_dir(models)
    assert (folder / "model.safetensors").stat().st_mtime_ns == before, "a cached stand-in is not rebuilt"
    again = build_pretrained_standin(shakespeare_bins, tmp_path)
    first, second = load_file(folder / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_smoke_and_full_recipes_have_folders_of_their_own(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTKIT_SMOKE", "1")
    smoke = standin_dir(tmp_path)
    monkeypatch.setenv("GPTKIT_SMOKE", "0")
    assert standin_dir(tmp_path) != smoke and smoke.name.startswith("offline-standin-")


def test_offline_it_stands_in_and_says_why(built, shakespeare_bins, monkeypatch):
    folder, models = built
    monkeypatch.setenv("GPTKIT_SMOKE", "1")
    directory, unavailable = dir_or_pretrained_standin("gpt2", shakespeare_bins, models)
    assert directory == folder and isinstance(unavailable, WeightsUnavailable) and "gpt2" in str(unavailable)
