"""Inference-free queries: a query is the set of its tokens, each weighted by a fixed table.

Only documents go through the model; a query needs the tokenizer and one float per vocabulary
id, so it encodes in microseconds on any CPU, with no GPU and no 7B weights at query time.
This is sentence-transformers' ``SparseStaticEmbedding`` (token presence x weight, no term
frequency) and OpenSearch's doc-only mode, for any vocabulary, the Mistral one included. Special
ids are dropped, as from every splade-es vector, and the query pruning rules apply as usual.

A bundle says ``"query_encoder": "static"`` in ``splade_config.json`` and keeps the table beside
it in ``query_weights.safetensors`` (tensor ``weight``), or, in a sentence-transformers Router
directory, in its SparseStaticEmbedding module. The table comes from corpus IDF
(:func:`idf_weights`, ``splade-es idf``) or from training.

Casing: in splade-es's own format queries are lower-cased when the bundle's ``lowercase`` is set,
as its documents are. A SparseStaticEmbedding calls its own tokenizer as saved (it reads no
``do_lower_case``), so a query route read from a Router is never lower-cased by splade-es, and a
Router splade-es writes carries the lower-casing inside the query tokenizer: both libraries
encode every query alike.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

import torch

from splade_es.errors import ModelLoadError
from splade_es.model.config import CONFIG_NAME, Pruning, SpladeConfig
from splade_es.model.features import FeatureNamer
from splade_es.model.inputs import InputBuilder
from splade_es.model.vectors import SparseVector, empty_vector, prune_rows

WEIGHTS_NAME = "query_weights.safetensors"
_ROWS = 256  # queries turned into dense rows at once (rows x vocab floats)
logger = logging.getLogger(__name__)


class StaticQueryEncoder:
    """Query vectors from a ``[vocab]`` weight table: the tokenizer is the only model."""

    def __init__(self, tokenizer, weights: torch.Tensor, config: SpladeConfig, max_length: int | None = None,
                 lowercase: bool | None = None) -> None:
        """``lowercase``: whether splade-es lower-cases queries before ``tokenizer`` (default: the
        config's; False for a SparseStaticEmbedding's tokenizer, which decides casing itself)."""
        if weights.dim() != 1:
            raise ModelLoadError(f"static query weights must be one value per vocabulary id, got shape {tuple(weights.shape)}")
        self.tokenizer = tokenizer
        self.config = config
        # Query tokens kept: the bundle's max_length, or a SparseStaticEmbedding's model_max_length.
        self.max_length = max_length or config.max_length
        self.lowercase = config.lowercase if lowercase is None else lowercase
        self.weights: torch.Tensor = weights.detach().float().cpu()  # the trainer makes it a Parameter
        self.inputs = InputBuilder(tokenizer, replace(config, lowercase=self.lowercase))
        self.namer = FeatureNamer.from_tokenizer(tokenizer, self.vocab_size)
        special = sorted({i for i in tokenizer.all_special_ids if i < self.vocab_size})
        self._special_ids = torch.tensor(special, dtype=torch.long)

    @property
    def vocab_size(self) -> int:
        return int(self.weights.shape[0])

    def resized(self, vocab_size: int) -> StaticQueryEncoder:
        """The table fitted to a model whose head is wider (ids past the tokenizer, padding to a
        multiple of 8: weight 0); a table wider than the model is an error."""
        if vocab_size < self.vocab_size:
            raise ModelLoadError(f"the static query table has {self.vocab_size} weights; the model's vocabulary "
                                 f"has only {vocab_size}")
        padded = torch.zeros(vocab_size, dtype=torch.float32)
        padded[: self.vocab_size] = self.weights
        return StaticQueryEncoder(self.tokenizer, padded, self.config, self.max_length, self.lowercase)

    @classmethod
    def load(cls, source: StaticSource) -> StaticQueryEncoder:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(source.tokenizer))
        except Exception as exc:  # noqa: BLE001 - transformers raises many types here
            raise ModelLoadError(f"could not load tokenizer from '{source.tokenizer}': {str(exc).splitlines()[0]}") from None
        if source.module:
            return cls(tokenizer, read_weights(source.weights), source.config, tokenizer.model_max_length, False)
        return cls(tokenizer, read_weights(source.weights), source.config)

    def token_ids(self, text: str) -> list[int]:
        """The query's distinct token ids (specials still in), truncated at ``max_length`` tokens."""
        return sorted(set(self.inputs.tokenize(text)[: self.max_length]))

    def dense(self, texts: Sequence[str]) -> torch.Tensor:
        """``[len(texts), vocab]`` presence x weight, special ids zeroed. The table may be a
        trainable parameter (this is differentiable); a negative weight counts as 0, as the
        saved table (clamped at 0) has it."""
        table = torch.relu(self.weights)
        presence = torch.zeros((len(texts), self.vocab_size), dtype=table.dtype, device=table.device)
        for row, text in enumerate(texts):
            ids = [i for i in self.token_ids(text) if i < self.vocab_size]
            presence[row, ids] = 1.0
        presence[:, self._special_ids.to(presence.device)] = 0.0
        return presence * table

    def table(self, size: int) -> torch.Tensor:
        """The weights a query token gets, as ``size`` values (cut or zero-padded): negatives and
        special ids 0, so a library reading the table unchanged gives the same vectors."""
        table = torch.relu(self.weights).index_fill(0, self._special_ids, 0.0)
        return torch.cat([table, torch.zeros(max(0, size - table.shape[0]))])[:size]

    def encode_queries(self, texts: str | Sequence[str], pruning: Pruning | None = None,
                       show_progress: bool | None = None) -> SparseVector | list[SparseVector]:
        """Query vectors: distinct tokens x table weight, then the query pruning rules."""
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        pruning = pruning or self.config.pruning(True)
        results = [empty_vector(self.namer)] * len(items)
        todo = [i for i, text in enumerate(items) if isinstance(text, str) and text.strip()]
        for start in range(0, len(todo), _ROWS):
            rows = todo[start:start + _ROWS]
            for index, vector in zip(rows, prune_rows(self.dense([items[i] for i in rows]), pruning, self.namer)):
                results[index] = vector
        return results[0] if single else results

    def text_features(self, text: str) -> set[str]:
        """Every feature of a static query vector is a token of the text: no expansions."""
        return set(self.namer.names(self.inputs.tokenize(text)))

    def save(self, directory: str | Path) -> Path:
        """Write the table and mark the bundle's ``splade_config.json`` as static; a
        sentence-transformers directory gets it as the library reads it (see
        :func:`~splade_es.model.st_format.add_static_queries`)."""
        from splade_es.model import st_format

        directory = Path(directory)
        if st_format.is_st_directory(directory):
            st_format.add_static_queries(directory, self)
            return directory
        write_weights(directory / WEIGHTS_NAME, self.table(self.vocab_size))
        replace(self.config, query_encoder="static").save(directory)
        return directory


def read_weights(path: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelLoadError(f"{path}: missing (a static-query bundle keeps its weight table there)")
    try:
        weights = load_file(str(path))["weight"]
    except KeyError:
        raise ModelLoadError(f"{path}: no tensor named 'weight'") from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelLoadError(f"{path}: unreadable ({str(exc).splitlines()[0]})") from None
    if not torch.isfinite(weights).all():
        raise ModelLoadError(f"{path}: the weight table holds non-finite values")
    return weights.float()


def write_weights(path: Path, weights: torch.Tensor) -> None:
    """Write the table (negatives as 0) to a temporary file renamed over ``path``: never half a table."""
    from safetensors.torch import save_file

    partial = path.with_name(f".{path.name}.partial")
    save_file({"weight": weights.detach().float().clamp(min=0).contiguous().cpu()}, str(partial))
    os.replace(partial, path)


def idf_weights(token_lists: Iterable[Sequence[int]], vocab_size: int) -> tuple[torch.Tensor, int]:
    """BM25's IDF of every vocabulary id over documents given as token ids, and the document count:
    ``log(1 + (N - df + 0.5) / (df + 0.5))``, positive for every id (an id absent from the corpus
    gets the largest weight, and matches nothing there anyway)."""
    df = torch.zeros(vocab_size, dtype=torch.float64)
    documents = 0
    for ids in token_lists:
        documents += 1
        distinct = torch.tensor(sorted({i for i in ids if 0 <= i < vocab_size}), dtype=torch.long)
        df[distinct] += 1
    if documents == 0:
        raise ModelLoadError("the corpus has no documents to compute IDF weights from")
    return torch.log1p((documents - df + 0.5) / (df + 0.5)).float(), documents


@dataclass(frozen=True)
class StaticSource:
    """Where a static-query bundle keeps its table and query tokenizer; ``module``: they are a
    SparseStaticEmbedding's, whose tokenizer truncates at its ``model_max_length`` and decides casing."""

    config: SpladeConfig
    weights: Path
    tokenizer: str | Path
    module: bool = False


def static_source(path: str) -> StaticSource | None:
    """A static-query bundle's files (ours, or a sentence-transformers Router; a directory or a hub
    id), found without loading any model; None for any other bundle."""
    from splade_es.model import backbone as bb
    from splade_es.model import st_format

    root = Path(path).expanduser()
    if not root.is_dir():
        return _hub_source(path) if not root.exists() and bb.is_hub_id(path) else None
    if st_format.is_st_directory(root):
        layout = st_format.read_layout(root)
        if not layout.config.static_queries:
            return None
        if layout.static_dir is None:
            raise ModelLoadError(f"{root / CONFIG_NAME}: query_encoder is 'static' but {st_format.MODULES_NAME} sends "
                                 "queries through the masked LM (sentence-transformers would): run 'splade-es idf' on "
                                 "it again, which rewrites it as a Router with a static query route")
        if (root / WEIGHTS_NAME).is_file():
            raise ModelLoadError(f"{root / WEIGHTS_NAME}: a Router keeps its table in {layout.static_dir.name}, which "
                                 "sentence-transformers reads: run 'splade-es idf' on it again, or delete this file")
        return StaticSource(layout.config, layout.static_dir / st_format.STATIC_WEIGHTS_NAME, layout.static_dir, True)
    config = SpladeConfig.load(root)
    if config is None or not config.static_queries:
        return None
    tokenizer_dir = root if any((root / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json",
                                                                      "tokenizer.model", "vocab.txt")) else None
    return StaticSource(config, root / WEIGHTS_NAME, tokenizer_dir or _backbone_tokenizer(config, root / CONFIG_NAME))


def _hub_source(repo_id: str) -> StaticSource | None:
    """:func:`static_source` of a hub repository, fetched (or read from the cache) the way the
    model's loading fetches it: a SparseEncoder's snapshot, else only our bundle's config, table
    and tokenizer (never the weights)."""
    from splade_es.model import backbone as bb
    from splade_es.model import st_format

    snapshot = st_format.hub_directory(repo_id)
    if snapshot is not None:
        return static_source(str(snapshot))
    config = bb.hub_config(repo_id)
    if config is None or not config.static_queries:
        return None
    weights = bb.hub_file(repo_id, WEIGHTS_NAME)
    if weights is None:
        raise ModelLoadError(f"'{repo_id}': query_encoder is 'static' but the repository has no {WEIGHTS_NAME}")
    has_tokenizer = bb.hub_file(repo_id, "tokenizer_config.json") is not None
    return StaticSource(config, weights, repo_id if has_tokenizer else _backbone_tokenizer(config, repo_id))


def _backbone_tokenizer(config: SpladeConfig, where: object) -> str:
    if not config.backbone:
        raise ModelLoadError(f"{where}: a static-query bundle needs its tokenizer files or a backbone")
    return config.backbone


def idf_table(tokenizer, config: SpladeConfig, texts: Iterable[str], vocab_size: int,
              batch_size: int = 512) -> tuple[torch.Tensor, int]:
    """:func:`idf_weights` of ``texts`` tokenised as the config tokenises them (lower-casing
    included), in batches, so a corpus streams through without being held in memory."""
    inputs = InputBuilder(tokenizer, config)

    def token_lists() -> Iterable[list[int]]:
        stream = iter(texts)
        while chunk := [inputs.cased(text) for text in islice(stream, batch_size)]:
            yield from tokenizer(chunk, add_special_tokens=False)["input_ids"]

    return idf_weights(token_lists(), vocab_size)


def corpus_idf(path: str, texts: Iterable[str], batch_size: int = 512) -> tuple[StaticQueryEncoder, int]:
    """A static query encoder for the bundle at ``path`` whose table is the IDF of ``texts``
    (tokenised as the bundle tokenises documents), and the number of documents; no model is
    loaded, only the bundle's tokenizer and configs."""
    from transformers import AutoConfig, AutoTokenizer

    from splade_es.model import backbone as bb
    from splade_es.model import st_format

    if st_format.is_st_directory(path):
        layout = st_format.read_layout(path)
        config, tokenizer_dir, model_dir = layout.config, str(layout.document_dir), str(layout.document_dir)
    else:
        source = bb.resolve_source(path, None)
        mode = None if source.config is not None else ("mlm" if bb.is_masked_lm(source.base, None) else "echo")
        config = source.config or SpladeConfig(backbone=source.base, mode=mode)
        tokenizer_dir, model_dir = source.tokenizer, source.base
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        vocab_size = int(AutoConfig.from_pretrained(model_dir).vocab_size)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types here
        raise ModelLoadError(f"could not read the tokenizer or config of '{path}': {str(exc).splitlines()[0]}") from None
    config = replace(config, query_encoder="static")
    weights, documents = idf_table(tokenizer, config, texts, vocab_size, batch_size)
    return StaticQueryEncoder(tokenizer, weights, config), documents


def load_query_encoder(path: str, adapter: str | None = None, device: str | None = None):
    """What encodes queries for ``path``: the weight table alone for a static-query bundle (no
    backbone is loaded, nor ``adapter``, which changes only how documents are encoded), else the
    full :class:`~splade_es.model.encoder.SparseEncoder`."""
    source = static_source(path)
    if source is not None:
        if adapter is not None:
            logger.debug("%s: static queries come from its weight table; adapter %s is not loaded (it changes "
                         "only the document encoder)", path, adapter)
        return StaticQueryEncoder.load(source)
    from splade_es.model.encoder import SparseEncoder

    return SparseEncoder.from_pretrained(path, adapter=adapter, device=device)

