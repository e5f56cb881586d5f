"""Cut raw ISPRS Potsdam tiles into patches: ``python -m training.potsdam_split --src DIR --out DIR``.

Split, label choice and edge handling are documented in :mod:`training.datasets.potsdam`.
Prints one JSON summary line on stdout; user errors → one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.potsdam_split",
                                description="Cut 6000x6000 Potsdam tiles into train/val/test patches.")
    p.add_argument("--src", required=True, help="folder with top_potsdam_X_Y_RGB.tif and *_label*.tif (searched recursively)")
    p.add_argument("--out", required=True, help="output root (becomes the potsdam data_root)")
    p.add_argument("--patch", type=int, default=1024, help="patch side in pixels (default 1024)")
    p.add_argument("--stride", type=int, default=None, help="step between patches (default: --patch)")
    p.add_argument("--labels", choices=("auto", "full", "eroded"), default="auto",
                   help="auto: full labels for train/val, eroded (noBoundary) for test")
    p.add_argument("--val-tiles", default="2_10", help="comma-separated tile ids moved from train to val")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from metaseg.cli import run_cli
    from training.datasets.potsdam import split_tiles

    def command() -> int:
        manifest = split_tiles(args.src, args.out, patch=args.patch, stride=args.stride, labels=args.labels,
                               val_tiles=[t.strip() for t in args.val_tiles.split(",") if t.strip()])
        print(json.dumps(manifest))
        return 0

    return run_cli(command)


if __name__ == "__main__":
    sys.exit(main())
