"""Which text prompt each training/evaluation sample carries.

Every sample gets a Köppen-Geiger zone and the prompt stored for ``(zone, class set)``:

1. the zone of the tile's own georeference (``metaseg.geo.inspect_tile`` → centre lat/lon →
   ``metaseg.climate.lookup``), when the file has one and it is not ocean;
2. otherwise the dataset's known zone (``ClassSet.default_zone``: LoveDA ``Cfa``, Potsdam ``Cfb``);
3. otherwise no zone, and the store's generic prompt (``PromptStore.current(None, class_set)``).

``prompt_mode`` then chooses what text the model sees:

* ``climate`` – the prompt of the sample's zone (generic when the zone is unknown);
* ``generic`` – the paper's Table V middle-row sentence, :data:`PAPER_GENERIC_PROMPT`
  ("It is a remote sensing image."), the same for every tile and class set;
* ``store-generic`` – the prompt store's zone-free prompt for the class set (our own sentence,
  listing the class names; editable in the store);
* ``none`` – the empty string fed to MetaSegNet. The paper's "No text prompt" row of Table V is
  something else: the vision-only baseline (``baseline_*``), which takes no text at all;
* ``wrong`` – the prompt of :func:`wrong_zone` of the sample's zone: a deliberately mismatched
  climate, used to test whether the model actually reads the prompt. A sample without a zone
  has nothing to mismatch and gets the generic prompt.

The item's ``"zone"`` is always the tile's *true* zone (or ``None``), whatever the mode, so
evaluation can group results by zone.

Lookups are cached: the zone per tile key (a tile may be cut into many patches) and the text
per ``(zone, class set)``; the store is queried once per distinct zone, at dataset
construction, so DataLoader workers never touch SQLite.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from metaseg.errors import ConfigError
from training.config import PROMPT_MODE_NAMES as PROMPT_MODES

log = logging.getLogger(__name__)

#: The generic prompt of the paper's Table V ablation, verbatim.
PAPER_GENERIC_PROMPT = "It is a remote sensing image."

#: Fixed climate mismatch used by ``prompt_mode="wrong"``. Every zone maps to a zone of a
#: *different main group* (first letter), chosen to be climatically far apart (humid tropics ↔
#: polar, hot desert ↔ oceanic, humid subtropical ↔ humid continental, ...). Deterministic, so a
#: training and an evaluation run agree on what "wrong" means.
WRONG_ZONE: dict[str, str] = {
    # A (tropical) -> polar / cold continental
    "Af": "ET", "Am": "ET", "Aw": "Dfc",
    # B (arid) -> temperate / continental
    "BWh": "Cfb", "BWk": "Cfb", "BSh": "Dfb", "BSk": "Cfb",
    # C (temperate) -> arid / continental
    "Csa": "Dfc", "Csb": "Dfc", "Csc": "BWh",
    "Cwa": "BWk", "Cwb": "BWh", "Cwc": "BWh",
    "Cfa": "Dfb", "Cfb": "BWh", "Cfc": "BWh",
    # D (continental) -> tropical / arid / temperate
    "Dsa": "Af", "Dsb": "Am", "Dsc": "Aw", "Dsd": "Af",
    "Dwa": "Am", "Dwb": "Aw", "Dwc": "Af", "Dwd": "Af",
    "Dfa": "BWh", "Dfb": "Cfa", "Dfc": "Af", "Dfd": "Af",
    # E (polar) -> tropical
    "ET": "Af", "EF": "Af",
}


def wrong_zone(code: str | None) -> str | None:
    """A deliberately mismatched Köppen-Geiger zone for ``code`` (see :data:`WRONG_ZONE`).

    Args:
        code: a zone code such as ``"Cfb"``; ``None`` (unknown zone) returns ``None``.

    Returns:
        A zone code whose main group differs from ``code``'s, always the same for a given input.

    Raises:
        ConfigError: ``code`` is not one of the 30 Köppen-Geiger codes.
    """
    if code is None:
        return None
    try:
        return WRONG_ZONE[code]
    except KeyError:
        raise ConfigError(
            f"unknown Köppen-Geiger zone {code!r}; valid: {', '.join(WRONG_ZONE)}"
        ) from None


def check_prompt_mode(mode: str) -> str:
    """Validate ``prompt_mode`` (``ConfigError`` listing the valid modes)."""
    if mode not in PROMPT_MODES:
        raise ConfigError(f"unknown prompt_mode {mode!r}; valid: {', '.join(PROMPT_MODES)}")
    return mode


def tile_zone(path: str | Path) -> str | None:
    """Köppen-Geiger code at the centre of a georeferenced tile, ``None`` if not georeferenced.

    Unreadable metadata, missing georeference and ocean all give ``None`` (logged at debug level):
    the caller then falls back to the dataset's known zone.
    """
    from metaseg import climate

    try:
        latlon = _tile_centre(path)
    except Exception as exc:  # noqa: BLE001 - metadata is optional for training
        log.debug("no georeference for %s: %s", path, exc)
        return None
    if latlon is None:
        return None
    try:
        result = climate.lookup(*latlon)
    except Exception as exc:  # noqa: BLE001
        log.debug("climate lookup failed for %s: %s", path, exc)
        return None
    return result.zone.code if result.zone is not None else None


class PromptResolver:
    """Resolves and caches (zone, prompt text) for the samples of one dataset.

    Args:
        class_set: class-set name the prompts are written for.
        mode: one of :data:`PROMPT_MODES`.
        store: a ``prompts_db.PromptStore`` (or anything with ``current(zone, class_set).text``);
            ``None`` opens the default store lazily, only if a text is actually needed.
        default_zone: the dataset's known zone, used when a tile has no georeference.
        zone_fn: how to read a zone from a file (``tile_zone``; replaceable in tests).
    """

    def __init__(
        self,
        class_set: str,
        mode: str = "climate",
        store=None,
        default_zone: str | None = None,
        zone_fn: Callable[[str | Path], str | None] = tile_zone,
    ) -> None:
        self.class_set = class_set
        self.mode = check_prompt_mode(mode)
        self._store = store
        self.default_zone = default_zone
        self.zone_fn = zone_fn
        self._zones: dict[str, str | None] = {}
        self._texts: dict[str | None, str] = {}

    @property
    def store(self):
        if self._store is None:
            from prompts_db import PromptStore

            self._store = PromptStore()
        return self._store

    def zone(self, key: str, path: str | Path | None = None) -> str | None:
        """Zone of the tile ``key`` (cached); ``path`` is read for a georeference if given."""
        if key not in self._zones:
            zone = self.zone_fn(path) if path is not None else None
            self._zones[key] = zone if zone is not None else self.default_zone
        return self._zones[key]

    def text_for_zone(self, zone: str | None) -> str:
        """Store text for ``zone`` (``None`` → generic), cached per zone."""
        if zone not in self._texts:
            from prompts_db.resolve import resolve_prompt

            self._texts[zone] = str(resolve_prompt(self.store, self.class_set, zone=zone).text)
        return self._texts[zone]

    def prompt(self, zone: str | None) -> str:
        """The prompt a sample with true zone ``zone`` carries under this resolver's mode."""
        if self.mode == "none":
            return ""
        if self.mode == "generic":
            return PAPER_GENERIC_PROMPT
        if self.mode == "store-generic":
            return self.text_for_zone(None)
        if self.mode == "wrong":
            return self.text_for_zone(wrong_zone(zone))
        return self.text_for_zone(zone)


def _tile_centre(path: str | Path) -> tuple[float, float] | None:
    """WGS84 (lat, lon) of a tile's centre from :func:`metaseg.geo.inspect_tile` (the one georeference
    reader: any CRS, GCPs, EXIF GPS); ``None`` if the tile has no location."""
    from metaseg import geo

    loc = geo.inspect_tile(path).location
    return (float(loc.lat), float(loc.lon)) if loc.known else None
