"""Pictures of predictions: overlays, legends, disagreement maps and area shares.

Torch-free (numpy + Pillow only) so the app and the CLI can draw without importing torch.
All functions take class-index masks (``uint8`` H×W, ``class_set.ignore_index`` = 255 marks
pixels without a class: nodata, or unlabelled ground truth) and return ``uint8`` RGB arrays
H×W×3 (or Pillow images / strings for legends).

Colour conventions (also exported as constants so a UI legend can reuse them):

* ignore pixels are drawn black in class colour images and left untouched in overlays;
* :func:`disagreement_map` paints pixels where the two predictions differ in
  :data:`DISAGREE_COLOR` (magenta) over a dimmed grey copy of the tile;
* :func:`only_one_right_map` paints pixels only model A gets right in :data:`A_ONLY_COLOR`
  (blue), pixels only model B gets right in :data:`B_ONLY_COLOR` (orange), pixels both get right
  dim grey and pixels both get wrong dark red; ignore pixels of the ground truth are black.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from metaseg.classes import ClassSet

#: Pixels where the two masks differ (disagreement map).
DISAGREE_COLOR = (255, 0, 255)
#: Pixels only model A (MetaSegNet in the app) classifies correctly.
A_ONLY_COLOR = (30, 110, 255)
#: Pixels only model B (the baseline in the app) classifies correctly.
B_ONLY_COLOR = (255, 150, 0)
#: Pixels both models classify correctly.
BOTH_RIGHT_COLOR = (90, 90, 90)
#: Pixels both models get wrong.
BOTH_WRONG_COLOR = (110, 20, 20)
#: Pixels without a class (nodata / unlabelled).
IGNORE_COLOR = (0, 0, 0)

#: Legend entries of :func:`only_one_right_map`, in drawing order.
ONLY_ONE_RIGHT_LEGEND = (
    ("only A right", A_ONLY_COLOR),
    ("only B right", B_ONLY_COLOR),
    ("both right", BOTH_RIGHT_COLOR),
    ("both wrong", BOTH_WRONG_COLOR),
    ("no label", IGNORE_COLOR),
)


def _check_index(index: np.ndarray, name: str = "index") -> np.ndarray:
    index = np.asarray(index)
    if index.ndim != 2:
        raise ValueError(f"{name} must be a 2-D class-index mask (H, W), got shape {index.shape}")
    return index


def _check_rgb(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:  # grey tile -> RGB
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"rgb must be an (H, W, 3) image, got shape {rgb.shape}")
    if rgb.shape[:2] != tuple(shape):
        raise ValueError(f"rgb is {rgb.shape[1]}x{rgb.shape[0]} but the mask is {shape[1]}x{shape[0]}")
    rgb = rgb[..., :3]
    if rgb.dtype != np.uint8:
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    return rgb


def overlay(rgb: np.ndarray, index: np.ndarray, class_set: ClassSet, alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over a tile.

    Args:
        rgb: the tile, ``uint8`` H×W×3.
        index: class indices ``uint8`` H×W; ignore pixels keep the tile's own colour.
        class_set: the :class:`metaseg.classes.ClassSet` of ``index``.
        alpha: opacity of the class colours, 0 (tile only) .. 1 (colours only).

    Returns:
        ``uint8`` H×W×3.
    """
    index = _check_index(index)
    rgb = _check_rgb(rgb, index.shape)
    alpha = float(min(max(alpha, 0.0), 1.0))
    colors = class_set.colorize(index).astype(np.float32)
    out = rgb.astype(np.float32) * (1.0 - alpha) + colors * alpha
    out = np.rint(out).astype(np.uint8)
    ignore = index == class_set.ignore_index
    if ignore.any():
        out[ignore] = rgb[ignore]
    return out


def _font(size: int = 14) -> ImageFont.ImageFont:
    try:  # Pillow >= 10.1 can scale its built-in font
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - old Pillow
        return ImageFont.load_default()


def _swatch_image(entries: list[tuple[str, tuple[int, int, int]]], title: str | None = None) -> Image.Image:
    font = _font(14)
    swatch, pad, gap = 18, 8, 6
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_w(text: str) -> int:
        left, _, right, _ = probe.textbbox((0, 0), text, font=font)
        return int(right - left)

    lines = ([title] if title else []) + [name for name, _ in entries]
    width = pad * 2 + swatch + gap + max((text_w(t) for t in lines), default=0)
    row_h = swatch + 4
    height = pad * 2 + row_h * (len(entries) + (1 if title else 0))
    img = Image.new("RGB", (max(width, 40), max(height, 20)), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    y = pad
    if title:
        draw.text((pad, y), title, fill=(0, 0, 0), font=font)
        y += row_h
    for name, color in entries:
        draw.rectangle([pad, y, pad + swatch - 1, y + swatch - 1], fill=tuple(color), outline=(60, 60, 60))
        draw.text((pad + swatch + gap, y + 1), name, fill=(0, 0, 0), font=font)
        y += row_h
    return img


def legend_image(class_set: ClassSet, present: Iterable[int] | None = None) -> Image.Image:
    """Legend of a class set as a Pillow RGB image (save it as PNG).

    Args:
        class_set: the class set.
        present: class indices to list (e.g. ``np.unique(mask)``); values outside the class
            range (the ignore value) are skipped. ``None`` lists every class.

    Returns:
        One row per class: a colour swatch and the class name (Pillow's built-in font).
    """
    keep = range(len(class_set.names)) if present is None else sorted(
        {int(i) for i in present if 0 <= int(i) < len(class_set.names)}
    )
    entries = [(class_set.names[i], tuple(class_set.colors[i])) for i in keep]
    return _swatch_image(entries)


def legend_entries_image(entries: Iterable[tuple[str, tuple[int, int, int]]]) -> Image.Image:
    """Legend image for arbitrary ``(label, colour)`` pairs, e.g. :data:`ONLY_ONE_RIGHT_LEGEND`."""
    return _swatch_image([(str(n), tuple(c)) for n, c in entries])


def legend_html(class_set: ClassSet, present: Iterable[int] | None = None) -> str:
    """Legend of a class set as an HTML fragment (names are HTML-escaped).

    Same selection rules as :func:`legend_image`. The markup is a ``<div class="metaseg-legend">``
    with one ``<span class="metaseg-legend-item">`` per class, styled inline so it needs no CSS.
    """
    keep = range(len(class_set.names)) if present is None else sorted(
        {int(i) for i in present if 0 <= int(i) < len(class_set.names)}
    )
    items = []
    for i in keep:
        r, g, b = (int(c) for c in class_set.colors[i])
        name = html.escape(str(class_set.names[i]))
        items.append(
            '<span class="metaseg-legend-item" style="display:inline-flex;align-items:center;'
            'margin:0 12px 4px 0">'
            f'<span style="display:inline-block;width:14px;height:14px;margin-right:5px;'
            f'border:1px solid #555;background:#{r:02x}{g:02x}{b:02x}"></span>{name}</span>'
        )
    return '<div class="metaseg-legend">' + "".join(items) + "</div>"


def _dimmed_grey(rgb: np.ndarray | None, shape: tuple[int, int], level: float = 0.45) -> np.ndarray:
    if rgb is None:
        return np.full((*shape, 3), 40, dtype=np.uint8)
    rgb = _check_rgb(rgb, shape).astype(np.float32)
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grey = np.rint(grey * level).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def disagreement_map(
    index_a: np.ndarray,
    index_b: np.ndarray,
    rgb: np.ndarray | None = None,
    ignore_index: int = 255,
) -> np.ndarray:
    """Highlight pixels where two predictions differ.

    Args:
        index_a, index_b: class-index masks H×W of the two models.
        rgb: optional tile H×W×3 used (dimmed, grey) as background; dark grey without it.
        ignore_index: pixels ignored in either mask are never counted as disagreement.

    Returns:
        ``uint8`` H×W×3: :data:`DISAGREE_COLOR` where the masks differ, background elsewhere.
    """
    a = _check_index(index_a, "index_a")
    b = _check_index(index_b, "index_b")
    if a.shape != b.shape:
        raise ValueError(f"masks differ in size: {a.shape} vs {b.shape}")
    out = _dimmed_grey(rgb, a.shape)
    differ = (a != b) & (a != ignore_index) & (b != ignore_index)
    out[differ] = DISAGREE_COLOR
    return out


def disagreement_fraction(index_a: np.ndarray, index_b: np.ndarray, ignore_index: int = 255) -> float:
    """Share of pixels (valid in both masks) where the two predictions differ; 0.0 if none valid."""
    a, b = _check_index(index_a), _check_index(index_b)
    valid = (a != ignore_index) & (b != ignore_index)
    n = int(valid.sum())
    return float(((a != b) & valid).sum() / n) if n else 0.0


def only_one_right_map(
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    gt: np.ndarray,
    ignore_index: int = 255,
) -> np.ndarray:
    """Where exactly one of two models matches the ground truth.

    Args:
        pred_a, pred_b: predicted class indices H×W (A = MetaSegNet, B = baseline in the app).
        gt: ground-truth indices H×W; ``ignore_index`` pixels are drawn :data:`IGNORE_COLOR`.

    Returns:
        ``uint8`` H×W×3 coloured as listed in :data:`ONLY_ONE_RIGHT_LEGEND`.
    """
    a = _check_index(pred_a, "pred_a")
    b = _check_index(pred_b, "pred_b")
    g = _check_index(gt, "gt")
    if not (a.shape == b.shape == g.shape):
        raise ValueError(f"masks differ in size: {a.shape}, {b.shape}, gt {g.shape}")
    ra, rb = a == g, b == g
    out = np.empty((*g.shape, 3), dtype=np.uint8)
    out[:] = BOTH_WRONG_COLOR
    out[ra & rb] = BOTH_RIGHT_COLOR
    out[ra & ~rb] = A_ONLY_COLOR
    out[~ra & rb] = B_ONLY_COLOR
    out[g == ignore_index] = IGNORE_COLOR
    return out


def class_fractions(index: np.ndarray, class_set: ClassSet) -> dict[str, float]:
    """Area share of each class among the pixels that have a class.

    Ignore pixels (nodata) are excluded from the denominator. Every class of the set appears
    in the result (0.0 when absent); an all-ignore mask gives all zeros.

    Returns:
        ``{class name: fraction}`` in class-index order; the fractions sum to 1 (or 0).
    """
    index = _check_index(index)
    k = len(class_set.names)
    counts = np.bincount(index.ravel().astype(np.int64, copy=False), minlength=256)[:k]
    total = int(counts.sum())
    if total == 0:
        return {name: 0.0 for name in class_set.names}
    return {name: float(counts[i] / total) for i, name in enumerate(class_set.names)}


__all__ = [
    "A_ONLY_COLOR",
    "B_ONLY_COLOR",
    "BOTH_RIGHT_COLOR",
    "BOTH_WRONG_COLOR",
    "DISAGREE_COLOR",
    "IGNORE_COLOR",
    "ONLY_ONE_RIGHT_LEGEND",
    "class_fractions",
    "disagreement_fraction",
    "disagreement_map",
    "legend_entries_image",
    "legend_html",
    "legend_image",
    "only_one_right_map",
    "overlay",
]
