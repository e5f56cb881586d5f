"""Step 2 of a SynthEarth tile: render the material map into an RGB image.

Each material gets its style's colour (jittered per tile) and a texture, then the special
materials their own patterns (tree crowns, crop parcels with rows, the two-tone ambiguous strips,
roofs with gables and cast shadows, road centre lines, snow and river ice for the cold style),
and the whole tile a random brightness, contrast, hue shift and sensor noise. As in the layout,
the order of the random draws is part of the output.
"""

from __future__ import annotations

import numpy as np

from training.synth.noise import fractal, value_noise
from training.synth.styles import Style
from training.synth.zones import (
    M_BRIGHT,
    M_CROP,
    M_DARK,
    M_GRASS,
    M_PAVED,
    M_RIVER,
    M_ROAD,
    M_ROOF,
    M_SOIL,
    M_STRIPED,
    M_TREE,
    MATERIALS,
)

#: Per-material texture amplitudes ``(low, mid, fine)``: low/mid noise multiply, fine noise adds.
_TEXTURE = {
    M_GRASS: (0.25, 0.25, 6.0), M_SOIL: (0.2, 0.15, 8.0), M_PAVED: (0.1, 0.08, 7.0), M_ROAD: (0.05, 0.05, 5.0),
    M_TREE: (0.15, 0.0, 5.0), M_RIVER: (0.1, 0.06, 2.0), M_CROP: (0.05, 0.06, 3.0), M_ROOF: (0.0, 0.03, 3.0),
    M_STRIPED: (0.06, 0.04, 3.0), M_BRIGHT: (0.02, 0.02, 2.5), M_DARK: (0.05, 0.03, 1.5),
}  # fmt: skip


def _jit(rng: np.random.Generator, col: tuple[int, int, int], s: float = 7.0) -> np.ndarray:
    """A style colour with a random per-tile shift (σ = ``s``)."""
    return np.asarray(col, np.float32) + rng.normal(0, s, 3).astype(np.float32)


def _base(rng: np.random.Generator, mat: np.ndarray, style: Style, fine, mid, low) -> np.ndarray:
    """Every pixel in its material's (jittered) colour, textured."""
    base = np.zeros((len(MATERIALS), 3), np.float32)
    base[M_GRASS], base[M_SOIL], base[M_TREE] = _jit(rng, style.grass), _jit(rng, style.soil), _jit(rng, style.tree)
    base[M_RIVER], base[M_PAVED], base[M_ROAD] = _jit(rng, style.water), _jit(rng, style.paved), _jit(rng, style.road)
    base[M_BRIGHT], base[M_DARK] = _jit(rng, style.bright, 5.0), _jit(rng, style.dark, 3.0)
    base[M_CROP] = _jit(rng, style.crops[0])
    base[M_ROOF] = _jit(rng, style.roofs[0])
    img = base[mat]  # (H, W, 3)
    tex = np.zeros((len(MATERIALS), 3), np.float32)
    for m, amp in _TEXTURE.items():
        tex[m] = amp
    t = tex[mat]
    img *= (1.0 + t[..., 0] * low + t[..., 1] * mid)[..., None]
    img += (t[..., 2] * fine)[..., None]
    return img


def _vegetation(rng: np.random.Generator, img: np.ndarray, mat: np.ndarray, params: dict, style: Style,
                fine, low) -> None:
    """Tree crowns, crop parcels (own colour, faint rows) and the ambiguous two-tone strips."""
    size = mat.shape[0]
    tree = mat == M_TREE
    if tree.any():  # crowns as small bright/dark blobs
        crowns = value_noise(rng, size, float(rng.uniform(2.5, 4.5))) - 0.5
        img[tree] *= (1.0 + 0.7 * crowns[tree])[:, None]
    crop = mat == M_CROP
    if crop.any() and "crop_color" in params:
        cols = np.stack([_jit(rng, c, 6.0) for c in style.crops])
        img[crop] = cols[params["crop_color"][crop]] * (1.0 + 0.05 * low[crop])[:, None]
        rows = (np.floor(params["row_u"][crop] / 3.0) % 2) * 2 - 1
        img[crop] *= (1.0 + 0.04 * rows)[:, None]
        img[crop] += fine[crop][:, None] * 3.0
    stripes = mat == M_STRIPED  # two alternating tones, identical for every zone of the style
    if stripes.any() and "stripe_u" in params:
        a, b = _jit(rng, style.striped[0], 5.0), _jit(rng, style.striped[1], 5.0)
        on = (np.floor(params["stripe_u"][stripes] / params["stripe_period"]) % 2).astype(bool)
        img[stripes] = np.where(on[:, None], a, b) + fine[stripes][:, None] * 3.0


def _buildings(rng: np.random.Generator, img: np.ndarray, mat: np.ndarray, params: dict, style: Style,
               fine) -> None:
    """Roofs (per-building colour, gable shading, cast shadow) and road centre lines."""
    roof = mat == M_ROOF
    if roof.any():
        rid = params["roof_id"][roof]
        cols = np.stack([_jit(rng, c, 8.0) for c in style.roofs])
        rc = cols[params["roof_color"][rid]]
        half = np.where(
            params["roof_split"][rid],
            params["roof_u"][roof] < params["sub_su"] / 2,
            params["roof_v"][roof] < params["sub_sv"] / 2,
        )
        img[roof] = rc * np.where(half, 0.85, 1.0)[:, None] + fine[roof][:, None] * 3.0
        sy, sx = int(rng.integers(2, 5)), int(rng.integers(2, 5))
        shadow = np.zeros_like(roof)
        shadow[sy:, sx:] = roof[:-sy, :-sx]
        shadow &= ~roof
        img[shadow] *= 0.62
    if "road_center" in params:
        centre = params["road_center"] & (mat == M_ROAD)
        img[centre] = 0.5 * img[centre] + 0.5 * np.float32(220)


def _snow(rng: np.random.Generator, img: np.ndarray, mat: np.ndarray, style: Style) -> None:
    """Snow and river ice (cold style only): appearance noise, labels unchanged."""
    if style.snow > 0:
        cover = rng.uniform(0.0, style.snow)
        if cover > 0.02:
            sn = fractal(rng, mat.shape[0], 12.0, 2)
            snowy = np.isin(mat, (M_GRASS, M_SOIL, M_TREE, M_CROP, M_ROOF)) & (
                sn > np.quantile(sn, 1 - cover)
            )
            img[snowy] = 0.3 * img[snowy] + 0.7 * np.float32(238)
            ice = (mat == M_RIVER) & (sn > np.quantile(sn, 1 - 2 * cover))
            img[ice] = 0.5 * img[ice] + 0.5 * np.float32(215)


def render(rng: np.random.Generator, mat: np.ndarray, params: dict, style: Style) -> np.ndarray:
    """Render the material map into an RGB image ``(H, W, 3)`` uint8."""
    size = mat.shape[0]
    fine = rng.standard_normal((size, size), dtype=np.float32)
    mid = value_noise(rng, size, 6.0) - 0.5
    low = value_noise(rng, size, size / 3.0) - 0.5
    img = _base(rng, mat, style, fine, mid, low)
    _vegetation(rng, img, mat, params, style, fine, low)
    _buildings(rng, img, mat, params, style, fine)
    _snow(rng, img, mat, style)
    # global appearance randomisation: the zone must not be readable from overall colour
    gain = rng.uniform(0.8, 1.2) * rng.uniform(0.92, 1.08, 3).astype(np.float32)
    contrast = rng.uniform(0.85, 1.15)
    mean = img.reshape(-1, 3).mean(0)
    img = (img - mean) * contrast + mean
    img = img * gain + rng.normal(0, 2.5, (size, size, 3)).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
