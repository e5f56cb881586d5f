"""Sliding windows: where they start, how they are weighted and the band that blends them.

See steps 2-4 of :mod:`metaseg.inference`. :class:`BandBlender` is the bounded-memory
accumulator: it holds one band of ``window_h`` tile rows and finishes rows as soon as no later
window can reach them.
"""

from __future__ import annotations

import math

import numpy as np

IGNORE_INDEX = 255
#: Floor of the 1-D blending weight (relative to the window centre's 1.0).
BLEND_EPS = 1e-3


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Evenly spaced window starts covering ``[0, size)``; the first at 0, the last flush with the end.

    ``stride`` is the *requested* spacing (``window·(1-overlap)``). The number of gaps is the
    nearest whole number to ``(size - window) / stride``, raised while the actual spacing would
    leave less than three quarters of the requested overlap. Choosing the nearest count (not the ceiling)
    keeps the window count proportional to the tile length, so sliding-window time grows
    linearly with area (e.g. 512-px windows at overlap 0.25: 5×5 windows on 2048², 10×10 on
    4096², actual overlap 25 % and 22 %), while the overlap never drops below three quarters of
    what was asked, so blending still hides window borders.
    """
    if window >= size:
        return [0]
    span = size - window
    stride = max(1, min(stride, window))
    max_spacing = stride + (window - stride) / 4.0  # keeps 3/4 of the requested overlap
    gaps = max(1, round(span / stride))
    while span / gaps > max_spacing:
        gaps += 1
    return [round(i * span / gaps) for i in range(gaps + 1)]


def blend_weight(height: int, width: int, eps: float = BLEND_EPS) -> np.ndarray:
    """2-D blending weight ``height × width`` float32, 1 at the centre, ≥ ``eps²`` at the corners."""

    def one_d(n: int) -> np.ndarray:
        i = np.arange(n, dtype=np.float64)
        return eps + (1.0 - eps) * np.sin(np.pi * (i + 0.5) / n) ** 2

    return np.outer(one_d(height), one_d(width)).astype(np.float32)



def window_boxes(height: int, width: int, win: tuple[int, int], overlap: float) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the windows ``win`` covering a ``height × width`` tile, row by row."""
    wh, ww = win
    ys = window_starts(height, wh, int(math.floor(wh * (1.0 - overlap))))
    xs = window_starts(width, ww, int(math.floor(ww * (1.0 - overlap))))
    return [(y, x) for y in ys for x in xs]


class BandBlender:
    """Blends weighted window probabilities into the ``uint8`` class mask, one band of rows at a time.

    Windows must be added in row order (:func:`window_boxes`). Call :meth:`allocate` once the
    number of classes is known (the first batch that ran), :meth:`flush` with a window's top row
    before adding it, and ``flush(height)`` at the end. Rows no window ran on stay 255.
    """

    def __init__(self, shape: tuple[int, int], win: tuple[int, int], weight: np.ndarray,
                 return_probs: bool) -> None:
        self.height, self.width = shape
        self.wh, self.ww = win
        self.weight = weight
        self.return_probs = return_probs
        self.index = np.full(shape, IGNORE_INDEX, dtype=np.uint8)
        self.probs: np.ndarray | None = None  #: K×H×W float16 when ``return_probs``
        self.acc: np.ndarray | None = None  #: K×window_h×W weighted sums of the band
        self.wsum: np.ndarray | None = None  #: window_h×W summed weights of the band
        self.top = 0  #: first tile row held in the band

    def allocate(self, k: int) -> None:
        """Create the band (and the probability output) for ``k`` classes; no-op when done already."""
        if self.acc is not None:
            return
        self.acc = np.zeros((k, self.wh, self.width), dtype=np.float32)
        self.wsum = np.zeros((self.wh, self.width), dtype=np.float32)
        if self.return_probs:
            self.probs = np.zeros((k, self.height, self.width), dtype=np.float16)

    @property
    def nbytes(self) -> int:
        """Bytes held by the band (0 when no window ran)."""
        return 0 if self.acc is None or self.wsum is None else int(self.acc.nbytes + self.wsum.nbytes)

    def add(self, y: int, x: int, weighted: np.ndarray) -> None:
        """Add one window's weighted probabilities K×h×w at tile position (y, x)."""
        assert self.acc is not None and self.wsum is not None
        r = y - self.top
        self.acc[:, r:r + self.wh, x:x + self.ww] += weighted
        self.wsum[r:r + self.wh, x:x + self.ww] += self.weight

    def flush(self, until: int) -> None:
        """Finish tile rows [top, until): normalise, argmax, shift the band up."""
        d = until - self.top
        if d <= 0:
            return
        acc, wsum, top = self.acc, self.wsum, self.top
        if acc is None or wsum is None:  # nothing run yet (all-nodata windows): rows stay 255
            self.top = until
            return
        ws = wsum[:d]
        # argmax of the weighted sum == argmax of the blended probabilities (the weight sum
        # is a positive per-pixel factor); a running max over classes avoids the K×d×W
        # temporaries numpy's argmax(axis=0) would allocate.
        rows = np.zeros((d, self.width), dtype=np.uint8)
        best = acc[0, :d].copy()
        for c in range(1, acc.shape[0]):
            better = acc[c, :d] > best
            rows[better] = c
            np.maximum(best, acc[c, :d], out=best)
        rows[ws <= 0] = IGNORE_INDEX
        self.index[top:until] = rows
        if self.probs is not None:
            inv = 1.0 / np.maximum(ws, 1e-12)
            for c in range(acc.shape[0]):
                self.probs[c, top:until] = acc[c, :d] * inv
        keep = self.wh - d
        if keep > 0:  # per class: overlapping copies make numpy buffer the source
            for c in range(acc.shape[0]):
                acc[c, :keep] = acc[c, d:]
            wsum[:keep] = wsum[d:]
        acc[:, max(keep, 0):] = 0
        wsum[max(keep, 0):] = 0
        self.top = until
