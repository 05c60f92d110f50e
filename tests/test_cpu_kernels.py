"""gptkit.cpu_kernels: the CPU Linear and cross-entropy compute what the PyTorch ops do;
the CPU bf16 autocast policy (gptkit.device) follows the measurement."""

import platform
import re

import pytest
import torch


def test_onednn_matmuls_match_f_linear_forward_and_backward():
    """The oneDNN products gptkit's Linear uses on some CPUs compute exactly what F.linear does."""
    from gptkit.cpu_kernels import _OneDNNLinear, matmul_t, onednn_works

    assert onednn_works() == (platform.machine() in ("x86_64", "AMD64"))  # x86 PyTorch ships oneDNN
    if not onednn_works():
        return
    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 80)
    x = torch.randn(3, 7, 48, requires_grad=True)
    out = _OneDNNLinear.apply(x, layer.weight, layer.bias, (True, True, False))  # every product by oneDNN
    ref_x = x.detach().clone().requires_grad_(True)
    ref = torch.nn.functional.linear(ref_x, layer.weight, layer.bias)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(matmul_t(x.detach(), layer.weight.detach(), layer.bias.detach()), ref, atol=1e-5)
    grad = torch.randn_like(out)
    gx, gw, gb = torch.autograd.grad(out, (x, layer.weight, layer.bias), grad)
    rx, rw, rb = torch.autograd.grad(ref, (ref_x, layer.weight, layer.bias), grad)
    assert torch.allclose(gx, rx, atol=1e-5) and torch.allclose(gw, rw, atol=1e-4) and torch.allclose(gb, rb, atol=1e-5)


@pytest.mark.parametrize("trainable", [("x",), ("weight",), ("bias",), ("x", "bias")])
def test_linear_gradients_reach_whatever_is_trainable(trainable):
    """With only some of input, weight and bias requiring grad, Linear still back-propagates to them."""
    from gptkit import cpu_kernels

    torch.manual_seed(0)
    layer = cpu_kernels.speed_up(torch.nn.Linear(16, 8), cpu_kernels.measure_routes())
    tensors = {"x": torch.randn(2, 16), "weight": layer.weight, "bias": layer.bias}
    for name, t in tensors.items():
        t.requires_grad_(name in trainable)
    wanted = [tensors[name] for name in trainable]
    grads = torch.autograd.grad(layer(tensors["x"]).square().sum(), wanted)
    ref_out = torch.nn.functional.linear(tensors["x"], layer.weight, layer.bias)
    ref = torch.autograd.grad(ref_out.square().sum(), wanted)
    assert all(torch.allclose(g, r, atol=1e-5) for g, r in zip(grads, ref, strict=True))


def test_onednn_routes_follow_the_measured_timings(monkeypatch):
    """Training's forward, its backward and decoding each go to whichever library measured faster;
    a near tie stays with PyTorch's default."""
    import gptkit.cpu_kernels as kernels

    def routes(forward: dict, backward: dict, decoding: dict) -> dict:
        timings = {
            kernels.ROUTED_PRODUCT: {"forward": forward, "backward": backward},
            kernels.DECODING_PRODUCT: {"forward": decoding},
        }
        monkeypatch.setattr(kernels, "_time_routes", lambda shape, passes=None, repeats=2: timings[shape])
        monkeypatch.setattr(kernels, "onednn_works", lambda: True)
        kernels._onednn_faster.cache_clear()
        return kernels.measure_routes()

    try:
        onednn, torch_ = {"torch": 2.0, "oneDNN": 1.0}, {"torch": 1.0, "oneDNN": 2.0}
        tie = {"torch": 1.0, "oneDNN": 0.95}
        assert routes(onednn, onednn, onednn) == {"forward": True, "backward": True, "inference": True}
        # e.g. AVX2 AMD: oneDNN's forward, MKL's backward (oneDNN copies the transposed operands)
        assert routes(onednn, torch_, onednn) == {"forward": True, "backward": False, "inference": True}
        assert routes(torch_, onednn, torch_) == {"forward": False, "backward": True, "inference": False}
        assert routes(tie, tie, tie) == {"forward": False, "backward": False, "inference": False}
    finally:
        kernels._onednn_faster.cache_clear()


@pytest.mark.parametrize("forward,backward", [(True, False), (False, True), (True, True)])
def test_linear_on_each_route_computes_what_f_linear_does(monkeypatch, forward, backward):
    """Whichever library each pass takes, Linear's output and its three gradients are F.linear's;
    under autocast it stays F.linear (autocast picks its own kernels)."""
    import gptkit.cpu_kernels as kernels

    if not kernels.onednn_works():
        pytest.skip("this PyTorch build has no oneDNN: Linear is F.linear on every route")
    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 80)
    kernels.speed_up(layer, {"forward": forward, "backward": backward, "inference": False})
    x = torch.randn(3, 7, 48, requires_grad=True)
    called = []
    real_matmul_t = kernels.matmul_t
    monkeypatch.setattr(kernels, "matmul_t", lambda *a: called.append(1) or real_matmul_t(*a))
    out = layer(x)
    grad = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, layer.weight, layer.bias), grad)
    assert len(called) == forward + 2 * backward  # each pass went where it was routed
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)
    assert len(called) == forward + 2 * backward
    ref_x = x.detach().clone().requires_grad_(True)
    ref = torch.nn.functional.linear(ref_x, layer.weight, layer.bias)
    refs = torch.autograd.grad(ref, (ref_x, layer.weight, layer.bias), grad)
    assert torch.allclose(out, ref, atol=1e-5)
    assert all(torch.allclose(g, r, atol=1e-4) for g, r in zip(grads, refs, strict=True))


def test_given_routes_override_the_measurement(monkeypatch):
    """How a resumed run computes with the kernels it started with, whatever this process measured."""
    import gptkit.cpu_kernels as kernels
    from gptkit import checkpoint

    monkeypatch.setattr(kernels, "_onednn_faster", lambda: (False, False, True))
    monkeypatch.setattr(kernels, "onednn_works", lambda: True)

    def routes_of(model: torch.nn.Module) -> dict:
        (routes,) = {m.routes for m in model.modules() if isinstance(m, torch.nn.Linear)}  # every layer the same
        return dict(zip(kernels.ROUTES, routes, strict=True))

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    pinned = {"forward": True, "backward": False, "inference": False}
    assert routes_of(kernels.speed_up(model, pinned)) == pinned
    assert kernels.measure_routes() == {"forward": False, "backward": False, "inference": True}  # the measurement
    assert routes_of(kernels.speed_up(model, kernels.measure_routes())) == kernels.measure_routes()
    older = {"model": {}, "model_args": {}, "cpu_matmul": {"training": True, "inference": False}}  # one route
    one_route = checkpoint.Checkpoint.from_dict(older).cpu_matmul  # for all of training
    assert routes_of(kernels.speed_up(model, one_route)) == {"forward": True, "backward": True, "inference": False}
    monkeypatch.setattr(kernels, "onednn_works", lambda: False)  # a checkpoint from a machine with oneDNN
    everything = {"forward": True, "backward": True, "inference": True}
    assert routes_of(kernels.speed_up(model, everything)) == {"forward": False, "backward": False, "inference": False}


def test_speed_up_keeps_the_model_its_weights_and_its_numbers():
    """speed_up swaps the layers' kernels and the loss in place: the same Parameters (tying, state_dict
    keys, an optimizer made before), LoRA's base layers routed too, and the loss and gradients of
    the plain model."""
    import gptkit.cpu_kernels as kernels
    from gptkit.lora import LoRALinear, apply_lora
    from gptkit.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = apply_lora(GPT(GPTConfig(block_size=16, vocab_size=300, n_layer=2, n_head=2, n_embd=32)), rank=2, alpha=4)
    params, keys = list(model.parameters()), list(model.state_dict())
    x = torch.randint(0, model.config.vocab_size, (2, 12))
    y = torch.where(torch.rand(2, 12) < 0.3, -1, torch.roll(x, -1, 1))

    def loss_and_grads():
        model.zero_grad()
        loss = model(x, y)[1]
        loss.backward()
        return loss.detach(), [p.grad for p in model.parameters() if p.requires_grad]

    plain_loss, plain_grads = loss_and_grads()
    assert model.cross_entropy is torch.nn.functional.cross_entropy
    kernels.speed_up(model, {"forward": True, "backward": True, "inference": True})
    assert list(model.parameters()) == params and list(model.state_dict()) == keys
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.cross_entropy is kernels.cross_entropy
    adapted = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert adapted and all(isinstance(m, kernels.Linear) and type(m).__name__ == "LoRALinear" for m in adapted)
    assert isinstance(model.lm_head, kernels.Linear) and model.lm_head.routes == (kernels.onednn_works(),) * 3
    loss, grads = loss_and_grads()
    torch.testing.assert_close(loss, plain_loss, rtol=1e-5, atol=1e-6)
    for g, ref in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-6)


def test_real_routing_is_measured_once_per_process(monkeypatch):
    import gptkit.cpu_kernels as kernels

    kernels._onednn_faster.cache_clear()
    try:
        measured = []
        real_time_routes = kernels._time_routes

        def recording(*args, **kwargs):
            measured.append(real_time_routes(*args, **kwargs))
            return measured[-1]

        monkeypatch.setattr(kernels, "_time_routes", recording)
        decision = kernels._onednn_faster()
        if not kernels.onednn_works():
            assert decision == (False, False, False) and measured == []
        else:  # training's two passes, then decoding: each routed by its own timing, with the 10% margin
            training, decoding = measured
            timings = (training["forward"], training["backward"], decoding["forward"])
            assert decision == tuple(t["oneDNN"] < 0.9 * t["torch"] for t in timings)

        def no_more_timing(*args, **kwargs):
            raise AssertionError("timed again")

        monkeypatch.setattr(kernels, "_time_routes", no_more_timing)
        assert kernels._onednn_faster() == decision and tuple(kernels.measure_routes().values()) == decision
    finally:
        kernels._onednn_faster.cache_clear()


def test_measurements_leave_the_global_rng_alone():
    """A run that measures and one that takes recorded routes must draw the same dropout masks and batches."""
    import gptkit.cpu_kernels as kernels
    import gptkit.device

    torch.manual_seed(0)
    kernels._time_routes(kernels.ROUTED_PRODUCT)
    gptkit.device._time_bf16_vs_fp32()
    after = torch.rand(4)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(4))


def test_auto_dtype_is_bf16_only_with_native_bf16_measured_faster():
    from gptkit.device import choose_cpu_autocast

    def never(*args):
        raise AssertionError("a CPU without bf16 instructions must not pay for a measurement")

    assert choose_cpu_autocast(None, never)[0] == torch.float32  # AVX2, AVX-512 without bf16
    dtype, why = choose_cpu_autocast("AMX", lambda: (5.0, 1.0))  # (fp32, bf16) seconds
    assert dtype == torch.bfloat16 and "AMX" in why and "5.0x" in why
    assert choose_cpu_autocast("AVX512_BF16", lambda: (2.0, 1.0))[0] == torch.bfloat16
    # bf16 instructions that do not pay for autocast's casts: stay in fp32
    assert choose_cpu_autocast("Arm BF16", lambda: (1.1, 1.0))[0] == torch.float32


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(line for line in f if line.startswith(("flags", "Features"))).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def test_real_auto_dtype_matches_this_cpus_capability(monkeypatch):
    import gptkit.device as kernels
    from gptkit.device import dtype_choice, pick_dtype

    flags = _cpuinfo_flags()
    native = kernels.native_bf16()
    if platform.machine() == "x86_64" and flags:  # read independently of torch's own CPU probe
        assert native == ("AMX" if "amx_bf16" in flags else "AVX512_BF16" if "avx512_bf16" in flags else None)
    kernels.cpu_autocast_dtype.cache_clear()
    try:
        dtype, why = dtype_choice("auto", "cpu", autocast=True)
        if native is None:
            assert dtype == torch.float32 and "no bf16" in why
        else:  # the reason quotes the measured speedup, and the choice follows it
            speedup = float(re.search(r"measured (?:only )?([0-9.]+)x", why)[1])
            assert native in why
            assert dtype == (torch.bfloat16 if speedup >= kernels.BF16_MARGIN else torch.float32), why
        monkeypatch.setattr(kernels, "_time_bf16_vs_fp32", lambda: pytest.fail("measured twice"))
        assert dtype_choice("auto", "cpu", autocast=True) == (dtype, why)  # cached for the process
    finally:
        kernels.cpu_autocast_dtype.cache_clear()
    # sampling casts the whole model, so there auto stays fp32; float32 always overrides
    assert pick_dtype("auto", "cpu") == torch.float32
    assert dtype_choice("float32", "cpu", autocast=True) == (torch.float32, "")


def test_cross_entropy_matches_torch_with_ignored_targets():
    """gptkit's blockwise CPU cross-entropy: F.cross_entropy(ignore_index=-1)'s loss and gradient."""
    from gptkit.cpu_kernels import cross_entropy as blockwise

    def cross_entropy(logits, targets):
        return blockwise(logits, targets, ignore_index=-1)

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


def test_cross_entropy_sum_matches_torch_and_ignores_the_ignore_index():
    """reduction="sum" (a micro-batch of examples, divided by the step's target count later):
    F.cross_entropy's sum and gradient; IGNORE_INDEX rows add nothing, all ignored is 0, not nan."""
    from gptkit.cpu_kernels import cross_entropy as blockwise
    from gptkit.model import IGNORE_INDEX

    def cross_entropy(logits, targets, reduction="mean"):
        return blockwise(logits, targets, ignore_index=IGNORE_INDEX, reduction=reduction)

    gen = torch.Generator().manual_seed(1)
    n = 2 * 32 + 9
    logits = (4 * torch.randn(n, 50257, generator=gen)).requires_grad_(True)
    targets = torch.randint(0, 50257, (n,), generator=gen)
    targets[torch.randperm(n, generator=gen)[: n // 2]] = IGNORE_INDEX  # like prompt and pad positions
    loss = cross_entropy(logits, targets, reduction="sum")
    ref = torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    assert torch.allclose(loss, ref, rtol=1e-6), (loss, ref)
    (grad,) = torch.autograd.grad(loss / 7, logits)
    (ref_grad,) = torch.autograd.grad(ref / 7, logits)
    assert torch.allclose(grad, ref_grad, atol=1e-6, rtol=1e-4)
    assert grad[targets == IGNORE_INDEX].abs().max() == 0
    mean = cross_entropy(logits, targets)
    assert torch.allclose(mean * (targets != IGNORE_INDEX).sum(), loss, rtol=1e-6)
    assert cross_entropy(logits[:3].detach(), torch.full((3,), IGNORE_INDEX), reduction="sum") == 0
    per_row = cross_entropy(logits.detach(), targets, reduction="none")  # a sequence's log-probability, for DPO
    expected = torch.nn.functional.cross_entropy(logits.detach(), targets, ignore_index=IGNORE_INDEX, reduction="none")
    assert torch.allclose(per_row, expected, rtol=1e-6) and per_row[targets == IGNORE_INDEX].abs().max() == 0
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(logits, targets, reduction="max")


def test_frozen_linear_keeps_no_input_and_still_passes_the_gradient_on():
    """LoRA's frozen base: the input's gradient equals F.linear's, and the input is not saved."""
    import torch.nn.functional as F

    from gptkit import cpu_kernels

    torch.manual_seed(0)
    layer = cpu_kernels.speed_up(torch.nn.Linear(16, 24), cpu_kernels.measure_routes())
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


def test_cross_entropy_on_bf16_logits_matches_autocasts():
    """Under bf16 autocast the logits are bf16: loss as F.cross_entropy's in fp32, gradient rounded to bf16."""
    from gptkit.cpu_kernels import cross_entropy as blockwise

    def cross_entropy(logits, targets):
        return blockwise(logits, targets, ignore_index=-1)

    gen = torch.Generator().manual_seed(0)
    n = 2 * 32 + 3
    logits = (4 * torch.randn(n, 50257, generator=gen)).bfloat16().requires_grad_(True)
    targets = torch.randint(0, 50257, (n,), generator=gen)
    targets[::5] = -1
    loss = cross_entropy(logits, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-1)
    assert loss.dtype == ref.dtype == torch.float32 and torch.allclose(loss, ref, rtol=1e-6), (loss, ref)
    (grad,) = torch.autograd.grad(loss, logits)
    (ref_grad,) = torch.autograd.grad(ref, logits)
    assert grad.dtype == torch.bfloat16
    # both round the same fp32 gradient to bf16; exp's last fp32 bit may differ, so one bf16 step
    assert torch.allclose(grad.float(), ref_grad.float(), rtol=2**-7, atol=1e-9)
    assert grad[::5].abs().max() == 0


@pytest.mark.slow  # `make test-slow`: two training runs; the bf16 kernels' unit tests stay
def test_bf16_autocast_training_tracks_fp32(tmp_path, shakespeare_bins, capsys):
    """A bf16-autocast CPU run's losses follow the fp32 run's; weights and AdamW state stay fp32.

    Tolerance 0.01 nats: bf16 rounds each matmul input to 8 significant bits (relative error
    <= 2^-9), which moves a ~10-nat loss by well under 1e-3 (measured: <= 6e-4 over 30 steps),
    and with fp32 master weights the roundings do not compound. A run on other batches (another
    seed, at --dtype=auto) differs by far more, so the check would catch a bf16 run that learned something else.
    """
    import json

    from test_train import TINY

    from gptkit import checkpoint
    from gptkit.config import TrainConfig
    from gptkit.train import train

    def losses(name: str, **kw) -> list[float]:
        cfg = TINY | dict(out_dir=str(tmp_path / name), max_iters=8, eval_interval=8, dropout=0.0) | kw
        train(TrainConfig(**cfg))
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [r["loss"] for r in map(json.loads, lines) if r["type"] == "step"]

    fp32, bf16 = losses("fp32", dtype="float32"), losses("bf16", dtype="bfloat16")
    other_batches = losses("seed", dtype="auto", seed=1)
    assert len(fp32) == len(bf16) == 8 and fp32[0] - fp32[-1] > 0.3  # it learns
    assert max(abs(a - b) for a, b in zip(fp32, bf16, strict=True)) < 0.01, (fp32, bf16)
    assert max(abs(a - b) for a, b in zip(fp32, other_batches, strict=True)) > 0.05, (fp32, other_batches)
    ckpt = checkpoint.load(checkpoint.latest_in(tmp_path / "bf16"))
    assert all(t.dtype == torch.float32 for t in ckpt.model.values())
    moments = [t for s in ckpt.optimizer["state"].values() for k, t in s.items() if k != "step"]
    assert moments and all(t.dtype == torch.float32 for t in moments)
    header = capsys.readouterr().out
    assert "| cpu bfloat16\n" in header and "| cpu float32\n" in header  # the run header names the dtype
    assert "(auto: " in header  # ... and for auto, why
