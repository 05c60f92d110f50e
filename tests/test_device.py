"""gptkit.device: which devices a --device names here, and the precision a GPU gets.

No GPU is needed: what CUDA reports (availability, GPU count, each GPU's properties) is faked
in-process, and the real torch functions that read it (torch.cuda.is_bf16_supported, ...) run.
"""

import importlib.util
import types

import pytest
import torch

from conftest import ROOT
from gptkit import device
from gptkit.config import TrainConfig
from gptkit.device import available_devices, dtype_choice, pick_dtype, resolve_device
from gptkit.errors import GptkitError


@pytest.fixture
def gpus(monkeypatch):
    """Fake a CUDA build on a machine with `n` GPUs of the given (name, major, minor)."""

    def fake(*props: tuple[str, int, int]):
        monkeypatch.setattr(torch.version, "cuda", "12.4")
        monkeypatch.setattr(torch.version, "hip", None)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(props))
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(props))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        spec = [types.SimpleNamespace(name=n, major=a, minor=b, total_memory=16 << 30) for n, a, b in props]
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d=None: spec[0 if d is None else int(d)])
        # A bf16 tensor can be made on any of them: 7.x GPUs emulate bf16 (what is_bf16_supported() counts).
        monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda d: True)

    return fake


@pytest.fixture
def no_mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


# --- devices -----------------------------------------------------------------------------------
def test_available_devices_and_auto_follow_what_the_machine_has(gpus, no_mps, monkeypatch):
    gpus()
    assert available_devices() == ["cpu"] and resolve_device("auto") == torch.device("cpu")
    gpus(("NVIDIA A100", 8, 0), ("NVIDIA A100", 8, 0))
    assert available_devices() == ["cpu", "cuda:0", "cuda:1"]
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert available_devices()[-1] == "mps"
    assert resolve_device("mps") == torch.device("mps")


def test_devices_this_machine_has_resolve(gpus, no_mps):
    gpus(("NVIDIA T4", 7, 5), ("NVIDIA T4", 7, 5))
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize(
    "name, gpu_count, fragment",
    [
        ("tpu", 1, "is not a device gptkit runs on"),
        ("cuda:x", 1, "is not a device gptkit runs on"),
        ("xpu", 1, "is not a device gptkit runs on"),
        ("cuda:3", 1, "past the last GPU: this machine has 1"),
        ("cuda:1", 1, "past the last GPU"),
        ("cuda", 0, "none is visible"),
        ("cuda:0", 0, "none is visible"),
        ("mps", 1, "only Apple-silicon Macs"),
    ],
)
def test_devices_this_machine_lacks_are_one_line_naming_what_it_has(gpus, no_mps, name, gpu_count, fragment):
    gpus(*[("NVIDIA L4", 8, 9)] * gpu_count)
    with pytest.raises(GptkitError) as err:
        resolve_device(name)
    message = str(err.value)
    have = "cpu, cuda:0" if gpu_count else "cpu"
    assert fragment in message and f"available here: {have} (" in message and "--device=auto" in message
    assert "\n" not in message


def test_a_cpu_only_pytorch_build_says_so(monkeypatch, no_mps):
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GptkitError, match="this PyTorch build has no CUDA support; available here: cpu"):
        resolve_device("cuda")


def test_the_torchrun_script_checks_the_device_before_joining_a_process_group(gpus, no_mps, monkeypatch):
    spec = importlib.util.spec_from_file_location("ddp_finetune", ROOT / "scripts" / "ddp_finetune.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    joined = []
    monkeypatch.setattr(script.dist, "init_process_group", lambda *a, **k: joined.append(a))
    gpus()
    with pytest.raises(GptkitError, match="device 'cuda' needs an NVIDIA GPU.*available here: cpu"):
        script.init_distributed(TrainConfig(device="cuda"))
    with pytest.raises(GptkitError, match="ddp_timeout must be at least 1 second"):
        script.init_distributed(TrainConfig(device="cpu", ddp_timeout=0))
    assert not joined
    script.init_distributed(
        TrainConfig(device="cpu", gradient_accumulation_steps=2)
    )  # a good one gets as far as joining (gloo on CPU)
    assert joined == [("gloo",)]


# --- precision by GPU capability ---------------------------------------------------------------
@pytest.mark.parametrize(
    "gpu, dtype, fragments",
    [
        (("Tesla T4", 7, 5), torch.float16, ("Tesla T4 (compute capability 7.5)", "no native bf16", "gradient scaler")),
        (("Tesla V100-SXM2-16GB", 7, 0), torch.float16, ("compute capability 7.0", "fp16 with the gradient scaler")),
        (("NVIDIA A100-SXM4-40GB", 8, 0), torch.bfloat16, ("compute capability 8.0", "computes bf16 natively")),
        (("NVIDIA H100 80GB HBM3", 9, 0), torch.bfloat16, ("compute capability 9.0", "computes bf16 natively")),
    ],
)
def test_auto_precision_follows_the_gpus_compute_capability(gpus, gpu, dtype, fragments):
    gpus(gpu)
    got, why = dtype_choice("auto", "cuda", autocast=True)
    assert got == dtype
    assert all(f in why for f in fragments), why
    assert pick_dtype("auto", "cuda") == dtype  # sampling casts the model to the same
    # Explicit choices stand, whatever the GPU, and say no reason.
    assert dtype_choice("float32", "cuda", autocast=True) == (torch.float32, "")
    assert dtype_choice("bfloat16", "cuda", autocast=True) == (torch.bfloat16, "")


def test_the_t4_choice_runs_the_gradient_scaler_and_the_memory_estimate_in_fp16(gpus):
    """What train does with the choice: the scaler is on exactly for fp16; the estimate takes that dtype."""
    from gptkit import memory

    gpus(("Tesla T4", 7, 5))
    t4, _ = dtype_choice("auto", "cuda", autocast=True)
    gpus(("NVIDIA A100", 8, 0))
    a100, _ = dtype_choice("auto", "cuda", autocast=True)
    assert torch.amp.GradScaler("cpu", enabled=t4 == torch.float16).is_enabled()
    assert not torch.amp.GradScaler("cpu", enabled=a100 == torch.float16).is_enabled()
    cfg = TrainConfig(init_from="gpt2", batch_size=4, block_size=256, check_memory=False)
    fp16, fp32 = (memory.estimate_run(cfg, "cuda", d).peak for d in (t4, torch.float32))
    assert fp16 < fp32


def test_peak_flops_reads_the_gpus_name(gpus):
    gpus(("NVIDIA H100 80GB HBM3", 9, 0))
    assert device.peak_flops("cuda") == 989e12
    assert device.peak_flops("cuda", 1e12) == 1e12
    assert device.peak_flops("cpu") == 0.0
