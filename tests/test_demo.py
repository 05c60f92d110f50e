"""`make demo`'s script, in smoke mode (fewer iterations, same code path), offline."""

from conftest import run_cli


def test_demo_runs_the_whole_pipeline_offline(tmp_path):
    out = tmp_path / "demo"
    result = run_cli("scripts/demo.py", str(out), env={"GPTKIT_SMOKE": "1", "HF_HUB_OFFLINE": "1"}, timeout=600)
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
