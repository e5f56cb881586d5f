"""Command-line interface: ``python -m metaseg <command> ...``.

Each command lives in its own module ``metaseg/cli/<command>.py`` exposing
``register(subparsers) -> argparse.ArgumentParser`` (which must call
``parser.set_defaults(func=run)``) and ``run(args) -> int``. Modules keep heavy imports
(torch, timm, transformers) inside ``run`` so ``--help`` and the torch-free commands stay fast.

Errors: any :class:`metaseg.errors.MetasegError` (and ``FileNotFoundError``) raised by a
command becomes a one-line message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, NoReturn

from metaseg.errors import MetasegError

#: Subcommands, in the order ``--help`` lists them.
COMMANDS = ("climate", "locate", "info", "predict", "map", "bench")


class OneLineErrorParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one stderr line + exit 2 (no usage block), like every
    other user error of the CLI. ``--help`` is unchanged."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="python -m metaseg",
        description="MetaSegNet: climate-aware vision-language segmentation of remote-sensing tiles.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"metaseg.cli.{name}")
        except ModuleNotFoundError as exc:  # command not built yet in this checkout
            if exc.name != f"metaseg.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (the ``--json`` contract)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def fail(message: str) -> int:
    """Write a one-line error to stderr and return exit code 2."""
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    return 2


def main(argv: list[str] | None = None) -> int:
    try:  # file names that are not valid UTF-8 reach us as lone surrogates: print them as \udcXX escapes
        sys.stdout.reconfigure(errors="backslashreplace")  # (inside JSON strings that is a valid escape)
    except (AttributeError, ValueError):  # not a TextIOWrapper (e.g. captured in tests)
        pass
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (MetasegError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted")
