"""The app's public API through gradio_client against the launched app on loopback.

Endpoints (api_name exactly): ``/locate`` (file, lat, lon) → the ``locate --json`` object;
``/segment`` (file, prompt) → MetaSegNet overlay, baseline overlay, class fractions;
``/save_prompt`` (zone, class_set, text) → the saved prompt version; ``/imagery`` (lat, lon, zoom) →
the GeoTIFF around the point from ``METASEG_IMAGERY_URL`` (a loopback XYZ server here) + its locate object.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.app_server import app_models
from tests.fixtures.geotiffs import write_geotiff
from tests.studio.test_app_handlers import fake_factory

ROOT = Path(__file__).resolve().parents[2]
SYNTH = ROOT / "static" / "examples" / "synth" / "synth_dfb.tif"
LOCATE_KEYS = {"lat", "lon", "source", "crs", "width", "height", "bands", "dtype", "zone"}


@pytest.fixture(scope="module")
def client(app_server):
    from gradio_client import Client

    with app_models(fake_factory):
        yield Client(app_server, verbose=False)


def test_api_lists_exactly_named_endpoints(client):
    info = client.view_api(print_info=False, return_format="dict")
    endpoints = info["named_endpoints"]
    assert set(endpoints) == {"/locate", "/segment", "/save_prompt", "/imagery"}  # UI events stay undocumented

    def params(name):
        return [p["parameter_name"] for p in endpoints[name]["parameters"]]

    assert params("/locate") == ["file", "lat", "lon"]
    assert params("/segment") == ["file", "prompt"]
    assert params("/save_prompt") == ["zone", "class_set", "text"]
    assert len(endpoints["/segment"]["returns"]) == 3
    assert params("/imagery") == ["lat", "lon", "zoom"] and len(endpoints["/imagery"]["returns"]) == 2


def test_locate_file_and_coordinates(client, tmp_path):
    from gradio_client import handle_file

    tif = write_geotiff(tmp_path / "t.tif", 30.04, 31.24, crs="EPSG:32636", size=48, dtype="uint16")
    obj = client.predict(handle_file(str(tif)), None, None, api_name="/locate")
    assert LOCATE_KEYS <= set(obj)
    assert obj["source"] == "geotiff" and obj["zone"]["code"] == "BWh"
    assert obj["crs"] == "EPSG:32636" and obj["width"] == 48 and obj["dtype"] == "uint16"
    typed = client.predict(None, 52.39, 13.06, api_name="/locate")
    assert LOCATE_KEYS <= set(typed)
    assert typed["source"] == "typed" and typed["zone"]["code"] == "Cfb"
    assert all(typed[k] is None for k in ("crs", "width", "height", "bands", "dtype"))
    ocean = client.predict(None, 0.0, -30.0, api_name="/locate")
    assert ocean["zone"]["code"] is None and ocean["zone"]["reason"] == "ocean"


def test_locate_errors_are_reported(client, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage" * 20)
    with pytest.raises(Exception, match="(?i)cannot read|unsupported|not a"):
        client.predict(handle_file(str(bad)), None, None, api_name="/locate")
    with pytest.raises(Exception, match="(?i)lat"):
        client.predict(None, 123.0, 0.0, api_name="/locate")


def test_segment_returns_two_overlays_and_fractions(client):
    from gradio_client import handle_file

    a, b, fractions = client.predict(handle_file(str(SYNTH)), "A cold continental prompt.", api_name="/segment")
    img_a, img_b = np.asarray(Image.open(a)), np.asarray(Image.open(b))
    assert img_a.shape[:2] == img_b.shape[:2] == (256, 256)
    assert not np.array_equal(img_a, img_b)
    assert set(fractions) == {"metasegnet", "baseline"}
    assert abs(sum(fractions["metasegnet"].values()) - 1.0) < 1e-6
    assert "bareland" in fractions["baseline"]
    # an empty prompt uses the stored prompt of the tile's zone
    a2, _, _ = client.predict(handle_file(str(SYNTH)), "", api_name="/segment")
    assert np.asarray(Image.open(a2)).shape[:2] == (256, 256)


def test_save_prompt_returns_the_version(client):
    from prompts_db import PromptStore

    rec = client.predict("Dfb", "openearthmap", "Warm-summer continental test prompt.", api_name="/save_prompt")
    assert set(rec) == {"id", "zone", "class_set", "text", "source", "parent_id", "token_count", "created_at"}
    assert rec["zone"] == "Dfb" and rec["source"] == "user" and rec["token_count"] > 0
    assert PromptStore().current("Dfb", "openearthmap").id == rec["id"]
    with pytest.raises(Exception, match="(?i)empty|text"):
        client.predict("Dfb", "openearthmap", "   ", api_name="/save_prompt")


def test_imagery_from_a_loopback_xyz_server_then_segment(client, monkeypatch):
    """Done-when: /imagery (46.95, 7.45, zoom 16) → a GeoTIFF containing the point, zone Cfb, gsd_m
    within 20 % of Web Mercator's resolution there; /segment works on it; server down → clean error."""
    import math

    from gradio_client import handle_file

    from metaseg.geo import inspect_tile
    from tests.fixtures.app_server import free_port
    from tests.fixtures.xyz_server import FakeXYZServer

    with FakeXYZServer() as srv:
        monkeypatch.setenv("METASEG_IMAGERY_URL", srv.template)
        tif, loc = client.predict(46.95, 7.45, 16, api_name="/imagery")
        assert srv.tiles_served() > 0
    assert LOCATE_KEYS | {"gsd_m"} <= set(loc)
    assert loc["source"] == "geotiff" and loc["crs"] == "EPSG:3857" and loc["zone"]["code"] == "Cfb"
    wm = 156543.03392804097 * math.cos(math.radians(46.95)) / 2**16
    assert abs(loc["gsd_m"] - wm) / wm < 0.2
    info = inspect_tile(tif)
    lats, lons = [p[0] for p in info.footprint], [p[1] for p in info.footprint]
    assert min(lats) < 46.95 < max(lats) and min(lons) < 7.45 < max(lons)
    a, b, fractions = client.predict(handle_file(tif), "", api_name="/segment")
    assert np.asarray(Image.open(a)).shape[:2] == (1024, 1024) and set(fractions) == {"metasegnet", "baseline"}
    # the imagery server goes away: a one-line error, and the app keeps answering
    monkeypatch.setenv("METASEG_IMAGERY_URL", f"http://127.0.0.1:{free_port()}/{{z}}/{{x}}/{{y}}.png")
    with pytest.raises(Exception, match="unreachable") as err:
        client.predict(46.95, 7.45, 16, api_name="/imagery")
    assert "Traceback" not in str(err.value)
    assert client.predict(None, 46.95, 7.45, api_name="/locate")["zone"]["code"] == "Cfb"
    monkeypatch.setenv("METASEG_IMAGERY_URL", "off")
    with pytest.raises(Exception, match="switched off"):
        client.predict(46.95, 7.45, None, api_name="/imagery")
