"""The package layering holds: imports run down the floors, never up, none hides inside a
function, and no module imports itself back through others. Imports are read from the source."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "harmcore"

# Bottom to top: a package may import its own floor's modules and any floor below it.
FLOORS = {
    "__init__": 0,  # harmcore/__init__.py: the version only
    "conf": 0,  # the YAML config groups (a package only so that it is installed)
    "errors": 0,
    "files": 0,
    "cache_entries": 0,  # the promise of a cache entry and its check
    "inputs": 0,  # the user's files: read with one-line errors, known by content
    "data": 1,
    "core": 2,
    "generation": 3,
    "training": 4,
    "models": 5,
    "measure": 6,
    "report": 7,
    "run": 8,
    "__main__": 8,  # python -m harmcore: the `harmcore` command
}
# The `harmcore` command answers --help before it imports the job machinery (torch, Hydra).
LAZY_IMPORTS = {"harmcore.run.console"}
HYDRA_PACKAGES = ("hydra", "omegaconf")  # only run/ knows Hydra


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package at `root`."""
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 2:
            parts.pop()
        out[".".join(parts)] = path
    return out


def floor_of(module: str) -> int:
    return FLOORS[module.split(".")[1]]


def imports_of(path: Path, known: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"  # `from pkg import module` imports the module
                out.append((sub if sub in known else node.module, node.lineno, id(node) in top))
    return out


def upward_imports(root: Path) -> list[str]:
    known = modules(root)
    return [
        f"{module}:{line} imports {name}"
        for module, path in known.items()
        for name, line, _ in imports_of(path, known)
        if name in known and floor_of(name) > floor_of(module)
    ]


def local_imports(root: Path) -> list[str]:
    known = modules(root)
    return [
        f"{module}:{line} imports {name} inside a function"
        for module, path in known.items()
        for name, line, at_top in imports_of(path, known)
        if name.split(".")[0] == root.name and not at_top and module not in LAZY_IMPORTS
    ]


def cycles(root: Path) -> list[str]:
    known = modules(root)
    graph = {m: {n for n, _, _ in imports_of(p, known) if n in known and n != m} for m, p in known.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    found = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                found.append(" -> ".join([*path[path.index(n) :], n] if n in path else [*path, n]))
            elif n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def test_every_module_belongs_to_a_floor():
    assert sorted(m for m in modules(ROOT) if m.split(".")[1] not in FLOORS) == []


def test_imports_never_go_up_a_floor():
    assert upward_imports(ROOT) == []


def test_harmcore_imports_are_at_module_level():
    assert local_imports(ROOT) == []


def test_no_import_cycles():
    assert cycles(ROOT) == []


def test_only_run_knows_hydra():
    known = modules(ROOT)
    found = [
        f"{module}:{line} imports {name}"
        for module, path in known.items()
        if not module.startswith("harmcore.run")
        for name, line, _ in imports_of(path, known)
        if name.split(".")[0] in HYDRA_PACKAGES
    ]
    assert found == []


@pytest.mark.parametrize("package", sorted(p for p in FLOORS if (ROOT / p).is_dir()))
def test_each_package_says_what_it_is_and_what_it_may_import(package):
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text(encoding="utf-8")))
    assert doc and "May import" in doc, f"harmcore/{package}/__init__.py: say what it is and what it may import"


def test_the_checks_find_what_they_look_for(tmp_path):
    """A made-up package with an upward import, a cycle and a hidden import: each check reports it."""
    pkg = tmp_path / "harmcore"
    for sub in ("core", "run"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from harmcore.run import b\n")  # up: core -> run
    (pkg / "run" / "b.py").write_text("from harmcore.run.c import x\n")
    (pkg / "run" / "c.py").write_text("def f():\n    from harmcore.run import b\n")  # b -> c -> b, hidden
    assert upward_imports(pkg) == ["harmcore.core.a:1 imports harmcore.run.b"]
    assert local_imports(pkg) == ["harmcore.run.c:2 imports harmcore.run.b inside a function"]
    assert cycles(pkg) == ["harmcore.run.b -> harmcore.run.c -> harmcore.run.b"]
