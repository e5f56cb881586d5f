"""The shipped example tiles and their ground-truth labels."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from metaseg.errors import MetasegError
from studio.placement import tile_hash

log = logging.getLogger(__name__)


def example_tiles(folder: Path) -> list[list[str]]:
    """gr.Examples rows: SynthEarth tiles (``folder/synth``, labels excluded), then the real GeoTIFFs."""
    synth = folder / "synth"
    out = [[str(p)] for p in sorted(synth.glob("*.tif")) if not p.stem.endswith("_label")] if synth.is_dir() else []
    return out + [[str(p)] for p in sorted(folder.glob("*.tif"))]


@lru_cache(maxsize=4)
def example_labels(folder: str) -> dict[str, str]:
    """Tile hash → ground-truth path for the SynthEarth examples (``<name>_label.tif`` beside ``<name>.tif``)."""
    synth = Path(folder) / "synth"
    labels: dict[str, str] = {}
    for p in sorted(synth.glob("*_label.tif")) if synth.is_dir() else []:
        tile = p.with_name(p.name.replace("_label.tif", ".tif"))
        if tile.exists():
            try:
                labels[tile_hash(tile)] = str(p)
            except MetasegError as exc:
                log.warning("example %s skipped: %s", tile.name, exc)
    return labels
