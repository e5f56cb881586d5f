"""``python -m training.sweep`` command line (see :mod:`training.sweep`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from metaseg.cli import run_cli
from training.config import DATASET_NAMES
from training.sweep.job import run_sweep
from training.sweep.report import format_table

log = logging.getLogger(__name__)


def quiet_dask_logs() -> None:
    """Dask configures its loggers (INFO, own handlers) on import: keep only errors on the console."""
    import warnings

    import distributed  # noqa: F401 - import first, then override its logging configuration

    # the runner's local cluster asks for no dashboard, yet distributed still warns when 8787 is taken
    warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)

    for name in ("distributed", "tornado", "bokeh"):
        logging.getLogger(name).setLevel(logging.ERROR)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from metaseg.runner import BACKENDS

    p = _Parser(
        prog="python -m training.sweep", description="Prompt experiments over a dataset split, on Dask."
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--model", help="MetaSegNet variant (alone: its shipped demo weights)")
    g.add_argument("--checkpoint", help="MetaSegNet checkpoint (path, export folder or hub id)")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--baseline", help="baseline variant (alone: its shipped demo weights), run once per tile")
    b.add_argument("--baseline-checkpoint", help="baseline checkpoint")
    p.add_argument("--dataset", required=True, help=" | ".join(DATASET_NAMES))
    p.add_argument("--root", required=True, help="dataset root in its official layout")
    p.add_argument("--split", required=True, help="train | val | test")
    p.add_argument("--variant", action="append", default=[], required=True,
                   help="climate | generic | store-generic | none | wrong | source:llm | source:user | id:N (repeatable)")  # fmt: skip
    w = p.add_mutually_exclusive_group()
    w.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    w.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--backend", choices=BACKENDS, default="torch", help="inference backend (default torch)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--tta", action="store_true", help="average horizontal/vertical flips")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per worker process (default 1; CPU results are bitwise reproducible "
        "across worker counts and clusters at a fixed thread count)",
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N tiles of the split")
    p.add_argument("--db", help="prompt database (default $METASEG_DB or data/metaseg.sqlite)")
    p.add_argument("--notes", help="free text stored with the experiment")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    from prompts_db import PromptStore

    store = PromptStore(args.db) if args.db else None
    try:
        report = run_sweep(
            model=args.model, checkpoint=args.checkpoint, dataset=args.dataset, root=args.root, split=args.split,
            variants=args.variant, baseline=args.baseline, baseline_checkpoint=args.baseline_checkpoint,
            workers=args.workers, scheduler=args.scheduler, backend=args.backend,
            device=None if args.device == "auto" else args.device, tta=args.tta, limit=args.limit, store=store,
            progress=not args.no_progress, notes=args.notes, threads=args.threads,
        )  # fmt: skip
    finally:
        if store is not None:
            store.close()
    if args.json:
        sys.stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
    else:
        print(format_table(report))
    return 3 if report["errors"] else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_dask_logs()

    def kept(exc: KeyboardInterrupt) -> str:
        eid = getattr(exc, "experiment_id", None)
        return f"; experiment {eid} stored as incomplete with the tiles finished so far" if eid else ""

    return run_cli(lambda: run(args), interrupted=kept)
