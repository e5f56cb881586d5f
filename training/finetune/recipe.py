"""What a teaching run is made of: the recipe, one labelled tile, the cancel error, ``IGNORE``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.errors import MetasegError

#: Label value of an unlabelled pixel (never enters the loss).
IGNORE = 255


class TeachCancelled(MetasegError):
    """The caller's ``cancel`` event was set: nothing was written."""


@dataclass(frozen=True)
class Recipe:
    """How a teaching run trains (defaults = the measured choice, see :mod:`training.finetune`)."""

    freeze_encoder: bool = True  #: cache frozen encoder features (False: train everything on crops)
    flips: int = 4  #: image flips cached per tile: 1 (none), 2 (+horizontal), 4 (+vertical, +both)
    cache_share: float = 0.3  #: at most this share of the budget goes to caching flips beyond the first
    window: int = 256  #: training window side (px, multiple of 32)
    batch: int = 4  #: windows per step
    lr: float = 3e-3  #: AdamW learning rate of the trained parts
    encoder_lr: float = 1e-4  #: learning rate of the encoder when it is not frozen
    weight_decay: float = 1e-4
    warmup: int = 20  #: linear warm-up steps
    dice: bool = True  #: add Dice (over labelled pixels) to the cross-entropy
    balance: bool = True  #: class weights 1/sqrt(labelled pixels)
    patience: int = 150  #: early stop: steps without a 1 % improvement of the smoothed loss (0 = off)
    min_steps: int = 200  #: never stop early before this many steps
    class_map_init: bool = True  #: initialise a new classifier through training/class_maps
    only_taught: bool = True  #: classes without a labelled pixel are never predicted (classifier row off)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TeachTile:
    """One labelled tile, decoded and validated."""

    image: Path
    label: Path
    rgb: np.ndarray  # H×W×3 uint8
    target: np.ndarray  # H×W uint8 class indices, 255 = unlabelled
    labelled: int
    zone: str | None = None
    prompt: str | None = None
    gsd_m: float | None = None
    feats: list[list[Any]] = field(default_factory=list)  # per flip: encoder stages (1×C×h×w)
