"""SynthEarth: procedural, climate-conditioned remote-sensing tiles with exact labels.

SynthEarth exists so that the climate prompt can be *tested*: real datasets do not let us
measure whether a model uses the text, because the image alone usually reveals the region.
SynthEarth builds tiles in which some surfaces are genuinely ambiguous without knowing the
Köppen zone, and makes sure the image itself does not give the zone away.

Labels use the OpenEarthMap encoding (raw ``1..8`` = bareland, rangeland, developed space,
road, tree, water, agriculture land, building; raw ``0`` is never written).

How a tile is made (all vectorised numpy, torch-free):

1. **Material map.** A layout is drawn as a map of *materials* (not classes): natural ground
   (grass/soil from smooth noise), rotated field parcels, tree clumps, a meandering river with
   riparian trees, an optional road grid with blocks, paved yards and rectangular roofs, plus
   three *ambiguous materials*: ``striped`` (regular two-tone green strips), ``bright`` (a flat,
   sharp-edged light surface) and ``dark`` (a smooth, very dark blob).
2. **Appearance.** Each material is rendered with the palette and texture of the tile's *visual
   style* (``tropical``, ``arid``, ``temperate``, ``cold``: vegetation colour, soil colour,
   crop colours, roof materials, water colour, snow and river ice for ``cold``), then the whole
   tile gets random brightness, contrast, per-channel gain (a hue shift) and sensor noise.
3. **Labels.** Unambiguous materials map to one class everywhere (grass→rangeland,
   soil→bareland, paved→developed space, road→road, tree→tree, river→water, crop→agriculture
   land, roof→building). The three ambiguous materials map according to the zone's
   :class:`ZoneRule`:

   ========  ==========================  ===========================
   material  rule bit True               rule bit False
   ========  ==========================  ===========================
   striped   agriculture land (strips)   rangeland (grazing strips)
   bright    bareland (bare flat)        developed space (paved lot)
   dark      water (pond)                tree (dense dark canopy)
   ========  ==========================  ===========================

**Ambiguity design.** The eight default zones form four *pairs* that share one visual style
and one layout distribution but have *complementary* rule bits:

=========  =====  =======  ======  =====  |  =====  =======  ======  =====
style      zone   striped  bright  dark   |  zone   striped  bright  dark
=========  =====  =======  ======  =====  |  =====  =======  ======  =====
tropical   Af     agri     dev.    tree   |  Aw     range    bare    water
arid       BWh    agri     bare    water  |  BSk    range    dev.    tree
temperate  Cfa    agri     dev.    water  |  Cfb    range    bare    tree
cold       Dfb    agri     bare    tree   |  ET     range    dev.    water
=========  =====  =======  ======  =====  |  =====  =======  ======  =====

Within a pair the image distribution is *identical* (the zone only changes the labels of the
ambiguous materials), so a vision-only model can at best tell the pair from the style and must
guess the ambiguous materials (about 50 % wrong on them), while a model that reads the zone's
prompt can resolve all of them. The eight rules are the eight distinct 3-bit codes, so any
*other* default zone's prompt ("wrong climate") flips at least one ambiguous material and costs
accuracy; :func:`partner_zone` returns the maximally wrong zone (same style, all bits flipped).
Zones outside the default eight reuse the rule of a proxy default zone (:data:`RULE_PROXY`)
and the style of their main group (A tropical, B arid, C temperate, D and E cold).

**Determinism.** Tile ``index`` of run ``seed`` draws only from
``numpy.random.default_rng([seed, index])``, so arrays are byte-identical across runs and
independent of ``n``; a different seed gives different tiles (use one seed for training and
another for held-out test tiles). Locations (for the GeoTIFF georeference) come from a separate
stream ``[seed, index, 1]`` through :func:`metaseg.climate.sample_location`, so the location
code cannot perturb the pixels.

On disk (:func:`write_synthearth`) the set uses the OpenEarthMap layout:
``<out>/<region>/images/<region>_<n>.tif`` (3-band uint8 RGB GeoTIFF, UTM CRS of the tile's
location, 0.5 m pixels; EPSG:4326 beyond ±84° latitude), ``<out>/<region>/labels/<region>_<n>.tif``
(single-band uint8, same georeference), ``train.txt``/``val.txt``/``test.txt`` listing file names
one per line, and ``synthearth.json`` (version, seed, zones, rules, per-tile zone and lat/lon).
Regions are named ``synth_<zone code lower-case>``, e.g. ``synth_cfa``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from metaseg.errors import ConfigError, UnknownNameError

log = logging.getLogger(__name__)

#: Bump when the generator changes in a way that changes pixels or labels.
SYNTH_VERSION = "1.0"

#: Default training zones: four style pairs covering the A, B, C, D and E main groups.
DEFAULT_ZONES: tuple[str, ...] = ("Af", "Aw", "BWh", "BSk", "Cfa", "Cfb", "Dfb", "ET")

#: Ground sampling distance written into the GeoTIFFs (metres per pixel).
PIXEL_SIZE_M = 0.5

# OpenEarthMap raw label values.
BARELAND, RANGELAND, DEVELOPED, ROAD, TREE, WATER, AGRICULTURE, BUILDING = range(1, 9)

# Materials (what is drawn); labels are derived from them.
(M_GRASS, M_SOIL, M_PAVED, M_ROAD, M_TREE, M_RIVER, M_CROP, M_ROOF,
 M_STRIPED, M_BRIGHT, M_DARK) = range(11)  # fmt: skip
MATERIALS: tuple[str, ...] = (
    "grass", "soil", "paved", "road", "tree", "river", "crop", "roof", "striped", "bright", "dark",
)  # fmt: skip
AMBIGUOUS_MATERIALS: tuple[str, ...] = ("striped", "bright", "dark")

_FIXED_LABEL = {
    M_GRASS: RANGELAND, M_SOIL: BARELAND, M_PAVED: DEVELOPED, M_ROAD: ROAD, M_TREE: TREE,
    M_RIVER: WATER, M_CROP: AGRICULTURE, M_ROOF: BUILDING,
}  # fmt: skip


@dataclass(frozen=True)
class ZoneRule:
    """How one zone labels the ambiguous materials, and which visual style it uses.

    Attributes:
        code: Köppen code, e.g. ``"Cfa"``.
        style: Visual style name (``tropical``, ``arid``, ``temperate``, ``cold``).
        striped_is_agriculture: ``striped`` → agriculture land (else rangeland).
        bright_is_bareland: ``bright`` → bareland (else developed space).
        dark_is_water: ``dark`` → water (else tree).
    """

    code: str
    style: str
    striped_is_agriculture: bool
    bright_is_bareland: bool
    dark_is_water: bool

    @property
    def bits(self) -> tuple[bool, bool, bool]:
        return (self.striped_is_agriculture, self.bright_is_bareland, self.dark_is_water)

    def label_lut(self) -> np.ndarray:
        """Material index → OpenEarthMap raw label, shape ``(len(MATERIALS),)`` uint8."""
        lut = np.zeros(len(MATERIALS), dtype=np.uint8)
        for m, lab in _FIXED_LABEL.items():
            lut[m] = lab
        lut[M_STRIPED] = AGRICULTURE if self.striped_is_agriculture else RANGELAND
        lut[M_BRIGHT] = BARELAND if self.bright_is_bareland else DEVELOPED
        lut[M_DARK] = WATER if self.dark_is_water else TREE
        return lut


_DEFAULT_BITS: dict[str, tuple[bool, bool, bool]] = {
    "Af": (True, False, False), "Aw": (False, True, True),
    "BWh": (True, True, True), "BSk": (False, False, False),
    "Cfa": (True, False, True), "Cfb": (False, True, False),
    "Dfb": (True, True, False), "ET": (False, False, True),
}  # fmt: skip

#: Zones outside :data:`DEFAULT_ZONES` borrow the ambiguous-material rule of this default zone.
RULE_PROXY: dict[str, str] = {
    "Am": "Af",
    "BWk": "BWh", "BSh": "BSk",
    "Csa": "Cfa", "Cwa": "Cfa", "Csb": "Cfb", "Csc": "Cfb", "Cwb": "Cfb", "Cwc": "Cfb", "Cfc": "Cfb",
    "Dsa": "Dfb", "Dsb": "Dfb", "Dsc": "Dfb", "Dsd": "Dfb", "Dwa": "Dfb", "Dwb": "Dfb", "Dwc": "Dfb",
    "Dwd": "Dfb", "Dfa": "Dfb", "Dfc": "Dfb", "Dfd": "Dfb", "EF": "ET",
}  # fmt: skip

_STYLE_OF_GROUP = {"A": "tropical", "B": "arid", "C": "temperate", "D": "cold", "E": "cold"}
_ALL_CODES = tuple(DEFAULT_ZONES) + tuple(RULE_PROXY)


def _canonical_code(code: str) -> str:
    text = str(code).strip()
    for c in _ALL_CODES:
        if c.lower() == text.lower():
            return c
    raise UnknownNameError(f"unknown Köppen zone {code!r}; valid: {', '.join(sorted(_ALL_CODES))}")


def zone_rule(code: str) -> ZoneRule:
    """The :class:`ZoneRule` of a Köppen code (case-insensitive); ``UnknownNameError`` if unknown."""
    c = _canonical_code(code)
    bits = _DEFAULT_BITS[c] if c in _DEFAULT_BITS else _DEFAULT_BITS[RULE_PROXY[c]]
    return ZoneRule(c, _STYLE_OF_GROUP[c[0]], *bits)


def partner_zone(code: str) -> str:
    """The default zone with the same style and every ambiguous rule flipped (maximally wrong)."""
    rule = zone_rule(code)
    flipped = tuple(not b for b in rule.bits)
    for c in DEFAULT_ZONES:
        if _DEFAULT_BITS[c] == flipped:
            return c
    raise AssertionError("default rules must be closed under complement")  # pragma: no cover


def parse_zones(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Parse ``"Af,BWh"`` (or a list) into canonical codes; ``None``/empty → :data:`DEFAULT_ZONES`."""
    if text is None:
        return DEFAULT_ZONES
    items = text.split(",") if isinstance(text, str) else list(text)
    codes = tuple(_canonical_code(s) for s in items if str(s).strip())
    if not codes:
        return DEFAULT_ZONES
    if len(set(codes)) != len(codes):
        raise ConfigError(f"duplicate zones in {text!r}")
    return codes


# ----------------------------------------------------------------------------- styles


@dataclass(frozen=True)
class Style:
    """Palette of one visual style (RGB 0–255)."""

    grass: tuple[int, int, int]
    soil: tuple[int, int, int]
    soil_share: float  # fraction of natural ground that is bare soil
    tree: tuple[int, int, int]
    tree_cover: float  # typical tree fraction of natural ground
    water: tuple[int, int, int]
    paved: tuple[int, int, int]
    road: tuple[int, int, int]
    crops: tuple[tuple[int, int, int], ...]
    roofs: tuple[tuple[int, int, int], ...]
    striped: tuple[tuple[int, int, int], tuple[int, int, int]]
    bright: tuple[int, int, int]
    dark: tuple[int, int, int]
    snow: float = 0.0  # max snow cover fraction (cold style)


STYLES: dict[str, Style] = {
    "tropical": Style(
        grass=(78, 122, 46),
        soil=(156, 96, 62),
        soil_share=0.15,
        tree=(28, 74, 32),
        tree_cover=0.45,
        water=(78, 92, 64),
        paved=(132, 126, 118),
        road=(88, 86, 84),
        crops=((92, 142, 52), (122, 152, 62), (64, 112, 42), (142, 124, 72)),
        roofs=((172, 84, 62), (152, 152, 158), (196, 194, 188), (70, 96, 140)),
        striped=((70, 126, 48), (118, 156, 74)),
        bright=(204, 194, 176),
        dark=(30, 40, 34),
    ),
    "arid": Style(
        grass=(152, 142, 98),
        soil=(206, 180, 136),
        soil_share=0.55,
        tree=(72, 88, 52),
        tree_cover=0.12,
        water=(82, 104, 112),
        paved=(176, 166, 152),
        road=(102, 96, 90),
        crops=((92, 132, 52), (152, 150, 82), (172, 152, 104)),
        roofs=((212, 202, 182), (182, 160, 130), (160, 160, 162), (196, 150, 110)),
        striped=((104, 134, 62), (162, 156, 102)),
        bright=(228, 220, 200),
        dark=(42, 46, 46),
    ),
    "temperate": Style(
        grass=(106, 140, 72),
        soil=(136, 112, 86),
        soil_share=0.2,
        tree=(46, 82, 42),
        tree_cover=0.3,
        water=(56, 76, 88),
        paved=(142, 142, 136),
        road=(90, 90, 94),
        crops=((132, 162, 72), (192, 172, 92), (112, 92, 62), (92, 142, 62)),
        roofs=((162, 72, 56), (92, 92, 98), (142, 142, 142), (120, 66, 50)),
        striped=((88, 132, 58), (134, 162, 88)),
        bright=(208, 208, 198),
        dark=(28, 35, 38),
    ),
    "cold": Style(
        grass=(122, 126, 92),
        soil=(122, 112, 96),
        soil_share=0.25,
        tree=(36, 62, 46),
        tree_cover=0.35,
        water=(46, 62, 78),
        paved=(150, 150, 150),
        road=(96, 96, 102),
        crops=((152, 152, 92), (122, 142, 82), (102, 92, 72)),
        roofs=((112, 62, 52), (82, 86, 92), (152, 152, 158), (60, 80, 70)),
        striped=((104, 124, 78), (146, 152, 108)),
        bright=(200, 200, 194),
        dark=(26, 30, 36),
        snow=0.45,
    ),
}


# ----------------------------------------------------------------------------- noise helpers


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _value_noise(rng: np.random.Generator, size: int, cell: float) -> np.ndarray:
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


def _fractal(rng: np.random.Generator, size: int, cell: float, octaves: int = 2) -> np.ndarray:
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        out += amp * _value_noise(rng, size, max(cell, 2.0))
        total += amp
        amp *= 0.5
        cell /= 2.0
    return out / total


def _rotated(size: int, theta: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rotated and randomly offset pixel coordinates ``(u, v)``."""
    yy, xx = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    ou, ov = rng.uniform(0, 1000, 2)
    return xx * c + yy * s + ou, -xx * s + yy * c + ov


def _cells(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Compact cell ids to ``0..k-1`` (inverse index, k)."""
    uniq, inv = np.unique(ids, return_inverse=True)
    return inv.reshape(ids.shape), len(uniq)


# ----------------------------------------------------------------------------- layout


_SCENES = ("urban", "suburban", "rural", "wild")
_SCENE_P = (0.22, 0.26, 0.37, 0.15)


def _layout(rng: np.random.Generator, size: int, style: Style) -> tuple[np.ndarray, dict]:
    """Draw the material map ``(size, size)`` uint8 and the per-tile drawing parameters."""
    scene = _SCENES[rng.choice(len(_SCENES), p=_SCENE_P)]
    yy, xx = _grid(size)
    mat = np.full((size, size), M_GRASS, np.uint8)
    params: dict = {"scene": scene}

    # 1. Natural ground: grass with bare-soil patches.
    ground = _fractal(rng, size, size / rng.uniform(2.5, 5.0), 3)
    soil_share = float(np.clip(style.soil_share + rng.normal(0, 0.1), 0.02, 0.9))
    mat[ground < np.quantile(ground, soil_share)] = M_SOIL

    # 2. Field parcels (crop or ambiguous strips) on a rotated grid.
    field_p = {"urban": 0.05, "suburban": 0.45, "rural": 0.95, "wild": 0.35}[scene]
    field = np.zeros((size, size), bool)
    if rng.random() < field_p:
        theta = rng.uniform(0, math.pi)
        u, v = _rotated(size, theta, rng)
        pw, ph = rng.uniform(0.18, 0.45, 2) * size
        pid, k = _cells(np.floor(u / pw) * 100003 + np.floor(v / ph))
        region = _value_noise(rng, size, size / 1.5) < rng.uniform(0.45, 1.0) if scene != "rural" else True
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

    # 3. Tree clumps on non-field ground.
    cover = float(np.clip(style.tree_cover * {"urban": 0.4, "suburban": 0.8, "rural": 0.6, "wild": 1.6}[scene]
                          + rng.normal(0, 0.08), 0.0, 0.85))  # fmt: skip
    if cover > 0.01:
        tn = _fractal(rng, size, rng.uniform(14, 40), 3)
        mat[(tn > np.quantile(tn, 1.0 - cover)) & ~field] = M_TREE

    # 4. Ambiguous dark blobs and bright flat patches.
    wobble = _value_noise(rng, size, 8.0) - 0.5
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

    # 5. River with riparian trees.
    if rng.random() < {"urban": 0.15, "suburban": 0.3, "rural": 0.35, "wild": 0.5}[scene]:
        u, v = _rotated(size, rng.uniform(0, math.pi), rng)
        lam = rng.uniform(0.8, 2.5) * size
        amp = rng.uniform(0.03, 0.15) * size
        centre = v.mean() + rng.uniform(-0.3, 0.3) * size + amp * np.sin(2 * math.pi * u / lam)
        d = np.abs(v - centre) + 3.0 * (wobble + 0.5)
        w = rng.uniform(0.03, 0.09) * size
        bank = (d < w + rng.uniform(2, 8)) & (_value_noise(rng, size, 6.0) > 0.45)
        mat[bank & (mat != M_DARK)] = M_TREE
        mat[d < w] = M_RIVER

    # 6. Built-up area: road grid, blocks with paved yards and roofs.
    roof_id = np.full((size, size), -1, np.int32)
    if scene in ("urban", "suburban"):
        u, v = _rotated(size, rng.uniform(0, math.pi / 2), rng)
        cu, cv = rng.uniform(0.28, 0.5, 2) * size
        rw = float(rng.uniform(4, 10))
        urban = (
            np.ones((size, size), bool)
            if scene == "urban"
            else (_value_noise(rng, size, size / 1.5) < rng.uniform(0.4, 0.7))
        )
        bu, bv = (u % cu) - rw, (v % cv) - rw  # block-local coordinates
        road = (bu < 0) | (bv < 0)
        nu, nv = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        su, sv = (cu - rw) / nu, (cv - rw) / nv
        block_ids = np.floor(u / cu) * 1009 + np.floor(v / cv)
        sub_ids = block_ids * 16 + np.floor(np.maximum(bu, 0) / su) * 4 + np.floor(np.maximum(bv, 0) / sv)
        sid, k = _cells(sub_ids)
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
    elif rng.random() < 0.45:  # a country road
        u, v = _rotated(size, rng.uniform(0, math.pi), rng)
        c = v.mean() + rng.uniform(-0.35, 0.35) * size
        mat[np.abs(v - c) < rng.uniform(2.5, 5.0)] = M_ROAD
    params["roof_id"] = roof_id
    return mat, params


# ----------------------------------------------------------------------------- rendering


def _render(rng: np.random.Generator, mat: np.ndarray, params: dict, style: Style) -> np.ndarray:
    """Render the material map into an RGB image ``(H, W, 3)`` uint8."""
    size = mat.shape[0]
    fine = rng.standard_normal((size, size), dtype=np.float32)
    mid = _value_noise(rng, size, 6.0) - 0.5
    low = _value_noise(rng, size, size / 3.0) - 0.5

    def jit(col: tuple[int, int, int], s: float = 7.0) -> np.ndarray:
        return np.asarray(col, np.float32) + rng.normal(0, s, 3).astype(np.float32)

    base = np.zeros((len(MATERIALS), 3), np.float32)
    base[M_GRASS], base[M_SOIL], base[M_TREE] = jit(style.grass), jit(style.soil), jit(style.tree)
    base[M_RIVER], base[M_PAVED], base[M_ROAD] = jit(style.water), jit(style.paved), jit(style.road)
    base[M_BRIGHT], base[M_DARK] = jit(style.bright, 5.0), jit(style.dark, 3.0)
    base[M_CROP] = jit(style.crops[0])
    base[M_ROOF] = jit(style.roofs[0])
    img = base[mat]  # (H, W, 3)

    # per-material texture amplitudes: (low, mid, fine) as multiplicative/additive terms
    tex = np.zeros((len(MATERIALS), 3), np.float32)
    tex[M_GRASS] = (0.25, 0.25, 6.0)
    tex[M_SOIL] = (0.2, 0.15, 8.0)
    tex[M_PAVED] = (0.1, 0.08, 7.0)
    tex[M_ROAD] = (0.05, 0.05, 5.0)
    tex[M_TREE] = (0.15, 0.0, 5.0)
    tex[M_RIVER] = (0.1, 0.06, 2.0)
    tex[M_CROP] = (0.05, 0.06, 3.0)
    tex[M_ROOF] = (0.0, 0.03, 3.0)
    tex[M_STRIPED] = (0.06, 0.04, 3.0)
    tex[M_BRIGHT] = (0.02, 0.02, 2.5)
    tex[M_DARK] = (0.05, 0.03, 1.5)
    t = tex[mat]
    img *= (1.0 + t[..., 0] * low + t[..., 1] * mid)[..., None]
    img += (t[..., 2] * fine)[..., None]

    # tree canopy: crowns as small bright/dark blobs
    tree = mat == M_TREE
    if tree.any():
        crowns = _value_noise(rng, size, float(rng.uniform(2.5, 4.5))) - 0.5
        img[tree] *= (1.0 + 0.7 * crowns[tree])[:, None]

    # crops: per-parcel colour and faint rows
    crop = mat == M_CROP
    if crop.any() and "crop_color" in params:
        cols = np.stack([jit(c, 6.0) for c in style.crops])
        img[crop] = cols[params["crop_color"][crop]] * (1.0 + 0.05 * low[crop])[:, None]
        rows = (np.floor(params["row_u"][crop] / 3.0) % 2) * 2 - 1
        img[crop] *= (1.0 + 0.04 * rows)[:, None]
        img[crop] += fine[crop][:, None] * 3.0

    # ambiguous strips: two alternating tones (identical for every zone of the style)
    stripes = mat == M_STRIPED
    if stripes.any() and "stripe_u" in params:
        a, b = jit(style.striped[0], 5.0), jit(style.striped[1], 5.0)
        on = (np.floor(params["stripe_u"][stripes] / params["stripe_period"]) % 2).astype(bool)
        img[stripes] = np.where(on[:, None], a, b) + fine[stripes][:, None] * 3.0

    # roofs: per-building colour, gable shading, cast shadow
    roof = mat == M_ROOF
    if roof.any():
        rid = params["roof_id"][roof]
        cols = np.stack([jit(c, 8.0) for c in style.roofs])
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

    # snow and river ice (cold style only): appearance noise, labels unchanged
    if style.snow > 0:
        cover = rng.uniform(0.0, style.snow)
        if cover > 0.02:
            sn = _fractal(rng, size, 12.0, 2)
            snowy = np.isin(mat, (M_GRASS, M_SOIL, M_TREE, M_CROP, M_ROOF)) & (
                sn > np.quantile(sn, 1 - cover)
            )
            img[snowy] = 0.3 * img[snowy] + 0.7 * np.float32(238)
            ice = (mat == M_RIVER) & (sn > np.quantile(sn, 1 - 2 * cover))
            img[ice] = 0.5 * img[ice] + 0.5 * np.float32(215)

    # global appearance randomisation: the zone must not be readable from overall colour
    gain = rng.uniform(0.8, 1.2) * rng.uniform(0.92, 1.08, 3).astype(np.float32)
    contrast = rng.uniform(0.85, 1.15)
    mean = img.reshape(-1, 3).mean(0)
    img = (img - mean) * contrast + mean
    img = img * gain + rng.normal(0, 2.5, (size, size, 3)).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- public API


@dataclass
class SynthTile:
    """One generated tile.

    Attributes:
        image: RGB ``(H, W, 3)`` uint8.
        label: OpenEarthMap raw labels ``(H, W)`` uint8 (1..8).
        material: Material indices ``(H, W)`` uint8 (see :data:`MATERIALS`).
        zone: Köppen code the labels follow.
        scene: ``urban``/``suburban``/``rural``/``wild``.
    """

    image: np.ndarray
    label: np.ndarray
    material: np.ndarray
    zone: str
    scene: str


def tile_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The random stream of tile ``index`` of run ``seed`` (``stream`` 1 is the location)."""
    key = [int(seed), int(index)] + ([int(stream)] if stream else [])
    return np.random.default_rng(key)


def generate_tile(zone: str, size: int = 256, seed: int = 0, index: int = 0) -> SynthTile:
    """Generate one tile; same ``(zone, size, seed, index)`` → byte-identical arrays.

    Args:
        zone: Köppen code; its :class:`ZoneRule` gives the style and the ambiguous labels.
        size: Tile side in pixels (≥ 32).
        seed: Run seed.
        index: Tile index within the run.
    """
    if int(size) < 32:
        raise ConfigError(f"tile size must be at least 32 pixels, got {size}")
    rule = zone_rule(zone)
    style = STYLES[rule.style]
    rng = tile_rng(seed, index)
    mat, params = _layout(rng, int(size), style)
    image = _render(rng, mat, params, style)
    label = rule.label_lut()[mat]
    return SynthTile(image=image, label=label, material=mat, zone=rule.code, scene=params["scene"])


def sample_location(code: str, rng: np.random.Generator) -> tuple[float, float]:
    """A random land point inside Köppen zone ``code`` (:func:`metaseg.climate.sample_location`)."""
    from metaseg.climate import sample_location as climate_sample

    lat, lon = climate_sample(code, rng)
    return float(lat), float(lon)


def georeference(lat: float, lon: float, size: int, pixel_size: float = PIXEL_SIZE_M) -> tuple[str, tuple]:
    """CRS (``EPSG:326xx``/``327xx``, or ``EPSG:4326`` beyond ±84°) and affine transform
    (rasterio order ``a, b, c, d, e, f``) of a ``size``² tile centred on ``(lat, lon)``."""
    if abs(lat) >= 84.0:
        dlat = pixel_size / 111_320.0
        dlon = pixel_size / (111_320.0 * max(math.cos(math.radians(lat)), 1e-3))
        half = size / 2
        return "EPSG:4326", (dlon, 0.0, lon - half * dlon, 0.0, -dlat, lat + half * dlat)
    from rasterio.warp import transform as warp

    zone = int((lon + 180.0) // 6.0) % 60 + 1
    epsg = (32600 if lat >= 0 else 32700) + zone
    xs, ys = warp("EPSG:4326", f"EPSG:{epsg}", [lon], [lat])
    half = size / 2 * pixel_size
    x0, y0 = round(xs[0] - half, 2), round(ys[0] + half, 2)
    return f"EPSG:{epsg}", (pixel_size, 0.0, x0, 0.0, -pixel_size, y0)


def _footprint_zones(crs: str, transform: tuple, size: int) -> list[str | None]:
    """Köppen codes at the centre and the four corners of a georeferenced tile."""
    from metaseg.climate import lookup

    a, _, c, _, e, f = transform
    px = [(size / 2, size / 2), (0.5, 0.5), (size - 0.5, 0.5), (0.5, size - 0.5), (size - 0.5, size - 0.5)]
    xs = [c + a * x for x, _ in px]
    ys = [f + e * y for _, y in px]
    if crs != "EPSG:4326":
        from rasterio.warp import transform as warp

        xs, ys = warp(crs, "EPSG:4326", xs, ys)
    out = []
    for lon, lat in zip(xs, ys, strict=True):
        z = lookup(lat, lon).zone
        out.append(z.code if z is not None else None)
    return out


def _place(code: str, size: int, rng: np.random.Generator) -> tuple[float, float, str, tuple]:
    """Sample a location whose whole tile footprint lies in zone ``code`` (centre-only after 20 tries)."""
    first = None
    for _ in range(20):
        lat, lon = sample_location(code, rng)
        crs, transform = georeference(lat, lon, size)
        zones = _footprint_zones(crs, transform, size)
        if first is None and zones[0] == code:
            first = (lat, lon, crs, transform)
        if all(z == code for z in zones):
            return lat, lon, crs, transform
    if first is None:  # pragma: no cover - sample_location guarantees the centre point
        raise ConfigError(f"could not place a tile inside zone {code}")
    return first


def _write_geotiff(path: Path, array: np.ndarray, crs: str, transform: tuple) -> None:
    import rasterio
    from rasterio.transform import Affine

    data = array.transpose(2, 0, 1) if array.ndim == 3 else array[None]
    profile = {
        "driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
        "dtype": "uint8", "crs": crs, "transform": Affine(*transform), "compress": "deflate",
        "tiled": False,
    }  # fmt: skip
    if data.shape[0] == 3:
        profile["photometric"] = "RGB"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def region_name(code: str) -> str:
    """OpenEarthMap-style region folder of a zone, e.g. ``synth_cfa``."""
    return f"synth_{zone_rule(code).code.lower()}"


def parse_split_fractions(text: str | Sequence[float] | None) -> tuple[float, float, float]:
    """``"0.7,0.15,0.15"`` → normalised (train, val, test) fractions."""
    if text is None:
        return (0.7, 0.15, 0.15)
    try:
        vals = [float(x) for x in (text.split(",") if isinstance(text, str) else text)]
    except ValueError as exc:
        raise ConfigError(
            f"--split-fractions must be three numbers like 0.7,0.15,0.15, got {text!r}"
        ) from exc
    if len(vals) != 3 or min(vals) < 0 or sum(vals) <= 0 or not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"--split-fractions must be three non-negative numbers, got {text!r}")
    s = sum(vals)
    return (vals[0] / s, vals[1] / s, vals[2] / s)


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """(train, val, test) tile counts for ``n`` tiles, rounded over the whole set.

    Largest remainders (each count is within one tile of ``n × fraction``), then every split with
    a non-zero fraction gets at least one tile whenever ``n`` allows (taken from the largest split;
    with fewer tiles than such splits, train comes first, then val, then test).
    """
    n = int(n)
    quotas = [n * f for f in fractions]
    counts = [int(math.floor(q)) for q in quotas]
    order = sorted(range(3), key=lambda k: (-(quotas[k] - counts[k]), k))
    for k in order[: n - sum(counts)]:
        counts[k] += 1
    wanted = [k for k in range(3) if fractions[k] > 0]
    for k in wanted[:n]:
        if counts[k] == 0:
            donor = max(range(3), key=lambda j: (counts[j], -j))
            counts[donor] -= 1
            counts[k] += 1
    return counts[0], counts[1], counts[2]


def assign_splits(n: int, codes: Sequence[str], fractions: tuple[float, float, float], seed: int) -> dict[int, str]:
    """Tile index → ``"train"``/``"val"``/``"test"`` for ``n`` tiles dealt round-robin over ``codes``.

    Counts come from :func:`split_counts` (the whole set, not per zone). The tiles are ordered so
    that zones alternate (each zone's tiles shuffled, zones taken in a shuffled order, first the
    first tile of every zone, then the second, ...), and val, then test take the front of that
    order: small val/test splits draw from as many zones as possible. Deterministic in ``seed``.
    """
    n = int(n)
    rng = np.random.default_rng([int(seed), 2**31 - 1])
    per_zone: dict[str, list[int]] = {c: [] for c in codes}
    for i in range(n):
        per_zone[codes[i % len(codes)]].append(i)
    zone_rank = {c: r for r, c in enumerate(codes[k] for k in rng.permutation(len(codes)))}
    keyed = []
    for c in codes:
        members = per_zone[c]
        for pos, k in enumerate(rng.permutation(len(members))):
            keyed.append(((pos, zone_rank[c]), members[k]))
    ordered = [i for _, i in sorted(keyed)]
    n_train, n_val, n_test = split_counts(n, fractions)
    names = ["val"] * n_val + ["test"] * n_test + ["train"] * n_train
    return dict(zip(ordered, names, strict=True))


def _write_one(job: tuple[str, str, int, int, int, int]) -> dict:
    """Generate, place and write tile ``index`` (runs in a worker process when ``workers > 1``)."""
    out, code, number, size, seed, index = job
    region = region_name(code)
    name = f"{region}_{number}.tif"
    tile = generate_tile(code, size=size, seed=seed, index=index)
    lat, lon, crs, transform = _place(code, size, tile_rng(seed, index, stream=1))
    for sub, arr in (("images", tile.image), ("labels", tile.label)):
        _write_geotiff(Path(out) / region / sub / name, arr, crs, transform)
    return {
        "file": name, "region": region, "zone": code, "split": None, "index": index,
        "scene": tile.scene, "lat": round(lat, 6), "lon": round(lon, 6), "crs": crs,
    }  # fmt: skip


def _report(record: dict, progress: Callable[[int], None] | None) -> dict:
    if progress is not None:
        progress(1)
    return record


def _dask_available() -> bool:
    """True when Dask ``distributed`` (what :class:`metaseg.runner.Runner` needs) can be imported."""
    import importlib.util

    try:
        return importlib.util.find_spec("distributed") is not None
    except (ImportError, ValueError):
        return False


def write_synthearth(
    out: str | Path,
    n: int,
    size: int = 256,
    seed: int = 0,
    zones: Sequence[str] | str | None = None,
    split_fractions: Sequence[float] | str | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> dict:
    """Generate ``n`` tiles into ``out`` in the OpenEarthMap layout and return the manifest.

    Zones are assigned round-robin (tile ``i`` gets ``zones[i % len(zones)]``), so every zone
    gets ``n / len(zones)`` tiles; the set is split into train/val/test by ``split_fractions``
    rounded over the whole set (:func:`assign_splits`: every split with a non-zero fraction gets
    tiles whenever ``n`` allows, val/test spread over the zones).

    Args:
        out: Output folder (created; existing files with the same names are overwritten).
        n: Number of tiles (≥ 1).
        size: Tile side in pixels.
        seed: Run seed (different seeds give disjoint content).
        zones: Köppen codes (default :data:`DEFAULT_ZONES`).
        split_fractions: (train, val, test) fractions, default 0.7/0.15/0.15.
        progress: Called with 1 after each tile (e.g. ``tqdm.update``).
        workers: Processes generating tiles in parallel through the Dask runner (output identical
            for any value); ``≤ 1``, or Dask ``distributed`` not installed (a warning says so),
            generates them serially in this process.

    Returns:
        The manifest dict also written to ``out/synthearth.json``.
    """
    if int(n) < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    codes = parse_zones(zones)
    fractions = parse_split_fractions(split_fractions)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split_of = assign_splits(int(n), codes, fractions, int(seed))

    for c in codes:
        for sub in ("images", "labels"):
            (out / region_name(c) / sub).mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(out), codes[i % len(codes)], i // len(codes) + 1, int(size), int(seed), i) for i in range(int(n))
    ]
    tiles = []
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    if int(workers) > 1 and len(jobs) > 1 and not _dask_available():
        log.warning("workers=%d but Dask 'distributed' is not installed: generating the tiles serially "
                    "(same output)", int(workers))
        workers = 1
    if int(workers) > 1 and len(jobs) > 1:  # the project's Dask runner (metaseg.runner), local processes
        from metaseg.runner import Runner

        records: list[dict | None] = [None] * len(jobs)
        with Runner(workers=int(workers), progress=False) as runner:
            for outcome in runner.run(_write_one, jobs):
                if not outcome.ok:
                    raise ConfigError(f"SynthEarth tile {outcome.index} failed: {outcome.error}")
                records[outcome.index] = _report(outcome.value, progress)
        tiles = [r for r in records if r is not None]
    else:
        tiles = [_report(_write_one(job), progress) for job in jobs]
    for t in tiles:
        t["split"] = split_of[t["index"]]
        lists[t["split"]].append(t["file"])
    for split, names in lists.items():
        (out / f"{split}.txt").write_text("".join(f"{nm}\n" for nm in names), encoding="utf-8")
    manifest = {
        "name": "SynthEarth",
        "version": SYNTH_VERSION,
        "seed": int(seed),
        "size": int(size),
        "pixel_size_m": PIXEL_SIZE_M,
        "class_set": "openearthmap",
        "label_encoding": "OpenEarthMap raw: 1 bareland .. 8 building (0 unused)",
        "zones": list(codes),
        "rules": {c: asdict(zone_rule(c)) for c in codes},
        "split_fractions": list(fractions),
        "n": int(n),
        "tiles": tiles,
    }
    (out / "synthearth.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    log.info("wrote %d SynthEarth tiles to %s", n, out)
    return manifest


def read_manifest(root: str | Path) -> dict:
    """Load ``synthearth.json`` of a generated set (``{}`` when absent)."""
    path = Path(root) / "synthearth.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))
