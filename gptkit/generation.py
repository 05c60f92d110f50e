"""Batched generation from prompts of different lengths: left padding that changes no token.

Prompts of different lengths share a batch by padding each on the left to the longest. A row
then continues exactly as it would alone: no position attends to its padding, and its positions
count from its first real token. `gptkit.evaluate` generates its answers so, batch by batch.

    idx, pad = left_padded(prompts, pad_id)          # (B, T) ids, (B,) padding of each row
    out = generate_padded(model, idx, pad, 32, temperature=0, stop_token=EOT_ID)
"""

import torch

from gptkit.model import GPT, sample_next


def left_padded(prompts: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts (token ids) left-padded with `pad_id` to the longest: ids (B, T), padding of each row (B,)."""
    width = max(map(len, prompts))
    idx = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], dtype=torch.long, device=device)
    return idx, torch.tensor([width - len(p) for p in prompts], device=device)


@torch.no_grad()
def generate_padded(
    model: GPT,
    idx: torch.Tensor,
    pad: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    use_cache: bool = True,
    stop_token: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`model.generate` for rows of `idx` (B, T) whose first `pad[b]` tokens are padding (B,):
    each row continues as it would alone. Same arguments and result as `GPT.generate`."""
    if not bool(pad.any()):  # no padding: the plain causal path, the fast one
        return model.generate(idx, max_new_tokens, temperature, top_k, top_p, use_cache, stop_token, generator)
    block_size = model.config.block_size
    done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    cache = None
    for _ in range(max_new_tokens):
        if cache is not None and cache.pos < block_size:
            ctx = idx[:, -1:]
        else:  # as in GPT.generate: start (over) from the last block_size tokens
            ctx = idx[:, -block_size:]
            ctx_pad = window_pad(pad, idx.size(1), ctx.size(1))
            cache = model.new_cache(idx.size(0)) if use_cache else None
        start, T = (cache.pos if cache is not None else 0), ctx.size(1)
        mask = padding_mask(ctx_pad, start, T)
        hidden = model.hidden_states(ctx, cache, padded_positions(ctx_pad, start, T), mask)  # (B, T, C)
        next_id = sample_next(model.lm_head(hidden[:, -1]).float(), temperature, top_k, top_p, generator)
        if stop_token is not None:
            next_id = torch.where(done, torch.full_like(next_id, stop_token), next_id)
            done |= next_id == stop_token
        idx = torch.cat((idx, next_id[:, None]), dim=1)
        if stop_token is not None and bool(done.all()):
            break
    return idx


def padded_positions(pad: torch.Tensor, start: int, T: int) -> torch.Tensor:
    """(B, T) positions of queries start..start+T-1 in rows whose first `pad[b]` positions are
    padding: each row counts from its first real token (a pad's own position is never used)."""
    return (torch.arange(start, start + T, device=pad.device)[None] - pad[:, None]).clamp(min=0)


def padding_mask(pad: torch.Tensor, start: int, T: int) -> torch.Tensor:
    """(B, 1, T, start + T) boolean attention mask of queries at start..start+T-1 over rows whose
    first `pad[b]` positions are padding: causal, and no key is a pad. A pad query attends to
    itself only, so its softmax stays finite (its output is never used)."""
    q = torch.arange(start, start + T, device=pad.device)[:, None]
    k = torch.arange(start + T, device=pad.device)[None]
    real = k[None] >= pad[:, None, None]  # (B, 1, keys)
    return ((k <= q)[None] & (real | (k == q)[None]))[:, None]


def window_pad(pad: torch.Tensor, length: int, window: int) -> torch.Tensor:
    """The left padding left in the last `window` of `length` positions (the sliding context)."""
    return (pad - (length - window)).clamp(min=0)
