"""Ground-truth label files: read and decode to class indices (255 = ignore), and tile hashes."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metaseg.errors import TileReadError
from metaseg.geo.georef import _rasterio_open
from metaseg.geo.reading import _pillow_open
from metaseg.geo.tiles import _check_file, _check_size, _fail

if TYPE_CHECKING:
    from metaseg.classes import ClassSet

log = logging.getLogger(__name__)


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
