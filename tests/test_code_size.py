"""Size limits as code: no library function over ~80 lines, no module over ~500, without a stated reason.

Small rooms are how a newcomer finds their way (docs/ARCHITECTURE.md): a function that no longer fits
on a screen, or a module that mixes concerns, is split rather than grown. A file or function that
must stay larger names itself in :data:`LARGE_MODULES` / :data:`LONG_FUNCTIONS` with its reason; an
entry that no longer matches fails too, so the lists cannot go stale.

Counted: physical lines from ``def`` to the function's last line (docstring included), and a
module's physical lines. Nested functions count within their parent and on their own.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("metaseg", "prompts_db", "training", "studio", "scripts", "app.py")
FUNCTION_MAX = 80
MODULE_MAX = 500

#: "path/to/module.py" -> reason it may exceed MODULE_MAX lines.
LARGE_MODULES: dict[str, str] = {}
#: "path/to/module.py::qualified.name" -> reason it may exceed FUNCTION_MAX lines.
LONG_FUNCTIONS: dict[str, str] = {
    "scripts/ablation.py::main": "a one-off experiment script (docs/RESULTS.md): the whole recipe of the "
    "ablation run reads top to bottom in one place; nothing imports it",
    "scripts/ablation.py::render": "writes the ablation page of docs/RESULTS.md as one Markdown template",
}


def _files() -> list[Path]:
    out: list[Path] = []
    for name in SOURCES:
        p = ROOT / name
        out += [p] if p.is_file() else sorted(p.rglob("*.py"))
    return [f for f in out if "__pycache__" not in f.parts]


def _functions(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield name, node.end_lineno - node.lineno + 1
            yield from _functions(node, name + ".")
        else:
            yield from _functions(node, prefix)


def _measure() -> tuple[dict[str, int], dict[str, int]]:
    modules, functions = {}, {}
    for f in _files():
        rel = f.relative_to(ROOT).as_posix()
        text = f.read_text(encoding="utf-8")
        modules[rel] = len(text.splitlines())
        for name, length in _functions(ast.parse(text, filename=rel)):
            functions[f"{rel}::{name}"] = length
    return modules, functions


def test_no_module_over_the_limit():
    modules, _ = _measure()
    over = [f"{p}: {n} lines" for p, n in sorted(modules.items()) if n > MODULE_MAX and p not in LARGE_MODULES]
    assert not over, f"modules over {MODULE_MAX} lines (split by concern or state a reason):\n" + "\n".join(over)


def test_no_function_over_the_limit():
    _, functions = _measure()
    over = [f"{k}: {n} lines" for k, n in sorted(functions.items()) if n > FUNCTION_MAX and k not in LONG_FUNCTIONS]
    assert not over, f"functions over {FUNCTION_MAX} lines (split into steps or state a reason):\n" + "\n".join(over)


def test_allowances_are_still_needed():
    modules, functions = _measure()
    stale = [p for p in LARGE_MODULES if modules.get(p, 0) <= MODULE_MAX]
    stale += [k for k in LONG_FUNCTIONS if functions.get(k, 0) <= FUNCTION_MAX]
    assert not stale, f"allowances that no longer match anything over the limit: {stale}"


def test_the_walk_sees_a_long_function(tmp_path):
    """The measure itself can fail: a synthetic 81-line function is found."""
    body = "\n".join(f"    x{i} = {i}" for i in range(FUNCTION_MAX))
    tree = ast.parse(f"class A:\n  def f(self):\n{body}\n")
    assert dict(_functions(tree))["A.f"] == FUNCTION_MAX + 1
