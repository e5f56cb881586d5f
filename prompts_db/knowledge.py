"""Offline geographic knowledge: climate-aware prompts written without any LLM.

The paper (§II-B) asks an LLM, per class, how that class looks in a remote-sensing image of the
tile's climate zone and merges the answers. This module is the offline stand-in: our own short
notes on how land cover looks in each Köppen group and zone, composed per class.

Composition:
  * :data:`GROUP_FACTS` — per climate group (A, B, C, D, E) default facets: ``tree``, ``low``
    (grass/shrub), ``soil`` (bare ground), ``agri`` (fields), ``water``, ``roof``, ``road``,
    ``snow`` (None where it does not occur).
  * :data:`ZONE_FACTS` — per zone a one-line character (``intro``) and 3–4 facets that override the
    group defaults with zone-specific facts.
  * :data:`CLASS_FACETS` — per class name the sentence template that uses those facets plus what
    usually lies next to the class.

Every seed prompt stays within the 250-token budget of the text encoder (tested for all 90).
The notes are general physical-geography knowledge in our own words.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from metaseg.classes import CLASS_SETS
from metaseg.climate import ZONE_CODES, ZONES

log = logging.getLogger(__name__)

#: Zone key of the class-set-wide generic prompt (paper Table V "simple text prompt" ablation).
GENERIC = "generic"
#: Zone key of the explicit "no text" choice: empty text, callers run without a prompt.
NO_TEXT = "none"

#: The class sets prompts are written for: those of :mod:`metaseg.classes` (their one home).
CLASS_SET_NAMES: tuple[str, ...] = tuple(CLASS_SETS)

#: How the prompts name each zone, in running text ("in a temperate oceanic climate"). Prompt
#: phrasing only: the zones themselves (codes, order, legend names, descriptions) live in
#: :mod:`metaseg.climate`, whose :data:`~metaseg.climate.ZONE_CODES` this module re-exports; a
#: test keeps the keys here equal to those codes.
ZONE_NAMES: dict[str, str] = {
    "Af": "tropical rainforest",
    "Am": "tropical monsoon",
    "Aw": "tropical savanna",
    "BWh": "hot desert",
    "BWk": "cold desert",
    "BSh": "hot semi-arid steppe",
    "BSk": "cold semi-arid steppe",
    "Csa": "hot-summer Mediterranean",
    "Csb": "warm-summer Mediterranean",
    "Csc": "cold-summer Mediterranean",
    "Cwa": "monsoon-influenced humid subtropical",
    "Cwb": "subtropical highland",
    "Cwc": "cold subtropical highland",
    "Cfa": "humid subtropical",
    "Cfb": "temperate oceanic",
    "Cfc": "subpolar oceanic",
    "Dsa": "hot-summer continental with dry summers",
    "Dsb": "warm-summer continental with dry summers",
    "Dsc": "subarctic with dry summers",
    "Dsd": "extremely cold subarctic with dry summers",
    "Dwa": "monsoon-influenced hot-summer continental",
    "Dwb": "monsoon-influenced warm-summer continental",
    "Dwc": "monsoon-influenced subarctic",
    "Dwd": "monsoon-influenced extremely cold subarctic",
    "Dfa": "hot-summer humid continental",
    "Dfb": "warm-summer humid continental",
    "Dfc": "subarctic",
    "Dfd": "extremely cold subarctic",
    "ET": "tundra",
    "EF": "ice cap",
}
#: How the prompts name each climate group (prompt phrasing, see :data:`ZONE_NAMES`).
GROUP_NAMES: dict[str, str] = {
    "A": "tropical",
    "B": "arid",
    "C": "temperate",
    "D": "continental",
    "E": "polar",
}

GROUP_FACTS: dict[str, dict[str, str | None]] = {
    "A": {
        "paved": "concrete yards, market squares and compacted earth lots",
        "tree": "dense evergreen crowns, dark green with a rough bumpy texture",
        "low": "lush bright-green grass and regrowing scrub",
        "soil": "red to orange lateritic earth on cleared plots and dirt tracks",
        "agri": "small irregular plots of cassava, maize or bananas beside plantation blocks",
        "water": "brown sediment-laden rivers and dark green ponds",
        "roof": "corrugated metal roofs, often rusty red, and clay tiles",
        "road": "asphalt main roads with reddish unpaved side tracks",
        "snow": None,
    },
    "B": {
        "paved": "pale concrete and sand-dusted plazas and parking lots",
        "tree": "few isolated trees with small round crowns and sharp shadows",
        "low": "scattered pale grey-green shrubs on bright bare ground",
        "soil": "bright beige, tan or reddish sand and gravel with little texture",
        "agri": "irrigated fields, vivid green against the bare land, often circular pivots",
        "water": "rare water: reservoirs, canals and dry sandy riverbeds",
        "roof": "flat light-coloured concrete roofs with water tanks",
        "road": "dusty pale asphalt roads with sand-covered edges",
        "snow": None,
    },
    "C": {
        "paved": "grey paved plazas, parking lots and sidewalks",
        "tree": "broadleaf and mixed crowns in woods, parks and hedgerows",
        "low": "green lawns, pastures and meadows with a smooth texture",
        "soil": "brown ploughed soil and construction sites",
        "agri": "regular rectangular fields in green and brown stripes",
        "water": "dark blue or green rivers, lakes and ponds with smooth surfaces",
        "roof": "pitched red, brown or grey tiled roofs",
        "road": "grey asphalt roads with white markings, often tree-lined",
        "snow": None,
    },
    "D": {
        "paved": "grey parking lots and yards, with piled snow in winter",
        "tree": "conifer and birch forest with dark spiky crowns and long shadows",
        "low": "meadows and grassland, brown-green outside the short summer",
        "soil": "dark brown soil, bare in spring and autumn",
        "agri": "large rectangular grain fields, bare or snowy outside summer",
        "water": "many lakes, rivers and wetlands, frozen white in winter",
        "roof": "steep dark or metal roofs built to shed snow",
        "road": "grey roads, in winter lined with snowbanks",
        "snow": "seasonal snow whitens fields and roofs in winter",
    },
    "E": {
        "paved": "gravel pads and compacted yards",
        "tree": "almost no trees, only dwarf shrubs hugging the ground",
        "low": "thin tundra mats of moss, lichen and sedge in olive, brown and rust",
        "soil": "grey rock, gravel and frost-patterned ground",
        "agri": "practically no farmland",
        "water": "meltwater ponds and lakes, ice-covered most of the year",
        "roof": "few small buildings with metal roofs near coasts and stations",
        "road": "gravel tracks and short unpaved roads",
        "snow": "snow and ice cover large areas for most of the year",
    },
}

ZONE_FACTS: dict[str, dict[str, str]] = {
    "Af": {
        "intro": "hot and wet all year with no dry season",
        "tree": "closed multi-layer rainforest canopy, very dark green and lumpy",
        "agri": "oil palm plantations in regular rows and small slash-and-burn clearings",
        "water": "wide meandering brown rivers with oxbow lakes",
    },
    "Am": {
        "intro": "heavy monsoon rains followed by a short dry season",
        "tree": "dense semi-evergreen forest, some crowns leafless in the dry months",
        "agri": "flooded rice paddies with thin earth bunds, mirror-like or bright green",
        "water": "swollen muddy rivers and seasonal flood ponds",
    },
    "Aw": {
        "intro": "a long dry winter and a rainy summer",
        "tree": "scattered umbrella-shaped trees over open grass",
        "low": "savanna grass, green in the rains and straw-yellow when dry",
        "soil": "red laterite with dark burn scars",
        "agri": "smallholder plots and large sugarcane fields",
    },
    "BWh": {
        "intro": "very hot and almost rainless",
        "tree": "hardly any trees except date palms in oases and along canals",
        "soil": "bright yellow-beige sand with dune ripples, rocky plains and white salt flats",
        "agri": "vivid green circular pivots and narrow oasis strips",
        "roof": "flat beige mud-brick and concrete roofs in dense courtyard blocks",
    },
    "BWk": {
        "intro": "dry with cold winters",
        "low": "sparse grey sagebrush and saltbush dots",
        "soil": "grey-brown gravel plains, rocky hills and pale dry lake beds",
        "agri": "irrigated fields only along rivers and at mountain feet",
        "snow": "thin winter snow on high ground",
    },
    "BSh": {
        "intro": "hot with a short rainy season",
        "tree": "thorny acacia scrub with small scattered crowns",
        "low": "dry yellow-brown grassland with bare patches",
        "agri": "millet and sorghum plots and fenced livestock pens",
    },
    "BSk": {
        "intro": "dry grassland with cold winters",
        "low": "short-grass steppe, uniform tan-green",
        "agri": "wide strips of dryland wheat alternating with fallow",
        "tree": "trees mostly in shelterbelts along fields and rivers",
    },
    "Csa": {
        "intro": "hot dry summers and mild wet winters",
        "tree": "olive groves in dotted grids, holm oaks and umbrella pines",
        "low": "summer-dry yellow grass and dark maquis shrubland",
        "roof": "terracotta and white flat roofs with whitewashed walls",
        "agri": "vineyards in fine parallel lines and citrus orchards",
    },
    "Csb": {
        "intro": "warm dry summers and cool wet winters",
        "tree": "evergreen oak, eucalyptus and pine stands",
        "low": "golden summer grassland dotted with shrubs",
        "agri": "vineyards and orchards on gentle slopes",
    },
    "Csc": {
        "intro": "cool dry summers at high elevation",
        "tree": "open subalpine conifer woodland",
        "low": "short alpine meadows between rocky slopes",
        "snow": "snow lingers through winter and spring",
    },
    "Cwa": {
        "intro": "a hot humid summer monsoon and dry winters",
        "agri": "flat or terraced rice paddies, wheat in winter",
        "water": "rectangular fish-pond grids and muddy rivers",
        "roof": "dense grey concrete blocks and blue steel factory roofs",
    },
    "Cwb": {
        "intro": "a mild highland climate with dry winters",
        "tree": "eucalyptus plantations and cloud-forest remnants",
        "agri": "small hillside fields and tea or coffee rows",
        "soil": "red-brown soil on steep eroded slopes",
    },
    "Cwc": {
        "intro": "a cool high plateau with dry winters",
        "low": "tussocky tan highland grassland",
        "agri": "few small potato and barley plots",
        "tree": "trees scarce, mostly planted near villages",
    },
    "Cfa": {
        "intro": "hot humid summers and mild winters",
        "tree": "dense broadleaf and pine woods with bamboo groves",
        "agri": "a patchy mosaic of rice paddies, vegetable plots and greenhouses",
        "water": "fish ponds, canals and slow green rivers",
        "roof": "flat concrete roofs, blue steel sheds and grey tiles",
    },
    "Cfb": {
        "intro": "mild all year with steady rain",
        "low": "vivid green grass and pasture all year",
        "agri": "hedged fields of cereals, rapeseed and maize",
        "roof": "red and dark grey tiled pitched roofs with gardens behind houses",
        "tree": "deciduous beech, oak and lime trees lining streets and parks",
    },
    "Cfc": {
        "intro": "cool, windy and wet",
        "tree": "low wind-shaped conifers and birch",
        "low": "moorland heath and peat in olive and brown",
        "water": "dark peat-stained lakes and fjord inlets",
    },
    "Dsa": {
        "intro": "hot dry summers and snowy upland winters",
        "low": "dry summer steppe grass",
        "agri": "irrigated orchards and fields in valley floors",
        "tree": "junipers and pines on dry slopes",
    },
    "Dsb": {
        "intro": "warm dry summers and cold snowy winters on high plateaus",
        "tree": "pine and fir stands on mountain slopes",
        "low": "open sagebrush and mountain meadows",
        "agri": "irrigated hay fields along streams",
    },
    "Dsc": {
        "intro": "a short cool dry summer and a long winter",
        "tree": "sparse subalpine conifers",
        "low": "alpine meadows between rocks",
        "snow": "snow cover lasts many months",
    },
    "Dsd": {
        "intro": "extremely cold winters and a brief dry summer",
        "tree": "stunted open larch",
        "low": "tundra-like dwarf shrubs",
        "snow": "deep snow for most of the year",
    },
    "Dwa": {
        "intro": "hot humid summers and very cold dry winters",
        "agri": "large maize and soybean fields and rows of white greenhouses",
        "roof": "dense apartment blocks and blue factory roofs",
        "soil": "dusty bare brown fields in winter",
    },
    "Dwb": {
        "intro": "warm wet summers and dry cold winters",
        "tree": "mixed larch, pine and birch forest",
        "agri": "rectangular grain and potato fields",
        "snow": "thin dry winter snow, often blown off fields",
    },
    "Dwc": {
        "intro": "a short summer and a dry severe winter",
        "tree": "open larch taiga with light green crowns",
        "water": "braided gravel rivers and floodplain lakes",
        "agri": "very little farmland, mainly hay meadows",
    },
    "Dwd": {
        "intro": "the coldest winters on Earth over permafrost",
        "tree": "sparse larch on permafrost",
        "water": "round thermokarst lakes and iced rivers",
        "agri": "no farmland",
    },
    "Dfa": {
        "intro": "hot humid summers and snowy winters",
        "agri": "big corn and soybean fields in a square section grid",
        "tree": "deciduous oak and hickory woods along creeks",
        "roof": "suburban houses with grey shingle roofs and large lawns",
    },
    "Dfb": {
        "intro": "warm summers and snowy winters",
        "tree": "mixed spruce, pine and birch forest",
        "agri": "rye, wheat and potato fields",
        "roof": "dark and metal pitched roofs",
    },
    "Dfc": {
        "intro": "short cool summers and long snowy winters",
        "tree": "boreal spruce taiga, dark and uniform",
        "water": "bogs, peatlands and countless small lakes",
        "low": "mossy muskeg and wet sedge",
        "agri": "very little farmland, mostly forest clearings",
    },
    "Dfd": {
        "intro": "extremely cold winters with permafrost",
        "tree": "sparse larch woodland, bare in winter",
        "water": "frozen rivers and ice-covered lakes most of the year",
        "agri": "no farmland",
    },
    "ET": {
        "intro": "a brief cool summer and no real trees",
        "low": "tundra of mosses, lichens and sedges",
        "water": "polygonal ponds and shallow lakes",
        "soil": "frost-patterned gravel and rock",
    },
    "EF": {
        "intro": "permanent ice and snow",
        "snow": "a flat white ice sheet with blue crevasses",
        "soil": "dark exposed rock peaks above the ice",
        "water": "frozen meltwater, rarely open",
        "low": "no vegetation",
    },
}

#: What usually lies next to each facet (the paper asks for potential nearby geo-objects).
NEAR: dict[str, str] = {
    "tree": "near fields and houses",
    "low": "between fields and roads",
    "soil": "beside roads and new buildings",
    "agri": "around villages",
    "water": "bordered by trees or banks",
    "roof": "beside roads and yards",
    "road": "linking buildings",
    "paved": "around buildings",
}

#: Group-specific neighbours where the general ones above would be wrong (polar, desert, tropics).
GROUP_NEAR: dict[str, dict[str, str]] = {
    "A": {"water": "lined by dense green vegetation"},
    "B": {
        "water": "edged by thin strips of green",
        "low": "between bare patches",
        "tree": "near wells and houses",
    },
    "E": {
        "soil": "next to snow and ice",
        "water": "amid tundra or bare rock",
        "paved": "around huts and stations",
        "road": "linking a few huts",
        "low": "between rocks and ponds",
    },
}

_ABSENT = ("no ", "almost no", "practically no", "hardly any", "very little", "few ", "rare ", "trees scarce")

_CLASS_TEMPLATES: dict[str, tuple[str, str]] = {
    # normalised class name -> (label, facet)
    "bareland": ("Bare land", "soil"),
    "barren": ("Barren land", "soil"),
    "rangeland": ("Rangeland", "low"),
    "low vegetation": ("Low vegetation", "low"),
    "developed space": ("Developed space", "paved"),
    "impervious surfaces": ("Impervious surfaces", "paved"),
    "road": ("Roads", "road"),
    "tree": ("Trees", "tree"),
    "forest": ("Forest", "tree"),
    "water": ("Water", "water"),
    "agriculture land": ("Agriculture", "agri"),
    "agriculture": ("Agriculture", "agri"),
    "building": ("Buildings", "roof"),
    "car": ("Cars", "car"),
    "clutter": ("Clutter", "clutter"),
    "background": ("Background", "background"),
}


@dataclass(frozen=True)
class ZoneInfo:
    """Code, name and a one-line description of a Köppen zone (from :mod:`metaseg.climate`)."""

    code: str
    name: str
    description: str


def _norm(name: str) -> str:
    return name.replace("_", " ").replace("-", " ").strip().lower()


def normalize_zone(zone: str) -> str:
    """Canonical spelling of a zone key: a Köppen code (case-insensitive), ``generic`` or ``none``.

    Raises:
        UnknownNameError: for anything else (the message lists valid codes).
    """
    from metaseg.errors import UnknownNameError

    key = str(zone).strip()
    if key.lower() in (GENERIC, NO_TEXT):
        return key.lower()
    for code in ZONE_CODES:
        if code.lower() == key.lower():
            return code
    raise UnknownNameError(
        f"unknown climate zone {zone!r}; valid: {', '.join(ZONE_CODES)}, {GENERIC}, {NO_TEXT}"
    )


def zone_info(code: str) -> ZoneInfo:
    """Name and description of the Köppen zone ``code`` from :data:`metaseg.climate.ZONES`.

    Raises:
        UnknownNameError: not a Köppen code (``generic`` and ``none`` are prompt keys, not zones).
    """
    from metaseg.errors import UnknownNameError

    key = normalize_zone(code)
    if key not in ZONES:
        raise UnknownNameError(f"{key!r} is not a Köppen climate zone; valid: {', '.join(ZONE_CODES)}")
    zone = ZONES[key]
    return ZoneInfo(zone.code, zone.name, zone.description)


def class_names(class_set: str) -> tuple[str, ...]:
    """Output class names of ``class_set``, from :mod:`metaseg.classes` (torch-free).

    Raises:
        UnknownNameError: unknown class set (the message lists valid names).
    """
    from metaseg.classes import get_class_set

    return tuple(get_class_set(str(class_set).strip().lower()).names)


def normalize_class_set(class_set: str) -> str:
    """Lower-case class-set name, validated (UnknownNameError lists valid names)."""
    key = str(class_set).strip().lower()
    class_names(key)
    return key


def zone_facets(code: str) -> dict[str, str | None]:
    """Group defaults overridden by zone specifics, plus derived ``paved``/``car``/... facets."""
    code = normalize_zone(code)
    facets: dict[str, str | None] = dict(GROUP_FACTS[code[0]])
    facets.update(ZONE_FACTS.get(code, {}))
    facets["car"] = "small bright rectangles in rows on roads and parking lots"
    facets["clutter"] = "containers, construction debris and other small mixed objects"
    facets["background"] = f"all remaining land, such as {facets['low']}"
    return facets


def _class_sentence(name: str, facets: dict[str, str | None], group: str = "C") -> str:
    label, facet = _CLASS_TEMPLATES.get(_norm(name), (name.strip().capitalize(), "low"))
    text = facets.get(facet) or "as usual for this climate"
    absent = text.startswith(_ABSENT)  # "no farmland" has no neighbours worth naming
    near = None if absent else GROUP_NEAR.get(group, {}).get(facet, NEAR.get(facet))
    return f"{label}: {text}{', ' + near if near else ''}."


def knowledge_prompt(zone: str, class_set: str) -> str:
    """Offline climate-aware prompt for ``zone`` and ``class_set`` (no LLM).

    One intro sentence naming the zone and its character, one sentence per class combining
    group facts, zone facts and typical neighbours, and a snow sentence where snow occurs. The
    result is trimmed at sentence boundaries to the token budget (a no-op for the shipped notes).
    """
    from prompts_db.tokens import trim_to_budget

    code = normalize_zone(zone)
    if code == GENERIC:
        return generic_prompt(class_set)
    if code == NO_TEXT:
        return ""
    facets = zone_facets(code)
    group = GROUP_NAMES[code[0]]
    name = ZONE_NAMES[code]
    article = "an" if name[0] in "aeiou" else "a"
    parts = [f"Aerial image in {article} {name} climate (Köppen {code}, {group} group): {facets['intro']}."]
    parts += [_class_sentence(n, facets, code[0]) for n in class_names(class_set)]
    if facets.get("snow"):
        parts.append(f"Snow: {facets['snow']}.")
    text, truncated = trim_to_budget(" ".join(parts))
    if truncated:
        log.warning("knowledge prompt %s/%s trimmed to the token budget", code, class_set)
    return text


def generic_prompt(class_set: str) -> str:
    """Plain, climate-free remote-sensing description (the generic-text ablation of Table V)."""
    names = ", ".join(_norm(n) for n in class_names(class_set))
    return f"A remote sensing image of land cover showing {names}."
