"""Inference backends of :class:`metaseg.inference.Predictor`: PyTorch, ONNX Runtime fp32 and int8.

Backends (``--backend`` on the CLIs, ``METASEG_BACKEND`` in the app):

* ``torch`` — the PyTorch model in eval mode (channels-last on CPU, bf16 autocast on CUDA).
* ``onnx`` — the model's **image path** (normalisation, padding to stride 32, image encoder,
  neck, CAF decoder, FPN head, upsampling and crop) exported with ``torch.onnx.export`` and run
  by ONNX Runtime's CPU execution provider, with ``torch.get_num_threads()`` intra-op threads
  (the same setting as the torch backend). Inputs: ``images`` B×3×H×W float32 in [0, 1]
  (batch, height and width dynamic; the graph pads to 32 itself) and, for MetaSegNet,
  ``text_tokens`` B×L×C_text: the frozen text encoder's features of the prompt with the
  all-padding tail cut (:func:`metaseg.models.cafdecoder.trim_padding`; L dynamic). The text
  encoder stays in PyTorch and its cache, so a prompt is encoded once, as with ``torch``.
* ``onnx-int8`` — the fp32 graph statically quantised by ``onnxruntime.quantization``: QDQ
  format, int8 per-channel weights, uint8 activations, MinMax calibration on the documented
  calibration set (:func:`calibration_tiles`: the five tiles of ``static/examples/`` and the eight
  SynthEarth tiles of ``static/calibration/``, generated with seed 4242 — never on the held-out
  test set, seed 12345). Quantised op types (:data:`INT8_OPS`): convolutions, MatMul/Gemm, their
  ReLU/ReLU6 activations (ONNX Runtime then fuses each into its int8 convolution) and Resize (the
  decoder's upsampling runs on uint8), so activations stay int8 between layers instead of making a
  round trip to fp32 around every activation. Kept in fp32 (:func:`int8_exclusions`): the stem
  convolution (its input is the normalised image, whose three channels would share one uint8
  scale), the first encoder stage, the classifier and the upsampling of the logits after it
  (quantised logits flip near-tied classes). Measured on the demo pair (class agreement with torch
  on the example tiles): every conv in int8 88 %; stem in fp32 95-96 %; plus the first stage
  97-98 % (convolutions only); with the activations and Resize also in int8 98.8 %, and a third
  less time. Weights are 8-bit, or 7-bit on x86 CPUs without VNNI (:func:`int8_weight_bits`).
  Normalisations, residual additions and the text path stay fp32 (ONNX Runtime may still
  run an attention softmax between two int8 matrix products on uint8).
* ``auto`` — ``onnx`` on CPU when its graph exists or can be built and passed its
  verification, else ``torch`` (with a logged reason); always ``torch`` on CUDA. int8 is opt-in.

**Verification.** Every graph is checked against the PyTorch model right after it is built, on
the real tiles of ``static/examples/`` (centre crops of at most 256², each MetaSegNet tile with
its zone's training prompt):
per tile the largest absolute logit difference and the fraction of pixels with the same class.
The record (``<graph>.json``) keeps these figures; ``onnx`` must agree on ≥ 99.9 % of the
pixels of every tile, ``onnx-int8`` on ≥ 95 % on average, or the backend is refused (``auto``
then falls back to torch).

**Cache.** Graphs are cached next to the checkpoint as
``<stem>.<backend>.<key>.ort<version>.onnx`` (``<backend>``: ``onnx``, ``onnx-int8-w8`` or
``onnx-int8-w7``) where ``key`` is a hash of the checkpoint files (weights + JSON; for a model
without a checkpoint, of its config and state dict) and of the export recipe, and ``<version>``
is onnxruntime's — a new checkpoint or runtime gives a new file.
Files are written to a temporary name and ``os.replace``-d into place (atomic), under a lock
file so that concurrent workers build once. The record holds the graph's SHA-256: a graph
whose bytes differ (truncated, corrupt) or that ONNX Runtime cannot load is rebuilt. When the
checkpoint's folder is not writable (e.g. weights shipped inside site-packages), and always for the
weights shipped in ``metaseg/weights/`` (the package folder stays as shipped), the graphs go to the
user cache: ``$METASEG_CACHE_DIR/onnx`` (``$METASEG_CACHE/onnx`` also accepted) or
``~/.cache/metaseg/onnx``; that shared cache is kept under ``METASEG_ONNX_CACHE_MB`` (default 2048;
the least recently written graphs go first; 0 = unbounded).

onnx, onnxruntime and onnxscript are imported lazily (only by the ONNX backends).

Modules: :mod:`~metaseg.backends.selection` (names), :mod:`~metaseg.backends.export` (image path →
fp32 graph, with :mod:`~metaseg.backends.onnx_graph` rewrites), :mod:`~metaseg.backends.int8`,
:mod:`~metaseg.backends.tiles` (verification/calibration tiles), :mod:`~metaseg.backends.verify`,
:mod:`~metaseg.backends.cache` (graph names, keys, records), :mod:`~metaseg.backends.build`
(:func:`ensure_graph`, :func:`load_session`), :mod:`~metaseg.backends.runtime` (:class:`OrtModel`)
and :mod:`~metaseg.backends.torch_backend` (:func:`fold_batchnorm`).
"""

from __future__ import annotations

from metaseg.backends.build import ensure_graph, load_session
from metaseg.backends.cache import graph_path, model_key, read_record, user_cache_dir
from metaseg.backends.export import EXPORT_RECIPE, ONNX_OPSET, ImagePath, export_fp32, prompt_tokens
from metaseg.backends.int8 import CPUINFO, INT8_OPS, int8_exclusions, int8_weight_bits, quantize_int8
from metaseg.backends.runtime import OrtModel
from metaseg.backends.selection import BACKENDS, ONNX_BACKENDS, check_backend, parse_backends
from metaseg.backends.tiles import (
    CALIBRATION_DIR,
    CALIBRATION_SEED,
    EXAMPLES_DIR,
    FALLBACK_PROMPT,
    ExampleTile,
    calibration_tiles,
    example_tiles,
    tile_prompt,
)
from metaseg.backends.torch_backend import fold_batchnorm
from metaseg.backends.verify import MIN_AGREEMENT, VERIFY_SIDE, verify

__all__ = [
    "BACKENDS",
    "CALIBRATION_DIR",
    "CALIBRATION_SEED",
    "CPUINFO",
    "EXAMPLES_DIR",
    "EXPORT_RECIPE",
    "FALLBACK_PROMPT",
    "INT8_OPS",
    "MIN_AGREEMENT",
    "ONNX_BACKENDS",
    "ONNX_OPSET",
    "VERIFY_SIDE",
    "ExampleTile",
    "ImagePath",
    "OrtModel",
    "calibration_tiles",
    "check_backend",
    "ensure_graph",
    "example_tiles",
    "export_fp32",
    "fold_batchnorm",
    "graph_path",
    "int8_exclusions",
    "int8_weight_bits",
    "load_session",
    "model_key",
    "parse_backends",
    "prompt_tokens",
    "quantize_int8",
    "read_record",
    "tile_prompt",
    "user_cache_dir",
    "verify",
]
