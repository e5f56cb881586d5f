"""CE + Dice (+ L_itm) losses: ignore_index handling and known values."""

from __future__ import annotations

import math

import pytest
import torch

from metaseg.models.losses import MetaSegNetLoss, ce_loss, compute_losses, dice_loss
from metaseg.models.segmodel import SegOutput


def _case():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0, :] = 255
    target[1, :, 0] = 255
    return logits, target


@pytest.mark.parametrize("fn", [ce_loss, dice_loss])
def test_ignored_pixels_do_not_matter(fn):
    logits, target = _case()
    base = fn(logits, target, 255)
    changed = logits.clone()
    changed[0, :, 0, :] = torch.randn(3, 5) * 100
    changed[1, :, :, 0] = torch.randn(3, 4) * 100
    torch.testing.assert_close(fn(changed, target, 255), base)
    # but a labelled pixel does matter
    changed[0, :, 1, 1] = torch.tensor([100.0, -100.0, -100.0])
    assert not torch.allclose(fn(changed, target, 255), base)


def test_perfect_prediction_gives_near_zero_losses():
    target = torch.tensor([[[0, 1], [2, 255]]])
    logits = torch.nn.functional.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 50
    assert float(ce_loss(logits, target)) < 1e-6
    assert float(dice_loss(logits, target)) < 1e-6


def test_dice_known_value():
    # K=2, two valid pixels of class 0, uniform prediction p=0.5 everywhere
    logits = torch.zeros(1, 2, 1, 3)
    target = torch.tensor([[[0, 0, 255]]])
    # class 0: inter=1, sum p=1, sum y=2 -> (2+1)/(3+1); class 1: inter=0, sum p=1, sum y=0 -> 1/2
    expected = 1 - ((3 / 4) + (1 / 2)) / 2
    assert float(dice_loss(logits, target)) == pytest.approx(expected)
    assert float(ce_loss(logits, target)) == pytest.approx(math.log(2))


def test_all_ignored_is_finite_zero_ce():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2), 255)
    ce = ce_loss(logits, target)
    assert ce.item() == 0.0
    (ce + dice_loss(logits, target)).backward()
    assert torch.isfinite(logits.grad).all()


def test_compute_losses_sums_terms_and_checks_shapes():
    logits, target = _case()
    out = SegOutput(logits=logits, itm_loss=torch.tensor(0.7))
    terms = compute_losses(out, target)
    assert float(terms["loss"]) == pytest.approx(float(terms["ce"] + terms["dice"] + 0.7))
    terms_no_itm = MetaSegNetLoss()(SegOutput(logits=logits), target)
    assert float(terms_no_itm["itm"]) == 0.0
    with pytest.raises(ValueError):
        compute_losses(out, target[:, :3])
