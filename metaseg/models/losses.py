"""Training loss L = L_ce + L_dice + L_itm (paper eqs 1–3).

* ``L_ce``: pixel cross-entropy, pixels labelled ``ignore_index`` excluded.
* ``L_dice``: soft multi-class Dice on softmax probabilities: per class
  ``(2·Σ p·y + s) / (Σ p + Σ y + s)`` over the valid (non-ignored) pixels of the whole batch,
  averaged over the K classes, ``1 − mean``; smoothing ``s = 1``. (Eq 2 writes the ratio per
  pixel; the batch-level form used here is the standard, better-conditioned Dice.)
* ``L_itm``: computed inside the model's CAFDecoder in training mode (it needs the queues) and
  carried by ``SegOutput.itm_loss``; added with weight ``itm_weight``. Absent for the baseline
  and in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metaseg.models.segmodel import SegOutput


def ce_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy. logits: B×K×H×W; target: B×H×W int. All-ignored → 0 (with grad)."""
    valid = target != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target.long(), ignore_index=ignore_index)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice over valid pixels. logits: B×K×H×W; target: B×H×W int. Returns a scalar."""
    k = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1).float()  # B×1×H×W
    probs = logits.float().softmax(dim=1) * valid
    onehot = F.one_hot(target.long().clamp(0, k - 1) * (target != ignore_index).long(), k)
    onehot = onehot.permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2.0 * inter + smooth) / (denom + smooth)).mean()


def compute_losses(output: SegOutput, target: torch.Tensor, ignore_index: int = 255,
                   itm_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """All loss terms and their sum.

    Args:
        output: model output (``itm_loss`` set by MetaSegNet in training mode).
        target: B×H×W class indices, ``ignore_index`` = unlabelled.
        ignore_index: label excluded from CE and Dice.
        itm_weight: weight of L_itm (paper: 1).

    Returns:
        dict with ``loss`` (total, to backpropagate), ``ce``, ``dice`` and ``itm`` (0 when absent).
    """
    if target.shape[-2:] != output.logits.shape[-2:]:
        raise ValueError(f"target {tuple(target.shape)} does not match logits {tuple(output.logits.shape)}")
    ce = ce_loss(output.logits, target, ignore_index)
    dice = dice_loss(output.logits, target, ignore_index)
    itm = output.itm_loss if output.itm_loss is not None else torch.zeros((), device=ce.device)
    return {"loss": ce + dice + itm_weight * itm, "ce": ce, "dice": dice, "itm": itm}


class MetaSegNetLoss(torch.nn.Module):
    """Module form of :func:`compute_losses` returning the dict of terms."""

    def __init__(self, ignore_index: int = 255, itm_weight: float = 1.0):
        super().__init__()
        self.ignore_index = ignore_index
        self.itm_weight = itm_weight

    def forward(self, output: SegOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return compute_losses(output, target, self.ignore_index, self.itm_weight)
