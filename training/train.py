"""Train MetaSegNet or its baseline: ``python -m training.train --config CFG.yaml [key=value ...]``.

One loop for every variant (baselines simply get no text). Paper settings (§III-C) are the
config defaults: AdamW (lr 3e-4, weight decay 2.5e-4), batch 2, ≤ 45 epochs, cosine schedule
stepped per optimiser step, early stopping on validation mIoU, random flips, frozen text encoder.

What a run writes into ``out_dir`` (rank 0 only):

* ``metrics.csv`` — one row per epoch: train loss and its parts (ce, dice, itm), lr, validation
  mIoU / OA / mF1 in **percent** (empty when not validated that epoch), seconds;
* ``tb/`` — the same scalars for TensorBoard (plus the running loss every ``log_every`` steps);
* ``best.safetensors`` + ``best.json`` — the best-mIoU model via ``metaseg.checkpoints``;
* ``last.safetensors`` + ``last.json`` (model) and ``last_optim.safetensors`` +
  ``last_state.json`` (AdamW moments, schedule position, epoch, early-stopping counters, RNG
  state) — everything ``resume=true`` needs, with no pickle anywhere.

Units: mIoU, OA and mF1 are percent (0–100) everywhere a run reports them (log lines,
``metrics.csv``, TensorBoard, checkpoint metadata, the summary's ``best_miou``), the unit of
``training.evaluate`` and of the paper. Speed is reported twice: ``step_s``/``images_per_s`` time
one optimiser step with its batch already loaded; ``step_s_with_loading`` /
``images_per_s_with_loading`` time step end to step end, so DataLoader waits count too.

Choices worth knowing:

* **Encoder start** (``pretrained``): checked before any work (:func:`metaseg.models.image_encoders.check_pretrained`):
  ``timm`` needs the weights in the Hugging Face cache or a reachable hub; offline without them
  the run stops with one line naming ``pretrained`` and the fix (exit 2).
* **Mixed precision** (``amp``): CPU runs under bfloat16 autocast; CUDA under bfloat16 where
  supported, else float16 with a ``GradScaler`` (:func:`amp_policy`). The contrastive logits of
  L_itm are always computed in float32.
* **Weight decay** applies to weight matrices/kernels only: norms, biases and position
  embeddings / relative-position tables are in a second AdamW group with weight decay 0
  (:func:`param_groups`).
* **ITM negatives**: every MetaSegNet step gets, per sample, the prompt of another climate zone
  for the same class set (from ``prompts_db``; zone ≠ the sample's zone and text ≠ its prompt,
  drawn with a seeded generator). ``negatives=false`` leaves only the contrastive term.
* **What L_itm does on single-prompt datasets** (LoveDA, Potsdam: every tile has the same zone,
  so the same prompt): the contrastive term is exactly 0, because a text identical to the
  positive is never a negative (batch and queue hold only that one text). The matching term
  still gets other zones' prompts as negatives, but since the positive text never changes it can
  be solved from the text alone: there it trains the text projection and matching head to tell
  the dataset's prompt from other zones' prompts, a text-side regulariser, not an image-text
  correspondence signal. The image-text signal exists only where tiles carry different prompts
  (OpenEarthMap: each tile's own zone from its georeference). The run logs which case applies
  and records it as ``itm_signal`` in the checkpoint metadata.
* **Text features** are computed once per distinct prompt (the model's ``encode_text`` cache);
  prompts are resolved once per tile at dataset construction, never re-tokenised per step.
* **Validation** uses the evaluation protocol of ``training.evaluate``
  (:func:`training.evaluate.confusion_dataset`): validation tiles at their native size (not
  resized to ``image_size``), float32 on CPU, flip TTA only with ``val_tta=true``; mIoU/OA/mF1
  over the class set's scored classes, confusion matrices summed across ranks. So ``best_miou``
  equals what ``training.evaluate`` reports for ``best.safetensors`` on the same split.
* **Checkpoint writes** (``checkpoint_every_minutes``, default 10): model + AdamW state of a
  Swin-B run are ~1 GB, so they are not written after every (short) epoch. ``last.*`` is
  written when an epoch ends at least that long after the previous write and always when the run
  ends (last epoch, ``max_steps``, time budget, early stopping); a better model found in between
  is kept as a CPU copy and written as ``best.*`` together with it. Writes fall between epochs,
  outside the timed steps; their total wall time is the summary's ``checkpoint_s``.
* **Resume** continues from the last write, with the next epoch (rows of later epochs in
  ``metrics.csv`` are dropped and run again). The weights must match the model exactly (every
  tensor present, none extra, same shapes; only the frozen text encoder, rebuilt from its name, is
  not stored): a mismatch stops with a ``CheckpointError`` instead of training a half-loaded model.
* **Seeds**: model init uses ``seed`` on every rank (DDP also broadcasts rank 0's weights); the
  data draws (shuffle order, random flips, worker seeds) use :func:`loader_seed` /
  :func:`data_seed`, which differ per rank, so two ranks never draw the same flips. ``seeds=[0,1,2]``
  repeats the whole run per seed and reports mean ± std of the validation mIoU
  (:func:`train_seeds`).
* **DDP**: with ``WORLD_SIZE > 1`` (``torchrun --nproc_per_node N -m training.train ...``) the
  process group is initialised (NCCL on CUDA, gloo on CPU), training uses a
  ``DistributedSampler``, validation shards tiles by rank, and only rank 0 writes files.
  ``batch_size`` is per process, so the global batch is ``batch_size × N``. The learning rate
  follows ``lr_scaling``: ``none`` by default (``lr`` as given, as in the paper's single-GPU
  setting), or ``linear``/``sqrt`` in the global batch relative to ``lr_reference_batch``
  (:func:`lr_scale`). The rule and the resulting peak lr are logged and stored as ``lr_rule``.
* **CPU**: ``torch.set_num_threads`` uses all cores (split among local processes),
  DataLoader workers default to 0.
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
from dataclasses import asdict, dataclass
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
def lr_at(step: int, total: int, cfg: TrainConfig, scale: float = 1.0) -> float:
    """Learning rate before optimiser step ``step`` (0-based): linear warm-up, then cosine.

    ``scale`` multiplies ``lr`` and ``min_lr`` (the DDP rule of :func:`lr_scale`).
    """
    lr, min_lr = cfg.lr * scale, cfg.min_lr * scale
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    t = min(1.0, max(0, step - cfg.warmup_steps) / span)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def lr_scale(cfg: TrainConfig, world: int) -> float:
    """Factor applied to ``lr`` for a global batch of ``batch_size × world`` (see ``lr_scaling``)."""
    ratio = cfg.batch_size * max(1, world) / cfg.lr_reference_batch
    if cfg.lr_scaling == "linear":
        return ratio
    if cfg.lr_scaling == "sqrt":
        return math.sqrt(ratio)
    return 1.0


# --------------------------------------------------------------------------- optimiser and precision
#: Parameter names (last component) that never get weight decay besides 1-D tensors.
NO_DECAY_NAMES = ("absolute_pos_embed", "pos_embed", "relative_position_bias_table", "cls_token")


def no_weight_decay(name: str, param) -> bool:
    """True for norms, biases (any ≤1-D tensor) and position embeddings / relative-position tables."""
    leaf = name.rsplit(".", 1)[-1]
    return param.ndim <= 1 or leaf in NO_DECAY_NAMES or leaf.startswith("pos_")


def param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups of the trainable parameters: ``decay`` (weights) and ``no_decay`` (wd 0)."""
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if no_weight_decay(name, param) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": plain, "weight_decay": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


@dataclass(frozen=True)
class AmpPolicy:
    """Mixed-precision choice of a run: autocast dtype (``None`` = float32) and GradScaler use."""

    dtype: Any = None
    scaler: bool = False

    def autocast(self, device_type: str):
        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)

    def describe(self) -> str:
        if self.dtype is None:
            return "float32"
        return str(self.dtype).replace("torch.", "") + (" + GradScaler" if self.scaler else "")


def amp_policy(amp: bool, device_type: str, amp_dtype: str = "auto", bf16_supported: bool | None = None) -> AmpPolicy:
    """bfloat16 autocast on CPU; on CUDA bfloat16 where supported, else float16 with a GradScaler.

    Args:
        amp: the config's ``amp``.
        device_type: ``cpu`` or ``cuda``.
        amp_dtype: ``auto`` | ``bfloat16`` | ``float16`` (forces one; float16 always scales).
        bf16_supported: override of ``torch.cuda.is_bf16_supported()`` (tests).
    """
    import torch

    if not amp:
        return AmpPolicy()
    if amp_dtype == "float16":
        return AmpPolicy(torch.float16, scaler=True)
    if device_type == "cuda":
        supported = torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported
        if not supported:
            if amp_dtype == "bfloat16":
                from metaseg.errors import ConfigError

                raise ConfigError("amp_dtype=bfloat16 but this GPU does not support bfloat16; use amp_dtype=auto")
            return AmpPolicy(torch.float16, scaler=True)
    return AmpPolicy(torch.bfloat16)


def model_config_for(cfg: TrainConfig, class_set: str | None = None):
    """The ``MetaSegNetConfig`` a run builds: variant defaults, ``model_overrides``, top-level ``pretrained``."""
    from metaseg.errors import ConfigError
    from metaseg.models.registry import variant_config

    overrides = dict(cfg.model_overrides)
    if cfg.pretrained is not None:
        if "pretrained" in overrides and overrides["pretrained"] != cfg.pretrained:
            raise ConfigError(f"pretrained={cfg.pretrained} contradicts model_overrides.pretrained="
                              f"{overrides['pretrained']}; set only the top-level pretrained")
        overrides["pretrained"] = cfg.pretrained
    if class_set is not None:
        overrides.setdefault("class_set", class_set)
    return variant_config(cfg.model, **overrides), overrides


def itm_signal(uses_text: bool, prompts: list[str], negatives: bool, itm_weight: float) -> str:
    """What L_itm can learn in this run (see the module docstring), recorded in checkpoints."""
    if not uses_text or itm_weight == 0:
        return "none"
    distinct = len(set(prompts))
    if distinct <= 1:
        return ("matching only: one prompt for every tile, the contrastive term is 0 and the matching "
                "term separates this prompt from other zones' prompts (text-side only)") if negatives else \
               "none: one prompt for every tile and no negatives, L_itm is 0"
    return f"contrastive + matching over {distinct} distinct prompts" if negatives else \
        f"contrastive only over {distinct} distinct prompts"


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


def prompt_hash(prompts: dict[str, str]) -> str:
    """Short SHA-256 of ``zone → prompt text`` (sorted), to tell whether two runs saw the same texts."""
    import hashlib

    blob = json.dumps(sorted((str(k), str(v)) for k, v in prompts.items()), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


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


#: Offset between the data seeds of two DDP ranks (rank 0 keeps the single-process seeds).
RANK_SEED_STRIDE = 1_000_003


def loader_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of rank ``rank``'s DataLoader generator in ``epoch``.

    The generator draws the shuffle order (single process) and the base seeds of the loader's
    worker processes, which draw the random flips; every rank gets its own, so two ranks never
    draw the same flips. Rank 0 gets the single-process value, so a 1-process run is unchanged.
    """
    return int(seed) * 100003 + int(epoch) + RANK_SEED_STRIDE * int(rank)


def data_seed(seed: int, rank: int = 0) -> int:
    """Seed of the global torch RNG that in-process data loading (``num_workers=0``) draws flips from."""
    return int(seed) + RANK_SEED_STRIDE * int(rank)


class _Snapshot:
    """A CPU copy of a model's saved tensors and config: what ``save_checkpoint`` needs, kept for later."""

    def __init__(self, model) -> None:
        self.config = model.config
        self._state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                       if not k.startswith("text_encoder.")}

    def state_dict(self):
        return self._state


def load_model_weights_strict(model, weights: dict) -> None:
    """Load resume weights, refusing any missing, unexpected or mis-shaped tensor.

    Checkpoints leave out the frozen text encoder (it is rebuilt from its name), so those keys,
    and only those, may be absent.
    """
    from metaseg.errors import CheckpointError

    expected = {k for k in model.state_dict() if not k.startswith("text_encoder.")}
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"resume weights do not match the model: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); the run folder holds another model"
        )
    try:
        model.load_state_dict(weights, strict=False)  # text_encoder.* stay as built; all else checked above
    except RuntimeError as exc:  # size mismatches
        raise CheckpointError(f"resume weights do not match the model: {' '.join(str(exc).split())[:300]}") from None


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
    if cfg.seeds:
        return train_seeds(cfg, store)
    import torch
    from torch.utils.data import DataLoader, Subset
    from torch.utils.data.distributed import DistributedSampler

    from metaseg.checkpoints import save_checkpoint
    from metaseg.models import create_model
    from metaseg.models.image_encoders import check_pretrained
    from metaseg.models.losses import compute_losses

    from .datasets import build_dataset, collate_samples

    # before any work: a bad variant/override or unavailable encoder weights stop here (exit 2)
    model_cfg, _ = model_config_for(cfg)
    resuming = cfg.resume and (Path(cfg.out_dir) / "last_state.json").is_file()
    if not resuming:  # a resumed run overwrites the encoder with last.safetensors: nothing to fetch
        check_pretrained(model_cfg.encoder, model_cfg.pretrained)
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
            # native tile size: the protocol of training.evaluate (image_size is for training only)
            val_ds = build_dataset(cfg.dataset, cfg.data_root, cfg.split_val, image_size=None,
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
        loader_gen = torch.Generator()  # re-seeded per epoch and rank (loader_seed)
        train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                                  drop_last=True, num_workers=num_workers, collate_fn=collate_samples,
                                  generator=loader_gen, pin_memory=device.type == "cuda",
                                  persistent_workers=num_workers > 0)
        val_shard = None
        if val_ds is not None:
            val_shard = Subset(val_ds, range(dist.rank, len(val_ds), dist.world)) if dist.enabled else val_ds

        # -- model
        _, overrides = model_config_for(cfg, class_set.name)
        if resuming:
            overrides["pretrained"] = "none"
        model = create_model(cfg.model, **overrides).to(device)
        model.config.pretrained = model_cfg.pretrained  # recorded as configured, even when resuming
        if dist.rank:  # same model init on every rank (DDP broadcasts rank 0's anyway), own data draws
            torch.manual_seed(data_seed(cfg.seed, dist.rank))
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
        optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scale = lr_scale(cfg, dist.world)
        lr_rule = {"lr_scaling": cfg.lr_scaling, "global_batch": cfg.batch_size * dist.world,
                   "reference_batch": cfg.lr_reference_batch, "scale": scale, "peak_lr": cfg.lr * scale}
        policy = amp_policy(cfg.amp, device.type, cfg.amp_dtype)
        scaler = torch.amp.GradScaler(device.type, enabled=policy.scaler)
        signal = itm_signal(uses_text, list(train_ds.prompts), bank is not None, float(model.config.itm_weight))
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
        steps_per_epoch = len(train_loader)
        total_steps = cfg.epochs * steps_per_epoch
        if cfg.max_steps:
            total_steps = min(total_steps, cfg.max_steps)

        # -- resume
        start_epoch, global_step, best_miou, best_epoch, bad_evals = 0, 0, -1.0, -1, 0
        last_state = out_dir / "last_state.json"
        if cfg.resume and last_state.is_file():
            from safetensors.torch import load_file

            state = json.loads(last_state.read_text())
            weights = load_file(str(out_dir / "last.safetensors"), device="cpu")
            load_model_weights_strict(model, weights)
            load_optimizer(optimizer, out_dir / "last_optim.safetensors")
            start_epoch, global_step = int(state["epoch"]) + 1, int(state["global_step"])
            best_miou, best_epoch = float(state["best_miou"]), int(state["best_epoch"])
            bad_evals = int(state["bad_evals"])
            torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
            if dist.rank:  # the saved state is rank 0's: other ranks keep drawing their own flips
                torch.manual_seed(data_seed(cfg.seed, dist.rank) + start_epoch)
            if bank is not None and state.get("bank_rng") is not None:
                bank.gen.set_state(torch.tensor(state["bank_rng"], dtype=torch.uint8))
            if policy.scaler and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            if dist.main:
                log.info("resumed from %s at epoch %d (step %d, best mIoU %.2f%%)", out_dir, start_epoch,
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
        elif dist.main:  # rows of epochs after the last checkpoint write are run again: drop them
            _truncate_csv(csv_path, start_epoch)
        extra_base = {"dataset": cfg.dataset, "prompt_mode": cfg.prompt_mode, "model_variant": cfg.model,
                      "train_zones": [z for z in train_ds.distinct_zones()],
                      "train_prompts": {str(z): train_ds.resolver.prompt(z) for z in train_ds.distinct_zones()},
                      "train_prompt_hash": prompt_hash({str(z): train_ds.resolver.prompt(z)
                                                        for z in train_ds.distinct_zones()}),
                      "units": "percent",
                      "train_config": asdict(cfg), "itm_signal": signal, "lr_rule": lr_rule,
                      "precision": policy.describe(), "encoder_start": model.config.pretrained,
                      "val_protocol": {"split": cfg.split_val, "native_size": True, "tta": cfg.val_tta,
                                       "max_val_samples": cfg.max_val_samples}}
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
        step_times: list[float] = []  # wall seconds per optimiser step (the loss read syncs the device)
        cycle_times: list[float] = []  # the same plus waiting for the batch (loading, host-to-device)
        checkpoint_s = 0.0  # wall seconds spent writing checkpoints (between epochs, outside the steps)
        last_write = time.time()
        pending_best: tuple[_Snapshot, dict] | None = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        probe_t0: float | None = None
        epoch = start_epoch - 1
        last_eval: dict[str, float] = {}
        for epoch in range(start_epoch, cfg.epochs):
            if global_step >= total_steps or out_of_time:
                break
            t0 = time.time()
            if sampler is not None:
                sampler.set_epoch(epoch)
            loader_gen.manual_seed(loader_seed(cfg.seed, epoch, dist.rank))
            ddp_model.train()
            sums = {"loss": 0.0, "ce": 0.0, "dice": 0.0, "itm": 0.0}
            n_batches = 0
            bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       disable=not (dist.main and cfg.progress), dynamic_ncols=True)
            t_cycle = time.perf_counter()
            for batch in bar:
                if global_step >= total_steps or out_of_time:
                    break
                t_step = time.perf_counter()
                lr = lr_at(global_step, total_steps, cfg, scale)
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
                with policy.autocast(device.type):
                    output = ddp_model(images, **kwargs)
                    losses = compute_losses(output, labels, ignore_index=class_set.ignore_index,
                                            itm_weight=model.config.itm_weight)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(losses["loss"]).backward()  # a no-op scale unless float16
                if cfg.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                scaler.step(optimizer)  # skipped by the scaler when float16 gradients overflowed
                scaler.update()
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
                t_end = time.perf_counter()
                step_times.append(t_end - t_step)
                cycle_times.append(t_end - t_cycle)
                t_cycle = t_end
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
            if val_shard is not None and ((epoch + 1) % cfg.eval_every == 0 or final_epoch):
                last_eval = validate(model, val_shard, class_set, device, cfg.val_batch_size or cfg.batch_size,
                                     dist, tta=cfg.val_tta)
                evaluated = True
            improved = False
            if evaluated and math.isfinite(last_eval["miou"]):
                if last_eval["miou"] > best_miou:
                    best_miou, best_epoch, bad_evals, improved = last_eval["miou"], epoch, 0, True
                else:
                    bad_evals += 1
            elif val_shard is None:
                best_epoch, improved = epoch, True  # no validation: the latest epoch is the best

            # -- write (rank 0): a better model is kept in memory and written with last.* when due
            stopping = final_epoch or bool(cfg.early_stopping_patience and bad_evals >= cfg.early_stopping_patience)
            if dist.main:
                extra = dict(extra_base, epoch=epoch, step=global_step, train_seconds=round(time.time() - run_t0, 1),
                             val={k: last_eval.get(k) for k in ("miou", "oa", "mf1", "per_class")}
                             if evaluated else None)
                if improved:
                    pending_best = (_Snapshot(model), dict(extra, best_miou=best_miou))
                every = cfg.checkpoint_every_minutes
                due = stopping or (every is not None and time.time() - last_write >= 60.0 * every)
                if due:
                    t_write = time.time()
                    if pending_best is not None:
                        save_checkpoint(pending_best[0], out_dir / "best", extra=pending_best[1])
                        pending_best = None
                    save_checkpoint(model, out_dir / "last", extra=extra)
                    save_optimizer(optimizer, out_dir / "last_optim.safetensors")
                    state = {"epoch": epoch, "global_step": global_step, "best_miou": best_miou,
                             "best_epoch": best_epoch, "bad_evals": bad_evals, "total_steps": total_steps,
                             "torch_rng": _rng_to_list(torch.get_rng_state()),
                             "bank_rng": _rng_to_list(bank.state()) if bank is not None else None,
                             "scaler": scaler.state_dict() if policy.scaler else None, "units": "percent"}
                    tmp = last_state.with_suffix(".tmp")
                    tmp.write_text(json.dumps(state))
                    tmp.replace(last_state)
                    last_write = time.time()
                    checkpoint_s += last_write - t_write
                row = {"epoch": epoch + 1, "step": global_step,
                       "lr": f"{lr_at(global_step - 1, total_steps, cfg, scale):.6g}",
                       "train_loss": f"{means['loss']:.6f}", "train_ce": f"{means['ce']:.6f}",
                       "train_dice": f"{means['dice']:.6f}", "train_itm": f"{means['itm']:.6f}",
                       "val_miou": f"{last_eval['miou']:.4f}" if evaluated else "",
                       "val_oa": f"{last_eval['oa']:.4f}" if evaluated else "",
                       "val_mf1": f"{last_eval['mf1']:.4f}" if evaluated else "",
                       "best_miou": f"{best_miou:.4f}" if best_miou >= 0 else "",
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
                         f" val mIoU {last_eval['miou']:.2f}% OA {last_eval['oa']:.2f}%" if evaluated else "",
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
        step_s = _median(step_times[2:] or step_times)
        cycle_s = _median(cycle_times[2:] or cycle_times)
        images = cfg.batch_size * dist.world  # images per optimiser step, all ranks

        def per_s(seconds):
            return round(images / seconds, 3) if seconds else None

        return {"out_dir": str(out_dir), "best_miou": best_miou if best_miou >= 0 else None,
                "best_epoch": best_epoch + 1 if best_epoch >= 0 else None, "epochs_run": epoch + 1 - start_epoch,
                "last_epoch": epoch + 1, "steps": global_step, "stopped_early": stopped_early,
                "out_of_time": out_of_time, "seconds": round(time.time() - run_t0, 1),
                "checkpoint_s": round(checkpoint_s, 2),
                "best_checkpoint": str(out_dir / "best.safetensors"), "world_size": dist.world,
                "step_s": step_s, "step_s_with_loading": cycle_s,
                "images_per_s": per_s(step_s), "images_per_s_with_loading": per_s(cycle_s),
                "precision": policy.describe(),
                "peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
                if device.type == "cuda" else None,
                "units": {"miou": "percent", "step_s": "median seconds per optimiser step, forward+backward+"
                          "update, batch already loaded (first two steps left out)",
                          "step_s_with_loading": "median seconds from one step's end to the next's, "
                          "waiting for the DataLoader included", "images_per_s": "batch_size x processes / step_s",
                          "images_per_s_with_loading": "batch_size x processes / step_s_with_loading"}}
    finally:
        dist.close()


def seed_spread(values: list[float]) -> dict[str, Any]:
    """``{"n", "mean", "std", "min", "max", "spread"}`` of per-seed scores (std: sample, n - 1)."""
    import statistics

    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None, "spread": None}
    return {"n": len(vals), "mean": round(statistics.fmean(vals), 4),
            "std": round(statistics.stdev(vals), 4) if len(vals) > 1 else None,
            "min": round(min(vals), 4), "max": round(max(vals), 4), "spread": round(max(vals) - min(vals), 4)}


def train_seeds(cfg: TrainConfig, store=None) -> dict[str, Any]:
    """``seeds=[...]``: the same job once per seed (``out_dir/seed_N``), then mean ± std of the scores.

    Each run validates with the evaluation protocol (:func:`validate`); the summary holds every
    run's summary under ``runs`` and, for ``best_miou`` and the final epoch's ``val_miou``, the
    mean, sample standard deviation, min, max and spread over the seeds (percent). It is also
    written to ``out_dir/seeds.json``.
    """
    from .config import replace

    runs = []
    for seed in cfg.seeds:
        sub = replace(cfg, seed=int(seed), seeds=None, out_dir=str(Path(cfg.out_dir) / f"seed_{seed}"))
        summary = train(sub, store)
        summary["seed"] = int(seed)
        summary["final_val_miou"] = _final_val_miou(Path(sub.out_dir))
        runs.append(summary)
        if int(os.environ.get("RANK", "0")) == 0:
            log.info("seed %d: best val mIoU %s%%", seed, summary["best_miou"])
    out = {"out_dir": cfg.out_dir, "seeds": list(cfg.seeds), "units": "percent",
           "protocol": {"dataset": cfg.dataset, "split": cfg.split_val, "tta": cfg.val_tta,
                        "max_val_samples": cfg.max_val_samples, "prompt_mode": cfg.prompt_mode},
           "best_miou": seed_spread([r["best_miou"] for r in runs]),
           "final_val_miou": seed_spread([r["final_val_miou"] for r in runs]),
           "runs": runs}
    if int(os.environ.get("RANK", "0")) == 0:
        b = out["best_miou"]
        log.info("%d seeds: best val mIoU %s ± %s (min %s, max %s)", b["n"], b["mean"], b["std"], b["min"], b["max"])
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out_dir) / "seeds.json").write_text(json.dumps(out, indent=1))
    return out


def _final_val_miou(out_dir: Path) -> float | None:
    """Validation mIoU of the last validated epoch in ``metrics.csv`` (percent), if any."""
    try:
        with (out_dir / "metrics.csv").open(newline="") as fh:
            vals = [r["val_miou"] for r in csv.DictReader(fh) if r.get("val_miou")]
    except OSError:
        return None
    return float(vals[-1]) if vals else None


def _truncate_csv(path: Path, epochs: int) -> None:
    """Keep the header and the rows of the first ``epochs`` epochs of ``metrics.csv``."""
    with path.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("epoch", "").isdigit() and int(r["epoch"]) <= epochs]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _median(values: list[float]) -> float | None:
    """Median step time (the first two steps, with one-time costs, are left out by the caller)."""
    if not values:
        return None
    v = sorted(values)
    return round(v[len(v) // 2], 4)


def _dataset_prompts(ds) -> list[str]:
    """Prompts of a dataset or of a ``Subset`` of one."""
    from torch.utils.data import Subset

    if isinstance(ds, Subset):
        return [ds.dataset.prompts[i] for i in ds.indices]
    return list(ds.prompts)


def validate(model, dataset, class_set, device, batch_size: int, dist: Dist | None = None,
             tta: bool = False) -> dict[str, Any]:
    """Score ``model`` on (this rank's shard of) a validation set with the ``training.evaluate`` protocol.

    Runs :func:`training.evaluate.confusion_dataset` (native tile size, float32 on CPU, flips only
    with ``tta``), sums the confusion matrices across ranks and returns fractions
    ``{"miou", "oa", "mf1", "per_class"}`` over the class set's scored classes in **percent**
    (0–100, the unit of ``training.evaluate`` and the paper; NaN mIoU when no scored class occurs).
    """
    import numpy as np
    import torch

    from training.evaluate import confusion_dataset

    was_training = model.training
    model.eval()
    try:
        cm, _ = confusion_dataset(model, dataset, class_set=class_set, tta=tta, batch_size=batch_size, device=device)
    finally:
        model.train(was_training)
    if dist is not None and dist.enabled:
        counts = torch.from_numpy(cm._m.copy()).to(device)
        dist.all_reduce_sum(counts)
        cm._m = counts.cpu().numpy().astype(np.int64)
    m = cm.compute(scored=class_set.scored, class_names=class_set.names).to_dict()

    def num(x):
        return float("nan") if x is None else 100.0 * float(x)

    per_class = {name: {k: (None if v is None else 100.0 * float(v)) for k, v in vals.items()}
                 for name, vals in m["per_class"].items()}
    return {"miou": num(m["miou"]), "oa": num(m["oa"]), "mf1": num(m["mf1"]), "per_class": per_class}


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
    from metaseg.cli import run_cli

    def command() -> int:
        summary = train(load_config(args.config, args.overrides))
        if int(os.environ.get("RANK", "0")) == 0:
            if args.json:
                print(json.dumps(summary))
            elif "runs" in summary:
                b = summary["best_miou"]
                print(f"done: {b['n']} seeds, best val mIoU {b['mean']} ± {b['std']} % (min {b['min']}, "
                      f"max {b['max']}); runs in {summary['out_dir']}/seed_N")
            else:
                print(f"done: best val mIoU {summary['best_miou']} % at epoch {summary['best_epoch']}; "
                      f"{summary['steps']} steps; checkpoints in {summary['out_dir']}")
        return 0

    return run_cli(command)


if __name__ == "__main__":
    sys.exit(main())
