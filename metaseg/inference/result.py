"""What :meth:`metaseg.inference.Predictor.predict` returns (:class:`Prediction`) and its progress callback type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ProgressFn = Callable[[int, int], Any]


@dataclass
class Prediction:
    """Result of :meth:`Predictor.predict`.

    Attributes:
        index: H×W ``uint8`` class indices; 255 where the input was nodata.
        probs: K×H×W ``float16`` softmax probabilities (blended, TTA-averaged) when
            ``return_probs=True``, else ``None``. Nodata pixels hold zeros.
        seconds: wall time of the prediction (text encoding included, model loading excluded).
        windows: number of windows the tile was split into (1 = single pass).
        window: (height, width) of the windows actually used.
        tta: whether flip test-time augmentation was used.
        prompt: the prompt the model saw (``None`` for text-free models).
        device: device the model ran on.
        accumulator_bytes: size of the band accumulator held during sliding-window inference
            (0 for a single pass) — the memory bound of step 4 of :mod:`metaseg.inference`.
        backend: the backend that ran the model: ``torch``, ``onnx`` or ``onnx-int8``.
    """

    index: np.ndarray
    probs: np.ndarray | None
    seconds: float
    windows: int = 1
    window: tuple[int, int] = (0, 0)
    tta: bool = False
    prompt: str | None = None
    device: str = "cpu"
    accumulator_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    backend: str = "torch"

