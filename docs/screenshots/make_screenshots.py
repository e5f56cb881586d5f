"""Re-take the README screenshots of the running app (headless Debian Chromium + Playwright).

    python docs/screenshots/make_screenshots.py            # shipped demo weights
    python docs/screenshots/make_screenshots.py --random   # random weights (before training)

Writes ``locate.png``, ``imagery.png``, ``describe.png``, ``segment.png``, ``review.png`` and ``label.png``
next to this file, each re-encoded to stay under 400 KB. Uses a throw-away database and session folder.

``imagery.png`` shows the "Fetch imagery here" flow against a local XYZ server started by this script
(no network here): its tiles are cut from one procedural SynthEarth scene of the clicked point's zone,
so the picture shows the flow, not real satellite imagery.
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
IMAGERY_POINT = (46.95, 7.45)  # Bern (Cfb)


def start_synth_xyz_server(lat: float, lon: float, zoom: int):
    """A loopback XYZ server whose tiles around (lat, lon) at ``zoom`` form one SynthEarth scene."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import numpy as np
    from PIL import Image

    from metaseg import imagery
    from metaseg.climate import lookup
    from training.synth import generate_tile

    win = imagery.window_around(lat, lon, zoom)
    (t0x, t0y), (t1x, t1y) = win.tiles[0], win.tiles[-1]
    side = max(t1x - t0x + 1, t1y - t0y + 1) * imagery.TILE_SIZE
    scene = generate_tile(lookup(lat, lon).code or "Cfb", size=side, seed=7, index=3).image

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            try:
                z, x, y = (int(v) for v in self.path.strip("/").split(".")[0].split("/")[-3:])
            except ValueError:
                self.send_error(404)
                return
            gx, gy = (x - t0x) * 256, (y - t0y) * 256
            if z == zoom and 0 <= gx < side and 0 <= gy < side:
                px = scene[gy:gy + 256, gx:gx + 256]
            else:
                px = np.full((256, 256, 3), 200, np.uint8)
            buf = io.BytesIO()
            Image.fromarray(px).save(buf, format="PNG")
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(buf.getvalue())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/{{z}}/{{x}}/{{y}}.png"


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
    from metaseg.imagery import default_zoom

    xyz, template = start_synth_xyz_server(*IMAGERY_POINT, default_zoom(IMAGERY_POINT[0]))
    os.environ["METASEG_IMAGERY_URL"] = template
    os.environ["METASEG_IMAGERY_ATTRIBUTION"] = "Procedural SynthEarth tiles from a local XYZ server (screenshot only)"
    import app
    from studio import models

    if args.random:
        models.MODELS.set_factory(models.random_predictor)
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

            # Imagery: type a point (or click the map), fetch the imagery around it, as an upload from there
            page.locator("#lat-in input").fill(str(IMAGERY_POINT[0]))
            page.locator("#lon-in input").fill(str(IMAGERY_POINT[1]))
            page.locator("#locate-btn").click()
            page.wait_for_selector("#location .ms-zone[data-zone='Cfb']")
            page.locator("#fetch-imagery").click()
            page.wait_for_selector("#location:has-text('Fetched')")
            page.wait_for_selector("#preview img")
            page.evaluate("document.querySelectorAll('.toast-wrap, .toast-body').forEach(e => e.remove())")
            page.evaluate("window.scrollTo(0, 0)")
            page.wait_for_timeout(1500)
            save_small(page.screenshot(full_page=False), HERE / "imagery.png")

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
        xyz.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
