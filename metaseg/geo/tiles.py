"""What a tile is (:class:`Location`, :class:`TileInfo`, :class:`Tile`) and the checks every read
starts with: the file exists, is not empty, is a format we read, and is not too large."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metaseg.errors import TileReadError

if TYPE_CHECKING:
    pass

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
