"""Segmentation head shared by MetaSegNet and the baseline: a light FPN merge.

The head knows the encoder only through the list of stage channels (``in_channels``, finest
first; the coarsest entry is the CAF/neck output). Each stage gets a 1×1 lateral conv to
``dim`` channels; a top-down pass adds each upsampled coarser map into the next finer one;
all levels are upsampled to the finest stage (stride 4) and summed; one 3×3 conv-GN-ReLU and
a 1×1 classifier give logits at stride 4, which the model upsamples to the input size.
GroupNorm (not BatchNorm) keeps training at batch size 1–2 stable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metaseg.models.cafdecoder import _groups


class FPNHead(nn.Module):
    """FPN-style merge of encoder stages → class logits at the finest stage's resolution."""

    def __init__(self, in_channels: list[int], dim: int, num_classes: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.GroupNorm(_groups(dim), dim), nn.ReLU(inplace=True)
        )
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """feats: list of B×C_i×h_i×w_i, finest first. Returns B×K×h_0×w_0."""
        lat = [conv(f) for conv, f in zip(self.lateral, feats, strict=True)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="bilinear",
                                                    align_corners=False)
        size = lat[0].shape[-2:]
        merged = lat[0]
        for x in lat[1:]:
            merged = merged + F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(merged))
