"""Paired inference (MetaSegNet and the baseline on one tile), its lanes, and what is shown of the result."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.errors import CheckpointError, MetasegError
from studio.limits import DEFAULT_SMALL_PIXELS, env_int
from studio.models import ROLES, segment_model
from studio.prompt_store import check_prompt_text


@dataclass
class PairResult:
    metasegnet: np.ndarray
    baseline: np.ndarray
    class_set: Any
    seconds: dict[str, float]
    checkpoint_ids: dict[str, str]
    model_names: dict[str, str]
    backends: dict[str, str] = field(default_factory=dict)  # inference backend that ran, per role


def _run_pair(rgb: np.ndarray, valid: np.ndarray | None, prompt: str,
              progress: Callable[[float, str], Any] | None = None, allow_empty: bool = False,
              sources: dict[str, str] | None = None) -> PairResult:
    """Run both models on one tile. ``progress(fraction, text)`` reports the windows done;
    ``sources`` are the session's model choices (role -> source; missing = operator default).

    An empty prompt is refused (a cleared box is a slip) unless ``allow_empty``: segmenting without a
    prompt on purpose (the ``none`` variant of the experiments: empty text)."""
    if allow_empty:
        prompt = ""
    elif not str(prompt or "").strip():
        raise MetasegError("the prompt is empty: type one in the Describe tab or pick a location first")
    else:
        check_prompt_text(prompt)
    models = {r: segment_model(r, sources) for r in ROLES}
    cs_a = models["metasegnet"].predictor.class_set
    cs_b = models["baseline"].predictor.class_set
    if cs_a is not None and cs_b is not None and cs_a.name != cs_b.name:
        raise CheckpointError(
            f"MetaSegNet predicts {cs_a.name} classes but the baseline predicts {cs_b.name}; load a matching pair"
        )
    masks, seconds, backends = {}, {}, {}
    with inference_lane(int(rgb.shape[0]) * int(rgb.shape[1])):
        _predict_both(models, rgb, valid, prompt, progress, masks, seconds, backends)
    from metaseg.classes import get_class_set

    return PairResult(
        metasegnet=masks["metasegnet"],
        baseline=masks["baseline"],
        class_set=cs_a or cs_b or get_class_set("openearthmap"),
        seconds=seconds,
        checkpoint_ids={r: models[r].checkpoint_id for r in ROLES},
        model_names={r: str(getattr(models[r].predictor, "name", r)) for r in ROLES},
        backends=backends,
    )


#: Two inference lanes: one tile at a time in each, so a large tile (up to the visitor budget) never
#: makes a small one wait behind it; the cores are shared between the two while both run.
_lanes = {"small": threading.Semaphore(1), "large": threading.Semaphore(1)}


@contextmanager
def inference_lane(pixels: int):
    """Hold the inference lane of a ``pixels``-sized tile (``METASEG_SMALL_PIXELS``: the small lane's
    limit). A small tile waits only for another small one; a large one waits at most
    ``METASEG_LARGE_WAIT_S`` seconds (default 10) for the large lane, then gets a clear "busy"."""
    small = pixels <= env_int("METASEG_SMALL_PIXELS", DEFAULT_SMALL_PIXELS)
    lane = _lanes["small" if small else "large"]
    wait = None if small else float(env_int("METASEG_LARGE_WAIT_S", 10))
    if not lane.acquire(timeout=wait):
        raise MetasegError(
            "another large tile is being segmented on this server right now; try again in a minute, or use a "
            f"tile of at most {env_int('METASEG_SMALL_PIXELS', DEFAULT_SMALL_PIXELS) / 1e6:.1f} M pixels "
            "(those never wait behind large ones)"
        )
    try:
        yield
    finally:
        lane.release()


def _predict_both(models, rgb, valid, prompt, progress, masks, seconds, backends=None) -> None:
    for k, role in enumerate(ROLES):
        def cb(done: int, total: int, _k: int = k, _role: str = role) -> None:
            if progress is not None and total:
                progress((_k + done / total) / len(ROLES), f"{_role}: window {done}/{total}")

        pred = models[role].predictor.predict(rgb, prompt, progress=cb, valid=valid)
        masks[role] = np.asarray(pred.index, dtype=np.uint8)
        seconds[role] = float(pred.seconds)
        if backends is not None:
            backends[role] = str(getattr(pred, "backend", "torch"))


try:  # Hugging Face ZeroGPU: borrow a GPU for the duration of the call
    import spaces  # type: ignore[import-not-found]

    run_pair = spaces.GPU(_run_pair)
except Exception:  # noqa: BLE001 - ImportError, or spaces present but not on ZeroGPU hardware
    run_pair = _run_pair


def fractions_table(result: PairResult) -> list[list[Any]]:
    """Rows ``[class, MetaSegNet %, baseline %]`` (area shares of the pixels with a class)."""
    from metaseg.visualize import class_fractions

    fa = class_fractions(result.metasegnet, result.class_set)
    fb = class_fractions(result.baseline, result.class_set)
    return [[name, round(100 * fa[name], 2), round(100 * fb[name], 2)] for name in result.class_set.names]


def fractions_json(result: PairResult) -> dict[str, dict[str, float]]:
    from metaseg.visualize import class_fractions

    return {
        "metasegnet": class_fractions(result.metasegnet, result.class_set),
        "baseline": class_fractions(result.baseline, result.class_set),
    }


def write_masks(result: PairResult, tile_info: Any, outdir: Path) -> list[str]:
    """Write both masks: GeoTIFF when the tile is georeferenced, PNG otherwise."""
    from metaseg.export import write_mask

    geo = tile_info is not None and getattr(tile_info, "crs", None) and getattr(tile_info, "transform", None)
    suffix = ".tif" if geo else ".png"
    paths = []
    for role in ROLES:
        out = outdir / f"{role}_mask{suffix}"
        write_mask(out, getattr(result, role), result.class_set, tile_info if geo else None)
        paths.append(str(out))
    return paths
