"""Re-take the README screenshots of the running app (headless Debian Chromium + Playwright).

    python docs/screenshots/make_screenshots.py            # shipped demo weights
    python docs/screenshots/make_screenshots.py --random   # random weights (before training)

Writes ``locate.png``, ``describe.png``, ``segment.png``, ``review.png`` and ``label.png`` next to this file, each
re-encoded to stay under 400 KB. Uses a throw-away database and session folder.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync",
]
MAX_BYTES = 400_000


def save_small(png: bytes, path: Path) -> None:
    """Save a screenshot, quantising to a palette if the plain PNG is over the size limit."""
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    for colors in (None, 256, 128, 64):
        buf = io.BytesIO()
        (im if colors is None else im.quantize(colors=colors, dither=Image.Dither.NONE)).save(
            buf, format="PNG", optimize=True)
        if buf.tell() <= MAX_BYTES:
            break
    path.write_bytes(buf.getvalue())
    print(f"{path.name}: {im.size[0]}x{im.size[1]}, {buf.tell() / 1000:.0f} kB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", action="store_true", help="random weights instead of the demo weights")
    parser.add_argument("--port", type=int, default=7877)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="metaseg_shots_"))
    os.environ["METASEG_DB"] = str(tmp / "metaseg.sqlite")
    os.environ["METASEG_SESSION_DIR"] = str(tmp / "sessions")
    sys.path.insert(0, str(ROOT))
    import app
    from studio import services

    if args.random:
        services.MODELS.set_factory(services.random_predictor)
    kwargs = app.launch_kwargs()
    kwargs.update(server_port=args.port, prevent_thread_lock=True, quiet=True)
    app.demo.queue().launch(**kwargs)

    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
            page.set_default_timeout(180_000)
            page.goto(f"http://127.0.0.1:{args.port}/")
            page.wait_for_selector("#map iframe")

            # Locate: the real Landsat tile, footprint on the map, zone and prompt
            page.get_by_role("button", name="iguacu_landsat8.tif").click()
            page.wait_for_selector("#location .ms-zone[data-zone='Cfa']")
            page.wait_for_selector("#preview img")
            page.evaluate("window.scrollTo(0, 0)")
            page.wait_for_timeout(1500)
            save_small(page.screenshot(full_page=False), HERE / "locate.png")

            # Describe: edit the zone's prompt and save it as version 2 (history below)
            box = page.locator("#prompt textarea")
            box.fill(box.input_value() + " Red tile roofs and the wide brown Paraná river.")
            page.locator("#save-prompt").click()
            page.wait_for_selector("#prompt-info [data-version='2']")
            page.wait_for_timeout(800)
            save_small(page.locator("#main-tabs").screenshot(), HERE / "describe.png")

            # Segment + Review: a SynthEarth example with ground truth
            page.get_by_role("button", name="synth_cfa.tif").click()
            page.wait_for_selector("#gt-status:has-text('SynthEarth ground truth')")
            page.get_by_role("tab", name="Segment").click()
            page.locator("#segment-btn").click()
            page.wait_for_selector("#seg-status:has-text('Done')")
            tabs = page.locator("#main-tabs")
            page.wait_for_timeout(800)
            save_small(tabs.screenshot(), HERE / "segment.png")

            page.get_by_role("tab", name="Review").click()
            page.wait_for_selector("#metrics table")
            page.wait_for_selector("#iou-bars img")
            page.wait_for_timeout(800)
            save_small(tabs.screenshot(), HERE / "review.png")

            # Label: start from the MetaSegNet mask and paint a stroke
            page.get_by_role("tab", name="Label").click()
            page.locator("#label-start").click()
            page.wait_for_selector("#editor canvas")
            page.locator("#editor button[aria-label='Brush']").click()
            page.wait_for_timeout(800)
            box = page.locator("#editor canvas").first.bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx - 90, cy - 40)
            page.mouse.down()
            page.mouse.move(cx + 90, cy + 60, steps=12)
            page.mouse.up()
            page.locator("#label-save").click()
            page.wait_for_selector("text=/Saved label #/")
            page.wait_for_timeout(800)
            save_small(tabs.screenshot(), HERE / "label.png")
            browser.close()
    finally:
        app.demo.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
