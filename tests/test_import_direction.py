"""Imports go one way: utils <- models, datasets, evaluation <- engine, deploy <- cli <- scripts, tools, bench.

Every project ``.py`` file is parsed with ``ast``; every ``import x`` / ``from x import y``
counts, including those inside functions and relative ones (resolved against the file's
package), plus ``importlib.import_module("x")`` with a literal name.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("utils", "models", "datasets", "evaluation", "engine", "deploy", "cli")
SCRIPTS = ("train", "val", "predict", "infer", "export_model")
# importer folder -> project packages/scripts it must never import
FORBIDDEN: dict[str, set[str]] = {
    "utils": set(PACKAGES) - {"utils"} | set(SCRIPTS),
    "models": {"datasets", "evaluation", "engine", "deploy", "cli", *SCRIPTS},
    "datasets": {"engine", "deploy", "cli", *SCRIPTS},
    "evaluation": {"engine", "deploy", "cli", *SCRIPTS},
    "engine": {"deploy", "cli", *SCRIPTS},
    "deploy": {"engine", "cli", *SCRIPTS},
    "cli": set(SCRIPTS),
}
# Only these may import the five scripts: the scripts themselves, tools/, bench/, tests/.
MAY_IMPORT_SCRIPTS = {*SCRIPTS, "tools", "bench", "tests"}
SKIP_DIRS = {".venv", ".git", "__pycache__", "node_modules", "output", "data"}


def project_files() -> list[Path]:
    """Every .py file of the repository (not the virtualenv, data or output folders)."""
    files = []
    for path in sorted(REPO_ROOT.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).parts
        if any(p in SKIP_DIRS or p.startswith(".") for p in parts[:-1]):
            continue
        files.append(path)
    return files


def imported_top_levels(source: str, rel_path: Path) -> list[tuple[str, int]]:
    """(top-level module name, line) of every import in ``source`` (a file at ``rel_path`` in the repository).

    Relative imports are resolved against the file's package; ``importlib.import_module``
    calls with a literal (absolute) name count too.
    """
    package = list(rel_path.parts[:-1])
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source, filename=str(rel_path))):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                name = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                name = node.module or ""
            if name:
                found.append((name.split(".")[0], node.lineno))
        elif isinstance(node, ast.Call):
            func = node.func
            is_import_module = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
                isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))
            if is_import_module and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                name = node.args[0].value
                if not name.startswith("."):
                    found.append((name.split(".")[0], node.lineno))
    return found


def owner(rel_path: Path) -> str:
    """The importer's group: its top folder, or the script's name for a file at the top level."""
    return rel_path.parts[0] if len(rel_path.parts) > 1 else rel_path.stem


def violations() -> list[str]:
    """Every import that breaks the direction, as ``path:line: importer imports target``."""
    bad = []
    for path in project_files():
        rel = path.relative_to(REPO_ROOT)
        group = owner(rel)
        forbidden = set(FORBIDDEN.get(group, set()))
        if group not in MAY_IMPORT_SCRIPTS:
            forbidden |= set(SCRIPTS)
        for target, line in imported_top_levels(path.read_text(encoding="utf-8"), rel):
            if target in forbidden and target != group:
                bad.append(f"{rel}:{line}: {group} imports {target}")
    return bad


def test_imports_go_one_way() -> None:
    bad = violations()
    assert not bad, "imports against the direction utils <- models/datasets/evaluation <- engine/deploy <- cli <- scripts:\n" + "\n".join(bad)


def test_the_scan_sees_the_project() -> None:
    """Guard against a vacuous pass: the files and some known imports are found."""
    rels = {p.relative_to(REPO_ROOT).as_posix() for p in project_files()}
    assert {"train.py", "engine/trainer.py", "deploy/export.py", "cli/settings.py", "utils/errors.py"} <= rels
    trainer = imported_top_levels((REPO_ROOT / "engine/trainer.py").read_text(), Path("engine/trainer.py"))
    assert {"datasets", "utils", "engine"} <= {name for name, _ in trainer}


@pytest.mark.parametrize("source, rel, expected", [
    ("def f():\n    from cli.args import x\n", "engine/x.py", "cli"),  # inside a function
    ("import deploy.export as e\n", "engine/x.py", "deploy"),
    ("from .. import args\n", "cli/sub/x.py", "cli"),  # relative, two levels
    ("from . import base\n", "models/attention/x.py", "models"),
    ("import importlib\nm = importlib.import_module('train')\n", "cli/x.py", "train"),
])
def test_imports_are_resolved(source: str, rel: str, expected: str) -> None:
    assert expected in {name for name, _ in imported_top_levels(source, Path(rel))}


def test_a_violation_is_reported(tmp_path: Path, monkeypatch) -> None:
    """The checker flags a function-level import of cli from engine and a script imported by a library."""
    for folder in ("engine", "models"):
        (tmp_path / folder).mkdir()
    (tmp_path / "engine" / "bad.py").write_text("def f():\n    from cli.args import positive_int\n")
    (tmp_path / "models" / "worse.py").write_text("import train\n")
    (tmp_path / "train.py").write_text("import cli.args\n")  # scripts may import anything
    monkeypatch.setattr(sys.modules[__name__], "REPO_ROOT", tmp_path)
    assert violations() == ["engine/bad.py:2: engine imports cli", "models/worse.py:1: models imports train"]
