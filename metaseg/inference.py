"""Tile inference: :class:`Predictor` turns an RGB tile of any size into a class mask.

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

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metaseg.errors import CheckpointError, ConfigError, MetasegError

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
#: Floor of the 1-D blending weight (relative to the window centre's 1.0).
BLEND_EPS = 1e-3
DEFAULT_WINDOW = 512
DEFAULT_BATCH_SIZE = 4

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
            (0 for a single pass) — the memory bound of step 4 above.
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


#: glibc malloc settings applied once per process by a CPU predictor (see :func:`tune_malloc`).
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20
_MALLOC_TUNED: bool | None = None


def tune_malloc() -> bool:
    """Fix glibc's malloc thresholds for this process (once): mmap ≥ 64 MiB, trim above 256 MiB.

    Why (issue 14's sliding-window scaling, measured): glibc adapts its mmap threshold to the
    sizes freed so far and returns the heap top to the OS above twice that. A window's forward
    pass allocates and frees tens of MB of activations; whether they come back as reused heap
    memory or as fresh, page-faulted (zeroed) pages depended on what the process had freed
    before — e.g. the band accumulator, whose size grows with the tile width. So the cost per
    window depended on the tile size and the history: ``bench --sliding-repeats 5`` at 2 threads
    gave 109.5 vs 97.8 ms per window (2048² vs 4096², ratio 3.57, 21 s of kernel time for page
    faults). With fixed thresholds: 77.6 vs 78.3 ms per window, ratio 4.04, and every window
    ~25 % faster. Fixed thresholds also disable glibc's dynamic adjustment, so the behaviour no
    longer depends on history. The cost: up to 256 MiB of freed heap stay mapped. Applied by the
    first sliding-window prediction of a torch-backend CPU predictor only: the same setting made
    ONNX Runtime ~25 % slower (its arena prefers fresh mmap-ed memory), so ONNX predictors never
    set it. ``METASEG_MALLOPT=0`` leaves malloc alone; no-op where ``mallopt`` is not available.

    Returns:
        True when the thresholds are set (now or earlier in this process).
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED is not None:
        return _MALLOC_TUNED
    import os
    import sys

    _MALLOC_TUNED = False
    if sys.platform.startswith("linux") and os.environ.get("METASEG_MALLOPT", "1") != "0":
        try:
            import ctypes

            libc = ctypes.CDLL(None)
            m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
            _MALLOC_TUNED = bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(
                libc.mallopt(m_trim_threshold, TRIM_THRESHOLD))
        except (OSError, AttributeError):  # not glibc
            _MALLOC_TUNED = False
    return _MALLOC_TUNED


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` → CUDA when available, else CPU (:func:`metaseg.device.pick_device`).

    Raises:
        ConfigError: CUDA asked for without a GPU, or an unknown device string.
    """
    from metaseg.device import pick_device

    return pick_device(device)


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


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (read tiles with metaseg.geo.read_tile), got {rgb.dtype}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError("image is empty")
    return rgb[..., :3]


def _window_size(window: int | tuple[int, int] | None, default: int) -> tuple[int, int]:
    if window is None:
        return default, default
    if isinstance(window, int):
        wh = ww = window
    else:
        wh, ww = (int(v) for v in window)
    if wh < 16 or ww < 16:
        raise ValueError(f"window must be at least 16 px, got {wh}x{ww}")
    return wh, ww


def _autocast(device: torch.device):
    from metaseg.device import autocast

    return autocast(device)


def _logits_of(out: Any) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out


class Predictor:
    """Runs a segmentation model on tiles of any size (see the module docstring).

    Args:
        model: a :class:`metaseg.models.SegModel` (or any module with ``uses_text``,
            ``encode_text`` and ``forward(images_0_1, text=...)`` returning logits or an object
            with ``.logits`` B×K×H×W).
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        window: default window side in px (default: ``model.config.image_size`` or 512).
        batch_size: windows per forward pass (default 4 on CUDA, 1 on CPU, where larger
            batches measured no faster per window for the demo pair).
        meta: checkpoint metadata (kept for callers, e.g. the prompt used in training).
        channels_last: convert the model (in place) and inputs to channels-last memory format
            (about 15% faster on CPU for the EfficientNet-Lite0 demo pair, measured at 512²).
        backend: ``torch`` (default), ``onnx``, ``onnx-int8`` or ``auto`` (see
            :mod:`metaseg.backends`). The ONNX backends run on CPU only.
        checkpoint: the checkpoint's local weights file, if any (keys and places the cached
            ONNX graphs; :meth:`from_checkpoint` passes it).
        fold_bn: torch backend: fold eval-mode BatchNorm into the preceding convolutions of the
            image encoder, in place (:func:`metaseg.backends.fold_batchnorm`; measured faster on
            CPU for the demo pair, outputs equal to ~1e-5); the model is then for inference only.
            Default ``None``: fold only models the predictor loaded itself
            (:meth:`from_checkpoint` / :meth:`from_name`), never a model the caller passed in and
            may still train or save.

    Raises:
        ConfigError: unknown backend, or an ONNX backend on a CUDA device.
        MetasegError: an explicitly requested ONNX backend cannot be built or failed verification.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device | None = None,
        *,
        window: int | None = None,
        batch_size: int | None = None,
        meta: dict[str, Any] | None = None,
        channels_last: bool = True,
        backend: str | None = "torch",
        checkpoint: str | Path | None = None,
        fold_bn: bool | None = None,
    ) -> None:
        from metaseg.backends import check_backend

        requested = check_backend(backend)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        config = getattr(model, "config", None)
        self.window = int(window or getattr(config, "image_size", None) or DEFAULT_WINDOW)
        if batch_size is None:  # on CPU bigger batches were not faster per window (cache-bound)
            batch_size = DEFAULT_BATCH_SIZE if self.device.type == "cuda" else 1
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.meta = dict(meta or {})
        self._text_cache: dict[str, Any] = {}
        self._expanded: dict[tuple[str, int], Any] = {}
        self._weights: dict[tuple[int, int], tuple[np.ndarray, torch.Tensor]] = {}
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.backend_requested = requested
        self.backend = "torch"
        self.backend_record: dict[str, Any] | None = None
        self.backend_note: str | None = None
        self._ort: Any = None
        self._tokens: dict[tuple[str, int], np.ndarray] = {}
        self._init_backend(requested)
        self.bn_folded = 0
        if fold_bn and self.backend == "torch" and not self.model.training:
            from metaseg.backends import fold_batchnorm

            self.bn_folded = fold_batchnorm(self.model)

    def _init_backend(self, requested: str) -> None:
        from metaseg.backends import load_session

        if requested == "torch":
            return
        if self.device.type != "cpu":
            if requested == "auto":
                return  # torch on CUDA
            raise ConfigError(f"backend {requested!r} runs on CPU (ONNX Runtime CPU provider); "
                              f"use --device cpu or --backend torch")
        kind = "onnx" if requested == "auto" else requested
        try:
            try:
                self._ort, self.backend_record = load_session(self.model, kind, self.checkpoint, self.meta)
            except (ImportError, OSError) as exc:  # runtime missing, cache unwritable/disk full, ...
                raise MetasegError(f"backend {kind} unavailable: {type(exc).__name__}: "
                                   f"{' '.join(str(exc).split())[:200]}") from exc
        except MetasegError as exc:
            if requested != "auto":
                raise
            self.backend_note = f"auto: torch ({exc})"
            logger.warning("backend auto falls back to torch: %s", exc)
            return
        self.backend = kind

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(cls, path_or_hub_id: str | Path, device: str | torch.device | None = None,
                        *, expected_name: str | None = None, **kwargs: Any) -> Predictor:
        """Load a checkpoint (local path or hub id) through :func:`metaseg.checkpoints.load_checkpoint`.

        Args:
            path_or_hub_id: ``.safetensors``/``.json`` path, their stem, or ``org/name[/stem]``.
            device: see :func:`resolve_device`.
            expected_name: if given, the checkpoint must be of this variant (CheckpointError).
            **kwargs: passed to the constructor (``window``, ``batch_size``, ``backend``, ...).
        """
        from metaseg.checkpoints import load_checkpoint, resolve_checkpoint

        dev = resolve_device(device)
        model, meta = load_checkpoint(path_or_hub_id, dev, expected_name=expected_name)
        kwargs.setdefault("fold_bn", True)  # the predictor owns this freshly loaded model
        if kwargs.get("backend") not in (None, "torch") and kwargs.get("checkpoint") is None:
            try:  # local weights file: keys and places the cached ONNX graphs
                kwargs["checkpoint"] = resolve_checkpoint(path_or_hub_id)[0]
            except (CheckpointError, OSError, ValueError):
                pass
        return cls(model, dev, meta=meta, **kwargs)

    @classmethod
    def from_name(cls, name: str, device: str | torch.device | None = None, **kwargs: Any) -> Predictor:
        """Load the weights that ship with the project for a ``*_demo`` variant.

        Raises:
            CheckpointError: the variant has no shipped weights (yet), with what to do instead.
        """
        from metaseg.checkpoints import demo_checkpoint_path

        try:
            path = demo_checkpoint_path(name)
        except CheckpointError:
            raise
        except (KeyError, LookupError, FileNotFoundError) as exc:
            raise CheckpointError(
                f"model {name!r} has no shipped weights; pass a checkpoint (--checkpoint PATH): {exc}"
            ) from None
        if path is None or not Path(path).exists():
            raise CheckpointError(
                f"the shipped weights of {name!r} are missing ({path}); pass a checkpoint with --checkpoint PATH"
            )
        return cls.from_checkpoint(path, device, **kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def uses_text(self) -> bool:
        return bool(getattr(self.model, "uses_text", False))

    @property
    def config(self) -> Any:
        return getattr(self.model, "config", None)

    @property
    def name(self) -> str:
        return str(getattr(self.config, "name", type(self.model).__name__))

    @property
    def class_set(self) -> Any:
        """The :class:`metaseg.classes.ClassSet` named in the model config (``None`` if unknown)."""
        from metaseg.classes import get_class_set
        from metaseg.errors import UnknownNameError

        name = getattr(self.config, "class_set", None) or self.meta.get("class_set")
        if not name:
            return None
        try:
            return get_class_set(str(name))
        except UnknownNameError:
            return None

    # ------------------------------------------------------------------ text
    def text_features(self, prompt: str) -> Any:
        """Encoded features of one prompt (computed once, then cached here and in the model)."""
        feats = self._text_cache.get(prompt)
        if feats is None:
            with torch.inference_mode():
                feats = self.model.encode_text([prompt])
            if hasattr(feats, "to"):
                feats = feats.to(self.device)
            if len(self._text_cache) >= 16:
                self._text_cache.clear()
                self._expanded.clear()
            self._text_cache[prompt] = feats
        return feats

    def _text_for_batch(self, prompt: str, batch: int) -> Any:
        key = (prompt, batch)
        cached = self._expanded.get(key)
        if cached is not None:
            return cached
        feats = self.text_features(prompt)
        out = feats
        if batch > 1 and dataclasses.is_dataclass(feats) and len(feats) == 1:
            values = {}
            for f in dataclasses.fields(feats):
                v = getattr(feats, f.name)
                values[f.name] = v.expand(batch, *v.shape[1:]) if isinstance(v, torch.Tensor) else v
            out = type(feats)(**values)
        self._expanded[key] = out
        return out

    # ------------------------------------------------------------------ forward
    def _ort_tokens(self, prompt: str, batch: int) -> np.ndarray:
        """Prompt features for the ONNX graph: B×L×C float32, padding tail cut (cached per prompt/batch)."""
        key = (prompt, batch)
        tokens = self._tokens.get(key)
        if tokens is None:
            from metaseg.models.cafdecoder import trim_padding

            feats = trim_padding(self.text_features(prompt).to("cpu"))
            one = feats.tokens.float().numpy()
            if not bool(feats.mask.all()):
                raise MetasegError("prompt features have padding inside the text; use --backend torch")
            tokens = np.ascontiguousarray(np.broadcast_to(one, (batch, *one.shape[1:])))
            if len(self._tokens) >= 16:
                self._tokens.clear()
            self._tokens[key] = tokens
        return tokens

    def _logits(self, batch: torch.Tensor, prompt: str | list[str] | None) -> torch.Tensor:
        """The one model call of every path: logits B×K×h×w of windows B×3×h×w in [0, 1].

        ``prompt``: one prompt for the whole batch (encoded once, features expanded), one per
        image (the torch model encodes them per exact text; ONNX Runtime runs one call per
        distinct prompt, in batch order), or ``None`` for a text-free model.
        """
        if isinstance(prompt, list):
            if len(prompt) != batch.shape[0]:
                raise ValueError(f"batch of {batch.shape[0]} images but {len(prompt)} prompts")
            if self._ort is not None:
                out: list[torch.Tensor | None] = [None] * len(prompt)
                for text in dict.fromkeys(prompt):  # one call per distinct prompt
                    idx = [i for i, q in enumerate(prompt) if q == text]
                    for j, logits in zip(idx, self._logits(batch[idx], text), strict=True):
                        out[j] = logits
                return torch.stack(out)  # type: ignore[arg-type]
            with _autocast(self.device):
                return _logits_of(self.model(batch, text=prompt))
        if self._ort is not None:
            tokens = self._ort_tokens(prompt, batch.shape[0]) if prompt is not None else None
            return torch.from_numpy(self._ort.run(batch.contiguous().numpy(), tokens))
        text = self._text_for_batch(prompt, batch.shape[0]) if prompt is not None else None
        with _autocast(self.device):
            return _logits_of(self.model(batch, text=text) if text is not None else self.model(batch))

    def as_model(self) -> BackendModel:
        """A model-like callable running this predictor's backend: ``m(images, text=...)`` → ``.logits``.

        For callers that batch tiles themselves (``training.evaluate --backend``): ``images``
        B×3×H×W float in [0, 1]; ``text`` one prompt or one per image (text models).
        """
        return BackendModel(self)

    def _forward_probs(self, x: torch.Tensor, prompt: str | list[str] | None, tta: bool) -> torch.Tensor:
        """Softmax probabilities B×K×h×w (float32) of a batch of windows B×3×h×w in [0, 1]."""
        views = [x, x.flip(-1), x.flip(-2)] if tta else [x]
        batch = torch.cat(views, 0) if tta else x
        if tta and isinstance(prompt, list):
            prompt = prompt * len(views)
        logits = self._logits(batch, prompt)
        probs = torch.softmax(logits.float(), dim=1)
        if not tta:
            return probs
        p = probs.chunk(3, 0)
        return (p[0] + p[1].flip(-1) + p[2].flip(-2)) / 3.0

    def _to_tensor(self, crops: np.ndarray) -> torch.Tensor:
        """B×h×w×3 uint8 → B×3×h×w float32 in [0, 1] (channels-last strides, one copy)."""
        t = torch.from_numpy(crops).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        t = t.float().div_(255.0)
        return t if self.channels_last and self._ort is None else t.contiguous()

    def _check_prompt(self, prompt: str) -> str:
        prompt = str(prompt)
        try:  # tokenizers need valid UTF-8: a lone surrogate (e.g. from undecodable argv bytes) is user input
            prompt.encode("utf-8")
        except UnicodeEncodeError:
            raise MetasegError(
                "the prompt is not valid Unicode text (it contains a lone surrogate code point); retype it"
            ) from None
        return prompt

    def _batch_prompts(self, prompts: str | list[str] | tuple[str, ...] | None,
                       batch: int) -> str | list[str] | None:
        if not self.uses_text:
            return None
        if prompts is None:  # "" is allowed: the stored "no text" prompt of the ablation
            raise MetasegError(f"model {self.name!r} needs a text prompt")
        if isinstance(prompts, str):
            return self._check_prompt(prompts)
        prompts = [self._check_prompt(q) for q in prompts]
        if len(prompts) != batch:
            raise ValueError(f"batch of {batch} images but {len(prompts)} prompts")
        return prompts

    # ------------------------------------------------------------------ predict
    def predict_batch(
        self,
        images: np.ndarray | torch.Tensor,
        prompts: str | list[str] | tuple[str, ...] | None = None,
        *,
        tta: bool = False,
    ) -> torch.Tensor:
        """Class indices of a batch of same-size images, each run whole in one pass (no windows).

        The batch entry of the forward path: ``training.evaluate`` (dataset tiles),
        ``metaseg.mapping`` (stacked one-window tiles on a GPU) and the single pass of
        :meth:`predict` all run through it, so backend, autocast, text features and flip TTA are
        the same code everywhere.

        Args:
            images: ``B×H×W×3`` uint8 RGB (numpy), or ``B×3×H×W`` float in [0, 1] (torch).
            prompts: text models: one prompt for all images or one per image (``""`` allowed);
                ignored by text-free models.
            tta: average the softmax of each image and its horizontal and vertical flips.

        Returns:
            ``B×H×W`` int64 class indices on the predictor's device (no nodata handling: callers
            mark their invalid pixels).
        """
        if isinstance(images, torch.Tensor):
            if images.dim() != 4 or images.shape[1] != 3:
                raise ValueError(f"expected B×3×H×W images, got {tuple(images.shape)}")
            x = images.to(self.device)
            if self.channels_last and self._ort is None:
                x = x.contiguous(memory_format=torch.channels_last)
        else:
            crops = np.asarray(images)
            if crops.ndim != 4 or crops.shape[3] != 3 or crops.dtype != np.uint8:
                raise ValueError(f"expected B×H×W×3 uint8 images, got {crops.shape} {crops.dtype}")
            x = self._to_tensor(np.ascontiguousarray(crops))
        prompt = self._batch_prompts(prompts, x.shape[0])
        with torch.inference_mode():
            if not tta:
                return self._logits(x, prompt).argmax(1)
            return self._forward_probs(x, prompt, tta).argmax(1)

    def predict(
        self,
        rgb: np.ndarray,
        prompt: str | None = None,
        *,
        window: int | tuple[int, int] | None = None,
        overlap: float = 0.25,
        tta: bool = False,
        return_probs: bool = False,
        progress: ProgressFn | None = None,
        valid: np.ndarray | None = None,
        batch_size: int | None = None,
    ) -> Prediction:
        """Segment one tile.

        Args:
            rgb: H×W×3 ``uint8`` RGB tile (any size).
            prompt: text prompt for text models (required by them; ignored by the baseline).
            window: window side (or (h, w)); default the predictor's window.
            overlap: fraction of a window shared with its neighbour, in [0, 0.9].
            tta: average over horizontal and vertical flips too.
            return_probs: also return K×H×W float16 probabilities.
            progress: called as ``progress(done, total)`` after each window.
            valid: H×W bool, False = nodata (output 255).
            batch_size: windows per forward pass (default the predictor's).

        Returns:
            A :class:`Prediction`.
        """
        start = time.perf_counter()
        rgb = _as_rgb(rgb)
        height, width = rgb.shape[:2]
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            if valid.shape != (height, width):
                raise ValueError(f"valid mask shape {valid.shape} differs from the image's {(height, width)}")
            if valid.all():
                valid = None
        if not 0.0 <= overlap <= 0.9:
            raise ValueError(f"overlap must be in [0, 0.9], got {overlap}")
        prompt = self._batch_prompts(None if prompt is None else str(prompt), 1)
        if prompt is not None:
            self.text_features(prompt)  # encode once, before any window runs
        wh, ww = _window_size(window, self.window)
        wh, ww = min(wh, height), min(ww, width)
        bs = int(batch_size or self.batch_size)

        with torch.inference_mode():
            if wh == height and ww == width:
                index, probs = self._single_pass(rgb, prompt, tta, return_probs)
                windows, acc_bytes = 1, 0
                if progress is not None:
                    progress(1, 1)
            else:
                index, probs, windows, acc_bytes = self._sliding(
                    rgb, prompt, (wh, ww), overlap, tta, return_probs, progress, valid, bs
                )
        if valid is not None:
            index[~valid] = IGNORE_INDEX
            if probs is not None:
                probs[:, ~valid] = 0
        seconds = time.perf_counter() - start
        logger.debug("predicted %dx%d in %.3fs (%d windows)", width, height, seconds, windows)
        return Prediction(
            index=index, probs=probs, seconds=seconds, windows=windows, window=(wh, ww), tta=tta,
            prompt=prompt, device=str(self.device), accumulator_bytes=acc_bytes, backend=self.backend,
        )

    def _blend_weight(self, wh: int, ww: int) -> tuple[np.ndarray, torch.Tensor]:
        key = (wh, ww)
        cached = self._weights.get(key)
        if cached is None:
            w = blend_weight(wh, ww)
            cached = self._weights[key] = (w, torch.from_numpy(w).to(self.device))
        return cached

    def _single_pass(self, rgb: np.ndarray, prompt: str | None, tta: bool,
                     return_probs: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if not return_probs:
            return self.predict_batch(rgb[None], prompt, tta=tta)[0].to(torch.uint8).cpu().numpy(), None
        x = self._to_tensor(np.ascontiguousarray(rgb)[None])
        probs = self._forward_probs(x, prompt, tta)[0]
        index = probs.argmax(0).to(torch.uint8).cpu().numpy()
        return index, (probs.half().cpu().numpy() if return_probs else None)

    def _sliding(
        self,
        rgb: np.ndarray,
        prompt: str | None,
        win: tuple[int, int],
        overlap: float,
        tta: bool,
        return_probs: bool,
        progress: ProgressFn | None,
        valid: np.ndarray | None,
        batch_size: int,
    ) -> tuple[np.ndarray, np.ndarray | None, int, int]:
        height, width = rgb.shape[:2]
        wh, ww = win
        if self.device.type == "cpu" and self._ort is None:
            tune_malloc()  # torch on CPU: per-window cost independent of tile size and history
        ys = window_starts(height, wh, int(math.floor(wh * (1.0 - overlap))))
        xs = window_starts(width, ww, int(math.floor(ww * (1.0 - overlap))))
        boxes = [(y, x) for y in ys for x in xs]
        total = len(boxes)
        weight, weight_t = self._blend_weight(wh, ww)
        index = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
        probs_out = None
        k: int | None = None
        acc = wsum = None
        top = 0  # first tile row held in the band

        def flush(until: int) -> None:
            """Finish tile rows [top, until): normalise, argmax, shift the band up."""
            nonlocal top
            d = until - top
            if d <= 0:
                return
            if acc is None:  # nothing run yet (all-nodata windows): rows stay 255
                top = until
                return
            ws = wsum[:d]
            # argmax of the weighted sum == argmax of the blended probabilities (the weight sum
            # is a positive per-pixel factor); a running max over classes avoids the K×d×W
            # temporaries numpy's argmax(axis=0) would allocate.
            rows = np.zeros((d, width), dtype=np.uint8)
            best = acc[0, :d].copy()
            for c in range(1, acc.shape[0]):
                better = acc[c, :d] > best
                rows[better] = c
                np.maximum(best, acc[c, :d], out=best)
            rows[ws <= 0] = IGNORE_INDEX
            index[top:until] = rows
            if probs_out is not None:
                inv = 1.0 / np.maximum(ws, 1e-12)
                for c in range(acc.shape[0]):
                    probs_out[c, top:until] = acc[c, :d] * inv
            keep = wh - d
            if keep > 0:  # per class: overlapping copies make numpy buffer the source
                for c in range(acc.shape[0]):
                    acc[c, :keep] = acc[c, d:]
                wsum[:keep] = wsum[d:]
            acc[:, max(keep, 0):] = 0
            wsum[max(keep, 0):] = 0
            top = until

        done = 0
        for b0 in range(0, total, batch_size):
            chunk = boxes[b0:b0 + batch_size]
            run = [bx for bx in chunk if valid is None or valid[bx[0]:bx[0] + wh, bx[1]:bx[1] + ww].any()]
            out = None
            if run:
                crops = np.stack([rgb[y:y + wh, x:x + ww] for y, x in run])
                out = self._forward_probs(self._to_tensor(crops), prompt, tta)
                out = out.mul_(weight_t).cpu().numpy()
                if k is None:
                    k = out.shape[1]
                    acc = np.zeros((k, wh, width), dtype=np.float32)
                    wsum = np.zeros((wh, width), dtype=np.float32)
                    if return_probs:
                        probs_out = np.zeros((k, height, width), dtype=np.float16)
            j = 0
            for y, x in chunk:
                if y > top:
                    flush(y)
                if j < len(run) and run[j] == (y, x):
                    r = y - top
                    acc[:, r:r + wh, x:x + ww] += out[j]
                    wsum[r:r + wh, x:x + ww] += weight
                    j += 1
                done += 1
                if progress is not None:
                    progress(done, total)
        if acc is not None:
            flush(height)
        acc_bytes = 0 if acc is None else int(acc.nbytes + wsum.nbytes)
        return index, probs_out, total, acc_bytes


class BackendModel:
    """See :meth:`Predictor.as_model`."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.uses_text = predictor.uses_text
        self.config = predictor.config
        self.backend = predictor.backend

    def parameters(self) -> Any:
        return self.predictor.model.parameters()

    def __call__(self, images: torch.Tensor, text: str | list[str] | None = None) -> Any:
        p = self.predictor
        if not p.uses_text:
            return _Logits(p._logits(images, None))
        prompts = [text] * images.shape[0] if isinstance(text, str) else list(text or [])
        return _Logits(p._logits(images, prompts))


@dataclass
class _Logits:
    logits: torch.Tensor


def predict_tile(predictor: Predictor, tile: Any, prompt: str | None = None, **kwargs: Any) -> Prediction:
    """Convenience: run ``predictor`` on a :class:`metaseg.geo.Tile` (uses its ``valid`` mask)."""
    return predictor.predict(tile.rgb, prompt, valid=getattr(tile, "valid", None), **kwargs)


__all__ = [
    "BLEND_EPS",
    "BackendModel",
    "Prediction",
    "Predictor",
    "blend_weight",
    "predict_tile",
    "resolve_device",
    "tune_malloc",
    "window_starts",
]
