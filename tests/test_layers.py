"""The layering, checked on the source with the AST so it holds from now on:

- the core (``kernel/*.py``, ``store/``) imports no api, cli, notebook or web module;
- backends import no api, cli, notebook or scheduler module;
- api imports no backend module (it reaches models through the engine).

Imports inside functions count too. The only exceptions are the entry shims Python and
Jupyter look up by name, listed in ``SHIMS``. A module over ``MAX_LINES`` also fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent / "kernel"
MAX_LINES = 400
FORBIDDEN = {
    "core": {"api", "cli", "notebook", "web", "widgets"},
    "store": {"api", "cli", "notebook", "web", "widgets"},
    "backends": {"api", "cli", "notebook", "scheduler", "web", "widgets"},
    "api": {"backends"},
}
SHIMS = {
    ("__init__.py", "notebook"),  # %load_ext ferrousforge
    ("__main__.py", "cli"),  # python -m ferrousforge
    ("jupyter_ext.py", "notebook"),  # the server extension's old name in Jupyter configs
}


def _layer(rel: Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 else "core"


def _targets(rel: Path, tree: ast.AST) -> set[str]:
    """The first part of every ``ferrousforge`` module ``tree`` imports (``api``, ...)."""
    package = list(rel.parent.parts)
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[list[str]] = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module.split(".") if node.module else []
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                parts = base + module
                # ``from . import x`` names modules too
                names = [[*parts, a.name] for a in node.names] if not module else [parts]
            else:
                names = [module]
        for parts in names:
            if parts and parts[0] == "ferrousforge":
                parts = parts[1:]
            elif isinstance(node, ast.Import) or (
                isinstance(node, ast.ImportFrom) and not node.level
            ):
                continue  # another distribution
            if parts:
                found.add(parts[0].removesuffix(".py"))
    return found


def violations(root: Path) -> list[str]:
    """Every import across a forbidden layer boundary in the package at ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in ("web", "widgets"):  # links to the other top-level folders
            continue
        forbidden = FORBIDDEN.get(_layer(rel), set())
        for target in sorted(_targets(rel, ast.parse(path.read_text(), str(path)))):
            if target in forbidden and (str(rel), target) not in SHIMS:
                found.append(f"{rel} imports {target}")
    return found


def test_the_layers_hold() -> None:
    assert violations(ROOT) == []


def test_no_module_is_over_the_line_limit() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in ROOT.rglob("*.py")
        if p.relative_to(ROOT).parts[0] not in ("web", "widgets")
        and (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_a_planted_violation_is_found(tmp_path: Path) -> None:
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "__init__.py").write_text("")
    (tmp_path / "backends").mkdir()
    (tmp_path / "engine.py").write_text("from .store import names\n")  # allowed
    (tmp_path / "planted.py").write_text("def f():\n    from .api import app\n")
    (tmp_path / "backends" / "leaky.py").write_text(
        "from .. import scheduler\nimport ferrousforge.api.errors\n"
    )
    (tmp_path / "api" / "reach.py").write_text("from ..backends.llama_cpp import LlamaCppBackend\n")
    assert violations(tmp_path) == [
        "api/reach.py imports backends",
        "backends/leaky.py imports api",
        "backends/leaky.py imports scheduler",
        "planted.py imports api",
    ]


def test_the_error_tree_drawing_names_every_class() -> None:
    from ferrousforge import errors

    drawn = errors.__doc__ or ""
    classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.ForgeError)
    }
    assert {c for c in classes if f" {c} " not in drawn} == set()
    assert len(classes) > 30
