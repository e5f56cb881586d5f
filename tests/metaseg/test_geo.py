"""Tile reading: georeference in many CRSs, EXIF GPS, band rules, stretch, nodata, bad files."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time

import numpy as np
import pytest
from rasterio.transform import from_origin

from metaseg import geo
from metaseg.classes import get_class_set
from metaseg.climate import lookup
from metaseg.errors import MetasegError, TileReadError
from metaseg.geo import inspect_tile, read_label, read_tile, tile_hash
from tests.fixtures.geotiffs import (
    IGUACU_TIF,
    make_pixels,
    write_broken_files,
    write_geotiff,
    write_photo,
    write_png_header_only,
)

# (label, crs, lat, lon, zone) -- UTM north/south, WGS84, national grids, web mercator, LAEA, polar.
CRS_CASES = [
    ("utm33n_potsdam", "EPSG:32633", 52.39, 13.06, "Cfb"),
    ("utm23s_rio", "EPSG:32723", -22.9, -43.2, "Aw"),
    ("wgs84_cairo", "EPSG:4326", 30.0, 31.2, "BWh"),
    ("bng_london", "EPSG:27700", 51.5, -0.12, "Cfb"),
    ("swiss_zurich", "EPSG:2056", 47.37, 8.54, "Cfb"),
    ("webmercator_singapore", "EPSG:3857", 1.35, 103.8, "Af"),
    (
        "laea_moscow",
        "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +units=m",
        55.75,
        37.6,
        "Dfb",
    ),
    ("antarctic_ps_mcmurdo", "EPSG:3031", -77.8, 166.7, "EF"),
    ("utm21n_negative_northing", "EPSG:32621", -25.5, -54.6, "Cfa"),
]


@pytest.mark.parametrize("label,crs,lat,lon,zone", CRS_CASES, ids=[c[0] for c in CRS_CASES])
def test_geotiff_located_in_any_crs(tmp_path, label, crs, lat, lon, zone):
    path = write_geotiff(tmp_path / f"{label}.tif", lat, lon, crs=crs, size=(24, 40))
    info = inspect_tile(path)
    assert info.location.source == "geotiff"
    assert info.location.lat == pytest.approx(lat, abs=1e-4)
    assert info.location.lon == pytest.approx(lon, abs=1e-4)
    assert (info.width, info.height, info.bands, info.dtype) == (40, 24, 3, "uint8")
    assert info.crs and info.transform is not None and len(info.transform) == 6
    assert len(info.footprint) == 4
    lats = [p[0] for p in info.footprint]
    lons = [p[1] for p in info.footprint]
    assert min(lats) < lat < max(lats) and min(lons) < lon < max(lons)
    assert lookup(info.location.lat, info.location.lon).zone.code == zone


def test_epsg_code_reported_when_present(tmp_path):
    info = inspect_tile(write_geotiff(tmp_path / "a.tif", 52.39, 13.06, crs="EPSG:32633"))
    assert info.crs == "EPSG:32633"
    d = info.to_dict()
    assert set(d) == {"lat", "lon", "source", "crs", "width", "height", "bands", "dtype", "footprint", "gsd_m"}
    assert d["footprint"][0] == list(info.footprint[0])


def test_geographic_tile_across_antimeridian(tmp_path):
    # A 0..360 geographic tile east of the dateline: lon 190 must come back as -170.
    path = write_geotiff(
        tmp_path / "pacific.tif", crs="EPSG:4326", transform=from_origin(189.99, 0.01, 0.001, 0.001)
    )
    info = inspect_tile(path)
    assert info.location.source == "geotiff"
    assert -180 <= info.location.lon < 180
    assert info.location.lon == pytest.approx(-170.0 + 0.006, abs=1e-3)


def test_tiff_without_crs_has_no_location(tmp_path):
    info = inspect_tile(write_geotiff(tmp_path / "plain.tif", crs=None))
    assert info.location.source == "none" and info.location.lat is None and info.location.lon is None
    assert info.crs is None and info.footprint is None
    # CRS but no geotransform: still nowhere
    info = inspect_tile(write_geotiff(tmp_path / "crs_only.tif", crs="EPSG:32633"))
    assert info.location.source == "none" and info.crs == "EPSG:32633"


@pytest.mark.parametrize(
    "crs",
    [
        'LOCAL_CS["arbitrary",UNIT["metre",1]]',
        "+proj=longlat +a=3396190 +b=3376200 +no_defs",
    ],  # engineering / Mars
    ids=["engineering", "mars"],
)
def test_untransformable_crs_is_not_a_crash(tmp_path, crs):
    info = inspect_tile(write_geotiff(tmp_path / "odd.tif", crs=crs, transform=from_origin(10, 20, 1, 1)))
    assert info.location.source == "none" and info.crs is not None
    tile = read_tile(tmp_path / "odd.tif")
    assert tile.rgb.shape == (32, 32, 3)


def test_out_of_range_georeference_gives_no_location(tmp_path):
    info = inspect_tile(
        write_geotiff(tmp_path / "bad.tif", crs="EPSG:4326", transform=from_origin(10, 200, 0.001, 0.001))
    )
    assert info.location.source == "none"


def test_gcp_georeferenced_tiff(tmp_path):
    import rasterio
    from rasterio.control import GroundControlPoint as GCP
    from rasterio.crs import CRS

    path = tmp_path / "gcps.tif"
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=1, dtype="uint8") as ds:
        ds.write(make_pixels(32, 1))
        gcps = [
            GCP(0, 0, 13.0, 52.4),
            GCP(0, 32, 13.0, 52.38),
            GCP(32, 32, 13.03, 52.38),
            GCP(32, 0, 13.03, 52.4),
        ]
        ds.gcps = (gcps, CRS.from_epsg(4326))
    info = inspect_tile(path)
    assert info.location.source == "geotiff"
    assert info.location.lat == pytest.approx(52.39, abs=1e-3) and info.location.lon == pytest.approx(
        13.015, abs=1e-3
    )


# ----------------------------------------------------------------------------- band rules
def test_four_bands_uses_first_three_uint8_unchanged(tmp_path):
    data = make_pixels(16, 4, "uint8", seed=3)
    tile = read_tile(write_geotiff(tmp_path / "rgbn.tif", 52.39, 13.06, data=data))
    assert tile.info.bands == 4 and tile.bands == (1, 2, 3)
    assert np.array_equal(tile.rgb, data[:3].transpose(1, 2, 0))
    assert tile.valid is None


def test_band_override(tmp_path):
    data = make_pixels(16, 4, "uint8", seed=4)
    path = write_geotiff(tmp_path / "rgbn.tif", 52.39, 13.06, data=data)
    tile = read_tile(path, bands=(4, 3, 2))
    assert np.array_equal(tile.rgb, data[[3, 2, 1]].transpose(1, 2, 0))
    grey = read_tile(path, bands=4)
    assert np.array_equal(grey.rgb[..., 0], data[3]) and np.array_equal(grey.rgb[..., 2], data[3])
    for bad in [(5, 1, 1), (0, 1, 2), (1, 2), ("1", 2, 3), (True, 2, 3)]:
        with pytest.raises(TileReadError):
            read_tile(path, bands=bad)


def test_one_band_grey_replicated(tmp_path):
    data = make_pixels(16, 1, "uint8")
    tile = read_tile(write_geotiff(tmp_path / "grey.tif", 0.5, 10.0, data=data))
    assert tile.rgb.shape == (16, 16, 3)
    assert np.array_equal(tile.rgb[..., 0], data[0]) and np.array_equal(tile.rgb[..., 1], data[0])


def test_two_bands_first_is_grey(tmp_path):
    data = make_pixels(16, 2, "uint8", seed=9)
    tile = read_tile(write_geotiff(tmp_path / "two.tif", 0.5, 10.0, data=data))
    assert tile.bands == (1,)
    assert all(np.array_equal(tile.rgb[..., c], data[0]) for c in range(3))


def test_palette_band_expanded(tmp_path):
    import rasterio

    path = tmp_path / "pal.tif"
    data = np.array([[0, 1], [2, 1]], dtype=np.uint8)[None]
    with rasterio.open(path, "w", driver="GTiff", width=2, height=2, count=1, dtype="uint8") as ds:
        ds.write(data)
        ds.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 0, 255, 255)})
    tile = read_tile(path)
    assert tile.rgb[0, 1].tolist() == [255, 0, 0] and tile.rgb[1, 0].tolist() == [0, 0, 255]


# ----------------------------------------------------------------------------- scaling + nodata
def test_uint16_stretch_over_valid_pixels_only(tmp_path):
    h, w = 40, 50
    band = np.tile(np.linspace(1000, 2000, w), (h, 1)).astype(np.uint16)
    band[:5] = 0  # nodata rows
    data = np.stack([band, band, band])
    path = write_geotiff(tmp_path / "u16.tif", -25.5, -54.6, crs="EPSG:32721", data=data, nodata=0)
    tile = read_tile(path)
    assert tile.info.dtype == "uint16"
    assert tile.valid is not None and tile.valid.shape == (h, w)
    assert not tile.valid[:5].any() and tile.valid[5:].all()
    assert (tile.rgb[:5] == 0).all()
    v = tile.rgb[5:, :, 0]
    # if the 0-valued nodata entered the percentiles, 1000 would map far above 0
    assert v.min() == 0 and v.max() == 255
    assert 100 < np.median(v) < 155
    assert (np.diff(v[0].astype(int)) >= 0).all()  # monotonic


def test_int16_with_nodata_and_stretch(tmp_path):
    data = make_pixels(20, 3, "int16", seed=5)
    data[:, 0, :] = -9999
    tile = read_tile(write_geotiff(tmp_path / "i16.tif", 30.0, 31.2, data=data, nodata=-9999))
    assert not tile.valid[0].any() and tile.valid[1:].all()
    assert tile.rgb[1:].max() == 255 and tile.rgb[1:].min() == 0


def test_float32_nan_is_invalid(tmp_path):
    data = make_pixels(20, 3, "float32", seed=6)
    data[1, 3, 4] = np.nan  # NaN in one band invalidates the pixel
    data[:, 10, :] = np.nan
    tile = read_tile(write_geotiff(tmp_path / "f32.tif", 1.35, 103.8, crs="EPSG:3857", data=data))
    assert tile.info.dtype == "float32"
    assert tile.valid is not None
    assert not tile.valid[3, 4] and not tile.valid[10].any()
    assert tile.valid.sum() == 20 * 20 - 20 - 1
    assert (tile.rgb[~tile.valid] == 0).all()
    assert tile.rgb[tile.valid].max() == 255


def test_constant_band_does_not_divide_by_zero(tmp_path):
    data = np.full((1, 8, 8), 1234, dtype=np.uint16)
    tile = read_tile(write_geotiff(tmp_path / "flat.tif", 0.5, 10.0, data=data))
    assert (tile.rgb == 0).all()


def test_all_nodata_tile(tmp_path):
    data = np.zeros((3, 8, 8), dtype=np.uint16)
    tile = read_tile(write_geotiff(tmp_path / "empty_data.tif", 0.5, 10.0, data=data, nodata=0))
    assert tile.valid is not None and not tile.valid.any() and (tile.rgb == 0).all()


# ----------------------------------------------------------------------------- PNG / JPEG
@pytest.mark.parametrize("lat,lon", [(52.39, 13.06), (-33.9, 18.4), (40.71, -74.0), (-22.9, -43.2)])
def test_jpeg_exif_gps_all_hemispheres(tmp_path, lat, lon):
    path = write_photo(tmp_path / "photo.jpg", lat, lon, size=(20, 30))
    info = inspect_tile(path)
    assert info.location.source == "exif"
    assert info.location.lat == pytest.approx(lat, abs=1e-5) and info.location.lon == pytest.approx(
        lon, abs=1e-5
    )
    assert (info.width, info.height, info.bands, info.dtype, info.crs) == (30, 20, 3, "uint8", None)
    tile = read_tile(path)
    assert tile.rgb.shape == (20, 30, 3) and tile.valid is None


def test_exif_bytes_refs_and_png_exif(tmp_path):
    from PIL import Image

    from tests.fixtures.geotiffs import gps_exif

    im = Image.new("RGB", (8, 8), (1, 2, 3))
    im.save(tmp_path / "b.jpg", exif=gps_exif(-1.29, 36.82, bytes_refs=True))
    loc = inspect_tile(tmp_path / "b.jpg").location
    assert (
        loc.source == "exif"
        and loc.lat == pytest.approx(-1.29, abs=1e-5)
        and loc.lon == pytest.approx(36.82, abs=1e-5)
    )
    im.save(tmp_path / "c.png", exif=gps_exif(52.39, 13.06))
    assert inspect_tile(tmp_path / "c.png").location.source == "exif"


def test_exif_gps_zero_denominator_and_out_of_range(tmp_path):
    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational as R

    im = Image.new("RGB", (8, 8))
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (R(52, 0), R(0, 1), R(0, 1)), 3: "E", 4: (R(13, 1), R(0, 1), R(0, 1))}
    im.save(tmp_path / "zero.jpg", exif=exif)
    assert inspect_tile(tmp_path / "zero.jpg").location.source == "none"
    exif[0x8825] = {1: "N", 2: (R(95, 1), R(0, 1), R(0, 1)), 3: "E", 4: (R(13, 1), R(0, 1), R(0, 1))}
    im.save(tmp_path / "range.jpg", exif=exif)
    assert inspect_tile(tmp_path / "range.jpg").location.source == "none"


def test_plain_png_has_no_location(tmp_path):
    info = inspect_tile(write_photo(tmp_path / "plain.png"))
    assert info.location.source == "none" and info.location.lat is None and info.format == "PNG"


def test_png_modes(tmp_path):
    from PIL import Image

    grey = write_photo(tmp_path / "grey.png", mode="L")
    t = read_tile(grey)
    assert t.info.bands == 1 and np.array_equal(t.rgb[..., 0], t.rgb[..., 2])
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    t = read_tile(tmp_path / "rgba.png")
    assert (
        t.valid is not None
        and not t.valid[0, 0]
        and t.valid.sum() == 15
        and t.rgb[0, 0].tolist() == [0, 0, 0]
    )
    arr16 = np.tile(np.arange(0, 4000, 100, dtype=np.uint16), (5, 1))
    Image.fromarray(arr16).save(tmp_path / "g16.png")
    t = read_tile(tmp_path / "g16.png")
    assert t.info.dtype == "uint16" and t.rgb.max() == 255 and t.rgb.min() == 0
    Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4), "L").convert("P").save(tmp_path / "p.png")
    assert read_tile(tmp_path / "p.png").rgb.shape == (4, 4, 3)


# ----------------------------------------------------------------------------- bad files + size caps
def test_broken_files_raise_one_clean_error(tmp_path):
    files = write_broken_files(tmp_path / "bad")
    for key, path in files.items():
        with pytest.raises(TileReadError) as err:
            read_tile(path)
        msg = str(err.value)
        assert path.name in msg and "\n" not in msg and str(tmp_path) not in msg, (key, msg)
        assert isinstance(err.value, MetasegError)
    for key in ("empty", "garbage", "text", "bad_tiff_header", "zero_png"):
        with pytest.raises(TileReadError):
            inspect_tile(files[key])
    assert "empty" in str(pytest.raises(TileReadError, read_tile, files["empty"]).value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(TileReadError, match="not found"):
        read_tile(tmp_path / "nope.tif")
    with pytest.raises(TileReadError, match="directory"):
        inspect_tile(tmp_path)
    with pytest.raises(TileReadError, match="unsupported"):
        (tmp_path / "a.gif").write_bytes(b"GIF89a" + b"\x00" * 20)
        read_tile(tmp_path / "a.gif")


def test_max_pixels_checked_before_reading(tmp_path, monkeypatch):
    path = write_geotiff(tmp_path / "t.tif", 52.39, 13.06, size=32)
    with pytest.raises(TileReadError, match="METASEG_MAX_PIXELS"):
        read_tile(path, max_pixels=1000)
    assert read_tile(path, max_pixels=1024).rgb.shape == (32, 32, 3)
    monkeypatch.setenv("METASEG_MAX_PIXELS", "500")
    with pytest.raises(TileReadError, match="exceeds"):
        read_tile(path)
    with pytest.raises(TileReadError):
        read_tile(write_photo(tmp_path / "p.png", size=32))
    assert inspect_tile(path).width == 32  # metadata is still available
    monkeypatch.setenv("METASEG_MAX_PIXELS", "not-a-number")
    assert geo.max_pixels_from_env() == geo.DEFAULT_MAX_PIXELS


def test_png_declaring_huge_size_rejected_from_header(tmp_path):
    from PIL import Image

    bomb = write_png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    assert bomb.stat().st_size < 200
    t = time.perf_counter()
    with pytest.raises(TileReadError) as err:
        read_tile(bomb)
    assert time.perf_counter() - t < 1.0
    assert "bomb.png" in str(err.value)
    with pytest.raises(TileReadError):
        inspect_tile(bomb)
    # Just above our limit but below Pillow's error threshold: still refused before decoding.
    mid = write_png_header_only(tmp_path / "mid.png", 12_000, 10_000)
    with pytest.raises(TileReadError, match="exceeds|too large"):
        read_tile(mid)
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS >= geo.DEFAULT_MAX_PIXELS


def test_bomb_guard_still_on_after_climate_import():
    code = (
        "from PIL import Image; import metaseg.climate as c, metaseg.geo as g; "
        "c.lookup(52.39, 13.06); c.zone_map_rgba(64); print(Image.MAX_IMAGE_PIXELS)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() != "None" and int(out.stdout) > 0


def test_geo_is_torch_free():
    code = "import sys, metaseg.geo; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- labels + hash
def test_read_label_formats(tmp_path):
    from PIL import Image

    lov = get_class_set("loveda")
    raw = np.array([[0, 1, 2], [3, 7, 9]], dtype=np.uint8)
    Image.fromarray(raw, "L").save(tmp_path / "mask.png")
    assert read_label(tmp_path / "mask.png", "loveda").tolist() == lov.decode(raw).tolist()

    oem_raw = np.array([[[0, 8], [1, 5]]], dtype=np.uint8)
    path = write_geotiff(tmp_path / "oem_label.tif", 52.39, 13.06, data=oem_raw)
    assert read_label(path, "openearthmap").tolist() == [[255, 7], [0, 4]]

    pot = get_class_set("potsdam")
    idx = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.uint8)
    Image.fromarray(pot.encode(idx)).save(tmp_path / "top_potsdam_2_13_label.png")
    assert np.array_equal(
        read_label(tmp_path / "top_potsdam_2_13_label.png", pot, expected_shape=(2, 3)), idx
    )
    rgb_tif = write_geotiff(
        tmp_path / "top_potsdam_2_13_label.tif", 52.39, 13.06, data=pot.encode(idx).transpose(2, 0, 1)
    )
    assert np.array_equal(read_label(rgb_tif, "potsdam"), idx)

    with pytest.raises(TileReadError, match="pixels but the tile"):
        read_label(tmp_path / "mask.png", "loveda", expected_shape=(3, 3))
    write_photo(tmp_path / "label.jpg")
    with pytest.raises(TileReadError, match="lossless"):
        read_label(tmp_path / "label.jpg", "loveda")
    with pytest.raises(TileReadError, match="RGB"):
        read_label(path, "potsdam")


def test_tile_hash(tmp_path):
    path = write_geotiff(tmp_path / "h.tif", 52.39, 13.06)
    assert tile_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert tile_hash(str(path)) == tile_hash(path)
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert tile_hash(a) == tile_hash(a.copy()) and len(tile_hash(a)) == 64
    assert tile_hash(a) != tile_hash(a.astype(np.uint16)) and tile_hash(a) != tile_hash(a.reshape(4, 3))
    with pytest.raises(TileReadError):
        tile_hash(tmp_path / "missing.tif")


# ----------------------------------------------------------------------------- the real example
def test_real_landsat_example_locates_to_cfa():
    assert IGUACU_TIF.exists() and IGUACU_TIF.stat().st_size < 1_500_000
    info = inspect_tile(IGUACU_TIF)
    assert info.crs == "EPSG:32621"
    assert (info.width, info.height, info.bands, info.dtype) == (512, 512, 3, "uint16")
    assert info.location.source == "geotiff"
    assert info.location.lat == pytest.approx(-25.505, abs=0.01) and info.location.lon == pytest.approx(
        -54.589, abs=0.01
    )
    assert lookup(info.location.lat, info.location.lon).zone.code == "Cfa"
    tile = read_tile(IGUACU_TIF)
    assert tile.valid is None and tile.rgb.shape == (512, 512, 3)
    assert 60 < tile.rgb.mean() < 200 and tile.rgb.std() > 30
