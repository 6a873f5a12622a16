"""LoRA on the fused qkv projections, through ``peft``.

TempMe's LoRA (rank 8 on the fused qkv input projection of every attention layer of
both towers; A kaiming-uniform, B zero; no scaling) is exactly peft's default LoRA on
the ``attn.qkv`` Linear layers with ``lora_alpha == r``.
"""
from typing import Optional

from peft import LoraConfig, inject_adapter_in_model
from torch import nn

#: Every fused qkv projection of both towers (peft matches the full module name).
QKV_TARGETS = r'.*\.attn\.qkv'
ADAPTER = 'default'


def inject_lora(model: nn.Module, rank: int = 8, alpha: Optional[float] = None,
                dropout: float = 0.0, target_modules: str = QKV_TARGETS) -> nn.Module:
    """Add LoRA adapters to ``model`` in place; ``alpha`` defaults to ``rank`` (scale 1)."""
    if not isinstance(rank, int) or rank <= 0:
        raise ValueError(f'lora.rank must be a positive integer, got {rank!r}')
    config = LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha,
                        lora_dropout=dropout, target_modules=target_modules, bias='none')
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    if not any(is_lora_parameter(name) for name, _ in model.named_parameters()):
        raise ValueError(f'lora.target_modules {target_modules!r} matched no module')
    return model


def is_lora_parameter(name: str) -> bool:
    return '.lora_A.' in name or '.lora_B.' in name


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA delta into its frozen weight (for inference) and drop the adapters."""
    from peft.tuners.lora import LoraLayer
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            parent_name, _, child = name.rpartition('.')
            parent = model.get_submodule(parent_name) if parent_name else model
            module.merge(safe_merge=True)
            setattr(parent, child, module.get_base_layer())
    return model
