"""``python -m metaseg bench``: time MetaSegNet against its baseline in one process.

``bench [--device cpu|cuda] [--size N] [--batch B] [--pair demo|swin_b|swin_t] [--repeats R]
[--sizes-sliding 2048,4096] [--json]`` builds both models of the pair with random weights and
reports forward latency (median of R after a warm-up), the ratio, cold vs cached text
encoding, throughput, peak memory and sliding-window times (see :mod:`metaseg.bench`).
GPU options: ``--precision``, ``--channels-last/--no-channels-last``, ``--compile``,
``--sdpa``, ``--peak-tflops`` (fraction of peak from the FLOP count).

Exit 2 with one line on stderr for user mistakes, e.g. ``--device cuda`` without a GPU.
Argument parsing does not import torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

PAIR_CHOICES = ("demo", "swin_b", "swin_t")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bench", help="time MetaSegNet vs its baseline (latency, text cache, memory, sliding window)",
        description="Measure MetaSegNet and its text-free baseline in one process (random weights).",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--pair", default="demo", choices=PAIR_CHOICES, help="model pair (default demo)")
    parser.add_argument("--size", type=_positive_int, default=None,
                        help="square input side in px (default: the pair's input size)")
    parser.add_argument("--batch", type=_positive_int, default=1, help="images per forward pass (default 1)")
    parser.add_argument("--repeats", type=_positive_int, default=5, help="timed repetitions (median; default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per model first (default 1)")
    parser.add_argument("--sizes-sliding", default="2048,4096", metavar="N,N",
                        help="tile sides for the sliding-window runs (default 2048,4096; 'none' skips)")
    parser.add_argument("--sliding-repeats", type=_positive_int, default=1,
                        help="timed runs per sliding size (median; default 1)")
    parser.add_argument("--overlap", type=float, default=0.25,
                        help="sliding-window overlap (default 0.25, the predictor's default)")
    parser.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="auto = bf16 autocast on capable GPUs, fp32 on CPU")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="channels-last memory format (default on, like the predictor)")
    parser.add_argument("--compile", action="store_true", help="torch.compile encoder, decoder and head")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode, e.g. max-autotune-no-cudagraphs (default: torch's)")
    parser.add_argument("--sdpa", default="auto", choices=("auto", "flash", "efficient", "cudnn", "math"),
                        help="restrict scaled_dot_product_attention to one backend")
    parser.add_argument("--no-flops", dest="flops", action="store_false", help="skip the FLOP count")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="device peak TFLOP/s for the achieved fraction (H100/H200 bf16 dense: 989)")
    parser.add_argument("--text-encoder", default=None, metavar="NAME_OR_DIR",
                        help="MetaSegNet text encoder override (local folder, hub id or minilm)")
    parser.add_argument("--prompt", default=None, help="prompt to time with (default: a ~220-token climate prompt)")
    parser.add_argument("--backend", default=None, metavar="B[,B...]",
                        help="also time predictor backends side by side: torch,onnx,onnx-int8 (CPU; adds "
                             "'backends' and 'agreement' to the output)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each phase on stderr")
    parser.set_defaults(func=run)
    return parser


def options_from_args(args: argparse.Namespace) -> Any:
    """Map parsed flags onto :class:`metaseg.bench.BenchOptions` (torch is not imported)."""
    from metaseg.bench import DEFAULT_PROMPT, BenchOptions, parse_sizes

    backends: tuple[str, ...] = ()
    if getattr(args, "backend", None):
        from metaseg.backends import parse_backends

        backends = parse_backends(args.backend)
    return BenchOptions(
        backends=backends,
        device=args.device, pair=args.pair, size=args.size, batch=args.batch, repeats=args.repeats,
        warmup=args.warmup, sliding_sizes=parse_sizes(args.sizes_sliding),
        sliding_repeats=args.sliding_repeats, overlap=args.overlap, threads=args.threads, precision=args.precision,
        channels_last=args.channels_last, compile=args.compile, compile_mode=args.compile_mode,
        sdpa=args.sdpa, flops=args.flops, peak_tflops=args.peak_tflops, text_encoder=args.text_encoder,
        prompt=args.prompt if args.prompt is not None else DEFAULT_PROMPT,
    )


def run(args: argparse.Namespace) -> int:
    from metaseg.bench import format_table, run_benchmark
    from metaseg.cli import print_json

    options = options_from_args(args)
    options.validate()  # bad values -> exit 2 before torch is imported
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    def progress(message: str) -> None:
        if args.verbose:
            sys.stderr.write(f"[bench] {message}\n")

    result = run_benchmark(options, progress=progress)
    if args.json:
        print_json(result)
    else:
        print(format_table(result))
    return 0
