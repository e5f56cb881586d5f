"""SynthEarth's classes, materials and zone rules: which Köppen zone labels each ambiguous
material how, and which visual style it is drawn in (see :mod:`training.synth.generator`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metaseg.errors import ConfigError, UnknownNameError

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



def region_name(code: str) -> str:
    """OpenEarthMap-style region folder of a zone, e.g. ``synth_cfa``."""
    return f"synth_{zone_rule(code).code.lower()}"
