"""Shared machinery of the dataset readers: sample lists, file reading, resize, flips, collate.

Every reader turns its official layout into a list of :class:`Sample` (image path, label path or
``None``, a tile key for zone caching) and hands it to :class:`SegmentationDataset`, which yields

``{"image": float32 3×H×W in [0, 1] RGB, "label": int64 H×W (255 = ignore),
"prompt": str, "zone": str | None, "id": str}``.

Choices (documented here, tested in ``tests/training/test_readers.py``):

* ``image_size=None`` keeps each tile's own size (any size works); ``image_size=S`` resizes
  image (bilinear, antialiased when shrinking) and label (nearest) to S×S, as the paper does
  for OpenEarthMap ("uniformly resized to 1024"). Non-square tiles are resized to S×S too.
* ``augment=True``: independent random horizontal and vertical flips (p = 0.5 each), applied
  identically to image and label (paper §III-A).
* A sample without a label file (LoveDA test, OpenEarthMap test) gets an all-ignore label and the
  dataset's ``has_labels`` is ``False``.
* Images are read by :func:`metaseg.geo.read_tile`, the project's one tile reader (8-bit data as
  they are, other bit depths stretched, bands 1-3 as RGB as in the paper), so training,
  evaluation, sweeps, maps and the app agree on pixels and on nodata: a pixel the reader marks
  invalid (nodata value, internal mask, alpha, NaN) gets label 255 — never learned from, never
  scored — whatever its label file says (:func:`read_pair`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from metaseg.classes import ClassSet
from metaseg.errors import TileReadError

from .prompts import PromptResolver

log = logging.getLogger(__name__)

IGNORE_INDEX = 255
_TIFF = {".tif", ".tiff"}


@dataclass(frozen=True)
class Sample:
    """One tile of a dataset split.

    Attributes:
        id: unique, stable sample id (file stem, prefixed by scene where needed).
        image: image file path.
        label: label file path, or ``None`` when the split has no ground truth.
        tile_key: samples sharing a key share one zone lookup (a tile cut into patches).
    """

    id: str
    image: Path
    label: Path | None
    tile_key: str


def read_raster(path: Path) -> np.ndarray:
    """Read a raster as an ``(H, W)`` or ``(H, W, C)`` numpy array (no decoding)."""
    try:
        if path.suffix.lower() in _TIFF:
            import warnings

            import rasterio

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    arr = src.read()
            return arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
        from PIL import Image

        with Image.open(path) as im:
            return np.array(im)
    except TileReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised as a typed user error
        raise TileReadError(f"cannot read {path}: {exc}") from exc


def read_pair(image: Path, label: Path | None, class_set: ClassSet) -> tuple[np.ndarray, np.ndarray]:
    """``(H×W×3 uint8 RGB, H×W uint8 label)`` of one sample: the label decoded from the class set's
    official encoding, all-ignore without a label file, and 255 wherever the image has nodata.

    Raises:
        TileReadError: unreadable file, or a label whose size differs from the image's.
    """
    from metaseg import geo

    tile = geo.read_tile(image)
    rgb = np.ascontiguousarray(tile.rgb)
    if label is None:
        return rgb, np.full(rgb.shape[:2], IGNORE_INDEX, dtype=np.uint8)
    lab = np.array(class_set.decode(read_raster(Path(label))), dtype=np.uint8)
    if lab.shape != rgb.shape[:2]:
        raise TileReadError(
            f"label {label} is {lab.shape[1]}x{lab.shape[0]} but image {image} is {rgb.shape[1]}x{rgb.shape[0]}"
        )
    if tile.valid is not None:
        lab[~tile.valid] = IGNORE_INDEX
    return rgb, lab


class SegmentationDataset(Dataset):
    """A list of samples read through one class set, with prompts attached.

    Args:
        samples: the split's samples (see the concrete readers).
        class_set: decodes the official label encoding (``ClassSet.decode``).
        resolver: attaches zone and prompt text (zones and texts resolved here, once).
        image_size: optional S to resize every tile to S×S.
        augment: random horizontal/vertical flips.
        name: dataset name (``openearthmap``, ``loveda``, ``potsdam``, ``synthearth``).
        split: split name, for messages.
    """

    def __init__(
        self,
        samples: list[Sample],
        class_set: ClassSet,
        resolver: PromptResolver,
        image_size: int | None = None,
        augment: bool = False,
        name: str = "",
        split: str = "",
    ) -> None:
        self.samples = list(samples)
        self.class_set = class_set
        self.resolver = resolver
        self.image_size = image_size
        self.augment = augment
        self.name = name
        self.split = split
        self.has_labels = any(s.label is not None for s in self.samples)
        # Resolve every zone and prompt now (cached per tile key / zone): cheap, and keeps the
        # prompt store out of DataLoader worker processes.
        self.zones: list[str | None] = [resolver.zone(s.tile_key, s.image) for s in self.samples]
        self.prompts: list[str] = [resolver.prompt(z) for z in self.zones]

    @property
    def num_classes(self) -> int:
        return self.class_set.num_classes

    def distinct_zones(self) -> list[str | None]:
        """Zones present in this split (in first-seen order)."""
        return list(dict.fromkeys(self.zones))

    def __len__(self) -> int:
        return len(self.samples)

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(H, W, 3)`` uint8 RGB and ``(H, W)`` uint8 decoded label of sample ``index``."""
        sample = self.samples[index]
        return read_pair(sample.image, sample.label, self.class_set)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rgb, label = self.load_arrays(index)
        image = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)  # 3×H×W
        target = torch.from_numpy(label.astype(np.int64))  # H×W
        if self.image_size is not None and tuple(target.shape) != (self.image_size, self.image_size):
            image, target = resize_pair(image, target, self.image_size)
        if self.augment:
            if torch.rand(()) < 0.5:
                image, target = image.flip(-1), target.flip(-1)
            if torch.rand(()) < 0.5:
                image, target = image.flip(-2), target.flip(-2)
        return {
            "image": image.contiguous(),
            "label": target.contiguous(),
            "prompt": self.prompts[index],
            "zone": self.zones[index],
            "id": self.samples[index].id,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"prompt_mode={self.resolver.mode!r}, image_size={self.image_size})"
        )


def build_dataset(
    samples: list[Sample],
    class_set: ClassSet,
    name: str,
    split: str,
    image_size: int | None = None,
    prompt_mode: str = "climate",
    store=None,
    augment: bool = False,
    zone_fn=None,
) -> SegmentationDataset:
    """The one place a reader's factory turns its samples into a :class:`SegmentationDataset`.

    The resolver's default zone is the class set's; ``zone_fn`` (``None`` = the georeference
    lookup, ``tile_zone``) says where a tile's zone comes from.
    """
    extra = {"zone_fn": zone_fn} if zone_fn is not None else {}
    resolver = PromptResolver(class_set.name, prompt_mode, store=store, default_zone=class_set.default_zone,
                              **extra)
    return SegmentationDataset(samples, class_set, resolver, image_size=image_size, augment=augment,
                               name=name, split=split)


def resize_pair(image: torch.Tensor, label: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize ``image`` (3×H×W float, bilinear) and ``label`` (H×W int, nearest) to size×size."""
    import torch.nn.functional as F

    shrink = image.shape[-1] > size or image.shape[-2] > size
    image = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False,
                          antialias=shrink)[0].clamp_(0.0, 1.0)
    label = F.interpolate(label[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()
    return image, label


def collate_samples(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images (B×3×H×W) and labels (B×H×W); keep prompts, zones and ids as lists.

    ``torch``'s default collate cannot handle ``zone=None``; use this with every DataLoader.
    """
    return {
        "image": torch.stack([b["image"] for b in batch]),
        "label": torch.stack([b["label"] for b in batch]),
        "prompt": [b["prompt"] for b in batch],
        "zone": [b["zone"] for b in batch],
        "id": [b["id"] for b in batch],
    }
