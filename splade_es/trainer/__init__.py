"""Training of Echo-Mistral-SPLADE / CSPLADE adapters (contrastive + FLOPS).

Writes model bundles that :class:`splade_es.model.SparseEncoder` loads.
"""
