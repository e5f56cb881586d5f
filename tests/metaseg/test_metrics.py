"""Metrics against hand-computed confusion matrices (paper eqs 8–12)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metaseg.metrics import ConfusionMatrix, compute_metrics, evaluate_masks

# gt/pred of 10 pixels, 3 classes, one ignored pixel:
#   matrix (rows gt, cols pred) = [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
GT = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 255])
PRED = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0, 1])
HAND = np.array([[2, 1, 0], [0, 1, 1], [1, 0, 3]])


def test_confusion_matrix_by_hand_and_ignore():
    cm = ConfusionMatrix(3)
    cm.update(GT.reshape(2, 5), PRED.reshape(2, 5))
    np.testing.assert_array_equal(cm.matrix, HAND)
    assert cm.unassigned.tolist() == [0, 0, 0]
    cm.update(GT, PRED)  # accumulates
    np.testing.assert_array_equal(cm.matrix, 2 * HAND)


def test_metrics_by_hand():
    m = compute_metrics(HAND, class_names=("a", "b", "c"))
    # TP = [2, 1, 3], FP = [1, 1, 1], FN = [1, 1, 1]
    np.testing.assert_allclose(m.iou, [2 / 4, 1 / 3, 3 / 5])
    np.testing.assert_allclose(m.class_precision, [2 / 3, 1 / 2, 3 / 4])
    np.testing.assert_allclose(m.class_recall, [2 / 3, 1 / 2, 3 / 4])
    np.testing.assert_allclose(m.f1, [2 / 3, 1 / 2, 3 / 4])
    assert m.oa == pytest.approx(6 / 9)
    assert m.miou == pytest.approx((0.5 + 1 / 3 + 0.6) / 3)
    assert m.mf1 == pytest.approx((2 / 3 + 0.5 + 0.75) / 3)
    d = m.to_dict()
    assert set(d) >= {"miou", "oa", "mf1", "precision", "recall", "per_class"}
    assert d["per_class"]["b"] == pytest.approx({"iou": 1 / 3, "f1": 0.5, "precision": 0.5, "recall": 0.5})


def test_scored_subset_changes_means_not_oa():
    m = compute_metrics(HAND, scored=(0, 1), class_names=("a", "b", "clutter"))
    assert m.miou == pytest.approx((0.5 + 1 / 3) / 2)
    assert m.oa == pytest.approx(6 / 9)  # OA over all classes, as the paper
    assert set(m.per_class()) == {"a", "b"}
    assert set(m.per_class(only_scored=False)) == {"a", "b", "clutter"}


def test_absent_class_is_nan_and_left_out_of_means():
    mat = np.zeros((4, 4), int)
    mat[:3, :3] = HAND
    m = compute_metrics(mat)
    assert math.isnan(m.iou[3]) and math.isnan(m.f1[3])
    assert m.miou == pytest.approx((0.5 + 1 / 3 + 0.6) / 3)
    assert m.to_dict()["per_class"]["3"]["iou"] is None


def test_present_but_never_predicted_has_zero_precision():
    m = evaluate_masks(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0]), num_classes=2)
    assert m.class_precision[1] == 0 and m.class_recall[1] == 0 and m.iou[1] == 0 and m.f1[1] == 0
    assert m.iou[0] == pytest.approx(0.5)


def test_mean_f1_vs_f1_of_means():
    # class 0: P=1, R=0.5; class 1: P=0.5, R=1
    m = evaluate_masks(np.array([0, 0, 1]), np.array([0, 1, 1]), num_classes=2)
    assert m.mf1 == pytest.approx(2 / 3)  # mean of per-class F1
    assert m.f1_of_means == pytest.approx(0.75)  # eq 12 literally: F1 of mean P and mean R


def test_out_of_range_prediction_is_a_miss():
    m = evaluate_masks(np.array([0, 0, 1, 1]), np.array([0, 255, 1, 1]), num_classes=2)
    assert m.oa == pytest.approx(3 / 4)
    assert m.class_recall[0] == pytest.approx(0.5) and m.class_precision[0] == 1.0
    assert m.iou[0] == pytest.approx(0.5)


def test_torch_inputs_match_numpy():
    import torch
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, (3, 17, 19))
    gt[0, :3] = 255
    pred = rng.integers(0, 6, (3, 17, 19))
    a, b = ConfusionMatrix(5), ConfusionMatrix(5)
    a.update(gt, pred)
    b.update(torch.from_numpy(gt), torch.from_numpy(pred))
    np.testing.assert_array_equal(a.matrix, b.matrix)
    np.testing.assert_array_equal(a.unassigned, b.unassigned)
    assert a.unassigned.sum() > 0


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        ConfusionMatrix(2).update(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError):
        compute_metrics(np.zeros((2, 3)))
