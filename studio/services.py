"""Locating a tile or a point for the app: the locate object of a file or of coordinates, and
reading a tile under the configured pixel cap.

The rest of what used to live here is split by concern (issue 22): :mod:`studio.limits`,
:mod:`studio.prompt_store`, :mod:`studio.placement`, :mod:`studio.models`, :mod:`studio.pair`,
:mod:`studio.scoring`, :mod:`studio.labels`, :mod:`studio.examples`, :mod:`studio.gsd`,
:mod:`studio.polygons` and :mod:`studio.imagery`.
"""

from __future__ import annotations

import os
from typing import Any

from studio.limits import max_pixels


# --------------------------------------------------------------------------- locate
def zone_dict(lat: float | None, lon: float | None) -> dict[str, Any] | None:
    """The ``climate --json`` object for a point (``code: None, reason: "ocean"`` at sea)."""
    if lat is None or lon is None:
        return None
    from metaseg.climate import lookup

    return lookup(lat, lon).to_dict()


def locate_file(path: str | os.PathLike) -> tuple[dict[str, Any], Any]:
    """Metadata + zone of a tile file: ``(the locate --json object, TileInfo)``."""
    from metaseg.geo import inspect_tile

    info = inspect_tile(path)
    obj = dict(info.to_dict())
    obj["zone"] = zone_dict(obj.get("lat"), obj.get("lon"))
    return obj, info


def locate_point(lat: Any, lon: Any, source: str = "typed") -> dict[str, Any]:
    """The locate object for typed or clicked coordinates (file fields are ``None``)."""
    from metaseg.climate import validate

    lat_f, lon_f = validate(lat, lon)
    zone = zone_dict(lat_f, lon_f)
    return {
        "lat": lat_f, "lon": lon_f, "source": source, "crs": None,
        "width": None, "height": None, "bands": None, "dtype": None, "footprint": None, "gsd_m": None,
        "zone": zone,
    }




def read_tile(path: str | os.PathLike):
    """:func:`metaseg.geo.read_tile` with the configured pixel cap."""
    from metaseg.geo import read_tile as _read

    cap = max_pixels()
    return _read(path) if cap is None else _read(path, max_pixels=cap)
