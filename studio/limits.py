"""Upload limits and the per-request pixel budget (all read from the environment at call time)."""

from __future__ import annotations

import logging
import os
from typing import Any

from metaseg.errors import TileReadError

log = logging.getLogger(__name__)


DEFAULT_MAX_UPLOAD_MB = 200


def max_upload_mb() -> int:
    """Upload limit in MB (``METASEG_MAX_UPLOAD_MB``, default 200)."""
    return env_int("METASEG_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB)


def max_pixels() -> int | None:
    """Pixel cap for tiles (``METASEG_MAX_PIXELS``; ``None`` = the library default)."""
    value = os.environ.get("METASEG_MAX_PIXELS")
    return env_int("METASEG_MAX_PIXELS", 0) or None if value else None


#: default per-request pixel budget for visitors (about 2048 x 2048: ~20 s for both models on 2 vCPUs)
DEFAULT_VISITOR_MAX_PIXELS = 2048 * 2048
#: tiles up to this many pixels run in the "small" inference lane, which never waits behind a large tile
DEFAULT_SMALL_PIXELS = 1024 * 1024


def visitor_max_pixels() -> int:
    """Largest tile (pixels) one visitor request may segment (``METASEG_VISITOR_MAX_PIXELS``)."""
    return env_int("METASEG_VISITOR_MAX_PIXELS", DEFAULT_VISITOR_MAX_PIXELS)


def check_pixel_budget(width: Any, height: Any) -> None:
    """Refuse a tile over the visitor budget *before* its pixels are read (one clear line)."""
    try:
        w, h = int(width or 0), int(height or 0)
    except (TypeError, ValueError):
        return
    budget = visitor_max_pixels()
    if w * h > budget:
        raise TileReadError(
            f"the tile is {w}×{h} px ({w * h / 1e6:.1f} M pixels); this server segments up to "
            f"{budget / 1e6:.1f} M pixels per request (METASEG_VISITOR_MAX_PIXELS): crop it, or run "
            "`python -m metaseg map` on your own machine for large scenes"
        )


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        log.warning("ignoring %s=%r (not a number)", name, raw)
        return default
    return value if value > 0 else default
