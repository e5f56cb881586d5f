"""The one prompt-fallback policy: which prompt text a text model runs with.

Order (first that applies wins):

1. ``text`` given explicitly → used as is (source ``"argument"``; the store is not opened).
2. ``prompt_id`` given → that stored version (source ``"store:<its source>"``); a version written
   for another class set is still used, with a warning.
3. ``zone`` known → the current prompt of that Köppen zone (source ``"zone"``).
4. otherwise → the generic prompt (source ``"generic"``), with a warning that says why: the tile
   has no location (``located=False``) or the location has no climate zone (ocean / no data).

Callers decide what to do with :attr:`ResolvedPrompt.warning` (``metaseg predict`` prints it on
stderr; ``metaseg map`` and training ignore it). The warning texts are part of the CLI contract.

``store`` may be ``None``: the default :class:`~prompts_db.store.PromptStore` is then opened and
closed for this one call, only when a stored prompt is needed. It may be any object with
``get(id)`` (records with ``text``/``id``/``source``/``class_set``) and ``current(zone, class_set)``
(records with ``text``, and ``id`` when they have one: training's ``TrainingPrompts`` and test
stand-ins give text only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ResolvedPrompt", "resolve_prompt"]


@dataclass(frozen=True)
class ResolvedPrompt:
    """A resolved prompt: its ``text``, ``source`` (as ``predict --json`` reports it), stored ``id``
    (``None`` for an explicit text), an optional ``warning`` line, and the store ``record``."""

    text: str
    source: str
    id: int | None
    warning: str | None = None
    record: Any = field(default=None, compare=False, repr=False)


def _no_zone_warning(located: bool, reason: str | None) -> str:
    if not located:
        return ("the tile has no location (no georeference or GPS tags) and no --lat/--lon was "
                "given: using the generic prompt")
    return f"no climate zone at this location ({reason or 'ocean'}): using the generic prompt"


def _from_store(store: Any, class_set: str, prompt_id: int | None, zone: str | None,
                located: bool, reason: str | None) -> ResolvedPrompt:
    if prompt_id is not None:
        record = store.get(prompt_id)
        warning = None
        if record.class_set != class_set:
            warning = (f"prompt {prompt_id} was written for class set {record.class_set!r}, "
                       f"the model predicts {class_set!r}")
        return ResolvedPrompt(record.text, f"store:{record.source}", record.id, warning, record)
    record = store.current(zone, class_set)
    stored_id = getattr(record, "id", None)  # text-only stand-ins (training's TrainingPrompts) have no id
    if zone is None:
        return ResolvedPrompt(record.text, "generic", stored_id, _no_zone_warning(located, reason), record)
    return ResolvedPrompt(record.text, "zone", stored_id, None, record)


def resolve_prompt(
    store: Any,
    class_set: str,
    *,
    text: str | None = None,
    prompt_id: int | None = None,
    zone: str | None = None,
    located: bool = True,
    reason: str | None = None,
) -> ResolvedPrompt:
    """Resolve the prompt for ``class_set`` by the policy in the module docstring."""
    if text is not None:
        return ResolvedPrompt(text, "argument", None)
    if store is not None:
        return _from_store(store, class_set, prompt_id, zone, located, reason)
    from prompts_db.store import PromptStore

    with PromptStore() as opened:
        return _from_store(opened, class_set, prompt_id, zone, located, reason)
