"""ELSER v2 through Elasticsearch: index, pipeline, document and query bodies per version, and the
one-sentence error when the cluster cannot run ELSER (this machine's nodes have no ML)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import SHARED_DATA, engine_url
from splade_es.errors import ConfigError
from splade_es.toolkit import elser
from splade_es.toolkit.cli import main
from splade_es.io.corpus import Document, read_corpus, resolve_corpus
from splade_es.toolkit.engines.base import BulkFailure, Capabilities, Engine, EngineInfo, IndexStats
from splade_es.toolkit.engines.connect import connect
from splade_es.toolkit.ingest import Ingester, IngestOptions
from splade_es.toolkit.layouts import ElserLayout

CAPS = Capabilities(rank_features=False, sparse_vector_field=True, sparse_vector_query=True)


def _info(version: str, kind: str = "elasticsearch") -> EngineInfo:
    return EngineInfo(kind, version, CAPS, "http://es:9200")


class RecordingEngine(Engine):
    """Records what the ingester sends; can claim an inference endpoint exists."""

    def __init__(self, version: str, endpoints: set[str]) -> None:
        self.info = _info(version)
        self.endpoints, self.created, self.pipelines, self.documents = endpoints, {}, {}, []
        self.metas: dict[str, dict[str, Any]] = {}  # _meta written after creation (the load's epoch)

    def has_inference(self, inference_id: str) -> bool:
        return inference_id in self.endpoints

    def put_pipeline(self, name: str, body: dict[str, Any]) -> None:
        self.pipelines[name] = body

    def create_index(self, name, body):
        self.created[name] = body

    def exists(self, name):
        return name in self.created

    def bulk(self, index, documents) -> list[BulkFailure]:
        self.documents += list(documents)
        return []

    def refresh(self, index):
        pass

    def mappings(self, name):
        mappings = self.created[name].get("mappings", {})
        return {name: {**mappings, "_meta": self.metas.get(name, mappings.get("_meta", {}))}}

    def put_meta(self, index, meta):
        self.metas[index] = meta

    def count(self, index):
        return len(self.documents)

    def stats(self, index):
        return IndexStats(len(self.documents), 1)

    delete_index = alias_targets = point_alias = search = get = None


def test_layout_follows_the_version():
    assert elser.plan_for(_info("8.19.3")).layout == "semantic_text"
    assert elser.plan_for(_info("9.1.0")).layout == "semantic_text"
    assert elser.plan_for(_info("8.12.2")).layout == "pipeline"
    with pytest.raises(ConfigError, match="ELSER v2 needs Elasticsearch 8.11 or later"):
        elser.plan_for(_info("8.9.0"))
    with pytest.raises(ConfigError, match="ELSER runs only inside Elasticsearch .* opensearch at"):
        elser.plan_for(_info("2.19.0", "opensearch"))


def test_query_bodies():
    text = "what causes lift"
    new = elser.plan_for(_info("8.19.0"))
    assert elser.query(new, text) == {"sparse_vector": {"field": "content", "inference_id": ".elser-2-elasticsearch",
                                                        "query": text}}
    assert elser.query(elser.plan_for(_info("8.16.0")), text) == {"semantic": {"field": "content", "query": text}}
    old = elser.plan_for(_info("8.12.0"), "my-elser")
    assert elser.query(old, text) == {"nested": {"path": "passages", "score_mode": "max", "query": {
        "text_expansion": {"passages.tokens": {"model_id": "my-elser", "model_text": text}}}}}


def test_passages_fit_elser_input():
    words = [f"w{i}" for i in range(600)]
    chunks = elser.passages(" ".join(words))
    assert [len(c.split()) for c in chunks] == [256, 256, 88]
    assert " ".join(chunks).split() == words
    assert elser.passages("") == [""]


def test_semantic_text_ingest_bodies(tmp_path):
    engine = RecordingEngine("8.19.3", {".elser-2-elasticsearch"})
    summary = _ingest(engine, ElserLayout(elser.plan_for(engine.info)), tmp_path)
    body = engine.created["cran-elser"]
    assert body["mappings"]["properties"]["content"] == {"type": "semantic_text",
                                                         "inference_id": ".elser-2-elasticsearch"}
    assert body["mappings"]["_meta"]["splade_es"] == {"encoder": "elser", "inference_id": ".elser-2-elasticsearch",
                                                      "layout": "semantic_text"}
    assert body["mappings"]["properties"]["title"]["type"] == "text" and "splade" not in body["mappings"]["properties"]
    assert engine.pipelines == {} and summary.indexed == 1400 and summary.empty == 0
    assert engine.metas["cran-elser"]["splade_es"]["epoch"] > 0, "the load's epoch is recorded before any write"
    first = dict(engine.documents)["1"]
    assert set(first) == {"title", "text", "content"}
    assert first["content"].startswith(first["title"]) and first["text"] in first["content"]


def test_pipeline_ingest_bodies(tmp_path):
    engine = RecordingEngine("8.12.2", {".elser_model_2"})
    _ingest(engine, ElserLayout(elser.plan_for(engine.info, ".elser_model_2")), tmp_path)
    body = engine.created["cran-elser"]
    assert body["settings"]["index"]["default_pipeline"] == "splade-es-elser-elser_model_2"
    assert body["mappings"]["properties"]["passages"]["properties"]["tokens"] == {"type": "sparse_vector"}
    processor = engine.pipelines["splade-es-elser-elser_model_2"]["processors"][0]["foreach"]
    assert processor["field"] == "passages"
    assert processor["processor"]["inference"] == {"model_id": ".elser_model_2", "input_output": [
        {"input_field": "_ingest._value.text", "output_field": "_ingest._value.tokens"}]}
    longest = max(dict(engine.documents).values(), key=lambda d: len(d["text"].split()))
    assert len(longest["passages"]) > 1 and all(len(p["text"].split()) <= 256 for p in longest["passages"])


def test_no_elser_endpoint_is_one_clear_sentence_before_anything_is_written(tmp_path):
    engine = RecordingEngine("8.19.3", set())
    with pytest.raises(ConfigError) as error:
        _ingest(engine, ElserLayout(elser.plan_for(engine.info)), tmp_path)
    message = str(error.value)
    assert "\n" not in message and "no ELSER inference endpoint '.elser-2-elasticsearch'" in message
    assert "PUT _inference/sparse_embedding/" in message
    assert engine.created == {} and engine.documents == []


def _ingest(engine: Engine, layout: ElserLayout, state: Path):
    ingester = Ingester(engine, layout, IngestOptions("cran-elser", failures_path=state / "f.jsonl",
                                                      state_dir=state, show_progress=False), {"t": 1})
    ingester.prepare_index("cran-elser")
    records = read_corpus(resolve_corpus(SHARED_DATA / "cranfield", None, None))
    return ingester.run("cran-elser", records, lambda docs: [{} for _ in docs])[0]


def test_real_elasticsearch_without_ml_explains_what_is_missing(tmp_path):
    url = engine_url("elasticsearch")
    index = f"test-elser-{uuid.uuid4().hex[:8]}"
    result = CliRunner().invoke(main, ["ingest", "--index", index, "--corpus", str(SHARED_DATA / "cranfield"),
                                       "--encoder", "elser", "--url", url, "--no-progress",
                                       "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and "no ELSER inference endpoint '.elser-2-elasticsearch'" in line
    assert not connect(url).exists(index)


def test_elser_on_opensearch_is_refused_in_one_line(tmp_path):
    url = engine_url("opensearch")
    result = CliRunner().invoke(main, ["ingest", "--index", "x-elser", "--corpus", str(SHARED_DATA / "cranfield"),
                                       "--encoder", "elser", "--url", url, "--no-progress"])
    assert result.exit_code == 1 and "ELSER runs only inside Elasticsearch" in result.output
    assert json.dumps(result.output).count("\\n") == 1


def _processor_output(document_text: str, plan: elser.ElserPlan) -> dict[str, Any]:
    """A document as the 8.11-8.14 pipeline leaves it: each passage gets ``tokens`` from the
    ``inference`` processor (``input_output``), which writes ``model_id`` beside them, and
    ``is_truncated`` where ELSER cut the passage (InferenceResults.writeResultToField)."""
    passages = elser.content(Document("1", {"text": document_text}, "corpus:1"), plan)[elser.PASSAGES_FIELD]
    for number, passage in enumerate(passages):
        passage.update({"tokens": {"wing": 1.25, "lift": 0.5 + number}, "model_id": plan.inference_id})
    passages[0]["is_truncated"] = True
    return {"title": "a wing", "text": document_text, elser.PASSAGES_FIELD: passages}


def test_the_pipeline_mapping_takes_the_inference_processors_output_on_real_elasticsearch():
    url = engine_url("elasticsearch")
    engine = connect(url)
    plan = elser.ElserPlan(".elser_model_2", "pipeline", (8, 12))
    body = elser.index_body(plan, engine.info)
    body["settings"]["index"].pop("default_pipeline")  # no ML node here: the document arrives already expanded
    document = _processor_output(" ".join(["lift"] * 600), plan)
    assert len(document[elser.PASSAGES_FIELD]) == 3
    old = json.loads(json.dumps(body))  # the mapping before model_id / is_truncated were mapped
    for name in ("model_id", "is_truncated"):
        old["mappings"]["properties"][elser.PASSAGES_FIELD]["properties"].pop(name)
    shipped, before = f"test-elser-{uuid.uuid4().hex[:8]}", f"test-elser-old-{uuid.uuid4().hex[:8]}"
    try:
        engine.create_index(shipped, body)
        engine.create_index(before, old)
        assert engine.bulk(shipped, [("1", document)]) == []
        [refused] = engine.bulk(before, [("1", document)])
        assert refused.status == 400 and "strict_dynamic_mapping_exception" in refused.reason
        engine.refresh(shipped)
        assert engine.count(shipped) == 1 and engine.get(shipped, "1") == document
        hits = engine.search(shipped, {"query": {"nested": {"path": elser.PASSAGES_FIELD, "query": {
            "term": {f"{elser.PASSAGES_FIELD}.is_truncated": True}}}}})["hits"]["hits"]
        assert [hit["_id"] for hit in hits] == ["1"]
    finally:
        for name in (shipped, before):
            engine.delete_index(name)
        engine.close()
