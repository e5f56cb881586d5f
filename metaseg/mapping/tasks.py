"""Tile tasks on the workers: read each tile, predict, write its COG mask and vectorise it.

:func:`map_tiles` is the task function :class:`metaseg.runner.Runner` sends out (torch is imported
on the workers only). Skipped tiles (``--resume``) only re-vectorise their existing mask, so their
polygons still reach the vector file once. A tile that fails returns its one-line reason; the
other tiles of the task go on.

GPU workers: a task may carry several tiles (``tiles_per_task``). On a CUDA worker the tiles of a
task that fit in one model window are stacked into batches (each sample with its own prompt) so
small tiles fill the GPU; larger tiles run through the sliding-window predictor, which batches
their windows. On CPU (where batch 1 is fastest) each tile is predicted on its own.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaseg.errors import MetasegError, TileReadError
from metaseg.mapping.layout import DOWNLOAD_TIMEOUT_S, is_url, mask_path, one_line, safe_stem, stem_of
from metaseg.mapping.vectors import tile_polygons

logger = logging.getLogger(__name__)


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


def _fetch(url: str, folder: str) -> Path:
    """Download a remote tile into ``folder`` (keeps its file name, so errors name it)."""
    name = safe_stem(stem_of(url.split("?")[0])) + ".tif"
    dest = Path(folder) / name
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, dest.open("wb") as fh:  # noqa: S310
            shutil.copyfileobj(resp, fh, length=1 << 20)
    except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, timeouts
        raise TileReadError(f"cannot download {url}: {one_line(exc)[:200]}") from None
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
    from metaseg.runner import one_line as reason_of

    class_set = get_class_set(settings.class_set)
    results: dict[str, dict[str, Any]] = {}
    loaded: list[tuple[TileTask, Any, float]] = []
    device = "cpu"

    def failed(task: TileTask, exc: BaseException, start: float) -> None:
        logger.debug("tile %s failed", task.id, exc_info=True)
        results[task.id] = {"id": task.id, "status": "failed", "reason": reason_of(exc),
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
                        polygons, areas = tile_polygons(*found, class_set, task, settings)
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

    path = _fetch(task.path, tmp) if is_url(task.path) else Path(task.path)
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
    polygons, areas = tile_polygons(index, tile.info.crs, tile.info.transform, class_set, task, settings)
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

