"""Device choice and mixed-precision policy.

``pick_device()``: CUDA when available, else CPU (the one device choice; strict one-line errors). ``autocast_dtype(device)``: bfloat16 on CUDA
devices that support it, float16 on older GPUs, ``None`` (full fp32) on CPU.
"""

from __future__ import annotations

import torch

from metaseg.errors import ConfigError


def pick_device(pref: str | torch.device | None = None, *, hint: str = "use --device cpu") -> torch.device:
    """Choose the compute device: the one device choice of the project (CLIs, predictor, training).

    Args:
        pref: ``None``/``""``/``"auto"`` → CUDA when available, else CPU; ``"cpu"``; ``"cuda"``
            or ``"cuda:N"``; a ``torch.device`` is treated as its string.
        hint: the advice ending the one-line error when CUDA is asked for but missing (a CLI says
            ``use --device cpu``, a training config ``use device=cpu or auto``).

    Raises:
        ConfigError: (one line) CUDA requested but not available, ``cuda:N`` beyond the visible
            GPUs, an unknown device string, or a device type other than cpu/cuda (e.g. ``mps``).
            The choice is the strictest of the former copies: every bad value is refused here
            rather than failing later inside torch with a multi-line traceback.
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
        raise ConfigError(f"CUDA was requested but no CUDA device is available; {hint}")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {pref!r}; use cpu, cuda or cuda:N")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {pref!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
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
