"""Class sets of the three benchmark datasets: names, official colours and label encodings.

Torch-free. Every model predicts *indices* ``0 .. num_classes-1``; ``255`` marks pixels that
are ignored by losses and metrics. Each dataset stores its ground truth differently, so each
:class:`ClassSet` knows how to ``decode`` the official label encoding into indices and how to
``encode`` indices back into that encoding (for saving labels the dataset tools understand).

Official encodings (DESIGN.md §4):

* **openearthmap** — single-band rasters, raw ``0`` = background/unknown (ignored),
  raw ``1..8`` → index ``0..7`` (bareland … building).
* **loveda** — single-band PNGs, raw ``0`` = no-data (ignored), raw ``1..7`` → index ``0..6``
  (background … agriculture).
* **potsdam** — RGB colour-coded labels; each official colour → index ``0..5``. Black (the
  eroded boundary of ``*_label_noBoundary.tif``) and any colour not in the legend → ignore.
  ``clutter`` is predicted but, following the usual Potsdam protocol, not in :attr:`ClassSet.scored`.

Raw values that are not part of an encoding (e.g. ``9`` in OpenEarthMap) decode to ignore
rather than raising: real label files occasionally contain stray values and one bad pixel
must not stop an evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from metaseg.errors import TileReadError, UnknownNameError

IGNORE_INDEX = 255

#: ``LABEL_ENCODING`` tag of files the project writes: the pixels are class indices ``0..K-1``
#: (``IGNORE_VALUE``, 255, = no data) — predicted masks, ``metaseg map`` outputs.
INDEX_ENCODING = "index"
#: ``LABEL_ENCODING`` tag of labels written in the class set's official dataset encoding.
OFFICIAL_ENCODING = "official"

# How a class set stores labels on disk.
_OFFSET1 = "offset1"  # single band, raw v in 1..K -> index v-1, raw 0 -> ignore
_RGB = "rgb"  # three bands, colour -> index, black/unknown -> ignore


def _hex_to_rgb(code: str) -> tuple[int, int, int]:
    code = code.lstrip("#")
    return (int(code[0:2], 16), int(code[2:4], 16), int(code[4:6], 16))


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours -> (...) int32 keys ``r << 16 | g << 8 | b``."""
    rgb = rgb.astype(np.int32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


@dataclass(frozen=True)
class ClassSet:
    """One dataset's classes.

    Attributes:
        name: ``"openearthmap"``, ``"loveda"`` or ``"potsdam"``.
        names: Class names in model-output index order.
        colors: Official RGB colour per class (same order as ``names``).
        scored: Indices that enter mean metrics (Potsdam leaves out clutter).
        ignore_index: Index for pixels excluded from losses and metrics.
        default_zone: Köppen-Geiger code of the dataset's region when it is a single known
            zone (LoveDA ``Cfa``, Potsdam ``Cfb``); ``None`` for the global OpenEarthMap.
        encoding: ``"offset1"`` (single band, raw ``0`` ignored, raw ``v`` → index ``v-1``)
            or ``"rgb"`` (colour-coded).
        label_encoding: the ``LABEL_ENCODING`` tag the mask writers embed: ``"index"`` (values are
            these class indices) or ``"official"`` (a label saved in the dataset's own encoding,
            e.g. the app's raw view whose index 0 is "no data").

    The palette facts live here only: :attr:`palette` (256×3), :meth:`colorize`, :meth:`colormap`
    (GeoTIFF) and :meth:`palette_bytes` (PNG) all read the same table.
    """

    name: str
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    scored: tuple[int, ...]
    ignore_index: int = IGNORE_INDEX
    default_zone: str | None = None
    encoding: str = _OFFSET1
    label_encoding: str = "index"
    _palette: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors):
            raise ValueError(f"{self.name}: {len(self.names)} names but {len(self.colors)} colours")
        palette = np.zeros((256, 3), dtype=np.uint8)  # ignore and unknown indices -> black
        palette[: len(self.colors)] = np.asarray(self.colors, dtype=np.uint8)
        palette.setflags(write=False)
        object.__setattr__(self, "_palette", palette)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def palette(self) -> np.ndarray:
        """(256, 3) uint8 lookup table: index → colour; unused entries (incl. 255) black."""
        return self._palette

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """RGBA colour map for a GeoTIFF mask: :attr:`palette` rows with alpha 255 (256 entries)."""
        return {i: (int(r), int(g), int(b), 255) for i, (r, g, b) in enumerate(self._palette)}

    def palette_bytes(self) -> list[int]:
        """The 256-entry RGB palette (768 ints) of a 'P' mode PNG mask: :attr:`palette` flattened."""
        return [int(c) for c in self._palette.reshape(-1)]

    def index_of(self, class_name: str) -> int:
        """Index of a class by name (``UnknownNameError`` listing the valid names)."""
        try:
            return self.names.index(class_name)
        except ValueError:
            raise UnknownNameError(
                f"unknown class {class_name!r} in {self.name}; valid: {', '.join(self.names)}"
            ) from None

    # ------------------------------------------------------------------ decode / encode
    def decode(self, label: np.ndarray) -> np.ndarray:
        """Official label encoding → class indices.

        Args:
            label: ``(H, W)`` integer raster for single-band encodings (``(H, W, 1)`` is
                accepted), ``(H, W, 3)`` or ``(H, W, 4)`` uint8 colours for Potsdam. A
                colour image of a single-band set is decoded through the official colours.

        Returns:
            ``(H, W)`` uint8 indices, ``ignore_index`` where the label says no-data or holds a
            value/colour outside the encoding.
        """
        label = np.asarray(label)
        if label.ndim == 3 and label.shape[2] == 1:
            label = label[..., 0]
        if label.ndim == 3 and label.shape[2] in (3, 4):
            return self._decode_rgb(label[..., :3])
        if label.ndim != 2:
            raise TileReadError(
                f"{self.name} label must be (H, W) or (H, W, 3), got shape {tuple(label.shape)}"
            )
        if self.encoding == _RGB:
            raise TileReadError(
                f"{self.name} labels are RGB colour-coded; got a single-band array of shape "
                f"{tuple(label.shape)}"
            )
        if not np.issubdtype(label.dtype, np.integer):
            if not np.issubdtype(label.dtype, np.floating):
                raise TileReadError(f"{self.name} label has unsupported dtype {label.dtype}")
            label = np.where(np.isfinite(label), label, 0).round()
        raw = label.astype(np.int64, copy=False)
        out = np.full(raw.shape, self.ignore_index, dtype=np.uint8)
        ok = (raw >= 1) & (raw <= self.num_classes)
        out[ok] = (raw[ok] - 1).astype(np.uint8)
        return out

    def decode_index(self, label: np.ndarray) -> np.ndarray:
        """A raster of class *indices* (the project's own masks) → indices; values ``>= K`` → ignore."""
        label = np.asarray(label)
        if label.ndim == 3 and label.shape[2] >= 1:
            label = label[..., 0]
        raw = label.astype(np.int64, copy=False)
        out = np.full(raw.shape, self.ignore_index, dtype=np.uint8)
        ok = (raw >= 0) & (raw < self.num_classes)
        out[ok] = raw[ok].astype(np.uint8)
        return out

    def index_encoding_hint(self, label: np.ndarray) -> str | None:
        """Why an *untagged* single-band label looks like class indices rather than the official
        1..K encoding (``None`` when it does not): value K never occurs, nothing lies between K and
        255, and raw 0 ("no data" officially) covers at least 5 % of the pixels or 255 occurs."""
        label = np.asarray(label)
        if self.encoding != _OFFSET1 or label.ndim != 2 or not np.issubdtype(label.dtype, np.integer) or not label.size:
            return None
        raw = label.astype(np.int64, copy=False)
        if raw.min() < 0 or raw.max() > 255:
            return None
        counts = np.bincount(raw.ravel(), minlength=256)
        k = self.num_classes
        zero, ignore = counts[0] / raw.size, counts[255] > 0
        if counts[k] or counts[k + 1:255].any() or not counts[1:k].any() or not (zero >= 0.05 or ignore):
            return None
        return (f"its values look like class indices 0–{k - 1} ({100 * zero:.0f} % zeros"
                + (", 255 = no data" if ignore else "") + f"), not the official {self.name} encoding 1–{k} "
                "(0 = no data): scores against it would be wrong. Save masks from the studio or "
                "`metaseg predict` as .tif (they carry CLASS_SET/LABEL_ENCODING tags) or add 1 to every class value")

    def decode_tagged(self, label: np.ndarray, tags: Mapping[str, str] | None) -> tuple[np.ndarray, str | None]:
        """Decode a label file's pixels using the tags the project writes into its own files.

        ``CLASS_SET`` must name this set; ``LABEL_ENCODING`` (``index`` / ``official``) says how to
        read the pixels. Files written before that tag existed are recognised by their other tags
        (a mask's ``CLASS_NAMES`` start with class 0, a label's with "no data"). Untagged files are
        read in the official encoding; :meth:`index_encoding_hint` explains when they look like
        class indices instead.

        Returns:
            ``(indices, note)``: ``note`` is a one-line remark for the user (``None``: nothing to say).

        Raises:
            TileReadError: the file is tagged with another class set.
        """
        tags = {str(k).upper(): str(v) for k, v in (tags or {}).items()}
        tagged_set = tags.get("CLASS_SET", "").strip().lower()
        if tagged_set and tagged_set != self.name:
            raise TileReadError(f"the file is a {tagged_set} label/mask (CLASS_SET tag) but {self.name} "
                                "classes are expected")
        encoding = tags.get("LABEL_ENCODING", "").strip().lower()
        if not encoding and tagged_set:
            try:
                names = json.loads(tags.get("CLASS_NAMES", "[]"))
            except ValueError:
                names = []
            encoding = OFFICIAL_ENCODING if names[:1] == ["no data"] or tags.get("IGNORE_VALUE") == "0" \
                else INDEX_ENCODING
        if encoding == INDEX_ENCODING:
            return self.decode_index(label), f"read as {self.name} class indices (a mask written by this project)"
        if encoding == OFFICIAL_ENCODING or self.encoding == _RGB:
            return self.decode(label), None
        hint = self.index_encoding_hint(label)
        return self.decode(label), hint

    def _decode_rgb(self, rgb: np.ndarray) -> np.ndarray:
        keys = _pack_rgb(np.asarray(self.colors, dtype=np.uint8))
        order = np.argsort(keys)
        sorted_keys = keys[order]
        packed = _pack_rgb(rgb.astype(np.uint8, copy=False))
        pos = np.clip(np.searchsorted(sorted_keys, packed), 0, len(sorted_keys) - 1)
        hit = sorted_keys[pos] == packed
        out = np.full(packed.shape, self.ignore_index, dtype=np.uint8)
        out[hit] = order[pos[hit]].astype(np.uint8)
        return out

    def encode(self, index: np.ndarray) -> np.ndarray:
        """Class indices → official label encoding (the inverse of :meth:`decode`).

        Args:
            index: ``(H, W)`` integer indices; ``ignore_index`` and out-of-range values become
                the dataset's no-data value (raw ``0``, or black for Potsdam).

        Returns:
            ``(H, W)`` uint8 for single-band sets, ``(H, W, 3)`` uint8 for Potsdam.
        """
        index = np.asarray(index)
        if index.ndim != 2:
            raise ValueError(f"index map must be (H, W), got shape {tuple(index.shape)}")
        idx = index.astype(np.int64, copy=False)
        valid = (idx >= 0) & (idx < self.num_classes)
        if self.encoding == _RGB:
            return self.colorize(index)
        out = np.zeros(idx.shape, dtype=np.uint8)
        out[valid] = (idx[valid] + 1).astype(np.uint8)
        return out

    def nearest_index(self, painted: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Class indices of a *painted* RGB(A) image: the class of the nearest palette colour.

        Unlike :meth:`decode` (exact official colours; anything else is ignore), brush strokes are
        anti-aliased and screenshots lossy, so every pixel takes the class whose colour is closest
        (squared RGB distance). Pixels outside ``valid`` become ``ignore_index``.

        Raises:
            TileReadError: not an (H, W), (H, W, 3) or (H, W, 4) image.
        """
        img = np.asarray(painted)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        if img.ndim != 3 or img.shape[2] < 3:
            raise TileReadError(f"a painted label must be an RGB image, got shape {img.shape}")
        flat = img[..., :3].astype(np.int32).reshape(-1, 3)
        palette = np.asarray(self.colors, dtype=np.int32)  # K×3
        out = np.empty(flat.shape[0], dtype=np.uint8)
        step = 1 << 18  # bound the K×N distance array
        for s in range(0, flat.shape[0], step):
            d = ((flat[s:s + step, None, :] - palette[None]) ** 2).sum(-1)
            out[s:s + step] = d.argmin(1).astype(np.uint8)
        out = out.reshape(img.shape[:2])
        if valid is not None:
            out[~np.asarray(valid, dtype=bool)] = self.ignore_index
        return out

    def colorize(self, index: np.ndarray) -> np.ndarray:
        """Class indices ``(H, W)`` → ``(H, W, 3)`` uint8 colours; ignore/unknown → black."""
        index = np.asarray(index)
        idx = index.astype(np.int64, copy=False)
        safe = np.where((idx >= 0) & (idx < self.num_classes), idx, IGNORE_INDEX)
        return self._palette[safe]

    def label_tags(self, encoding: str = INDEX_ENCODING) -> dict[str, str]:
        """Tags that identify a file this project writes (read back by :meth:`decode_tagged`)."""
        return {"CLASS_SET": self.name, "LABEL_ENCODING": encoding}

    def legend(self) -> list[tuple[str, str]]:
        """``[(class name, "#RRGGBB"), ...]`` for UI legends."""
        return [(n, "#{:02X}{:02X}{:02X}".format(*c)) for n, c in zip(self.names, self.colors, strict=True)]


def _make(name: str, table: list[tuple[str, str]], **kwargs) -> ClassSet:
    return ClassSet(
        name=name,
        names=tuple(n for n, _ in table),
        colors=tuple(_hex_to_rgb(c) for _, c in table),
        **kwargs,
    )


OPENEARTHMAP = _make(
    "openearthmap",
    [
        ("bareland", "#800000"),
        ("rangeland", "#00FF24"),
        ("developed space", "#949494"),
        ("road", "#FFFFFF"),
        ("tree", "#226126"),
        ("water", "#0045FF"),
        ("agriculture land", "#4BB549"),
        ("building", "#DE1F07"),
    ],
    scored=tuple(range(8)),
    default_zone=None,
    encoding=_OFFSET1,
)

LOVEDA = _make(
    "loveda",
    [
        ("background", "#FFFFFF"),
        ("building", "#FF0000"),
        ("road", "#FFFF00"),
        ("water", "#0000FF"),
        ("barren", "#9F81B7"),
        ("forest", "#00FF00"),
        ("agriculture", "#FFC380"),
    ],
    scored=tuple(range(7)),
    default_zone="Cfa",
    encoding=_OFFSET1,
)

POTSDAM = _make(
    "potsdam",
    [
        ("impervious surfaces", "#FFFFFF"),
        ("building", "#0000FF"),
        ("low vegetation", "#00FFFF"),
        ("tree", "#00FF00"),
        ("car", "#FFFF00"),
        ("clutter", "#FF0000"),
    ],
    scored=(0, 1, 2, 3, 4),
    default_zone="Cfb",
    encoding=_RGB,
)

CLASS_SETS: dict[str, ClassSet] = {cs.name: cs for cs in (OPENEARTHMAP, LOVEDA, POTSDAM)}


def get_class_set(name: str) -> ClassSet:
    """Look a class set up by name (case-insensitive); ``UnknownNameError`` lists valid names."""
    key = str(name).strip().lower()
    if key not in CLASS_SETS:
        raise UnknownNameError(f"unknown class set {name!r}; valid: {', '.join(CLASS_SETS)}")
    return CLASS_SETS[key]
