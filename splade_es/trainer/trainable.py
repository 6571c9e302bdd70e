"""The trainable encoder: a SparseEncoder whose backbone carries a LoRA adapter (or is fully
trainable), with the LM head frozen so logits keep meaning "vocabulary token j"."""

from __future__ import annotations

from dataclasses import replace

import torch

from splade_es.errors import ConfigError
from splade_es.model import backbone as bb
from splade_es.model.encoder import SparseEncoder
from splade_es.trainer.config import TrainConfig


def build_encoder(config: TrainConfig, device: torch.device) -> SparseEncoder:
    """Load the backbone (4-bit for QLoRA), attach LoRA per the config, freeze the head."""
    model_cfg = config.model
    quantization = None if model_cfg.quantization == "none" else model_cfg.quantization
    dtype = torch.bfloat16 if quantization else torch.float32  # trainable weights stay float32
    encoder = SparseEncoder.from_pretrained(model_cfg.backbone, device=str(device), dtype=dtype,
                                            quantization=quantization, mode=model_cfg.mode)
    encoder.config = replace(encoder.config, max_length=model_cfg.max_length, mode=model_cfg.mode)
    encoder.inputs.config = encoder.config
    model = encoder.backbone.model
    if quantization:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=model_cfg.gradient_checkpointing)
    elif model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = config.lora
    if lora.enabled and "lm_head" in lora.target_modules:
        raise ConfigError("lora.target_modules must not hold lm_head: the head stays frozen so logits keep "
                          "meaning vocabulary tokens")
    if model_cfg.init_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, model_cfg.init_adapter, is_trainable=True)
        _match_adapter(model, config)
    elif lora.enabled:
        from peft import LoraConfig, get_peft_model

        missing = [name for name in lora.target_modules
                   if not any(module.endswith(name) for module, _ in model.named_modules())]
        if missing:
            raise ConfigError(f"lora.target_modules {missing} are not modules of {model_cfg.backbone}")
        model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=list(lora.target_modules), bias="none"))
    if model_cfg.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    encoder.backbone = bb.Backbone(model, encoder.backbone.is_mlm)
    head = encoder.backbone.lm.get_output_embeddings()
    for parameter in head.parameters():
        parameter.requires_grad_(False)
    if quantization:
        bb.check_head_unquantised(encoder.backbone.lm)
    if not trainable_parameters(encoder):
        raise ConfigError("nothing to train: enable lora, or give lora.enabled = false for full fine-tuning")
    encoder.backbone.model.train()
    return encoder


def _match_adapter(model, config: TrainConfig) -> None:
    """``model.init_adapter`` continues an adapter, so its shape must be what ``lora.*`` asks
    for (a mismatch is an error naming both); dropout, which has no weights, follows ``lora.dropout``."""
    saved = model.peft_config["default"]
    lora = config.lora
    wanted = {"r": lora.r, "alpha": lora.alpha, "target_modules": sorted(lora.target_modules)}
    found = {"r": saved.r, "alpha": saved.lora_alpha, "target_modules": sorted(saved.target_modules)}
    different = [f"lora.{key} = {wanted[key]!r} but the adapter has {found[key]!r}" for key in wanted
                 if wanted[key] != found[key]]
    if different:
        raise ConfigError(f"model.init_adapter {config.model.init_adapter}: {'; '.join(different)}")
    saved.lora_dropout = lora.dropout
    for module in model.modules():
        if isinstance(getattr(module, "lora_dropout", None), torch.nn.ModuleDict):
            for name, dropout in module.lora_dropout.items():
                module.lora_dropout[name] = torch.nn.Dropout(lora.dropout) if lora.dropout else torch.nn.Identity()


def trainable_parameters(encoder: SparseEncoder) -> list[torch.nn.Parameter]:
    return [p for _, p in _named_trainable(encoder)]


def _named_trainable(encoder: SparseEncoder) -> list[tuple[str, torch.nn.Parameter]]:
    """The backbone's trainable weights, and a static query table being trained."""
    named = [(k, v) for k, v in encoder.backbone.model.named_parameters() if v.requires_grad]
    table = encoder.static_queries.weights if encoder.static_queries is not None else None
    return named + ([(STATIC_TABLE, table)] if isinstance(table, torch.nn.Parameter) else [])


STATIC_TABLE = "static_queries.weight"


def trainable_state(encoder: SparseEncoder) -> dict[str, torch.Tensor]:
    """Only what training changes (the adapter, or every unfrozen weight, and a query table)."""
    return {k: v.detach().clone() for k, v in _named_trainable(encoder)}


def load_trainable_state(encoder: SparseEncoder, state: dict[str, torch.Tensor]) -> None:
    parameters = dict(encoder.backbone.model.named_parameters()) | dict(_named_trainable(encoder))
    unknown = sorted(set(state) - set(parameters))
    if unknown:
        raise ConfigError(f"checkpoint holds parameters this model lacks, e.g. {unknown[0]}")
    with torch.no_grad():
        for name, value in state.items():
            parameters[name].copy_(value)
