"""gptkit.export: a run's best model (LoRA merged) as a complete Hugging Face directory with the same
logits, tokens and greedy text; a LoRA run's adapters as a peft directory."""

import contextlib
import io
import json
import math
import re

import pytest
import torch

from conftest import DATA_ROOT, SHAKESPEARE, assert_user_error, run_cli, run_cli_in_process
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
    data_root = str(shakespeare_bins.parent)
    train(
        TrainConfig(
            init_from=str(tiny_hf_dir), lora_rank=4, lora_alpha=8.0, out_dir=str(out), data_root=data_root, **RUN
        )
    )
    assert checkpoint.load(out / checkpoint.BEST).lora
    return out


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, shakespeare_bins):
    out = tmp_path_factory.mktemp("full-run")
    data_root = str(shakespeare_bins.parent)
    train(
        TrainConfig(init_from="scratch", n_layer=2, n_head=2, n_embd=32, out_dir=str(out), data_root=data_root, **RUN)
    )
    return out


HF_FILES = sorted(
    [
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "README.md",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
)


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
    assert set(HF_FILES) <= {p.name for p in dest.iterdir()}  # transformers 4 adds vocab.json, merges.txt, ...
    if kind == "lora":
        from gptkit.lora import lora_state_dict

        assert any(v.abs().max() > 0 for k, v in lora_state_dict(model).items() if k.endswith("lora_B"))
    torch.testing.assert_close(hf_logits(dest, x), ours, atol=1e-5, rtol=0)
    assert not list(tmp_path.glob(".hf.*"))  # the staging folder is gone


def card_code(dest) -> str:
    """The python block of DEST's model card, run as a user would paste it; what it prints."""
    code = re.search(r"```python\n(.*?)```", (dest / "README.md").read_text(), re.S)[1]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {})
    return printed.getvalue()


@pytest.mark.slow  # `make test-slow`; the peft export of a LoRA run and notebook 07's merged export stay
def test_export_and_sample_clis_on_a_lora_run(lora_run, tmp_path):
    dest = tmp_path / "exported"
    dest.mkdir()  # an empty folder is fine
    result = run_cli("-m", "gptkit.export", str(lora_run), str(dest))
    assert result.returncode == 0, result.stderr
    assert "GPT2LMHeadModel.from_pretrained" in result.stdout and (dest / "model.safetensors").is_file()
    args = ["--num_samples=2", "--max_new_tokens=16", "--temperature=0", "--device=cpu", "--start=ROMEO:"]
    from_run = run_cli("-m", "gptkit.sample", f"--out_dir={lora_run}", *args)
    from_export = run_cli("-m", "gptkit.sample", f"--init_from={dest}", *args)
    assert from_run.returncode == 0, from_run.stderr
    assert from_run.stdout == from_export.stdout and from_run.stdout.count("ROMEO:") == 2
    # The card's snippet: pipeline("text-generation", model=DEST), greedy, continues as gptkit.sample does.
    sampled = from_run.stdout.split("\n---------------\n")[0]
    card = (dest / "README.md").read_text()
    assert f'pipeline("text-generation", model="{dest}")' in card and "max_new_tokens=16" in card  # half of 32
    assert card_code(dest) == sampled + "\n" and len(sampled) > len("ROMEO:")


def test_the_export_is_a_complete_hugging_face_directory(lora_run, tmp_path):
    from transformers import AutoTokenizer, GenerationConfig

    from gptkit.tokenizer import get_encoding

    dest = export(lora_run, tmp_path / "hf")
    tokenizer = AutoTokenizer.from_pretrained(dest)
    held_out = (SHAKESPEARE / "input.txt").read_text()[-20000:]  # the val split is the text's end
    enc = get_encoding()
    assert tokenizer(held_out)["input_ids"] == enc.encode(held_out)
    special = "the end.<|endoftext|>\n\nA new  start"
    assert tokenizer(special)["input_ids"] == enc.encode(special, allowed_special="all")
    assert tokenizer.decode(enc.encode(held_out)) == held_out
    generation = GenerationConfig.from_pretrained(dest)
    assert generation.eos_token_id == generation.pad_token_id == 50256
    # The model card: what the checkpoint and the dataset's meta.json say.
    card = (dest / "README.md").read_text()
    ckpt = checkpoint.load(lora_run / checkpoint.BEST)
    meta = json.loads((DATA_ROOT / "shakespeare" / "meta.json").read_text())
    for fact in (
        f"`{ckpt.lora['base']}`",
        "`shakespeare`",
        f"{meta['train_tokens']:,} training and {meta['val_tokens']:,} validation tokens",
        f"{ckpt.best_val_loss:.4f} (perplexity {math.exp(ckpt.best_val_loss):.2f})",
        "rank 4, alpha 8",
        f"{ckpt.iter_num} iterations of 2 x 1 x 32",
        "learning rate 0.03",
    ):
        assert fact in card, fact


def test_a_lora_run_s_adapters_export_as_a_peft_directory(lora_run, tiny_hf_dir, tmp_path):
    from peft import PeftModel
    from transformers import GPT2LMHeadModel

    dest = tmp_path / "adapters"
    result = run_cli("-m", "gptkit.export", str(lora_run), str(dest), "--adapters")
    assert result.returncode == 0, result.stderr
    config = json.loads((dest / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_hf_dir.resolve()) and config["fan_in_fan_out"] is True
    assert sorted(config["target_modules"]) == ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, 8.0, 0.0)
    assert not (dest / "model.safetensors").exists()
    ckpt_path = lora_run / checkpoint.BEST
    model = checkpoint.model_from_checkpoint(checkpoint.load(ckpt_path), ckpt_path).eval()
    x = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = model(x)[0]  # base + adapters, unmerged
        theirs = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(tiny_hf_dir), dest).eval()(x).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    # The card's snippet (PeftModel in a pipeline) continues greedily as gptkit does.
    from gptkit.tokenizer import get_encoding

    enc = get_encoding()
    with torch.no_grad():
        greedy = model.generate(torch.tensor([enc.encode("ROMEO:")]), 16, temperature=0.0, top_k=None)
    assert card_code(dest) == enc.decode(greedy[0].tolist()) + "\n"


def test_export_refuses_bad_input_and_writes_nothing(lora_run, full_run, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    before = sorted(tmp_path.rglob("*"))
    assert_user_error(run_cli_in_process("-m", "gptkit.export", str(lora_run), str(taken)), "not empty")
    assert (taken / "notes.txt").read_text() == "mine"
    empty_run = tmp_path / "no-run"
    empty_run.mkdir()
    assert_user_error(run_cli_in_process("-m", "gptkit.export", str(empty_run), str(tmp_path / "new")), "no ckpt.pt")
    assert_user_error(run_cli_in_process("-m", "gptkit.export", str(lora_run)), "expected 2 arguments", "OUT_DIR DEST")
    assert_user_error(
        run_cli_in_process("-m", "gptkit.export", str(full_run), str(tmp_path / "new"), "--adapters"), "full finetune"
    )
    assert sorted(tmp_path.rglob("*")) == sorted([*before, empty_run])  # nothing else written
    assert not (tmp_path / "new").exists()


def test_release_writes_the_same_file_and_frees_the_block_matrices(full_run, tmp_path):
    """`gptkit.export` converts in place (release=True): the same bytes, the originals let go."""
    from gptkit.export import export_hf
    from gptkit.pretrained import TRANSPOSED
    from gptkit.sources import load_model

    kept, released = load_model("resume", full_run).eval(), load_model("resume", full_run).eval()
    export_hf(kept, tmp_path / "kept")
    export_hf(released, tmp_path / "released", release=True)
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "kept" / name).read_bytes() == (tmp_path / "released" / name).read_bytes()
    for name, p in released.named_parameters():
        assert (p.numel() == 0) == name.endswith(TRANSPOSED), name
