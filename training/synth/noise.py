"""Noise and coordinate helpers of the SynthEarth layout and renderer (vectorised numpy)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def value_noise(rng: np.random.Generator, size: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1], shape ``(size, size)``, feature size about ``cell`` pixels."""
    n = int(math.ceil(size / cell)) + 2
    g = rng.random((n, n), dtype=np.float32)
    t = (np.arange(size, dtype=np.float32) + rng.random(dtype=np.float32) * cell) / cell
    i = t.astype(np.int64)
    f = t - i
    f = f * f * (3.0 - 2.0 * f)  # smoothstep
    rows = g[i] * (1 - f)[:, None] + g[i + 1] * f[:, None]  # (size, n)
    out = rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]
    return out


def fractal(rng: np.random.Generator, size: int, cell: float, octaves: int = 2) -> np.ndarray:
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        out += amp * value_noise(rng, size, max(cell, 2.0))
        total += amp
        amp *= 0.5
        cell /= 2.0
    return out / total


def rotated(size: int, theta: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rotated and randomly offset pixel coordinates ``(u, v)``."""
    yy, xx = grid(size)
    c, s = math.cos(theta), math.sin(theta)
    ou, ov = rng.uniform(0, 1000, 2)
    return xx * c + yy * s + ou, -xx * s + yy * c + ov


def cells(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Compact cell ids to ``0..k-1`` (inverse index, k)."""
    uniq, inv = np.unique(ids, return_inverse=True)
    return inv.reshape(ids.shape), len(uniq)

