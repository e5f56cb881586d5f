"""LoveDA reader (official layout).

Layout (as distributed)::

    ROOT/Train/{Urban,Rural}/images_png/<n>.png     RGB 1024×1024
    ROOT/Train/{Urban,Rural}/masks_png/<n>.png      single band, raw 0 no-data, 1..7 classes
    ROOT/Val/...                                    same as Train
    ROOT/Test/{Urban,Rural}/images_png/<n>.png      no masks (labels are held by the benchmark server)

Split names are ``train``, ``val``, ``test`` (folders ``Train``, ``Val``, ``Test``). Both scenes
are read; sample ids are ``<scene>/<n>`` (file numbers are unique across scenes in the official
release, the prefix just makes that explicit). Labels decode through ``metaseg.classes`` (raw 0 →
ignore, 1..7 → 0..6). The test split has no masks: every sample gets an all-ignore label and the
dataset's ``has_labels`` is ``False`` (evaluate refuses to score it; predictions still work).

LoveDA's PNGs carry no georeference; every tile gets the class set's known zone (``Cfa``: Nanjing,
Changzhou and Wuhan are all humid subtropical).
"""

from __future__ import annotations

from pathlib import Path

from metaseg.classes import get_class_set
from metaseg.errors import DatasetNotFoundError

from .base import Sample, SegmentationDataset, build_dataset

SPLIT_DIRS = {"train": "Train", "val": "Val", "test": "Test"}
SCENES = ("Urban", "Rural")

LAYOUT_HINT = (
    "expected the LoveDA layout: ROOT/{Train,Val}/{Urban,Rural}/{images_png,masks_png}/*.png and "
    "ROOT/Test/{Urban,Rural}/images_png/*.png"
)


def list_samples(root: Path, split: str, scenes: tuple[str, ...] | None = None) -> list[Sample]:
    """Samples of ``split``: of the given ``scenes``, or by default of every scene present (a root
    with only ``Rural/`` or only ``Urban/`` is a valid subset of LoveDA).

    Raises:
        DatasetNotFoundError: unknown split, missing folders, or an image without its mask
            (train/val).
    """
    root = Path(root)
    if split not in SPLIT_DIRS:
        raise DatasetNotFoundError(f"unknown LoveDA split {split!r}; valid: {', '.join(SPLIT_DIRS)}")
    if not root.is_dir():
        raise DatasetNotFoundError(f"LoveDA root {root} does not exist; {LAYOUT_HINT}")
    base = root / SPLIT_DIRS[split]
    if scenes is None:  # whichever of Urban/Rural the root holds (at least one)
        scenes = tuple(s for s in SCENES if (base / s / "images_png").is_dir()) or SCENES
    samples: list[Sample] = []
    for scene in scenes:
        images_dir = base / scene / "images_png"
        if not images_dir.is_dir():
            raise DatasetNotFoundError(f"LoveDA folder {images_dir} not found; {LAYOUT_HINT}")
        masks_dir = base / scene / "masks_png"
        for image in sorted(images_dir.glob("*.png"), key=_numeric_key):
            label: Path | None = None
            if split != "test":
                label = masks_dir / image.name
                if not label.is_file():
                    raise DatasetNotFoundError(f"LoveDA mask {label} for {image} not found; {LAYOUT_HINT}")
            samples.append(Sample(id=f"{scene}/{image.stem}", image=image, label=label, tile_key="loveda"))
    if not samples:
        raise DatasetNotFoundError(f"no LoveDA images under {base}; {LAYOUT_HINT}")
    return samples


def _numeric_key(path: Path) -> tuple[int, str]:
    return (int(path.stem), path.stem) if path.stem.isdigit() else (1 << 62, path.stem)


def LoveDA(  # noqa: N802 - reads like a class, is a factory
    root: str | Path,
    split: str = "train",
    image_size: int | None = None,
    prompt_mode: str = "climate",
    store=None,
    augment: bool = False,
    scenes: tuple[str, ...] | None = None,
) -> SegmentationDataset:
    """LoveDA split as a :class:`~training.datasets.base.SegmentationDataset`."""
    # PNGs have no georeference: skip the per-file lookup, every tile gets the default zone (Cfa).
    return build_dataset(list_samples(Path(root), split, scenes), get_class_set("loveda"), "loveda", split,
                         image_size, prompt_mode, store, augment, zone_fn=lambda _path: None)
