"""Loading luet-style package trees: definitions, collections, build/finalize files, templates."""

from __future__ import annotations

import logging
import os
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
            templates += sorted(p for p in top.iterdir()
                                if p.suffix in (".yaml", ".yml") and p.is_file())
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and not (here == root and d == TEMPLATES))
            for kind in (DEFINITION, COLLECTION):
                if kind in files:
                    try:
                        packages += _load_folder(here, here / kind)
                    except CosbuildError as exc:
                        errors.add(exc)
    packages = _without_duplicates(packages, errors)
    if own:
        errors.raise_if_any()
    return Tree(tuple(packages), tuple(templates))


def _load_folder(folder: Path, declared_in: Path) -> list[PackageSource]:
    data = load_mapping(declared_in)
    build = folder / BUILD
    finalize = folder / FINALIZE
    common = dict(folder=folder, declared_in=declared_in,
                  build_file=build if build.is_file() else None,
                  finalize_file=finalize if finalize.is_file() else None)
    if declared_in.name == DEFINITION:
        return [PackageSource(parse_definition(data, declared_in), data, **common)]
    stanzas = data.get("packages")
    if not isinstance(stanzas, list) or not stanzas:
        raise CosbuildError("a collection needs a non-empty 'packages' list", file=declared_in,
                            line=data.line_of("packages"), key="packages")
    extra = set(data) - {"packages"}
    if extra:
        key = sorted(extra)[0]
        raise CosbuildError(f"unknown keyword '{key}' in collection", file=declared_in,
                            line=data.line_of(key), key=key, hint="only 'packages' is allowed here")
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


def _without_duplicates(packages: list[PackageSource], errors: Collector) -> list[PackageSource]:
    """The packages with each key once (the first); every further declaration is an error."""
    seen: dict[str, PackageSource] = {}
    for pkg in packages:
        first = seen.setdefault(pkg.key, pkg)
        if first is not pkg:
            errors.add(CosbuildError(
                f"duplicate package {pkg.key}, also declared in {first.declared_in}",
                file=pkg.declared_in, hint="bump the version or remove one of them"))
    return list(seen.values())


def context_files(folder: Path) -> list[str]:
    """Every file of a build context, sorted (what the build hash and file_dep cover).

    Symlinked folders are followed: a package may build from sources kept elsewhere in the
    project (the sample's client package ships cosbuild's own code that way). Python byte-code
    caches come and go with every import, so they are not part of a context."""
    out = []
    for here, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        out += [os.path.join(here, f) for f in sorted(files)]
    return out


def linked_folders(folder: Path) -> list[Path]:
    """The symlinked folders of a build context (copied as their contents, see above)."""
    out = []
    for here, dirs, _ in os.walk(folder, followlinks=True):
        out += [Path(here, d) for d in sorted(dirs) if os.path.islink(os.path.join(here, d))]
    return out
