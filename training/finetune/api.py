""":func:`finetune`, the one entry of teaching (the CLI and the studio's "Teach both models" call it)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.errors import ConfigError
from training.finetune.labels import label_class_set
from training.finetune.limits import check_limits
from training.finetune.model import new_classifier, resolve_base, silence_untaught
from training.finetune.output import teach_meta, write_taught_folder
from training.finetune.recipe import IGNORE, Recipe, TeachCancelled, TeachTile
from training.finetune.samples import load_tiles
from training.finetune.steps import Bar, train


def _check_args(recipe: Recipe, out: str | Path, device: Any) -> tuple[Path, str]:
    """``(out folder, device name)``; one-line ``ConfigError`` on a bad window, ``--out`` or device."""
    if recipe.window % 32 or recipe.window < 64:
        raise ConfigError(f"recipe window must be a multiple of 32 and at least 64 px, got {recipe.window}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    dev_name = str(device or "cpu")
    if dev_name.split(":")[0] not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu or cuda, got {device!r}")
    return out, dev_name


def _labels_class_set(class_set: str | None, samples: Sequence[tuple[Any, Any]], tiles: Any, base_cs: str) -> Any:
    """The class set taught: ``class_set``, else the one the label files name, else the base's."""
    from metaseg.classes import get_class_set

    if class_set is None and tiles is None:
        tagged = {label_class_set(lbl) for _, lbl in samples} - {None}
        if len(tagged) > 1:
            raise ConfigError(f"the labels use different class sets ({', '.join(sorted(tagged))}); teach one at a time")
        class_set = tagged.pop() if tagged else base_cs
    return get_class_set(class_set or base_cs)


def _prepare_model(base_target: str, base_cs: str, cs: Any, recipe: Recipe, dev_name: str, seed: int,
                   tiles: list[TeachTile]) -> tuple[Any, Any, str, list[int], float]:
    """Load the base on the device (seeded), fit its classifier to ``cs``, silence untaught classes.

    Returns ``(model, device, how the head was set up, taught class ids, time the load ended)``.
    """
    import torch

    from metaseg.checkpoints import load_checkpoint
    from metaseg.classes import get_class_set

    if dev_name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available")
    dev = torch.device(dev_name)
    torch.manual_seed(seed)
    model, _ = load_checkpoint(base_target, dev)
    t_loaded = time.monotonic()
    head_init = "kept"
    if cs.name != base_cs or cs.num_classes != model.config.num_classes:
        old_names = get_class_set(base_cs).names if base_cs in ("openearthmap", "loveda", "potsdam") else ()
        head_init = new_classifier(model, old_names, cs, base_cs, recipe.class_map_init)
    model.to(dev)
    taught_ids = sorted({int(v) for t in tiles for v in np.unique(t.target) if v != IGNORE})
    if recipe.only_taught:
        silence_untaught(model, taught_ids)
    return model, dev, head_init, taught_ids, t_loaded


def _result(out: Path, base_text: str, cs: Any, tiles: list[TeachTile], trained: tuple, seconds: float,
            head_init: str, silenced: list[str], timing: dict[str, float], recipe: Recipe) -> dict[str, Any]:
    n_steps, stopped, last_loss, flips_used, _ = trained
    return {
        "checkpoint": str(out),
        "base": base_text,
        "class_set": cs.name,
        "steps": n_steps,
        "seconds": seconds,
        "labelled_pixels": int(sum(t.labelled for t in tiles)),
        "tiles": len(tiles),
        "stopped": stopped,
        "loss": None if last_loss is None else round(float(last_loss), 4),
        "head": head_init,
        "flips_cached": flips_used,
        "silenced_classes": silenced,
        "timing": timing,
        "recipe": recipe.to_dict(),
    }


def finetune(base: str | Path, samples: Sequence[tuple[str | Path, str | Path]], *, out: str | Path,
             class_set: str | None = None, budget_s: float | None = 120.0, steps: int | None = None,
             device: str = "cpu", seed: int = 0, progress: Callable[[float, str], None] | None = None,
             cancel: threading.Event | None = None, prompt_for: Callable[[Path], str] | None = None,
             recipe: Recipe | None = None, show_bar: bool = False, tiles: list[TeachTile] | None = None,
             budget_cap_s: float | None = None) -> dict[str, Any]:
    """Fine-tune ``base`` on labelled tiles and write an export-style folder to ``out``.

    Args:
        base: a variant name with shipped weights (``metasegnet_demo``) or a checkpoint
            (file, stem, exported/taught folder, hub id).
        samples: ``(image path, label path)`` pairs; labels in the class set's official encoding
            or the project's own label files (255 = unlabelled).
        out: folder to write (``model.safetensors``, ``config.json``, ``README.md``).
        class_set: the labels' class set (default: the label files' own tag, else the base's).
        budget_s: wall-clock budget of the whole call (``None`` = no time limit, give ``steps``).
        steps: exact number of optimiser steps (with a budget too: whichever ends first).
        device: ``cpu`` or ``cuda``.
        seed: seeds window sampling, torch and the new classifier.
        progress: ``progress(fraction 0..1, message)`` called while it runs.
        cancel: set it to stop; the call then raises :class:`TeachCancelled` and writes nothing.
        prompt_for: ``prompt_for(image path) -> str`` overrides each tile's zone prompt.
        recipe: training choices (default: :class:`Recipe`, the measured one).
        show_bar: draw the tqdm bar on stderr (the CLI does).
        tiles: already loaded tiles (instead of ``samples``; used by ``--dataset``).
        budget_cap_s: cap on ``budget_s`` (default: :func:`max_budget_s`).

    Returns:
        The CLI's JSON dict: ``checkpoint, base, class_set, steps, seconds, labelled_pixels, tiles``
        plus ``stopped`` (``budget``/``steps``/``plateau``), ``loss``, ``recipe``, ``head``.

    Raises:
        MetasegError: bad input (one-line message), :class:`TeachCancelled` when cancelled.
    """
    t0 = time.monotonic()
    recipe = recipe or Recipe()
    budget_s, steps = check_limits(budget_s, steps, budget_cap_s)
    out, dev_name = _check_args(recipe, out, device)
    base_text, base_target, base_weights, base_meta = resolve_base(base)
    base_cs = str(base_meta.get("class_set") or base_meta["config"].get("class_set"))
    cs = _labels_class_set(class_set, samples, tiles, base_cs)
    if tiles is None:
        tiles = load_tiles(samples, cs, uses_text=bool(base_meta["config"].get("uses_text")), prompt_for=prompt_for)
    if cancel is not None and cancel.is_set():
        raise TeachCancelled("teaching cancelled")
    model, dev, head_init, taught_ids, t_loaded = _prepare_model(base_target, base_cs, cs, recipe, dev_name, seed, tiles)

    def left() -> float:
        return math.inf if budget_s is None else budget_s - (time.monotonic() - t0)

    bar = Bar(float(budget_s) if steps is None else float(steps), "s" if steps is None else "step", show_bar, progress)
    try:
        trained = train(model, tiles, cs, recipe, dev, seed, steps, budget_s, t0, left, bar, cancel)
    finally:
        bar.close()
    n_steps, stopped, last_loss, flips_used, t_cached = trained
    if recipe.only_taught:
        silence_untaught(model, taught_ids)
    timing = {"load_s": round(t_loaded - t0, 2), "cache_s": round(t_cached - t_loaded, 2),
              "train_s": round(time.monotonic() - t_cached, 2)}
    meta_extra = teach_meta(base_text, base_weights, base_meta, cs, tiles, n_steps, time.monotonic() - t0, stopped,
                            last_loss, recipe, head_init, flips_used, seed, dev_name)
    silenced = [cs.names[c] for c in range(cs.num_classes) if recipe.only_taught and c not in taught_ids]
    meta_extra["teach"]["silenced_classes"] = silenced
    seconds = write_taught_folder(model, out, meta_extra, lambda: time.monotonic() - t0)
    if progress is not None:
        progress(1.0, f"done: {n_steps} steps in {seconds:.0f} s")
    return _result(out, base_text, cs, tiles, trained, seconds, head_init, silenced, timing, recipe)
