"""Elastic's ELSER v2, the learned sparse baseline, built and queried through Elasticsearch itself.

Two index layouts, by version:

- ``semantic_text`` (8.15+): a ``content`` field bound to the inference endpoint; Elasticsearch
  chunks long texts and runs ELSER on each chunk at index time. Queried with the
  ``sparse_vector`` query and ``inference_id`` (8.18+; the ``semantic`` query before).
- ``pipeline`` (8.11-8.14): the text is split here into passages of at most
  :data:`PASSAGE_WORDS` words (ELSER reads 512 word pieces), an ingest pipeline's ``inference``
  processor expands each passage, and a ``nested`` query keeps a document's best passage. With
  ``input_output`` the processor also writes ``model_id`` (and ``is_truncated`` when it cut the
  input) beside each passage's ``tokens``; the mapping holds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from splade_es.errors import ConfigError
from splade_es.io.corpus import Document
from splade_es.toolkit.engines.base import Engine, EngineInfo
from splade_es.toolkit.engines.elastic import version_tuple
from splade_es.toolkit.mappings import recorded_meta, text_index_body

DEFAULT_INFERENCE_ID = ".elser-2-elasticsearch"
PASSAGE_WORDS = 256  # ~1.5 word pieces per English word keeps a passage under ELSER's 512
CONTENT_FIELD = "content"
PASSAGES_FIELD = "passages"


@dataclass(frozen=True)
class ElserPlan:
    inference_id: str
    layout: str  # "semantic_text" or "pipeline"
    version: tuple[int, int]

    @property
    def pipeline(self) -> str:
        return f"splade-es-elser-{self.inference_id.strip('.')}"

    def meta(self) -> dict[str, Any]:
        return {"encoder": "elser", "inference_id": self.inference_id, "layout": self.layout}


def plan_for(info: EngineInfo, inference_id: str = DEFAULT_INFERENCE_ID) -> ElserPlan:
    """The layout this cluster supports; anything but Elasticsearch 8.11+ is refused in one sentence."""
    if info.kind != "elasticsearch":
        raise ConfigError(f"ELSER runs only inside Elasticsearch (on a machine-learning node); {info.kind} at "
                          f"{info.location} cannot run it: point --url at an Elasticsearch 8.11+ cluster")
    version = version_tuple(info.version)
    if version != (0, 0) and version < (8, 11):
        raise ConfigError(f"ELSER v2 needs Elasticsearch 8.11 or later; {info.location} runs {info.version}")
    return ElserPlan(inference_id, "semantic_text" if version == (0, 0) or version >= (8, 15) else "pipeline", version)


def check_available(engine: Engine, plan: ElserPlan) -> None:
    """Fail with what is missing and how to deploy it, before any document is sent."""
    if engine.has_inference(plan.inference_id):
        return
    raise ConfigError(
        f"Elasticsearch at {engine.info.location} has no ELSER inference endpoint {plan.inference_id!r} "
        "(it needs the machine-learning feature and an ML node): deploy one with "
        "PUT _inference/sparse_embedding/my-elser {\"service\": \"elasticsearch\", \"service_settings\": "
        "{\"model_id\": \".elser_model_2\", \"num_allocations\": 1, \"num_threads\": 1}} and pass --inference-id my-elser")


def index_body(plan: ElserPlan, info: EngineInfo) -> dict[str, Any]:
    """BEIR's BM25 text fields plus the ELSER field; ``_meta`` records how it was built."""
    body = text_index_body(info, plan.meta())
    properties = body["mappings"]["properties"]
    if plan.layout == "semantic_text":
        properties[CONTENT_FIELD] = {"type": "semantic_text", "inference_id": plan.inference_id}
    else:
        properties[PASSAGES_FIELD] = {"type": "nested", "properties": {
            "text": {"type": "text", "index": False}, "tokens": {"type": "sparse_vector"},
            # The inference processor writes these beside each output (under the strict mapping).
            "model_id": {"type": "keyword"}, "is_truncated": {"type": "boolean"}}}
        body.setdefault("settings", {}).setdefault("index", {})["default_pipeline"] = plan.pipeline
    return body


def pipeline_body(plan: ElserPlan) -> dict[str, Any]:
    """Expand every passage with the model (the ``pipeline`` layout)."""
    return {"description": f"splade-es: ELSER expansion of each passage with {plan.inference_id}",
            "processors": [{"foreach": {"field": PASSAGES_FIELD, "processor": {"inference": {
                "model_id": plan.inference_id,
                "input_output": [{"input_field": "_ingest._value.text", "output_field": "_ingest._value.tokens"}],
            }}}}]}


def passages(text: str, words: int = PASSAGE_WORDS) -> list[str]:
    """``text`` in consecutive runs of at most ``words`` words (at least one passage)."""
    tokens = text.split()
    return [" ".join(tokens[i:i + words]) for i in range(0, len(tokens), words)] or [""]


def content(document: Document, plan: ElserPlan) -> dict[str, Any]:
    """The ELSER input of a document: the whole text (``semantic_text`` chunks it) or its passages."""
    if plan.layout == "semantic_text":
        return {CONTENT_FIELD: document.text}
    return {PASSAGES_FIELD: [{"text": passage} for passage in passages(document.text)]}


def query(plan: ElserPlan, text: str) -> dict[str, Any]:
    """The ELSER query clause for ``text``: the model expands it inside the cluster."""
    if plan.layout == "semantic_text":
        if plan.version != (0, 0) and plan.version < (8, 18):
            return {"semantic": {"field": CONTENT_FIELD, "query": text}}
        return {"sparse_vector": {"field": CONTENT_FIELD, "inference_id": plan.inference_id, "query": text}}
    tokens = f"{PASSAGES_FIELD}.tokens"
    inner = ({"sparse_vector": {"field": tokens, "inference_id": plan.inference_id, "query": text}}
             if plan.version >= (8, 15) else
             {"text_expansion": {tokens: {"model_id": plan.inference_id, "model_text": text}}})
    return {"nested": {"path": PASSAGES_FIELD, "score_mode": "max", "query": inner}}


def recorded_plan(engine: Engine, index: str) -> ElserPlan:
    """The plan an ELSER index was built with (from its ``_meta``)."""
    meta = recorded_meta(engine.mappings(index), index)
    if meta["encoder"] != "elser":
        raise ConfigError(f"index {index!r} holds {meta['encoder']} documents, not ELSER ones: build one with "
                          "'splade-es ingest --encoder elser'")
    return ElserPlan(meta["inference_id"], meta["layout"], version_tuple(engine.info.version))
