"""The frozen encoders' side of teaching: image features cached once per tile and flip, the
prompts encoded once, and the windows of a batch cut out of the cached features.

Flips are of the *image* (horizontal, vertical, both), so the cached features are exact; caching
the flips beyond the identity stops once it would take more than ``Recipe.cache_share`` of the
budget (the time of the previous flip, or of loading plus the identity, is the estimate).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from training.finetune.recipe import Recipe, TeachCancelled, TeachTile


def flip(a: np.ndarray, flip: int) -> np.ndarray:
    """``a`` flipped horizontally (bit 1) and/or vertically (bit 2)."""
    if flip & 1:
        a = a[:, ::-1]
    if flip & 2:
        a = a[::-1]
    return a


def encode(model: Any, rgb: np.ndarray, flip_code: int, device: Any) -> list[Any]:
    """Frozen encoder stages of one (flipped) tile, normalised and padded like ``SegModel.forward``."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(flip(rgb, flip_code))).to(device).permute(2, 0, 1)[None].float() / 255.0
    x = (x - model.mean) / model.std
    m = model.config.pad_multiple
    h, w = x.shape[-2:]
    x = F.pad(x, (0, (-w) % m, 0, (-h) % m))
    with torch.inference_mode():
        return [f.clone() for f in model.image_encoder(x)]


def cache_features(model: Any, tiles: list[TeachTile], recipe: Recipe, dev: Any, t0: float,
                   budget_s: float | None, steps: int | None, bar: Any, cancel: Any) -> int:
    """Fill each tile's ``feats`` (identity first, then flips within the share); returns the flips cached."""
    model.image_encoder.eval()
    for t in tiles:
        t.feats = [encode(model, t.rgb, 0, dev)]
    flips = 1
    spent = time.monotonic() - t0
    per_flip = max(1e-3, spent)  # an upper bound: loading is included
    share = math.inf if budget_s is None else recipe.cache_share * budget_s
    for f in range(1, max(1, min(4, recipe.flips))):
        if cancel is not None and cancel.is_set():
            raise TeachCancelled("teaching cancelled")
        t1 = time.monotonic()
        if budget_s is not None and (time.monotonic() - t0) + per_flip > share:
            break
        for t in tiles:
            t.feats.append(encode(model, t.rgb, f, dev))
        per_flip = time.monotonic() - t1
        flips += 1
        bar.update(time.monotonic() - t0 if steps is None else 0, f"cached {flips} flip(s)")
    return flips


def encode_prompts(model: Any, tiles: list[TeachTile], dev: Any) -> dict[str, Any]:
    """Each distinct tile prompt through the frozen text encoder, once."""
    import torch

    texts: dict[str, Any] = {}
    for t in tiles:
        if t.prompt not in texts:
            with torch.no_grad():
                texts[t.prompt] = model.encode_text([t.prompt]).to(dev)
    return texts


def batch_text(texts: dict[str, Any], prompts: list[str]) -> Any:
    """The encoded prompts of a batch's windows, stacked."""
    import torch

    from metaseg.models.text_encoder import TextFeatures

    feats = [texts[p] for p in prompts]
    if len(feats) == 1:
        return feats[0]
    return TextFeatures(torch.cat([f.tokens for f in feats]), torch.cat([f.mask for f in feats]),
                        torch.cat([f.ids for f in feats]))


def window_stages(model: Any, tiles: list[TeachTile], draws: list[tuple[int, int, int, int, int, int]]) -> list[Any]:
    """Per encoder stage, the batch's windows cut out of the cached features (each stage at its stride)."""
    import torch

    stages = []
    for s_i in range(len(tiles[draws[0][0]].feats[0])):
        parts = []
        for ti, fl, y0, x0, h, w in draws:
            f = tiles[ti].feats[fl][s_i]
            rows = tiles[ti].target.shape[0]
            stride = max(1, (rows + (-rows) % model.config.pad_multiple) // f.shape[-2])
            parts.append(f[:, :, y0 // stride:(y0 + h) // stride, x0 // stride:(x0 + w) // stride])
        stages.append(torch.cat(parts))
    return stages
