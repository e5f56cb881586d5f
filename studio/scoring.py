"""Scores of predictions against ground truth, saved ground truth, and the review log."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.errors import MetasegError
from studio.labels import IGNORE
from studio.limits import max_pixels
from studio.models import ROLES
from studio.prompt_store import get_store

log = logging.getLogger(__name__)


def scores(pred: np.ndarray, gt: np.ndarray, class_set: Any) -> dict[str, Any]:
    """Per-class IoU/F1 and mIoU/OA/mF1 of one mask against the ground truth (:mod:`metaseg.metrics`).

    Classes absent from both prediction and ground truth get ``None``; means use ``class_set.scored``.
    """
    from metaseg.metrics import evaluate_masks

    if pred.shape != gt.shape:
        raise MetasegError(
            f"the label is {gt.shape[1]}x{gt.shape[0]} but the tile is {pred.shape[1]}x{pred.shape[0]}"
        )
    m = evaluate_masks(
        gt, pred, len(class_set.names), scored=getattr(class_set, "scored", None),
        class_names=class_set.names, ignore_index=getattr(class_set, "ignore_index", IGNORE),
    )
    return {
        "per_class_iou": {n: _nan_none(m.iou[i]) for i, n in enumerate(class_set.names)},
        "per_class_f1": {n: _nan_none(m.f1[i]) for i, n in enumerate(class_set.names)},
        "miou": _nan_none(m.miou), "oa": _nan_none(m.oa), "mf1": _nan_none(m.mf1),
    }


def _nan_none(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def review(result_a: np.ndarray, result_b: np.ndarray, gt: np.ndarray, class_set: Any) -> dict[str, Any]:
    """Scores of both models and their per-class IoU differences (MetaSegNet − baseline)."""
    a = scores(result_a, gt, class_set)
    b = scores(result_b, gt, class_set)
    delta = {
        n: (a["per_class_iou"][n] - b["per_class_iou"][n])
        if a["per_class_iou"][n] is not None and b["per_class_iou"][n] is not None else None
        for n in class_set.names
    }
    return {"metasegnet": a, "baseline": b, "delta_iou": delta}


def read_label(path: str | os.PathLike, class_set: Any, shape: tuple[int, int]) -> np.ndarray:
    return open_label(path, class_set, shape).index


def open_label(path: str | os.PathLike, class_set: Any, shape: tuple[int, int]):
    """:func:`metaseg.geo.open_label`: the decoded label and a note for the user (or ``None``)."""
    from metaseg.geo import open_label as _open

    return _open(path, class_set, expected_shape=shape, max_pixels=max_pixels())


def saved_ground_truth(tile_hash_: str | None, shape: tuple[int, int], label_ids: set[int] | None = None
                       ) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The newest label saved for a tile (by its hash) whose file still reads: ``(indices, label row)``;
    only among ``label_ids`` when given (a session's own labels, unless the operator shares them).

    Whatever way a tile is opened (upload, re-upload, example, a tile opened from the Experiments
    gallery), this is how it finds the ground truth a visitor saved for it.
    """
    if not tile_hash_:
        return None
    for row in get_store().labels(tile_hash_):
        if label_ids is not None and row.get("id") not in label_ids:
            continue
        path = Path(row["mask_path"])
        if not path.is_file():
            continue
        try:
            return open_label(path, row["class_set"], shape).index, row
        except MetasegError as exc:
            log.warning("saved label #%s of tile %s skipped: %s", row.get("id"), tile_hash_[:12], exc)
    return None


def saved_prompt_id(prompt_id: int | None, text: str) -> int | None:
    """``prompt_id`` if that stored version has exactly ``text``, else ``None`` (an unsaved edit)."""
    if prompt_id is None:
        return None
    try:
        return prompt_id if get_store().get(prompt_id).text == text else None
    except MetasegError:
        return None


def log_review(tile_hash_: str, rev: dict[str, Any], class_set: str, prompt_id: int | None,
               checkpoint_ids: dict[str, str]) -> None:
    """Record both models' scores of one review in SQLite (the baseline has no prompt)."""
    store = get_store()
    for role in ROLES:
        store.log_run(
            tile_hash_, role, rev[role]["per_class_iou"],
            prompt_id=prompt_id if role == "metasegnet" else None,
            checkpoint_hash=checkpoint_ids.get(role), model_role=role,
            miou=rev[role]["miou"], oa=rev[role]["oa"], class_set=class_set,
        )
