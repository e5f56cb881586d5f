"""``python -m training.synth``: write a SynthEarth set in the OpenEarthMap layout.

Examples::

    python -m training.synth --out data/synthearth --n 800 --size 256 --seed 0
    python -m training.synth --out data/synthearth_test --n 200 --size 256 --seed 1 \\
        --split-fractions 0,0,1          # held-out tiles: a different seed, all in test.txt

See :mod:`training.synth` and ``docs/SYNTHEARTH.md`` for what the tiles contain.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from metaseg.cli import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.synth",
        description="Generate SynthEarth: climate-conditioned procedural tiles with exact OpenEarthMap labels.",
    )
    p.add_argument("--out", required=True, help="output folder (OpenEarthMap layout)")
    p.add_argument("--n", type=int, required=True, help="number of tiles")
    p.add_argument("--size", type=int, default=256, help="tile side in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="run seed; use a different one for held-out tiles")
    p.add_argument(
        "--zones", default=None, help="comma-separated Köppen codes (default Af,Aw,BWh,BSk,Cfa,Cfb,Dfb,ET)"
    )
    p.add_argument("--split-fractions", default=None, help="train,val,test fractions (default 0.7,0.15,0.15)")
    p.add_argument(
        "--workers", type=int, default=1, help="parallel processes through Dask (default 1; output is identical; "
        "serial when Dask distributed is not installed)"
    )
    p.add_argument("--json", action="store_true", help="print a one-line JSON summary on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _run(args), messages={ImportError: _missing_package})


def _missing_package(exc: ImportError) -> str:
    # e.g. rasterio (writes the GeoTIFFs) missing on a bare machine
    return f"SynthEarth needs the Python package {exc.name or exc}: install the project's requirements.txt"


def _run(args: argparse.Namespace) -> int:
    from training.synth import parse_split_fractions, parse_zones, write_synthearth

    parse_zones(args.zones)
    parse_split_fractions(args.split_fractions)
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=args.n, desc="SynthEarth", unit="tile", file=sys.stderr)
    t0 = time.perf_counter()
    manifest = write_synthearth(
        args.out,
        args.n,
        size=args.size,
        seed=args.seed,
        zones=args.zones,
        split_fractions=args.split_fractions,
        progress=bar.update if bar is not None else None,
        workers=max(1, args.workers),
    )
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    splits = {s: sum(t["split"] == s for t in manifest["tiles"]) for s in ("train", "val", "test")}
    summary = {
        "out": str(args.out),
        "n": manifest["n"],
        "size": manifest["size"],
        "seed": manifest["seed"],
        "zones": manifest["zones"],
        "splits": splits,
        "seconds": round(seconds, 2),
        "tiles_per_minute": round(60.0 * manifest["n"] / max(seconds, 1e-9), 1),
        "version": manifest["version"],
    }
    if args.json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        print(
            f"wrote {summary['n']} tiles ({summary['size']}²) to {args.out}: {splits} "
            f"in {summary['seconds']} s ({summary['tiles_per_minute']} tiles/min)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
