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

Modules: :mod:`~training.synth.zones` (classes, materials, zone rules),
:mod:`~training.synth.styles` (palettes), :mod:`~training.synth.noise`,
:mod:`~training.synth.layout` (step 1), :mod:`~training.synth.render` (step 2), this module (one
tile), :mod:`~training.synth.placement` (where a tile lies), :mod:`~training.synth.splits` and
:mod:`~training.synth.writer` (the set on disk).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metaseg.errors import ConfigError
from training.synth.layout import layout
from training.synth.render import render
from training.synth.styles import STYLES
from training.synth.zones import zone_rule


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
    mat, params = layout(rng, int(size), style)
    image = render(rng, mat, params, style)
    label = rule.label_lut()[mat]
    return SynthTile(image=image, label=label, material=mat, zone=rule.code, scene=params["scene"])
