"""gptkit.resume: which given settings a resumed run applies, and which its checkpoint fixes."""

from dataclasses import asdict, replace

import pytest

from gptkit.config import TrainConfig, given_settings, parse_args
from gptkit.errors import GptkitError
from gptkit.resume import RESUME_FIXED, check_resume, describe_resume, resume_changes

SAVED = asdict(TrainConfig(init_from="gpt2", out_dir="out", learning_rate=3e-5, max_iters=40, lora_rank=4))


def resumed(*argv):
    return parse_args(TrainConfig, ["--init_from=resume", "--out_dir=elsewhere", *argv], "test")


def test_resume_applies_schedule_eval_and_dropout_changes():
    cfg = resumed(
        "--learning_rate=1e-5",
        "--max_iters=80",
        "--eval_interval=10",
        "--dropout=0.1",
        "--min_lr=1e-6",
        "--lora_rank=4",  # as saved
        "--lora_targets=c_attn , attn.c_proj,c_fc,mlp.c_proj",  # the saved targets, spaced otherwise
        "--dtype=auto",  # auto keeps the saved precision
    )
    applied, refused = resume_changes(cfg, given_settings(cfg), SAVED, saved_dtype="bfloat16")
    assert refused == {}
    assert applied == {
        "eval_interval": (2000, 10),
        "dropout": (0.0, 0.1),
        "learning_rate": (3e-5, 1e-5),
        "max_iters": (40, 80),
        "min_lr": (6e-5, 1e-6),
    }
    assert check_resume(cfg, SAVED, "out/ckpt.pt", "bfloat16") == applied
    line = describe_resume("out/ckpt.pt", 40, applied)
    assert line.startswith("resuming from out/ckpt.pt at iteration 40; changed: eval_interval 2000 -> 10, ")
    assert "learning_rate 3e-05 -> 1e-05" in line and "\n" not in line
    assert describe_resume("out/ckpt.pt", 40, {}) == (
        "resuming from out/ckpt.pt at iteration 40; no setting given differs from the checkpoint's"
    )


def test_resume_refuses_what_the_checkpoint_fixes_naming_them_all():
    cfg = resumed("--n_layer=2", "--lora_rank=8", "--dtype=float16", "--learning_rate=1e-5", "--seed=7")
    applied, refused = resume_changes(cfg, given_settings(cfg), SAVED, saved_dtype="bfloat16")
    assert applied == {"learning_rate": (3e-5, 1e-5)}
    assert refused == {"seed": (1337, 7), "n_layer": (12, 2), "lora_rank": (4, 8), "dtype": ("auto", "float16")}
    with pytest.raises(GptkitError) as err:
        check_resume(cfg, SAVED, "out/ckpt.pt", "bfloat16")
    message = str(err.value)
    assert message.startswith("out/ckpt.pt is a LoRA run of rank 4; a resumed run keeps its settings")
    assert "seed 1337 -> 7, n_layer 12 -> 2, lora_rank 4 -> 8, dtype 'auto' -> 'float16'" in message
    # Naming the precision the checkpoint's auto chose is no change; defaults given nowhere never count.
    assert resume_changes(resumed("--dtype=bfloat16"), {"dtype"}, SAVED, "bfloat16") == ({}, {})
    assert resume_changes(resumed(), given_settings(resumed()), SAVED) == ({}, {})


@pytest.mark.parametrize("key", sorted(RESUME_FIXED))
def test_every_fixed_setting_is_refused_and_every_other_applied(key):
    fixed = {"bias": False, "lora_targets": "c_fc", "dtype": "float32", "dataset": "poems", "dpo_reference": "adapters"}
    fixed |= {"train_layers": "all"}
    value = fixed.get(key)
    value = value if value is not None else getattr(TrainConfig(), key) + 1
    cfg = replace(resumed(), **{key: value})
    assert resume_changes(cfg, {key}, SAVED)[1] == {key: (SAVED[key], value)}
    other = {"batch_size": 3, "grad_clip": 0.5, "warmup_iters": 7, "device": "cpu", "eval_iters": 5}
    applied, refused = resume_changes(replace(cfg, **other), set(other), SAVED)
    assert refused == {} and set(applied) == set(other)
