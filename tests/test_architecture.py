"""The import picture (bench -> trainer -> {allocators, lengthctl}, no arrow back) and discovery
that survives a broken method module."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The layers, top to bottom: a package may import the ones below it, never one above it or
# beside it (allocators and lengthctl are side by side: neither imports the other).
LAYERS = [{"bench"}, {"trainer"}, {"allocators", "lengthctl"}, {"core"}]
PACKAGES = sorted(set().union(*LAYERS))
# anywhere in a file, lazy imports included
FORBIDDEN = {package: set().union(*LAYERS[:i]) | (layer - {package})
             for i, layer in enumerate(LAYERS) for package in layer}
FORBIDDEN["allocators"] |= {"torch"}
FORBIDDEN["lengthctl"] |= {"torch"}
FORBIDDEN["core"] |= {"torch"}


def imported_roots(source: str) -> set[str]:
    """Top-level names of every absolute import in ``source``, at any depth of the tree."""
    return {name.split(".")[0] for name in imported_modules(source)}


def imported_modules(source: str) -> set[str]:
    """Every absolute module ``source`` imports, at any depth of the tree; ``from a import b``
    counts as ``a.b`` too (``b`` may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_scanner_sees_lazy_and_from_imports():
    source = textwrap.dedent("""
        import numpy as np, os.path
        from . import sibling
        def later():
            from bench.presets import PRESETS
            import torch.nn
    """)
    assert imported_roots(source) == {"numpy", "os", "bench", "torch"}


def test_the_layers_forbid_up_and_sideways():
    assert FORBIDDEN["core"] == {"bench", "trainer", "allocators", "lengthctl", "torch"}
    assert FORBIDDEN["allocators"] == {"bench", "trainer", "lengthctl", "torch"}
    assert FORBIDDEN["lengthctl"] == {"bench", "trainer", "allocators", "torch"}
    assert FORBIDDEN["trainer"] == {"bench"} and FORBIDDEN["bench"] == set()


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_one_way(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    offences = [f"{path.relative_to(ROOT)} imports {name}"
                for path in files
                for name in sorted(imported_roots(path.read_text()) & FORBIDDEN[package])]
    assert offences == []


def module_graph(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: modules of the same package it imports}``, lazy imports included (a package's
    ``__init__`` is the module ``package``)."""
    files = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return {module: {m for m in imported_modules(path.read_text()) if m in files and m != module}
            for module, path in files.items()}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (its modules, the first repeated at the end), or None.
    A package's ``__init__`` importing its own modules is not a circle by itself: modules
    reach their registry through it, so edges into a package's ``__init__`` are left out."""
    graph = {m: {t for t in targets if "." in t} for m, targets in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_circle_finder_sees_a_lazy_circle_and_not_a_registry(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from pkg.base import Base\n")
    (pkg / "base.py").write_text("X = 1\n")
    (pkg / "method.py").write_text("from pkg import register\nfrom pkg.base import X\n")
    assert find_circle(module_graph("pkg", tmp_path)) is None
    (pkg / "base.py").write_text("def f():\n    from pkg.method import X\n")
    assert find_circle(module_graph("pkg", tmp_path)) == ["pkg.base", "pkg.method", "pkg.base"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle_inside_a_package(package):
    assert find_circle(module_graph(package)) is None


BLOCKER = textwrap.dedent("""
    import importlib.abc, pkgutil, sys

    BLOCKED = ("torch", "trainer", "bench")

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocker())
    import allocators, lengthctl
    methods, rules = allocators.available(), lengthctl.available()
    errors = {**allocators.import_errors(), **lengthctl.import_errors()}
    modules = [f"{pkg.__name__}.{m.name}" for pkg in (allocators, lengthctl)
               for m in pkgutil.iter_modules(pkg.__path__)]
    missing = [m for m in modules if m not in sys.modules]
    leaked = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
    print(repr((methods, rules, errors, missing, leaked)))
""")


def test_method_modules_import_without_torch_trainer_or_bench():
    done = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr
    methods, rules, errors, missing, leaked = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert errors == {} and missing == [] and leaked == []
    assert {"grpo", "dapo", "duet", "vip", "knapsack", "coba", "pilot-commit"} <= set(methods)
    assert {"max_len", "duet"} <= set(rules)


@pytest.fixture
def broken_allocators(tmp_path, monkeypatch):
    """``allocators`` with two extra modules on its path: one whose dependency is missing and
    one with a syntax error; discovery starts afresh."""
    import allocators
    (tmp_path / "needs_missing_dep.py").write_text(
        "import no_such_dependency_for_allocbench\n"
        "from allocators import register\n")
    (tmp_path / "typo_method.py").write_text("def plan(:\n")
    monkeypatch.setattr(allocators, "__path__", [*allocators.__path__, str(tmp_path)])
    monkeypatch.setattr(allocators, "_DISCOVERED", False)
    monkeypatch.setattr(allocators, "_IMPORT_ERRORS", {})
    return allocators


def test_a_broken_method_module_is_reported_and_the_others_still_load(broken_allocators):
    allocators = broken_allocators
    assert allocators.get("grpo").name == "grpo"
    errors = allocators.import_errors()
    assert set(errors) == {"allocators.needs_missing_dep", "allocators.typo_method"}
    assert errors["allocators.needs_missing_dep"] == \
        "ModuleNotFoundError: No module named 'no_such_dependency_for_allocbench'"
    assert errors["allocators.typo_method"].startswith("SyntaxError")
    with pytest.raises(KeyError) as info:
        allocators.get("needs-missing-dep")
    message = info.value.args[0]
    assert message.startswith("unknown method 'needs-missing-dep'; known: grpo, ")
    assert "not loaded: allocators.needs_missing_dep (ModuleNotFoundError" in message


def test_the_cli_names_the_broken_module(broken_allocators, capsys):
    from bench.run import main
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert "not loaded: allocators.needs_missing_dep: ModuleNotFoundError" in listed
    assert "  grpo " in listed
    assert main(["--methods", "needs-missing-dep", "--preset", "smoke"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_dependency_for_allocbench" in err[0]


def test_a_broken_length_rule_leaves_the_others(tmp_path, monkeypatch):
    import lengthctl
    (tmp_path / "broken_rule.py").write_text("raise RuntimeError('half-written rule')\n")
    monkeypatch.setattr(lengthctl, "__path__", [*lengthctl.__path__, str(tmp_path)])
    monkeypatch.setattr(lengthctl, "_DISCOVERED", False)
    monkeypatch.setattr(lengthctl, "_IMPORT_ERRORS", {})
    assert lengthctl.get("max_len").name == "max_len"
    assert lengthctl.import_errors() == {"lengthctl.broken_rule": "RuntimeError: half-written rule"}
    with pytest.raises(KeyError, match="not loaded: lengthctl.broken_rule"):
        lengthctl.get("broken-rule")
