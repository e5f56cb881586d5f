"""Variants → per-tile prompt texts and stored version ids, resolved on the client from the store."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaseg.errors import ConfigError

log = logging.getLogger(__name__)


SOURCES = {"llm": "llm:", "user": "user"}


# ----------------------------------------------------------------------------- variants


def _modes() -> tuple[str, ...]:
    from training.evaluate import PROMPT_MODES

    return tuple(PROMPT_MODES)


def parse_variant(text: str) -> str:
    """Canonical variant name, or ``ConfigError`` naming the valid forms."""
    v = str(text).strip()
    low = v.lower()
    if low in _modes():
        return low
    if low.startswith("source:") and low.split(":", 1)[1] in SOURCES:
        return low
    if low.startswith("id:"):
        num = v.split(":", 1)[1].strip()
        if num.isdigit():
            return f"id:{int(num)}"
    raise ConfigError(
        f"unknown variant {text!r}; valid: {', '.join(_modes())}, source:llm, source:user, id:N"
    )


@dataclass
class Plan:
    """What every tile gets: the dataset (climate reading), and per variant the text and prompt id per tile."""

    dataset: Any
    variants: list[str]
    texts: dict[str, list[str]] = field(default_factory=dict)
    prompt_ids: dict[str, list[int | None]] = field(default_factory=dict)

    @property
    def zones(self) -> list[str | None]:
        return list(self.dataset.zones)


def _store_id(store: Any, zone: str | None, class_set: str, text: str) -> int | None:
    """Id of the current store version for ``zone`` when its text is ``text`` (else ``None``)."""
    rec = store.current(zone, class_set)
    return rec.id if rec.text == text else None


def resolve_variants(
    dataset_name: str,
    root: str | Path,
    split: str,
    variants: Sequence[str],
    store: Any,
    limit: int | None = None,
    extra: dict[str, Callable[[str | None], Any]] | None = None,
) -> Plan:
    """Read the split and resolve each variant to a prompt text (and version id) per tile.

    ``extra`` (Python API only): more variants, name → ``fn(tile zone)`` returning the prompt record
    (``.text``, ``.id``) that tile gets, e.g. the SynthEarth partner zone's prompt in
    ``scripts/ablation.py``.

    Raises:
        ConfigError: unknown variant, empty split, split without labels, ``id:N`` for another
            class set.
        PromptNotFoundError: ``id:N`` names no stored prompt.
    """
    from training.datasets import build_dataset

    extra = dict(extra or {})
    names = list(dict.fromkeys([parse_variant(v) for v in variants] + list(extra)))
    if not names:
        raise ConfigError("pass at least one --variant")
    base = build_dataset(dataset_name, root, split, prompt_mode="climate", store=store)
    if len(base) == 0:
        raise ConfigError(f"split {split!r} of {root} has no tiles")
    if not getattr(base, "has_labels", True):
        raise ConfigError(f"split {split!r} of {root} has no labels to score against")
    n = len(base) if limit is None else min(int(limit), len(base))
    zones = list(base.zones[:n])
    plan = Plan(dataset=base, variants=names)
    for v in names:
        if v in extra:
            recs = [extra[v](z) for z in zones]
            texts, ids = [str(r.text) for r in recs], [getattr(r, "id", None) for r in recs]
        elif v in _modes():
            ds = base if v == "climate" else build_dataset(dataset_name, root, split, prompt_mode=v, store=store)
            texts, ids = _mode_prompts(v, ds, zones, store)
        elif v.startswith("source:"):
            texts, ids = _source_prompts(SOURCES[v.split(":", 1)[1]], zones, base.class_set.name, store)
        else:
            texts, ids = _version_prompts(v, zones, dataset_name, base.class_set.name, store)
        plan.texts[v] = texts
        plan.prompt_ids[v] = ids
    return plan


def _mode_prompts(mode: str, ds: Any, zones: list[str | None], store: Any) -> tuple[list[str], list[int | None]]:
    """A prompt mode: the same reader, mode and store as ``training.evaluate --prompt-mode``; the id
    is the stored version the text came from, checked against the store (``None`` when the text is
    no stored version, e.g. the paper's generic sentence of ``generic``)."""
    from training.datasets.prompts import wrong_zone

    texts = [str(t) for t in ds.prompts[: len(zones)]]
    key = {"climate": lambda z: z, "wrong": wrong_zone, "none": lambda z: "none"}.get(mode, lambda z: None)
    cs = ds.class_set.name
    return texts, [_store_id(store, key(z), cs, t) for z, t in zip(zones, texts, strict=True)]


def _source_prompts(source: str, zones: list[str | None], cs: str, store: Any) -> tuple[list[str], list[int | None]]:
    """``source:llm`` / ``source:user``: the latest version of that source for the tile's zone, else
    the zone's current prompt."""
    texts, ids = [], []
    cache: dict[str | None, Any] = {}
    for z in zones:
        if z not in cache:
            recs = store.list(zone=z or "generic", class_set=cs, source=source)
            cache[z] = recs[0] if recs else store.current(z, cs)
        texts.append(cache[z].text)
        ids.append(cache[z].id)
    return texts, ids


def _version_prompts(variant: str, zones: list[str | None], dataset_name: str, cs: str,
                     store: Any) -> tuple[list[str], list[int | None]]:
    """``id:N``: prompt version N on the tiles of its zone, the current prompt elsewhere."""
    rec = store.get(int(variant.split(":", 1)[1]))
    if rec.class_set != cs:
        raise ConfigError(f"prompt {rec.id} is written for the {rec.class_set} classes; {dataset_name} uses {cs}")
    target = None if rec.zone == "generic" else rec.zone
    texts, ids = [], []
    for z in zones:
        cur = rec if z == target else store.current(z, cs)
        texts.append(cur.text)
        ids.append(cur.id)
    if target not in zones:
        log.warning("variant %s: no tile of zone %s in this split; it equals 'climate'", variant, rec.zone)
    return texts, ids
