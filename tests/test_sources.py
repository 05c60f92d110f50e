"""gptkit.sources: every init_from tells its shape and LoRA settings before loading, then loads that model."""

from dataclasses import replace

import pytest
import torch
from test_peft_format import peft_logits, peft_model

from gptkit import checkpoint, sources
from gptkit.config import TrainConfig
from gptkit.errors import GptkitError
from gptkit.lora import lora_state_dict
from gptkit.model import GPTConfig


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_hf_dir):
    out = tmp_path_factory.mktemp("sources") / "adapter"
    peft_model(tiny_hf_dir).save_pretrained(out)
    return out


def loads_as_told(source: sources.Source, dropout: float = 0.0):
    """Load `source` and check the model is the architecture it told before loading."""
    model, settings = source.load(dropout)
    assert model.config == replace(source.config, dropout=dropout)
    return model, settings


def test_a_hugging_face_directory_and_scratch(tiny_hf_dir):
    from transformers import GPT2LMHeadModel

    model, settings = loads_as_told(sources.find(str(tiny_hf_dir)))
    assert settings is None and model.config.n_embd == 64 and model.config.block_size == 128
    x = torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = GPT2LMHeadModel.from_pretrained(tiny_hf_dir).eval()(x).logits
        torch.testing.assert_close(model.eval()(x)[0], reference, atol=1e-5, rtol=0)
    shape = GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=8)
    assert loads_as_told(sources.find("scratch", scratch=shape), 0.1)[1] is None


def test_a_peft_adapter_tells_its_settings_and_sampling_merges_it(adapter_dir, tiny_hf_dir):
    source = sources.find(str(adapter_dir))
    model, settings = loads_as_told(source)
    assert {k: settings[k] for k in source.lora} == source.lora  # before loading: all but the base's digest
    assert source.lora == {"rank": 4, "alpha": 8.0, "dropout": 0.1, "targets": "c_attn,c_fc,mlp.c_proj"}
    x = torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(0))
    merged = sources.load_model(str(adapter_dir)).eval()
    assert not lora_state_dict(merged)  # the adapters folded into the weights
    with torch.no_grad():
        torch.testing.assert_close(merged(x)[0], peft_logits(tiny_hf_dir, adapter_dir, x), atol=1e-5, rtol=0)


def test_a_run_is_its_checkpoint_and_a_new_lora_run_its_settings(tiny_hf_dir, tmp_path):
    lora = dict(lora_rank=2, lora_alpha=4, lora_targets="c_attn")
    cfg = TrainConfig(init_from=str(tiny_hf_dir), out_dir=str(tmp_path), **lora)
    source = sources.for_training(cfg)
    model, settings = loads_as_told(source)
    assert (
        {k: settings[k] for k in source.lora}
        == source.lora
        == {
            "rank": 2,
            "alpha": 4.0,
            "dropout": 0.0,
            "targets": "c_attn",
        }
    )
    assert settings["base"] == str(tiny_hf_dir.resolve()) and settings["base_fingerprint"]
    assert len(lora_state_dict(model)) == 2 * 2  # 2 blocks x (A, B)
    ckpt = checkpoint.Checkpoint(
        lora_state_dict(model), {k: getattr(model.config, k) for k in GPTConfig.__dataclass_fields__}, lora=settings
    )
    checkpoint.write(ckpt, tmp_path, best=True)
    run = sources.find("resume", tmp_path)
    assert run.lora == settings and run.ckpt.lora == settings
    again, _ = loads_as_told(run)
    for name, value in lora_state_dict(model).items():
        assert torch.equal(value, lora_state_dict(again)[name]), name


def test_what_is_no_model_is_one_line(tmp_path):
    with pytest.raises(GptkitError, match="neither a directory nor a GPT-2 size"):
        sources.find("gpt3")
    with pytest.raises(GptkitError, match="holds no ckpt.pt"):
        sources.find("resume", tmp_path)
    cfg = TrainConfig(init_from="resume", out_dir=str(tmp_path))
    with pytest.raises(GptkitError, match="nothing to resume"):
        sources.for_training(cfg)
