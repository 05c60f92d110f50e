"""The checks behind the notebooks' exercises: the learner's function against gptkit's own.

Each exercise in a notebook is three cells under a markdown heading that says "Exercise":
the heading with what to write, a code cell with a placeholder the learner replaces, and a
check cell:

    def my_top_p(logits, p):
        raise NotImplementedError  # your code here

    check_top_p(my_top_p)

A check runs the function on seeded random inputs against gptkit (or the computation gptkit
does), prints one line and returns what it printed:

- `True`  "passed";
- `False` one hint naming what differs (a shape, a dtype, which element or position, a
  shift by one, the masked positions, a missing scale ...), also when the function raises;
- `None`  "not attempted": the placeholder still raises `NotImplementedError` (the one
  convention: a placeholder raises it, so that `None` stays a possible answer).

So a notebook runs top to bottom whatever the learner has written, and tests can assert on
the value. A check never changes the notebook's random state (it runs under `fork_rng`).

Adding an exercise (notebooks 09, 10, ...):
1. Here, a function `check_NAME(fn)` decorated with `@exercise("what it is")`. It calls the
   learner's function through `attempt(fn, ...)` (which turns NotImplementedError into "not
   attempted" and any other exception into a hint), compares with gptkit's own, `raise
   Hint("...")` on the first difference with the one thing to fix, and returns a short phrase
   saying what passed ("20 random distributions"). Keep it fast: tiny models, no training.
2. In `notebooks/NN_topic.py`, where the idea is taught: a markdown cell "### Exercise N.k:
   ..." that says what to write, a code cell with the placeholder (`raise
   NotImplementedError`), a code cell calling `check_NAME`.
3. In `notebooks/solutions/NN_topic.py`: the solution and `assert check_NAME(solution)`.
4. In `tests/test_exercises.py`: the check passes on the solution, fails on a plausible wrong
   answer, and says "not attempted" on the placeholder.
"""

import functools
import math
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import regex
import torch
from tiktoken_ext.openai_public import r50k_pat_str
from torch.nn import functional as F

from gptkit.choices import Question, ending_logps, rows_of
from gptkit.classify import summarize
from gptkit.config import TrainConfig
from gptkit.data import BIN_DTYPE, MASK_DTYPE, Batches, ExampleBatches
from gptkit.diagnostics import find_turn_up, simulate_early_stop
from gptkit.evaluate import token_f1
from gptkit.export import to_hf_state_dict
from gptkit.lora import TARGETS, LoRALinear, count_lora_params
from gptkit.metrics import RunMetrics
from gptkit.model import GPT, IGNORE_INDEX, GPTConfig, next_token_probs
from gptkit.objectives import Classification, Preference, sequence_logps
from gptkit.tokenizer import EOT_ID, get_encoding
from gptkit.train import lr_at

PASS, FAIL, TODO = "✓", "✗", "·"


class Hint(Exception):
    """The one thing that differs, as the line to print."""


class NotAttempted(Exception):
    """The learner's function is still the placeholder."""


def attempt(fn: Callable, *args):
    """Call the learner's function: a placeholder is 'not attempted', an error becomes a hint."""
    try:
        return fn(*args)
    except NotImplementedError as e:
        raise NotAttempted from e
    except Exception as e:  # the learner's code can fail in any way: say how, in one line
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise Hint(f"your function raised {type(e).__name__}: {message}") from e


def exercise(title: str):
    """Make `compare(fn) -> what passed` a check that prints one line and returns True/False/None."""

    def wrap(compare: Callable) -> Callable:
        @functools.wraps(compare)
        def check(fn: Callable) -> bool | None:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                try:
                    passed = compare(fn)
                except NotAttempted:
                    print(f"{TODO} {title}: not attempted (replace `raise NotImplementedError` with your code)")
                    return None
                except Hint as hint:
                    print(f"{FAIL} {title}: {hint}")
                    return False
            print(f"{PASS} {title}: passed ({passed})")
            return True

        return check

    return wrap


# --- helpers ------------------------------------------------------------------------------------
def tiny_gpt(seed: int = 0, vocab_size: int = 64, n_embd: int = 16, block_size: int = 16) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=n_embd)).eval()


def as_tensor(value, what: str) -> torch.Tensor:
    if value is None:
        raise Hint(f"your function returned None for {what}: did it forget to `return`?")
    try:
        return torch.as_tensor(np.asarray(value) if isinstance(value, list) else value)
    except Exception as e:
        raise Hint(f"{what} should be a tensor, not {type(value).__name__}") from e


def same_shape(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    if tuple(got.shape) != tuple(want.shape):
        raise Hint(f"{what} has shape {tuple(got.shape)}, gptkit's {tuple(want.shape)}")


def first_difference(got: torch.Tensor, want: torch.Tensor, atol: float = 1e-5) -> tuple | None:
    """The index of the first element that differs, or None."""
    bad = ~torch.isclose(got.double(), want.double(), atol=atol, rtol=1e-4, equal_nan=True)
    return tuple(int(i) for i in bad.nonzero()[0]) if bool(bad.any()) else None


def short(values, n: int = 8) -> str:
    values = list(values)
    return str(values[:n])[:-1] + (", ...]" if len(values) > n else "]")


def corpus_words(n: int, seed: int) -> list[str]:
    """`n` random pre-tokenized chunks of English (GPT-2's regex over a fixed text)."""
    text = (
        "First Citizen: Before we proceed any further, hear me speak. You are all resolved rather to die "
        "than to famish? Resolved. First, you know Caius Marcius is chief enemy to the people. We know't, "
        "we know't. Let us kill him, and we'll have corn at our own price. Is't a verdict? Tokenization "
        "merges bytes: antidisestablishmentarianism, unbelievably, 1,024 tokens, naïve café."
    )
    chunks = regex.findall(r50k_pat_str, text)
    return list(np.random.default_rng(seed).choice(chunks, size=n, replace=False))


def int64_tensor(value, what: str) -> torch.Tensor:
    """A learner's token ids as a tensor, with a hint when they are not int64 (what gptkit batches hold)."""
    if isinstance(value, np.ndarray):
        if value.dtype != np.int64:
            raise Hint(f"{what} has dtype {value.dtype}; gptkit's is int64 (embeddings and the loss need it)")
        return torch.from_numpy(value)
    tensor = as_tensor(value, what)
    if tensor.dtype != torch.int64:
        raise Hint(f"{what} has dtype {tensor.dtype}; gptkit's is torch.int64 (embeddings and the loss need it)")
    return tensor


# --- 01 tokenization ----------------------------------------------------------------------------
def reference_merge(parts: list[bytes], enc) -> list[bytes]:
    """One BPE step as tiktoken does it: merge the adjacent pair of lowest rank (leftmost on a tie)."""
    best = None
    for i in range(len(parts) - 1):
        try:
            rank = enc.encode_single_token(parts[i] + parts[i + 1])
        except KeyError:
            continue  # never merged during GPT-2's training
        if best is None or rank < best[0]:
            best = (rank, i)
    if best is None:
        return list(parts)
    i = best[1]
    return parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]


@exercise("a BPE merge step")
def check_merge_step(merge_step):
    enc = get_encoding()
    chunks = corpus_words(12, seed=0)
    for chunk in chunks:
        parts = [bytes([b]) for b in chunk.encode("utf-8")]
        for _ in range(len(parts)):  # every step until nothing merges, the last (a no-op) included
            want = reference_merge(parts, enc)
            got = attempt(merge_step, list(parts), enc)
            if got is None:
                raise Hint("your function returned None: return the new list of parts")
            if list(got) != want:
                raise Hint(f"on {parts} you give {list(got)}; the lowest-rank pair merges first: {want}")
            if want == parts:
                break
            parts = want
        ids = [enc.encode_single_token(p) for p in parts]
        if ids != enc.encode_ordinary(chunk):  # cannot happen when every step matched: tiktoken agrees
            raise Hint(f"{chunk!r}: merging to the end gives {ids}, tiktoken {enc.encode_ordinary(chunk)}")
    return f"every merge of {len(chunks)} words, ending in tiktoken's ids"


@exercise("the (x, y) windows")
def check_windows(windows):
    stream = np.random.default_rng(0).integers(0, 50257, size=400).astype(BIN_DTYPE)
    with tempfile.TemporaryDirectory() as tmp:
        stream.tofile(Path(tmp) / "train.bin")
        for block_size, batch_size in ((8, 4), (5, 3)):
            batches = Batches(tmp, "train", batch_size, block_size, seed=block_size)
            offsets = batches.draw_offsets(batch_size)
            want_x, want_y = batches.windows(offsets)
            got = attempt(windows, stream.copy(), offsets.copy(), block_size)
            if not isinstance(got, tuple | list) or len(got) != 2:
                raise Hint("return two things, x and y")
            x, y = int64_tensor(got[0], "x"), int64_tensor(got[1], "y")
            same_shape(x, want_x, "x")
            same_shape(y, want_y, "y")
            if not torch.equal(x, want_x):
                raise Hint(f"x row 0 should be stream[{offsets[0]} : {offsets[0]} + block_size]: {short(want_x[0])}")
            if not torch.equal(y, want_y):
                for shift in (0, 2, -1):
                    if all(
                        y[r].tolist() == stream[o + shift : o + shift + block_size].tolist()
                        for r, o in enumerate(offsets)
                    ):
                        raise Hint(f"y is the window shifted by {shift}; it must be shifted by exactly 1")
                raise Hint(f"y row 0 should be stream[{offsets[0]} + 1 : {offsets[0]} + block_size + 1]")
    return "two batches, against gptkit.data.Batches"


# --- 02 the model -------------------------------------------------------------------------------
def attention_hint(got, q, k, v) -> str:
    hs = q.size(-1)
    if bool(got.isnan().any()):
        return "your output has NaN: a row with every score masked (position i must see itself: j <= i)"
    if torch.allclose(got, F.scaled_dot_product_attention(q, k, v), atol=1e-5):
        return "each position attends to the future too: set the scores where j > i to -inf before the softmax"
    if torch.allclose(got, F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0), atol=1e-5):
        return f"divide the scores q·k by sqrt(head size) = {math.sqrt(hs):.3f} before the softmax"
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    b, h, t, _ = first_difference(got, want)
    return f"the output first differs at batch {b}, head {h}, position {t}"


@exercise("causal self-attention")
def check_attention(attention):
    g = torch.Generator().manual_seed(0)
    for shape in ((2, 3, 7, 8), (1, 2, 5, 4)):
        q, k, v = (torch.randn(shape, generator=g) for _ in range(3))
        want = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # what gptkit's attention calls
        got = as_tensor(attempt(attention, q.clone(), k.clone(), v.clone()), "the output")
        same_shape(got, want, "the output (batch, heads, time, head size)")
        if not torch.allclose(got.float(), want, atol=1e-5):
            raise Hint(attention_hint(got.float(), q, k, v))
    return "two random batches, against PyTorch's fused attention that gptkit calls"


def count_hint(cfg: GPTConfig, got: int, want: int) -> str:
    diff, c = got - want, cfg.n_embd
    known = {
        cfg.vocab_size * c: "you count lm_head on its own: it is the token embedding wte (tied), counted once",
        -cfg.vocab_size * c: "the token embedding wte (vocab_size × n_embd) is missing",
        -cfg.block_size * c: "the position embeddings wpe (block_size × n_embd) are missing",
        -2 * c: "the final LayerNorm ln_f is missing (2 × n_embd: a gain and a bias)",
        2 * c: "the final LayerNorm ln_f counts 2 × n_embd once, not more",
    }
    if diff in known:
        return known[diff]
    if diff % cfg.n_layer == 0:
        return f"{diff // cfg.n_layer:+,} per block (n_embd={c}): count each block's attention, MLP and 2 LayerNorms"
    return f"for {cfg} you count {got:,}, gptkit {want:,} ({diff:+,})"


@exercise("the parameter count of a config")
def check_param_count(count_params):
    configs = [
        GPTConfig(block_size=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768),
        GPTConfig(block_size=64, vocab_size=1000, n_layer=3, n_head=4, n_embd=32),
        GPTConfig(block_size=256, vocab_size=50257, n_layer=5, n_head=2, n_embd=48),
    ]
    for cfg in configs:
        with torch.device("meta"):
            want = GPT(cfg).num_params(non_embedding=False)
        got = attempt(count_params, cfg)
        if not isinstance(got, int | np.integer):
            raise Hint(f"return an int, not {type(got).__name__}")
        if got != want:
            raise Hint(count_hint(cfg, int(got), want))
    return f"{len(configs)} configs, against GPT(config) on the meta device"


# --- 03 pretrained weights ----------------------------------------------------------------------
@exercise("the Conv1D transpose")
def check_conv1d(to_gptkit):
    model = tiny_gpt(n_embd=16, vocab_size=64, block_size=24)
    params = dict(model.named_parameters())
    for name, stored in to_hf_state_dict(model).items():  # the layouts of a Hugging Face file
        got = as_tensor(attempt(to_gptkit, name, stored.clone()), name)
        want = params[name].detach()
        conv1d = stored.dim() == 2 and not torch.equal(stored, want)
        if tuple(got.shape) != tuple(want.shape):
            why = "Conv1D stores (in, out), nn.Linear (out, in)" if conv1d else "only the block's Conv1D matrices turn"
            raise Hint(f"{name}: you give shape {tuple(got.shape)}, gptkit's parameter is {tuple(want.shape)} ({why})")
        if torch.equal(got, want):
            continue
        if want.dim() == 2 and torch.equal(got, want.t()):
            if conv1d:
                raise Hint(f"{name} is square, so its shape fits either way; it is a Conv1D matrix: transpose it too")
            raise Hint(f"{name} is not a Conv1D matrix: keep it as stored")
        raise Hint(f"{name}: the values differ first at {first_difference(got, want)}")
    return "every tensor of a small GPT-2 file, against gptkit's loaded parameters"


@exercise("cropping the context")
def check_crop(crop):
    for block_size in (8, 20):
        model = tiny_gpt(block_size=32)
        wpe = model.transformer.wpe.weight.detach().clone()
        model.crop_block_size(block_size)
        want = model.transformer.wpe.weight.detach()
        got = as_tensor(attempt(crop, wpe.clone(), block_size), "the cropped table")
        same_shape(got, want, f"the table cropped to {block_size}")
        if torch.equal(got, wpe[-block_size:]):
            raise Hint("you kept the last positions: position t keeps its own vector, so keep the first rows")
        if not torch.equal(got, want):
            raise Hint(f"row {first_difference(got, want)[0]} differs from gptkit's crop_block_size")
    return "two block sizes, against GPT.crop_block_size"


# --- 04 finetuning ------------------------------------------------------------------------------
def loss_hint(got: torch.Tensor, want: torch.Tensor, logits: torch.Tensor, ids: torch.Tensor) -> str:
    vocab = logits.size(-1)
    if torch.isclose(got, F.cross_entropy(logits.reshape(-1, vocab), ids.reshape(-1)), atol=1e-4):
        return "you score the logits at t against token t: position t must predict token t + 1 (shift the targets)"
    if torch.isclose(got, F.cross_entropy(logits[:, 1:].reshape(-1, vocab), ids[:, :-1].reshape(-1)), atol=1e-4):
        return "shifted the wrong way: the logits at t (all but the last) against the tokens at t + 1"
    if torch.isclose(got, want * ids[:, 1:].numel(), rtol=1e-4):
        return "that is the sum over the positions: take the mean"
    return f"your loss is {got.item():.4f}, gptkit's {want.item():.4f}"


@exercise("the shifted cross-entropy")
def check_next_token_loss(next_token_loss):
    model = tiny_gpt()
    g = torch.Generator().manual_seed(0)
    for batch, time in ((2, 9), (3, 16)):
        ids = torch.randint(0, model.config.vocab_size, (batch, time), generator=g)
        logits = model(ids)[0]
        want = model(ids[:, :-1], ids[:, 1:])[1]  # gptkit's loss: inputs and targets shifted by one
        got = as_tensor(attempt(next_token_loss, logits.clone(), ids.clone()), "the loss")
        if got.numel() != 1:
            raise Hint(f"return one number (the mean over every prediction), not shape {tuple(got.shape)}")
        got = got.reshape(()).float()
        if not torch.isclose(got, want, atol=1e-4):
            raise Hint(loss_hint(got, want, logits, ids))
    return "two random batches, against GPT(x, y)'s loss"


@exercise("gradient accumulation")
def check_accumulation(accumulate):
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randint(0, 64, (8, 12), generator=g) for _ in range(2))
    steps = 4
    micro_batches = list(zip(x.chunk(steps), y.chunk(steps), strict=True))
    with torch.enable_grad():
        whole = tiny_gpt()
        whole(x, y)[1].backward()  # one batch of all 8 windows
        mine = tiny_gpt()
        attempt(accumulate, mine, micro_batches)
    want, got = dict(whole.named_parameters()), dict(mine.named_parameters())
    if any(p.grad is None for p in got.values()):
        raise Hint("after your function some .grad are None: call .backward() on each micro-batch's loss")
    flat = [torch.cat([p[n].grad.flatten() for n in want]) for p in (got, want)]
    ratio = (flat[0].norm() / flat[1].norm()).item()
    if abs(ratio - steps) < 1e-3 * steps:
        raise Hint(f"your gradient is {steps}x one big batch's: divide each micro-batch's loss by {steps}")
    if not torch.allclose(flat[0], flat[1], rtol=1e-4, atol=1e-7):
        name = next(n for n in want if not torch.allclose(got[n].grad, want[n].grad, rtol=1e-4, atol=1e-7))
        raise Hint(f"the accumulated gradient is not one big batch's (norm ratio {ratio:.3f}); first in {name}")
    return f"{steps} micro-batches, against one batch of all of them"


@exercise("the learning-rate schedule")
def check_lr_schedule(lr_schedule):
    for warmup, decay, top, bottom in ((10, 100, 6e-4, 6e-5), (0, 40, 1e-3, 0.0), (5, 30, 3e-4, 3e-5)):
        cfg = TrainConfig(learning_rate=top, min_lr=bottom, warmup_iters=warmup, lr_decay_iters=decay)
        for it in range(decay + 10):
            want = lr_at(it, cfg)
            got = attempt(lr_schedule, it, top, bottom, warmup, decay)
            if got is None:
                raise Hint("your function returned None: return the learning rate")
            if not math.isclose(float(got), want, rel_tol=1e-6, abs_tol=1e-12):
                phase = "warmup" if it < warmup else "cosine decay" if it <= decay else "after the decay"
                raise Hint(
                    f"at iteration {it} ({phase}; warmup_iters={warmup}, lr_decay_iters={decay}, "
                    f"learning_rate={top}, min_lr={bottom}) you give {float(got):.4e}, gptkit {want:.4e}"
                )
    return "three schedules, every iteration, against gptkit.train.lr_at"


# --- 05 sampling --------------------------------------------------------------------------------
def random_logits(seed: int, rows: int = 3, vocab: int = 200) -> torch.Tensor:
    return 2.5 * torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed))


def distribution(value, want: torch.Tensor) -> torch.Tensor:
    got = as_tensor(value, "the probabilities").float()
    same_shape(got, want, "the probabilities")
    if not torch.allclose(got.sum(-1), torch.ones(want.shape[:-1]), atol=1e-4):
        raise Hint(f"a row sums to {got.sum(-1)[0].item():.4f}, not 1: return probabilities (softmax, renormalised)")
    return got


@exercise("temperature")
def check_temperature(with_temperature):
    logits = random_logits(0)
    for t in (0.5, 1.0, 2.0):
        want = next_token_probs(logits, temperature=t)
        got = distribution(attempt(with_temperature, logits.clone(), t), want)
        if torch.allclose(got, torch.softmax(logits * t, dim=-1), atol=1e-5) and t != 1.0:
            raise Hint(f"at T={t} you multiply the logits by T: divide them by T")
        if not torch.allclose(got, want, atol=1e-5):
            raise Hint(f"at T={t} the probability of token {first_difference(got, want)[1]} differs from gptkit's")
    return "three temperatures, against gptkit.model.next_token_probs"


@exercise("a top-p filter")
def check_top_p(top_p_filter):
    for seed, p in ((0, 0.9), (1, 0.5), (2, 0.95), (3, 0.3)):
        logits = random_logits(seed)
        want = next_token_probs(logits, top_p=p)
        got = as_tensor(attempt(top_p_filter, logits.clone(), p), "the probabilities").float()
        same_shape(got, want, "the probabilities")
        kept, should = (got > 0).sum(-1), (want > 0).sum(-1)
        if not torch.equal(kept, should):
            row = int((kept != should).nonzero()[0])
            n, m = int(kept[row]), int(should[row])
            why = (
                "the token that crosses p stays: keep a token while the mass ranked above it is below p"
                if n < m
                else "drop every token once the tokens ranked above it already hold p"
            )
            raise Hint(f"at p={p} you keep {n} tokens of row {row}, gptkit {m}: {why}")
        if not torch.equal(got > 0, want > 0):
            raise Hint(f"at p={p} you keep as many tokens as gptkit, but not the most likely ones")
        got = distribution(got, want)
        if not torch.allclose(got, want, atol=1e-5):
            raise Hint(f"at p={p} the kept probabilities differ from gptkit's: renormalise over the kept tokens")
    return "four distributions, against gptkit.model.next_token_probs"


@exercise("greedy decoding")
def check_greedy(greedy):
    model = tiny_gpt(seed=1)
    g = torch.Generator().manual_seed(0)
    for prompt_len, new in ((5, 8), (1, 12)):
        idx = torch.randint(0, model.config.vocab_size, (1, prompt_len), generator=g)
        want = model.generate(idx, new, temperature=0)
        got = int64_tensor(attempt(greedy, model, idx.clone(), new), "the output")
        if got.dim() == 2 and got.size(1) == new:
            raise Hint("return the prompt followed by the new tokens, as GPT.generate does")
        same_shape(got, want, "the ids (1, prompt + new tokens)")
        if not torch.equal(got, want):
            t = first_difference(got, want)[1]
            raise Hint(
                f"new token {t - prompt_len}: you pick {int(got[0, t])}, gptkit {int(want[0, t])} "
                "(the argmax of the logits at the last position)"
            )
    return "two prompts, against GPT.generate(temperature=0)"


# --- 06 overfitting -----------------------------------------------------------------------------
def val_curves() -> dict[str, list[float]]:
    noise = np.random.default_rng(0).normal(0, 0.03, 16)
    u_shape = 2.0 + 0.02 * (np.arange(16) - 6.0) ** 2
    return {
        "U-shaped": [3.0, 2.6, 2.3, 2.1, 2.0, 2.02, 2.1, 2.2, 2.35, 2.5],
        "still falling": list(np.linspace(3.0, 2.0, 10)),
        "one bad evaluation at the end": [3.0, 2.8, 2.6, 2.5, 2.45, 2.42, 2.41, 2.40, 2.9],
        "dip that recovers": [3.0, 2.5, 2.2, 2.3, 2.45, 2.3, 2.1, 1.9, 1.8, 1.75],
        "plateau": [3.0, 2.5, 2.2, 2.1, 2.1, 2.11, 2.1, 2.11, 2.1],
        "noisy U": list(u_shape + noise),
    }


def as_index(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise Hint(f"return an evaluation's index (an int) or None, not {type(value).__name__}")
    return int(value)


@exercise("a turn-up detector")
def check_turn_up(turned_up):
    for kind, curve in val_curves().items():
        run = RunMetrics.from_losses(range(len(curve)), curve, curve)
        found = find_turn_up(run, window=3, min_rise=0.02, patience=3)
        want = None if found is None else found.index
        got = as_index(attempt(turned_up, list(curve)))
        if got != want:
            shown = short([round(float(v), 2) for v in curve], 16)
            raise Hint(f"on the {kind} curve {shown} you say {got}, find_turn_up {want}")
    return f"{len(val_curves())} curves, against gptkit.diagnostics.find_turn_up"


@exercise("early stopping")
def check_early_stop(stop_at):
    for patience in (2, 3):
        for kind, curve in val_curves().items():
            run = RunMetrics.from_losses(range(len(curve)), curve, curve)
            sim = simulate_early_stop(run, patience=patience)
            want = sim.stop_iter if sim.stopped else None
            got = as_index(attempt(stop_at, list(curve), patience))
            if got != want:
                raise Hint(
                    f"patience {patience}, on the {kind} curve {short([round(float(v), 2) for v in curve], 16)}: "
                    f"you stop at {got}, gptkit at {want}"
                )
    return f"{len(val_curves())} curves at two patiences, against gptkit.diagnostics.simulate_early_stop"


# --- 07 LoRA ------------------------------------------------------------------------------------
def lora_hint(got, base, update, alpha, rank, want) -> str:
    if torch.allclose(got, base, atol=1e-5):
        return "your output is the base layer's alone: add the update (alpha / r) · B A x"
    if torch.allclose(got, base + update, atol=1e-5):
        return f"scale the update B A x by alpha / r = {alpha / rank:g}"
    if torch.allclose(got, base + alpha * update, atol=1e-5):
        return f"scale the update by alpha / r = {alpha / rank:g}, not by alpha"
    return f"the output first differs at {first_difference(got, want)} (base + (alpha / r) · B A x)"


@exercise("a LoRA forward")
def check_lora_forward(lora_forward):
    g = torch.Generator().manual_seed(0)
    for d_in, d_out, rank, alpha in ((16, 48, 4, 8.0), (32, 32, 2, 16.0)):
        base = torch.nn.Linear(d_in, d_out)
        layer = LoRALinear(base, rank=rank, alpha=alpha, dropout=0.0)
        layer.lora_B.copy_(0.1 * torch.randn(d_out, rank, generator=g))  # as after some training
        x = torch.randn(2, 5, d_in, generator=g)
        want = layer(x)
        args = (x, base.weight, base.bias, layer.lora_A, layer.lora_B, alpha)
        got = as_tensor(attempt(lora_forward, *(a.detach().clone() if torch.is_tensor(a) else a for a in args)), "y")
        same_shape(got, want, "y")
        if not torch.allclose(got, want, atol=1e-5):
            update = x @ layer.lora_A.T @ layer.lora_B.T
            raise Hint(lora_hint(got, base(x), update, alpha, rank, want))
    return "two layers, against gptkit.lora.LoRALinear"


@exercise("LoRA's trainable-parameter count")
def check_lora_params(count_lora):
    cases = [
        (GPTConfig(n_layer=12, n_head=12, n_embd=768), 8, list(TARGETS)),
        (GPTConfig(n_layer=3, n_head=2, n_embd=64), 4, ["c_attn"]),
        (GPTConfig(n_layer=5, n_head=4, n_embd=32), 16, ["c_fc", "mlp.c_proj"]),
        (GPTConfig(n_layer=2, n_head=2, n_embd=48), 2, ["attn.c_proj", "c_attn"]),
    ]
    for cfg, rank, targets in cases:
        want = count_lora_params(cfg, rank, ",".join(targets))
        got = attempt(count_lora, cfg, rank, list(targets))
        if not isinstance(got, int | np.integer):
            raise Hint(f"return an int, not {type(got).__name__}")
        if got == want // cfg.n_layer:
            raise Hint(f"that is one block's adapters: every one of the {cfg.n_layer} blocks has them")
        if got != want:
            raise Hint(
                f"rank {rank} on {targets} of a {cfg.n_layer}-block, {cfg.n_embd}-wide model: you count {got:,}, "
                f"gptkit {want:,} (each adapted Linear adds A (r × in) and B (out × r))"
            )
    return f"{len(cases)} configs, against gptkit.lora.count_lora_params"


# --- 08 task finetuning -------------------------------------------------------------------------
def random_examples(seed: int, n: int) -> list[tuple[list[int], list[int]]]:
    """(tokens, mask) pairs: a prompt (mask 0), then a response ending in <|endoftext|> (mask 1)."""
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(n):
        prompt, response = rng.integers(0, 1000, rng.integers(2, 7)), rng.integers(0, 1000, rng.integers(1, 6))
        tokens = [*prompt.tolist(), *response.tolist(), EOT_ID]
        examples.append((tokens, [0] * len(prompt) + [1] * (len(response) + 1)))
    return examples


def reference_collate(examples) -> tuple[torch.Tensor, torch.Tensor]:
    """gptkit's own batch of these examples: written as a prepared split, read by ExampleBatches."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.array([t for ex, _ in examples for t in ex], dtype=BIN_DTYPE).tofile(folder / "val.bin")
        np.array([m for _, mask in examples for m in mask], dtype=MASK_DTYPE).tofile(folder / "val.mask.bin")
        np.save(folder / "val.offsets.npy", np.cumsum([0] + [len(ex) for ex, _ in examples]).astype(np.int64))
        batches = ExampleBatches(folder, "val", batch_size=len(examples), block_size=64, mask_prompt=True)
        return batches.batch(np.arange(len(examples)))


def collate_hint(y, want, examples) -> str:
    row, t = first_difference(y, want)
    tokens, mask = examples[row]
    if t >= len(tokens) - 1:
        return f"row {row}, position {t} is padding: its target must be IGNORE_INDEX ({IGNORE_INDEX})"
    role = "a response token" if mask[t + 1] else "a prompt token"
    if int(want[row, t]) == EOT_ID:
        return f"row {row}, position {t}: the response's <|endoftext|> must stay a target (so the model learns to stop)"
    if int(y[row, t]) == tokens[t] and int(want[row, t]) != tokens[t]:
        return f"row {row}, position {t}: y must be x shifted by one (the target is token t + 1)"
    if mask[t] != mask[t + 1]:
        return (
            f"row {row}, position {t}: its target is {role}; keep or ignore a target by the mask of the "
            "target token (t + 1), not of the input token t"
        )
    return f"row {row}, position {t}: its target is {role}: you give {int(y[row, t])}, gptkit {int(want[row, t])}"


@exercise("a masked collate")
def check_collate(collate):
    for seed, n in ((0, 4), (1, 3)):
        examples = random_examples(seed, n)
        want_x, want_y = reference_collate(examples)
        got = attempt(collate, [(list(t), list(m)) for t, m in examples])
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise Hint("return two things, x and y")
        x, y = int64_tensor(got[0], "x"), int64_tensor(got[1], "y")
        width = max(len(t) for t, _ in examples) - 1
        same_shape(x, want_x, f"x (examples, longest - 1 = {width})")
        same_shape(y, want_y, f"y (examples, longest - 1 = {width})")
        real = want_y != IGNORE_INDEX
        real |= torch.tensor([[t < len(ex) - 1 for t in range(width)] for ex, _ in examples])
        if not torch.equal(x[real], want_x[real]):
            row, t = first_difference(torch.where(real, x, 0), torch.where(real, want_x, 0))
            raise Hint(f"x row {row}, position {t}: x holds each example's tokens but its last, from the start")
        if not torch.equal(y, want_y):
            raise Hint(collate_hint(y, want_y, examples))
    return "two batches of random examples, against gptkit.data.ExampleBatches"


def raw_f1(generated: str, reference: str) -> float:
    """Token F1 on the words as they stand, without SQuAD's normalisation: the usual slip."""
    got, want = generated.split(), reference.split()
    same = sum((Counter(got) & Counter(want)).values())
    if not got or not want or same == 0:
        return float(got == want)
    return 2 * same / (len(got) + len(want))


@exercise("token F1")
def check_f1(f1):
    pairs = [
        ("November 30, 2031", "November 30, 2031"),
        ("the cat sat", "A cat sat down"),
        ("30 November 2031", "November 30, 2031"),
        ("Paris.", "paris"),
        ("the the cat", "cat cat"),
        ("yes yes yes", "yes"),
        ("", ""),
        ("no", ""),
        ("a dog", "the cat"),
    ]
    for generated, reference in pairs:
        want = token_f1(generated, reference)
        got = attempt(f1, generated, reference)
        if not isinstance(got, float | int | np.floating) or isinstance(got, bool):
            raise Hint(f"return a number between 0 and 1, not {type(got).__name__}")
        if not math.isclose(float(got), want, abs_tol=1e-6):
            unnormalised = math.isclose(float(got), raw_f1(generated, reference), abs_tol=1e-6)
            why = " (normalise both texts first: lowercase, no punctuation, no a/an/the)" if unnormalised else ""
            raise Hint(f"on ({generated!r}, {reference!r}) you give {float(got):.3f}, gptkit {want:.3f}{why}")
    return f"{len(pairs)} pairs, against gptkit.evaluate.token_f1"


# --- 10 preference tuning ---------------------------------------------------------------------
def random_pair_batch(seed: int, pairs: int = 4, width: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """x and y of `pairs` chosen rows then `pairs` rejected rows: a prompt, then a response (targets)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 64, (2 * pairs, width), generator=gen)
    y = torch.full_like(x, IGNORE_INDEX)
    for row in range(2 * pairs):
        start = int(torch.randint(1, width - 2, (1,), generator=gen))
        y[row, start:] = torch.randint(0, 64, (width - start,), generator=gen)
    return x, y


def dpo_hint(got: float, logps: tuple, beta: float) -> str:
    pc, pr, rc, rr = logps
    slips = {
        "multiply the log-ratio difference by beta": -F.logsigmoid((pc - rc) - (pr - rr)).mean(),
        "subtract the reference's log-probabilities (the reward is log π - log ref)": -F.logsigmoid(
            beta * (pc - pr)
        ).mean(),
        "chosen minus rejected, not rejected minus chosen": -F.logsigmoid(beta * ((pr - rr) - (pc - rc))).mean(),
        "take -log sigmoid of each pair's margin, then the mean": -F.logsigmoid(beta * ((pc - rc) - (pr - rr)).mean()),
        "return the mean over the pairs, not the sum": -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).sum(),
    }
    for fix, value in slips.items():
        if math.isclose(got, float(value), rel_tol=1e-4, abs_tol=1e-6):
            return f"you give {got:.5f}: {fix}"
    return f"you give {got:.5f}"


@exercise("the DPO loss")
def check_dpo_loss(dpo_loss):
    for seed, beta in ((0, 0.1), (1, 0.5), (2, 2.0)):
        policy, reference = tiny_gpt(seed), tiny_gpt(seed + 100)
        x, y = random_pair_batch(seed)
        ref = sequence_logps(reference, x, y)
        terms = Preference(beta=beta)(policy, (x, y, ref))
        want = float(terms.loss / terms.sums["count"])
        logps = (*sequence_logps(policy, x, y).chunk(2), *ref.chunk(2))
        got = attempt(dpo_loss, *(t.clone() for t in logps), beta)
        got = as_tensor(got, "the loss")
        if got.numel() != 1:
            raise Hint(f"return one number, the mean loss over the pairs, not shape {tuple(got.shape)}")
        if not math.isclose(float(got), want, rel_tol=1e-4, abs_tol=1e-6):
            raise Hint(f"beta {beta}: {dpo_hint(float(got), logps, beta)}, gptkit {want:.5f}")
    return "3 batches of pairs at 3 betas, against gptkit.objectives.Preference"


def ending_hint(got: tuple[float, float], logits: torch.Tensor, ids: torch.Tensor, n: int) -> str:
    logps = torch.log_softmax(logits.double(), dim=-1)
    unshifted = logps[-n:].gather(1, ids[-n:, None]).squeeze(1)
    raw = logits.double()[-n - 1 : -1].gather(1, ids[-n:, None]).squeeze(1)
    every = logps[:-1].gather(1, ids[1:, None]).squeeze(1)
    slips = {
        "position t's logits predict token t + 1: read the ending's log-probabilities one position earlier": unshifted,
        "turn the logits into log-probabilities first (log_softmax over the vocabulary)": raw,
        "score the ending's n tokens only, not the context's": every,
    }
    for fix, values in slips.items():
        if math.isclose(got[0], float(values.sum()), rel_tol=1e-4, abs_tol=1e-5):
            return fix
    return ""


@exercise("the score of an ending")
def check_ending_logps(ending_logps_fn):
    model = tiny_gpt(0, vocab_size=50257, n_embd=16, block_size=64)
    for seed in (0, 1):
        words = corpus_words(12, seed)
        question = Question(" ".join(words[:6]).strip(), ["".join(words[6:8]).strip(), words[8].strip()], 0)
        sums, lengths = ending_logps(model, [question])[0]
        for (ids, n), want_sum, length in zip(rows_of(question, 64), sums, lengths, strict=True):
            ids = torch.tensor(ids)
            logits = model(ids[None])[0][0]
            got = attempt(ending_logps_fn, logits.clone(), ids.clone(), n)
            if not isinstance(got, tuple | list) or len(got) != 2:
                raise Hint("return two numbers: the summed and the mean log-probability")
            got = (float(as_tensor(got[0], "the sum")), float(as_tensor(got[1], "the mean")))
            want = (float(want_sum), float(want_sum / length))
            if not math.isclose(got[0], want[0], rel_tol=1e-4, abs_tol=1e-5):
                fix = ending_hint(got, logits, ids, n)
                raise Hint(f"summed log-probability {got[0]:.4f}, gptkit {want[0]:.4f}" + (f": {fix}" if fix else ""))
            if not math.isclose(got[1], want[1], rel_tol=1e-4, abs_tol=1e-5):
                raise Hint(f"mean {got[1]:.4f}, gptkit {want[1]:.4f}: divide the sum by the ending's {n} tokens")
    return "4 endings of random text, against gptkit.choices.ending_logps"


# --- 09 classification ----------------------------------------------------------------------------
def random_attention_mask(seed: int, rows: int = 6, width: int = 9) -> tuple[torch.Tensor, np.ndarray]:
    """A right-padded batch's attention mask (1: a real token, 0: padding) and its rows' lengths;
    one row is full (no padding at all) and one holds a single token."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, width, size=rows)
    lengths[rng.integers(rows)], lengths[(rng.integers(rows) + 1) % rows] = width, 1
    mask = torch.from_numpy((np.arange(width)[None] < lengths[:, None]).astype(np.int64))
    return mask, lengths


def last_index_hint(got: torch.Tensor, want: torch.Tensor, lengths: np.ndarray, width: int) -> str:
    row = int((got != want).nonzero()[0, 0])
    n, said = int(lengths[row]), int(got[row])
    holds = f"row {row} holds {n} real token{'s' if n > 1 else ''}"
    if torch.equal(got, want + 1):
        return f"{holds}: the last is at index {n - 1}, not {said} (indices start at 0)"
    if said == width - 1:
        return f"{holds} of {width}: index {said} is padding; read the last *real* token"
    if n == width:
        return f"row {row} has no padding at all: its last real token is the last position, {width - 1}, not {said}"
    return f"{holds}: you give {said}, gptkit {n - 1}"


@exercise("the last real token's index")
def check_last_index(last_index):
    for seed in (0, 1, 2):
        mask, lengths = random_attention_mask(seed)
        want = torch.from_numpy(lengths - 1)  # as gptkit.data.LabelledBatches and gptkit.classify give `last`
        got = int64_tensor(attempt(last_index, mask.clone()), "the indices")
        same_shape(got, want, "the indices (one per row)")
        if not torch.equal(got, want):
            raise Hint(last_index_hint(got, want, lengths, mask.size(1)))
    return "3 right-padded batches, against the `last` gptkit.data.LabelledBatches gives the model"


def tiny_classifier(seed: int, n_labels: int = 4) -> GPT:
    model = tiny_gpt(seed)
    model.add_classifier(n_labels)
    return model.eval()


def classification_hint(got: tuple[float, float], logits: torch.Tensor, labels: torch.Tensor, want: tuple) -> str:
    loss, accuracy = got
    if not math.isclose(loss, want[0], rel_tol=1e-4, abs_tol=1e-6):
        slips = {
            "cross_entropy takes the logits: it applies the softmax itself": F.cross_entropy(
                logits.softmax(-1), labels
            ),
            "the mean over the examples, not the sum": F.cross_entropy(logits, labels, reduction="sum"),
            "the loss is -log p(label), with log_softmax, not the logit itself": -logits.gather(
                1, labels[:, None]
            ).mean(),
        }
        fix = next((f": {fix}" for fix, v in slips.items() if math.isclose(loss, float(v), rel_tol=1e-4)), "")
        return f"the loss: you give {loss:.5f}, gptkit {want[0]:.5f}{fix}"
    correct = (logits.argmax(-1) == labels).float()
    if math.isclose(accuracy, float(correct.sum()), abs_tol=1e-6):
        return f"the accuracy: you give {accuracy:g}, a count; gptkit {want[1]:.4f}, a fraction of the examples"
    return f"the accuracy: you give {accuracy:.4f}, gptkit {want[1]:.4f} (the predicted label is the logits' argmax)"


@exercise("the classification loss and accuracy")
def check_classification_loss(loss_and_accuracy):
    for seed, (rows, width) in enumerate(((8, 7), (5, 11), (12, 4))):
        model, objective = tiny_classifier(seed), Classification()
        mask, lengths = random_attention_mask(seed, rows, width)
        gen = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 64, mask.shape, generator=gen)
        labels = torch.randint(0, model.config.n_labels, (rows,), generator=gen)
        last = torch.from_numpy(lengths - 1)
        terms = objective(model, (x, last, labels))
        metrics = objective.metrics({k: float(v) for k, v in terms.sums.items()})
        want = (metrics["loss"], metrics["accuracy"])
        logits = model(x, last=last)[0]
        got = attempt(loss_and_accuracy, logits.clone(), labels.clone())
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise Hint("return two numbers: the mean loss and the accuracy")
        got = (float(as_tensor(got[0], "the loss")), float(as_tensor(got[1], "the accuracy")))
        same_loss = math.isclose(got[0], want[0], rel_tol=1e-4, abs_tol=1e-6)
        if not (same_loss and math.isclose(got[1], want[1], abs_tol=1e-6)):
            raise Hint(classification_hint(got, logits, labels, want))
    return "3 batches of a tiny classifier, against gptkit.objectives.Classification"


def random_predictions(seed: int, labels: list[str], n: int = 40) -> tuple[list[str], list[str]]:
    """True and predicted labels, mostly right; the last label is never predicted (precision 0/0)."""
    rng = np.random.default_rng(seed)
    truth = list(rng.choice(labels, size=n))
    guess = [t if rng.random() < 0.6 else str(rng.choice(labels[:-1])) for t in truth]
    return [str(t) for t in truth], [labels[0] if g == labels[-1] else str(g) for g in guess]


def scores_hint(name: str, got: tuple, want: dict, truth: list[str], guess: list[str]) -> str:
    precision, recall, f1 = got
    if math.isclose(precision, want["recall"]) and math.isclose(recall, want["precision"]) and precision != recall:
        return f"{name!r}: precision and recall are swapped (precision: of those predicted {name!r}, how many are)"
    if not math.isclose(precision, want["precision"], abs_tol=1e-9):
        return f"{name!r}: precision {precision:.4f}, gptkit {want['precision']:.4f}"
    if not math.isclose(recall, want["recall"], abs_tol=1e-9):
        return f"{name!r}: recall {recall:.4f}, gptkit {want['recall']:.4f}"
    if math.isclose(f1, (precision + recall) / 2):
        return f"{name!r}: F1 is the harmonic mean 2PR / (P + R), not the average of precision and recall"
    return f"{name!r}: F1 {f1:.4f}, gptkit {want['f1']:.4f}"


@exercise("per-label precision, recall and F1")
def check_label_scores(label_scores):
    labels = ["Coriolanus", "Romeo and Juliet", "The Winter's Tale", "Measure for Measure"]
    for seed in (0, 1):
        truth, guess = random_predictions(seed, labels)
        records = [{"label": t, "predicted": g} for t, g in zip(truth, guess, strict=True)]
        want = summarize(records, labels, labels[0])["per_label"]
        got = attempt(label_scores, list(truth), list(guess), list(labels))
        if not isinstance(got, dict) or set(got) != set(labels):
            raise Hint(f"return a dict with one entry per label, {short(labels, 2)}")
        for name in labels:
            value = got[name]
            if not isinstance(value, tuple | list) or len(value) != 3:
                raise Hint(f"{name!r}: give three numbers (precision, recall, F1), not {value!r}")
            try:
                value = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                raise Hint(f"{name!r}: give three numbers (precision, recall, F1), not {value!r}") from None
            if any(math.isnan(v) for v in value) and not (truth.count(name) and guess.count(name)):
                raise Hint(f"{name!r} is never predicted: count its precision (0 of 0) as 0, as gptkit does")
            wanted = (want[name]["precision"], want[name]["recall"], want[name]["f1"])
            if not all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(value, wanted, strict=True)):
                raise Hint(scores_hint(name, value, want[name], truth, guess))
    return "2 sets of predictions, against gptkit.classify.summarize"
