"""Input discovery on the client: GeoTIFF files, folders of them and STAC documents → :class:`Source`.

Folders are scanned recursively for ``*.tif`` / ``*.tiff`` in any case. Label and mask files
(:func:`is_label_file`) are never inputs: mapping a mask as imagery is always a mistake.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from metaseg.errors import MetasegError
from metaseg.mapping.layout import is_url, stem_of
from metaseg.mapping.sources import STAC_SUFFIXES, TILE_SUFFIXES, Source
from metaseg.mapping.stac import read_stac


def _folder_tiles(folder: Path) -> list[Path]:
    found = [
        p for p in folder.rglob("*")
        if p.suffix.lower() in TILE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    ]
    return sorted(found)


#: label files by the examples' convention (``synth_af_label.tif`` beside ``synth_af.tif``) and
#: the studio's mask downloads (``metasegnet_mask.tif``): never imagery
LABEL_NAME_SUFFIXES = ("_label", "_labels", "_mask")


def is_label_file(path: str | os.PathLike) -> bool:
    """Whether a local file is a label or class mask rather than imagery: named like one
    (:data:`LABEL_NAME_SUFFIXES`, the studio's ``label_<class set>_…`` files) or tagged as one by
    this project (``LABEL_ENCODING`` / ``CLASS_SET`` + ``CLASS_NAMES`` GeoTIFF tags, written by
    ``predict``, ``map`` and the studio)."""
    p = Path(path)
    stem = p.stem.lower()
    if stem.endswith(LABEL_NAME_SUFFIXES) or stem.startswith(("label_openearthmap_", "label_loveda_", "label_potsdam_")):
        return True
    if p.suffix.lower() not in (".tif", ".tiff"):
        return False
    try:
        import rasterio

        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"), rasterio.open(p) as ds:
            tags = ds.tags()
    except Exception:  # noqa: BLE001 - unreadable: mapped (and reported) as a failed tile
        return False
    return "LABEL_ENCODING" in tags or ("CLASS_SET" in tags and "CLASS_NAMES" in tags)


def discover(inputs: Sequence[str | os.PathLike], asset: str | None = None, *,
             exclude: str | os.PathLike | None = None, excluded: list[str] | None = None) -> list[Source]:
    """Every tile named by ``inputs`` (files, folders, STAC documents), in input order, without duplicates.

    ``exclude``: a folder whose files are never inputs when a folder is scanned (the job's output
    folder, so masks of an earlier run inside an input folder are not mapped again).
    Label and mask files (:func:`is_label_file`) are never inputs either; their paths are appended
    to ``excluded`` when a list is given.

    Raises:
        MetasegError: a path that does not exist, a folder without GeoTIFFs, an unreadable STAC
            document, a missing ``--asset`` (bad arguments: exit 2, nothing has run yet).
    """
    sources: list[Source] = []
    seen: set[str] = set()

    def add(src: Source) -> None:
        key = src.path if is_url(src.path) else os.path.realpath(src.path)
        if key not in seen:
            seen.add(key)
            sources.append(src)

    if not inputs:
        raise MetasegError("give at least one input (GeoTIFF files, folders or a STAC document)")
    for raw in inputs:
        text = os.fspath(raw)
        lower = text.lower().split("?")[0]
        if is_url(text):
            if lower.endswith(TILE_SUFFIXES):
                add(Source(path=text, stem=stem_of(lower)))
            else:
                for src in read_stac(text, asset):
                    add(src)
            continue
        p = Path(text)
        if not p.exists():
            raise MetasegError(f"input not found: {text}")
        if p.is_dir():
            tiles = _folder_tiles(p)
            if exclude is not None:
                skip = os.path.realpath(exclude) + os.sep
                tiles = [t for t in tiles if not os.path.realpath(t).startswith(skip)]
            labels = [t for t in tiles if is_label_file(t)]
            if excluded is not None:
                excluded.extend(str(t) for t in labels)
            tiles = [t for t in tiles if t not in labels]
            if not tiles:
                extra = f" (only label/mask files: {len(labels)} skipped)" if labels else ""
                raise MetasegError(f"no GeoTIFFs (*.tif, *.tiff) in folder {text}{extra}")
            for t in tiles:
                add(Source(path=str(t), stem=t.stem))
        elif p.suffix.lower() in STAC_SUFFIXES:
            for src in read_stac(str(p), asset):
                add(src)
        elif is_label_file(p):
            if excluded is not None:
                excluded.append(str(p))
        else:  # any other file is taken as a tile: a bad one fails as a tile, the job goes on
            add(Source(path=str(p), stem=p.stem))
    if not sources:
        raise MetasegError("every input is a label or mask file (e.g. *_label.tif, a predicted mask), not imagery")
    return sources

