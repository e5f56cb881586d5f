"""Per-pixel groups of SynthEarth tiles for sweep diagnostics (``training.sweep --groups``-style hook).

:func:`ambiguous_materials` regenerates a tile's material map from its set's manifest
(``generate_tile`` is deterministic) and returns ``0`` = other, ``1`` = striped, ``2`` = bright,
``3`` = dark: the three *ambiguous* materials whose class the zone decides (docs/SYNTHEARTH.md).
A sweep given ``groups="training.synth.diagnostics:ambiguous_materials"`` then reports pixel
accuracy per group for every variant (see ``scripts/ablation.py``).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

GROUP_NAMES = ("other", "striped", "bright", "dark")


@functools.lru_cache(maxsize=8)
def _tiles(root: str) -> tuple[dict, dict]:
    manifest = json.loads((Path(root) / "synthearth.json").read_text(encoding="utf-8"))
    return manifest, {t["file"]: t for t in manifest.get("tiles", []) if isinstance(t, dict)}


def ambiguous_materials(image: str) -> np.ndarray | None:
    """``H×W`` uint8 group map of a SynthEarth image (``None`` when it is not in its set's manifest)."""
    from training.synth import M_BRIGHT, M_DARK, M_STRIPED, generate_tile

    path = Path(image)
    root = path.parent.parent.parent  # ROOT/<region>/images/<file>
    if not (root / "synthearth.json").is_file():
        return None
    manifest, by_file = _tiles(str(root))
    t = by_file.get(path.name)
    if t is None:
        return None
    tile = generate_tile(t["zone"], size=int(manifest["size"]), seed=int(manifest["seed"]), index=int(t["index"]))
    groups = np.zeros(tile.material.shape, np.uint8)
    for code, material in enumerate((M_STRIPED, M_BRIGHT, M_DARK), start=1):
        groups[tile.material == material] = code
    return groups
