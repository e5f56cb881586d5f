"""The :class:`Predictor`: one model (any backend) applied to tiles of any size, and the batch entry.

The pipeline is described in :mod:`metaseg.inference`; this module holds the model calls (the one
seam :meth:`Predictor._logits`), the single pass and the window loop. Windows and blending live in
:mod:`metaseg.inference.windows`, prompt caches in :mod:`metaseg.inference.text`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metaseg.device import autocast as _autocast
from metaseg.device import pick_device
from metaseg.errors import CheckpointError, ConfigError, MetasegError
from metaseg.inference.malloc import tune_malloc
from metaseg.inference.preprocess import as_rgb, window_size
from metaseg.inference.result import Prediction, ProgressFn
from metaseg.inference.text import PromptFeatures
from metaseg.inference.windows import IGNORE_INDEX, BandBlender, blend_weight, window_boxes

logger = logging.getLogger("metaseg.inference")

DEFAULT_WINDOW = 512
DEFAULT_BATCH_SIZE = 4


def _logits_of(out: Any) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out


class Predictor(PromptFeatures):
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
        self.device = pick_device(device)
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
            device: see :func:`metaseg.device.pick_device`.
            expected_name: if given, the checkpoint must be of this variant (CheckpointError).
            **kwargs: passed to the constructor (``window``, ``batch_size``, ``backend``, ...).
        """
        from metaseg.checkpoints import load_checkpoint, resolve_checkpoint

        dev = pick_device(device)
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

    # ------------------------------------------------------------------ forward
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
        rgb = as_rgb(rgb)
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
        wh, ww = window_size(window, self.window)
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
        """The window loop (steps 2-6 of :mod:`metaseg.inference`): index, probs, windows, band bytes."""
        height, width = rgb.shape[:2]
        wh, ww = win
        if self.device.type == "cpu" and self._ort is None:
            tune_malloc()  # torch on CPU: per-window cost independent of tile size and history
        boxes = window_boxes(height, width, win, overlap)
        total = len(boxes)
        weight, weight_t = self._blend_weight(wh, ww)
        band = BandBlender((height, width), win, weight, return_probs)
        done = 0
        for b0 in range(0, total, batch_size):
            chunk = boxes[b0:b0 + batch_size]
            run = [bx for bx in chunk if valid is None or valid[bx[0]:bx[0] + wh, bx[1]:bx[1] + ww].any()]
            out = self._weighted_windows(rgb, run, win, prompt, tta, weight_t) if run else None
            if out is not None:
                band.allocate(out.shape[1])
            j = 0
            for y, x in chunk:
                band.flush(y)  # rows above this window's top are final
                if j < len(run) and run[j] == (y, x):
                    band.add(y, x, out[j])  # type: ignore[index]
                    j += 1
                done += 1
                if progress is not None:
                    progress(done, total)
        if band.acc is not None:
            band.flush(height)
        return band.index, band.probs, total, band.nbytes

    def _weighted_windows(self, rgb: np.ndarray, boxes: list[tuple[int, int]], win: tuple[int, int],
                          prompt: str | None, tta: bool, weight_t: torch.Tensor) -> np.ndarray:
        """Blend-weighted probabilities B×K×h×w (numpy float32) of the windows at ``boxes``."""
        wh, ww = win
        crops = np.stack([rgb[y:y + wh, x:x + ww] for y, x in boxes])
        out = self._forward_probs(self._to_tensor(crops), prompt, tta)
        return out.mul_(weight_t).cpu().numpy()


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

