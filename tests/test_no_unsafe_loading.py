"""No code path may run code from a user's file: a static scan of every project .py file.

User files are read as JSON (``json``), YAML (``yaml.safe_load``), images, or checkpoints
through the restricted readers (``utils.pth_io`` for PyTorch files, ``utils.paddle_io`` for
Paddle files). The calls below can execute code hidden in a file (pickle's REDUCE, YAML's
python tags) or are ``eval``/``exec``; each is found with ``ast`` (imports and aliases
resolved, so ``from pickle import loads as l`` is caught too) and refused outside ALLOWED.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Fully qualified callables that may run code from the data they read.
BANNED = {
    "eval", "exec", "builtins.eval", "builtins.exec",
    "yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all",
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "_pickle.Unpickler",
    "marshal.load", "marshal.loads", "shelve.open", "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads",
    "joblib.load", "pandas.read_pickle", "torch.load",
    "paddle.load", "paddle.framework.load", "paddle.static.load", "paddle.fluid.io.load",
}
NUMPY_LOAD = {"numpy.load"}  # banned only with allow_pickle other than a literal False

# (path prefix, call) -> why it is safe. Keep this minimal.
ALLOWED: dict[tuple[str, str], str] = {
    # Tests read back files they wrote themselves a moment earlier (tmp_path, the fixture's
    # training run), to compare with or to tamper with: never a user's file.
    ("tests/", "paddle.load"): "tests read only checkpoints the tests themselves wrote",
    # Fills copyreg's extension cache from a literal byte string (2 opcodes naming
    # os.system, never called) to prove the restricted reader still refuses it.
    ("tests/utils/test_pth_io.py", "pickle.loads"): "a literal 6-byte pickle built by the test",
    # Times paddle.load against the safe reader on a checkpoint it has just saved itself
    # into a temporary folder.
    ("bench/load_speed.py", "paddle.load"): "the benchmark's own freshly written temporary file",
}
# The checkpoint readers may unpickle only inside their own restricted pickle.Unpickler subclass
# (whose find_class is the allow-list); nowhere else, not even in these files.
RESTRICTED_UNPICKLER_FILES = {"utils/paddle_io.py", "utils/pth_io.py", "utils/safe_pickle.py"}


def project_files() -> list[Path]:
    """Every .py file of the project (not .venv, .git, caches or other hidden folders)."""
    skip = {"__pycache__", "node_modules", "build", "dist", "venv"}
    return sorted(p for p in REPO_ROOT.rglob("*.py")
                  if not any(part.startswith(".") or part in skip for part in p.relative_to(REPO_ROOT).parts[:-1]))


def import_aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> fully qualified name, from every import statement in ``tree``."""
    aliases = {"np": "numpy"}  # conventional even if imported inside a function
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def qualified_name(func: ast.expr, aliases: dict[str, str]) -> str | None:
    """``a.b.c`` of a call's function with its first name resolved through the imports."""
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    parts.append(aliases.get(func.id, func.id))
    return ".".join(reversed(parts))


def inside_restricted_unpickler(tree: ast.Module, call: ast.Call) -> bool:
    """Whether ``call`` lies in a class deriving from ``pickle.Unpickler``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(ast.unparse(b) in ("pickle.Unpickler", "Unpickler") for b in node.bases):
            if any(inner is call for inner in ast.walk(node)):
                return True
    return False


def unsafe_calls(path: Path, root: Path = REPO_ROOT, allowed: dict[tuple[str, str], str] | None = None) -> list[str]:
    """``path:line: call`` for every banned call in ``path`` (under ``root``) not covered by
    ``allowed`` (default ALLOWED; pass {} to list every banned call)."""
    allowed = ALLOWED if allowed is None else allowed
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    aliases = import_aliases(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = qualified_name(node.func, aliases)
        if name in NUMPY_LOAD:
            flag = next((k.value for k in node.keywords if k.arg == "allow_pickle"), None)
            if flag is None or (isinstance(flag, ast.Constant) and flag.value is False):
                continue
        elif name not in BANNED:
            continue
        if any(rel.startswith(prefix) and name == call for prefix, call in allowed):
            continue
        if rel in RESTRICTED_UNPICKLER_FILES and inside_restricted_unpickler(tree, node):
            continue
        found.append(f"{rel}:{node.lineno}: {name}")
    return found


def test_the_scanner_finds_every_form(tmp_path: Path) -> None:
    """The scan itself works: aliases, from-imports and numpy's allow_pickle are caught."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import yaml\nimport pickle as pk\nimport numpy as np\nimport paddle\nfrom marshal import loads as ml\n"
        "yaml.load(s)\npk.loads(b)\nnp.load(f, allow_pickle=True)\npaddle.load(p)\nml(b)\neval('1')\nexec('x=1')\n"
        "yaml.safe_load(s)\nnp.load(f)\nnp.load(f, allow_pickle=False)\nmodel.eval()\n")
    found = [line.split(": ", 1)[1] for line in unsafe_calls(bad, tmp_path)]
    assert found == ["yaml.load", "pickle.loads", "numpy.load", "paddle.load", "marshal.loads", "eval", "exec"]


def test_no_unsafe_loading_in_the_project() -> None:
    files = project_files()
    assert REPO_ROOT / "cli" / "args.py" in files and not any(".venv" in p.parts for p in files)
    found = [hit for path in files for hit in unsafe_calls(path)]
    assert not found, ("calls that can run code from a file (read JSON with json, YAML with yaml.safe_load, "
                       "checkpoints with utils.paddle_io / utils.pth_io):\n  " + "\n  ".join(found))


def test_allow_list_is_minimal() -> None:
    """Every ALLOWED entry still matches a call: a stale entry must be deleted, not kept "just in case"."""
    every = [hit for path in project_files() for hit in unsafe_calls(path, allowed={})]
    for prefix, call in ALLOWED:
        assert any(hit.startswith(prefix) and hit.endswith(f": {call}") for hit in every), \
            f"ALLOWED entry ({prefix!r}, {call!r}) matches nothing any more: remove it"
