"""Large-area mapping: many tiles, many machines, each tile with the prompt of its own climate zone.

This is the library behind ``python -m metaseg map`` (DESIGN.md §6.1, §7). Torch-free on the
client; the task function :func:`map_tiles` imports torch on the workers only.

How a job runs, one module per step:

1. **Inputs** (:mod:`.inputs`, :mod:`.stac`, :mod:`.sources`; client): GeoTIFF files, folders of
   them and STAC ItemCollections / catalogs / items; each tile gets a unique mask id.
2. **Plan** (:mod:`.job`, :mod:`.resume`; client): headers, zones, prompts and fingerprints;
   ``--resume`` skips tiles whose mask is current.
3. **Tasks** (:mod:`.tasks`, :mod:`.vectors`; workers, through :class:`metaseg.runner.Runner`):
   read, predict, write the COG mask, vectorise; polygons go back as WKB with per-class areas.
4. **Client writes** (:mod:`.job`, :mod:`.report`): vector file, ``summary.json``, area report.

Output names shared by client and workers are in :mod:`.layout`.
"""

from metaseg.mapping.inputs import LABEL_NAME_SUFFIXES, discover, is_label_file
from metaseg.mapping.job import MapJob, PromptFor
from metaseg.mapping.layout import (
    FIELDS,
    MASKS_DIR,
    NO_ZONE,
    REPORT_CSV,
    REPORT_MD,
    SUMMARY_NAME,
    VECTOR_FORMATS,
    mask_path,
)
from metaseg.mapping.report import TileRecord, exit_code, format_text
from metaseg.mapping.resume import fingerprint, input_fingerprint, model_info
from metaseg.mapping.sources import STAC_SUFFIXES, TILE_SUFFIXES, Source, assign_ids
from metaseg.mapping.stac import DEFAULT_ASSET
from metaseg.mapping.tasks import MapSettings, TileTask, bundle_tasks, map_tiles

__all__ = [
    "DEFAULT_ASSET",
    "FIELDS",
    "LABEL_NAME_SUFFIXES",
    "MASKS_DIR",
    "NO_ZONE",
    "REPORT_CSV",
    "REPORT_MD",
    "STAC_SUFFIXES",
    "SUMMARY_NAME",
    "TILE_SUFFIXES",
    "VECTOR_FORMATS",
    "MapJob",
    "MapSettings",
    "PromptFor",
    "Source",
    "TileRecord",
    "TileTask",
    "assign_ids",
    "bundle_tasks",
    "discover",
    "exit_code",
    "fingerprint",
    "format_text",
    "input_fingerprint",
    "is_label_file",
    "map_tiles",
    "mask_path",
    "model_info",
]
