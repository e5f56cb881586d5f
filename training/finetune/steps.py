"""The training steps of a teaching run: windows on labelled pixels, the labelled-pixel loss, the
learning-rate schedule, the loop with its budget / step / plateau stop, and the progress bar."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from training.finetune.features import batch_text, cache_features, encode_prompts, flip, window_stages
from training.finetune.recipe import IGNORE, Recipe, TeachCancelled, TeachTile

#: Seconds kept at the end of a budget for writing and verifying the folder.
SAVE_RESERVE_S = 1.5


class Bar:
    """tqdm on stderr (time-based for a budget, step-based otherwise) + the caller's callback."""

    def __init__(self, total: float, unit: str, enabled: bool, progress: Callable[[float, str], None] | None):
        self.total, self.unit, self.progress, self.bar = total, unit, progress, None
        if enabled:
            from tqdm import tqdm

            fmt = "{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]{postfix}" if unit == "s" else None
            self.bar = tqdm(total=total, unit=unit, desc="teach", file=sys.stderr, leave=False, bar_format=fmt)

    def update(self, done: float, message: str) -> None:
        if self.bar is not None:
            self.bar.n = min(done, self.total)
            self.bar.set_postfix_str(message, refresh=False)
            self.bar.refresh()
        if self.progress is not None:
            self.progress(max(0.0, min(1.0, done / self.total)), message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Sampler:
    """Windows centred (32-px aligned) on random labelled pixels of random tiles and flips."""

    def __init__(self, tiles: list[TeachTile], window: int, align: int, seed: int):
        self.tiles, self.window, self.align = tiles, window, align
        self.rng = np.random.default_rng(seed)
        self.points = [np.flatnonzero(t.target.reshape(-1) != IGNORE) for t in tiles]
        self.weights = np.array([len(p) for p in self.points], dtype=np.float64) ** 0.5
        self.weights /= self.weights.sum()

    def draw(self, flips: int) -> tuple[int, int, int, int, int, int]:
        """(tile, flip, y0, x0, h, w) in the flipped, padded tile's pixel grid."""
        ti = int(self.rng.choice(len(self.tiles), p=self.weights))
        tile = self.tiles[ti]
        H, W = tile.target.shape  # noqa: N806
        fl = int(self.rng.integers(0, flips))
        idx = int(self.points[ti][self.rng.integers(0, len(self.points[ti]))])
        y, x = divmod(idx, W)
        if fl & 1:
            x = W - 1 - x
        if fl & 2:
            y = H - 1 - y
        a = self.align
        ph, pw = H + (-H) % a, W + (-W) % a
        h, w = min(self.window, ph), min(self.window, pw)
        y0 = int(np.clip((y - h // 2) // a * a, 0, ph - h))
        x0 = int(np.clip((x - w // 2) // a * a, 0, pw - w))
        return ti, fl, y0, x0, h, w

    def batch(self, flips: int, size: int) -> list[tuple[int, int, int, int, int, int]]:
        """``size`` draws; only the first when their window sizes differ (a tile smaller than a window)."""
        draws = [self.draw(flips) for _ in range(size)]
        if len({(d[4], d[5]) for d in draws}) > 1:
            draws = [draws[0]]
        return draws


def _cut(a: np.ndarray, fill: Any, y0: int, x0: int, h: int, w: int, shape: tuple[int, ...]) -> np.ndarray:
    out = np.full(shape, fill, dtype=np.uint8)
    part = a[y0:y0 + h, x0:x0 + w]
    out[:part.shape[0], :part.shape[1]] = part
    return out


def _target_window(tile: TeachTile, fl: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    return _cut(flip(tile.target, fl), IGNORE, y0, x0, h, w, (h, w))


def labelled_loss(logits: Any, target: Any, weights: Any = None, dice: bool = True) -> Any:
    """CE (+ soft Dice) over the labelled pixels only: unlabelled (255) pixels are not even gathered.

    Args:
        logits: B×K×H×W; target: B×H×W class indices, 255 = unlabelled.
        weights: optional K class weights of the cross-entropy.
        dice: add ``1 - mean_k Dice_k`` over the labelled pixels (classes present in the
            batch or predicted there; smoothing 1, as :func:`metaseg.models.losses.dice_loss`).
    """
    import torch.nn.functional as F

    k = logits.shape[1]
    sel = target != IGNORE
    picked = logits.permute(0, 2, 3, 1)[sel].float()  # N×K, only labelled pixels
    y = target[sel].long()
    if picked.shape[0] == 0:
        return logits.sum() * 0.0
    loss = F.cross_entropy(picked, y, weight=weights)
    if dice:
        probs = picked.softmax(dim=1)
        onehot = F.one_hot(y, k).float()
        inter = (probs * onehot).sum(0)
        denom = probs.sum(0) + onehot.sum(0)
        loss = loss + 1.0 - ((2.0 * inter + 1.0) / (denom + 1.0)).mean()
    return loss


def _class_weights(tiles: list[TeachTile], k: int) -> np.ndarray:
    counts = np.zeros(k, dtype=np.float64)
    for t in tiles:
        counts += np.bincount(t.target[t.target != IGNORE].astype(np.int64), minlength=k)[:k]
    w = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1.0)), 0.0)
    present = counts > 0
    return w / w[present].mean()


def _optimizer(model: Any, recipe: Recipe) -> Any:
    """AdamW over neck, head and CAF decoder (+ the encoder when it is not frozen); the rest frozen."""
    import torch

    for p in model.parameters():
        p.requires_grad_(False)
    trained = [model.neck, model.head] + ([model.decoder] if model.decoder is not None else [])
    for mod in trained:
        for p in mod.parameters():
            p.requires_grad_(True)
    groups = [{"params": [p for m in trained for p in m.parameters()], "lr": recipe.lr}]
    if not recipe.freeze_encoder:
        enc = [p for p in model.image_encoder.parameters()]
        for p in enc:
            p.requires_grad_(True)
        groups.append({"params": enc, "lr": recipe.encoder_lr})
    for g in groups:
        g["base_lr"] = g["lr"]
    return torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)


def _set_lr(opt: Any, recipe: Recipe, n: int, steps: int | None, budget_s: float | None,
            ts: float, t_train: float, t0: float) -> None:
    """Linear warm-up, then cosine decay over the step count or the budget's remaining time."""
    frac = (n / steps) if steps is not None else 0.0
    if budget_s is not None:
        frac = max(frac, (ts - t_train) / max(1e-6, budget_s - (t_train - t0) - SAVE_RESERVE_S))
    scale = min(1.0, (n + 1) / max(1, recipe.warmup)) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * max(scale, 0.02)


def _forward(model: Any, tiles: list[TeachTile], draws: list[tuple[int, ...]], texts: Any, recipe: Recipe,
             dev: Any, size: Any) -> Any:
    """Logits of a batch's windows: from the cached features (frozen encoder) or from image crops."""
    import torch
    import torch.nn.functional as F

    prompts = [tiles[d[0]].prompt for d in draws]
    if recipe.freeze_encoder:
        stages = window_stages(model, tiles, draws)
        top = model.neck(stages[-1])
        if model.uses_text:
            top, _, _, _ = model.decoder(top, batch_text(texts, prompts), None, with_itm=False)
        logits = model.head(stages[:-1] + [top])
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    imgs = [_cut(flip(tiles[ti].rgb, fl), 0, y0, x0, h, w, (h, w, 3)) for ti, fl, y0, x0, h, w in draws]
    x = torch.from_numpy(np.stack(imgs)).to(dev).permute(0, 3, 1, 2).float() / 255.0
    text = batch_text(texts, prompts) if model.uses_text else None
    return model(x, text).logits


def _loop(model, tiles, recipe, opt, weights, texts, sampler, flips, dev, steps, budget_s, t0, left, bar, cancel):
    """Optimiser steps until the step count, the budget or a plateau; returns (steps, why, smoothed loss)."""
    import torch

    ema = best = None
    since_best, n, step_time, stopped = 0, 0, 0.0, "steps"
    t_train = time.monotonic()
    while True:
        if steps is not None and n >= steps:
            stopped = "steps"
            break
        if budget_s is not None and left() < SAVE_RESERVE_S + max(step_time, 0.05) and n > 0:
            stopped = "budget"
            break
        if cancel is not None and cancel.is_set():
            raise TeachCancelled("teaching cancelled")
        ts = time.monotonic()
        _set_lr(opt, recipe, n, steps, budget_s, ts, t_train, t0)
        draws = sampler.batch(flips, recipe.batch)
        tgt = torch.from_numpy(np.stack([_target_window(tiles[d[0]], *d[1:]) for d in draws])).to(dev)
        logits = _forward(model, tiles, draws, texts, recipe, dev, tgt.shape[-2:])
        loss = labelled_loss(logits, tgt, weights, recipe.dice)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += 1
        value = float(loss.detach())
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        if best is None or ema < best * 0.99:
            best, since_best = ema, 0
        else:
            since_best += 1
        dt = time.monotonic() - ts
        step_time = dt if n == 1 else 0.8 * step_time + 0.2 * dt
        bar.update((time.monotonic() - t0) if steps is None else n, f"step {n} loss {ema:.3f}")
        if recipe.patience and n >= recipe.min_steps and since_best >= recipe.patience:
            stopped = "plateau"
            break
    return n, stopped, ema


def train(model, tiles, cs, recipe: Recipe, dev, seed, steps, budget_s, t0, left, bar, cancel):
    """Train ``model`` in place; returns ``(steps, stopped, loss, flips cached, time caching ended)``."""
    import torch

    opt = _optimizer(model, recipe)
    weights = torch.tensor(_class_weights(tiles, cs.num_classes), dtype=torch.float32, device=dev) if recipe.balance else None
    texts = encode_prompts(model, tiles, dev) if model.uses_text else None
    sampler = Sampler(tiles, recipe.window, model.config.pad_multiple, seed)
    if recipe.freeze_encoder:
        flips = cache_features(model, tiles, recipe, dev, t0, budget_s, steps, bar, cancel)
    else:
        flips = max(1, min(4, recipe.flips))
    t_cached = time.monotonic()
    model.train()
    model.image_encoder.eval()  # BatchNorm statistics stay those of the base model
    n, stopped, ema = _loop(model, tiles, recipe, opt, weights, texts, sampler, flips, dev, steps, budget_s,
                            t0, left, bar, cancel)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return n, stopped, ema, flips, t_cached
