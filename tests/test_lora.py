"""LoRA (gptkit.lora): exact at step 0, only adapters train, merge, small checkpoints, exact resume."""

import copy
import weakref

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import tiny
from gptkit import checkpoint
from gptkit.config import TrainConfig
from gptkit.lora import (
    LoRALinear,
    apply_lora,
    count_lora_params,
    lora_layers,
    lora_state_dict,
    merge_lora,
    trainable_params,
)
from gptkit.model import GPT, gpt2_config
from gptkit.train import Precision, World, setup, train, train_step
from gptkit.widgets import short_finetune
from tiny import records


def lora_cfg(out_dir, base, **kw) -> TrainConfig:
    lora = dict(init_from=str(base), lora_rank=4, lora_alpha=8.0, lora_dropout=0.1)
    run = dict(
        block_size=32, dropout=0.1, gradient_accumulation_steps=2, eval_interval=2, learning_rate=1e-2, min_lr=1e-3
    )
    return tiny.tiny_cfg(out_dir, tiny.TINY_RUN | tiny.SCHEDULE | lora | run, **kw)


@pytest.fixture(scope="module")
def base(tiny_hf_dir) -> GPT:
    return GPT.from_pretrained(tiny_hf_dir).eval()


def tokens(n=2, t=16, seed=0):
    return torch.randint(0, 50257, (n, t), generator=torch.Generator().manual_seed(seed))


def randomize_adapters(model: GPT, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_step0_equals_the_base_exactly(base):
    adapted = apply_lora(copy.deepcopy(base), rank=4, alpha=8, dropout=0.1).eval()
    x = tokens()
    with torch.no_grad():
        assert torch.equal(adapted(x)[0], base(x)[0])
    adapted.train(), base.train()  # with grad enabled too (the training path), dropout of the model off
    assert torch.equal(adapted(x)[0], base(x)[0])
    base.eval()


def test_only_the_adapters_get_gradients(base):
    model = apply_lora(copy.deepcopy(base), rank=4, alpha=8, targets="c_attn,mlp.c_proj")
    randomize_adapters(model)  # with B = 0, A's gradient would be exactly zero
    _, loss = model(tokens(), tokens(seed=1))
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapters = {f"transformer.h.{i}.{m}.{w}" for i in range(2) for m in ("attn.c_attn", "mlp.c_proj") for w in "AB"}
    adapters = {n.replace(".A", ".lora_A").replace(".B", ".lora_B") for n in adapters}
    assert with_grad == trainable == adapters
    assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in adapters)
    # the optimizer sees the adapters only, and decays them (matrices) as configured
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert decayed == {id(model.get_parameter(n)) for n in adapters} and not opt.param_groups[1]["params"]


@pytest.mark.parametrize("targets", ["c_attn", "c_attn,attn.c_proj,c_fc,mlp.c_proj", "c_fc,attn.c_proj"])
def test_trainable_parameter_count(targets):
    config = gpt2_config("gpt2-xl")
    with torch.device("meta"):  # the real gpt2-xl shape, without its 6 GB
        model = apply_lora(GPT(config), rank=8, alpha=16, targets=targets)
    d, n = 1600, 48
    per_layer = {"c_attn": d + 3 * d, "attn.c_proj": 2 * d, "c_fc": d + 4 * d, "mlp.c_proj": 4 * d + d}
    expected = n * 8 * sum(per_layer[t] for t in targets.split(","))
    assert trainable_params(model) == count_lora_params(config, 8, targets) == expected
    if targets.count(",") == 3:
        assert expected == 9_830_400  # 0.63% of gpt2-xl's 1558M


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_flops_per_token_counts_the_products_a_step_runs(base, lora):
    """MFU's numerator against torch's FLOP counter over a real forward and backward: a frozen
    weight has no weight-gradient product, so LoRA's step is ~4N FLOPs a token, not 6N."""
    model = copy.deepcopy(base).train()
    if lora:
        apply_lora(model, rank=4, alpha=8.0)
    x = tokens()
    # bf16 autocast: the products run as plain aten matmuls, which the counter knows
    with FlopCounterMode(display=False) as counter, torch.autocast("cpu", dtype=torch.bfloat16):
        model(x, x)[1].backward()
    assert model.flops_per_token(x.size(1)) * x.numel() == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_merge_frees_each_base_weight_before_merging_the_next(base):
    """Merging holds the weights once plus one matrix: gpt2-xl's 6 GB, not 12 (export, sample)."""
    model = copy.deepcopy(base)
    apply_lora(model, rank=4, alpha=8.0)
    layers = list(lora_layers(model).values())
    originals = [weakref.ref(layer.weight) for layer in layers]
    alive_at_last = []
    last, merge_last = layers[-1], layers[-1].merged_weight
    last.merged_weight = lambda: alive_at_last.append(sum(r() is not None for r in originals)) or merge_last()
    del layers, last
    merge_lora(model)
    assert alive_at_last == [1]  # only the layer being merged still has its original


def test_merge_equals_unmerged(base):
    model = apply_lora(copy.deepcopy(base), rank=4, alpha=8).eval()
    randomize_adapters(model)
    x = tokens()
    with torch.no_grad():
        unmerged = model(x)[0]
        assert (unmerged - base(x)[0]).abs().max() > 1e-3  # the adapters do change the model
        merged_model = merge_lora(model)
        merged = merged_model(x)[0]
    assert not any(isinstance(m, LoRALinear) for m in merged_model.modules())
    assert merged_model.state_dict().keys() == base.state_dict().keys()
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)


def test_lora_resume_is_exact_and_checkpoints_hold_only_adapters(tmp_path, tiny_hf_dir, shakespeare_bins):
    full, half = tmp_path / "full", tmp_path / "half"
    train(lora_cfg(full, tiny_hf_dir, max_iters=8))
    train(lora_cfg(half, tiny_hf_dir, max_iters=4))
    train(lora_cfg(half, tiny_hf_dir, max_iters=8, init_from="resume"))
    losses = [r["loss"] for r in records(full, "step")]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.1  # it learns
    assert [r["loss"] for r in records(half, "step")] == losses  # bit for bit
    assert [r["val_loss"] for r in records(half, "eval")] == [r["val_loss"] for r in records(full, "eval")]
    a, b = checkpoint.load(full / checkpoint.BEST), checkpoint.load(half / checkpoint.BEST)
    assert a.iter_num == b.iter_num == 8
    assert a.model.keys() == b.model.keys()
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]), key
    # only the adapters, and the reference to the base
    assert all(k.endswith(("lora_A", "lora_B")) for k in a.model)
    assert len(a.model) == 2 * 4 * 2  # 2 layers x 4 targets x (A, B)
    assert a.lora == {
        "rank": 4,
        "alpha": 8.0,
        "dropout": 0.1,
        "targets": "c_attn,attn.c_proj,c_fc,mlp.c_proj",
        "base": str(tiny_hf_dir.resolve()),
        "base_fingerprint": checkpoint.base_fingerprint(GPT.from_pretrained(tiny_hf_dir)),
    }
    base_bytes = (tiny_hf_dir / "model.safetensors").stat().st_size
    assert (full / checkpoint.BEST).stat().st_size < base_bytes / 20
    # the frozen base did not move: the checkpoint's model is the base plus its adapters
    model = checkpoint.model_from_checkpoint(a, full / checkpoint.BEST)
    plain = GPT.from_pretrained(tiny_hf_dir)
    plain.crop_block_size(32)
    for k, v in plain.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    for k, v in lora_state_dict(model).items():
        assert torch.equal(v, a.model[k])


def test_bf16_run_holds_the_frozen_matrices_in_bf16(tmp_path, tiny_hf_dir, shakespeare_bins):
    cfg, bf16 = lora_cfg(tmp_path, tiny_hf_dir, dtype="bfloat16"), Precision(torch.bfloat16, "", "cpu")
    run, _ = setup(cfg, World(), tmp_path, None, bf16, torch.device("cpu"), None)
    params = dict(run.model.named_parameters())
    assert params["transformer.h.0.mlp.c_fc.weight"].dtype == torch.bfloat16
    assert params["transformer.h.1.attn.c_attn.weight"].dtype == torch.bfloat16
    for name in ("transformer.wte.weight", "transformer.h.0.ln_1.weight", "transformer.h.0.mlp.c_fc.bias"):
        assert params[name].dtype == torch.float32, name
    assert all(p.dtype == torch.float32 for n, p in params.items() if "lora_" in n)
    loss, _ = train_step(run, 1e-2)
    assert 9 < loss < 12  # about ln(50257) for a random base, as in fp32


def test_lora_with_early_stopping_and_the_panel_callback(tmp_path, tiny_hf_dir, shakespeare_bins):
    base_cfg = lora_cfg(
        tmp_path, tiny_hf_dir, max_iters=40, eval_interval=1, eval_iters=1, gradient_accumulation_steps=1,
        early_stop_patience=2, decay_lr=False,
    )  # fmt: skip
    run = short_finetune(base_cfg, learning_rate=3.0, dropout=0.0)  # far too high: val loss soon rises
    ckpt = checkpoint.load(next((tmp_path).glob("lr*")) / checkpoint.BEST)
    assert ckpt.lora["rank"] == 4 and len(run.evals) < 41
    assert run.val_loss[-1] > run.val_loss.min() and run.val_loss[-2] > run.val_loss.min()


def test_lora_recipe_is_the_seeds_plus_lora():
    from conftest import ROOT
    from gptkit.config import read_config_file

    seed = read_config_file(ROOT / "config/finetune_shakespeare.py")
    lora = read_config_file(ROOT / "config/finetune_shakespeare_lora.py")
    changed = {k for k in seed.keys() | lora.keys() if seed.get(k) != lora.get(k)}
    lora_keys = {"lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "grad_checkpoint"}
    assert changed == lora_keys | {"learning_rate", "out_dir", "wandb_run_name"}
    assert lora["lora_rank"] > 0 and lora["grad_checkpoint"] and 1e-4 <= lora["learning_rate"] <= 3e-4
