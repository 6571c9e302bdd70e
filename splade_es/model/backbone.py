"""The language model under the encoder: loading it, running it, finding its head.

Supports any Hugging Face causal LM (optionally with a peft LoRA adapter and
bitsandbytes 8/4-bit weights) and masked-LM SPLADE checkpoints. For the
``bidirectional`` mode the causal mask is replaced by an explicit 4D
key-padding mask, which recent transformers pass to attention unchanged, and
the model's and every layer's ``is_causal`` flag is turned off (kernels that
read the flag instead of the mask would otherwise stay causal).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from splade_es.errors import ModelLoadError
from splade_es.model.config import CONFIG_NAME, SpladeConfig
from splade_es.model.inputs import Batch
from splade_es.model.pooling import VocabHead, pool_full_logits, pool_pooled_positions

_log = logging.getLogger(__name__)
# Attention implementations that honour an explicit 4D mask (so bidirectional mode is verified on them).
BIDIRECTIONAL_ATTENTION = ("eager", "sdpa")
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
        head = _mlm_head(self.lm) if is_mlm else _causal_head(self.lm)
        # A wrapped projection (a LoRA adapter on the head, say) computes more than weight and
        # bias: only a plain Linear may be applied as one; anything else takes the full forward.
        if head is not None and type(head.projection) is not torch.nn.Linear:
            head = None
        if head is not None and not _head_reproduces_logits(self.lm, self.body, head):
            _log.warning("the head of %s post-processes its logits in a way splade-es does not reproduce: "
                         "pooling runs the full forward ([batch, seq, vocab] logits, more memory)",
                         type(self.lm).__name__)
            head = None
        self.head = head
        self.vocab_size = int(self.lm.get_output_embeddings().weight.shape[0])
        # From the model, not assumed: a model wrapped again (the trainer's LoRA model, a merged
        # adapter) may have been switched to bidirectional already through an earlier Backbone.
        self._causal = getattr(self.lm.config, "is_causal", True) is not False

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "get_base_model")

    @property
    def device(self) -> torch.device:
        return self.body.get_input_embeddings().weight.device

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.body.get_input_embeddings().weight.dtype

    @property
    def attention_implementation(self) -> str:
        return getattr(self.lm.config, "_attn_implementation", None) or "eager"

    def set_attention(self, bidirectional: bool) -> None:
        """Causal or bidirectional attention: the 4D mask plus ``is_causal`` off on the model's
        config and every layer that has the flag (flash kernels read only the flag, so
        implementations other than eager and sdpa are refused for bidirectional mode)."""
        if bidirectional and not self.is_mlm and self.attention_implementation not in BIDIRECTIONAL_ATTENTION:
            raise ModelLoadError(f"bidirectional mode needs attn_implementation {' or '.join(BIDIRECTIONAL_ATTENTION)}; "
                                 f"this model uses {self.attention_implementation!r}")
        if self.is_mlm or self._causal is not bidirectional:
            return
        self.lm.config.is_causal = not bidirectional
        for module in self.lm.modules():
            if hasattr(module, "is_causal") and isinstance(module.is_causal, bool):
                module.is_causal = not bidirectional
        self._causal = not bidirectional

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, bidirectional: bool) -> torch.Tensor:
        """Last-layer states ``[batch, seq, hidden]`` (after the final norm)."""
        self.set_attention(bidirectional)
        mask = _bidirectional_mask(attention_mask, self.compute_dtype) if bidirectional else attention_mask
        return self.body(input_ids=input_ids, attention_mask=mask, **self._no_cache).last_hidden_state

    @property
    def _no_cache(self) -> dict[str, bool]:
        """A decoder keeps every layer's keys and values for generation by default (a 7B model:
        128 KiB per token, 8 GiB for a 64k-token batch); encoding never reads them back."""
        return {} if self.is_mlm else {"use_cache": False}

    def pool(self, batch: Batch, bidirectional: bool, chunk_tokens: int) -> torch.Tensor:
        """Pooled ``[batch, vocab]`` float32 weights for a batch already on the model's device."""
        if self.head is None:
            self.set_attention(bidirectional)
            mask = _bidirectional_mask(batch.attention_mask, self.compute_dtype) if bidirectional else batch.attention_mask
            logits = self.lm(input_ids=batch.input_ids, attention_mask=mask, **self._no_cache).logits
            return pool_full_logits(logits, batch.pool_mask)
        hidden = self.hidden_states(batch.input_ids, batch.attention_mask, bidirectional)
        return pool_pooled_positions(hidden, batch.pool_mask, self.head, chunk_tokens)


def _bidirectional_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive ``[batch, 1, seq, seq]`` mask: every token sees every non-padding token."""
    keys = attention_mask[:, None, None, :].to(dtype)
    seq = attention_mask.shape[1]
    return ((1.0 - keys) * torch.finfo(dtype).min).expand(-1, 1, seq, seq)


def _causal_head(lm) -> VocabHead | None:
    """The output projection plus the logit post-processing some families apply in ``forward``
    (Gemma-2/3 soft-capping, Cohere's ``logit_scale``, Granite's ``logits_scaling``). Each is
    increasing, so it commutes with the max over positions; a decreasing one takes the full forward."""
    config = lm.config
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
    scale = getattr(config, "logit_scale", None)
    if isinstance(scale, (int, float)) and scale != 1:
        if scale <= 0:
            return None
        steps.append(lambda x: x * scale)
    scaling = getattr(config, "logits_scaling", None)
    if isinstance(scaling, (int, float)) and scaling != 1:
        if scaling <= 0:
            return None
        steps.append(lambda x: x / scaling)
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        steps.append(lambda x: torch.tanh(x / cap) * cap)

    def post(logits: torch.Tensor) -> torch.Tensor:
        for step in steps:
            logits = step(logits)
        return logits

    return VocabHead(lm.get_output_embeddings(), post=post if steps else None)


def _head_reproduces_logits(lm, body, head: VocabHead) -> bool:
    """Whether ``head(body(x))`` equals the model's own logits on a few tokens: catches any
    post-processing a family adds in ``forward`` that :func:`_causal_head` does not know."""
    embeddings = body.get_input_embeddings().weight
    ids = (torch.arange(1, 6, device=embeddings.device) % embeddings.shape[0])[None]
    training = lm.training
    lm.eval()
    try:
        with torch.no_grad():
            full = lm(input_ids=ids).logits.float()
            split = head.logits(body(input_ids=ids).last_hidden_state).float()
    finally:
        lm.train(training)
    tolerance = 1e-4 if embeddings.dtype == torch.float32 else 2e-2
    return bool(torch.allclose(full, split, rtol=tolerance, atol=tolerance * float(full.abs().max().clamp(min=1))))


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
    return _hub_source(path, adapter)


def _hub_source(repo_id: str, adapter: str | None) -> Source:
    """A hub repository: full weights, or (no ``config.json`` but ``adapter_config.json``) an
    adapter bundle whose base comes from ``splade_config.json`` or the adapter's config."""
    config = hub_config(repo_id)
    if adapter is not None or hub_file(repo_id, "config.json") is not None:
        return Source(repo_id, adapter, repo_id, config)
    adapter_config = hub_file(repo_id, "adapter_config.json")
    if adapter_config is None:  # unreachable, or neither: loading the weights reports it
        return Source(repo_id, adapter, repo_id, config)
    base = (config.backbone if config and config.backbone else None) or _adapter_base(adapter_config.parent)
    tokenizer = repo_id if hub_file(repo_id, "tokenizer_config.json") is not None else base
    return Source(base, repo_id, tokenizer, config)


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


def hub_file(repo_id: str, filename: str) -> Path | None:
    """``filename`` of a hub repository, downloaded (or cached); None only when the repository
    or file does not exist or the hub cannot be reached (offline): any other error is raised."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, filename))
    except (EntryNotFoundError, RepositoryNotFoundError, OfflineModeIsEnabled):  # LocalEntryNotFound: offline
        return None


def cached_hub_file(repo_id: str, filename: str) -> Path | None:
    """``filename`` of a hub repository if the local cache holds it (its path names the snapshot's
    commit); never asks the hub, so it costs nothing offline."""
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(repo_id, filename)
    except ValueError:  # not a valid repository id
        return None
    return Path(path) if isinstance(path, str) else None


def hub_config(repo_id: str) -> SpladeConfig | None:
    """A hub repo's splade_config.json; None when it has none or the hub is unreachable
    (loading the weights next then reports the real problem). A malformed one is an error."""
    path = hub_file(repo_id, CONFIG_NAME)
    return None if path is None else SpladeConfig.load(path.parent)


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
        kwargs.update(_quantization_kwargs(quantization, dtype, device, is_mlm))
    auto = AutoModelForMaskedLM if is_mlm else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(source.base, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"could not load model weights from '{source.base}': {_first_line(exc)}") from None
    if quantization is None:
        model = model.to(device)
    else:
        check_head_unquantised(model)
    if source.adapter is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, source.adapter)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"could not load adapter from '{source.adapter}': {_first_line(exc)}") from None
    model.eval()
    return Backbone(model, is_mlm)


def check_head_unquantised(lm) -> None:
    """The vocabulary head must stay a plain floating-point Linear under 8/4-bit loading: its
    logits are the features, and quantising them would move every weight."""
    head = lm.get_output_embeddings()
    if type(head) is not torch.nn.Linear or not head.weight.dtype.is_floating_point:
        raise ModelLoadError(f"the output head of {type(lm).__name__} was quantised ({type(head).__name__}, "
                             f"{head.weight.dtype}); it must stay a floating-point Linear")


def _quantization_kwargs(quantization: str, dtype: torch.dtype, device: torch.device, is_mlm: bool = False) -> dict:
    if quantization not in QUANTIZATIONS:
        raise ModelLoadError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(f"quantization={quantization!r} needs bitsandbytes: pip install bitsandbytes")
    if device.type != "cuda":
        raise ModelLoadError(f"quantization={quantization!r} needs a CUDA GPU (bitsandbytes); device is {device}")
    from transformers import BitsAndBytesConfig

    # Named, not left to transformers' default: the head stays unquantised (checked after loading).
    skip = {"llm_int8_skip_modules": ["cls", "vocab_projector", "lm_head"] if is_mlm else ["lm_head"]}
    if quantization == "8bit":
        config = BitsAndBytesConfig(load_in_8bit=True, **skip)
    else:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            **skip,
        )
    return {"quantization_config": config, "device_map": {"": device.index or 0}}


def special_token_ids(tokenizer, vocab_size: int) -> list[int]:
    """Ids that are never features: ``all_special_ids`` plus every added token flagged special
    (a ``tokenizer.json`` Mistral lists its 768 control tokens only there)."""
    special = set(tokenizer.all_special_ids)
    special.update(i for i, token in getattr(tokenizer, "added_tokens_decoder", {}).items() if token.special)
    return sorted(i for i in special if 0 <= i < vocab_size)


def load_tokenizer(source: Source):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source.tokenizer)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"could not load tokenizer from '{source.tokenizer}': {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
