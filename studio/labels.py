"""Label painting: editor composites, label layers, encoding, tagged files, zips."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.classes import ClassSet
from metaseg.errors import MetasegError, TileReadError
from studio.limits import max_upload_mb
from studio.prompt_store import get_store

IGNORE = 255


def editor_composite(value: Any) -> np.ndarray | None:
    """The flattened image of a ``gr.ImageEditor`` value (dict with background/layers/composite)."""
    if value is None:
        return None
    if isinstance(value, dict):
        comp = value.get("composite")
        if comp is None:
            comp = value.get("background")
        if comp is None:
            return None
        if isinstance(comp, (str, Path)):
            from PIL import Image

            comp = np.asarray(Image.open(comp).convert("RGBA"))
        comp = np.asarray(comp)
        if comp.ndim == 3 and comp.shape[2] == 4:  # transparent pixels: take the background's colour
            bg = value.get("background")
            if bg is not None and not isinstance(bg, (str, Path)):
                bg = np.asarray(bg)
                if bg.shape[:2] == comp.shape[:2]:
                    a = comp[..., 3:4].astype(np.float32) / 255.0
                    comp = (comp[..., :3] * a + bg[..., :3] * (1 - a)).astype(np.uint8)
        return comp
    return np.asarray(value)


#: Lowest layer alpha (0..255) that counts as painted (below it the 8-bit colour is too coarse to tell the class).
PAINT_MIN_ALPHA = 8
#: Tags of a label file the studio writes (GeoTIFF tags / PNG text chunks).
LABEL_ENCODING_TAG = "LABEL_ENCODING"


def label_layer(index: np.ndarray, class_set: Any, opacity: float) -> np.ndarray:
    """The editor's paint layer for a mask: RGBA, class colour at ``opacity``, unlabelled transparent."""
    index = np.asarray(index)
    out = np.zeros((*index.shape, 4), dtype=np.uint8)
    out[..., :3] = np.asarray(class_set.colorize(index), dtype=np.uint8)
    labelled = index < class_set.num_classes
    out[..., 3] = np.where(labelled, int(round(255 * min(max(float(opacity), 0.05), 1.0))), 0)
    return out


def layer_to_index(layer: np.ndarray, class_set: Any, valid: np.ndarray | None = None,
                   min_alpha: int = PAINT_MIN_ALPHA) -> np.ndarray:
    """Class indices of a painted RGBA layer: each painted pixel takes the nearest class colour,
    transparent pixels (never painted, or erased) are unlabelled (255), as are pixels outside ``valid``."""
    img = np.asarray(layer)
    if img.ndim != 3 or img.shape[2] != 4:
        raise MetasegError(f"the paint layer must be an RGBA image, got shape {img.shape}")
    index = class_set.nearest_index(img[..., :3])
    index[img[..., 3] < min_alpha] = IGNORE
    if valid is not None:
        index[~np.asarray(valid, dtype=bool)] = IGNORE
    return index


def editor_layer(value: Any) -> np.ndarray | None:
    """The first paint layer (RGBA array) of a ``gr.ImageEditor`` value, or ``None``."""
    if not isinstance(value, dict):
        return None
    layers = value.get("layers") or []
    if not layers or layers[0] is None:
        return None
    layer = layers[0]
    if isinstance(layer, (str, Path)):
        from PIL import Image

        with Image.open(layer) as im:
            layer = np.asarray(im.convert("RGBA"))
    layer = np.asarray(layer)
    if layer.ndim == 3 and layer.shape[2] == 3:  # no alpha: every pixel counts as painted
        layer = np.concatenate([layer, np.full(layer.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return layer


def encode_label(index: np.ndarray, class_set: Any) -> np.ndarray:
    """Class indices → the values of a label file the studio writes.

    The class set's official class values (OpenEarthMap/LoveDA: index + 1; Potsdam: its colours),
    and 255 for every unlabelled pixel (never a class, and never the official no-data 0, so a
    sparse label reads the same in any reader of the official encoding: 255 is not a class value).
    Potsdam's RGB labels keep black, its official ignore colour.
    """
    index = np.asarray(index)
    encoded = np.asarray(class_set.encode(index))
    if encoded.ndim == 2:
        encoded = encoded.astype(np.uint8, copy=True)
        encoded[(index < 0) | (index >= class_set.num_classes)] = IGNORE
    return encoded


def label_tags(class_set: Any, index: np.ndarray) -> dict[str, str]:
    """What a saved label says about itself: class set, encoding, unlabelled value, labelled pixels."""
    import json

    labelled = int((np.asarray(index) < class_set.num_classes).sum())
    if class_set.encoding != "rgb":
        values = {"0": "no data"} | {str(i + 1): n for i, n in enumerate(class_set.names)}
    else:
        values = dict(class_set.legend())  # name -> colour
        values = {c: n for n, c in values.items()}
    return {
        "CLASS_SET": class_set.name,
        LABEL_ENCODING_TAG: "official",  # class values as the dataset stores them (not 0-based indices)
        "UNLABELLED_VALUE": "0,0,0" if class_set.encoding == "rgb" else str(IGNORE),
        "LABEL_VALUES": json.dumps(values),
        "LABELLED_PIXELS": str(labelled),
        "WRITTEN_BY": "metaseg studio",
    }


def save_label(index: np.ndarray, class_set: Any, tile_info: Any, tile_hash_: str, outdir: Path) -> dict[str, Any]:
    """Write a ground-truth label (:func:`encode_label`: official class values, 255 = unlabelled)
    with its class set in the file's tags, and record it in SQLite.

    GeoTIFF with the tile's CRS/transform when the tile is georeferenced, PNG otherwise (tags as
    PNG text chunks).
    """
    encoded = encode_label(index, class_set)
    tags = label_tags(class_set, index)
    geo = tile_info is not None and getattr(tile_info, "crs", None) and getattr(tile_info, "transform", None)
    # unique per call (two visitors labelling the same tile in the same second get two files), and
    # written under a temporary name then renamed, so a recorded path always holds a whole file
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    outdir.mkdir(parents=True, exist_ok=True)
    suffix = ".png" if encoded.ndim == 3 or not geo else ".tif"
    path = outdir / f"label_{class_set.name}_{stamp}{suffix}"
    tmp = outdir / f".partial-{uuid.uuid4().hex}{suffix}"
    try:
        if encoded.ndim == 3:  # RGB-coded (Potsdam): the colours are the encoding
            _write_png(tmp, encoded[..., :3].astype(np.uint8), tags)
        elif geo:
            from metaseg.export import write_mask_geotiff

            write_mask_geotiff(tmp, encoded, _raw_view(class_set), tile_info.crs, tile_info.transform)
            _tag_geotiff(tmp, tags)
        else:
            _write_png(tmp, encoded, tags, palette=_raw_view(class_set).palette_bytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    row = get_store().save_label(tile_hash_, class_set.name, str(path))
    return {"path": str(path), "labelled_pixels": int(tags["LABELLED_PIXELS"]), **row}


def _write_png(path: Path, pixels: np.ndarray, tags: dict[str, str], palette: list[int] | None = None) -> None:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for k, v in tags.items():
        info.add_text(k, v)
    if palette is not None:
        img = Image.frombytes("P", (pixels.shape[1], pixels.shape[0]), np.ascontiguousarray(pixels).tobytes())
        img.putpalette(palette)
    else:
        img = Image.fromarray(pixels)
    img.save(path, format="PNG", pnginfo=info)


def _tag_geotiff(path: Path, tags: dict[str, str]) -> None:
    import rasterio

    with rasterio.open(path, "r+") as ds:
        ds.update_tags(**tags)


def label_file_tags(path: str | os.PathLike) -> dict[str, str]:
    """The tags of a label file (GeoTIFF tags or PNG text chunks); empty when it has none."""
    p = Path(path)
    try:
        if p.suffix.lower() in (".tif", ".tiff"):
            import rasterio

            with rasterio.open(p) as ds:
                return dict(ds.tags())
        from PIL import Image

        with Image.open(p) as im:
            return {str(k): str(v) for k, v in (getattr(im, "text", None) or {}).items()}
    except Exception:  # noqa: BLE001 - unreadable: no tags (the reader reports the file itself)
        return {}


def _raw_view(class_set: ClassSet) -> ClassSet:
    """Names/colours indexed by the *raw* label value (offset-1 encodings: raw 0 = no data).

    Lets the mask writers embed a correct colour map in a label saved in the official encoding;
    255 (unlabelled) is its no-data value.
    """
    return ClassSet(
        name=class_set.name,
        names=("no data", *class_set.names),
        colors=((0, 0, 0), *class_set.colors),
        scored=tuple(i + 1 for i in class_set.scored),
        default_zone=class_set.default_zone,
        encoding=class_set.encoding,
        ignore_index=IGNORE,
        label_encoding="official",  # the LABEL_ENCODING tag: readers decode it as the dataset does
    )


def ensure_readable(path: str | None) -> str:
    """Reject missing/empty/oversized uploads with a one-line user message."""
    if not path:
        raise TileReadError("no file given: upload a GeoTIFF, PNG or JPEG tile")
    p = Path(path)
    if not p.is_file():
        raise TileReadError("the uploaded file is missing on the server; upload it again")
    size = p.stat().st_size
    if size == 0:
        raise TileReadError("the uploaded file is empty")
    if size > max_upload_mb() * 1024 * 1024:
        raise TileReadError(f"the file is {size / 2**20:.0f} MB; the limit is {max_upload_mb()} MB (METASEG_MAX_UPLOAD_MB)")
    return str(p)


def label_dir() -> Path:
    """Saved ground-truth labels: ``METASEG_LABEL_DIR`` or ``labels/`` next to the database."""
    from prompts_db import default_db_path

    return Path(os.environ.get("METASEG_LABEL_DIR") or Path(default_db_path()).parent / "labels")


def zip_labels(tile_hash_: str, out: Path, label_ids: set[int] | None = None) -> Path:
    """The saved label files of a tile in one zip (only ``label_ids`` when given: a session's own;
    MetasegError when there are none)."""
    import zipfile

    rows = [r for r in get_store().labels(tile_hash_) if label_ids is None or r.get("id") in label_ids]
    files = [Path(r["mask_path"]) for r in rows if Path(r["mask_path"]).is_file()]
    if not files:
        raise MetasegError("no saved labels for this tile yet")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, arcname=f.name)
    return out
