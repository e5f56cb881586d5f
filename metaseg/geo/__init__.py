"""Reading tiles and labels: GeoTIFF (any CRS), PNG and JPEG (with EXIF GPS).

Torch-free (rasterio + Pillow + numpy). Two entry points:

* :func:`inspect_tile` reads metadata only (size, bands, dtype, CRS, georeference) and derives
  the tile's location in WGS84: the centre of a georeferenced TIFF transformed from its CRS
  (``source="geotiff"``), or the GPS position in the EXIF block of a PNG/JPEG
  (``source="exif"``). Anything else — a plain image, a TIFF without CRS, a CRS that cannot be
  transformed, coordinates out of range — gives ``source="none"`` rather than an error.
* :func:`read_tile` also reads the pixels and turns them into an 8-bit RGB image for the models.

Pixel rules (what the models see):

* **Band choice.** 3 or more bands: bands 1, 2, 3 are taken as red, green, blue (the order of
  ordinary RGB GeoTIFFs and of the datasets we support; pass ``bands=(r, g, b)``, 1-based, for
  other layouts such as Landsat/Sentinel stacks). 1 band: grey, replicated to RGB (a palette
  band is expanded through its colour map). 2 bands: the first band as grey (the second is
  usually alpha or a second channel we cannot map to colour). ``bands`` may also be a single
  band index for a grey rendering.
* **Scaling.** ``uint8`` data are used as they are. Every other type (``uint16``, ``int16``,
  ``float32`` ...) gets a robust per-band linear stretch: the 2nd–98th percentile of the band's
  *valid* pixels maps to 0–255 (clipped). A constant band becomes 0.
* **Validity.** Pixels that are nodata (per the file's nodata value, internal mask or alpha),
  NaN/inf in any chosen band, or fully transparent in a PNG are marked ``False`` in
  :attr:`Tile.valid` and set to 0 in :attr:`Tile.rgb`. When every pixel is valid ``valid`` is
  ``None``.

Size guard: ``width × height`` is compared with ``max_pixels`` (default: environment variable
``METASEG_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`) *before* any pixel is decoded, and
Pillow's own decompression-bomb guard is kept on (raised to at least that limit, never off), so
a PNG that merely declares 100000×100000 pixels is rejected from its header.

Package layout: :mod:`~metaseg.geo.tiles` (the tile types and the checks every read starts
with), :mod:`~metaseg.geo.georef` (CRS, map → WGS84, ground distances),
:mod:`~metaseg.geo.reading` (pixels), :mod:`~metaseg.geo.labels` (ground truth) and
:mod:`~metaseg.geo.locate` (the ``locate`` object). This is the one tile reader of the project:
the app, ``metaseg predict``/``map``, the training dataset readers, ``training.evaluate`` and
``training.sweep`` all read through :func:`read_tile`, so nodata means the same everywhere —
inference gets ``Tile.valid`` (invalid pixels are left out of the mask), training and scoring turn
the label of an invalid pixel into 255 (ignored by losses and metrics).

Every failure to read a file (missing, a directory, empty, corrupt, truncated, unsupported
format, too large) raises one :class:`~metaseg.errors.TileReadError` whose one-line message
names the file (without its directory).
"""

from metaseg.geo.georef import EARTH_RADIUS_M, ground_sample_distance, haversine_m
from metaseg.geo.labels import LabelRead, open_label, read_label, tile_hash
from metaseg.geo.locate import locate_file, locate_info, locate_point, zone_object
from metaseg.geo.reading import exif_gps, inspect_tile, read_tile
from metaseg.geo.tiles import DEFAULT_MAX_PIXELS, Location, Tile, TileInfo, max_pixels_from_env

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "EARTH_RADIUS_M",
    "LabelRead",
    "Location",
    "Tile",
    "TileInfo",
    "exif_gps",
    "ground_sample_distance",
    "haversine_m",
    "inspect_tile",
    "locate_file",
    "locate_info",
    "locate_point",
    "max_pixels_from_env",
    "open_label",
    "read_label",
    "read_tile",
    "tile_hash",
    "zone_object",
]
