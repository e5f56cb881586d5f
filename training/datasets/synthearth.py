"""SynthEarth reader: procedural tiles written in the OpenEarthMap layout.

``python -m training.synth --out DIR ...`` (``metaseg.synth``) writes georeferenced RGB
GeoTIFFs and single-band labels exactly like OpenEarthMap (``DIR/<region>/images/<region>_<n>.tif``,
``DIR/<region>/labels/...``, ``DIR/{train,val,test}.txt``), so this reader is the OpenEarthMap
reader under another name. The class set is OpenEarthMap's unless ``DIR/synthearth.json`` names
another one under the key ``"class_set"``. Each tile's zone comes from its georeference (the
generator places tiles inside the zone it simulates).
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import SegmentationDataset
from .openearthmap import OpenEarthMap

DEFAULT_CLASS_SET = "openearthmap"


def class_set_of(root: str | Path) -> str:
    """Class set named by ``ROOT/synthearth.json`` (``"class_set"``), else OpenEarthMap's."""
    meta = Path(root) / "synthearth.json"
    if meta.is_file():
        try:
            value = json.loads(meta.read_text()).get("class_set")
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, str) and value:
            return value
    return DEFAULT_CLASS_SET


def SynthEarth(  # noqa: N802 - reads like a class, is a factory
    root: str | Path,
    split: str = "train",
    image_size: int | None = None,
    prompt_mode: str = "climate",
    store=None,
    augment: bool = False,
) -> SegmentationDataset:
    """SynthEarth split as a :class:`~training.datasets.base.SegmentationDataset`."""
    return OpenEarthMap(root, split, image_size=image_size, prompt_mode=prompt_mode, store=store,
                        augment=augment, class_set=class_set_of(root), name="synthearth")
