"""The language model under the encoder: loading it, running it, finding its head.

Supports any Hugging Face causal LM (optionally with a peft LoRA adapter and
bitsandbytes 8/4-bit weights) and masked-LM SPLADE checkpoints. For the
``bidirectional`` mode the causal mask is replaced by an explicit 4D
key-padding mask, which recent transformers pass to attention unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from splade_es.errors import ModelLoadError
from splade_es.model.config import CONFIG_NAME, SpladeConfig
from splade_es.model.inputs import Batch
from splade_es.model.pooling import VocabHead, pool_full_logits, pool_pooled_positions

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.txt")
QUANTIZATIONS = ("8bit", "4bit")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Backbone:
    """A loaded LM split into its transformer body and its vocabulary head."""

    def __init__(self, model, is_mlm: bool) -> None:
        self.model = model
        self.is_mlm = is_mlm
        self.lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.body = getattr(self.lm, self.lm.base_model_prefix)
        head = _mlm_head(self.lm) if is_mlm else VocabHead(self.lm.get_output_embeddings())
        # A wrapped projection (a LoRA adapter on the head, say) computes more than weight and
        # bias: only a plain Linear may be applied as one; anything else takes the full forward.
        self.head = head if head is not None and type(head.projection) is torch.nn.Linear else None
        self.vocab_size = int(self.lm.get_output_embeddings().weight.shape[0])

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "get_base_model")

    @property
    def device(self) -> torch.device:
        return self.body.get_input_embeddings().weight.device

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.body.get_input_embeddings().weight.dtype

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, bidirectional: bool) -> torch.Tensor:
        """Last-layer states ``[batch, seq, hidden]`` (after the final norm)."""
        mask = _bidirectional_mask(attention_mask, self.compute_dtype) if bidirectional else attention_mask
        return self.body(input_ids=input_ids, attention_mask=mask).last_hidden_state

    def pool(self, batch: Batch, bidirectional: bool, chunk_tokens: int) -> torch.Tensor:
        """Pooled ``[batch, vocab]`` float32 weights for a batch already on the model's device."""
        if self.head is None:
            mask = _bidirectional_mask(batch.attention_mask, self.compute_dtype) if bidirectional else batch.attention_mask
            logits = self.lm(input_ids=batch.input_ids, attention_mask=mask).logits
            return pool_full_logits(logits, batch.pool_mask)
        hidden = self.hidden_states(batch.input_ids, batch.attention_mask, bidirectional)
        return pool_pooled_positions(hidden, batch.pool_mask, self.head, chunk_tokens)


def _bidirectional_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive ``[batch, 1, seq, seq]`` mask: every token sees every non-padding token."""
    keys = attention_mask[:, None, None, :].to(dtype)
    seq = attention_mask.shape[1]
    return ((1.0 - keys) * torch.finfo(dtype).min).expand(-1, 1, seq, seq)


def _mlm_head(lm) -> VocabHead | None:
    """The MLM head (transform, decoder) of known families; None -> full forward."""
    if hasattr(lm, "cls"):  # BERT family (naver/splade-*)
        return VocabHead(lm.cls.predictions.decoder, lm.cls.predictions.transform)
    if hasattr(lm, "vocab_projector"):  # DistilBERT (opensearch neural sparse)
        return VocabHead(lm.vocab_projector,
                         lambda h: lm.vocab_layer_norm(lm.activation(lm.vocab_transform(h))))
    if hasattr(lm, "lm_head"):  # RoBERTa / XLM-R
        head = lm.lm_head
        return VocabHead(head.decoder, lambda h: head.layer_norm(F.gelu(head.dense(h))))
    return None


@dataclass(frozen=True)
class Source:
    """Where the weights, adapter and tokenizer come from."""

    base: str
    adapter: str | None
    tokenizer: str
    config: SpladeConfig | None


def resolve_source(path: str, adapter: str | None) -> Source:
    """Classify ``path`` as a full model, an adapter bundle or a hub id, with one-line errors."""
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelLoadError(f"model path '{path}' is a file; expected a model directory or a hub id")
        config = SpladeConfig.load(local)
        has_weights = (local / "config.json").is_file()
        has_adapter = (local / "adapter_config.json").is_file()
        if not (has_weights or has_adapter):
            raise ModelLoadError(f"'{path}' is not a model directory: it has no config.json or adapter_config.json")
        tokenizer = str(local)
        if has_weights:
            base = str(local)
        else:
            if adapter is not None:
                raise ModelLoadError(f"'{path}' is already an adapter bundle; do not pass another adapter")
            adapter = str(local)
            base = (config.backbone if config and config.backbone else None) or _adapter_base(local)
            if not any((local / name).is_file() for name in _TOKENIZER_FILES):
                tokenizer = base
        return Source(base, adapter, tokenizer, config)
    if not is_hub_id(path):
        raise ModelLoadError(f"model directory '{path}' does not exist (and it is not a hub id)")
    return Source(path, adapter, path, _hub_config(path))


def is_hub_id(path: str) -> bool:
    """Whether ``path`` reads as ``owner/name`` (or ``name``) on the model hub, not as a path."""
    return not path.startswith((".", "/", "~")) and bool(_HUB_ID.match(path))


def _adapter_base(directory: Path) -> str:
    try:
        base = json.loads((directory / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (json.JSONDecodeError, OSError) as exc:
        raise ModelLoadError(f"{directory / 'adapter_config.json'}: unreadable ({exc})") from None
    if not base:
        raise ModelLoadError(f"{directory}: adapter has no base model (set 'backbone' in {CONFIG_NAME})")
    return base


def _hub_config(repo_id: str) -> SpladeConfig | None:
    """A hub repo's splade_config.json; None when it has none or the hub is unreachable
    (loading the weights next then reports the real problem)."""
    try:
        from huggingface_hub import hf_hub_download

        return SpladeConfig.load(Path(hf_hub_download(repo_id, CONFIG_NAME)).parent)
    except Exception:  # noqa: BLE001 - absence and offline are both "no config"
        return None


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ModelLoadError(f"unknown device {device!r} (use cpu, cuda, cuda:N or mps)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but no CUDA GPU is available")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """bf16 on GPU, fp32 on CPU unless asked otherwise."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r} (use {', '.join(DTYPES)})")
    return DTYPES[dtype]


def is_masked_lm(base: str, mode: str | None) -> bool:
    """Masked LM or causal LM, from the requested mode or the checkpoint's architectures."""
    from transformers import AutoConfig

    try:
        hf_config = AutoConfig.from_pretrained(base)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types here
        raise ModelLoadError(f"could not load model config from '{base}': {_first_line(exc)}") from None
    architectures = hf_config.architectures or []
    masked = any("MaskedLM" in name for name in architectures)
    causal = any("CausalLM" in name for name in architectures)
    if mode is None:
        return masked and not causal
    if mode == "mlm" and causal and not masked:
        raise ModelLoadError(f"mode 'mlm' needs a masked-LM model; '{base}' is {', '.join(architectures)}")
    if mode != "mlm" and masked and not causal:
        raise ModelLoadError(f"mode {mode!r} needs a causal LM; '{base}' is {', '.join(architectures)} (use mode 'mlm')")
    return mode == "mlm"


def load_model(
    source: Source, is_mlm: bool, quantization: str | None, device: torch.device, dtype: torch.dtype
) -> Backbone:
    """Weights (+ adapter) on ``device``; bitsandbytes is imported only for 8/4-bit."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    kwargs: dict = {"dtype": dtype}
    if quantization is not None:
        kwargs.update(_quantization_kwargs(quantization, dtype, device))
    auto = AutoModelForMaskedLM if is_mlm else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(source.base, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"could not load model weights from '{source.base}': {_first_line(exc)}") from None
    if quantization is None:
        model = model.to(device)
    if source.adapter is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, source.adapter)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"could not load adapter from '{source.adapter}': {_first_line(exc)}") from None
    model.eval()
    return Backbone(model, is_mlm)


def _quantization_kwargs(quantization: str, dtype: torch.dtype, device: torch.device) -> dict:
    if quantization not in QUANTIZATIONS:
        raise ModelLoadError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(f"quantization={quantization!r} needs bitsandbytes: pip install bitsandbytes")
    if device.type != "cuda":
        raise ModelLoadError(f"quantization={quantization!r} needs a CUDA GPU (bitsandbytes); device is {device}")
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    return {"quantization_config": config, "device_map": {"": device.index or 0}}


def load_tokenizer(source: Source):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source.tokenizer)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"could not load tokenizer from '{source.tokenizer}': {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
