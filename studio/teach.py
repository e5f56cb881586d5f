"""Teach both models on a session's labels, in the background (no gradio here).

"Teach both models" fine-tunes the session's MetaSegNet *and* its baseline with
:func:`training.finetune.finetune` on the labels the session saved, one after the other, with the
same samples, settings, seed and budget each (the comparison stays fair). The job runs on a worker
thread of a small process-wide :class:`concurrent.futures.ThreadPoolExecutor`: the interactive
inference path (``studio.pair.run_pair`` and its lock) is never held by it, at most
``METASEG_TEACH_CONCURRENCY`` jobs train at once and at most ``METASEG_TEACH_QUEUE`` wait behind
them; each session has at most one job.

The taught pair is two checkpoint folders inside that session's folder, so it belongs to that
session only (``studio.policy`` lets a session load checkpoints under its own folder); it is
picked by setting ``SessionState.model_sources``.

Caps (environment; see the README):

``METASEG_TEACH_MAX_TILES`` (8) labelled tiles per job; ``METASEG_TEACH_MAX_LABELLED_PIXELS``
(4 000 000) labelled pixels per job; ``METASEG_TEACH_MAX_BUDGET_S`` (120) seconds per model per job
(the cap :mod:`training.finetune` applies too); ``METASEG_TEACH_SESSION_BUDGET_S`` (600) teaching
seconds per session, both models and all jobs together; ``METASEG_TEACH_CONCURRENCY`` (1) jobs
training at once; ``METASEG_TEACH_QUEUE`` (4) jobs waiting; ``METASEG_TEACH_PAIRS`` (3) taught
pairs a session keeps on disk.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.errors import MetasegError
from training.finetune.limits import parse_budget

log = logging.getLogger(__name__)

ROLES = ("metasegnet", "baseline")
BASE_NAMES = {"metasegnet": "metasegnet_demo", "baseline": "baseline_demo"}
NAME_RE = re.compile(r"^[\w][\w .-]{0,39}$")


class TeachError(MetasegError):
    """A teaching request that cannot start (one line for the user)."""


# --------------------------------------------------------------------------- caps
def _env_num(name: str, default: float, minimum: float = 0.0) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        log.warning("ignoring %s=%r (not a number)", name, raw)
        return default
    return value if np.isfinite(value) and value >= minimum else default


@dataclass(frozen=True)
class Caps:
    """What one teaching job / one session may use (from the environment, :func:`caps`)."""

    max_tiles: int = 8
    max_labelled_pixels: int = 4_000_000
    max_budget_s: float = 120.0  # per model per job
    session_budget_s: float = 600.0  # per session, both models, all jobs
    concurrency: int = 1
    queue: int = 4
    pairs: int = 3


def caps() -> Caps:
    d = Caps()
    return Caps(
        max_tiles=int(_env_num("METASEG_TEACH_MAX_TILES", d.max_tiles, 1)),
        max_labelled_pixels=int(_env_num("METASEG_TEACH_MAX_LABELLED_PIXELS", d.max_labelled_pixels, 1)),
        max_budget_s=_env_num("METASEG_TEACH_MAX_BUDGET_S", d.max_budget_s, 1),
        session_budget_s=_env_num("METASEG_TEACH_SESSION_BUDGET_S", d.session_budget_s, 1),
        concurrency=int(_env_num("METASEG_TEACH_CONCURRENCY", d.concurrency, 1)),
        queue=int(_env_num("METASEG_TEACH_QUEUE", d.queue, 0)),
        pairs=int(_env_num("METASEG_TEACH_PAIRS", d.pairs, 1)),
    )


# --------------------------------------------------------------------------- samples
def base_of(source: str) -> str:
    """What :func:`training.finetune.finetune` starts from for a model source (``demo:NAME`` → ``NAME``)."""
    return source[5:] if source.startswith("demo:") else source


def check_samples(labels: list[dict[str, Any]], class_set: str, c: Caps,
                  read: Callable[[str, str, tuple[int, int]], np.ndarray] | None = None) -> tuple[list[tuple[str, str]], int]:
    """Validate a session's saved labels for teaching; returns ``(samples, labelled pixels)``.

    Raises:
        TeachError: no label, too many tiles or labelled pixels, a label of another class set,
            a label whose size differs from its tile, a value that is no class, no labelled pixel.
    """
    from metaseg.classes import get_class_set
    from metaseg.geo import inspect_tile

    if not labels:
        raise TeachError("no saved label in this session yet: paint a few strokes per class in the Label tab "
                         "and save them first")
    if len(labels) > c.max_tiles:
        raise TeachError(f"{len(labels)} labelled tiles; one teaching job takes at most {c.max_tiles} "
                         "(METASEG_TEACH_MAX_TILES)")
    cs = get_class_set(class_set)
    samples, total = [], 0
    for lab in labels:
        name = f"label #{lab.get('id')}"
        if lab.get("class_set") != cs.name:
            raise TeachError(f"{name} uses {lab.get('class_set')} classes but the models predict {cs.name}: "
                             f"paint the label again with the {cs.name} brushes")
        tile, path = lab.get("tile"), lab.get("path")
        if not tile or not Path(tile).is_file() or not path or not Path(path).is_file():
            raise TeachError(f"{name}: its tile or label file is gone; save the label again")
        info = inspect_tile(tile)
        shape = (int(info.height), int(info.width))
        index = (read or _read_label)(path, cs.name, shape)
        labelled = int((index < cs.num_classes).sum())
        total += labelled
        samples.append((str(tile), str(path)))
    if total == 0:
        raise TeachError("the saved labels have no labelled pixel: paint at least one stroke of a class")
    if total > c.max_labelled_pixels:
        raise TeachError(f"{total:,} labelled pixels; one teaching job takes at most {c.max_labelled_pixels:,} "
                         "(METASEG_TEACH_MAX_LABELLED_PIXELS): a few strokes per class are enough")
    return samples, total


def _read_label(path: str, class_set: str, shape: tuple[int, int]) -> np.ndarray:
    """A saved label as class indices, checked: its size is the tile's, every value a class of the
    set (official code) or unlabelled (0 / 255)."""
    from metaseg.classes import get_class_set
    from metaseg.geo import read_label

    cs = get_class_set(class_set)
    try:
        index = read_label(path, cs, expected_shape=shape)
    except MetasegError as exc:
        raise TeachError(f"label {Path(path).name}: {' '.join(str(exc).split())}") from None
    if cs.encoding != "rgb":
        raw = _raw_values(path)
        if raw is not None:
            bad = sorted(set(raw) - set(range(cs.num_classes + 1)) - {255})
            if bad:
                raise TeachError(f"label {Path(path).name} holds value {bad[0]}, which is not a class of {cs.name} "
                                 f"(1..{cs.num_classes} = {', '.join(cs.names)}; 0 or 255 = unlabelled)")
    return index


def _raw_values(path: str) -> list[int] | None:
    try:
        if Path(path).suffix.lower() in (".tif", ".tiff"):
            import rasterio

            with rasterio.open(path) as ds:
                return [int(v) for v in np.unique(ds.read(1))]
        from PIL import Image

        with Image.open(path) as im:
            return [int(v) for v in np.unique(np.asarray(im))] if im.mode in ("L", "P") else None
    except Exception:  # noqa: BLE001 - read_label already reported unreadable files
        return None


# --------------------------------------------------------------------------- jobs
@dataclass
class TeachJob:
    """One "Teach both models" run of one session (both models, one after the other)."""

    session_id: str
    samples: list[tuple[str, str]]
    class_set: str
    budget_s: float | None
    steps: int | None
    bases: dict[str, str]  # role -> base given to finetune
    sources: dict[str, str]  # role -> the model source it started from (for "before")
    out_dir: Path
    tiles: list[str]  # tile hashes the job learns from
    labelled_pixels: int
    prompts: dict[str, str] = field(default_factory=dict)  # tile path -> prompt text
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    status: str = "queued"  # queued | running | done | failed | cancelled
    progress: float = 0.0
    message: str = "waiting for a free teaching slot"
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    applied: bool = False  # the session has taken the result

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    @property
    def seconds(self) -> float:
        return float(sum(float(r.get("seconds") or 0.0) for r in self.results.values()))

    def pair(self) -> dict[str, Any]:
        """The taught pair's record (what the session stores in ``state.taught``)."""
        return {
            **{role: str(self.results[role]["checkpoint"]) for role in ROLES},
            "job": self.id, "class_set": self.class_set, "tiles": list(self.tiles),
            "labelled_pixels": self.labelled_pixels, "budget_s": self.budget_s,
            "steps": {r: self.results[r].get("steps") for r in ROLES},
            "seconds": {r: self.results[r].get("seconds") for r in ROLES},
            "base": dict(self.sources), "folder": str(self.out_dir), "kept": False,
        }


class Teacher:
    """The process-wide teaching queue: one job per session, ``concurrency`` at once, ``queue`` waiting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, TeachJob] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        #: the fine-tuning function (tests inject a fast one); default :func:`training.finetune.finetune`
        self.finetune: Callable[..., dict[str, Any]] | None = None

    def job(self, session_id: str) -> TeachJob | None:
        with self._lock:
            return self._jobs.get(session_id)

    def waiting(self) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.status == "queued")

    def submit(self, job: TeachJob, c: Caps | None = None) -> TeachJob:
        c = c or caps()
        with self._lock:
            old = self._jobs.get(job.session_id)
            if old is not None and old.active:
                raise TeachError(f"a teaching job is already {'running' if old.status == 'running' else 'waiting'} "
                                 f"for this session ({100 * old.progress:.0f}%); wait for it to finish")
            running = sum(1 for j in self._jobs.values() if j.status == "running")
            queued = sum(1 for j in self._jobs.values() if j.status == "queued")
            if running + queued >= c.concurrency + c.queue:
                raise TeachError(f"the server is busy teaching other visitors' models ({running} running, {queued} "
                                 "waiting); try again in a few minutes")
            if self._pool is None or self._pool_size != c.concurrency:
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
                self._pool = ThreadPoolExecutor(max_workers=c.concurrency, thread_name_prefix="metaseg-teach")
                self._pool_size = c.concurrency
            self._jobs[job.session_id] = job
            self._pool.submit(self._run, job)
        return job

    def cancel(self, session_id: str) -> None:
        """Stop a session's job (its session ended); a queued job never starts."""
        with self._lock:
            job = self._jobs.pop(session_id, None)
        if job is not None:
            job.cancel.set()

    def forget(self, session_id: str) -> None:
        with self._lock:
            job = self._jobs.get(session_id)
            if job is not None and not job.active:
                del self._jobs[session_id]

    def _run(self, job: TeachJob) -> None:
        if job.cancel.is_set():
            job.status, job.message = "cancelled", "cancelled"
            return
        job.status, job.started = "running", time.monotonic()
        fn = self.finetune
        if fn is None:
            from training.finetune import finetune as fn
        try:
            for k, role in enumerate(ROLES):
                def progress(frac: float, text: str, _k: int = k, _role: str = role) -> None:
                    job.progress = min(0.999, (_k + max(0.0, min(1.0, float(frac)))) / len(ROLES))
                    job.message = f"{'MetaSegNet' if _role == 'metasegnet' else 'baseline'}: {text}"

                progress(0.0, "starting")
                kwargs: dict[str, Any] = dict(out=job.out_dir / role, class_set=job.class_set, budget_s=job.budget_s,
                                              steps=job.steps, device=_device(), seed=0, progress=progress,
                                              cancel=job.cancel)
                if role == "metasegnet" and job.prompts:
                    kwargs["prompt_for"] = lambda p, _m=dict(job.prompts): _m.get(str(p)) or next(iter(_m.values()))
                job.results[role] = dict(fn(job.bases[role], job.samples, **kwargs))
                if job.cancel.is_set():
                    raise TeachError("cancelled")
            job.status, job.progress, job.message = "done", 1.0, "both models taught"
        except Exception as exc:  # noqa: BLE001 - reported to the session as one line
            if job.cancel.is_set():
                job.status, job.message = "cancelled", "cancelled"
            else:
                job.status = "failed"
                job.error = " ".join(str(exc).split()) or type(exc).__name__
                if not isinstance(exc, MetasegError):
                    log.exception("teaching job %s failed", job.id)
                    job.error = f"teaching failed ({type(exc).__name__}); see the server log"
                job.message = job.error
            shutil.rmtree(job.out_dir, ignore_errors=True)
        finally:
            job.finished = time.monotonic()


def _device() -> str:
    """Where teaching runs: where the app's inference runs (``studio.services``), i.e.
    :func:`metaseg.device.pick_device` of ``METASEG_DEVICE`` (unset: CUDA if available, else CPU)."""
    from metaseg.device import pick_device

    return str(pick_device(os.environ.get("METASEG_DEVICE") or None))


TEACHER = Teacher()


# --------------------------------------------------------------------------- the session's side
def start(state: Any, budget_s: Any, *, steps: int | None = None, sources: dict[str, str] | None = None,
          class_set: str, prompts: dict[str, str] | None = None, c: Caps | None = None) -> TeachJob:
    """Check a session's request and queue its job (``state``: a :class:`studio.session.SessionState`).

    Raises:
        TeachError / ConfigError: bad budget, over a cap, no usable label, a job already running.
    """
    from studio.models import MODELS

    c = c or caps()
    existing = TEACHER.job(state.session_id)
    if existing is not None and existing.active:
        raise TeachError(f"a teaching job is already running for this session ({100 * existing.progress:.0f}%); "
                         "wait for it to finish")
    budget = _budget(budget_s, c) if steps is None else None
    spent = float(getattr(state, "teach_seconds", 0.0) or 0.0)
    ask = 2 * (budget or 0.0)
    if spent + ask > c.session_budget_s + 1e-6:
        left = max(0.0, c.session_budget_s - spent)
        raise TeachError(f"teaching both models for {budget:g} s each needs {ask:g} s; this session has {left:.0f} s of "
                         f"its {c.session_budget_s:g} s teaching budget left (METASEG_TEACH_SESSION_BUDGET_S)")
    labels = list(getattr(state, "session_labels", []) or [])
    samples, labelled = check_samples(labels, class_set, c)
    chosen = dict(sources or {})
    srcs = {role: MODELS.source_of(role, chosen.get(role) or None) for role in ROLES}
    job = TeachJob(
        session_id=state.session_id, samples=samples, class_set=class_set, budget_s=budget, steps=steps,
        bases={r: base_of(s) for r, s in srcs.items()}, sources=srcs,
        out_dir=state.workdir / "taught" / uuid.uuid4().hex[:8], tiles=[lab["tile_hash"] for lab in labels],
        labelled_pixels=labelled, prompts=dict(prompts or {}),
    )
    return TEACHER.submit(job, c)


def _budget(value: Any, c: Caps) -> float:
    """The per-model budget asked for: checked by :func:`training.finetune.parse_budget` (the one
    budget check), then against this server's cap ``c.max_budget_s``."""
    budget = parse_budget(value, what="the teaching budget", per=" per model")
    if budget > c.max_budget_s:
        raise TeachError(f"a budget of {budget:g} s per model is over this server's cap of {c.max_budget_s:g} s "
                         "(METASEG_TEACH_MAX_BUDGET_S)")
    return budget


def apply(state: Any, job: TeachJob, c: Caps | None = None) -> str | None:
    """Take a finished job's pair into the session (once): ``state.taught[name]``, the session's
    model sources, the budget spent. Returns the pair's name (``None``: nothing new)."""
    if job.applied or job.status != "done":
        return None
    c = c or caps()
    job.applied = True
    state.teach_seconds = float(getattr(state, "teach_seconds", 0.0) or 0.0) + job.seconds
    n = 1 + sum(1 for k in state.taught if k.startswith("taught "))
    name = f"taught {n}"
    while name in state.taught:
        n += 1
        name = f"taught {n}"
    state.taught[name] = job.pair()
    state.model_sources = {r: state.taught[name][r] for r in ROLES}
    _prune(state, c.pairs, keep=name)
    TEACHER.forget(state.session_id)
    return name


def _prune(state: Any, limit: int, keep: str) -> None:
    """Bound a session's taught pairs on disk: drop the oldest pairs that were not kept."""
    loose = [k for k, v in state.taught.items() if not v.get("kept") and k != keep]
    while len(state.taught) > limit and loose:
        name = loose.pop(0)
        shutil.rmtree(state.taught.pop(name).get("folder", ""), ignore_errors=True)


def keep(state: Any, pair: str, name: str) -> str:
    """Keep a taught pair under a name of the visitor's choice (it is then never pruned)."""
    name = " ".join(str(name or "").split())
    if not NAME_RE.match(name):
        raise TeachError("name the pair with 1-40 letters, digits, spaces, dots, dashes or underscores")
    if pair not in state.taught:
        raise TeachError(f"no taught pair {pair!r} in this session")
    if name != pair and name in state.taught:
        raise TeachError(f"this session already has a pair named {name!r}")
    record = dict(state.taught.pop(pair), kept=True)
    state.taught[name] = record
    return name


def pair_sources(state: Any, name: str) -> dict[str, str]:
    """The model sources of one of the session's taught pairs."""
    if name not in state.taught:
        raise TeachError(f"no taught pair {name!r} in this session")
    return {r: state.taught[name][r] for r in ROLES}


def current_pair(state: Any) -> str | None:
    """The name of the taught pair the session uses now (``None``: not a taught pair)."""
    for name, rec in state.taught.items():
        if all(state.model_sources.get(r) == rec[r] for r in ROLES):
            return name
    return None
