"""Command-line interface: ``python -m metaseg <command> ...``.

Each command lives in its own module ``metaseg/cli/<command>.py`` exposing
``register(subparsers) -> argparse.ArgumentParser`` (which must call
``parser.set_defaults(func=run)``) and ``run(args) -> int``. Modules keep heavy imports
(torch, timm, transformers) inside ``run`` so ``--help`` and the torch-free commands stay fast.

Errors: :func:`run_cli` is the error policy of every command of the project (``metaseg``,
``prompts_db`` and the ``training`` commands): a :class:`metaseg.errors.MetasegError` or an
``OSError`` becomes one line on stderr and exit code 2, never a traceback; see there.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Mapping
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


#: Exit codes of :func:`run_cli` besides the command's own: bad input, Ctrl-C, stdout closed by
#: its reader (128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe).
EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 2, 130, 141


def _stdout_is_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (a BrokenPipeError may also come from a socket)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # not a real file (captured in tests)
        return False
    try:
        import select

        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError):  # no poll() on this platform: the usual cause is stdout
        return True


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush does not report the pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (captured in tests)
        pass


def run_cli(
    command: Callable[[], int | None],
    *,
    messages: Mapping[type[BaseException], Callable[[Any], str]] | None = None,
    interrupted: Callable[[KeyboardInterrupt], str] | None = None,
) -> int:
    """Run one command under the project's command-line error policy; return its exit code.

    * :class:`~metaseg.errors.MetasegError` or ``OSError`` (a missing or unreadable file, a full
      disk, …) → ``error: <one line>`` on stderr, exit 2. ``messages`` maps further exception
      types to their one-line text (e.g. the database driver's errors); they are checked first.
    * stdout closed by its reader (``… | head``) → quiet, exit 141.
    * ``KeyboardInterrupt`` → ``interrupted`` (+ ``interrupted(exc)``, e.g. what was kept) on
      stderr, exit 130.
    * Anything else is a bug: it propagates, so Python prints the traceback.

    Non-UTF-8 file names reach Python as lone surrogates; stdout prints them as ``\\udcXX``
    escapes (inside JSON strings that is a valid escape) instead of failing.
    """
    try:
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    except (AttributeError, ValueError):  # not a TextIOWrapper (e.g. captured in tests)
        pass
    try:
        return int(command() or 0)
    except KeyboardInterrupt as exc:
        sys.stderr.write(f"interrupted{interrupted(exc) if interrupted else ''}\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_is_closed():
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        for kind, text in (messages or {}).items():
            if isinstance(exc, kind):
                return fail(text(exc))
        if isinstance(exc, (MetasegError, OSError)):
            return fail(str(exc))
        raise


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: args.func(args))
