"""gptkit.cpu_kernels: the CPU Linear and cross-entropy compute what the PyTorch ops do."""

import platform

import pytest
import torch


def test_onednn_matmuls_match_f_linear_forward_and_backward():
    """The oneDNN products gptkit's Linear uses on some CPUs compute exactly what F.linear does."""
    from gptkit.cpu_kernels import _matmul_t, _onednn_works, _OneDNNLinear

    assert _onednn_works() == (platform.machine() in ("x86_64", "AMD64"))  # x86 PyTorch ships oneDNN
    if not _onednn_works():
        return
    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 80)
    x = torch.randn(3, 7, 48, requires_grad=True)
    out = _OneDNNLinear.apply(x, layer.weight, layer.bias)
    ref_x = x.detach().clone().requires_grad_(True)
    ref = torch.nn.functional.linear(ref_x, layer.weight, layer.bias)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(_matmul_t(x.detach(), layer.weight.detach(), layer.bias.detach()), ref, atol=1e-5)
    grad = torch.randn_like(out)
    gx, gw, gb = torch.autograd.grad(out, (x, layer.weight, layer.bias), grad)
    rx, rw, rb = torch.autograd.grad(ref, (ref_x, layer.weight, layer.bias), grad)
    assert torch.allclose(gx, rx, atol=1e-5) and torch.allclose(gw, rw, atol=1e-4) and torch.allclose(gb, rb, atol=1e-5)


@pytest.mark.parametrize("trainable", [("x",), ("weight",), ("bias",), ("x", "bias")])
def test_linear_gradients_reach_whatever_is_trainable(trainable):
    """With only some of input, weight and bias requiring grad, Linear still back-propagates to them."""
    from gptkit.cpu_kernels import Linear

    torch.manual_seed(0)
    layer = Linear(16, 8)
    tensors = {"x": torch.randn(2, 16), "weight": layer.weight, "bias": layer.bias}
    for name, t in tensors.items():
        t.requires_grad_(name in trainable)
    wanted = [tensors[name] for name in trainable]
    grads = torch.autograd.grad(layer(tensors["x"]).square().sum(), wanted)
    ref_out = torch.nn.functional.linear(tensors["x"], layer.weight, layer.bias)
    ref = torch.autograd.grad(ref_out.square().sum(), wanted)
    assert all(torch.allclose(g, r, atol=1e-5) for g, r in zip(grads, ref, strict=True))


def test_onednn_is_chosen_only_on_cpus_where_it_was_measured_faster(monkeypatch):
    import gptkit.cpu_kernels as model

    def route(vendor: str, capability: str, training: bool) -> bool:
        monkeypatch.setattr(model, "_cpu_vendor", lambda: vendor)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        model._onednn_faster.cache_clear()
        return model._onednn_route(training)

    try:
        if model._onednn_works():
            assert route("AuthenticAMD", "AVX512", training=True) and route("AuthenticAMD", "AVX512", training=False)
            assert not route("AuthenticAMD", "AVX2", training=True) and route("AuthenticAMD", "AVX2", training=False)
        for training in (True, False):
            assert not route("GenuineIntel", "AVX512", training)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast picks its own kernels
            assert not route("AuthenticAMD", "AVX512", training=False)
    finally:
        model._onednn_faster.cache_clear()


def test_cross_entropy_matches_torch_with_ignored_targets():
    """gptkit's blockwise CPU cross-entropy: F.cross_entropy(ignore_index=-1)'s loss and gradient."""
    from gptkit.cpu_kernels import cross_entropy

    gen = torch.Generator().manual_seed(0)
    n = 3 * 32 + 5  # several row blocks and a partial one
    logits = (4 * torch.randn(n, 50257, generator=gen)).requires_grad_(True)
    targets = torch.randint(0, 50257, (n,), generator=gen)
    targets[::7] = -1
    loss = cross_entropy(logits, targets)
    ref = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-1)
    assert torch.allclose(loss, ref, rtol=1e-6), (loss, ref)
    (grad,) = torch.autograd.grad(2.5 * loss, logits)
    (ref_grad,) = torch.autograd.grad(2.5 * ref, logits)
    assert torch.allclose(grad, ref_grad, atol=1e-6, rtol=1e-4)  # float rounding of exp; grads reach 0.03
    assert grad[::7].abs().max() == 0  # ignored rows get no gradient
    assert cross_entropy(logits[:3].detach(), torch.full((3,), -1)).isnan()  # like torch: 0 / 0


def test_frozen_linear_keeps_no_input_and_still_passes_the_gradient_on():
    """LoRA's frozen base: the input's gradient equals F.linear's, and the input is not saved."""
    import torch.nn.functional as F

    from gptkit.cpu_kernels import Linear

    torch.manual_seed(0)
    layer = Linear(16, 24)
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    x = torch.randn(3, 5, 16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = layer(x)
    y.square().sum().backward()
    ref = x.detach().clone().requires_grad_()
    F.linear(ref, layer.weight, layer.bias).square().sum().backward()
    torch.testing.assert_close(x.grad, ref.grad)
    assert not any(t.data_ptr() == x.data_ptr() for t in saved)
