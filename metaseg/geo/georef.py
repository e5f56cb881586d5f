"""Georeference: CRS names, transforms from geotransforms or GCPs, map → WGS84, ground distances."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaseg.errors import InvalidCoordinateError
from metaseg.geo.tiles import _fail, _one_line

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


def _latlon_ok(lat: float, lon: float) -> tuple[float, float] | None:
    from metaseg.climate import validate

    try:
        return validate(lat, lon)
    except InvalidCoordinateError:
        return None


# --------------------------------------------------------------------------- GeoTIFF
def _rasterio_open(p: Path):
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                str(p).encode("utf-8")
            except UnicodeEncodeError:
                # A file name that is not valid UTF-8 (e.g. Latin-1 bytes on Linux) cannot be handed to
                # GDAL as text: read the bytes through Python instead (rasterio keeps them in memory).
                with p.open("rb") as fh:
                    return rasterio.open(fh)
            return rasterio.open(p)
    except (RasterioError, OSError) as exc:
        raise _fail(p, "corrupt or unsupported TIFF", exc) from exc


def _crs_string(crs) -> str | None:
    if crs is None:
        return None
    try:
        epsg = crs.to_epsg()
    except Exception:  # noqa: BLE001 -- odd WKT can make pyproj raise anything
        epsg = None
    return f"EPSG:{epsg}" if epsg else crs.to_string()


def _georef(ds) -> tuple[Any, Any]:
    """(crs, affine) of a dataset, from its geotransform or its GCPs; (None, None) if neither."""
    from rasterio.transform import from_gcps

    crs = ds.crs
    if crs is not None and not ds.transform.is_identity:
        return crs, ds.transform
    gcps, gcp_crs = ds.gcps
    if gcps and gcp_crs is not None:
        try:
            return gcp_crs, from_gcps(gcps)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not fit a transform to the GCPs: %s", exc)
    # A CRS without a geotransform (GDAL reports identity) does not place the pixels anywhere.
    return crs, None


def _to_wgs84(crs, xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float]] | None:
    """Project map coordinates to (lat, lon) pairs; ``None`` if the transformation fails."""
    from rasterio.crs import CRS
    from rasterio.warp import transform

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lons, lats = transform(crs, CRS.from_epsg(4326), list(xs), list(ys))
    except Exception as exc:  # noqa: BLE001 -- GDAL/PROJ raise a variety of errors
        log.warning(
            "cannot transform coordinates from %s to WGS84: %s",
            (_crs_string(crs) or "")[:80],
            _one_line(exc)[:160],
        )
        return None
    out = []
    for la, lo in zip(lats, lons, strict=True):
        if not (math.isfinite(la) and math.isfinite(lo)):
            return None
        ok = _latlon_ok(la, lo)
        if ok is None:
            return None
        out.append(ok)
    return out


EARTH_RADIUS_M = 6_371_008.8


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS84 points (mean Earth radius)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def ground_sample_distance(crs, affine, width: int, height: int) -> float | None:
    """Metres per pixel at the centre of a georeferenced raster, whatever its CRS.

    The pixel's steps along x and y around the centre are projected to WGS84 and measured on the
    sphere (spans of up to a quarter tile, divided by their pixel count, keep rounding away), so a
    Web Mercator tile gets its true ground resolution at its latitude, not its nominal one.
    """
    if crs is None or affine is None or width < 1 or height < 1:
        return None
    cx, cy = width / 2, height / 2
    step = max(1.0, min(width, height) / 4)
    pix = [(cx, cy), (cx + step, cy), (cx, cy + step)]
    xy = [affine @ c for c in pix]
    pts = _to_wgs84(crs, [x for x, _ in xy], [y for _, y in xy])
    if pts is None:
        return None
    (la0, lo0), (la1, lo1), (la2, lo2) = pts
    dx = haversine_m(la0, lo0, la1, lo1) / step
    dy = haversine_m(la0, lo0, la2, lo2) / step
    gsd = (dx + dy) / 2
    return float(gsd) if math.isfinite(gsd) and gsd > 0 else None
