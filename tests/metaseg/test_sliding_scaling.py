"""Sliding-window work per window does not depend on the tile size (issue 14, measured part).

Not a timing test: the mechanism is checked. A tile twice as wide and twice as tall gets four
times the windows, every window reaches the model with the same shape (so the model's work per
window is the same), the band accumulator grows with the width only (memory, not work per
window), and every output row is finalised exactly once.
"""

from __future__ import annotations

import numpy as np
import torch

from metaseg.inference import Predictor


class _Pointwise(torch.nn.Module):
    uses_text = False

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c = torch.nn.Conv2d(3, 5, 1)

    def forward(self, x):
        return self.c(x)


def _run(side: int):
    p = Predictor(_Pointwise(), "cpu", window=64)
    shapes = []
    orig = p._logits

    def spy(batch, prompt):
        shapes.append(tuple(batch.shape))
        return orig(batch, prompt)

    p._logits = spy
    rgb = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    pred = p.predict(rgb)
    return pred, shapes


def test_per_window_work_is_independent_of_tile_size():
    small, s_shapes = _run(256)
    large, l_shapes = _run(512)
    assert (small.windows, large.windows) == (25, 100)  # 2x the side: 4x the windows, not more
    assert len(s_shapes) == small.windows and len(l_shapes) == large.windows
    assert set(s_shapes) == set(l_shapes) == {(1, 3, 64, 64)}  # same model input per window
    # band accumulator: K x window x width -> grows with the width only
    assert large.accumulator_bytes == 2 * small.accumulator_bytes
    assert (small.index != 255).all() and (large.index != 255).all()  # every row finalised


def test_cpu_predictor_fixes_glibc_malloc_thresholds(monkeypatch):
    """The allocator state no longer depends on what was freed before (e.g. a wider band)."""
    import sys

    import metaseg.inference.malloc as inf

    monkeypatch.setattr(inf, "_MALLOC_TUNED", None)
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    import ctypes

    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    monkeypatch.setattr(sys, "platform", "linux")
    p = Predictor(_Pointwise(), "cpu", window=32)
    rgb = np.zeros((40, 40, 3), np.uint8)
    p.predict(rgb[:32, :32])
    assert calls == []  # single pass: untouched
    p.predict(rgb)  # sliding windows, torch backend on CPU
    assert calls == [(-3, inf.MMAP_THRESHOLD), (-1, inf.TRIM_THRESHOLD)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    p.predict(rgb)
    assert len(calls) == 2  # once per process
    monkeypatch.setattr(inf, "_MALLOC_TUNED", None)
    monkeypatch.setenv("METASEG_MALLOPT", "0")
    assert inf.tune_malloc() is False and len(calls) == 2
