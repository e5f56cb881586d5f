"""MetaSegNet models: image/text encoders, CAFDecoder, FPN head, baseline, losses and registry.

Importing this package imports torch, timm and transformers (several seconds).
"""

from metaseg.models.config import MetaSegNetConfig
from metaseg.models.losses import MetaSegNetLoss, ce_loss, compute_losses, dice_loss
from metaseg.models.registry import VARIANTS, build_model, create_model, list_variants, variant_config
from metaseg.models.segmodel import SegModel, SegOutput
from metaseg.models.text_encoder import TextEncoder, TextFeatures

__all__ = [
    "VARIANTS",
    "MetaSegNetConfig",
    "MetaSegNetLoss",
    "SegModel",
    "SegOutput",
    "TextEncoder",
    "TextFeatures",
    "build_model",
    "ce_loss",
    "compute_losses",
    "create_model",
    "dice_loss",
    "list_variants",
    "variant_config",
]
