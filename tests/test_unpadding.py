"""Unpadding: the blocks computing a right-padded batch's real tokens only give the padded pass's
numbers, and transformers' (computed here from the same weights), for classifiers and examples."""

import pytest
import torch
from torch.nn import functional as F

from gptkit import objectives, unpadding
from gptkit.model import GPT, IGNORE_INDEX

PAD = 50256
LENGTHS = [1, 3, 57, 12, 30, 2]  # very different: 105 real positions of 342
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # HF's transposed


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """A random GPT2ForSequenceClassification and a random GPT2LMHeadModel, saved as HF saves them."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("unpadding-hf")
    size = dict(n_layer=3, n_head=4, n_embd=64, n_positions=128, pad_token_id=PAD)
    torch.manual_seed(0)
    GPT2ForSequenceClassification(GPT2Config(**size, num_labels=4)).save_pretrained(root / "cls")
    GPT2LMHeadModel(GPT2Config(**size)).save_pretrained(root / "lm")
    return root


def right_padded(lengths: list[int], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, PAD, (len(lengths), max(lengths)), generator=gen)
    ids[torch.arange(max(lengths)) >= torch.tensor(lengths)[:, None]] = PAD
    return ids


def hf_model(path, kind):
    import transformers

    model = getattr(transformers, kind).from_pretrained(path, attn_implementation="sdpa").eval()
    return model.float()


def grads(model: torch.nn.Module, hf_names: bool = False) -> dict[str, torch.Tensor]:
    """Every parameter's gradient under gptkit's names (HF's Conv1D weights transposed to nn.Linear's)."""
    out = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        name = name.removeprefix("transformer.")
        out[name] = p.grad.t() if hf_names and name.endswith(CONV1D) else p.grad
    return out


def assert_grads_equal(ours: dict, theirs: dict) -> None:
    assert set(theirs) <= set(ours) and len(theirs) > 10
    for name, g in theirs.items():
        torch.testing.assert_close(ours[name], g, atol=1e-5, rtol=1e-4, msg=name)


def ours_pass(path, fn, grad_checkpoint: bool = False) -> tuple[torch.Tensor, dict]:
    model = GPT.from_pretrained(str(path)).train()  # dropout 0: train mode computes the same numbers
    model.grad_checkpoint = grad_checkpoint
    out = fn(model)
    out[0].backward()
    return out, grads(model)


def test_a_classifier_unpadded_equals_padded_and_transformers(hf_dirs):
    ids, lengths = right_padded(LENGTHS), torch.tensor(LENGTHS)
    labels = torch.tensor([0, 3, 1, 2, 1, 0])
    rows = unpadding.rows_to_compute(lengths, ids.size(1))
    assert rows is not None and len(rows.flat) == sum(LENGTHS)
    hf = hf_model(hf_dirs / "cls", "GPT2ForSequenceClassification")
    out = hf(ids, attention_mask=(ids != PAD).long(), labels=labels)
    out.loss.backward()
    theirs = grads(hf, hf_names=True)
    for r in (None, rows):
        (loss, logits), ours = ours_pass(hf_dirs / "cls", lambda m, r=r: m(ids, labels, last=lengths - 1, rows=r)[::-1])
        assert loss.item() == pytest.approx(out.loss.item(), abs=1e-5)
        torch.testing.assert_close(logits.softmax(-1), out.logits.softmax(-1), atol=1e-5, rtol=0)
        torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=1e-5)
        assert_grads_equal(ours, theirs)  # every block, the embeddings and the head: all train here


def example_targets(ids: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Next-token targets of right-padded examples whose first third (the prompt) is masked."""
    y = torch.full_like(ids, IGNORE_INDEX)
    for r, n in enumerate(lengths):
        y[r, n // 3 : n - 1] = ids[r, n // 3 + 1 : n]
    return y


def test_an_example_batch_unpadded_equals_padded_and_transformers(hf_dirs):
    ids = right_padded(LENGTHS, seed=1)
    x, y = ids[:, :-1], example_targets(ids, LENGTHS)[:, :-1]
    assert unpadding.target_lengths(y).tolist() == [max(n - 1, 0) for n in LENGTHS]  # up to the last target
    hf = hf_model(hf_dirs / "lm", "GPT2LMHeadModel")
    logits = hf(x, attention_mask=(x != PAD).long()).logits
    keep = y != IGNORE_INDEX
    want = F.cross_entropy(logits[keep], y[keep], reduction="sum")
    want.backward()
    theirs = grads(hf, hf_names=True)
    rows = unpadding.rows_to_compute(unpadding.target_lengths(y), y.size(1))
    assert rows is not None
    for r, recompute in ((None, False), (rows, False), (rows, True)):
        (loss,), ours = ours_pass(hf_dirs / "lm", lambda m, r=r: (m(x, y, reduction="sum", rows=r)[1],), recompute)
        assert loss.item() == pytest.approx(want.item(), rel=1e-6)
        assert_grads_equal(ours, theirs)


def test_objectives_unpad_the_same_numbers(hf_dirs):
    """The objectives gptkit.train runs (with unpad) against the padded ones: LM, DPO log-probs, classifier."""
    ids = right_padded(LENGTHS, seed=2)
    x, y = ids[:, :-1], example_targets(ids, LENGTHS)[:, :-1]
    lm = GPT.from_pretrained(str(hf_dirs / "lm")).eval()
    with torch.no_grad():
        padded, unpadded = (objectives.LanguageModelling(u)(lm, (x, y)).loss for u in (False, True))
        assert unpadded.item() == pytest.approx(padded.item(), rel=1e-6)
        logps = [objectives.sequence_logps(lm, x, y, unpad=u) for u in (False, True)]
        torch.testing.assert_close(logps[1], logps[0], atol=1e-4, rtol=1e-6)
        cls = GPT.from_pretrained(str(hf_dirs / "cls")).eval()
        batch = (ids, torch.tensor(LENGTHS) - 1, torch.tensor([0, 1, 2, 3, 0, 1]))
        terms = [objectives.Classification(unpad=u)(cls, batch) for u in (False, True)]
        assert terms[1].loss.item() == pytest.approx(terms[0].loss.item(), rel=1e-6)


def test_objectives_count_the_positions_they_compute(hf_dirs):
    """What tokens/s, MFU and tokens_seen add up: unpadded, the real tokens (each row up to what it
    needs) and the squares of their rows' lengths for attention; padded, every position."""
    ids = right_padded(LENGTHS, seed=3)
    x, y = ids[:, :-1], example_targets(ids, LENGTHS)[:, :-1]
    B, T = x.shape
    need = [max(n - 1, 0) for n in LENGTHS]  # an example row reads up to its last target
    lm = GPT.from_pretrained(str(hf_dirs / "lm")).eval()
    with torch.no_grad():
        work = [objectives.LanguageModelling(u)(lm, (x, y)).work for u in (False, True)]
        assert work[0] == (sum(need), B * T, B * T * T, 0)
        assert work[1] == (sum(need), sum(need), sum(n * n for n in need), 0)
        stream = objectives.LanguageModelling(unpad=True)(lm, (x, ids[:, 1:])).work  # every position a target
        assert stream == (B * T, B * T, B * T * T, 0)
        # DPO: the rows as 3 pairs; a reference computed in the step is a forward pass more
        ref = objectives.AdaptersOff(lm, unpad=True)
        computed_ahead = torch.zeros(B)
        for batch, forward_only in (((x, y, computed_ahead), 0), ((x, y, None), sum(need))):
            terms = objectives.Preference(reference_model=ref, unpad=True)(lm, batch)
            assert terms.work == (sum(need), sum(need), sum(n * n for n in need), forward_only)
        cls = GPT.from_pretrained(str(hf_dirs / "cls")).eval()
        batch = (ids, torch.tensor(LENGTHS) - 1, torch.tensor([0, 1, 2, 3, 0, 1]))
        work = [objectives.Classification(unpad=u)(cls, batch).work for u in (False, True)]
        width = ids.size(1)
        assert work[0] == (sum(LENGTHS), B * width, B * width * width, 0)
        assert work[1] == (sum(LENGTHS), sum(LENGTHS), sum(n * n for n in LENGTHS), 0)


def test_a_batch_with_little_padding_is_computed_padded():
    """The rule: unpad only where padding is more than 1 - MAX_REAL_FRACTION of the positions."""
    assert unpadding.rows_to_compute(torch.tensor([64, 64, 64]), 64) is None  # a stream batch
    assert unpadding.rows_to_compute(torch.tensor([64, 62, 63]), 64) is None  # 98% real
    rows = unpadding.rows_to_compute(torch.tensor([64, 10, 63]), 64)  # 71% real
    assert rows is not None
    t = torch.arange(3 * 64 * 2).view(3, 64, 2)
    packed = rows.unpad(t)
    assert packed.shape == (137, 2) and torch.equal(packed[64:74], t[1, :10])
    assert torch.equal(rows.pad(packed)[2, :63], t[2, :63]) and not rows.pad(packed)[1, 10:].any()
    assert rows.index(torch.tensor([63, 9, 0])).tolist() == [63, 73, 74]
