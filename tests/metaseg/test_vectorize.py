"""Masks to polygons: geometry, ground areas in any CRS, filters, and GeoPackage/GeoJSON files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from metaseg.errors import MetasegError
from metaseg.vectorize import mask_to_features, write_features

NAMES = ("water", "tree", "road")


def _mask():
    m = np.full((40, 60), 255, dtype=np.uint8)
    m[0:10, 0:20] = 0  # 200 px
    m[20:40, 30:60] = 1  # 600 px
    m[12:14, 50:53] = 2  # 6 px speckle
    return m


def test_utm_polygons_have_pixel_exact_areas_and_are_in_lonlat():
    # EPSG:32632 origin near Bern's longitude band, 0.5 m pixels -> 0.25 m² per pixel
    transform = (380000.0, 0.5, 0.0, 5200000.0, 0.0, -0.5)
    feats = mask_to_features(_mask(), transform, "EPSG:32632", NAMES, extra={"zone": "Cfb", "tile": "t.tif"})
    assert [f["class"] for f in feats] == ["water", "tree", "road"]
    areas = [f["area_m2"] for f in feats]
    # ground area differs from UTM grid area by the scale factor squared (< 0.1 % here)
    assert areas == pytest.approx([50.0, 150.0, 1.5], rel=2e-3)
    for f in feats:
        assert f["zone"] == "Cfb" and f["tile"] == "t.tif"
        x, y = f["geometry"].centroid.coords[0]
        assert 7.3 < x < 7.5 and 46.9 < y < 47.0  # lon/lat near Bern
        assert f["geometry"].is_valid


def test_web_mercator_and_geographic_areas_are_on_the_ground():
    lat = 60.0
    y0 = 6378137.0 * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
    merc = mask_to_features(_mask(), (0.0, 1.0, 0.0, y0, 0.0, -1.0), "EPSG:3857", NAMES)
    # a Web Mercator "metre" at 60° is half a metre on the ground
    assert merc[0]["area_m2"] == pytest.approx(200 * 0.25, rel=1e-2)
    deg = 1e-5
    geo = mask_to_features(_mask(), (10.0, deg, 0.0, lat, 0.0, -deg), "EPSG:4326", NAMES)
    expected = 200 * (deg * 111_320) ** 2 * math.cos(math.radians(lat))
    assert geo[0]["area_m2"] == pytest.approx(expected, rel=1e-2)


def test_min_area_simplify_and_ignore():
    transform = (380000.0, 0.5, 0.0, 5200000.0, 0.0, -0.5)
    feats = mask_to_features(_mask(), transform, "EPSG:32632", NAMES, min_area_m2=2.0)
    assert [f["class"] for f in feats] == ["water", "tree"]
    ring = np.zeros((50, 50), dtype=np.uint8)
    yy, xx = np.mgrid[:50, :50]
    ring[(yy - 25) ** 2 + (xx - 25) ** 2 < 400] = 1
    exact = mask_to_features(ring, transform, "EPSG:32632", NAMES, dst_crs="EPSG:32632")
    simple = mask_to_features(ring, transform, "EPSG:32632", NAMES, dst_crs="EPSG:32632", simplify=1.0)
    n_exact = sum(len(f["geometry"].exterior.coords) for f in exact)
    n_simple = sum(len(f["geometry"].exterior.coords) for f in simple)
    assert n_simple < n_exact / 2
    assert mask_to_features(np.full((5, 5), 255, np.uint8), transform, "EPSG:32632", NAMES) == []


def test_errors():
    with pytest.raises(MetasegError, match="no georeference"):
        mask_to_features(_mask(), (0, 1, 0, 0, 0, -1), None, NAMES)
    with pytest.raises(MetasegError, match="class index 2 has no name"):
        mask_to_features(_mask(), (0, 1, 0, 0, 0, -1), "EPSG:32632", NAMES[:2])
    with pytest.raises(MetasegError, match="use .gpkg or .geojson"):
        write_features([], "out.shp")


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"])
def test_write_and_read_back(tmp_path, suffix):
    import pyogrio

    transform = (380000.0, 0.5, 0.0, 5200000.0, 0.0, -0.5)
    feats = mask_to_features(_mask(), transform, "EPSG:32632", NAMES, extra={"zone": "Cfb", "tile": "a.tif"})
    path = write_features(feats, tmp_path / f"classes{suffix}")
    more = mask_to_features(_mask(), transform, "EPSG:32632", NAMES, extra={"zone": "Cfa", "tile": "b.tif"})
    write_features(more, path, append=True)
    meta, _, geoms, fields = pyogrio.raw.read(path)
    assert list(meta["fields"]) == ["class", "area_m2", "zone", "tile"]
    assert len(geoms) == 6
    columns = dict(zip(meta["fields"], fields, strict=True))
    assert list(columns["tile"]) == ["a.tif"] * 3 + ["b.tif"] * 3
    assert columns["area_m2"][0] == pytest.approx(50.0, rel=2e-3)
    assert "4326" in meta["crs"]
    assert shapely.from_wkb(geoms[0]).area > 0
    empty = write_features([], tmp_path / f"empty{suffix}")
    assert pyogrio.read_info(empty)["features"] == 0
