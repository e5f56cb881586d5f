"""Size bounds for the on-disk caches (imagery tiles, exported ONNX graphs).

:func:`trim` keeps a cache folder under a byte budget by removing the least recently used files
(modification time; a cache hit touches its file), down to 90 % of the budget so that it does not
trim again on every write. Files named in ``keep`` (the one just written) always stay.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def budget_bytes(env: str, default_mb: int) -> int | None:
    """The byte budget in ``env`` (MB; ``0`` = no bound), else ``default_mb``."""
    raw = os.environ.get(env, "").strip()
    try:
        mb = float(raw) if raw else float(default_mb)
    except ValueError:
        log.warning("ignoring %s=%r (not a number)", env, raw)
        mb = float(default_mb)
    return None if mb <= 0 else int(mb * 2**20)


def trim(folder: str | os.PathLike, max_bytes: int | None, keep: Iterable[str | os.PathLike] = ()) -> int:
    """Remove the oldest files under ``folder`` until it holds at most ``max_bytes`` (then 90 % of it).

    Returns the number of bytes removed. Never follows symlinks out of ``folder``; errors (a file
    removed meanwhile by another process, a read-only cache) are skipped.
    """
    root = Path(folder)
    if max_bytes is None or not root.is_dir():
        return 0
    kept = {str(Path(k)) for k in keep}
    files, total = [], 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            total += st.st_size
            if str(p) not in kept and not p.is_symlink():
                files.append((st.st_mtime, st.st_size, p))
    if total <= max_bytes:
        return 0
    target, removed = int(max_bytes * 0.9), 0
    for _mtime, size, p in sorted(files, key=lambda f: f[0]):
        if total - removed <= target:
            break
        try:
            p.unlink()
            removed += size
        except OSError:
            continue
    log.info("trimmed %s by %.1f MB (bound %.0f MB)", root, removed / 2**20, max_bytes / 2**20)
    return removed
