"""The package's layout: no import circle in cosbuild/ (imports inside functions count too),
the wings import one way only, and the code that runs inside the OS imports light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

# A module imports its own wing and the wings before it, never one after it. The faces at
# the top of cosbuild/ are split: the low ones serve every wing, cli, tasks and plan (the
# CI jobs of the whole pipeline) drive them all.
# oci needs only the low faces; it comes before builds because the build cache (builds/cache)
# looks images up in registries, and before repos and runtime, which read docker
# repositories and container images with it.
WINGS = ("faces-low", "tree", "oci", "builds", "repos", "images", "runtime", "faces-high")
LOW_FACES = {"cosbuild", "cosbuild.arches", "cosbuild.errors", "cosbuild.fsutil", "cosbuild.luetformat", "cosbuild.programs",
             "cosbuild.rootpath", "cosbuild.sandbox", "cosbuild.terminal", "cosbuild.netio",
             "cosbuild.tools", "cosbuild.settings"}
HIGH_FACES = {"cosbuild.cli", "cosbuild.tasks", "cosbuild.plan"}


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package in `root`/`package`."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def module_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its code (functions,
    TYPE_CHECKING blocks), relative imports resolved; `from . import x` counts as an import
    of module x when x is a module, else of the package."""
    files = module_files(root, package)
    graph: dict[str, set[str]] = {name: set() for name in files}

    def add(name: str, target: str) -> None:
        while target and target not in files:   # an attribute: its module
            target = target.rpartition(".")[0]
        if target and target != name:
            graph[name].add(target)

    for name, path in files.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == package:
                        add(name, alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - node.level + 1]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base.split(".")[0] != package:
                    continue
                for alias in node.names:
                    add(name, f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path [a, b, ..., a], or None."""
    state: dict[str, str] = {}   # "open" while on the path, "done" when fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def wing_of(module: str) -> str:
    if module in LOW_FACES:
        return "faces-low"
    if module in HIGH_FACES:
        return "faces-high"
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in WINGS:
        return parts[1]
    if len(parts) == 2 and parts[1] in WINGS:   # a wing's __init__
        return parts[1]
    raise AssertionError(f"{module} is in no wing: add it to WINGS, LOW_FACES or HIGH_FACES")


@pytest.fixture(scope="module")
def graph():
    return module_graph(REPO, "cosbuild")


def test_no_import_circle_in_cosbuild(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_wings_import_one_way(graph):
    rank = {wing: n for n, wing in enumerate(WINGS)}
    wrong = [f"{a} ({wing_of(a)}) imports {b} ({wing_of(b)})"
             for a, targets in sorted(graph.items()) for b in sorted(targets)
             if rank[wing_of(b)] > rank[wing_of(a)]]
    assert not wrong, "\n".join(wrong)


def test_the_graph_sees_imports_inside_functions_and_relative_ones(graph):
    # cli imports the client in its commands only; `from ..oci import registry` names a module
    assert "cosbuild.repos.transaction" in graph["cosbuild.cli"]
    assert "cosbuild.oci.registry" in graph["cosbuild.repos.create"]
    assert "cosbuild.tree.load" in graph["cosbuild.runtime.cloudconfig"]
    assert "cosbuild" in graph["cosbuild.netio"]   # from . import __version__


def test_each_wing_init_is_a_docstring_only():
    for init in sorted((REPO / "cosbuild").glob("*/__init__.py")):
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) \
            and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str), init


def test_the_cycle_finder_finds_a_circle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub import c\n")     # inside a function
    (pkg / "sub" / "c.py").write_text("from .. import b\n")              # a module, relative
    (pkg / "b.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from .a import f\n")                      # not on the circle
    graph = module_graph(tmp_path, "pkg")
    assert graph["pkg.sub.c"] == {"pkg.b"} and graph["pkg.d"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.c", "pkg.b", "pkg.a"]
    (pkg / "b.py").write_text("")
    assert find_cycle(module_graph(tmp_path, "pkg")) is None


def test_the_runtime_imports_light():
    """What runs inside the OS (cos-setup at every boot, also from the initramfs) must not
    load the build side's heavy dependencies."""
    code = ("import sys, cosbuild.runtime.setup, cosbuild.runtime.upgrade, "
            "cosbuild.runtime.installer; "
            "print(sorted(m for m in ('jinja2', 'doit', 'pycdlib', 'sh') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
