"""Train MetaSegNet or its baseline: ``python -m training.train --config CFG.yaml [key=value ...]``.

One loop for every variant (baselines simply get no text). Paper settings (§III-C) are the
config defaults: AdamW (lr 3e-4, weight decay 2.5e-4), batch 2, ≤ 45 epochs, cosine schedule
stepped per optimiser step, early stopping on validation mIoU, random flips, frozen text encoder.

What a run writes into ``out_dir`` (rank 0 only):

* ``metrics.csv`` — one row per epoch: train loss and its parts (ce, dice, itm), lr, validation
  mIoU / OA / mF1 (empty when not validated that epoch), seconds;
* ``tb/`` — the same scalars for TensorBoard (plus the running loss every ``log_every`` steps);
* ``best.safetensors`` + ``best.json`` — the best-mIoU model via ``metaseg.checkpoints``;
* ``last.safetensors`` + ``last.json`` (model) and ``last_optim.safetensors`` +
  ``last_state.json`` (AdamW moments, schedule position, epoch, early-stopping counters, RNG
  state) — everything ``resume=true`` needs, with no pickle anywhere.

Choices worth knowing:

* **ITM negatives**: every MetaSegNet step gets, per sample, the prompt of another climate zone
  for the same class set (from ``prompts_db``; zone ≠ the sample's zone and text ≠ its prompt,
  drawn with a seeded generator). Single-zone datasets (LoveDA, Potsdam) thus still see
  genuinely different negative texts. ``negatives=false`` leaves only the contrastive term.
* **Text features** are computed once per distinct prompt (the model's ``encode_text`` cache);
  prompts are resolved once per tile at dataset construction, never re-tokenised per step.
* **Validation** runs without flip TTA (``training.evaluate --tta`` does the full protocol);
  mIoU/OA/mF1 over the class set's scored classes, confusion matrices summed across ranks.
* **Resume granularity is the epoch**: ``last.*`` is written after every epoch (and when
  ``max_steps`` ends a run mid-epoch); a resumed run starts with the next epoch.
* **DDP**: with ``WORLD_SIZE > 1`` (``torchrun --nproc_per_node N -m training.train ...``) the
  process group is initialised (NCCL on CUDA, gloo on CPU), training uses a
  ``DistributedSampler``, validation shards tiles by rank, and only rank 0 writes files.
* **CPU**: ``torch.set_num_threads`` uses all cores (split among local processes),
  DataLoader workers default to 0, autocast is off.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from metaseg.errors import MetasegError

from .config import TrainConfig, load_config

log = logging.getLogger("training.train")

CSV_FIELDS = ("epoch", "step", "lr", "train_loss", "train_ce", "train_dice", "train_itm",
              "val_miou", "val_oa", "val_mf1", "best_miou", "seconds")


# --------------------------------------------------------------------------- distributed helpers
class Dist:
    """Rank/world info; initialises the process group when ``WORLD_SIZE > 1``."""

    def __init__(self, device_kind: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))
        self.enabled = self.world > 1
        if self.enabled:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce_sum(self, tensor):
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


# --------------------------------------------------------------------------- metrics
def confusion_matrix(pred, target, num_classes: int, ignore_index: int = 255):
    """K×K int64 confusion matrix (rows = ground truth) over non-ignored pixels."""
    import torch

    valid = target != ignore_index
    idx = target[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def scores_from_confusion(cm, scored: tuple[int, ...]) -> dict[str, float]:
    """mIoU, OA and mF1 from a K×K confusion matrix via ``metaseg.metrics`` (means over ``scored``)."""
    from metaseg.metrics import compute_metrics

    m = compute_metrics(cm.cpu().numpy(), scored=scored)
    return {"miou": float(m.miou), "oa": float(m.oa), "mf1": float(m.mf1)}


# --------------------------------------------------------------------------- schedule
def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate before optimiser step ``step`` (0-based): linear warm-up, then cosine."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    t = min(1.0, max(0, step - cfg.warmup_steps) / span)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


# --------------------------------------------------------------------------- negatives
class NegativeBank:
    """Other zones' prompt texts for one class set, used as ITM negatives.

    Args:
        texts: zone code → prompt text (all zones the store knows for the class set).
        seed: seed of the generator that picks a negative per sample.
    """

    def __init__(self, texts: dict[str, str], seed: int = 0) -> None:
        import torch

        self.zones = sorted(texts)
        self.texts = [texts[z] for z in self.zones]
        self.gen = torch.Generator().manual_seed(seed)

    @classmethod
    def from_store(cls, store, class_set: str, seed: int = 0) -> NegativeBank:
        from metaseg.climate import ZONES

        texts: dict[str, str] = {}
        for code in ZONES:
            try:
                texts[code] = str(store.current(code, class_set).text)
            except MetasegError as exc:  # a zone without a prompt is simply not a candidate
                log.debug("no prompt for %s/%s: %s", code, class_set, exc)
        return cls(texts, seed)

    def __len__(self) -> int:
        return len(self.texts)

    def sample(self, prompts: list[str], zones: list[str | None]) -> list[str] | None:
        """One negative text per sample: another zone's prompt, different from the sample's text."""
        import torch

        out = []
        for prompt, zone in zip(prompts, zones, strict=True):
            cands = [i for i, (z, t) in enumerate(zip(self.zones, self.texts, strict=True))
                     if z != zone and t != prompt]
            if not cands:
                return None
            out.append(self.texts[cands[int(torch.randint(len(cands), (1,), generator=self.gen))]])
        return out

    def state(self) -> Any:
        return self.gen.get_state()


# --------------------------------------------------------------------------- resume state (no pickle)
def save_optimizer(optimizer, path: Path) -> None:
    """AdamW state → safetensors (tensors) + the param groups inside its JSON metadata."""
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    save_file(tensors, str(path), metadata={"param_groups": json.dumps(groups)})


def load_optimizer(optimizer, path: Path) -> None:
    import torch
    from safetensors import safe_open

    state: dict[int, dict[str, Any]] = {}
    with safe_open(str(path), framework="pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
        for key in f.keys():
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = f.get_tensor(key)
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    device = next((p.device for g in optimizer.param_groups for p in g["params"]), torch.device("cpu"))
    for st in state.values():
        for k, v in st.items():
            if k != "step":
                st[k] = v.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _rng_to_list(t) -> list[int]:
    return [int(x) for x in t.tolist()]


# --------------------------------------------------------------------------- the run
def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from metaseg.errors import ConfigError

        raise ConfigError(f"device {name!r} requested but CUDA is not available; use device=cpu or auto")
    return dev


def train(cfg: TrainConfig, store=None) -> dict[str, Any]:
    """Run one training job; returns a summary dict (best mIoU/epoch, steps, paths).

    Args:
        cfg: validated config.
        store: a ``prompts_db.PromptStore`` (default: the standard one).
    """
    import torch
    from torch.utils.data import DataLoader, Subset
    from torch.utils.data.distributed import DistributedSampler

    from metaseg.checkpoints import save_checkpoint
    from metaseg.models import create_model
    from metaseg.models.losses import compute_losses

    from .datasets import build_dataset, collate_samples

    device = resolve_device(cfg.device)
    dist = Dist(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    out_dir = Path(cfg.out_dir)
    try:
        if device.type == "cpu":
            torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // max(1, dist.local_world)))
        elif cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)

        # -- data (rank 0 first: opening the prompt store may create and seed it)
        if store is None:
            if not dist.main:
                dist.barrier()
            from prompts_db import PromptStore

            store = PromptStore()
            if dist.main:
                dist.barrier()
        train_ds = build_dataset(cfg.dataset, cfg.data_root, cfg.split_train, image_size=cfg.image_size,
                                 prompt_mode=cfg.prompt_mode, store=store, augment=cfg.augment)
        val_ds = None
        if cfg.split_val:
            val_ds = build_dataset(cfg.dataset, cfg.data_root, cfg.split_val, image_size=cfg.image_size,
                                   prompt_mode=cfg.prompt_mode, store=store, augment=False)
            if not val_ds.has_labels:
                from metaseg.errors import ConfigError

                raise ConfigError(f"validation split {cfg.split_val!r} has no labels; pick a labelled split "
                                  "or set split_val=null")
            if cfg.max_val_samples:
                val_ds = Subset(val_ds, range(min(cfg.max_val_samples, len(val_ds))))
        class_set = train_ds.class_set
        if len(train_ds) < cfg.batch_size * dist.world:
            from metaseg.errors import ConfigError

            raise ConfigError(f"{cfg.split_train} split has {len(train_ds)} tiles, fewer than one batch "
                              f"({cfg.batch_size} x {dist.world} processes)")
        num_workers = cfg.num_workers if cfg.num_workers is not None else (0 if device.type == "cpu" else 4)
        sampler = DistributedSampler(train_ds, num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True) if dist.enabled else None
        loader_gen = torch.Generator()
        train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                                  drop_last=True, num_workers=num_workers, collate_fn=collate_samples,
                                  generator=loader_gen, pin_memory=device.type == "cuda",
                                  persistent_workers=num_workers > 0)
        val_loader = None
        if val_ds is not None:
            shard = Subset(val_ds, range(dist.rank, len(val_ds), dist.world)) if dist.enabled else val_ds
            val_loader = DataLoader(shard, batch_size=cfg.val_batch_size or cfg.batch_size, shuffle=False,
                                    num_workers=num_workers, collate_fn=collate_samples)

        # -- model
        overrides = dict(cfg.model_overrides)
        overrides.setdefault("class_set", class_set.name)
        model = create_model(cfg.model, **overrides).to(device)
        if model.config.num_classes != class_set.num_classes:
            from metaseg.errors import ConfigError

            raise ConfigError(f"model predicts {model.config.num_classes} classes but {cfg.dataset} "
                              f"({class_set.name}) has {class_set.num_classes}")
        uses_text = bool(model.uses_text)
        bank = None
        if uses_text and cfg.negatives:
            bank = NegativeBank.from_store(store, class_set.name, seed=cfg.seed + 1000 * dist.rank)
            if len(bank) < 2:
                log.warning("fewer than two zone prompts for %s: ITM negatives disabled", class_set.name)
                bank = None
        if uses_text:  # encode every prompt this run can use once, up front (cached by the model)
            warm = list(dict.fromkeys(list(train_ds.prompts) + (bank.texts if bank is not None else [])))
            if val_ds is not None:
                warm += [p for p in dict.fromkeys(_dataset_prompts(val_ds)) if p not in set(warm)]
            cache_size = int(getattr(model.text_encoder, "cache_size", 0) or 0)
            if len(warm) > cache_size:
                log.warning("%d distinct prompts but the text cache holds %d: raise model_overrides."
                            "text_cache_size to avoid re-encoding", len(warm), cache_size)
            t_enc = time.time()
            for i in range(0, min(len(warm), cache_size), 8):
                model.encode_text(warm[i:i + 8])
            if dist.main:
                log.info("encoded %d distinct prompts in %.1fs", min(len(warm), cache_size), time.time() - t_enc)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        ddp_model = model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                            find_unused_parameters=False)
        steps_per_epoch = len(train_loader)
        total_steps = cfg.epochs * steps_per_epoch
        if cfg.max_steps:
            total_steps = min(total_steps, cfg.max_steps)
        use_amp = cfg.amp and device.type == "cuda"

        # -- resume
        start_epoch, global_step, best_miou, best_epoch, bad_evals = 0, 0, -1.0, -1, 0
        last_state = out_dir / "last_state.json"
        if cfg.resume and last_state.is_file():
            from safetensors.torch import load_file

            state = json.loads(last_state.read_text())
            weights = load_file(str(out_dir / "last.safetensors"), device="cpu")
            model.load_state_dict(weights, strict=False)
            load_optimizer(optimizer, out_dir / "last_optim.safetensors")
            start_epoch, global_step = int(state["epoch"]) + 1, int(state["global_step"])
            best_miou, best_epoch = float(state["best_miou"]), int(state["best_epoch"])
            bad_evals = int(state["bad_evals"])
            torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
            if bank is not None and state.get("bank_rng") is not None:
                bank.gen.set_state(torch.tensor(state["bank_rng"], dtype=torch.uint8))
            if dist.main:
                log.info("resumed from %s at epoch %d (step %d, best mIoU %.4f)", out_dir, start_epoch,
                         global_step, best_miou)
        elif cfg.resume and dist.main:
            log.info("resume=true but %s has no last_state.json: starting fresh", out_dir)

        writer = None
        if dist.main:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(out_dir / "tb"))
        csv_path = out_dir / "metrics.csv"
        if dist.main and not (cfg.resume and csv_path.is_file() and start_epoch > 0):
            with csv_path.open("w", newline="") as fh:
                csv.writer(fh).writerow(CSV_FIELDS)
        extra_base = {"dataset": cfg.dataset, "prompt_mode": cfg.prompt_mode, "model_variant": cfg.model,
                      "train_zones": [z for z in train_ds.distinct_zones()],
                      "train_prompts": {str(z): train_ds.resolver.prompt(z) for z in train_ds.distinct_zones()},
                      "train_config": asdict(cfg)}
        if dist.main:
            log.info("train %s on %s/%s: %d tiles, %d steps/epoch, %d steps max, device %s%s",
                     cfg.model, cfg.dataset, cfg.split_train, len(train_ds), steps_per_epoch, total_steps,
                     device, f", {dist.world} processes" if dist.enabled else "")

        from tqdm.auto import tqdm

        stopped_early = False
        out_of_time = False
        budget_s = cfg.time_budget_minutes * 60.0 if cfg.time_budget_minutes else None
        run_t0 = time.time()
        run_steps = 0
        probe_t0: float | None = None
        epoch = start_epoch - 1
        last_eval: dict[str, float] = {}
        for epoch in range(start_epoch, cfg.epochs):
            if global_step >= total_steps or out_of_time:
                break
            t0 = time.time()
            if sampler is not None:
                sampler.set_epoch(epoch)
            loader_gen.manual_seed(cfg.seed * 100003 + epoch)
            ddp_model.train()
            sums = {"loss": 0.0, "ce": 0.0, "dice": 0.0, "itm": 0.0}
            n_batches = 0
            bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       disable=not (dist.main and cfg.progress), dynamic_ncols=True)
            for batch in bar:
                if global_step >= total_steps or out_of_time:
                    break
                lr = lr_at(global_step, total_steps, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                images = batch["image"].to(device, non_blocking=True)
                labels = batch["label"].to(device, non_blocking=True)
                kwargs: dict[str, Any] = {}
                if uses_text:
                    kwargs["text"] = batch["prompt"]
                    if bank is not None:
                        neg = bank.sample(batch["prompt"], batch["zone"])
                        if neg is not None:
                            kwargs["negative_text"] = neg
                amp_ctx = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()
                with amp_ctx:
                    output = ddp_model(images, **kwargs)
                    losses = compute_losses(output, labels, ignore_index=class_set.ignore_index,
                                            itm_weight=model.config.itm_weight)
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                global_step += 1
                n_batches += 1
                run_steps += 1
                if budget_s is not None:
                    if run_steps == 2:  # the first step carries one-time costs; time from here
                        probe_t0 = time.time()
                    elif run_steps == 7 and probe_t0 is not None:
                        per_step = (time.time() - probe_t0) / 5
                        left = 0.9 * budget_s - (time.time() - run_t0)
                        fit = global_step + max(1, int(left / max(per_step, 1e-6)))
                        if fit < total_steps:
                            total_steps = fit
                            if dist.main:
                                log.info("time budget %.1f min: %.2fs/step -> schedule shortened to %d steps",
                                         cfg.time_budget_minutes, per_step, total_steps)
                    if time.time() - run_t0 > budget_s:
                        out_of_time = True
                if dist.enabled and budget_s is not None:  # ranks must agree on stopping
                    flag = torch.tensor([float(out_of_time), float(total_steps)], device=device)
                    dist.all_reduce_sum(flag)
                    out_of_time = bool(flag[0] > 0)
                    total_steps = int(round(float(flag[1]) / dist.world))
                for k in sums:
                    sums[k] += float(losses[k].detach())
                if dist.main:
                    bar.set_postfix(loss=f"{sums['loss'] / n_batches:.3f}", lr=f"{lr:.2e}")
                    if writer is not None and global_step % cfg.log_every == 0:
                        writer.add_scalar("train/loss_step", float(losses["loss"].detach()), global_step)
                        writer.add_scalar("train/lr", lr, global_step)
            bar.close()
            means = {k: v / max(1, n_batches) for k, v in sums.items()}
            if dist.enabled:  # average the epoch means over ranks
                t = torch.tensor([means[k] for k in sums], dtype=torch.float64, device=device)
                dist.all_reduce_sum(t)
                means = {k: float(v) / dist.world for k, v in zip(sums, t.tolist(), strict=True)}

            # -- validate
            evaluated = False
            last_eval = {}
            final_epoch = epoch + 1 >= cfg.epochs or global_step >= total_steps or out_of_time
            if val_loader is not None and ((epoch + 1) % cfg.eval_every == 0 or final_epoch):
                last_eval = evaluate(model, val_loader, class_set, device, use_amp, dist)
                evaluated = True
            improved = False
            if evaluated and math.isfinite(last_eval["miou"]):
                if last_eval["miou"] > best_miou:
                    best_miou, best_epoch, bad_evals, improved = last_eval["miou"], epoch, 0, True
                else:
                    bad_evals += 1
            elif val_loader is None:
                best_epoch, improved = epoch, True  # no validation: the latest epoch is the best

            # -- write (rank 0)
            if dist.main:
                extra = dict(extra_base, epoch=epoch, step=global_step,
                             val={k: last_eval.get(k) for k in ("miou", "oa", "mf1")} if evaluated else None)
                if improved:
                    save_checkpoint(model, out_dir / "best", extra=dict(extra, best_miou=best_miou))
                save_checkpoint(model, out_dir / "last", extra=extra)
                save_optimizer(optimizer, out_dir / "last_optim.safetensors")
                state = {"epoch": epoch, "global_step": global_step, "best_miou": best_miou,
                         "best_epoch": best_epoch, "bad_evals": bad_evals, "total_steps": total_steps,
                         "torch_rng": _rng_to_list(torch.get_rng_state()),
                         "bank_rng": _rng_to_list(bank.state()) if bank is not None else None}
                tmp = last_state.with_suffix(".tmp")
                tmp.write_text(json.dumps(state))
                tmp.replace(last_state)
                row = {"epoch": epoch + 1, "step": global_step, "lr": f"{lr_at(global_step - 1, total_steps, cfg):.6g}",
                       "train_loss": f"{means['loss']:.6f}", "train_ce": f"{means['ce']:.6f}",
                       "train_dice": f"{means['dice']:.6f}", "train_itm": f"{means['itm']:.6f}",
                       "val_miou": f"{last_eval['miou']:.6f}" if evaluated else "",
                       "val_oa": f"{last_eval['oa']:.6f}" if evaluated else "",
                       "val_mf1": f"{last_eval['mf1']:.6f}" if evaluated else "",
                       "best_miou": f"{best_miou:.6f}" if best_miou >= 0 else "",
                       "seconds": f"{time.time() - t0:.2f}"}
                with csv_path.open("a", newline="") as fh:
                    csv.DictWriter(fh, fieldnames=CSV_FIELDS).writerow(row)
                if writer is not None:
                    for k, v in means.items():
                        writer.add_scalar(f"train/{k}", v, epoch + 1)
                    if evaluated:
                        for k in ("miou", "oa", "mf1"):
                            writer.add_scalar(f"val/{k}", last_eval[k], epoch + 1)
                    writer.flush()
                log.info("epoch %d/%d step %d loss %.4f (ce %.4f dice %.4f itm %.4f)%s (%.1fs)", epoch + 1,
                         cfg.epochs, global_step, means["loss"], means["ce"], means["dice"], means["itm"],
                         f" val mIoU {last_eval['miou']:.4f} OA {last_eval['oa']:.4f}" if evaluated else "",
                         time.time() - t0)
            dist.barrier()
            if out_of_time:
                if dist.main:
                    log.info("time budget of %.1f min used up after %d steps", cfg.time_budget_minutes,
                             global_step)
                break
            if cfg.early_stopping_patience and bad_evals >= cfg.early_stopping_patience:
                stopped_early = True
                if dist.main:
                    log.info("early stopping: no better val mIoU for %d validations", bad_evals)
                break
        if writer is not None:
            writer.close()
        return {"out_dir": str(out_dir), "best_miou": best_miou if best_miou >= 0 else None,
                "best_epoch": best_epoch + 1 if best_epoch >= 0 else None, "epochs_run": epoch + 1 - start_epoch,
                "last_epoch": epoch + 1, "steps": global_step, "stopped_early": stopped_early,
                "out_of_time": out_of_time, "seconds": round(time.time() - run_t0, 1),
                "best_checkpoint": str(out_dir / "best.safetensors"), "world_size": dist.world}
    finally:
        dist.close()


def _dataset_prompts(ds) -> list[str]:
    """Prompts of a dataset or of a ``Subset`` of one."""
    from torch.utils.data import Subset

    if isinstance(ds, Subset):
        return [ds.dataset.prompts[i] for i in ds.indices]
    return list(ds.prompts)


def evaluate(model, loader, class_set, device, use_amp: bool, dist: Dist | None = None) -> dict[str, float]:
    """mIoU / OA / mF1 of ``model`` over ``loader`` (confusion matrices summed across ranks)."""
    import torch

    k = class_set.num_classes
    cm = torch.zeros(k, k, dtype=torch.int64, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            labels = batch["label"].to(device, non_blocking=True)
            amp_ctx = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()
            with amp_ctx:
                out = model(images, text=batch["prompt"]) if model.uses_text else model(images)
            pred = out.logits.argmax(1)
            cm += confusion_matrix(pred, labels, k, class_set.ignore_index)
    if dist is not None:
        dist.all_reduce_sum(cm)
    model.train(was_training)
    return scores_from_confusion(cm, tuple(class_set.scored))


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train",
                                description="Train MetaSegNet or its baseline (configs in training/configs/).")
    p.add_argument("--config", required=False, default=None, help="YAML config (training/configs/NAME.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override config keys; values parsed as YAML (e.g. epochs=3 amp=false)")
    p.add_argument("--json", action="store_true", help="print the run summary as one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        cfg = load_config(args.config, args.overrides)
        summary = train(cfg)
    except MetasegError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary) if args.json else
              f"done: best val mIoU {summary['best_miou']} at epoch {summary['best_epoch']}; "
              f"{summary['steps']} steps; checkpoints in {summary['out_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
