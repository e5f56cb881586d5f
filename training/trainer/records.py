"""What a run writes besides checkpoints: ``config.json``, ``metrics.csv``, TensorBoard, log lines, the summary.

Units: mIoU, OA and mF1 are percent everywhere a run reports them. ``metrics.csv`` gets one row
per epoch; on resume the rows of epochs after the last checkpoint write are dropped (they run again).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .optim import lr_at
from .setup import Run
from .text import prompt_hash

log = logging.getLogger("training.train")

CSV_FIELDS = ("epoch", "step", "lr", "train_loss", "train_ce", "train_dice", "train_itm",
              "val_miou", "val_oa", "val_mf1", "best_miou", "seconds")


def truncate_csv(path: Path, epochs: int) -> None:
    """Keep the header and the rows of the first ``epochs`` epochs of ``metrics.csv``."""
    with path.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("epoch", "").isdigit() and int(r["epoch"]) <= epochs]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def final_val_miou(out_dir: Path) -> float | None:
    """Validation mIoU of the last validated epoch in ``metrics.csv`` (percent), if any."""
    try:
        with (out_dir / "metrics.csv").open(newline="") as fh:
            vals = [r["val_miou"] for r in csv.DictReader(fh) if r.get("val_miou")]
    except OSError:
        return None
    return float(vals[-1]) if vals else None


def median(values: list[float]) -> float | None:
    """Median step time (the first two steps, with one-time costs, are left out by the caller)."""
    if not values:
        return None
    v = sorted(values)
    return round(v[len(v) // 2], 4)


def open_records(run: Run) -> None:
    """Rank 0: ``config.json``, the TensorBoard writer, a fresh (or resume-truncated) ``metrics.csv``."""
    cfg, out_dir, dist = run.cfg, run.out_dir, run.dist
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            run.writer = SummaryWriter(str(out_dir / "tb"))
    csv_path = out_dir / "metrics.csv"
    if dist.main and not (cfg.resume and csv_path.is_file() and run.progress.start_epoch > 0):
        with csv_path.open("w", newline="") as fh:
            csv.writer(fh).writerow(CSV_FIELDS)
    elif dist.main:  # rows of epochs after the last checkpoint write are run again: drop them
        truncate_csv(csv_path, run.progress.start_epoch)


def checkpoint_metadata(run: Run) -> dict[str, Any]:
    """Metadata every checkpoint of the run carries (the per-epoch fields are added when writing)."""
    cfg, ds, lrn = run.cfg, run.data.train_ds, run.learner
    return {"dataset": cfg.dataset, "prompt_mode": cfg.prompt_mode, "model_variant": cfg.model,
            "train_zones": [z for z in ds.distinct_zones()],
            "train_prompts": {str(z): ds.resolver.prompt(z) for z in ds.distinct_zones()},
            "train_prompt_hash": prompt_hash({str(z): ds.resolver.prompt(z) for z in ds.distinct_zones()}),
            "units": "percent",
            "train_config": asdict(cfg), "itm_signal": lrn.signal, "lr_rule": lrn.lr_rule,
            "precision": lrn.policy.describe(), "encoder_start": lrn.model.config.pretrained,
            "val_protocol": {"split": cfg.split_val, "native_size": True, "tta": cfg.val_tta,
                             "max_val_samples": cfg.max_val_samples}}


def _val_cell(last_eval: dict[str, float], key: str, evaluated: bool) -> str:
    return f"{last_eval[key]:.4f}" if evaluated else ""


def write_epoch_records(run: Run, epoch: int, means: dict[str, float], last_eval: dict[str, float],
                        evaluated: bool, t0: float) -> None:
    """Rank 0, after an epoch: the ``metrics.csv`` row, TensorBoard scalars and the log line."""
    cfg, p = run.cfg, run.progress
    row = {"epoch": epoch + 1, "step": p.global_step,
           "lr": f"{lr_at(p.global_step - 1, p.total_steps, cfg, run.learner.scale):.6g}",
           "train_loss": f"{means['loss']:.6f}", "train_ce": f"{means['ce']:.6f}",
           "train_dice": f"{means['dice']:.6f}", "train_itm": f"{means['itm']:.6f}",
           "val_miou": _val_cell(last_eval, "miou", evaluated), "val_oa": _val_cell(last_eval, "oa", evaluated),
           "val_mf1": _val_cell(last_eval, "mf1", evaluated),
           "best_miou": f"{p.best_miou:.4f}" if p.best_miou >= 0 else "",
           "seconds": f"{time.time() - t0:.2f}"}
    with (run.out_dir / "metrics.csv").open("a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=CSV_FIELDS).writerow(row)
    if run.writer is not None:
        for k, v in means.items():
            run.writer.add_scalar(f"train/{k}", v, epoch + 1)
        if evaluated:
            for k in ("miou", "oa", "mf1"):
                run.writer.add_scalar(f"val/{k}", last_eval[k], epoch + 1)
        run.writer.flush()
    log.info("epoch %d/%d step %d loss %.4f (ce %.4f dice %.4f itm %.4f)%s (%.1fs)", epoch + 1,
             cfg.epochs, p.global_step, means["loss"], means["ce"], means["dice"], means["itm"],
             f" val mIoU {last_eval['miou']:.2f}% OA {last_eval['oa']:.2f}%" if evaluated else "",
             time.time() - t0)


UNITS = {"miou": "percent", "step_s": "median seconds per optimiser step, forward+backward+"
         "update, batch already loaded (first two steps left out)",
         "step_s_with_loading": "median seconds from one step's end to the next's, "
         "waiting for the DataLoader included", "images_per_s": "batch_size x processes / step_s",
         "images_per_s_with_loading": "batch_size x processes / step_s_with_loading"}


def summary(run: Run, epoch: int) -> dict[str, Any]:
    """The run's summary dict (``--json``); ``epoch`` is the loop's last epoch index."""
    import torch

    p, cfg, dist, device, out_dir = run.progress, run.cfg, run.dist, run.device, run.out_dir
    step_s = median(p.step_times[2:] or p.step_times)
    cycle_s = median(p.cycle_times[2:] or p.cycle_times)
    images = cfg.batch_size * dist.world  # images per optimiser step, all ranks

    def per_s(seconds):
        return round(images / seconds, 3) if seconds else None

    return {"out_dir": str(out_dir), "best_miou": p.best_miou if p.best_miou >= 0 else None,
            "best_epoch": p.best_epoch + 1 if p.best_epoch >= 0 else None, "epochs_run": epoch + 1 - p.start_epoch,
            "last_epoch": epoch + 1, "steps": p.global_step, "stopped_early": p.stopped_early,
            "out_of_time": p.out_of_time, "seconds": round(time.time() - run.run_t0, 1),
            "checkpoint_s": round(p.checkpoint_s, 2),
            "best_checkpoint": str(out_dir / "best.safetensors"), "world_size": dist.world,
            "step_s": step_s, "step_s_with_loading": cycle_s,
            "images_per_s": per_s(step_s), "images_per_s_with_loading": per_s(cycle_s),
            "precision": run.learner.policy.describe(),
            "peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            if device.type == "cuda" else None,
            "units": dict(UNITS)}
