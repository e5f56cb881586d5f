"""Hostile input generator: every broken, odd or malicious file and text the reliability tests feed
to the CLI, the app and the prompt store.

Everything is written by code into a folder the caller gives (a pytest tmp dir), deterministic
(seeded) and tiny, except the files whose point is a *declared* size (a PNG header claiming
100000×100000 pixels holds a few bytes of data).

Each input carries ``expect``:

* ``"error"``  – the only acceptable outcome is a clean user error;
* ``"result"`` – a clean result is required (e.g. a 1×1 tile, a 13-band raster);
* ``"either"`` – a result or a clean error are both acceptable (e.g. a truncated TIFF whose
  header is intact: ``locate`` reads only metadata and may succeed, ``predict`` must fail).

Usage::

    from tests.reliability.hostile import hostile_files, HOSTILE_TEXTS
    files = hostile_files(tmp_path)      # list[HostileFile]
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.fixtures.geotiffs import make_pixels, write_broken_files, write_geotiff, write_photo

#: A CRS that PROJ cannot transform to WGS84: a geographic CRS of another celestial body (Mars).
MARS_WKT = (
    'GEOGCRS["Mars 2000",DATUM["D_Mars_2000",ELLIPSOID["Mars_2000_IAU_IAG",3396190,169.894447223612,'
    'LENGTHUNIT["metre",1]],ANCHOR["Viking 1 lander: 47.95137 W"]],PRIMEM["Reference Meridian",0,'
    'ANGLEUNIT["degree",0.0174532925199433]],CS[ellipsoidal,2],AXIS["geodetic latitude (Lat)",north,'
    'ORDER[1],ANGLEUNIT["degree",0.0174532925199433]],AXIS["geodetic longitude (Lon)",east,ORDER[2],'
    'ANGLEUNIT["degree",0.0174532925199433]],ID["IAU",49900,2015]]'
)
#: An engineering (local) CRS: plain metres on a site grid, no relation to the Earth's surface.
LOCAL_WKT = 'LOCAL_CS["site grid",LOCAL_DATUM["arbitrary",0],UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'


@dataclass(frozen=True)
class HostileFile:
    """One generated file: ``key`` (stable id used in the report), what it is, where, expectation."""

    key: str
    description: str
    path: Path
    expect: str = "either"  # "error" | "result" | "either"
    predict_expect: str | None = None  # stricter expectation for pixel reads (predict / segment)

    @property
    def pixel_expect(self) -> str:
        return self.predict_expect or self.expect


@dataclass(frozen=True)
class HostileText:
    """One prompt text: ``key``, description, the text, and whether saving it must fail."""

    key: str
    description: str
    text: str
    save_expect: str = "result"  # what PromptStore.save / /save_prompt must do
    predict_expect: str = "result"  # what predict / /segment must do with it as the prompt
    argv_ok: bool = True  # representable as a command-line argument (no NUL, < 128 KiB)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_declaring(width: int, height: int, bad_crc: bool = False) -> bytes:
    """A PNG whose IHDR declares ``width × height`` RGB but whose data is a few bytes."""
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if bad_crc:
        ihdr = ihdr[:-4] + b"\x00\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + ihdr + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b"")


def _write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


def _write_sparse(path: Path, width: int, height: int) -> Path:
    """A tiled GeoTIFF with no data blocks at all (GDAL SPARSE_OK): huge on paper, tiny on disk."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8", tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", sparse_ok=True,
                       crs=CRS.from_epsg(32633), transform=from_origin(300_000, 5_800_000, 10, 10)):
        pass
    return path


def _write_gcp_tiff(path: Path) -> Path:
    import rasterio
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    gcps = [GroundControlPoint(r, c, 13.0 + 0.1 * c / 32, 52.4 - 0.1 * r / 32) for r in (0, 32) for c in (0, 32)]
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=3, dtype="uint8") as dst:
        dst.write(make_pixels(32, 3, "uint8", seed=9))
        dst.gcps = (gcps, CRS.from_epsg(4326))
    return path


def hostile_files(folder: str | Path) -> list[HostileFile]:
    """Write every hostile file into ``folder`` and return them in a stable order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    broken = write_broken_files(folder / "broken")
    out: list[HostileFile] = []

    def add(key: str, description: str, path: Path, expect: str = "either", predict_expect: str | None = None):
        out.append(HostileFile(key, description, Path(path), expect, predict_expect))

    # --- broken containers ---------------------------------------------------------------
    add("zero_byte", "zero-byte file named .tif", broken["empty"], "error")
    add("garbage_tif", "4 KiB of random bytes named .tif", broken["garbage"], "error")
    add("text_as_tif", "a text file named .tif", broken["text"], "error")
    add("corrupt_tiff", "TIFF magic followed by junk", broken["bad_tiff_header"], "error")
    add("truncated_tiff", "GeoTIFF cut to a third of its bytes", broken["truncated_tif"], "either", "error")
    add("truncated_png", "PNG cut in half", broken["truncated_png"], "either", "error")
    add("truncated_jpeg", "JPEG (with GPS) cut in half", broken["truncated_jpg"], "either", "error")
    bad_crc = folder / "bad_crc.png"
    bad_crc.write_bytes(_png_declaring(32, 32, bad_crc=True))
    add("corrupt_png_crc", "PNG whose IHDR checksum is wrong", bad_crc, "error")
    add("zero_size_png", "PNG declaring 0×0 pixels", broken["zero_png"], "error")
    huge = folder / "huge.png"
    huge.write_bytes(_png_declaring(100_000, 100_000))
    add("png_100000x100000", "PNG declaring 100000×100000 pixels (decompression bomb)", huge, "error")

    sparse = folder / "sparse_100000.tif"
    _write_sparse(sparse, 100_000, 100_000)
    add("geotiff_100000x100000", "sparse GeoTIFF declaring 100000×100000×3 (300 KB on disk)", sparse, "either", "error")

    # --- wrong extension ------------------------------------------------------------------
    png_bytes = _write_png(folder / "_real.png", make_pixels(24, 3, "uint8", seed=3).transpose(1, 2, 0))
    png_as_tif = folder / "png_bytes.tif"
    png_as_tif.write_bytes(png_bytes.read_bytes())
    png_bytes.unlink()
    add("png_named_tif", "PNG bytes named .tif", png_as_tif, "either")
    tif = write_geotiff(folder / "_real.tif", 52.39, 13.06, crs="EPSG:32633", size=24)
    tif_as_png = folder / "tif_bytes.png"
    tif_as_png.write_bytes(tif.read_bytes())
    tif.unlink()
    add("tif_named_png", "GeoTIFF bytes named .png", tif_as_png, "either")
    exe = folder / "script.sh"
    exe.write_text("#!/bin/sh\necho pwned\n")
    add("unsupported_suffix", "shell script (.sh)", exe, "error")

    # --- extreme sizes --------------------------------------------------------------------
    add("png_1x1", "1×1 RGB PNG", _write_png(folder / "one.png", np.full((1, 1, 3), 90, np.uint8)), "result")
    strip = make_pixels((1, 5000), 3, "uint8", seed=4).transpose(1, 2, 0)
    add("png_1x5000", "1×5000 RGB PNG (one-row strip)", _write_png(folder / "strip.png", strip), "result")
    add("tif_5000x1", "5000×1 GeoTIFF (one-column strip)",
        write_geotiff(folder / "column.tif", 52.39, 13.06, crs="EPSG:32633", size=(5000, 1)), "result")

    # --- band counts and sample types -----------------------------------------------------
    for n in (2, 4, 6, 13):
        add(f"bands_{n}", f"{n}-band uint16 GeoTIFF (UTM 33N)",
            write_geotiff(folder / f"bands{n}.tif", 52.39, 13.06, crs="EPSG:32633", size=32, bands=n,
                          dtype="uint16", seed=n), "result")
    u16 = make_pixels(32, 3, "uint16", seed=5)
    u16[:, :8, :] = 0
    add("uint16_nodata", "uint16 with nodata=0 on a quarter of the rows",
        write_geotiff(folder / "u16_nodata.tif", 30.04, 31.24, crs="EPSG:32636", data=u16, nodata=0), "result")
    i16 = make_pixels(32, 3, "int16", seed=6)
    i16[:, :, :5] = -9999
    add("int16_nodata", "int16 with nodata=-9999 and negative values",
        write_geotiff(folder / "i16_nodata.tif", -3.1, -60.0, crs="EPSG:4326", data=i16, nodata=-9999), "result")
    f32 = make_pixels(32, 3, "float32", seed=7)
    f32[:, 10:20, 10:20] = np.nan
    f32[0, 0, 0] = np.inf
    add("float32_nan", "float32 with NaN block, an inf, nodata=NaN",
        write_geotiff(folder / "f32_nan.tif", 1.35, 103.8, crs="EPSG:4326", data=f32, nodata=float("nan")),
        "result")
    allnan = np.full((3, 16, 16), np.nan, np.float32)
    add("float32_all_nan", "float32 where every pixel is NaN",
        write_geotiff(folder / "all_nan.tif", 1.35, 103.8, crs="EPSG:4326", data=allnan, nodata=float("nan")),
        "either")
    const = np.full((1, 16, 16), 7, np.uint16)
    add("uint16_constant", "single-band uint16, every pixel equal (zero contrast)",
        write_geotiff(folder / "const.tif", 52.39, 13.06, crs="EPSG:32633", data=const), "result")

    # --- georeference edge cases ----------------------------------------------------------
    add("geotiff_no_crs", "TIFF with pixels but no CRS/transform",
        write_geotiff(folder / "no_crs.tif", crs=None, size=32), "result")
    from rasterio.transform import from_origin

    add("crs_engineering", "engineering (local) CRS that has no WGS84 relation",
        write_geotiff(folder / "local_crs.tif", crs=LOCAL_WKT, size=32,
                      transform=from_origin(1000, 2000, 1, 1)), "either", "result")
    add("crs_mars", "geographic CRS of Mars (PROJ cannot transform to WGS84)",
        write_geotiff(folder / "mars.tif", crs=MARS_WKT, size=32, transform=from_origin(10, 20, 0.01, 0.01)),
        "either", "result")
    add("crs_latlon_out_of_range", "EPSG:4326 transform placing the tile at latitude 95",
        write_geotiff(folder / "lat95.tif", crs="EPSG:4326", size=32, transform=from_origin(10, 95.5, 0.01, 0.01)),
        "either", "result")
    add("north_pole", "EPSG:4326 tile touching the North Pole (lat 89.99..90)",
        write_geotiff(folder / "north_pole.tif", crs="EPSG:4326", size=32,
                      transform=from_origin(0, 90, 1e-4 * 2, 1e-4 * 2)), "result")
    add("south_pole_3031", "Antarctic polar stereographic (EPSG:3031) tile centred on the South Pole",
        write_geotiff(folder / "south_pole.tif", crs="EPSG:3031", size=32,
                      transform=from_origin(-160, 160, 10, 10)), "result")
    add("antimeridian", "EPSG:4326 tile straddling the antimeridian (lon 179.99 .. -179.99)",
        write_geotiff(folder / "antimeridian.tif", crs="EPSG:4326", size=32,
                      transform=from_origin(179.9984, -16.5, 1e-4, 1e-4)), "result")
    add("antimeridian_3832", "PDC Mercator (EPSG:3832) tile east of the antimeridian, Fiji",
        write_geotiff(folder / "fiji_3832.tif", -17.7, -179.9, crs="EPSG:3832", size=32), "result")
    from affine import Affine

    add("gcps_only", "georeferenced by 4 ground control points, no transform",
        _write_gcp_tiff(folder / "gcps.tif"), "result")
    add("rotated_transform", "EPSG:4326 transform rotated by 30°",
        write_geotiff(folder / "rotated.tif", crs="EPSG:4326", size=32,
                      transform=Affine.translation(13, 52.4) * Affine.rotation(30) * Affine.scale(1e-3, -1e-3)),
        "result")
    add("degenerate_transform", "transform with zero pixel size",
        write_geotiff(folder / "zero_px.tif", crs="EPSG:4326", size=32, transform=Affine(0, 0, 13, 0, 0, 52.4)),
        "result")
    add("nan_transform", "transform containing NaN",
        write_geotiff(folder / "nan_tr.tif", crs="EPSG:4326", size=32,
                      transform=Affine(float("nan"), 0, 13, 0, -1e-3, 52.4)), "result")
    add("utm_out_of_domain", "UTM 33N transform 10^12 m from the origin (outside the projection)",
        write_geotiff(folder / "far_utm.tif", crs="EPSG:32633", size=32, transform=Affine(1e9, 0, -1e12, 0, -1e9, 1e12)),
        "result")
    add("ocean", "GeoTIFF in the mid-Atlantic (0°, -30°)",
        write_geotiff(folder / "ocean.tif", 0.0, -30.0, crs="EPSG:4326", size=32), "result")
    add("exif_gps_out_of_range", "JPEG with EXIF GPS latitude 95°",
        write_photo(folder / "gps95.jpg", 95.0, 10.0, size=32), "result")

    # --- label masks (as tiles and as Review uploads) ---------------------------------------
    rng = np.random.default_rng(8)
    add("label_out_of_range", "single-band uint8 label with values 0..255 (OEM uses 0..8)",
        write_geotiff(folder / "label_range.tif", 52.39, 13.06, crs="EPSG:32633",
                      data=rng.integers(0, 256, (1, 64, 64), dtype=np.uint8)), "result")
    add("label_wrong_size", "label PNG 17×23 (the tile is 64×64)",
        _write_png(folder / "label_small.png", rng.integers(1, 9, (23, 17), dtype=np.uint8)), "result")
    add("label_rgb_unknown", "RGB label with colours outside every palette",
        _write_png(folder / "label_rgb.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "result")
    return out


#: A representative subset (one per family) run by the default suite on the expensive surfaces
#: (predict CLI, app /segment); the full set runs under ``-m slow`` and in the report script.
QUICK_FILE_KEYS = frozenset({
    "zero_byte", "corrupt_tiff", "truncated_tiff", "png_100000x100000", "geotiff_100000x100000", "png_named_tif", "png_1x1",
    "png_1x5000", "bands_13", "float32_nan", "geotiff_no_crs", "crs_mars", "antimeridian", "ocean",
    "label_out_of_range",
})
QUICK_TEXT_KEYS = frozenset({"html_script", "one_mb", "lone_surrogate", "emoji", "whitespace_only"})

#: Files the Review "label upload" accepts as a label of the 64×64 reference tile.
LABEL_SHAPE = (64, 64)


def reference_tile(folder: str | Path) -> Path:
    """A valid 64×64 GeoTIFF (Potsdam, Cfb) used as the tile labels are uploaded against."""
    return write_geotiff(Path(folder) / "reference.tif", 52.39, 13.06, crs="EPSG:32633", size=64, seed=11)


_ONE_MB = ("Tropical rainforest with dense tree canopy and meandering rivers. " * 16_200)[:1_048_576]

HOSTILE_TEXTS: list[HostileText] = [
    HostileText("html_script", "<script> tag", '<script>window.__xss = "script";</script>Dense forest.'),
    HostileText("img_onerror", "<img onerror> handler",
                'Rivers <img src=x onerror="window.__xss=\'img\'"> and trees.'),
    HostileText("svg_onload", "<svg onload> and javascript: URL",
                '<svg onload="window.__xss=\'svg\'"></svg><a href="javascript:window.__xss=\'a\'">x</a>'),
    HostileText("sql_injection", "SQL injection", "Fields'); DROP TABLE prompts; -- \" OR 1=1; SELECT * FROM runs"),
    HostileText("one_mb", "1 MiB of text", _ONE_MB, save_expect="error", argv_ok=False),
    HostileText("rtl_override", "RTL override and Arabic/Hebrew",
                "\u202eGNIDLIUB\u202c مباني وطرق עצים ומים"),
    HostileText("zero_width", "zero-width joiners/spaces and BOM", "tr\u200bee\u200d wa\u200cter\ufeff road\u2060s"),
    HostileText("emoji", "emoji incl. ZWJ sequences and flags", "🌍 forest 🌳🌳, city 🏙️, family 👨‍👩‍👧, 🇩🇪"),
    HostileText("combining", "stacked combining marks (zalgo)", "ro" + "\u0301\u0302\u0303\u0304" * 50 + "ad"),
    HostileText("lone_surrogate", "lone UTF-16 surrogate (\\ud800)", "water \ud800 bodies",
                save_expect="either", predict_expect="either"),
    HostileText("control_chars", "NUL and other control characters", "bare\x00land\x07\x1b[31m red\r\n",
                save_expect="error", argv_ok=False),
    HostileText("whitespace_only", "only spaces, tabs and newlines", " \t\n  ", save_expect="error", predict_expect="error"),
]
