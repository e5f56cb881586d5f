"""``python -m training.finetune``: teach one checkpoint on a few labelled tiles of your own imagery.

Usage (DESIGN.md §7)::

    python -m training.finetune (--model NAME | --checkpoint CKPT)
        (--pair IMAGE LABEL [--pair ...] | --dataset NAME --root DIR --split SPLIT | --store-labels)
        [--class-set NAME] [--budget-s S | --steps N] [--device cpu|cuda] [--seed K] --out DIR [--json]

What it does
------------
* **Labels** are read in the class set's official encoding (``--class-set loveda``: raw LoveDA,
  ``0`` = no-data = unlabelled) or in the project's own label files (the same codes, ``255`` =
  unlabelled, as the studio's Label editor writes them). Every other value is refused (one line,
  exit 2): a label must only hold classes of its set. The class set is ``--class-set``, else the
  one a project label file names (``label_<set>_*`` file name or a ``class_set`` PNG/GeoTIFF tag),
  else the checkpoint's own.
* **A new class set gets a new classifier**: when the labels' class set differs from the
  checkpoint's, the last 1×1 convolution of the head is replaced (initialised from the old one
  through ``training/class_maps/<old>_to_<new>.json`` when that map exists, so e.g. a LoveDA
  ``forest`` starts as the OpenEarthMap ``tree``); encoder, CAF decoder, neck and the FPN layers
  keep their weights.
* **Loss only on labelled pixels** (cross-entropy + Dice, both over labelled pixels only;
  unlabelled and no-data pixels never enter the loss or its gradient). The text encoder stays
  frozen; a text model sees each tile's own zone prompt, resolved like ``metaseg predict``: the
  tile's georeference / EXIF GPS → Köppen zone → the prompt store's current prompt for that zone
  and class set, the store's generic prompt when the tile has no location (``--dataset`` uses the
  dataset reader's prompts, as ``training.evaluate`` does).
* **Budget**: ``--budget-s`` (default 120) is wall-clock for the whole run — loading, feature
  caching, training and writing the folder — with a tqdm bar (ETA) on stderr; ``--steps N`` runs
  exactly N optimiser steps instead. The run stops early when the training loss has stopped
  improving (see the recipe).
* **Output**: ``--out DIR`` is a ``training.export``-style folder: ``model.safetensors``,
  ``config.json`` (checkpoint JSON with a ``teach`` record: base checkpoint and its sha256, class
  set, label files and their hashes, steps, seconds, recipe) and ``README.md`` (model card).
  ``--checkpoint DIR`` loads it in ``predict``, ``map``, ``sweep``, ``evaluate``, ``export`` and
  the app. ``--json`` prints ``checkpoint, base, class_set, steps, seconds, labelled_pixels,
  tiles`` (+ ``stopped``, ``loss``, ``recipe``).

The recipe (chosen by measurement, see docs/RESULTS.md "Teaching")
------------------------------------------------------------------
Measured with ``scripts/teach_bench.py`` on the one real LoveDA tile (scribbles ≈1 % of the pixels,
``metasegnet_demo``, ``--budget-s 120``, this shared 2-core machine under a load of 4-7; mIoU on
the unlabelled pixels, the random-forest anchor scored 20.5):

=====================================================================  =====  ======
recipe                                                                 steps  mIoU
=====================================================================  =====  ======
whole model trained (encoder lr 1e-4), 2 × 256² crops, lr 1e-3            81  19.9
encoder frozen + cached, 2 × 512² windows, lr 1e-3                        69  25.6*
encoder frozen + cached, 4 × 256² windows, lr 1e-3, 1 flip cached        816  24.6
encoder frozen + cached, 4 × 256² windows, lr 1e-3, 4 flips cached       315  28.6
encoder frozen + cached, 4 × 256² windows, lr 3e-3, 4 flips cached       486  30.9
=====================================================================  =====  ======

(* before untaught classes were switched off: a predicted-but-absent class scored 0 IoU and
counted in the mean.) Step counts vary with the machine's load; the ranking held. Hence:

* image encoder (and text encoder) frozen; encoder features cached once per tile for the
  identity and up to three flips (horizontal, vertical, both), as long as caching stays under
  :attr:`Recipe.cache_share` of the budget — flips of the *image*, so the features are exact
  (the flips were worth +4 mIoU even though they cost about a fifth of the budget);
* neck, CAF decoder and FPN head trained with AdamW (lr :attr:`Recipe.lr` = 3e-3, weight decay
  1e-4), linear warm-up for 20 steps, then cosine decay over the budget's time (or the step count);
* each step: 4 windows of 256 px, each centred (32-px aligned) on a random labelled pixel of a
  random tile/flip, so sparse scribbles are always in view and little compute goes to
  unlabelled context;
* class balance: cross-entropy weighted by ``1/sqrt(labelled pixels of the class)`` (normalised)
  plus soft Dice over the labelled pixels;
* classes without a labelled pixel are switched off in the classifier (never predicted);
* early stop once the smoothed loss has not improved by 1 % for 150 steps (after 200 steps).

Layout (one concern per module): :mod:`~training.finetune.recipe` (the recipe, a labelled tile),
:mod:`~training.finetune.limits` (budget / step caps), :mod:`~training.finetune.labels` (reading
and checking label files), :mod:`~training.finetune.samples` (pairs, dataset splits, store
labels, each tile's zone prompt), :mod:`~training.finetune.model` (base checkpoint, classifier
surgery), :mod:`~training.finetune.features` (frozen-encoder feature cache),
:mod:`~training.finetune.steps` (windows, loss, schedule, the loop), :mod:`~training.finetune.output`
(the taught folder and its model card), :mod:`~training.finetune.api` (:func:`finetune`) and
:mod:`~training.finetune.cli` (the command).
"""

from training.finetune.api import finetune
from training.finetune.cli import build_parser, main, run
from training.finetune.labels import decode_label, label_class_set
from training.finetune.limits import (
    DEFAULT_MAX_BUDGET_S,
    MAX_STEPS,
    MIN_BUDGET_S,
    check_limits,
    max_budget_s,
    parse_budget,
)
from training.finetune.model import CLASS_MAP_DIR, SILENT_BIAS, new_classifier, resolve_base, silence_untaught
from training.finetune.output import model_card
from training.finetune.recipe import IGNORE, Recipe, TeachCancelled, TeachTile
from training.finetune.samples import dataset_tiles, load_tiles, sha256_file, store_label_pairs, zone_prompt
from training.finetune.steps import labelled_loss

__all__ = [
    "CLASS_MAP_DIR",
    "DEFAULT_MAX_BUDGET_S",
    "IGNORE",
    "MAX_STEPS",
    "MIN_BUDGET_S",
    "SILENT_BIAS",
    "Recipe",
    "TeachCancelled",
    "TeachTile",
    "build_parser",
    "check_limits",
    "dataset_tiles",
    "decode_label",
    "finetune",
    "label_class_set",
    "labelled_loss",
    "load_tiles",
    "main",
    "max_budget_s",
    "model_card",
    "new_classifier",
    "parse_budget",
    "resolve_base",
    "run",
    "sha256_file",
    "silence_untaught",
    "store_label_pairs",
    "zone_prompt",
]
