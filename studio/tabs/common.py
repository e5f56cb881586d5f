"""What every tab module shares: the build context, error plumbing and small UI helpers.

The tab modules (``studio.tabs.locate``, ``describe``, ``segment``, ``review``, ``label``,
``models``, ``api``) are the only part of ``studio`` that imports gradio. Each has

- ``build(ctx)``: lays out its components (inside the ``gr.Tabs`` for a tab) and registers the
  ones other tabs need on ``ctx`` (:meth:`Studio.add`);
- ``wire(ctx)``: connects its events once every module has been built, so a tab may use any
  registered component of another tab as an input or output.

``app.py`` only creates the :class:`Studio`, calls ``build`` then ``wire`` of each module.
"""

from __future__ import annotations

import contextlib
import functools
import html
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from metaseg.errors import MetasegError
from studio.session import SessionState

log = logging.getLogger("metaseg.app")

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "static"
EXAMPLES = STATIC / "examples"
CLASS_SET_CHOICES = ["openearthmap", "loveda", "potsdam"]
TILE_TYPES = [".tif", ".tiff", ".png", ".jpg", ".jpeg"]
#: keyword arguments of every UI event: only the named endpoints of ``studio.tabs.api`` are public API
UI = {"api_visibility": "undocumented"}
#: events that run the models on a visitor's tile (Segment, ``/segment``): at most 4 at once in
#: Gradio's workers, in two inference lanes (``studio.pair.inference_lane``: a small tile never
#: waits behind a large one); every other event runs at most 2 at a time (``app.queue_kwargs``)
INFERENCE = {"concurrency_id": "inference", "concurrency_limit": 4}
#: experiments and their galleries (whole evaluation sets): one at a time on the server
EXPERIMENT = {"concurrency_id": "experiment", "concurrency_limit": 1}


@dataclass
class Studio:
    """The build context handed to every tab module.

    Attributes:
        demo: the ``gr.Blocks`` being built (for ``demo.load`` events).
        state: the per-session ``gr.State`` holding a :class:`SessionState`.
        tabs: the ``gr.Tabs``; a handler selects a tab by returning ``gr.Tabs(selected=TAB_ID)``.
        parts: components registered by the modules (read as attributes: ``ctx.prompt``).

    Cross-tab moments are named signals: a module that causes one calls ``ctx.emit(name, event)``
    with its event dependency; a module that reacts calls ``ctx.on(name, fn, inputs, outputs)``.
    :meth:`finish` (called by ``app.py`` after every ``wire``) chains each reaction with
    ``.success`` onto each emitter, so the order in which modules are wired does not matter.
    Signals: ``"tile_loaded"`` (a new tile is the session's tile: upload, example, fetched
    imagery, a tile opened by another tab) and ``"segmented"`` (both models ran).

    An emitter of ``"tile_loaded"`` may succeed without replacing the tile (the file box was
    cleared, or set back to the tile in use after a failed load): its reactions run only when
    :meth:`SessionState.take_new_tile` says the tile changed (:func:`new_tile_gate`), so the
    results of the tile in use are never cleared by a load that did not happen.
    """

    demo: gr.Blocks
    state: gr.State
    tabs: gr.Tabs | None = None
    parts: dict[str, Any] = field(default_factory=dict)
    _emitters: dict[str, list[Any]] = field(default_factory=dict)
    _reactions: dict[str, list[tuple[Any, Any, Any]]] = field(default_factory=dict)

    def emit(self, signal: str, event: Any) -> Any:
        """Declare that ``event`` (a Gradio event dependency) raises ``signal`` when it succeeds."""
        self._emitters.setdefault(signal, []).append(event)
        return event

    def on(self, signal: str, fn: Any, inputs: Any, outputs: Any) -> None:
        """Run ``fn(*inputs) -> outputs`` after every successful emitter of ``signal``."""
        self._reactions.setdefault(signal, []).append((fn, inputs, outputs))

    def finish(self) -> None:
        for signal, events in self._emitters.items():
            for event in events:
                if signal == "tile_loaded":
                    event = event.success(new_tile_gate, [self.state], None, show_progress="hidden", **UI)
                for fn, inputs, outputs in self._reactions.get(signal, []):
                    event.success(fn, inputs, outputs, **UI)

    def add(self, **components: Any) -> None:
        """Register components under names other modules may use (``ctx.prompt``)."""
        for name, comp in components.items():
            if name in self.parts:
                raise ValueError(f"component name {name!r} registered twice")
            self.parts[name] = comp

    def __getattr__(self, name: str) -> Any:
        parts = self.__dict__.get("parts", {})
        if name in parts:
            return parts[name]
        raise AttributeError(f"no component {name!r} registered on the Studio context")


# --------------------------------------------------------------------------- plumbing
def new_tile_gate(state: SessionState | None) -> None:
    """Let the ``tile_loaded`` reactions run only when the tile really changed (silent stop else)."""
    if not (isinstance(state, SessionState) and state.take_new_tile()):
        raise gr.Error("no new tile", visible=False, print_exception=False)


#: an absolute server path (not the path part of a URL, not ``m/px`` or ``3/4``)
_ABS_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s'\"<>|/]+/)+([^\s'\"<>|/]*)")
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>:,;.)]")


def clean_message(text: Any) -> str:
    """A message fit for a visitor's pop-up: one line, no server paths (a path keeps only its last
    part) or addresses (an LLM or tile server URL), HTML-escaped (Gradio renders ``gr.Error`` text as
    HTML, and one visitor's typed text may reach another's pop-up)."""
    msg = " ".join(str(text or "").split())
    msg = _URL.sub("(server address)", msg)
    msg = _ABS_PATH.sub(lambda m: m.group(1) or "(server folder)", msg)
    return html.escape(msg, quote=False)


def user_error(message: Any) -> gr.Error:
    """A ``gr.Error`` with a cleaned message and no traceback in the log (an expected user error)."""
    return gr.Error(clean_message(message) or "Error", print_exception=False)


def user_errors(fn):
    """Turn library user errors (and other failures) into a one-line, escaped ``gr.Error``.

    Expected errors (``gr.Error``, :class:`MetasegError`, missing/forbidden files) are logged as one
    line; only unexpected ones leave a traceback, and only in the server log.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as exc:
            log.info("%s: %s", fn.__name__, " ".join(str(exc.message).split())[:300])
            raise gr.Error(clean_message(exc.message) or "Error", duration=exc.duration, visible=exc.visible,
                           title=exc.title, print_exception=False) from None
        except (MetasegError, FileNotFoundError, PermissionError) as exc:
            log.info("%s: %s: %s", fn.__name__, type(exc).__name__, " ".join(str(exc).split())[:300])
            raise user_error(str(exc) or type(exc).__name__) from None
        except Exception as exc:  # noqa: BLE001 - never show a traceback to a user
            log.exception("unexpected error in %s", fn.__name__)
            raise user_error(f"Something went wrong ({type(exc).__name__}); see the server log.") from None

    return wrapper


def session(state: SessionState | None) -> SessionState:
    """The session of a handler call (a fresh one when Gradio passes ``None``; a fresh session also
    lets the janitor remove session folders nobody has used for a long time)."""
    if isinstance(state, SessionState):
        return state
    from studio.session import sweep_sessions

    sweep_sessions()
    return SessionState()


#: result pictures older than this (seconds) are removed from a session's results folder: Gradio
#: has long copied them into its own cache by then
RESULT_KEEP_S = 120


def image_file(image: Any, folder: Path, stem: str = "image") -> str:
    """Write a result picture (H×W×3 uint8) to a *new* PNG file and return its path.

    Returning a file instead of an array matters under concurrency: Gradio caches an array under
    the hash of its bytes and rewrites that file in place, so two visitors getting the same
    picture at once could download a truncated copy; a uniquely named file is copied into the
    cache under a temporary name and renamed, never rewritten.
    """
    import os
    import time
    import uuid

    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in folder.glob("*.png"):
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > RESULT_KEEP_S:
                old.unlink()
    path = folder / f"{stem}-{uuid.uuid4().hex[:12]}.png"
    tmp = folder / f".{path.name}.partial"
    try:
        Image.fromarray(np.ascontiguousarray(np.asarray(image, dtype=np.uint8))).save(tmp, format="PNG",
                                                                                      compress_level=3)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return str(path)


@contextlib.contextmanager
def as_uploaded(copy: Path, src: str):
    """Errors about the session copy ``tile-<hex>.tif`` name the file the user actually picked."""
    try:
        yield
    except MetasegError as exc:
        msg = str(exc).replace(str(copy), Path(src).name).replace(copy.name, Path(src).name)
        raise type(exc)(msg) from None


def path_of(file: Any) -> str | None:
    """A local path from a gr.File value (str, dict or FileData-like)."""
    if file is None:
        return None
    if isinstance(file, (str, Path)):
        return str(file)
    if isinstance(file, dict):
        return file.get("path") or file.get("name")
    return getattr(file, "path", None) or getattr(file, "name", None)


def class_set_of(name: str | None):
    from metaseg.classes import get_class_set

    return get_class_set(name or "openearthmap")


def legend_html(class_set: str) -> str:
    from studio import views

    cs = class_set_of(class_set)
    return views.legend_items_html(list(zip(cs.names, cs.colors, strict=True)))


# --------------------------------------------------------------------------- shared by several tabs
def gt_text(state: SessionState) -> str:
    """The ground-truth status line under the Locate panel."""
    if state.tile is None:
        return "No tile loaded."
    if state.ground_truth is None:
        return "No ground truth yet: upload a label or paint one in the Label tab."
    cs = f", {state.ground_truth_class_set}" if state.ground_truth_class_set else ""
    return f"Ground truth loaded ({state.ground_truth_source}{cs})."


def drop_upload(path: str | Path) -> None:
    """Remove a file from Gradio's upload folder (a failed upload: nobody can use it); files
    anywhere else (the examples, a dataset) are never touched."""
    try:
        from gradio.utils import get_upload_folder

        p = Path(path).resolve()
        if p.is_file() and p.is_relative_to(Path(get_upload_folder()).resolve()):
            p.unlink(missing_ok=True)
            if p.parent != Path(get_upload_folder()).resolve() and not any(p.parent.iterdir()):
                p.parent.rmdir()
    except OSError:
        pass
