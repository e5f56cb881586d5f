"""One command-line error policy (:func:`metaseg.cli.run_cli`) for every command of the project."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from metaseg.cli import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, run_cli
from metaseg.errors import MetasegError, TileReadError

ROOT = Path(__file__).resolve().parents[1]
#: Every ``python -m …`` command and the file of its ``main``.
COMMANDS = {
    "metaseg": "metaseg/cli/__init__.py",
    "prompts_db": "prompts_db/cli.py",
    "training.train": "training/train.py",
    "training.evaluate": "training/evaluate.py",
    "training.sweep": "training/sweep/cli.py",
    "training.export": "training/export.py",
    "training.potsdam_split": "training/potsdam_split.py",
    "training.synth": "training/synth/cli.py",
    "training.finetune": "training/finetune/cli.py",
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_runs_under_run_cli(command):
    """``main`` hands its work to run_cli and catches nothing itself (no inline copy of the policy)."""
    tree = ast.parse((ROOT / COMMANDS[command]).read_text(encoding="utf-8"))
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    calls = {c.func.id for c in ast.walk(main) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
    assert "run_cli" in calls, f"{COMMANDS[command]}: main() does not call run_cli"
    assert not any(isinstance(n, ast.Try) for n in ast.walk(main)), f"{COMMANDS[command]}: main() has its own try"


def test_library_error_is_one_line_and_exit_2(capsys):
    def command():
        raise TileReadError("cannot read x.tif:\n  not a raster")

    assert run_cli(command) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "error: cannot read x.tif: not a raster\n"


def test_os_error_is_one_line_and_exit_2(capsys, tmp_path):
    assert run_cli(lambda: open(tmp_path / "missing.txt")) == 2  # noqa: SIM115
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.txt" in err and err.count("\n") == 1


def test_messages_come_first_and_the_return_value_is_the_exit_code(capsys):
    def command():
        raise PermissionError(13, "Permission denied")

    assert run_cli(command, messages={OSError: lambda e: f"cannot open the database: {e.strerror}"}) == 2
    assert capsys.readouterr().err == "error: cannot open the database: Permission denied\n"
    assert run_cli(lambda: 3) == 3 and run_cli(lambda: None) == 0


def test_interrupt_is_130_with_what_was_kept(capsys):
    def command():
        exc = KeyboardInterrupt()
        exc.experiment_id = 7
        raise exc

    assert run_cli(command, interrupted=lambda e: f"; experiment {e.experiment_id} kept") == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "interrupted; experiment 7 kept\n"


def test_a_bug_keeps_its_traceback():
    def command():
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        run_cli(command)
    with pytest.raises(MetasegError):  # a bug in a `messages` entry is not hidden either
        run_cli(lambda: 1 / 0, messages={ZeroDivisionError: lambda e: (_ for _ in ()).throw(MetasegError("x"))})


def test_broken_pipe_not_on_stdout_is_an_os_error(capsys):
    def command():
        raise BrokenPipeError(32, "Broken pipe")  # e.g. a socket; stdout is still open

    assert run_cli(command) == 2
    assert "Broken pipe" in capsys.readouterr().err


def test_stdout_closed_by_its_reader_is_quiet(tmp_path):
    """``python -m prompts_db list | head -n 1``: no traceback, no error line, exit 141."""
    script = ("import sys; from metaseg.cli import run_cli\n"
              "sys.exit(run_cli(lambda: [print('prompt ' * 20) for _ in range(100000)]))\n")
    proc = subprocess.run(["bash", "-c", f'"{sys.executable}" -c "$CODE" | head -n 1; echo "rc=${{PIPESTATUS[0]}}"'],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env={"CODE": script, "PATH": "/usr/bin:/bin"})
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("prompt") and lines[-1] == f"rc={EXIT_BROKEN_PIPE}", proc.stdout[-300:]
    assert proc.stderr == ""
