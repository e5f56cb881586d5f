"""Models shared by all sessions: the backend choice, the bounded :class:`ModelCache`, the demo aids.

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
and in :attr:`studio.pair.PairResult.backends`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaseg.errors import CheckpointError, MetasegError
from studio.limits import env_int

log = logging.getLogger(__name__)


ROLES = ("metasegnet", "baseline")
DEMO_NAMES = {"metasegnet": "metasegnet_demo", "baseline": "baseline_demo"}
ENV_VARS = {"metasegnet": "METASEG_CHECKPOINT_METASEGNET", "baseline": "METASEG_CHECKPOINT_BASELINE"}


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
        return env_int("METASEG_MODEL_CACHE", 4)

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
        ckpt = str(meta.get("checkpoint_hash") or _checkpoint_id(source))
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


def _checkpoint_id(source: str) -> str:
    """The run log's checkpoint id: :func:`metaseg.checkpoints.checkpoint_identity` (the project's one
    fingerprint, as in sweep experiments and map resumes) of a shipped variant or a checkpoint; the
    source itself when it cannot be fingerprinted without loading (it loaded, so that is rare)."""
    from metaseg.checkpoints import checkpoint_identity
    from metaseg.models.registry import VARIANTS

    try:
        ident = checkpoint_identity(source, None) if source in VARIANTS else checkpoint_identity(None, source)
    except (MetasegError, OSError):
        return source
    return ident.short


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
