"""UI-agnostic orchestration behind the app: locate, prompts, models, segment, review, label.

Everything here takes and returns plain Python / numpy values (no gradio), so the handlers can be
tested directly. The library does the real work (``metaseg`` for geo, climate, inference, pictures
and metrics; ``prompts_db`` for prompts, runs and labels).

Models are loaded once per process and shared by all users (:class:`ModelCache`, guarded by a
lock); per-user data lives in :class:`studio.session.SessionState`.

Model sources, in order of precedence:

1. a source set from the UI (checkpoint path or hub id, :meth:`ModelCache.set_source`);
2. env ``METASEG_CHECKPOINT_METASEGNET`` / ``METASEG_CHECKPOINT_BASELINE``;
3. the shipped demo weights (``Predictor.from_name("metasegnet_demo")`` / ``"baseline_demo"``).

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
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.checkpoints import GSD_FAR, gsd_check  # noqa: F401 - one GSD rule for the app and the CLI
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
    """Process-wide, lock-guarded cache of the two predictors (loaded lazily on first use)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, LoadedModel] = {}
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
        """Use a checkpoint path / hub id for ``role`` (``None`` or "" = back to the default)."""
        if role not in ROLES:
            raise MetasegError(f"unknown model role {role!r}; valid: {', '.join(ROLES)}")
        with self._lock:
            self._sources[role] = (source or "").strip() or None
            self._models.pop(role, None)

    def chosen_source(self, role: str) -> str | None:
        """The source set from the UI for ``role`` (``None``: the default)."""
        return self._sources.get(role)

    def source_of(self, role: str) -> str:
        return self._sources.get(role) or os.environ.get(ENV_VARS[role], "").strip() or f"demo:{DEMO_NAMES[role]}"

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

    def get(self, role: str) -> LoadedModel:
        with self._lock:
            loaded = self._models.get(role)
            if loaded is None:
                loaded = self._load(role)
                self._models[role] = loaded
            return loaded

    def loaded(self, role: str) -> LoadedModel | None:
        return self._models.get(role)

    def _load(self, role: str) -> LoadedModel:
        source = self.source_of(role)
        t0 = time.perf_counter()
        if self._factory is not None:
            predictor = self._factory(role, source)
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
                # where to fix it depends on the screen: segment_models() adds the Models-tab hint
                raise CheckpointError(f"{role} model: {' '.join(str(exc).split())}") from None
        if role == "metasegnet" and not getattr(predictor, "uses_text", True):
            log.warning("the MetaSegNet slot holds a model without text (%s)", source)
        meta = dict(getattr(predictor, "meta", {}) or {})
        ckpt = str(meta.get("checkpoint_hash") or meta.get("sha256") or meta.get("hash") or source)
        log.info("loaded %s model from %s in %.1fs", role, source, time.perf_counter() - t0)
        return LoadedModel(predictor=predictor, source=source, checkpoint_id=ckpt)

    def describe(self) -> list[list[str]]:
        """Rows ``[role, source, status]`` for the UI."""
        rows = []
        for role in ROLES:
            loaded = self._models.get(role)
            status = "loaded" if loaded else "loads on first segment"
            if loaded is not None:
                p = loaded.predictor
                cs = getattr(getattr(p, "class_set", None), "name", "?")
                status += f" ({getattr(p, 'name', '?')}, {cs}, {getattr(p, 'device', '?')}, {getattr(p, 'backend', 'torch')})"
            rows.append([role, self.source_of(role), status])
        return rows


MODELS = ModelCache()


def segment_model(role: str) -> LoadedModel:
    """:meth:`ModelCache.get` for a segmentation: a model that cannot load says where to fix it."""
    try:
        return MODELS.get(role)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (load a working checkpoint in the Models tab, or set {ENV_VARS[role]} "
                              "on the server)") from None


def class_set_of_models():
    """Class set of the MetaSegNet model (loads it); the baseline must use the same set."""
    from metaseg.classes import get_class_set

    cs = segment_model("metasegnet").predictor.class_set
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
              progress: Callable[[float, str], Any] | None = None, allow_empty: bool = False) -> PairResult:
    """Run both models on one tile. ``progress(fraction, text)`` reports the windows done.

    An empty prompt is refused (a cleared box is a slip) unless ``allow_empty``: segmenting without a
    prompt on purpose (the ``none`` variant of the experiments: empty text)."""
    if allow_empty:
        prompt = ""
    elif not str(prompt or "").strip():
        raise MetasegError("the prompt is empty: type one in the Describe tab or pick a location first")
    models = {r: segment_model(r) for r in ROLES}
    cs_a = models["metasegnet"].predictor.class_set
    cs_b = models["baseline"].predictor.class_set
    if cs_a is not None and cs_b is not None and cs_a.name != cs_b.name:
        raise CheckpointError(
            f"MetaSegNet predicts {cs_a.name} classes but the baseline predicts {cs_b.name}; load a matching pair"
        )
    masks, seconds, backends = {}, {}, {}
    with _infer_lock:  # one inference at a time: the cores (or the GPU) are shared anyway
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


_infer_lock = threading.Lock()


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


def saved_ground_truth(tile_hash_: str | None, shape: tuple[int, int]) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The newest label saved for a tile (by its hash) whose file still reads: ``(indices, label row)``.

    Whatever way a tile is opened (upload, re-upload, example, a tile opened from the Experiments
    gallery), this is how it finds the ground truth a visitor saved for it.
    """
    if not tile_hash_:
        return None
    for row in get_store().labels(tile_hash_):
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


def save_label(index: np.ndarray, class_set: Any, tile_info: Any, tile_hash_: str, outdir: Path) -> dict[str, Any]:
    """Write a ground-truth mask in the class set's official encoding and record it in SQLite.

    GeoTIFF with the tile's CRS/transform when the tile is georeferenced, PNG otherwise.
    """
    from metaseg.export import write_mask_geotiff, write_mask_png

    encoded = np.asarray(class_set.encode(index))
    geo = tile_info is not None and getattr(tile_info, "crs", None) and getattr(tile_info, "transform", None)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir.mkdir(parents=True, exist_ok=True)
    if encoded.ndim == 3:  # RGB-coded (Potsdam): the colours are the encoding
        from PIL import Image

        path = outdir / f"label_{class_set.name}_{stamp}.png"
        Image.fromarray(encoded[..., :3].astype(np.uint8)).save(path)
    else:
        view = _raw_view(class_set)
        path = outdir / f"label_{class_set.name}_{stamp}{'.tif' if geo else '.png'}"
        if geo:
            write_mask_geotiff(path, encoded.astype(np.uint8), view, tile_info.crs, tile_info.transform)
        else:
            write_mask_png(path, encoded.astype(np.uint8), view)
    row = get_store().save_label(tile_hash_, class_set.name, str(path))
    return {"path": str(path), **row}


def _raw_view(class_set: Any) -> Any:
    """Names/colours indexed by the *raw* label value (offset-1 encodings: raw 0 = no data).

    Lets the mask writers embed a correct colour map in a label saved in the official encoding.
    """
    from types import SimpleNamespace

    return SimpleNamespace(
        name=class_set.name,
        names=("no data", *class_set.names),
        colors=((0, 0, 0), *class_set.colors),
        ignore_index=0,
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


def zip_labels(tile_hash_: str, out: Path) -> Path:
    """All saved label files of a tile in one zip (MetasegError when there are none)."""
    import zipfile

    rows = get_store().labels(tile_hash_)
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
def model_gsd_range(role: str = "metasegnet") -> tuple[float, float] | None:
    """``(min, max)`` m/px the model was trained on (recorded in its checkpoint, else its defaults)."""
    from metaseg.checkpoints import gsd_range_m

    p = segment_model(role).predictor
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
                    target_gsd: float | None, progress=None, allow_empty: bool = False) -> PairResult:
    """:func:`run_pair` at ``target_gsd`` (tile shrunk first, masks brought back to the tile grid)."""
    if not tile_gsd or not target_gsd or target_gsd <= tile_gsd:
        return run_pair(rgb, valid, prompt, progress=progress, allow_empty=allow_empty)
    small, small_valid = resample(rgb, valid, target_gsd / tile_gsd)
    result = run_pair(small, small_valid, prompt, progress=progress, allow_empty=allow_empty)
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
_imagery_limits: dict[tuple[int, float], Any] = {}
_imagery_lock = threading.Lock()


def imagery_limiter():
    """The per-session rate limiter (``METASEG_IMAGERY_PER_MINUTE`` fetches a minute, default 6)."""
    from metaseg.imagery import RateLimiter

    calls = _env_int("METASEG_IMAGERY_PER_MINUTE", 6)
    with _imagery_lock:
        lim = _imagery_limits.get((calls, 60.0))
        if lim is None:
            lim = _imagery_limits[(calls, 60.0)] = RateLimiter(calls, 60.0)
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
    return _fetch(lat_f, lon_f, zoom, out, source=src)
