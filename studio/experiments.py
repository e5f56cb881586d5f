"""Prompt experiments for the app's Experiments tab (no gradio here): start a sweep, read results.

Starting an experiment runs :func:`training.sweep.run_sweep` on the same Dask runner as the CLI
(``METASEG_SWEEP_SCHEDULER`` = an existing cluster; else ``METASEG_SWEEP_WORKERS`` local worker
processes, default 0 = one worker thread inside the app process, which starts in a second).
The evaluation set is either a dataset folder on the server or the tiles that have saved labels
in the store (the Label tab keeps a copy of the tile next to its label for that).

Showing an experiment reads only the stored counts (:mod:`prompts_db.experiments`); the tile
gallery re-runs the two compared variants on the few tiles it shows (the masks are not stored).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.errors import ConfigError
from training.config import DATASET_NAMES

log = logging.getLogger(__name__)

#: built-in variants offered as checkboxes (``id:N`` versions come from a multiselect)
BUILTIN_VARIANTS = ("climate", "generic", "none", "wrong", "source:llm", "source:user")
#: the dataset readers, SynthEarth first (it ships with the project); names from training.config
DATASETS = ("synthearth", *(d for d in DATASET_NAMES if d != "synthearth"))
LABELLED = "labelled tiles in the store"
TILE_STEM = "tile"


def _store():
    from studio.prompt_store import get_store

    return get_store()


# ----------------------------------------------------------------------------- evaluation sets


def keep_labelled_tile(tile_path: str | os.PathLike | None, label_folder: Path) -> Path | None:
    """Keep a copy of the tile beside its saved label (``tile.<ext>``) so it can be evaluated later."""
    if not tile_path or not Path(tile_path).is_file():
        return None
    dest = Path(label_folder) / f"{TILE_STEM}{Path(tile_path).suffix.lower() or '.tif'}"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tile_path, dest)
    return dest


def labelled_set(out_dir: Path, class_set: str | None = None,
                 label_ids: set[int] | None = None) -> tuple[Path, str, int]:
    """A dataset folder (SynthEarth/OpenEarthMap layout, split ``test``) of the stored labels whose
    tile was kept: the newest label per tile. Returns ``(root, class set, tiles)``.

    ``label_ids``: only these labels (a visitor's own; ``None`` = every label in the store, when the
    operator shares them).

    Raises:
        ConfigError: no saved label with its tile (of ``class_set``, when given).
    """
    rows = _store().labels(class_set=class_set)
    if label_ids is not None:
        rows = [r for r in rows if r.get("id") in label_ids]
    picked: dict[str, dict[str, Any]] = {}
    for r in rows:  # newest first: keep the first label per tile
        folder = Path(r["mask_path"]).parent
        tiles = sorted(folder.glob(f"{TILE_STEM}.*"))
        if r["tile_hash"] in picked or not tiles or not Path(r["mask_path"]).is_file():
            continue
        if picked and next(iter(picked.values()))["class_set"] != r["class_set"]:
            continue  # one class set per experiment: the newest label's
        picked[r["tile_hash"]] = {**r, "tile": tiles[0]}
    if not picked:
        raise ConfigError(
            "no saved labels with their tile yet: label a tile in the Label tab (Save as ground truth) first"
        )
    cs = next(iter(picked.values()))["class_set"]
    root = Path(out_dir)
    if root.exists():
        shutil.rmtree(root)
    (root / "labelled" / "images").mkdir(parents=True)
    (root / "labelled" / "labels").mkdir(parents=True)
    names = []
    for i, r in enumerate(picked.values(), start=1):
        name = f"labelled_{i}{r['tile'].suffix}"
        shutil.copyfile(r["tile"], root / "labelled" / "images" / name)
        shutil.copyfile(r["mask_path"], root / "labelled" / "labels" / name)  # readers detect the format
        names.append(name)
    (root / "test.txt").write_text("\n".join(names) + "\n")
    for split in ("train", "val"):
        (root / f"{split}.txt").write_text("")
    (root / "synthearth.json").write_text(
        json.dumps({"class_set": cs, "source": "labelled tiles in the store"})
    )
    return root, cs, len(names)


def zones_of(dataset: str, root: str, split: str) -> tuple[list[str | None], str]:
    """``(zones present, class set)`` of a dataset split (as the sweep reads them)."""
    from training.datasets import build_dataset

    ds = build_dataset(dataset, root, split, prompt_mode="climate", store=_store())
    if len(ds) == 0:
        raise ConfigError(f"split {split!r} of {root} has no tiles")
    return ds.distinct_zones(), ds.class_set.name


def version_choices(zones: list[str | None], class_set: str) -> list[tuple[str, str]]:
    """``(label, "id:N")`` of every stored prompt version for the zones present (newest first)."""
    out = []
    store = _store()
    for z in zones:
        for r in store.list(zone=z or "generic", class_set=class_set):
            out.append((f"#{r.id} {r.zone} v{r.version} ({r.source}, {r.created_at[:10]})", f"id:{r.id}"))
    return out


def model_args(sources: dict[str, str] | None = None) -> dict[str, Any]:
    """The models a session uses (its ``model_sources``; default: the server's), as
    :func:`training.sweep.run_sweep` arguments."""
    from studio.models import MODELS

    out: dict[str, Any] = {}
    for role, (name_key, ck_key) in {"metasegnet": ("model", "checkpoint"),
                                     "baseline": ("baseline", "baseline_checkpoint")}.items():  # fmt: skip
        src = MODELS.source_of(role, (sources or {}).get(role) or None)
        if src.startswith("demo:"):
            out[name_key], out[ck_key] = src.split(":", 1)[1], None
        else:
            out[name_key], out[ck_key] = None, src
    return out


def start(
    *,
    source: str,
    dataset: str | None,
    root: str | None,
    split: str | None,
    variants: list[str],
    versions: list[str],
    limit: int | None,
    work_dir: Path,
    on_progress: Callable[[int, int], Any] | None = None,
    sources: dict[str, str] | None = None,
    label_ids: set[int] | None = None,
) -> dict[str, Any]:
    """Run a prompt experiment over the chosen evaluation set; returns the sweep's report.

    A dataset folder must lie under the operator's ``METASEG_DATA_ROOTS`` (:func:`studio.policy.data_folder`);
    the labelled tiles are ``label_ids``'s (``None``: all, when shared); ``sources`` are the
    session's models.
    """
    from studio import policy
    from training.sweep import run_sweep

    chosen = [*variants, *versions]
    if not chosen:
        raise ConfigError("pick at least one variant or stored prompt version")
    if source == LABELLED:
        root_p, _cs, _n = labelled_set(Path(work_dir) / "labelled_set", label_ids=label_ids)
        dataset, root, split = "synthearth", str(root_p), "test"
    else:
        if not root or not str(root).strip():
            raise ConfigError("type the dataset folder on the server")
        root = str(policy.data_folder(str(root)))
        if not dataset or not split:
            raise ConfigError("pick the dataset and the split")
    scheduler = os.environ.get("METASEG_SWEEP_SCHEDULER", "").strip() or None
    workers = int(os.environ.get("METASEG_SWEEP_WORKERS", "0") or 0)
    return run_sweep(
        **model_args(sources), dataset=dataset, root=root, split=split, variants=chosen, workers=workers,
        scheduler=scheduler, limit=int(limit) if limit else None, store=_store(), progress=False,
        on_progress=on_progress, notes="started from the app" + (" (labelled tiles)" if source == LABELLED else ""),
    )  # fmt: skip


# ----------------------------------------------------------------------------- showing


def experiment_choices(ids: list[int] | None = None) -> list[tuple[str, int]]:
    """Dropdown choices of the stored experiments (only ``ids`` when given: a visitor's own)."""
    from prompts_db import experiments as ex

    keep = None if ids is None else {int(i) for i in ids}
    return [
        (f"#{e['id']} {e['created'][:16].replace('T', ' ')} · {e['model']} · {e['dataset']}/{e['split']} · "
         f"{e['tiles']}/{e['n_tiles']} tiles · {', '.join(e['variants'])}"
         + ("" if e["status"] == "complete" else f" ({e['status']})"), e["id"])
        for e in ex.list_experiments(_store()) if keep is None or int(e["id"]) in keep
    ]  # fmt: skip


def load(experiment_id: Any):
    from prompts_db import experiments as ex

    if experiment_id in (None, ""):
        raise ConfigError("pick an experiment")
    return ex.load(_store(), experiment_id)


def _rows(data: Any) -> list[tuple[str, dict[str, Any]]]:
    from prompts_db import experiments as ex

    s = ex.summarize(data)
    rows = [("baseline", s["baseline"])] if s["baseline"] else []
    return rows + list(s["variants"].items())


LEADERBOARD_COLS = ["variant", "mIoU", "mF1", "OA", "Δ mIoU vs baseline", "Δ mIoU vs climate"]


def leaderboard(data: Any) -> list[list[Any]]:
    """Rows ``variant, mIoU, mF1, OA, Δ vs baseline, Δ vs climate``, best mIoU first."""
    rows = _rows(data)
    ref = dict(rows)
    base, clim = ref.get("baseline"), ref.get("climate")

    def d(m: dict[str, Any], r: dict[str, Any] | None) -> float | None:
        if r is None or m["miou"] is None or r["miou"] is None:
            return None
        return round(m["miou"] - r["miou"], 2)

    out = [[v, m["miou"], m["mf1"], m["oa"], d(m, base), d(m, clim)] for v, m in rows]
    return sorted(out, key=lambda r: -(r[1] if r[1] is not None else -1))


def class_chart(data: Any) -> np.ndarray:
    """Grouped bar chart: per-class IoU, one bar per variant (baseline included), as RGB."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = _rows(data)
    names = [data.class_names[i] for i in data.scored]
    x = np.arange(len(names))
    width = 0.8 / max(1, len(rows))
    fig = Figure(figsize=(8.5, 3.6), dpi=110)
    ax = fig.add_subplot(111)
    colors = [
        "#888888",
        "#1e6eff",
        "#ff9600",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#17becf",
    ]
    for j, (v, m) in enumerate(rows):
        vals = [m["per_class"].get(n, {}).get("iou") or 0.0 for n in names]
        ax.bar(x - 0.4 + width * (j + 0.5), vals, width, label=v, color=colors[j % len(colors)])
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("IoU %")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(f"Per-class IoU over {len(data.tiles)} tiles", fontsize=9)
    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def variant_names(data: Any) -> list[str]:
    return (["baseline"] if data.baseline is not None else []) + list(data.variants)


def _spec(data: Any, variant: str) -> Any:
    from metaseg.checkpoints import WEIGHTS_DIR
    from metaseg.runner import ModelSpec

    h = data.header
    name, ck = (h["baseline"], h["baseline_checkpoint"]) if variant == "baseline" else (h["model"], h["checkpoint"])
    if ck and Path(ck).resolve() == (WEIGHTS_DIR / f"{name}.safetensors").resolve():
        ck = None  # the shipped demo weights: the same spec (and cached model) as the sweep's
    return ModelSpec(name=name, checkpoint=ck)


def gallery(
    data: Any, class_name: str | None, a: str, b: str, k: int = 8
) -> tuple[list[Any], list[dict[str, Any]]]:
    """The ``k`` tiles where ``b`` gains most over ``a`` (ΔIoU of ``class_name``; None = mIoU), and the
    ``k`` where it loses most. Thumbnails show ``a``'s overlay left, ``b``'s right.

    Returns ``(gallery items (image, caption), picks)``; ``picks[i]`` has the tile's ``image`` path
    and ``prompt`` (``b``'s text, or ``a``'s when ``b`` is the baseline) for opening it in Segment.
    """
    from metaseg.classes import get_class_set
    from metaseg.runner import load_predictor
    from metaseg.visualize import overlay
    from prompts_db import experiments as ex
    from training.sweep import read_tile

    if a == b:
        raise ConfigError("pick two different variants to compare")
    ranked = ex.ranked_tiles(data, a, b, class_name or None)
    shown = ranked[:k] + [r for r in ranked[-k:][::-1] if r not in ranked[:k]]
    cs = get_class_set(data.header["class_set"])
    items, picks = [], []
    store = _store()
    for r in shown:
        rgb, _label = read_tile(r["image"], r["label"], cs.name)
        panels = []
        for v in (a, b):
            text = ex.prompt_text(store, data, v, r["index"])
            pred = load_predictor(_spec(data, v)).predict(rgb, text, window=rgb.shape[:2]).index
            panels.append(overlay(rgb, pred, cs, alpha=0.55))
        gap = np.full((rgb.shape[0], 4, 3), 255, np.uint8)
        thumb = np.concatenate([panels[0], gap, panels[1]], axis=1)
        what = class_name or "mIoU"
        caption = f"{r['tile']} ({r['zone'] or '-'}): {what} {a} {r['iou_a']:.1f} → {b} {r['iou_b']:.1f} (Δ {r['delta']:+.1f})"
        items.append((thumb, caption))
        prompt_variant = b if b != "baseline" else a
        # "" is a prompt too: the `none` variant's empty text (opened as "no prompt", not the zone's)
        picks.append({"image": r["image"], "tile": r["tile"], "variant": prompt_variant,
                      "prompt": ex.prompt_text(store, data, prompt_variant, r["index"]) or ""})  # fmt: skip
    return items, picks


def export_file(experiment_id: Any, fmt: str, out_dir: Path) -> Path:
    from prompts_db import experiments as ex

    text = ex.export(_store(), experiment_id, fmt)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = Path(out_dir) / f"experiment_{int(experiment_id)}.{fmt}"
    path.write_text(text, encoding="utf-8")
    return path


__all__ = [
    "BUILTIN_VARIANTS", "DATASETS", "LABELLED", "LEADERBOARD_COLS", "class_chart", "experiment_choices",
    "export_file", "gallery", "keep_labelled_tile", "labelled_set", "leaderboard", "load", "model_args", "start",
    "variant_names", "version_choices", "zones_of",
]  # fmt: skip
