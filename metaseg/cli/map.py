"""``python -m metaseg map``: segment many tiles (a district, a basin, a country) on a Dask cluster.

Usage (DESIGN.md §7)::

    python -m metaseg map INPUT... --out DIR (--model NAME | --checkpoint CKPT) [--prompt TEXT]
        [--asset KEY] [--workers N | --scheduler ADDR] [--resume] [--vector gpkg|geojson] [--json]
        [--backend torch|onnx|onnx-int8|auto] [--device cpu|cuda] [--min-area M2] [--simplify M]
        [--vector-crs CRS] [--window PX] [--tta] [--tiles-per-task K]

INPUT: GeoTIFF files, folders of them (recursive) or STAC ItemCollections / catalogs (path or URL).
Each tile gets the current stored prompt of its own Köppen zone (``--prompt`` for all tiles).
Writes ``DIR/masks/<tile>.tif`` (Cloud-Optimized GeoTIFF on the tile's grid), ``DIR/classes.gpkg``
(or ``.geojson``; polygons with ``class``, ``zone``, ``area_m2``, ``tile``), ``DIR/summary.json``
(= the ``--json`` output) and ``DIR/area_report.{md,csv}``. Exit 0 when every tile is done, 3 when
the job finished with failed tiles, 2 on bad arguments.

Layering: this command is the application layer. It reads the prompt store (``prompts_db``,
imported lazily in :func:`run`) and hands prompt *texts* to :mod:`metaseg.mapping`, whose tasks
run on the workers of :class:`metaseg.runner.Runner`.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from metaseg.errors import MetasegError


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "map",
        help="map many tiles (files, folders, STAC) on a Dask cluster: masks, polygons, area report",
        description="Segment many GeoTIFF tiles, each with the prompt of its own Köppen zone, on a local "
        "or existing Dask cluster. Writes Cloud-Optimized GeoTIFF masks, a polygon layer, summary.json "
        "and an area report. Exit 0: all tiles done; 3: some tiles failed; 2: bad arguments.",
    )
    parser.add_argument("inputs", metavar="INPUT", nargs="+",
                        help="GeoTIFF files, folders of them, or a STAC ItemCollection/catalog (path or URL)")
    parser.add_argument("--out", metavar="DIR", required=True, help="output folder")
    parser.add_argument("--model", metavar="NAME", help="variant name (a *_demo name alone uses the shipped weights)")
    parser.add_argument("--checkpoint", metavar="CKPT", help="checkpoint path, export folder or hub id")
    parser.add_argument("--prompt", metavar="TEXT", help="one prompt for every tile (default: each tile's zone prompt)")
    parser.add_argument("--asset", metavar="KEY", help="STAC asset to map (default: 'visual', else the first image)")
    parser.add_argument("--workers", metavar="N", type=int, help="worker processes of a local cluster (default 1; 0: one worker thread in this process)")
    parser.add_argument("--scheduler", metavar="ADDR", help="address of an existing Dask scheduler (tcp://host:port)")
    parser.add_argument("--threads", metavar="N", type=int, default=1,
                        help="torch threads in every worker process (default 1: masks are bitwise identical "
                             "whatever the number of workers or machines; use one worker per core for speed)")
    parser.add_argument("--resume", action="store_true",
                        help="skip tiles whose mask exists and whose input, model, prompt and settings are unchanged")
    parser.add_argument("--vector", choices=("gpkg", "geojson"), default="gpkg", help="polygon file format")
    parser.add_argument("--vector-crs", metavar="CRS", default="EPSG:4326", help="CRS of the polygons (default EPSG:4326)")
    parser.add_argument("--min-area", metavar="M2", type=float, default=0.0,
                        help="leave out polygons smaller than this many square metres (default 0)")
    parser.add_argument("--simplify", metavar="M", type=float, default=0.0,
                        help="simplify polygon outlines with this tolerance in metres (default 0: exact)")
    parser.add_argument("--backend", choices=("torch", "onnx", "onnx-int8", "auto"), default="torch",
                        help="inference backend on the workers")
    parser.add_argument("--device", metavar="cpu|cuda", help="compute device on the workers (default: cuda when present)")
    parser.add_argument("--window", metavar="PX", type=int, help="sliding-window size (default: the model's)")
    parser.add_argument("--tta", action="store_true", help="average over horizontal/vertical flips")
    parser.add_argument("--tiles-per-task", metavar="K", type=int,
                        help="one-window tiles per task, stacked into GPU batches (default 8 with --device cuda, else 1)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(func=run)
    return parser


def _check_args(args: argparse.Namespace) -> None:
    from metaseg.runner import validate_workers

    if not args.model and not args.checkpoint:
        raise MetasegError("give --model NAME or --checkpoint CKPT")
    if args.prompt is not None and not args.prompt.strip():
        raise MetasegError("--prompt is empty; leave it out to use each tile's climate-zone prompt")
    validate_workers(args.workers, args.scheduler)
    if args.workers is None:
        args.workers = 1
    if args.threads < 1:
        raise MetasegError(f"--threads must be >= 1, got {args.threads}")
    if args.min_area < 0 or args.min_area != args.min_area:
        raise MetasegError(f"--min-area must be >= 0 square metres, got {args.min_area}")
    if args.simplify < 0 or args.simplify != args.simplify:
        raise MetasegError(f"--simplify must be >= 0 metres, got {args.simplify}")
    if args.window is not None and args.window < 16:
        raise MetasegError(f"--window must be at least 16 px, got {args.window}")
    if args.device is not None and args.device.split(":")[0] not in ("cpu", "cuda", "auto"):
        raise MetasegError(f"--device must be cpu or cuda, got {args.device!r}")
    if args.tiles_per_task is not None and args.tiles_per_task < 1:
        raise MetasegError(f"--tiles-per-task must be at least 1, got {args.tiles_per_task}")
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        CRS.from_user_input(args.vector_crs)
    except CRSError:
        raise MetasegError(f"--vector-crs: unknown CRS {args.vector_crs!r} (e.g. EPSG:4326)") from None


def _model(args: argparse.Namespace, spec: Any) -> tuple[str, str, bool]:
    """(weights fingerprint, class set, uses text); loads the model here only if its metadata is silent."""
    from metaseg.mapping import model_info
    from metaseg.models.registry import variant_config

    if args.model:
        variant_config(args.model)  # unknown name -> UnknownNameError (exit 2), torch-free
        if not args.checkpoint and not args.model.endswith("_demo"):
            raise MetasegError(f"model {args.model!r} has no shipped weights; pass --checkpoint CKPT "
                               "(only the *_demo variants ship trained weights)")
    fp, class_set, uses_text = model_info(args.model, args.checkpoint)
    if class_set is None or uses_text is None:
        from metaseg.runner import load_predictor

        predictor = load_predictor(spec)
        if predictor.class_set is None:
            raise MetasegError("the checkpoint does not name a known class set")
        class_set, uses_text = predictor.class_set.name, predictor.uses_text
    return fp, class_set, bool(uses_text)


def run(args: argparse.Namespace) -> int:
    from metaseg.cli import print_json
    from metaseg.mapping import MapJob, MapSettings, discover, exit_code, format_text
    from metaseg.runner import ModelSpec

    started = time.perf_counter()
    _check_args(args)
    # CPU results can differ by a near-tie pixel between thread counts, so worker processes get a
    # fixed thread count; an in-process worker (--workers 0) keeps this process's setting.
    in_process = not args.scheduler and args.workers == 0
    spec = ModelSpec(name=args.model, checkpoint=args.checkpoint, device=args.device, backend=args.backend,
                     threads=None if in_process else args.threads)
    label_files: list[str] = []
    sources = discover(args.inputs, args.asset, exclude=args.out, excluded=label_files)
    model_fp, class_set, uses_text = _model(args, spec)
    if not uses_text and args.prompt is not None:
        sys.stderr.write(f"warning: {args.model or args.checkpoint} is a vision-only model: --prompt is ignored\n")
    settings = MapSettings(out=args.out, class_set=class_set, window=args.window, tta=bool(args.tta),
                           min_area_m2=float(args.min_area), simplify=float(args.simplify),
                           vector_crs=str(args.vector_crs))
    job = MapJob(args.out, spec, settings, model_fingerprint=model_fp, vector=args.vector)
    job.out.mkdir(parents=True, exist_ok=True)

    store = None
    if uses_text:
        # One policy with predict (prompts_db.resolve.resolve_prompt); its no-zone warning is not
        # printed per tile here: the map's summary reports each tile's zone.
        from prompts_db.resolve import resolve_prompt  # application layer: lazy
        from prompts_db.store import PromptStore

        store = None if args.prompt is not None else PromptStore()

    def prompt_for(zone: str | None) -> tuple[str | None, int | None]:
        if not uses_text:
            return None, None
        resolved = resolve_prompt(store, class_set, text=args.prompt, zone=zone)
        return resolved.text, resolved.id

    try:
        job.plan(sources, prompt_for, resume=bool(args.resume))
    finally:
        if store is not None:
            store.close()
    job.meta.update(label_files_skipped=len(label_files))
    job.meta.update(model=args.model or None, checkpoint=args.checkpoint, class_set=class_set,
                    backend=args.backend, resume=bool(args.resume),
                    prompt=args.prompt if uses_text else None)
    tiles_per_task = args.tiles_per_task or (8 if (args.device or "").startswith("cuda") else 1)
    summary = job.run(workers=args.workers, scheduler=args.scheduler, tiles_per_task=tiles_per_task,
                      started=started)
    if args.json:
        print_json(summary)
    else:
        print(format_text(summary))
    return exit_code(summary)
