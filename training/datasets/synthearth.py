"""SynthEarth reader: procedural tiles written in the OpenEarthMap layout.

``python -m training.synth --out DIR ...`` (``training.synth``) writes georeferenced RGB
GeoTIFFs and single-band labels exactly like OpenEarthMap (``DIR/<region>/images/<region>_<n>.tif``,
``DIR/<region>/labels/...``, ``DIR/{train,val,test}.txt``) plus ``DIR/synthearth.json``, so this
reader is the OpenEarthMap reader under another name. The class set is the manifest's
``"class_set"`` (OpenEarthMap's by default). Each tile's zone is the one the generator simulated
(manifest ``tiles[].zone``, exact); tiles missing from the manifest fall back to their
georeference like OpenEarthMap.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import SegmentationDataset
from .openearthmap import OpenEarthMap
from .prompts import tile_zone

DEFAULT_CLASS_SET = "openearthmap"


def read_manifest(root: str | Path) -> dict:
    """``ROOT/synthearth.json`` as a dict (``{}`` when absent or unreadable)."""
    meta = Path(root) / "synthearth.json"
    if not meta.is_file():
        return {}
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def class_set_of(root: str | Path) -> str:
    """Class set named by the manifest (``"class_set"``), else OpenEarthMap's."""
    value = read_manifest(root).get("class_set")
    return value if isinstance(value, str) and value else DEFAULT_CLASS_SET


def SynthEarth(  # noqa: N802 - reads like a class, is a factory
    root: str | Path,
    split: str = "train",
    image_size: int | None = None,
    prompt_mode: str = "climate",
    store=None,
    augment: bool = False,
) -> SegmentationDataset:
    """SynthEarth split as a :class:`~training.datasets.base.SegmentationDataset`."""
    manifest = read_manifest(root)
    zones = {t["file"]: t["zone"] for t in manifest.get("tiles", [])
             if isinstance(t, dict) and isinstance(t.get("file"), str) and isinstance(t.get("zone"), str)}

    def zone_fn(path: str | Path) -> str | None:
        return zones.get(Path(path).name) or tile_zone(path)

    return OpenEarthMap(root, split, image_size=image_size, prompt_mode=prompt_mode, store=store,
                        augment=augment, class_set=class_set_of(root), name="synthearth", zone_fn=zone_fn)
