"""``python -m metaseg locate FILE [--json]``: where a tile is and its climate zone.

The location comes from the GeoTIFF georeference (any CRS, transformed to WGS84), else from
EXIF GPS tags (PNG/JPEG), else there is none. JSON keys: ``lat, lon, source, crs, width,
height, bands, dtype, zone`` (the ``climate`` object, or ``null`` without a location) and
``footprint`` (four ``[lat, lon]`` corners or ``null``) and ``gsd_m`` (ground sample distance in
metres per pixel at the tile's centre, any CRS incl. EPSG:4326 and Web Mercator; ``null`` without a
georeference). Only metadata is read.
"""

from __future__ import annotations

import argparse
from typing import Any

from metaseg.cli import print_json

_SOURCE_TEXT = {"geotiff": "GeoTIFF georeference", "exif": "EXIF GPS tags"}


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "locate",
        help="location (GeoTIFF/EXIF) and climate zone of a tile",
        description="Read a tile's metadata, derive its WGS84 location and look up its Köppen-Geiger zone.",
    )
    parser.add_argument("file", metavar="FILE", help="GeoTIFF, PNG or JPEG tile")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)
    return parser


def locate(path: str) -> dict[str, Any]:
    """The ``locate --json`` object for a file (built by :func:`metaseg.geo.locate_file`, as the app's is)."""
    from metaseg.geo import locate_file

    return locate_file(path)[0]


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    out = locate(args.file)
    if args.json:
        print_json(out)
        return 0
    name = Path(args.file).name
    crs = out["crs"] or "no CRS"
    print(f"{name}: {out['width']}×{out['height']}, {out['bands']} band(s) {out['dtype']}, {crs}")
    if out.get("gsd_m"):
        print(f"ground sample distance: {out['gsd_m']:.3g} m/px")
    if out["lat"] is None:
        print("location: none (no usable georeference or EXIF GPS); a generic prompt applies")
        return 0
    print(
        f"location: {out['lat']:.5f}, {out['lon']:.5f} (from {_SOURCE_TEXT.get(out['source'], out['source'])})"
    )
    zone = out["zone"]
    if zone["code"] is None:
        print("zone: ocean (no Köppen-Geiger zone)")
    else:
        print(f"zone: {zone['code']} ({zone['name']}; legend colour {zone['color']})")
    return 0
