"""The resolved build graph: which package builds on which, in what order, with what hash.

Build deps come from `requires`, `requires_final_images`/`join`, `copy.package` and
`retrieve` (artifact names matched against other packages' artifact files). The build hash
covers the rendered spec, the bytes and normalized modes of every file of the package
folder (relative paths), the deps' build hashes and the image the build starts from, so it
is the same on every machine and checkout and changes exactly when the package or
something it builds on changes.

A build with `requires` and no image source of its own starts from luet 0.20's chain
(compiler.go, `compile`): every package of its transitive build requires, in luet's order
(`luet_order`), is built again on the package image of the one before it, unless it has an
image source of its own (then it starts from that and the packages before it only order the
build). Each image of the chain is tagged by the hash of its package and of the image below.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections import deque
import json
import os
import re
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .. import arches
from ..errors import Collector, CosbuildError, did_you_mean
from . import versions
from .load import PackageSource, Tree, context_files
from .spec import BuildSpec, Finalize, Rendered, Where, file_name
from .versions import PackageRef

if TYPE_CHECKING:
    from .render import Renderer

HASH_SCHEMA = "cosbuild-build-hash-2"   # bump when the hash recipe changes
# luet builds every image of a chain again for each package on it: a chain this deep is
# already days of builds (and a tree's chains are a handful of images)
MAX_CHAIN = 500
ARTIFACT_SUFFIX = ".package.tar.zst"
REMOTE_RENDERED = Rendered("", {}, BuildSpec(), Finalize(), "", "remote")


def artifact_stem(source: PackageSource) -> str:
    """`name-category-version`, the start of every file name of a package in the build folder
    (spec, artifact, metadata, log); its parts were checked when parsed, this checks the whole."""
    d = source.definition
    return file_name(f"{d.name}-{d.category}-{d.version}",
                     Where(str(source.declared_in), None, source.key))


class RemoteSource(Protocol):
    """The build repositories (made by repos.remote: this wing only reads what they offer)."""

    def names(self) -> tuple[str, ...]: ...

    def fingerprint(self) -> str: ...

    def packages(self) -> list[tuple[PackageSource, Remote]]: ...


@dataclass(frozen=True)
class ChainStep:
    """One image of a build chain: package `key` built on the image tagged `base` (None: on
    its own image source, as by its own build) into the image tagged `tag`."""
    key: str
    base: str | None
    tag: str


@dataclass(frozen=True)
class Remote:
    """A package no local tree provides, taken from a build repository: its built artifact
    (and the image it was built into, luet's `package_cacheimage`), nothing to build."""
    repo: str
    url: str
    artifact: str        # its file name in the repository
    sha256: str
    cache_image: str = ""
    files: tuple[str, ...] = ()
    compression: str = "zstd"   # of its artifact in the repository (luet's compressiontype)
    size: int | None = None     # of its artifact, as the index records (bounds its download)


@dataclass(frozen=True)
class Package:
    source: PackageSource
    rendered: Rendered = field(repr=False)
    build_deps: tuple[str, ...] = ()     # keys (category/name@version) of resolved build deps
    files: tuple[str, ...] = ()          # the build context, sorted
    hash: str = ""
    content: str = ""                    # digest of the spec and the files alone
    chain: tuple[ChainStep, ...] = ()    # the images below this build (requires, no image source)
    remote: Remote | None = None         # taken from a build repository, not built here

    @property
    def id(self) -> str:
        return self.source.id

    @property
    def key(self) -> str:
        return self.source.key

    @property
    def version(self) -> str:
        return self.source.version

    @property
    def definition(self):
        return self.source.definition

    @property
    def artifact_stem(self) -> str:
        return artifact_stem(self.source)

    @property
    def artifact_file(self) -> str:
        return f"{self.artifact_stem}{ARTIFACT_SUFFIX}"

    @property
    def metadata_file(self) -> str:
        return f"{self.artifact_stem}.metadata.yaml"

    @property
    def needs_images(self) -> bool:
        """A package with no image source (and so no steps) needs no container at all."""
        b = self.rendered.build
        return bool(b.image or b.bootstrap or b.requires or b.join)

    @property
    def own_source(self) -> bool:
        """Whether the build starts from an image of its own rather than from a chain (a
        remote package's image is the one it was built into)."""
        b = self.rendered.build
        return bool(self.remote or b.image or b.bootstrap or b.final_image_deps)

    @property
    def chain_requires(self) -> tuple:
        """The requires luet chains: none for a final-images build (luet 0.20.12 and later
        take its requires out of every dependency tree: they make its image, not a chain)."""
        b = self.rendered.build
        return () if b.final_image_deps else b.requires


@dataclass(frozen=True)
class Graph:
    packages: dict[str, Package]    # by key
    order: tuple[str, ...]          # keys, deps first
    latest: dict[str, str]          # id -> key of its newest version
    resolver: "Resolver" = field(repr=False, compare=False, default=None)

    def resolve(self, ref: PackageRef, asked_by: str = "") -> Package:
        key = self.resolver.key(ref, asked_by)
        if key not in self.packages:   # loaded, but left out of a graph built with errors
            raise CosbuildError(f"{key} is not in the graph: it or a package it builds on "
                                "failed (see the errors)")
        return self.packages[key]

    def task_name(self, key: str) -> str:
        """`category/name` for the newest version, `category/name@version` for older ones."""
        pkg = self.packages[key]
        return pkg.id if self.latest[pkg.id] == key else key

    def image_used(self, key: str) -> bool:
        """Whether a package builds on this one's image (a chain, or a copy from it)."""
        return any(step.key == key for p in self.packages.values() for step in p.chain) or any(
            c.package and self.resolver.key(c.package) == key
            for p in self.packages.values() for c in p.rendered.build.copy)

    def reverse_deps(self, key: str) -> set[str]:
        out, todo = set(), [key]
        while todo:
            current = todo.pop()
            for other in self.packages.values():
                if current in other.build_deps and other.key not in out:
                    out.add(other.key)
                    todo.append(other.key)
        return out


class Resolver:
    """Selector resolution over a set of packages: the newest satisfying version wins."""

    def __init__(self, sources, repositories: tuple[str, ...] = ()):
        self.repositories = repositories   # the build repositories also searched (for errors)
        self.by_key = {s.key: s for s in sources}
        self.versions: dict[str, dict[str, str]] = {}   # id -> version -> key
        for s in sources:
            self.versions.setdefault(s.id, {})[s.version] = s.key

    def key(self, ref: PackageRef, asked_by: str = "") -> str:
        candidates = self.versions.get(ref.id, {})
        chosen = versions.newest(ref.version, candidates)
        if chosen is None:
            who = f"{asked_by} requires " if asked_by else ""
            available = ", ".join(sorted(candidates, key=versions.sort_key)) or "none"
            searched = (f"; searched the trees and the build repositories "
                        f"{', '.join(self.repositories)}" if self.repositories else "")
            raise CosbuildError(f"{who}{ref}, but no version satisfies it "
                                f"(available versions of {ref.id}: {available}{searched})",
                                hint=(None if candidates else did_you_mean(ref.id, self.versions))
                                or "fix the selector or add the package to a tree")
        return candidates[chosen]

    def layer_order(self, refs, asked_by: str = "") -> list[str]:
        """The runtime closure of `refs` in the order a final image lays their artifacts:
        each package after its runtime requires, the requires in the order they are listed
        (a cycle is laid where it is first closed). A derivative lists what it edits most
        last: the layers below it are reused (builds/builder.py)."""
        out: dict[str, None] = {}
        entered: set[str] = set()
        stack = [(self.key(ref, asked_by), False) for ref in reversed(list(refs))]
        while stack:
            key, done = stack.pop()
            if done:
                out.setdefault(key, None)
                continue
            if key in entered:
                continue
            entered.add(key)
            stack.append((key, True))
            stack += [(self.key(r, key), False)
                      for r in reversed(self.by_key[key].definition.requires)]
        return list(out)

    def runtime_closure(self, refs, asked_by: str = "") -> list[str]:
        """Keys of `refs` and, transitively, their definitions' runtime requires."""
        out: dict[str, None] = {}   # in order, and a set: a closure may be thousands long
        todo = deque((ref, asked_by) for ref in refs)
        while todo:
            ref, who = todo.popleft()
            key = self.key(ref, who)
            if key not in out:
                out[key] = None
                todo += [(r, key) for r in self.by_key[key].definition.requires]
        return list(out)


def build_graph(tree: Tree, renderer: "Renderer", errors: Collector | None = None,
                remote: "RemoteSource | None" = None, arch: str = arches.ORIGINAL) -> Graph:
    """Render and resolve every package. Without `errors`, any mistake fails; with it, the
    mistakes go there and the graph holds the packages that rendered and resolved together
    with everything they build on (`cosbuild graph` shows what works while reporting the rest).
    A build dep no local tree provides comes from the `remote` repositories: a graph node
    with no build, hashed by its artifact's checksum. `arch`: what the packages are built
    for, part of their hashes."""
    own = errors is None
    errors = Collector() if own else errors
    rendered: dict[str, tuple[PackageSource, Rendered]] = {}
    for src in tree.packages:
        try:
            rendered[src.key] = (src, renderer.render(src))
        except CosbuildError as exc:
            errors.add(exc)
    if own:
        errors.raise_if_any()

    # selectors resolve against every loaded package: one that failed to render is reported
    # once, above, not again by each package that builds on it
    local = {s.id for s in tree.packages}
    offered = {s.key: (s, r) for s, r in (remote.packages() if remote else ()) if s.id not in local}
    sources = [*tree.packages, *(s for s, _ in offered.values())]
    resolver = Resolver(sources, remote.names() if remote else ())
    artifact_names = [(f"{artifact_stem(s)}{ARTIFACT_SUFFIX}", s.key) for s in sources]
    deps: dict[str, tuple[str, ...]] = {}
    for key, (src, r) in rendered.items():
        try:
            deps[key] = _build_deps(src, r, resolver, artifact_names)
        except CosbuildError as exc:
            if not exc.file:
                exc = CosbuildError(exc.message, file=src.build_file, hint=exc.hint)
            errors.add(exc)
    if own:
        errors.raise_if_any()
    used = {d for needs in deps.values() for d in needs}
    deps.update({key: () for key in offered if key in used})   # only what is built on

    while True:
        _drop_broken(deps)
        try:
            order = topological_order(deps)
            break
        except CycleError as exc:
            if own:
                raise
            errors.add(exc)
            for key in exc.cycle:
                deps.pop(key, None)
    packages: dict[str, Package] = {}
    requires: dict[str, tuple[str, ...]] = {}
    for key in order:
        if key in offered:
            src, where = offered[key]
            packages[key] = Package(src, REMOTE_RENDERED, remote=where,
                                    hash=_digest(["remote", key, where.sha256, where.cache_image]))
            requires[key] = ()
            continue
        src, r = rendered[key]
        files = tuple(context_files(src.folder))
        pkg = Package(src, r, deps[key], files, content=content_digest(r, src.folder, files, arch))
        requires[key] = tuple(resolver.key(ref, key) for ref in pkg.chain_requires)
        chain = () if pkg.own_source or not pkg.needs_images else chain_steps(
            pkg, luet_order(key, requires, resolver.by_key), packages)
        base = chain[-1].tag if chain else None
        packages[key] = replace(
            pkg, chain=chain, hash=image_hash(pkg, packages, base))
    latest: dict[str, str] = {}
    for pkg in packages.values():
        best = latest.get(pkg.id)
        if best is None or \
                versions.sort_key(pkg.version) > versions.sort_key(packages[best].version):
            latest[pkg.id] = pkg.key
    return Graph(packages, tuple(order), latest, resolver)


def _build_deps(src: PackageSource, r: Rendered, resolver: Resolver,
                artifact_names: list[tuple[str, str]]) -> tuple[str, ...]:
    b = r.build
    refs = [*b.requires, *b.join, *(c.package for c in b.copy if c.package)]
    keys = [resolver.key(ref, src.key) for ref in refs]
    if src.key in keys:   # luet would chain it on its own image, which it has yet to build
        raise CycleError([src.key, src.key])
    # a final-images build unpacks the runtime closure: all of it must be built first
    keys += resolver.runtime_closure(b.final_image_deps, src.key)
    for pattern in b.retrieve:
        if "://" in pattern:
            continue
        match = re.compile(fnmatch.translate(pattern + "*")).match
        keys += [key for name, key in artifact_names if match(name)]
    return tuple(dict.fromkeys(k for k in keys if k != src.key))


def _drop_broken(deps: dict[str, tuple[str, ...]]) -> None:
    """Leave out, transitively, the packages that build on one not in `deps` (it failed)."""
    while broken := [key for key, needs in deps.items() if any(d not in deps for d in needs)]:
        for key in broken:
            del deps[key]


class CycleError(CosbuildError):
    def __init__(self, cycle: list[str]):
        self.cycle = cycle
        super().__init__("dependency cycle: " + " -> ".join(cycle),
                         hint="remove one of these build requirements")


def topological_order(deps: dict[str, tuple[str, ...]]) -> list[str]:
    """Deps first, ties broken by key; a cycle is reported with its full path. Depth first
    with a stack of its own: a chain of requires may be deeper than Python's recursion."""
    order: list[str] = []
    state: dict[str, str] = {}   # key -> "active" | "done"
    for root in sorted(deps):
        if root in state:
            continue
        state[root] = "active"
        stack = [(root, iter(sorted(deps[root])))]
        while stack:
            key, todo = stack[-1]
            for dep in todo:
                if state.get(dep) == "active":
                    path = [k for k, _ in stack]
                    raise CycleError(path[path.index(dep):] + [dep])
                if dep not in state:
                    state[dep] = "active"
                    stack.append((dep, iter(sorted(deps[dep]))))
                    break
            else:
                stack.pop()
                state[key] = "done"
                order.append(key)
    return order


def luet_order(key: str, requires: dict[str, tuple[str, ...]], sources) -> tuple[str, ...]:
    """The transitive build requires of `key` (without it) in luet's build order
    (solver/decoder.go `Order`, mudler/topsort): depth first from the package, the requires
    of each visited in the order of their fingerprints `name-category-version`, a package
    after its requires."""
    def fingerprint(k: str) -> str:
        d = sources[k].definition
        return f"{d.name}-{d.category}-{d.version}"

    def requires_of(k: str):
        return iter(sorted(requires[k], key=fingerprint))

    # no cycles (topological_order has rejected them): what is not done is not on the stack
    order: dict[str, None] = {}
    stack = [(key, requires_of(key))]
    while stack:
        k, todo = stack[-1]
        for dep in todo:
            if dep not in order:
                stack.append((dep, requires_of(dep)))
                break
        else:
            stack.pop()
            order[k] = None
    return tuple(order)[:-1]


def chain_steps(pkg: Package, order: tuple[str, ...],
                packages: dict[str, Package]) -> tuple[ChainStep, ...]:
    """The images `pkg` builds on, bottom first: each package of `order` built on the image
    of the one before it, restarting at each one with an image source of its own (the ones
    before it only order the build, so they are left out). A package with no image source
    at all is passed over: luet builds no image for it, so something must come before."""
    def no_image(who: Package) -> CosbuildError:
        return CosbuildError(
            f"{who.key} builds on the package image of the package before it in luet's "
            f"build order of {pkg.key} ({', '.join(order)}), but none of them has an image",
            file=who.source.build_file, key="requires",
            hint="give one of the requires (or a package they require) an 'image'")

    # the images before the last image source are left out: only whether each has one
    # below it matters (a chain of thousands is not hashed for every package on it)
    sources = [i for i, k in enumerate(order) if packages[k].own_source]
    for k in order[:sources[0]] if sources else ():
        if packages[k].needs_images:
            raise no_image(packages[k])
    chain = order[sources[-1] if sources else 0:]
    if sum(packages[k].needs_images for k in chain) > MAX_CHAIN:
        raise CosbuildError(f"{pkg.key} builds on a chain of more than {MAX_CHAIN} package "
                            f"images (luet builds each again for it)",
                            file=pkg.source.build_file, key="requires",
                            hint="give a package of the chain an 'image' of its own")
    steps: list[ChainStep] = []
    for k in chain:
        dep = packages[k]
        if dep.own_source:
            steps = [ChainStep(k, None, dep.hash)]
        elif dep.needs_images:
            if not steps:
                raise no_image(dep)
            steps.append(ChainStep(k, steps[-1].tag, image_hash(dep, packages, steps[-1].tag)))
    if not steps:
        raise no_image(pkg)
    return tuple(steps)


def image_hash(pkg: Package, packages: dict[str, Package], base: str | None) -> str:
    """The tag of the package's images when built on the image tagged `base` (None: on its
    own image source): its content, its build deps' hashes and that base."""
    return _digest([pkg.content, [packages[d].hash for d in pkg.build_deps], base])


def _digest(parts: list) -> str:
    return hashlib.sha256(json.dumps([HASH_SCHEMA, *parts]).encode()).hexdigest()


def content_digest(rendered: Rendered, folder: Path, files: tuple[str, ...],
                   arch: str = arches.ORIGINAL) -> str:
    h = hashlib.sha256()
    # the same spec builds other binaries for another architecture; the original one is
    # left out, so that its hashes (and the caches tagged by them) stay those of before
    head = [rendered.data, rendered.finalize_text, *([arch] if arch != arches.ORIGINAL else [])]
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for path in files:
        rel = Path(os.path.relpath(path, folder)).as_posix()
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            kind, content = "l", os.readlink(path).encode()
        else:
            # git keeps only the executable bit; umask differences must not change the hash
            kind = "x" if st.st_mode & 0o111 else "f"
            content = regular_file_bytes(path)
        h.update(f"\0{kind}\0{rel}\0{len(content)}\0".encode())
        h.update(content)
    return h.hexdigest()


def regular_file_bytes(path: str) -> bytes:
    """The bytes of a regular file of a build context; anything else (a FIFO, which would
    block, a device) is an error naming it. Opened without blocking and without following a
    link put there after the check."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CosbuildError("not a regular file, folder or link: a build context cannot "
                                "hold it", file=path, hint="remove it from the package folder")
        return f.read()
