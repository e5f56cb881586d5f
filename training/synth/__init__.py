"""SynthEarth: procedural, climate-conditioned training tiles with exact labels.

The generator lives in :mod:`training.synth.generator` and the modules it names (training
data, so it sits with ``training/`` and not in the ``metaseg`` library that the app and
inference import);
``python -m training.synth`` is its command line (:mod:`training.synth.cli`).

The names below are the package's public API, listed by hand (no ``import *``) so that a reader
and the import-contract test can see what ``training.synth`` exports.
"""

from training.synth.generator import SynthTile, generate_tile, tile_rng
from training.synth.placement import georeference, sample_location
from training.synth.splits import assign_splits, parse_split_fractions, split_counts
from training.synth.styles import STYLES, Style
from training.synth.writer import read_manifest, write_synthearth
from training.synth.zones import (
    AGRICULTURE,
    AMBIGUOUS_MATERIALS,
    BARELAND,
    BUILDING,
    DEFAULT_ZONES,
    DEVELOPED,
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
    PIXEL_SIZE_M,
    RANGELAND,
    ROAD,
    RULE_PROXY,
    SYNTH_VERSION,
    TREE,
    WATER,
    ZoneRule,
    parse_zones,
    partner_zone,
    region_name,
    zone_rule,
)

__all__ = [
    "AGRICULTURE", "AMBIGUOUS_MATERIALS", "BARELAND", "BUILDING", "DEFAULT_ZONES", "DEVELOPED",
    "M_BRIGHT", "M_CROP", "M_DARK", "M_GRASS", "M_PAVED", "M_RIVER", "M_ROAD", "M_ROOF", "M_SOIL",
    "M_STRIPED", "M_TREE", "MATERIALS", "PIXEL_SIZE_M", "RANGELAND", "ROAD", "RULE_PROXY", "STYLES",
    "SYNTH_VERSION", "TREE", "WATER", "Style", "SynthTile", "ZoneRule", "assign_splits", "generate_tile",
    "georeference", "parse_split_fractions", "parse_zones", "partner_zone", "read_manifest", "region_name",
    "sample_location", "split_counts", "tile_rng", "write_synthearth", "zone_rule",
]
