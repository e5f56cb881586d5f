"""Per-tile IoU from stacked confusion matrices (pure numpy), used to rank an experiment's tiles.

Split out of :mod:`prompts_db.experiments` (which re-exports both functions); the whole-split
metrics stay in :mod:`metaseg.metrics`. Percent, NaN where a class is absent from tile and
prediction, like the per-class IoU of ``python -m training.evaluate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["per_tile_iou", "per_tile_miou"]


def per_tile_iou(confusions: np.ndarray) -> np.ndarray:
    """``(T, K)`` per-tile IoU in percent (NaN where the class is absent from tile and prediction)."""
    m = np.asarray(confusions, dtype=np.float64)
    tp = np.diagonal(m, axis1=1, axis2=2)
    union = m.sum(1) + m.sum(2) - tp
    out = np.full(tp.shape, np.nan)
    np.divide(100.0 * tp, union, out=out, where=union > 0)
    return out


def per_tile_miou(confusions: np.ndarray, scored: Sequence[int]) -> np.ndarray:
    """``(T,)`` per-tile mIoU in percent over the scored classes present (NaN if none)."""
    iou = per_tile_iou(confusions)[:, list(scored)]
    with np.errstate(all="ignore"):
        valid = ~np.isnan(iou)
        s = np.where(valid, iou, 0.0).sum(1)
        n = valid.sum(1)
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)
