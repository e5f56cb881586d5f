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
def locate_file(path: str | os.PathLike) -> tuple[dict[str, Any], Any]:
    """``(the locate object, TileInfo)`` of a tile file (:func:`metaseg.geo.locate_file`)."""
    from metaseg.geo import locate_file as _locate

    return _locate(path)


def locate_point(lat: Any, lon: Any, source: str = "typed") -> dict[str, Any]:
    """The locate object for typed or clicked coordinates (:func:`metaseg.geo.locate_point`)."""
    from metaseg.geo import locate_point as _locate

    return _locate(lat, lon, source)


def read_tile(path: str | os.PathLike):
    """:func:`metaseg.geo.read_tile` with the configured pixel cap."""
    from metaseg.geo import read_tile as _read

    cap = max_pixels()
    return _read(path) if cap is None else _read(path, max_pixels=cap)
