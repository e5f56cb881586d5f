"""The backends phase: the pair through each backend's predictor seam, and agreement with torch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from metaseg.bench.measure import (
    median,
    sig,
    spread,
    time_call,
)
from metaseg.bench.options import PAIRS, BenchOptions
from metaseg.errors import UnknownNameError

ROLES = ("metasegnet", "baseline")


def backends_phase(options: BenchOptions, device: Any, size: int, say: Callable[[str], Any]) -> dict[str, Any]:
    """Time the pair through each backend's predictor seam, and their class agreement with torch."""
    import torch

    backends = ["torch"] + [b for b in dict.fromkeys(options.backends) if b != "torch"]
    preds, weights = _load_predictors(options, device, backends, say)
    times = _time_predictors(preds, options, device, size, say)
    out_times = {b: {f"{role}_ms": sig(median(times[(b, role)])) for role in ROLES} for b in backends}
    speedup = {}
    for b in backends:
        t, o = out_times["torch"], out_times[b]
        speedup[b] = {"metasegnet": round(t["metasegnet_ms"] / o["metasegnet_ms"], 3),
                      "baseline": round(t["baseline_ms"] / o["baseline_ms"], 3),
                      "pair": round((t["metasegnet_ms"] + t["baseline_ms"]) / (o["metasegnet_ms"] + o["baseline_ms"]), 3)}
    say("agreement with torch on static/examples")
    agreement, agreement_min, tiles = _agreement(preds, backends)
    return {
        "backends": out_times,
        "agreement": agreement,
        "agreement_min_tile": agreement_min,
        "agreement_tiles": [t.name for t in tiles],
        "backend_speedup": speedup,
        "backend_spread": {b: {role: spread(times[(b, role)]) for role in ROLES} for b in backends},
        "backend_weights": weights,
        "backend_threads": {b: (preds[b]["metasegnet"]._ort.threads if preds[b]["metasegnet"]._ort is not None
                                else torch.get_num_threads()) for b in backends},
    }


def _load_predictors(options: BenchOptions, device: Any, backends: list[str],
                     say: Callable[[str], Any]) -> tuple[dict[str, dict[str, Any]], str]:
    """(backend → role → Predictor, ``shipped`` or ``random`` weights): shipped weights where the
    pair has them, else random weights with the benchmark seed (one model shared by all backends)."""
    import torch

    from metaseg.checkpoints import demo_checkpoint_path
    from metaseg.errors import CheckpointError
    from metaseg.inference import Predictor
    from metaseg.models.registry import create_model

    names = dict(zip(ROLES, PAIRS[options.pair], strict=True))
    preds: dict[str, dict[str, Predictor]] = {b: {} for b in backends}
    weights = "shipped"
    for role, name in names.items():
        try:
            demo_checkpoint_path(name)
            shipped = True
        except (CheckpointError, UnknownNameError):
            shipped, weights = False, "random"
        model = None
        for b in backends:
            say(f"loading {name} with backend {b}" + ("" if b == "torch" else " (exports and verifies on first use)"))
            if shipped:
                preds[b][role] = Predictor.from_name(name, device, batch_size=options.batch, backend=b,
                                                     channels_last=options.channels_last)
            else:
                if model is None:
                    torch.manual_seed(options.seed)
                    model = create_model(name, pretrained="none")
                preds[b][role] = Predictor(model, device, batch_size=options.batch, backend=b,
                                           channels_last=options.channels_last)
    return preds, weights


def _time_predictors(preds: dict[str, dict[str, Any]], options: BenchOptions, device: Any, size: int,
                     say: Callable[[str], Any]) -> dict[tuple[str, str], list[float]]:
    """(backend, role) → times of the predictor's model seam, interleaved across backends and models."""
    import numpy as np
    import torch

    backends = list(preds)
    rng = np.random.default_rng(options.seed)
    rgb = rng.integers(0, 256, (options.batch, size, size, 3), dtype=np.uint8)
    prompt = options.prompt
    calls = []
    for b in backends:
        for role in ROLES:
            p = preds[b][role]
            x = p._to_tensor(rgb)
            text = prompt if p.uses_text else None
            if text is not None:
                p.text_features(text)
            calls.append((b, role, (lambda p=p, x=x, text=text: p._logits(x, text))))
    times: dict[tuple[str, str], list[float]] = {(b, r): [] for b, r, _ in calls}
    say(f"timing backends {', '.join(backends)} at {options.batch}×3×{size}×{size} ({options.repeats} repeats, interleaved)")
    with torch.inference_mode():
        for _ in range(max(options.warmup, 1)):
            for _b, _r, fn in calls:
                fn()
        for r in range(options.repeats):
            order = calls if r % 2 == 0 else calls[::-1]
            for b, role, fn in order:
                times[(b, role)].append(time_call(fn, device))
    return times


def _agreement(preds: dict[str, dict[str, Any]], backends: list[str]) -> tuple[dict, dict, list]:
    """(backend → role → fraction of pixels equal to torch's, the same per worst tile, the tiles)."""
    from metaseg.backends import example_tiles, tile_prompt

    tiles = example_tiles()
    agreement: dict[str, dict[str, float]] = {}
    agreement_min: dict[str, dict[str, float]] = {}
    ref: dict[str, list[Any]] = {}
    for b in backends:
        agreement[b], agreement_min[b] = {}, {}
        for role in ROLES:
            p = preds[b][role]
            masks = [p.predict(t.rgb, tile_prompt(p.meta, t.zone) if p.uses_text else None).index for t in tiles]
            if b == "torch":
                ref[role] = masks
            same = [float((m == r).sum()) for m, r in zip(masks, ref[role], strict=True)]
            total = sum(m.size for m in masks)
            agreement[b][role] = round(sum(same) / max(total, 1), 5)
            agreement_min[b][role] = round(min(s / m.size for s, m in zip(same, masks, strict=True)), 5) if masks else 1.0
    return agreement, agreement_min, tiles
