"""`SparseEncoder`: text in, vocabulary-sized sparse vectors out.

Echo-Mistral-SPLADE and CSPLADE (decoder LLM, optional LoRA adapter) as well
as classic masked-LM SPLADE checkpoints, behind one API modelled on
sentence-transformers: ``encode_queries`` / ``encode_documents`` /
``save_pretrained`` / ``from_pretrained``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import overload

import torch
from tqdm.auto import tqdm

from splade_es.errors import InputError, ModelLoadError
from splade_es.model import backbone as bb
from splade_es.model import pool_modes, st_format
from splade_es.model.config import DEFAULT_BACKBONE, Pruning, SpladeConfig
from splade_es.model.features import FeatureNamer
from splade_es.model.inputs import Batch, InputBuilder, plan_batches
from splade_es.model.static import WEIGHTS_NAME, StaticQueryEncoder
from splade_es.model.vectors import SparseVector, empty_vector, prune_rows

# Files that decide what a bundle loads as; replaced together when saving over a bundle.
_MODEL_FILES = ("config.json", "generation_config.json", "adapter_config.json", "adapter_model.*",
                "model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin", WEIGHTS_NAME,
                *st_format.LAYOUT_ENTRIES)
# Long inputs get a progress bar; a handful of texts does not.
PROGRESS_MIN_TEXTS = 256


class SparseEncoder:
    """Encodes queries and documents into pruned sparse vectors.

    Build it with :meth:`from_pretrained`. ``batch_tokens`` caps the padded
    tokens in one forward pass; ``head_chunk_tokens`` caps how many positions go
    through the LM head at once (peak memory ``chunk x vocab``). With ``query_encoder =
    "static"`` queries come from ``static_queries`` (a weight table), documents from the model.
    """

    def __init__(
        self,
        backbone: bb.Backbone,
        tokenizer,
        config: SpladeConfig,
        batch_tokens: int | None = None,
        max_batch_size: int = 512,
        head_chunk_tokens: int = 1024,
        static_queries: StaticQueryEncoder | None = None,
    ) -> None:
        if backbone.is_mlm != config.is_mlm:
            raise ModelLoadError(f"mode {config.mode!r} does not fit a {'masked' if backbone.is_mlm else 'causal'} LM")
        if config.static_queries != (static_queries is not None):
            raise ModelLoadError("a static query encoder goes with query_encoder 'static' in the config, and only there")
        if static_queries is not None and static_queries.vocab_size != backbone.vocab_size:
            static_queries = static_queries.resized(backbone.vocab_size)
        self.static_queries = static_queries
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        self.inputs = InputBuilder(tokenizer, config)
        self.namer = FeatureNamer.from_tokenizer(tokenizer, backbone.vocab_size)
        self.batch_tokens = batch_tokens or (65536 if backbone.device.type == "cuda" else 8192)
        self.max_batch_size = max_batch_size
        self.head_chunk_tokens = head_chunk_tokens
        backbone.set_attention(config.mode == "bidirectional")  # refuses attention kernels it cannot verify
        self._special_ids = torch.tensor(bb.special_token_ids(tokenizer, backbone.vocab_size), dtype=torch.long)

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str = DEFAULT_BACKBONE,
        adapter: str | None = None,
        quantization: str | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        mode: str | None = None,
        **encoder_kwargs,
    ) -> SparseEncoder:
        """Load a causal LM, a causal LM + LoRA adapter, a masked LM, a saved bundle, or a
        sentence-transformers SparseEncoder directory or hub id.

        ``splade_config.json`` in the directory sets the options; without it
        decoders default to ``echo`` and masked LMs to ``mlm``. ``mode`` overrides.
        """
        layout = _st_layout(str(path_or_hub_id), adapter)
        source = bb.resolve_source(str(path_or_hub_id), adapter) if layout is None else \
            bb.Source(str(layout.document_dir), None, str(layout.document_dir), layout.config)
        torch_device = bb.resolve_device(device)
        torch_dtype = bb.resolve_dtype(dtype, torch_device)
        requested = mode or (source.config.mode if source.config else None)
        is_mlm = bb.is_masked_lm(source.base, requested)
        config = source.config or SpladeConfig(backbone=source.base)
        config = replace(config, mode=requested or ("mlm" if is_mlm else "echo"), backbone=config.backbone or source.base)
        backbone = bb.load_model(source, is_mlm, quantization, torch_device, torch_dtype)
        tokenizer = bb.load_tokenizer(source)
        static = None
        if config.static_queries:
            from splade_es.model.static import static_source

            # The table lives with the config that says static: the bundle given, not an adapter added to it.
            found = static_source(str(layout.root) if layout is not None else str(path_or_hub_id))
            if found is None:
                raise ModelLoadError(f"'{path_or_hub_id}': query_encoder is 'static' but no weight table was found")
            static = StaticQueryEncoder.load(found)
        return cls(backbone, tokenizer, config, static_queries=static, **encoder_kwargs)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write a bundle (adapter or full weights, tokenizer, splade_config.json).

        A masked LM (without an adapter) is written as a sentence-transformers SparseEncoder
        directory, a Router with a SparseStaticEmbedding query route when queries are static,
        so ``sentence_transformers.SparseEncoder(directory)`` loads it with the same vectors.
        Decoder bundles keep this format (sentence-transformers has no echo or causal SPLADE);
        their static table goes to ``query_weights.safetensors``.

        Files are written to a temporary directory first, so a failure leaves
        no half-written bundle behind. Saving over an existing bundle replaces
        its model files; other files in the directory are left alone.
        """
        target = Path(directory).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        # Inside an existing bundle (the same file system as what it replaces), beside a new one.
        staging = Path(tempfile.mkdtemp(prefix=".splade-es-staging.", dir=target if target.is_dir() else target.parent))
        try:
            self._write(staging)
            if not target.exists():
                os.replace(staging, target)
                return target
            # Stale weights/configs would change what loads.
            st_format.commit_staged(staging, target, [stale for pattern in _MODEL_FILES for stale in target.glob(pattern)])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def use_static_queries(self, static: StaticQueryEncoder | None) -> None:
        """Encode queries with ``static``'s weight table from now on (None: with the model again)."""
        self.config = replace(self.config, query_encoder="model" if static is None else "static")
        self.inputs = InputBuilder(self.tokenizer, self.config)
        if static is not None and static.vocab_size != self.vocab_size:
            static = static.resized(self.vocab_size)
        self.static_queries = static

    def _write(self, directory: Path) -> None:
        static = self.static_queries
        if self.backbone.is_mlm and not self.backbone.is_peft:
            st_format.write_layout(directory, self.backbone.model, self.tokenizer, self.config, static)
            return
        self.backbone.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        self.config.save(directory)
        if static is not None:
            self.static_queries.save(directory)

    def merge_adapter(self) -> None:
        """Fold a LoRA adapter into the base weights (faster inference; same vectors)."""
        if self.backbone.is_peft:
            self.backbone = bb.Backbone(self.backbone.model.merge_and_unload(), self.backbone.is_mlm)

    # ---------------------------------------------------------------- encoding
    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def vocab_size(self) -> int:
        return self.backbone.vocab_size

    def forward(self, batch: Batch) -> torch.Tensor:
        """Pooled ``[batch, vocab]`` weights with special ids zeroed; differentiable (training)."""
        batch = batch.to(self.device)
        pooled = pool_modes.pool(self.backbone, batch, self.config, self.head_chunk_tokens)
        return pooled.index_fill(1, self._special_ids.to(pooled.device), 0.0)

    @overload
    def encode_queries(self, texts: str, **kwargs) -> SparseVector: ...
    @overload
    def encode_queries(self, texts: Sequence[str], **kwargs) -> list[SparseVector]: ...

    def encode_queries(self, texts, **kwargs):
        """Query vectors (query template, query pruning defaults; the weight table when static)."""
        if self.static_queries is not None:
            _check_texts([texts] if isinstance(texts, str) else texts)
            return self.static_queries.encode_queries(texts, **kwargs)
        return self._encode(texts, is_query=True, **kwargs)

    @overload
    def encode_documents(self, texts: str, **kwargs) -> SparseVector: ...
    @overload
    def encode_documents(self, texts: Sequence[str], **kwargs) -> list[SparseVector]: ...

    def encode_documents(self, texts, **kwargs):
        """Document vectors (document template, document pruning defaults).

        With ``chunk_tokens`` a text longer than that is not cut: it is encoded in windows of
        ``chunk_tokens`` tokens overlapping by ``chunk_overlap``, and the windows' weights are
        max-pooled into one vector (the max the pooling already takes over tokens), then pruned.
        """
        return self._encode(texts, is_query=False, **kwargs)

    def _encode(
        self,
        texts: str | Sequence[str],
        is_query: bool,
        pruning: Pruning | None = None,
        show_progress: bool | None = None,
        chunk_tokens: int | None = None,
        chunk_overlap: int = 0,
    ) -> SparseVector | list[SparseVector]:
        single = isinstance(texts, str)
        items = [texts] if single else _check_texts(texts)
        pruning = pruning or self.config.pruning(is_query)
        results: list[SparseVector] = [empty_vector(self.namer)] * len(items)
        todo = [i for i, text in enumerate(items) if text.strip()]
        if chunk_tokens is None:
            encoded, owners = self.inputs.encode([items[i] for i in todo], is_query), list(range(len(todo)))
        else:
            if self.config.pooling != "max":
                raise InputError(f"chunking max-pools the windows, as max pooling does; this model pools by "
                                 f"{self.config.pooling!r}")
            encoded, owners = self.inputs.encode_windows([items[i] for i in todo], is_query, chunk_tokens, chunk_overlap)
        windows_left = Counter(owners)
        partial: dict[int, torch.Tensor] = {}  # running max of a text's windows until its last one is in
        batches = plan_batches([len(e) for e in encoded], self.batch_tokens, self.max_batch_size)
        if show_progress is None:
            show_progress = len(todo) >= PROGRESS_MIN_TEXTS
        bar = tqdm(total=len(todo), unit="text", desc="queries" if is_query else "documents", disable=not show_progress)
        with torch.inference_mode(), bar:
            for batch_indices in batches:
                pooled = self.forward(self.inputs.collate([encoded[i] for i in batch_indices]))
                rows, finished = [], []
                for row, index in enumerate(batch_indices):
                    owner = owners[index]
                    weights = pooled[row] if owner not in partial else torch.maximum(partial.pop(owner), pooled[row])
                    windows_left[owner] -= 1
                    if windows_left[owner]:
                        partial[owner] = weights.clone()  # not a view that keeps the whole batch alive
                    else:
                        rows.append(weights)
                        finished.append(owner)
                if rows:
                    for owner, vector in zip(finished, prune_rows(torch.stack(rows), pruning, self.namer)):
                        results[todo[owner]] = vector
                bar.update(len(finished))
        return results[0] if single else results

    def text_features(self, text: str) -> set[str]:
        """Feature names of the text's own tokens; a vector's other features are expansions."""
        return set(self.namer.names(self.inputs.tokenize(text)))

    def decode(self, vector: SparseVector, top_k: int | None = None) -> list[tuple[str, float]]:
        """``[(feature, weight)]``, heaviest first: what a vector means in words."""
        return vector.top(top_k)


def _st_layout(path: str, adapter: str | None) -> st_format.StLayout | None:
    """The sentence-transformers layout of a local directory or hub id, if it has one."""
    local = Path(path).expanduser()
    root = local if local.is_dir() else (None if local.exists() or not bb.is_hub_id(path) else st_format.hub_directory(path))
    if root is None or not st_format.is_st_directory(root):
        return None
    if adapter is not None:
        raise ModelLoadError(f"'{path}' is a sentence-transformers SparseEncoder; an adapter cannot be applied to it")
    return st_format.read_layout(root)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if not isinstance(texts, Sequence):
        raise InputError(f"texts must be a string or a sequence of strings, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"texts[{i}] is {type(text).__name__}, expected str")
    return list(texts)
