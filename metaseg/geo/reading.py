"""Reading pixels: GeoTIFF through rasterio, PNG/JPEG through Pillow (with EXIF GPS), to 8-bit RGB
plus a validity mask (the rules are in :mod:`metaseg.geo`)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metaseg.errors import TileReadError
from metaseg.geo.georef import (
    _crs_string,
    _georef,
    _latlon_ok,
    _rasterio_open,
    _to_wgs84,
    ground_sample_distance,
)
from metaseg.geo.tiles import (
    Location,
    Tile,
    TileInfo,
    _check_file,
    _check_size,
    _fail,
    _one_line,
    max_pixels_from_env,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


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
