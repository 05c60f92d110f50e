"""gptkit.generation: prompts of different lengths, left-padded in one batch, generate what each does alone."""

import pytest
import torch

from gptkit.generation import generate_padded, left_padded, padded_positions, padding_mask
from gptkit.model import GPT


@pytest.fixture(scope="module")
def varied_hf_dir(tmp_path_factory):
    """A tiny HF GPT-2 whose large random weights make greedy tokens vary (not one repeated token)."""
    from conftest import build_hf_gpt2

    return build_hf_gpt2(tmp_path_factory.mktemp("varied-hf"), initializer_range=0.3)


def padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    idx = torch.tensor([[50256] * (width - len(p)) + p for p in prompts])
    return idx, torch.tensor([width - len(p) for p in prompts])


def test_left_padded_pads_on_the_left_and_counts_the_padding():
    idx, pad = left_padded([[5, 6, 7], [8]], 50256)
    assert idx.tolist() == [[5, 6, 7], [50256, 50256, 8]] and pad.tolist() == [0, 2]
    assert [t.tolist() for t in padded([[5, 6, 7], [8]])] == [idx.tolist(), pad.tolist()]


@pytest.mark.parametrize("use_cache", [True, False])
def test_left_padded_batch_generates_what_each_prompt_generates_alone(varied_hf_dir, use_cache):
    from transformers import GPT2LMHeadModel

    model = GPT.from_pretrained(str(varied_hf_dir)).eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 50257, (n,), generator=g).tolist() for n in (3, 11, 1, 7, 20)]
    alone = [model.generate(torch.tensor([p]), 12, temperature=0)[0, len(p) :].tolist() for p in prompts]
    idx, pad = padded(prompts)
    batch = generate_padded(model, idx, pad, 12, temperature=0, use_cache=use_cache)[:, idx.size(1) :].tolist()
    assert batch == alone
    assert model.generate(idx, 12, temperature=0)[:, idx.size(1) :].tolist() != alone  # padding unmasked: it shows
    assert len(set(alone[1])) > 3  # the tokens vary, so the comparison means something
    hf = GPT2LMHeadModel.from_pretrained(varied_hf_dir).eval()
    ref = hf.generate(torch.tensor([prompts[1]]), max_new_tokens=12, do_sample=False, pad_token_id=50256)
    assert ref[0, len(prompts[1]) :].tolist() == alone[1]


def test_left_padded_prefill_logits_equal_each_row_alone(varied_hf_dir):
    model = GPT.from_pretrained(str(varied_hf_dir)).eval()
    prompts = [list(range(100, 109)), list(range(200, 203))]
    idx, pad = padded(prompts)
    with torch.no_grad():
        T = idx.size(1)
        logits = model.lm_head(model.hidden_states(idx, None, padded_positions(pad, 0, T), padding_mask(pad, 0, T)))
        for row, p in enumerate(prompts):
            alone = model.lm_head(model.hidden_states(torch.tensor([p])))[0]
            torch.testing.assert_close(logits[row, int(pad[row]) :], alone, atol=1e-5, rtol=1e-5)


def test_left_padded_generation_slides_past_the_context_window(varied_hf_dir):
    """block_size 128: the long row's window slides, the short row only loses padding."""
    model = GPT.from_pretrained(str(varied_hf_dir)).eval()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 50257, (n,), generator=g).tolist() for n in (120, 60)]
    alone = [model.generate(torch.tensor([p]), 20, temperature=0)[0, len(p) :].tolist() for p in prompts]
    idx, pad = padded(prompts)
    assert generate_padded(model, idx, pad, 20, temperature=0)[:, 120:].tolist() == alone
