"""Windows per second of ``metaseg map`` on a folder of 2048² tiles, with 1 and 2 local workers.

    python scripts/map_bench.py [--tiles 4] [--size 2048] [--workers 1 2] [--work /tmp/map_bench]

Writes ``--tiles`` GeoTIFFs of ``--size``² (the committed Landsat crop over Iguaçu, tiled and
shifted per tile, uint16, EPSG:32721, 30 m) into ``WORK/tiles``, then runs, for each worker count,

    python -m metaseg map WORK/tiles --out WORK/out_wN --model metasegnet_demo --workers N \
        --prompt "Aerial image." --json

and prints one line per run: windows, ``windows_per_s`` (windows / ``run_seconds``, the time from
the first tile task to the last result, after every worker has loaded the model), ``load_seconds``,
the whole command's ``seconds`` and the load average before and after. With 512-px windows at
overlap 0.25 a 2048² tile is 5 × 5 = 25 windows. A fixed ``--prompt`` keeps the prompt store out
of the measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_tiles(folder: Path, n: int, size: int) -> None:
    """``n`` GeoTIFFs of ``size``² px: the Iguaçu crop tiled, rolled by 101 px per tile and centred
    0.6° further north per tile (EPSG:32721, 30 m) so that every tile is a different scene."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin
    from rasterio.warp import transform

    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(ROOT / "static" / "examples" / "iguacu_landsat8.tif") as ds:
        px = ds.read()
    reps = -(-size // px.shape[1])
    big = np.tile(px, (1, reps, reps))[:, :size, :size]
    crs, pixel = CRS.from_epsg(32721), 30.0
    for i in range(n):
        path = folder / f"t{i}.tif"
        if path.exists():
            continue
        xs, ys = transform(CRS.from_epsg(4326), crs, [-54.6], [-25.5 + 0.6 * i])
        west, north = xs[0] - size / 2 * pixel, ys[0] + size / 2 * pixel
        with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=big.shape[0],
                           dtype=str(big.dtype), crs=crs, transform=from_origin(west, north, pixel, pixel)) as dst:
            dst.write(np.roll(big, 101 * i, axis=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=4)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--work", type=Path, default=Path("/tmp/map_bench"))
    args = parser.parse_args()
    write_tiles(args.work / "tiles", args.tiles, args.size)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for n in args.workers:
        out = args.work / f"out_w{n}"
        before = os.getloadavg()[0]
        proc = subprocess.run(
            [sys.executable, "-m", "metaseg", "map", str(args.work / "tiles"), "--out", str(out), "--model",
             "metasegnet_demo", "--workers", str(n), "--prompt", "Aerial image.", "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"metaseg map --workers {n} failed ({proc.returncode}): {proc.stderr[-500:]}")
        s = json.loads(proc.stdout)
        print(f"workers {n}: {s['windows']} windows, {s['windows_per_s']:.3f} windows/s over "
              f"{s['run_seconds']:.1f} s (model load {s.get('load_seconds', 0):.1f} s, command {s['seconds']:.1f} s, "
              f"tile seconds {[t['seconds'] for t in s['tiles']]}), loadavg {before:.1f} -> {os.getloadavg()[0]:.1f}",
              flush=True)


if __name__ == "__main__":
    main()
