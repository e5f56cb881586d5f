"""``python -m metaseg climate LAT LON [--json]``: the Köppen-Geiger zone at a point.

Negative coordinates work as plain arguments (``climate -33.9 18.4``), including exponent
forms such as ``-1e-3``. Longitudes may be given as 0..360. Invalid input (not a number,
NaN/inf, latitude beyond ±90, longitude beyond ±360) is a one-line error with exit code 2.
"""

from __future__ import annotations

import argparse
import re

from metaseg.cli import print_json

# argparse only recognises "-12" and "-1.5" as negative numbers; accept "-1e-3", "-.5", "-7." too.
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "climate",
        help="Köppen-Geiger climate zone at a latitude/longitude",
        description="Look up the Köppen-Geiger climate zone (Beck et al. 30-class legend) at a point.",
    )
    parser._negative_number_matcher = NEGATIVE_NUMBER  # argparse internals; see module docstring
    parser.add_argument("lat", metavar="LAT", help="latitude in degrees, -90..90 (south negative)")
    parser.add_argument(
        "lon", metavar="LON", help="longitude in degrees, -180..180 or 0..360 (west negative)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)
    return parser


def format_result(result) -> str:
    """One human-readable line for a :class:`~metaseg.climate.ClimateResult`."""
    where = f"{result.lat:.5g}, {result.lon:.5g}"
    if result.zone is None:
        return f"{where}: ocean (no Köppen-Geiger zone)"
    z = result.zone
    return f"{where}: {z.code} ({z.name}; legend colour {z.color})"


def run(args: argparse.Namespace) -> int:
    from metaseg.climate import lookup, parse_coordinate

    lat = parse_coordinate(args.lat, "latitude")
    lon = parse_coordinate(args.lon, "longitude")
    result = lookup(lat, lon)
    if args.json:
        print_json(result.to_dict())
    else:
        print(format_result(result))
    return 0
