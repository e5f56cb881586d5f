"""End-to-end in headless Chromium (Debian ``/usr/bin/chromium`` driven by Playwright).

One app per test session (tests/conftest.py); the models behind it are swapped per test:
fast fakes (``test_app_handlers.FakePredictor``) where the UI is under test, the real shipped
demo pair in :func:`test_shipped_demo_pair_segments_and_reviews`. Every page fails its test on
any JavaScript error (``pageerror``). Under ``CI=true`` a skipped browser test is a failure
(tests/conftest.py). Screenshots are kept in ``tests/artifacts/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.app_server import app_models
from tests.fixtures.browser import ARTIFACTS, BROWSER_MARKS, choose, click_map_at, map_frame, open_page
from tests.fixtures.geotiffs import write_geotiff
from tests.studio.test_app_handlers import FakePredictor, fake_factory

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "static" / "examples" / "synth"

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def app_url(app_server):
    with app_models(fake_factory):
        yield app_server


def test_upload_click_edit_segment_then_fetch_imagery(app_url, browser, tmp_path, monkeypatch):
    """Upload → zone; map click → zone; save a prompt; segment (slider); then a map click at Bern →
    Fetch imagery here (loopback XYZ server) → a located 1024² tile with its GSD → segment it."""
    from prompts_db import PromptStore
    from tests.fixtures.xyz_server import FakeXYZServer

    ARTIFACTS.mkdir(exist_ok=True)
    tif = write_geotiff(tmp_path / "potsdam.tif", 52.39, 13.06, crs="EPSG:32633", size=96,
                        bands=4, dtype="uint16")
    with FakeXYZServer() as xyz:
        monkeypatch.setenv("METASEG_IMAGERY_URL", xyz.template)  # read when the page loads
        monkeypatch.setenv("METASEG_IMAGERY_ATTRIBUTION", "Loopback test tiles")
        with open_page(browser, app_url) as page:
            # 1. upload a GeoTIFF → its zone (Cfb), source and GSD appear
            page.locator("#tile-file input[type=file]").set_input_files(str(tif))
            page.wait_for_selector("#location .ms-zone[data-zone='Cfb']")
            assert "GeoTIFF" in page.locator("#location").inner_text()
            gsd = float(page.locator("#location .ms-gsd").get_attribute("data-gsd"))
            assert gsd == pytest.approx(10.0, rel=0.01)  # the fixture's 10 m UTM pixels
            page.wait_for_selector("#preview img")

            # 2. click the map on Cairo → the zone changes to BWh, source "map click"
            click_map_at(page, 30.04, 31.24)
            page.wait_for_selector("#location .ms-zone[data-zone='BWh']")
            assert "map click" in page.locator("#location").inner_text()
            page.wait_for_selector("#prompt-info:has-text('BWh')")

            # 3. edit the prompt and save it → version 2 in the database
            text = "Hot desert test prompt: pale sand, flat roofs, green irrigated circles."
            page.locator("#prompt textarea").fill(text)
            page.locator("#save-prompt").click()
            page.wait_for_selector("#prompt-info [data-version='2']")
            rec = PromptStore().current("BWh", "openearthmap")
            assert rec.version == 2 and rec.text == text and rec.source == "user"

            # 4. the click lay off the tile, so it started a new location and unloaded the tile
            # (issue 24): load the tile again, then segment → the MetaSegNet | baseline slider, the
            # backend, a plain GSD warning (10 m tile)
            page.wait_for_function("document.querySelectorAll('#tile-file td.filename').length === 0")
            assert page.locator("#preview img").count() == 0
            page.locator("#tile-file input[type=file]").set_input_files(str(tif))
            page.wait_for_selector("#location .ms-zone[data-zone='Cfb']")
            page.get_by_role("tab", name="Segment").click()
            page.locator("#segment-btn").click()
            page.wait_for_selector("#seg-status:has-text('Done')")
            assert page.locator("#slider img").count() == 2
            assert "backend torch" in page.locator("#seg-status").inner_text()
            assert "coarser" in page.locator("#gsd-note").inner_text()
            page.screenshot(path=str(ARTIFACTS / "app_e2e.png"), full_page=True)

            # 5. the satellite layer is on the map with its credit; click Bern, fetch imagery at zoom 16
            assert "Loopback test tiles" in page.locator("#imagery-hint").inner_text()
            assert page.locator("#fetch-imagery").is_enabled()
            page_html = map_frame(page).content()
            assert "Satellite imagery" in page_html and "127.0.0.1" in page_html
            click_map_at(page, 46.95, 7.45, zoom=12)
            page.wait_for_selector("#location .ms-zone[data-zone='Cfb']")
            choose(page, "imagery-zoom", "16 (2.4 m/px at the equator)")
            page.locator("#fetch-imagery").click()
            page.wait_for_selector("#location:has-text('Fetched 1024×1024')")
            assert "1.63 m/px" in page.locator("#location .ms-gsd").inner_text()
            assert "EPSG:3857" in page.locator("#location").inner_text()
            assert xyz.tiles_served() >= 16
            page.wait_for_function("document.querySelectorAll('#slider img').length === 0")  # old results cleared
            page.locator("#segment-btn").click()
            page.wait_for_selector("#seg-status:has-text('Done')")
            assert "1.63 m/px" in page.locator("#gsd-note").inner_text()


def test_typed_coordinates_ocean_and_llm_button(app_url, browser, monkeypatch):
    """Typed point → Af; ocean → generic prompt; Regenerate is off without an LLM and, with an
    endpoint configured at launch (page load), on: it saves an LLM version."""
    from tests.fixtures.openai_server import FakeOpenAIServer

    with open_page(browser, app_url, 1300, 900) as page:
        page.locator("#lat-in input").fill("1.35")
        page.locator("#lon-in input").fill("103.82")
        page.locator("#locate-btn").click()
        page.wait_for_selector("#location .ms-zone[data-zone='Af']")
        assert "typed" in page.locator("#location").inner_text()
        click_map_at(page, 0.0, -30.0, zoom=3)
        page.wait_for_selector("#location .ms-zone[data-zone='ocean']")
        page.wait_for_selector("#prompt-info:has-text('generic')")
        page.wait_for_selector("#regen-hint:has-text('OPENAI_API_KEY')")
        assert page.locator("#regen").is_disabled()
        assert page.locator("#fetch-imagery").is_disabled()  # METASEG_IMAGERY_URL=off in tests
    with FakeOpenAIServer() as llm:
        monkeypatch.setenv("OPENAI_BASE_URL", llm.base_url)
        monkeypatch.setenv("METASEG_LLM_MODEL", "tiny-model")
        with open_page(browser, app_url, 1300, 900) as page:
            page.wait_for_selector("#regen-hint:has-text('tiny-model')")
            assert page.locator("#regen").is_enabled()
            page.locator("#lat-in input").fill("30.04")
            page.locator("#lon-in input").fill("31.24")
            page.locator("#locate-btn").click()
            page.wait_for_selector("#prompt-info:has-text('BWh')")
            page.locator("#regen").click()
            page.wait_for_selector("#prompt-info [data-version='2']")
        assert llm.requests


def test_loveda_and_potsdam_legend_label_encoding_and_review(app_server, browser, tmp_path):
    """Models of another class set: the legend follows it; a label uploaded in its official
    encoding (LoveDA: 1..7 with 0 no-data; Potsdam: RGB colours) is decoded right — the baseline's
    own mask, encoded, scores 100 % in Review."""
    from PIL import Image

    from metaseg.classes import get_class_set
    from metaseg.geo import read_tile

    for class_set in ("loveda", "potsdam"):
        cs = get_class_set(class_set)
        tif = write_geotiff(tmp_path / f"{class_set}.tif", 52.39, 13.06, crs="EPSG:32633", size=64, bands=3,
                            dtype="uint8", pixel_size=0.3)
        truth = FakePredictor("baseline", class_set).predict(read_tile(tif).rgb).index
        raw = np.asarray(cs.encode(truth))
        label = tmp_path / f"label_{class_set}.png"
        Image.fromarray(raw.astype(np.uint8)).save(label)
        with app_models(lambda role, source=None, c=class_set: FakePredictor(role, c)), \
                open_page(browser, app_server) as page:
            page.get_by_role("tab", name="Describe").click()
            choose(page, "class-set", class_set)
            page.wait_for_selector(f"#prompt-info:has-text('{class_set}')")
            page.locator("#tile-file input[type=file]").set_input_files(str(tif))
            page.wait_for_selector("#location .ms-zone[data-zone='Cfb']")
            page.get_by_role("tab", name="Segment").click()
            page.locator("#segment-btn").click()
            page.wait_for_selector(f"#seg-status:has-text('class set {class_set}')")
            legend = page.locator("#legend").inner_text()
            assert all(name in legend for name in cs.names)
            page.get_by_role("tab", name="Review").click()
            page.locator("#label-file input[type=file]").set_input_files(str(label))
            page.wait_for_selector(f"#gt-status:has-text('{class_set} encoding')")
            page.locator("#review-btn").click()
            page.wait_for_selector("#metrics table")
            row = page.locator("#metrics tr", has_text="Baseline").inner_text()
            assert re.findall(r"[\d.]+", row) == ["100.0", "100.0", "100.0"]
            table = page.locator("#iou-table").inner_text()
            present = [cs.names[k] for k in np.unique(truth) if k < len(cs.names)]
            assert len(present) >= 3 and all(name in table for name in present)


def test_shipped_demo_pair_review_then_paint_a_label(app_server, browser, tmp_path, monkeypatch):
    """The real shipped demo weights (no fakes): an example with ground truth → segment → Review
    shows the scores the app logged; then the Label tab: start from the MetaSegNet mask, paint a
    bareland stroke, save → a label whose pixels are that mask plus the stroke. (A narrow page:
    the editor canvas is software-rendered, its cost grows with its width.)"""
    import rasterio

    from metaseg.geo import read_label
    from prompts_db import PromptStore
    from studio import models
    from studio.session import session_root

    # this test's own session root: the default one under /tmp is shared with other processes,
    # whose masks the glob below would otherwise pick up
    monkeypatch.setenv("METASEG_SESSION_DIR", str(tmp_path / "sessions"))

    ARTIFACTS.mkdir(exist_ok=True)
    weights = ROOT / "metaseg" / "weights" / "metasegnet_demo.safetensors"
    assert weights.exists(), "the shipped demo weights are part of the repository"
    with app_models(None), open_page(browser, app_server, 820, 1000) as page:
        page.get_by_role("button", name="synth_cfa.tif").click()  # an example: one click
        page.wait_for_selector("#gt-status:has-text('Ground truth loaded')")
        page.get_by_role("tab", name="Segment").click()
        page.locator("#segment-btn").click()
        page.wait_for_selector("#seg-status:has-text('Done')", timeout=240_000)
        assert models.MODELS.loaded("metasegnet").source == "demo:metasegnet_demo"
        assert "0.5 m/px" in page.locator("#gsd-note").inner_text()  # SynthEarth's GSD = the model's
        page.get_by_role("tab", name="Review").click()
        page.wait_for_selector("#metrics table")
        mseg = next(r for r in PromptStore().runs() if r["model_role"] == "metasegnet")
        shown = re.findall(r"[\d.]+", page.locator("#metrics tr", has_text="MetaSegNet").inner_text())
        assert float(shown[0]) == pytest.approx(100 * mseg["miou"], abs=0.051)
        assert mseg["miou"] > 0.3  # trained weights, not random ones

        page.get_by_role("tab", name="Label").click()
        page.locator("#label-start-from").get_by_label("MetaSegNet prediction").check()  # a dense correction
        page.locator("#label-start").click()
        page.wait_for_selector("#editor canvas")
        page.locator("#editor button[aria-label='Brush']").click()
        box = page.locator("#editor canvas").first.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx - 60, cy - 40)
        page.mouse.down()
        page.mouse.move(cx + 60, cy + 40, steps=2)
        page.mouse.up()
        page.locator("#label-save").click()
        page.wait_for_selector("text=/Saved label #/")
        page.screenshot(path=str(ARTIFACTS / "app_label.png"))
    rows = PromptStore().labels()
    assert len(rows) == 1
    label = read_label(rows[0]["mask_path"], "openearthmap")
    masks = sorted(session_root().glob("*/masks/metasegnet_mask.tif"), key=lambda p: p.stat().st_mtime)
    with rasterio.open(masks[-1]) as ds:
        start = ds.read(1)
    assert label.shape == start.shape == (256, 256)
    changed = label != start
    assert changed.sum() > 300  # a stroke of the first brush colour (bareland = 0) ...
    assert set(np.unique(label[changed])) == {0}
    ys, xs = np.nonzero(changed)  # ... running diagonally across the middle of the tile
    assert 60 < xs.mean() < 196 and 60 < ys.mean() < 196 and np.corrcoef(xs, ys)[0, 1] > 0.5
