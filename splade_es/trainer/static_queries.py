"""Training the inference-free query side: a per-token query weight table learned together with
the document encoder (``model.query_encoder = "static"``), for every document mode.

As in the literature on inference-free SPLADE (Geng et al. 2024; sentence-transformers'
SparseStaticEmbedding recipe), the table starts from the IDF of the training documents, is
trained by the same InfoNCE loss, and only the documents pay the FLOPS penalty: a query's cost
is its token count, which no regulariser changes. The table is a parameter of the step like any
LoRA weight (gathered, clipped, checkpointed); negative entries count as 0.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from splade_es.model.encoder import SparseEncoder
from splade_es.model.static import StaticQueryEncoder, idf_table


def attach_trainable_table(encoder: SparseEncoder, documents: Iterable[str], max_length: int) -> torch.nn.Parameter:
    """Give ``encoder`` static queries (``max_length`` tokens: what the bundle will encode with)
    whose table is the IDF of ``documents``, as a trainable parameter on the encoder's device."""
    weights, _ = idf_table(encoder.tokenizer, encoder.config, documents, encoder.vocab_size)
    encoder.use_static_queries(StaticQueryEncoder(encoder.tokenizer, weights, encoder.config, max_length))
    table = torch.nn.Parameter(encoder.static_queries.weights.to(encoder.device))
    encoder.static_queries.weights = table
    return table


def training_documents(datasets) -> Iterable[str]:
    """Every positive and negative text of the training datasets (the IDF's corpus)."""
    for dataset in datasets:
        examples = dataset.examples  # a list or a memory-mapped store: read by index
        for number in range(len(examples)):
            example = examples[number]
            yield example.positive
            yield from example.negatives
