"""Training the inference-free query side together with the document encoder."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from splade_es.errors import ConfigError
from splade_es.model import SparseEncoder
from splade_es.model.static import idf_table
from splade_es.trainer.config import TrainConfig
from splade_es.trainer.loop import Trainer
from splade_es.trainer.static_queries import training_documents
from trainer.conftest import tiny_config


@pytest.mark.parametrize("mode", ["mlm", "echo", "causal", "bidirectional"])
def test_the_query_table_trains_from_idf_with_flops_on_documents_only(tmp_path, tiny_bert_dir, tiny_mistral_dir,
                                                                       cranfield_pairs, mode):
    backbone = tiny_bert_dir if mode == "mlm" else tiny_mistral_dir
    extra = {"lora": {"enabled": False}} if mode == "mlm" else {}
    config = TrainConfig.from_dict(tiny_config(
        tmp_path, backbone, cranfield_pairs, model={"mode": mode, "query_encoder": "static", "query_table_lr": 0.05},
        loss={"lambda_q": 5.0, "lambda_d": 0.001, "lambda_warmup_steps": 0}, optim={"max_steps": 2, "lr": 1e-2},
        run={"save_every": 100}, **extra))
    trainer = Trainer(config, show_progress=False)
    table = trainer.encoder.static_queries.weights
    assert isinstance(table, torch.nn.Parameter) and any(p is table for p in trainer.parameters)
    groups = {id(p): group["initial_lr"] for group in trainer.optimizer.param_groups for p in group["params"]}
    assert groups[id(table)] == 0.05 and set(groups.values()) == {0.05, 1e-2}, "the table has its own rate"
    expected, _ = idf_table(trainer.encoder.tokenizer, trainer.encoder.config,
                            training_documents([trainer.sampler.datasets[0]]), trainer.encoder.vocab_size)
    torch.testing.assert_close(table.detach().cpu(), expected)
    start = table.detach().clone()
    result = trainer.train()
    with open(result.log) as handle:
        rows = list(csv.DictReader(handle))
    assert all(float(row["lambda_q"]) == 0.0 for row in rows), "static queries pay no FLOPS"
    changed = (table.detach() != start).nonzero().flatten().tolist()
    static = trainer.encoder.static_queries
    query_ids = {i for e in trainer.sampler.datasets[0].examples for i in static.token_ids(e.query)}
    assert changed and set(changed) <= query_ids, "only tokens of training queries move"
    bundle = SparseEncoder.from_pretrained(str(result.bundle), device="cpu")
    assert bundle.config.static_queries and bundle.config.mode == mode
    known = len(bundle.tokenizer.get_vocab())  # ids past the tokenizer never occur in a query (not saved)
    saved = table.detach().clamp(min=0).cpu()
    saved[bundle.tokenizer.all_special_ids] = 0  # no query vector holds them; a written table neither
    torch.testing.assert_close(bundle.static_queries.weights[:known], saved[:known])


def test_the_shipped_static_config_loads():
    config = TrainConfig.load(Path(__file__).resolve().parents[2] / "configs" / "static-queries-minilm.toml")
    assert config.model.query_encoder == "static" and config.model.query_table_lr > config.optim.lr


def test_static_queries_need_the_contrastive_stage(tmp_path, tiny_mistral_dir, cranfield_pairs):
    config = TrainConfig.from_dict(tiny_config(tmp_path, tiny_mistral_dir, cranfield_pairs,
                                               model={"query_encoder": "static"},
                                               data={"adapt_text": [str(cranfield_pairs)]}))
    with pytest.raises(ConfigError, match="contrastive"):
        Trainer(config, stage="adapt", show_progress=False)
    with pytest.raises(ConfigError, match="model.query_encoder = 'dense'"):
        TrainConfig.from_dict(tiny_config(tmp_path, tiny_mistral_dir, cranfield_pairs, model={"query_encoder": "dense"}))
