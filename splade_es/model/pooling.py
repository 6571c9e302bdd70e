"""SPLADE pooling: ``w_j = max_i log(1 + relu(logit_ij))`` over the pooled positions.

:func:`pool_pooled_positions` applies the LM head only to pooled positions, a
chunk of tokens at a time, so peak memory is ``chunk x vocab`` rather than
``batch x seq x vocab``. Because ``log1p(relu(.))`` is monotonic it commutes
with max: the raw logits are max-reduced per text first and the activation
runs once on ``[batch, vocab]``. :func:`pool_full_logits` is the
straightforward version, for models whose head cannot be applied on its own.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

import torch


def pool_pooled_positions(
    hidden: torch.Tensor,
    pool_mask: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    vocab_size: int,
    chunk_tokens: int,
) -> torch.Tensor:
    """``[batch, vocab]`` float32 pooled weights from ``[batch, seq, hidden]`` states."""
    batch = hidden.shape[0]
    rows, cols = pool_mask.nonzero(as_tuple=True)  # row-major: each text's positions are contiguous
    selected = hidden[rows, cols]
    ends = torch.bincount(rows, minlength=batch).cumsum(0).tolist()
    starts = [0, *ends[:-1]]
    partial: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    for start in range(0, selected.shape[0], chunk_tokens):
        stop = min(start + chunk_tokens, selected.shape[0])
        logits = head(selected[start:stop])
        row = bisect.bisect_right(ends, start)
        while row < batch and starts[row] < stop:
            first, last = max(starts[row], start), min(ends[row], stop)
            if first < last:
                partial[row].append(logits[first - start : last - start].amax(dim=0).float())
            row += 1
    zeros = torch.zeros(vocab_size, dtype=torch.float32, device=hidden.device)
    maxima = [torch.stack(parts).amax(dim=0) if parts else zeros for parts in partial]
    return torch.log1p(torch.relu(torch.stack(maxima)))


def pool_full_logits(logits: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
    """``[batch, vocab]`` from full ``[batch, seq, vocab]`` logits: simple, memory-hungry."""
    weights = torch.log1p(torch.relu(logits.float())) * pool_mask.unsqueeze(-1)
    return weights.amax(dim=1)
