import pytest

from conftest import ROOT
from gptkit.config import TrainConfig, parse_args, read_config_file
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
