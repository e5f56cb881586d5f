"""``python -m training.finetune``: flags (DESIGN.md §7), the run, and the one error policy
(:func:`metaseg.cli.run_cli`: exit 2 with one line on bad input)."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from metaseg.errors import ConfigError
from training.finetune.api import finetune
from training.finetune.limits import check_limits
from training.finetune.samples import dataset_tiles, store_label_pairs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.finetune",
                                description="Fine-tune a checkpoint on labelled tiles of your own imagery "
                                            "(loss on labelled pixels only) and write a checkpoint folder.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="NAME", help="variant with shipped weights (e.g. metasegnet_demo)")
    src.add_argument("--checkpoint", metavar="CKPT", help="checkpoint file/stem/folder or hub id to start from")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--pair", nargs=2, action="append", metavar=("IMAGE", "LABEL"),
                      help="a tile and its label (repeatable)")
    data.add_argument("--dataset", metavar="NAME", help="a dataset in its official layout (with --root, --split)")
    data.add_argument("--store-labels", action="store_true",
                      help="the labels saved in the prompt store (tiles found by hash in --root or beside the labels)")
    p.add_argument("--root", metavar="DIR", help="dataset root (--dataset) or where the tiles are (--store-labels)")
    p.add_argument("--split", metavar="SPLIT", help="dataset split (--dataset)")
    p.add_argument("--class-set", metavar="NAME", help="class set of the labels (default: the labels' tag, else the model's)")
    lim = p.add_mutually_exclusive_group()
    lim.add_argument("--budget-s", type=float, metavar="S", help="wall-clock budget in seconds (default 120)")
    lim.add_argument("--steps", type=int, metavar="N", help="exactly N optimiser steps instead of a budget")
    p.add_argument("--device", default="cpu", metavar="cpu|cuda", help="compute device (default cpu)")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (default 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (model.safetensors, config.json, README.md)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from metaseg.classes import get_class_set

    class_set = args.class_set.strip().lower() if args.class_set else None
    if class_set is not None:
        get_class_set(class_set)  # UnknownNameError lists the valid sets
    budget = args.budget_s if args.budget_s is not None else (None if args.steps is not None else 120.0)
    check_limits(budget, args.steps)
    base = args.model or args.checkpoint
    tiles = None
    samples: list[tuple[str, str]] = []
    if args.dataset:
        if not args.root or not args.split:
            raise ConfigError("--dataset needs --root DIR and --split SPLIT")
        tiles, class_set = dataset_tiles(args.dataset, args.root, args.split, class_set)
    elif args.store_labels:
        samples = [(str(a), str(b)) for a, b in store_label_pairs([args.root] if args.root else [])]
    else:
        if args.root or args.split:
            raise ConfigError("--root/--split go with --dataset (or --root with --store-labels)")
        samples = [(a, b) for a, b in args.pair]
    return finetune(base, samples, out=args.out, class_set=class_set, budget_s=budget, steps=args.steps,
                    device=args.device, seed=args.seed, tiles=tiles, show_bar=not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from metaseg.cli import run_cli

    def command() -> int:
        result = run(args)
        if args.json:
            print(json.dumps(result, ensure_ascii=False))
        else:
            print(f"taught {result['base']} on {result['tiles']} tile(s), {result['labelled_pixels']} labelled px "
                  f"({result['class_set']}): {result['steps']} steps in {result['seconds']:.1f} s "
                  f"(stopped: {result['stopped']}) -> {result['checkpoint']}")
        return 0

    return run_cli(command, interrupted=lambda _exc: " (nothing written)")
