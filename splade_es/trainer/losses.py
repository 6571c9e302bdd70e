"""The contrastive objective: InfoNCE over in-batch (and explicit) negatives, FLOPS
regularisation with a quadratic warm-up, and the CSPLADE adaptation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def adaptation_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    lambda_relu: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSPLADE's adaptation: ``L_CLM + lambda_relu * CE(log(1 + relu(shifted logits)), next)``.

    The second term trains the log-saturated ReLU activations themselves to predict the next
    token, so few vocabulary entries die before contrastive training. Returns (total, clm, relu).
    """
    shifted = logits[:, :-1].float()
    targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
    clm = F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1), ignore_index=-100)
    relu_logits = torch.log1p(torch.relu(shifted))
    relu = F.cross_entropy(relu_logits.reshape(-1, relu_logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    return clm + lambda_relu * relu, clm, relu
