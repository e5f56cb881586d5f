"""Write predicted class masks to disk: georeferenced GeoTIFF or palette PNG.

Torch-free. Masks are ``uint8`` H×W class indices; the ignore value (255, nodata) is kept
as is and coloured black in the embedded colour map / palette.

Format choice of :func:`write_mask` (by the output path's extension):

* ``.tif`` / ``.tiff`` → single-band GeoTIFF. When the source tile is georeferenced
  (``tile_info.crs`` and ``tile_info.transform`` set) the mask gets the same CRS and transform,
  so it lies exactly on the tile in any GIS; otherwise a plain (non-georeferenced) GeoTIFF is
  written, still with colour map and class tags.
* ``.png`` → palette ('P' mode) PNG with the class colours; any georeference is dropped
  (PNG cannot carry it).
* any other extension → :class:`~metaseg.errors.MetasegError` naming the two choices.

Cloud-Optimized GeoTIFF (:func:`write_mask_cog`, used by ``metaseg map``): the same pixels, colour
map, nodata and tags, but tiled 512×512, deflate, with internal overviews (mode resampling, so
zoomed-out views keep class values) for masks larger than one block, in the COG layout (IFDs
first), written atomically (temporary file in the target folder, then ``os.replace``).

GeoTIFF details: deflate-compressed, tiled 256×256 when both sides are at least 256 px (else
striped), ``nodata=255``, embedded colour map (255 black; GDAL stores the nodata entry with alpha 0), band description listing the classes, and tags
``CLASS_SET`` (set name), ``LABEL_ENCODING`` (``index``: the pixels are class indices; a
``class_set`` with ``label_encoding="official"`` marks a label saved in the dataset's encoding),
``CLASS_NAMES`` (JSON list in index order), ``CLASS_<i>`` (name of class ``i``) and
``IGNORE_VALUE``. PNG masks carry ``CLASS_SET``, ``LABEL_ENCODING`` and ``IGNORE_VALUE`` as text
chunks. Every label reader (:func:`metaseg.geo.read_label`) recognises these files, so a mask the
project wrote is never mistaken for a label in the official encoding.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from metaseg.classes import ClassSet
from metaseg.errors import MetasegError

logger = logging.getLogger(__name__)

GEOTIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
BLOCK_SIZE = 256
COG_BLOCK_SIZE = 512


def _check_mask(index: np.ndarray) -> np.ndarray:
    index = np.asarray(index)
    if index.ndim != 2 or index.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D (H, W) array, got shape {index.shape}")
    if index.dtype != np.uint8:
        if index.min() < 0 or index.max() > 255:
            raise ValueError("mask values must fit in uint8 (0..255)")
        index = index.astype(np.uint8)
    return np.ascontiguousarray(index)


def _to_affine(transform: Any):
    from rasterio.transform import Affine

    if transform is None:
        return None
    if isinstance(transform, Affine):
        return transform
    values = tuple(float(v) for v in transform)
    if len(values) == 6:  # GDAL order: x0, dx, rx, y0, ry, dy (the TileInfo convention)
        return Affine.from_gdal(*values)
    if len(values) == 9:  # a full 3x3 affine matrix, row-major
        return Affine(*values[:6])
    raise ValueError(f"transform must be an Affine or 6 GDAL-order numbers, got {len(values)} values")


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an unwritable output (missing/odd folder, a file in the way, disk full) into a one-line
    :class:`MetasegError` instead of an OSError / RasterioIOError traceback."""
    from rasterio.errors import RasterioError

    try:
        yield
    except (OSError, RasterioError, UnicodeEncodeError) as exc:
        if isinstance(exc, UnicodeEncodeError):
            reason = "the file name is not valid UTF-8; choose another name"
        elif isinstance(exc, (FileExistsError, NotADirectoryError)):
            reason = f"{path.parent} is not a folder"
        else:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise MetasegError(f"cannot write the mask to {path}: {' '.join(str(reason).split())}") from exc


def write_mask_geotiff(
    path: str | Path,
    index: np.ndarray,
    class_set: ClassSet,
    crs: Any = None,
    transform: Any = None,
) -> Path:
    """Write a class mask as a single-band ``uint8`` GeoTIFF.

    Args:
        path: output file.
        index: class indices ``uint8`` H×W (255 = ignore / nodata).
        class_set: the :class:`metaseg.classes.ClassSet` of the mask (names and colours).
        crs: CRS of the source tile (anything rasterio accepts, e.g. ``"EPSG:32621"`` or WKT);
            ``None`` writes a non-georeferenced GeoTIFF.
        transform: the source tile's geotransform (``Affine`` or 6 GDAL-order numbers);
            ``None`` for a non-georeferenced file.

    Returns:
        The written path.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    index = _check_mask(index)
    path = Path(path)
    height, width = index.shape
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "uint8",
        "nodata": class_set.ignore_index,
        "compress": "deflate",
        "photometric": "palette",
    }
    if width >= BLOCK_SIZE and height >= BLOCK_SIZE:
        profile.update(tiled=True, blockxsize=BLOCK_SIZE, blockysize=BLOCK_SIZE)
    affine = _to_affine(transform)
    if crs is not None:
        profile["crs"] = crs
    if affine is not None:
        profile["transform"] = affine
    with _writing(path), warnings.catch_warnings():
        path.parent.mkdir(parents=True, exist_ok=True)
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            # colour map before pixels: once data is written libtiff can no longer set the
            # palette photometric tag (GDAL logs "Cannot modify tag PhotometricInterpretation").
            _write_mask_band(dst, index, class_set)
    logger.info("wrote %dx%d mask GeoTIFF %s (crs=%s)", width, height, path, crs)
    return path


def _write_mask_band(dst: Any, index: np.ndarray, class_set: ClassSet) -> None:
    """Colour map, pixels, class tags and band description of an open single-band mask dataset."""
    names = [str(n) for n in class_set.names]
    # colour map before pixels: once data is written libtiff can no longer set the
    # palette photometric tag (GDAL logs "Cannot modify tag PhotometricInterpretation").
    dst.write_colormap(1, class_set.colormap())
    dst.write(index, 1)
    dst.update_tags(
        CLASS_SET=class_set.name,
        LABEL_ENCODING=class_set.label_encoding,
        CLASS_NAMES=json.dumps(names),
        IGNORE_VALUE=str(class_set.ignore_index),
        **{f"CLASS_{i}": n for i, n in enumerate(names)},
    )
    dst.set_band_description(
        1, "class index: " + ", ".join(f"{i}={n}" for i, n in enumerate(names))
        + f", {class_set.ignore_index}=no data"
    )


def write_mask_cog(
    path: str | Path,
    index: np.ndarray,
    class_set: ClassSet,
    crs: Any = None,
    transform: Any = None,
    *,
    blocksize: int = COG_BLOCK_SIZE,
) -> Path:
    """Write a class mask as a Cloud-Optimized GeoTIFF, atomically.

    The mask is built in memory (palette, tags, nodata 255), then copied by GDAL's ``COG`` driver
    (tiled ``blocksize``, deflate, overviews with mode resampling) to a temporary file next to
    ``path``, which then replaces ``path`` in one ``os.replace``: readers (and a resumed job) see
    the old file or the complete new one, never a half-written mask.

    Args:
        path: output ``.tif``/``.tiff``.
        index: class indices ``uint8`` H×W (255 = ignore / nodata).
        class_set: the :class:`metaseg.classes.ClassSet` of the mask.
        crs, transform: the source tile's georeference (``None`` for a plain file).
        blocksize: internal tile size (a power of two, at least 16).

    Returns:
        The written path.
    """
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as raster_copy

    index = _check_mask(index)
    path = Path(path)
    if path.suffix.lower() not in GEOTIFF_SUFFIXES:
        raise MetasegError(f"a Cloud-Optimized GeoTIFF needs a .tif/.tiff path, got {path.name!r}")
    height, width = index.shape
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8",
        "nodata": class_set.ignore_index, "photometric": "palette",
    }
    affine = _to_affine(transform)
    if crs is not None:
        profile["crs"] = crs
    if affine is not None:
        profile["transform"] = affine
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    with _writing(path), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with MemoryFile() as mem:
                with mem.open(**profile) as dst:
                    _write_mask_band(dst, index, class_set)
                with mem.open() as src:
                    raster_copy(
                        src, str(tmp), driver="COG", BLOCKSIZE=int(blocksize), COMPRESS="DEFLATE",
                        OVERVIEW_RESAMPLING="MODE", BIGTIFF="IF_SAFER",
                    )
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    logger.info("wrote %dx%d mask COG %s (crs=%s)", width, height, path, crs)
    return path


def write_mask_png(path: str | Path, index: np.ndarray, class_set: ClassSet) -> Path:
    """Write a class mask as a palette ('P' mode) PNG.

    Pixel values are the class indices themselves (255 = ignore), so reading the PNG back
    with Pillow gives the mask exactly; viewers show the class colours.

    Returns:
        The written path.
    """
    index = _check_mask(index)
    path = Path(path)
    img = Image.frombytes("P", (index.shape[1], index.shape[0]), index.tobytes())
    img.putpalette(class_set.palette_bytes())
    from PIL.PngImagePlugin import PngInfo

    text = PngInfo()
    text.add_text("CLASS_SET", class_set.name)
    text.add_text("LABEL_ENCODING", class_set.label_encoding)
    text.add_text("IGNORE_VALUE", str(class_set.ignore_index))
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, format="PNG", optimize=False, pnginfo=text)
    logger.info("wrote %dx%d mask PNG %s", index.shape[1], index.shape[0], path)
    return path


def _is_georeferenced(tile_info: Any) -> bool:
    return (
        tile_info is not None
        and getattr(tile_info, "crs", None) is not None
        and getattr(tile_info, "transform", None) is not None
    )


def write_mask(
    path: str | Path,
    index: np.ndarray,
    class_set: ClassSet,
    tile_info: Any = None,
) -> Path:
    """Write a mask in the format its extension asks for (see the module docstring).

    Args:
        path: ``.tif``/``.tiff`` (GeoTIFF, georeferenced when ``tile_info`` is) or ``.png``.
        index: class indices ``uint8`` H×W.
        class_set: the class set of the mask.
        tile_info: the :class:`metaseg.geo.TileInfo` of the source tile, or ``None``.

    Raises:
        MetasegError: unsupported extension, a mask whose size differs from the tile's, or an
            output path that cannot be written (one line, no OSError/RasterioIOError traceback).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    index = _check_mask(index)
    if tile_info is not None:
        w, h = getattr(tile_info, "width", None), getattr(tile_info, "height", None)
        if w is not None and h is not None and (int(h), int(w)) != index.shape:
            raise MetasegError(
                f"mask is {index.shape[1]}x{index.shape[0]} but the tile is {w}x{h}; cannot georeference it"
            )
    if suffix in GEOTIFF_SUFFIXES:
        if _is_georeferenced(tile_info):
            return write_mask_geotiff(path, index, class_set, tile_info.crs, tile_info.transform)
        logger.info("tile has no georeference: writing a plain GeoTIFF without CRS")
        return write_mask_geotiff(path, index, class_set)
    if suffix in PNG_SUFFIXES:
        if _is_georeferenced(tile_info):
            logger.info("PNG output drops the tile's georeference; use .tif to keep it")
        return write_mask_png(path, index, class_set)
    raise MetasegError(
        f"cannot write a mask as {path.name!r}: use a .tif/.tiff (GeoTIFF) or .png output path"
    )


def supported_suffixes() -> Sequence[str]:
    """Output extensions :func:`write_mask` understands."""
    return GEOTIFF_SUFFIXES + PNG_SUFFIXES


__all__ = [
    "supported_suffixes",
    "write_mask",
    "write_mask_cog",
    "write_mask_geotiff",
    "write_mask_png",
]
