"""The output folder of a map job and the small text helpers every part of the job shares.

File names (``masks/``, ``summary.json``, the area report, the vector file) live here so the
client (:mod:`metaseg.mapping.job`) and the workers (:mod:`metaseg.mapping.tasks`) agree on them.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path
from typing import Any

VECTOR_FORMATS = {"gpkg": "classes.gpkg", "geojson": "classes.geojson"}
SUMMARY_NAME = "summary.json"
REPORT_MD = "area_report.md"
REPORT_CSV = "area_report.csv"
MASKS_DIR = "masks"
#: Attribute fields of the polygon layer, in order.
FIELDS = ("class", "area_m2", "zone", "tile")
#: Key of ``area_ha`` for tiles without a climate zone (ocean or unknown location).
NO_ZONE = "none"
DOWNLOAD_TIMEOUT_S = 60.0


def is_url(text: str) -> bool:
    return str(text).lower().startswith(("http://", "https://"))


def one_line(text: Any) -> str:
    return " ".join(str(text).split())


def stem_of(path: str) -> str:
    """The file stem of a path or URL path (no query string expected)."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def safe_stem(stem: str) -> str:
    """A stem usable as a file name on every file system (at most 120 characters)."""
    clean = re.sub(r"[^\w.\-]+", "_", stem, flags=re.UNICODE).strip("._") or "tile"
    return clean[:120]


def mask_path(out: str | os.PathLike, tile_id: str) -> Path:
    return Path(out) / MASKS_DIR / f"{tile_id}.tif"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
