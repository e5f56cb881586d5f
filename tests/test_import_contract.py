"""The layer rules of DESIGN.md §6 as code: an AST walk over every source file of the project.

Rules (each one a test below; a failure names the file, the line and the rule it breaks):

* **Layer order**: ``app.py``/``studio`` and ``training`` → ``prompts_db`` → ``metaseg``. The library
  (``metaseg``) imports no other project package; ``prompts_db`` imports only ``metaseg``;
  ``training`` never imports the UI (``studio``/``app``). The app may call ``training`` (teaching
  and prompt sweeps are training, DESIGN §6.2). Scripts may import any package but ``tests``.
  No source file imports ``tests``.
* **Torch-free modules**: climate, geo, classes, errors, the CLI's argument parsing
  (``metaseg.cli.*`` at import time) and the prompt store (``prompts_db``) never import torch, timm
  or transformers at module level, directly or through another project module (importing them
  costs ~10 s on a small machine). Function-level (lazy) imports are how commands reach torch.
* **gradio only in the UI**: ``app.py`` and ``studio``.
* **No ``from … import *``** in the sources.

An exception is one explicit entry in :data:`EXCEPTIONS` (importing module, imported package) with
its reason; it covers lazy (function-level) imports only, and an entry that no longer matches any
import fails the suite, so the list cannot go stale.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What the walk reads (packages and single files, relative to the repository root).
SOURCES = ("metaseg", "prompts_db", "training", "studio", "scripts", "app.py")
#: Top-level names that belong to this project.
PROJECT = frozenset({"metaseg", "prompts_db", "training", "studio", "scripts", "app", "tests"})

#: Layer (top-level package of the importing module) -> project packages it may import.
ALLOWED: dict[str, frozenset[str]] = {
    "metaseg": frozenset({"metaseg"}),
    "prompts_db": frozenset({"prompts_db", "metaseg"}),
    "training": frozenset({"training", "prompts_db", "metaseg"}),
    "studio": frozenset({"studio", "training", "prompts_db", "metaseg"}),
    "app": frozenset({"app", "studio", "training", "prompts_db", "metaseg"}),
    "scripts": frozenset({"scripts", "app", "studio", "training", "prompts_db", "metaseg"}),
}

#: The allowed exceptions, one per edge: (importing module, imported top-level package) -> reason.
#: Lazy (function-level) imports only.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("metaseg.cli.predict", "prompts_db"): "the predict command (an application layer that lives in "
    "metaseg/cli) reads the tile's stored zone prompt; library modules never do",
    ("metaseg.cli.map", "prompts_db"): "the map command resolves each tile's stored prompt and hands "
    "prompt texts to metaseg.mapping (DESIGN §6.1); library modules never do",
}

HEAVY = frozenset({"torch", "timm", "transformers", "torchvision"})
#: Modules that must import without torch/timm/transformers (a trailing ``.*`` = the package and all
#: its modules).
TORCH_FREE = (
    "metaseg",
    "metaseg.errors",
    "metaseg.climate",
    "metaseg.geo.*",
    "metaseg.classes",
    "metaseg.cli.*",
    "prompts_db.*",
)
#: Where gradio may be imported (a trailing ``.*`` = the package and all its modules).
GRADIO_OK = ("app", "studio.*")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. "metaseg.cli.map"
    target: str  # the imported module, resolved (relative imports made absolute)
    names: tuple[str, ...]  # for ``from target import a, b``: ("a", "b"); () for ``import target``
    lazy: bool  # inside a function (runs when called, not at import time)
    file: str
    line: int

    @property
    def top(self) -> str:
        return self.target.split(".")[0]

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for entry in SOURCES:
        path = root / entry
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, root: Path) -> list[Import]:
    """Every import statement of one file; ``if TYPE_CHECKING:`` blocks are left out (never run)."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    rel = str(path.relative_to(root))
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:
                    visit_stmt(stmt, lazy)
                continue
            visit_stmt(child, lazy)

    def visit_stmt(child: ast.AST, lazy: bool) -> None:
        if isinstance(child, ast.Import):
            for alias in child.names:
                found.append(Import(module, alias.name, (), lazy, rel, child.lineno))
        elif isinstance(child, ast.ImportFrom):
            if child.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (child.level - 1)] if child.level > 1 else base
                target = ".".join(base + ([child.module] if child.module else []))
            else:
                target = child.module or ""
            found.append(Import(module, target, tuple(a.name for a in child.names), lazy, rel, child.lineno))
        visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def collect(root: Path) -> dict[str, list[Import]]:
    """module name -> its imports, for every source file under ``root``."""
    return {module_name(p, root): imports_of(p, root) for p in source_files(root)}


def _layer(module: str) -> str:
    return module.split(".")[0]


def _matches(module: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if pattern.endswith(".*"):
            if module == pattern[:-2] or module.startswith(pattern[:-1]):
                return True
        elif module == pattern:
            return True
    return False


# ----------------------------------------------------------------------------- the checks
def layer_violations(graph: dict[str, list[Import]]) -> list[str]:
    bad = []
    for module, imps in graph.items():
        allowed = ALLOWED.get(_layer(module), frozenset())
        for imp in imps:
            if imp.top not in PROJECT or imp.top in allowed:
                continue
            reason = EXCEPTIONS.get((module, imp.top))
            if reason is not None and imp.lazy:
                continue
            hint = " (a listed exception, but it covers lazy imports only)" if reason else ""
            bad.append(f"{imp.where()}: {module} imports {imp.target} — layer {_layer(module)!r} may import "
                       f"only {sorted(allowed)}{hint}")
    return bad


def stale_exceptions(graph: dict[str, list[Import]]) -> list[str]:
    used = {(m, imp.top) for m, imps in graph.items() for imp in imps if imp.lazy}
    return [f"EXCEPTIONS lists {m} -> {pkg}, but {m} no longer imports {pkg}: delete the entry"
            for (m, pkg) in EXCEPTIONS if (m, pkg) not in used]


def _resolve(target: str, names: tuple[str, ...], graph: dict[str, list[Import]]) -> list[str]:
    """The project modules an import statement runs: the target, its parent packages, and for
    ``from pkg import mod`` the submodule ``pkg.mod``."""
    parts = target.split(".")
    run = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    run += [f"{target}.{n}" for n in names]
    return [m for m in run if m in graph]


def heavy_chain(module: str, graph: dict[str, list[Import]]) -> list[str] | None:
    """The chain of module-level imports from ``module`` to torch/timm/transformers, or ``None``."""
    seen = {module}
    queue: list[tuple[str, list[str]]] = [(module, [module])]
    while queue:
        current, chain = queue.pop(0)
        steps: list[tuple[str, str]] = []  # (next module, why it runs)
        for imp in graph.get(current, []):
            if imp.lazy:
                continue
            if imp.top in HEAVY:
                return [*chain, f"{imp.target} ({imp.where()})"]
            steps += [(nxt, imp.where()) for nxt in _resolve(imp.target, imp.names, graph)]
        parts = current.split(".")
        steps += [(".".join(parts[:i]), "parent package") for i in range(1, len(parts))]
        for nxt, why in steps:
            if nxt in graph and nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, [*chain, f"{nxt} ({why})"]))
    return None


def torch_violations(graph: dict[str, list[Import]]) -> list[str]:
    bad = []
    for module in sorted(graph):
        if _matches(module, TORCH_FREE):
            chain = heavy_chain(module, graph)
            if chain:
                bad.append(f"{module} must stay torch-free but imports at module level: {' -> '.join(chain)}")
    return bad


def gradio_violations(graph: dict[str, list[Import]]) -> list[str]:
    return [f"{imp.where()}: {module} imports {imp.target} — gradio belongs to app.py and studio only"
            for module, imps in graph.items() if not _matches(module, GRADIO_OK)
            for imp in imps if imp.top == "gradio"]


def star_violations(graph: dict[str, list[Import]]) -> list[str]:
    return [f"{imp.where()}: from {imp.target} import * — list the names"
            for imps in graph.values() for imp in imps if "*" in imp.names]


def all_violations(root: Path) -> list[str]:
    graph = collect(root)
    return (layer_violations(graph) + stale_exceptions(graph) + torch_violations(graph)
            + gradio_violations(graph) + star_violations(graph))


# ----------------------------------------------------------------------------- the tree itself
@pytest.fixture(scope="module")
def graph() -> dict[str, list[Import]]:
    return collect(ROOT)


def _report(bad: list[str]) -> str:
    return "\n".join(["import contract broken:", *bad])


def test_the_walk_sees_the_project(graph):
    for module in ("app", "metaseg.cli.predict", "prompts_db.store", "training.train", "studio.services",
                   "training.synth"):
        assert module in graph, module
    assert len(graph) > 60


def test_layer_order(graph):
    assert not (bad := layer_violations(graph)), _report(bad)


def test_every_listed_exception_is_still_needed(graph):
    assert not (bad := stale_exceptions(graph)), _report(bad)


def test_torch_free_modules_stay_torch_free(graph):
    assert not (bad := torch_violations(graph)), _report(bad)


def test_gradio_only_in_the_ui(graph):
    assert not (bad := gradio_violations(graph)), _report(bad)


def test_no_star_imports(graph):
    assert not (bad := star_violations(graph)), _report(bad)


def test_torch_free_modules_import_without_torch_at_run_time(graph):
    """The same promise checked by importing: catches what the AST cannot see (importlib calls)."""
    modules = sorted(m for m in graph if _matches(m, TORCH_FREE) and not m.endswith("__main__"))
    code = textwrap.dedent(f"""
        import importlib, sys
        for name in {modules!r}:
            importlib.import_module(name)
        from metaseg.cli import build_parser
        build_parser()
        print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]", f"importing {modules} loaded {proc.stdout.strip()}"


# ----------------------------------------------------------------------------- the checker can fail
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp_path


def test_checker_reports_each_kind_of_bad_import(tmp_path):
    root = _tree(tmp_path, {
        "metaseg/__init__.py": "",
        "metaseg/climate.py": "from metaseg import helpers\n",
        "metaseg/helpers.py": "import numpy\nimport torch\n",
        "metaseg/geo.py": "import gradio as gr\n",
        "metaseg/cli/__init__.py": "",
        "metaseg/cli/predict.py": "def run():\n    from prompts_db.store import PromptStore\n",
        "metaseg/cli/map.py": "from prompts_db.store import PromptStore\n",  # exception covers lazy only
        "prompts_db/__init__.py": "from .store import *\n",
        "prompts_db/store.py": "from training import train\n",
        "training/__init__.py": "",
        "training/train.py": "import studio.services\n",
        "studio/__init__.py": "import gradio\n",
        "scripts/bench.py": "def main():\n    from tests.fixtures import geotiffs\n",
        "app.py": "import gradio\nimport studio\n",
    })
    bad = "\n".join(all_violations(root))
    assert "metaseg/cli/map.py:1: metaseg.cli.map imports prompts_db.store" in bad
    assert "covers lazy imports only" in bad
    assert "metaseg.cli.predict" not in bad  # the listed lazy exception
    assert "prompts_db/store.py:1: prompts_db.store imports training" in bad
    assert "training/train.py:1: training.train imports studio.services" in bad
    assert "scripts/bench.py:2: scripts.bench imports tests.fixtures" in bad
    assert "metaseg.climate must stay torch-free but imports at module level: metaseg.climate -> " \
           "metaseg.helpers (metaseg/climate.py:1) -> torch (metaseg/helpers.py:2)" in bad
    assert "metaseg/geo.py:1: metaseg.geo imports gradio" in bad
    assert "prompts_db/__init__.py:1: from prompts_db.store import *" in bad
    assert "app.py:" not in bad and "studio/__init__.py" not in bad


def test_checker_ignores_lazy_and_type_checking_imports_of_heavy_modules(tmp_path):
    root = _tree(tmp_path, {
        "metaseg/__init__.py": "",
        "metaseg/geo.py": """\
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                import torch
            def f():
                import torch
        """,
    })
    graph = collect(root)
    assert torch_violations(graph) == [] and layer_violations(graph) == [] and gradio_violations(graph) == []
