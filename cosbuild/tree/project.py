"""A loaded project: settings -> tree -> rendered specs -> resolved graph.

Loading renders every package, which is most of the cost of a no-op `doit build`. The
result is therefore cached in build/.cache/, keyed by the stat data (size, mtime, inode,
mode) of every tree file, values file and cosbuild module, like make and doit decide
up-to-dateness; `cosbuild validate` always loads afresh.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

from ..fsutil import atomic_write
from ..settings import Settings
from .graph import Graph, build_graph
from .load import Tree, load_trees

CACHE_NAME = "project.pickle"


@dataclass(frozen=True)
class Project:
    settings: Settings
    tree: Tree
    graph: Graph


def load_project(settings: Settings, *, use_cache: bool = False) -> Project:
    cache = settings.build_dir / ".cache" / CACHE_NAME
    fingerprint = _fingerprint(settings) if use_cache else ""
    if use_cache:
        cached = _read_cache(cache, fingerprint)
        if cached is not None:
            return Project(settings, *cached)
    from .render import Renderer, load_values_files   # not needed on a cache hit
    tree = load_trees(list(settings.trees))
    renderer = Renderer(tree.templates, load_values_files(list(settings.values)),
                        cache_dir=settings.build_dir / ".cache" / "jinja",
                        engine=settings.template_engine, packages=tree.packages,
                        roots=settings.trees)
    project = Project(settings, tree, build_graph(tree, renderer))
    if use_cache:
        atomic_write(cache, pickle.dumps((fingerprint, project.tree, project.graph)))
    return project


def _read_cache(path: Path, fingerprint: str):
    try:
        stored, tree, graph = pickle.loads(path.read_bytes())
    except (OSError, pickle.PickleError, EOFError, ValueError, TypeError, AttributeError,
            ImportError):
        return None   # missing or from another cosbuild: load afresh
    return (tree, graph) if stored == fingerprint else None


def _fingerprint(settings: Settings) -> str:
    h = hashlib.sha256(repr(settings).encode())
    code = Path(__file__).parent   # cosbuild's own modules (not their __pycache__)
    for path in [*settings.values, *sorted(code.glob("*.py"))]:
        h.update(_stat_line(path))
    roots = list(settings.trees)
    todo = [str(root) for root in roots]
    while todo:   # os.scandir: the stat data comes with the listing, no Path objects
        here = todo.pop()
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError:
            h.update(f"{here}:missing\n".encode())
            continue
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            h.update(f"{entry.path}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_mode}\n".encode())
            if entry.is_dir(follow_symlinks=False):
                todo.append(entry.path)
    return h.hexdigest()


def _stat_line(path: Path) -> bytes:
    try:
        st = os.lstat(path)
    except OSError:
        return f"{path}:missing\n".encode()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_mode}\n".encode()
