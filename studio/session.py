"""Per-user state of the studio (kept in a ``gr.State``; never shared between users).

Uploaded files are copied into a per-session temporary folder under a fixed name
(``tile<suffix>``), so two users never see each other's tiles and the uploaded file *name* never
becomes part of a path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Suffixes the app accepts for tiles (GeoTIFF / PNG / JPEG) and labels.
TILE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


#: session folders untouched for this long are removed by :func:`sweep_sessions` (seconds)
DEFAULT_SESSION_TTL_S = 6 * 3600
_last_sweep = [0.0]


def session_ttl_s() -> float:
    """``METASEG_SESSION_TTL_S`` (default 6 h): an idle session's state and folder live this long."""
    try:
        value = float(os.environ.get("METASEG_SESSION_TTL_S", "") or DEFAULT_SESSION_TTL_S)
    except ValueError:
        value = DEFAULT_SESSION_TTL_S
    return value if value > 0 else DEFAULT_SESSION_TTL_S


def _last_use(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for p in folder.rglob("*"):
        try:
            newest = max(newest, p.stat().st_mtime)
        except OSError:
            continue
    return newest


def sweep_sessions(force: bool = False) -> int:
    """Remove session folders (browser, API and abandoned ones) nobody has written to for longer
    than :func:`session_ttl_s`; at most once a minute unless ``force``. Returns how many went."""
    now = time.time()
    if not force and now - _last_sweep[0] < 60:
        return 0
    _last_sweep[0] = now
    ttl = session_ttl_s()
    gone = 0
    root = session_root()
    for folder in root.iterdir():
        try:
            if folder.is_dir() and not folder.is_symlink() and now - _last_use(folder) > ttl:
                shutil.rmtree(folder, ignore_errors=True)
                gone += 1
        except OSError:
            continue
    return gone


def session_root() -> Path:
    """Folder that holds every session's folder (``METASEG_SESSION_DIR`` or the system temp dir)."""
    root = Path(os.environ.get("METASEG_SESSION_DIR") or Path(tempfile.gettempdir()) / "metaseg_sessions")
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass
class PairPrediction:
    """Masks of one segmentation run of both models on the current tile."""

    metasegnet: np.ndarray  # H×W uint8 class indices
    baseline: np.ndarray  # H×W uint8 class indices
    class_set: str
    prompt_id: int | None
    prompt_text: str
    checkpoint_ids: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class SessionState:
    """Everything one browser session knows: tile, location, prompt, predictions, labels."""

    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    tile_path: str | None = None
    tile_hash: str | None = None
    tile: Any = None  # metaseg.geo.Tile (rgb, valid, info)
    location: dict[str, Any] | None = None  # the /locate object
    class_set: str = "openearthmap"
    prompt_id: int | None = None
    prediction: PairPrediction | None = None
    ground_truth: np.ndarray | None = None  # H×W uint8 indices
    ground_truth_source: str | None = None  # "upload" | "painted" | "example"
    ground_truth_class_set: str | None = None  # class set of ``ground_truth``'s indices
    example_label_path: str | None = None
    tile_name: str | None = None  # the name the visitor knows the tile by (display only, never a path)
    #: why the last attempt to open a tile failed (the tile in use, if any, stayed); ``None`` after a success
    load_error: str | None = None
    #: set when a tile load replaced the session's tile; consumed by :meth:`take_new_tile`
    new_tile: bool = False
    #: labels saved in this session, newest per tile: dicts ``id, path, tile_hash, tile, class_set,
    #: labelled_pixels`` (what "Teach both models" learns from)
    session_labels: list[dict[str, Any]] = field(default_factory=list)
    #: taught model pairs of this session: name -> {"metasegnet": folder, "baseline": folder, ...}
    taught: dict[str, dict[str, Any]] = field(default_factory=dict)
    label_start: np.ndarray | None = None  # the Label editor's starting mask (editor grid), if any
    label_start_class_set: str | None = None  # the class set the Label editor was started in
    teach_seconds: float = 0.0  # teaching budget spent by this session (both models)
    #: the session's model choice, role -> source (empty = the operator's default); checked by
    #: :func:`studio.policy.model_choice` before it is stored, so it is always loadable
    model_sources: dict[str, str] = field(default_factory=dict)
    #: ids of the labels / experiments this session saved / started (what it may see unless shared)
    label_ids: set[int] = field(default_factory=set)
    experiment_ids: list[int] = field(default_factory=list)

    @property
    def workdir(self) -> Path:
        path = session_root() / self.session_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def import_file(self, src: str | os.PathLike, stem: str = "tile") -> Path:
        """Copy a user file into this session's folder as ``<stem><suffix>`` and return the copy.

        Only the (lower-cased, allow-listed) suffix of the original name survives.
        """
        src = Path(src)
        suffix = src.suffix.lower()
        if suffix not in TILE_SUFFIXES:
            suffix = ".bin"  # the reader reports the unsupported format
        dst = self.workdir / f"{stem}-{uuid.uuid4().hex[:8]}{suffix}"
        shutil.copyfile(src, dst)
        return dst

    def output_path(self, name: str) -> Path:
        """A path for a file the app writes for this session (``name`` is app-chosen, never user text)."""
        return self.workdir / name

    def reset_tile(self) -> None:
        self.tile_path = None
        self.tile_hash = None
        self.tile = None
        self.tile_name = None
        self.prediction = None
        self.ground_truth = None
        self.ground_truth_source = None
        self.ground_truth_class_set = None
        self.example_label_path = None
        self.load_error = None
        self.new_tile = True
        self.label_start = None  # the editor's starting mask belonged to the old tile
        self.label_start_class_set = None

    def take_new_tile(self) -> bool:
        """Whether a tile load replaced the tile since the last call (the results shown are stale)."""
        new, self.new_tile = self.new_tile, False
        return new

    def shown_tile_file(self) -> str | None:
        """A copy of the tile in use named as the visitor knows it, for the tile file box.

        After a failed load the file box must name the tile the session still uses, not the file
        that was refused. The name is reduced to safe characters and the copy lives in a fresh
        folder of this session, so visitor text never steers a path.
        """
        if not self.tile_path or not Path(self.tile_path).is_file():
            return None
        name = Path(self.tile_name or Path(self.tile_path).name).name
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).stem)[:80].strip("._") or "tile"
        suffix = Path(self.tile_path).suffix.lower()
        folder = self.workdir / "shown"
        shutil.rmtree(folder, ignore_errors=True)
        dst = folder / uuid.uuid4().hex[:8] / f"{stem}{suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(self.tile_path, dst)  # no second copy of a large tile where the disk allows
        except OSError:
            shutil.copyfile(self.tile_path, dst)
        return str(dst)

    def cleanup(self) -> None:
        shutil.rmtree(session_root() / self.session_id, ignore_errors=True)
