"""The training configuration: one TOML file, every value overridable with ``key=value``.

Sections mirror the recipe (DESIGN §3). Unknown sections or keys are an error that names
them, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from splade_es.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NEGATIVE_POLICIES = ("auto", "use", "drop", "ignore")
MISTRAL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ModelConfig:
    backbone: str = "mistralai/Mistral-7B-v0.3"
    mode: str = "echo"  # echo | bidirectional | causal | mlm
    max_length: int = 256  # tokens per text while training
    encode_max_length: int = 0  # the bundle's max_length (0: max_length): train short, encode whole documents
    quantization: str = "none"  # none | 8bit | 4bit (QLoRA: NF4, double quantisation, bf16 compute)
    gradient_checkpointing: bool = True
    init_adapter: str = ""  # start from this adapter (e.g. the output of --stage adapt)
    # "static": inference-free queries, a per-token weight table trained with the documents
    # (initialised from the training documents' IDF; FLOPS on documents only)
    query_encoder: str = "model"
    query_table_lr: float = 0.0  # the table's learning rate (0: optim.lr); it wants a larger one than the model


@dataclass
class LoraConfig:
    enabled: bool = True
    r: int = 16
    alpha: int = 8
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: list(MISTRAL_PROJECTIONS))


@dataclass
class LossConfig:
    temperature: float = 1.0
    lambda_q: float = 0.03  # CSPLADE's 8B setting; the Mistral-SPLADE paper gives no value
    lambda_d: float = 0.03
    lambda_warmup_steps: int = 50_000  # lambda_t = lambda * min(1, (t / T)^2)
    lambda_relu: float = 1.0  # --stage adapt: L_CLM + lambda_relu * L_ReLU


@dataclass
class OptimConfig:
    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 6000
    max_steps: int = 150_000
    grad_clip: float = 1.0


@dataclass
class BatchConfig:
    size: int = 512  # effective batch per optimizer step, over all ranks
    chunk_size: int = 32  # gradient-cache chunk (texts per forward pass)


@dataclass
class DatasetConfig:
    name: str = ""
    path: str = ""
    weight: float = 1.0
    format: str = "auto"  # auto | sentence-transformers | beir
    split: str = "train"  # BEIR layout: qrels/<split>.tsv
    # auto: used when every example has one (with only some, none are used; logged) | use: every
    # example must have one | drop: examples without one are left out (counted) | ignore
    negatives: str = "auto"


@dataclass
class DataConfig:
    seed: int = 42
    on_bad_line: str = "count"  # count | fail
    datasets: list[DatasetConfig] = field(default_factory=list)
    adapt_text: list[str] = field(default_factory=list)  # --stage adapt: unlabelled text files
    cache_dir: str = ""  # parsed, memory-mapped datasets (default: the user cache directory)


@dataclass
class RunConfig:
    output_dir: str = "runs/splade"
    seed: int = 0
    save_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    tensorboard: bool = True
    device: str = ""  # default: cuda:LOCAL_RANK when available, else cpu
    bf16: bool = True  # autocast on GPU
    # bf16 autocast on CPU as well: 1.3-2x faster where the CPU has AVX512-BF16 or AMX, much slower
    # without; "auto" turns it on only where the CPU has them
    cpu_bf16: bool | str = False


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        _check(self)

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] = ()) -> TrainConfig:
        """Read ``path`` (TOML), then apply ``section.key=value`` overrides (TOML values)."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from None
        for override in overrides:
            _apply_override(data, override)
        config = _build(cls, data, str(path))
        base = path.parent
        for dataset in config.data.datasets:
            dataset.path = str(_relative_to(base, dataset.path))
        config.data.adapt_text = [str(_relative_to(base, p)) for p in config.data.adapt_text]
        if config.data.cache_dir:
            config.data.cache_dir = str(_relative_to(base, config.data.cache_dir))
        return config

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> TrainConfig:
        return _build(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, overrides: list[str]) -> TrainConfig:
        data = self.to_dict()
        for override in overrides:
            _apply_override(data, override)
        return _build(type(self), data, "overrides")


def _relative_to(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() or not value else base / path


def _apply_override(data: dict[str, Any], override: str) -> None:
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} is not section.key=value")
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
    node[parts[-1]] = _parse_value(raw.strip())


def _parse_value(raw: str) -> Any:
    """A TOML value (``1e-4``, ``true``, ``"x"``, ``[1, 2]``); a bare word counts as a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw


def _build(cls, data: Any, where: str, prefix: str = ""):
    """``cls`` from a table; errors name the file and the dotted key (``model.mode``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'the config'} must be a table, got {data!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(prefix + k for k in unknown)} "
                          f"(known here: {', '.join(sorted(known))})")
    hints = get_type_hints(cls)
    values = {name: _coerce(hints[name], value, where, prefix + name) for name, value in data.items()}
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str, key: str) -> Any:
    if is_dataclass(hint):
        return _build(hint, value, where, key + ".")
    if get_origin(hint) is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        (item,) = get_args(hint)
        return [_coerce(item, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and type(value) is not hint:
        raise ConfigError(f"{where}: {key} must be {hint.__name__}, got {value!r}")
    return value


_CHOICES = {"model.mode": ("echo", "bidirectional", "causal", "mlm"), "model.quantization": ("none", "8bit", "4bit"),
            "data.on_bad_line": ("count", "fail"), "model.query_encoder": ("model", "static")}


def _check(config: TrainConfig) -> None:
    for dotted, choices in _CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(config, section), key)
        if value not in choices:
            raise ConfigError(f"{dotted} = {value!r}: choose {', '.join(choices)}")
    positive = {"batch.size": config.batch.size, "batch.chunk_size": config.batch.chunk_size,
                "optim.max_steps": config.optim.max_steps, "model.max_length": config.model.max_length,
                "lora.r": config.lora.r, "run.save_every": config.run.save_every, "run.log_every": config.run.log_every}
    for name, value in positive.items():
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if config.model.query_table_lr < 0:
        raise ConfigError(f"model.query_table_lr must be >= 0, got {config.model.query_table_lr}")
    if config.model.encode_max_length < 0:
        raise ConfigError(f"model.encode_max_length must be >= 0, got {config.model.encode_max_length}")
    for name in ("lambda_q", "lambda_d", "lambda_relu"):
        if getattr(config.loss, name) < 0:
            raise ConfigError(f"loss.{name} must be >= 0")
    if config.run.cpu_bf16 not in (True, False, "auto"):
        raise ConfigError(f"run.cpu_bf16 = {config.run.cpu_bf16!r}: choose true, false or \"auto\"")
    if config.loss.temperature <= 0:
        raise ConfigError("loss.temperature must be > 0")
    if not 0 <= config.lora.dropout < 1:
        raise ConfigError(f"lora.dropout must be within [0, 1), got {config.lora.dropout}")
    for i, dataset in enumerate(config.data.datasets):
        if not dataset.path:
            raise ConfigError(f"data.datasets[{i}] needs a path")
        if dataset.weight <= 0:
            raise ConfigError(f"data.datasets[{i}] ({dataset.name or dataset.path}): weight must be > 0")
        if dataset.format not in ("auto", "sentence-transformers", "beir"):
            raise ConfigError(f"data.datasets[{i}].format = {dataset.format!r}: choose auto, sentence-transformers, beir")
        if dataset.negatives not in NEGATIVE_POLICIES:
            raise ConfigError(f"data.datasets[{i}].negatives = {dataset.negatives!r}: choose {', '.join(NEGATIVE_POLICIES)}")
        dataset.name = dataset.name or Path(dataset.path).name.split(".")[0]
    names = [dataset.name for dataset in config.data.datasets]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:  # the sampler's cursors and the per-dataset negatives decision are keyed by name
        raise ConfigError(f"data.datasets: the name(s) {', '.join(map(repr, repeated))} are used more than once "
                          "(a name defaults to the file name up to its first dot); give each dataset its own name")
