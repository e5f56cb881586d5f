"""Concurrent gradio_client clients doing locate + segment (+ save_prompt) against the running app on loopback.

Each client gets its own GeoTIFF (distinct size and location), so every answer can be traced back
to the tile that produced it: ``/locate`` must return the client's own coordinates and size,
``/segment`` overlays of the client's own height × width and class fractions equal to a
reference run of the same tile through the same models. Server memory (this process: the app
runs in it) is read from ``/proc/self/status`` before and after, and after a second round to see
that it does not keep growing.

5 clients run in the default suite; the 20-client version is ``@pytest.mark.slow``.
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.geotiffs import write_geotiff

CLIENT_TIMEOUT_S = 240


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _tile_spec(i: int) -> dict:
    """Client ``i``'s tile: distinct size (64–128 px) and location (all on land, Europe to Asia)."""
    return {"h": 64 + 3 * i, "w": 128 - 2 * i, "lat": 40.0 + 0.5 * i, "lon": 10.0 + 2.0 * i, "seed": 100 + i}


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))
    return values[k]


def _one_client(app, i: int, path: str, spec: dict, start: threading.Barrier) -> dict:
    from gradio_client import handle_file

    client = app.client()
    start.wait(timeout=120)
    t0 = time.perf_counter()
    loc = app.call(client, handle_file(path), None, None, api_name="/locate", timeout=CLIENT_TIMEOUT_S)
    t1 = time.perf_counter()
    a, b, fractions = app.call(client, handle_file(path), f"Client {i}: fields and forests.", api_name="/segment",
                               timeout=CLIENT_TIMEOUT_S)
    t2 = time.perf_counter()
    rec = app.call(client, "Cfb", "openearthmap", f"Client {i}: its own prompt version.", api_name="/save_prompt",
                   timeout=CLIENT_TIMEOUT_S)
    return {
        "i": i, "loc": loc, "fractions": fractions, "saved": rec,
        "shape_a": np.asarray(Image.open(a)).shape[:2], "shape_b": np.asarray(Image.open(b)).shape[:2],
        "locate_s": t1 - t0, "segment_s": t2 - t1, "total_s": t2 - t0,
    }


def _round(app, tiles: list, specs: list) -> tuple[list, list, float]:
    n = len(tiles)
    start = threading.Barrier(n)
    results, errors = [], []
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(_one_client, app, i, str(tiles[i]), specs[i], start) for i in range(n)]
        for f in futures:
            try:
                results.append(f.result(timeout=CLIENT_TIMEOUT_S * 2))
            except Exception as exc:  # noqa: BLE001
                import traceback

                errors.append(f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_tb(exc.__traceback__)[-4:])}")
    return results, errors, time.perf_counter() - t0


def _expected_fractions(tile_path, prompt: str) -> dict:
    from studio import pair, services

    tile = services.read_tile(tile_path)
    return pair.fractions_json(pair.run_pair(tile.rgb, tile.valid, prompt))


def run_load(running_app, report, tmp_path, n_clients: int, rounds: int) -> None:
    specs = [_tile_spec(i) for i in range(n_clients)]
    tiles = [
        write_geotiff(tmp_path / f"client{i:02d}.tif", s["lat"], s["lon"], crs="EPSG:4326", size=(s["h"], s["w"]),
                      seed=s["seed"])
        for i, s in enumerate(specs)
    ]
    client = running_app.client()
    assert running_app.alive(client)  # models loaded, caches warm: measure the steady state
    running_app.call(client, None, 0.0, 0.0, api_name="/locate")
    rss = [_rss_mb()]
    all_results, wall = [], []
    for _ in range(rounds):
        results, errors, seconds = _round(running_app, tiles, specs)
        assert not errors, errors
        rss.append(_rss_mb())
        all_results += results
        wall.append(seconds)

    # Every answer belongs to the client that asked.
    wrong = []
    expected = {}
    for r in all_results:
        i, s = r["i"], specs[r["i"]]
        loc = r["loc"]
        if not (abs(loc["lat"] - s["lat"]) < 1e-3 and abs(loc["lon"] - s["lon"]) < 1e-3
                and (loc["height"], loc["width"]) == (s["h"], s["w"])):
            wrong.append(f"client {i}: /locate answered {loc['lat']}, {loc['lon']} {loc['width']}x{loc['height']}")
        if r["shape_a"] != (s["h"], s["w"]) or r["shape_b"] != (s["h"], s["w"]):
            wrong.append(f"client {i}: overlays {r['shape_a']}/{r['shape_b']} for a {s['h']}x{s['w']} tile")
        if i not in expected:
            expected[i] = _expected_fractions(tiles[i], f"Client {i}: fields and forests.")
        for role in ("metasegnet", "baseline"):
            got, want = r["fractions"][role], expected[i][role]
            if max(abs(got[k] - want[k]) for k in want) > 0.01:
                wrong.append(f"client {i}: {role} fractions differ from a reference run of its own tile")
    # Concurrent /save_prompt: every client got its own, distinct version with its own text.
    saved = [r["saved"] for r in all_results]
    for r in all_results:
        if r["saved"]["text"] != f"Client {r['i']}: its own prompt version.":
            wrong.append(f"client {r['i']}: /save_prompt returned another client's record")
    versions = sorted(rec["id"] for rec in saved)
    if len(set(versions)) != len(saved):
        wrong.append("two clients got the same prompt version")
    assert not wrong, "\n".join(wrong)
    # The fractions of different clients' tiles differ (so the check above can tell them apart).
    distinct = {tuple(round(v, 6) for v in expected[i]["metasegnet"].values()) for i in expected}
    assert len(distinct) >= max(2, n_clients // 2)

    growth = rss[-1] - rss[0]
    assert growth < 1500, f"server RSS grew by {growth:.0f} MB"
    if rounds > 1:
        assert rss[-1] - rss[1] < 300, f"RSS kept growing after the first round: {rss}"
    assert running_app.alive(client)

    seg = [r["segment_s"] for r in all_results]
    loc = [r["locate_s"] for r in all_results]
    tot = [r["total_s"] for r in all_results]
    report.section(f"Load: {n_clients} concurrent clients", [
        f"{n_clients} gradio_client clients on loopback, each with its own GeoTIFF (64–{64 + 3 * (n_clients - 1)} px "
        f"high, distinct locations), {rounds} round(s) of `/locate`, `/segment`, `/save_prompt` started together "
        f"(app queue `default_concurrency_limit=2`, models: {report.app_models}, CPU).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests | {3 * len(all_results)} ({len(all_results)} each of locate, segment, save_prompt) |",
        f"| successes | {3 * len(all_results)} / {3 * n_clients * rounds} |",
        f"| distinct prompt versions saved concurrently | {len(set(versions))} / {len(saved)} |",
        f"| answers traced to the wrong client | {len(wrong)} |",
        f"| /locate latency p50 / p95 | {statistics.median(loc):.2f} s / {_pct(loc, 0.95):.2f} s |",
        f"| /segment latency p50 / p95 | {statistics.median(seg):.2f} s / {_pct(seg, 0.95):.2f} s |",
        f"| client total p50 / p95 | {statistics.median(tot):.2f} s / {_pct(tot, 0.95):.2f} s |",
        f"| wall time per round | {', '.join(f'{w:.1f} s' for w in wall)} |",
        f"| server RSS before → after each round | {' → '.join(f'{m:.0f} MB' for m in rss)} |",
        "",
        "Latencies include queueing behind the other clients (2 jobs run at a time) on a shared, loaded",
        "2-core machine; they vary between runs.",
    ])


def test_load_5_clients(running_app, report, tmp_path):
    run_load(running_app, report, tmp_path, n_clients=5, rounds=1)


@pytest.mark.slow
def test_load_20_clients(running_app, report, tmp_path):
    run_load(running_app, report, tmp_path, n_clients=20, rounds=2)
