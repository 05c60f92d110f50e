import json

import pytest
import torch
from transformers import GPT2LMHeadModel

from conftest import build_hf_gpt2
from gptkit import GPT
from gptkit.errors import GptkitError
from gptkit.export import export_hf
from gptkit.pretrained import WeightsUnavailable, dir_or_standin


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def pair(tiny_hf_dir):
    hf = GPT2LMHeadModel.from_pretrained(tiny_hf_dir).eval()
    ours = GPT.from_pretrained(tiny_hf_dir).eval()
    return hf, ours


def test_hf_to_gptkit_logits_match(pair):
    hf, ours = pair
    idx = torch.randint(0, 50257, (2, 50), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert max_diff(hf(idx).logits, ours(idx)[0]) <= 1e-5
        # the loss too: HF shifts labels inside, gptkit takes shifted targets
        hf_loss = hf(idx, labels=idx).loss
        _, our_loss = ours(idx[:, :-1], idx[:, 1:])
    assert abs(hf_loss.item() - our_loss.item()) <= 1e-5


def test_gptkit_to_hf_via_export(tmp_path):
    torch.manual_seed(3)
    from gptkit.model import GPTConfig

    ours = GPT(GPTConfig(block_size=96, n_layer=2, n_head=2, n_embd=32)).eval()
    export_hf(ours, tmp_path / "exported")
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "exported").eval()
    idx = torch.randint(0, 50257, (3, 40))
    with torch.no_grad():
        assert max_diff(hf(idx).logits, ours(idx)[0]) <= 1e-5
    assert json.loads((tmp_path / "exported/config.json").read_text())["n_positions"] == 96
    # and back again: the round trip is exact
    again = GPT.from_pretrained(tmp_path / "exported")
    for (k, a), b in zip(ours.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_greedy_tokens_match_hf_generate(pair):
    hf, ours = pair
    prompt = torch.randint(0, 50257, (2, 7), generator=torch.Generator().manual_seed(1))
    expected = hf.generate(
        prompt, max_new_tokens=40, do_sample=False, pad_token_id=50256, attention_mask=torch.ones_like(prompt)
    )
    assert torch.equal(ours.generate(prompt, 40, temperature=0), expected)
    assert torch.equal(ours.generate(prompt, 40, temperature=0, use_cache=False), expected)


def test_pytorch_model_bin_and_gpt2model_prefixes(tmp_path, tiny_hf_dir):
    """Older checkpoints: pytorch_model.bin, keys without the `transformer.` prefix."""
    from safetensors.torch import load_file

    state = load_file(tiny_hf_dir / "model.safetensors")
    bare = {k.removeprefix("transformer."): v for k, v in state.items()}
    (tmp_path / "old").mkdir()
    torch.save(bare, tmp_path / "old/pytorch_model.bin")
    (tmp_path / "old/config.json").write_text((tiny_hf_dir / "config.json").read_text())
    a = GPT.from_pretrained(tiny_hf_dir).eval()
    b = GPT.from_pretrained(tmp_path / "old").eval()
    idx = torch.randint(0, 50257, (1, 10))
    with torch.no_grad():
        assert torch.equal(a(idx)[0], b(idx)[0])


def test_dropout_is_the_only_override(tiny_hf_dir):
    model = GPT.from_pretrained(tiny_hf_dir, {"dropout": 0.25})
    assert model.config.dropout == 0.25
    assert model.transformer.h[0].mlp.dropout.p == 0.25
    with pytest.raises(GptkitError, match="only dropout"):
        GPT.from_pretrained(tiny_hf_dir, {"n_layer": 3})


def test_offline_named_model_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsUnavailable) as info:
        GPT.from_pretrained("gpt2-xl")
    message = str(info.value)
    assert "gpt2-xl" in message and "local directory" in message and "\n" not in message


def test_standin_goes_through_the_same_loader(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    directory, unavailable = dir_or_standin("gpt2", tmp_path / "standin")
    assert isinstance(unavailable, WeightsUnavailable) and directory == tmp_path / "standin"
    model = GPT.from_pretrained(directory)
    assert (tmp_path / "standin/config.json").is_file() and (tmp_path / "standin/model.safetensors").is_file()
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "standin").eval()
    idx = torch.randint(0, 50257, (1, 12))
    with torch.no_grad():
        assert max_diff(hf(idx).logits, model.eval()(idx)[0]) <= 1e-5


@pytest.fixture
def cached_gpt2(monkeypatch, tmp_path, tiny_hf_dir):
    """A hub cache entry for `gpt2`, as a past download leaves it, holding the tiny model; offline."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    snapshot = cache / "models--openai-community--gpt2" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((tiny_hf_dir / name).read_bytes())
    (cache / "models--openai-community--gpt2" / "refs").mkdir()
    (cache / "models--openai-community--gpt2" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))


def test_cached_named_model_loads_offline(cached_gpt2):
    """A hub cache entry for `gpt2` (as a past download leaves it) is found without the network."""
    model = GPT.from_pretrained("gpt2")
    assert model.config.n_layer == 2  # the tiny stand-in for the cached copy


def test_the_seeds_snippet_works_verbatim(cached_gpt2, tiny_hf_dir):
    """nanoGPT's finetuning recipe's `model = GPT.from_pretrained(init_from, override_args)`, on a cached gpt2."""

    from gptkit.model import GPT  # the recipe's import, then its lines as written

    init_from, dropout = "gpt2", 0.1
    override_args = dict(dropout=dropout)
    model = GPT.from_pretrained(init_from, override_args)

    assert model.config.dropout == 0.1 and model.transformer.drop.p == 0.1
    hf = GPT2LMHeadModel.from_pretrained(tiny_hf_dir).eval()
    idx = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert max_diff(hf(idx).logits, model.eval()(idx)[0]) <= 1e-5


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "llama"}, "GPT-2 models only"),
        ({"activation_function": "relu"}, "tanh GELU"),
        ({"n_embd": 32}, "shape"),
    ],
)
def test_foreign_directories_are_refused(tmp_path, tiny_hf_dir, change, message):
    target = tmp_path / "bad"
    target.mkdir()
    config = json.loads((tiny_hf_dir / "config.json").read_text()) | change
    (target / "config.json").write_text(json.dumps(config))
    (target / "model.safetensors").write_bytes((tiny_hf_dir / "model.safetensors").read_bytes())
    with pytest.raises(GptkitError, match=message):
        GPT.from_pretrained(target)


def test_truncated_weights_are_refused(tmp_path, tiny_hf_dir):
    target = tmp_path / "cut"
    target.mkdir()
    (target / "config.json").write_text((tiny_hf_dir / "config.json").read_text())
    data = (tiny_hf_dir / "model.safetensors").read_bytes()
    (target / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(GptkitError, match="truncated"):
        GPT.from_pretrained(target)


def test_unknown_name_is_refused():
    with pytest.raises(GptkitError, match="neither a directory nor a GPT-2 size"):
        GPT.from_pretrained("gpt3")


def test_larger_hf_config_round_trips(tmp_path):
    build_hf_gpt2(tmp_path / "wide", seed=5, n_layer=3, n_head=6, n_embd=96, n_positions=64)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "wide").eval()
    ours = GPT.from_pretrained(tmp_path / "wide").eval()
    idx = torch.randint(0, 50257, (2, 64))
    with torch.no_grad():
        assert max_diff(hf(idx).logits, ours(idx)[0]) <= 1e-5
