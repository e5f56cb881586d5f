"""The sweep task, run on the workers: score one tile with the baseline once and MetaSegNet once per text."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def read_tile(image: str, label: str, class_set: str) -> tuple[Any, Any]:
    """``(H×W×3 uint8 RGB, H×W uint8 label)`` read exactly as the dataset readers read a sample
    (:func:`training.datasets.base.read_pair`: nodata pixels are labelled 255 and not scored)."""
    from metaseg.classes import get_class_set
    from training.datasets.base import read_pair

    return read_pair(Path(image), Path(label), get_class_set(class_set))


def sweep_tile(
    item: dict[str, Any],
    model: Any,
    baseline: Any,
    class_set: str,
    tta: bool = False,
    groups: str | None = None,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Score one tile: the baseline once, MetaSegNet once per distinct prompt text.

    Args:
        item: ``{"image", "label", "texts": [distinct prompt texts]}`` (paths, not pixels).
        model, baseline: :class:`metaseg.runner.ModelSpec` (``baseline`` may be ``None``).
        class_set: the dataset's class-set name (label decoding, matrix size).
        tta: flip test-time augmentation.
        groups: optional ``"module:function"`` mapping the image path to an ``H×W`` uint8 map of
            pixel groups (or ``None``); then pixel accuracy per group is counted too (diagnostics,
            e.g. ``training.synth.diagnostics:ambiguous_materials``; not stored in the experiment).

    Returns:
        ``{"texts": [K×K per text], "baseline": K×K | None, "read_s", "model_s", "baseline_s", "backend"}``
        (``backend``: what ran, ``auto`` resolved, e.g. ``onnx`` or ``onnx (baseline torch)``)
        plus ``"groups": {"hits": [per text], "baseline": hits | None, "totals"}`` with ``groups``.
    """
    from metaseg.classes import get_class_set
    from metaseg.metrics import ConfusionMatrix
    from metaseg.runner import load_predictor

    t0 = time.perf_counter()
    rgb, label = read_tile(item["image"], item["label"], class_set)
    k = get_class_set(class_set).num_classes
    whole = rgb.shape[:2]  # one pass over the whole tile, as training.evaluate does

    gmap = None
    if groups:
        import importlib

        import numpy as np

        module, _, name = groups.partition(":")
        gmap = getattr(importlib.import_module(module), name)(item["image"])
        valid = (label != get_class_set(class_set).ignore_index) & (label < k)
    hits: list[list[int]] = []

    def counts(pred: Any) -> list[list[int]]:
        cm = ConfusionMatrix(k)
        cm.update(label, pred)
        if gmap is not None:
            hits.append(np.bincount(gmap[(pred == label) & valid], minlength=256).tolist())
        return cm.matrix.tolist()

    t1 = time.perf_counter()
    predictor = load_predictor(model)
    texts = [counts(predictor.predict(rgb, text, window=whole, tta=tta).index) for text in item["texts"]]
    t2 = time.perf_counter()
    base = None
    ran = [str(getattr(predictor, "backend", "torch"))]
    if baseline is not None:
        base_predictor = load_predictor(baseline)
        base = counts(base_predictor.predict(rgb, window=whole, tta=tta).index)
        ran.append(str(getattr(base_predictor, "backend", "torch")))
    t3 = time.perf_counter()
    out = {"texts": texts, "baseline": base, "read_s": t1 - t0, "model_s": t2 - t1, "baseline_s": t3 - t2,
           "backend": ran[0] if len(set(ran)) == 1 else f"{ran[0]} (baseline {ran[1]})"}
    if gmap is not None:
        out["groups"] = {"hits": hits[: len(texts)], "baseline": hits[len(texts)] if baseline is not None else None,
                         "totals": np.bincount(gmap[valid], minlength=256).tolist()}  # fmt: skip
    return out
