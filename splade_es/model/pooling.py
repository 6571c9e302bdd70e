"""SPLADE pooling: ``w_j = max_i log(1 + relu(logit_ij))`` over the pooled positions.

:func:`pool_pooled_positions` applies the LM head only to pooled positions, a
chunk of tokens at a time, so peak memory is ``chunk x vocab`` rather than
``batch x seq x vocab``. :func:`pool_full_logits` is the straightforward
version, for models whose head cannot be applied on its own.
"""

from __future__ import annotations

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
    rows, cols = pool_mask.nonzero(as_tuple=True)
    selected = hidden[rows, cols]
    out = torch.zeros((hidden.shape[0], vocab_size), dtype=torch.float32, device=hidden.device)
    for start in range(0, selected.shape[0], chunk_tokens):
        logits = head(selected[start : start + chunk_tokens]).float()
        weights = torch.log1p(torch.relu(logits))
        index = rows[start : start + chunk_tokens, None].expand_as(weights)
        # Weights are >= 0, so the zero start value never wins over a real position.
        out = out.scatter_reduce(0, index, weights, reduce="amax", include_self=True)
    return out


def pool_full_logits(logits: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
    """``[batch, vocab]`` from full ``[batch, seq, vocab]`` logits: simple, memory-hungry."""
    weights = torch.log1p(torch.relu(logits.float())) * pool_mask.unsqueeze(-1)
    return weights.amax(dim=1)
