"""Tiny random Mistral models with the real Mistral-7B-v0.3 vocabulary, built offline.

For tests, benchmarks and demos where no model hub is reachable: the
SentencePiece file ships inside the ``mistral-common`` package (the ``dev``
extra). Saved with plain ``save_pretrained``, so they load like any user model.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from splade_es.errors import ModelLoadError

V3_TOKENIZER = "mistral_instruct_tokenizer_240323.model.v3"


def save_mistral_v3_tokenizer(directory: str | Path):
    """Save the Mistral v3 tokenizer (32768 pieces, BOS added) into ``directory`` and return it."""
    try:
        import mistral_common
    except ImportError:
        raise ModelLoadError("the Mistral v3 tokenizer file comes from mistral-common: pip install 'splade-es[dev]'") from None
    from transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory() as raw:
        shutil.copy(Path(mistral_common.__file__).parent / "data" / V3_TOKENIZER, Path(raw) / "tokenizer.model")
        tokenizer = LlamaTokenizer.from_pretrained(raw, add_bos_token=True, add_eos_token=False, legacy=False)
    tokenizer.save_pretrained(directory)
    return tokenizer


def build_tiny_mistral(directory: str | Path, seed: int = 0) -> Path:
    """A 2-layer random MistralForCausalLM (hidden 64, untied head) plus tokenizer in ``directory``."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    config = MistralConfig(
        vocab_size=32768,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    MistralForCausalLM(config).save_pretrained(directory)
    save_mistral_v3_tokenizer(directory)
    return Path(directory)
