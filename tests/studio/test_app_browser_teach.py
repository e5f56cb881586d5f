"""Label and "Teach both models" in headless Chromium (Debian ``/usr/bin/chromium`` + Playwright).

Paint strokes of two classes over an uploaded tile, save, teach, and see the new masks and the
session's taught pair; a second browser session still has the shipped pair. The models are the
app tests' fakes (a taught folder loads as :class:`tests.studio.test_app_teach.TaughtFake`, all 'road'),
and fine-tuning is the fast :func:`tests.studio.test_app_teach.fake_finetune`: the UI and the job
plumbing are under test here; tests/studio/test_app_teach.py runs the real fine-tuning (slow).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures.app_server import app_models
from tests.fixtures.browser import ARTIFACTS, BROWSER_MARKS, open_page
from tests.fixtures.geotiffs import write_geotiff
from tests.studio.test_app_teach import calls, factory, fake_finetune

pytestmark = BROWSER_MARKS


@pytest.fixture
def app_url(app_server):
    from studio import teach

    teach.TEACHER.finetune = fake_finetune
    calls.clear()
    with app_models(factory):
        yield app_server
    teach.TEACHER.finetune = None


def _stroke(page, dx0: float, dy0: float, dx1: float, dy1: float) -> None:
    """Drag the mouse across the editor canvas (offsets from its centre, in CSS pixels)."""
    canvas = page.locator("#editor canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx + dx0, cy + dy0)
    page.mouse.down()
    page.mouse.move(cx + dx1, cy + dy1, steps=4)
    page.mouse.up()


def test_paint_two_classes_save_teach_see_the_taught_pair_and_another_session_keeps_the_shipped(
        app_url, browser, tmp_path):
    from metaseg.geo import read_label
    from prompts_db import PromptStore

    ARTIFACTS.mkdir(exist_ok=True)
    tif = write_geotiff(tmp_path / "farm.tif", 52.39, 13.06, crs="EPSG:32633", size=96, bands=3, dtype="uint8",
                        pixel_size=0.5)
    with open_page(browser, app_url, 820, 1000) as page:
        page.locator("#tile-file input[type=file]").set_input_files(str(tif))
        page.wait_for_selector("#location .ms-zone[data-zone='Cfb']")
        page.get_by_role("tab", name="Segment").click()
        page.locator("#segment-btn").click()
        page.wait_for_selector("#seg-status:has-text('Done')")
        before = page.locator("#fractions").inner_text()

        # paint: the tile under a semi-transparent layer, brushes picked by class name
        page.get_by_role("tab", name="Label").click()
        page.locator("#label-start").click()  # default: an empty layer (sparse strokes)
        page.wait_for_selector("#editor canvas")
        page.wait_for_timeout(500)
        page.locator("#brush-class").get_by_label("road").check()
        page.wait_for_timeout(200)
        _stroke(page, -80, -60, 80, -60)
        page.locator("#brush-class").get_by_label("water").check()
        page.wait_for_timeout(200)
        _stroke(page, -80, 60, 80, 60)
        page.locator("#label-save").click()
        page.wait_for_selector("#label-status:has-text('Saved label #')")
        assert "the rest is unlabelled" in page.locator("#label-status").inner_text()
        page.wait_for_selector("#teach-info:has-text('1 labelled tile(s)')")
        (row,) = PromptStore().labels()
        label = read_label(row["mask_path"], "openearthmap")
        values, counts = np.unique(label, return_counts=True)
        assert set(values) == {3, 5, 255}  # road and water strokes; the rest unlabelled
        assert counts[-1] > label.size / 2 and min(counts[:2]) > 200

        # teach both models with a tiny budget → the taught pair segments the tile again
        budget = page.locator("#teach-budget input[type=number]")
        budget.fill("5")
        budget.press("Enter")
        page.locator("#teach-btn").click()
        page.wait_for_selector("#teach-status:has-text('Taught both models')", timeout=60_000)
        page.wait_for_selector("#teach-progress [data-progress='100']")
        assert "segmented again" in page.locator("#teach-status").inner_text()
        assert "taught 1" in page.locator("#teach-pair").inner_text()
        assert [c["base"] for c in calls] == ["metasegnet_demo", "baseline_demo"]
        assert all(c["budget_s"] == 5.0 and len(c["samples"]) == 1 for c in calls)
        page.get_by_role("tab", name="Segment").click()
        after = page.locator("#fractions").inner_text()
        assert after != before and "100" in after  # the taught fakes call every pixel road
        page.screenshot(path=str(ARTIFACTS / "app_teach.png"), full_page=True)

        page.get_by_role("tab", name="Models").click()
        page.wait_for_selector("#models-pair:has-text('taught 1')")
        page.wait_for_function("() => !document.querySelector('#models-table').innerText.includes('demo:')")
        table = page.locator("#models-table").inner_text()
        assert "demo:metasegnet_demo" not in table and "metasegnet" in table

        # a second visitor: the shipped pair, no taught pair
        with open_page(browser, app_url, 820, 900) as other:
            other.get_by_role("tab", name="Models").click()
            other.wait_for_selector("#models-pair:has-text(\"server's models\")")
            assert "demo:metasegnet_demo" in other.locator("#models-table").inner_text()
            assert "taught" not in other.locator("#models-pair").inner_text()
