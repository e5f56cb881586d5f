"""The torch backend's one inference-only rewrite: BatchNorm folding (:func:`fold_batchnorm`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

_FOLDABLE_PARENTS = ("EfficientNetFeatures", "EfficientNet", "DepthwiseSeparableConv", "InvertedResidual",
                     "EdgeResidual", "ConvBnAct")


def fold_batchnorm(model: nn.Module) -> int:
    """Fold eval-mode BatchNorm into the preceding convolution of timm EfficientNet blocks (in place).

    In each timm EfficientNet module, a ``BatchNorm2d``/``BatchNormAct2d`` child registered right
    after a ``Conv2d`` child follows it in ``forward`` too; its affine transform is folded into
    the convolution's weight and bias and the norm is replaced by its activation alone. Other
    modules are left untouched. Returns the number of folded norms. (Measured for the torch
    backend; see docs/BENCHMARKS.md for whether the predictor uses it.)
    """
    import torch
    from torch import nn

    folded = 0
    for parent in list(model.modules()):
        if type(parent).__name__ not in _FOLDABLE_PARENTS:
            continue
        prev_name, prev = None, None
        for name, child in list(parent.named_children()):
            if (isinstance(child, nn.BatchNorm2d) and isinstance(prev, nn.Conv2d) and child.track_running_stats
                    and child.running_var is not None and prev.out_channels == child.num_features):
                with torch.no_grad():
                    scale = (child.weight if child.affine else torch.ones_like(child.running_var)) / torch.sqrt(
                        child.running_var + child.eps)
                    shift = (child.bias if child.affine else torch.zeros_like(child.running_mean))
                    bias = prev.bias if prev.bias is not None else torch.zeros_like(child.running_mean)
                    prev.weight.mul_(scale.view(-1, 1, 1, 1).to(prev.weight.dtype))
                    new_bias = (bias - child.running_mean) * scale + shift
                    prev.bias = nn.Parameter(new_bias.to(prev.weight.dtype), requires_grad=False)
                rest = [m for key in ("drop", "act") if isinstance(m := getattr(child, key, None), nn.Module)]
                setattr(parent, name, nn.Sequential(*rest) if rest else nn.Identity())
                folded += 1
                prev_name, prev = name, None
                continue
            prev_name, prev = name, child
        del prev_name
    return folded
