"""Device choice and mixed-precision policy.

``pick_device()``: CUDA when available, else CPU. ``autocast_dtype(device)``: bfloat16 on CUDA
devices that support it, float16 on older GPUs, ``None`` (full fp32) on CPU.
"""

from __future__ import annotations

import torch

from metaseg.errors import ConfigError


def pick_device(pref: str | torch.device | None = None) -> torch.device:
    """Choose the compute device.

    Args:
        pref: ``None``/``"auto"`` (CUDA if available else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.

    Raises:
        ConfigError: CUDA requested but not available, or an unknown device string.
    """
    if isinstance(pref, torch.device):
        pref = str(pref)
    if pref in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(pref)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {pref!r}; use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA was requested but no CUDA device is available; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {pref!r}; use cpu, cuda or cuda:N")
    return dev


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """bfloat16 on capable CUDA devices, float16 on other GPUs, None on CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device | str):
    """Context manager of inference: CUDA autocast with :func:`autocast_dtype`; on CPU float32,
    also inside an enclosing autocast (e.g. validation during a ``amp=true`` CPU training run)."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return torch.autocast("cpu", enabled=False)
    return torch.autocast(device_type="cuda", dtype=dtype)
