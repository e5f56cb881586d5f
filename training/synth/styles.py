"""The four visual styles of SynthEarth (palettes, RGB 0–255), one table row per style.

The palettes are written as one table (hex colours, ``soil%``/``tree%`` = :attr:`Style.soil_share`
/ :attr:`Style.tree_cover`, comma-separated lists for the two-tone strips, crop and roof colours)
rather than one ``Style(...)`` call per style: four calls of the same fourteen keywords were the
same code four times, and the table shows the styles side by side. :data:`STYLES` holds exactly
the values the generator has always used (pixels are byte-identical).
"""

from __future__ import annotations

from dataclasses import dataclass


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


_PALETTES = """
style     grass  soil   soil% tree   tree% water  paved  road   bright dark   snow striped       crops                       roofs
tropical  4e7a2e 9c603e 0.15  1c4a20 0.45  4e5c40 847e76 585654 ccc2b0 1e2822 0.0  467e30,769c4a 5c8e34,7a983e,40702a,8e7c48 ac543e,98989e,c4c2bc,46608c
arid      988e62 ceb488 0.55  485834 0.12  526870 b0a698 66605a e4dcc8 2a2e2e 0.0  68863e,a29c66 5c8434,989652,ac9868        d4cab6,b6a082,a0a0a2,c4966e
temperate 6a8c48 887056 0.2   2e522a 0.3   384c58 8e8e88 5a5a5e d0d0c6 1c2326 0.0  58843a,86a258 84a248,c0ac5c,705c3e,5c8e3e a24838,5c5c62,8e8e8e,784232
cold      7a7e5c 7a7060 0.25  243e2e 0.35  2e3e4e 969696 606066 c8c8c2 1a1e24 0.45 687c4e,92986c 98985c,7a8e52,665c48        703e34,52565c,98989e,3c5046
"""


def _rgb(text: str) -> tuple[int, int, int]:
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)


def _parse(table: str) -> dict[str, Style]:
    """The styles of a palette table (header row first)."""
    header, *rows = [line.split() for line in table.strip().splitlines()]
    out = {}
    for row in rows:
        v = dict(zip(header, row, strict=True))
        out[v["style"]] = Style(
            grass=_rgb(v["grass"]), soil=_rgb(v["soil"]), soil_share=float(v["soil%"]), tree=_rgb(v["tree"]),
            tree_cover=float(v["tree%"]), water=_rgb(v["water"]), paved=_rgb(v["paved"]), road=_rgb(v["road"]),
            crops=tuple(_rgb(c) for c in v["crops"].split(",")), roofs=tuple(_rgb(c) for c in v["roofs"].split(",")),
            striped=tuple(_rgb(c) for c in v["striped"].split(",")),  # type: ignore[arg-type]
            bright=_rgb(v["bright"]), dark=_rgb(v["dark"]), snow=float(v["snow"]),
        )
    return out


STYLES: dict[str, Style] = _parse(_PALETTES)
