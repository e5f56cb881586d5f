"""Step 1 of a SynthEarth tile: the *material map* (not classes) and the drawing parameters.

One scene type per tile (urban, suburban, rural, wild), then, in this order, each step drawing
from the tile's one random stream: natural ground (grass with bare soil), field parcels (crop or
ambiguous strips), tree clumps, ambiguous dark blobs and bright flat patches, a river with
riparian trees, and the built-up area (road grid, blocks with paved yards and roofs) or a
country road. The order of the steps (and of the draws inside them) is part of the output:
changing it changes every tile.
"""

from __future__ import annotations

import math

import numpy as np

from training.synth.noise import cells, fractal, grid, rotated, value_noise
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
)

_SCENES = ("urban", "suburban", "rural", "wild")
_SCENE_P = (0.22, 0.26, 0.37, 0.15)


def _ground(rng: np.random.Generator, size: int, style: Style, mat: np.ndarray) -> None:
    """1. Natural ground: grass with bare-soil patches."""
    ground = fractal(rng, size, size / rng.uniform(2.5, 5.0), 3)
    soil_share = float(np.clip(style.soil_share + rng.normal(0, 0.1), 0.02, 0.9))
    mat[ground < np.quantile(ground, soil_share)] = M_SOIL


def _fields(rng: np.random.Generator, size: int, style: Style, scene: str, mat: np.ndarray, params: dict) -> np.ndarray:
    """2. Field parcels (crop or ambiguous strips) on a rotated grid; returns the field mask."""
    field_p = {"urban": 0.05, "suburban": 0.45, "rural": 0.95, "wild": 0.35}[scene]
    field = np.zeros((size, size), bool)
    if rng.random() < field_p:
        theta = rng.uniform(0, math.pi)
        u, v = rotated(size, theta, rng)
        pw, ph = rng.uniform(0.18, 0.45, 2) * size
        pid, k = cells(np.floor(u / pw) * 100003 + np.floor(v / ph))
        region = value_noise(rng, size, size / 1.5) < rng.uniform(0.45, 1.0) if scene != "rural" else True
        kinds = rng.choice(3, size=k, p=(0.45, 0.4, 0.15))  # 0 crop, 1 striped, 2 left as ground
        border = ((u % pw) < 2.0) | ((v % ph) < 2.0)
        kind = kinds[pid]
        field = region & ~border & (kind < 2)
        crop_col = rng.integers(0, len(style.crops), size=k)
        params["crop_color"] = crop_col[pid]
        mat[field & (kind == 0)] = M_CROP
        mat[field & (kind == 1)] = M_STRIPED
        # stripe geometry (own angle within the parcel grid orientation)
        params["stripe_u"] = u if rng.random() < 0.5 else v
        params["stripe_period"] = float(rng.uniform(4.0, 9.0))
        params["row_u"] = v
    return field


def _trees(rng: np.random.Generator, size: int, style: Style, scene: str, mat: np.ndarray, field: np.ndarray) -> None:
    """3. Tree clumps on non-field ground."""
    cover = float(np.clip(style.tree_cover * {"urban": 0.4, "suburban": 0.8, "rural": 0.6, "wild": 1.6}[scene]
                          + rng.normal(0, 0.08), 0.0, 0.85))  # fmt: skip
    if cover > 0.01:
        tn = fractal(rng, size, rng.uniform(14, 40), 3)
        mat[(tn > np.quantile(tn, 1.0 - cover)) & ~field] = M_TREE


def _ambiguous_patches(rng: np.random.Generator, size: int, mat: np.ndarray, wobble: np.ndarray) -> None:
    """4. Ambiguous dark blobs (wobbly ellipses) and bright flat patches (rotated rectangles)."""
    yy, xx = grid(size)
    for _ in range(rng.choice(4, p=(0.25, 0.35, 0.25, 0.15))):
        cy, cx = rng.uniform(0, size, 2)
        a, b = rng.uniform(0.05, 0.16, 2) * size
        th = rng.uniform(0, math.pi)
        dy, dx = yy - cy, xx - cx
        r = ((dx * math.cos(th) + dy * math.sin(th)) / a) ** 2 + (
            (-dx * math.sin(th) + dy * math.cos(th)) / b
        ) ** 2
        mat[r + 0.6 * wobble < 1.0] = M_DARK
    for _ in range(rng.choice(4, p=(0.25, 0.35, 0.25, 0.15))):
        cy, cx = rng.uniform(0, size, 2)
        hh, hw = rng.uniform(0.05, 0.17, 2) * size
        th = rng.uniform(0, math.pi)
        dy, dx = yy - cy, xx - cx
        ru = np.abs(dx * math.cos(th) + dy * math.sin(th))
        rv = np.abs(-dx * math.sin(th) + dy * math.cos(th))
        mat[(ru < hw) & (rv < hh)] = M_BRIGHT


def _river(rng: np.random.Generator, size: int, scene: str, mat: np.ndarray, wobble: np.ndarray) -> None:
    """5. River with riparian trees."""
    if rng.random() < {"urban": 0.15, "suburban": 0.3, "rural": 0.35, "wild": 0.5}[scene]:
        u, v = rotated(size, rng.uniform(0, math.pi), rng)
        lam = rng.uniform(0.8, 2.5) * size
        amp = rng.uniform(0.03, 0.15) * size
        centre = v.mean() + rng.uniform(-0.3, 0.3) * size + amp * np.sin(2 * math.pi * u / lam)
        d = np.abs(v - centre) + 3.0 * (wobble + 0.5)
        w = rng.uniform(0.03, 0.09) * size
        bank = (d < w + rng.uniform(2, 8)) & (value_noise(rng, size, 6.0) > 0.45)
        mat[bank & (mat != M_DARK)] = M_TREE
        mat[d < w] = M_RIVER


def _blocks(rng: np.random.Generator, size: int, style: Style, scene: str, mat: np.ndarray, params: dict,
            roof_id: np.ndarray) -> None:
    """6a. Road grid and blocks with paved yards and roofs (urban and suburban scenes)."""
    u, v = rotated(size, rng.uniform(0, math.pi / 2), rng)
    cu, cv = rng.uniform(0.28, 0.5, 2) * size
    rw = float(rng.uniform(4, 10))
    urban = (
        np.ones((size, size), bool)
        if scene == "urban"
        else (value_noise(rng, size, size / 1.5) < rng.uniform(0.4, 0.7))
    )
    bu, bv = (u % cu) - rw, (v % cv) - rw  # block-local coordinates
    road = (bu < 0) | (bv < 0)
    nu, nv = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    su, sv = (cu - rw) / nu, (cv - rw) / nv
    block_ids = np.floor(u / cu) * 1009 + np.floor(v / cv)
    sub_ids = block_ids * 16 + np.floor(np.maximum(bu, 0) / su) * 4 + np.floor(np.maximum(bv, 0) / sv)
    sid, k = cells(sub_ids)
    lu, lv = np.maximum(bu, 0) % su, np.maximum(bv, 0) % sv
    m = rng.uniform(0.08, 0.3, size=(k, 4))
    has = rng.random(k) < (0.85 if scene == "urban" else 0.6)
    paved_block = rng.random(k) < (0.8 if scene == "urban" else 0.35)
    inside = ((lu > m[sid, 0] * su) & (lu < su * (1 - m[sid, 1])) &
              (lv > m[sid, 2] * sv) & (lv < sv * (1 - m[sid, 3])) & has[sid])  # fmt: skip
    yard = urban & ~road & paved_block[sid] & ~inside
    mat[yard & (mat != M_BRIGHT)] = M_PAVED
    mat[urban & road] = M_ROAD
    roofs = urban & ~road & inside
    mat[roofs] = M_ROOF
    roof_id[roofs] = sid[roofs]
    params["roof_color"] = rng.integers(0, len(style.roofs), size=k)
    params["roof_split"] = rng.random(k) < 0.5
    params["roof_u"], params["roof_v"], params["sub_su"], params["sub_sv"] = lu, lv, su, sv
    params["road_center"] = (np.abs(bu + rw / 2) < 0.6) & (np.floor(v / 6) % 2 == 0) & (rw > 7)


def _built_up(rng: np.random.Generator, size: int, style: Style, scene: str, mat: np.ndarray, params: dict) -> None:
    """6. Built-up area (urban/suburban blocks) or, sometimes, a country road; sets ``roof_id``."""
    roof_id = np.full((size, size), -1, np.int32)
    if scene in ("urban", "suburban"):
        _blocks(rng, size, style, scene, mat, params, roof_id)
    elif rng.random() < 0.45:  # a country road
        u, v = rotated(size, rng.uniform(0, math.pi), rng)
        c = v.mean() + rng.uniform(-0.35, 0.35) * size
        mat[np.abs(v - c) < rng.uniform(2.5, 5.0)] = M_ROAD
    params["roof_id"] = roof_id


def layout(rng: np.random.Generator, size: int, style: Style) -> tuple[np.ndarray, dict]:
    """Draw the material map ``(size, size)`` uint8 and the per-tile drawing parameters."""
    scene = _SCENES[rng.choice(len(_SCENES), p=_SCENE_P)]
    mat = np.full((size, size), M_GRASS, np.uint8)
    params: dict = {"scene": scene}
    _ground(rng, size, style, mat)
    field = _fields(rng, size, style, scene, mat, params)
    _trees(rng, size, style, scene, mat, field)
    wobble = value_noise(rng, size, 8.0) - 0.5
    _ambiguous_patches(rng, size, mat, wobble)
    _river(rng, size, scene, mat, wobble)
    _built_up(rng, size, style, scene, mat, params)
    return mat, params
