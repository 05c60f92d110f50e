"""Unpadding: compute a right-padded batch's real tokens only, the same numbers with less work.

A micro-batch of examples (prompt → response, labelled texts, DPO pairs) is right-padded to its
longest row, and example lengths are skewed: on the shipped `plays` task real tokens are a third
of the positions or less. Attention is causal, so a real token never looks at the padding after
it; and every other layer of a block (LayerNorms, the attention's input and output projections,
the MLP, the residual adds) works on each position alone. So the blocks can run on the real
tokens only, packed one after the other, (N, C) with N the sum of the lengths, and only the
attention puts them back in their rows, (B, T, C), for a causal product over each row. The
padding then costs two index copies per block instead of a block's matmuls.

`gptkit.model` takes the packing as `rows` (a `Rows`); a program asks for it explicitly, batch by
batch, through `rows_to_compute`, as `gptkit.objectives` does when `gptkit.train` sets its
objective's `unpad`, and as `gptkit.classify` does:

    rows = unpadding.rows_to_compute(last + 1, x.size(1))     # None: not worth it for this batch
    logits, loss = model(x, labels, "sum", last=last, rows=rows)

Results equal the padded computation's up to float rounding (matmuls over fewer rows sum in a
different order). With dropout, the masks drawn differ from the padded pass's, as they would for
any other batch layout.
"""

import torch

from gptkit.model import IGNORE_INDEX

# Below this share of padding the saved block work hardly pays for the index copies and the
# index itself; a stream batch (every position real) is always computed as it is.
MAX_REAL_FRACTION = 0.9


class Rows:
    """The real tokens of B right-padded rows of width T: row b's first `lengths[b]` positions.

    `unpad` packs a (B, T, ...) tensor's real positions into (N, ...), row after row; `pad` puts
    an (N, ...) tensor back into (B, T, ...), zeros at the padding; `index` turns each row's
    position (B,) into its index in the packed (N,) order.
    """

    def __init__(self, lengths: torch.Tensor, width: int):
        self.batch, self.width = len(lengths), width
        real = torch.arange(width, device=lengths.device) < lengths[:, None]  # (B, T)
        self.flat = real.flatten().nonzero().squeeze(1)  # (N,): where each real token sits in B * T
        self.starts = lengths.cumsum(0) - lengths  # (B,): where each row starts in the packed order

    def unpad(self, t: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...): the real positions, row after row."""
        return t.flatten(0, 1).index_select(0, self.flat)

    def pad(self, t: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...), zeros at the padding (which no real token attends to)."""
        out = t.new_zeros(self.batch * self.width, *t.shape[1:])
        return out.index_copy(0, self.flat, t).view(self.batch, self.width, *t.shape[1:])

    def index(self, positions: torch.Tensor) -> torch.Tensor:
        """(B,) a position in each row -> (B,) its index among the packed tokens."""
        return self.starts + positions


def rows_to_compute(lengths: torch.Tensor, width: int) -> Rows | None:
    """The `Rows` of a batch whose rows need their first `lengths` (B,) positions out of `width`,
    or None where it is computed padded (`worth_unpadding` says no)."""
    return Rows(lengths, width) if worth_unpadding(int(lengths.sum()), len(lengths), width) else None


def worth_unpadding(real: int, rows: int, width: int) -> bool:
    """Whether a batch of `rows` rows of `width` positions, `real` of them real tokens, is computed
    unpadded: where real tokens are MAX_REAL_FRACTION of the positions or less."""
    return real <= MAX_REAL_FRACTION * rows * width


def rows_for_targets(targets: torch.Tensor) -> Rows | None:
    """`rows_to_compute` for a batch of (B, T) targets: each row up to its last target."""
    return rows_to_compute(target_lengths(targets), targets.size(1))


def target_lengths(targets: torch.Tensor) -> torch.Tensor:
    """(B, T) targets -> (B,) how many positions each row needs: up to its last target. A position
    after it changes nothing a target reads (attention is causal): padding, or a cut response."""
    positions = torch.arange(1, targets.size(1) + 1, device=targets.device)
    return ((targets != IGNORE_INDEX) * positions).amax(1)
