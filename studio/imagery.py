"""Imagery fetching for visitors, behind a per-session and a process-wide rate limiter."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from metaseg.errors import MetasegError
from studio.limits import env_int

_imagery_limits: dict[tuple[str, int], Any] = {}
_imagery_lock = threading.Lock()


def _limiter(scope: str, env: str, default: int):
    """One shared :class:`metaseg.imagery.RateLimiter` per ``(scope, calls a minute)`` (``env``, else ``default``)."""
    from metaseg.imagery import RateLimiter

    calls = env_int(env, default)
    with _imagery_lock:
        lim = _imagery_limits.get((scope, calls))
        if lim is None:
            lim = _imagery_limits[(scope, calls)] = RateLimiter(calls, 60.0)
        return lim


def imagery_limiter():
    """The per-session rate limiter (``METASEG_IMAGERY_PER_MINUTE`` fetches a minute, default 6)."""
    return _limiter("session", "METASEG_IMAGERY_PER_MINUTE", 6)


def imagery_global_limiter():
    """The process-wide limiter beside the per-session one (``METASEG_IMAGERY_GLOBAL_PER_MINUTE``
    fetches a minute for all sessions together, default 20): fresh sessions or API clients cannot
    turn the server into a proxy for the tile server."""
    return _limiter("process", "METASEG_IMAGERY_GLOBAL_PER_MINUTE", 20)


def imagery_status() -> tuple[bool, str]:
    """Whether imagery can be fetched (from the environment now) and the credit/reason to show."""
    from metaseg.errors import ImageryError
    from metaseg.imagery import source_from_env

    try:
        src = source_from_env()
    except ImageryError as exc:
        return False, str(exc)
    if src is None:
        return False, "Imagery fetching is switched off on this server (METASEG_IMAGERY_URL=off)."
    return True, src.attribution


def fetch_imagery(lat: Any, lon: Any, zoom: Any, out: Path, session_key: str):
    """Rate-limited :func:`metaseg.imagery.fetch_imagery` into ``out`` for one session."""
    from metaseg.climate import validate
    from metaseg.imagery import check_mercator_lat, require_source
    from metaseg.imagery import fetch_imagery as _fetch

    lat_f, lon_f = validate(lat, lon)
    check_mercator_lat(lat_f)  # before the rate limiter counts a fetch that cannot happen
    src = require_source()
    imagery_limiter().check(session_key)
    try:
        imagery_global_limiter().check("all sessions")
    except MetasegError as exc:
        raise type(exc)(f"this server is fetching a lot of imagery for all its visitors right now: {exc}") from None
    return _fetch(lat_f, lon_f, zoom, out, source=src)
