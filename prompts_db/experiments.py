"""Prompt experiments in the prompt store: create, record tiles, summarise, list, export.

An *experiment* is one ``python -m training.sweep`` run: a model (and optionally a baseline)
scored on every tile of a dataset split under several prompt *variants*. What is stored is
counts, not ratios: for every tile the baseline's confusion matrix, and for every tile × variant
the confusion matrix, per-class intersection (TP) and union (TP + FP + FN), and the prompt version
id the tile got. Every aggregate — mIoU/OA/mF1 per variant, ΔIoU per class, the tiles where a
variant wins or loses most — is recomputed from those counts with :mod:`metaseg.metrics`, the
code behind ``python -m training.evaluate``, so the numbers are the same (percent, 2 decimals).

Writes are transactions (``BEGIN IMMEDIATE``): :func:`record_tiles` adds a batch of finished
tiles atomically, so an interrupted sweep leaves whole tiles only; :func:`finish` marks the
experiment ``complete`` or ``incomplete``. Torch-free (numpy + SQLAlchemy).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from metaseg.errors import MetasegError
from prompts_db.models import Experiment, ExperimentResult, ExperimentTile, Prompt, utc_now
from prompts_db.tile_iou import per_tile_iou, per_tile_miou  # noqa: F401 - re-exported: ex.per_tile_iou

STATUSES = ("running", "complete", "incomplete")
BASELINE = "baseline"


class ExperimentNotFoundError(MetasegError, LookupError):
    """No experiment with that id."""


@dataclass
class TileRecord:
    """One finished tile of an experiment, as the sweep hands it to :func:`record_tiles`.

    Attributes:
        position: index of the tile in the split's listing.
        tile: sample id.
        image, label: file paths.
        zone: the tile's true Köppen zone (``None``: unknown).
        seconds: worker time spent on the tile.
        baseline: the baseline's ``K × K`` confusion matrix (``None`` without a baseline).
        variants: variant → ``{"confusion": K × K, "prompt_id": int | None, "prompt_text": str | None}``.
    """

    position: int
    tile: str
    image: str
    label: str | None
    zone: str | None
    seconds: float | None
    baseline: list[list[int]] | None
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- writing


def create(
    store: Any,
    *,
    model_name: str,
    dataset: str,
    split: str,
    root: str,
    class_set: str,
    class_names: Sequence[str],
    scored: Sequence[int],
    variants: Sequence[str],
    n_tiles: int,
    checkpoint: str | None = None,
    checkpoint_hash: str | None = None,
    baseline_name: str | None = None,
    baseline_checkpoint: str | None = None,
    baseline_checkpoint_hash: str | None = None,
    backend: str = "torch",
    runner: dict[str, Any] | None = None,
    notes: str | None = None,
) -> int:
    """Add an experiment in state ``running`` and return its id."""
    if not variants:
        raise MetasegError("an experiment needs at least one variant")
    with Session(store.engine) as s, s.begin():
        row = Experiment(
            created_at=utc_now(), status="running", model_name=model_name, checkpoint=checkpoint,
            checkpoint_hash=checkpoint_hash, baseline_name=baseline_name,
            baseline_checkpoint=baseline_checkpoint, baseline_checkpoint_hash=baseline_checkpoint_hash,
            backend=backend, dataset=dataset, split=split, root=str(root), class_set=class_set,
            class_names=json.dumps(list(class_names)), scored=json.dumps([int(i) for i in scored]),
            variants=json.dumps(list(variants)), n_tiles=int(n_tiles), runner=json.dumps(runner or {}),
            timings="{}", errors="[]", notes=notes,
        )  # fmt: skip
        s.add(row)
        s.flush()
        return int(row.id)


def _counts(confusion: Any, k: int) -> tuple[np.ndarray, list[int], list[int]]:
    m = np.asarray(confusion, dtype=np.int64)
    if m.shape != (k, k):
        raise MetasegError(f"confusion matrix must be {k}x{k}, got shape {m.shape}")
    tp = np.diag(m)
    union = m.sum(0) + m.sum(1) - tp
    return m, [int(v) for v in tp], [int(v) for v in union]


def record_tiles(store: Any, experiment_id: int, tiles: Iterable[TileRecord]) -> int:
    """Store a batch of finished tiles in one transaction; returns how many were added.

    A tile already stored for this experiment (e.g. re-sent after a worker was lost) is skipped,
    so no tile is ever counted twice.
    """
    tiles = list(tiles)
    if not tiles:
        return 0
    added = 0
    with Session(store.engine) as s, s.begin():
        exp = s.get(Experiment, int(experiment_id))
        if exp is None:
            raise ExperimentNotFoundError(f"no experiment with id {experiment_id}")
        k = len(json.loads(exp.class_names))
        have = set(s.scalars(select(ExperimentTile.tile).where(ExperimentTile.experiment_id == exp.id)))
        for t in tiles:
            if t.tile in have:
                continue
            have.add(t.tile)
            base = None
            if t.baseline is not None:
                base = json.dumps(_counts(t.baseline, k)[0].tolist())
            row = ExperimentTile(
                experiment_id=exp.id, position=int(t.position), tile=str(t.tile), image=str(t.image),
                label=None if t.label is None else str(t.label), zone=t.zone,
                seconds=None if t.seconds is None else float(t.seconds), baseline_confusion=base,
                created_at=utc_now(),
            )  # fmt: skip
            s.add(row)
            s.flush()
            for variant, res in t.variants.items():
                m, inter, union = _counts(res["confusion"], k)
                s.add(
                    ExperimentResult(
                        experiment_id=exp.id,
                        tile_id=row.id,
                        variant=str(variant),
                        prompt_id=res.get("prompt_id"),
                        prompt_text=res.get("prompt_text") if res.get("prompt_id") is None else None,
                        confusion=json.dumps(m.tolist()),
                        intersection=json.dumps(inter),
                        union=json.dumps(union),
                    )  # fmt: skip
                )
            added += 1
    return added


def finish(
    store: Any,
    experiment_id: int,
    *,
    seconds: float | None = None,
    timings: dict[str, Any] | None = None,
    errors: Sequence[dict[str, Any]] = (),
    interrupted: bool = False,
    backend: str | None = None,
) -> str:
    """Mark the experiment ``complete`` (every planned tile stored, no errors) or ``incomplete``.

    ``backend``, when given, replaces the requested backend with the one that ran (``auto``
    resolved by the workers, e.g. ``onnx``). Returns the status written.
    """
    with Session(store.engine) as s, s.begin():
        exp = s.get(Experiment, int(experiment_id))
        if exp is None:
            raise ExperimentNotFoundError(f"no experiment with id {experiment_id}")
        done = len(list(s.scalars(select(ExperimentTile.id).where(ExperimentTile.experiment_id == exp.id))))
        status = "complete" if (done == exp.n_tiles and not errors and not interrupted) else "incomplete"
        exp.status = status
        exp.finished_at = utc_now()
        exp.seconds = None if seconds is None else round(float(seconds), 3)
        exp.timings = json.dumps(timings or {})
        exp.errors = json.dumps(list(errors))
        if backend:
            exp.backend = str(backend)
    return status


def delete_experiment(store: Any, experiment_id: int) -> None:
    """Remove an experiment and all its rows."""
    with Session(store.engine) as s, s.begin():
        exp = s.get(Experiment, int(experiment_id))
        if exp is None:
            raise ExperimentNotFoundError(f"no experiment with id {experiment_id}")
        s.execute(delete(ExperimentResult).where(ExperimentResult.experiment_id == exp.id))
        s.execute(delete(ExperimentTile).where(ExperimentTile.experiment_id == exp.id))
        s.delete(exp)


# ----------------------------------------------------------------------------- reading


def _id(value: Any) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ExperimentNotFoundError(f"invalid experiment id {value!r}") from None
    if not -(2**63) <= out < 2**63:
        raise ExperimentNotFoundError(f"no experiment with id {out}")
    return out


def _header(exp: Experiment, tiles_done: int) -> dict[str, Any]:
    return {
        "id": exp.id,
        "created": exp.created_at,
        "finished": exp.finished_at,
        "status": exp.status,
        "model": exp.model_name,
        "checkpoint": exp.checkpoint,
        "checkpoint_hash": exp.checkpoint_hash,
        "baseline": exp.baseline_name,
        "baseline_checkpoint": exp.baseline_checkpoint,
        "baseline_checkpoint_hash": exp.baseline_checkpoint_hash,
        "backend": exp.backend,
        "dataset": exp.dataset,
        "split": exp.split,
        "root": exp.root,
        "class_set": exp.class_set,
        "variants": json.loads(exp.variants),
        "tiles": tiles_done,
        "n_tiles": exp.n_tiles,
        "runner": json.loads(exp.runner or "{}"),
        "seconds": exp.seconds,
        "timings": json.loads(exp.timings or "{}"),
        "errors": json.loads(exp.errors or "[]"),
        "notes": exp.notes,
    }


def list_experiments(store: Any) -> list[dict[str, Any]]:
    """Every experiment, newest first: ``id, created, status, model, baseline, dataset, split,
    variants, tiles, n_tiles``."""
    with Session(store.reader) as s:
        exps = list(s.scalars(select(Experiment).order_by(Experiment.id.desc())))
        counts: dict[int, int] = {}
        for eid in s.scalars(select(ExperimentTile.experiment_id)):
            counts[eid] = counts.get(eid, 0) + 1
        keys = (
            "id",
            "created",
            "status",
            "model",
            "baseline",
            "dataset",
            "split",
            "variants",
            "tiles",
            "n_tiles",
        )
        return [{k: v for k, v in _header(e, counts.get(e.id, 0)).items() if k in keys} for e in exps]


@dataclass
class ExperimentData:
    """Everything stored for one experiment, as arrays (for summaries, galleries and exports).

    Attributes:
        header: the experiment row (see :func:`get_experiment`).
        class_names: names in index order; ``scored``: indices that enter the means.
        tiles: per tile ``{"id", "tile", "position", "image", "label", "zone", "seconds"}``, in
            listing order.
        baseline: ``(T, K, K)`` confusion matrices of the baseline (``None`` without one).
        variants: variant → ``(T, K, K)`` confusion matrices (tiles missing a variant: zeros).
        prompts: variant → per tile ``(prompt_id, prompt_text)``.
    """

    header: dict[str, Any]
    class_names: list[str]
    scored: list[int]
    tiles: list[dict[str, Any]]
    baseline: np.ndarray | None
    variants: dict[str, np.ndarray]
    prompts: dict[str, list[tuple[int | None, str | None]]]


def load(store: Any, experiment_id: Any) -> ExperimentData:
    """Read one experiment's counts (ExperimentNotFoundError if there is none)."""
    eid = _id(experiment_id)
    with Session(store.reader) as s:
        exp = s.get(Experiment, eid)
        if exp is None:
            raise ExperimentNotFoundError(f"no experiment with id {experiment_id}")
        rows = list(
            s.scalars(
                select(ExperimentTile)
                .where(ExperimentTile.experiment_id == eid)
                .order_by(ExperimentTile.position)
            )
        )
        results = list(s.scalars(select(ExperimentResult).where(ExperimentResult.experiment_id == eid)))
        header = _header(exp, len(rows))
        names = json.loads(exp.class_names)
        scored = json.loads(exp.scored)
    k = len(names)
    index = {r.id: i for i, r in enumerate(rows)}
    tiles = [
        {"id": r.id, "tile": r.tile, "position": r.position, "image": r.image, "label": r.label,
         "zone": r.zone, "seconds": r.seconds}
        for r in rows
    ]  # fmt: skip
    baseline = None
    if any(r.baseline_confusion is not None for r in rows):
        baseline = np.zeros((len(rows), k, k), dtype=np.int64)
        for i, r in enumerate(rows):
            if r.baseline_confusion is not None:
                baseline[i] = np.asarray(json.loads(r.baseline_confusion), dtype=np.int64)
    order = list(header["variants"])
    variants: dict[str, np.ndarray] = {v: np.zeros((len(rows), k, k), dtype=np.int64) for v in order}
    prompts: dict[str, list[tuple[int | None, str | None]]] = {v: [(None, None)] * len(rows) for v in order}
    for res in results:
        if res.variant not in variants:
            variants[res.variant] = np.zeros((len(rows), k, k), dtype=np.int64)
            prompts[res.variant] = [(None, None)] * len(rows)
        i = index[res.tile_id]
        variants[res.variant][i] = np.asarray(json.loads(res.confusion), dtype=np.int64)
        prompts[res.variant][i] = (res.prompt_id, res.prompt_text)
    return ExperimentData(header, names, scored, tiles, baseline, variants, prompts)


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100.0 * x, 2)


def metrics_of(confusion: np.ndarray, class_names: Sequence[str], scored: Sequence[int]) -> dict[str, Any]:
    """``{miou, oa, mf1, precision, recall, per_class, n_pixels}`` of a ``K × K`` matrix, in percent
    rounded to 2 decimals — exactly the values ``python -m training.evaluate --json`` prints."""
    from metaseg.metrics import compute_metrics

    raw = compute_metrics(np.asarray(confusion), scored=scored, class_names=class_names).to_dict()
    return {
        "miou": _pct(raw["miou"]),
        "oa": _pct(raw["oa"]),
        "mf1": _pct(raw["mf1"]),
        "precision": _pct(raw["precision"]),
        "recall": _pct(raw["recall"]),
        "per_class": {n: {k: _pct(v) for k, v in vals.items()} for n, vals in raw["per_class"].items()},
        "n_pixels": raw["n_pixels"],
    }


def summarize(data: ExperimentData) -> dict[str, Any]:
    """``{"tiles": n, "variants": {variant: metrics}, "baseline": metrics | None}`` over the stored tiles."""
    out: dict[str, Any] = {"tiles": len(data.tiles), "variants": {}}
    for v, arr in data.variants.items():
        out["variants"][v] = metrics_of(arr.sum(0), data.class_names, data.scored)
    out["baseline"] = (
        metrics_of(data.baseline.sum(0), data.class_names, data.scored) if data.baseline is not None else None
    )
    return out


def get_experiment(store: Any, experiment_id: Any) -> dict[str, Any]:
    """The experiment row plus its summary: header keys, ``class_names``, ``scored``,
    ``variants`` (names), ``results`` (variant → metrics), ``baseline_results`` and
    ``prompts`` (variant → distinct prompt version ids the tiles used)."""
    data = load(store, experiment_id)
    summary = summarize(data)
    out = dict(data.header)
    out["class_names"] = data.class_names
    out["scored"] = data.scored
    out["results"] = summary["variants"]
    out["baseline_results"] = summary["baseline"]
    out["prompts"] = {v: sorted({pid for pid, _ in ps if pid is not None}) for v, ps in data.prompts.items()}
    return out


def ranked_tiles(
    data: ExperimentData, variant_a: str, variant_b: str, class_name: str | None = None
) -> list[dict[str, Any]]:
    """Tiles ranked by ΔIoU = IoU(variant_b) − IoU(variant_a), largest gain first.

    ``class_name=None`` ranks by per-tile mIoU. Tiles where the class is absent from both are left
    out. ``"baseline"`` may be used as a variant when the experiment has one.
    """

    def arr(v: str) -> np.ndarray:
        if v == BASELINE:
            if data.baseline is None:
                raise MetasegError(f"experiment {data.header['id']} has no baseline")
            return data.baseline
        if v not in data.variants:
            raise MetasegError(
                f"experiment {data.header['id']} has no variant {v!r}; valid: "
                f"{', '.join(list(data.variants) + ([BASELINE] if data.baseline is not None else []))}"
            )
        return data.variants[v]

    a, b = arr(variant_a), arr(variant_b)
    if class_name is None:
        ia, ib = per_tile_miou(a, data.scored), per_tile_miou(b, data.scored)
    else:
        if class_name not in data.class_names:
            raise MetasegError(f"unknown class {class_name!r}; valid: {', '.join(data.class_names)}")
        c = data.class_names.index(class_name)
        ia, ib = per_tile_iou(a)[:, c], per_tile_iou(b)[:, c]
    rows = []
    for i, t in enumerate(data.tiles):
        if np.isnan(ia[i]) and np.isnan(ib[i]):
            continue
        va = 0.0 if np.isnan(ia[i]) else float(ia[i])
        vb = 0.0 if np.isnan(ib[i]) else float(ib[i])
        rows.append(
            {**t, "index": i, "iou_a": round(va, 2), "iou_b": round(vb, 2), "delta": round(vb - va, 2)}
        )
    rows.sort(key=lambda r: (-r["delta"], r["position"]))
    return rows


def prompt_text(store: Any, data: ExperimentData, variant: str, index: int) -> str | None:
    """The prompt text tile ``index`` got under ``variant`` (``None`` for the baseline)."""
    if variant == BASELINE:
        return None
    pid, text = data.prompts[variant][index]
    if pid is not None:
        with Session(store.reader) as s:
            row = s.get(Prompt, int(pid))
            return None if row is None else row.text
    return text


# ----------------------------------------------------------------------------- export


def export(store: Any, experiment_id: Any, fmt: str = "json") -> str:
    """An experiment as JSON (header, summary and per tile × variant counts) or CSV (one row per
    tile × variant × class with intersection, union, IoU, TP, FP, FN and the prompt id)."""
    if fmt not in ("json", "csv"):
        raise MetasegError(f"unknown export format {fmt!r}; valid: csv, json")
    data = load(store, experiment_id)
    summary = summarize(data)
    names = data.class_names
    sources = ([(BASELINE, data.baseline)] if data.baseline is not None else []) + list(data.variants.items())
    if fmt == "json":
        tiles = []
        for i, t in enumerate(data.tiles):
            entry = {k: t[k] for k in ("tile", "position", "image", "label", "zone", "seconds")}
            entry["results"] = {}
            for v, arr in sources:
                m = arr[i]
                tp = np.diag(m)
                entry["results"][v] = {
                    "prompt_id": None if v == BASELINE else data.prompts[v][i][0],
                    "confusion": m.tolist(),
                    "intersection": tp.tolist(),
                    "union": (m.sum(0) + m.sum(1) - tp).tolist(),
                }
            tiles.append(entry)
        doc = {**data.header, "class_names": names, "scored": data.scored,
               "results": summary["variants"], "baseline_results": summary["baseline"], "per_tile": tiles}  # fmt: skip
        return json.dumps(doc, ensure_ascii=False, indent=1)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["experiment_id", "tile", "zone", "variant", "prompt_id", "class", "intersection", "union",
                "iou", "tp", "fp", "fn"])  # fmt: skip
    for i, t in enumerate(data.tiles):
        for v, arr in sources:
            m = arr[i]
            tp = np.diag(m)
            fp = m.sum(0) - tp
            fn = m.sum(1) - tp
            pid = None if v == BASELINE else data.prompts[v][i][0]
            for c, name in enumerate(names):
                union = int(tp[c] + fp[c] + fn[c])
                iou = "" if union == 0 else f"{100.0 * tp[c] / union:.4f}"
                w.writerow([data.header["id"], t["tile"], t["zone"] or "", v, "" if pid is None else pid, name,
                            int(tp[c]), union, iou, int(tp[c]), int(fp[c]), int(fn[c])])  # fmt: skip
    return buf.getvalue()
