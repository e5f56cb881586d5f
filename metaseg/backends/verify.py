"""Verification of a graph against the PyTorch model on real tiles (class agreement, max |Δlogit|)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from metaseg.backends.export import ImagePath, prompt_tokens
from metaseg.backends.tiles import (
    EXAMPLES_DIR,
    ExampleTile,
    _images,
    _pseudo_tiles,
    example_tiles,
    tile_prompt,
)

if TYPE_CHECKING:
    from torch import nn

    from metaseg.backends.runtime import OrtModel

#: Verification thresholds (fraction of pixels with the same class as torch).
MIN_AGREEMENT = {"onnx": 0.999, "onnx-int8": 0.95}
VERIFY_SIDE = 256  #: verification tiles are centre crops of at most this side


def verify(session: OrtModel, model: nn.Module, meta: dict[str, Any] | None,
           tiles: Sequence[ExampleTile] | None = None) -> dict[str, Any]:
    """Compare ONNX Runtime with PyTorch on real tiles: per-tile max |Δlogit| and class agreement."""
    import torch

    if tiles is None:  # the example tiles, centre-cropped to at most VERIFY_SIDE² (the 512² Landsat crop)
        tiles = [ExampleTile(t.name, _centre_crop(t.rgb, VERIFY_SIDE), t.zone) for t in
                 (example_tiles() if EXAMPLES_DIR.is_dir() else _pseudo_tiles())]
    wrapper = ImagePath(model).eval()
    rows = []
    for tile in tiles:
        images = _images(tile.rgb)
        tokens = prompt_tokens(model, tile_prompt(meta, tile.zone)) if getattr(model, "uses_text", False) else None
        with torch.inference_mode():
            ref = wrapper(images.to(next(model.parameters()).device),
                          None if tokens is None else tokens.to(next(model.parameters()).device)).float().cpu().numpy()
        got = session.run(images.numpy(), None if tokens is None else tokens.numpy())
        rows.append({"tile": tile.name, "size": list(tile.rgb.shape[:2]),
                     "max_abs_diff": float(np.abs(got - ref).max()),
                     "agreement": float((got.argmax(1) == ref.argmax(1)).mean())})
    return {"tiles": rows,
            "agreement_min": min(r["agreement"] for r in rows),
            "agreement_mean": float(np.mean([r["agreement"] for r in rows])),
            "max_abs_diff": max(r["max_abs_diff"] for r in rows)}


def _centre_crop(rgb: np.ndarray, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return rgb[y:y + side, x:x + side]


def _passes(backend: str, check: dict[str, Any]) -> bool:
    if backend == "onnx":
        return check["agreement_min"] >= MIN_AGREEMENT["onnx"]
    return check["agreement_mean"] >= MIN_AGREEMENT["onnx-int8"]
