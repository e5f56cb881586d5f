"""``python -m metaseg predict``: segment one tile and write the mask.

Usage (DESIGN.md §7)::

    python -m metaseg predict IMAGE --model NAME [--checkpoint PATH]
        [--prompt TEXT | --prompt-id N] [--lat LAT --lon LON] [--tta] [--device cpu|cuda]
        [--backend torch|onnx|onnx-int8|auto] --out OUT [--json]

* Weights: ``--checkpoint`` (local file/stem, exported folder or hub id); without it a ``*_demo``
  variant uses the weights shipped in ``metaseg/weights/``; any other variant needs
  ``--checkpoint`` (exit 2). ``--model`` may be left out with ``--checkpoint``: the checkpoint
  records its variant (a ``--model`` that is given must match it).
* Ground sample distance: a tile far coarser or finer than the model's training GSD (more than
  2×, as in the app) gets a warning on stderr.
* Prompt (text models only; baselines ignore prompts and report ``prompt: null``):
  ``--prompt TEXT`` as given; ``--prompt-id N`` a stored prompt version; otherwise the current
  prompt of the tile's Köppen zone from the prompt store. The location comes from
  ``--lat/--lon`` or the tile (GeoTIFF georeference / EXIF GPS). Ocean or unknown location →
  the generic prompt, with a warning on stderr.
* Output: ``.tif/.tiff`` → GeoTIFF (georeferenced like the tile when it is), ``.png`` → palette
  PNG (:func:`metaseg.export.write_mask`).
* ``--json`` prints ``model, class_set, classes, class_fraction, prompt, seconds`` plus
  ``zone, prompt_source, prompt_id, out, windows, tta, device, checkpoint, backend``.
* ``--backend``: ``torch`` (default), ``onnx`` / ``onnx-int8`` (ONNX Runtime on CPU; the graph
  is exported, verified and cached next to the checkpoint on first use) or ``auto`` (onnx on
  CPU when its verified graph can be had, torch on CUDA); see :mod:`metaseg.backends`.

Layering: ``metaseg/cli`` is an application layer (like ``app.py``). This module imports
``prompts_db`` lazily inside :func:`run` and only for a text model (the prompt policy is
:func:`prompts_db.resolve.resolve_prompt`; the store is opened only when a stored prompt is needed); library
modules (``metaseg.inference``, ``metaseg.models``, …) never import ``prompts_db``. Argument
parsing imports neither torch nor ``prompts_db``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from metaseg.errors import MetasegError


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="segment a tile and write the class mask",
        description="Segment a tile (GeoTIFF/PNG/JPEG) with a model variant and write the mask "
        "(.tif = GeoTIFF with the tile's CRS/transform and a colour map, .png = palette PNG).",
    )
    parser.add_argument("image", metavar="IMAGE", help="tile to segment (GeoTIFF, PNG or JPEG)")
    parser.add_argument("--model", metavar="NAME",
                        help="variant name (python -m metaseg info --list); default: the variant --checkpoint records")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="checkpoint (.safetensors/.json/stem or org/name); default: shipped *_demo weights")
    parser.add_argument("--prompt", metavar="TEXT", help="text prompt (default: the prompt of the tile's climate zone)")
    parser.add_argument("--prompt-id", metavar="N", help="use the stored prompt version N")
    parser.add_argument("--lat", metavar="LAT", help="latitude of the tile (overrides its georeference)")
    parser.add_argument("--lon", metavar="LON", help="longitude of the tile")
    parser.add_argument("--tta", action="store_true", help="average over horizontal/vertical flips")
    parser.add_argument("--device", metavar="cpu|cuda", help="compute device (default: cuda when available)")
    parser.add_argument("--window", metavar="PX", type=int, help="sliding-window size (default: the model's)")
    parser.add_argument("--backend", default="torch", choices=("torch", "onnx", "onnx-int8", "auto"),
                        help="inference backend (default torch; onnx/onnx-int8 = ONNX Runtime on CPU, "
                             "auto = onnx on CPU when available)")
    parser.add_argument("--out", metavar="OUT", required=True, help="output mask (.tif/.tiff or .png)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)
    return parser


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {' '.join(message.split())}\n")


def _check_args(args: argparse.Namespace) -> tuple[tuple[float, float] | None, int | None]:
    """Cheap validation before anything heavy is imported. Returns (lat/lon or None, prompt id)."""
    from metaseg.climate import parse_coordinate, validate
    from metaseg.export import supported_suffixes

    if args.prompt is not None and args.prompt_id is not None:
        raise MetasegError("give either --prompt or --prompt-id, not both")
    if args.prompt is not None and not args.prompt.strip():
        raise MetasegError("--prompt is empty; leave it out to use the climate-zone prompt")
    prompt_id = None
    if args.prompt_id is not None:
        try:
            prompt_id = int(str(args.prompt_id).strip())
        except ValueError:
            raise MetasegError(f"--prompt-id must be a whole number, got {args.prompt_id!r}") from None
        if prompt_id < 1:
            raise MetasegError(f"--prompt-id must be a positive number, got {prompt_id}")
    latlon = None
    if (args.lat is None) != (args.lon is None):
        raise MetasegError("give both --lat and --lon (or neither)")
    if args.lat is not None:
        latlon = validate(parse_coordinate(args.lat, "latitude"), parse_coordinate(args.lon, "longitude"))
    suffix = Path(args.out).suffix.lower()
    if suffix not in supported_suffixes():
        raise MetasegError(f"--out must end with .tif, .tiff or .png, got {args.out!r}")
    if args.window is not None and args.window < 16:
        raise MetasegError(f"--window must be at least 16 px, got {args.window}")
    if args.device is not None and args.device.split(":")[0] not in ("cpu", "cuda", "auto"):
        raise MetasegError(f"--device must be cpu or cuda, got {args.device!r}")
    return latlon, prompt_id


def _resolve_prompt(
    args: argparse.Namespace, prompt_id: int | None, zone: str | None, located: bool, reason: str | None,
    class_set: str,
) -> tuple[str, str, int | None]:
    """(prompt text, source, stored id) for a text model, by :func:`prompts_db.resolve.resolve_prompt`;
    its warning (if any) goes to stderr."""
    from prompts_db.resolve import resolve_prompt  # application layer: lazy, only for text models

    resolved = resolve_prompt(None, class_set, text=args.prompt, prompt_id=prompt_id, zone=zone,
                              located=located, reason=reason)
    if resolved.warning:
        _warn(resolved.warning)
    return resolved.text, resolved.source, resolved.id


def _warn_gsd(tile_gsd: float | None, predictor: Any) -> None:
    """Warn when the tile's GSD is far outside the one the model was trained on (as the app does)."""
    from metaseg.checkpoints import gsd_check, gsd_range_m

    meta = dict(getattr(predictor, "meta", None) or {})
    meta.setdefault("class_set", getattr(getattr(predictor, "class_set", None), "name", None))
    rng = gsd_range_m(meta)
    kind, _target = gsd_check(tile_gsd, rng)
    if kind in ("coarser", "finer"):
        lo, hi = rng
        model = f"{lo:g} m/px" if lo == hi else f"{lo:g}-{hi:g} m/px"
        times = tile_gsd / hi if kind == "coarser" else lo / tile_gsd
        _warn(f"the tile is {tile_gsd:.3g} m/px, about {times:.0f}x {kind} than the {model} the model was "
              "trained on: objects are far " + ("smaller" if kind == "coarser" else "larger")
              + " than it expects, treat the mask with great caution"
              + (" (resample the tile to the model's GSD first)" if kind == "finer" else ""))


class _Progress:
    """``progress(done, total)`` callback drawing a tqdm bar on stderr for multi-window tiles."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if total <= 1:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="window", desc="predict", file=sys.stderr, leave=False)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    from metaseg.cli import print_json
    from metaseg.geo import read_tile

    latlon, prompt_id = _check_args(args)
    variant = _variant(args)
    tile = read_tile(args.image)
    if prompt_id is not None and variant.uses_text:  # fail on an unknown id before loading the model
        from prompts_db.store import PromptStore

        with PromptStore() as store:
            store.get(prompt_id)

    # Location -> climate zone (used for the prompt and reported in the JSON).
    if latlon is None and tile.info.location.known:
        latlon = (tile.info.location.lat, tile.info.location.lon)
    zone, reason = _zone(latlon)

    from metaseg.inference import Predictor  # torch from here on

    if args.checkpoint:
        predictor = Predictor.from_checkpoint(args.checkpoint, args.device, expected_name=args.model,
                                              backend=args.backend)
    else:
        predictor = Predictor.from_name(args.model, args.device, backend=args.backend)
    class_set = predictor.class_set
    if class_set is None:
        raise MetasegError(f"the checkpoint does not name a known class set ({predictor.config.class_set!r})")

    prompt = source = stored_id = None
    if predictor.uses_text:
        prompt, source, stored_id = _resolve_prompt(args, prompt_id, zone, latlon is not None, reason,
                                                   class_set.name)
    elif args.prompt is not None or args.prompt_id is not None:
        _warn(f"{args.model} is a vision-only model: the prompt is ignored")

    progress = _Progress()
    try:
        pred = predictor.predict(tile.rgb, prompt, tta=args.tta, valid=tile.valid, progress=progress,
                                 window=args.window)
    finally:
        progress.close()
    _warn_gsd(tile.info.gsd_m, predictor)  # with the result: a failed run reports only its error

    from metaseg.export import write_mask
    from metaseg.visualize import class_fractions

    out = write_mask(args.out, pred.index, class_set, tile.info)
    fractions = class_fractions(pred.index, class_set)
    result = {
        "model": args.model,
        "class_set": class_set.name,
        "classes": list(class_set.names),
        "class_fraction": {k: round(v, 6) for k, v in fractions.items()},
        "prompt": prompt,
        "seconds": round(pred.seconds, 4),
        "zone": zone,
        "prompt_source": source,
        "prompt_id": stored_id,
        "out": str(out),
        "windows": pred.windows,
        "tta": bool(args.tta),
        "device": pred.device,
        "checkpoint": str(args.checkpoint) if args.checkpoint else "shipped",
        "backend": pred.backend,
    }
    if args.json:
        print_json(result)
        return 0
    _print_text(args.model, tile.info, pred, out, prompt, source, zone, fractions)
    return 0


def _variant(args: argparse.Namespace) -> Any:
    """The model variant's config (torch-free); sets ``args.model`` from the checkpoint when not given."""
    from metaseg.models.registry import variant_config

    if args.model is None:
        if args.checkpoint is None:
            raise MetasegError("give --model NAME (a shipped *_demo variant) or --checkpoint PATH")
        from metaseg.checkpoints import recorded_variant

        args.model = recorded_variant(args.checkpoint)  # torch-free: reads the checkpoint's JSON
    variant = variant_config(args.model)  # unknown name -> UnknownNameError, still torch-free
    if args.checkpoint is None and not args.model.endswith("_demo"):
        raise MetasegError(
            f"model {args.model!r} has no shipped weights; pass --checkpoint PATH "
            "(only the *_demo variants ship trained weights)"
        )
    return variant


def _zone(latlon: tuple[float, float] | None) -> tuple[str | None, str | None]:
    """(Köppen code, reason when there is none) at ``latlon``; ``(None, None)`` without a location."""
    if latlon is None:
        return None, None
    from metaseg.climate import lookup

    climate = lookup(*latlon)
    return climate.code, climate.reason


def _print_text(model: str, info: Any, pred: Any, out: Any, prompt: str | None, source: str | None,
                zone: str | None, fractions: dict[str, float]) -> None:
    """The human-readable report (without ``--json``)."""
    print(f"{model}: {info.width}x{info.height} px in {pred.seconds:.2f} s "
          f"({pred.windows} window{'s' if pred.windows != 1 else ''}, {pred.device}, {pred.backend}) -> {out}")
    if prompt is not None:
        short = prompt if len(prompt) <= 100 else prompt[:97] + "..."
        print(f"prompt ({source}{', zone ' + zone if zone else ''}): {short}")
    for name, frac in sorted(fractions.items(), key=lambda kv: -kv[1]):
        if frac > 0:
            print(f"  {name:20s} {100 * frac:6.2f} %")
