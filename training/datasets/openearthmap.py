"""OpenEarthMap reader (official layout).

Layout (as distributed)::

    ROOT/train.txt, ROOT/val.txt, ROOT/test.txt     one tile file name per line, e.g. "aachen_1.tif"
    ROOT/<region>/images/<region>_<n>.tif           RGB GeoTIFF (georeferenced)
    ROOT/<region>/labels/<region>_<n>.tif           single-band GeoTIFF, raw 0 unknown, 1..8 classes

The region is the file name without its trailing ``_<n>``. Labels decode through
``metaseg.classes`` (raw 0 → ignore 255, raw 1..8 → 0..7). The official test labels are not
public: when a split's label files are absent the samples get all-ignore labels and
``dataset.has_labels`` is ``False``; in train/val a missing label is an error.

Zone: from each tile's georeference (OpenEarthMap spans 44 countries, so there is no default
zone); tiles without one get the generic prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from metaseg.classes import get_class_set
from metaseg.errors import DatasetNotFoundError

from .base import Sample, SegmentationDataset, build_dataset

SPLITS = ("train", "val", "test")

LAYOUT_HINT = (
    "expected the OpenEarthMap layout: ROOT/{train,val,test}.txt listing tile file names and "
    "ROOT/<region>/images/<region>_<n>.tif with ROOT/<region>/labels/<region>_<n>.tif"
)


def region_of(filename: str) -> str:
    """``"aachen_12.tif"`` → ``"aachen"``; ``"santa_cruz_3.tif"`` → ``"santa_cruz"``."""
    stem = Path(filename).stem
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def list_samples(root: Path, split: str, dataset: str = "OpenEarthMap") -> list[Sample]:
    """Samples of ``split`` in an OpenEarthMap-layout folder.

    Raises:
        DatasetNotFoundError: the root, the split list, or a listed image/label is missing.
    """
    root = Path(root)
    if split not in SPLITS:
        raise DatasetNotFoundError(f"unknown {dataset} split {split!r}; valid: {', '.join(SPLITS)}")
    if not root.is_dir():
        raise DatasetNotFoundError(f"{dataset} root {root} does not exist; {LAYOUT_HINT}")
    listing = root / f"{split}.txt"
    if not listing.is_file():
        raise DatasetNotFoundError(f"{dataset} split list {listing} not found; {LAYOUT_HINT}")
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not names:
        raise DatasetNotFoundError(f"{dataset} split list {listing} is empty")
    samples: list[Sample] = []
    missing_labels: list[Path] = []
    for entry in names:
        name = Path(entry).name
        if not Path(name).suffix:
            name += ".tif"
        region = region_of(name)
        image = root / region / "images" / name
        if not image.is_file():
            raise DatasetNotFoundError(
                f"{dataset} image {image} (listed in {listing.name}) not found; {LAYOUT_HINT}"
            )
        label = root / region / "labels" / name
        if not label.is_file():
            missing_labels.append(label)
            label = None
        samples.append(Sample(id=Path(name).stem, image=image, label=label, tile_key=str(image)))
    if missing_labels and split != "test":
        raise DatasetNotFoundError(
            f"{dataset} {split} label {missing_labels[0]} not found "
            f"({len(missing_labels)} of {len(names)} missing); {LAYOUT_HINT}"
        )
    return samples


def OpenEarthMap(  # noqa: N802 - reads like a class, is a factory
    root: str | Path,
    split: str = "train",
    image_size: int | None = None,
    prompt_mode: str = "climate",
    store=None,
    augment: bool = False,
    class_set: str = "openearthmap",
    name: str = "openearthmap",
    zone_fn: Callable[[str | Path], str | None] | None = None,
) -> SegmentationDataset:
    """OpenEarthMap split as a :class:`~training.datasets.base.SegmentationDataset`.

    ``zone_fn`` replaces the georeference lookup (SynthEarth passes its manifest's zones).
    """
    samples = list_samples(Path(root), split, dataset="SynthEarth" if name == "synthearth" else "OpenEarthMap")
    return build_dataset(samples, get_class_set(class_set), name, split, image_size, prompt_mode, store,
                         augment, zone_fn)
