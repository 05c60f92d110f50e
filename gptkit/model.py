"""The GPT-2 model in plain PyTorch, readable top to bottom.

Pre-LayerNorm transformer blocks, GELU with GPT-2's tanh approximation, learned position
embeddings, and an output head that shares its weight with the token embedding. The names of
the parameters follow GPT-2's checkpoint (`transformer.h.0.attn.c_attn.weight`, ...), so
`GPT.from_pretrained("gpt2")` maps Hugging Face weights onto them one to one.

Shapes in the comments: B batch rows, T positions, C = n_embd channels, V = vocab_size.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from gptkit import pretrained
from gptkit.errors import GptkitError

IGNORE_INDEX = -1  # a target that is no target: padding, and the prompt of an example under mask_prompt


@dataclass
class GPTConfig:
    block_size: int = 1024  # longest context, in tokens
    vocab_size: int = 50257  # GPT-2's BPE vocabulary
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # GPT-2 has biases in Linear and LayerNorm layers
    n_labels: int = 0  # a classifier's number of labels (0: a language model only)


def gpt2_config(name: str, **overrides) -> GPTConfig:
    """The GPTConfig of one of OpenAI's four sizes: gpt2, gpt2-medium, gpt2-large, gpt2-xl."""
    return GPTConfig(**pretrained.gpt2_size(name), **overrides)


class KVCache:
    """Keys and values of past positions, preallocated for the whole generation."""

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device, dtype):
        head_dim = config.n_embd // config.n_head
        shape = (config.n_layer, 2, batch_size, config.n_head, max_len, head_dim)
        self.kv = torch.empty(shape, device=device, dtype=dtype)
        self.pos = 0  # how many positions are filled

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's k, v for `layer`; return all keys and values so far."""
        end = self.pos + k.size(2)
        self.kv[layer, 0, :, :, self.pos : end] = k
        self.kv[layer, 1, :, :, self.pos : end] = v
        return self.kv[layer, 0, :, :, :end], self.kv[layer, 1, :, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be a multiple of n_head"
        self.layer, self.n_head, self.dropout = layer, config.n_head, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, mask: torch.Tensor | None = None, rows=None
    ) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C). `mask` (B, 1, T, keys), True where a query may attend; None: causal.
        With `rows` (gptkit.unpadding.Rows), x (N, C) -> (N, C): the real tokens of right-padded rows."""
        qkv = self.c_attn(x)
        if rows is not None:
            qkv = rows.pad(qkv)  # (N, 3C) -> (B, T, 3C): attention is the one layer that needs the rows
        B, T, C = qkv.size(0), qkv.size(1), x.size(-1)
        q, k, v = qkv.split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim): each head attends on its own
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # A single new token may look at every cached position; a longer chunk starts the
        # cache (prefill), so the ordinary causal mask is the right one.
        is_causal = T > 1 and mask is None  # an explicit mask is causal already
        if cache is not None:
            assert T == 1 or cache.pos == 0, "prefill must start from an empty cache"
            k, v = cache.update(self.layer, k, v)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y if rows is None else rows.unpad(y)))

    def forward_last(self, x: torch.Tensor, last: torch.Tensor, rows=None) -> torch.Tensor:
        """The output (B, C) at one position per row, `last` (B,): its query over the keys up to it.
        With `rows`, x is (N, C), the real tokens only (see forward)."""
        qkv = self.c_attn(x) if rows is None else rows.pad(self.c_attn(x))
        B, T, C = qkv.size(0), qkv.size(1), x.size(-1)
        q, k, v = qkv.split(C, dim=2)
        q = q[torch.arange(B, device=x.device), last][:, None]  # (B, 1, C)
        q, k, v = (t.view(B, -1, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        mask = (torch.arange(T, device=x.device) <= last[:, None])[:, None, None]  # (B, 1, 1, T): causal
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, C)))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, C) -> (B, T, 4C) -> (B, T, C). GPT-2 was trained with the tanh approximation of
        # GELU; the exact erf form drifts.
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias, eps=1e-5)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias, eps=1e-5)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, mask: torch.Tensor | None = None, rows=None
    ) -> torch.Tensor:
        # Pre-LN: normalise the input of each sub-layer, add its output to the residual stream.
        x = x + self.attn(self.ln_1(x), cache, mask, rows)
        return x + self.mlp(self.ln_2(x))

    def forward_last(self, x: torch.Tensor, last: torch.Tensor, rows=None) -> torch.Tensor:
        """The block's output (B, C) at position `last[b]` of each row only: all a classifier reads.
        Keys and values need every position, the query, attention output and MLP just that one.
        With `rows`, x is (N, C), the real tokens only."""
        at_last = (torch.arange(len(last), device=x.device), last) if rows is None else rows.index(last)
        x = x[at_last] + self.attn.forward_last(self.ln_1(x), last, rows)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        # Set by training (--grad_checkpoint): keep only each block's input in the forward pass and
        # recompute the rest in the backward pass; less memory, about a third more compute.
        self.grad_checkpoint = False
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
                wpe=nn.Embedding(config.block_size, config.n_embd),  # position embeddings
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias, eps=1e-5),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: reading a token in and writing it out use the same vectors.
        self.transformer.wte.weight = self.lm_head.weight
        # The loss forward computes; a program may swap in one that computes the same numbers
        # faster on its hardware (gptkit.cpu_kernels.speed_up does on CPUs).
        self.cross_entropy = F.cross_entropy
        # A classifier's head scores the labels from the same hidden state the LM head reads;
        # named as in Hugging Face's GPT2ForSequenceClassification (`score`, no bias).
        self.score = nn.Linear(config.n_embd, config.n_labels, bias=False) if config.n_labels else None
        self.apply(self._init_weights)
        # GPT-2 scales the projections into the residual stream by 1/sqrt(2 * n_layer).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @classmethod
    def from_pretrained(cls, name_or_dir: str, override_args: dict | None = None) -> "GPT":
        """GPT-2's weights as a GPT, as in nanoGPT: `gpt2` ... `gpt2-xl` or a local Hugging Face directory.

        Only dropout can be overridden (`{"dropout": 0.1}`); the architecture is the checkpoint's.
        """
        override_args = dict(override_args or {})
        if set(override_args) - {"dropout"}:
            raise GptkitError(
                f"only dropout can be overridden on a pretrained model, not {sorted(set(override_args) - {'dropout'})}"
            )
        directory = pretrained.find_weights(name_or_dir)
        shape = pretrained.read_config(directory)  # checked before any weight is read
        hf_state = pretrained.read_weights(directory)
        score = hf_state.get("score.weight")  # a GPT2ForSequenceClassification: its head comes too
        dropout = float(override_args.get("dropout", 0.0))
        config = GPTConfig(**shape, dropout=dropout, n_labels=0 if score is None else score.size(0))
        with torch.device("meta"):
            model = cls(config)  # shapes only: a random init would be a second full copy of the weights
        model.load_hf_weights(hf_state, str(directory))
        return model

    def load_hf_weights(self, hf_state: dict[str, torch.Tensor], source: str) -> None:
        """Put Hugging Face GPT-2 tensors into this model, transposing the Conv1D weights.

        Hugging Face keeps GPT-2's original Conv1D layers, whose weights are the transpose of
        nn.Linear's. A model built on the meta device takes the tensors themselves (`hf_state`
        is emptied as it goes), so only one copy of the weights ever exists.
        """
        hf = {k.removeprefix("transformer."): v for k, v in hf_state.items()}
        hf = {k: v for k, v in hf.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
        hf.pop("lm_head.weight", None)  # tied to wte
        ours = {k.removeprefix("transformer."): v for k, v in self.state_dict().items() if k != "lm_head.weight"}
        missing, unexpected = sorted(set(ours) - set(hf)), sorted(set(hf) - set(ours))
        if missing or unexpected:
            raise GptkitError(
                f"{source} does not match GPT-2's layout (missing: {missing[:3]}, unexpected: {unexpected[:3]})"
            )
        on_meta = any(t.is_meta for t in ours.values())
        taken = {}
        with torch.no_grad():
            for key, target in ours.items():
                src = hf.pop(key)
                src = src.t() if key.endswith(pretrained.TRANSPOSED) else src
                if src.shape != target.shape:
                    raise GptkitError(f"{source}: {key} has shape {tuple(src.shape)}, expected {tuple(target.shape)}")
                if on_meta:
                    name = key if key == "score.weight" else "transformer." + key  # the head sits beside `transformer`
                    taken[name] = src.to(target.dtype).contiguous()
                    hf_state.clear()  # drop the caller's references: the model now holds the only copy
                else:
                    target.copy_(src)
        if on_meta:
            self.load_state_dict(taken, strict=False, assign=True)
            self.lm_head.weight = self.transformer.wte.weight  # assign=True replaced the tied tensor

    def add_classifier(self, n_labels: int) -> None:
        """Give a language model (pretrained, or from scratch) a new classification head, randomly
        initialised as GPT-2 initialises its layers (seed torch first for a repeatable head)."""
        self.config.n_labels = n_labels
        self.score = nn.Linear(self.config.n_embd, n_labels, bias=False, device=self.lm_head.weight.device)
        self._init_weights(self.score)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without position embeddings (token ones are tied to the head)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def hidden_states(
        self,
        idx: torch.Tensor,
        cache: KVCache | None = None,
        pos: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        last: torch.Tensor | None = None,
        rows=None,
    ) -> torch.Tensor:
        """Final-LayerNorm output (B, T, C) for token ids `idx` (B, T); with `last` (B,), only that
        position's of each row, (B, C): the last block computes no other. With `rows`
        (gptkit.unpadding.Rows, for right-padded rows), only the real tokens', (N, C).

        With `cache`, `idx` continues the positions the cache holds, and their keys and values are
        added to it. `pos` (T,) or (B, T): the positions of the tokens (default: counting on from
        the cache). `mask` (B, 1, T, keys): True where a query may attend (default: causal).
        """
        B, T = idx.size()
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of length {start + T} exceeds block_size {self.config.block_size}")
        if pos is None:
            pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        if rows is not None:  # the blocks compute the real tokens only, (N,)
            idx, pos = rows.unpad(idx), rows.unpad(pos.expand(B, T))
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C), or (N, C)
        blocks = self.transformer.h
        for i, block in enumerate(blocks):
            if last is not None and i == len(blocks) - 1:
                x = block.forward_last(x, last, rows)  # (B, C)
            elif self.grad_checkpoint and self.training and torch.is_grad_enabled():
                # Non-reentrant checkpointing replays the block with the same RNG state, so the
                # dropout masks, and the gradients, equal those of the plain pass.
                x = checkpoint(block, x, None, mask, rows, use_reentrant=False)
            else:
                x = block(x, cache, mask, rows)
        if cache is not None:
            cache.pos += T
        return self.transformer.ln_f(x)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        reduction: str = "mean",
        last: torch.Tensor | None = None,
        rows=None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) for token ids `idx` (B, T), and None; with `targets` (B, T), the logits
        of the positions that have a target only, (N, V) in row order, and their cross-entropy.

        With `last` (B,), the position of each row's last real token, the model classifies: the
        label logits (B, n_labels) and, with `targets` (B,) label ids, their cross-entropy.

        Targets equal to IGNORE_INDEX count for nothing. The loss is the mean over the other
        targets, or with reduction="sum" their sum.

        `rows` (gptkit.unpadding.Rows): the rows are right-padded and only their first lengths
        positions count (the rest: no target, after `last`); the blocks skip the others. Without
        `targets` and `last`, the logits are then those of the real tokens, row after row.
        """
        if last is not None:
            # Rows are right-padded. Attention is causal, so a text's last real token is the only
            # position that has seen all of it (the first has seen only itself), and no real
            # token ever sees the padding after it: the padding changes nothing that is read.
            logits = self.score(self.hidden_states(idx, last=last, rows=rows))  # (B, n_labels)
            return logits, None if targets is None else F.cross_entropy(logits.float(), targets, reduction=reduction)
        h = self.hidden_states(idx, rows=rows)  # (B, T, C), or (N, C) with rows
        if targets is None:
            return self.lm_head(h), None
        # The head is about a third of GPT-2 small's compute, and on example data most positions
        # are prompt or padding: only the positions with a target go through it. A step over
        # micro-batches of examples sums each one's loss and divides by the whole step's count of
        # targets, so that every token weighs the same.
        if rows is not None:
            targets = rows.unpad(targets)  # (N,), as h
        keep = targets != IGNORE_INDEX  # (B, T), or (N,)
        logits = self.lm_head(h[keep])  # (N, V)
        return logits, self.cross_entropy(logits, targets[keep], ignore_index=IGNORE_INDEX, reduction=reduction)

    def crop_block_size(self, block_size: int) -> None:
        """Shorten the context (e.g. 1024 -> 256) to save memory; keeps the first position embeddings."""
        if block_size > self.config.block_size:
            raise ValueError(f"cannot grow block_size from {self.config.block_size} to {block_size}")
        self.config.block_size = block_size
        wpe = self.transformer.wpe.weight  # a frozen one (LoRA) stays frozen
        self.transformer.wpe.weight = nn.Parameter(wpe[:block_size], requires_grad=wpe.requires_grad)

    def configure_optimizers(
        self, weight_decay: float, learning_rate: float, betas: tuple[float, float], device_type: str
    ) -> torch.optim.AdamW:
        """AdamW that decays matrices (matmul weights, embeddings) but not biases and LayerNorm gains."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        # The fused kernel updates each tensor in one pass; on CPU the default multi-tensor path
        # is several times slower, as it writes a temporary per arithmetic step.
        if device_type in ("cuda", "cpu"):
            try:
                return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=True)
            except (RuntimeError, TypeError):  # older PyTorch: no fused AdamW for this device
                pass
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)

    def flops_per_token(self, seq_len: float | None = None, backward: bool = True) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12 L H Q T, where
        T is the length of the row the token attends over (rows of different lengths: the mean
        over the tokens). With `backward=False`, a forward pass alone: 2N + 4 L H Q T.

        A frozen weight (LoRA's base) has no weight-gradient product: 4 FLOPs per parameter, not 6.
        """
        cfg = self.config
        T = seq_len or cfg.block_size
        attention = 4 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * T  # Q K^T and A V, forward
        if not backward:
            return 2 * self.num_params() + attention
        frozen = sum(p.numel() for name, p in self.named_parameters() if not p.requires_grad and "wpe" not in name)
        return 6 * self.num_params() - 2 * frozen + 3 * attention

    def estimate_mfu(
        self,
        tokens_per_iter: int,
        dt: float,
        seq_len: float | None = None,
        peak_flops: float = 989e12,
        forward_only: int = 0,
    ) -> float:
        """Model FLOPs utilisation: achieved training FLOP/s over `peak_flops` (default: H100 bf16 dense).
        `forward_only`: tokens of forward passes without backward in the same `dt` (DPO's reference)."""
        flops = self.flops_per_token(seq_len) * tokens_per_iter + self.flops_per_token(seq_len, False) * forward_only
        return flops / dt / peak_flops

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        stop_token: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue each row of `idx` (B, T) by `max_new_tokens` tokens: (B, T + max_new_tokens).

        `temperature=0` picks the most likely token (greedy). With `stop_token`, rows that have
        emitted it are padded with it, and generation ends once every row has.
        """
        block_size = self.config.block_size
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        cache = None
        for _ in range(max_new_tokens):
            if cache is not None and cache.pos < block_size:
                ctx = idx[:, -1:]  # the cache holds the keys and values of all earlier positions
            else:
                # The first step, every step without a cache, and every step once the context is
                # full: past block_size the window slides, so the positions change and the cache
                # starts over from the last block_size tokens.
                ctx = idx[:, -block_size:]
                cache = self.new_cache(idx.size(0)) if use_cache else None
            logits = self.lm_head(self.hidden_states(ctx, cache)[:, -1])  # (B, V): the last position's
            next_id = sample_next(logits.float(), temperature, top_k, top_p, generator)  # (B,)
            if stop_token is not None:
                next_id = torch.where(done, torch.full_like(next_id, stop_token), next_id)
                done |= next_id == stop_token
            idx = torch.cat((idx, next_id[:, None]), dim=1)
            if stop_token is not None and bool(done.all()):
                break
        return idx

    def new_cache(self, batch_size: int) -> KVCache:
        """An empty KV cache for `batch_size` rows, as long as the context, on the weights' device and dtype."""
        weight = self.lm_head.weight
        return KVCache(self.config, batch_size, self.config.block_size, weight.device, weight.dtype)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token id per row of `logits` (B, vocab)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = next_token_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def next_token_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """The distribution sampling draws from: temperature, then top-k, then top-p (nucleus)."""
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = torch.sort(torch.softmax(logits, dim=-1), descending=True)
        # Drop a token once the tokens before it already reach top_p; the top one always stays.
        drop_sorted = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.softmax(logits, dim=-1)
