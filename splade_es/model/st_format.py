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

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from splade_es.errors import ModelLoadError
from splade_es.model.config import CONFIG_NAME, SpladeConfig
from splade_es.model.static import WEIGHTS_NAME, read_weights, write_weights

MODULES_NAME = "modules.json"
ST_CONFIG_NAME = "config_sentence_transformers.json"
SBERT_CONFIG_NAME = "sentence_bert_config.json"
ROUTER_CONFIG_NAME = "router_config.json"
README_NAME = "README.md"  # the model card: stays at the root whatever the layout
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
# sentence_bert_config.json keys splade-es follows (5.x and 6.x); unpad_inputs changes speed only.
_SBERT_KEYS = frozenset({"transformer_task", "max_seq_length", "do_lower_case", "query_length", "document_length",
                         "processing_kwargs", "modality_config", "module_output_name", "query_expansion",
                         "unpad_inputs"})
# Keys whose only value splade-es reproduces: a fill-mask model's own logits, no query expansion.
_SBERT_FIXED = {"modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
                "module_output_name": "token_embeddings", "query_expansion": None}
# SpladePooling's config; the dimension (5.x: word_embedding_dimension) is the vocabulary's, and
# chunk_size bounds memory only.
_POOLING_KEYS = frozenset({"pooling_strategy", "activation_function", "embedding_dimension",
                           "word_embedding_dimension", "chunk_size"})


@dataclass(frozen=True)
class StLayout:
    """What a SparseEncoder directory (``root``) holds: the masked LM's directory (weights and
    tokenizer) and its SpladePooling's, the settings, and for a static query route the directory
    of its tokenizer and weights."""

    root: Path
    document_dir: Path
    pooling_dir: Path
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
    document_dir, pooling_dir, settings = _read_mlm_route(root, entries, root / MODULES_NAME, serves_queries=True)
    return StLayout(root, document_dir, pooling_dir, _merge(root, settings, static=False), None)


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
    query = routes["query"]
    document_dir, pooling_dir, settings = _read_mlm_route(router_dir, routes["document"], where,
                                                          serves_queries=query == routes["document"])
    if query == routes["document"]:
        return StLayout(root, document_dir, pooling_dir, _merge(root, settings, static=False), None)
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
    return StLayout(root, document_dir, pooling_dir, _merge(root, settings, static=True), static_dir)


def _read_mlm_route(base: Path, entries: list[tuple[str, str]], where: Path,
                    serves_queries: bool) -> tuple[Path, Path, dict[str, Any]]:
    """A masked LM followed by SpladePooling: their directories and the settings they fix.
    ``serves_queries``: queries go through this route too (no static query route)."""
    kinds = [kind for _, kind in entries]
    if len(kinds) != 2 or kinds[0] not in _TRANSFORMERS or kinds[1] != "SpladePooling":
        raise ModelLoadError(f"{where}: modules {kinds} are not supported (splade-es reads a masked-LM Transformer "
                             "followed by SpladePooling)")
    model_dir, pooling_dir = base / entries[0][0], base / entries[1][0]
    max_length, lowercase = _read_sbert(model_dir, kinds[0], serves_queries)
    path = pooling_dir / "config.json"
    pooling = _read_json(path) if path.is_file() else {}
    _reject_unknown_keys(path, pooling, _POOLING_KEYS)
    strategy = pooling.get("pooling_strategy", "max")
    activation = pooling.get("activation_function", "relu")
    if strategy not in ("max", "sum") or activation not in ("relu", "log1p_relu"):
        raise ModelLoadError(f"{path}: pooling_strategy {strategy!r} / activation_function "
                             f"{activation!r} are not supported (max or sum; relu or log1p_relu)")
    chunk = pooling.get("chunk_size")
    if chunk is not None and not isinstance(chunk, int):  # memory only: splade-es always chunks the head
        raise ModelLoadError(f"{path}: chunk_size must be an integer or null, got {chunk!r}")
    settings = {"mode": "mlm", "max_length": max_length, "lowercase": lowercase, "pooling": strategy,
                "activation": activation}
    return model_dir, pooling_dir, settings


def _read_sbert(model_dir: Path, kind: str, serves_queries: bool) -> tuple[int, bool]:
    """``max_length`` and ``lowercase`` from a masked LM's sentence_bert_config.json. Every key
    is either followed exactly or refused in one line naming it: a setting read past would give
    other vectors than the library's (a shorter ``document_length`` alone moved them by 0.18)."""
    path = model_dir / SBERT_CONFIG_NAME
    sbert = _read_json(path) if path.is_file() else {}
    _reject_unknown_keys(path, sbert, _SBERT_KEYS)
    task = sbert.get("transformer_task", "fill-mask" if kind == "MLMTransformer" else "feature-extraction")
    if task != "fill-mask":
        raise ModelLoadError(f"{path}: transformer_task {task!r} gives no vocabulary logits (SPLADE needs 'fill-mask')")
    for key, allowed in _SBERT_FIXED.items():
        if sbert.get(key, allowed) != allowed:
            raise ModelLoadError(f"{path}: {key} {sbert[key]!r} is not supported (splade-es reproduces {allowed!r})")
    lowercase = sbert.get("do_lower_case", False)
    if not isinstance(lowercase, bool):
        raise ModelLoadError(f"{path}: do_lower_case must be true or false, got {lowercase!r}")
    lengths = _task_lengths(path, sbert, _max_length(model_dir, sbert))
    if serves_queries and lengths["query"] != lengths["document"]:
        raise ModelLoadError(f"{path}: queries are cut at {lengths['query']} tokens and documents at "
                             f"{lengths['document']} (query_length / document_length): splade-es cuts both at one "
                             "max_length")
    return lengths["document"], lowercase


def _task_lengths(path: Path, sbert: dict[str, Any], default: int) -> dict[str, int]:
    """Tokens kept for queries and documents, as the library's Transformer truncates them:
    ``processing_kwargs`` text ``max_length``, else ``query_length`` / ``document_length``, else
    the tokenizer's limit. Any other processing keyword is refused."""
    processing = sbert.get("processing_kwargs") or {}
    if not isinstance(processing, dict) or not all(isinstance(v, dict) for v in processing.values()):
        raise ModelLoadError(f"{path}: processing_kwargs must map modalities to objects, got {processing!r}")
    others = sorted(f"{group}.{key}" for group, values in processing.items() for key in values
                    if (group, key) != ("text", "max_length"))
    if others:
        raise ModelLoadError(f"{path}: processing_kwargs {', '.join(others)} not supported (splade-es follows only "
                             "text.max_length)")
    text = processing.get("text", {})
    lengths = {}
    for task in ("query", "document"):
        # The text max_length wins over the task's even when null (then the tokenizer's limit applies).
        key, value = (("processing_kwargs.text.max_length", text["max_length"]) if "max_length" in text
                      else (f"{task}_length", sbert.get(f"{task}_length")))
        value = default if value is None else value
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelLoadError(f"{path}: {key} must be a positive integer, got {value!r}")
        lengths[task] = value
    return lengths


def _reject_unknown_keys(path: Path, data: Any, known: frozenset[str]) -> None:
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    unknown = sorted(set(data) - known)
    if unknown:
        raise ModelLoadError(f"{path}: unknown key(s) {', '.join(unknown)} (splade-es cannot tell whether they change "
                             "vectors)")


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
        _write_mlm(directory / DOCUMENT_DIR, model, tokenizer, config)
        _write_json(directory / DOCUMENT_POOLING_DIR / "config.json", pooling)
        _write_router(directory, static)
        modules = _ROUTER_MODULES
    _write_json(directory / MODULES_NAME, modules)
    _write_json(directory / ST_CONFIG_NAME, {"model_type": "SparseEncoder", "prompts": {"query": "", "document": ""},
                                             "default_prompt_name": None, "similarity_fn_name": "dot"})
    config.save(directory)


_ROUTER_MODULES = [{"idx": 0, "name": "0", "path": "", "type": WRITE_TYPES["Router"]}]


def _write_router(directory: Path, static) -> None:
    """The Router's config and its query route, a SparseStaticEmbedding that encodes as ``static``
    does; the document route's modules go to DOCUMENT_DIR and DOCUMENT_POOLING_DIR."""
    query_dir = directory / QUERY_DIR
    static.tokenizer.save_pretrained(query_dir)
    _fit_query_tokenizer(query_dir, static.max_length, static.lowercase)
    write_weights(query_dir / STATIC_WEIGHTS_NAME, static.table(len(static.tokenizer.get_vocab())))
    _write_json(query_dir / "config.json", {"frozen": False})
    _write_json(directory / ROUTER_CONFIG_NAME, {
        "types": {QUERY_DIR: WRITE_TYPES["SparseStaticEmbedding"], DOCUMENT_DIR: WRITE_TYPES["MLMTransformer"],
                  DOCUMENT_POOLING_DIR: WRITE_TYPES["SpladePooling"]},
        "structure": {"query": [QUERY_DIR], "document": [DOCUMENT_DIR, DOCUMENT_POOLING_DIR]},
        "parameters": {"default_route": "document", "allow_empty_key": True}})


def _write_mlm(directory: Path, model, tokenizer, config: SpladeConfig) -> None:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    _write_json(directory / SBERT_CONFIG_NAME, {"max_seq_length": config.max_length, "do_lower_case": config.lowercase})


def _fit_query_tokenizer(directory: Path, max_length: int, lowercase: bool) -> None:
    """SparseStaticEmbedding calls its tokenizer as saved: it truncates at ``model_max_length`` and
    reads no ``do_lower_case``, so our query length, and our lower-casing as a ``Lowercase``
    normaliser in tokenizer.json (loaded as written, not rebuilt from the tokenizer class's options)."""
    path = directory / "tokenizer_config.json"
    data = _read_json(path)
    data["model_max_length"] = max_length
    if lowercase:
        fast = directory / "tokenizer.json"
        if not fast.is_file():
            raise ModelLoadError(f"{directory}: lower-cased static queries need a fast tokenizer (tokenizer.json) to "
                                 "carry the lower-casing into the sentence-transformers query route")
        backend = _read_json(fast)
        backend["normalizer"] = {"type": "Sequence",
                                 "normalizers": [{"type": "Lowercase"}, *filter(None, [backend.get("normalizer")])]}
        _write_json(fast, backend)
        data["tokenizer_class"] = "PreTrainedTokenizerFast"
    _write_json(path, data)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ------------------------------------------------------------------ static queries in place
def add_static_queries(root: Path, static) -> None:
    """Give the SparseEncoder directory ``root`` ``static``'s query table in place, as the library
    reads it too: a Router's SparseStaticEmbedding gets the table in its own file; a masked LM with
    SpladePooling becomes the Router :func:`write_layout` writes, its files moved unchanged into the
    document route. Built beside the bundle and swapped in, so a failure leaves the bundle as it was."""
    layout = read_layout(root)
    if layout.static_dir is not None:
        table = layout.static_dir / STATIC_WEIGHTS_NAME
        write_weights(table, static.table(int(read_weights(table).shape[0])))
        remove_entry(root / WEIGHTS_NAME)  # where earlier releases put it; the library never read it
        return
    if layout.document_dir != root:
        raise ModelLoadError(f"{root}: only a masked LM saved at the bundle's root, or a Router with a static query "
                             "route, takes a table in place: write a new bundle with --output")
    # Staged inside the bundle (a hidden folder): the same file system, so links and renames work
    # even when the bundle is a mount of its own.
    staging = Path(tempfile.mkdtemp(prefix=".splade-es-staging.", dir=root))
    try:
        stay = {MODULES_NAME, ST_CONFIG_NAME, CONFIG_NAME, WEIGHTS_NAME, README_NAME, layout.pooling_dir.name}
        # Router entries left at the root by a rewrite that died part-way are replaced, never moved.
        leftovers = [root / name for name in _ROUTER_ENTRIES if name not in stay]
        moved = [item for item in root.iterdir()
                 if item.name not in stay and item.name not in _ROUTER_ENTRIES and not item.name.startswith(".")]
        for item in moved:
            _link(item, staging / DOCUMENT_DIR / item.name)
        _link(layout.pooling_dir, staging / DOCUMENT_POOLING_DIR)
        _write_router(staging, static)
        _write_json(staging / MODULES_NAME, _ROUTER_MODULES)
        replace(layout.config, query_encoder="static").save(staging)
        commit_staged(staging, root, [*moved, *leftovers, layout.pooling_dir, root / WEIGHTS_NAME])
    except OSError as exc:
        raise ModelLoadError(f"{root}: could not rewrite the bundle in place ({exc.strerror or exc}); "
                             "write a new bundle with --output") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _link(source: Path, target: Path) -> None:
    """``source`` at ``target`` too: hard links (no bytes copied), a copy where links are refused."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, copy_function=link)
    else:
        link(str(source), str(target))


def commit_staged(staging: Path, target: Path, stale: Iterable[Path]) -> None:
    """Move everything in ``staging`` into ``target``, ``modules.json`` last (what sentence-transformers
    loads follows it), then remove the ``stale`` entries nothing replaced. A file is replaced in one
    rename (no moment without it); a directory is removed first, which ``os.replace`` requires."""
    if os.stat(staging).st_dev != os.stat(target).st_dev:
        raise OSError(errno.EXDEV, f"{staging} and {target} are on different file systems")
    written = {item.name for item in staging.iterdir()}
    for item in sorted(staging.iterdir(), key=lambda item: item.name == MODULES_NAME):
        if item.is_dir() or (target / item.name).is_dir():
            remove_entry(target / item.name)
        os.replace(item, target / item.name)
    for path in stale:
        if path.name not in written:
            remove_entry(path)


# What a Router adds at a bundle's root besides modules.json and the configs.
_ROUTER_ENTRIES = (ROUTER_CONFIG_NAME, QUERY_DIR, DOCUMENT_DIR, DOCUMENT_POOLING_DIR)
# Everything a layout may have written at a bundle's root; replaced together when saving over one.
LAYOUT_ENTRIES = (MODULES_NAME, ST_CONFIG_NAME, SBERT_CONFIG_NAME, ROUTER_CONFIG_NAME, "1_SpladePooling", QUERY_DIR,
                  DOCUMENT_DIR, DOCUMENT_POOLING_DIR)


def remove_entry(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
