"""The sample CLI: text from a run or a Hugging Face directory, as a user runs it."""

import pytest

from conftest import run_cli


@pytest.mark.slow  # `make test-slow`; greedy tokens against transformers' generate stay (test_pretrained)
def test_sample_cli_from_hf_dir_greedy_and_eot(tmp_path, tiny_hf_dir):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("To be, or not to be")
    args = [
        "-m",
        "gptkit.sample",
        f"--init_from={tiny_hf_dir}",
        f"--start=FILE:{prompt}",
        "--num_samples=3",
        "--max_new_tokens=12",
        "--temperature=0",
        "--device=cpu",
    ]
    a, b = run_cli(*args), run_cli(*args)
    assert a.returncode == 0, a.stderr
    samples = a.stdout.split("---------------\n")[:-1]
    assert len(samples) == 3 and len(set(samples)) == 1  # greedy: every row the same
    assert a.stdout == b.stdout and samples[0].startswith("To be, or not to be")
    eot = run_cli(
        *args[:-3], "--max_new_tokens=40", "--temperature=2.0", "--top_k=None", "--stop_at_eot=True", "--device=cpu"
    )
    assert eot.returncode == 0 and "<|endoftext|>" not in eot.stdout
