"""Sample text from a trained checkpoint or a pretrained GPT-2.

    python -m gptkit.sample --out_dir=out-shakespeare --start="ROMEO:" --num_samples=3

All samples are drawn in one batch with the KV cache. `--start=FILE:prompt.txt` reads the
prompt from a file; `--stop_at_eot=True` ends each sample at `<|endoftext|>`.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from gptkit import checkpoint
from gptkit.config import AT_LEAST_1, DTYPES, SEED, Range, check_ranges, parse_args, setting
from gptkit.device import pick_dtype, resolve_device
from gptkit.errors import GptkitError, run_cli
from gptkit.lora import merge_lora
from gptkit.model import GPT
from gptkit.peft_format import is_peft_dir, read_peft_dir
from gptkit.tokenizer import EOT_ID, get_encoding


@dataclass
class SampleConfig:
    out_dir: str = setting("out", "run folder whose ckpt.pt to sample (with init_from=resume)")
    init_from: str = setting(
        "resume",
        "resume (OUT_DIR/ckpt.pt) | gpt2 | gpt2-medium | gpt2-large | gpt2-xl | a HF directory | a peft adapter dir",
    )
    start: str = setting("\n", "the prompt, or FILE:path to read it from a file")
    num_samples: int = setting(10, "samples to draw (one batch)", AT_LEAST_1)
    max_new_tokens: int = setting(500, "tokens generated per sample", AT_LEAST_1)
    temperature: float = setting(
        0.8, "1.0 as trained, lower is more conservative, 0 is greedy", Range(0, words="0 (greedy) or more")
    )
    top_k: int | None = setting(200, "keep only the k most likely tokens (None: all)", AT_LEAST_1)
    top_p: float | None = setting(
        None,
        "keep the smallest set of tokens whose probability reaches p (None: all)",
        Range(0, 1, low_open=True, words="in (0, 1]"),
    )
    stop_at_eot: bool = setting(False, "end each sample at <|endoftext|>")
    seed: int = setting(1337, "random seed", SEED)
    device: str = setting("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    dtype: str = setting("auto", "auto, float32, bfloat16, float16", DTYPES)


def load_model(init_from: str, out_dir: str) -> GPT:
    if init_from == "resume":
        path = checkpoint.best_in(out_dir)
        model = checkpoint.model_from_checkpoint(checkpoint.load(path), path)
        return merge_lora(model)  # a LoRA run: its adapters folded into the base's weights
    if is_peft_dir(init_from):
        return merge_lora(read_peft_dir(init_from)[0])  # a peft adapter, on the base it names
    return GPT.from_pretrained(init_from)


def read_prompt(start: str) -> str:
    if not start.startswith("FILE:"):
        return start
    path = Path(start[5:])
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GptkitError(f"cannot read the prompt file {path} ({type(e).__name__}); check --start=FILE:path") from None


def sample(cfg: SampleConfig) -> list[str]:
    """The samples `cfg` asks for, as text (prompt included)."""
    check_ranges(cfg)
    device = resolve_device(cfg.device)  # before any weight is read: one line if this machine lacks it
    dtype = pick_dtype(cfg.dtype, device.type)
    torch.manual_seed(cfg.seed)
    enc = get_encoding()
    model = load_model(cfg.init_from, cfg.out_dir).eval().to(device=device, dtype=dtype)
    prompt = enc.encode(read_prompt(cfg.start), allowed_special={"<|endoftext|>"})
    if not prompt:
        raise GptkitError("the prompt is empty: pass --start=TEXT (the default is a newline)")
    idx = torch.tensor([prompt] * cfg.num_samples, dtype=torch.long, device=device)
    out = model.generate(
        idx, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, stop_token=EOT_ID if cfg.stop_at_eot else None
    )
    texts = []
    for row in out.tolist():
        new = row[len(prompt) :]
        if cfg.stop_at_eot and EOT_ID in new:
            new = new[: new.index(EOT_ID)]
        texts.append(enc.decode(prompt + new))
    return texts


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(SampleConfig, sys.argv[1:] if argv is None else argv, "python -m gptkit.sample")
    for text in sample(cfg):
        print(text)
        print("---------------")


if __name__ == "__main__":
    run_cli(main)
