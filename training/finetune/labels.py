"""Reading and checking label files for teaching (official encodings or the project's own).

A label holds only classes of its set: the set's official codes (``0`` = no-data = unlabelled
for single-band sets), ``255`` = unlabelled (the studio's Label editor), or, for colour-coded
sets, the set's class colours with black = unlabelled. Anything else is refused in one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.errors import TileReadError
from training.finetune.recipe import IGNORE

_LABEL_NAME = re.compile(r"^label_([a-z0-9_]+?)_")


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _tags(items: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}


def _read_tiff(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    import warnings

    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            tags = _tags(ds.tags().items())
            data = ds.read()
    arr = data[0] if data.shape[0] == 1 else np.moveaxis(data[:3], 0, -1)
    return arr, tags


def _read_image(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        tags = _tags((getattr(im, "text", None) or {}).items())
        if im.mode in ("L", "P", "I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im)
        elif im.mode in ("LA", "PA"):
            arr = np.asarray(im)[..., 0]
        else:
            arr = np.asarray(im.convert("RGB"))
    return arr, tags


def _raw_label(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    """The label raster undecoded, plus its text tags (PNG text chunks / GeoTIFF tags)."""
    if not path.is_file():
        raise TileReadError(f"cannot read label {path.name}: file not found")
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        raise TileReadError(f"cannot read label {path.name}: labels must be lossless (PNG or GeoTIFF), not JPEG")
    try:
        return _read_tiff(path) if suffix in (".tif", ".tiff") else _read_image(path)
    except TileReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL/rasterio raise many kinds: one line for the user
        raise TileReadError(f"cannot read label {path.name}: {type(exc).__name__}: {_one_line(exc)[:160]}") from None


def label_class_set(path: str | Path) -> str | None:
    """The class set a project label file names (``class_set`` tag or ``label_<set>_`` file name)."""
    from metaseg.classes import CLASS_SETS

    p = Path(path)
    try:
        _, tags = _raw_label(p)
    except TileReadError:
        tags = {}
    name = (tags.get("class_set") or tags.get("metaseg_class_set") or "").strip().lower()
    if name in CLASS_SETS:
        return name
    m = _LABEL_NAME.match(p.name.lower())
    if m and m.group(1) in CLASS_SETS:
        return m.group(1)
    return None


def _decode_colours(p: Path, raw: np.ndarray, class_set: Any) -> np.ndarray:
    """A colour-coded label (Potsdam, or a colour rendering of a single-band set) as class indices."""
    target = class_set.decode(raw)
    rgb = raw[..., :3].reshape(-1, 3)
    bad = (target.reshape(-1) == IGNORE) & np.any(rgb != 0, axis=1)
    if bool(bad.any()):
        colour = "#{:02X}{:02X}{:02X}".format(*(int(v) for v in rgb[np.argmax(bad)]))
        raise TileReadError(f"label {p.name} holds the colour {colour} ({int(bad.sum())} px), which is not a "
                            f"{class_set.name} class colour (valid: {', '.join(c for _, c in class_set.legend())}; "
                            "black = unlabelled): is it a label, and is --class-set right?")
    return target


def decode_label(path: str | Path, class_set: Any, shape: tuple[int, int]) -> np.ndarray:
    """Read and check a label: ``(H, W)`` uint8 class indices, 255 = unlabelled.

    Raises:
        TileReadError: unreadable, size differs from the tile, or a value that is not a class of
            the set (nor its no-data value, nor 255).
    """
    p = Path(path)
    raw, _ = _raw_label(p)
    if tuple(raw.shape[:2]) != tuple(shape[:2]):
        raise TileReadError(f"label {p.name} is {raw.shape[1]}×{raw.shape[0]} pixels but its tile is "
                            f"{shape[1]}×{shape[0]}")
    if class_set.encoding == "rgb" and raw.ndim != 3:
        raise TileReadError(f"label {p.name}: {class_set.name} labels are RGB colour-coded, this one has one band")
    if raw.ndim == 3:
        return _decode_colours(p, raw, class_set)
    if not np.issubdtype(raw.dtype, np.integer):
        raise TileReadError(f"label {p.name} has non-integer values ({raw.dtype})")
    values = np.unique(raw)
    allowed = set(range(0, class_set.num_classes + 1)) | {IGNORE}
    bad = [int(v) for v in values if int(v) not in allowed]
    if bad:
        raise TileReadError(
            f"label {p.name} holds value {bad[0]}, which is not a class of {class_set.name} (valid: 1..{class_set.num_classes} "
            f"= {', '.join(class_set.names)}; 0 or 255 = unlabelled): is --class-set right?")
    return class_set.decode(raw)
