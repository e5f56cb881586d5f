"""``python -m prompts_db``: list, show, generate, edit, history, restore and export prompts;
list and show prompt experiments (``experiments``, ``experiment ID``).

With ``--json`` a prompt prints as one object with keys ``id, zone, class_set, text, source,
parent_id, token_count, created_at``; ``list`` and ``history`` print a JSON list of them. User
mistakes (unknown id, zone or class set, bad arguments, unreadable file, LLM not configured)
print one line on stderr and exit 2. The database is ``--db`` or ``$METASEG_DB`` or
``data/metaseg.sqlite``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from metaseg.errors import MetasegError


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m prompts_db", description="Versioned geographic text prompts (SQLite).")
    p.add_argument("--db", help="database file (default: $METASEG_DB or data/metaseg.sqlite)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("list", help="list prompt versions")
    c.add_argument("--zone", help="Köppen code, 'generic' or 'none'")
    c.add_argument("--class-set", help="openearthmap | loveda | potsdam")
    c.add_argument("--latest", action="store_true", help="only the newest version per (zone, class set)")
    c.add_argument("--json", action="store_true")

    c = sub.add_parser("show", help="show one prompt version")
    c.add_argument("id", type=int)
    c.add_argument("--json", action="store_true")

    c = sub.add_parser("generate", help="new version from offline knowledge (or the LLM with --llm)")
    c.add_argument("--zone", required=True)
    c.add_argument("--class-set", required=True)
    c.add_argument("--llm", action="store_true", help="ask the OpenAI-compatible LLM (see OPENAI_* env)")
    c.add_argument("--model", help="LLM model (default $METASEG_LLM_MODEL or gpt-4o-mini)")
    c.add_argument("--timeout", type=float, help="seconds per LLM request")
    c.add_argument("--author")
    c.add_argument("--json", action="store_true")

    c = sub.add_parser("edit", help="save edited text as a new version whose parent is ID")
    c.add_argument("id", type=int)
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--text")
    g.add_argument("--file", help="read the text from a UTF-8 file ('-' for stdin)")
    c.add_argument("--author")
    c.add_argument("--notes")
    c.add_argument("--json", action="store_true")

    c = sub.add_parser("history", help="all versions of ID's (zone, class set), newest first")
    c.add_argument("id", type=int)
    c.add_argument("--json", action="store_true")

    c = sub.add_parser("restore", help="new version copying the text of version ID")
    c.add_argument("id", type=int)
    c.add_argument("--json", action="store_true")

    c = sub.add_parser("experiments", help="list prompt experiments (python -m training.sweep)")
    c.add_argument("--json", action="store_true")

    c = sub.add_parser("experiment", help="show one prompt experiment: variants, mIoU/OA/mF1, per class")
    c.add_argument("id", type=int)
    c.add_argument("--json", action="store_true")
    c.add_argument("--export", choices=("csv", "json"), help="print all per-tile counts as CSV or JSON")
    c.add_argument("--out", help="with --export: output file (default: stdout)")

    c = sub.add_parser("export", help="export a table as CSV or JSON")
    c.add_argument("--format", choices=("csv", "json"), default="json")
    c.add_argument(
        "--table",
        default="prompts",
        help="prompts | qa | prompt_qa | runs | labels | experiments | experiment_tiles | experiment_results",
    )
    c.add_argument("--out", help="output file (default: stdout)")
    return p


def _line(rec: Any) -> str:
    preview = " ".join(rec.text.split())
    preview = preview[:70] + ("…" if len(preview) > 70 else "")
    return (
        f"{rec.id:>5}  {rec.zone:<7} {rec.class_set:<12} v{rec.version:<3} {rec.source:<20} "
        f"{rec.token_count:>3} tok  {preview}"
    )


def _show(rec: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(rec.to_dict(), ensure_ascii=False))
        return
    from prompts_db.tokens import TOKEN_BUDGET

    print(f"id {rec.id}  zone {rec.zone}  class set {rec.class_set}  version {rec.version}")
    print(f"source {rec.source}  parent {rec.parent_id}  tokens {rec.token_count}/{TOKEN_BUDGET}")
    print(f"created {rec.created_at}  author {rec.author or '-'}  notes {rec.notes or '-'}")
    print()
    print(rec.text if rec.text else "(no text: run without a prompt)")


def _write_or_print(data: str, out: str | None) -> None:
    if out:
        try:
            Path(out).write_text(data, encoding="utf-8")
        except OSError as err:
            raise MetasegError(f"cannot write {out}: {err.strerror or err}") from None
    else:
        sys.stdout.write(data if data.endswith("\n") else data + "\n")


def _read_text(path: str) -> str:
    from prompts_db.errors import PromptTextError

    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PromptTextError(f"cannot read prompt text from {path}: {err.__class__.__name__}") from None


def _experiment_line(e: dict[str, Any]) -> str:
    base = f" vs {e['baseline']}" if e.get("baseline") else ""
    return (
        f"{e['id']:>5}  {e['created'][:19]}  {e['status']:<10} {e['model']}{base}  "
        f"{e['dataset']}/{e['split']} {e['tiles']}/{e['n_tiles']} tiles  {', '.join(e['variants'])}"
    )


def _show_experiment(exp: dict[str, Any]) -> None:
    def f(v: float | None) -> str:
        return "    -" if v is None else f"{v:6.2f}"

    print(_experiment_line(exp))
    print(
        f"checkpoint {exp['checkpoint'] or '-'} ({exp['checkpoint_hash'] or '-'})  backend {exp['backend']}"
    )
    rows = ([("baseline", exp["baseline_results"])] if exp.get("baseline_results") else []) + list(
        exp["results"].items()
    )
    width = max([len("variant")] + [len(r[0]) for r in rows]) + 2
    print(f"{'variant':<{width}}{'mIoU':>8}{'mF1':>8}{'OA':>8}")
    for name, m in rows:
        print(f"{name:<{width}}{f(m['miou']):>8}{f(m['mf1']):>8}{f(m['oa']):>8}")
    if exp["errors"]:
        print(
            f"{len(exp['errors'])} tile(s) failed, e.g. {exp['errors'][0]['tile']}: {exp['errors'][0]['reason']}"
        )


def run(args: argparse.Namespace) -> int:
    """Execute a parsed command; returns the exit code."""
    from prompts_db.store import PromptStore

    store = PromptStore(args.db)
    try:
        if args.command == "list":
            _print_records(store.list(zone=args.zone, class_set=args.class_set, latest_only=args.latest), args.json)
        elif args.command == "show":
            _show(store.get(args.id), args.json)
        elif args.command == "generate":
            rec = (
                store.generate(
                    args.zone,
                    args.class_set,
                    llm=args.llm,
                    author=args.author,
                    model=args.model,
                    timeout=args.timeout,
                )
                if args.llm
                else store.generate(args.zone, args.class_set, author=args.author)
            )
            _show(rec, args.json)
        elif args.command == "edit":
            old = store.get(args.id)
            text = args.text if args.text is not None else _read_text(args.file)
            rec = store.save(
                old.zone,
                old.class_set,
                text,
                source="user",
                parent_id=old.id,
                author=args.author,
                notes=args.notes,
            )
            _show(rec, args.json)
        elif args.command == "history":
            _print_records(store.history(args.id), args.json)
        elif args.command == "restore":
            _show(store.restore(args.id), args.json)
        elif args.command == "experiments":
            from prompts_db import experiments

            _print_rows(experiments.list_experiments(store), args.json, _experiment_line)
        elif args.command == "experiment":
            from prompts_db import experiments

            if args.export:
                data = experiments.export(store, args.id, args.export)
                _write_or_print(data, args.out)
            elif args.json:
                print(json.dumps(experiments.get_experiment(store, args.id), ensure_ascii=False))
            else:
                _show_experiment(experiments.get_experiment(store, args.id))
        elif args.command == "export":
            _write_or_print(store.export(args.format, table=args.table), args.out)
    finally:
        store.close()
    return 0


def _print_rows(rows: list[Any], as_json: bool, line: Any) -> None:
    """A JSON list of ``rows`` (with ``--json``) or one ``line(row)`` per row."""
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
    else:
        for row in rows:
            print(line(row))


def _print_records(recs: list[Any], as_json: bool) -> None:
    """Prompt records as a JSON list of their dicts or one :func:`_line` each."""
    if as_json:
        _print_rows([r.to_dict() for r in recs], True, _line)
    else:
        _print_rows(recs, False, _line)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run under the CLI error policy (:func:`metaseg.cli.run_cli`)."""
    from sqlalchemy.exc import OperationalError

    from metaseg.cli import run_cli

    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args), messages={
        OperationalError: lambda err: f"cannot use the prompt database: {err.orig}",
        # MetasegError is checked after these; an OSError here is the database folder or file
        OSError: lambda err: f"cannot open the prompt database: {err.strerror or err}",
    })
