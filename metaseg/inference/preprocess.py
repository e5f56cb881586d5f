"""Checks and normalisation of what callers hand to the predictor: the RGB tile and the window size.

Pixel scaling (uint8 → float in [0, 1]) happens on the predictor's device
(:meth:`metaseg.inference.Predictor._to_tensor`); the model normalises by its own mean/std.
"""

from __future__ import annotations

import numpy as np


def as_rgb(rgb: np.ndarray) -> np.ndarray:
    """An H×W×3 uint8 view of ``rgb`` (grey → 3 channels, alpha dropped); ValueError otherwise."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (read tiles with metaseg.geo.read_tile), got {rgb.dtype}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError("image is empty")
    return rgb[..., :3]


def window_size(window: int | tuple[int, int] | None, default: int) -> tuple[int, int]:
    """(height, width) of the windows: ``default`` square when None; ValueError under 16 px."""
    if window is None:
        return default, default
    if isinstance(window, int):
        wh = ww = window
    else:
        wh, ww = (int(v) for v in window)
    if wh < 16 or ww < 16:
        raise ValueError(f"window must be at least 16 px, got {wh}x{ww}")
    return wh, ww
