"""Segmentation metrics from a confusion matrix (paper eqs 8–12), numpy first, torch optional.

Conventions (chosen where the paper is silent, and tested):

* **Confusion matrix**: rows are ground truth, columns are predictions, both class indices
  ``0..K-1``. Ground-truth pixels equal to ``ignore_index`` (or outside ``0..K-1``) are dropped.
  A *prediction* outside ``0..K-1`` (e.g. a class that a zero-shot class map leaves unmapped) is
  kept in an extra "unassigned" column: it is a miss (false negative) for the true class and a
  false positive for no class.
* **OA** (eq 8) is the trace over *all* counted pixels, i.e. over every labelled class
  including the ones that are not scored (Potsdam clutter, background), as the paper states.
* **Per class** ``k``: IoU = TP/(TP+FP+FN), precision = TP/(TP+FP), recall = TP/(TP+FN),
  F1 = 2·P·R/(P+R). A class absent from both ground truth and prediction (TP+FP+FN = 0) gets NaN
  everywhere and is left out of the means. Otherwise a zero denominator gives 0 (a class present
  in the ground truth but never predicted has precision 0; F1 with P+R = 0 is 0).
* **Means** (eqs 9–11) average over the *scored* classes (``ClassSet.scored``; Potsdam leaves
  clutter out) ignoring NaN.
* **Mean F1** (eq 12): read literally, eq 12 combines the *mean* precision and *mean* recall.
  Published Potsdam tables (the ones the paper compares with) average the per-class F1
  scores instead. ``mf1`` is the mean of per-class F1 (the benchmark convention);
  ``f1_of_means`` is eq 12 read literally. Both are reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IGNORE_INDEX = 255


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class ConfusionMatrix:
    """Accumulates a ``K × K`` confusion matrix (plus unassigned predictions) with ``bincount``.

    Args:
        num_classes: Number of classes ``K``.
        ignore_index: Ground-truth value that is not counted.

    Example:
        >>> cm = ConfusionMatrix(3)
        >>> cm.update(np.array([0, 1, 2, 255]), np.array([0, 2, 2, 1]))
        >>> cm.matrix.tolist()
        [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self._m = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    @property
    def matrix(self) -> np.ndarray:
        """``(K, K)`` int64 counts, rows ground truth, columns prediction."""
        return self._m[:, : self.num_classes].copy()

    @property
    def unassigned(self) -> np.ndarray:
        """``(K,)`` counts of pixels of each true class predicted as an out-of-range value."""
        return self._m[:, self.num_classes].copy()

    def reset(self) -> None:
        self._m[:] = 0

    def update(self, gt: Any, pred: Any) -> None:
        """Add one batch.

        Args:
            gt: Ground-truth indices, any shape (numpy array or torch tensor).
            pred: Predicted indices, same shape as ``gt``.
        """
        if hasattr(gt, "detach") and hasattr(pred, "detach"):
            self._m += self._torch_counts(gt, pred)
            return
        g = _to_numpy(gt).astype(np.int64, copy=False).ravel()
        p = _to_numpy(pred).astype(np.int64, copy=False).ravel()
        if g.shape != p.shape:
            raise ValueError(f"ground truth and prediction differ in size: {g.size} vs {p.size}")
        k = self.num_classes
        keep = (g >= 0) & (g < k) & (g != self.ignore_index)
        g, p = g[keep], p[keep]
        p = np.where((p >= 0) & (p < k), p, k)
        self._m += np.bincount(g * (k + 1) + p, minlength=k * (k + 1)).reshape(k, k + 1)

    def _torch_counts(self, gt: Any, pred: Any) -> np.ndarray:
        import torch

        k = self.num_classes
        g = gt.reshape(-1).long()
        p = pred.reshape(-1).long().to(g.device)
        if g.numel() != p.numel():
            raise ValueError(f"ground truth and prediction differ in size: {g.numel()} vs {p.numel()}")
        keep = (g >= 0) & (g < k) & (g != self.ignore_index)
        g, p = g[keep], p[keep]
        p = torch.where((p >= 0) & (p < k), p, torch.full_like(p, k))
        counts = torch.bincount(g * (k + 1) + p, minlength=k * (k + 1))
        return counts.cpu().numpy().astype(np.int64).reshape(k, k + 1)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another matrix (e.g. from another process)."""
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge confusion matrices of different sizes")
        self._m += other._m

    def compute(
        self, scored: Sequence[int] | None = None, class_names: Sequence[str] | None = None
    ) -> SegMetrics:
        """Metrics of the accumulated counts (see :func:`compute_metrics`)."""
        return compute_metrics(
            self.matrix, scored=scored, class_names=class_names, unassigned=self.unassigned
        )


@dataclass
class SegMetrics:
    """Metrics of one confusion matrix. Per-class arrays have shape ``(K,)``; NaN = class absent.

    Attributes:
        oa: Overall accuracy over all counted pixels (0–1).
        miou, mf1, precision, recall: Means over scored, non-NaN classes (0–1).
        f1_of_means: ``2·precision·recall/(precision+recall)`` (eq 12 read literally).
        iou, f1, class_precision, class_recall: Per-class values.
        scored: Indices that enter the means.
        class_names: Names in index order.
        n_pixels: Number of counted pixels.
    """

    oa: float
    miou: float
    mf1: float
    precision: float
    recall: float
    f1_of_means: float
    iou: np.ndarray
    f1: np.ndarray
    class_precision: np.ndarray
    class_recall: np.ndarray
    scored: tuple[int, ...]
    class_names: tuple[str, ...] = field(default_factory=tuple)
    n_pixels: int = 0

    def per_class(self, only_scored: bool = True) -> dict[str, dict[str, float | None]]:
        """``{class name: {iou, f1, precision, recall}}`` (NaN → ``None``), scored classes by default."""
        idx = self.scored if only_scored else tuple(range(len(self.iou)))
        names = self.class_names or tuple(str(i) for i in range(len(self.iou)))
        return {
            names[i]: {
                "iou": _num(self.iou[i]),
                "f1": _num(self.f1[i]),
                "precision": _num(self.class_precision[i]),
                "recall": _num(self.class_recall[i]),
            }
            for i in idx
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``miou, oa, mf1, precision, recall, f1_of_means, per_class, n_pixels``."""
        return {
            "miou": _num(self.miou),
            "oa": _num(self.oa),
            "mf1": _num(self.mf1),
            "precision": _num(self.precision),
            "recall": _num(self.recall),
            "f1_of_means": _num(self.f1_of_means),
            "per_class": self.per_class(),
            "n_pixels": int(self.n_pixels),
        }


def _num(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def compute_metrics(
    matrix: np.ndarray,
    scored: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    unassigned: np.ndarray | None = None,
) -> SegMetrics:
    """OA, per-class IoU/precision/recall/F1 and their means from a confusion matrix.

    Args:
        matrix: ``(K, K)`` counts, rows ground truth, columns prediction.
        scored: Class indices that enter the means (default: all).
        class_names: Names in index order (for :meth:`SegMetrics.per_class`).
        unassigned: ``(K,)`` pixels of each true class predicted as no class (counted as misses).

    Returns:
        A :class:`SegMetrics`.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {m.shape}")
    k = m.shape[0]
    extra = np.zeros(k) if unassigned is None else np.asarray(unassigned, dtype=np.float64)
    tp = np.diag(m)
    fp = m.sum(0) - tp
    fn = m.sum(1) - tp + extra
    present = (tp + fp + fn) > 0
    iou = _div(tp, tp + fp + fn)
    prec = _div(tp, tp + fp)
    rec = _div(tp, tp + fn)
    f1 = _div(2 * prec * rec, prec + rec)
    for arr in (iou, prec, rec, f1):
        arr[~present] = np.nan
    total = m.sum() + extra.sum()
    oa = float(tp.sum() / total) if total > 0 else float("nan")
    idx = tuple(range(k)) if scored is None else tuple(int(i) for i in scored)
    sel = np.asarray(idx, dtype=np.int64)
    mp, mr = _nanmean(prec[sel]), _nanmean(rec[sel])
    f1m = 2 * mp * mr / (mp + mr) if (mp + mr) > 0 else (float("nan") if math.isnan(mp + mr) else 0.0)
    return SegMetrics(
        oa=oa,
        miou=_nanmean(iou[sel]),
        mf1=_nanmean(f1[sel]),
        precision=mp,
        recall=mr,
        f1_of_means=f1m,
        iou=iou,
        f1=f1,
        class_precision=prec,
        class_recall=rec,
        scored=idx,
        class_names=tuple(class_names) if class_names is not None else (),
        n_pixels=int(total),
    )


def evaluate_masks(
    gt: Any,
    pred: Any,
    num_classes: int,
    scored: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> SegMetrics:
    """Metrics of a single ground truth / prediction pair (e.g. one tile in the app)."""
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    cm.update(gt, pred)
    return cm.compute(scored=scored, class_names=class_names)
