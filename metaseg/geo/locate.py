"""The ``locate`` object of DESIGN §7: where a tile (or a typed/clicked point) is, and its zone.

One builder for every place that shows it — ``python -m metaseg locate --json``, the app's
``/locate`` and ``/imagery`` endpoints and its Locate tab. Keys, in this order: ``lat, lon, source``
(``geotiff`` / ``exif`` / ``none``, or how a point was given: ``typed``, ``map``, …), ``crs, width,
height, bands, dtype, footprint`` (four ``[lat, lon]`` corners or ``None``), ``gsd_m`` and ``zone``
(the ``climate --json`` object, or ``None`` without a location). A point has no file, so its file
fields are ``None``.
"""

from __future__ import annotations

import os
from typing import Any

from metaseg.geo.reading import inspect_tile
from metaseg.geo.tiles import TileInfo

_FILE_FIELDS = ("crs", "width", "height", "bands", "dtype", "footprint", "gsd_m")


def zone_object(lat: float | None, lon: float | None) -> dict[str, Any] | None:
    """The ``climate --json`` object for a point (``code: None, reason: "ocean"`` at sea); ``None``
    when the location is unknown."""
    if lat is None or lon is None:
        return None
    from metaseg.climate import lookup

    return lookup(lat, lon).to_dict()


def locate_info(info: TileInfo) -> dict[str, Any]:
    """The locate object of a tile whose metadata was already read."""
    obj = info.to_dict()
    obj["zone"] = zone_object(obj["lat"], obj["lon"]) if info.location.known else None
    return obj


def locate_file(path: str | os.PathLike) -> tuple[dict[str, Any], TileInfo]:
    """``(locate object, TileInfo)`` of a tile file; only metadata is read.

    Raises:
        TileReadError: missing, empty, corrupt or unsupported file.
    """
    info = inspect_tile(path)
    return locate_info(info), info


def locate_point(lat: Any, lon: Any, source: str = "typed") -> dict[str, Any]:
    """The locate object for coordinates given without a file (validated; longitude wrapped).

    Raises:
        InvalidCoordinateError: not numbers, or outside [-90, 90] / [-360, 360].
    """
    from metaseg.climate import validate

    lat_f, lon_f = validate(lat, lon)
    obj: dict[str, Any] = {"lat": lat_f, "lon": lon_f, "source": source}
    obj.update(dict.fromkeys(_FILE_FIELDS))
    obj["zone"] = zone_object(lat_f, lon_f)
    return obj
