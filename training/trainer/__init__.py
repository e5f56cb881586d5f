"""The training loop of ``python -m training.train``, split into its steps.

``setup`` (device, data, model + optimiser) → ``epoch`` (:func:`train_one_epoch`) →
``checkpointing`` (validation, best model, early stopping, writes) → ``records`` (csv,
TensorBoard, log lines, summary); ``loop`` strings them together (:func:`train`).
``optim``, ``text``, ``state``, ``validate`` and ``distributed`` hold the pieces they share.
"""

from .checkpointing import save_when_due, validate_epoch
from .distributed import Dist
from .epoch import train_one_epoch
from .loop import seed_spread, train, train_seeds
from .optim import NO_DECAY_NAMES, AmpPolicy, amp_policy, lr_at, lr_scale, no_weight_decay, param_groups
from .records import CSV_FIELDS
from .state import (
    RANK_SEED_STRIDE,
    Snapshot,
    data_seed,
    load_model_weights_strict,
    load_optimizer,
    loader_seed,
    save_optimizer,
)
from .text import NegativeBank, itm_signal, model_config_for, prompt_hash
from .validate import confusion_matrix, scores_from_confusion, validate

__all__ = [
    "CSV_FIELDS", "NO_DECAY_NAMES", "RANK_SEED_STRIDE", "AmpPolicy", "Dist", "NegativeBank", "Snapshot",
    "amp_policy", "confusion_matrix", "data_seed", "itm_signal", "load_model_weights_strict", "load_optimizer",
    "loader_seed", "lr_at", "lr_scale", "model_config_for", "no_weight_decay", "param_groups", "prompt_hash",
    "save_optimizer", "save_when_due", "scores_from_confusion", "seed_spread", "train", "train_one_epoch",
    "train_seeds", "validate", "validate_epoch",
]
