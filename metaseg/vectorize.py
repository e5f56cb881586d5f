"""Class masks → polygons (``rasterio.features.shapes``) → GeoPackage / GeoJSON (``pyogrio``).

Used by ``metaseg map`` (one layer for a whole job) and by the app's polygon downloads.
Torch-free.

Choices, written down:

* **Connectivity 4**: diagonal-only neighbours are separate polygons, so no polygon touches
  itself at a corner (valid geometries for GEOS and GIS tools).
* **Area** is measured in an equal-area projection (EPSG:6933, WGS 84 / NSIDC EASE-Grid 2.0
  Global) whatever the tile's CRS: UTM, national grids, geographic and Web Mercator tiles all get
  square metres on the ground (Web Mercator's own "metres" overstate areas by 1/cos²(lat)).
* **Simplification** (``simplify``, metres on the ground) uses Shapely's topology-preserving
  Douglas-Peucker in the tile's CRS; for geographic CRSs the tolerance is converted at
  111,320 m per degree. Simplified polygons of neighbouring classes may overlap or leave slivers
  at shared edges; leave it at 0 for exact pixel outlines.
* **Minimum area** (``min_area_m2``) drops small polygons (noise speckle) after measuring.
* Nodata / ignore pixels (255) produce no polygon.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.errors import MetasegError

#: Equal-area CRS used to measure polygon areas.
AREA_CRS = "EPSG:6933"
METRES_PER_DEGREE = 111_320.0
DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}


def _affine(transform: Any) -> Any:
    from affine import Affine

    if isinstance(transform, Affine):
        return transform
    values = tuple(float(v) for v in transform)
    if len(values) == 6:  # GDAL order (c, a, b, f, d, e) as metaseg.geo.TileInfo stores it
        return Affine.from_gdal(*values)
    if len(values) == 9:
        return Affine(*values[:6])
    raise MetasegError(f"a geotransform needs 6 numbers, got {len(values)}")


def _crs(crs: Any) -> Any:
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    if crs is None or crs == "":
        raise MetasegError("the mask has no georeference; polygons need a CRS (use a GeoTIFF tile)")
    try:
        return crs if isinstance(crs, CRS) else CRS.from_user_input(crs)
    except CRSError as exc:
        raise MetasegError(f"unknown CRS {crs!r}: {' '.join(str(exc).split())}") from None


def _tolerance(simplify_m: float, crs: Any) -> float:
    """``simplify_m`` metres expressed in the units of ``crs``."""
    if crs.is_geographic:
        return simplify_m / METRES_PER_DEGREE
    try:
        _, factor = crs.linear_units_factor
    except Exception:  # noqa: BLE001 - CRSs without linear units: assume metres
        factor = 1.0
    return simplify_m / float(factor or 1.0)


def mask_to_features(
    index: np.ndarray,
    transform: Any,
    crs: Any,
    class_names: Sequence[str],
    *,
    ignore: int = 255,
    min_area_m2: float = 0.0,
    simplify: float = 0.0,
    dst_crs: Any = "EPSG:4326",
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Polygons of a class mask.

    Args:
        index: H×W class indices (``uint8``); ``ignore`` marks nodata.
        transform: the mask's geotransform (GDAL-order 6 numbers or an ``Affine``).
        crs: the mask's CRS (anything ``rasterio.crs.CRS.from_user_input`` takes).
        class_names: name of each class index.
        ignore: index that produces no polygon.
        min_area_m2: drop polygons smaller than this (square metres on the ground).
        simplify: simplification tolerance in metres (0 = exact pixel outlines).
        dst_crs: CRS of the returned geometries.
        extra: attributes copied into every feature (e.g. ``{"zone": "Cfb", "tile": "a.tif"}``).

    Returns:
        One dict per polygon: ``geometry`` (Shapely, in ``dst_crs``), ``class`` (name),
        ``area_m2`` (equal-area, before simplification) and the ``extra`` keys; ordered by
        class index, then raster order.

    Raises:
        MetasegError: no CRS, an unknown CRS or a class index without a name.
    """
    from rasterio.features import shapes
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape

    index = np.asarray(index)
    if index.ndim != 2:
        raise MetasegError(f"a class mask must be 2-D, got shape {index.shape}")
    src_crs = _crs(crs)
    out_crs = _crs(dst_crs)
    aff = _affine(transform)
    mask = index != ignore
    if not mask.any():
        return []
    data = index.astype(np.uint8, copy=False)
    geoms: list[dict] = []
    classes: list[int] = []
    for geom, value in shapes(data, mask=mask, connectivity=4, transform=aff):
        geoms.append(geom)
        classes.append(int(value))
    bad = sorted({c for c in classes if c >= len(class_names)})
    if bad:
        raise MetasegError(f"class index {bad[0]} has no name ({len(class_names)} classes given)")
    areas = [shape(g).area for g in transform_geom(src_crs, AREA_CRS, geoms)]
    keep = [i for i, a in enumerate(areas) if a >= min_area_m2]
    src_geoms = [shape(geoms[i]) for i in keep]
    if simplify > 0:
        tol = _tolerance(float(simplify), src_crs)
        src_geoms = [g.simplify(tol, preserve_topology=True) for g in src_geoms]
    if out_crs == src_crs:
        out_geoms = src_geoms
    else:
        out_geoms = [shape(g) for g in transform_geom(src_crs, out_crs, [mapping(g) for g in src_geoms])]
    features = []
    for j, i in enumerate(keep):
        feature = {"geometry": out_geoms[j], "class": class_names[classes[i]], "area_m2": float(areas[i])}
        feature.update(extra or {})
        features.append(feature)
    order = sorted(range(len(features)), key=lambda k: classes[keep[k]])
    return [features[k] for k in order]


def write_features(
    features: Iterable[dict[str, Any]],
    path: str | Path,
    *,
    crs: Any = "EPSG:4326",
    driver: str | None = None,
    layer: str = "classes",
    append: bool = False,
) -> Path:
    """Write polygons (as made by :func:`mask_to_features`) with pyogrio.

    Every feature must have the same attribute keys; ``geometry`` is a Shapely geometry.
    Polygons are written as MultiPolygons (one layer type for GeoPackage). An empty list writes
    an empty layer with the standard fields (``class``, ``area_m2``).

    Args:
        features: the polygons.
        path: ``.gpkg`` or ``.geojson`` file (``driver`` overrides the guess from the suffix).
        crs: CRS of the geometries.
        driver: ``"GPKG"`` or ``"GeoJSON"``.
        layer: layer name (GeoPackage).
        append: add to an existing layer instead of replacing the file.

    Returns:
        The path written.
    """
    import pyogrio.raw
    import shapely

    path = Path(path)
    driver = driver or DRIVERS.get(path.suffix.lower())
    if driver not in ("GPKG", "GeoJSON"):
        raise MetasegError(f"unsupported vector format for {path.name!r}; use .gpkg or .geojson")
    features = list(features)
    fields = [k for k in (features[0] if features else {"class": "", "area_m2": 0.0}) if k != "geometry"]
    for f in features:
        if sorted(k for k in f if k != "geometry") != sorted(fields):
            raise MetasegError("all features must have the same attributes")
    geoms = [shapely.geometry.MultiPolygon([f["geometry"]]) if f["geometry"].geom_type == "Polygon"
             else f["geometry"] for f in features]
    wkb = np.array(shapely.to_wkb(geoms), dtype=object) if geoms else np.array([], dtype=object)
    columns = []
    for name in fields:
        values = [f[name] for f in features]
        if values and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
            columns.append(np.asarray(values, dtype=np.float64 if name == "area_m2" else None))
        else:
            columns.append(np.asarray(["" if v is None else str(v) for v in values], dtype=object))
    if not append and path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"layer": layer} if driver == "GPKG" else {}
    pyogrio.raw.write(
        str(path), wkb, columns, fields, driver=driver, geometry_type="MultiPolygon",
        crs=_crs(crs).to_wkt(), append=append, **options,
    )
    return path


__all__ = ["AREA_CRS", "mask_to_features", "write_features"]
