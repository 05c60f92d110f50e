"""gptkit.export: a run's best model (LoRA merged) as a Hugging Face directory with the same logits."""

import pytest
import torch

from conftest import assert_user_error, run_cli
from gptkit import checkpoint
from gptkit.config import TrainConfig
from gptkit.export import export
from gptkit.train import train

RUN = dict(
    block_size=32,
    batch_size=2,
    eval_iters=1,
    eval_interval=3,
    max_iters=3,
    learning_rate=3e-2,
    decay_lr=False,
    device="cpu",
    progress=False,
)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_hf_dir, shakespeare_bins):
    out = tmp_path_factory.mktemp("lora-run")
    train(TrainConfig(init_from=str(tiny_hf_dir), lora_rank=4, lora_alpha=8.0, out_dir=str(out), **RUN))
    assert checkpoint.load(out / checkpoint.BEST)["lora"]
    return out


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, shakespeare_bins):
    out = tmp_path_factory.mktemp("full-run")
    train(TrainConfig(init_from="scratch", n_layer=2, n_head=2, n_embd=32, out_dir=str(out), **RUN))
    return out


def hf_logits(directory, x):
    from transformers import GPT2LMHeadModel

    with torch.no_grad():
        return GPT2LMHeadModel.from_pretrained(directory).eval()(x).logits


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_exported_model_gives_the_checkpoints_logits(kind, request, tmp_path):
    out = request.getfixturevalue(f"{kind}_run")
    ckpt_path = out / checkpoint.BEST
    model = checkpoint.model_from_checkpoint(checkpoint.load(ckpt_path), ckpt_path).eval()
    x = torch.randint(0, model.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x)[0]  # for a LoRA run: base + adapters, not merged
    dest = export(out, tmp_path / "hf")
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors"]
    if kind == "lora":
        from gptkit.lora import lora_state_dict

        assert any(v.abs().max() > 0 for k, v in lora_state_dict(model).items() if k.endswith("lora_B"))
    torch.testing.assert_close(hf_logits(dest, x), ours, atol=1e-5, rtol=0)
    assert not list(tmp_path.glob(".hf.*"))  # the staging folder is gone


def test_export_and_sample_clis_on_a_lora_run(lora_run, tmp_path):
    dest = tmp_path / "exported"
    dest.mkdir()  # an empty folder is fine
    result = run_cli("-m", "gptkit.export", str(lora_run), str(dest))
    assert result.returncode == 0, result.stderr
    assert "GPT2LMHeadModel.from_pretrained" in result.stdout and (dest / "model.safetensors").is_file()
    args = ["--num_samples=2", "--max_new_tokens=6", "--temperature=0", "--device=cpu", "--start=ROMEO:"]
    from_run = run_cli("-m", "gptkit.sample", f"--out_dir={lora_run}", *args)
    from_export = run_cli("-m", "gptkit.sample", f"--init_from={dest}", *args)
    assert from_run.returncode == 0, from_run.stderr
    assert from_run.stdout == from_export.stdout and from_run.stdout.count("ROMEO:") == 2


def test_export_refuses_bad_input_and_writes_nothing(lora_run, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    before = sorted(tmp_path.rglob("*"))
    assert_user_error(run_cli("-m", "gptkit.export", str(lora_run), str(taken)), "not empty")
    assert (taken / "notes.txt").read_text() == "mine"
    empty_run = tmp_path / "no-run"
    empty_run.mkdir()
    assert_user_error(run_cli("-m", "gptkit.export", str(empty_run), str(tmp_path / "new")), "no ckpt.pt")
    assert_user_error(run_cli("-m", "gptkit.export", str(lora_run)), "expected 2 arguments", "OUT_DIR DEST")
    assert sorted(tmp_path.rglob("*")) == sorted([*before, empty_run])  # nothing else written
    assert not (tmp_path / "new").exists()


def test_release_writes_the_same_file_and_frees_the_block_matrices(full_run, tmp_path):
    """`gptkit.export` converts in place (release=True): the same bytes, the originals let go."""
    from gptkit.export import export_hf, load_merged
    from gptkit.pretrained import TRANSPOSED

    kept, released = load_merged(full_run), load_merged(full_run)
    export_hf(kept, tmp_path / "kept")
    export_hf(released, tmp_path / "released", release=True)
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "kept" / name).read_bytes() == (tmp_path / "released" / name).read_bytes()
    for name, p in released.named_parameters():
        assert (p.numel() == 0) == name.endswith(TRANSPOSED), name
