"""The map job on the client: plan every tile, run the tasks, write the outputs as tiles finish.

2. **Plan** (:meth:`MapJob.plan`): every tile's header is read (no pixels) and its zone taken at
   its footprint centre (remote STAC assets: the item's geometry); the caller's
   ``prompt_for(zone)`` gives the prompt *text* (the CLI reads the prompt store; library code never
   does). A tile that cannot be read or has no georeference is ``failed`` here with its reason.
   ``resume=True`` marks tiles whose mask exists and whose fingerprint
   (:mod:`metaseg.mapping.resume`) equals the previous ``summary.json`` as ``skipped``.
4. **Client writes** (:meth:`MapJob.run`): the vector file (appended as tiles finish, each tile's
   polygons exactly once, even when a lost worker's task is re-run), ``summary.json`` (rewritten
   atomically after finished tiles, so a crash leaves an accurate record) and, at the end, the
   area report.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from metaseg.errors import MetasegError, TileReadError
from metaseg.mapping import report
from metaseg.mapping.layout import (
    DOWNLOAD_TIMEOUT_S,
    MASKS_DIR,
    REPORT_CSV,
    REPORT_MD,
    SUMMARY_NAME,
    VECTOR_FORMATS,
    atomic_write_text,
    is_url,
    mask_path,
    one_line,
)
from metaseg.mapping.report import TileRecord
from metaseg.mapping.resume import fingerprint, input_fingerprint, stale_masks_message
from metaseg.mapping.sources import Source, assign_ids
from metaseg.mapping.tasks import MapSettings, TileTask, bundle_tasks, map_tiles
from metaseg.mapping.vectors import VectorWriter

logger = logging.getLogger(__name__)


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
        logger.info("cannot read the header of %s: %s", url, one_line(exc)[:200])
        return None
    lat, lon = float(lats[0]), float(lons[0])
    return (lat, lon) if -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0 else None


def _locate(src: Source) -> tuple[str | None, tuple[int, int] | None]:
    """(climate zone code or ``None``, (height, width) or ``None``) of a tile from its header only.

    Local files: :func:`metaseg.geo.inspect_tile` (no pixels read); URLs: the STAC item's centre,
    else the remote header. Raises TileReadError (or OSError) for a tile that cannot be mapped.
    """
    from metaseg.climate import lookup
    from metaseg.geo import inspect_tile

    size = None
    if is_url(src.path):
        latlon = src.centre if src.centre is not None else _remote_centre(src.path)
    else:
        info = inspect_tile(src.path)
        if info.crs is None or info.transform is None:
            raise TileReadError(f"{Path(src.path).name} has no georeference (CRS and geotransform): cannot map it")
        if info.format != "GTiff":
            raise TileReadError(f"{Path(src.path).name} is a {info.format}, not a GeoTIFF")
        size = (int(info.height), int(info.width))
        latlon = (info.location.lat, info.location.lon) if info.location.known else None
    return (lookup(*latlon).code if latlon is not None else None), size


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
            resume: skip tiles whose mask exists with an unchanged fingerprint. Earlier masks whose
                fingerprint differs are predicted again, and one warning line says how many (all of
                them when the folder was written with another model or by an older metaseg).
        """
        previous = self.previous() if resume else {}
        prompts: dict[str | None, tuple[str | None, int | None]] = {}
        ids = assign_ids(sources)
        self.records, self.tasks = [], []
        stale = 0
        for src, tile_id in zip(sources, ids, strict=True):
            rec = TileRecord(path=src.path, id=tile_id)
            self.records.append(rec)
            try:
                rec.zone, size = _locate(src)
                input_fp = input_fingerprint(src)
            except (MetasegError, OSError) as exc:
                rec.status, rec.reason = "failed", one_line(exc)
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
            current = old.get("status") != "failed" and mask.is_file()
            skip = current and old.get("fingerprint") == fp
            stale += bool(current and old.get("fingerprint") and not skip)
            # a record's fingerprint is that of the mask on disk: until this run rewrites the mask,
            # it keeps the previous value (so an interrupted run leaves a correct resume state)
            rec.fingerprint = fp if skip else (old.get("fingerprint") if mask.is_file() else None)
            self.tasks.append(TileTask(id=tile_id, path=src.path, zone=rec.zone, prompt=prompt, skip=skip, size=size))
        if stale:
            logger.warning(stale_masks_message(stale, stale + sum(t.skip for t in self.tasks), self.out))
        return self.tasks

    # ----------------------------------------------------------------- summary
    def area_ha(self) -> dict[str, dict[str, float]]:
        return report.area_ha(self.records)

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
        atomic_write_text(self.summary_path, json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
        return summary

    def write_report(self) -> None:
        """``area_report.csv`` and ``area_report.md`` (see :func:`metaseg.mapping.report.write_report`)."""
        report.write_report(self.records, self.out)

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
        writer = VectorWriter(self.vector_path, self.settings.vector_crs)
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
                        self._record(res, by_id[res["id"]], writer)
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


    def _record(self, res: dict[str, Any], rec: TileRecord, writer: VectorWriter) -> None:
        """Take one tile's task result into its record, the vector file and the job's meta."""
        rec.status, rec.reason = res["status"], res["reason"]
        rec.seconds, rec.windows = float(res["seconds"]), int(res["windows"])
        rec.area_m2 = dict(res["area_m2"])
        rec.polygons = len(res["polygons"])
        if rec.status == "failed":
            rec.mask = rec.fingerprint = None
        else:  # the mask on disk is now the one these settings make
            rec.fingerprint = self._fingerprints[rec.id]
        writer.add(res["polygons"], rec.zone, rec.id)
        if "device" in res:
            self.meta["device"] = res["device"]
        if "backend" in res:
            self.meta["backend"] = res["backend"]

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
            logger.warning("a worker could not load the model: %s", one_line(exc)[:300])
        finally:
            fut.release()


