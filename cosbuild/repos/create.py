"""Repositories, server side (`luet create-repo`, SPEC section 3).

A repository is a folder: the package artifacts, their metadata, and, as luet 0.20 writes
them (its installer/repository.go, repository_local.go) but zstd-compressed as cOS publishes:

- `tree.tar.zst`: the runtime tree, `<category>/<name>/<version>/definition.yaml` (+ `finalize.yaml`);
- `compilertree.tar.zst`: the package trees as they were;
- `repository.meta.yaml.tar.zst`: `repository.meta.yaml` = `{index: [artifact metadata]}`
  (luet's PackageArtifact records, see luetformat.py);
- `repository.yaml`: name, description, type, urls, revision, last_update and `repo_files`
  {tree, meta, compilertree}, each `{filename, compressiontype, checksums: {sha256}}`.

The revision is bumped, and repository.yaml rewritten, only when the content changed, so the
same inputs give the same files. The build folder is input like any other: a metadata file or
artifact that is not a regular file inside it (a link out, a FIFO), is not the package's, or
is not the archive its metadata describes is one error naming the file, and nothing is
written: the tree, meta and compiler-tree files are renamed into place together, once all are
written, and repository.yaml after them.

With signing keys (RepoInfo.signing) the repository also carries TUF metadata (signing.py)
whose targets are every file a client fetches: repository.yaml, the tree, meta and
compiler-tree files, and every artifact and package metadata file of the index.

A `docker` repository is the same files in an OCI registry, in luet 0.20's layout (SPEC
section 3, luet's installer/repository_docker.go): each repository file and package metadata
as a one-file image tagged with the file name (the file at /<file name>), each package as
`<repo>:<name>-<category>-<version>` (`+` -> `-`), whose one layer is the artifact's tar:
unpacked, the image is the package's files. Clients take the files from the layer, as luet
does; the artifact's sha256 in the index is of a file the registry does not have, so what
is checked is the layer's digest (oci/registry.py: layer_tar).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from .. import luetformat
from ..builds import artifact
from ..errors import CosbuildError
from ..fsutil import atomic_path, atomic_write
from ..settings import RepoInfo
from ..tree.graph import Package
from ..tree.project import Project
from ..tree.versions import NAME, NAME_RULE
from ..tree.yamlio import dumps, load_mapping

REPOSITORY_FILE = luetformat.REPOSITORY_FILE
# luet's names (TREE_TARBALL, ...) with the suffix of the compression (getCompressedName)
TREE_FILE = "tree.tar" + artifact.COMPRESSION.suffix
COMPILERTREE_FILE = "compilertree.tar" + artifact.COMPRESSION.suffix
META_FILE = luetformat.META_MEMBER + ".tar" + artifact.COMPRESSION.suffix
TYPES = ("disk", "http", "docker")


# what signing adds (besides the root versions, which are there once written)
SIGNED_FILES = ("tuf-targets.json", "tuf-snapshot.json", "tuf-timestamp.json")


def repository_outputs(output: Path, signed: bool = False) -> list[Path]:
    return [output / n for n in (REPOSITORY_FILE, TREE_FILE, COMPILERTREE_FILE, META_FILE,
                                 *(SIGNED_FILES if signed else ()))]


def index_entries(project: Project, output: Path) -> list[tuple[Package, dict]]:
    """Every package of the project whose artifact is in `output`, with its metadata."""
    entries = []
    for key in project.graph.order:
        pkg = project.graph.packages[key]
        meta_path = None if pkg.remote else _built(output, pkg.metadata_file)
        if meta_path is None:
            continue   # not built; a remote package stays in the repository it came from
        meta = load_mapping(meta_path)
        if meta.get("build_hash") != pkg.hash:
            raise CosbuildError(f"{meta_path.name} is from another build of {key}",
                                file=meta_path, hint="run `doit build` first")
        runtime = meta.get("runtime")
        if not isinstance(runtime, dict):   # before luet's field names
            raise CosbuildError(f"{meta_path.name} is not in luet's format (no 'runtime')",
                                file=meta_path, hint="run `doit build` again")
        # the index and tree say what the project says: a record naming another package or
        # file (`../x`) is not this package's
        d = pkg.definition
        if (runtime.get("category"), runtime.get("name"), runtime.get("version"),
                meta.get("path")) != (d.category, d.name, d.version, pkg.artifact_file):
            raise CosbuildError(f"{meta_path.name} is not the metadata of {key}",
                                file=meta_path, hint="run `doit build` again")
        record = luetformat.ArtifactEntry.parse(meta, str(meta_path))   # what a client needs
        archive = _built(output, pkg.artifact_file)
        if archive is None:
            raise CosbuildError(f"artifact {pkg.artifact_file} is missing", file=meta_path,
                                hint="run `doit build` again")
        _check_artifact(archive, record)
        entries.append((pkg, dict(meta)))
    if not entries:
        raise CosbuildError(f"no built packages in {output}", hint="run `doit build` first")
    return entries


def _built(folder: Path, name: str) -> Path | None:
    """The build folder's file `name`; None if there is none. Only a regular file inside
    the folder is read: not what a link leads to elsewhere, not a FIFO (reading blocks)."""
    path = folder / name
    if not os.path.lexists(path):
        return None
    real = os.path.realpath(path)
    if not (real.startswith(os.path.realpath(folder).rstrip("/") + "/")
            and os.path.isfile(real)):
        raise CosbuildError(f"{name} is not a regular file in {folder}", file=path,
                            hint="a build writes its files there itself; remove this one and "
                                 "run `doit build` again")
    return path


def _check_artifact(path: Path, record: luetformat.ArtifactEntry) -> None:
    """The artifact is the archive its metadata describes: its size, a tar compressed as
    recorded (its first entry is read, not the whole)."""
    size = path.stat().st_size
    if record.size is not None and size != record.size:
        raise CosbuildError(f"artifact {path.name} is {size} bytes, its metadata records "
                            f"{record.size}", file=path, hint="run `doit build` again")
    try:
        with luetformat.open_tar(path, record.compression) as tar:
            tar.next()
    except luetformat.Damaged as exc:
        raise CosbuildError(f"artifact {path.name} is {exc}", file=path,
                            hint="run `doit build` again") from None


def create_repo(project: Project, output: Path, info: RepoInfo, packages: Path | None = None) -> bool:
    """Write the repository files into `output` for the packages built into `packages`
    (default: `output`); returns whether anything changed."""
    if info.type not in TYPES:
        raise CosbuildError(f"unknown repository type '{info.type}'",
                            hint=f"use one of: {', '.join(TYPES)}")
    # luet keeps a repository under its name (its cache folder): a plain name
    if not NAME.fullmatch(info.name):
        raise CosbuildError(f"invalid repository name {info.name!r}", key="--name / repo_name",
                            hint=NAME_RULE)
    found = index_entries(project, packages or output)
    entries = [meta for _, meta in found]
    runtime: dict[str, bytes] = {}
    package_files: list[str] = []   # of each package of the index, as the repository has them
    for pkg, meta in found:
        p = meta["runtime"]   # the tree holds the runtime definitions, as luet's does
        package_files += [pkg.artifact_file, pkg.metadata_file]
        folder = f"{p['category']}/{p['name']}/{p['version']}"
        runtime[f"{folder}/definition.yaml"] = dumps(p).encode()
        finalize = pkg.rendered.finalize
        if finalize.install:
            runtime[f"{folder}/finalize.yaml"] = dumps(
                {"install": list(finalize.install), **({"shell": list(finalize.shell)}
                                                        if finalize.shell else {})}).encode()
    previous = _previous(output / REPOSITORY_FILE)
    # written under temporary names, renamed into place when all three are there
    with contextlib.ExitStack() as stack:
        def staged(name: str) -> Path:
            return stack.enter_context(atomic_path(output / name))
        files = {
            "tree": (TREE_FILE, artifact.write_tar_blobs(runtime, staged(TREE_FILE))),
            "meta": (META_FILE, artifact.write_tar_blobs(
                {luetformat.META_MEMBER: dumps({"index": entries}).encode()}, staged(META_FILE))),
            "compilertree": (COMPILERTREE_FILE,
                             _write_compilertree(project, staged(COMPILERTREE_FILE))),
        }
    repo_files = {kind: {"filename": name, "compressiontype": artifact.COMPRESSION.name,
                         "checksums": {"sha256": sha}} for kind, (name, sha) in files.items()}
    content = {"name": info.name, "description": info.description, "type": info.type,
               "urls": list(info.urls), "repo_files": repo_files}
    changed = not previous or {k: previous.get(k) for k in content} != content
    if changed:
        revision = int(previous.get("revision", 0)) + 1 if previous else 1
        stamp = os.environ.get("SOURCE_DATE_EPOCH") or str(int(time.time()))
        atomic_write(output / REPOSITORY_FILE,
                     dumps({**content, "revision": revision, "last_update": stamp}))
    if info.signing is None:
        return changed
    from . import signing   # python-tuf: only when signing
    files = [*repository_outputs(output), *((packages or output) / n for n in package_files)]
    targets = {path.name: target_facts(path) for path in files}
    signed = signing.sign_repository(output, info.signing.keys, targets, info.signing.expiry,
                                     refresh=info.signing.refresh)
    return changed or signed


def target_facts(path: Path):
    """A file as a TUF target: its length and sha256."""
    from .signing import TargetFacts
    return TargetFacts(path.stat().st_size, artifact.sha256_file(path))


def _previous(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        previous = dict(load_mapping(path))
    except CosbuildError:
        return None   # unreadable: start over with a new revision
    revision = previous.get("revision", 0)
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
        return None   # ... as without a revision to continue from
    return previous


def _write_compilertree(project: Project, out: Path) -> str:
    entries = []
    for root in project.settings.trees:
        prefix = f"/{root.resolve().name}"
        entries += [artifact.Entry(prefix + e.path, e.source) for e in artifact.walk(root)]
        entries.append(artifact.Entry(prefix, root))
    sha, _ = artifact.write_tar(entries, out, checkout=True)
    return sha


def publish_docker(project: Project, packages: Path, target: str, info: RepoInfo,
                   registries) -> bool:
    """Publish the packages built into `packages` as the docker repository `target`
    (REGISTRY/REPOSITORY); returns whether anything changed.

    The revision continues from the published repository.yaml, which is pushed after every
    file it names: a client never sees an index whose files are not all there yet.

    Signed (info.signing), each target also carries the digest of its image, and the TUF
    metadata is pushed after repository.yaml, tuf-timestamp.json last: a client that sees
    the new timestamp finds everything it vouches for. (One that read the old timestamp
    meanwhile is refused, as a repository changing under it is, and succeeds again.)
    Images whose file a signed repository already vouches for are not pushed again."""
    from ..oci import registry   # docker only: doit loads this module on every run, keep ssl off
    if registry.registry_of(target) is None:
        raise CosbuildError(f"'{target}' does not name a registry", key="--output",
                            hint="a docker repository is REGISTRY[:PORT]/PATH, "
                                 "e.g. registry.example.org/cos/releases")
    base = registry.parse_reference(target)
    remote = registries[base.registry]
    info = replace(info, type="docker", urls=info.urls or (target,))

    def ref(name: str):
        return base.with_tag(registry.tag_for(name))

    if info.signing:
        from . import signing   # python-tuf: only when signing
    packages.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=packages, prefix=".docker-repo-") as tmp:
        staging = Path(tmp)
        # what is published: the revision and versions continue
        if remote.exists(ref(REPOSITORY_FILE)):
            registry.pull_file(remote, ref(REPOSITORY_FILE), REPOSITORY_FILE,
                               staging / REPOSITORY_FILE)
        if info.signing:
            signing.pull_metadata(remote, base, info.signing.keys, staging)
        changed = create_repo(project, staging, replace(info, signing=None), packages=packages)
        if not changed and info.signing is None:
            return False
        published = {(name, t.length, t.sha256): t.custom["digest"]
                     for name, t in signing.published_targets(staging).items()
                     if (t.custom or {}).get("digest")} if info.signing else {}
        pushed = False
        targets = {}

        def push(name: str, path: Path, package: str | None = None) -> None:
            """The file `name` as its image (`package`: the package image of that tag)."""
            nonlocal pushed
            facts = target_facts(path)
            digest = published.get((name, facts.length, facts.sha256))
            if digest is None or changed:
                digest = registry.push_package(remote, ref(package), path, staging) \
                    if package else registry.push_file(remote, ref(name), path, staging)
                pushed = True
            targets[name] = facts._replace(custom={"digest": digest})

        for key in project.graph.order:
            pkg = project.graph.packages[key]
            if not (packages / pkg.metadata_file).is_file():
                continue   # not built: create_repo left it out of the index too
            push(pkg.artifact_file, packages / pkg.artifact_file, package=pkg.artifact_stem)
            push(pkg.metadata_file, packages / pkg.metadata_file)
        for path in repository_outputs(staging)[1:] + repository_outputs(staging)[:1]:
            push(path.name, path)
        if info.signing is None:
            return True
        signed = signing.sign_repository(staging, info.signing.keys, targets,
                                         info.signing.expiry, refresh=info.signing.refresh)
        if signed:
            signing.push_metadata(remote, base, staging)
    return pushed or signed
