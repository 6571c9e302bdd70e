"""The backbone under the encoder: attention modes, heads that post-process logits, hub
sources and special tokens, each against an independent computation."""

from __future__ import annotations

import json
import logging
from unittest.mock import Mock

import pytest
import torch

from splade_es.errors import ConfigError, ModelLoadError
from splade_es.model import backbone as bb
from splade_es.model.inputs import Batch
from splade_es.model.pooling import pool_full_logits


# --------------------------------------------------------------- bidirectional attention
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_bidirectional_mode_lets_a_later_token_change_the_first_tokens_state(tiny_mistral_dir, attention):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_mistral_dir, attn_implementation=attention)
    backbone = bb.Backbone(model, is_mlm=False)
    ids = torch.tensor([[1, 100, 200, 300, 400], [1, 100, 200, 300, 401]])
    mask = torch.ones_like(ids)
    causal = backbone.hidden_states(ids, mask, bidirectional=False)
    torch.testing.assert_close(causal[0, :4], causal[1, :4])  # causal: the last token changes only itself
    both = backbone.hidden_states(ids, mask, bidirectional=True)
    assert not torch.allclose(both[0, 0], both[1, 0], atol=1e-4)
    assert model.config.is_causal is False
    assert all(layer.self_attn.is_causal is False for layer in model.model.layers)
    padded = backbone.hidden_states(ids, torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]), bidirectional=True)
    torch.testing.assert_close(padded[0, :4], padded[1, :4])  # padding stays invisible
    torch.testing.assert_close(backbone.hidden_states(ids, mask, bidirectional=False), causal)  # and back
    assert all(layer.self_attn.is_causal is True for layer in model.model.layers)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_a_backbone_wrapped_again_over_a_bidirectional_model_still_runs_causal(tiny_mistral_dir, attention):
    """The trainer wraps the encoder's model in a new Backbone after adding LoRA; when the mode is
    bidirectional the layers were already switched, and the adaptation stage's next-token loss
    must still see only earlier tokens."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_mistral_dir, attn_implementation=attention)
    bb.Backbone(model, is_mlm=False).set_attention(True)  # what SparseEncoder does in bidirectional mode
    again = bb.Backbone(model, is_mlm=False)
    ids = torch.tensor([[1, 100, 200, 300, 400], [1, 100, 200, 300, 401]])
    causal = again.hidden_states(ids, torch.ones_like(ids), bidirectional=False)
    torch.testing.assert_close(causal[0, :4], causal[1, :4])
    assert all(layer.self_attn.is_causal is True for layer in model.model.layers)


def test_bidirectional_mode_refuses_attention_kernels_that_ignore_the_mask(tiny_mistral_dir):
    from transformers import AutoModelForCausalLM

    backbone = bb.Backbone(AutoModelForCausalLM.from_pretrained(tiny_mistral_dir), is_mlm=False)
    backbone.lm.config._attn_implementation_internal = "flash_attention_2"
    assert backbone.attention_implementation == "flash_attention_2"
    backbone.set_attention(False)  # causal is fine everywhere
    with pytest.raises(ModelLoadError, match="bidirectional mode needs attn_implementation eager or sdpa; "
                                             "this model uses 'flash_attention_2'"):
        backbone.set_attention(True)


# --------------------------------------------------------------- heads
def _tiny(family: str):
    """Tiny random Gemma-2 (final soft-capping) and Cohere (logit_scale) causal LMs, built in code."""
    import transformers

    torch.manual_seed(0)
    common = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8)
    if family == "gemma2":
        config = transformers.Gemma2Config(**common, final_logit_softcapping=0.3, attn_implementation="eager")
        return transformers.Gemma2ForCausalLM(config)
    config = transformers.CohereConfig(**common, logit_scale=0.25, tie_word_embeddings=False)
    return transformers.CohereForCausalLM(config)


def _batch() -> Batch:
    ids = torch.tensor([[2, 10, 20, 30, 40], [2, 50, 60, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    pool = torch.tensor([[0, 1, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=torch.bool)
    return Batch(ids, attention, pool)


@pytest.mark.parametrize("family", ["gemma2", "cohere"])
def test_heads_that_post_process_logits_pool_like_the_full_forward(family):
    model = _tiny(family).eval()
    backbone = bb.Backbone(model, is_mlm=False)
    assert backbone.head is not None and backbone.head.post is not None  # the split path, post-processing applied
    batch = _batch()
    with torch.no_grad():
        reference = pool_full_logits(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
                                     batch.pool_mask)
        plain = pool_full_logits(backbone.head.projection(backbone.hidden_states(
            batch.input_ids, batch.attention_mask, False)), batch.pool_mask)
        pooled = backbone.pool(batch, bidirectional=False, chunk_tokens=3)
    assert not torch.allclose(plain, reference, atol=1e-3)  # the post-processing matters here
    torch.testing.assert_close(pooled, reference, rtol=1e-5, atol=1e-5)


def test_an_unknown_logit_post_processing_falls_back_to_the_full_forward(tiny_mistral_dir, caplog):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_mistral_dir).eval()
    forward = model.forward

    def shifted(*args, **kwargs):
        output = forward(*args, **kwargs)
        output.logits = output.logits * 3 + 1
        return output

    model.forward = shifted
    with caplog.at_level(logging.WARNING, logger="splade_es.model.backbone"):
        backbone = bb.Backbone(model, is_mlm=False)
    assert backbone.head is None and "post-processes its logits" in caplog.text
    batch = _batch()
    with torch.no_grad():
        expected = pool_full_logits(shifted(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
                                    batch.pool_mask)
        torch.testing.assert_close(backbone.pool(batch, False, 4), expected)


def test_a_plain_mistral_head_keeps_the_split_path(tiny_mistral_dir):
    from transformers import AutoModelForCausalLM

    backbone = bb.Backbone(AutoModelForCausalLM.from_pretrained(tiny_mistral_dir), is_mlm=False)
    assert backbone.head is not None and backbone.head.post is None


def test_a_quantised_head_is_refused():
    class Linear8bit(torch.nn.Linear):  # what bitsandbytes puts in place of a quantised Linear
        pass

    class Model(torch.nn.Module):
        def __init__(self, head):
            super().__init__()
            self.head = head

        def get_output_embeddings(self):
            return self.head

    bb.check_head_unquantised(Model(torch.nn.Linear(4, 8)))
    with pytest.raises(ModelLoadError, match="output head of Model was quantised"):
        bb.check_head_unquantised(Model(Linear8bit(4, 8)))


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantisation_names_the_head_it_keeps(quantization):
    kwargs = bb._quantization_kwargs(quantization, torch.bfloat16, torch.device("cuda", 0))
    assert kwargs["quantization_config"].llm_int8_skip_modules == ["lm_head"]


# --------------------------------------------------------------- hub sources
class _FakeHub:
    """``hf_hub_download`` over local folders: ``{repo_id: {filename: text}}``."""

    def __init__(self, tmp_path, repos):
        self.root, self.repos = tmp_path, repos

    def __call__(self, repo_id, filename, **kwargs):
        from huggingface_hub.utils import EntryNotFoundError, RepositoryNotFoundError

        if repo_id not in self.repos:
            raise RepositoryNotFoundError(f"{repo_id} not found", response=Mock(status_code=404, headers={}))
        if filename not in self.repos[repo_id]:
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        path = self.root / repo_id / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.repos[repo_id][filename])
        return str(path)


def test_hub_sources(tmp_path, monkeypatch):
    import huggingface_hub

    adapter = json.dumps({"base_model_name_or_path": "org/base", "peft_type": "LORA"})
    hub = _FakeHub(tmp_path, {
        "org/full": {"config.json": "{}"},
        "org/adapter": {"adapter_config.json": adapter, "splade_config.json": json.dumps({"backbone": "org/other"})},
        "org/adapter-plain": {"adapter_config.json": adapter, "tokenizer_config.json": "{}"},
        "org/broken": {"config.json": "{}", "splade_config.json": "{not json"},
    })
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub)
    full = bb.resolve_source("org/full", None)
    assert (full.base, full.adapter, full.config) == ("org/full", None, None)  # no splade_config: defaults
    only_adapter = bb.resolve_source("org/adapter", None)
    assert (only_adapter.base, only_adapter.adapter, only_adapter.tokenizer) == ("org/other", "org/adapter", "org/other")
    plain = bb.resolve_source("org/adapter-plain", None)
    assert (plain.base, plain.adapter, plain.tokenizer) == ("org/base", "org/adapter-plain", "org/adapter-plain")
    with pytest.raises(ConfigError, match="splade_config.json: invalid JSON"):
        bb.resolve_source("org/broken", None)
    missing = bb.resolve_source("org/missing", None)  # loading the weights then names the problem
    assert (missing.base, missing.adapter) == ("org/missing", None)


def test_an_offline_hub_means_defaults_and_other_errors_surface(monkeypatch):
    import huggingface_hub
    from huggingface_hub.utils import LocalEntryNotFoundError

    def offline(repo_id, filename, **kwargs):
        raise LocalEntryNotFoundError("cannot reach the hub and the file is not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    assert bb.resolve_source("org/model", None).config is None

    def broken(repo_id, filename, **kwargs):
        raise PermissionError("cache directory is read-only")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", broken)
    with pytest.raises(PermissionError):
        bb.resolve_source("org/model", None)


# --------------------------------------------------------------- special tokens
def test_special_ids_include_added_tokens_flagged_special(tmp_path):
    """A tokenizer.json tokenizer (as the hub's Mistral v0.3 ships) lists control tokens as
    special added tokens that ``all_special_ids`` does not return."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "[control_8]": 3, "[control_9]": 4, "[TOOL]": 5, "wing": 6, "lift": 7}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.add_special_tokens([AddedToken(t, special=True) for t in ("<unk>", "<s>", "</s>", "[control_8]", "[control_9]")])
    raw.add_tokens([AddedToken("[TOOL]", special=False)])
    PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert not {3, 4} & set(tokenizer.all_special_ids)  # the gap this closes
    assert bb.special_token_ids(tokenizer, vocab_size=8) == [0, 1, 2, 3, 4]


def test_the_mistral_v3_tokenizer_keeps_all_771_control_ids_out(mistral_tokenizer):
    assert bb.special_token_ids(mistral_tokenizer, 32768) == list(range(771))
