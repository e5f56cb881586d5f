"""UI-agnostic orchestration behind the app: locate, prompts, models, segment, review, label.

Everything here takes and returns plain Python / numpy values (no gradio), so the handlers can be
tested directly. The library does the real work (``metaseg`` for geo, climate, inference, pictures
and metrics; ``prompts_db`` for prompts, runs and labels).

Models are loaded once per source and shared by all users (:class:`ModelCache`, a small bounded
LRU); which model a session uses is that session's choice (``SessionState.model_sources``, passed
as ``sources=``); per-user data lives in :class:`studio.session.SessionState`.

Model sources, in order of precedence:

1. the session's choice (Models tab, checked by :func:`studio.policy.model_choice`; a taught model);
2. the operator's default set in code (:meth:`ModelCache.set_source`, tests and scripts);
3. env ``METASEG_CHECKPOINT_METASEGNET`` / ``METASEG_CHECKPOINT_BASELINE``;
4. the shipped demo weights (``Predictor.from_name("metasegnet_demo")`` / ``"baseline_demo"``).

Tests may inject a factory (:meth:`ModelCache.set_factory`) that builds predictors directly.

Inference backend: env ``METASEG_BACKEND`` = ``auto`` (default: ONNX Runtime fp32 on CPU when the
verified graph can be had, torch on CUDA), ``torch``, ``onnx`` or ``onnx-int8`` (see
:mod:`metaseg.backends`). The backend that ran is on each prediction (``Prediction.backend``)
and in :attr:`PairResult.backends`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.checkpoints import GSD_FAR, gsd_check  # noqa: F401 - one GSD rule for the app and the CLI
from metaseg.classes import ClassSet
from metaseg.errors import CheckpointError, MetasegError, TileReadError

log = logging.getLogger(__name__)

ROLES = ("metasegnet", "baseline")
DEMO_NAMES = {"metasegnet": "metasegnet_demo", "baseline": "baseline_demo"}
ENV_VARS = {"metasegnet": "METASEG_CHECKPOINT_METASEGNET", "baseline": "METASEG_CHECKPOINT_BASELINE"}
DEFAULT_MAX_UPLOAD_MB = 200
IGNORE = 255


# --------------------------------------------------------------------------- config
def max_upload_mb() -> int:
    """Upload limit in MB (``METASEG_MAX_UPLOAD_MB``, default 200)."""
    return _env_int("METASEG_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB)


def max_pixels() -> int | None:
    """Pixel cap for tiles (``METASEG_MAX_PIXELS``; ``None`` = the library default)."""
    value = os.environ.get("METASEG_MAX_PIXELS")
    return _env_int("METASEG_MAX_PIXELS", 0) or None if value else None


#: default per-request pixel budget for visitors (about 2048 x 2048: ~20 s for both models on 2 vCPUs)
DEFAULT_VISITOR_MAX_PIXELS = 2048 * 2048
#: tiles up to this many pixels run in the "small" inference lane, which never waits behind a large tile
DEFAULT_SMALL_PIXELS = 1024 * 1024


def visitor_max_pixels() -> int:
    """Largest tile (pixels) one visitor request may segment (``METASEG_VISITOR_MAX_PIXELS``)."""
    return _env_int("METASEG_VISITOR_MAX_PIXELS", DEFAULT_VISITOR_MAX_PIXELS)


def check_pixel_budget(width: Any, height: Any) -> None:
    """Refuse a tile over the visitor budget *before* its pixels are read (one clear line)."""
    try:
        w, h = int(width or 0), int(height or 0)
    except (TypeError, ValueError):
        return
    budget = visitor_max_pixels()
    if w * h > budget:
        raise TileReadError(
            f"the tile is {w}×{h} px ({w * h / 1e6:.1f} M pixels); this server segments up to "
            f"{budget / 1e6:.1f} M pixels per request (METASEG_VISITOR_MAX_PIXELS): crop it, or run "
            "`python -m metaseg map` on your own machine for large scenes"
        )


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        log.warning("ignoring %s=%r (not a number)", name, raw)
        return default
    return value if value > 0 else default


# --------------------------------------------------------------------------- prompt store
_store_lock = threading.Lock()
_stores: dict[str, Any] = {}


def get_store():
    """The shared :class:`prompts_db.PromptStore` of ``$METASEG_DB`` (one per database path)."""
    from prompts_db import PromptStore, default_db_path

    key = str(default_db_path())
    with _store_lock:
        store = _stores.get(key)
        if store is None:
            store = PromptStore(key)
            _stores[key] = store
        return store


_prompt_limits: dict[tuple[str, int], Any] = {}


def check_prompt_save(session_key: str) -> None:
    """Count one prompt-version save (typed, restored or LLM-generated) of a session: at most
    ``METASEG_PROMPT_SAVES_PER_MINUTE`` (default 10) per session and
    ``METASEG_PROMPT_SAVES_GLOBAL_PER_MINUTE`` (default 120) for the whole server. The store is
    shared by every visitor (that is its purpose), so one visitor must not flood it."""
    from metaseg.imagery import RateLimiter

    per = _env_int("METASEG_PROMPT_SAVES_PER_MINUTE", 10)
    total = _env_int("METASEG_PROMPT_SAVES_GLOBAL_PER_MINUTE", 120)
    with _store_lock:
        mine = _prompt_limits.setdefault(("session", per), RateLimiter(per, 60.0, "prompt versions saved",
                                                                         MetasegError))
        everyone = _prompt_limits.setdefault(("process", total), RateLimiter(
            total, 60.0, "prompt versions saved on this server by all visitors", MetasegError))
    mine.check(session_key)
    everyone.check("all sessions")


def check_prompt_text(text: Any) -> str:
    """A prompt for the models: at most the store's limit of characters (the same cap as saving)."""
    from prompts_db import MAX_TEXT_CHARS

    text = str(text or "")
    if len(text) > MAX_TEXT_CHARS:
        raise MetasegError(f"the prompt has {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}")
    return text


def llm_status() -> tuple[bool, str]:
    """Whether LLM regeneration is available, and a one-line reason shown in the UI."""
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        model = os.environ.get("METASEG_LLM_MODEL") or "the default model"
        return True, f"LLM configured ({model})."
    return False, "LLM regeneration needs OPENAI_API_KEY or OPENAI_BASE_URL in the server environment."


# --------------------------------------------------------------------------- locate
def zone_dict(lat: float | None, lon: float | None) -> dict[str, Any] | None:
    """The ``climate --json`` object for a point (``code: None, reason: "ocean"`` at sea)."""
    if lat is None or lon is None:
        return None
    from metaseg.climate import lookup

    return lookup(lat, lon).to_dict()


def locate_file(path: str | os.PathLike) -> tuple[dict[str, Any], Any]:
    """Metadata + zone of a tile file: ``(the locate --json object, TileInfo)``."""
    from metaseg.geo import inspect_tile

    info = inspect_tile(path)
    obj = dict(info.to_dict())
    obj["zone"] = zone_dict(obj.get("lat"), obj.get("lon"))
    return obj, info


def locate_point(lat: Any, lon: Any, source: str = "typed") -> dict[str, Any]:
    """The locate object for typed or clicked coordinates (file fields are ``None``)."""
    from metaseg.climate import validate

    lat_f, lon_f = validate(lat, lon)
    zone = zone_dict(lat_f, lon_f)
    return {
        "lat": lat_f, "lon": lon_f, "source": source, "crs": None,
        "width": None, "height": None, "bands": None, "dtype": None, "footprint": None, "gsd_m": None,
        "zone": zone,
    }


def point_in_footprint(lat: float, lon: float, footprint: Any) -> bool:
    """Whether (lat, lon) lies inside a tile's footprint (its corners as ``(lat, lon)``, ray casting)."""
    pts = [(float(p[0]), float(p[1])) for p in footprint or []]
    if len(pts) < 3:
        return False
    inside = False
    for (la1, lo1), (la2, lo2) in zip(pts, pts[1:] + pts[:1], strict=True):
        if (la1 > lat) != (la2 > lat) and lon < lo1 + (lat - la1) * (lo2 - lo1) / (la2 - la1):
            inside = not inside
    return inside


#: a point this close to a tile located by EXIF GPS (no footprint) counts as "on the tile"
EXIF_NEAR_M = 250.0


def place_point(location: dict[str, Any] | None, lat: float, lon: float) -> str:
    """How typed or clicked coordinates relate to the tile in use (location precedence).

    ``location`` is the locate object of the session's tile (``None``: no tile loaded). Returns

    - ``"free"``: no tile: the point is the new location;
    - ``"attach"``: the tile has no location of its own (plain PNG/JPEG): the point locates it;
    - ``"keep"``: the point lies on a georeferenced tile (inside its footprint, or near its EXIF
      position): the tile's own location wins and stays;
    - ``"new"``: the point is elsewhere: it starts a new location and the tile is unloaded —
      a point off the tile is never attached to it.
    """
    if location is None:
        return "free"
    if location.get("source") not in ("geotiff", "exif") or location.get("lat") is None:
        return "attach"
    footprint = location.get("footprint")
    if footprint:
        return "keep" if point_in_footprint(lat, lon, footprint) else "new"
    from metaseg.geo import haversine_m

    return "keep" if haversine_m(lat, lon, location["lat"], location["lon"]) <= EXIF_NEAR_M else "new"


def read_tile(path: str | os.PathLike):
    """:func:`metaseg.geo.read_tile` with the configured pixel cap."""
    from metaseg.geo import read_tile as _read

    cap = max_pixels()
    return _read(path) if cap is None else _read(path, max_pixels=cap)


def tile_hash(path: str | os.PathLike) -> str:
    from metaseg.geo import tile_hash as _hash

    return _hash(path)


def zone_code(location: dict[str, Any] | None) -> str | None:
    zone = (location or {}).get("zone") or {}
    return zone.get("code")


# --------------------------------------------------------------------------- models
def backend_from_env() -> str:
    """``METASEG_BACKEND`` (default ``auto``); a bad value is logged and replaced by ``auto``."""
    from metaseg.backends import check_backend
    from metaseg.errors import ConfigError

    raw = os.environ.get("METASEG_BACKEND", "").strip() or "auto"
    try:
        return check_backend(raw)
    except ConfigError as exc:
        log.warning("METASEG_BACKEND: %s; using auto", exc)
        return "auto"


@dataclass
class LoadedModel:
    predictor: Any
    source: str  # "demo:<name>", a path or a hub id
    checkpoint_id: str


class ModelCache:
    """Process-wide cache of loaded predictors, keyed by (role, source) and shared by all sessions.

    *Loading* is shared (two visitors who pick the same checkpoint share one predictor); the
    *choice* is per session: a visitor's sources live in ``SessionState.model_sources`` and reach
    :meth:`get` as ``source``. ``source=None`` is the operator's default (:meth:`source_of`). The
    operator defaults stay loaded; other entries live in a small LRU (``METASEG_MODEL_CACHE``
    entries, default 4). A source is loaded and checked *before* it is cached, so a bad one
    never becomes anybody's model.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self._sources: dict[str, str | None] = {r: None for r in ROLES}
        self._factory: Callable[[str, str | None], Any] | None = None

    @property
    def factory(self) -> Callable[[str, str | None], Any] | None:
        """The test factory in use (``None``: real checkpoints)."""
        return self._factory

    def set_factory(self, factory: Callable[[str, str | None], Any] | None) -> None:
        """Use ``factory(role, source) -> Predictor`` instead of loading checkpoints (tests)."""
        with self._lock:
            self._factory = factory
            self._models.clear()

    def set_source(self, role: str, source: str | None) -> None:
        """Set the *operator's* default source of ``role`` for every session (``None`` = back to the
        environment / demo default). Visitors never reach this: their choice is per session."""
        if role not in ROLES:
            raise MetasegError(f"unknown model role {role!r}; valid: {', '.join(ROLES)}")
        with self._lock:
            self._sources[role] = (source or "").strip() or None

    def chosen_source(self, role: str) -> str | None:
        """The operator-wide source set for ``role`` (``None``: the default)."""
        return self._sources.get(role)

    def source_of(self, role: str, source: str | None = None) -> str:
        """The source ``get(role, source)`` loads: ``source`` itself, else the operator default."""
        if source:
            return source
        return self._sources.get(role) or os.environ.get(ENV_VARS[role], "").strip() or f"demo:{DEMO_NAMES[role]}"

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

    def _capacity(self) -> int:
        return _env_int("METASEG_MODEL_CACHE", 4)

    def get(self, role: str, source: str | None = None) -> LoadedModel:
        """The predictor of ``role`` from ``source`` (``None``: the operator default), loaded once."""
        if role not in ROLES:
            raise MetasegError(f"unknown model role {role!r}; valid: {', '.join(ROLES)}")
        src = self.source_of(role, source)
        key = (role, src)
        with self._lock:
            loaded = self._models.get(key)
            if loaded is not None:
                self._models.move_to_end(key)
                return loaded
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # one load per source at a time; other sources and cached models go on
            with self._lock:
                loaded = self._models.get(key)
            if loaded is None:
                factory = self._factory
                loaded = self._load(role, src, factory)
                with self._lock:
                    if factory is self._factory:  # not swapped meanwhile (tests)
                        self._models[key] = loaded
                        self._evict()
                    self._loading.pop(key, None)
            return loaded

    def _evict(self) -> None:
        defaults = {(r, self.source_of(r)) for r in ROLES}
        extra = [k for k in self._models if k not in defaults]
        for key in extra[: max(0, len(extra) - self._capacity())]:
            del self._models[key]

    def loaded(self, role: str, source: str | None = None) -> LoadedModel | None:
        return self._models.get((role, self.source_of(role, source)))

    def _load(self, role: str, source: str, factory: Callable[[str, str | None], Any] | None = None) -> LoadedModel:
        t0 = time.perf_counter()
        if factory is not None:
            predictor = factory(role, source)
        else:
            from metaseg.inference import Predictor

            device = os.environ.get("METASEG_DEVICE") or None
            backend = backend_from_env()
            try:
                if source.startswith("demo:"):
                    predictor = Predictor.from_name(source[5:], device=device, backend=backend)
                else:
                    predictor = Predictor.from_checkpoint(source, device=device, backend=backend)
            except CheckpointError as exc:
                # where to fix it depends on the screen: segment_model() adds the Models-tab hint
                raise CheckpointError(f"{role} model: {' '.join(str(exc).split())}") from None
        uses_text = bool(getattr(predictor, "uses_text", role == "metasegnet"))
        if role == "metasegnet" and not uses_text:
            raise CheckpointError(
                "this checkpoint is a vision-only model (no text encoder, like the baseline): it cannot fill "
                "the MetaSegNet slot, whose results depend on the prompt; load it as the baseline instead"
            )
        if role == "baseline" and uses_text:
            raise CheckpointError(
                "this checkpoint reads a prompt (a MetaSegNet model): the baseline slot needs a vision-only "
                "model; load it as MetaSegNet instead"
            )
        meta = dict(getattr(predictor, "meta", {}) or {})
        ckpt = str(meta.get("checkpoint_hash") or meta.get("sha256") or meta.get("hash") or source)
        log.info("loaded %s model from %s in %.1fs", role, source, time.perf_counter() - t0)
        return LoadedModel(predictor=predictor, source=source, checkpoint_id=ckpt)

    def describe(self, sources: dict[str, str] | None = None, shown: Callable[[str], str] | None = None
                 ) -> list[list[str]]:
        """Rows ``[role, source, status]`` for the UI (``sources``: a session's choices; ``shown``:
        how a source is displayed, e.g. without server paths)."""
        rows = []
        for role in ROLES:
            src = (sources or {}).get(role) or None
            loaded = self.loaded(role, src)
            status = "loaded" if loaded else "loads on first segment"
            if loaded is not None:
                p = loaded.predictor
                cs = getattr(getattr(p, "class_set", None), "name", "?")
                status += f" ({getattr(p, 'name', '?')}, {cs}, {getattr(p, 'device', '?')}, {getattr(p, 'backend', 'torch')})"
            text = self.source_of(role, src)
            rows.append([role, shown(text) if shown else text, status])
        return rows


def shown_source(source: str) -> str:
    """A model source as a visitor may see it: demo and hub names as they are, paths by their last part."""
    if source.startswith("demo:") or (not source.startswith((".", "/", "~")) and "/" in source
                                      and not Path(source).exists()):
        return source
    return Path(source).name or source


MODELS = ModelCache()


def segment_model(role: str, sources: dict[str, str] | None = None) -> LoadedModel:
    """:meth:`ModelCache.get` for a segmentation (``sources``: the session's choices): a model that
    cannot load says where to fix it."""
    try:
        return MODELS.get(role, (sources or {}).get(role) or None)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (load a working checkpoint in the Models tab, or set {ENV_VARS[role]} "
                              "on the server)") from None


def class_set_of_models(sources: dict[str, str] | None = None):
    """Class set of the (session's) MetaSegNet model (loads it); the baseline must use the same set."""
    from metaseg.classes import get_class_set

    cs = segment_model("metasegnet", sources).predictor.class_set
    return cs if cs is not None else get_class_set("openearthmap")


# --------------------------------------------------------------------------- segment
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
    small = pixels <= _env_int("METASEG_SMALL_PIXELS", DEFAULT_SMALL_PIXELS)
    lane = _lanes["small" if small else "large"]
    wait = None if small else float(_env_int("METASEG_LARGE_WAIT_S", 10))
    if not lane.acquire(timeout=wait):
        raise MetasegError(
            "another large tile is being segmented on this server right now; try again in a minute, or use a "
            f"tile of at most {_env_int('METASEG_SMALL_PIXELS', DEFAULT_SMALL_PIXELS) / 1e6:.1f} M pixels "
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


# --------------------------------------------------------------------------- review
def scores(pred: np.ndarray, gt: np.ndarray, class_set: Any) -> dict[str, Any]:
    """Per-class IoU/F1 and mIoU/OA/mF1 of one mask against the ground truth (:mod:`metaseg.metrics`).

    Classes absent from both prediction and ground truth get ``None``; means use ``class_set.scored``.
    """
    from metaseg.metrics import evaluate_masks

    if pred.shape != gt.shape:
        raise MetasegError(
            f"the label is {gt.shape[1]}x{gt.shape[0]} but the tile is {pred.shape[1]}x{pred.shape[0]}"
        )
    m = evaluate_masks(
        gt, pred, len(class_set.names), scored=getattr(class_set, "scored", None),
        class_names=class_set.names, ignore_index=getattr(class_set, "ignore_index", IGNORE),
    )
    return {
        "per_class_iou": {n: _nan_none(m.iou[i]) for i, n in enumerate(class_set.names)},
        "per_class_f1": {n: _nan_none(m.f1[i]) for i, n in enumerate(class_set.names)},
        "miou": _nan_none(m.miou), "oa": _nan_none(m.oa), "mf1": _nan_none(m.mf1),
    }


def _nan_none(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def review(result_a: np.ndarray, result_b: np.ndarray, gt: np.ndarray, class_set: Any) -> dict[str, Any]:
    """Scores of both models and their per-class IoU differences (MetaSegNet − baseline)."""
    a = scores(result_a, gt, class_set)
    b = scores(result_b, gt, class_set)
    delta = {
        n: (a["per_class_iou"][n] - b["per_class_iou"][n])
        if a["per_class_iou"][n] is not None and b["per_class_iou"][n] is not None else None
        for n in class_set.names
    }
    return {"metasegnet": a, "baseline": b, "delta_iou": delta}


def read_label(path: str | os.PathLike, class_set: Any, shape: tuple[int, int]) -> np.ndarray:
    return open_label(path, class_set, shape).index


def open_label(path: str | os.PathLike, class_set: Any, shape: tuple[int, int]):
    """:func:`metaseg.geo.open_label`: the decoded label and a note for the user (or ``None``)."""
    from metaseg.geo import open_label as _open

    return _open(path, class_set, expected_shape=shape, max_pixels=max_pixels())


def saved_ground_truth(tile_hash_: str | None, shape: tuple[int, int], label_ids: set[int] | None = None
                       ) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The newest label saved for a tile (by its hash) whose file still reads: ``(indices, label row)``;
    only among ``label_ids`` when given (a session's own labels, unless the operator shares them).

    Whatever way a tile is opened (upload, re-upload, example, a tile opened from the Experiments
    gallery), this is how it finds the ground truth a visitor saved for it.
    """
    if not tile_hash_:
        return None
    for row in get_store().labels(tile_hash_):
        if label_ids is not None and row.get("id") not in label_ids:
            continue
        path = Path(row["mask_path"])
        if not path.is_file():
            continue
        try:
            return open_label(path, row["class_set"], shape).index, row
        except MetasegError as exc:
            log.warning("saved label #%s of tile %s skipped: %s", row.get("id"), tile_hash_[:12], exc)
    return None


# --------------------------------------------------------------------------- label painting
def painted_to_index(painted: np.ndarray, class_set: Any, valid: np.ndarray | None = None) -> np.ndarray:
    """Class indices of a painted RGB(A) image: nearest palette colour per pixel.

    Brush strokes are anti-aliased and images may be lossy-compressed, so exact matches are
    not required: each pixel takes the class whose palette colour is closest (squared RGB
    distance). Pixels outside ``valid`` become 255 (ignore).
    """
    img = np.asarray(painted)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] < 3:
        raise MetasegError(f"a painted label must be an RGB image, got shape {img.shape}")
    rgb = img[..., :3].astype(np.int32)
    palette = np.asarray(class_set.colors, dtype=np.int32)  # K×3
    h, w = rgb.shape[:2]
    flat = rgb.reshape(-1, 3)
    out = np.empty(flat.shape[0], dtype=np.uint8)
    step = 1 << 18  # bound the K×N distance array
    for s in range(0, flat.shape[0], step):
        d = ((flat[s:s + step, None, :] - palette[None]) ** 2).sum(-1)
        out[s:s + step] = d.argmin(1).astype(np.uint8)
    out = out.reshape(h, w)
    if valid is not None:
        out[~np.asarray(valid, dtype=bool)] = IGNORE
    return out


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
    index = painted_to_index(img[..., :3], class_set)
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
        ignore_index=IGNORE,
        default_zone=class_set.default_zone,
        encoding=class_set.encoding,
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


def saved_prompt_id(prompt_id: int | None, text: str) -> int | None:
    """``prompt_id`` if that stored version has exactly ``text``, else ``None`` (an unsaved edit)."""
    if prompt_id is None:
        return None
    try:
        return prompt_id if get_store().get(prompt_id).text == text else None
    except MetasegError:
        return None


def log_review(tile_hash_: str, rev: dict[str, Any], class_set: str, prompt_id: int | None,
               checkpoint_ids: dict[str, str]) -> None:
    """Record both models' scores of one review in SQLite (the baseline has no prompt)."""
    store = get_store()
    for role in ROLES:
        store.log_run(
            tile_hash_, role, rev[role]["per_class_iou"],
            prompt_id=prompt_id if role == "metasegnet" else None,
            checkpoint_hash=checkpoint_ids.get(role), model_role=role,
            miou=rev[role]["miou"], oa=rev[role]["oa"], class_set=class_set,
        )


# --------------------------------------------------------------------------- examples
def example_tiles(folder: Path) -> list[list[str]]:
    """gr.Examples rows: SynthEarth tiles (``folder/synth``, labels excluded), then the real GeoTIFFs."""
    synth = folder / "synth"
    out = [[str(p)] for p in sorted(synth.glob("*.tif")) if not p.stem.endswith("_label")] if synth.is_dir() else []
    return out + [[str(p)] for p in sorted(folder.glob("*.tif"))]


@lru_cache(maxsize=4)
def example_labels(folder: str) -> dict[str, str]:
    """Tile hash → ground-truth path for the SynthEarth examples (``<name>_label.tif`` beside ``<name>.tif``)."""
    synth = Path(folder) / "synth"
    labels: dict[str, str] = {}
    for p in sorted(synth.glob("*_label.tif")) if synth.is_dir() else []:
        tile = p.with_name(p.name.replace("_label.tif", ".tif"))
        if tile.exists():
            try:
                labels[tile_hash(tile)] = str(p)
            except MetasegError as exc:
                log.warning("example %s skipped: %s", tile.name, exc)
    return labels


# --------------------------------------------------------------------------- development aids
def random_predictor(role: str, source: str | None = None, **overrides: Any):
    """A randomly initialised demo-size predictor (tests; ``METASEG_RANDOM_WEIGHTS=1`` for UI work).

    The image encoder starts random (``pretrained="none"``); the frozen MiniLM text encoder is the
    real one. Masks are meaningless but every code path runs.
    """
    import torch

    from metaseg.inference import Predictor
    from metaseg.models import create_model

    torch.manual_seed(0 if role == "metasegnet" else 1)
    name = DEMO_NAMES[role]
    model = create_model(name, pretrained="none", **overrides)
    return Predictor(model, "cpu", meta={"checkpoint_hash": f"random-{name}"})


if os.environ.get("METASEG_RANDOM_WEIGHTS") == "1":  # pragma: no cover - developer switch
    log.warning("METASEG_RANDOM_WEIGHTS=1: using randomly initialised models (masks are meaningless)")
    MODELS.set_factory(random_predictor)


# --------------------------------------------------------------------------- ground sample distance
def model_gsd_range(role: str = "metasegnet", sources: dict[str, str] | None = None) -> tuple[float, float] | None:
    """``(min, max)`` m/px the model was trained on (recorded in its checkpoint, else its defaults)."""
    from metaseg.checkpoints import gsd_range_m

    p = segment_model(role, sources).predictor
    meta = dict(getattr(p, "meta", {}) or {})
    cs = getattr(getattr(p, "class_set", None), "name", None)
    if cs and "class_set" not in meta:
        meta["class_set"] = cs
    return gsd_range_m(meta)


def gsd_note(tile_gsd: float | None, rng: tuple[float, float] | None, resampled_to: float | None = None,
             resample_asked: bool = False) -> str:
    """One plain sentence about the tile's GSD against the model's (empty when unknown);
    ``resample_asked``: the visitor ticked "Resample" — say so when it did nothing."""
    kind, target = gsd_check(tile_gsd, rng)
    if resample_asked and not resampled_to:
        return resample_skipped_note(kind, tile_gsd, rng) + (" " + gsd_note(tile_gsd, rng) if kind != "unknown" else "")
    if kind == "unknown":
        return ""
    lo, hi = rng
    model = f"{lo:g} m/px" if lo == hi else f"{lo:g}–{hi:g} m/px"
    tile = f"{tile_gsd:.3g} m/px"
    if resampled_to:
        return (f"Ground sample distance: the tile is {tile}; it was resampled to {resampled_to:g} m/px (the model "
                f"was trained on {model}) for prediction, and the masks brought back to the tile's grid.")
    if kind == "coarser":
        return (f"⚠️ Ground sample distance: this tile is {tile}, about {tile_gsd / hi:.0f}× coarser than the "
                f"{model} the model was trained on. Objects are far smaller than the model expects: treat "
                "this result with great caution.")
    if kind == "finer":
        return (f"⚠️ Ground sample distance: this tile is {tile}, about {lo / tile_gsd:.0f}× finer than the "
                f"{model} the model was trained on. Tick “Resample to the model's GSD” and segment again "
                f"to predict at {target:g} m/px.")
    return f"Ground sample distance: {tile} (the model was trained on {model})."


def resample_skipped_note(kind: str, tile_gsd: float | None, rng: tuple[float, float] | None) -> str:
    """Why "Resample to the model's GSD" changed nothing for this tile."""
    if kind == "unknown":
        return ("Resampling did nothing: " + ("the tile's ground sample distance is unknown (no georeference)."
                                             if not tile_gsd else "the model does not record its training GSD."))
    lo, hi = rng
    model = f"{lo:g} m/px" if lo == hi else f"{lo:g}–{hi:g} m/px"
    if kind == "coarser":
        return (f"Resampling did nothing: it only shrinks tiles much finer than the model's {model}; this tile "
                f"({tile_gsd:.3g} m/px) is coarser, and enlarging it adds no detail.")
    return (f"Resampling did nothing: the tile ({tile_gsd:.3g} m/px) is already close to the model's {model}; "
            "it was segmented as it is.")


def resample(rgb: np.ndarray, valid: np.ndarray | None, factor: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Shrink a tile by ``factor`` (> 1; area-averaged pixels, nearest-neighbour validity)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
    if valid is None:
        return small, None
    v = np.asarray(Image.fromarray(np.asarray(valid, np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 127
    return small, v


def upsample_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A class mask back onto a ``shape`` grid (nearest neighbour)."""
    from PIL import Image

    return np.asarray(Image.fromarray(mask).resize((shape[1], shape[0]), Image.Resampling.NEAREST))


def run_pair_at_gsd(rgb: np.ndarray, valid: np.ndarray | None, prompt: str, tile_gsd: float | None,
                    target_gsd: float | None, progress=None, allow_empty: bool = False,
                    sources: dict[str, str] | None = None) -> PairResult:
    """:func:`run_pair` at ``target_gsd`` (tile shrunk first, masks brought back to the tile grid)."""
    if not tile_gsd or not target_gsd or target_gsd <= tile_gsd:
        return run_pair(rgb, valid, prompt, progress=progress, allow_empty=allow_empty, sources=sources)
    small, small_valid = resample(rgb, valid, target_gsd / tile_gsd)
    result = run_pair(small, small_valid, prompt, progress=progress, allow_empty=allow_empty, sources=sources)
    shape = rgb.shape[:2]
    result.metasegnet = upsample_mask(result.metasegnet, shape)
    result.baseline = upsample_mask(result.baseline, shape)
    if valid is not None:
        result.metasegnet[~np.asarray(valid, bool)] = IGNORE
        result.baseline[~np.asarray(valid, bool)] = IGNORE
    return result


# --------------------------------------------------------------------------- polygons
#: polygons smaller than this many pixels are dropped by default (speckle, not objects)
MIN_POLYGON_PIXELS = 16


def default_min_area_m2(tile_gsd: float | None) -> float:
    """The app's default smallest polygon: :data:`MIN_POLYGON_PIXELS` pixels of the tile (1 m² when
    the GSD is unknown), like ``metaseg map --min-area`` but sized to the tile."""
    return round(MIN_POLYGON_PIXELS * float(tile_gsd) ** 2, 2) if tile_gsd else 1.0


def write_polygons(masks: dict[str, np.ndarray], class_names: list[str], tile_info: Any, outdir: Path,
                   min_area_m2: float | None = None) -> list[str]:
    """Masks (role → class indices) as polygons (``model``, ``class``, ``area_m2`` per polygon) in a
    GeoPackage and a GeoJSON (WGS84), via :mod:`metaseg.vectorize` (as ``metaseg map``).

    ``min_area_m2``: polygons smaller than this are dropped (``None``: :func:`default_min_area_m2`).
    """
    from metaseg.vectorize import mask_to_features, write_features

    crs, transform = getattr(tile_info, "crs", None), getattr(tile_info, "transform", None)
    if not crs or not transform:
        raise MetasegError("this tile has no georeference: polygons need a GeoTIFF tile (the PNG masks are there)")
    if min_area_m2 is None:
        min_area_m2 = default_min_area_m2(getattr(tile_info, "gsd_m", None))
    try:
        min_area_m2 = float(min_area_m2)
    except (TypeError, ValueError):
        raise MetasegError(f"the smallest polygon area must be a number of m², not {str(min_area_m2)[:20]!r}") from None
    if not min_area_m2 >= 0:
        raise MetasegError(f"the smallest polygon area must be 0 or more m², not {min_area_m2}")
    features = []
    for role, mask in masks.items():
        features += mask_to_features(mask, transform, crs, list(class_names), ignore=IGNORE, min_area_m2=min_area_m2,
                                     extra={"model": role})
    paths = []
    for name in ("polygons.gpkg", "polygons.geojson"):
        out = outdir / name
        out.unlink(missing_ok=True)
        paths.append(str(write_features(features, out, crs="EPSG:4326")))
    return paths


# --------------------------------------------------------------------------- imagery
_imagery_limits: dict[tuple[str, int], Any] = {}
_imagery_lock = threading.Lock()


def imagery_limiter():
    """The per-session rate limiter (``METASEG_IMAGERY_PER_MINUTE`` fetches a minute, default 6)."""
    from metaseg.imagery import RateLimiter

    calls = _env_int("METASEG_IMAGERY_PER_MINUTE", 6)
    with _imagery_lock:
        lim = _imagery_limits.get(("session", calls))
        if lim is None:
            lim = _imagery_limits[("session", calls)] = RateLimiter(calls, 60.0)
        return lim


def imagery_global_limiter():
    """The process-wide limiter beside the per-session one (``METASEG_IMAGERY_GLOBAL_PER_MINUTE``
    fetches a minute for all sessions together, default 20): fresh sessions or API clients cannot
    turn the server into a proxy for the tile server."""
    from metaseg.imagery import RateLimiter

    calls = _env_int("METASEG_IMAGERY_GLOBAL_PER_MINUTE", 20)
    with _imagery_lock:
        lim = _imagery_limits.get(("process", calls))
        if lim is None:
            lim = _imagery_limits[("process", calls)] = RateLimiter(calls, 60.0)
        return lim


def imagery_status() -> tuple[bool, str]:
    """Whether imagery can be fetched (from the environment now) and the credit/reason to show."""
    from metaseg.errors import ImageryError
    from metaseg.imagery import source_from_env

    try:
        src = source_from_env()
    except ImageryError as exc:
        return False, str(exc)
    if src is None:
        return False, "Imagery fetching is switched off on this server (METASEG_IMAGERY_URL=off)."
    return True, src.attribution


def fetch_imagery(lat: Any, lon: Any, zoom: Any, out: Path, session_key: str):
    """Rate-limited :func:`metaseg.imagery.fetch_imagery` into ``out`` for one session."""
    from metaseg.climate import validate
    from metaseg.imagery import check_mercator_lat, require_source
    from metaseg.imagery import fetch_imagery as _fetch

    lat_f, lon_f = validate(lat, lon)
    check_mercator_lat(lat_f)  # before the rate limiter counts a fetch that cannot happen
    src = require_source()
    imagery_limiter().check(session_key)
    try:
        imagery_global_limiter().check("all sessions")
    except MetasegError as exc:
        raise type(exc)(f"this server is fetching a lot of imagery for all its visitors right now: {exc}") from None
    return _fetch(lat_f, lon_f, zoom, out, source=src)
