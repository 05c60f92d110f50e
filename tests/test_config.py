import dataclasses
import typing
from dataclasses import asdict, replace

import pytest

from conftest import ROOT
from gptkit.config import (
    RESUME_FIXED,
    Range,
    TrainConfig,
    check_ranges,
    check_resume,
    describe_resume,
    doc_of,
    given_settings,
    parse_args,
    parse_given,
    read_config_file,
    resume_changes,
    validate,
)
from gptkit.errors import GptkitError
from gptkit.sample import SampleConfig

SEED_VALUES = dict(
    out_dir="out-shakespeare",
    eval_interval=5,
    eval_iters=40,
    wandb_log=False,
    dataset="shakespeare",
    init_from="gpt2-xl",
    always_save_checkpoint=False,
    batch_size=1,
    gradient_accumulation_steps=32,
    max_iters=20,
    learning_rate=3e-5,
    decay_lr=False,
)


def parse(*argv):
    return parse_args(TrainConfig, list(argv), "test")


def test_seed_config_has_exactly_the_seeds_values():
    cfg = parse(str(ROOT / "config/finetune_shakespeare.py"))
    for key, value in SEED_VALUES.items():
        assert getattr(cfg, key) == value, key
    assert cfg.wandb_run_name.startswith("ft-")  # computed with the `time` module the file imports


def test_file_then_overrides():
    cfg = parse(str(ROOT / "config/finetune_shakespeare.py"), "--batch_size=4", "--init_from=gpt2", "--dropout=0")
    assert (cfg.batch_size, cfg.init_from, cfg.dropout) == (4, "gpt2", 0.0)
    assert isinstance(cfg.dropout, float)


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.py")), ids=lambda p: p.name)
def test_every_shipped_config_parses(path):
    cfg = parse(str(path))
    assert cfg.out_dir.startswith("out-")


def test_types_are_checked_and_ints_widen_to_floats():
    assert parse("--learning_rate=1").learning_rate == 1.0
    assert parse("--dataset=2024").dataset == "2024"  # a folder name, not a number
    assert parse("--init_from=/some/dir").init_from == "/some/dir"
    assert parse("--compile=True").compile is True
    with pytest.raises(GptkitError, match="max_iters .* must be int"):
        parse("--max_iters=abc")
    with pytest.raises(GptkitError, match="must be int"):
        parse("--batch_size=1.5")
    with pytest.raises(GptkitError, match="must be bool"):
        parse("--compile=1")
    with pytest.raises(GptkitError, match="must be float"):
        parse("--dropout=True")


def test_unknown_keys_name_the_closest_one(tmp_path):
    with pytest.raises(GptkitError, match=r"unknown setting 'learning_rat' .*did you mean learning_rate"):
        parse("--learning_rat=1e-4")
    conf = tmp_path / "c.py"
    conf.write_text("import os\nfrom math import pi\n_private = 3\nbatchsize = 4\n")
    with pytest.raises(GptkitError, match=r"unknown setting 'batchsize' in .*c\.py .*did you mean batch_size"):
        parse(str(conf))


def test_imports_and_private_names_are_ignored(tmp_path):
    conf = tmp_path / "c.py"
    conf.write_text("import time\nimport math as _m\n_scratch = 5\nmax_iters = int(_m.sqrt(_scratch * 20))\n")
    assert read_config_file(conf) == {"max_iters": 10}


def test_config_file_errors(tmp_path):
    with pytest.raises(GptkitError, match="not found"):
        parse(str(tmp_path / "missing.py"))
    bad = tmp_path / "bad.py"
    bad.write_text("batch_size = = 3\n")
    with pytest.raises(GptkitError, match=r"bad\.py:1"):
        parse(str(bad))
    with pytest.raises(GptkitError, match="needs a value"):
        parse("--batch_size")


def test_help_lists_every_setting_with_a_doc(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse("--help")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in TrainConfig.__dataclass_fields__:
        assert f"--{name}=" in out
    assert all(f.metadata.get("doc") for f in TrainConfig.__dataclass_fields__.values())


def test_sample_config_optional_values():
    cfg = parse_args(SampleConfig, ["--top_k=None", "--top_p=0.9", "--start=FILE:x.txt"], "test")
    assert cfg.top_k is None and cfg.top_p == 0.9 and cfg.start == "FILE:x.txt"


# --- ranges: every numeric setting has one, and a value outside it is one error naming it ----------
def numeric_fields(cls):
    hints = typing.get_type_hints(cls)
    return [
        f for f in dataclasses.fields(cls) if {int, float} & set(typing.get_args(hints[f.name]) or (hints[f.name],))
    ]


@pytest.mark.parametrize("cls", [TrainConfig, SampleConfig], ids=lambda c: c.__name__)
def test_every_numeric_setting_has_a_range_shown_in_help(cls):
    for f in numeric_fields(cls):
        assert isinstance(f.metadata.get("check"), Range), f.name
        assert f"; {f.metadata['check'].words}" in doc_of(cls), f.name


# (setting, a value outside its range, the error's words, a value at its edge that is fine)
TRAIN_RANGES = [
    ("eval_interval", 0, "at least 1", 1),
    ("log_interval", 0, "at least 1", 1),
    ("eval_iters", 0, "at least 1", 1),
    ("early_stop_patience", -1, "0 or more", 0),
    ("gradient_accumulation_steps", 0, "at least 1", 1),
    ("batch_size", -3, "at least 1", 1),
    ("block_size", 0, "at least 1", 1),
    ("seed", -1, "in [0, 2**63)", 0),
    ("seed", 2**63, "in [0, 2**63)", 2**63 - 1),
    ("n_layer", 0, "at least 1", 1),
    ("n_head", 0, "at least 1", 1),
    ("n_embd", 0, "at least 1", 1),
    ("dropout", 1.0, "in [0, 1)", 0.0),
    ("dropout", -0.1, "in [0, 1)", 0.99),
    ("lora_rank", -4, "0 (full finetune) or more", 0),
    ("lora_alpha", 0.0, "positive", 1e-3),
    ("lora_dropout", 1.5, "in [0, 1)", 0.0),
    ("learning_rate", 0.0, "positive", 1e-9),
    ("max_iters", -1, "0 or more", 0),
    ("weight_decay", -1.0, "0 or more", 0.0),
    ("beta1", 1.0, "in [0, 1)", 0.0),
    ("beta2", -0.5, "in [0, 1)", 0.999),
    ("grad_clip", -1.0, "0 or more", 0.0),  # 0 turns clipping off
    ("warmup_iters", -1, "0 or more", 0),
    ("lr_decay_iters", -1, "0 or more", 0),
    ("min_lr", -1e-5, "0 or more", 0.0),
    ("ddp_timeout", 0, "at least 1 second", 1),
    ("mfu_peak_flops", -1.0, "0 or more", 0.0),
    ("backend", "mpi", "one of nccl, gloo", "gloo"),
    ("dtype", "fp8", "one of auto, float32, bfloat16, float16", "float16"),
]
SAMPLE_RANGES = [
    ("num_samples", 0, "at least 1", 1),
    ("max_new_tokens", 0, "at least 1", 1),
    ("temperature", -0.1, "0 (greedy) or more", 0.0),
    ("top_k", 0, "at least 1 or None", None),
    ("top_p", 0.0, "in (0, 1] or None", 1.0),
    ("top_p", 1.5, "in (0, 1] or None", None),
    ("seed", -1, "in [0, 2**63)", 0),
    ("dtype", "half", "one of auto, float32, bfloat16, float16", "bfloat16"),
]


@pytest.mark.parametrize(
    "cls, key, bad, words, edge",
    [(TrainConfig, *r) for r in TRAIN_RANGES] + [(SampleConfig, *r) for r in SAMPLE_RANGES],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_each_range(cls, key, bad, words, edge):
    def check(value):
        cfg = cls(**{key: value})
        if cls is TrainConfig:
            pretrained = key.startswith("lora") or key == "n_embd"  # LoRA needs one; the shape check is scratch only
            validate(replace(cfg, init_from="gpt2") if pretrained else cfg, world_size=1)
        else:
            check_ranges(cfg)

    with pytest.raises(GptkitError) as err:
        check(bad)
    assert str(err.value) == f"{key} must be {words}, not {bad!r}"
    check(edge)  # the edge of the range is in it
    # The same through the parser, as a user would write it.
    bad_cfg = parse_args(cls, [f"--{key}={bad}"], "test")
    with pytest.raises(GptkitError, match=f"^{key} must be"):
        validate(bad_cfg, 1) if cls is TrainConfig else check_ranges(bad_cfg)


def test_settings_checked_against_each_other():
    with pytest.raises(GptkitError, match="n_embd=33 does not split into n_head=2 heads"):
        validate(TrainConfig(n_embd=33, n_head=2), 1)
    validate(TrainConfig(n_embd=33, n_head=2, init_from="gpt2"), 1)  # the pretrained model's shape counts there
    with pytest.raises(GptkitError, match="does not divide across 2 processes"):
        validate(TrainConfig(gradient_accumulation_steps=3), 2)
    with pytest.raises(GptkitError, match="larger than GPT-2's context of 1024"):
        validate(TrainConfig(init_from="gpt2", block_size=2048), 1)
    with pytest.raises(GptkitError, match="init_from=scratch"):
        validate(TrainConfig(lora_rank=4), 1)
    validate(TrainConfig(), 1)  # the defaults are a valid run


# --- which settings were given -----------------------------------------------------------------
def test_given_settings_are_the_files_and_the_command_lines_never_the_defaults(tmp_path):
    conf = tmp_path / "c.py"
    conf.write_text("import math\n_x = 2\nbatch_size = 4\nlearning_rate = 6e-4\n")  # the default's value, given
    cfg, given = parse_given(TrainConfig, [str(conf), "--max_iters=10", "--dropout=0.0"], "test")
    assert given == {"batch_size", "learning_rate", "max_iters", "dropout"}
    assert (cfg.batch_size, cfg.max_iters) == (4, 10)
    assert given_settings(parse_args(TrainConfig, [str(conf), "--max_iters=10", "--dropout=0.0"], "test")) == given
    assert given_settings(parse_args(TrainConfig, [], "test")) == set()
    # A config built in Python: what differs from the defaults is what was given.
    assert given_settings(TrainConfig(max_iters=10, learning_rate=6e-4)) == {"max_iters"}


# --- resume: applied or refused -------------------------------------------------------------------
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
    value = {"bias": False, "lora_targets": "c_fc", "dtype": "float32", "dataset": "poems", "train_layers": "all"}.get(
        key
    )
    value = value if value is not None else getattr(TrainConfig(), key) + 1
    cfg = replace(resumed(), **{key: value})
    assert resume_changes(cfg, {key}, SAVED)[1] == {key: (SAVED[key], value)}
    other = {"batch_size": 3, "grad_clip": 0.5, "warmup_iters": 7, "device": "cpu", "eval_iters": 5}
    applied, refused = resume_changes(replace(cfg, **other), set(other), SAVED)
    assert refused == {} and set(applied) == set(other)
