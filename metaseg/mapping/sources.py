"""What an input tile is on the client (:class:`Source`) and the unique mask name each gets.

Each tile gets a unique id (:func:`assign_ids`): the file stem (the item id for STAC), suffixed
with a short hash of the full path when two inputs share a stem, so masks of ``a/tile.tif`` and
``b/tile.tif`` never overwrite each other.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from metaseg.mapping.layout import is_url, safe_stem

TILE_SUFFIXES = (".tif", ".tiff")
STAC_SUFFIXES = (".json", ".geojson")


@dataclass(frozen=True)
class Source:
    """One input tile found on the client.

    Attributes:
        path: local path or ``http(s)`` URL of the GeoTIFF.
        stem: preferred mask name (file stem; STAC item id).
        item: STAC item id, or ``None`` for plain files.
        centre: ``(lat, lon)`` of the STAC item's geometry / bbox (used for remote assets).
        version: what identifies the content of a remote asset (STAC ``updated``/``datetime``,
            ``file:checksum``) for resume fingerprints.
    """

    path: str
    stem: str
    item: str | None = None
    centre: tuple[float, float] | None = None
    version: str | None = None



def assign_ids(sources: Sequence[Source]) -> list[str]:
    """Unique mask names: the (sanitised) stem, plus ``-<8 hex of the path>`` where stems collide.

    Collisions are found case-insensitively (masks may land on a case-insensitive file system).
    The names depend only on the inputs, so a resumed job finds the same masks.
    """
    stems = [safe_stem(s.stem) for s in sources]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s.lower()] = counts.get(s.lower(), 0) + 1
    ids = []
    for src, stem in zip(sources, stems, strict=True):
        if counts[stem.lower()] > 1:
            key = src.path if is_url(src.path) else os.path.realpath(src.path)
            stem = f"{stem}-{hashlib.sha1(key.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
        ids.append(stem)
    return ids

