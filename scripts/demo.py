"""The whole pipeline on a CPU in a few minutes: prepare -> finetune -> sample -> loss plot.

    make demo        (or: python scripts/demo.py [OUT_DIR], default out-demo)

Finetunes GPT-2 (124M) on tiny Shakespeare when its weights can be loaded (downloaded once
into the Hugging Face cache). Offline with no cached copy, it says so and finetunes the offline
stand-in instead, through the same loading code: GPT-2's shape at 4 layers, which gptkit
pretrains once on the train split (a few minutes; cached under models/, see gptkit.standin).
GPTKIT_SMOKE=1 runs fewer iterations, nothing else changes.
"""

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a clone without installing

from gptkit import smoke  # noqa: E402
from gptkit.config import TrainConfig  # noqa: E402
from gptkit.diagnostics import plot_run  # noqa: E402
from gptkit.errors import run_cli  # noqa: E402
from gptkit.prepare import prepare, print_counts  # noqa: E402
from gptkit.sample import SampleConfig, sample  # noqa: E402
from gptkit.standin import dir_or_pretrained_standin  # noqa: E402
from gptkit.train import train  # noqa: E402

DATA = ROOT / "data" / "shakespeare"

# GPT-2 already knows English: a small constant LR for a few hundred thousand tokens.
GPT2_RUN = dict(
    block_size=128,
    batch_size=4,
    gradient_accumulation_steps=1,
    max_iters=30,
    eval_interval=10,
    eval_iters=5,
    learning_rate=3e-5,
    dropout=0.1,
)
# The stand-in is pretrained too, and small: a small constant LR (a tenth of its pretraining
# peak), cheap steps.
STANDIN_RUN = dict(
    block_size=128,
    batch_size=8,
    gradient_accumulation_steps=1,
    max_iters=40,
    eval_interval=10,
    eval_iters=5,
    learning_rate=3e-4,
    dropout=0.0,
)


def choose_model() -> tuple[str, dict, str]:
    directory, unavailable = dir_or_pretrained_standin("gpt2", DATA, ROOT / "models")
    if unavailable is None:
        return str(directory), GPT2_RUN, "GPT-2 (124M) from the Hugging Face cache"
    print(f"note: {unavailable}")
    return str(directory), STANDIN_RUN, f"an OFFLINE STAND-IN: a 4-layer GPT-2 pretrained by gptkit, at {directory}"


def main() -> None:
    t0 = time.time()
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "out-demo"
    print("== 1/4 prepare tiny Shakespeare")
    print_counts(prepare(DATA / "input.txt", DATA, val_fraction=0.1, progress=False))

    init_from, run, description = choose_model()
    print(f"== 2/4 finetune {description}")
    if smoke():
        run = run | {"max_iters": 4, "eval_interval": 2, "eval_iters": 2}
    cfg = TrainConfig(
        out_dir=str(out_dir),
        overwrite_out_dir=True,
        init_from=init_from,
        dataset="shakespeare",
        data_root=str(ROOT / "data"),
        always_save_checkpoint=False,
        decay_lr=False,
        device="auto",
        **run,
    )
    summary = train(cfg)
    print(f"best val loss {summary['best_val_loss']:.3f} -> {out_dir / 'ckpt.pt'}")

    print("== 3/4 sample from the finetuned checkpoint")
    for text in sample(
        SampleConfig(out_dir=str(out_dir), start="ROMEO:", num_samples=2, max_new_tokens=20 if smoke() else 80, seed=1)
    ):
        print(text)
        print("---------------")

    print("== 4/4 plot the loss curves")
    png = plot_run(out_dir, out_dir / "loss.png")
    print(f"saved {png}")
    print(f"done in {time.time() - t0:.0f} s with {description}")


if __name__ == "__main__":
    run_cli(main)
