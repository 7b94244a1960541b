"""Loading luet-style package trees: definitions, collections, build/finalize files, templates."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Collector, CosbuildError, did_you_mean
from . import spec
from .yamlio import LineMap, load_mapping

log = logging.getLogger("cosbuild")

DEFINITION = "definition.yaml"
COLLECTION = "collection.yaml"
BUILD = "build.yaml"
FINALIZE = "finalize.yaml"
TEMPLATES = "templates"
MAX_FILE = 8 * 1024 * 1024   # a spec, values or template file (real ones are a few KiB)


@dataclass(frozen=True)
class PackageSource:
    """One package as declared in the tree, before rendering."""
    definition: spec.Definition
    values: dict = field(compare=False, hash=False, repr=False)   # the raw stanza, for templates
    folder: Path = Path()            # the build context, copied to /luetbuild
    declared_in: Path = Path()       # definition.yaml or collection.yaml
    build_file: Path | None = None
    finalize_file: Path | None = None

    @property
    def id(self) -> str:
        return self.definition.id

    @property
    def version(self) -> str:
        return self.definition.version

    @property
    def key(self) -> str:
        return f"{self.id}@{self.version}"


@dataclass(frozen=True)
class Tree:
    packages: tuple[PackageSource, ...]
    templates: tuple[Path, ...]      # every templates/*.yaml, in a stable order


def load_trees(roots: list[Path], errors: Collector | None = None) -> Tree:
    """Walk every tree root and collect all mistakes. Without `errors`, any mistake fails the
    load; with it, the mistakes go there and the tree holds the packages that did load (so
    `cosbuild render PKG` works while an unrelated package is broken)."""
    own = errors is None
    errors = Collector() if own else errors
    packages: list[PackageSource] = []
    templates: list[Path] = []
    for root in roots:
        if not root.is_dir():
            errors.add(CosbuildError("tree folder not found", file=root,
                                     hint="pass an existing folder with --tree"))
            continue
        # luet 0.20 reads <tree>/templates only: a deeper `templates` folder is package content,
        # and a tree root that is itself named `templates` is a tree like any other
        top = root / TEMPLATES
        if top.is_dir():
            for path in sorted(p for p in top.iterdir() if p.suffix in (".yaml", ".yml")
                               and not p.is_dir()):
                try:
                    templates.append(tree_file(path, root))
                except CosbuildError as exc:
                    errors.add(exc)
        try:
            for path in _spec_files(root):
                try:
                    packages += _load_folder(path.parent, path, root)
                except CosbuildError as exc:
                    errors.add(exc)
        except CosbuildError as exc:   # a folder that cannot be listed
            errors.add(exc)
    packages = _last_declarations(packages)
    if own:
        errors.raise_if_any()
    return Tree(tuple(packages), tuple(templates))


def _load_folder(folder: Path, declared_in: Path, root: Path) -> list[PackageSource]:
    data = load_mapping(declared_in, text=read_text(tree_file(declared_in, root)))
    common = dict(folder=folder, declared_in=declared_in,
                  build_file=tree_file(folder / BUILD, root, optional=True),
                  finalize_file=tree_file(folder / FINALIZE, root, optional=True))
    if declared_in.name == DEFINITION:
        return [PackageSource(parse_definition(data, declared_in), data, **common)]
    stanzas = data.get("packages")
    if not isinstance(stanzas, list) or not stanzas:
        raise CosbuildError("a collection needs a non-empty 'packages' list", file=declared_in,
                            line=data.line_of("packages"), key="packages")
    for key in data:   # luet reads only `packages` (other keys may hold YAML anchors)
        if key != "packages":
            log.warning("%s", CosbuildError(f"unknown keyword '{key}' in collection, ignored",
                                            file=declared_in, line=data.line_of(key), key=key,
                                            hint="only 'packages' is read"))
    out = []
    for stanza in stanzas:
        if not isinstance(stanza, dict):
            raise CosbuildError("each collection entry must be a mapping", file=declared_in,
                                line=data.line_of("packages"), key="packages")
        out.append(PackageSource(parse_definition(stanza, declared_in), stanza, **common))
    return out


def parse_definition(data: LineMap, file: Path) -> spec.Definition:
    fields = spec.parse(spec.DEFINITION_KEYWORDS, data, file, what="definition", strict=False)
    known = [k.name for k in spec.DEFINITION_KEYWORDS]
    for key in data:
        hint = did_you_mean(str(key), known) if key not in known else None
        if hint:  # other keys are template values, but a near-miss is probably a typo
            log.warning("%s:%s: %s: not a definition keyword, kept as a template value (%s)",
                        file, data.line_of(key), key, hint)
    return spec.Definition(**fields)


def _spec_files(root: Path):
    """The definition and collection files of the tree at `root`, in the order luet 0.20's
    filepath.Walk meets them (which decides which of two declarations of a package it keeps):
    each folder's entries sorted by name, a subfolder walked where its name sorts, symlinked
    folders not followed. Hidden folders and the top `templates` are not package folders."""
    stack = [_entries(root, root)]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
        elif entry.is_dir(follow_symlinks=False):
            stack.append(_entries(Path(entry.path), root))
        elif entry.name in (DEFINITION, COLLECTION):
            yield Path(entry.path)


def _entries(folder: Path, root: Path):
    try:
        with os.scandir(folder) as listing:
            entries = [e for e in listing if not (e.is_dir(follow_symlinks=False) and (
                e.name.startswith(".") or (folder == root and e.name == TEMPLATES)))]
    except OSError as exc:
        raise CosbuildError(f"cannot list the folder: {exc.strerror}", file=folder) from None
    return iter(sorted(entries, key=lambda e: os.fsencode(e.name)))   # Go sorts bytes


def _last_declarations(packages: list[PackageSource]) -> list[PackageSource]:
    """Each package once: a later declaration replaces an earlier one, as in luet's database
    (in walk order; in a collection, the later stanza), with a warning naming both files."""
    kept: dict[str, PackageSource] = {}
    for pkg in packages:
        earlier = kept.pop(pkg.key, None)
        if earlier is not None:
            log.warning("%s:%s: package %s declared again (first in %s:%s): the last "
                        "declaration is used, as luet does", pkg.declared_in, pkg.values.line,
                        pkg.key, earlier.declared_in, earlier.values.line)
        kept[pkg.key] = pkg
    return list(kept.values())


# --------------------------------------------------------------------------- reading tree files

def tree_file(path: Path, root: Path, *, optional: bool = False) -> Path | None:
    """`path` when it may be read as a file of the tree at `root`: a regular file (a FIFO or
    device would block or never end) that is inside the tree, also through symlinks. A link
    between packages of one tree is a layout real trees use; one pointing outside is refused,
    as the tree is what the user chose to trust, and what the project cache watches.
    `optional`: None when nothing is there."""
    if optional and not os.path.lexists(path):
        return None
    if not _inside(path, root):
        raise CosbuildError(f"a symlink to {os.path.realpath(path)}, outside the tree {root}",
                            file=path, hint="keep the tree's files inside the tree")
    _regular(path)
    return path


def read_text(path: Path, *, limit: int = MAX_FILE) -> str:
    """A spec, values or template file's text: a regular file of at most `limit` bytes, UTF-8.
    The file is checked before it is opened and again once open (O_NONBLOCK: a FIFO swapped
    in meanwhile does not block the open)."""
    _regular(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise CosbuildError(f"cannot read: {exc.strerror}", file=path) from None
    with os.fdopen(fd, "rb") as handle:
        _regular(path, os.fstat(fd))
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise CosbuildError(f"file larger than {limit // (1024 * 1024)} MiB", file=path,
                            hint="a spec, values or template file is a few KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CosbuildError(f"not UTF-8 text (byte {exc.start})", file=path) from None


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK:
          "a block device", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def _regular(path: Path, st: os.stat_result | None = None) -> None:
    try:
        st = st or os.stat(path)
    except OSError as exc:
        raise CosbuildError(f"cannot read: {exc.strerror}", file=path) from None
    if not stat.S_ISREG(st.st_mode):
        raise CosbuildError(f"not a regular file ({_KINDS.get(stat.S_IFMT(st.st_mode), 'special')})",
                            file=path, hint="only regular files are read")


def _inside(path: Path, root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


# --------------------------------------------------------------------------- build contexts

def context_files(folder: Path) -> list[str]:
    """Every file of a build context, sorted (what the build hash and file_dep cover).

    Symlinked folders are followed: a package may build from sources kept elsewhere in the
    project (the sample's client package ships cosbuild's own code that way). Python byte-code
    caches come and go with every import, so they are not part of a context."""
    return [os.path.join(here, f) for here, _, files in _walk_context(folder)
            for f in sorted(files)]


def linked_folders(folder: Path) -> list[Path]:
    """The symlinked folders of a build context (copied as their contents, see above)."""
    return [Path(here, d) for here, dirs, _ in _walk_context(folder)
            for d in dirs if os.path.islink(os.path.join(here, d))]


def _walk_context(folder: Path):
    """os.walk through symlinked folders, each real folder once: a link back up (a loop, or
    links branching into each other) would make the walk endless or exponential."""
    seen = {os.path.realpath(folder)}
    for here, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in dirs:
            real = os.path.realpath(os.path.join(here, name))
            if real in seen:
                raise CosbuildError(f"folder {real} is reached twice through symlinks (a loop?)",
                                    file=os.path.join(here, name),
                                    hint="a build context may link a folder in only once")
            seen.add(real)
        yield here, dirs, files
