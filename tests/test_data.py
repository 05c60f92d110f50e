import json
import shutil

import numpy as np
import pytest
import torch

from conftest import ROOT, SHAKESPEARE, assert_user_error, run_cli, run_cli_in_process
from gptkit.data import Batches
from gptkit.errors import GptkitError
from gptkit.prepare import pick_val_documents, prepare, split_for_threads
from gptkit.tokenizer import EOT_ID, get_encoding


def test_shakespeare_prepare_matches_nanogpt(tmp_path):
    # The real script, on a copy outside the checkout, run from another folder.
    copy = tmp_path / "shakespeare"
    copy.mkdir()
    for name in ("input.txt", "prepare.py"):
        shutil.copy(SHAKESPEARE / name, copy / name)
    result = run_cli(str(copy / "prepare.py"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train has 301,966 tokens" in result.stdout
    assert "val has 36,059 tokens" in result.stdout
    train = np.fromfile(copy / "train.bin", dtype=np.uint16)
    val = np.fromfile(copy / "val.bin", dtype=np.uint16)
    assert (len(train), len(val)) == (301_966, 36_059)
    # nanoGPT's split: 90/10 by characters, each side encoded on its own.
    text = (SHAKESPEARE / "input.txt").read_text(encoding="utf-8")
    n = len(text)
    enc = get_encoding()
    assert train.tolist() == enc.encode_ordinary(text[: int(n * 0.9)])
    assert val.tolist() == enc.encode_ordinary(text[int(n * 0.9) :])
    meta = json.loads((copy / "meta.json").read_text())
    assert meta["train_tokens"] == 301_966 and meta["val_tokens"] == 36_059
    assert meta["vocab_size"] == 50257 and meta["tokenizer"] == "gpt2" and meta["dtype"] == "uint16"
    assert meta["source_sha256"] == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def test_bundled_corpus_is_tiny_shakespeare():
    import hashlib

    data = (SHAKESPEARE / "input.txt").read_bytes()
    assert len(data) == 1_115_394
    assert hashlib.sha256(data).hexdigest() == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


@pytest.mark.parametrize("piece_chars", [1, 7, 100, 5000])
def test_parallel_pieces_tokenize_like_the_whole(piece_chars):
    text = (SHAKESPEARE / "input.txt").read_text(encoding="utf-8")[:20_000] + "\n\n  odd\n \n'tis\nend"
    pieces, tail = split_for_threads(text, piece_chars)
    assert "".join(pieces) + tail == text
    enc = get_encoding()
    ids = [t for p in pieces + [tail] for t in enc.encode_ordinary(p)]
    assert ids == enc.encode_ordinary(text)
    if piece_chars <= 100:
        assert len(pieces) > 10


def test_prepare_large_file_in_bounded_pieces(tmp_path, monkeypatch):
    """Reading in small chunks (as for a huge file) gives exactly the one-shot tokens."""
    import gptkit.prepare_text as prep

    monkeypatch.setattr(prep, "READ_CHARS", 4096)
    monkeypatch.setattr(prep, "PIECE_CHARS", 1000)
    text = (SHAKESPEARE / "input.txt").read_text(encoding="utf-8")[:150_000] + "ünïcödé ✓\n"
    src = tmp_path / "book.txt"
    src.write_text(text, encoding="utf-8")
    meta = prepare(src, tmp_path / "out", val_fraction=0.2, progress=False)
    n_train = int(len(text) * 0.8)
    enc = get_encoding()
    assert np.fromfile(tmp_path / "out/train.bin", dtype=np.uint16).tolist() == enc.encode_ordinary(text[:n_train])
    assert np.fromfile(tmp_path / "out/val.bin", dtype=np.uint16).tolist() == enc.encode_ordinary(text[n_train:])
    assert meta["val_fraction"] == 0.2


def test_prepare_folder_of_documents(tmp_path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    texts = {"a.txt": "First document. " * 300, "b.txt": "Second one here. " * 300, "sub/c.txt": "Third. " * 400}
    for name, text in texts.items():
        (docs / name).write_text(text, encoding="utf-8")
    (docs / "ignored.md").write_text("not a txt file")
    result = run_cli(
        "-m",
        "gptkit.prepare",
        str(docs),
        "--name",
        "mydocs",
        "--out-root",
        str(tmp_path / "data"),
        "--val-fraction",
        "0.3",
        "--block-size",
        "64",
    )
    assert result.returncode == 0, result.stderr
    enc = get_encoding()
    train = np.fromfile(tmp_path / "data/mydocs/train.bin", dtype=np.uint16).tolist()
    val = np.fromfile(tmp_path / "data/mydocs/val.bin", dtype=np.uint16).tolist()
    # No set of these three documents comes within 10% of a 30% share (c alone is 22%), so the
    # last 30% of the characters of each document validates; every piece ends with EOT.
    want_train, want_val = [], []
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        text = texts[name]
        cut = int(len(text) * 0.7)
        want_train += enc.encode_ordinary(text[:cut]) + [EOT_ID]
        want_val += enc.encode_ordinary(text[cut:]) + [EOT_ID]
    assert train == want_train and val == want_val
    meta = json.loads((tmp_path / "data/mydocs/meta.json").read_text())
    assert meta["train_tokens"] == len(train) and meta["val_tokens"] == len(val)
    assert meta["split"] == "tail of each document"
    assert meta["val_share"] == pytest.approx(len(val) / (len(train) + len(val)), abs=1e-6)
    assert abs(meta["val_share"] - 0.3) < 0.03
    assert f"train has {len(train):,} tokens" in result.stdout
    assert f"val share {meta['val_share']:.1%} of the tokens (asked 30.0%" in result.stdout


def test_folder_val_share_is_close_to_the_asked_share(tmp_path):
    """The issue's folder: six plays, the last one large; whole documents alone gave 20% for 10%."""
    play = (SHAKESPEARE / "input.txt").read_text(encoding="utf-8")
    plays = tmp_path / "plays"
    plays.mkdir()
    for i, size in enumerate([20_000, 15_000, 25_000, 18_000, 22_000, 30_000]):
        (plays / f"play{i}.txt").write_text(play[i * 30_000 : i * 30_000 + size], encoding="utf-8")
    meta = prepare(plays, tmp_path / "six", block_size=64, progress=False)
    assert meta["split"] == "tail of each document"
    assert abs(meta["val_share"] - 0.1) <= 0.01

    # Many documents: whole ones validate (never cut), and their share is within 10% of the asked.
    many = tmp_path / "many"
    many.mkdir()
    rng = np.random.default_rng(0)
    sizes = rng.integers(1_000, 12_000, size=30)
    for i, size in enumerate(sizes):
        (many / f"doc{i:02d}.txt").write_text(play[i * 3_000 : i * 3_000 + size], encoding="utf-8")
    meta = prepare(many, tmp_path / "many-out", block_size=64, progress=False)
    assert meta["split"] == "documents"
    assert abs(meta["val_share"] - 0.1) <= 0.011  # bytes pick the documents; tokens follow closely
    picked = pick_val_documents([int(s) for s in sizes], 0.1)
    enc = get_encoding()
    want = []
    for i in picked:
        want += enc.encode_ordinary((many / f"doc{i:02d}.txt").read_text(encoding="utf-8")) + [EOT_ID]
    assert np.fromfile(tmp_path / "many-out/val.bin", dtype=np.uint16).tolist() == want


def test_pick_val_documents():
    assert pick_val_documents([100] * 10, 0.2) == [8, 9]
    assert pick_val_documents([100, 100, 100, 100, 400], 0.1) is None  # the last one alone is 50%
    assert pick_val_documents([500, 100, 30, 60, 300], 0.1) == [2, 3]  # skips what would overshoot
    assert pick_val_documents([10, 10], 0.9) is None  # the first document always trains


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"caf\xe9 in latin-1" * 10, "not UTF-8"),
        (b"too short for a block", "fewer than one block"),
    ],
)
def test_prepare_bad_input_is_one_clear_line(tmp_path, content, message):
    src = tmp_path / "in.txt"
    src.write_bytes(content)
    out = tmp_path / "data" / "x"
    out.mkdir(parents=True)
    (out / "train.bin").write_bytes(b"keep me")
    result = run_cli_in_process("-m", "gptkit.prepare", str(src), "--name", "x", "--out-root", str(tmp_path / "data"))
    assert_user_error(result, message)
    assert (out / "train.bin").read_bytes() == b"keep me"  # the old data survives a failed run
    assert not list(out.glob("*.tmp"))


def test_prepare_missing_path_and_bad_name(tmp_path):
    result = run_cli_in_process("-m", "gptkit.prepare", str(tmp_path / "nope.txt"), "--name", "x")
    assert_user_error(result, "does not exist")
    result = run_cli_in_process("-m", "gptkit.prepare", str(SHAKESPEARE / "input.txt"), "--name", "../escape")
    assert_user_error(result, "--name")


def test_batches_shapes_and_shift(shakespeare_bins):
    data = Batches(shakespeare_bins, "train", batch_size=4, block_size=32, seed=1)
    x, y = data.sample()
    assert x.shape == y.shape == (4, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    tokens = np.fromfile(shakespeare_bins / "train.bin", dtype=np.uint16)
    offsets = Batches(shakespeare_bins, "train", batch_size=4, block_size=32, seed=1).draw_offsets(4)
    for row, start in zip(x, offsets, strict=True):
        assert row.tolist() == tokens[start : start + 32].tolist()


def test_batches_are_seeded_and_resumable(shakespeare_bins):
    a = Batches(shakespeare_bins, "train", 2, 16, seed=7)
    b = Batches(shakespeare_bins, "train", 2, 16, seed=7)
    assert torch.equal(a.sample()[0], b.sample()[0])
    state = a.state_dict()
    next_a = a.sample()[0]
    c = Batches(shakespeare_bins, "train", 2, 16, seed=999)
    c.load_state_dict(state)
    assert torch.equal(c.sample()[0], next_a)
    assert not torch.equal(Batches(shakespeare_bins, "train", 2, 16, seed=8).sample()[0], b.sample()[0])


def test_eval_batches_are_a_fixed_deterministic_pass(shakespeare_bins):
    data = Batches(shakespeare_bins, "val", 3, 64, seed=1)
    first = [x for x, _ in data.eval_batches(5)]
    data.sample()  # training draws must not move the eval windows
    second = [x for x, _ in data.eval_batches(5)]
    assert len(first) == 5 and all(torch.equal(p, q) for p, q in zip(first, second, strict=True))
    offsets = data.eval_offsets(5)
    assert offsets[0] == 0 and offsets[-1] == data.num_tokens - 65  # spans the whole split
    # DDP ranks split the pass between them: together they read each batch exactly once
    shares = [[x for x, _ in data.eval_batches(5, rank, 2)] for rank in (0, 1)]
    assert [len(s) for s in shares] == [3, 2]
    interleaved = [shares[i % 2][i // 2] for i in range(5)]
    assert all(torch.equal(p, q) for p, q in zip(first, interleaved, strict=True))


def test_batches_errors(tmp_path, shakespeare_bins):
    with pytest.raises(GptkitError, match="prepare.py"):
        Batches(tmp_path / "shakespeare", "train", 1, 8)
    with pytest.raises(GptkitError, match="fewer than block_size"):
        Batches(shakespeare_bins, "val", 1, 40_000)
    bad = tmp_path / "bad"
    bad.mkdir()
    np.array([1, 2, 60000, 3] * 10, dtype=np.uint16).tofile(bad / "train.bin")
    with pytest.raises(GptkitError, match="token id 60000"):
        Batches(bad, "train", 1, 8, vocab_size=50257)


def test_missing_corpus_download_fails_clearly_offline(tmp_path):
    """Without input.txt the script downloads it; with no network that is one clear error."""
    (tmp_path / "data" / "shakespeare").mkdir(parents=True)
    (tmp_path / "data" / "shakespeare" / "prepare.py").write_text((SHAKESPEARE / "prepare.py").read_text())
    (tmp_path / "gptkit").symlink_to(ROOT / "gptkit")
    # A proxy on a closed local port: the request fails at once, as it does offline.
    offline = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    result = run_cli(str(tmp_path / "data/shakespeare/prepare.py"), cwd=tmp_path, env=offline)
    assert_user_error(result, "input.txt is missing", "char-rnn", "connect to the internet once")
    assert not (tmp_path / "data/shakespeare/input.txt").exists()
    assert not (tmp_path / "data/shakespeare/train.bin").exists()


# --- example datasets ---------------------------------------------------------------------------
EXAMPLE_ROWS = [
    {"instruction": "Add the numbers.", "input": "2 3", "output": "5"},
    {"instruction": "Say hi.", "output": "hi there, how are you today?"},
    {"instruction": "Reverse the word.", "input": "stop", "output": "pots"},
    {"instruction": "Name a colour.", "input": "", "output": "teal"},
    {"instruction": "Count to five.", "output": "one two three four five"},
    {"instruction": "Spell it.", "input": "cat", "output": "c a t"},
]


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory):
    """Six Alpaca examples of different lengths, every one in train and in val."""
    root = tmp_path_factory.mktemp("examples")
    src = root / "ex.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in EXAMPLE_ROWS))
    prepare(src, root / "ex", val=src)
    return root / "ex"


def example_ids(data_dir, split, i):
    from gptkit.data import open_examples

    ex = open_examples(data_dir, split)
    a, b = ex.offsets[i], ex.offsets[i + 1]
    return ex.tokens[a:b].astype(np.int64), ex.mask[a:b].astype(bool)


def test_example_batches_pad_right_and_mask_the_prompt(example_dir):
    from gptkit.data import ExampleBatches

    for mask_prompt in (True, False):
        data = ExampleBatches(example_dir, "train", batch_size=3, block_size=128, mask_prompt=mask_prompt)
        indices = np.array([0, 1, 3])
        x, y = data.batch(indices)
        lengths = [len(example_ids(example_dir, "train", i)[0]) for i in indices]
        assert x.shape == y.shape == (3, max(lengths) - 1) and x.dtype == y.dtype == torch.int64
        for row, (i, n) in enumerate(zip(indices, lengths, strict=True)):
            ids, response = example_ids(example_dir, "train", i)
            assert x[row, : n - 1].tolist() == ids[:-1].tolist()
            want = np.where(response[1:] | (not mask_prompt), ids[1:], -1)
            assert y[row, : n - 1].tolist() == want.tolist()
            assert (y[row, n - 1 :] == -1).all()  # padding is never a target
            assert y[row, n - 2] == EOT_ID  # the end of the response stays a target: the model learns to stop
        assert data.num_targets(indices) == int((y != -1).sum())


def test_examples_longer_than_the_block_are_cut_and_counted(example_dir):
    from gptkit.data import ExampleBatches

    lengths = np.array([len(example_ids(example_dir, "train", i)[0]) for i in range(len(EXAMPLE_ROWS))])
    block = int(np.sort(lengths)[2])  # cuts the 3 longest (those longer than block + 1)
    data = ExampleBatches(example_dir, "train", batch_size=6, block_size=block, mask_prompt=False)
    assert data.num_cut == int((lengths > block + 1).sum()) == 3
    x, y = data.batch(np.arange(6))
    assert x.shape == (6, block)
    longest = int(lengths.argmax())
    ids, _ = example_ids(example_dir, "train", longest)
    assert x[longest].tolist() == ids[:block].tolist() and y[longest].tolist() == ids[1 : block + 1].tolist()
    talky = 1  # the longest response: cut 3 tokens short of its end
    cut_in_response = ExampleBatches(example_dir, "train", batch_size=6, block_size=int(lengths[talky]) - 4)
    x, y = cut_in_response.batch(np.arange(6))
    assert cut_in_response.num_cut >= 1 and cut_in_response.num_targets(np.arange(6)) == int((y != -1).sum())
    assert (y[talky] != -1).sum() == example_ids(example_dir, "train", talky)[1].sum() - 3
    with pytest.raises(GptkitError, match="every example of .* is longer than block_size"):
        ExampleBatches(example_dir, "train", batch_size=2, block_size=int(lengths.min()) - 2)


def test_examples_are_drawn_without_replacement_reshuffled_each_epoch_and_resume_exactly(example_dir):
    from gptkit.data import ExampleBatches

    data = ExampleBatches(example_dir, "train", batch_size=4, block_size=128, seed=5)
    epochs = [data.draw_examples(6) for _ in range(3)]
    assert all(sorted(e.tolist()) == list(range(6)) for e in epochs)  # each epoch: every example once
    assert len({tuple(e) for e in epochs}) == 3 and data.epoch == 3 and data.epochs_done == 3.0
    data.draw_examples(4)  # into an epoch: 4 of 6 drawn
    assert data.epochs_done == pytest.approx(3 + 4 / 6)
    state = data.state_dict()
    ahead = [data.draw_examples(4) for _ in range(4)]  # across epoch ends
    resumed = ExampleBatches(example_dir, "train", batch_size=4, block_size=128, seed=999)
    resumed.load_state_dict(state)
    assert all(np.array_equal(a, b) for a, b in zip(ahead, [resumed.draw_examples(4) for _ in range(4)], strict=True))
    other = ExampleBatches(example_dir, "train", batch_size=4, block_size=128, seed=6)
    assert not np.array_equal(other.draw_examples(6), epochs[0])


def tiny_gpt(seed=0):
    from gptkit.model import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=128, vocab_size=50257, n_layer=2, n_head=2, n_embd=16))


def step_gradient(model, data, step, world_size=1):
    """A step's gradient as the training loop computes it: each micro-batch's summed loss over
    the step's target count (times world_size, as DDP averages the processes' gradients)."""
    model.zero_grad()
    for indices in step.micro_batches:
        x, y = data.batch(indices)
        _, loss = model(x, y, reduction="sum")
        (loss * world_size / step.num_targets).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_every_token_weighs_the_same_across_micro_batches_and_processes(example_dir):
    """4 micro-batches of 1 = 1 of 4 = 2 processes of 2 x 1, up to float rounding; a mean of
    per-micro-batch means (what a stream loop does) weighs short examples more, and differs."""
    from gptkit.data import ExampleBatches

    model = tiny_gpt()

    def fresh(batch_size):
        return ExampleBatches(example_dir, "train", batch_size=batch_size, block_size=128, seed=3)

    one_of_4 = fresh(4)
    whole = one_of_4.draw_step(1)
    g_whole = step_gradient(model, one_of_4, whole)
    four_of_1 = fresh(1)
    step = four_of_1.draw_step(4)
    assert sorted(np.concatenate(step.micro_batches).tolist()) == sorted(whole.micro_batches[0].tolist())
    assert step.num_targets == whole.num_targets
    torch.testing.assert_close(step_gradient(model, four_of_1, step), g_whole, rtol=1e-4, atol=1e-7)

    per_rank = []
    for rank in range(2):
        data = fresh(1)
        per_rank.append(step_gradient(model, data, data.draw_step(2, rank=rank, world_size=2), world_size=2))
    torch.testing.assert_close((per_rank[0] + per_rank[1]) / 2, g_whole, rtol=1e-4, atol=1e-7)  # DDP's average

    model.zero_grad()
    for indices in step.micro_batches:
        _, loss = model(*four_of_1.batch(indices))
        (loss / 4).backward()
    naive = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert not torch.allclose(naive, g_whole, rtol=1e-2)


def test_eval_is_a_fixed_pass_in_file_order(example_dir):
    from gptkit.data import ExampleBatches

    data = ExampleBatches(example_dir, "val", batch_size=4, block_size=128)
    assert [c.tolist() for c in data.eval_indices()] == [[0, 1, 2, 3], [4, 5]]
    assert [c.tolist() for c in data.eval_indices(1)] == [[0, 1, 2, 3]]
    first = [y for _, y in data.eval_batches()]
    data.draw_examples(5)  # training draws do not move the evaluation
    assert all(torch.equal(a, b) for a, b in zip(first, [y for _, y in data.eval_batches()], strict=True))
    shares = [[y for _, y in data.eval_batches(rank=r, world_size=2)] for r in (0, 1)]
    assert [len(s) for s in shares] == [1, 1] and torch.equal(shares[1][0], first[1])


def test_example_val_loss_equals_transformers_on_the_response_tokens(example_dir, tiny_hf_dir):
    """The token-weighted val loss over response tokens, computed by transformers on its own
    padded batch (-100 on prompt and pad tokens), is gptkit's loss on the same examples."""
    from transformers import GPT2LMHeadModel

    from gptkit.data import ExampleBatches
    from gptkit.model import GPT

    data = ExampleBatches(example_dir, "val", batch_size=4, block_size=128)
    model = GPT.from_pretrained(tiny_hf_dir).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in data.eval_batches():  # two micro-batches of different widths
            _, loss = model(x, y, reduction="sum")
            total, count = total + loss.item(), count + int((y != -1).sum())
    ours = total / count

    rows = [example_ids(example_dir, "val", i) for i in range(len(EXAMPLE_ROWS))]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for r, (ids, response) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.from_numpy(ids)
        attention[r, : len(ids)] = 1
        labels[r, : len(ids)] = torch.from_numpy(np.where(response, ids, -100))
    hf = GPT2LMHeadModel.from_pretrained(tiny_hf_dir).eval()
    with torch.no_grad():
        theirs = hf(input_ids=input_ids, attention_mask=attention, labels=labels).loss.item()
    assert count == int((labels[:, 1:] != -100).sum())
    assert ours == pytest.approx(theirs, abs=1e-5)
