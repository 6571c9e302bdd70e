"""sentence-transformers ``SparseEncoder`` directories, read and written (DESIGN §7).

Two layouts carry the sparse checkpoints people use: a masked LM with ``SpladePooling``
(naver/splade-v3: ``modules.json`` lists an ``MLMTransformer`` at the root and a pooling module in
``1_SpladePooling/``), and a ``Router`` whose query route is a ``SparseStaticEmbedding``
(tokenizer + one weight per vocabulary id) and whose document route is the masked LM and its
pooling (OpenSearch's doc-only models). Everything that changes a vector is read from the
module configs (pooling strategy, activation, max length, lower-casing); a module splade-es
cannot reproduce is a one-line error naming it, never ignored.

Module types are recognised by class name under ``sentence_transformers.``, so the 5.x names
(``sentence_transformers.sparse_encoder.models.SpladePooling``) and the newer ones
(``sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling``,
``sentence_transformers.base.modules.transformer.Transformer``) load alike. Bundles are written
with the 5.x names, which every sentence-transformers release from 5.0 on reads.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from splade_es.errors import ModelLoadError
from splade_es.model.config import CONFIG_NAME, SpladeConfig

MODULES_NAME = "modules.json"
ST_CONFIG_NAME = "config_sentence_transformers.json"
SBERT_CONFIG_NAME = "sentence_bert_config.json"
ROUTER_CONFIG_NAME = "router_config.json"
STATIC_WEIGHTS_NAME = "model.safetensors"  # SparseStaticEmbedding's file; its tensor is "weight"
_PACKAGE = "sentence_transformers."
_TRANSFORMERS = ("MLMTransformer", "Transformer")
_SUPPORTED = (*_TRANSFORMERS, "SpladePooling", "SparseStaticEmbedding", "Router")
# What splade-es writes (read by sentence-transformers 5.0 and later).
WRITE_TYPES = {
    "MLMTransformer": "sentence_transformers.sparse_encoder.models.MLMTransformer",
    "SpladePooling": "sentence_transformers.sparse_encoder.models.SpladePooling",
    "SparseStaticEmbedding": "sentence_transformers.sparse_encoder.models.SparseStaticEmbedding",
    "Router": "sentence_transformers.models.Router",
}
# Router sub-directories, named as sentence-transformers names them ({route}_{index}_{class}).
QUERY_DIR, DOCUMENT_DIR, DOCUMENT_POOLING_DIR = ("query_0_SparseStaticEmbedding", "document_0_MLMTransformer",
                                                 "document_1_SpladePooling")
# Settings that come from the sentence-transformers files; splade_config.json may not contradict them.
_ST_KEYS = ("mode", "max_length", "lowercase", "pooling", "activation")


@dataclass(frozen=True)
class StLayout:
    """What a SparseEncoder directory (``root``) holds: the masked LM's directory (weights and
    tokenizer), the settings, and for a static query route the directory of its tokenizer and weights."""

    root: Path
    document_dir: Path
    config: SpladeConfig
    static_dir: Path | None


def is_st_directory(path: str | Path) -> bool:
    return (Path(path) / MODULES_NAME).is_file()


def read_layout(root: str | Path) -> StLayout:
    """Parse a local SparseEncoder directory, with one-line errors naming file and module."""
    root = Path(root)
    modules = _read_json(root / MODULES_NAME)
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise ModelLoadError(f"{root / MODULES_NAME}: expected a list of {{idx, name, path, type}} objects")
    _check_model_card(root)
    entries = [(str(m.get("path", "")), _kind(m["type"], root / MODULES_NAME))
               for m in sorted(modules, key=lambda m: m.get("idx", 0))]
    if [kind for _, kind in entries] == ["Router"]:
        return _read_router(root, root / entries[0][0])
    document_dir, settings = _read_mlm_route(root, entries, root / MODULES_NAME)
    return StLayout(root, document_dir, _merge(root, settings, static=False), None)


def _read_router(root: Path, router_dir: Path) -> StLayout:
    where = router_dir / ROUTER_CONFIG_NAME
    config = _read_json(where)
    try:
        types, structure = config["types"], config["structure"]
    except (TypeError, KeyError):
        raise ModelLoadError(f"{where}: expected 'types' and 'structure'") from None
    routes = {}
    for route in ("query", "document"):
        names = structure.get(route)
        if not names:
            raise ModelLoadError(f"{where}: no {route!r} route (splade-es reads query/document routers)")
        routes[route] = [(name, _kind(types.get(name, "?"), where)) for name in names]
    document_dir, settings = _read_mlm_route(router_dir, routes["document"], where)
    query = routes["query"]
    if query == routes["document"]:
        return StLayout(root, document_dir, _merge(root, settings, static=False), None)
    if [kind for _, kind in query] != ["SparseStaticEmbedding"]:
        raise ModelLoadError(f"{where}: the query route {[k for _, k in query]} is not supported (splade-es reads a "
                             "SparseStaticEmbedding query route, or the document route shared by both)")
    static_dir = router_dir / query[0][0]
    frozen = _read_json(static_dir / "config.json") if (static_dir / "config.json").is_file() else {}
    if isinstance(frozen, dict) and frozen.get("path"):
        raise ModelLoadError(f"{static_dir / 'config.json'}: a SparseStaticEmbedding built from an idf.json 'path' is "
                             "not supported: save it with sentence-transformers first (it writes model.safetensors)")
    if not (static_dir / STATIC_WEIGHTS_NAME).is_file():
        raise ModelLoadError(f"{static_dir}: the SparseStaticEmbedding has no {STATIC_WEIGHTS_NAME}")
    return StLayout(root, document_dir, _merge(root, settings, static=True), static_dir)


def _read_mlm_route(base: Path, entries: list[tuple[str, str]], where: Path) -> tuple[Path, dict[str, Any]]:
    """A masked LM followed by SpladePooling: its directory and the settings they fix."""
    kinds = [kind for _, kind in entries]
    if len(kinds) != 2 or kinds[0] not in _TRANSFORMERS or kinds[1] != "SpladePooling":
        raise ModelLoadError(f"{where}: modules {kinds} are not supported (splade-es reads a masked-LM Transformer "
                             "followed by SpladePooling)")
    model_dir, pooling_dir = base / entries[0][0], base / entries[1][0]
    sbert = _read_json(model_dir / SBERT_CONFIG_NAME) if (model_dir / SBERT_CONFIG_NAME).is_file() else {}
    task = sbert.get("transformer_task", "fill-mask" if kinds[0] == "MLMTransformer" else "feature-extraction")
    if task != "fill-mask":
        raise ModelLoadError(f"{model_dir / SBERT_CONFIG_NAME}: transformer_task {task!r} gives no vocabulary logits "
                             "(SPLADE needs 'fill-mask')")
    pooling = _read_json(pooling_dir / "config.json") if (pooling_dir / "config.json").is_file() else {}
    strategy = pooling.get("pooling_strategy", "max")
    activation = pooling.get("activation_function", "relu")
    if strategy not in ("max", "sum") or activation not in ("relu", "log1p_relu"):
        raise ModelLoadError(f"{pooling_dir / 'config.json'}: pooling_strategy {strategy!r} / activation_function "
                             f"{activation!r} are not supported (max or sum; relu or log1p_relu)")
    chunk = pooling.get("chunk_size")
    if chunk is not None and not isinstance(chunk, int):  # memory only: splade-es always chunks the head
        raise ModelLoadError(f"{pooling_dir / 'config.json'}: chunk_size must be an integer or null, got {chunk!r}")
    settings = {"mode": "mlm", "max_length": _max_length(model_dir, sbert), "lowercase": bool(sbert.get("do_lower_case", False)),
                "pooling": strategy, "activation": activation}
    return model_dir, settings


def _max_length(model_dir: Path, sbert: dict[str, Any]) -> int:
    """``max_seq_length`` when set (5.x), else the tokenizer's ``model_max_length`` (what newer
    releases save) capped by the model's positions, as sentence-transformers does."""
    if isinstance(sbert.get("max_seq_length"), int):
        return sbert["max_seq_length"]
    limits = []
    tokenizer_config = model_dir / "tokenizer_config.json"
    if tokenizer_config.is_file() and isinstance(_read_json(tokenizer_config).get("model_max_length"), int):
        limits.append(_read_json(tokenizer_config)["model_max_length"])
    if (model_dir / "config.json").is_file():
        positions = _read_json(model_dir / "config.json").get("max_position_embeddings")
        if isinstance(positions, int) and positions > 0:
            limits.append(positions)
    if not limits:
        raise ModelLoadError(f"{model_dir}: no max_seq_length, model_max_length or max_position_embeddings")
    return min(limits)


def _check_model_card(root: Path) -> None:
    path = root / ST_CONFIG_NAME
    if not path.is_file():
        return
    card = _read_json(path)
    if card.get("model_type", "SparseEncoder") != "SparseEncoder":
        raise ModelLoadError(f"{path}: model_type {card['model_type']!r} is not a SparseEncoder")
    if card.get("similarity_fn_name") not in (None, "dot"):
        raise ModelLoadError(f"{path}: similarity_fn_name {card['similarity_fn_name']!r} is not supported (the "
                             "engines score by dot product)")
    prompts = {name: text for name, text in (card.get("prompts") or {}).items() if text}
    if prompts:
        raise ModelLoadError(f"{path}: prompts {sorted(prompts)} are not supported (splade-es encodes the text alone)")


def _merge(root: Path, settings: dict[str, Any], static: bool) -> SpladeConfig:
    """The sentence-transformers settings over ``splade_config.json`` (pruning and the rest),
    which may add to them but not contradict them."""
    ours = SpladeConfig.load(root)
    if ours is None:
        return replace(SpladeConfig(mode="mlm"), **settings, query_encoder="static" if static else "model")
    for key in _ST_KEYS:
        if getattr(ours, key) != settings[key]:
            raise ModelLoadError(f"{root / CONFIG_NAME}: {key} is {getattr(ours, key)!r} but the sentence-transformers "
                                 f"files say {settings[key]!r}")
    if static and not ours.static_queries:
        raise ModelLoadError(f"{root / CONFIG_NAME}: query_encoder is 'model' but the Router has a static query route")
    return ours


def _kind(type_name: str, where: Path) -> str:
    kind = type_name.rsplit(".", 1)[-1]
    if not type_name.startswith(_PACKAGE) or kind not in _SUPPORTED:
        raise ModelLoadError(f"{where}: module type {type_name!r} is not supported (splade-es reads "
                             f"{', '.join(_SUPPORTED)})")
    return kind


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: missing") from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None


def hub_directory(repo_id: str) -> Path | None:
    """A hub repository's local snapshot when it is a SparseEncoder (has modules.json); None
    when it is not or the hub cannot be reached (loading then reports the real problem)."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        hf_hub_download(repo_id, MODULES_NAME)
        return Path(snapshot_download(repo_id))
    except Exception:  # noqa: BLE001 - absence and offline are both "not a SparseEncoder"
        return None


# ------------------------------------------------------------------ writing
def write_layout(directory: Path, model, tokenizer, config: SpladeConfig, static=None) -> None:
    """Write ``model`` (a masked LM) and ``tokenizer`` as a SparseEncoder directory, with
    ``splade_config.json`` at the root; with ``static`` (a StaticQueryEncoder) as a Router whose
    query route is a SparseStaticEmbedding."""
    pooling = {"pooling_strategy": config.pooling, "activation_function": config.activation,
               "word_embedding_dimension": int(model.get_output_embeddings().weight.shape[0])}
    if static is None:
        _write_mlm(directory, model, tokenizer, config)
        _write_json(directory / "1_SpladePooling" / "config.json", pooling)
        modules = [{"idx": 0, "name": "0", "path": "", "type": WRITE_TYPES["MLMTransformer"]},
                   {"idx": 1, "name": "1", "path": "1_SpladePooling", "type": WRITE_TYPES["SpladePooling"]}]
    else:
        import torch
        from safetensors.torch import save_file

        _write_mlm(directory / DOCUMENT_DIR, model, tokenizer, config)
        _write_json(directory / DOCUMENT_POOLING_DIR / "config.json", pooling)
        query_dir = directory / QUERY_DIR
        static.tokenizer.save_pretrained(query_dir)
        _set_tokenizer_max_length(query_dir, static.max_length)
        # SparseStaticEmbedding holds one weight per tokenizer entry; ids past it never occur in a query.
        table = static.weights.detach().float().clamp(min=0).cpu()
        size = len(static.tokenizer.get_vocab())
        table = torch.cat([table, torch.zeros(max(0, size - table.shape[0]))])[:size]
        save_file({"weight": table.contiguous()}, str(query_dir / STATIC_WEIGHTS_NAME))
        _write_json(query_dir / "config.json", {"frozen": False})
        _write_json(directory / ROUTER_CONFIG_NAME, {
            "types": {QUERY_DIR: WRITE_TYPES["SparseStaticEmbedding"], DOCUMENT_DIR: WRITE_TYPES["MLMTransformer"],
                      DOCUMENT_POOLING_DIR: WRITE_TYPES["SpladePooling"]},
            "structure": {"query": [QUERY_DIR], "document": [DOCUMENT_DIR, DOCUMENT_POOLING_DIR]},
            "parameters": {"default_route": "document", "allow_empty_key": True}})
        modules = [{"idx": 0, "name": "0", "path": "", "type": WRITE_TYPES["Router"]}]
    _write_json(directory / MODULES_NAME, modules)
    _write_json(directory / ST_CONFIG_NAME, {"model_type": "SparseEncoder", "prompts": {"query": "", "document": ""},
                                             "default_prompt_name": None, "similarity_fn_name": "dot"})
    config.save(directory)


def _write_mlm(directory: Path, model, tokenizer, config: SpladeConfig) -> None:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    _write_json(directory / SBERT_CONFIG_NAME, {"max_seq_length": config.max_length, "do_lower_case": config.lowercase})


def _set_tokenizer_max_length(directory: Path, max_length: int) -> None:
    """SparseStaticEmbedding truncates at the tokenizer's ``model_max_length``: make it ours."""
    path = directory / "tokenizer_config.json"
    data = _read_json(path)
    data["model_max_length"] = max_length
    _write_json(path, data)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# Everything a layout may have written at a bundle's root; replaced together when saving over one.
LAYOUT_ENTRIES = (MODULES_NAME, ST_CONFIG_NAME, SBERT_CONFIG_NAME, ROUTER_CONFIG_NAME, "1_SpladePooling", QUERY_DIR,
                  DOCUMENT_DIR, DOCUMENT_POOLING_DIR)


def remove_entry(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
