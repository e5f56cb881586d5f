"""Train MetaSegNet or its baseline: ``python -m training.train --config CFG.yaml [key=value ...]``.

This module is the command line; the loop lives in :mod:`training.trainer`, one module per step
(set-up, ``train_one_epoch``, validation + checkpointing + early stopping, records).

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
import json
import logging
import sys

from .config import load_config
from .trainer import (
    CSV_FIELDS,
    NO_DECAY_NAMES,
    RANK_SEED_STRIDE,
    AmpPolicy,
    Dist,
    NegativeBank,
    amp_policy,
    confusion_matrix,
    data_seed,
    itm_signal,
    load_model_weights_strict,
    load_optimizer,
    loader_seed,
    lr_at,
    lr_scale,
    model_config_for,
    no_weight_decay,
    param_groups,
    prompt_hash,
    save_optimizer,
    scores_from_confusion,
    seed_spread,
    train,
    train_seeds,
    validate,
)
from .trainer.distributed import is_main_process

__all__ = [
    "CSV_FIELDS", "NO_DECAY_NAMES", "RANK_SEED_STRIDE", "AmpPolicy", "Dist", "NegativeBank", "amp_policy",
    "build_parser", "confusion_matrix", "data_seed", "itm_signal", "load_model_weights_strict", "load_optimizer",
    "loader_seed", "lr_at", "lr_scale", "main", "model_config_for", "no_weight_decay", "param_groups",
    "prompt_hash", "save_optimizer", "scores_from_confusion", "seed_spread", "train", "train_seeds", "validate",
]


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
        if is_main_process():
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
