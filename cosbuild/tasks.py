"""doit tasks generated from the project graph; used by dodo.py and by `cosbuild run/list`.

Every task declares real file dependencies and an `uptodate` check on the package's build
hash, so doit redoes only what changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from doit.tools import config_changed

from .errors import CosbuildError
from .fsutil import atomic_write
from .project import Project, load_project
from . import settings
from .settings import Settings


def spec_path(project: Project, key: str) -> Path:
    return project.settings.specs_dir / f"{project.graph.packages[key].artifact_stem}.yaml"


def _validate(settings: Settings) -> None:
    project = load_project(settings)   # fresh: validation must see the files as they are now
    print(f"{len(project.graph.packages)} packages, {len(project.tree.templates)} templates: ok")


def _write_spec(path: Path, text: str) -> None:
    atomic_write(path, text)


def task_definitions(project: Project) -> dict:
    """The task_* functions and DOIT_CONFIG of a doit namespace for this project."""
    graph = project.graph

    def task_validate():
        """Load, render and resolve the whole tree (cosbuild validate)."""
        every = sorted({str(f) for p in graph.packages.values() for f in p.files}
                       | {str(p) for p in (*project.settings.values, *project.tree.templates)})
        return {"actions": [(_validate, [project.settings])], "file_dep": every,
                "verbosity": 2}

    def task_render():
        """Write each package's rendered build spec to build/specs/."""
        for key in graph.order:
            pkg = graph.packages[key]
            target = spec_path(project, key)
            yield {"name": graph.task_name(key),
                   "doc": f"render {key}",
                   "actions": [(_write_spec, [target, pkg.rendered.text])],
                   # values files and templates matter only through the rendered text,
                   # which the build hash covers: a values key a package does not use
                   # must not re-run it
                   "file_dep": [str(f) for f in pkg.files],
                   "targets": [str(target)],
                   "uptodate": [config_changed(pkg.hash)],
                   "clean": True}

    return {"task_validate": task_validate, "task_render": task_render,
            "DOIT_CONFIG": {"dep_file": str(project.settings.build_dir / ".doit.db"),
                            "backend": "sqlite3", "default_tasks": ["validate"],
                            "verbosity": 1}}


def dodo_namespace(options: dict | None = None, doit_vars: dict | None = None) -> dict:
    """Load the project for a dodo file; a user mistake ends the run with its message."""
    try:
        config = settings.resolve(options, doit_vars=doit_vars)
        project = load_project(config)
    except CosbuildError as exc:
        print(f"cosbuild: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    config.build_dir.mkdir(parents=True, exist_ok=True)
    return task_definitions(project)
