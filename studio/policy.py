"""The operator / visitor split of a public studio (no gradio here).

The operator configures the server from the environment; a visitor acts only inside the limits
set there, and every visitor-typed path or hub id is untrusted. This module reads those settings
and checks visitor choices against them; the messages it raises never reveal which server paths
exist outside the configured roots.

Environment (all optional; see the README's "Operators and visitors" table):

``METASEG_VISITOR_MODELS``
    ``1`` (default): visitors may pick the models of their own session in the Models tab, among
    the shipped demo checkpoints, the allowed checkpoints below and their session's own
    checkpoints. ``0``: everybody uses the operator's models.
``METASEG_ALLOWED_CHECKPOINTS``
    Comma-separated checkpoints a visitor may pick: hub ids (``org/name[/stem]``, or ``org/*`` for
    every repository of an owner) and local checkpoint paths (files, stems or exported folders).
    A hub id not listed here is never downloaded.
``METASEG_CHECKPOINT_ROOTS``
    Folders (``os.pathsep``-separated) under which any checkpoint may be picked by path.
``METASEG_DATA_ROOTS``
    Folders (``os.pathsep``-separated) whose dataset folders the Experiments tab may read; empty
    (default) switches the "dataset folder on the server" source off.
``METASEG_VISITOR_EXPERIMENTS``
    ``1`` (default): visitors may start experiments; ``0``: they may only look at shared ones.
``METASEG_SHARE_EXPERIMENTS`` / ``METASEG_SHARE_LABELS``
    ``0`` (default): a visitor sees only the experiments / saved labels of their own session;
    ``1``: everybody's (the operator's choice to share).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from metaseg.errors import CheckpointError, ConfigError

#: hub id shape: ``org/name`` or ``org/name/stem`` (letters, digits, ``-_.``)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w.-]+)?$")
DEMO_CHOICES = ("metasegnet_demo", "baseline_demo")


def env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    return raw not in ("0", "false", "no", "off")


def _paths(name: str) -> list[Path]:
    raw = os.environ.get(name, "")
    out = []
    for part in raw.split(os.pathsep):
        part = part.strip()
        if part:
            try:
                out.append(Path(part).expanduser().resolve())
            except (OSError, RuntimeError):
                continue
    return out


def visitor_models() -> bool:
    return env_flag("METASEG_VISITOR_MODELS", True)


def visitor_experiments() -> bool:
    return env_flag("METASEG_VISITOR_EXPERIMENTS", True)


def share_experiments() -> bool:
    return env_flag("METASEG_SHARE_EXPERIMENTS", False)


def share_labels() -> bool:
    return env_flag("METASEG_SHARE_LABELS", False)


def data_roots() -> list[Path]:
    return _paths("METASEG_DATA_ROOTS")


def checkpoint_roots() -> list[Path]:
    return _paths("METASEG_CHECKPOINT_ROOTS")


def allowed_checkpoints() -> list[str]:
    raw = os.environ.get("METASEG_ALLOWED_CHECKPOINTS", "")
    return [p.strip() for p in raw.replace("\n", ",").split(",") if p.strip()]


def under(path: Path, roots: list[Path]) -> Path | None:
    """``path`` resolved (symlinks followed) when it lies inside one of ``roots``, else ``None``."""
    try:
        real = path.expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    for root in roots:
        if real == root or real.is_relative_to(root):
            return real
    return None


def confine(text: str, roots: list[Path]) -> Path | None:
    """A visitor-typed path inside the roots: absolute, or relative to each root in turn."""
    text = str(text or "").strip()
    if not text or "\x00" in text or len(text) > 1024:
        return None
    p = Path(text).expanduser()
    if p.is_absolute():
        return under(p, roots)
    for root in roots:
        hit = under(root / p, roots)
        if hit is not None and hit.exists():
            return hit
    return under(roots[0] / p, roots) if roots else None


def data_folder(text: str) -> Path:
    """The dataset folder a visitor typed, confined to ``METASEG_DATA_ROOTS``.

    Raises:
        ConfigError: no roots configured, or the folder is not an existing folder inside them
        (one message for both: it says nothing about paths outside the roots).
    """
    roots = data_roots()
    if not roots:
        raise ConfigError("this server offers no dataset folders (the operator sets METASEG_DATA_ROOTS); "
                          "use the labelled tiles in the store")
    hit = confine(text, roots)
    if hit is None or not hit.is_dir():
        names = ", ".join(r.name or str(r) for r in roots)
        raise ConfigError(f"no dataset folder {_shown(text)!r} in the data folders this server offers ({names}); "
                          "type a folder relative to one of them")
    return hit


def shown_data_path(path: str | Path | None) -> str:
    """A data path as a visitor may see it: relative to its data root, else only its last part."""
    if not path:
        return ""
    p = Path(str(path))
    hit = under(p, data_roots())
    if hit is not None:
        for root in data_roots():
            if hit.is_relative_to(root):
                rel = hit.relative_to(root)
                return f"{root.name}/{rel}" if str(rel) != "." else root.name
    return p.name


def _shown(text: str, limit: int = 60) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_hub(text: str) -> bool:
    return bool(HUB_ID.match(text)) and not text.startswith((".", "/", "~"))


def offered_models() -> dict[str, str]:
    """What a visitor may type in the Models tab -> the source it loads (besides their own
    session's checkpoints). Allowed local checkpoints are offered by their last path part only."""
    out = {name: f"demo:{name}" for name in DEMO_CHOICES}
    for entry in allowed_checkpoints():
        out.setdefault(entry if _is_hub(entry) else Path(entry).name, entry)
    return out


def model_choice(role: str, text: str | None, own_dirs: list[Path] | None = None) -> str | None:
    """Check a visitor's model choice for ``role``; returns the source to load (``None``: default).

    Allowed: empty (the operator's default), a shipped demo name, an entry of
    ``METASEG_ALLOWED_CHECKPOINTS`` (hub ids as listed, local ones by their last path part), a
    path under ``METASEG_CHECKPOINT_ROOTS``, or a path inside one of ``own_dirs`` (the visitor's
    session folder).

    Raises:
        CheckpointError: visitors may not switch models here, or this choice is not offered.
    """
    text = str(text or "").strip()
    if not text:
        return None
    if not visitor_models():
        raise CheckpointError("on this server the operator chooses the models (METASEG_VISITOR_MODELS=0)")
    offers = offered_models()
    name = text[5:] if text.startswith("demo:") else text
    if name in offers:
        return offers[name]
    if _is_hub(text):
        owner = text.split("/", 1)[0]
        if f"{owner}/*" in allowed_checkpoints():
            return text
    else:
        roots = checkpoint_roots() + [d.resolve() for d in own_dirs or [] if d]
        hit = confine(text, roots) if roots else None
        if hit is not None and (hit.exists() or Path(f"{hit}.safetensors").is_file()):
            return str(hit)
    raise CheckpointError(f"{role} model: {_shown(text)!r} is not a checkpoint this server offers; "
                          f"pick one of: {', '.join(offers)} (or leave it empty for the default)")
