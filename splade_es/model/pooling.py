"""SPLADE pooling: ``w_j = max_i log(1 + relu(logit_ij))`` over the pooled positions.

The ``[tokens, vocab]`` logits are the largest tensor in a SPLADE model (a 7B
decoder's hidden states are 128x smaller), so :func:`pool_pooled_positions`
never keeps them. Because ``log1p(relu(.))`` is monotonic it commutes with max:
the head projects a chunk of positions at a time, each text keeps only its
per-term maximum and the position it came from, and the activation runs once
on ``[batch, vocab]``. Only that arg-max position carries a term's gradient,
and only for terms that are active (positive logit), so the backward pass is a
sparse gather-scatter instead of a second dense projection: the same gradients
as autograd through the full logits, at a fraction of the time and memory,
whenever each maximum is attained at one position. On a tie (a token repeated
with the same context, say) the whole gradient goes to the first such position,
where autograd's ``amax`` splits it evenly: both are valid subgradients of the
max, with the same sum over the tied positions.
:func:`pool_full_logits` is the straightforward version, for models whose head
cannot be split off.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# (text, term) pairs handled at once in the backward pass: bounds its memory to pairs x hidden.
_BACKWARD_PAIRS = 16384


@dataclass(frozen=True)
class VocabHead:
    """An LM head split as ``projection(transform(h))``.

    ``transform`` (BERT's dense + LayerNorm, none for decoders) is per token and
    cheap, so it runs under plain autograd; ``projection`` maps to the vocabulary;
    ``post`` is an elementwise, non-decreasing map some families apply to their
    logits (Gemma-2's soft-capping, Cohere's scale), so it commutes with the max
    and runs on the pooled ``[batch, vocab]`` maxima only.
    """

    projection: torch.nn.Linear
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    post: Callable[[torch.Tensor], torch.Tensor] | None = None

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """The model's logits for ``[tokens, hidden]`` last-layer states."""
        logits = self.projection(states if self.transform is None else self.transform(states))
        return logits if self.post is None else self.post(logits)


def pool_pooled_positions(hidden: torch.Tensor, pool_mask: torch.Tensor, head: VocabHead,
                          chunk_tokens: int) -> torch.Tensor:
    """``[batch, vocab]`` float32 pooled weights from ``[batch, seq, hidden]`` states;
    peak memory ``chunk_tokens x vocab``, with or without a graph."""
    rows, cols = pool_mask.nonzero(as_tuple=True)  # row-major: each text's positions are contiguous
    selected = hidden[rows, cols]
    if head.transform is not None:
        selected = head.transform(selected)
    ends = torch.bincount(rows, minlength=hidden.shape[0]).cumsum(0).tolist()
    projection = head.projection
    parameters = (selected, projection.weight, projection.bias)
    if torch.is_grad_enabled() and any(p is not None and p.requires_grad for p in parameters):
        maxima = _MaxProjection.apply(*parameters, ends, chunk_tokens)
    else:  # encoding: no arg-max bookkeeping
        maxima, _ = _max_projection(*parameters, ends, chunk_tokens, track_positions=False)
    if head.post is not None:
        maxima = head.post(maxima)
    return torch.log1p(torch.relu(maxima))


def _max_projection(states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, ends: list[int],
                    chunk_tokens: int, track_positions: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per text (its rows of ``states`` end at ``ends[t]``), the float32 maximum over its rows
    of ``states @ weight.T + bias``, and with ``track_positions`` the row it came from (-1 for a
    text without rows, whose maxima are 0)."""
    batch, vocab = len(ends), weight.shape[0]
    starts = [0, *ends[:-1]]
    maxima = torch.full((batch, vocab), float("-inf"), dtype=torch.float32, device=states.device)
    argmax = torch.full((batch, vocab), -1, dtype=torch.long, device=states.device) if track_positions else None
    for start in range(0, states.shape[0], chunk_tokens):
        stop = min(start + chunk_tokens, states.shape[0])
        logits = F.linear(states[start:stop], weight, bias)
        text = bisect.bisect_right(ends, start)
        while text < batch and starts[text] < stop:
            first, last = max(starts[text], start), min(ends[text], stop)
            if first < last:
                rows = logits[first - start:last - start]
                if argmax is None:
                    maxima[text] = torch.maximum(maxima[text], rows.amax(dim=0).float())
                else:
                    values, positions = rows.max(dim=0)
                    better = values.float() > maxima[text]
                    maxima[text] = torch.where(better, values.float(), maxima[text])
                    argmax[text] = torch.where(better, positions + first, argmax[text])
            text += 1
    maxima[maxima == float("-inf")] = 0.0
    return maxima, argmax


class _MaxProjection(torch.autograd.Function):
    """:func:`_max_projection` with a sparse backward through each maximum's row."""

    @staticmethod
    def forward(ctx, states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                ends: list[int], chunk_tokens: int) -> torch.Tensor:
        maxima, argmax = _max_projection(states, weight, bias, ends, chunk_tokens, track_positions=True)
        ctx.save_for_backward(states, weight, argmax)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return maxima

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        states, weight, argmax = ctx.saved_tensors
        need_states, need_weight, need_bias = ctx.needs_input_grad[:3]
        text, term = grad.nonzero(as_tuple=True)  # relu already zeroed inactive terms' gradient
        rows = argmax[text, term]
        keep = rows >= 0
        text, term, rows = text[keep], term[keep], rows[keep]
        values = grad[text, term].float()
        grad_states = torch.zeros(states.shape, dtype=torch.float32, device=states.device) if need_states else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        for start in range(0, values.shape[0], _BACKWARD_PAIRS):
            part = slice(start, start + _BACKWARD_PAIRS)
            scale = values[part, None]
            if grad_states is not None:
                grad_states.index_add_(0, rows[part], scale * weight[term[part]].float())
            if grad_weight is not None:
                grad_weight.index_add_(0, term[part], scale * states[rows[part]].float())
        grad_bias = None
        if need_bias and ctx.bias_dtype is not None:
            grad_bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=grad.device).index_add_(0, term, values)
            grad_bias = grad_bias.to(ctx.bias_dtype)
        return (
            None if grad_states is None else grad_states.to(states.dtype),
            None if grad_weight is None else grad_weight.to(weight.dtype),
            grad_bias,
            None,
            None,
        )


def pool_full_logits(logits: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
    """``[batch, vocab]`` from full ``[batch, seq, vocab]`` logits: simple, memory-hungry."""
    weights = torch.log1p(torch.relu(logits.float())) * pool_mask.unsqueeze(-1)
    return weights.amax(dim=1)
