"""What an index looks like and what each of its documents holds, per encoder.

- ``splade``: BEIR's text fields, the sparse vector and its top terms (the model encodes here);
- ``text``: the text fields alone (the BM25 baseline's index, for a fair size comparison);
- ``elser``: the text fields and an ELSER field Elasticsearch fills itself (see :mod:`.elser`).

The ingester writes any of them the same way: create or check the index, then bulk-load
:meth:`Layout.document` bodies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from splade_es.errors import ConfigError
from splade_es.toolkit import elser
from splade_es.io.corpus import Document
from splade_es.toolkit.engines.base import Engine, EngineInfo
from splade_es.toolkit.mappings import (VectorIndexSpec, check_compatible, choose_field_type, config_hash, index_body,
                                        model_id, recorded_meta, text_index_body)

Features = dict[str, float]
ENCODERS = ("splade", "text", "elser")


class Layout(ABC):
    encoder: str
    needs_vectors: bool = False

    def prepare(self, engine: Engine) -> None:
        """Whatever must exist before the index (a pipeline); check what the cluster lacks."""

    def identity(self) -> dict[str, Any]:
        """What a resumed load must find unchanged: the encoder and, for vectors, model and settings."""
        return {"encoder": self.encoder}

    @abstractmethod
    def create_body(self, info: EngineInfo) -> dict[str, Any]:
        """The create-index body."""

    def check(self, mappings: dict[str, dict[str, Any]], index: str) -> None:
        """Refuse to add documents to an index built another way."""
        encoder = recorded_meta(mappings, index)["encoder"]
        if encoder != self.encoder:
            raise ConfigError(f"index {index!r} holds {encoder} documents, not {self.encoder} ones: "
                              "write to a new index")

    @abstractmethod
    def document(self, document: Document, features: Features) -> dict[str, Any]:
        """The engine document for a corpus record (and its vector, for splade)."""


def text_fields(document: Document) -> dict[str, str]:
    """BEIR's two fields: the first text field as ``title``, the rest joined as ``text``."""
    values = list(document.fields.values())
    if len(values) > 1:
        return {"title": values[0], "text": "\n".join(v for v in values[1:] if v)}
    return {"text": values[0]} if values else {}


def top_terms(features: Features, k: int) -> list[str]:
    """The ``k`` heaviest feature names: the keyword array stored beside a vector."""
    return sorted(features, key=features.get, reverse=True)[:k]


class SpladeLayout(Layout):
    encoder = "splade"
    needs_vectors = True

    def __init__(self, spec: VectorIndexSpec, terms_top_k: int = 32) -> None:
        self.spec, self.terms_top_k = spec, terms_top_k

    @classmethod
    def for_encoder(cls, encoder, model: str, adapter: str | None, info: EngineInfo, pruning,
                    field: str = "splade", field_type: str | None = None,
                    chunking: dict[str, int] | None = None) -> SpladeLayout:
        """The layout of vectors a loaded encoder writes with ``pruning`` (and long documents in
        windows, with ``chunking``: recorded beside the pruning, since both change the vectors);
        the field type is the requested one, else the best the engine stores."""
        where = f"{info.kind} {info.version} at {info.location}"
        return cls(VectorIndexSpec(model_id(model, adapter), config_hash(encoder.config.to_dict()),
                                   {**pruning.__dict__, **(chunking or {})}, field,
                                   choose_field_type(info.capabilities, field_type, where), encoder.config.feature_naming))

    def identity(self) -> dict[str, Any]:
        meta = self.spec.meta()
        meta.pop("splade_es_version")
        return {"encoder": self.encoder, **meta}

    def create_body(self, info: EngineInfo) -> dict[str, Any]:
        return index_body(info, self.spec)

    def check(self, mappings: dict[str, dict[str, Any]], index: str) -> None:
        check_compatible(mappings, self.spec, index)

    def document(self, document: Document, features: Features) -> dict[str, Any]:
        """Text fields, the vector, and its top terms as keywords (Kibana can aggregate those)."""
        body: dict[str, Any] = text_fields(document)
        body[self.spec.field] = features
        body[self.spec.terms_field] = top_terms(features, self.terms_top_k)
        return body


class TextLayout(Layout):
    encoder = "text"

    def create_body(self, info: EngineInfo) -> dict[str, Any]:
        return text_index_body(info, {"encoder": "text"})

    def document(self, document: Document, features: Features) -> dict[str, Any]:
        return text_fields(document)


class ElserLayout(Layout):
    encoder = "elser"

    def __init__(self, plan: elser.ElserPlan) -> None:
        self.plan = plan

    def prepare(self, engine: Engine) -> None:
        elser.check_available(engine, self.plan)
        if self.plan.layout == "pipeline":
            engine.put_pipeline(self.plan.pipeline, elser.pipeline_body(self.plan))

    def identity(self) -> dict[str, Any]:
        return self.plan.meta()

    def create_body(self, info: EngineInfo) -> dict[str, Any]:
        return elser.index_body(self.plan, info)

    def check(self, mappings: dict[str, dict[str, Any]], index: str) -> None:
        super().check(mappings, index)
        recorded = recorded_meta(mappings, index)["inference_id"]
        if recorded != self.plan.inference_id:
            raise ConfigError(f"index {index!r} was expanded by {recorded!r}, not {self.plan.inference_id!r}: "
                              "write to a new index")

    def document(self, document: Document, features: Features) -> dict[str, Any]:
        return {**text_fields(document), **elser.content(document, self.plan)}
