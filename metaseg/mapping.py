"""Large-area mapping: many tiles, many machines, each tile with the prompt of its own climate zone.

This is the library behind ``python -m metaseg map`` (DESIGN.md §6.1, §7). Torch-free on the
client; the task function :func:`map_tiles` imports torch on the workers only.

How a job runs:

1. **Inputs** (:func:`discover`, client): GeoTIFF files, folders of them (recursive, ``*.tif`` /
   ``*.tiff`` in any case) and STAC ItemCollections / catalogs / items (a local path or an
   ``http(s)`` URL, read with ``pystac``). A STAC item contributes one asset: ``--asset KEY``,
   else ``visual``, else its first image asset; relative asset hrefs are resolved against the
   STAC file. Each tile gets a unique id (:func:`assign_ids`): the file stem (the item id for STAC),
   suffixed with a short hash of the full path when two inputs share a stem, so masks of
   ``a/tile.tif`` and ``b/tile.tif`` never overwrite each other.
2. **Plan** (:meth:`MapJob.plan`, client): every tile's header is read (no pixels) and its zone
   taken at its footprint centre (remote STAC assets: the item's geometry); the caller's
   ``prompt_for(zone)`` gives the prompt *text* (the CLI reads the prompt store; library code never
   does). A tile that cannot be read or has no georeference is ``failed`` here with its reason.
   ``resume=True`` marks tiles whose mask exists and whose fingerprint (input size + mtime, model
   weights, prompt, inference settings) equals the previous ``summary.json`` as ``skipped``.
3. **Tasks** (:func:`map_tiles`, workers, through :class:`metaseg.runner.Runner`): read the tile,
   predict with the worker's model (loaded once per worker), write the mask as a Cloud-Optimized
   GeoTIFF on the tile's grid (:func:`metaseg.export.write_mask_cog`, atomic), vectorise it
   (:func:`metaseg.vectorize.mask_to_features`) and send the polygons back as WKB with the
   per-class areas. Skipped tiles only re-vectorise their existing mask, so their polygons still
   reach the vector file once. A tile that fails returns its one-line reason; the job goes on.
4. **Client writes** (:meth:`MapJob.run`): the vector file (appended as tiles finish, each tile's
   polygons exactly once, even when a lost worker's task is re-run), ``summary.json`` (rewritten
   atomically after finished tiles, so a crash leaves an accurate record) and, at the end, the
   area report (hectares per zone × class, Markdown + CSV).

GPU workers: a task may carry several tiles (``tiles_per_task``). On a CUDA worker the tiles of a
task that fit in one model window are stacked into batches (each sample with its own prompt) so
small tiles fill the GPU; larger tiles run through the sliding-window predictor, which batches
their windows. On CPU (where batch 1 is fastest) each tile is predicted on its own.

Areas: ``area_ha`` sums the equal-area (EPSG:6933) areas of *all* polygons, measured before
simplification and before the ``min_area_m2`` filter, so the statistics do not depend on the
vector-size options.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from metaseg.errors import MetasegError, TileReadError

logger = logging.getLogger(__name__)

TILE_SUFFIXES = (".tif", ".tiff")
STAC_SUFFIXES = (".json", ".geojson")
DEFAULT_ASSET = "visual"
VECTOR_FORMATS = {"gpkg": "classes.gpkg", "geojson": "classes.geojson"}
SUMMARY_NAME = "summary.json"
REPORT_MD = "area_report.md"
REPORT_CSV = "area_report.csv"
MASKS_DIR = "masks"
#: Attribute fields of the polygon layer, in order.
FIELDS = ("class", "area_m2", "zone", "tile")
#: Key of ``area_ha`` for tiles without a climate zone (ocean or unknown location).
NO_ZONE = "none"
DOWNLOAD_TIMEOUT_S = 60.0
#: Image media types of STAC assets (``--asset`` not given and no ``visual`` asset).
_IMAGE_TYPES = ("image/tiff", "image/geotiff", "application/geotiff", "image/vnd.stac.geotiff")


def _is_url(text: str) -> bool:
    return str(text).lower().startswith(("http://", "https://"))


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Source:
    """One input tile found on the client.

    Attributes:
        path: local path or ``http(s)`` URL of the GeoTIFF.
        stem: preferred mask name (file stem; STAC item id).
        item: STAC item id, or ``None`` for plain files.
        centre: ``(lat, lon)`` of the STAC item's geometry / bbox (used for remote assets).
        version: what identifies the content of a remote asset (STAC ``updated``/``datetime``,
            ``file:checksum``) for resume fingerprints.
    """

    path: str
    stem: str
    item: str | None = None
    centre: tuple[float, float] | None = None
    version: str | None = None


def _folder_tiles(folder: Path) -> list[Path]:
    found = [
        p for p in folder.rglob("*")
        if p.suffix.lower() in TILE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    ]
    return sorted(found)


def _geometry_centre(item: Any) -> tuple[float, float] | None:
    """(lat, lon) of the centre of a STAC item's bbox (or geometry bounds)."""
    bbox = getattr(item, "bbox", None)
    if not bbox and getattr(item, "geometry", None):
        try:
            from shapely.geometry import shape

            bbox = shape(item.geometry).bounds
        except Exception:  # noqa: BLE001 - odd geometry: no centre
            bbox = None
    if not bbox or len(bbox) not in (4, 6):
        return None
    west, south, east, north = (bbox[0], bbox[1], bbox[3], bbox[4]) if len(bbox) == 6 else bbox
    if east < west:  # crosses the antimeridian
        east += 360.0
    lon = (west + east) / 2.0
    lon = ((lon + 180.0) % 360.0) - 180.0
    return (float(south + north) / 2.0, float(lon))


def _pick_asset(item: Any, key: str | None) -> tuple[str, Any]:
    assets = dict(item.assets)
    if key:
        if key in assets:
            return key, assets[key]
        raise MetasegError(
            f"STAC item {item.id!r} has no asset {key!r} (it has: {', '.join(sorted(assets)) or 'none'})"
        )
    if DEFAULT_ASSET in assets:
        return DEFAULT_ASSET, assets[DEFAULT_ASSET]
    for name, asset in assets.items():
        media = (asset.media_type or "").lower()
        roles = set(asset.roles or [])
        href = (asset.href or "").lower().split("?")[0]
        if media.startswith(_IMAGE_TYPES) or "data" in roles and href.endswith(TILE_SUFFIXES) \
                or (not media and href.endswith(TILE_SUFFIXES)):
            return name, asset
    raise MetasegError(
        f"STAC item {item.id!r} has no image asset (assets: {', '.join(sorted(assets)) or 'none'}); "
        "pick one with --asset KEY"
    )


def _resolve_href(href: str, base: str) -> str:
    """An asset href as an absolute local path or URL (relative hrefs against the STAC file ``base``)."""
    if _is_url(href):
        return href
    if href.lower().startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlparse(href).path)
    if _is_url(base):
        return urllib.parse.urljoin(base, href)
    if os.path.isabs(href):
        return href
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(base)), href))


def _read_stac(href: str, asset_key: str | None) -> list[Source]:
    """Sources of a STAC ItemCollection, catalog/collection (recursive) or single item."""
    import pystac
    from pystac import StacIO

    try:
        data = StacIO.default().read_json(href)
    except Exception as exc:  # noqa: BLE001 - HTTP errors, bad JSON, missing file
        raise MetasegError(f"cannot read STAC input {href}: {_one_line(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise MetasegError(f"{href} is not a STAC document (a JSON object)")
    items: list[Any] = []
    bases: list[str] = []
    try:
        if data.get("type") == "FeatureCollection":
            collection = pystac.ItemCollection.from_dict(data, preserve_dict=False)
            items = list(collection.items)
            bases = [href] * len(items)
        else:
            obj = pystac.read_dict(data, href=href)
            if isinstance(obj, pystac.Item):
                items, bases = [obj], [href]
            elif isinstance(obj, pystac.Catalog):  # Collection is a Catalog
                for item in obj.get_items(recursive=True):
                    items.append(item)
                    bases.append(item.get_self_href() or href)
            else:
                raise MetasegError(f"{href} is a STAC {type(obj).__name__}, not an item collection or catalog")
    except MetasegError:
        raise
    except Exception as exc:  # noqa: BLE001 - pystac raises many types on malformed documents
        raise MetasegError(f"cannot read STAC input {href}: {_one_line(exc)[:200]}") from None
    if not items:
        raise MetasegError(f"STAC input {href} has no items")
    out = []
    for item, base in zip(items, bases, strict=True):
        _, asset = _pick_asset(item, asset_key)
        path = _resolve_href(asset.href, base)
        props = item.properties or {}
        version = "|".join(str(v) for v in (
            props.get("updated"), props.get("datetime"), asset.extra_fields.get("file:checksum"),
            asset.extra_fields.get("file:size"),
        ))
        out.append(Source(path=path, stem=str(item.id), item=str(item.id), centre=_geometry_centre(item),
                          version=version))
    return out


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
        key = src.path if _is_url(src.path) else os.path.realpath(src.path)
        if key not in seen:
            seen.add(key)
            sources.append(src)

    if not inputs:
        raise MetasegError("give at least one input (GeoTIFF files, folders or a STAC document)")
    for raw in inputs:
        text = os.fspath(raw)
        lower = text.lower().split("?")[0]
        if _is_url(text):
            if lower.endswith(TILE_SUFFIXES):
                add(Source(path=text, stem=_stem_of(lower)))
            else:
                for src in _read_stac(text, asset):
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
            for src in _read_stac(str(p), asset):
                add(src)
        elif is_label_file(p):
            if excluded is not None:
                excluded.append(str(p))
        else:  # any other file is taken as a tile: a bad one fails as a tile, the job goes on
            add(Source(path=str(p), stem=p.stem))
    if not sources:
        raise MetasegError("every input is a label or mask file (e.g. *_label.tif, a predicted mask), not imagery")
    return sources


def _stem_of(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def _safe_stem(stem: str) -> str:
    clean = re.sub(r"[^\w.\-]+", "_", stem, flags=re.UNICODE).strip("._") or "tile"
    return clean[:120]


def assign_ids(sources: Sequence[Source]) -> list[str]:
    """Unique mask names: the (sanitised) stem, plus ``-<8 hex of the path>`` where stems collide.

    Collisions are found case-insensitively (masks may land on a case-insensitive file system).
    The names depend only on the inputs, so a resumed job finds the same masks.
    """
    stems = [_safe_stem(s.stem) for s in sources]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s.lower()] = counts.get(s.lower(), 0) + 1
    ids = []
    for src, stem in zip(sources, stems, strict=True):
        if counts[stem.lower()] > 1:
            key = src.path if _is_url(src.path) else os.path.realpath(src.path)
            stem = f"{stem}-{hashlib.sha1(key.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
        ids.append(stem)
    return ids


# --------------------------------------------------------------------------- tasks (workers)
@dataclass(frozen=True)
class MapSettings:
    """What every task needs besides its tile (small and picklable).

    Attributes:
        out: the job's output folder (masks go to ``out/masks``; shared with the workers).
        class_set: class set the client expects the model to predict (checked on the worker).
        window: sliding-window size (``None``: the model's).
        overlap: window overlap fraction.
        tta: flip test-time augmentation.
        min_area_m2: polygons smaller than this are left out of the vector file.
        simplify: polygon simplification tolerance in metres (0 = exact pixel outlines).
        vector_crs: CRS of the vector output.
        batch_tiles: stack one-window tiles of a task into batches (``None``: on CUDA only).
    """

    out: str
    class_set: str
    window: int | None = None
    overlap: float = 0.25
    tta: bool = False
    min_area_m2: float = 0.0
    simplify: float = 0.0
    vector_crs: str = "EPSG:4326"
    batch_tiles: bool | None = None


@dataclass(frozen=True)
class TileTask:
    """One tile of a task (small: the path and the prompt text, never pixels)."""

    id: str
    path: str
    zone: str | None
    prompt: str | None
    skip: bool = False  # resume: the mask is current, only re-vectorise it
    size: tuple[int, int] | None = None  # (height, width) when known on the client


def mask_path(out: str | os.PathLike, tile_id: str) -> Path:
    return Path(out) / MASKS_DIR / f"{tile_id}.tif"


def _fetch(url: str, folder: str) -> Path:
    """Download a remote tile into ``folder`` (keeps its file name, so errors name it)."""
    name = _safe_stem(_stem_of(url.split("?")[0])) + ".tif"
    dest = Path(folder) / name
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, dest.open("wb") as fh:  # noqa: S310
            shutil.copyfileobj(resp, fh, length=1 << 20)
    except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, timeouts
        raise TileReadError(f"cannot download {url}: {_one_line(exc)[:200]}") from None
    return dest


def _read_mask(path: Path, class_set: Any) -> tuple[Any, str, tuple] | None:
    """An existing mask (index, crs, GDAL transform), or ``None`` if it is unusable."""
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path) as ds:
            if ds.count != 1 or ds.crs is None or ds.tags().get("CLASS_SET") != class_set.name:
                return None
            return ds.read(1), ds.crs.to_wkt(), tuple(ds.transform.to_gdal())
    except (RasterioError, OSError):
        return None


def _vectorise(index: Any, crs: Any, transform: Any, class_set: Any, task: TileTask,
               settings: MapSettings) -> tuple[list[tuple[bytes, str, float]], dict[str, float]]:
    """(polygons as (wkb, class, area_m2) that pass ``min_area_m2``, area m² per class of all polygons)."""
    import shapely

    from metaseg.vectorize import mask_to_features

    features = mask_to_features(
        index, transform, crs, list(class_set.names), ignore=int(class_set.ignore_index),
        simplify=float(settings.simplify), dst_crs=settings.vector_crs,
    )
    areas: dict[str, float] = {}
    polygons = []
    for f in features:
        areas[f["class"]] = areas.get(f["class"], 0.0) + float(f["area_m2"])
        if f["area_m2"] >= settings.min_area_m2 and not f["geometry"].is_empty:
            polygons.append((shapely.to_wkb(f["geometry"]), f["class"], float(f["area_m2"])))
    return polygons, areas


def _predict_stacked(predictor: Any, group: list[tuple[TileTask, Any]]) -> list[Any]:
    """One forward pass over same-size one-window tiles, each with its own prompt (GPU batching),
    through the predictor's batch entry (its backend, autocast and text features)."""
    import numpy as np
    import torch

    rgb = np.stack([tile.rgb for _, tile in group])
    prompts = [task.prompt for task, _ in group] if predictor.uses_text else None
    index = predictor.predict_batch(rgb, prompts).to(torch.uint8).cpu().numpy()
    masks = []
    for k, (_, tile) in enumerate(group):
        m = np.ascontiguousarray(index[k])
        if tile.valid is not None:
            m[~tile.valid] = 255
        masks.append(m)
    return masks


def _batched_masks(predictor: Any, loaded: list[tuple[TileTask, Any]], settings: MapSettings) -> dict[str, Any]:
    """Masks of the one-window tiles of a task, predicted in stacked batches (see module docs)."""
    window = int(settings.window or predictor.window)
    groups: dict[tuple[int, int], list[tuple[TileTask, Any]]] = {}
    for task, tile in loaded:
        h, w = tile.rgb.shape[:2]
        if h <= window and w <= window:
            groups.setdefault((h, w), []).append((task, tile))
    masks: dict[str, Any] = {}
    size = max(1, int(predictor.batch_size))
    for group in groups.values():
        if len(group) < 2:
            continue
        for b in range(0, len(group), size):
            chunk = group[b:b + size]
            for (task, _), m in zip(chunk, _predict_stacked(predictor, chunk), strict=True):
                masks[task.id] = m
    return masks


def map_tiles(bundle: Sequence[TileTask], spec: Any, settings: MapSettings) -> list[dict[str, Any]]:
    """The task function (runs on a worker): map every tile of ``bundle``.

    Returns one result dict per tile: ``id``, ``status`` (ok | skipped | failed), ``reason``,
    ``seconds``, ``windows``, ``polygons`` ([(wkb, class, area_m2)] in ``settings.vector_crs``),
    ``area_m2`` (class → m², all polygons), ``device``. A failing tile does not stop the others.
    """
    from metaseg.classes import get_class_set
    from metaseg.runner import one_line

    class_set = get_class_set(settings.class_set)
    results: dict[str, dict[str, Any]] = {}
    loaded: list[tuple[TileTask, Any, float]] = []
    device = "cpu"

    def failed(task: TileTask, exc: BaseException, start: float) -> None:
        logger.debug("tile %s failed", task.id, exc_info=True)
        results[task.id] = {"id": task.id, "status": "failed", "reason": one_line(exc),
                            "seconds": time.perf_counter() - start, "windows": 0, "polygons": [],
                            "area_m2": {}, "device": device}

    with tempfile.TemporaryDirectory(prefix="metaseg-map-") as tmp:
        # 1. resume: re-vectorise current masks; read every other tile
        for task in bundle:
            start = time.perf_counter()
            try:
                if task.skip:
                    found = _read_mask(mask_path(settings.out, task.id), class_set)
                    if found is not None:
                        polygons, areas = _vectorise(*found, class_set, task, settings)
                        results[task.id] = {"id": task.id, "status": "skipped", "reason": None,
                                            "seconds": time.perf_counter() - start, "windows": 0,
                                            "polygons": polygons, "area_m2": areas, "device": device}
                        continue
                    logger.info("mask of %s is unusable: predicting it again", task.id)
                loaded.append((task, _read_input(task, tmp), start))
            except Exception as exc:  # noqa: BLE001 - the tile's reason; the others go on
                failed(task, exc, start)
        # 2. predict (stacked on GPU for small tiles), write the COG, vectorise
        stacked: dict[str, Any] = {}
        if not loaded:  # only re-vectorised masks: no model needed on this worker
            return [results[t.id] for t in bundle]
        try:
            predictor = _predictor(spec, settings)
        except Exception as exc:  # noqa: BLE001 - no model here: these tiles fail, re-vectorised ones stand
            for task, _, start in loaded:
                failed(task, exc, start)
            return [results[t.id] for t in bundle]
        device = str(getattr(predictor, "device", "cpu"))
        use_batches = settings.batch_tiles if settings.batch_tiles is not None else (
            device.startswith("cuda") and getattr(spec, "backend", "torch") == "torch")
        if use_batches and not settings.tta and len(loaded) > 1 and hasattr(predictor, "predict_batch"):
            try:
                stacked = _batched_masks(predictor, [(t, tile) for t, tile, _ in loaded], settings)
            except Exception:  # noqa: BLE001 - e.g. out of GPU memory: fall back to one tile at a time
                logger.warning("stacked prediction failed; predicting tiles one by one", exc_info=True)
                stacked = {}
        for task, tile, start in loaded:
            try:
                results[task.id] = _finish_tile(predictor, task, tile, stacked.get(task.id), class_set,
                                                settings, start, device)
            except Exception as exc:  # noqa: BLE001
                failed(task, exc, start)
    return [results[t.id] for t in bundle]


def _predictor(spec: Any, settings: MapSettings) -> Any:
    """The worker's model (loaded once per worker), checked against the job's class set."""
    from metaseg.runner import load_predictor

    predictor = load_predictor(spec)
    got = getattr(predictor.class_set, "name", None)
    if got != settings.class_set:
        raise MetasegError(f"the worker's model predicts class set {got!r}, the job expects {settings.class_set!r}")
    return predictor


def _read_input(task: TileTask, tmp: str) -> Any:
    from metaseg.geo import read_tile

    path = _fetch(task.path, tmp) if _is_url(task.path) else Path(task.path)
    tile = read_tile(path)
    if tile.info.crs is None or tile.info.transform is None:
        raise TileReadError(f"{Path(task.path).name} has no georeference (CRS and geotransform): cannot map it")
    return tile


def _finish_tile(predictor: Any, task: TileTask, tile: Any, index: Any, class_set: Any,
                 settings: MapSettings, start: float, device: str) -> dict[str, Any]:
    from metaseg.export import write_mask_cog

    windows = 1
    if index is None:
        pred = predictor.predict(tile.rgb, task.prompt, valid=tile.valid, window=settings.window,
                                 overlap=settings.overlap, tta=settings.tta)
        index, windows = pred.index, int(pred.windows)
    write_mask_cog(mask_path(settings.out, task.id), index, class_set, tile.info.crs, tile.info.transform)
    polygons, areas = _vectorise(index, tile.info.crs, tile.info.transform, class_set, task, settings)
    return {"id": task.id, "status": "ok", "reason": None, "seconds": time.perf_counter() - start,
            "windows": windows, "polygons": polygons, "area_m2": areas, "device": device,
            "backend": str(getattr(predictor, "backend", "torch"))}  # what ran (``auto`` resolved)


def bundle_tasks(tasks: Sequence[TileTask], tiles_per_task: int, window: int) -> list[tuple[TileTask, ...]]:
    """Group tasks: tiles that fit one ``window`` go ``tiles_per_task`` at a time, larger ones alone."""
    k = max(1, int(tiles_per_task))
    if k == 1:
        return [(t,) for t in tasks]
    small = [t for t in tasks if t.size is not None and max(t.size) <= window and not t.skip]
    small_ids = {t.id for t in small}
    out = [tuple(small[i:i + k]) for i in range(0, len(small), k)]
    out += [(t,) for t in tasks if t.id not in small_ids]
    return out


# --------------------------------------------------------------------------- the job (client)
@dataclass
class TileRecord:
    """One entry of ``summary.json``'s ``tiles``.

    ``fingerprint`` identifies what made the mask now on disk (``None``: no current mask); ``--resume``
    reuses a mask whose fingerprint equals the one the current inputs and settings give.
    """

    path: str
    id: str
    status: str = "pending"  # pending while the job runs; then ok | failed | skipped
    zone: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    mask: str | None = None
    windows: int = 0
    polygons: int = 0
    prompt_id: int | None = None
    fingerprint: str | None = None
    area_m2: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(float(self.seconds), 3)
        d.pop("area_m2")
        return d


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _remote_centre(url: str) -> tuple[float, float] | None:
    """(lat, lon) of the centre of a remote GeoTIFF from its header (GDAL ``/vsicurl/``), or ``None``."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.errors import RasterioError
    from rasterio.warp import transform

    try:
        with rasterio.Env(GDAL_HTTP_TIMEOUT=str(int(DOWNLOAD_TIMEOUT_S))), rasterio.open(f"/vsicurl/{url}") as ds:
            if ds.crs is None or ds.transform.is_identity:
                return None
            x, y = ds.transform * (ds.width / 2.0, ds.height / 2.0)
            lons, lats = transform(ds.crs, CRS.from_epsg(4326), [x], [y])
    except (RasterioError, OSError, ValueError) as exc:
        logger.info("cannot read the header of %s: %s", url, _one_line(exc)[:200])
        return None
    lat, lon = float(lats[0]), float(lons[0])
    return (lat, lon) if -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0 else None


def input_fingerprint(src: Source) -> str:
    """What identifies the content of an input: size + mtime for files, href + version for URLs."""
    if _is_url(src.path):
        return f"{src.path}|{src.version or ''}"
    st = os.stat(src.path)
    return f"{os.path.realpath(src.path)}|{st.st_size}|{st.st_mtime_ns}"


def fingerprint(input_fp: str, model_fp: str, prompt: str | None, settings: MapSettings, backend: str) -> str:
    """sha256 of everything that determines a tile's mask (not the vector options: those are re-applied)."""
    payload = json.dumps({
        "input": input_fp, "model": model_fp, "prompt": prompt, "class_set": settings.class_set,
        "window": settings.window, "overlap": settings.overlap, "tta": settings.tta, "backend": backend,
    }, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(payload.encode("utf-8", "surrogateescape")).hexdigest()


PromptFor = Callable[[str | None], tuple[str | None, int | None]]


class MapJob:
    """One ``metaseg map`` job: plan on the client, run on a :class:`~metaseg.runner.Runner`.

    Args:
        out: output folder (created).
        spec: the :class:`~metaseg.runner.ModelSpec` the workers load.
        settings: the :class:`MapSettings` (its ``out`` is replaced by ``out``).
        model_fingerprint: identifies the model weights (see :func:`model_info`).
        vector: ``gpkg`` or ``geojson``.
    """

    def __init__(self, out: str | os.PathLike, spec: Any, settings: MapSettings, *,
                 model_fingerprint: str, vector: str = "gpkg") -> None:
        if vector not in VECTOR_FORMATS:
            raise MetasegError(f"--vector must be gpkg or geojson, got {vector!r}")
        self.out = Path(out)
        self.spec = spec
        self.settings = replace(settings, out=str(self.out.resolve()))
        self.model_fp = model_fingerprint
        self.vector = vector
        self.vector_path = self.out / VECTOR_FORMATS[vector]
        self.summary_path = self.out / SUMMARY_NAME
        self.records: list[TileRecord] = []
        self.tasks: list[TileTask] = []
        self._fingerprints: dict[str, str] = {}
        self.meta: dict[str, Any] = {}

    # ----------------------------------------------------------------- plan
    def previous(self) -> dict[str, dict[str, Any]]:
        """Tiles of the previous summary.json in ``out`` by id (``{}`` if none or unreadable)."""
        try:
            data = json.loads(self.summary_path.read_text(encoding="utf-8"))
            return {t["id"]: t for t in data.get("tiles", []) if isinstance(t, dict) and t.get("id")}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def plan(self, sources: Sequence[Source], prompt_for: PromptFor, *, resume: bool = False) -> list[TileTask]:
        """Locate every tile, resolve its prompt, fingerprint it; failures become ``failed`` records.

        Args:
            sources: from :func:`discover`.
            prompt_for: ``zone code or None -> (prompt text or None, stored prompt id or None)``.
            resume: skip tiles whose mask exists with an unchanged fingerprint.
        """
        from metaseg.climate import lookup
        from metaseg.geo import inspect_tile

        previous = self.previous() if resume else {}
        prompts: dict[str | None, tuple[str | None, int | None]] = {}
        ids = assign_ids(sources)
        self.records, self.tasks = [], []
        for src, tile_id in zip(sources, ids, strict=True):
            rec = TileRecord(path=src.path, id=tile_id)
            self.records.append(rec)
            size = None
            try:
                if _is_url(src.path):
                    latlon = src.centre if src.centre is not None else _remote_centre(src.path)
                else:
                    info = inspect_tile(src.path)
                    if info.crs is None or info.transform is None:
                        raise TileReadError(
                            f"{Path(src.path).name} has no georeference (CRS and geotransform): cannot map it")
                    if info.format != "GTiff":
                        raise TileReadError(f"{Path(src.path).name} is a {info.format}, not a GeoTIFF")
                    size = (int(info.height), int(info.width))
                    latlon = (info.location.lat, info.location.lon) if info.location.known else None
                rec.zone = lookup(*latlon).code if latlon is not None else None
                input_fp = input_fingerprint(src)
            except (MetasegError, OSError) as exc:
                rec.status, rec.reason = "failed", _one_line(exc)
                continue
            if rec.zone not in prompts:
                prompts[rec.zone] = prompt_for(rec.zone)
            prompt, rec.prompt_id = prompts[rec.zone]
            fp = fingerprint(input_fp, self.model_fp, prompt, self.settings, self.spec.backend)
            self._fingerprints[tile_id] = fp
            mask = mask_path(self.out, tile_id)
            rec.mask = str(mask)
            old = previous.get(tile_id) or {}
            # an existing mask is reused when it was made with exactly these inputs and settings
            skip = old.get("status") != "failed" and old.get("fingerprint") == fp and mask.is_file()
            # a record's fingerprint is that of the mask on disk: until this run rewrites the mask,
            # it keeps the previous value (so an interrupted run leaves a correct resume state)
            rec.fingerprint = fp if skip else (old.get("fingerprint") if mask.is_file() else None)
            self.tasks.append(TileTask(id=tile_id, path=src.path, zone=rec.zone, prompt=prompt, skip=skip, size=size))
        return self.tasks

    # ----------------------------------------------------------------- summary
    def area_ha(self) -> dict[str, dict[str, float]]:
        totals: dict[str, dict[str, float]] = {}
        for rec in self.records:
            if rec.status not in ("ok", "skipped"):
                continue
            zone = totals.setdefault(rec.zone or NO_ZONE, {})
            for name, m2 in rec.area_m2.items():
                zone[name] = zone.get(name, 0.0) + m2
        return {z: {c: round(m2 / 10_000.0, 4) for c, m2 in sorted(v.items())} for z, v in sorted(totals.items())}

    def summary(self, seconds: float) -> dict[str, Any]:
        counts = {s: sum(r.status == s for r in self.records) for s in ("ok", "failed", "skipped", "pending")}
        windows = sum(r.windows for r in self.records if r.status == "ok")
        run_s = float(self.meta.get("run_seconds") or 0.0)  # after the models are loaded
        done = sum(r.status != "pending" for r in self.records if r.id in self._fingerprints)  # tiles run as tasks
        out = {
            "tiles": [r.to_dict() for r in self.records],
            "area_ha": self.area_ha(),
            "seconds": round(float(seconds), 3),
            "counts": counts,
            "polygons": sum(r.polygons for r in self.records),
            "windows": windows,
            "windows_per_s": round(windows / run_s, 3) if run_s > 0 else None,
            "tiles_per_s": round(done / run_s, 3) if run_s > 0 else None,
            "out": str(self.out),
            "vector": str(self.vector_path),
            "report": {"markdown": str(self.out / REPORT_MD), "csv": str(self.out / REPORT_CSV)},
        }
        out.update(self.meta)
        return out

    def write_summary(self, seconds: float) -> dict[str, Any]:
        summary = self.summary(seconds)
        _atomic_write_text(self.summary_path, json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
        return summary

    def write_report(self) -> None:
        """``area_report.csv`` (zone, class, hectares) and ``area_report.md`` (zone × class table)."""
        area = self.area_ha()
        classes = sorted({c for v in area.values() for c in v})
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["zone", "class", "hectares"])
        for zone, values in area.items():
            for name, ha in values.items():
                writer.writerow([zone, name, f"{ha:.4f}"])
        _atomic_write_text(self.out / REPORT_CSV, buf.getvalue())
        tiles = {z: sum(1 for r in self.records if r.status in ("ok", "skipped") and (r.zone or NO_ZONE) == z)
                 for z in area}
        lines = ["# Area by climate zone and class (hectares)", ""]
        if not area:
            lines.append("No tile was mapped.")
        else:
            lines.append("| zone | tiles | " + " | ".join(classes) + " | total |")
            lines.append("|---|---:|" + "---:|" * (len(classes) + 1))
            for zone, values in area.items():
                cells = [f"{values.get(c, 0.0):,.2f}" for c in classes]
                lines.append(f"| {zone} | {tiles[zone]} | " + " | ".join(cells) + f" | {sum(values.values()):,.2f} |")
            col = [sum(v.get(c, 0.0) for v in area.values()) for c in classes]
            lines.append(f"| **all** | {sum(tiles.values())} | " + " | ".join(f"{x:,.2f}" for x in col)
                         + f" | {sum(col):,.2f} |")
        failed = [r for r in self.records if r.status == "failed"]
        if failed:
            lines += ["", f"{len(failed)} tile(s) failed:", ""]
            lines += [f"- `{r.id}`: {r.reason}" for r in failed]
        _atomic_write_text(self.out / REPORT_MD, "\n".join(lines) + "\n")

    # ----------------------------------------------------------------- run
    def run(self, *, workers: int = 1, scheduler: str | None = None, progress: bool = True,
            tiles_per_task: int = 1, started: float | None = None) -> dict[str, Any]:
        """Run the planned tasks; return the final summary (also written to ``summary.json``).

        Ctrl-C: the summary is written with the unfinished tiles still ``pending``, then re-raised.
        """
        from metaseg.runner import Runner

        started = time.perf_counter() if started is None else started
        bundles = bundle_tasks(self.tasks, tiles_per_task, int(self.settings.window or 512))
        # connect first: a bad --scheduler must leave the previous outputs (and resume state) alone
        runner = Runner(workers=workers, scheduler=scheduler, desc="map", progress=progress,
                        unit="tile" if all(len(b) == 1 for b in bundles) else "task") if bundles else None
        by_id = {r.id: r for r in self.records}
        new_fp = {t.id: self._fingerprints[t.id] for t in self.tasks}
        writer = _VectorWriter(self.vector_path, self.settings.vector_crs)
        min_interval = 0.0 if len(self.records) < 1000 else 2.0
        last_write = 0.0
        try:
            (self.out / MASKS_DIR).mkdir(parents=True, exist_ok=True)
            if self.vector_path.exists():
                self.vector_path.unlink()
            self.write_summary(time.perf_counter() - started)
            if runner is not None:
                self.meta.update(workers=runner.n_workers, scheduler=scheduler)
                if any(not t.skip for t in self.tasks):
                    load_start = time.perf_counter()
                    _warm_up(runner, self.spec)
                    self.meta["load_seconds"] = round(time.perf_counter() - load_start, 3)
                run_start = time.perf_counter()
                for outcome in runner.run(map_tiles, bundles, self.spec, self.settings):
                    results = outcome.value if outcome.ok else [
                        {"id": t.id, "status": "failed", "reason": outcome.error, "seconds": outcome.seconds,
                         "windows": 0, "polygons": [], "area_m2": {}} for t in outcome.item]
                    for res in results:
                        rec = by_id[res["id"]]
                        rec.status, rec.reason = res["status"], res["reason"]
                        rec.seconds, rec.windows = float(res["seconds"]), int(res["windows"])
                        rec.area_m2 = dict(res["area_m2"])
                        rec.polygons = len(res["polygons"])
                        if rec.status == "failed":
                            rec.mask = rec.fingerprint = None
                        else:  # the mask on disk is now the one these settings make
                            rec.fingerprint = new_fp[rec.id]
                        writer.add(res["polygons"], rec.zone, rec.id)
                        if "device" in res:
                            self.meta["device"] = res["device"]
                        if "backend" in res:
                            self.meta["backend"] = res["backend"]
                    self.meta["run_seconds"] = round(time.perf_counter() - run_start, 3)
                    now = time.perf_counter()
                    if now - last_write >= min_interval:
                        writer.flush()
                        self.write_summary(now - started)
                        last_write = now
            writer.flush(final=True)
        finally:
            if runner is not None:
                runner.close()
            with contextlib.suppress(Exception):
                writer.flush()
            self.write_summary(time.perf_counter() - started)
        self.write_report()
        return self.write_summary(time.perf_counter() - started)


def _load_model(spec: Any) -> str:
    """Warm-up task: load the worker's model (cached for its later tasks); returns its device."""
    from metaseg.runner import load_predictor

    return str(load_predictor(spec).device)


def _warm_up(runner: Any, spec: Any, timeout: float = 900.0) -> None:
    """Load the model on every worker at once, before the first tile (so tile timings and
    windows/s measure mapping, not start-up). A failure here is only logged: each tile then
    reports it. Workers that join later load the model on their first tile."""
    client = runner.client
    token = uuid.uuid4().hex[:8]
    futures = [
        client.submit(_load_model, spec, workers=[addr], allow_other_workers=True, pure=False,
                      key=f"load-model-{token}-{i}")
        for i, addr in enumerate(client.scheduler_info().get("workers", {}))
    ]
    deadline = time.monotonic() + timeout
    for fut in futures:
        try:
            fut.result(timeout=max(1.0, deadline - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - timeouts, load errors, lost workers: the tiles report them
            logger.warning("a worker could not load the model: %s", _one_line(exc)[:300])
        finally:
            fut.release()


class _VectorWriter:
    """Buffers polygons on the client and appends them to the vector file (one layer ``classes``)."""

    def __init__(self, path: Path, crs: str, max_buffer: int = 20_000) -> None:
        self.path, self.crs, self.max_buffer = path, crs, max_buffer
        self.buffer: list[dict[str, Any]] = []
        self.created = False

    def add(self, polygons: Iterable[tuple[bytes, str, float]], zone: str | None, tile: str) -> None:
        import shapely

        for wkb, name, area in polygons:
            self.buffer.append({"geometry": shapely.from_wkb(wkb), "class": name, "area_m2": float(area),
                                "zone": zone or "", "tile": tile})
        if len(self.buffer) >= self.max_buffer:
            self.flush()

    def flush(self, final: bool = False) -> None:
        from metaseg.vectorize import write_features

        if not self.buffer and not (final and not self.created):
            return
        if not self.buffer:  # nothing mapped: still leave an empty layer with the job's fields
            import numpy as np
            import pyogrio.raw
            from rasterio.crs import CRS

            empty = np.array([], dtype=object)
            pyogrio.raw.write(str(self.path), empty, [empty, np.array([], dtype=np.float64), empty, empty],
                              list(FIELDS), geometry_type="MultiPolygon", crs=CRS.from_user_input(self.crs).to_wkt(),
                              **({"layer": "classes"} if self.path.suffix.lower() == ".gpkg" else {}))
            self.created = True
            return
        write_features(self.buffer, self.path, crs=self.crs, append=self.created)
        self.created = True
        self.buffer = []


def model_info(name: str | None, checkpoint: str | None) -> tuple[str, str | None, bool | None]:
    """(fingerprint of the weights, class set name, uses text) read without importing torch.

    The fingerprint is the weights' path, size and mtime plus a hash of the metadata; a hub id is
    fetched here once (the hub cache then serves local workers). Class set and ``uses_text`` are
    ``None`` when the metadata does not say (the caller then loads the model to find out).

    Raises:
        CheckpointError / UnknownNameError: missing checkpoint, unknown variant.
    """
    from metaseg.checkpoints import demo_checkpoint_path, read_checkpoint_meta, resolve_checkpoint

    if not checkpoint:
        weights = demo_checkpoint_path(str(name))
        files = [weights, weights.with_suffix(".json")]
    else:  # a checkpoint file or stem, an export folder (training.export) or a hub id
        files = list(resolve_checkpoint(checkpoint))
    parts = []
    config: dict[str, Any] = {}
    for f in files:
        st = f.stat()
        parts.append(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}")
        if f.suffix == ".json" and not config:
            with contextlib.suppress(MetasegError):
                meta = read_checkpoint_meta(f)
                config = dict(meta.get("config") or {})
                config.setdefault("class_set", meta.get("class_set"))
                parts.append(hashlib.sha256(f.read_bytes()).hexdigest())
    if not config and name and not checkpoint:
        from metaseg.models.registry import variant_config

        config = variant_config(name).to_dict()
    fp = hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()
    uses_text = config.get("uses_text")
    return fp, (str(config["class_set"]) if config.get("class_set") else None), \
        (bool(uses_text) if uses_text is not None else None)


def exit_code(summary: dict[str, Any]) -> int:
    """0 when every tile is done (ok or skipped), 3 when any tile failed."""
    return 3 if any(t["status"] != "ok" and t["status"] != "skipped" for t in summary["tiles"]) else 0


def format_text(summary: dict[str, Any]) -> str:
    """A few human-readable lines for the CLI without ``--json``."""
    c = summary["counts"]
    n_labels = summary.get("label_files_skipped") or 0
    lines = [f"{len(summary['tiles'])} tiles: {c['ok']} ok, {c['skipped']} skipped, {c['failed']} failed "
             f"in {summary['seconds']:.1f} s"
             + (f" ({summary['windows_per_s']:.2f} windows/s)" if summary.get("windows_per_s") else "")
             + (f" on {summary['device']}, backend {summary['backend']}" if summary.get("backend") else "")]
    if n_labels:
        lines.append(f"  {n_labels} label/mask file(s) not mapped (e.g. *_label.tif, masks written by metaseg): "
                     "they are not imagery")
    for t in summary["tiles"]:
        if t["status"] == "failed":
            lines.append(f"  failed {t['path']}: {t['reason']}")
    lines.append(f"masks: {Path(summary['out']) / MASKS_DIR}  polygons: {summary['polygons']} -> {summary['vector']}")
    lines.append(f"summary: {Path(summary['out']) / SUMMARY_NAME}  report: {summary['report']['markdown']}")
    for zone, values in summary["area_ha"].items():
        top = sorted(values.items(), key=lambda kv: -kv[1])[:4]
        lines.append(f"  {zone}: " + ", ".join(f"{n} {ha:,.1f} ha" for n, ha in top))
    return "\n".join(lines)


__all__ = [
    "MapJob",
    "MapSettings",
    "Source",
    "TileRecord",
    "TileTask",
    "assign_ids",
    "bundle_tasks",
    "discover",
    "is_label_file",
    "exit_code",
    "fingerprint",
    "format_text",
    "input_fingerprint",
    "map_tiles",
    "mask_path",
    "model_info",
]
