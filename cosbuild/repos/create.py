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
same inputs give the same files.

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

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from .. import luetformat
from ..builds import artifact
from ..errors import CosbuildError
from ..fsutil import atomic_write
from ..settings import RepoInfo
from ..tree.project import Project
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


def index_entries(project: Project, output: Path) -> list[dict]:
    """The metadata of every package of the project whose artifact is in `output`."""
    entries = []
    for key in project.graph.order:
        pkg = project.graph.packages[key]
        meta_path = output / pkg.metadata_file
        if pkg.remote or not meta_path.is_file():
            continue   # a remote package stays in the repository it came from
        meta = load_mapping(meta_path)
        if meta.get("build_hash") != pkg.hash:
            raise CosbuildError(f"{meta_path.name} is from another build of {key}",
                                file=meta_path, hint="run `doit build` first")
        if not isinstance(meta.get("runtime"), dict):   # before luet's field names
            raise CosbuildError(f"{meta_path.name} is not in luet's format (no 'runtime')",
                                file=meta_path, hint="run `doit build` again")
        luetformat.ArtifactEntry.parse(meta, str(meta_path))   # what a client will need
        if not (output / pkg.artifact_file).is_file():
            raise CosbuildError(f"artifact {pkg.artifact_file} is missing", file=meta_path,
                                hint="run `doit build` again")
        entries.append(dict(meta))
    if not entries:
        raise CosbuildError(f"no built packages in {output}", hint="run `doit build` first")
    return entries


def create_repo(project: Project, output: Path, info: RepoInfo, packages: Path | None = None) -> bool:
    """Write the repository files into `output` for the packages built into `packages`
    (default: `output`); returns whether anything changed."""
    if info.type not in TYPES:
        raise CosbuildError(f"unknown repository type '{info.type}'",
                            hint=f"use one of: {', '.join(TYPES)}")
    entries = index_entries(project, packages or output)
    graph = project.graph
    runtime: dict[str, bytes] = {}
    package_files: list[str] = []   # of each package of the index, as the repository has them
    for meta in entries:
        p = meta["runtime"]   # the tree holds the runtime definitions, as luet's does
        pkg = graph.packages[f"{p['category']}/{p['name']}@{p['version']}"]
        package_files += [pkg.artifact_file, pkg.metadata_file]
        folder = f"{p['category']}/{p['name']}/{p['version']}"
        runtime[f"{folder}/definition.yaml"] = dumps(p).encode()
        finalize = pkg.rendered.finalize
        if finalize.install:
            runtime[f"{folder}/finalize.yaml"] = dumps(
                {"install": list(finalize.install), **({"shell": list(finalize.shell)}
                                                        if finalize.shell else {})}).encode()
    files = {
        "tree": (TREE_FILE, artifact.write_tar_blobs(runtime, output / TREE_FILE)),
        "meta": (META_FILE, artifact.write_tar_blobs(
            {luetformat.META_MEMBER: dumps({"index": entries}).encode()}, output / META_FILE)),
        "compilertree": (COMPILERTREE_FILE, _write_compilertree(project, output / COMPILERTREE_FILE)),
    }
    repo_files = {kind: {"filename": name, "compressiontype": artifact.COMPRESSION.name,
                         "checksums": {"sha256": sha}} for kind, (name, sha) in files.items()}
    content = {"name": info.name, "description": info.description, "type": info.type,
               "urls": list(info.urls), "repo_files": repo_files}
    previous = _previous(output / REPOSITORY_FILE)
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
        return dict(load_mapping(path))
    except CosbuildError:
        return None   # unreadable: start over with a new revision


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
