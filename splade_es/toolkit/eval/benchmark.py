"""Every method on every dataset: index what is missing, evaluate, report.

Each method reads the index its encoder builds — ``{prefix}{dataset}-text`` for BM25,
``{prefix}{dataset}-splade-{model}`` for splade and hybrid, ``{prefix}{dataset}-elser`` for
ELSER — so index sizes compare like for like. An index already holding the whole corpus is
reused: a rerun only evaluates.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from splade_es.errors import ConfigError, SpladeError
from splade_es.io.corpus import read_corpus
from splade_es.toolkit.elser import DEFAULT_INFERENCE_ID, plan_for
from splade_es.toolkit.engines.base import Engine
from splade_es.toolkit.eval.beir import BeirDataset
from splade_es.toolkit.eval.harness import EvalSettings, evaluate_index
from splade_es.toolkit.eval.report import write_report
from splade_es.toolkit.eval.runner import EvalResult
from splade_es.toolkit.ingest import (IngestOptions, VectorSource, encoded_vectors, file_identity, ingest_corpus,
                                      loaded_record, model_files_identity, no_vectors, same_identity)
from splade_es.toolkit.layouts import ElserLayout, Layout, SpladeLayout, TextLayout
from splade_es.toolkit.mappings import config_hash, model_id

ENCODER_OF = {"bm25": "text", "splade": "splade", "hybrid": "splade", "elser": "elser"}


@dataclass
class BenchmarkSettings:
    methods: Sequence[str]
    model: str | None = None
    adapter: str | None = None
    index_prefix: str = "bench-"
    split: str = "test"
    k: int = 1000
    batch_size: int = 64
    encode_batch: int = 64
    inference_id: str = DEFAULT_INFERENCE_ID
    device: str | None = None
    show_progress: bool = True


class Benchmark:
    def __init__(self, engine: Engine, settings: BenchmarkSettings, out: Path,
                 log: Callable[[str], None] = print) -> None:
        unknown = [m for m in settings.methods if m not in ENCODER_OF]
        if unknown:
            raise ConfigError(f"unknown method {unknown[0]!r}: choose {', '.join(ENCODER_OF)}")
        needs_model = any(ENCODER_OF[m] == "splade" for m in settings.methods)
        if needs_model and not settings.model:
            raise ConfigError("the splade and hybrid methods need --model")
        self.engine, self.settings, self.out, self.log = engine, settings, out, log
        self._encoder = None

    def run(self, datasets: Sequence[BeirDataset]) -> tuple[list[EvalResult], list[Path]]:
        results = []
        for dataset in datasets:
            indices = {encoder: self.ensure_index(dataset, encoder)
                       for encoder in dict.fromkeys(ENCODER_OF[m] for m in self.settings.methods)}
            for method in self.settings.methods:
                settings = EvalSettings(method, self.settings.model, self.settings.adapter, k=self.settings.k,
                                        batch_size=self.settings.batch_size, device=self.settings.device,
                                        show_progress=self.settings.show_progress, encoder=self._encoder)
                result = evaluate_index(self.engine, dataset, indices[ENCODER_OF[method]], settings)
                self.log(f"{dataset.name} {method}: nDCG@10 {result.metrics['ndcg@10']:.4f}, "
                         f"p50 {result.latency_ms['p50']:.1f} ms")
                results.append(result)
        context = {"time": time.time(), "engine": f"{self.engine.info.kind} {self.engine.info.version} at "
                   f"{self.engine.info.location}", "model": self.settings.model, "split": self.settings.split,
                   "k": self.settings.k, "methods": list(self.settings.methods),
                   "datasets": [d.name for d in datasets]}
        return results, write_report(results, self.out, context)

    # ---------------------------------------------------------------- indexing
    def ensure_index(self, dataset: BeirDataset, encoder: str) -> str:
        """The index of ``dataset`` for ``encoder``: reused only when a complete load of this very corpus
        file is recorded in it and it still holds that many documents; rebuilt when it changed since;
        an interrupted load resumed. Refused unless the load ends complete."""
        layout = self.layout(encoder)
        index = index_name(self.settings.index_prefix, dataset.name, encoder, self._model_tag())
        corpus = file_identity(dataset.corpus.path)
        loaded = None
        if self.engine.exists(index):
            layout.check(self.engine.mappings(index), index)
            loaded = loaded_record(self.engine, index)
            if (loaded and same_identity(loaded.get("corpus"), corpus)
                    and self.engine.count(index) == loaded.get("documents")):
                self.log(f"{index}: reusing ({loaded['documents']} documents, a complete load of this corpus)")
                return index
        self.log(f"{index}: indexing {dataset.name} ({encoder})")
        self.out.mkdir(parents=True, exist_ok=True)
        if loaded is not None:  # changed since its complete load (another corpus, or documents lost): rebuild
            self.engine.delete_index(index)
        options = IngestOptions(index=index, encode_batch=self.settings.encode_batch, resume=True, resend_refused=True,
                                failures_path=self.out / f"failures-{index}.jsonl", state_dir=self.out / "state",
                                show_progress=self.settings.show_progress)
        identity = {"corpus": corpus, "vectors": None, "corpus_format": None,
                    "model_files": model_files_identity(self.settings.model, self.settings.adapter)
                    if encoder == "splade" else None}
        try:  # an interrupted load of this corpus resumes
            summary = ingest_corpus(self.engine, layout, read_corpus(dataset.corpus), self._vectors(encoder),
                                    options, identity)
        except ConfigError as exc:
            if "cannot resume" not in str(exc):
                raise
            options.resume = False  # the interrupted load was of another corpus file: start over
            summary = ingest_corpus(self.engine, layout, read_corpus(dataset.corpus), self._vectors(encoder),
                                    options, identity)
        if not summary.complete:
            raise SpladeError(f"{index}: refusing to evaluate an incomplete index: {summary.problem}")
        return index

    def layout(self, encoder: str) -> Layout:
        if encoder == "text":
            return TextLayout()
        if encoder == "elser":
            return ElserLayout(plan_for(self.engine.info, self.settings.inference_id))
        model = self.encoder()
        return SpladeLayout.for_encoder(model, self.settings.model, self.settings.adapter, self.engine.info,
                                        model.config.pruning(False))

    def encoder(self):
        if self._encoder is None:
            from splade_es.model.encoder import SparseEncoder

            self._encoder = SparseEncoder.from_pretrained(self.settings.model, adapter=self.settings.adapter,
                                                          device=self.settings.device)
        return self._encoder

    def _model_tag(self) -> str:
        if not self.settings.model or not any(ENCODER_OF[m] == "splade" for m in self.settings.methods):
            return ""
        identity = model_id(self.settings.model, self.settings.adapter) + str(config_hash(
            self.encoder().config.to_dict()))
        return hashlib.sha1(identity.encode()).hexdigest()[:8]

    def _vectors(self, encoder: str) -> VectorSource:
        if encoder != "splade":
            return no_vectors
        model = self.encoder()
        return encoded_vectors(model, model.config.pruning(False))


def index_name(prefix: str, dataset: str, encoder: str, model_tag: str = "") -> str:
    """A valid index name: lowercase, no characters the engines refuse."""
    raw = f"{prefix}{dataset}-{encoder}" + (f"-{model_tag}" if encoder == "splade" and model_tag else "")
    return re.sub(r"[^a-z0-9_.-]+", "-", raw.lower()).lstrip("-_.")
