"""The steps before the first epoch: device, data, model + optimiser.

Order matters for reproducibility (same numbers for the same seed): ``torch.manual_seed(seed)``
comes before the datasets and the model are built, and non-zero DDP ranks re-seed with their own
:func:`~training.trainer.state.data_seed` right after model init (same init, own data draws).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from metaseg.errors import ConfigError

from ..config import TrainConfig
from .distributed import Dist
from .optim import AmpPolicy, amp_policy, lr_scale, param_groups
from .state import data_seed
from .text import NegativeBank, itm_signal, model_config_for, warm_text_cache

log = logging.getLogger("training.train")


@dataclass
class Data:
    """Datasets and loader of a run; ``val_shard`` is this rank's part of ``val_ds``."""

    train_ds: Any
    val_ds: Any
    val_shard: Any
    class_set: Any
    loader: Any
    sampler: Any
    loader_gen: Any  # re-seeded per epoch and rank (loader_seed)


@dataclass
class Learner:
    """Model (and its DDP wrapper), optimiser, precision policy and the ITM negatives of a run."""

    model: Any
    ddp_model: Any
    uses_text: bool
    bank: NegativeBank | None
    params: list
    optimizer: Any
    scaler: Any
    policy: AmpPolicy
    scale: float
    lr_rule: dict[str, Any]
    signal: str


def run_device(name: str):
    """:func:`metaseg.device.pick_device`, keeping this command's one-line message for missing CUDA."""
    from metaseg.device import pick_device

    try:
        return pick_device(name)
    except ConfigError as exc:
        if str(name).startswith("cuda"):
            raise ConfigError(f"device {name!r} requested but CUDA is not available; use device=cpu or auto") from exc
        raise


def start_process(cfg: TrainConfig) -> tuple[Any, Dist]:
    """Device and process group; under DDP on CUDA each process takes its ``LOCAL_RANK`` GPU."""
    import torch

    device = run_device(cfg.device)
    dist = Dist(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device, dist


def set_threads_and_seed(cfg: TrainConfig, device, dist: Dist) -> None:
    """CPU: all cores split among local processes (or ``threads``); then ``torch.manual_seed(seed)``."""
    import torch

    if device.type == "cpu":
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // max(1, dist.local_world)))
    elif cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)


def open_store(store, dist: Dist):
    """The given prompt store, or the standard one, opened by rank 0 first (opening may create and seed it)."""
    if store is not None:
        return store
    if not dist.main:
        dist.barrier()
    from prompts_db import PromptStore

    store = PromptStore()
    if dist.main:
        dist.barrier()
    return store


def _val_dataset(cfg: TrainConfig, store):
    """Validation split at its native tile size (the protocol of training.evaluate), or None."""
    from torch.utils.data import Subset

    from ..datasets import build_dataset

    if not cfg.split_val:
        return None
    val_ds = build_dataset(cfg.dataset, cfg.data_root, cfg.split_val, image_size=None,
                           prompt_mode=cfg.prompt_mode, store=store, augment=False)
    if not val_ds.has_labels:
        raise ConfigError(f"validation split {cfg.split_val!r} has no labels; pick a labelled split "
                          "or set split_val=null")
    if cfg.max_val_samples:
        val_ds = Subset(val_ds, range(min(cfg.max_val_samples, len(val_ds))))
    return val_ds


def build_data(cfg: TrainConfig, store, device, dist: Dist) -> Data:
    """Training set + shuffled loader (``DistributedSampler`` under DDP) and the validation shard."""
    import torch
    from torch.utils.data import DataLoader, Subset
    from torch.utils.data.distributed import DistributedSampler

    from ..datasets import build_dataset, collate_samples

    train_ds = build_dataset(cfg.dataset, cfg.data_root, cfg.split_train, image_size=cfg.image_size,
                             prompt_mode=cfg.prompt_mode, store=store, augment=cfg.augment)
    val_ds = _val_dataset(cfg, store)
    if len(train_ds) < cfg.batch_size * dist.world:
        raise ConfigError(f"{cfg.split_train} split has {len(train_ds)} tiles, fewer than one batch "
                          f"({cfg.batch_size} x {dist.world} processes)")
    num_workers = cfg.num_workers if cfg.num_workers is not None else (0 if device.type == "cpu" else 4)
    sampler = DistributedSampler(train_ds, num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True) if dist.enabled else None
    loader_gen = torch.Generator()
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                        drop_last=True, num_workers=num_workers, collate_fn=collate_samples,
                        generator=loader_gen, pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)
    val_shard = None
    if val_ds is not None:
        val_shard = Subset(val_ds, range(dist.rank, len(val_ds), dist.world)) if dist.enabled else val_ds
    return Data(train_ds, val_ds, val_shard, train_ds.class_set, loader, sampler, loader_gen)


def build_model(cfg: TrainConfig, class_set, pretrained: str, resuming: bool, device, dist: Dist):
    """The variant's model on ``device``; a resumed run starts from no weights (last.* overwrites them)."""
    import torch

    from metaseg.models import create_model

    _, overrides = model_config_for(cfg, class_set.name)
    if resuming:
        overrides["pretrained"] = "none"
    model = create_model(cfg.model, **overrides).to(device)
    model.config.pretrained = pretrained  # recorded as configured, even when resuming
    if dist.rank:  # same model init on every rank (DDP broadcasts rank 0's anyway), own data draws
        torch.manual_seed(data_seed(cfg.seed, dist.rank))
    if model.config.num_classes != class_set.num_classes:
        raise ConfigError(f"model predicts {model.config.num_classes} classes but {cfg.dataset} "
                          f"({class_set.name}) has {class_set.num_classes}")
    return model


def _negative_bank(cfg: TrainConfig, store, class_set, dist: Dist) -> NegativeBank | None:
    bank = NegativeBank.from_store(store, class_set.name, seed=cfg.seed + 1000 * dist.rank)
    if len(bank) < 2:
        log.warning("fewer than two zone prompts for %s: ITM negatives disabled", class_set.name)
        return None
    return bank


def build_learner(cfg: TrainConfig, data: Data, store, model, device, dist: Dist) -> Learner:
    """ITM negatives, text-cache warm-up, AdamW (two groups), lr rule, precision policy, DDP wrapper."""
    import torch

    uses_text = bool(model.uses_text)
    bank = _negative_bank(cfg, store, data.class_set, dist) if uses_text and cfg.negatives else None
    if uses_text:
        warm_text_cache(model, data.train_ds, data.val_ds, bank, dist.main)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scale = lr_scale(cfg, dist.world)
    lr_rule = {"lr_scaling": cfg.lr_scaling, "global_batch": cfg.batch_size * dist.world,
               "reference_batch": cfg.lr_reference_batch, "scale": scale, "peak_lr": cfg.lr * scale}
    policy = amp_policy(cfg.amp, device.type, cfg.amp_dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=policy.scaler)
    signal = itm_signal(uses_text, list(data.train_ds.prompts), bank is not None, float(model.config.itm_weight))
    if dist.main:
        log.info("lr rule %s: global batch %d (%d x %d processes), reference %d -> peak lr %.3g",
                 cfg.lr_scaling, cfg.batch_size * dist.world, cfg.batch_size, dist.world,
                 cfg.lr_reference_batch, cfg.lr * scale)
        log.info("precision: %s; encoder start: %s; L_itm: %s", policy.describe(), model.config.pretrained, signal)
        if signal.startswith(("matching only", "none: one prompt")):
            log.warning("single prompt in %s/%s: %s", cfg.dataset, cfg.split_train, signal)
    ddp_model = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                        find_unused_parameters=False)
    return Learner(model, ddp_model, uses_text, bank, params, optimizer, scaler, policy, scale, lr_rule, signal)


@dataclass
class Run:
    """One training job once set up: what every step of the loop reads (and ``progress``, which it updates)."""

    cfg: TrainConfig
    device: Any
    dist: Dist
    out_dir: Any
    data: Data
    learner: Learner
    progress: Any
    run_t0: float
    budget_s: float | None
    writer: Any = None
    extra_base: dict[str, Any] | None = None
