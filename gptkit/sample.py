"""Sample text from a trained checkpoint or a pretrained GPT-2.

    python -m gptkit.sample --out_dir=out-shakespeare --start="ROMEO:" --num_samples=3

All samples are drawn in one batch with the KV cache. `--start=FILE:prompt.txt` reads the
prompt from a file; `--stop_at_eot=True` ends each sample at `<|endoftext|>`.

A run finetuned on examples answers in its template: `--prompt=TEXT` wraps TEXT in the template
of the run's dataset (as the instruction, or the user's turn) and ends at `<|endoftext|>`. A JSON
object in the dataset's own form, less the response, fills every field of the template (an
Alpaca input, a chat's system message and earlier turns):

    python -m gptkit.sample --out_dir=out-dates --prompt="Write 2001-02-03 in words:" --temperature=0
    python -m gptkit.sample --out_dir=out-alpaca --prompt='{"instruction": "Translate.", "input": "the red cat"}'
    python -m gptkit.sample --out_dir=out-chat --prompt='{"messages": [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"}]}'
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from gptkit import checkpoint, cpu_kernels
from gptkit.config import AT_LEAST_1, DTYPES, SEED, Range, check_ranges, given_settings, parse_args, setting
from gptkit.data import dataset_kind, read_meta
from gptkit.device import pick_dtype, resolve_device
from gptkit.errors import GptkitError, run_cli
from gptkit.prompts import prompt_for
from gptkit.sources import load_model
from gptkit.tokenizer import EOT_ID, get_encoding


@dataclass
class SampleConfig:
    out_dir: str = setting("out", "run folder whose ckpt.pt to sample (with init_from=resume)")
    init_from: str = setting(
        "resume",
        "resume (OUT_DIR/ckpt.pt) | gpt2 | gpt2-medium | gpt2-large | gpt2-xl | a HF directory | a peft adapter dir",
    )
    start: str = setting("\n", "the prompt, or FILE:path to read it from a file")
    prompt: str = setting(
        "",
        "TEXT, or a JSON example less its response, in the template of the run's example dataset "
        "(instead of --start); ends at <|endoftext|>",
    )
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


def run_dataset(out_dir: str | Path) -> Path:
    """The dataset folder a training run read: from OUT_DIR/config.json, or its checkpoint's config."""
    path = Path(out_dir) / "config.json"
    try:
        config = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        config = None  # unreadable: the checkpoint has the same settings
    if not isinstance(config, dict) or "dataset" not in config:
        config = checkpoint.load(checkpoint.best_in(out_dir)).config
    if "dataset" not in config:
        raise GptkitError(
            f"{out_dir} does not say which dataset it was trained on (no config.json), so its template is unknown: "
            "write the prompt in the template yourself and pass it as --start=TEXT"
        )
    return Path(config.get("data_root", "data")) / config["dataset"]


def example_format(data_dir: Path, out_dir: str) -> str:
    """The format (template) of the example dataset `data_dir`; one line when it is a text stream."""
    if not (data_dir / "meta.json").is_file():
        raise GptkitError(f"{out_dir} was trained on {data_dir}, which is not there any more: prepare it again")
    if dataset_kind(data_dir) not in ("examples", "preference"):  # a preference run's prompts share the templates
        raise GptkitError(
            f"{out_dir} was trained on the text stream {data_dir}, which has no prompt template: "
            "use --start=TEXT to continue raw text"
        )
    return read_meta(data_dir)["format"]


def templated_prompt(cfg: SampleConfig) -> str:
    """The text generation starts from: --prompt in the run's template, or --start as it is."""
    if not cfg.prompt:
        return read_prompt(cfg.start)
    if "start" in given_settings(cfg):
        raise GptkitError("give --prompt=TEXT (in the run's template) or --start=TEXT (raw), not both")
    if cfg.init_from != "resume":
        raise GptkitError(
            "--prompt wraps TEXT in the template of a finetuned run: use it with --out_dir=RUN "
            "(init_from=resume), or --start=TEXT with a pretrained model"
        )
    fmt = example_format(run_dataset(cfg.out_dir), cfg.out_dir)
    try:
        return prompt_for(fmt, cfg.prompt)
    except GptkitError as e:
        raise GptkitError(f"--prompt: {e}") from None


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
    text = templated_prompt(cfg)
    stop_at_eot = cfg.stop_at_eot or bool(cfg.prompt)  # a template's response ends at <|endoftext|>
    model = load_model(cfg.init_from, cfg.out_dir).eval().to(device=device, dtype=dtype)
    if model.score is not None:
        where = cfg.out_dir if cfg.init_from == "resume" else cfg.init_from
        raise GptkitError(
            f"{where} is a classifier: it labels texts, it does not write them; "
            f'use python -m gptkit.classify {where} "TEXT"'
        )
    if device.type == "cpu":  # oneDNN matmuls where they measured faster on this CPU
        cpu_kernels.speed_up(model, cpu_kernels.measure_routes())
    prompt = enc.encode(text, allowed_special={"<|endoftext|>"})
    if not prompt:
        raise GptkitError("the prompt is empty: pass --start=TEXT (the default is a newline)")
    idx = torch.tensor([prompt] * cfg.num_samples, dtype=torch.long, device=device)
    out = model.generate(
        idx, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, stop_token=EOT_ID if stop_at_eot else None
    )
    texts = []
    for row in out.tolist():
        new = row[len(prompt) :]
        if stop_at_eot and EOT_ID in new:
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
