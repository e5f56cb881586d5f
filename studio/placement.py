"""How typed/clicked points relate to the tile in use, and the small tile identity helpers."""

from __future__ import annotations

import os
from typing import Any


def point_in_footprint(lat: float, lon: float, footprint: Any) -> bool:
    """Whether (lat, lon) lies inside a tile's footprint (its corners as ``(lat, lon)``, ray casting)."""
    pts = [(float(p[0]), float(p[1])) for p in footprint or []]
    if len(pts) < 3:
        return False
    inside = False
    for (la1, lo1), (la2, lo2) in zip(pts, pts[1:] + pts[:1], strict=True):
        if (la1 > lat) != (la2 > lat) and lon < lo1 + (lat - la1) * (lo2 - lo1) / (la2 - la1):
            inside = not inside
    return inside


#: a point this close to a tile located by EXIF GPS (no footprint) counts as "on the tile"
EXIF_NEAR_M = 250.0


def place_point(location: dict[str, Any] | None, lat: float, lon: float) -> str:
    """How typed or clicked coordinates relate to the tile in use (location precedence).

    ``location`` is the locate object of the session's tile (``None``: no tile loaded). Returns

    - ``"free"``: no tile: the point is the new location;
    - ``"attach"``: the tile has no location of its own (plain PNG/JPEG): the point locates it;
    - ``"keep"``: the point lies on a georeferenced tile (inside its footprint, or near its EXIF
      position): the tile's own location wins and stays;
    - ``"new"``: the point is elsewhere: it starts a new location and the tile is unloaded —
      a point off the tile is never attached to it.
    """
    if location is None:
        return "free"
    if location.get("source") not in ("geotiff", "exif") or location.get("lat") is None:
        return "attach"
    footprint = location.get("footprint")
    if footprint:
        return "keep" if point_in_footprint(lat, lon, footprint) else "new"
    from metaseg.geo import haversine_m

    return "keep" if haversine_m(lat, lon, location["lat"], location["lon"]) <= EXIF_NEAR_M else "new"



def tile_hash(path: str | os.PathLike) -> str:
    from metaseg.geo import tile_hash as _hash

    return _hash(path)


def zone_code(location: dict[str, Any] | None) -> str | None:
    zone = (location or {}).get("zone") or {}
    return zone.get("code")
