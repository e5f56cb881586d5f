"""Running a sweep: check the arguments, plan the tasks, run them on the Dask runner, store the results."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaseg.errors import ConfigError
from training.sweep.report import _public, checkpoint_info
from training.sweep.task import sweep_tile
from training.sweep.variants import Plan, parse_variant, resolve_variants

log = logging.getLogger(__name__)

#: Finished tiles are written in batches of this size (or every FLUSH_S seconds), each in one transaction.
FLUSH_TILES = 8
FLUSH_S = 2.0


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
    from metaseg.runner import Runner, validate_workers
    from prompts_db import PromptStore
    from prompts_db import experiments as ex

    _check_arguments(model, checkpoint, root, limit, threads)
    if runner is None:
        validate_workers(workers, scheduler)
    own_store = store is None
    store = PromptStore() if own_store else store
    try:
        names = [parse_variant(v) for v in variants]
        info = checkpoint_info(model, checkpoint)
        binfo = checkpoint_info(baseline, baseline_checkpoint) if (baseline or baseline_checkpoint) else None
        plan = resolve_variants(dataset, root, split, names, store, limit=limit, extra=extra_variants)
        _check_class_sets(plan, dataset, info, binfo)
        own_runner = runner is None
        if own_runner:
            runner = Runner(workers=workers, scheduler=scheduler, desc="sweep", unit="tile", progress=progress,
                            on_progress=on_progress)  # fmt: skip
        elif on_progress is not None:
            runner.on_progress = on_progress
        try:
            desc = {"scheduler": scheduler} if scheduler else {"workers": workers}
            desc["n_workers"] = runner.n_workers
            # CPU float results depend on the torch thread count (a near-tie pixel can flip), so every
            # worker process runs the same count whatever the number of workers; an in-process worker
            # (workers=0, e.g. the app) keeps its process's setting instead of changing it for the caller
            pinned = None if (own_runner and not scheduler and int(workers) == 0) else threads
            models = {"model": (model, checkpoint), "baseline": (baseline, baseline_checkpoint)}
            job = _plan_job(plan, models, info, binfo, device=device, backend=backend, threads=pinned,
                            labels={"dataset": dataset, "root": root, "split": split}, runner_desc=desc,
                            tta=tta, notes=notes, groups=groups)
            return _execute(store, ex, runner, job)
        finally:
            if own_runner:
                runner.close()
    finally:
        if own_store:
            store.close()


def _check_arguments(model: str | None, checkpoint: str | None, root: str, limit: int | None,
                     threads: int | None) -> None:
    if not model and not checkpoint:
        raise ConfigError("pass --model NAME or --checkpoint CKPT")
    if limit is not None and int(limit) < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if threads is not None and int(threads) < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    if not Path(root).is_dir():
        raise ConfigError(f"dataset root {root} is not a folder")


def _check_class_sets(plan: Plan, dataset: str, info: dict[str, Any], binfo: dict[str, Any] | None) -> None:
    cs = plan.dataset.class_set
    for role in (info, binfo):
        if role is not None and role["class_set"] and role["class_set"] != cs.name:
            raise ConfigError(f"{role['name']} predicts {role['class_set']} classes but {dataset} uses {cs.name}")


def _plan_job(plan: Plan, models: dict[str, tuple[str | None, str | None]], info: dict[str, Any],
              binfo: dict[str, Any] | None, *, device: str | None, backend: str, threads: int | None,
              labels: dict[str, str], runner_desc: dict[str, Any], tta: bool, notes: str | None,
              groups: str | None) -> SweepJob:
    """One task per tile (its paths and distinct prompt texts) and both model specs."""
    from metaseg.runner import ModelSpec

    def spec(role: str) -> Any:
        name, ckpt = models[role]
        return ModelSpec(name=name, checkpoint=ckpt, device=device, backend=backend, threads=threads)

    samples = plan.dataset.samples[: len(plan.texts[plan.variants[0]])]
    items = []
    for i, s in enumerate(samples):
        distinct = list(dict.fromkeys(plan.texts[v][i] for v in plan.variants))
        items.append({"position": i, "tile": s.id, "image": str(s.image), "label": str(s.label),
                      "texts": distinct if info["uses_text"] else [""]})  # fmt: skip
    return SweepJob(plan=plan, items=tuple(items), spec=spec("model"),
                    bspec=spec("baseline") if binfo is not None else None, info=info, binfo=binfo,
                    dataset=labels["dataset"], root=labels["root"], split=labels["split"],
                    class_set=plan.dataset.class_set, backend=backend, runner_desc=runner_desc, tta=tta,
                    notes=notes, groups=groups)


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


class _Collector:
    """Gathers finished tiles on the client: stores them in batches, sums timings and group hits."""

    def __init__(self, store: Any, ex: Any, eid: int, job: SweepJob) -> None:
        self.store, self.ex, self.eid, self.job = store, ex, eid, job
        self.buffer: list[Any] = []
        self.errors: list[dict[str, str]] = []
        self.timing = {"read_s": 0.0, "model_s": 0.0, "baseline_s": 0.0, "task_s": 0.0}
        self.last_flush = time.perf_counter()
        self.ghits: dict[str, Any] = {}  # variant (and "baseline") -> per-group correct pixels
        self.ran: set[str] = set()  # backends that ran (``auto`` resolved per worker)
        self.gtotals = [0] * 256

    def due(self) -> bool:
        return len(self.buffer) >= FLUSH_TILES or time.perf_counter() - self.last_flush >= FLUSH_S

    def flush(self) -> None:
        if self.buffer:
            self.ex.record_tiles(self.store, self.eid, self.buffer)
            self.buffer.clear()
        self.last_flush = time.perf_counter()

    def _text(self, v: str, i: int) -> str:
        return self.job.plan.texts[v][i] if self.job.info["uses_text"] else ""

    def record(self, outcome: Any) -> None:
        item, plan = outcome.item, self.job.plan
        if not outcome.ok:
            self.errors.append({"tile": item["tile"], "reason": str(outcome.error)})
            return
        value, i = outcome.value, item["position"]
        by_text = dict(zip(item["texts"], value["texts"], strict=True))
        variants = {}
        for v in plan.variants:
            pid = plan.prompt_ids[v][i]
            variants[v] = {"confusion": by_text[self._text(v, i)], "prompt_id": pid,
                           "prompt_text": None if pid is not None else self._text(v, i)}  # fmt: skip
        for key in ("read_s", "model_s", "baseline_s"):
            self.timing[key] += float(value.get(key, 0.0))
        if value.get("backend"):
            self.ran.add(str(value["backend"]))
        self.timing["task_s"] += float(outcome.seconds)
        if value.get("groups"):
            self._add_groups(item, value["groups"], i)
        self.buffer.append(self.ex.TileRecord(
            position=i, tile=item["tile"], image=item["image"], label=item["label"], zone=plan.zones[i],
            seconds=round(float(outcome.seconds), 4), baseline=value["baseline"], variants=variants))

    def _add_groups(self, item: dict[str, Any], g: dict[str, Any], i: int) -> None:
        def add(key: str, got: list[int]) -> None:
            self.ghits[key] = [a + b for a, b in zip(self.ghits.get(key, [0] * 256), got, strict=True)]

        by_hits = dict(zip(item["texts"], g["hits"], strict=True))
        for v in self.job.plan.variants:
            add(v, by_hits[self._text(v, i)])
        if g["baseline"] is not None:
            add("baseline", g["baseline"])
        self.gtotals[:] = [a + b for a, b in zip(self.gtotals, g["totals"], strict=True)]

    def backend(self) -> str | None:
        ran = self.ran
        return None if not ran else (next(iter(ran)) if len(ran) == 1 else "mixed: " + ", ".join(sorted(ran)))

    def timings(self) -> dict[str, Any]:
        n = max(1, len(self.job.items) - len(self.errors))
        return {k: round(v, 3) for k, v in self.timing.items()} | {"tile_mean_s": round(self.timing["task_s"] / n, 4)}


def _create_experiment(store: Any, ex: Any, job: SweepJob) -> int:
    info, binfo, cs = job.info, job.binfo, job.class_set
    return ex.create(
        store, model_name=info["name"], checkpoint=info["checkpoint"], checkpoint_hash=info["hash"],
        baseline_name=binfo["name"] if binfo else None, baseline_checkpoint=binfo["checkpoint"] if binfo else None,
        baseline_checkpoint_hash=binfo["hash"] if binfo else None, backend=job.backend, dataset=job.dataset,
        split=job.split, root=str(Path(job.root).resolve()), class_set=cs.name, class_names=list(cs.names),
        scored=list(cs.scored), variants=job.plan.variants, n_tiles=len(job.items), runner=job.runner_desc,
        notes=job.notes,
    )  # fmt: skip


def _execute(store: Any, ex: Any, runner: Any, job: SweepJob) -> dict[str, Any]:
    """Run every tile task, store results as they come, finish the experiment; return the report."""
    start = time.perf_counter()
    eid = _create_experiment(store, ex, job)
    col = _Collector(store, ex, eid, job)
    try:
        for outcome in runner.run(sweep_tile, list(job.items), job.spec, job.bspec, job.class_set.name,
                                  job.tta, job.groups):
            col.record(outcome)
            if col.due():
                col.flush()
        col.flush()
    except KeyboardInterrupt as exc:
        col.flush()  # a batch interrupted mid-transaction was rolled back and is still in the buffer
        ex.finish(store, eid, seconds=time.perf_counter() - start, timings=col.timings(), errors=col.errors,
                  interrupted=True, backend=col.backend())  # fmt: skip
        exc.experiment_id = eid  # type: ignore[attr-defined]
        raise
    status = ex.finish(store, eid, seconds=time.perf_counter() - start, timings=col.timings(), errors=col.errors,
                       backend=col.backend())
    return _report(ex.get_experiment(store, eid), eid, status, job, col)


def _report(exp: dict[str, Any], eid: int, status: str, job: SweepJob, col: _Collector) -> dict[str, Any]:
    binfo = job.binfo
    report: dict[str, Any] = {
        "experiment_id": eid,
        "tiles": exp["tiles"],
        "variants": {v: _public(m) for v, m in exp["results"].items()},
    }
    if binfo is not None:
        report["baseline"] = _public(exp["baseline_results"])
    report.update(
        status=status, n_tiles=len(job.items), model=job.info["name"], baseline_model=binfo["name"] if binfo else None,
        dataset=job.dataset, split=job.split, class_set=job.class_set.name, prompts=exp["prompts"],
        errors=col.errors, seconds=exp["seconds"], units="percent", backend=exp["backend"],
    )  # fmt: skip
    if job.groups:
        report["groups"] = {"totals": col.gtotals, "hits": {v: h for v, h in col.ghits.items() if v != "baseline"},
                            "baseline": col.ghits.get("baseline")}  # fmt: skip
    return report
