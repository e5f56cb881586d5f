"""Vector output: a tile's mask as polygons (on the worker) and the job's one polygon layer (on the client).

Areas: the per-class areas sum the equal-area (EPSG:6933) areas of *all* polygons, measured
before simplification and before the ``min_area_m2`` filter, so the statistics do not depend on
the vector-size options.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaseg.mapping.layout import FIELDS

if TYPE_CHECKING:
    from metaseg.mapping.tasks import MapSettings, TileTask


def tile_polygons(index: Any, crs: Any, transform: Any, class_set: Any, task: TileTask,
                  settings: MapSettings) -> tuple[list[tuple[bytes, str, float]], dict[str, float]]:
    """(polygons as (wkb, class, area_m2) that pass ``min_area_m2``, area m² per class of all polygons)."""
    import shapely

    from metaseg.vectorize import mask_to_features

    features = mask_to_features(
        index, transform, crs, list(class_set.names), ignore=int(class_set.ignore_index),
        simplify=float(settings.simplify), dst_crs=settings.vector_crs,
    )
    areas: dict[str, float] = {}
    polygons = []
    for f in features:
        areas[f["class"]] = areas.get(f["class"], 0.0) + float(f["area_m2"])
        if f["area_m2"] >= settings.min_area_m2 and not f["geometry"].is_empty:
            polygons.append((shapely.to_wkb(f["geometry"]), f["class"], float(f["area_m2"])))
    return polygons, areas


class VectorWriter:
    """Buffers polygons on the client and appends them to the vector file (one layer ``classes``)."""

    def __init__(self, path: Path, crs: str, max_buffer: int = 20_000) -> None:
        self.path, self.crs, self.max_buffer = path, crs, max_buffer
        self.buffer: list[dict[str, Any]] = []
        self.created = False

    def add(self, polygons: Iterable[tuple[bytes, str, float]], zone: str | None, tile: str) -> None:
        import shapely

        for wkb, name, area in polygons:
            self.buffer.append({"geometry": shapely.from_wkb(wkb), "class": name, "area_m2": float(area),
                                "zone": zone or "", "tile": tile})
        if len(self.buffer) >= self.max_buffer:
            self.flush()

    def flush(self, final: bool = False) -> None:
        from metaseg.vectorize import write_features

        if not self.buffer and not (final and not self.created):
            return
        if not self.buffer:  # nothing mapped: still leave an empty layer with the job's fields
            import numpy as np
            import pyogrio.raw
            from rasterio.crs import CRS

            empty = np.array([], dtype=object)
            pyogrio.raw.write(str(self.path), empty, [empty, np.array([], dtype=np.float64), empty, empty],
                              list(FIELDS), geometry_type="MultiPolygon", crs=CRS.from_user_input(self.crs).to_wkt(),
                              **({"layer": "classes"} if self.path.suffix.lower() == ".gpkg" else {}))
            self.created = True
            return
        write_features(self.buffer, self.path, crs=self.crs, append=self.created)
        self.created = True
        self.buffer = []


