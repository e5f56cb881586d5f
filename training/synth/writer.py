"""Writing a SynthEarth set to disk in the OpenEarthMap layout (GeoTIFFs, split lists,
``synthearth.json``), serially or through the project's Dask runner (identical output)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from metaseg.errors import ConfigError
from training.synth.generator import generate_tile, tile_rng
from training.synth.placement import place
from training.synth.splits import assign_splits, parse_split_fractions
from training.synth.zones import PIXEL_SIZE_M, SYNTH_VERSION, parse_zones, region_name, zone_rule

log = logging.getLogger(__name__)


def _write_geotiff(path: Path, array: np.ndarray, crs: str, transform: tuple) -> None:
    import rasterio
    from rasterio.transform import Affine

    data = array.transpose(2, 0, 1) if array.ndim == 3 else array[None]
    profile = {
        "driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
        "dtype": "uint8", "crs": crs, "transform": Affine(*transform), "compress": "deflate",
        "tiled": False,
    }  # fmt: skip
    if data.shape[0] == 3:
        profile["photometric"] = "RGB"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _write_one(job: tuple[str, str, int, int, int, int]) -> dict:
    """Generate, place and write tile ``index`` (runs in a worker process when ``workers > 1``)."""
    out, code, number, size, seed, index = job
    region = region_name(code)
    name = f"{region}_{number}.tif"
    tile = generate_tile(code, size=size, seed=seed, index=index)
    lat, lon, crs, transform = place(code, size, tile_rng(seed, index, stream=1))
    for sub, arr in (("images", tile.image), ("labels", tile.label)):
        _write_geotiff(Path(out) / region / sub / name, arr, crs, transform)
    return {
        "file": name, "region": region, "zone": code, "split": None, "index": index,
        "scene": tile.scene, "lat": round(lat, 6), "lon": round(lon, 6), "crs": crs,
    }  # fmt: skip


def _report(record: dict, progress: Callable[[int], None] | None) -> dict:
    if progress is not None:
        progress(1)
    return record


def _dask_available() -> bool:
    """True when Dask ``distributed`` (what :class:`metaseg.runner.Runner` needs) can be imported."""
    import importlib.util

    try:
        return importlib.util.find_spec("distributed") is not None
    except (ImportError, ValueError):
        return False


def _generate(jobs: list[tuple[str, str, int, int, int, int]], workers: int,
              progress: Callable[[int], None] | None) -> list[dict]:
    """Write every job's tile: through the Dask runner when ``workers > 1`` (and Dask is
    installed; else serially, with a warning), otherwise in this process. Records in job order."""
    if int(workers) > 1 and len(jobs) > 1 and not _dask_available():
        log.warning("workers=%d but Dask 'distributed' is not installed: generating the tiles serially "
                    "(same output)", int(workers))
        workers = 1
    if int(workers) > 1 and len(jobs) > 1:  # the project's Dask runner (metaseg.runner), local processes
        from metaseg.runner import Runner

        records: list[dict | None] = [None] * len(jobs)
        with Runner(workers=int(workers), progress=False) as runner:
            for outcome in runner.run(_write_one, jobs):
                if not outcome.ok:
                    raise ConfigError(f"SynthEarth tile {outcome.index} failed: {outcome.error}")
                records[outcome.index] = _report(outcome.value, progress)
        tiles = [r for r in records if r is not None]
    else:
        tiles = [_report(_write_one(job), progress) for job in jobs]
    return tiles


def write_synthearth(
    out: str | Path,
    n: int,
    size: int = 256,
    seed: int = 0,
    zones: Sequence[str] | str | None = None,
    split_fractions: Sequence[float] | str | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> dict:
    """Generate ``n`` tiles into ``out`` in the OpenEarthMap layout and return the manifest.

    Zones are assigned round-robin (tile ``i`` gets ``zones[i % len(zones)]``), so every zone
    gets ``n / len(zones)`` tiles; the set is split into train/val/test by ``split_fractions``
    rounded over the whole set (:func:`assign_splits`: every split with a non-zero fraction gets
    tiles whenever ``n`` allows, val/test spread over the zones).

    Args:
        out: Output folder (created; existing files with the same names are overwritten).
        n: Number of tiles (≥ 1).
        size: Tile side in pixels.
        seed: Run seed (different seeds give disjoint content).
        zones: Köppen codes (default :data:`DEFAULT_ZONES`).
        split_fractions: (train, val, test) fractions, default 0.7/0.15/0.15.
        progress: Called with 1 after each tile (e.g. ``tqdm.update``).
        workers: Processes generating tiles in parallel through the Dask runner (output identical
            for any value); ``≤ 1``, or Dask ``distributed`` not installed (a warning says so),
            generates them serially in this process.

    Returns:
        The manifest dict also written to ``out/synthearth.json``.
    """
    if int(n) < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    codes = parse_zones(zones)
    fractions = parse_split_fractions(split_fractions)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split_of = assign_splits(int(n), codes, fractions, int(seed))

    for c in codes:
        for sub in ("images", "labels"):
            (out / region_name(c) / sub).mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(out), codes[i % len(codes)], i // len(codes) + 1, int(size), int(seed), i) for i in range(int(n))
    ]
    tiles = _generate(jobs, int(workers), progress)
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for t in tiles:
        t["split"] = split_of[t["index"]]
        lists[t["split"]].append(t["file"])
    for split, names in lists.items():
        (out / f"{split}.txt").write_text("".join(f"{nm}\n" for nm in names), encoding="utf-8")
    manifest = {
        "name": "SynthEarth",
        "version": SYNTH_VERSION,
        "seed": int(seed),
        "size": int(size),
        "pixel_size_m": PIXEL_SIZE_M,
        "class_set": "openearthmap",
        "label_encoding": "OpenEarthMap raw: 1 bareland .. 8 building (0 unused)",
        "zones": list(codes),
        "rules": {c: asdict(zone_rule(c)) for c in codes},
        "split_fractions": list(fractions),
        "n": int(n),
        "tiles": tiles,
    }
    (out / "synthearth.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    log.info("wrote %d SynthEarth tiles to %s", n, out)
    return manifest


def read_manifest(root: str | Path) -> dict:
    """Load ``synthearth.json`` of a generated set (``{}`` when absent)."""
    path = Path(root) / "synthearth.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))
