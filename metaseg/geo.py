"""Reading tiles and labels: GeoTIFF (any CRS), PNG and JPEG (with EXIF GPS).

Torch-free (rasterio + Pillow + numpy). Two entry points:

* :func:`inspect_tile` reads metadata only (size, bands, dtype, CRS, georeference) and derives
  the tile's location in WGS84: the centre of a georeferenced TIFF transformed from its CRS
  (``source="geotiff"``), or the GPS position in the EXIF block of a PNG/JPEG
  (``source="exif"``). Anything else — a plain image, a TIFF without CRS, a CRS that cannot be
  transformed, coordinates out of range — gives ``source="none"`` rather than an error.
* :func:`read_tile` also reads the pixels and turns them into an 8-bit RGB image for the models.

Pixel rules (what the models see):

* **Band choice.** 3 or more bands: bands 1, 2, 3 are taken as red, green, blue (the order of
  ordinary RGB GeoTIFFs and of the datasets we support; pass ``bands=(r, g, b)``, 1-based, for
  other layouts such as Landsat/Sentinel stacks). 1 band: grey, replicated to RGB (a palette
  band is expanded through its colour map). 2 bands: the first band as grey (the second is
  usually alpha or a second channel we cannot map to colour). ``bands`` may also be a single
  band index for a grey rendering.
* **Scaling.** ``uint8`` data are used as they are. Every other type (``uint16``, ``int16``,
  ``float32`` ...) gets a robust per-band linear stretch: the 2nd–98th percentile of the band's
  *valid* pixels maps to 0–255 (clipped). A constant band becomes 0.
* **Validity.** Pixels that are nodata (per the file's nodata value, internal mask or alpha),
  NaN/inf in any chosen band, or fully transparent in a PNG are marked ``False`` in
  :attr:`Tile.valid` and set to 0 in :attr:`Tile.rgb`. When every pixel is valid ``valid`` is
  ``None``.

Size guard: ``width × height`` is compared with ``max_pixels`` (default: environment variable
``METASEG_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`) *before* any pixel is decoded, and
Pillow's own decompression-bomb guard is kept on (raised to at least that limit, never off), so
a PNG that merely declares 100000×100000 pixels is rejected from its header.

Every failure to read a file (missing, a directory, empty, corrupt, truncated, unsupported
format, too large) raises one :class:`~metaseg.errors.TileReadError` whose one-line message
names the file (without its directory).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metaseg.errors import InvalidCoordinateError, TileReadError

if TYPE_CHECKING:
    from metaseg.classes import ClassSet

log = logging.getLogger(__name__)

#: Default pixel limit (width × height) when ``METASEG_MAX_PIXELS`` is not set.
DEFAULT_MAX_PIXELS = 100_000_000

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass
class Location:
    """Where a tile is. ``lat``/``lon`` in WGS84 degrees, both ``None`` when unknown.

    Attributes:
        source: ``"geotiff"`` (georeference), ``"exif"`` (GPS tags) or ``"none"``.
    """

    lat: float | None
    lon: float | None
    source: str

    @classmethod
    def none(cls) -> Location:
        return cls(None, None, "none")

    @property
    def known(self) -> bool:
        return self.lat is not None and self.lon is not None


@dataclass
class TileInfo:
    """Metadata of a tile file (no pixels).

    Attributes:
        path: The file path as given.
        location: See :class:`Location`.
        crs: The file's CRS as a string (``"EPSG:32633"`` when it has an EPSG code) or ``None``.
        transform: Affine georeference in GDAL order ``(x0, dx, rx, y0, ry, dy)`` or ``None``.
        width, height, bands: Raster size and band count.
        dtype: numpy name of the stored data type, e.g. ``"uint16"``.
        footprint: The four corners (top-left, top-right, bottom-right, bottom-left) as
            ``(lat, lon)`` in WGS84, or ``None`` when not georeferenced.
        format: ``"GTiff"``, ``"PNG"`` or ``"JPEG"``.
        gsd_m: Ground sample distance at the tile's centre in metres per pixel (mean of the
            ground length of one pixel along x and y, measured on the WGS84 sphere, so it is
            right for projected, geographic and Web Mercator tiles alike) or ``None``.
    """

    path: str
    location: Location
    crs: str | None
    transform: tuple[float, ...] | None
    width: int
    height: int
    bands: int
    dtype: str
    footprint: list[tuple[float, float]] | None = None
    format: str = "GTiff"
    gsd_m: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``locate --json`` object without ``zone``."""
        return {
            "lat": self.location.lat,
            "lon": self.location.lon,
            "source": self.location.source,
            "crs": self.crs,
            "width": self.width,
            "height": self.height,
            "bands": self.bands,
            "dtype": self.dtype,
            "footprint": [list(p) for p in self.footprint] if self.footprint else None,
            "gsd_m": self.gsd_m,
        }


@dataclass
class Tile:
    """Pixels ready for display and inference.

    Attributes:
        rgb: ``(H, W, 3)`` uint8.
        valid: ``(H, W)`` bool, ``False`` for nodata/NaN/transparent pixels; ``None`` if all valid.
        info: The file's :class:`TileInfo`.
        bands: The 1-based source bands used for R, G, B.
    """

    rgb: np.ndarray
    valid: np.ndarray | None
    info: TileInfo
    bands: tuple[int, ...] = field(default=())


# --------------------------------------------------------------------------- helpers
def max_pixels_from_env() -> int:
    """The pixel limit from ``METASEG_MAX_PIXELS`` (falls back to :data:`DEFAULT_MAX_PIXELS`)."""
    raw = os.environ.get("METASEG_MAX_PIXELS", "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        log.warning("ignoring METASEG_MAX_PIXELS=%r (not a number)", raw)
        return DEFAULT_MAX_PIXELS
    return value if value > 0 else DEFAULT_MAX_PIXELS


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _fail(path: Path, what: str, cause: BaseException | None = None) -> TileReadError:
    msg = f"cannot read {path.name}: {what}"
    if cause is not None and str(cause).strip():
        detail = _one_line(cause)
        msg += f" ({detail[:200]})"
    return TileReadError(msg)


def _check_file(path: str | os.PathLike) -> tuple[Path, str]:
    """Existence/emptiness checks and format sniffing from the magic bytes."""
    p = Path(path)
    if not p.exists():
        raise TileReadError(f"cannot read {p.name}: file not found")
    if p.is_dir():
        raise TileReadError(f"cannot read {p.name}: is a directory, not an image file")
    try:
        with p.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise _fail(p, "file cannot be opened", exc) from exc
    if not head:
        raise TileReadError(f"cannot read {p.name}: file is empty (0 bytes)")
    if head[:4] in _TIFF_MAGIC:
        return p, "GTiff"
    if head.startswith(_PNG_MAGIC):
        return p, "PNG"
    if head.startswith(_JPEG_MAGIC):
        return p, "JPEG"
    raise TileReadError(f"cannot read {p.name}: unsupported file type (expected GeoTIFF, PNG or JPEG)")


def _check_size(p: Path, width: int, height: int, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise TileReadError(f"cannot read {p.name}: image has zero size ({width}×{height})")
    limit = max_pixels_from_env() if max_pixels is None else int(max_pixels)
    if width * height > limit:
        raise TileReadError(
            f"cannot read {p.name}: {width}×{height} = {width * height:,} pixels exceeds the limit of "
            f"{limit:,} (set METASEG_MAX_PIXELS to raise it)"
        )


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


def _inspect_tiff(p: Path) -> TileInfo:
    with _rasterio_open(p) as ds:
        return _tiff_info(p, ds)


def _tiff_info(p: Path, ds) -> TileInfo:
    crs, affine = _georef(ds)
    location, footprint, gsd = Location.none(), None, None
    if crs is None or affine is None:
        log.info("%s has no usable georeference (crs=%s)", p.name, _crs_string(crs))
    else:
        w, h = ds.width, ds.height
        corners = [(0, 0), (w, 0), (w, h), (0, h), (w / 2, h / 2)]
        xy = [affine @ c for c in corners]
        pts = _to_wgs84(crs, [x for x, _ in xy], [y for _, y in xy])
        if pts is not None:
            footprint = [(float(la), float(lo)) for la, lo in pts[:4]]
            location = Location(float(pts[4][0]), float(pts[4][1]), "geotiff")
            gsd = ground_sample_distance(crs, affine, ds.width, ds.height)
    return TileInfo(
        path=str(p),
        location=location,
        crs=_crs_string(crs),
        transform=tuple(float(v) for v in affine.to_gdal()) if affine is not None else None,
        width=int(ds.width),
        height=int(ds.height),
        bands=int(ds.count),
        dtype=str(ds.dtypes[0]) if ds.count else "none",
        footprint=footprint,
        format="GTiff",
        gsd_m=gsd,
    )


def _default_bands(count: int) -> tuple[int, ...]:
    if count >= 3:
        return (1, 2, 3)
    return (1,)


def _resolve_bands(p: Path, bands: int | Sequence[int] | None, count: int) -> tuple[int, ...]:
    if bands is None:
        return _default_bands(count)
    chosen = (bands,) if isinstance(bands, (int, np.integer)) else tuple(bands)
    if len(chosen) not in (1, 3):
        raise TileReadError(f"bands must be one band or three (r, g, b), got {chosen!r}")
    for b in chosen:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 1 <= int(b) <= count:
            raise TileReadError(f"band {b!r} does not exist in {p.name}: it has bands 1..{count}")
    return tuple(int(b) for b in chosen)


def _read_tiff(p: Path, bands, max_pixels: int | None) -> Tile:
    from rasterio.enums import ColorInterp
    from rasterio.errors import RasterioError

    with _rasterio_open(p) as ds:
        info = _tiff_info(p, ds)
        if ds.count == 0:
            raise TileReadError(f"cannot read {p.name}: the file has no bands")
        _check_size(p, ds.width, ds.height, max_pixels)
        idx = _resolve_bands(p, bands, ds.count)
        try:
            data = ds.read(list(idx))
            masks = ds.read_masks(list(idx))
            palette = None
            if len(idx) == 1 and ds.colorinterp[idx[0] - 1] == ColorInterp.palette:
                try:
                    palette = ds.colormap(idx[0])
                except ValueError:
                    palette = None
        except (RasterioError, OSError, ValueError) as exc:
            raise _fail(p, "corrupt or truncated pixel data", exc) from exc
    valid = np.all(masks > 0, axis=0)
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.all(np.isfinite(data), axis=0)
    if palette is not None and data.dtype == np.uint8:
        lut = np.zeros((256, 3), dtype=np.uint8)
        for k, rgba in palette.items():
            if 0 <= k < 256:
                lut[k] = rgba[:3]
        rgb = lut[data[0]]
    else:
        rgb = _to_rgb8([data[i] for i in range(data.shape[0])], valid)
    return _finish(rgb, valid, info, idx)


# --------------------------------------------------------------------------- PNG / JPEG
def _pillow_open(p: Path, max_pixels: int | None):
    """Open with Pillow (header only) under a decompression-bomb guard at least ``max_pixels``."""
    from PIL import Image, UnidentifiedImageError

    limit = max_pixels_from_env() if max_pixels is None else int(max_pixels)
    current = Image.MAX_IMAGE_PIXELS
    if current is None or current < limit:
        Image.MAX_IMAGE_PIXELS = limit  # keep Pillow's guard on, never below our own limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(p)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own text names its internal threshold (twice the limit): name ours instead
        raise _fail(p, f"image too large: over the limit of {limit:,} pixels (decompression-bomb guard; "
                       "set METASEG_MAX_PIXELS to raise it)") from exc
    except UnidentifiedImageError as exc:
        raise _fail(p, "corrupt or unsupported image", None) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise _fail(p, "corrupt image header", exc) from exc
    return im


def _rational(v: Any) -> float:
    if isinstance(v, tuple) and len(v) == 2:
        num, den = v
        return float(num) / float(den) if float(den) else float("nan")
    return float(v)


def _dms(value: Any) -> float:
    parts = [_rational(x) for x in (value if isinstance(value, (tuple, list)) else (value,))]
    deg = parts[0]
    minutes = parts[1] if len(parts) > 1 else 0.0
    seconds = parts[2] if len(parts) > 2 else 0.0
    return deg + minutes / 60.0 + seconds / 3600.0


def _ref(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore")
    return str(value or "").strip("\x00 ").upper()[:1]


def exif_gps(im) -> tuple[float, float] | None:
    """(lat, lon) from a Pillow image's EXIF GPS block, or ``None``.

    Handles N/S/E/W references (as str or bytes) and degree/minute/second rationals;
    malformed or out-of-range values give ``None``.
    """
    try:
        exif = im.getexif()
        gps = exif.get_ifd(0x8825)  # GPSInfo
    except Exception as exc:  # noqa: BLE001 -- broken EXIF must not break reading pixels
        log.warning("unreadable EXIF block: %s", _one_line(exc))
        return None
    if not gps or 2 not in gps or 4 not in gps:
        return None
    try:
        lat = _dms(gps[2])
        lon = _dms(gps[4])
    except (TypeError, ValueError, ZeroDivisionError, IndexError):
        return None
    if _ref(gps.get(1, "N")) == "S":
        lat = -lat
    if _ref(gps.get(3, "E")) == "W":
        lon = -lon
    return _latlon_ok(lat, lon)


_MODE_DTYPE = {"I;16": "uint16", "I;16B": "uint16", "I;16L": "uint16", "I": "int32", "F": "float32"}


def _pillow_info(p: Path, im, fmt: str) -> TileInfo:
    gps = exif_gps(im)
    location = Location(gps[0], gps[1], "exif") if gps else Location.none()
    return TileInfo(
        path=str(p),
        location=location,
        crs=None,
        transform=None,
        width=int(im.width),
        height=int(im.height),
        bands=len(im.getbands()),
        dtype=_MODE_DTYPE.get(im.mode, "uint8"),
        footprint=None,
        format=fmt,
    )


def _read_pillow(p: Path, fmt: str, bands, max_pixels: int | None) -> Tile:
    im = _pillow_open(p, max_pixels)
    with im:
        info = _pillow_info(p, im, fmt)
        _check_size(p, im.width, im.height, max_pixels)
        try:
            im.load()
            arr, alpha = _pillow_pixels(im)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise _fail(p, "corrupt or truncated image data", exc) from exc
    count = arr.shape[2]
    idx = _resolve_bands(p, bands, count)
    valid = np.ones(arr.shape[:2], dtype=bool) if alpha is None else alpha > 0
    if np.issubdtype(arr.dtype, np.floating):
        valid &= np.all(np.isfinite(arr), axis=2)
    rgb = _to_rgb8([arr[..., i - 1] for i in idx], valid)
    return _finish(rgb, valid, info, idx)


def _pillow_pixels(im) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, C) colour/grey array and optional (H, W) alpha from a loaded Pillow image."""
    mode = im.mode
    if mode in ("RGB", "L"):
        arr = np.asarray(im)
        return (arr[..., None] if arr.ndim == 2 else arr), None
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im)
        if mode.startswith("I;16"):
            arr = arr.astype(np.uint16, copy=False)
        return arr[..., None], None
    if mode == "LA":
        arr = np.asarray(im)
        return arr[..., :1], arr[..., 1]
    if mode == "1":
        return np.asarray(im.convert("L"))[..., None], None
    if mode in ("RGBA", "P", "PA", "RGBa", "La"):
        rgba = np.asarray(im.convert("RGBA"))
        alpha = rgba[..., 3]
        return rgba[..., :3], (alpha if (alpha < 255).any() else None)
    return np.asarray(im.convert("RGB")), None  # CMYK, YCbCr, LAB, HSV ...


# --------------------------------------------------------------------------- scaling
def _stretch(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Robust 2–98 % linear stretch of one band to uint8, statistics over valid pixels only."""
    values = band[valid]
    if values.size > 1_000_000:  # percentiles on a deterministic subsample of large tiles
        values = values[:: values.size // 1_000_000 + 1]
    if values.size == 0:
        return np.zeros(band.shape, dtype=np.uint8)
    values = values.astype(np.float64, copy=False)
    lo, hi = np.percentile(values, [2.0, 98.0])
    if not hi > lo:
        lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        return np.zeros(band.shape, dtype=np.uint8)
    scaled = (band.astype(np.float64) - lo) * (255.0 / (hi - lo))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _to_rgb8(channels: list[np.ndarray], valid: np.ndarray) -> np.ndarray:
    """1 or 3 (H, W) channels of any dtype -> (H, W, 3) uint8 (grey replicated)."""
    out = []
    for band in channels:
        if band.dtype == np.uint8:
            out.append(band)
        elif band.dtype == np.bool_:
            out.append(band.astype(np.uint8) * 255)
        else:
            out.append(_stretch(band, valid))
    if len(out) == 1:
        out = out * 3
    return np.stack(out, axis=-1)


def _finish(rgb: np.ndarray, valid: np.ndarray, info: TileInfo, idx: tuple[int, ...]) -> Tile:
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if valid.all():
        return Tile(rgb=rgb, valid=None, info=info, bands=idx)
    rgb = rgb.copy() if not rgb.flags.writeable else rgb
    rgb[~valid] = 0
    return Tile(rgb=rgb, valid=valid, info=info, bands=idx)


# --------------------------------------------------------------------------- public API
def inspect_tile(path: str | os.PathLike) -> TileInfo:
    """Metadata and location of a tile without reading its pixels.

    Args:
        path: A GeoTIFF, PNG or JPEG file.

    Returns:
        The :class:`TileInfo`; ``info.location.source`` says where the location came from.

    Raises:
        TileReadError: missing, empty, corrupt or unsupported file.
    """
    p, fmt = _check_file(path)
    if fmt == "GTiff":
        info = _inspect_tiff(p)
    else:
        with _pillow_open(p, None) as im:
            info = _pillow_info(p, im, fmt)
    if info.width <= 0 or info.height <= 0:
        raise TileReadError(f"cannot read {p.name}: image has zero size ({info.width}×{info.height})")
    return info


def read_tile(
    path: str | os.PathLike,
    bands: int | Sequence[int] | None = None,
    max_pixels: int | None = None,
) -> Tile:
    """Read a tile as 8-bit RGB plus a validity mask (rules in the module docstring).

    Args:
        path: A GeoTIFF, PNG or JPEG file.
        bands: 1-based band indices ``(r, g, b)`` or one band for grey; default: bands 1-3 of
            a 3+ band file, band 1 otherwise.
        max_pixels: Largest ``width × height`` accepted; ``None`` = ``METASEG_MAX_PIXELS`` or
            :data:`DEFAULT_MAX_PIXELS`. Checked before any pixel is decoded.

    Returns:
        A :class:`Tile` with ``rgb`` of shape ``(H, W, 3)`` uint8.

    Raises:
        TileReadError: unreadable file, bad band selection, or too many pixels.
    """
    p, fmt = _check_file(path)
    if fmt == "GTiff":
        return _read_tiff(p, bands, max_pixels)
    return _read_pillow(p, fmt, bands, max_pixels)


@dataclass(frozen=True)
class LabelRead:
    """A decoded label file: ``index`` (H×W uint8, 255 = ignore) and a one-line ``note`` for the
    user (``None``: nothing to say) — e.g. "read as class indices" for a mask this project wrote,
    or why an untagged file looks index-encoded where the official encoding is expected."""

    index: np.ndarray
    note: str | None = None


def read_label(
    path: str | os.PathLike,
    class_set: ClassSet | str,
    expected_shape: tuple[int, int] | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Read a ground-truth label and decode it to class indices (see :func:`open_label`).

    The note of :func:`open_label` (a suspicious untagged file) is logged as a warning.
    """
    got = open_label(path, class_set, expected_shape, max_pixels)
    if got.note:
        log.warning("label %s: %s", Path(path).name, got.note)
    return got.index


def open_label(
    path: str | os.PathLike,
    class_set: ClassSet | str,
    expected_shape: tuple[int, int] | None = None,
    max_pixels: int | None = None,
) -> LabelRead:
    """Read a ground-truth label and decode it.

    Files this project wrote (masks of ``metaseg predict`` / ``map`` / the studio, saved labels)
    carry ``CLASS_SET`` and ``LABEL_ENCODING`` tags (GeoTIFF tags, PNG text chunks) and are
    decoded as what they are (:meth:`ClassSet.decode_tagged`); other files are read in the class
    set's official encoding. Single-band sets (OpenEarthMap, LoveDA) read band 1 raw (palette
    PNGs by index, not colour); Potsdam reads bands 1-3 as RGB. JPEG is refused: lossy
    compression changes the codes.

    Args:
        path: GeoTIFF or PNG label file.
        class_set: A :class:`~metaseg.classes.ClassSet` or its name.
        expected_shape: ``(H, W)`` of the tile the label belongs to, checked if given.
        max_pixels: As in :func:`read_tile`.

    Returns:
        :class:`LabelRead` (``index``: ``(H, W)`` uint8 class indices, ``255`` = ignore).

    Raises:
        TileReadError: unreadable, wrong size, or tagged with another class set.
    """
    from metaseg.classes import get_class_set

    cs = get_class_set(class_set) if isinstance(class_set, str) else class_set
    p, fmt = _check_file(path)
    if fmt == "JPEG":
        raise TileReadError(f"cannot read {p.name}: labels must be lossless (PNG or GeoTIFF), not JPEG")
    rgb_label = cs.encoding == "rgb"
    if fmt == "GTiff":
        from rasterio.errors import RasterioError

        with _rasterio_open(p) as ds:
            _check_size(p, ds.width, ds.height, max_pixels)
            tags = dict(ds.tags())
            own = "LABEL_ENCODING" in tags or ("CLASS_SET" in tags and "CLASS_NAMES" in tags)
            rgb_read = rgb_label and not (own and ds.count == 1)
            if rgb_read and ds.count < 3:
                raise TileReadError(
                    f"cannot read {p.name}: {cs.name} labels are RGB, file has {ds.count} band(s)"
                )
            try:
                data = ds.read([1, 2, 3] if rgb_read else [1])
            except (RasterioError, OSError, ValueError) as exc:
                raise _fail(p, "corrupt or truncated label data", exc) from exc
        raw = np.moveaxis(data, 0, -1) if rgb_read else data[0]
    else:
        im = _pillow_open(p, max_pixels)
        with im:
            _check_size(p, im.width, im.height, max_pixels)
            try:
                im.load()
                tags = {str(k): str(v) for k, v in (getattr(im, "text", None) or {}).items()}
                own = "LABEL_ENCODING" in tags and im.mode in ("L", "P")
                if rgb_label and not own:
                    raw = np.asarray(im.convert("RGB"))
                elif im.mode in ("L", "P", "I;16", "I;16B", "I;16L", "I"):
                    raw = np.asarray(im)
                elif im.mode in ("LA", "PA"):
                    raw = np.asarray(im)[..., 0]
                else:  # a colour rendering of a single-band set: decode through the palette
                    raw = np.asarray(im.convert("RGB"))
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise _fail(p, "corrupt or truncated label data", exc) from exc
    if expected_shape is not None and tuple(raw.shape[:2]) != tuple(expected_shape[:2]):
        h, w = raw.shape[:2]
        eh, ew = expected_shape[:2]
        raise TileReadError(f"label {p.name} is {w}×{h} pixels but the tile is {ew}×{eh}")
    try:
        index, note = cs.decode_tagged(raw, tags)
    except TileReadError as exc:
        raise TileReadError(f"cannot use {p.name} as a {cs.name} label: {exc}") from None
    return LabelRead(index=index, note=note)


def tile_hash(path_or_array: str | os.PathLike | np.ndarray) -> str:
    """SHA-256 hex digest identifying a tile in run logs.

    For a file: the hash of its bytes. For an array: the hash of dtype, shape and bytes (so the
    same pixels always give the same id).
    """
    h = hashlib.sha256()
    if isinstance(path_or_array, np.ndarray):
        arr = np.ascontiguousarray(path_or_array)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
        return h.hexdigest()
    p = Path(path_or_array)
    try:
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except FileNotFoundError as exc:
        raise TileReadError(f"cannot read {p.name}: file not found") from exc
    except OSError as exc:
        raise _fail(p, "file cannot be read", exc) from exc
    return h.hexdigest()
