"""metaseg.export: GeoTIFF (CRS, transform, colour map, tags) and palette PNG round-trips."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from PIL import Image

from metaseg.classes import get_class_set
from metaseg.errors import MetasegError
from metaseg.export import write_mask, write_mask_geotiff, write_mask_png

OEM = get_class_set("openearthmap")
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
GDAL_TRANSFORM = (500000.0, 0.5, 0.0, 4200000.0, 0.0, -0.5)


def _mask(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    m = rng.integers(0, OEM.num_classes, size=(h, w)).astype(np.uint8)
    m[0, 0] = 255
    return m


def test_geotiff_round_trip(tmp_path):
    m = _mask(300, 520)
    path = write_mask_geotiff(tmp_path / "m.tif", m, OEM, "EPSG:32621", GDAL_TRANSFORM)
    with rasterio.open(path) as src:
        assert src.count == 1 and src.dtypes[0] == "uint8"
        np.testing.assert_array_equal(src.read(1), m)
        assert src.crs.to_epsg() == 32621
        assert src.transform.to_gdal() == GDAL_TRANSFORM
        assert src.nodata == 255
        cmap = src.colormap(1)
        assert cmap[3] == (255, 255, 255, 255) and cmap[0][:3] == OEM.colors[0]
        assert cmap[255][:3] == (0, 0, 0)  # GDAL makes the nodata entry transparent
        tags = src.tags()
        assert tags["CLASS_SET"] == "openearthmap"
        assert json.loads(tags["CLASS_NAMES"]) == list(OEM.names)
        assert tags["CLASS_7"] == OEM.names[7]
        assert OEM.names[2] in src.descriptions[0]
        assert src.profile["compress"].lower() == "deflate"
        assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)


def test_small_geotiff_is_striped_not_tiled(tmp_path):
    m = _mask(40, 60)
    path = write_mask_geotiff(tmp_path / "s.tif", m, OEM)
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(1), m)
        assert src.crs is None
        assert not src.profile.get("tiled", False)


def test_png_palette_round_trip(tmp_path):
    m = _mask(33, 47)
    path = write_mask_png(tmp_path / "m.png", m, OEM)
    img = Image.open(path)
    assert img.mode == "P"
    np.testing.assert_array_equal(np.asarray(img), m)
    pal = np.array(img.getpalette()[: 256 * 3]).reshape(-1, 3)
    np.testing.assert_array_equal(pal[: OEM.num_classes], np.array(OEM.colors))
    np.testing.assert_array_equal(pal[255], [0, 0, 0])
    rgb = np.asarray(img.convert("RGB"))
    np.testing.assert_array_equal(rgb[1, 1], OEM.colors[m[1, 1]])


def test_write_mask_picks_format(tmp_path):
    m = _mask(20, 30)
    geo = SimpleNamespace(crs="EPSG:4326", transform=(10.0, 0.001, 0.0, 50.0, 0.0, -0.001), width=30, height=20)
    plain = SimpleNamespace(crs=None, transform=None, width=30, height=20)
    p = write_mask(tmp_path / "a.TIF", m, OEM, geo)
    with rasterio.open(p) as src:
        assert src.crs.to_epsg() == 4326
    p = write_mask(tmp_path / "b.tiff", m, OEM, plain)
    with rasterio.open(p) as src:
        assert src.crs is None
        np.testing.assert_array_equal(src.read(1), m)
    p = write_mask(tmp_path / "c.png", m, OEM, geo)
    assert Image.open(p).mode == "P"
    with pytest.raises(MetasegError, match=r"\.png"):
        write_mask(tmp_path / "d.jpg", m, OEM)
    with pytest.raises(MetasegError, match="30x20"):
        write_mask(tmp_path / "e.tif", m[:10], OEM, geo)


def test_geotiff_writer_sets_palette_without_gdal_errors(tmp_path, caplog):
    """The colour map is written before the pixels; otherwise libtiff refuses the palette tag."""
    import logging

    caplog.set_level(logging.DEBUG, logger="rasterio")
    index = np.zeros((300, 300), np.uint8)
    out = write_mask_geotiff(tmp_path / "m.tif", index, get_class_set("openearthmap"), "EPSG:32633",
                             (500000.0, 0.5, 0.0, 5800000.0, 0.0, -0.5))
    assert not [r for r in caplog.records if "Cannot modify tag" in r.getMessage()]
    with rasterio.open(out) as ds:
        assert ds.colorinterp[0] == rasterio.enums.ColorInterp.palette
        assert ds.colormap(1)[1][:3] == (0, 255, 36)
