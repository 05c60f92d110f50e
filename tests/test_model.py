import math

import pytest
import torch

from gptkit.model import GPT, GPTConfig, KVCache, gpt2_config, next_token_probs, sample_next
from gptkit.pretrained import GPT2_SIZES


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**({"block_size": 64, "vocab_size": 50257, "n_layer": 2, "n_head": 4, "n_embd": 64} | kw)))


@pytest.mark.parametrize(
    "name, millions", [("gpt2", 124), ("gpt2-medium", 355), ("gpt2-large", 774), ("gpt2-xl", 1558)]
)
def test_named_sizes_have_gpt2_parameter_counts(name, millions):
    with torch.device("meta"):
        model = GPT(gpt2_config(name))
    # GPT-2's headline counts include the position embeddings (the head is tied to wte).
    assert round(model.num_params(non_embedding=False) / 1e6) == millions
    assert model.config.n_layer == GPT2_SIZES[name]["n_layer"]


def test_forward_shapes_and_loss_at_init():
    model = tiny()
    idx = torch.randint(0, 50257, (3, 20))
    logits, loss = model(idx)
    assert logits.shape == (3, 20, 50257) and loss is None
    _, loss = model(idx, torch.randint(0, 50257, (3, 20)))
    # An untrained model is close to uniform over the vocabulary.
    assert abs(loss.item() - math.log(50257)) < 0.1


def test_loss_skips_ignored_targets_as_a_mean_or_a_sum():
    """Targets of -1 (padding, a prompt under mask_prompt) count for nothing: the mean is over the
    others, as F.cross_entropy(ignore_index=-1) computes it, and reduction="sum" is their sum."""
    model = tiny()
    idx = torch.randint(0, 50257, (3, 20))
    targets = torch.randint(0, 50257, (3, 20))
    targets[0, :12] = -1
    targets[2, 15:] = -1
    logits, _ = model(idx)
    ref = torch.nn.functional.cross_entropy(logits.view(-1, 50257), targets.view(-1), ignore_index=-1)
    target_logits, mean = model(idx, targets)
    torch.testing.assert_close(mean, ref)
    torch.testing.assert_close(target_logits, logits[targets != -1])  # logits only where there is a target
    _, summed = model(idx, targets, reduction="sum")
    torch.testing.assert_close(summed, ref * (targets != -1).sum())


def test_weight_tying():
    model = tiny()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.num_params(non_embedding=False) == sum(p.numel() for p in model.parameters())


def test_attention_is_causal():
    model = tiny().eval()
    idx = torch.randint(0, 50257, (1, 16))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 50257
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:], atol=1e-3)


def test_gelu_is_the_tanh_approximation():
    model = tiny().eval()
    x = torch.randn(2, 5, 64)
    mlp = model.transformer.h[0].mlp
    h = mlp.c_fc(x)
    expected = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    assert torch.allclose(mlp(x), mlp.c_proj(expected), atol=1e-6)


def test_crop_block_size():
    model = tiny()
    model.crop_block_size(16)
    assert model.config.block_size == 16 and model.transformer.wpe.weight.shape == (16, 64)
    model(torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(ValueError):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError):
        model.crop_block_size(32)


def test_configure_optimizers_decays_matrices_only():
    model = tiny()
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params(non_embedding=False)


def test_estimate_mfu_uses_sequence_length_and_peak():
    model = tiny()
    n = model.num_params()
    assert model.flops_per_token(10) == 6 * n + 12 * 2 * 4 * 16 * 10
    mfu = model.estimate_mfu(tokens_per_iter=1000, dt=1.0, seq_len=10, peak_flops=1e9)
    assert mfu == pytest.approx(model.flops_per_token(10) * 1000 / 1e9)
    assert model.estimate_mfu(1000, 1.0, 10, peak_flops=2e9) == pytest.approx(mfu / 2)


def linear_flops(model: GPT, x: torch.Tensor, backward: bool) -> int:
    """The FLOPs torch counts in the matmuls of a forward (and backward) pass over `x`: every weight's
    product, not attention's (counted by hand where the test needs it)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        with torch.set_grad_enabled(backward):
            logits = model(x)[0]
            if backward:
                logits.float().square().mean().backward()
    return sum(n for op, n in counter.get_flop_counts()["Global"].items() if str(op) in ("aten.mm", "aten.addmm"))


def test_flops_per_token_counts_what_torch_counts_plus_attention():
    """Forward: 2 FLOPs a weight and 4 L C T for attention; training: three times that (PaLM)."""
    model, (B, T) = tiny(vocab_size=512), (3, 40)
    cfg, x = model.config, torch.randint(0, 512, (B, T))
    attention = 4 * cfg.n_layer * cfg.n_embd * T  # Q K^T and A V of each token over its row of T
    # biases and LayerNorm weights: in the formula's 2 FLOPs a parameter, in no matmul
    vectors = sum(p.numel() for p in model.parameters() if p.dim() == 1)
    for backward, times in ((False, 1), (True, 3)):
        counted = linear_flops(model, x, backward) / (B * T) + times * (attention + 2 * vectors)
        assert model.flops_per_token(T, backward=backward) == pytest.approx(counted, rel=1e-9)
    with_reference = model.estimate_mfu(1000, 2.0, T, peak_flops=1e9, forward_only=500)
    want = (1000 * model.flops_per_token(T) + 500 * model.flops_per_token(T, backward=False)) / 2.0 / 1e9
    assert with_reference == pytest.approx(want)


def test_kv_cache_logits_match_full_forward():
    model = tiny().eval()
    idx = torch.randint(0, 50257, (2, 12))
    full, _ = model(idx)
    cache = KVCache(model.config, 2, 12, "cpu", torch.float32)
    with torch.no_grad():
        steps = [model.lm_head(model.hidden_states(idx[:, :5], cache))]
        for t in range(5, 12):
            steps.append(model.lm_head(model.hidden_states(idx[:, t : t + 1], cache)))
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("block_size", [64, 16])  # 16: generation slides past the context window
def test_greedy_cached_equals_uncached(block_size):
    model = tiny(block_size=block_size).eval()
    prompt = torch.randint(0, 50257, (3, 6))
    cached = model.generate(prompt, 30, temperature=0)
    uncached = model.generate(prompt, 30, temperature=0, use_cache=False)
    assert cached.shape == (3, 36)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached[:, :6], prompt)


def test_sampling_is_seeded_and_batched():
    model = tiny().eval()
    prompt = torch.zeros(4, 1, dtype=torch.long)
    a = model.generate(prompt, 10, temperature=1.0, top_k=50, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 10, temperature=1.0, top_k=50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert len({tuple(r) for r in a.tolist()}) > 1  # rows sample independently


def test_stop_token_pads_finished_rows():
    model = tiny().eval()
    prompt = torch.zeros(2, 1, dtype=torch.long)
    greedy = model.generate(prompt, 5, temperature=0)
    stop = int(greedy[0, 2])  # the token row 0 emits second
    out = model.generate(prompt, 5, temperature=0, stop_token=stop)
    assert (out[0, 2:] == stop).all()


def test_top_k_and_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    assert torch.allclose(next_token_probs(logits), logits.exp(), atol=1e-6)
    top2 = next_token_probs(logits, top_k=2)
    assert torch.allclose(top2, torch.tensor([[5 / 7, 2 / 7, 0, 0, 0]]), atol=1e-6)
    # top_p=0.7: 0.5 alone is short of 0.7, 0.5+0.2 reaches it: keep two tokens.
    nucleus = next_token_probs(logits, top_p=0.7)
    assert torch.allclose(nucleus, torch.tensor([[5 / 7, 2 / 7, 0, 0, 0]]), atol=1e-6)
    assert (next_token_probs(logits, top_p=0.01) > 0).sum() == 1  # the top token always stays
    cold = next_token_probs(logits, temperature=0.5)
    assert cold[0, 0] > 0.5 and torch.allclose(cold.sum(), torch.tensor(1.0))
    assert sample_next(logits, temperature=0).item() == 0


def test_gradients_match_hf(tmp_path):
    from transformers import GPT2LMHeadModel

    from gptkit.export import export_hf
    from gptkit.pretrained import TRANSPOSED

    model = tiny()
    export_hf(model, tmp_path)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path)
    idx = torch.randint(0, 50257, (2, 24), generator=torch.Generator().manual_seed(2))
    _, loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    hf(idx, labels=idx).loss.backward()
    hf_grads = dict(hf.transformer.named_parameters())
    for name, p in model.transformer.named_parameters():
        g = hf_grads[name].grad
        g = g.t() if name.endswith(TRANSPOSED) else g
        assert torch.allclose(p.grad, g, atol=1e-5, rtol=1e-4), name


def test_grad_checkpoint_gradients_equal_the_plain_run_with_dropout():
    """Recomputing each block in backward replays its dropout masks: the same loss and gradients."""
    from gptkit.model import GPT as Model
    from gptkit.model import GPTConfig as Config

    torch.manual_seed(0)
    model = Model(Config(block_size=32, vocab_size=96, n_layer=2, n_head=2, n_embd=32, dropout=0.2)).train()
    idx, targets = torch.randint(0, 96, (2, 2, 32))

    def grads(checkpointed: bool):
        model.grad_checkpoint = checkpointed
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        _, loss = model(idx, targets)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    plain_loss, plain = grads(False)
    ckpt_loss, ckpt = grads(True)
    assert torch.equal(plain_loss, ckpt_loss)
    for name, g in plain.items():
        torch.testing.assert_close(ckpt[name], g, rtol=1e-5, atol=1e-7, msg=name)
    # dropout really acts: another seed gives other gradients
    model.grad_checkpoint = False
    model.zero_grad(set_to_none=True)
    torch.manual_seed(2)
    model(idx, targets)[1].backward()
    assert not torch.allclose(model.transformer.h[0].mlp.c_fc.weight.grad, plain["transformer.h.0.mlp.c_fc.weight"])
