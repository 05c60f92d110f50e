"""`make demo`'s script, in smoke mode (fewer iterations, same code path), offline."""

import shutil

from conftest import ROOT, run_cli


def test_demo_runs_the_whole_pipeline_offline(tmp_path):
    # The script on a copy of the clone's layout: what it prepares and caches stays out of the checkout.
    clone = tmp_path / "clone"
    (clone / "scripts").mkdir(parents=True)
    (clone / "data" / "shakespeare").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "demo.py", clone / "scripts" / "demo.py")
    shutil.copy(ROOT / "data" / "shakespeare" / "input.txt", clone / "data" / "shakespeare" / "input.txt")
    out = tmp_path / "demo"
    env = {"GPTKIT_SMOKE": "1", "HF_HUB_OFFLINE": "1"}
    result = run_cli(str(clone / "scripts" / "demo.py"), str(out), env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout
    for stage in ("1/4 prepare", "2/4 finetune", "3/4 sample", "4/4 plot"):
        assert stage in log
    assert "train has 301,966 tokens" in log and "val has 36,059 tokens" in log
    # Offline, the stand-in is announced as such, never passed off as GPT-2.
    assert "OFFLINE STAND-IN" in log and "cannot load 'gpt2'" in log
    assert log.count("ROMEO:") == 2
    assert (out / "ckpt.pt").is_file() and (out / "metrics.jsonl").is_file()
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
