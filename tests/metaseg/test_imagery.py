"""Imagery from an XYZ server (metaseg.imagery) against a loopback tile server; GSD of tiles (metaseg.geo)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metaseg import imagery
from metaseg.errors import ImageryError
from tests.fixtures.app_server import free_port
from tests.fixtures.xyz_server import FakeXYZServer, expected_pixel

BERN = (46.95, 7.45)


@pytest.fixture
def xyz(monkeypatch):
    with FakeXYZServer() as srv:
        monkeypatch.setenv("METASEG_IMAGERY_URL", srv.template)
        monkeypatch.setenv("METASEG_IMAGERY_ATTRIBUTION", "Test tiles © nobody")
        yield srv


def test_source_from_env_is_read_at_call_time(monkeypatch):
    monkeypatch.delenv("METASEG_IMAGERY_URL", raising=False)
    monkeypatch.delenv("METASEG_IMAGERY_ATTRIBUTION", raising=False)
    src = imagery.source_from_env()
    assert src.template == imagery.DEFAULT_URL and "Esri" in src.attribution
    assert src.url(16, 1, 2).endswith("/tile/16/2/1")  # Esri: {y} before {x}
    monkeypatch.setenv("METASEG_IMAGERY_URL", "https://{s}.tiles.example.org/{z}/{x}/{y}.jpg")
    src = imagery.source_from_env()
    assert src.url(3, 4, 5) in {f"https://{s}.tiles.example.org/3/4/5.jpg" for s in "abc"}
    assert src.attribution == "Imagery: a.tiles.example.org"
    monkeypatch.setenv("METASEG_IMAGERY_URL", "off")
    assert imagery.source_from_env() is None
    with pytest.raises(ImageryError, match="switched off"):
        imagery.fetch_imagery(*BERN, 16, "unused.tif")
    for bad in ("ftp://x/{z}/{x}/{y}", "https://x.org/{z}/{x}.png", "not a url"):
        monkeypatch.setenv("METASEG_IMAGERY_URL", bad)
        with pytest.raises(ImageryError, match="METASEG_IMAGERY_URL"):
            imagery.source_from_env()


def test_zoom_and_resolution():
    assert imagery.resolution_m(0) == pytest.approx(156543.034, rel=1e-6)
    assert imagery.ground_resolution_m(60.0, 17) == pytest.approx(1.19433 / 2, rel=1e-4)
    assert imagery.default_zoom(0.0) == 18  # 0.60 m/px is nearer 0.5 than 0.30 (log scale)
    assert imagery.default_zoom(70.0) == 17  # 0.41 m/px
    assert imagery.global_pixel(0.0, 0.0, 1) == (256.0, 256.0)
    for bad in (14, 20, "x", 16.5, None):
        with pytest.raises(ImageryError, match="zoom"):
            imagery.check_zoom(bad)


def test_fetch_bern_zoom16_georeferenced_and_exact(xyz, tmp_path):
    """Done-when: a GeoTIFF containing the point, zone Cfb, gsd_m within 20% of Web Mercator's."""
    import rasterio

    from metaseg.cli.locate import locate

    res = imagery.fetch_imagery(*BERN, 16, tmp_path / "bern.tif")
    assert res.zoom == 16 and res.size == 1024 and res.tiles in (16, 20, 25) and res.cached == 0
    assert res.attribution == "Test tiles © nobody"
    loc = locate(str(res.path))
    assert loc["crs"] == "EPSG:3857" and (loc["width"], loc["height"], loc["bands"]) == (1024, 1024, 3)
    assert loc["zone"]["code"] == "Cfb"
    lats = [p[0] for p in loc["footprint"]]
    lons = [p[1] for p in loc["footprint"]]
    assert min(lats) < BERN[0] < max(lats) and min(lons) < BERN[1] < max(lons)
    assert abs(loc["lat"] - BERN[0]) < 1e-3 and abs(loc["lon"] - BERN[1]) < 1e-3  # centred
    expected = 156543.03392804097 * math.cos(math.radians(BERN[0])) / 2**16  # ≈ 1.63 m
    assert loc["gsd_m"] == pytest.approx(expected, rel=0.2)
    assert loc["gsd_m"] == pytest.approx(res.gsd_m, rel=0.01)
    # every pixel comes from the right tile at the right place (the fake tiles encode their position)
    win = imagery.window_around(*BERN, 16)
    with rasterio.open(res.path) as ds:
        px = np.moveaxis(ds.read(), 0, -1)
        assert ds.tags().get("TIFFTAG_COPYRIGHT") == "Test tiles © nobody"
    for r, c in [(0, 0), (511, 700), (1023, 1023), (300, 5)]:
        assert tuple(px[r, c]) == expected_pixel(win.x0 + c, win.y0 + r)
    assert all(ua and ua.startswith("MetaSegNet-Studio/") for ua in xyz.user_agents)
    # a second fetch is served from the tile cache
    n = xyz.tiles_served()
    again = imagery.fetch_imagery(*BERN, 16, tmp_path / "again.tif")
    assert xyz.tiles_served() == n and again.cached == again.tiles


def test_esri_order_template_gives_the_same_mosaic(monkeypatch, tmp_path):
    import rasterio

    with FakeXYZServer() as srv:
        monkeypatch.setenv("METASEG_IMAGERY_URL", srv.template)
        a = imagery.fetch_imagery(-33.92, 18.42, 15, tmp_path / "a.tif", size=512)
        monkeypatch.setenv("METASEG_IMAGERY_URL", srv.esri_template)
        b = imagery.fetch_imagery(-33.92, 18.42, 15, tmp_path / "b.tif", size=512)
        assert any("/esri/tile/15/" in p for p in srv.requests)
    with rasterio.open(a.path) as da, rasterio.open(b.path) as db:
        assert np.array_equal(da.read(), db.read()) and da.transform == db.transform


@pytest.mark.parametrize(("mode", "match"), [("404", "HTTP 404"), ("html", "not an image")])
def test_bad_server_answers_are_one_line_errors(monkeypatch, tmp_path, mode, match):
    with FakeXYZServer(mode=mode) as srv:
        monkeypatch.setenv("METASEG_IMAGERY_URL", srv.template)
        with pytest.raises(ImageryError, match=match) as err:
            imagery.fetch_imagery(*BERN, 17, tmp_path / "x.tif", size=256)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "x.tif").exists()
    assert not list((tmp_path / "cache").rglob("*.img"))  # nothing bad is cached


def test_server_down_and_slow_and_cap(monkeypatch, tmp_path):
    monkeypatch.setenv("METASEG_IMAGERY_URL", f"http://127.0.0.1:{free_port()}/{{z}}/{{x}}/{{y}}.png")
    with pytest.raises(ImageryError, match="unreachable") as err:
        imagery.fetch_imagery(*BERN, 17, tmp_path / "x.tif", size=256)
    assert "\n" not in str(err.value)
    monkeypatch.setenv("METASEG_IMAGERY_MAX_TILES", "4")
    with pytest.raises(ImageryError, match="at most 4"):
        imagery.fetch_imagery(*BERN, 17, tmp_path / "x.tif")
    monkeypatch.delenv("METASEG_IMAGERY_MAX_TILES")
    with FakeXYZServer(mode="slow", delay_s=3.0) as srv:
        monkeypatch.setenv("METASEG_IMAGERY_URL", srv.template)
        monkeypatch.setenv("METASEG_IMAGERY_TIMEOUT", "0.5")
        with pytest.raises(ImageryError, match="unreachable|slow"):
            imagery.fetch_imagery(*BERN, 17, tmp_path / "x.tif", size=256)
    with pytest.raises(Exception, match="(?i)lat"):
        imagery.fetch_imagery(95.0, 0.0, 17, tmp_path / "x.tif")


def test_rate_limiter_per_key():
    rl = imagery.RateLimiter(calls=2, period_s=60)
    rl.check("a")
    rl.check("a")
    rl.check("b")
    with pytest.raises(ImageryError, match="too many"):
        rl.check("a")


# --------------------------------------------------------------------------- GSD of any tile
def test_gsd_of_projected_geographic_and_mercator_tiles(tmp_path):
    from metaseg.geo import inspect_tile
    from tests.fixtures.geotiffs import write_geotiff

    utm = inspect_tile(write_geotiff(tmp_path / "utm.tif", 52.39, 13.06, crs="EPSG:32633", size=64,
                                     pixel_size=0.5))
    assert utm.gsd_m == pytest.approx(0.5, rel=0.01)
    geo = inspect_tile(write_geotiff(tmp_path / "geo.tif", 60.0, 10.0, crs="EPSG:4326", size=64,
                                     pixel_size=1e-4))
    # 1e-4° of latitude ≈ 11.1 m; of longitude at 60° ≈ 5.6 m; the mean of both
    assert geo.gsd_m == pytest.approx((11.12 + 5.56) / 2, rel=0.02)
    merc = inspect_tile(write_geotiff(tmp_path / "merc.tif", 60.0, 10.0, crs="EPSG:3857", size=64,
                                      pixel_size=2.0))
    assert merc.gsd_m == pytest.approx(1.0, rel=0.01)  # nominal 2 m × cos 60°
    png = tmp_path / "p.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    assert inspect_tile(png).gsd_m is None and inspect_tile(png).to_dict()["gsd_m"] is None


def test_checkpoint_gsd_range_recorded_or_defaulted():
    import json

    from metaseg.checkpoints import WEIGHTS_DIR, gsd_range_m

    assert gsd_range_m({"gsd_range_m": [0.5, 0.1]}) == (0.1, 0.5)
    assert gsd_range_m({"dataset": "synthearth", "class_set": "openearthmap"}) == (0.5, 0.5)
    assert gsd_range_m({"class_set": "openearthmap"}) == (0.25, 0.5)
    assert gsd_range_m({"config": {"class_set": "loveda"}}) == (0.3, 0.3)
    assert gsd_range_m({"class_set": "potsdam"}) == (0.05, 0.05)
    assert gsd_range_m({"gsd_range_m": "bad"}) is None and gsd_range_m({}) is None
    demo = json.loads((WEIGHTS_DIR / "metasegnet_demo.json").read_text())
    assert gsd_range_m(demo) == (0.5, 0.5)  # trained on SynthEarth (nominal 0.5 m)


@pytest.mark.slow
def test_saved_checkpoints_record_their_gsd(tmp_path):
    import json

    from metaseg.checkpoints import save_checkpoint
    from metaseg.models.registry import create_model

    model = create_model("baseline_demo", pretrained="none")
    save_checkpoint(model, tmp_path / "c", extra={"dataset": "loveda"})
    assert json.loads((tmp_path / "c.json").read_text())["gsd_range_m"] == [0.3, 0.3]


def test_map_offers_the_imagery_layer_with_its_credit(monkeypatch):

    from studio import mapview

    monkeypatch.setenv("METASEG_IMAGERY_URL", "https://tiles.example.org/{z}/{y}/{x}")
    monkeypatch.setenv("METASEG_IMAGERY_ATTRIBUTION", "Tiles <b>© Example</b>")
    page = mapview.map_page(lat=46.95, lon=7.45)
    assert "https://tiles.example.org/{z}/{y}/{x}" in page and "Satellite imagery" in page
    assert "Example" in page and "<b>" not in page  # the credit is shown, escaped
    monkeypatch.setenv("METASEG_IMAGERY_URL", "off")
    assert "Satellite imagery" not in mapview.map_page(lat=46.95, lon=7.45)
    monkeypatch.setenv("METASEG_IMAGERY_URL", "javascript:alert(1)")  # refused, the map still renders
    assert "alert(1)" not in mapview.map_page(lat=46.95, lon=7.45)
