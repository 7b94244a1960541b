"""Solving (luet's solver, simply): the installed-package database of a root, and which
candidates to install for a request, dependencies first, refusing conflicts.

A package that requires itself (in any version it satisfies) needs nothing more, and
packages that require each other are installed together: as luet, cycles are not errors.
Requirement chains are walked without recursion, however deep."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import rootpath
from ..errors import CosbuildError
from ..tree import spec, versions
from ..tree.yamlio import dumps, load_mapping, loads, plain
from .index import Candidate

DB_PATH = "var/lib/cosbuild/installed.yaml"
DB_DAMAGED = "the package database is damaged: restore it, or remove it to forget what is " \
             "installed (the files stay)"


def _commands(value, where: spec.Where) -> tuple[tuple[str, ...], ...]:
    if not isinstance(value, list):
        raise where.error("expected a list of command lines")
    out = tuple(spec.STRS.parse(c, where) for c in value)
    if not all(out):
        raise where.error("an empty command line")
    return out


# a package's record in the database, as the transaction writes it
DB_RECORD = (
    spec.Keyword("version", spec.STR, None, "the installed version", required=True),
    spec.Keyword("repository", spec.STR, "", "the repository it came from"),
    spec.Keyword("files", spec.STRS, (), "its files and links (absolute paths)"),
    spec.Keyword("requires", spec.STRS, (), "the packages it requires (category/name)"),
    spec.Keyword("finalize", spec.Type("list of command lines", _commands), (),
                 "its finalizers' command lines"),
    # a record without it predates the flag: its finalizers ran
    spec.Keyword("finalized", spec.BOOL, True, "whether they all succeeded"),
)


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
        try:
            return cls.parse(load_mapping(path), path)
        except CosbuildError as exc:   # not YAML, not UTF-8, not the format
            raise CosbuildError(exc.message, file=exc.file or path, line=exc.line,
                                key=exc.key, hint=DB_DAMAGED) from None

    @classmethod
    def parse(cls, data, where: str | Path) -> "Installed":
        """The database as read (a mapping), checked against DB_RECORD."""
        if not isinstance(data, dict):
            raise CosbuildError("expected a mapping at the top level", file=where)
        packages = data.get("packages") or {}
        if not isinstance(packages, dict):
            raise CosbuildError("expected a mapping of packages", file=where, key="packages")
        out = {}
        for pkg_id, record in packages.items():
            key = f"packages.{pkg_id}"
            if not (isinstance(pkg_id, str) and pkg_id.count("/") == 1):
                raise CosbuildError("not a package name (category/name)", file=where, key=key)
            if not isinstance(record, dict):
                raise CosbuildError("expected a mapping {version, files, ...}", file=where,
                                    key=key)
            out[pkg_id] = plain(spec.parse(DB_RECORD, record, where,
                                           what=f"the record of {pkg_id}", strict=False,
                                           key_prefix=f"{key}."))
        return cls(out)

    @classmethod
    def loads(cls, text: str, where: str | Path) -> "Installed":
        return cls.parse(loads(text, where) or {}, where)

    def dump(self) -> str:
        return dumps({"packages": self.packages})

    def owners(self) -> dict[str, str]:
        """path -> id of the installed package that owns it."""
        return {path: pkg_id for pkg_id, record in self.packages.items() for path in record["files"]}

    def unfinalized(self) -> list[str]:
        """The packages whose finalizers have not yet all succeeded, dependencies first."""
        order: list[str] = []
        seen: set[str] = set()
        for start in self.packages:
            todo = [(start, False)]   # (package, whether its requirements are done)
            while todo:
                pkg_id, ready = todo.pop()
                if ready:
                    if not self.packages[pkg_id]["finalized"]:
                        order.append(pkg_id)
                elif pkg_id not in seen and pkg_id in self.packages:
                    seen.add(pkg_id)
                    todo.append((pkg_id, True))
                    requires = self.packages[pkg_id]["requires"]
                    todo.extend((dep, False) for dep in reversed(requires))
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
    first = min(c.repo.priority for c in ok)
    return max((c for c in ok if c.repo.priority == first),
               key=lambda c: versions.sort_key(c.version))


def plan(requests: list[versions.PackageRef], candidates: list[Candidate],
         installed: Installed) -> list[Candidate]:
    """What to install, dependencies first; refuses conflicts and unsatisfiable requirements."""
    chosen: dict[str, Candidate] = {}
    order: list[Candidate] = []
    # (reference, who asks, its pick once its requirements are on the stack)
    todo: list[tuple[versions.PackageRef, str, Candidate | None]] = \
        [(ref, "", None) for ref in reversed(requests)]
    while todo:
        ref, asked_by, done = todo.pop()
        if done is not None:   # its requirements are in `order`
            order.append(done)
            continue
        have = installed.packages.get(ref.id)
        if have and asked_by and versions.matches(ref.version, have["version"]):
            continue   # a dependency that is already satisfied
        pick = chosen.get(ref.id)
        if pick is not None:   # also when it requires itself, or a cycle closes
            if not versions.matches(ref.version, pick.version):
                raise CosbuildError(f"{asked_by} requires {ref}, but {pick} is also required")
            continue
        pick = choose(ref, candidates, asked_by)
        chosen[ref.id] = pick
        todo.append((ref, asked_by, pick))
        todo.extend((dep, str(pick), None) for dep in reversed(pick.definition.requires))
    everything = {**{k: str(v["version"]) for k, v in installed.packages.items()},
                  **{c.id: c.version for c in order}}
    for c in order:
        for con in c.definition.conflicts:
            if con.id in everything and versions.matches(con.version, everything[con.id]):
                raise CosbuildError(f"{c} conflicts with {con.id}@{everything[con.id]}",
                                    hint="uninstall it first or choose other versions")
    return [c for c in order
            if str(installed.packages.get(c.id, {}).get("version")) != c.version]
