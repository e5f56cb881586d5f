"""Issue 24 in headless Chromium: the steps a newcomer tripped over, walked again (items 1–8).

One app server (tests/conftest.py) with the fast fake models of ``tests/studio/test_app_handlers.py``
behind it, one browser, a few pages. Item 4 (``metaseg map`` skipping label files) has no page:
its end-to-end check is the README command in
``tests/test_newcomer.py::test_readme_map_command_skips_the_label_files`` (CLI). The Experiments gallery (item 7)
runs the shipped demo pair, as the app does.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.app_server import app_models
from tests.fixtures.browser import ARTIFACTS, BROWSER_MARKS, choose, click_map_at, open_page
from tests.fixtures.geotiffs import write_geotiff
from tests.studio.test_app_handlers import FakePredictor, fake_factory

ROOT = Path(__file__).resolve().parents[2]
SYNTH = ROOT / "static" / "examples" / "synth"

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def app_url(app_server):
    with app_models(fake_factory):
        yield app_server


def colorado_tile(folder: Path, name: str = "colorado.tif") -> Path:
    """A georeferenced tile near Boulder, Colorado (UTM 13N, 0.5 m pixels, zone BSk/Dfb)."""
    return write_geotiff(folder / name, 40.0, -105.27, crs="EPSG:32613", size=64, pixel_size=0.5)


def upload(page, path: Path, box: str = "tile-file") -> None:
    """Pick a file in a file box like a user: clear the file shown first (× button), if any."""
    clear = page.locator(f"#{box} button[aria-label='Clear']")
    if clear.count() and clear.first.is_visible():
        clear.first.click()
    page.locator(f"#{box} input[type=file]").set_input_files(str(path))


def file_box_names(page) -> list[str]:
    """The file name(s) the tile file box shows."""
    return page.evaluate(
        "() => [...document.querySelectorAll('#tile-file td.filename')].map(td => td.getAttribute('aria-label'))")


def error_badges(page) -> int:
    """Per-output "Error" badges a user can see (Gradio's status trackers in the error state)."""
    return page.evaluate(
        """() => [...document.querySelectorAll('[data-testid="status-tracker"]')]
               .filter(el => el.querySelector(':scope > .error') && el.offsetParent !== null).length"""
    )


def segment(page) -> None:
    page.get_by_role("tab", name="Segment").click()
    page.locator("#segment-btn").click()
    page.wait_for_selector("#seg-status:has-text('Done')")


def zone_of(page) -> str:
    return page.locator("#location .ms-zone").first.get_attribute("data-zone")


# --------------------------------------------------------------------------- items 1, 3, 5
def test_failed_upload_saved_label_and_location_precedence(app_url, browser, tmp_path, monkeypatch):
    monkeypatch.setenv("METASEG_LABEL_DIR", str(tmp_path / "labels"))
    tif = colorado_tile(tmp_path)
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with open_page(browser, app_url) as page:
        # 1. a good tile, segmented; then an empty .tif: refused, the tile in use stays *visibly*
        upload(page, tif)
        page.wait_for_selector("#location .ms-source[data-source='geotiff']")
        zone = zone_of(page)
        segment(page)
        assert page.locator("#slider img").count() == 2
        upload(page, empty)
        page.wait_for_selector("#location:has-text('Could not open empty.tif')")
        assert "Still using colorado.tif" in page.locator("#location").inner_text()
        page.wait_for_selector("#tile-file td.filename[aria-label='colorado.tif']")
        assert file_box_names(page) == ["colorado.tif"]
        assert zone_of(page) == zone and page.locator("#preview img").count() == 1
        assert page.locator("#slider img").count() == 2  # the results of the tile in use are kept
        page.wait_for_timeout(500)
        assert error_badges(page) == 0  # the message box told it; no badge is left over the panels
        segment(page)  # and Segment runs on the tile the file box names
        page.screenshot(path=str(ARTIFACTS / "newcomer_failed_upload.png"), full_page=True)

        # 3. paint/save a label: Locate knows the tile has ground truth, and keeps it on re-upload
        page.get_by_role("tab", name="Label").click()
        page.locator("#label-start-from").get_by_label("MetaSegNet prediction").check()  # a dense correction
        page.locator("#label-start").click()
        page.wait_for_selector("#editor canvas")
        page.locator("#editor button[aria-label='Brush']").click()
        box = page.locator("#editor canvas").first.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx - 30, cy - 20)
        page.mouse.down()
        page.mouse.move(cx + 30, cy + 20, steps=2)
        page.mouse.up()
        page.locator("#label-save").click()
        page.wait_for_selector("text=/Saved label #/")
        page.wait_for_selector("#gt-status:has-text('Ground truth loaded (saved label #')")
        again = tmp_path / "same_tile_other_name.tif"
        shutil.copyfile(tif, again)
        upload(page, again)  # the same tile again in this session: nothing is lost
        page.wait_for_selector("#tile-file td.filename[aria-label='same_tile_other_name.tif']")
        page.wait_for_timeout(1000)
        assert "saved label #" in page.locator("#gt-status").inner_text()

    # another visit finds the label by the tile's hash only where the operator shares labels (issue 21:
    # a session sees its own labels otherwise)
    monkeypatch.setenv("METASEG_SHARE_LABELS", "1")
    with open_page(browser, app_url) as page:
        upload(page, again)
        page.wait_for_selector("#location:has-text('Found the label saved for this tile')")
        assert "saved label #" in page.locator("#gt-status").inner_text()
        page.get_by_role("tab", name="Segment").click()
        page.locator("#segment-btn").click()
        page.get_by_role("tab", name="Review").click()
        page.wait_for_selector("#metrics table")  # scored at once against the saved label

        # 5. a click on the tile keeps its own location; typed Fairbanks starts a new location
        click_map_at(page, 40.0, -105.27, zoom=15)
        page.wait_for_selector("#location:has-text('lies on same_tile_other_name.tif')")
        assert zone_of(page) == zone and "GeoTIFF" in page.locator("#location").inner_text()
        page.locator("#lat-in input").fill("64.84")
        page.locator("#lon-in input").fill("-147.72")
        page.locator("#locate-btn").click()
        page.wait_for_selector("#location .ms-zone[data-zone='Dfc']")
        text = page.locator("#location").inner_text()
        assert "unloaded" in text and "typed" in text
        assert "No tile loaded" in page.locator("#gt-status").inner_text()
        page.wait_for_function("document.querySelectorAll('#tile-file td.filename').length === 0")
        assert page.locator("#preview img").count() == 0
        page.get_by_role("tab", name="Segment").click()
        page.wait_for_function("document.querySelectorAll('#slider img').length === 0")  # old results gone
        page.locator("#segment-btn").click()
        page.wait_for_selector(".toast-body:has-text('Load a tile first')")


# --------------------------------------------------------------------------- item 2
def test_review_recognises_the_studios_own_masks(app_url, browser, tmp_path):
    from PIL import Image

    from metaseg.classes import get_class_set
    from metaseg.export import write_mask
    from metaseg.geo import read_tile

    cs = get_class_set("openearthmap")
    tif = colorado_tile(tmp_path)
    tile = read_tile(tif)
    truth = FakePredictor("baseline").predict(tile.rgb).index
    mask = write_mask(tmp_path / "m.tif", truth, cs, tile.info)  # what `metaseg predict --out m.tif` writes
    raw = tmp_path / "untagged.png"
    pixels = truth.copy()
    pixels[:, :8] = 0
    Image.fromarray(pixels).save(raw)  # class indices without any tag
    with open_page(browser, app_url) as page:
        upload(page, tif)
        page.wait_for_selector("#preview img")
        segment(page)
        page.get_by_role("tab", name="Review").click()
        page.locator("#label-file input[type=file]").set_input_files(str(mask))
        page.wait_for_selector("#gt-status:has-text('class indices')")
        page.locator("#review-btn").click()
        page.wait_for_selector("#metrics table")
        row = page.locator("#metrics tr", has_text="Baseline").inner_text()
        assert re.findall(r"[\d.]+", row) == ["100.0", "100.0", "100.0"]  # not 0.0
        upload(page, raw, box="label-file")
        page.wait_for_selector("#gt-status:has-text('look like class indices')")
        page.wait_for_selector(".toast-body:has-text('look like class indices')")


# --------------------------------------------------------------------------- item 6
def test_imagery_beyond_web_mercator_is_refused_and_gsd_agrees(app_url, browser, monkeypatch):
    from tests.fixtures.xyz_server import FakeXYZServer

    with FakeXYZServer() as xyz:
        monkeypatch.setenv("METASEG_IMAGERY_URL", xyz.template)
        with open_page(browser, app_url) as page:
            assert page.locator("#imagery-hint").inner_text().count("Imagery:") == 1  # item 9: no "Imagery: Imagery:"
            page.locator("#lat-in input").fill("89.5")
            page.locator("#lon-in input").fill("10")
            page.locator("#locate-btn").click()
            page.wait_for_selector("#location .ms-coords:has-text('89.5')")
            page.locator("#fetch-imagery").click()
            page.wait_for_selector(".toast-body:has-text('Web Mercator')")
            page.wait_for_selector("#location:has-text('85.0511')")
            assert xyz.tiles_served() == 0 and page.locator("#preview img").count() == 0
            # near the edge of the map the note's GSD is the tile's GSD
            page.locator("#lat-in input").fill("85.0")
            page.locator("#lon-in input").fill("10")
            page.locator("#locate-btn").click()
            page.wait_for_selector("#location .ms-coords:has-text('85.0')")
            choose(page, "imagery-zoom", "16 (2.4 m/px at the equator)")
            page.locator("#fetch-imagery").click()
            page.wait_for_selector("#location:has-text('Fetched 1024×1024')")
            note = float(re.search(r"≈([\d.]+) m/px", page.locator("#location").inner_text()).group(1))
            tile_gsd = float(page.locator("#location .ms-gsd").get_attribute("data-gsd"))
            assert note == pytest.approx(tile_gsd, rel=0.06)


# --------------------------------------------------------------------------- items 7, 8
def test_experiments_gallery_uncropped_none_variant_and_describe_history(app_url, browser, tmp_path, monkeypatch):
    from metaseg.classes import get_class_set
    from prompts_db import experiments as ex
    from studio import prompt_store

    cs = get_class_set("openearthmap")
    k = cs.num_classes
    store = prompt_store.get_store()
    exp_id = ex.create(store, model_name="metasegnet_demo", dataset="synthearth", split="test",
                       root=str(SYNTH), class_set=cs.name, class_names=cs.names, scored=cs.scored,
                       variants=["climate", "none"], n_tiles=2, baseline_name="baseline_demo")
    records = []
    for i, (name, good) in enumerate((("synth_cfa", 0.9), ("synth_bwh", 0.3))):
        def confusion(p: float) -> list[list[int]]:
            m = np.full((k, k), 2, np.int64)
            np.fill_diagonal(m, int(100 * p))
            return m.tolist()

        records.append(ex.TileRecord(
            position=i, tile=name, image=str(SYNTH / f"{name}.tif"), label=str(SYNTH / f"{name}_label.tif"),
            zone=None, seconds=0.1, baseline=confusion(0.5),
            variants={"climate": {"confusion": confusion(0.5), "prompt_id": None, "prompt_text": "climate text"},
                      "none": {"confusion": confusion(good), "prompt_id": None, "prompt_text": ""}}))
    ex.record_tiles(store, exp_id, records)
    ex.finish(store, exp_id, seconds=1.0)
    # an experiment no session of the app started: listed only where the operator shares experiments (issue 21)
    monkeypatch.setenv("METASEG_SHARE_EXPERIMENTS", "1")

    with open_page(browser, app_url, 1400, 1100) as page:
        # 8. Describe history: two versions that differ only at the end, then pick the older one
        page.get_by_role("tab", name="Describe").click()
        base = "A long temperate prompt that starts the same way in every version of it. " * 3
        old_text, new_text = base + "Old ending: slate roofs.", base + "New ending: red tile roofs."
        for i, text in enumerate((old_text, new_text)):
            page.locator("#prompt textarea").fill(text)
            page.locator("#save-prompt").click()
            page.wait_for_selector(f"#prompt-info [data-version='{i + 2}']")
        # they no longer look identical: each row shows where it differs
        page.wait_for_function("""() => {
            const t = document.querySelector('#history-table').innerText;
            return t.includes('slate roofs') && t.includes('red tile roofs');
        }""")
        pick(page, "history", "v2 ·")
        page.wait_for_function("([sel, want]) => document.querySelector(sel).value === want",
                               arg=["#version-text textarea", old_text])

        # 7. Experiments: A|B pairs whole, captions readable; "open with B's prompt" for B = none
        page.get_by_role("tab", name="Experiments").click()
        page.locator("button:has-text('Refresh list')").click()
        pick(page, "exp-pick", f"#{exp_id}")
        page.wait_for_selector("#exp-info:has-text('metasegnet_demo')")
        page.locator("#exp-rank").click()  # A = climate, B = none (the defaults)
        page.wait_for_selector("#exp-gallery img")
        page.wait_for_function("[...document.querySelectorAll('#exp-gallery img')].every(i => i.complete)")
        for fit, shown, natural in page.evaluate(
            """() => [...document.querySelectorAll('#exp-gallery img')].map(i => {
                const r = i.getBoundingClientRect();
                return [getComputedStyle(i).objectFit, r.width / r.height, i.naturalWidth / i.naturalHeight];
            })"""
        ):
            assert fit == "contain" and natural > 1.9 and shown == pytest.approx(natural, rel=0.05)
        for full, overflow in page.evaluate(
            """() => [...document.querySelectorAll('#exp-gallery .caption-label')].map(c =>
                [c.innerText, c.scrollWidth > c.clientWidth + 1])"""
        ):
            assert "→ none" in full and "(Δ" in full and not overflow  # the whole caption, wrapped
        page.screenshot(path=str(ARTIFACTS / "newcomer_gallery.png"), full_page=True)
        page.locator("#exp-gallery img").first.click()
        page.wait_for_selector("[role=tab][aria-selected=true]:has-text('Segment')")
        page.wait_for_function("document.querySelector('#no-prompt input').checked === true")
        assert page.locator("#prompt textarea").input_value() == ""
        page.locator("#segment-btn").click()
        page.wait_for_selector("#seg-status:has-text('without a prompt')")


def pick(page, elem_id: str, contains: str) -> None:
    """Pick the first option of the gr.Dropdown ``#elem_id`` whose text contains ``contains``."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option").filter(has_text=contains).first.click()
