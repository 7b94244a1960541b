"""A loaded project: settings -> tree -> rendered specs -> resolved graph.

Loading renders every package, which is most of the cost of a no-op `doit build`. The
result is therefore cached in build/.cache/, keyed by the stat data (size, mtime, inode,
mode) of every tree file, values file and cosbuild module, like make and doit decide
up-to-dateness; `cosbuild validate` always loads afresh. A pickle runs code when loaded and
the build folder may come from elsewhere, so the cache is sealed (see sealed.py): a cache
whose MAC does not match the user's key is never unpickled.

A load with an error Collector does not stop at the first broken package: the project then
holds what loaded, rendered and resolved, and the collector the rest (never cached).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from ..errors import Collector, CosbuildError
from ..settings import Settings
from .graph import Graph, RemoteSource, Resolver, build_graph
from .load import TEMPLATES, Tree, load_trees
from .sealed import cache_key, read_sealed, write_sealed
from .versions import PackageRef

if TYPE_CHECKING:
    from .render import Renderer
    from .spec import Rendered

CACHE_NAME = "project.pickle"


@dataclass(frozen=True)
class Project:
    settings: Settings
    tree: Tree
    graph: Graph


def load_project(settings: Settings, *, use_cache: bool = False,
                 errors: Collector | None = None, remote: RemoteSource | None = None) -> Project:
    """The whole project; with `errors`, as much of it as works (see the module doc).
    `remote`: the build repositories missing build deps come from (their index is part of
    the cache key, so a new upstream release is seen)."""
    use_cache = use_cache and errors is None
    cache = settings.build_dir / ".cache" / CACHE_NAME
    fingerprint = _fingerprint(settings) + (remote.fingerprint() if remote else "") \
        if use_cache else ""
    key = cache_key() if use_cache else None
    use_cache = key is not None
    if use_cache:
        cached = _read_cache(cache, fingerprint, key)
        if cached is not None:
            return Project(settings, *cached)
    tree = load_trees(list(settings.trees), errors)
    renderer = _renderer(settings, tree, errors)
    # without a renderer (its mistake is collected) nothing renders: an empty graph
    graph = build_graph(tree if renderer else Tree((), ()), renderer, errors, remote, settings.arch)
    project = Project(settings, tree, graph)
    if use_cache:
        write_sealed(cache, pickle.dumps((fingerprint, project.tree, project.graph)), key)
    return project


def render_package(settings: Settings, ref: PackageRef) -> "Rendered":
    """One package rendered: it needs only its own files (and the templates and values),
    so an unrelated broken package does not stop it."""
    errors = Collector()
    tree = load_trees(list(settings.trees), errors)
    shared = {str(root / TEMPLATES) for root in settings.trees}
    if any(e.file and os.path.dirname(e.file) in shared for e in errors.errors):
        errors.raise_if_any()   # every package renders with the shared templates
    try:
        key = Resolver(tree.packages).key(ref)
    except CosbuildError as exc:
        errors.add(exc)   # with the load errors: one of them may be why it is missing
        errors.raise_if_any()
    renderer = _renderer(settings, tree, None)
    return renderer.render(next(s for s in tree.packages if s.key == key))


def _renderer(settings: Settings, tree: Tree, errors: Collector | None) -> "Renderer | None":
    """The renderer of the tree's templates and the values files; a mistake in those fails
    every package, so with `errors` it is collected and there is no renderer."""
    from .render import Renderer, load_values_files   # not needed on a cache hit
    try:
        return Renderer(tree.templates, load_values_files(list(settings.values)),
                        defaults=builtin_values(settings),
                        cache_dir=settings.build_dir / ".cache" / "jinja",
                        engine=settings.template_engine, packages=tree.packages,
                        roots=settings.trees)
    except CosbuildError as exc:
        if errors is None:
            raise
        errors.add(exc)
        return None


def builtin_values(settings: Settings) -> dict:
    """The values cosbuild gives every template, below the definition's and the values
    files' own (luet gives none: a tree that sets `arch` itself keeps its value)."""
    return {"arch": settings.arch}


def _read_cache(path: Path, fingerprint: str, key: bytes):
    data = read_sealed(path, key)
    if data is None:
        return None
    try:
        stored, tree, graph = pickle.loads(data)
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
