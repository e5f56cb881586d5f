"""Where the labelled tiles of a teaching run come from: ``--pair`` files, a dataset split, or the
labels saved in the prompt store; and each tile's prompt for a text model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaseg.checkpoints import file_sha256 as sha256_file  # the project's one file hash
from metaseg.errors import ConfigError, TileReadError
from training.finetune.labels import decode_label
from training.finetune.recipe import IGNORE, TeachTile


def zone_prompt(tile: Any, class_set: str, store: Any) -> tuple[str | None, str]:
    """(zone, prompt) exactly as ``metaseg predict`` resolves them for a tile without --prompt.

    The tile's location → Köppen zone → :func:`prompts_db.resolve.resolve_prompt` (the store's
    generic prompt when the tile has no location), the project's one prompt-fallback policy.
    """
    from metaseg.climate import lookup

    zone = None
    if tile.info.location.known:
        zone = lookup(tile.info.location.lat, tile.info.location.lon).code
    from prompts_db.resolve import resolve_prompt

    return zone, str(resolve_prompt(store, class_set, zone=zone).text)


def _read_pair(image: str | Path, label: str | Path, class_set: Any) -> tuple[Any, np.ndarray, int]:
    """(tile, target with the tile's no-data unlabelled, labelled pixels) of one pair."""
    from metaseg.geo import read_tile

    tile = read_tile(image)
    target = decode_label(label, class_set, tile.rgb.shape[:2])
    if tile.valid is not None:
        target = np.where(tile.valid, target, IGNORE).astype(np.uint8)
    labelled = int((target != IGNORE).sum())
    if labelled == 0:
        raise TileReadError(f"label {Path(label).name} has no labelled pixel (all unlabelled / no-data); "
                            "paint at least one stroke")
    return tile, target, labelled


def load_tiles(samples: Sequence[tuple[str | Path, str | Path]], class_set: Any, *, uses_text: bool,
               prompt_for: Callable[[Path], str] | None = None, store: Any = None) -> list[TeachTile]:
    """Read, validate and decode (image, label) pairs; resolve each tile's prompt for a text model."""
    if not samples:
        raise ConfigError("no labelled tiles given (--pair IMAGE LABEL, --dataset or --store-labels)")
    tiles: list[TeachTile] = []
    own_store = None
    try:
        for image, label in samples:
            tile, target, labelled = _read_pair(image, label, class_set)
            zone = prompt = None
            if uses_text:
                if prompt_for is not None:
                    prompt = str(prompt_for(Path(image)))
                else:
                    if store is None:
                        from prompts_db.store import PromptStore

                        own_store = store = PromptStore()
                    zone, prompt = zone_prompt(tile, class_set.name, store)
                if not prompt.strip():
                    raise ConfigError(f"the prompt for {Path(image).name} is empty")
            tiles.append(TeachTile(Path(image), Path(label), np.ascontiguousarray(tile.rgb[..., :3]), target,
                                   labelled, zone, prompt, getattr(tile.info, "gsd_m", None)))
    finally:
        if own_store is not None:
            own_store.close()
    return tiles


def dataset_tiles(name: str, root: str | Path, split: str, class_set: str | None) -> tuple[list[TeachTile], str]:
    """Tiles of a dataset split in its official layout, with the reader's own prompts."""
    from training.datasets import build_dataset

    if not Path(root).is_dir():
        raise ConfigError(f"dataset root {root} is not a folder")
    ds = build_dataset(name, root, split)
    if len(ds) == 0:
        raise ConfigError(f"split {split!r} of {root} has no tiles")
    if not getattr(ds, "has_labels", True):
        raise ConfigError(f"split {split!r} of {root} has no labels to teach with")
    cs = ds.class_set
    if class_set is not None and class_set != cs.name:
        raise ConfigError(f"--dataset {name} uses the {cs.name} class set, not --class-set {class_set}")
    tiles = []
    for i in range(len(ds)):
        item = ds[i]
        sample = ds.samples[i]
        rgb = (item["image"].permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
        target = item["label"].numpy().astype(np.uint8)
        labelled = int((target != IGNORE).sum())
        if labelled == 0:
            continue
        tiles.append(TeachTile(Path(sample.image), Path(sample.label), rgb, target, labelled, item.get("zone"),
                               item.get("prompt")))
    if not tiles:
        raise ConfigError(f"no tile of {name}/{split} has a labelled pixel")
    return tiles, cs.name


def _newest_store_labels() -> dict[str, Path]:
    """tile sha256 → the newest saved label file of that tile that still exists."""
    from prompts_db.store import PromptStore

    with PromptStore() as store:
        rows = store.labels()
    newest: dict[str, Path] = {}
    for row in rows:  # newest first
        p = Path(row["mask_path"])
        if row["tile_hash"] not in newest and p.is_file():
            newest[row["tile_hash"]] = p
    if not newest:
        raise ConfigError("the prompt store holds no saved label whose file still exists (save labels in the "
                          "studio's Label tab first)")
    return newest


def store_label_pairs(search: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """(tile, label) pairs from the labels saved in the prompt store (newest label per tile).

    The store records each label's file and its tile's sha256; the tile itself is found by hash
    among the image files in ``search`` folders (default: the label files' own folders).
    """
    newest = _newest_store_labels()
    folders = [Path(s) for s in search] or sorted({p.parent for p in newest.values()})
    found: dict[str, Path] = {}
    labels = {p.resolve() for p in newest.values()}
    for folder in folders:
        for f in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if f.suffix.lower() in (".tif", ".tiff", ".png", ".jpg", ".jpeg") and f.resolve() not in labels:
                try:
                    h = sha256_file(f)
                except OSError:
                    continue
                if h in newest and h not in found:
                    found[h] = f
    pairs = [(found[h], lbl) for h, lbl in newest.items() if h in found]
    if not pairs:
        raise ConfigError(f"found none of the {len(newest)} labelled tiles by hash in {', '.join(map(str, folders))}; "
                          "pass --root DIR with the tiles")
    return pairs
