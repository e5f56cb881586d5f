"""Validation of a run with the evaluation protocol of ``training.evaluate``, and raw metrics helpers.

:func:`validate` runs :func:`training.evaluate.confusion_dataset` (validation tiles at their
native size, float32 on CPU, flip TTA only with ``val_tta``) and sums the confusion matrices
across ranks, so ``best_miou`` equals what ``training.evaluate`` reports for ``best.safetensors``.
"""

from __future__ import annotations

from typing import Any

from .distributed import Dist


def confusion_matrix(pred, target, num_classes: int, ignore_index: int = 255):
    """K×K int64 confusion matrix (rows = ground truth) over non-ignored pixels."""
    import torch

    valid = target != ignore_index
    idx = target[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def scores_from_confusion(cm, scored: tuple[int, ...]) -> dict[str, float]:
    """mIoU, OA and mF1 from a K×K confusion matrix via ``metaseg.metrics`` (means over ``scored``)."""
    from metaseg.metrics import compute_metrics

    m = compute_metrics(cm.cpu().numpy(), scored=scored)
    return {"miou": float(m.miou), "oa": float(m.oa), "mf1": float(m.mf1)}


def validate(model, dataset, class_set, device, batch_size: int, dist: Dist | None = None,
             tta: bool = False) -> dict[str, Any]:
    """Score ``model`` on (this rank's shard of) a validation set with the ``training.evaluate`` protocol.

    Runs :func:`training.evaluate.confusion_dataset` (native tile size, float32 on CPU, flips only
    with ``tta``), sums the confusion matrices across ranks and returns fractions
    ``{"miou", "oa", "mf1", "per_class"}`` over the class set's scored classes in **percent**
    (0–100, the unit of ``training.evaluate`` and the paper; NaN mIoU when no scored class occurs).
    """
    import numpy as np
    import torch

    from training.evaluate import confusion_dataset

    was_training = model.training
    model.eval()
    try:
        cm, _ = confusion_dataset(model, dataset, class_set=class_set, tta=tta, batch_size=batch_size, device=device)
    finally:
        model.train(was_training)
    if dist is not None and dist.enabled:
        counts = torch.from_numpy(cm._m.copy()).to(device)
        dist.all_reduce_sum(counts)
        cm._m = counts.cpu().numpy().astype(np.int64)
    m = cm.compute(scored=class_set.scored, class_names=class_set.names).to_dict()

    def num(x):
        return float("nan") if x is None else 100.0 * float(x)

    per_class = {name: {k: (None if v is None else 100.0 * float(v)) for k, v in vals.items()}
                 for name, vals in m["per_class"].items()}
    return {"miou": num(m["miou"]), "oa": num(m["oa"]), "mf1": num(m["mf1"]), "per_class": per_class}
