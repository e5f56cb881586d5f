"""Real tiles for verification and int8 calibration (``static/examples``, ``static/calibration``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

CALIBRATION_SEED = 4242  #: seed of the SynthEarth tiles in static/calibration (held-out test: 12345)
#: Prompt used when a checkpoint records no training prompt for a tile's zone.
FALLBACK_PROMPT = ("Aerial image. Bare land, rangeland, developed space, roads, trees, water, "
                   "agriculture land and buildings.")

_REPO = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = _REPO / "static" / "examples"
CALIBRATION_DIR = _REPO / "static" / "calibration"


@dataclass
class ExampleTile:
    name: str
    rgb: np.ndarray  # H×W×3 uint8
    zone: str


def _zone_of(stem: str) -> str:
    if stem.startswith("synth_"):
        code = stem.split("_")[1]
        return code[:1].upper() + code[1:]
    return "Cfa"  # iguacu_landsat8: Foz do Iguaçu (see static/examples/CREDITS.md)


def example_tiles(folder: Path | None = None) -> list[ExampleTile]:
    """The real example tiles shipped in ``static/examples/`` (labels excluded), read as the CLI reads them."""
    from metaseg.geo import read_tile

    folder = EXAMPLES_DIR if folder is None else Path(folder)
    paths = sorted(p for p in folder.rglob("*.tif") if not p.stem.endswith("_label"))
    return [ExampleTile(p.stem, read_tile(p).rgb, _zone_of(p.stem)) for p in paths]


def calibration_tiles() -> list[ExampleTile]:
    """The int8 calibration set: ``static/examples/`` tiles plus ``static/calibration/*.png``.

    ``static/calibration/`` holds SynthEarth tiles generated with seed :data:`CALIBRATION_SEED`
    (``python scripts/make_calibration_set.py``), one per training zone. Without either folder
    (an installed package), deterministic smooth pseudo-images are used and the record says so.
    """
    from PIL import Image

    tiles = example_tiles() if EXAMPLES_DIR.is_dir() else []
    if CALIBRATION_DIR.is_dir():
        for p in sorted(CALIBRATION_DIR.glob("*.png")):
            with Image.open(p) as im:
                rgb = np.asarray(im.convert("RGB"))
            tiles.append(ExampleTile(p.stem, rgb, p.stem.split("_")[1] if "_" in p.stem else "Cfa"))
    if not tiles:
        tiles = _pseudo_tiles()
    return tiles


def _pseudo_tiles(n: int = 4, size: int = 256) -> list[ExampleTile]:
    rng = np.random.default_rng(CALIBRATION_SEED)
    out = []
    for i in range(n):
        low = rng.random((size // 32, size // 32, 3))
        img = np.kron(low, np.ones((32, 32, 1))) * 200 + rng.random((size, size, 3)) * 55
        out.append(ExampleTile(f"pseudo_{i}", img.astype(np.uint8), "Cfa"))
    return out


def tile_prompt(meta: dict[str, Any] | None, zone: str) -> str:
    """The training prompt of ``zone`` recorded in the checkpoint (fallback: a generic prompt)."""
    prompts = (meta or {}).get("train_prompts") or {}
    if isinstance(prompts, dict):
        for key, value in prompts.items():
            if str(key).lower() == zone.lower() and isinstance(value, str):
                return value
    return FALLBACK_PROMPT


def _images(rgb: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)[None].float().div(255.0).contiguous()
