"""MetaSegNet models: image/text encoders, CAFDecoder, FPN head, baseline, losses and registry.

Exports are resolved lazily, so ``from metaseg.models.registry import list_variants`` (or
``metaseg.models.config``) does not import torch; touching ``create_model``, ``SegModel`` etc.
imports torch, timm and transformers (several seconds).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MetaSegNetConfig": "config",
    "MetaSegNetLoss": "losses",
    "ce_loss": "losses",
    "compute_losses": "losses",
    "dice_loss": "losses",
    "VARIANTS": "registry",
    "build_model": "registry",
    "create_model": "registry",
    "list_variants": "registry",
    "variant_config": "registry",
    "SegModel": "segmodel",
    "SegOutput": "segmodel",
    "TextEncoder": "text_encoder",
    "TextFeatures": "text_encoder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'metaseg.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"metaseg.models.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
