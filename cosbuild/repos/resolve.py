"""Solving (luet's solver, simply): the installed-package database of a root, and which
candidates to install for a request, dependencies first, refusing conflicts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import rootpath
from ..errors import CosbuildError
from ..tree import versions
from ..tree.yamlio import dumps, load_mapping
from .index import Candidate

DB_PATH = "var/lib/cosbuild/installed.yaml"


@dataclass
class Installed:
    """The installed-package database of a root (var/lib/cosbuild/installed.yaml)."""
    # id -> {version, repository, files, requires, finalize (command lines), finalized}
    packages: dict[str, dict]

    @classmethod
    def load(cls, root: Path) -> "Installed":
        path = rootpath.resolve(root, DB_PATH, follow_last=True)
        if not path.is_file():
            return cls({})
        return cls({k: dict(v) for k, v in (load_mapping(path).get("packages") or {}).items()})

    def dump(self) -> str:
        return dumps({"packages": self.packages})

    def owners(self) -> dict[str, str]:
        """path -> id of the installed package that owns it."""
        return {path: pkg_id for pkg_id, record in self.packages.items() for path in record["files"]}

    def unfinalized(self) -> list[str]:
        """The packages whose finalizers have not yet all succeeded, dependencies first.
        (A record without `finalized` predates the flag: its finalizers ran.)"""
        order: list[str] = []

        def visit(pkg_id: str, path: tuple[str, ...]) -> None:
            record = self.packages.get(pkg_id)
            if record is None or pkg_id in order or pkg_id in path:
                return
            for dep in record.get("requires") or []:
                visit(dep, (*path, pkg_id))
            if not record.get("finalized", True):
                order.append(pkg_id)

        for pkg_id in self.packages:
            visit(pkg_id, ())
        return order


def choose(ref: versions.PackageRef, candidates: list[Candidate], asked_by: str = "") -> Candidate:
    """Lower repository priority first, then the newest version that satisfies the selector."""
    named = [c for c in candidates if c.id == ref.id
             or any(p.id == ref.id for p in c.definition.provides)]
    ok = [c for c in named if c.id != ref.id or versions.matches(ref.version, c.version)]
    who = f"{asked_by} requires " if asked_by else ""
    if not named:
        raise CosbuildError(f"{who}unknown package {ref.id}: no repository has it",
                            hint="check the name, or `cosbuild search` the repositories")
    if not ok:
        have = ", ".join(sorted({c.version for c in named}, key=versions.sort_key))
        raise CosbuildError(f"{who}{ref}, but no version satisfies it (available: {have})")
    return min(ok, key=lambda c: (c.repo.priority, _newest_first(c.version)))


class _newest_first:
    def __init__(self, version: str):
        self.version = version

    def __lt__(self, other: "_newest_first") -> bool:
        return versions.compare(self.version, other.version) > 0


def plan(requests: list[versions.PackageRef], candidates: list[Candidate],
         installed: Installed) -> list[Candidate]:
    """What to install, dependencies first; refuses conflicts and unsatisfiable requirements."""
    chosen: dict[str, Candidate] = {}
    order: list[Candidate] = []

    def visit(ref: versions.PackageRef, asked_by: str) -> None:
        have = installed.packages.get(ref.id)
        if have and asked_by and versions.matches(ref.version, str(have["version"])):
            return   # a dependency that is already satisfied
        pick = chosen.get(ref.id)
        if pick is not None:
            if not versions.matches(ref.version, pick.version):
                raise CosbuildError(f"{asked_by} requires {ref}, but {pick} is also required")
            return
        pick = choose(ref, candidates, asked_by)
        chosen[ref.id] = pick
        for dep in pick.definition.requires:
            visit(dep, str(pick))
        order.append(pick)

    for ref in requests:
        visit(ref, "")
    everything = {**{k: str(v["version"]) for k, v in installed.packages.items()},
                  **{c.id: c.version for c in order}}
    for c in order:
        for con in c.definition.conflicts:
            if con.id in everything and versions.matches(con.version, everything[con.id]):
                raise CosbuildError(f"{c} conflicts with {con.id}@{everything[con.id]}",
                                    hint="uninstall it first or choose other versions")
    return [c for c in order
            if str(installed.packages.get(c.id, {}).get("version")) != c.version]
