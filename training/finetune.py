"""``python -m training.finetune``: teach one checkpoint on a few labelled tiles of your own imagery.

Usage (DESIGN.md §7)::

    python -m training.finetune (--model NAME | --checkpoint CKPT)
        (--pair IMAGE LABEL [--pair ...] | --dataset NAME --root DIR --split SPLIT | --store-labels)
        [--class-set NAME] [--budget-s S | --steps N] [--device cpu|cuda] [--seed K] --out DIR [--json]

What it does
------------
* **Labels** are read in the class set's official encoding (``--class-set loveda``: raw LoveDA,
  ``0`` = no-data = unlabelled) or in the project's own label files (the same codes, ``255`` =
  unlabelled, as the studio's Label editor writes them). Every other value is refused (one line,
  exit 2): a label must only hold classes of its set. The class set is ``--class-set``, else the
  one a project label file names (``label_<set>_*`` file name or a ``class_set`` PNG/GeoTIFF tag),
  else the checkpoint's own.
* **A new class set gets a new classifier**: when the labels' class set differs from the
  checkpoint's, the last 1×1 convolution of the head is replaced (initialised from the old one
  through ``training/class_maps/<old>_to_<new>.json`` when that map exists, so e.g. a LoveDA
  ``forest`` starts as the OpenEarthMap ``tree``); encoder, CAF decoder, neck and the FPN layers
  keep their weights.
* **Loss only on labelled pixels** (cross-entropy + Dice, both over labelled pixels only;
  unlabelled and no-data pixels never enter the loss or its gradient). The text encoder stays
  frozen; a text model sees each tile's own zone prompt, resolved like ``metaseg predict``: the
  tile's georeference / EXIF GPS → Köppen zone → the prompt store's current prompt for that zone
  and class set, the store's generic prompt when the tile has no location (``--dataset`` uses the
  dataset reader's prompts, as ``training.evaluate`` does).
* **Budget**: ``--budget-s`` (default 120) is wall-clock for the whole run — loading, feature
  caching, training and writing the folder — with a tqdm bar (ETA) on stderr; ``--steps N`` runs
  exactly N optimiser steps instead. The run stops early when the training loss has stopped
  improving (see the recipe).
* **Output**: ``--out DIR`` is a ``training.export``-style folder: ``model.safetensors``,
  ``config.json`` (checkpoint JSON with a ``teach`` record: base checkpoint and its sha256, class
  set, label files and their hashes, steps, seconds, recipe) and ``README.md`` (model card).
  ``--checkpoint DIR`` loads it in ``predict``, ``map``, ``sweep``, ``evaluate``, ``export`` and
  the app. ``--json`` prints ``checkpoint, base, class_set, steps, seconds, labelled_pixels,
  tiles`` (+ ``stopped``, ``loss``, ``recipe``).

The recipe (chosen by measurement, see docs/RESULTS.md "Teaching")
------------------------------------------------------------------
Measured with ``scripts/teach_bench.py`` on the one real LoveDA tile (scribbles ≈1 % of the pixels,
``metasegnet_demo``, ``--budget-s 120``, this shared 2-core machine under a load of 4-7; mIoU on
the unlabelled pixels, the random-forest anchor scored 20.5):

=====================================================================  =====  ======
recipe                                                                 steps  mIoU
=====================================================================  =====  ======
whole model trained (encoder lr 1e-4), 2 × 256² crops, lr 1e-3            81  19.9
encoder frozen + cached, 2 × 512² windows, lr 1e-3                        69  25.6*
encoder frozen + cached, 4 × 256² windows, lr 1e-3, 1 flip cached        816  24.6
encoder frozen + cached, 4 × 256² windows, lr 1e-3, 4 flips cached       315  28.6
encoder frozen + cached, 4 × 256² windows, lr 3e-3, 4 flips cached       486  30.9
=====================================================================  =====  ======

(* before untaught classes were switched off: a predicted-but-absent class scored 0 IoU and
counted in the mean.) Step counts vary with the machine's load; the ranking held. Hence:

* image encoder (and text encoder) frozen; encoder features cached once per tile for the
  identity and up to three flips (horizontal, vertical, both), as long as caching stays under
  :attr:`Recipe.cache_share` of the budget — flips of the *image*, so the features are exact
  (the flips were worth +4 mIoU even though they cost about a fifth of the budget);
* neck, CAF decoder and FPN head trained with AdamW (lr :attr:`Recipe.lr` = 3e-3, weight decay
  1e-4), linear warm-up for 20 steps, then cosine decay over the budget's time (or the step count);
* each step: 4 windows of 256 px, each centred (32-px aligned) on a random labelled pixel of a
  random tile/flip, so sparse scribbles are always in view and little compute goes to
  unlabelled context;
* class balance: cross-entropy weighted by ``1/sqrt(labelled pixels of the class)`` (normalised)
  plus soft Dice over the labelled pixels;
* classes without a labelled pixel are switched off in the classifier (never predicted);
* early stop once the smoothed loss has not improved by 1 % for 150 steps (after 200 steps).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.errors import CheckpointError, ConfigError, MetasegError, TileReadError

log = logging.getLogger(__name__)

IGNORE = 255
#: Upper bound of ``--budget-s`` (operators lower it with METASEG_TEACH_MAX_BUDGET_S).
DEFAULT_MAX_BUDGET_S = 3600.0
#: Shortest budget that leaves time for at least a few steps after loading the model.
MIN_BUDGET_S = 5.0
MAX_STEPS = 1_000_000
CLASS_MAP_DIR = Path(__file__).resolve().parent / "class_maps"
_LABEL_NAME = re.compile(r"^label_([a-z0-9_]+?)_")


class TeachCancelled(MetasegError):
    """The caller's ``cancel`` event was set: nothing was written."""


@dataclass(frozen=True)
class Recipe:
    """How a teaching run trains (defaults = the measured choice, module docstring)."""

    freeze_encoder: bool = True  #: cache frozen encoder features (False: train everything on crops)
    flips: int = 4  #: image flips cached per tile: 1 (none), 2 (+horizontal), 4 (+vertical, +both)
    cache_share: float = 0.3  #: at most this share of the budget goes to caching flips beyond the first
    window: int = 256  #: training window side (px, multiple of 32)
    batch: int = 4  #: windows per step
    lr: float = 3e-3  #: AdamW learning rate of the trained parts
    encoder_lr: float = 1e-4  #: learning rate of the encoder when it is not frozen
    weight_decay: float = 1e-4
    warmup: int = 20  #: linear warm-up steps
    dice: bool = True  #: add Dice (over labelled pixels) to the cross-entropy
    balance: bool = True  #: class weights 1/sqrt(labelled pixels)
    patience: int = 150  #: early stop: steps without a 1 % improvement of the smoothed loss (0 = off)
    min_steps: int = 200  #: never stop early before this many steps
    class_map_init: bool = True  #: initialise a new classifier through training/class_maps
    only_taught: bool = True  #: classes without a labelled pixel are never predicted (classifier row off)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TeachTile:
    """One labelled tile, decoded and validated."""

    image: Path
    label: Path
    rgb: np.ndarray  # H×W×3 uint8
    target: np.ndarray  # H×W uint8 class indices, 255 = unlabelled
    labelled: int
    zone: str | None = None
    prompt: str | None = None
    gsd_m: float | None = None
    feats: list[list[Any]] = field(default_factory=list)  # per flip: encoder stages (1×C×h×w)


# ----------------------------------------------------------------------------- small helpers
def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def max_budget_s() -> float:
    """The cap on ``budget_s``: ``METASEG_TEACH_MAX_BUDGET_S`` or :data:`DEFAULT_MAX_BUDGET_S`."""
    raw = os.environ.get("METASEG_TEACH_MAX_BUDGET_S", "").strip()
    if not raw:
        return DEFAULT_MAX_BUDGET_S
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"METASEG_TEACH_MAX_BUDGET_S must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value < MIN_BUDGET_S:
        raise ConfigError(f"METASEG_TEACH_MAX_BUDGET_S must be at least {MIN_BUDGET_S:g} s, got {raw!r}")
    return value


def check_limits(budget_s: float | None, steps: int | None, cap_s: float | None = None) -> tuple[float | None, int | None]:
    """Validate the budget / step count (one-line ``ConfigError``)."""
    cap = max_budget_s() if cap_s is None else float(cap_s)
    if budget_s is None and steps is None:
        raise ConfigError("give a time budget (--budget-s S) or a step count (--steps N)")
    if budget_s is not None:
        if isinstance(budget_s, bool):
            raise ConfigError(f"--budget-s must be a number of seconds, got {budget_s!r}")
        try:
            budget_s = float(budget_s)
        except (TypeError, ValueError):
            raise ConfigError(f"--budget-s must be a number of seconds, got {budget_s!r}") from None
        if not math.isfinite(budget_s) or budget_s < MIN_BUDGET_S:
            raise ConfigError(f"--budget-s must be at least {MIN_BUDGET_S:g} s, got {budget_s:g}")
        if budget_s > cap:
            raise ConfigError(f"--budget-s {budget_s:g} is over the cap of {cap:g} s (METASEG_TEACH_MAX_BUDGET_S)")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= int(steps) <= MAX_STEPS:
            raise ConfigError(f"--steps must be a whole number from 1 to {MAX_STEPS}, got {steps!r}")
        steps = int(steps)
    return budget_s, steps


def resolve_base(base: str | Path) -> tuple[str, str, Path, dict[str, Any]]:
    """``(name as given, what to load, weights file, checkpoint JSON)`` of a model name or checkpoint."""
    from metaseg.checkpoints import demo_checkpoint_path, read_checkpoint_meta, resolve_checkpoint
    from metaseg.models.registry import VARIANTS

    text = str(base).strip()
    if not text:
        raise ConfigError("no base model given (--model NAME or --checkpoint CKPT)")
    target = str(demo_checkpoint_path(text)) if text in VARIANTS else text  # no shipped weights: CheckpointError
    weights, meta_path = resolve_checkpoint(target)
    return text, target, weights, read_checkpoint_meta(meta_path)


# ----------------------------------------------------------------------------- labels
def _raw_label(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    """The label raster undecoded, plus its text tags (PNG text chunks / GeoTIFF tags)."""
    if not path.is_file():
        raise TileReadError(f"cannot read label {path.name}: file not found")
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        raise TileReadError(f"cannot read label {path.name}: labels must be lossless (PNG or GeoTIFF), not JPEG")
    try:
        if suffix in (".tif", ".tiff"):
            import warnings

            import rasterio

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                with rasterio.open(path) as ds:
                    tags = {str(k).lower(): str(v) for k, v in ds.tags().items()}
                    data = ds.read()
            arr = data[0] if data.shape[0] == 1 else np.moveaxis(data[:3], 0, -1)
            return arr, tags
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            tags = {str(k).lower(): str(v) for k, v in (getattr(im, "text", None) or {}).items()}
            if im.mode in ("L", "P", "I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im)
            elif im.mode in ("LA", "PA"):
                arr = np.asarray(im)[..., 0]
            else:
                arr = np.asarray(im.convert("RGB"))
        return arr, tags
    except TileReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL/rasterio raise many kinds: one line for the user
        raise TileReadError(f"cannot read label {path.name}: {type(exc).__name__}: {_one_line(exc)[:160]}") from None


def label_class_set(path: str | Path) -> str | None:
    """The class set a project label file names (``class_set`` tag or ``label_<set>_`` file name)."""
    from metaseg.classes import CLASS_SETS

    p = Path(path)
    try:
        _, tags = _raw_label(p)
    except TileReadError:
        tags = {}
    name = (tags.get("class_set") or tags.get("metaseg_class_set") or "").strip().lower()
    if name in CLASS_SETS:
        return name
    m = _LABEL_NAME.match(p.name.lower())
    if m and m.group(1) in CLASS_SETS:
        return m.group(1)
    return None


def decode_label(path: str | Path, class_set: Any, shape: tuple[int, int]) -> np.ndarray:
    """Read and check a label: ``(H, W)`` uint8 class indices, 255 = unlabelled.

    Raises:
        TileReadError: unreadable, size differs from the tile, or a value that is not a class of
            the set (nor its no-data value, nor 255).
    """
    p = Path(path)
    raw, _ = _raw_label(p)
    if tuple(raw.shape[:2]) != tuple(shape[:2]):
        raise TileReadError(f"label {p.name} is {raw.shape[1]}×{raw.shape[0]} pixels but its tile is "
                            f"{shape[1]}×{shape[0]}")
    if class_set.encoding == "rgb" and raw.ndim != 3:
        raise TileReadError(f"label {p.name}: {class_set.name} labels are RGB colour-coded, this one has one band")
    if raw.ndim == 3:  # colour-coded (Potsdam) or a colour rendering of a single-band set
        target = class_set.decode(raw)
        rgb = raw[..., :3].reshape(-1, 3)
        bad = (target.reshape(-1) == IGNORE) & np.any(rgb != 0, axis=1)
        if bool(bad.any()):
            colour = "#{:02X}{:02X}{:02X}".format(*(int(v) for v in rgb[np.argmax(bad)]))
            raise TileReadError(f"label {p.name} holds the colour {colour} ({int(bad.sum())} px), which is not a "
                                f"{class_set.name} class colour (valid: {', '.join(c for _, c in class_set.legend())}; "
                                "black = unlabelled): is it a label, and is --class-set right?")
        return target
    if not np.issubdtype(raw.dtype, np.integer):
        raise TileReadError(f"label {p.name} has non-integer values ({raw.dtype})")
    values = np.unique(raw)
    allowed = set(range(0, class_set.num_classes + 1)) | {IGNORE}
    bad = [int(v) for v in values if int(v) not in allowed]
    if bad:
        raise TileReadError(
            f"label {p.name} holds value {bad[0]}, which is not a class of {class_set.name} (valid: 1..{class_set.num_classes} "
            f"= {', '.join(class_set.names)}; 0 or 255 = unlabelled): is --class-set right?")
    return class_set.decode(raw)


def _tile_prompt(tile: Any, class_set: str, store: Any) -> tuple[str | None, str]:
    """(zone, prompt) exactly as ``metaseg predict`` resolves them for a tile without --prompt."""
    from metaseg.climate import lookup

    zone = None
    if tile.info.location.known:
        zone = lookup(tile.info.location.lat, tile.info.location.lon).code
    from prompts_db.resolve import resolve_prompt

    return zone, str(resolve_prompt(store, class_set, zone=zone).text)


def load_tiles(samples: Sequence[tuple[str | Path, str | Path]], class_set: Any, *, uses_text: bool,
               prompt_for: Callable[[Path], str] | None = None, store: Any = None) -> list[TeachTile]:
    """Read, validate and decode (image, label) pairs; resolve each tile's prompt for a text model."""
    from metaseg.geo import read_tile

    if not samples:
        raise ConfigError("no labelled tiles given (--pair IMAGE LABEL, --dataset or --store-labels)")
    tiles: list[TeachTile] = []
    own_store = None
    try:
        for image, label in samples:
            tile = read_tile(image)
            target = decode_label(label, class_set, tile.rgb.shape[:2])
            if tile.valid is not None:
                target = np.where(tile.valid, target, IGNORE).astype(np.uint8)
            labelled = int((target != IGNORE).sum())
            if labelled == 0:
                raise TileReadError(f"label {Path(label).name} has no labelled pixel (all unlabelled / no-data); "
                                    "paint at least one stroke")
            zone = prompt = None
            if uses_text:
                if prompt_for is not None:
                    prompt = str(prompt_for(Path(image)))
                else:
                    if store is None:
                        from prompts_db.store import PromptStore

                        own_store = store = PromptStore()
                    zone, prompt = _tile_prompt(tile, class_set.name, store)
                if not prompt.strip():
                    raise ConfigError(f"the prompt for {Path(image).name} is empty")
            tiles.append(TeachTile(Path(image), Path(label), np.ascontiguousarray(tile.rgb[..., :3]), target,
                                   labelled, zone, prompt, getattr(tile.info, "gsd_m", None)))
    finally:
        if own_store is not None:
            own_store.close()
    return tiles


# ----------------------------------------------------------------------------- model surgery
def new_classifier(model: Any, old_names: Sequence[str], new_cs: Any, old_set: str, use_map: bool) -> str:
    """Replace the head's classifier for ``new_cs``; returns how it was initialised."""
    import torch
    from torch import nn

    old = model.head.classifier
    new = nn.Conv2d(old.in_channels, new_cs.num_classes, 1)
    how = "random"
    path = CLASS_MAP_DIR / f"{old_set}_to_{new_cs.name}.json"
    if use_map and path.is_file():
        try:
            mapping = json.loads(path.read_text(encoding="utf-8")).get("map") or {}
        except (OSError, json.JSONDecodeError):
            mapping = {}
        with torch.no_grad():
            hits = 0
            for j, name in enumerate(new_cs.names):
                src = [i for i, n in enumerate(old_names) if mapping.get(n) == name]
                if src:
                    new.weight[j] = old.weight[src].mean(0)
                    new.bias[j] = old.bias[src].mean(0)
                    hits += 1
        if hits:
            how = f"class map {path.name} ({hits}/{new_cs.num_classes} classes)"
    model.head.classifier = new.to(old.weight.device)
    model.config = model.config.replace(num_classes=new_cs.num_classes, class_set=new_cs.name)
    return how


#: Classifier bias of a class that was never labelled: its logit stays ~50 below the others.
SILENT_BIAS = -50.0


def silence_untaught(model: Any, taught: Sequence[int]) -> list[int]:
    """Switch off the classifier rows of classes without a labelled pixel; returns those classes.

    A few strokes say nothing about an unpainted class; the base model's idea of it (another
    dataset's, or SynthEarth's) only adds false positives on the user's imagery. Painting the
    class teaches it.
    """
    import torch

    clf = model.head.classifier
    off = [c for c in range(clf.out_channels) if c not in set(taught)]
    with torch.no_grad():
        for c in off:
            clf.weight[c].zero_()
            clf.bias[c] = SILENT_BIAS
    return off


# ----------------------------------------------------------------------------- training
class _Bar:
    """tqdm on stderr (time-based for a budget, step-based otherwise) + the caller's callback."""

    def __init__(self, total: float, unit: str, enabled: bool, progress: Callable[[float, str], None] | None):
        self.total, self.unit, self.progress, self.bar = total, unit, progress, None
        if enabled:
            from tqdm import tqdm

            fmt = "{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]{postfix}" if unit == "s" else None
            self.bar = tqdm(total=total, unit=unit, desc="teach", file=sys.stderr, leave=False, bar_format=fmt)

    def update(self, done: float, message: str) -> None:
        if self.bar is not None:
            self.bar.n = min(done, self.total)
            self.bar.set_postfix_str(message, refresh=False)
            self.bar.refresh()
        if self.progress is not None:
            self.progress(max(0.0, min(1.0, done / self.total)), message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _encode(model: Any, rgb: np.ndarray, flip: int, device: Any) -> list[Any]:
    """Frozen encoder stages of one (flipped) tile, normalised and padded like ``SegModel.forward``."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(_flip(rgb, flip))).to(device).permute(2, 0, 1)[None].float() / 255.0
    x = (x - model.mean) / model.std
    m = model.config.pad_multiple
    h, w = x.shape[-2:]
    x = F.pad(x, (0, (-w) % m, 0, (-h) % m))
    with torch.inference_mode():
        return [f.clone() for f in model.image_encoder(x)]


def _flip(a: np.ndarray, flip: int) -> np.ndarray:
    if flip & 1:
        a = a[:, ::-1]
    if flip & 2:
        a = a[::-1]
    return a


class _Sampler:
    """Windows centred (32-px aligned) on random labelled pixels of random tiles and flips."""

    def __init__(self, tiles: list[TeachTile], window: int, align: int, seed: int):
        self.tiles, self.window, self.align = tiles, window, align
        self.rng = np.random.default_rng(seed)
        self.points = [np.flatnonzero(t.target.reshape(-1) != IGNORE) for t in tiles]
        self.weights = np.array([len(p) for p in self.points], dtype=np.float64) ** 0.5
        self.weights /= self.weights.sum()

    def draw(self, flips: int) -> tuple[int, int, int, int, int, int]:
        """(tile, flip, y0, x0, h, w) in the flipped, padded tile's pixel grid."""
        ti = int(self.rng.choice(len(self.tiles), p=self.weights))
        tile = self.tiles[ti]
        H, W = tile.target.shape  # noqa: N806
        flip = int(self.rng.integers(0, flips))
        idx = int(self.points[ti][self.rng.integers(0, len(self.points[ti]))])
        y, x = divmod(idx, W)
        if flip & 1:
            x = W - 1 - x
        if flip & 2:
            y = H - 1 - y
        a = self.align
        ph, pw = H + (-H) % a, W + (-W) % a
        h, w = min(self.window, ph), min(self.window, pw)
        y0 = int(np.clip((y - h // 2) // a * a, 0, ph - h))
        x0 = int(np.clip((x - w // 2) // a * a, 0, pw - w))
        return ti, flip, y0, x0, h, w


def _target_window(tile: TeachTile, flip: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    t = _flip(tile.target, flip)
    out = np.full((h, w), IGNORE, dtype=np.uint8)
    part = t[y0:y0 + h, x0:x0 + w]
    out[:part.shape[0], :part.shape[1]] = part
    return out


def labelled_loss(logits: Any, target: Any, weights: Any = None, dice: bool = True) -> Any:
    """CE (+ soft Dice) over the labelled pixels only: unlabelled (255) pixels are not even gathered.

    Args:
        logits: B×K×H×W; target: B×H×W class indices, 255 = unlabelled.
        weights: optional K class weights of the cross-entropy.
        dice: add ``1 - mean_k Dice_k`` over the labelled pixels (classes present in the
            batch or predicted there; smoothing 1, as :func:`metaseg.models.losses.dice_loss`).
    """
    import torch.nn.functional as F

    k = logits.shape[1]
    sel = target != IGNORE
    picked = logits.permute(0, 2, 3, 1)[sel].float()  # N×K, only labelled pixels
    y = target[sel].long()
    if picked.shape[0] == 0:
        return logits.sum() * 0.0
    loss = F.cross_entropy(picked, y, weight=weights)
    if dice:
        probs = picked.softmax(dim=1)
        onehot = F.one_hot(y, k).float()
        inter = (probs * onehot).sum(0)
        denom = probs.sum(0) + onehot.sum(0)
        loss = loss + 1.0 - ((2.0 * inter + 1.0) / (denom + 1.0)).mean()
    return loss


def _class_weights(tiles: list[TeachTile], k: int) -> np.ndarray:
    counts = np.zeros(k, dtype=np.float64)
    for t in tiles:
        counts += np.bincount(t.target[t.target != IGNORE].astype(np.int64), minlength=k)[:k]
    w = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1.0)), 0.0)
    present = counts > 0
    return w / w[present].mean()


def finetune(base: str | Path, samples: Sequence[tuple[str | Path, str | Path]], *, out: str | Path,
             class_set: str | None = None, budget_s: float | None = 120.0, steps: int | None = None,
             device: str = "cpu", seed: int = 0, progress: Callable[[float, str], None] | None = None,
             cancel: threading.Event | None = None, prompt_for: Callable[[Path], str] | None = None,
             recipe: Recipe | None = None, show_bar: bool = False, tiles: list[TeachTile] | None = None,
             budget_cap_s: float | None = None) -> dict[str, Any]:
    """Fine-tune ``base`` on labelled tiles and write an export-style folder to ``out``.

    Args:
        base: a variant name with shipped weights (``metasegnet_demo``) or a checkpoint
            (file, stem, exported/taught folder, hub id).
        samples: ``(image path, label path)`` pairs; labels in the class set's official encoding
            or the project's own label files (255 = unlabelled).
        out: folder to write (``model.safetensors``, ``config.json``, ``README.md``).
        class_set: the labels' class set (default: the label files' own tag, else the base's).
        budget_s: wall-clock budget of the whole call (``None`` = no time limit, give ``steps``).
        steps: exact number of optimiser steps (with a budget too: whichever ends first).
        device: ``cpu`` or ``cuda``.
        seed: seeds window sampling, torch and the new classifier.
        progress: ``progress(fraction 0..1, message)`` called while it runs.
        cancel: set it to stop; the call then raises :class:`TeachCancelled` and writes nothing.
        prompt_for: ``prompt_for(image path) -> str`` overrides each tile's zone prompt.
        recipe: training choices (default: :class:`Recipe`, the measured one).
        show_bar: draw the tqdm bar on stderr (the CLI does).
        tiles: already loaded tiles (instead of ``samples``; used by ``--dataset``).
        budget_cap_s: cap on ``budget_s`` (default: :func:`max_budget_s`).

    Returns:
        The CLI's JSON dict: ``checkpoint, base, class_set, steps, seconds, labelled_pixels, tiles``
        plus ``stopped`` (``budget``/``steps``/``plateau``), ``loss``, ``recipe``, ``head``.

    Raises:
        MetasegError: bad input (one-line message), :class:`TeachCancelled` when cancelled.
    """
    t0 = time.monotonic()
    recipe = recipe or Recipe()
    budget_s, steps = check_limits(budget_s, steps, budget_cap_s)
    if recipe.window % 32 or recipe.window < 64:
        raise ConfigError(f"recipe window must be a multiple of 32 and at least 64 px, got {recipe.window}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    dev_name = str(device or "cpu")
    if dev_name.split(":")[0] not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu or cuda, got {device!r}")

    from metaseg.classes import get_class_set

    base_text, base_target, base_weights, base_meta = resolve_base(base)
    base_cs_name = str(base_meta.get("class_set") or base_meta["config"].get("class_set"))
    uses_text = bool(base_meta["config"].get("uses_text"))
    if class_set is None and tiles is None:
        tagged = {label_class_set(lbl) for _, lbl in samples} - {None}
        if len(tagged) > 1:
            raise ConfigError(f"the labels use different class sets ({', '.join(sorted(tagged))}); teach one at a time")
        class_set = tagged.pop() if tagged else base_cs_name
    cs = get_class_set(class_set or base_cs_name)
    if tiles is None:
        tiles = load_tiles(samples, cs, uses_text=uses_text, prompt_for=prompt_for)
    if cancel is not None and cancel.is_set():
        raise TeachCancelled("teaching cancelled")

    import torch

    if dev_name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available")
    dev = torch.device(dev_name)
    torch.manual_seed(seed)
    from metaseg.checkpoints import load_checkpoint

    model, _ = load_checkpoint(base_target, dev)
    t_loaded = time.monotonic()
    head_init = "kept"
    if cs.name != base_cs_name or cs.num_classes != model.config.num_classes:
        head_init = new_classifier(model, get_class_set(base_cs_name).names if base_cs_name in
                                   ("openearthmap", "loveda", "potsdam") else (), cs, base_cs_name,
                                   recipe.class_map_init)
    model.to(dev)
    taught_ids = sorted({int(v) for t in tiles for v in np.unique(t.target) if v != IGNORE})
    if recipe.only_taught:
        silence_untaught(model, taught_ids)

    def left() -> float:
        return math.inf if budget_s is None else budget_s - (time.monotonic() - t0)

    total = float(budget_s) if steps is None else float(steps)
    bar = _Bar(total, "s" if steps is None else "step", show_bar, progress)
    try:
        result = _train(model, tiles, cs, recipe, dev, seed, steps, budget_s, t0, left, bar, cancel)
    finally:
        bar.close()
    n_steps, stopped, last_loss, flips_used, t_cached = result
    if recipe.only_taught:
        silence_untaught(model, taught_ids)
    timing = {"load_s": round(t_loaded - t0, 2), "cache_s": round(t_cached - t_loaded, 2),
              "train_s": round(time.monotonic() - t_cached, 2)}
    seconds = time.monotonic() - t0
    meta_extra = _teach_meta(base_text, base_weights, base_meta, cs, tiles, n_steps, seconds, stopped,
                             last_loss, recipe, head_init, flips_used, seed, dev_name)
    silenced = [cs.names[c] for c in range(cs.num_classes) if recipe.only_taught and c not in taught_ids]
    meta_extra["teach"]["silenced_classes"] = silenced
    _write_folder(model, out, meta_extra)
    seconds = round(time.monotonic() - t0, 2)
    meta_extra["teach"]["seconds"] = seconds
    (out / "config.json").write_text(json.dumps({**json.loads((out / "config.json").read_text(encoding="utf-8")),
                                                 "teach": meta_extra["teach"]}, indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    (out / "README.md").write_text(model_card(json.loads((out / "config.json").read_text(encoding="utf-8"))),
                                   encoding="utf-8")
    if progress is not None:
        progress(1.0, f"done: {n_steps} steps in {seconds:.0f} s")
    return {
        "checkpoint": str(out),
        "base": base_text,
        "class_set": cs.name,
        "steps": n_steps,
        "seconds": seconds,
        "labelled_pixels": int(sum(t.labelled for t in tiles)),
        "tiles": len(tiles),
        "stopped": stopped,
        "loss": None if last_loss is None else round(float(last_loss), 4),
        "head": head_init,
        "flips_cached": flips_used,
        "silenced_classes": silenced,
        "timing": timing,
        "recipe": recipe.to_dict(),
    }


def _train(model, tiles, cs, recipe: Recipe, dev, seed, steps, budget_s, t0, left, bar, cancel):
    import torch
    import torch.nn.functional as F

    save_reserve = 1.5  # writing + verifying the folder
    for p in model.parameters():
        p.requires_grad_(False)
    trained = [model.neck, model.head] + ([model.decoder] if model.decoder is not None else [])
    for mod in trained:
        for p in mod.parameters():
            p.requires_grad_(True)
    groups = [{"params": [p for m in trained for p in m.parameters()], "lr": recipe.lr}]
    if not recipe.freeze_encoder:
        enc = [p for p in model.image_encoder.parameters()]
        for p in enc:
            p.requires_grad_(True)
        groups.append({"params": enc, "lr": recipe.encoder_lr})
    for g in groups:
        g["base_lr"] = g["lr"]
    opt = torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)
    weights = torch.tensor(_class_weights(tiles, cs.num_classes), dtype=torch.float32, device=dev) if recipe.balance else None
    texts = None
    if model.uses_text:
        texts = {}
        for t in tiles:
            if t.prompt not in texts:
                with torch.no_grad():
                    texts[t.prompt] = model.encode_text([t.prompt]).to(dev)
    sampler = _Sampler(tiles, recipe.window, model.config.pad_multiple, seed)

    # Cache the frozen encoder's features: identity first, then flips while within the share.
    flips = 1
    if recipe.freeze_encoder:
        model.image_encoder.eval()
        for t in tiles:
            t.feats = [_encode(model, t.rgb, 0, dev)]
        spent = time.monotonic() - t0
        per_flip = max(1e-3, spent)  # an upper bound: loading is included
        share = math.inf if budget_s is None else recipe.cache_share * budget_s
        for f in range(1, max(1, min(4, recipe.flips))):
            if cancel is not None and cancel.is_set():
                raise TeachCancelled("teaching cancelled")
            t1 = time.monotonic()
            if budget_s is not None and (time.monotonic() - t0) + per_flip > share:
                break
            for t in tiles:
                t.feats.append(_encode(model, t.rgb, f, dev))
            per_flip = time.monotonic() - t1
            flips += 1
            bar.update(time.monotonic() - t0 if steps is None else 0, f"cached {flips} flip(s)")
    else:
        flips = max(1, min(4, recipe.flips))

    t_cached = time.monotonic()
    model.train()
    model.image_encoder.eval()  # BatchNorm statistics stay those of the base model
    ema = best = None
    since_best = 0
    n = 0
    step_time = 0.0
    stopped = "steps"
    t_train = time.monotonic()
    while True:
        if steps is not None and n >= steps:
            stopped = "steps"
            break
        if budget_s is not None and left() < save_reserve + max(step_time, 0.05) and n > 0:
            stopped = "budget"
            break
        if cancel is not None and cancel.is_set():
            raise TeachCancelled("teaching cancelled")
        ts = time.monotonic()
        frac = (n / steps) if steps is not None else 0.0
        if budget_s is not None:
            frac = max(frac, (ts - t_train) / max(1e-6, budget_s - (t_train - t0) - save_reserve))
        scale = min(1.0, (n + 1) / max(1, recipe.warmup)) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * max(scale, 0.02)
        draws = [sampler.draw(flips) for _ in range(recipe.batch)]
        # windows of one batch share a size only when they come from tiles at least a window big
        sizes = {(d[4], d[5]) for d in draws}
        if len(sizes) > 1:
            draws = [draws[0]]
        tgt = torch.from_numpy(np.stack([_target_window(tiles[d[0]], *d[1:]) for d in draws])).to(dev)
        if recipe.freeze_encoder:
            stages = []
            for s_i in range(len(tiles[draws[0][0]].feats[0])):
                parts = []
                for ti, fl, y0, x0, h, w in draws:
                    f = tiles[ti].feats[fl][s_i]
                    rows = tiles[ti].target.shape[0]
                    stride = max(1, (rows + (-rows) % model.config.pad_multiple) // f.shape[-2])
                    parts.append(f[:, :, y0 // stride:(y0 + h) // stride, x0 // stride:(x0 + w) // stride])
                stages.append(torch.cat(parts))
            top = model.neck(stages[-1])
            if model.uses_text:
                feats_t = _batch_text(texts, [tiles[d[0]].prompt for d in draws])
                top, _, _, _ = model.decoder(top, feats_t, None, with_itm=False)
            logits = model.head(stages[:-1] + [top])
            logits = F.interpolate(logits, size=tgt.shape[-2:], mode="bilinear", align_corners=False)
        else:
            imgs = []
            for ti, fl, y0, x0, h, w in draws:
                rgb = _flip(tiles[ti].rgb, fl)
                crop = np.zeros((h, w, 3), dtype=np.uint8)
                part = rgb[y0:y0 + h, x0:x0 + w]
                crop[:part.shape[0], :part.shape[1]] = part
                imgs.append(crop)
            x = torch.from_numpy(np.stack(imgs)).to(dev).permute(0, 3, 1, 2).float() / 255.0
            text = _batch_text(texts, [tiles[d[0]].prompt for d in draws]) if model.uses_text else None
            logits = model(x, text).logits
        loss = labelled_loss(logits, tgt, weights, recipe.dice)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += 1
        value = float(loss.detach())
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        if best is None or ema < best * 0.99:
            best, since_best = ema, 0
        else:
            since_best += 1
        dt = time.monotonic() - ts
        step_time = dt if n == 1 else 0.8 * step_time + 0.2 * dt
        done = (time.monotonic() - t0) if steps is None else n
        bar.update(done, f"step {n} loss {ema:.3f}")
        if recipe.patience and n >= recipe.min_steps and since_best >= recipe.patience:
            stopped = "plateau"
            break
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return n, stopped, ema, flips, t_cached


def _batch_text(texts: dict[str, Any], prompts: list[str]) -> Any:
    import torch

    from metaseg.models.text_encoder import TextFeatures

    feats = [texts[p] for p in prompts]
    if len(feats) == 1:
        return feats[0]
    return TextFeatures(torch.cat([f.tokens for f in feats]), torch.cat([f.mask for f in feats]),
                        torch.cat([f.ids for f in feats]))


# ----------------------------------------------------------------------------- output folder
def _teach_meta(base_text, base_weights, base_meta, cs, tiles, n_steps, seconds, stopped, loss, recipe,
                head_init, flips, seed, device) -> dict[str, Any]:
    prompts: dict[str, str] = {}
    for t in tiles:
        if t.prompt is not None:
            prompts.setdefault(t.zone or "generic", t.prompt)
    gsds = [t.gsd_m for t in tiles if isinstance(t.gsd_m, (int, float)) and t.gsd_m > 0]
    extra: dict[str, Any] = {
        "dataset": "taught",
        "model_variant": base_meta["config"].get("name"),
        "prompt_mode": "climate" if base_meta["config"].get("uses_text") else None,
        "train_prompts": prompts or None,
        "step": n_steps,
        "train_seconds": round(seconds, 2),
        "teach": {
            "base": base_text,
            "base_weights": base_weights.name,
            "base_sha256": sha256_file(base_weights),
            "base_class_set": base_meta.get("class_set"),
            "base_dataset": base_meta.get("dataset"),
            "class_set": cs.name,
            "head": head_init,
            "steps": n_steps,
            "seconds": round(seconds, 2),
            "stopped": stopped,
            "final_loss": None if loss is None else round(float(loss), 4),
            "flips_cached": flips,
            "seed": seed,
            "device": device,
            "recipe": recipe.to_dict(),
            "labelled_pixels": int(sum(t.labelled for t in tiles)),
            "tiles": [{"image": str(t.image), "label": str(t.label), "image_sha256": sha256_file(t.image),
                       "label_sha256": sha256_file(t.label), "width": int(t.target.shape[1]),
                       "height": int(t.target.shape[0]), "labelled_pixels": t.labelled, "zone": t.zone,
                       "label_ids": sorted(int(v) for v in np.unique(t.target) if v != IGNORE)} for t in tiles],
        },
    }
    if gsds:
        extra["gsd_range_m"] = [min(gsds), max(gsds)]
    return extra


def _write_folder(model: Any, out: Path, extra: dict[str, Any]) -> None:
    """model.safetensors + config.json (+ README.md after the seconds are final), verified by loading."""
    from metaseg.checkpoints import EXPORT_CONFIG, load_checkpoint, save_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    tmp_stem = out / ".teach_tmp"
    save_checkpoint(model, tmp_stem, extra=extra)
    os.replace(tmp_stem.with_suffix(".safetensors"), out / "model.safetensors")
    os.replace(tmp_stem.with_suffix(".json"), out / EXPORT_CONFIG)
    try:
        load_checkpoint(out)
    except CheckpointError as exc:  # a bug, not a user error: say so in one line
        raise CheckpointError(f"the taught checkpoint in {out} does not load back: {exc}") from None


def model_card(meta: dict[str, Any]) -> str:
    """README.md of a taught folder: what it was taught on, from what, how long."""
    cfg = meta.get("config", {})
    teach = meta.get("teach") or {}
    cs_name = meta.get("class_set")
    kind = "MetaSegNet" if cfg.get("uses_text") else "vision-only baseline"
    lines = ["---", "library_name: metaseg", "pipeline_tag: image-segmentation", "tags:",
             "- semantic-segmentation", "- remote-sensing", "- metasegnet", "- taught",
             "- vision-language" if cfg.get("uses_text") else "- vision-only", "---", ""]
    lines += [f"# {cfg.get('name')} taught on {teach.get('tiles') and len(teach['tiles'])} tile(s)", "",
              f"{kind} fine-tuned with `python -m training.finetune` on the labelled tiles below, starting from "
              f"`{teach.get('base')}`.", "", "| | |", "|---|---|",
              f"| base checkpoint | `{teach.get('base')}` ({teach.get('base_weights')}, sha256 `{teach.get('base_sha256')}`) |",
              f"| base class set / data | {teach.get('base_class_set')} / {teach.get('base_dataset')} |",
              f"| class set | {cs_name} ({meta.get('num_classes')} classes); classifier: {teach.get('head')} |",
              f"| never predicted (no labelled pixel) | {', '.join(teach.get('silenced_classes') or []) or '–'} |",
              f"| steps | {teach.get('steps')} (stopped: {teach.get('stopped')}, final loss {teach.get('final_loss')}) |",
              f"| seconds | {teach.get('seconds')} on {teach.get('device')} |",
              f"| labelled pixels | {teach.get('labelled_pixels')} |",
              f"| seed | {teach.get('seed')} |", "",
              "## Labelled tiles", "", "| image | label | labelled px | label ids | zone |", "|---|---|---|---|---|"]
    for t in teach.get("tiles") or []:
        lines.append(f"| `{Path(t['image']).name}` ({t['width']}×{t['height']}, sha256 {t['image_sha256'][:12]}…) | "
                     f"`{Path(t['label']).name}` (sha256 {t['label_sha256'][:12]}…) | {t['labelled_pixels']} | "
                     f"{', '.join(str(i) for i in t['label_ids'])} | {t.get('zone') or '–'} |")
    lines += ["", "Label ids are class indices of the class set (0-based, in its order: "
              + ", ".join(f"{i} {n}" for i, n in enumerate(_names(cs_name))) + ").", ""]
    if meta.get("train_prompts"):
        lines += ["## Prompts seen while teaching", ""]
        lines += [f"- **{z}**: {p}" for z, p in meta["train_prompts"].items()] + [""]
    lines += ["## Recipe", "", "```json", json.dumps(teach.get("recipe"), indent=2), "```", "",
              "## Use", "", "```bash",
              f"python -m metaseg predict tile.tif --model {cfg.get('name')} --checkpoint DIR --out mask.tif", "```", "",
              "## Limits", "",
              "- Taught on the few tiles above only: expect it to work on imagery like them (same sensor, "
              "resolution, region, season), not elsewhere.",
              "- No held-out score is recorded here; measure one with `training.evaluate --checkpoint DIR` or the "
              "studio's Review tab on a labelled tile that was not used for teaching."]
    if cfg.get("uses_text"):
        lines.append(f"- Text encoder `{cfg.get('text_encoder')}` is frozen and not inside model.safetensors.")
    return "\n".join(lines) + "\n"


def _names(cs_name: Any) -> tuple[str, ...]:
    from metaseg.classes import CLASS_SETS

    cs = CLASS_SETS.get(str(cs_name))
    return cs.names if cs is not None else ()


# ----------------------------------------------------------------------------- sample sources
def dataset_tiles(name: str, root: str | Path, split: str, class_set: str | None) -> tuple[list[TeachTile], str]:
    """Tiles of a dataset split in its official layout, with the reader's own prompts."""
    from training.datasets import build_dataset

    if not Path(root).is_dir():
        raise ConfigError(f"dataset root {root} is not a folder")
    ds = build_dataset(name, root, split)
    if len(ds) == 0:
        raise ConfigError(f"split {split!r} of {root} has no tiles")
    if not getattr(ds, "has_labels", True):
        raise ConfigError(f"split {split!r} of {root} has no labels to teach with")
    cs = ds.class_set
    if class_set is not None and class_set != cs.name:
        raise ConfigError(f"--dataset {name} uses the {cs.name} class set, not --class-set {class_set}")
    tiles = []
    for i in range(len(ds)):
        item = ds[i]
        sample = ds.samples[i]
        rgb = (item["image"].permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
        target = item["label"].numpy().astype(np.uint8)
        labelled = int((target != IGNORE).sum())
        if labelled == 0:
            continue
        tiles.append(TeachTile(Path(sample.image), Path(sample.label), rgb, target, labelled, item.get("zone"),
                               item.get("prompt")))
    if not tiles:
        raise ConfigError(f"no tile of {name}/{split} has a labelled pixel")
    return tiles, cs.name


def store_label_pairs(search: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """(tile, label) pairs from the labels saved in the prompt store (newest label per tile).

    The store records each label's file and its tile's sha256; the tile itself is found by hash
    among the image files in ``search`` folders (default: the label files' own folders).
    """
    from prompts_db.store import PromptStore

    with PromptStore() as store:
        rows = store.labels()
    newest: dict[str, Path] = {}
    for row in rows:  # newest first
        p = Path(row["mask_path"])
        if row["tile_hash"] not in newest and p.is_file():
            newest[row["tile_hash"]] = p
    if not newest:
        raise ConfigError("the prompt store holds no saved label whose file still exists (save labels in the "
                          "studio's Label tab first)")
    folders = [Path(s) for s in search] or sorted({p.parent for p in newest.values()})
    found: dict[str, Path] = {}
    labels = {p.resolve() for p in newest.values()}
    for folder in folders:
        for f in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if f.suffix.lower() in (".tif", ".tiff", ".png", ".jpg", ".jpeg") and f.resolve() not in labels:
                try:
                    h = sha256_file(f)
                except OSError:
                    continue
                if h in newest and h not in found:
                    found[h] = f
    pairs = [(found[h], lbl) for h, lbl in newest.items() if h in found]
    if not pairs:
        raise ConfigError(f"found none of the {len(newest)} labelled tiles by hash in {', '.join(map(str, folders))}; "
                          "pass --root DIR with the tiles")
    return pairs


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.finetune",
                                description="Fine-tune a checkpoint on labelled tiles of your own imagery "
                                            "(loss on labelled pixels only) and write a checkpoint folder.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="NAME", help="variant with shipped weights (e.g. metasegnet_demo)")
    src.add_argument("--checkpoint", metavar="CKPT", help="checkpoint file/stem/folder or hub id to start from")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--pair", nargs=2, action="append", metavar=("IMAGE", "LABEL"),
                      help="a tile and its label (repeatable)")
    data.add_argument("--dataset", metavar="NAME", help="a dataset in its official layout (with --root, --split)")
    data.add_argument("--store-labels", action="store_true",
                      help="the labels saved in the prompt store (tiles found by hash in --root or beside the labels)")
    p.add_argument("--root", metavar="DIR", help="dataset root (--dataset) or where the tiles are (--store-labels)")
    p.add_argument("--split", metavar="SPLIT", help="dataset split (--dataset)")
    p.add_argument("--class-set", metavar="NAME", help="class set of the labels (default: the labels' tag, else the model's)")
    lim = p.add_mutually_exclusive_group()
    lim.add_argument("--budget-s", type=float, metavar="S", help="wall-clock budget in seconds (default 120)")
    lim.add_argument("--steps", type=int, metavar="N", help="exactly N optimiser steps instead of a budget")
    p.add_argument("--device", default="cpu", metavar="cpu|cuda", help="compute device (default cpu)")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (default 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (model.safetensors, config.json, README.md)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from metaseg.classes import get_class_set

    class_set = args.class_set.strip().lower() if args.class_set else None
    if class_set is not None:
        get_class_set(class_set)  # UnknownNameError lists the valid sets
    budget = args.budget_s if args.budget_s is not None else (None if args.steps is not None else 120.0)
    check_limits(budget, args.steps)
    base = args.model or args.checkpoint
    tiles = None
    samples: list[tuple[str, str]] = []
    if args.dataset:
        if not args.root or not args.split:
            raise ConfigError("--dataset needs --root DIR and --split SPLIT")
        tiles, class_set = dataset_tiles(args.dataset, args.root, args.split, class_set)
    elif args.store_labels:
        samples = [(str(a), str(b)) for a, b in store_label_pairs([args.root] if args.root else [])]
    else:
        if args.root or args.split:
            raise ConfigError("--root/--split go with --dataset (or --root with --store-labels)")
        samples = [(a, b) for a, b in args.pair]
    return finetune(base, samples, out=args.out, class_set=class_set, budget_s=budget, steps=args.steps,
                    device=args.device, seed=args.seed, tiles=tiles, show_bar=not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from metaseg.cli import run_cli

    def command() -> int:
        result = run(args)
        if args.json:
            print(json.dumps(result, ensure_ascii=False))
        else:
            print(f"taught {result['base']} on {result['tiles']} tile(s), {result['labelled_pixels']} labelled px "
                  f"({result['class_set']}): {result['steps']} steps in {result['seconds']:.1f} s "
                  f"(stopped: {result['stopped']}) -> {result['checkpoint']}")
        return 0

    return run_cli(command, interrupted=lambda _exc: " (nothing written)")


if __name__ == "__main__":
    sys.exit(main())
