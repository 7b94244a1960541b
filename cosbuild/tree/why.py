"""Why a package rebuilds: the named inputs of its build hash (graph.py), recorded by each
successful build in build/why/STEM.json, compared with what they are now.

The hash covers the rendered spec, the package folder's files, the deps' hashes and the
image below it; the record also keeps what made the spec what it is (the values keys its
templates name, the tree's templates), so a changed spec is explained by its cause. The
record is written beside the outputs and read by nothing else: the hash, the artifacts
and their reproducibility do not depend on it. A record is untrusted input (the build
folder may come from elsewhere): a bad one is no record, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import CosbuildError
from ..fsutil import atomic_write
from ..terminal import safe
from .graph import HASH_SCHEMA, Graph, Package, regular_file_bytes
from .load import read_text
from .project import builtin_values
from .render import load_values_files, package_values

if TYPE_CHECKING:
    from .project import Project

log = logging.getLogger("cosbuild")

RECORDS = "why"     # the records' folder in the build folder
_SHORT = 60         # a changed value this long or shorter is shown with its old and new text
MAX_DEPTH = 8       # of the dependencies below a package whose causes are shown


@dataclass(frozen=True)
class Inputs:
    """What one package's build hash is made of, each input named."""
    hash: str
    schema: str = HASH_SCHEMA
    files: dict[str, str] = field(default_factory=dict)      # folder-relative path -> digest
    spec: dict[str, str] = field(default_factory=dict)       # rendered spec key -> its JSON
    values: dict[str, str] = field(default_factory=dict)     # values key its templates name -> JSON
    templates: dict[str, str] = field(default_factory=dict)  # the tree's templates -> digest
    deps: dict[str, str] = field(default_factory=dict)       # build dep key -> its hash
    base: str = ""       # the chain image it builds on ("" for its own image source)
    remote: str = ""     # a remote package: its repository and artifact sha256
    artifact: str = ""   # the outputs it expects: its artifact file in the build folder
    image: str = ""      # and its package image ("" when it needs none)


# --------------------------------------------------------------------------- the inputs now

def current_inputs(pkg: Package, graph: Graph, layers: list[dict], defaults: dict,
                   templates: dict[str, str], template_text: str, image: str) -> Inputs:
    """The inputs of `pkg` now. `layers`: the values files, over cosbuild's `defaults`;
    `templates`: the tree's templates' digests; `template_text`: those templates' text (a values key they name may reach the
    spec through them)."""
    if pkg.remote:
        return Inputs(pkg.hash, remote=f"{pkg.remote.repo} {pkg.remote.sha256}",
                      artifact=pkg.artifact_file, image=image)
    r = pkg.rendered
    spec = {str(k): _json(v) for k, v in r.data.items()}
    if r.finalize_text:
        spec["finalize.yaml"] = _json(r.finalize_text)
    texts = "\n".join([template_text, *(read_text(f) for f in (pkg.source.build_file,
                                                               pkg.source.finalize_file) if f)])
    # the values as its engine saw them (Helm's are merged as luet merges them)
    seen = package_values(pkg.source, layers, "helm" in r.engine, defaults)
    return Inputs(
        pkg.hash,
        files={Path(os.path.relpath(f, pkg.source.folder)).as_posix(): file_digest(f)
               for f in pkg.files},
        spec=spec,
        values={k: v for k, v in flatten(seen).items() if _names(texts, k)},
        templates=templates,
        deps={k: graph.packages[k].hash for k in pkg.build_deps},
        base=pkg.chain[-1].tag if pkg.chain else "",
        artifact=pkg.artifact_file, image=image)


def template_digests(paths, roots) -> dict[str, str]:
    """The tree's templates by their path in their tree."""
    out = {}
    for path in paths:
        root = next((r for r in roots if Path(path).is_relative_to(r)), Path(path).parent)
        out[Path(path).relative_to(root).as_posix()] = file_digest(str(path))
    return out


def flatten(values, prefix: str = "") -> dict[str, str]:
    """Nested mappings as dotted keys, each value as JSON (a list is one value)."""
    if not isinstance(values, dict) or (prefix and not values):
        return {prefix: _json(values)}
    out = {}
    for key in sorted(values, key=str):
        out.update(flatten(values[key], f"{prefix}.{key}" if prefix else str(key)))
    return out


def _names(texts: str, key: str) -> bool:
    """Whether the templates name the values key (its first part, as `.Values.x`,
    `values.x`, or quoted as in `values["x"]` or a `get`/`index` path). Which keys a
    template reads is known only by running it; a key named but not read changes nothing,
    as the rendered spec (what the hash covers) is the same."""
    top = re.escape(key.split(".")[0])
    return re.search(rf"[Vv]alues\s*\.\s*{top}\b|[\"']{top}[\"'.]", texts) is not None


def file_digest(path: str) -> str:
    """A context file as the build hash sees it (graph.content_digest): a link's target, or
    the bytes and whether it is executable."""
    if os.path.islink(path):
        return "link:" + os.readlink(path)
    kind = "x:" if os.lstat(path).st_mode & 0o111 else "f:"
    return kind + hashlib.sha256(regular_file_bytes(path)).hexdigest()


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# --------------------------------------------------------------------------- records

def record_path(build_dir: Path, pkg: Package) -> Path:
    return build_dir / RECORDS / f"{pkg.artifact_stem}.json"


def write_record(path: Path, inputs: Inputs) -> None:
    atomic_write(path, json.dumps(asdict(inputs), indent=1, sort_keys=True) + "\n")


def read_record(path: Path) -> Inputs | None:
    """The record at `path`; None when there is none, or (with a warning) when it is not a
    record this cosbuild wrote: corrupt, or hostile."""
    if not os.path.lexists(path):
        return None
    try:
        return parse_record(read_text(path))
    except (CosbuildError, ValueError, RecursionError) as exc:
        log.warning("%s: not a usable build record, ignored (%s)", path, safe(str(exc)))
        return None


def parse_record(text: str) -> Inputs:
    """A record's JSON checked field by field: strings and mappings of strings only."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("hash"), str):
        raise ValueError("not a mapping with a hash")
    out = {}
    for f in fields(Inputs):
        value = data.get(f.name, f.default_factory() if f.name in _MAPPINGS else f.default)
        ok = (isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items())
              if f.name in _MAPPINGS else isinstance(value, str))
        if not ok:
            raise ValueError(f"its {f.name} is not what a build records")
        out[f.name] = value
    return Inputs(**out)


_MAPPINGS = {f.name for f in fields(Inputs) if f.default_factory is dict}


# --------------------------------------------------------------------------- comparing

def explain(key: str, recorded: Callable[[str], Inputs | None],
            current: Callable[[str], Inputs], depth: int = 0,
            explained: set[str] | None = None) -> list[str] | None:
    """The causes of a rebuild of `key`, one line each (below a changed dependency, indented,
    its own causes); [] when its hash is what its last build recorded; None when there is no
    usable record of a build. Each dependency is explained once, to a bounded depth: a
    change low in a wide or deep tree is named once, not once per path to it."""
    explained = set() if explained is None else explained
    old, now = recorded(key), current(key)
    if old is None:
        return None
    if old.hash == now.hash:
        return []
    pad = "  " * depth
    if old.schema != now.schema:
        return [f"{pad}- cosbuild's build hash recipe changed ({old.schema} -> "
                f"{now.schema}): every package rebuilds once"]
    lines = [f"{pad}- {line}" for line in own_causes(old, now)]
    for dep, (before, after) in _changed(old.deps, now.deps).items():
        if before is None:
            lines.append(f"{pad}- new dependency {dep}")
        elif after is None:
            lines.append(f"{pad}- no longer depends on {dep}")
        else:
            lines.append(f"{pad}- dependency {dep} changed (hash {before[:12]} -> {after[:12]})")
            if dep in explained or depth + 1 == MAX_DEPTH:
                continue   # said above, or `cosbuild why` of it says more
            explained.add(dep)
            below = explain(dep, recorded, current, depth + 1, explained)
            lines += [f"{pad}  - no usable record of its last build"] if below is None else below
    if old.base != now.base and not lines:   # an image below it, of a package not a dep
        lines.append(f"{pad}- the image it builds on changed ({old.base[:12] or 'none'} "
                     f"-> {now.base[:12] or 'none'}): a package earlier in its build chain "
                     "changed")
    return lines or [f"{pad}- its build inputs changed (hash {old.hash[:12]} -> "
                     f"{now.hash[:12]})"]


def own_causes(old: Inputs, now: Inputs) -> list[str]:
    """What changed in the package itself: its repository artifact, its files, and its
    rendered spec with what made it change (values keys its templates name, templates)."""
    if old.remote != now.remote:
        return [f"its artifact in the build repository changed ({old.remote or 'none'} "
                f"-> {now.remote or 'none'})"]
    out = []
    for rel, (a, b) in _changed(old.files, now.files).items():
        what = "added" if a is None else "removed" if b is None else "changed"
        out.append(f"file {rel} {what}")
    spec = _changed(old.spec, now.spec)
    if not spec:   # then values and templates, whatever they are, changed nothing
        return out
    for name, (a, b) in _changed(old.values, now.values).items():
        out.append(f"values key {name} changed{_show(a, b)}")
    for name, (a, b) in _changed(old.templates, now.templates).items():
        what = "added" if a is None else "removed" if b is None else "changed"
        out.append(f"template {name} {what}")
    out.append(f"its rendered spec changed: {', '.join(spec)}"
               + (_show(*next(iter(spec.values()))) if len(spec) == 1 else ""))
    return out


def _changed(a: dict[str, str], b: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _show(a: str | None, b: str | None) -> str:
    a, b = a or "none", b or "none"
    return f": {a} -> {b}" if len(a) + len(b) <= _SHORT else ""


# --------------------------------------------------------------------------- a project's records

class Records:
    """The recorded and current inputs of a project's packages, for one run (shared by its
    threaded build tasks): the values files and templates are read once. `image_of`: the
    package image a package's build makes or reuses ("" when none)."""

    def __init__(self, project: "Project", image_of: Callable[[Package], str]):
        self.project, self.image_of = project, image_of
        self._shared: tuple[list[dict], dict[str, str], str] | None = None
        self._lock = threading.Lock()

    def _templates_and_values(self) -> tuple[list[dict], dict[str, str], str]:
        with self._lock:
            if self._shared is None:
                p = self.project
                self._shared = (load_values_files(list(p.settings.values)),
                                template_digests(p.tree.templates, p.settings.trees),
                                "\n".join(read_text(t) for t in p.tree.templates))
            return self._shared

    def current(self, key: str) -> Inputs:
        layers, digests, text = self._templates_and_values()
        pkg = self.project.graph.packages[key]
        return current_inputs(pkg, self.project.graph, layers,
                              builtin_values(self.project.settings), digests, text,
                              self.image_of(pkg))

    def path(self, key: str) -> Path:
        return record_path(self.project.settings.build_dir, self.project.graph.packages[key])

    def recorded(self, key: str) -> Inputs | None:
        return read_record(self.path(key))

    def record(self, key: str) -> None:
        """Keep the inputs of a finished build. The build stands without its record (`why`
        then says it was never built), so a record that cannot be written is a warning."""
        try:
            write_record(self.path(key), self.current(key))
        except (OSError, CosbuildError) as exc:   # a file of it changed meanwhile, too
            log.warning("%s: cannot keep the build record of %s (%s)", self.path(key), key,
                        exc.strerror if isinstance(exc, OSError) else exc)

    def explain(self, key: str) -> list[str] | None:
        return explain(key, self.recorded, self.current)
