"""ISPRS Potsdam: patch-split tool and reader.

Raw layout (as distributed; files may sit in any sub-folder of ``--src``, e.g. ``2_Ortho_RGB/``,
``5_Labels_all/``, ``5_Labels_all_noBoundary/``)::

    top_potsdam_<X>_<Y>_RGB.tif                 6000×6000 RGB
    top_potsdam_<X>_<Y>_label.tif               RGB colour-coded reference
    top_potsdam_<X>_<Y>_label_noBoundary.tif    same, object boundaries eroded (black = ignore)

**Split** (official ISPRS partition): test tiles are :data:`TEST_TILES` (14 tiles); the other
24 are for training, minus :data:`VAL_TILES` (``2_10``, the usual choice in the literature since
ISPRS defines no validation set) which form ``val``.

**Labels used** (``labels="auto"``, the default): train and val patches are cut from the full
reference ``_label.tif``; test patches from ``_label_noBoundary.tif`` when it exists, because the
ISPRS benchmark scores on eroded boundaries (the black boundary pixels decode to ignore).
``labels="full"`` or ``"eroded"`` forces one kind for every split.

**Patches**: windows of ``patch``×``patch`` every ``stride`` pixels. The last window of each
row/column is shifted back so it ends exactly at the tile border (it overlaps its neighbour
instead of being padded); a tile smaller than ``patch`` gives one window of the tile's own size.
With the defaults a 6000² tile yields 6×6 = 36 patches of 1024² (offsets 0, 1024, …, 4096, 4976).

**Each pixel is scored once** (``score_once``, default for ``val`` and ``test``): in the label of
a patch, the rows/columns already covered by the previous window of its row or column (the
shifted last patch's overlap strip, or every overlap when ``stride < patch``) are set to black,
which decodes to ignore. The image patch stays whole (the model sees the full context), but the
metrics count every pixel of a tile exactly once, as when scoring the whole 6000² tile. Train
patches keep their full labels (overlap there is just extra training data).

Output (the layout :func:`Potsdam` reads)::

    OUT/{train,val,test}/images/top_potsdam_<X>_<Y>_y<row>_x<col>.tif   RGB, georeferenced if the source was
    OUT/{train,val,test}/labels/top_potsdam_<X>_<Y>_y<row>_x<col>.tif   RGB colour-coded (official encoding)
    OUT/split.json                                                      manifest: tiles per split, settings

Zone: from the patch's georeference when present, else the class set's ``Cfb`` (Potsdam).
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from metaseg.classes import get_class_set
from metaseg.errors import ConfigError, DatasetNotFoundError

from .base import Sample, SegmentationDataset, build_dataset

log = logging.getLogger(__name__)

TEST_TILES: tuple[str, ...] = (
    "2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15",
    "5_13", "5_14", "5_15", "6_13", "6_14", "6_15", "7_13",
)
VAL_TILES: tuple[str, ...] = ("2_10",)
SPLITS = ("train", "val", "test")
LABEL_KINDS = ("auto", "full", "eroded")

_RGB_RE = re.compile(r"^top_potsdam_(\d+_\d+)_RGB\.tif$", re.IGNORECASE)
_PATCH_RE = re.compile(r"^(top_potsdam_\d+_\d+)_y\d+_x\d+$")

LAYOUT_HINT = (
    "expected patches ROOT/{train,val,test}/{images,labels}/*.tif made by "
    "`python -m training.potsdam_split --src RAW --out ROOT` from the raw tiles "
    "top_potsdam_X_Y_RGB.tif + top_potsdam_X_Y_label.tif"
)


def window_starts(length: int, patch: int, stride: int) -> list[int]:
    """Start offsets covering ``[0, length)`` with windows of ``patch`` every ``stride``.

    The last window is shifted to end at ``length`` (no padding). ``length <= patch`` → ``[0]``.
    """
    if patch < 1 or stride < 1:
        raise ConfigError(f"patch and stride must be positive, got patch={patch} stride={stride}")
    if length <= patch:
        return [0]
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] + patch < length:
        starts.append(length - patch)
    return starts


def split_of(tile: str, val_tiles: Iterable[str] = VAL_TILES) -> str:
    """``"2_13"`` → ``"test"``, ``"2_10"`` → ``"val"``, others → ``"train"``."""
    if tile in TEST_TILES:
        return "test"
    return "val" if tile in set(val_tiles) else "train"


def find_tiles(src: Path) -> dict[str, dict[str, Path]]:
    """Map tile id ``"X_Y"`` → ``{"rgb": path, "full": path?, "eroded": path?}`` under ``src``."""
    tiles: dict[str, dict[str, Path]] = {}
    for path in sorted(Path(src).rglob("top_potsdam_*.tif")):
        m = _RGB_RE.match(path.name)
        if m:
            tiles.setdefault(m.group(1), {})["rgb"] = path
            continue
        low = path.name.lower()
        for suffix, kind in (("_label_noboundary.tif", "eroded"), ("_label.tif", "full")):
            if low.endswith(suffix):
                tile = path.name[len("top_potsdam_"): -len(suffix)]
                tiles.setdefault(tile, {})[kind] = path
                break
    return {t: v for t, v in tiles.items() if "rgb" in v}


def split_tiles(
    src: str | Path,
    out: str | Path,
    patch: int = 1024,
    stride: int | None = None,
    labels: str = "auto",
    val_tiles: Iterable[str] = VAL_TILES,
    score_once: Iterable[str] = ("val", "test"),
) -> dict:
    """Cut raw Potsdam tiles into patches in the layout :func:`Potsdam` reads.

    Args:
        src: folder holding the raw tiles (searched recursively).
        out: output root; ``out/{train,val,test}/{images,labels}`` are created.
        patch: patch side in pixels.
        stride: step between patches (default ``patch``: no overlap except the shifted last one).
        labels: ``auto`` | ``full`` | ``eroded`` (see the module docstring).
        val_tiles: tile ids (``"X_Y"``) moved from train to val.
        score_once: splits whose patch labels black out pixels an earlier patch of the same
            tile already holds (see the module docstring).

    Returns:
        The manifest written to ``out/split.json``: ``{"patch", "stride", "labels",
        "splits": {split: [tile, ...]}, "patches": {split: count}, "skipped": [...]}``.

    Raises:
        DatasetNotFoundError: no ``top_potsdam_*_RGB.tif`` under ``src``.
        ConfigError: bad ``patch``/``stride``/``labels``.
    """
    import rasterio

    stride = patch if stride is None else stride
    if labels not in LABEL_KINDS:
        raise ConfigError(f"labels must be one of {', '.join(LABEL_KINDS)}, got {labels!r}")
    window_starts(1, patch, stride)  # validates patch/stride
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DatasetNotFoundError(f"Potsdam source folder {src} does not exist")
    tiles = find_tiles(src)
    if not tiles:
        raise DatasetNotFoundError(
            f"no top_potsdam_X_Y_RGB.tif under {src}; expected the ISPRS Potsdam tiles "
            "(2_Ortho_RGB/ and 5_Labels_all/ or 5_Labels_all_noBoundary/)"
        )
    val_tiles = tuple(val_tiles)
    manifest: dict = {"patch": patch, "stride": stride, "labels": labels, "val_tiles": list(val_tiles),
                      "splits": {s: [] for s in SPLITS}, "patches": dict.fromkeys(SPLITS, 0),
                      "skipped": [], "score_once": sorted(set(score_once))}
    for tile, files in sorted(tiles.items()):
        split = split_of(tile, val_tiles)
        kind = labels if labels != "auto" else ("eroded" if split == "test" else "full")
        label_path = files.get(kind) or (files.get("full") if labels == "auto" else None)
        if label_path is None:
            log.warning("Potsdam tile %s has no %s label; skipped", tile, kind)
            manifest["skipped"].append(tile)
            continue
        img_dir, lbl_dir = out / split / "images", out / split / "labels"
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            _cut_tile(tile, files["rgb"], label_path, img_dir, lbl_dir, patch, stride, manifest, split,
                      once=split in set(score_once))
        manifest["splits"][split].append(tile)
        log.info("Potsdam tile %s -> %s", tile, split)
    out.mkdir(parents=True, exist_ok=True)
    (out / "split.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def owned_from(starts: list[int], patch: int) -> list[int]:
    """Per window, the offset (inside the window) from which its pixels are not in the previous window."""
    return [0 if i == 0 else max(0, starts[i - 1] + patch - s) for i, s in enumerate(starts)]


def _cut_tile(tile: str, rgb_path: Path, label_path: Path, img_dir: Path, lbl_dir: Path, patch: int,
              stride: int, manifest: dict, split: str, once: bool = False) -> None:
    """Write the patches of one tile (image and label windows at the same offsets).

    ``once``: black out (→ ignore) label pixels an earlier window of the tile already covers.
    """
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    with rasterio.open(rgb_path) as rgb_src, rasterio.open(label_path) as lbl_src:
        if (rgb_src.width, rgb_src.height) != (lbl_src.width, lbl_src.height):
            raise DatasetNotFoundError(
                f"Potsdam tile {tile}: image {rgb_src.width}x{rgb_src.height} and label "
                f"{lbl_src.width}x{lbl_src.height} differ"
            )
        georef = rgb_src.crs is not None
        n_img_bands = min(3, rgb_src.count)
        n_lbl_bands = min(3, lbl_src.count)
        ys, xs = window_starts(rgb_src.height, patch, stride), window_starts(rgb_src.width, patch, stride)
        own_y, own_x = owned_from(ys, patch), owned_from(xs, patch)
        for iy, y in enumerate(ys):
            for ix, x in enumerate(xs):
                win = Window(x, y, min(patch, rgb_src.width), min(patch, rgb_src.height))
                name = f"top_potsdam_{tile}_y{y:04d}_x{x:04d}.tif"
                rgb = rgb_src.read(list(range(1, n_img_bands + 1)), window=win)
                lbl = lbl_src.read(list(range(1, n_lbl_bands + 1)), window=win)
                if once:
                    lbl[:, : own_y[iy], :] = 0
                    lbl[:, :, : own_x[ix]] = 0
                profile = {"driver": "GTiff", "width": int(win.width), "height": int(win.height),
                           "dtype": "uint8", "compress": "deflate"}
                if georef:
                    profile.update(crs=rgb_src.crs, transform=window_transform(win, rgb_src.transform))
                with rasterio.open(img_dir / name, "w", count=rgb.shape[0], **profile) as dst:
                    dst.write(rgb.astype(np.uint8, copy=False))
                with rasterio.open(lbl_dir / name, "w", count=lbl.shape[0], **profile) as dst:
                    dst.write(lbl.astype(np.uint8, copy=False))
                manifest["patches"][split] += 1


def list_samples(root: Path, split: str) -> list[Sample]:
    """Patch samples of ``split`` under a :func:`split_tiles` output root."""
    root = Path(root)
    if split not in SPLITS:
        raise DatasetNotFoundError(f"unknown Potsdam split {split!r}; valid: {', '.join(SPLITS)}")
    images_dir, labels_dir = root / split / "images", root / split / "labels"
    if not images_dir.is_dir():
        raw = find_tiles(root) if root.is_dir() else {}
        extra = (f" ({root} holds raw tiles: run `python -m training.potsdam_split --src {root} "
                 f"--out OUT` and point data_root at OUT)") if raw else ""
        raise DatasetNotFoundError(f"Potsdam folder {images_dir} not found{extra}; {LAYOUT_HINT}")
    samples = []
    for image in sorted(images_dir.glob("*.tif")):
        label = labels_dir / image.name
        if not label.is_file():
            raise DatasetNotFoundError(f"Potsdam label patch {label} for {image} not found; {LAYOUT_HINT}")
        m = _PATCH_RE.match(image.stem)
        samples.append(Sample(id=image.stem, image=image, label=label,
                              tile_key=m.group(1) if m else image.stem))
    if not samples:
        raise DatasetNotFoundError(f"no Potsdam patches in {images_dir}; {LAYOUT_HINT}")
    return samples


def Potsdam(  # noqa: N802 - reads like a class, is a factory
    root: str | Path,
    split: str = "train",
    image_size: int | None = None,
    prompt_mode: str = "climate",
    store=None,
    augment: bool = False,
) -> SegmentationDataset:
    """Potsdam patches (from :func:`split_tiles`) as a :class:`~training.datasets.base.SegmentationDataset`."""
    return build_dataset(list_samples(Path(root), split), get_class_set("potsdam"), "potsdam", split,
                         image_size, prompt_mode, store, augment)
