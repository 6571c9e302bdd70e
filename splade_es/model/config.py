"""`splade_config.json`: every option that changes what vector a text gets.

The file travels inside a model bundle so that whoever loads the bundle encodes
exactly as whoever trained it. Unknown keys are an error (a typo must not
silently fall back to a default).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from splade_es.errors import ConfigError

CONFIG_NAME = "splade_config.json"
FORMAT_VERSION = 1

MODES = ("echo", "causal", "bidirectional", "mlm")
DECODER_MODES = ("echo", "causal", "bidirectional")
TEXT_SLOT = "{text}"
PROMPT_SLOT = "{prompt}"

# Echo templates of jakespringer/echo-embeddings, without <s>/</s> (added as token ids).
DEFAULT_QUERY_TEMPLATE = "Instruct:{prompt}\nQuery:{text}\nQuery again:{text}"
DEFAULT_DOCUMENT_TEMPLATE = "Document:{text}\nDocument again:{text}"
DEFAULT_QUERY_PROMPT = "Given a web search query, retrieve relevant passages that answer the query"
DEFAULT_BACKBONE = "mistralai/Mistral-7B-v0.3"
FEATURE_NAMING = "readable-v1"
# How positions are pooled and activated: sentence-transformers' SpladePooling settings.
POOLINGS = ("max", "sum")
ACTIVATIONS = ("relu", "log1p_relu")  # log(1 + relu(x)); log1p_relu applies log1p once more
# Where query vectors come from: the model, or a per-token weight table (inference-free).
QUERY_ENCODERS = ("model", "static")
# Keys added after format 1 first shipped: written only when not at their default, so older
# bundles keep their files and their config hash (the fingerprint indexes record).
_OPTIONAL_DEFAULTS = {"pooling": "max", "activation": "relu", "lowercase": False, "query_encoder": "model"}
# Lucene's FeatureField rejects weights below Float.MIN_NORMAL (float32), so no vector keeps one.
MIN_WEIGHT = 1.1754943508222875e-38


@dataclass(frozen=True)
class Pruning:
    """Which weights of a pooled vector are kept.

    A weight survives when it is >= ``min_weight`` and >= ``max_ratio`` x the
    vector's largest weight; then only the ``top_k`` largest remain (ties go to
    the lower token id). ``None`` / 0 disables a rule.
    """

    top_k: int | None = None
    min_weight: float = 0.0
    max_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ConfigError(f"pruning top_k must be a positive integer or null, got {self.top_k!r}")
        if not isinstance(self.min_weight, (int, float)) or self.min_weight < 0:
            raise ConfigError(f"pruning min_weight must be >= 0, got {self.min_weight!r}")
        if not isinstance(self.max_ratio, (int, float)) or not 0 <= self.max_ratio <= 1:
            raise ConfigError(f"pruning max_ratio must be within [0, 1], got {self.max_ratio!r}")

    def override(
        self, top_k: int | None = None, min_weight: float | None = None, max_ratio: float | None = None
    ) -> Pruning:
        """A copy with the given (non-None) values replaced: how CLI flags refine config defaults."""
        changes = {k: v for k, v in (("top_k", top_k), ("min_weight", min_weight), ("max_ratio", max_ratio)) if v is not None}
        return replace(self, **changes)

    def apply(self, features: Mapping[str, float]) -> dict[str, float]:
        """These rules on a ``{feature: weight}`` map (precomputed vectors), heaviest first;
        ties go to the smaller feature name, as token ids are not known here."""
        if not features:
            return {}
        threshold = max(MIN_WEIGHT, float(self.min_weight))
        if self.max_ratio > 0:
            threshold = max(threshold, max(features.values()) * self.max_ratio)
        kept = sorted(((name, weight) for name, weight in features.items() if weight >= threshold),
                      key=lambda item: (-item[1], item[0]))
        return dict(kept if self.top_k is None else kept[:self.top_k])

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Pruning:
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be an object with top_k/min_weight/max_ratio, got {data!r}")
        _reject_unknown(data, {f.name for f in fields(cls)}, where)
        return cls(**data)


@dataclass(frozen=True)
class SpladeConfig:
    """How a backbone turns text into a vocabulary-sized sparse vector (DESIGN §2)."""

    backbone: str | None = None
    mode: str = "echo"
    max_length: int = 256
    query_template: str = DEFAULT_QUERY_TEMPLATE
    document_template: str = DEFAULT_DOCUMENT_TEMPLATE
    query_prompt: str = DEFAULT_QUERY_PROMPT
    query_pruning: Pruning = field(default_factory=lambda: Pruning(top_k=128))
    document_pruning: Pruning = field(default_factory=lambda: Pruning(top_k=512))
    feature_naming: str = FEATURE_NAMING
    format_version: int = FORMAT_VERSION
    pooling: str = "max"
    activation: str = "relu"
    lowercase: bool = False
    query_encoder: str = "model"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not isinstance(self.max_length, int) or self.max_length < 1:
            raise ConfigError(f"max_length must be a positive integer, got {self.max_length!r}")
        for name, allowed in (("pooling", POOLINGS), ("activation", ACTIVATIONS), ("query_encoder", QUERY_ENCODERS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.pooling == "sum" and self.mode != "mlm":
            raise ConfigError(f"pooling 'sum' is for masked LMs (mode 'mlm'); mode is {self.mode!r}")
        if not isinstance(self.lowercase, bool):
            raise ConfigError(f"lowercase must be true or false, got {self.lowercase!r}")
        if self.feature_naming != FEATURE_NAMING:
            raise ConfigError(f"feature_naming must be {FEATURE_NAMING!r}, got {self.feature_naming!r}")
        if self.format_version != FORMAT_VERSION:
            raise ConfigError(f"format_version {self.format_version!r} is not supported (this splade-es reads {FORMAT_VERSION})")
        for name in ("query_template", "document_template"):
            template = getattr(self, name)
            if not isinstance(template, str) or template.count(TEXT_SLOT) != 2:
                raise ConfigError(f"{name} must contain {TEXT_SLOT} exactly twice (echo: the text and its repeat), got {template!r}")

    @property
    def is_mlm(self) -> bool:
        return self.mode == "mlm"

    def pruning(self, is_query: bool) -> Pruning:
        return self.query_pruning if is_query else self.document_pruning

    @property
    def static_queries(self) -> bool:
        """Queries are looked up in a weight table, not run through the model."""
        return self.query_encoder == "static"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, default in _OPTIONAL_DEFAULTS.items():
            if data[key] == default:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = CONFIG_NAME) -> SpladeConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        _reject_unknown(data, {f.name for f in fields(cls)}, where)
        values = dict(data)
        for key in ("query_pruning", "document_pruning"):
            if key in values:
                values[key] = Pruning.from_dict(values[key], f"{where}: {key}")
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    @classmethod
    def load(cls, directory: str | Path) -> SpladeConfig | None:
        """The config stored in a bundle directory, or None when it has none."""
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        return cls.from_dict(data, where=str(path))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def _reject_unknown(data: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
