"""The contrastive objective: InfoNCE over in-batch (and explicit) negatives, FLOPS
regularisation with a quadratic warm-up, and the CSPLADE adaptation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from splade_es.model.pooling import VocabHead


def info_nce(queries: torch.Tensor, documents: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy of each query against every document; query ``i``'s positive is document
    ``i``, every other document (other positives, explicit negatives after them) a negative."""
    scores = queries @ documents.T / temperature
    return F.cross_entropy(scores, torch.arange(queries.shape[0], device=queries.device))


def flops(representations: torch.Tensor) -> torch.Tensor:
    """``sum_j (mean_i |w_ij|)^2`` over the whole effective batch: not additive over chunks,
    so it must see every representation at once."""
    return representations.abs().mean(dim=0).pow(2).sum()


def lambda_at(step: int, value: float, warmup_steps: int) -> float:
    """``lambda * min(1, (t / T)^2)``: regularisation eases in quadratically, then stays."""
    if warmup_steps <= 0:
        return value
    return value * min(1.0, (step / warmup_steps) ** 2)


def adaptation_sums(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CSPLADE's two adaptation terms for ``[tokens, vocab]`` logits and their next tokens,
    summed over tokens: ``[CE(logits), CE(log(1 + relu(logits)))]``.

    The second term trains the log-saturated ReLU activations themselves to predict the next
    token, so few vocabulary entries die before contrastive training. The caller divides by
    the global number of target tokens and forms ``L_CLM + lambda_relu * L_ReLU``.
    """
    logits = logits.float()
    clm = F.cross_entropy(logits, targets, reduction="sum")
    relu = F.cross_entropy(torch.log1p(torch.relu(logits)), targets, reduction="sum")
    return torch.stack([clm, relu])


def _head_sums(head: VocabHead, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return adaptation_sums(head.logits(states), targets)


def chunked_adaptation_sums(states: torch.Tensor, targets: torch.Tensor, head: VocabHead,
                            chunk_tokens: int) -> torch.Tensor:
    """:func:`adaptation_sums` of ``head(states)``, ``chunk_tokens`` rows at a time: each chunk's
    logits are recomputed in the backward pass instead of kept, so peak memory is one chunk's
    ``[chunk_tokens, vocab]``, never ``[texts, seq, vocab]``."""
    total = torch.zeros(2, dtype=torch.float32, device=states.device)
    for start in range(0, states.shape[0], chunk_tokens):
        stop = start + chunk_tokens
        total = total + checkpoint(_head_sums, head, states[start:stop], targets[start:stop], use_reentrant=False)
    return total
