"""The pooling settings of sentence-transformers' ``SpladePooling``: max or sum, relu or log1p_relu.

Max pooling of ``log1p(relu(.))`` is what the backbone computes (``Backbone.pool``, memory-bounded
with a sparse backward). ``log1p_relu`` (OpenSearch's models) applies ``log1p`` once more, which is
monotonic, so under max it can run once on the pooled ``[batch, vocab]`` row. Sum pooling (the
original SPLADE) does not commute with the activation: each position is activated and then added,
here a chunk of positions at a time so that the ``[tokens, vocab]`` logits never exist at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from splade_es.model.config import SpladeConfig
from splade_es.model.inputs import Batch


def activate(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """``log1p(relu(x))``, and for ``log1p_relu`` ``log1p`` of that, in float32."""
    weights = torch.log1p(torch.relu(logits.float()))
    return torch.log1p(weights) if activation == "log1p_relu" else weights


def pool(backbone, batch: Batch, config: SpladeConfig, chunk_tokens: int) -> torch.Tensor:
    """Pooled ``[batch, vocab]`` float32 weights under the config's pooling and activation."""
    bidirectional = config.mode == "bidirectional"
    if config.pooling == "max":
        pooled = backbone.pool(batch, bidirectional, chunk_tokens)
        return torch.log1p(pooled) if config.activation == "log1p_relu" else pooled
    if backbone.head is None:  # sum pooling is mlm-only (SpladeConfig checks), so no 4D mask here
        logits = backbone.lm(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return (activate(logits, config.activation) * batch.pool_mask.unsqueeze(-1)).sum(dim=1)
    hidden = backbone.hidden_states(batch.input_ids, batch.attention_mask, bidirectional)
    rows, cols = batch.pool_mask.nonzero(as_tuple=True)
    selected = hidden[rows, cols]
    if backbone.head.transform is not None:
        selected = backbone.head.transform(selected)
    projection = backbone.head.projection
    total = torch.zeros((hidden.shape[0], projection.weight.shape[0]), dtype=torch.float32, device=hidden.device)
    for start in range(0, selected.shape[0], chunk_tokens):
        part = slice(start, start + chunk_tokens)
        logits = F.linear(selected[part], projection.weight, projection.bias)
        total = total.index_add(0, rows[part], activate(logits, config.activation))
    return total
