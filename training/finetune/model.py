"""The model side of teaching: which checkpoint to start from, and the classifier surgery
(a new classifier for a new class set, untaught classes switched off)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metaseg.errors import ConfigError

CLASS_MAP_DIR = Path(__file__).resolve().parents[1] / "class_maps"
#: Classifier bias of a class that was never labelled: its logit stays ~50 below the others.
SILENT_BIAS = -50.0


def resolve_base(base: str | Path) -> tuple[str, str, Path, dict[str, Any]]:
    """``(name as given, what to load, weights file, checkpoint JSON)`` of a model name or checkpoint."""
    from metaseg.checkpoints import demo_checkpoint_path, read_checkpoint_meta, resolve_checkpoint
    from metaseg.models.registry import VARIANTS

    text = str(base).strip()
    if not text:
        raise ConfigError("no base model given (--model NAME or --checkpoint CKPT)")
    target = str(demo_checkpoint_path(text)) if text in VARIANTS else text  # no shipped weights: CheckpointError
    weights, meta_path = resolve_checkpoint(target)
    return text, target, weights, read_checkpoint_meta(meta_path)


def new_classifier(model: Any, old_names: Sequence[str], new_cs: Any, old_set: str, use_map: bool) -> str:
    """Replace the head's classifier for ``new_cs``; returns how it was initialised."""
    import torch
    from torch import nn

    old = model.head.classifier
    new = nn.Conv2d(old.in_channels, new_cs.num_classes, 1)
    how = "random"
    path = CLASS_MAP_DIR / f"{old_set}_to_{new_cs.name}.json"
    if use_map and path.is_file():
        try:
            mapping = json.loads(path.read_text(encoding="utf-8")).get("map") or {}
        except (OSError, json.JSONDecodeError):
            mapping = {}
        with torch.no_grad():
            hits = 0
            for j, name in enumerate(new_cs.names):
                src = [i for i, n in enumerate(old_names) if mapping.get(n) == name]
                if src:
                    new.weight[j] = old.weight[src].mean(0)
                    new.bias[j] = old.bias[src].mean(0)
                    hits += 1
        if hits:
            how = f"class map {path.name} ({hits}/{new_cs.num_classes} classes)"
    model.head.classifier = new.to(old.weight.device)
    model.config = model.config.replace(num_classes=new_cs.num_classes, class_set=new_cs.name)
    return how


def silence_untaught(model: Any, taught: Sequence[int]) -> list[int]:
    """Switch off the classifier rows of classes without a labelled pixel; returns those classes.

    A few strokes say nothing about an unpainted class; the base model's idea of it (another
    dataset's, or SynthEarth's) only adds false positives on the user's imagery. Painting the
    class teaches it.
    """
    import torch

    clf = model.head.classifier
    off = [c for c in range(clf.out_channels) if c not in set(taught)]
    with torch.no_grad():
        for c in off:
            clf.weight[c].zero_()
            clf.bias[c] = SILENT_BIAS
    return off
