"""``python -m training.sweep``: prompt experiments over a whole evaluation set, on Dask.

Examples::

    python -m training.sweep --model metasegnet_demo --baseline baseline_demo --dataset synthearth \\
        --root data/synth_test --split test --variant climate --variant wrong --variant none --workers 2
    python -m training.sweep --checkpoint runs/oem/best.safetensors --dataset openearthmap \\
        --root data/OpenEarthMap --split val --variant climate --variant id:42 \\
        --scheduler tcp://10.0.0.5:8786 --json

What a run does:

1. **Variants are resolved here, on the client**, from the prompt store: for every tile and
   variant, the prompt *text* MetaSegNet gets and the stored version id it came from.
   ``climate``, ``generic``, ``store-generic``, ``none`` and ``wrong`` are ``training.evaluate``'s
   prompt modes (``training.evaluate.PROMPT_MODES``) and
   are taken from the same dataset reader (so ``climate`` here *is* ``training.evaluate
   --prompt-mode climate``); ``source:llm`` / ``source:user`` = the latest version of that source
   for the tile's zone, else the zone's current prompt; ``id:N`` = prompt version N on the tiles of
   its zone (it must be written for the dataset's class set), the current prompt elsewhere.
2. **One task per tile** goes to :class:`metaseg.runner.Runner` (``--workers N`` local processes,
   or ``--scheduler ADDR``): the tile's *paths* and its distinct prompt texts. The worker reads and
   preprocesses the tile once, runs the baseline once, and MetaSegNet once per distinct text
   (two variants giving a tile the same text cost one pass); models are loaded once per worker
   and text features are cached per worker by the model. Each tile is run whole (as in
   ``training.evaluate``). The task returns one ``K × K`` confusion matrix per distinct text and
   one for the baseline: a few hundred integers.
3. **The client alone writes** the experiment into the prompt store
   (:mod:`prompts_db.experiments`), a few tiles per transaction, and prints the summary computed
   from the stored counts. A lost worker's tiles are re-run elsewhere by Dask; a tile is stored
   once whatever happens.

Ctrl-C stores the tiles finished so far, marks the experiment ``incomplete`` and exits 130.
Exit codes: 0 done; 2 bad arguments (unknown variant, missing prompt id, empty dataset, ...);
3 finished but some tiles failed (the experiment is ``incomplete``; reasons in ``errors``).

JSON keys (values in percent, as ``training.evaluate``): ``experiment_id, tiles, variants``
(variant → ``{miou, oa, mf1, precision, recall, per_class}``), ``baseline`` (same keys, when a
baseline is given), plus ``status, n_tiles, model, baseline_model, dataset, split, prompts``
(variant → prompt version ids used), ``errors, seconds``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaseg.cli import run_cli
from metaseg.errors import ConfigError
from training.config import DATASET_NAMES

log = logging.getLogger(__name__)

SOURCES = {"llm": "llm:", "user": "user"}
#: Finished tiles are written in batches of this size (or every FLUSH_S seconds), each in one transaction.
FLUSH_TILES = 8
FLUSH_S = 2.0


# ----------------------------------------------------------------------------- variants


def _modes() -> tuple[str, ...]:
    from training.evaluate import PROMPT_MODES

    return tuple(PROMPT_MODES)


def parse_variant(text: str) -> str:
    """Canonical variant name, or ``ConfigError`` naming the valid forms."""
    v = str(text).strip()
    low = v.lower()
    if low in _modes():
        return low
    if low.startswith("source:") and low.split(":", 1)[1] in SOURCES:
        return low
    if low.startswith("id:"):
        num = v.split(":", 1)[1].strip()
        if num.isdigit():
            return f"id:{int(num)}"
    raise ConfigError(
        f"unknown variant {text!r}; valid: {', '.join(_modes())}, source:llm, source:user, id:N"
    )


@dataclass
class Plan:
    """What every tile gets: the dataset (climate reading), and per variant the text and prompt id per tile."""

    dataset: Any
    variants: list[str]
    texts: dict[str, list[str]] = field(default_factory=dict)
    prompt_ids: dict[str, list[int | None]] = field(default_factory=dict)

    @property
    def zones(self) -> list[str | None]:
        return list(self.dataset.zones)


def _store_id(store: Any, zone: str | None, class_set: str, text: str) -> int | None:
    """Id of the current store version for ``zone`` when its text is ``text`` (else ``None``)."""
    rec = store.current(zone, class_set)
    return rec.id if rec.text == text else None


def resolve_variants(
    dataset_name: str,
    root: str | Path,
    split: str,
    variants: Sequence[str],
    store: Any,
    limit: int | None = None,
    extra: dict[str, Callable[[str | None], Any]] | None = None,
) -> Plan:
    """Read the split and resolve each variant to a prompt text (and version id) per tile.

    ``extra`` (Python API only): more variants, name → ``fn(tile zone)`` returning the prompt record
    (``.text``, ``.id``) that tile gets, e.g. the SynthEarth partner zone's prompt in
    ``scripts/ablation.py``.

    Raises:
        ConfigError: unknown variant, empty split, split without labels, ``id:N`` for another
            class set.
        PromptNotFoundError: ``id:N`` names no stored prompt.
    """
    from training.datasets import build_dataset
    from training.datasets.prompts import wrong_zone

    extra = dict(extra or {})
    names = list(dict.fromkeys([parse_variant(v) for v in variants] + list(extra)))
    if not names:
        raise ConfigError("pass at least one --variant")
    base = build_dataset(dataset_name, root, split, prompt_mode="climate", store=store)
    if len(base) == 0:
        raise ConfigError(f"split {split!r} of {root} has no tiles")
    if not getattr(base, "has_labels", True):
        raise ConfigError(f"split {split!r} of {root} has no labels to score against")
    n = len(base) if limit is None else min(int(limit), len(base))
    cs = base.class_set.name
    zones = list(base.zones[:n])
    plan = Plan(dataset=base, variants=names)
    for v in names:
        if v in extra:
            recs = [extra[v](z) for z in zones]
            texts, ids = [str(r.text) for r in recs], [getattr(r, "id", None) for r in recs]
        elif v in _modes():
            # the same reader, prompt mode and store as `training.evaluate --prompt-mode v`
            ds = (
                base
                if v == "climate"
                else build_dataset(dataset_name, root, split, prompt_mode=v, store=store)
            )
            texts = [str(t) for t in ds.prompts[:n]]
            # the stored version the text came from, checked against the store (None when the text
            # is no stored version, e.g. the paper's generic sentence of `generic`)
            key = {"climate": lambda z: z, "wrong": wrong_zone, "none": lambda z: "none"}.get(
                v, lambda z: None
            )
            ids = [_store_id(store, key(z), cs, t) for z, t in zip(zones, texts, strict=True)]
        elif v.startswith("source:"):
            source = SOURCES[v.split(":", 1)[1]]
            texts, ids = [], []
            cache: dict[str | None, Any] = {}
            for z in zones:
                if z not in cache:
                    recs = store.list(zone=z or "generic", class_set=cs, source=source)
                    cache[z] = recs[0] if recs else store.current(z, cs)
                texts.append(cache[z].text)
                ids.append(cache[z].id)
        else:
            rec = store.get(int(v.split(":", 1)[1]))
            if rec.class_set != cs:
                raise ConfigError(
                    f"prompt {rec.id} is written for the {rec.class_set} classes; {dataset_name} uses {cs}"
                )
            target = None if rec.zone == "generic" else rec.zone
            texts, ids = [], []
            hits = 0
            for z in zones:
                if z == target:
                    texts.append(rec.text)
                    ids.append(rec.id)
                    hits += 1
                else:
                    cur = store.current(z, cs)
                    texts.append(cur.text)
                    ids.append(cur.id)
            if hits == 0:
                log.warning("variant %s: no tile of zone %s in this split; it equals 'climate'", v, rec.zone)
        plan.texts[v] = texts
        plan.prompt_ids[v] = ids
    return plan


# ----------------------------------------------------------------------------- the task (on workers)


def read_tile(image: str, label: str, class_set: str) -> tuple[Any, Any]:
    """``(H×W×3 uint8 RGB, H×W uint8 label)`` read exactly as the dataset readers read a sample
    (:func:`training.datasets.base.read_pair`: nodata pixels are labelled 255 and not scored)."""
    from metaseg.classes import get_class_set
    from training.datasets.base import read_pair

    return read_pair(Path(image), Path(label), get_class_set(class_set))


def sweep_tile(
    item: dict[str, Any],
    model: Any,
    baseline: Any,
    class_set: str,
    tta: bool = False,
    groups: str | None = None,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Score one tile: the baseline once, MetaSegNet once per distinct prompt text.

    Args:
        item: ``{"image", "label", "texts": [distinct prompt texts]}`` (paths, not pixels).
        model, baseline: :class:`metaseg.runner.ModelSpec` (``baseline`` may be ``None``).
        class_set: the dataset's class-set name (label decoding, matrix size).
        tta: flip test-time augmentation.
        groups: optional ``"module:function"`` mapping the image path to an ``H×W`` uint8 map of
            pixel groups (or ``None``); then pixel accuracy per group is counted too (diagnostics,
            e.g. ``training.synth.diagnostics:ambiguous_materials``; not stored in the experiment).

    Returns:
        ``{"texts": [K×K per text], "baseline": K×K | None, "read_s", "model_s", "baseline_s", "backend"}``
        (``backend``: what ran, ``auto`` resolved, e.g. ``onnx`` or ``onnx (baseline torch)``)
        plus ``"groups": {"hits": [per text], "baseline": hits | None, "totals"}`` with ``groups``.
    """
    from metaseg.classes import get_class_set
    from metaseg.metrics import ConfusionMatrix
    from metaseg.runner import load_predictor

    t0 = time.perf_counter()
    rgb, label = read_tile(item["image"], item["label"], class_set)
    k = get_class_set(class_set).num_classes
    whole = rgb.shape[:2]  # one pass over the whole tile, as training.evaluate does

    gmap = None
    if groups:
        import importlib

        import numpy as np

        module, _, name = groups.partition(":")
        gmap = getattr(importlib.import_module(module), name)(item["image"])
        valid = (label != get_class_set(class_set).ignore_index) & (label < k)
    hits: list[list[int]] = []

    def counts(pred: Any) -> list[list[int]]:
        cm = ConfusionMatrix(k)
        cm.update(label, pred)
        if gmap is not None:
            hits.append(np.bincount(gmap[(pred == label) & valid], minlength=256).tolist())
        return cm.matrix.tolist()

    t1 = time.perf_counter()
    predictor = load_predictor(model)
    texts = [counts(predictor.predict(rgb, text, window=whole, tta=tta).index) for text in item["texts"]]
    t2 = time.perf_counter()
    base = None
    ran = [str(getattr(predictor, "backend", "torch"))]
    if baseline is not None:
        base_predictor = load_predictor(baseline)
        base = counts(base_predictor.predict(rgb, window=whole, tta=tta).index)
        ran.append(str(getattr(base_predictor, "backend", "torch")))
    t3 = time.perf_counter()
    out = {"texts": texts, "baseline": base, "read_s": t1 - t0, "model_s": t2 - t1, "baseline_s": t3 - t2,
           "backend": ran[0] if len(set(ran)) == 1 else f"{ran[0]} (baseline {ran[1]})"}
    if gmap is not None:
        out["groups"] = {"hits": hits[: len(texts)], "baseline": hits[len(texts)] if baseline is not None else None,
                         "totals": np.bincount(gmap[valid], minlength=256).tolist()}  # fmt: skip
    return out


# ----------------------------------------------------------------------------- client


def checkpoint_info(name: str | None, checkpoint: str | None) -> dict[str, Any]:
    """``{"name", "checkpoint", "hash", "class_set", "uses_text"}`` without loading the model.

    Built from :func:`metaseg.checkpoints.checkpoint_identity`, the one fingerprint of the project:
    ``hash`` is its 12-hex ``short`` (weights and metadata JSON), so it matches map resumes, ONNX
    caches and the app. A checkpoint that does not record ``uses_text`` counts as a text model.
    """
    from metaseg.checkpoints import checkpoint_identity

    ident = checkpoint_identity(name, checkpoint)
    path = Path(ident.path)
    return {
        "name": str(ident.name),
        "checkpoint": str(path.resolve()) if path.exists() else str(path),
        "hash": ident.short,
        "class_set": ident.class_set,
        "uses_text": True if ident.uses_text is None else bool(ident.uses_text),
    }


def _summary_line(name: str, m: dict[str, Any], ref: dict[str, Any] | None) -> str:
    def f(v: float | None) -> str:
        return "    -" if v is None else f"{v:6.2f}"

    delta = ""
    if ref is not None and m["miou"] is not None and ref["miou"] is not None:
        delta = f"{m['miou'] - ref['miou']:+8.2f}"
    return f"{name:<14}{f(m['miou']):>8}{f(m['mf1']):>8}{f(m['oa']):>8}{delta}"


def format_table(report: dict[str, Any]) -> str:
    """Leaderboard: variant, mIoU, mF1, OA, ΔmIoU vs the baseline."""
    base = report.get("baseline")
    lines = [
        f"experiment {report['experiment_id']} ({report['status']}): {report['model']} on "
        f"{report['dataset']}/{report['split']}, {report['tiles']}/{report['n_tiles']} tiles, percent",
        f"{'variant':<14}{'mIoU':>8}{'mF1':>8}{'OA':>8}" + ("  ΔmIoU vs baseline" if base else ""),
    ]
    if base:
        lines.append(_summary_line("baseline", base, None))
    for v, m in report["variants"].items():
        lines.append(_summary_line(v, m, base))
    if report["errors"]:
        e = report["errors"][0]
        lines.append(f"{len(report['errors'])} tile(s) failed, e.g. {e['tile']}: {e['reason']}")
    return "\n".join(lines)


def run_sweep(
    *,
    model: str | None,
    checkpoint: str | None,
    dataset: str,
    root: str,
    split: str,
    variants: Sequence[str],
    baseline: str | None = None,
    baseline_checkpoint: str | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    backend: str = "torch",
    device: str | None = None,
    tta: bool = False,
    limit: int | None = None,
    store: Any = None,
    progress: bool = True,
    on_progress: Callable[[int, int], Any] | None = None,
    runner: Any = None,
    notes: str | None = None,
    extra_variants: dict[str, Callable[[str | None], Any]] | None = None,
    groups: str | None = None,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Run a prompt experiment and return the report (see the module docstring for its keys).

    ``runner``: an already started :class:`metaseg.runner.Runner` to use (not closed here);
    otherwise one is started from ``workers``/``scheduler`` and closed at the end.
    ``extra_variants``: more variants resolved by the caller (see :func:`resolve_variants`).
    ``threads``: torch threads in every worker process (default 1: numbers are bitwise identical
    for any number of workers or machines only at one thread count; scale with workers). ``None``
    keeps what the cluster sets. Not applied to an in-process worker (``workers=0``).
    ``groups``: per-pixel group diagnostics (see :func:`sweep_tile`); the report then has
    ``groups`` = ``{"totals": [...], "hits": {variant: [...]}, "baseline": [...]}`` (256 entries).

    Raises:
        KeyboardInterrupt: after storing the finished tiles and marking the experiment incomplete;
            the exception carries ``experiment_id``.
    """
    from metaseg.runner import ModelSpec, Runner, validate_workers
    from prompts_db import PromptStore
    from prompts_db import experiments as ex

    if not model and not checkpoint:
        raise ConfigError("pass --model NAME or --checkpoint CKPT")
    if limit is not None and int(limit) < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if threads is not None and int(threads) < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    if runner is None:
        validate_workers(workers, scheduler)
    if not Path(root).is_dir():
        raise ConfigError(f"dataset root {root} is not a folder")
    own_store = store is None
    store = PromptStore() if own_store else store
    try:
        names = [parse_variant(v) for v in variants]
        info = checkpoint_info(model, checkpoint)
        binfo = checkpoint_info(baseline, baseline_checkpoint) if (baseline or baseline_checkpoint) else None
        plan = resolve_variants(dataset, root, split, names, store, limit=limit, extra=extra_variants)
        cs = plan.dataset.class_set
        for role in (info, binfo):
            if role is not None and role["class_set"] and role["class_set"] != cs.name:
                raise ConfigError(
                    f"{role['name']} predicts {role['class_set']} classes but {dataset} uses {cs.name}"
                )
        # CPU float results depend on the torch thread count (a near-tie pixel can flip), so every
        # worker process runs the same count whatever the number of workers; an in-process worker
        # (workers=0, e.g. the app) keeps its process's setting instead of changing it for the caller
        pinned = None if (runner is None and not scheduler and int(workers) == 0) else threads
        spec = ModelSpec(name=model, checkpoint=checkpoint, device=device, backend=backend, threads=pinned)
        bspec = (
            ModelSpec(
                name=baseline, checkpoint=baseline_checkpoint, device=device, backend=backend, threads=pinned
            )
            if binfo is not None
            else None
        )
        samples = plan.dataset.samples[: len(plan.texts[plan.variants[0]])]
        items = []
        for i, s in enumerate(samples):
            distinct = list(dict.fromkeys(plan.texts[v][i] for v in plan.variants))
            items.append({"position": i, "tile": s.id, "image": str(s.image), "label": str(s.label),
                          "texts": distinct if info["uses_text"] else [""]})  # fmt: skip
        own_runner = runner is None
        if own_runner:
            runner = Runner(workers=workers, scheduler=scheduler, desc="sweep", unit="tile", progress=progress,
                            on_progress=on_progress)  # fmt: skip
        elif on_progress is not None:
            runner.on_progress = on_progress
        try:
            desc = {"scheduler": scheduler} if scheduler else {"workers": workers}
            desc["n_workers"] = runner.n_workers
            job = SweepJob(plan=plan, items=tuple(items), spec=spec, bspec=bspec, info=info, binfo=binfo,
                           dataset=dataset, root=root, split=split, class_set=cs, backend=backend, runner_desc=desc,
                           tta=tta, notes=notes, groups=groups)  # fmt: skip
            return _execute(store, ex, runner, job)
        finally:
            if own_runner:
                runner.close()
    finally:
        if own_store:
            store.close()


@dataclass(frozen=True)
class SweepJob:
    """What one sweep runs: the resolved variants, the tiles, both models and the report's labels."""

    plan: Plan
    items: tuple[dict[str, Any], ...]  #: one task per tile (position, tile id, paths, distinct texts)
    spec: Any  #: ModelSpec of the model
    bspec: Any  #: ModelSpec of the baseline, or None
    info: dict[str, Any]  #: checkpoint_info of the model
    binfo: dict[str, Any] | None  #: checkpoint_info of the baseline
    dataset: str
    root: str
    split: str
    class_set: Any
    backend: str
    runner_desc: dict[str, Any]  #: recorded as the experiment's ``runner``
    tta: bool
    notes: str | None
    groups: str | None = None


def _execute(store, ex, runner, job: SweepJob) -> dict[str, Any]:
    plan, items, spec, bspec, info, binfo = job.plan, list(job.items), job.spec, job.bspec, job.info, job.binfo
    dataset, root, split, cs, backend = job.dataset, job.root, job.split, job.class_set, job.backend
    desc, tta, notes, groups = job.runner_desc, job.tta, job.notes, job.groups
    start = time.perf_counter()
    eid = ex.create(
        store, model_name=info["name"], checkpoint=info["checkpoint"], checkpoint_hash=info["hash"],
        baseline_name=binfo["name"] if binfo else None, baseline_checkpoint=binfo["checkpoint"] if binfo else None,
        baseline_checkpoint_hash=binfo["hash"] if binfo else None, backend=backend, dataset=dataset, split=split,
        root=str(Path(root).resolve()), class_set=cs.name, class_names=list(cs.names), scored=list(cs.scored),
        variants=plan.variants, n_tiles=len(items), runner=desc, notes=notes,
    )  # fmt: skip
    buffer: list[Any] = []
    errors: list[dict[str, str]] = []
    timing = {"read_s": 0.0, "model_s": 0.0, "baseline_s": 0.0, "task_s": 0.0}
    last_flush = time.perf_counter()
    ghits: dict[str, Any] = {}  # variant (and "baseline") -> per-group correct pixels
    ran: set[str] = set()  # backends that ran (``auto`` resolved per worker)
    gtotals = [0] * 256

    def flush() -> None:
        nonlocal last_flush
        if buffer:
            ex.record_tiles(store, eid, buffer)
            buffer.clear()
        last_flush = time.perf_counter()

    def record(outcome: Any) -> None:
        item = outcome.item
        if not outcome.ok:
            errors.append({"tile": item["tile"], "reason": str(outcome.error)})
            return
        value = outcome.value
        i = item["position"]
        by_text = dict(zip(item["texts"], value["texts"], strict=True))
        variants = {}
        for v in plan.variants:
            text = plan.texts[v][i] if info["uses_text"] else ""
            pid = plan.prompt_ids[v][i]
            variants[v] = {
                "confusion": by_text[text],
                "prompt_id": pid,
                "prompt_text": None if pid is not None else text,
            }
        for key in ("read_s", "model_s", "baseline_s"):
            timing[key] += float(value.get(key, 0.0))
        if value.get("backend"):
            ran.add(str(value["backend"]))
        timing["task_s"] += float(outcome.seconds)
        if value.get("groups"):
            g = value["groups"]
            by_hits = dict(zip(item["texts"], g["hits"], strict=True))
            for v in plan.variants:
                got = by_hits[plan.texts[v][i] if info["uses_text"] else ""]
                ghits[v] = [a + b for a, b in zip(ghits.get(v, [0] * 256), got, strict=True)]
            if g["baseline"] is not None:
                ghits["baseline"] = [
                    a + b for a, b in zip(ghits.get("baseline", [0] * 256), g["baseline"], strict=True)
                ]
            gtotals[:] = [a + b for a, b in zip(gtotals, g["totals"], strict=True)]
        buffer.append(ex.TileRecord(position=i, tile=item["tile"], image=item["image"], label=item["label"],
                                    zone=plan.zones[i], seconds=round(float(outcome.seconds), 4),
                                    baseline=value["baseline"], variants=variants))  # fmt: skip

    def resolved() -> str | None:
        return None if not ran else (next(iter(ran)) if len(ran) == 1 else "mixed: " + ", ".join(sorted(ran)))

    def timings() -> dict[str, Any]:
        n = max(1, len(items) - len(errors))
        return {k: round(v, 3) for k, v in timing.items()} | {"tile_mean_s": round(timing["task_s"] / n, 4)}

    try:
        for outcome in runner.run(sweep_tile, items, spec, bspec, cs.name, tta, groups):
            record(outcome)
            if len(buffer) >= FLUSH_TILES or time.perf_counter() - last_flush >= FLUSH_S:
                flush()
        flush()
    except KeyboardInterrupt as exc:
        flush()  # a batch interrupted mid-transaction was rolled back and is still in the buffer
        ex.finish(store, eid, seconds=time.perf_counter() - start, timings=timings(), errors=errors,
                  interrupted=True, backend=resolved())  # fmt: skip
        exc.experiment_id = eid  # type: ignore[attr-defined]
        raise
    status = ex.finish(store, eid, seconds=time.perf_counter() - start, timings=timings(), errors=errors,
                       backend=resolved())
    exp = ex.get_experiment(store, eid)
    report: dict[str, Any] = {
        "experiment_id": eid,
        "tiles": exp["tiles"],
        "variants": {v: _public(m) for v, m in exp["results"].items()},
    }
    if binfo is not None:
        report["baseline"] = _public(exp["baseline_results"])
    report.update(
        status=status, n_tiles=len(items), model=info["name"], baseline_model=binfo["name"] if binfo else None,
        dataset=dataset, split=split, class_set=cs.name, prompts=exp["prompts"], errors=errors,
        seconds=exp["seconds"], units="percent", backend=exp["backend"],
    )  # fmt: skip
    if groups:
        report["groups"] = {"totals": gtotals, "hits": {v: h for v, h in ghits.items() if v != "baseline"},
                            "baseline": ghits.get("baseline")}  # fmt: skip
    return report


def _public(m: dict[str, Any] | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {k: m[k] for k in ("miou", "oa", "mf1", "precision", "recall", "per_class")}


# ----------------------------------------------------------------------------- CLI


def quiet_dask_logs() -> None:
    """Dask configures its loggers (INFO, own handlers) on import: keep only errors on the console."""
    import warnings

    import distributed  # noqa: F401 - import first, then override its logging configuration

    # the runner's local cluster asks for no dashboard, yet distributed still warns when 8787 is taken
    warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)

    for name in ("distributed", "tornado", "bokeh"):
        logging.getLogger(name).setLevel(logging.ERROR)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from metaseg.runner import BACKENDS

    p = _Parser(
        prog="python -m training.sweep", description="Prompt experiments over a dataset split, on Dask."
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--model", help="MetaSegNet variant (alone: its shipped demo weights)")
    g.add_argument("--checkpoint", help="MetaSegNet checkpoint (path, export folder or hub id)")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--baseline", help="baseline variant (alone: its shipped demo weights), run once per tile")
    b.add_argument("--baseline-checkpoint", help="baseline checkpoint")
    p.add_argument("--dataset", required=True, help=" | ".join(DATASET_NAMES))
    p.add_argument("--root", required=True, help="dataset root in its official layout")
    p.add_argument("--split", required=True, help="train | val | test")
    p.add_argument("--variant", action="append", default=[], required=True,
                   help="climate | generic | store-generic | none | wrong | source:llm | source:user | id:N (repeatable)")  # fmt: skip
    w = p.add_mutually_exclusive_group()
    w.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    w.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--backend", choices=BACKENDS, default="torch", help="inference backend (default torch)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--tta", action="store_true", help="average horizontal/vertical flips")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per worker process (default 1; CPU results are bitwise reproducible "
        "across worker counts and clusters at a fixed thread count)",
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N tiles of the split")
    p.add_argument("--db", help="prompt database (default $METASEG_DB or data/metaseg.sqlite)")
    p.add_argument("--notes", help="free text stored with the experiment")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    from prompts_db import PromptStore

    store = PromptStore(args.db) if args.db else None
    try:
        report = run_sweep(
            model=args.model, checkpoint=args.checkpoint, dataset=args.dataset, root=args.root, split=args.split,
            variants=args.variant, baseline=args.baseline, baseline_checkpoint=args.baseline_checkpoint,
            workers=args.workers, scheduler=args.scheduler, backend=args.backend,
            device=None if args.device == "auto" else args.device, tta=args.tta, limit=args.limit, store=store,
            progress=not args.no_progress, notes=args.notes, threads=args.threads,
        )  # fmt: skip
    finally:
        if store is not None:
            store.close()
    if args.json:
        sys.stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
    else:
        print(format_table(report))
    return 3 if report["errors"] else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_dask_logs()

    def kept(exc: KeyboardInterrupt) -> str:
        eid = getattr(exc, "experiment_id", None)
        return f"; experiment {eid} stored as incomplete with the tiles finished so far" if eid else ""

    return run_cli(lambda: run(args), interrupted=kept)


if __name__ == "__main__":
    raise SystemExit(main())
