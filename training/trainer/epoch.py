"""One training epoch: optimiser steps, the time-budget probe, step timing and the epoch's mean losses.

Speed is timed twice per step: ``step_times`` from the batch in hand to the step's end (the
loss read syncs the device), ``cycle_times`` from one step's end to the next's (DataLoader waits
included). With ``time_budget_minutes`` the steps 2–6 are timed and the schedule is shortened to
what fits in 90 % of the budget; DDP ranks agree on stopping through one all-reduce per step.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .optim import lr_at
from .setup import Run
from .state import loader_seed

log = logging.getLogger("training.train")

LOSS_KEYS = ("loss", "ce", "dice", "itm")


def optimiser_step(run: Run, batch: dict[str, Any], lr: float) -> dict[str, Any]:
    """Forward (under the amp policy), losses, backward, optional clipping, AdamW step at ``lr``."""
    import torch

    from metaseg.models.losses import compute_losses

    lrn, device = run.learner, run.device
    for group in lrn.optimizer.param_groups:
        group["lr"] = lr
    images = batch["image"].to(device, non_blocking=True)
    labels = batch["label"].to(device, non_blocking=True)
    kwargs: dict[str, Any] = {}
    if lrn.uses_text:
        kwargs["text"] = batch["prompt"]
        if lrn.bank is not None:
            neg = lrn.bank.sample(batch["prompt"], batch["zone"])
            if neg is not None:
                kwargs["negative_text"] = neg
    with lrn.policy.autocast(device.type):
        output = lrn.ddp_model(images, **kwargs)
        losses = compute_losses(output, labels, ignore_index=run.data.class_set.ignore_index,
                                itm_weight=lrn.model.config.itm_weight)
    lrn.optimizer.zero_grad(set_to_none=True)
    lrn.scaler.scale(losses["loss"]).backward()  # a no-op scale unless float16
    if run.cfg.grad_clip:
        lrn.scaler.unscale_(lrn.optimizer)
        torch.nn.utils.clip_grad_norm_(lrn.params, run.cfg.grad_clip)
    lrn.scaler.step(lrn.optimizer)  # skipped by the scaler when float16 gradients overflowed
    lrn.scaler.update()
    return losses


def check_time_budget(run: Run) -> None:
    """After a step: shorten the schedule to the budget (once, after step 7) and flag running out."""
    p, cfg = run.progress, run.cfg
    if run.budget_s is not None:
        if p.run_steps == 2:  # the first step carries one-time costs; time from here
            p.probe_t0 = time.time()
        elif p.run_steps == 7 and p.probe_t0 is not None:
            per_step = (time.time() - p.probe_t0) / 5
            left = 0.9 * run.budget_s - (time.time() - run.run_t0)
            fit = p.global_step + max(1, int(left / max(per_step, 1e-6)))
            if fit < p.total_steps:
                p.total_steps = fit
                if run.dist.main:
                    log.info("time budget %.1f min: %.2fs/step -> schedule shortened to %d steps",
                             cfg.time_budget_minutes, per_step, p.total_steps)
        if time.time() - run.run_t0 > run.budget_s:
            p.out_of_time = True
    if run.dist.enabled and run.budget_s is not None:  # ranks must agree on stopping
        import torch

        flag = torch.tensor([float(p.out_of_time), float(p.total_steps)], device=run.device)
        run.dist.all_reduce_sum(flag)
        p.out_of_time = bool(flag[0] > 0)
        p.total_steps = int(round(float(flag[1]) / run.dist.world))


def _mean_over_ranks(run: Run, sums: dict[str, float], n_batches: int) -> dict[str, float]:
    means = {k: v / max(1, n_batches) for k, v in sums.items()}
    if run.dist.enabled:  # average the epoch means over ranks
        import torch

        t = torch.tensor([means[k] for k in sums], dtype=torch.float64, device=run.device)
        run.dist.all_reduce_sum(t)
        means = {k: float(v) / run.dist.world for k, v in zip(sums, t.tolist(), strict=True)}
    return means


def train_one_epoch(run: Run, epoch: int) -> dict[str, float]:
    """Train ``epoch`` (0-based) until its batches, ``total_steps`` or the time budget end; mean losses."""
    from tqdm.auto import tqdm

    cfg, p, data, dist = run.cfg, run.progress, run.data, run.dist
    if data.sampler is not None:
        data.sampler.set_epoch(epoch)
    data.loader_gen.manual_seed(loader_seed(cfg.seed, epoch, dist.rank))
    run.learner.ddp_model.train()
    sums = dict.fromkeys(LOSS_KEYS, 0.0)
    n_batches = 0
    bar = tqdm(data.loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               disable=not (dist.main and cfg.progress), dynamic_ncols=True)
    t_cycle = time.perf_counter()
    for batch in bar:
        if p.global_step >= p.total_steps or p.out_of_time:
            break
        t_step = time.perf_counter()
        lr = lr_at(p.global_step, p.total_steps, cfg, run.learner.scale)
        losses = optimiser_step(run, batch, lr)
        p.global_step += 1
        n_batches += 1
        p.run_steps += 1
        check_time_budget(run)
        for k in sums:
            sums[k] += float(losses[k].detach())
        t_end = time.perf_counter()
        p.step_times.append(t_end - t_step)
        p.cycle_times.append(t_end - t_cycle)
        t_cycle = t_end
        if dist.main:
            bar.set_postfix(loss=f"{sums['loss'] / n_batches:.3f}", lr=f"{lr:.2e}")
            if run.writer is not None and p.global_step % cfg.log_every == 0:
                run.writer.add_scalar("train/loss_step", float(losses["loss"].detach()), p.global_step)
                run.writer.add_scalar("train/lr", lr, p.global_step)
    bar.close()
    return _mean_over_ranks(run, sums, n_batches)
