"""Experiments tab in headless Chromium: start a small experiment from the UI, see the leaderboard,
rank the tiles, click one and land in Segment with that variant's prompt.

Slow: the sweep runs the shipped demo weights (in-process Dask worker) on 2 SynthEarth tiles.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.browser import ARTIFACTS, BROWSER_MARKS

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]


def test_start_experiment_leaderboard_gallery_to_segment(app_server, browser, tmp_path, monkeypatch):
    from training import synth

    monkeypatch.setenv("METASEG_DATA_ROOTS", str(tmp_path))  # the operator offers the folder (read per call)
    root = tmp_path / "synth"
    synth.write_synthearth(root, n=2, size=64, seed=5, zones="Cfa,BWh", split_fractions="0,0,1")
    from training.datasets.prompts import PAPER_GENERIC_PROMPT

    generic = PAPER_GENERIC_PROMPT  # variant `generic` = the paper's sentence (training.evaluate's mode)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(300_000)
    try:
        page.goto(app_server)
        page.wait_for_selector("#map iframe")
        page.get_by_role("tab", name="Experiments").click()
        page.locator("#exp-source").get_by_label("dataset folder on the server").check()
        page.locator("#exp-root textarea, #exp-root input").first.fill(str(root))
        page.locator("#exp-variants").get_by_label("none").uncheck()
        page.locator("#exp-variants").get_by_label("generic").check()
        page.locator("#exp-start").click()
        page.wait_for_selector("#exp-status:has-text('complete')")
        board = page.locator("#exp-leaderboard")
        board.locator("text=generic").first.wait_for()
        text = board.inner_text()
        assert "baseline" in text and "climate" in text and "generic" in text
        page.wait_for_selector("#exp-chart img")
        page.locator("#exp-rank").click()  # A = climate, B = generic (the defaults)
        page.wait_for_selector("#exp-gallery img")
        page.screenshot(path=str(ARTIFACTS / "app_experiments.png"), full_page=True)
        page.locator("#exp-gallery img").first.click()
        page.wait_for_selector("[role=tab][aria-selected=true]:has-text('Segment')")
        page.wait_for_function(
            "([sel, want]) => document.querySelector(sel) && document.querySelector(sel).value === want",
            arg=["#prompt textarea", generic],
        )
        assert Path(root).exists()
    finally:
        page.close()
