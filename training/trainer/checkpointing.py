"""After an epoch: validation, best-model tracking, early stopping and the (rate-limited) checkpoint writes.

``last.*`` is written when an epoch ends at least ``checkpoint_every_minutes`` after the previous
write and always when the run ends; a better model found in between is kept as a CPU
:class:`~training.trainer.state.Snapshot` and written as ``best.*`` together with it.
"""

from __future__ import annotations

import math
import time
from typing import Any

from .setup import Run
from .state import Snapshot, save_optimizer, write_last_state
from .validate import validate


def validate_epoch(run: Run, epoch: int, final_epoch: bool) -> tuple[dict[str, Any], bool, bool]:
    """Validate when due (every ``eval_every`` epochs and the final one); ``(scores, evaluated, improved)``."""
    cfg, p, data = run.cfg, run.progress, run.data
    last_eval: dict[str, Any] = {}
    evaluated = False
    if data.val_shard is not None and ((epoch + 1) % cfg.eval_every == 0 or final_epoch):
        last_eval = validate(run.learner.model, data.val_shard, data.class_set, run.device,
                             cfg.val_batch_size or cfg.batch_size, run.dist, tta=cfg.val_tta)
        evaluated = True
    improved = False
    if evaluated and math.isfinite(last_eval["miou"]):
        if last_eval["miou"] > p.best_miou:
            p.best_miou, p.best_epoch, p.bad_evals, improved = last_eval["miou"], epoch, 0, True
        else:
            p.bad_evals += 1
    elif data.val_shard is None:
        p.best_epoch, improved = epoch, True  # no validation: the latest epoch is the best
    return last_eval, evaluated, improved


def patience_used_up(run: Run) -> bool:
    patience = run.cfg.early_stopping_patience
    return bool(patience and run.progress.bad_evals >= patience)


def save_when_due(run: Run, epoch: int, last_eval: dict[str, Any], evaluated: bool, improved: bool,
                  stopping: bool) -> None:
    """Rank 0: keep a better model in memory; write it and ``last.*`` when due (or ``stopping``)."""
    from metaseg.checkpoints import save_checkpoint

    cfg, p, lrn, out_dir = run.cfg, run.progress, run.learner, run.out_dir
    extra = dict(run.extra_base, epoch=epoch, step=p.global_step, train_seconds=round(time.time() - run.run_t0, 1),
                 val={k: last_eval.get(k) for k in ("miou", "oa", "mf1", "per_class")} if evaluated else None)
    if improved:
        p.pending_best = (Snapshot(lrn.model), dict(extra, best_miou=p.best_miou))
    every = cfg.checkpoint_every_minutes
    if not (stopping or (every is not None and time.time() - p.last_write >= 60.0 * every)):
        return
    t_write = time.time()
    if p.pending_best is not None:
        save_checkpoint(p.pending_best[0], out_dir / "best", extra=p.pending_best[1])
        p.pending_best = None
    save_checkpoint(lrn.model, out_dir / "last", extra=extra)
    save_optimizer(lrn.optimizer, out_dir / "last_optim.safetensors")
    write_last_state(out_dir / "last_state.json", epoch, p, lrn.bank, lrn.scaler, lrn.policy)
    p.last_write = time.time()
    p.checkpoint_s += p.last_write - t_write
