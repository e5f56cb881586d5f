"""Tile inference: :class:`Predictor` turns an RGB tile of any size into a class mask.

Modules: :mod:`~metaseg.inference.predictor` (the :class:`Predictor`, its backend seam and the
window loop), :mod:`~metaseg.inference.windows` (window starts, blending weight, the band
accumulator), :mod:`~metaseg.inference.text` (prompt checks and text-feature caches),
:mod:`~metaseg.inference.preprocess` (input checks), :mod:`~metaseg.inference.result`
(:class:`Prediction`) and :mod:`~metaseg.inference.malloc` (:func:`tune_malloc`). The device is
chosen by :func:`metaseg.device.pick_device` (the one device choice of the project).

Pipeline of :meth:`Predictor.predict`:

1. **Text features once.** For a text model the prompt is encoded once
   (``model.encode_text``, which caches per exact text; the predictor also keeps the features
   expanded to each batch size) and the same features are reused by every window.
2. **Windows.** A tile that fits one window (both sides ≤ the window) is run in one pass
   (the model pads to its stride itself). A larger tile is covered by a grid of windows
   ``window × window`` (clipped to the tile), evenly spaced about ``window·(1-overlap)`` apart
   (see :func:`window_starts`: the count is proportional to the tile length, so time is linear
   in area); the first and last windows of a row/column touch the tile edges, so every pixel is
   covered and no window hangs over the tile.
3. **Blending.** Each window's softmax probabilities are multiplied by a 2-D weight, the outer
   product of ``eps + (1-eps)·sin²(π(i+½)/n)`` (a Hann window lifted by ``eps = 0.001``), and
   summed; the sum is divided by the summed weights. Window centres dominate overlaps, so the
   zero-padding artefacts at window borders do not leave seams, while the ``eps`` floor keeps
   tile-border pixels (covered by window borders only) well defined.
4. **Bounded memory (band scheme).** Windows are visited row by row. Only one *band* of
   ``window_h`` rows is held: an accumulator ``K × window_h × W`` (float32) plus a weight sum
   ``window_h × W``. When the next window row starts ``d`` rows lower, the top ``d`` rows of the
   band can receive no more contributions: they are normalised, argmax-ed into the ``uint8``
   output (and, if asked, written to the float16 probability output) and the band is shifted
   up by ``d``. Peak extra memory is therefore ``O(K · window_h · W)`` instead of
   ``O(K · H · W)``: about 130 MB for an 8000-px-wide tile with K=8 and 512-px windows, versus
   2 GB for a full float32 ``H × W × K`` array. The only full-size arrays are the ``uint8``
   mask and, when ``return_probs=True``, the requested ``K × H × W`` float16 probabilities.
5. **Batches and TTA.** Windows are run ``batch_size`` at a time under ``torch.inference_mode``
   (bf16 autocast on CUDA). With ``tta=True`` each batch also runs horizontally and vertically
   flipped copies (3 views, as the paper flips at test time); their un-flipped probabilities
   are averaged before blending.
6. **Nodata.** Pixels with ``valid == False`` get the ignore value 255; windows without any
   valid pixel are skipped.
7. **Backends.** Every model call goes through one seam, :meth:`Predictor._logits`, which runs
   either the PyTorch model (``backend="torch"``) or an ONNX Runtime session of the exported
   image path (``"onnx"`` fp32, ``"onnx-int8"`` static int8; ``"auto"`` = onnx on CPU when its
   verified graph exists or can be built, torch on CUDA) — see :mod:`metaseg.backends`. Windows,
   batching, blending, TTA, nodata and progress are the same code for every backend; the
   prediction records which backend ran (:attr:`Prediction.backend`).
8. **Batch entry.** :meth:`Predictor.predict_batch` runs a batch of same-size images whole
   (images × prompts, one prompt or one per image, flip TTA, the backend seam, autocast) and
   returns their class indices. The single pass of :meth:`predict`, ``training.evaluate`` (and
   so ``training.train``'s validation) and the stacked GPU tiles of :mod:`metaseg.mapping` call
   it; ``training.sweep`` calls :meth:`predict` (one window per tile). There is no other copy of
   the forward pass.
"""


from metaseg.inference.malloc import MMAP_THRESHOLD, TRIM_THRESHOLD, tune_malloc
from metaseg.inference.predictor import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_WINDOW,
    BackendModel,
    Predictor,
    predict_tile,
)
from metaseg.inference.result import Prediction, ProgressFn
from metaseg.inference.windows import BLEND_EPS, IGNORE_INDEX, BandBlender, blend_weight, window_starts

__all__ = [
    "BLEND_EPS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_WINDOW",
    "IGNORE_INDEX",
    "MMAP_THRESHOLD",
    "TRIM_THRESHOLD",
    "BackendModel",
    "BandBlender",
    "Prediction",
    "Predictor",
    "ProgressFn",
    "blend_weight",
    "predict_tile",
    "tune_malloc",
    "window_starts",
]
