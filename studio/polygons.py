"""Vector polygons of the predicted masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metaseg.errors import MetasegError
from studio.labels import IGNORE

#: polygons smaller than this many pixels are dropped by default (speckle, not objects)
MIN_POLYGON_PIXELS = 16


def default_min_area_m2(tile_gsd: float | None) -> float:
    """The app's default smallest polygon: :data:`MIN_POLYGON_PIXELS` pixels of the tile (1 m² when
    the GSD is unknown), like ``metaseg map --min-area`` but sized to the tile."""
    return round(MIN_POLYGON_PIXELS * float(tile_gsd) ** 2, 2) if tile_gsd else 1.0


def write_polygons(masks: dict[str, np.ndarray], class_names: list[str], tile_info: Any, outdir: Path,
                   min_area_m2: float | None = None) -> list[str]:
    """Masks (role → class indices) as polygons (``model``, ``class``, ``area_m2`` per polygon) in a
    GeoPackage and a GeoJSON (WGS84), via :mod:`metaseg.vectorize` (as ``metaseg map``).

    ``min_area_m2``: polygons smaller than this are dropped (``None``: :func:`default_min_area_m2`).
    """
    from metaseg.vectorize import mask_to_features, write_features

    crs, transform = getattr(tile_info, "crs", None), getattr(tile_info, "transform", None)
    if not crs or not transform:
        raise MetasegError("this tile has no georeference: polygons need a GeoTIFF tile (the PNG masks are there)")
    if min_area_m2 is None:
        min_area_m2 = default_min_area_m2(getattr(tile_info, "gsd_m", None))
    try:
        min_area_m2 = float(min_area_m2)
    except (TypeError, ValueError):
        raise MetasegError(f"the smallest polygon area must be a number of m², not {str(min_area_m2)[:20]!r}") from None
    if not min_area_m2 >= 0:
        raise MetasegError(f"the smallest polygon area must be 0 or more m², not {min_area_m2}")
    features = []
    for role, mask in masks.items():
        features += mask_to_features(mask, transform, crs, list(class_names), ignore=IGNORE, min_area_m2=min_area_m2,
                                     extra={"model": role})
    paths = []
    for name in ("polygons.gpkg", "polygons.geojson"):
        out = outdir / name
        out.unlink(missing_ok=True)
        paths.append(str(write_features(features, out, crs="EPSG:4326")))
    return paths
