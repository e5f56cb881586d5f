"""``python -m training.evaluate``: score a checkpoint on a dataset split (paper eqs 8–12).

Examples::

    python -m training.evaluate --checkpoint runs/oem/best.safetensors --dataset openearthmap \\
        --root data/OpenEarthMap --split val --tta --json
    python -m training.evaluate --model metasegnet_demo --dataset synthearth --root data/se \\
        --split test --prompt-mode wrong
    python -m training.evaluate --checkpoint runs/oem/best.safetensors --dataset potsdam \\
        --root data/potsdam_patches --split test \\
        --class-map training/class_maps/openearthmap_to_potsdam.json      # zero-shot (Table VI)

What is computed:

* Each tile is run whole (dataset tiles are at most 1024²) in batches; tiles of different sizes
  are never stacked together. ``--tta`` averages the softmax of the tile and its horizontal and
  vertical flips (the paper flips at test time).
* MetaSegNet gets each tile's prompt from the dataset reader according to ``--prompt-mode``
  (``climate``; ``generic`` = the paper's Table V sentence "It is a remote sensing image.";
  ``store-generic`` = the prompt store's zone-free prompt listing the classes; ``none`` = empty
  text fed to MetaSegNet; ``wrong`` = a mismatched zone); the baseline ignores prompts. The
  paper's "No text prompt" row of Table V is the vision-only baseline (``--model baseline_*`` or
  a baseline checkpoint), not ``--prompt-mode none``.
* **One protocol**: :func:`confusion_dataset` is also what ``training.train`` validates with, so
  a checkpoint gets the same score from both (tiles at native size; flips only with ``--tta``).
* ``--score-background`` (OpenEarthMap only): the paper's Table I averages nine columns,
  Background included; our default scores the eight land-cover classes and ignores raw label 0.
  With the flag the report adds ``with_background`` (``miou`` over 9 classes, ``oa``,
  ``per_class`` incl. ``background``): raw-0 pixels count as a ninth class that our 8-output
  models never predict, so its IoU is 0 whenever such pixels exist and every pixel predicted on
  it is a false positive of the predicted class. Both numbers come from one pass.
* Metrics come from one confusion matrix over the whole split (:mod:`metaseg.metrics`):
  OA over every labelled pixel, per-class IoU/F1/precision/recall, means over the class set's
  *scored* classes (Potsdam: clutter excluded). Values are reported in **percent** (0–100), as
  in the paper's tables. Classes absent from both ground truth and prediction are ``null``.
* ``--class-map FILE`` (zero-shot): a JSON/YAML map from the checkpoint's class names to the
  dataset's (many-to-one allowed, ``null`` or missing = unmapped). Predictions are translated
  through it; a pixel predicted as an unmapped class counts as a miss. Ground-truth pixels of
  dataset classes that no checkpoint class maps to stay in the matrix (so predictions there
  are false positives of the mapped classes, and OA counts them) but those classes are not
  scored: means and ``per_class`` cover only the overlapping classes.

JSON keys: ``miou, oa, mf1, precision, recall, per_class`` (scored class → ``{iou, f1,
precision, recall}``) plus ``f1_of_means, dataset, split, prompt_mode, n_images, n_pixels,
model, checkpoint, class_set, tta, class_map, units, seconds``, ``prompt_source`` (where the
texts came from: ``checkpoint`` = the training prompts it recorded, ``store`` = the prompt store's
current text, and why), ``prompt_hash`` (short SHA-256 of zone → text as scored) and
``train_prompt_hash`` (the same over the training zones, from the checkpoint) and ``note`` when
some classes are not scored.

Prompts: ``--prompt-source checkpoint`` (default) gives each zone the text the checkpoint was
trained with (:class:`TrainingPrompts`); zones it never saw, and checkpoints that record none,
get the prompt store's current text. ``--prompt-source store`` always asks the store.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.cli import run_cli
from metaseg.errors import CheckpointError, ConfigError, MetasegError
from training.class_map import class_map_lut, load_class_map
from training.config import DATASET_NAMES
from training.config import PROMPT_MODE_NAMES as PROMPT_MODES
from training.report import build_report, format_table, pct

log = logging.getLogger(__name__)



# ----------------------------------------------------------------------------- model loading


def load_model(
    checkpoint: str | None, model_name: str | None, device: Any
) -> tuple[Any, dict[str, Any], str]:
    """``(model in eval mode, checkpoint metadata, checkpoint path)`` from the CLI choices."""
    from metaseg.checkpoints import demo_checkpoint_path, load_checkpoint

    if checkpoint:
        model, meta = load_checkpoint(checkpoint, device, expected_name=model_name)
        return model, meta, str(checkpoint)
    if not model_name:
        raise ConfigError("pass --checkpoint PATH or --model NAME")
    path = demo_checkpoint_path(model_name)
    model, meta = load_checkpoint(path, device, expected_name=model_name)
    return model, meta, str(path)


def _local_weights(ckpt_path: str) -> Path | None:
    from metaseg.checkpoints import resolve_checkpoint

    try:
        return resolve_checkpoint(ckpt_path)[0]
    except (MetasegError, OSError):
        return None


def _device(name: str | None) -> Any:
    """:func:`metaseg.device.pick_device`, keeping this command's one-line message for missing CUDA."""
    from metaseg.device import pick_device

    try:
        return pick_device(name)
    except ConfigError as exc:
        if str(name).startswith("cuda"):
            raise ConfigError("--device cuda requested but CUDA is not available") from exc
        raise


# ----------------------------------------------------------------------------- prompts


class _Text:
    def __init__(self, text: str) -> None:
        self.text = text


class TrainingPrompts:
    """What the dataset reader asks for a zone's prompt: the checkpoint's training texts first.

    A checkpoint of ``training.train`` records ``train_prompts`` (zone → the text each training
    tile carried). Stored prompts get edited after a model is trained, so scoring with the
    store's *current* text would test the model on texts it never saw. This object answers the
    reader's ``current(zone, class_set)`` with the recorded text, and asks the prompt store only
    for zones (or class sets) the checkpoint did not record; :meth:`report` says which happened.
    Recorded texts are used only when the checkpoint trained with ``prompt_mode=climate`` (each
    zone's own prompt), the mode whose texts are per zone.
    """

    def __init__(self, recorded: dict[str, str] | None, class_set: str | None, why: str,
                 train_hash: str | None = None) -> None:
        self.recorded = dict(recorded or {})
        self.class_set = class_set
        self.why = why
        self.train_hash = train_hash
        self._store = None
        self.from_checkpoint: set[str] = set()
        self.from_store: set[str] = set()

    @classmethod
    def from_meta(cls, meta: dict[str, Any], source: str = "checkpoint") -> TrainingPrompts:
        recorded = meta.get("train_prompts")
        train_hash = meta.get("train_prompt_hash")
        if source == "store":
            return cls(None, None, "--prompt-source store", train_hash)
        if not isinstance(recorded, dict) or not recorded:
            return cls(None, None, "the checkpoint records no training prompts", train_hash)
        if meta.get("prompt_mode", "climate") != "climate":
            return cls(None, None, f"the checkpoint trained with prompt_mode={meta.get('prompt_mode')}, "
                                   "not per-zone climate prompts", train_hash)
        return cls({str(k): str(v) for k, v in recorded.items()}, meta.get("class_set"), "", train_hash)

    def current(self, zone: str | None, class_set: str) -> _Text:
        key = str(zone)
        if key in self.recorded and class_set == self.class_set:
            self.from_checkpoint.add(key)
            return _Text(self.recorded[key])
        if self._store is None:
            from prompts_db import PromptStore

            self._store = PromptStore()
        self.from_store.add(key)
        return _Text(str(self._store.current(zone, class_set).text))

    def report(self, dataset: Any, prompt_mode: str, uses_text: bool) -> dict[str, Any]:
        """JSON keys ``prompt_source``, ``prompt_hash`` (of zone → text as scored), ``train_prompt_hash``."""
        from training.trainer.text import prompt_hash

        used = {str(z): str(p) for z, p in zip(dataset.zones, dataset.prompts, strict=True)}
        if not uses_text:
            source = "none (the model reads no text)"
        elif not (self.from_checkpoint or self.from_store):
            source = f"fixed ({prompt_mode} mode: the same text for every tile)"
        elif self.from_store and not self.from_checkpoint:
            source = "store" + (f" ({self.why})" if self.why else f" (zones not recorded in the checkpoint: "
                                                                 f"{', '.join(sorted(self.from_store))})")
        elif self.from_store:
            source = f"checkpoint + store for zones it did not record: {', '.join(sorted(self.from_store))}"
        else:
            source = "checkpoint"
        return {"prompt_source": source, "prompt_hash": prompt_hash(used) if uses_text else None,
                "train_prompt_hash": self.train_hash}


# ----------------------------------------------------------------------------- evaluation loop


def evaluate_dataset(
    model: Any,
    dataset: Any,
    *,
    class_set: Any,
    lut: np.ndarray | None = None,
    scored: Sequence[int] | None = None,
    tta: bool = False,
    batch_size: int = 2,
    device: Any = None,
    limit: int | None = None,
    progress: bool = False,
    workers: int = 0,
) -> tuple[Any, int]:
    """Run ``model`` over ``dataset`` and score it: :func:`confusion_dataset` then the metrics.

    ``scored`` = classes entering the means (default ``class_set.scored``); the other arguments
    are those of :func:`confusion_dataset`.

    Returns:
        ``(SegMetrics, number of tiles)``.
    """
    cm, n = confusion_dataset(model, dataset, class_set=class_set, lut=lut, tta=tta, batch_size=batch_size,
                              device=device, limit=limit, progress=progress, workers=workers)
    return cm.compute(scored=class_set.scored if scored is None else scored, class_names=class_set.names), n


def confusion_dataset(
    model: Any,
    dataset: Any,
    *,
    class_set: Any,
    lut: np.ndarray | None = None,
    tta: bool = False,
    batch_size: int = 2,
    device: Any = None,
    limit: int | None = None,
    progress: bool = False,
    workers: int = 0,
) -> tuple[Any, int]:
    """Run ``model`` over ``dataset`` and accumulate a confusion matrix: THE evaluation protocol.

    ``training.train``'s validation calls this too (on a dataset built with ``image_size=None``),
    so a checkpoint scores the same in both: tiles at their native size, same-size tiles batched,
    flips only with ``tta``, autocast only on CUDA (CPU evaluation is float32 whatever ``amp`` says).

    Args:
        model: a :class:`metaseg.inference.Predictor` (any backend), or a ``SegModel`` in eval
            mode (on ``device``), run as it is (no memory-format change, no BatchNorm folding).
        dataset: items ``{"image": 3×H×W float [0,1], "label": H×W int64, "prompt": str, ...}``.
        class_set: the dataset's :class:`metaseg.classes.ClassSet`.
        lut: optional checkpoint → dataset class lookup (zero-shot); 255 = unmapped.
        tta: flip test-time augmentation.
        batch_size: tiles per forward pass.
        device: torch device (default: the model's).
        limit: only the first ``limit`` tiles.
        progress: tqdm bar on stderr.
        workers: DataLoader worker processes reading tiles (0 = read in this process).

    Returns:
        ``(metaseg.metrics.ConfusionMatrix, number of tiles)``.
    """
    import torch

    from metaseg.inference import Predictor
    from metaseg.metrics import ConfusionMatrix

    if device is None:
        device = model.device if isinstance(model, Predictor) else next(model.parameters()).device
    predictor = model if isinstance(model, Predictor) else Predictor(model, device, channels_last=False)
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    cm = ConfusionMatrix(class_set.num_classes, ignore_index=class_set.ignore_index)
    lut_t = torch.as_tensor(lut.astype(np.int64), device=device) if lut is not None else None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="evaluate", unit="tile", file=sys.stderr)

    def score(items: list[dict[str, Any]]) -> None:
        groups: dict[tuple[int, ...], list[dict[str, Any]]] = {}
        for item in items:  # tiles of different sizes are never stacked together
            groups.setdefault(tuple(item["image"].shape), []).append(item)
        for group in groups.values():
            images = torch.stack([it["image"] for it in group]).to(device)
            pred = predictor.predict_batch(images, [it["prompt"] or "" for it in group], tta=tta)
            if lut_t is not None:
                pred = lut_t[pred]
            labels = torch.stack([it["label"] for it in group]).to(device)
            cm.update(labels, pred)
        if bar is not None:
            bar.update(len(items))

    subset = torch.utils.data.Subset(dataset, range(n))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=int(workers),
                                         collate_fn=list)  # fmt: skip
    with torch.inference_mode():
        for items in loader:
            score(items)
    if bar is not None:
        bar.close()
    return cm, n


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Score a MetaSegNet/baseline checkpoint on a dataset split.",
    )
    p.add_argument("--checkpoint", help="checkpoint (.safetensors/.json path, stem, or hub id)")
    p.add_argument(
        "--model",
        help="variant name; alone: its shipped demo weights; with --checkpoint: the expected variant",
    )
    p.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASET_NAMES)}")
    p.add_argument("--root", required=True, help="dataset root in its official layout")
    p.add_argument("--split", required=True, help="train | val | test")
    p.add_argument("--prompt-mode", default="climate", choices=PROMPT_MODES,
                   help="climate (default); generic = the paper's 'It is a remote sensing image.'; "
                        "store-generic = the store's zone-free prompt; none = empty text (the paper's "
                        "'no text' row is the baseline model instead); wrong = a mismatched zone")
    p.add_argument("--prompt-source", choices=("checkpoint", "store"), default="checkpoint",
                   help="checkpoint (default): the zone prompts the checkpoint was trained with, the prompt "
                        "store's current text only for zones it did not record; store: the store's current text")
    p.add_argument("--score-background", action="store_true",
                   help="OpenEarthMap only: also report the paper's 9-class mean (Background as a class)")
    p.add_argument("--tta", action="store_true", help="average horizontal/vertical flips")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--class-map", help="zero-shot class map (JSON/YAML) from checkpoint to dataset classes")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--backend", choices=("torch", "onnx", "onnx-int8", "auto"), default="torch",
                   help="inference backend (onnx/onnx-int8: ONNX Runtime on CPU, see metaseg.backends)")
    p.add_argument("--limit", type=int, default=None, help="only the first N tiles")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers reading tiles (default 0)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _checked_class_map(args: argparse.Namespace) -> dict[str, Any] | None:
    """Refuse contradictory or out-of-range flags (one line, exit 2); the loaded ``--class-map`` or None."""
    if not args.checkpoint and not args.model:
        raise ConfigError("pass --checkpoint PATH or --model NAME")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    if not Path(args.root).is_dir():
        raise ConfigError(f"dataset root {args.root} is not a folder")
    class_map = load_class_map(args.class_map) if args.class_map else None
    if getattr(args, "score_background", False):
        if args.dataset != "openearthmap":
            raise ConfigError("--score-background applies to OpenEarthMap only (the paper's Table I convention)")
        if class_map is not None:
            raise ConfigError("--score-background cannot be combined with --class-map")
    return class_map


def run(args: argparse.Namespace) -> int:
    class_map = _checked_class_map(args)
    import torch

    from metaseg.classes import get_class_set
    from training.datasets import build_dataset

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    device = _device(args.device)
    model, meta, ckpt_path = load_model(args.checkpoint, args.model, device)
    prompts = TrainingPrompts.from_meta(meta, getattr(args, "prompt_source", "checkpoint"))
    dataset = build_dataset(args.dataset, args.root, args.split, prompt_mode=args.prompt_mode, store=prompts)
    if len(dataset) == 0:
        raise ConfigError(f"split {args.split!r} of {args.root} has no tiles")
    if not getattr(dataset, "has_labels", True):
        raise ConfigError(f"split {args.split!r} of {args.root} has no labels to score against")
    ds_cs = dataset.class_set
    model.to(device).eval()
    if args.backend != "torch":  # same weights through the ONNX Runtime graph (metaseg.backends)
        from metaseg.inference import Predictor

        model = Predictor(model, device, meta=meta, backend=args.backend, checkpoint=_local_weights(ckpt_path),
                          channels_last=False)
    ck_name = meta.get("class_set") or model.config.class_set
    ck_cs = get_class_set(ck_name)

    lut = None
    scored: tuple[int, ...] = tuple(ds_cs.scored)
    if class_map is not None:
        lut = class_map_lut(class_map, ck_cs.names, ds_cs.names, ck_cs.name, ds_cs.name)
        targets = {int(v) for v in lut[: ck_cs.num_classes] if v != 255}
        scored = tuple(i for i in ds_cs.scored if i in targets)
    elif ck_cs.name != ds_cs.name or ck_cs.num_classes != ds_cs.num_classes:
        raise CheckpointError(
            f"checkpoint predicts {ck_cs.name} classes but {args.dataset} uses {ds_cs.name}; "
            f"pass --class-map (see training/class_maps/)"
        )

    t0 = time.perf_counter()
    if getattr(args, "score_background", False):
        metrics, n, with_bg = _score_with_background(model, dataset, ds_cs, args, device)
    else:
        with_bg = None
        metrics, n = evaluate_dataset(
            model,
            dataset,
            class_set=ds_cs,
            lut=lut,
            scored=scored,
            tta=args.tta,
            batch_size=args.batch_size,
            device=device,
            limit=args.limit,
            progress=not args.no_progress,
        )
    report = build_report(
        metrics, ds_cs, scored,
        dataset=args.dataset, split=args.split, prompt_mode=args.prompt_mode, n_images=n,
        model=model.config.name, checkpoint=ckpt_path, tta=bool(args.tta), backend=getattr(model, "backend", "torch"),
        class_map=class_map["path"] if class_map else None, seconds=round(time.perf_counter() - t0, 2),
    )  # fmt: skip
    report.update(prompts.report(dataset, args.prompt_mode, bool(model.uses_text)))
    if with_bg is not None:
        report["with_background"] = with_bg
    if args.json:
        sys.stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
    else:
        print(format_table(report))
        if with_bg is not None:
            print(f"with background (paper Table I, 9 classes): mIoU {with_bg['miou']}  "
                  f"background IoU {with_bg['per_class']['background']['iou']}")
    return 0


class _BackgroundLabels:
    """An OpenEarthMap dataset whose raw label 0 (background/unknown) becomes class ``K`` instead of ignore."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.k = dataset.class_set.num_classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        from training.datasets.base import read_raster

        item = self.dataset[index]
        path = self.dataset.samples[index].label
        if path is not None:
            raw = np.asarray(read_raster(path))
            if raw.ndim == 3:
                raw = raw[..., 0]
            if raw.shape == tuple(item["label"].shape):
                item["label"] = item["label"].masked_fill(torch.from_numpy(raw == 0), self.k)
        return item


def background_class_set(cs: Any) -> Any:
    """``cs`` plus a last class ``background`` (black), every class scored: the paper's Table I columns."""
    from metaseg.classes import ClassSet

    return ClassSet(name=cs.name, names=tuple(cs.names) + ("background",), colors=tuple(cs.colors) + ((0, 0, 0),),
                    scored=tuple(range(cs.num_classes + 1)), ignore_index=cs.ignore_index,
                    default_zone=cs.default_zone, encoding=cs.encoding)


def _score_with_background(model: Any, dataset: Any, cs: Any, args: argparse.Namespace,
                           device: Any) -> tuple[Any, int, dict[str, Any]]:
    """One pass over an OpenEarthMap split → (standard 8-class metrics, n, the 9-class report block)."""
    from metaseg.metrics import compute_metrics

    cs9 = background_class_set(cs)
    cm, n = confusion_dataset(model, _BackgroundLabels(dataset), class_set=cs9, tta=args.tta,
                              batch_size=args.batch_size, device=device, limit=args.limit,
                              progress=not args.no_progress)
    k = cs.num_classes
    # the standard protocol ignores raw-0 pixels: drop the background row (no column is ever predicted)
    standard = compute_metrics(cm.matrix[:k, :k], scored=cs.scored, class_names=cs.names,
                               unassigned=cm.unassigned[:k])
    nine = cm.compute(scored=cs9.scored, class_names=cs9.names).to_dict()
    block = {"miou": pct(nine["miou"]), "oa": pct(nine["oa"]), "mf1": pct(nine["mf1"]),
             "per_class": {name: {key: pct(v) for key, v in vals.items()} for name, vals in nine["per_class"].items()},
             "n_classes": k + 1,
             "note": "paper Table I convention: Background is a 9th class; our models have no background output, "
                     "so its IoU is 0 where background pixels exist"}
    return standard, n, block


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())
