"""Optimiser, learning-rate schedule and mixed-precision policy of a training run.

Choices: the cosine schedule is stepped per optimiser step after a linear warm-up; weight decay
applies to weight matrices/kernels only (norms, biases, position embeddings and relative-position
tables get 0); CPU ``amp`` is bfloat16 autocast, CUDA bfloat16 where supported, else float16
with a ``GradScaler``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

from ..config import TrainConfig


def lr_at(step: int, total: int, cfg: TrainConfig, scale: float = 1.0) -> float:
    """Learning rate before optimiser step ``step`` (0-based): linear warm-up, then cosine.

    ``scale`` multiplies ``lr`` and ``min_lr`` (the DDP rule of :func:`lr_scale`).
    """
    lr, min_lr = cfg.lr * scale, cfg.min_lr * scale
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    t = min(1.0, max(0, step - cfg.warmup_steps) / span)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def lr_scale(cfg: TrainConfig, world: int) -> float:
    """Factor applied to ``lr`` for a global batch of ``batch_size × world`` (see ``lr_scaling``)."""
    ratio = cfg.batch_size * max(1, world) / cfg.lr_reference_batch
    if cfg.lr_scaling == "linear":
        return ratio
    if cfg.lr_scaling == "sqrt":
        return math.sqrt(ratio)
    return 1.0


#: Parameter names (last component) that never get weight decay besides 1-D tensors.
NO_DECAY_NAMES = ("absolute_pos_embed", "pos_embed", "relative_position_bias_table", "cls_token")


def no_weight_decay(name: str, param) -> bool:
    """True for norms, biases (any ≤1-D tensor) and position embeddings / relative-position tables."""
    leaf = name.rsplit(".", 1)[-1]
    return param.ndim <= 1 or leaf in NO_DECAY_NAMES or leaf.startswith("pos_")


def param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups of the trainable parameters: ``decay`` (weights) and ``no_decay`` (wd 0)."""
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if no_weight_decay(name, param) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": plain, "weight_decay": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


@dataclass(frozen=True)
class AmpPolicy:
    """Mixed-precision choice of a run: autocast dtype (``None`` = float32) and GradScaler use."""

    dtype: Any = None
    scaler: bool = False

    def autocast(self, device_type: str):
        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)

    def describe(self) -> str:
        if self.dtype is None:
            return "float32"
        return str(self.dtype).replace("torch.", "") + (" + GradScaler" if self.scaler else "")


def amp_policy(amp: bool, device_type: str, amp_dtype: str = "auto", bf16_supported: bool | None = None) -> AmpPolicy:
    """bfloat16 autocast on CPU; on CUDA bfloat16 where supported, else float16 with a GradScaler.

    Args:
        amp: the config's ``amp``.
        device_type: ``cpu`` or ``cuda``.
        amp_dtype: ``auto`` | ``bfloat16`` | ``float16`` (forces one; float16 always scales).
        bf16_supported: override of ``torch.cuda.is_bf16_supported()`` (tests).
    """
    import torch

    if not amp:
        return AmpPolicy()
    if amp_dtype == "float16":
        return AmpPolicy(torch.float16, scaler=True)
    if device_type == "cuda":
        supported = torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported
        if not supported:
            if amp_dtype == "bfloat16":
                from metaseg.errors import ConfigError

                raise ConfigError("amp_dtype=bfloat16 but this GPU does not support bfloat16; use amp_dtype=auto")
            return AmpPolicy(torch.float16, scaler=True)
    return AmpPolicy(torch.bfloat16)
