"""The run itself: set up (device, data, model + optimiser, resume, records), the epochs, the summary.

Each epoch is :func:`~training.trainer.epoch.train_one_epoch`, then
:func:`~training.trainer.checkpointing.validate_epoch`, the checkpoint write when due and the
epoch's records; the loop stops at ``epochs``/``max_steps``, the time budget or early stopping.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from .checkpointing import patience_used_up, save_when_due, validate_epoch
from .distributed import is_main_process
from .epoch import train_one_epoch
from .records import checkpoint_metadata, final_val_miou, open_records, summary, write_epoch_records
from .setup import (
    Run,
    build_data,
    build_learner,
    build_model,
    open_store,
    set_threads_and_seed,
    start_process,
)
from .state import Progress, restore_last_state
from .text import model_config_for

log = logging.getLogger("training.train")


def _resume(run: Run) -> None:
    cfg, p, lrn, out_dir, dist = run.cfg, run.progress, run.learner, run.out_dir, run.dist
    if cfg.resume and (out_dir / "last_state.json").is_file():
        restore_last_state(out_dir, p, lrn.model, lrn.optimizer, lrn.bank, lrn.scaler, lrn.policy, cfg.seed,
                           dist.rank)
        if dist.main:
            log.info("resumed from %s at epoch %d (step %d, best mIoU %.2f%%)", out_dir, p.start_epoch,
                     p.global_step, p.best_miou)
    elif cfg.resume and dist.main:
        log.info("resume=true but %s has no last_state.json: starting fresh", out_dir)


def _set_up(cfg: TrainConfig, store, pretrained: str, resuming: bool, device, dist) -> Run:
    """Everything before the first epoch, in the order that fixes the run's random draws."""
    set_threads_and_seed(cfg, device, dist)
    store = open_store(store, dist)
    data = build_data(cfg, store, device, dist)
    model = build_model(cfg, data.class_set, pretrained, resuming, device, dist)
    learner = build_learner(cfg, data, store, model, device, dist)
    steps_per_epoch = len(data.loader)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    run = Run(cfg, device, dist, Path(cfg.out_dir), data, learner, Progress(total_steps=total_steps),
              run_t0=0.0, budget_s=cfg.time_budget_minutes * 60.0 if cfg.time_budget_minutes else None)
    _resume(run)
    open_records(run)
    run.extra_base = checkpoint_metadata(run)
    if dist.main:
        log.info("train %s on %s/%s: %d tiles, %d steps/epoch, %d steps max, device %s%s",
                 cfg.model, cfg.dataset, cfg.split_train, len(data.train_ds), steps_per_epoch, total_steps,
                 device, f", {dist.world} processes" if dist.enabled else "")
    return run


def _stop_after(run: Run) -> bool:
    """True when the time budget is used up or early stopping applies (logged on rank 0)."""
    p, cfg, main = run.progress, run.cfg, run.dist.main
    if p.out_of_time:
        if main:
            log.info("time budget of %.1f min used up after %d steps", cfg.time_budget_minutes, p.global_step)
        return True
    if patience_used_up(run):
        p.stopped_early = True
        if main:
            log.info("early stopping: no better val mIoU for %d validations", p.bad_evals)
        return True
    return False


def run_epochs(run: Run) -> int:
    """The epoch loop; returns the last epoch index it entered (the summary counts from it)."""
    import torch

    cfg, p, dist = run.cfg, run.progress, run.dist
    run.run_t0 = time.time()
    p.last_write = time.time()
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    epoch = p.start_epoch - 1
    for epoch in range(p.start_epoch, cfg.epochs):
        if p.global_step >= p.total_steps or p.out_of_time:
            break
        t0 = time.time()
        means = train_one_epoch(run, epoch)
        final_epoch = epoch + 1 >= cfg.epochs or p.global_step >= p.total_steps or p.out_of_time
        last_eval, evaluated, improved = validate_epoch(run, epoch, final_epoch)
        if dist.main:
            save_when_due(run, epoch, last_eval, evaluated, improved, final_epoch or patience_used_up(run))
            write_epoch_records(run, epoch, means, last_eval, evaluated, t0)
        dist.barrier()
        if _stop_after(run):
            break
    if run.writer is not None:
        run.writer.close()
    return epoch


def train(cfg: TrainConfig, store=None) -> dict[str, Any]:
    """Run one training job; returns a summary dict (best mIoU/epoch, steps, paths).

    Args:
        cfg: validated config.
        store: a ``prompts_db.PromptStore`` (default: the standard one).
    """
    if cfg.seeds:
        return train_seeds(cfg, store)
    from metaseg.models.image_encoders import check_pretrained

    # before any work: a bad variant/override or unavailable encoder weights stop here (exit 2)
    model_cfg, _ = model_config_for(cfg)
    resuming = cfg.resume and (Path(cfg.out_dir) / "last_state.json").is_file()
    if not resuming:  # a resumed run overwrites the encoder with last.safetensors: nothing to fetch
        check_pretrained(model_cfg.encoder, model_cfg.pretrained)
    device, dist = start_process(cfg)
    try:
        run = _set_up(cfg, store, model_cfg.pretrained, resuming, device, dist)
        epoch = run_epochs(run)
        return summary(run, epoch)
    finally:
        dist.close()


def seed_spread(values: list[float]) -> dict[str, Any]:
    """``{"n", "mean", "std", "min", "max", "spread"}`` of per-seed scores (std: sample, n - 1)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None, "spread": None}
    return {"n": len(vals), "mean": round(statistics.fmean(vals), 4),
            "std": round(statistics.stdev(vals), 4) if len(vals) > 1 else None,
            "min": round(min(vals), 4), "max": round(max(vals), 4), "spread": round(max(vals) - min(vals), 4)}


def train_seeds(cfg: TrainConfig, store=None) -> dict[str, Any]:
    """``seeds=[...]``: the same job once per seed (``out_dir/seed_N``), then mean ± std of the scores.

    Each run validates with the evaluation protocol; the summary holds every run's summary under
    ``runs`` and, for ``best_miou`` and the final epoch's ``val_miou``, the mean, sample standard
    deviation, min, max and spread over the seeds (percent). Also written to ``out_dir/seeds.json``.
    """
    from ..config import replace

    runs = []
    for seed in cfg.seeds:
        sub = replace(cfg, seed=int(seed), seeds=None, out_dir=str(Path(cfg.out_dir) / f"seed_{seed}"))
        result = train(sub, store)
        result["seed"] = int(seed)
        result["final_val_miou"] = final_val_miou(Path(sub.out_dir))
        runs.append(result)
        if is_main_process():
            log.info("seed %d: best val mIoU %s%%", seed, result["best_miou"])
    out = {"out_dir": cfg.out_dir, "seeds": list(cfg.seeds), "units": "percent",
           "protocol": {"dataset": cfg.dataset, "split": cfg.split_val, "tta": cfg.val_tta,
                        "max_val_samples": cfg.max_val_samples, "prompt_mode": cfg.prompt_mode},
           "best_miou": seed_spread([r["best_miou"] for r in runs]),
           "final_val_miou": seed_spread([r["final_val_miou"] for r in runs]),
           "runs": runs}
    if is_main_process():
        b = out["best_miou"]
        log.info("%d seeds: best val mIoU %s ± %s (min %s, max %s)", b["n"], b["mean"], b["std"], b["min"], b["max"])
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out_dir) / "seeds.json").write_text(json.dumps(out, indent=1))
    return out
