"""Package builds, luet-compatible (SPEC section 1 and 2).

builder image = source image + env + package folder at /luetbuild (working dir) + PACKAGE_*
env + retrieve + copy + prelude; package image = builder image + steps. Both are tagged
`<image_repository>:<build hash>[-builder]`, so an existing pair is reused (no container
work) and only the artifact is written again when it is missing.

Source images: `image:` (local storage first, then pull; any `requires` only order the
build, as in luet 0.20), `bootstrap:` (mmdebstrap, cached by its inputs),
`requires_final_images`/`join` (the artifacts of the requires' runtime closure unpacked
into an empty container), else `requires`: luet's chain (graph.py), the top image of
`Package.chain`. A chain image that no package's own build makes (a package built on
another base than its own) is built here, into local storage, before the package.

`cosbuild shell` opens a container of the builder image, or the one a failed prelude or step
left when `keep_failed` is on (one per package; a later successful build removes it).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import re
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from .. import luetformat, netio, tools
from ..errors import CosbuildError
from ..fsutil import atomic_path, atomic_write
from ..tools import TaskLog
from ..tree.graph import Package
from ..tree.load import linked_folders
from ..tree.project import Project
from ..tree.yamlio import dumps
from . import artifact
from .buildah import KEPT_PREFIX, Buildah, BuildahSettings, Container, Kept
from .cache import ImageCache

WORKDIR = "/luetbuild"
BOOTSTRAP_REPOSITORY = "cosbuild/bootstrap"
# the tags of the layer images final-image builds start from (<image repository>:layers-<sha>)
LAYER_PREFIX = "layers-"
# bash when the image has it, else sh: the interactive shell of `cosbuild shell`
SHELL = ["/bin/sh", "-c", "if command -v bash >/dev/null; then exec bash; else exec sh; fi"]


@dataclass(frozen=True)
class Tags:
    package: str
    builder: str


@dataclass(frozen=True)
class ShellEntry:
    """What `cosbuild shell` enters: the container a failed build kept, else a new container
    of the builder image."""
    image: str
    kept: str = ""

    def __str__(self) -> str:
        if self.kept:
            return (f"in {self.kept}, the container its failed build kept (`buildah rm "
                    f"{self.kept}` discards it)")
        return f"in a new container of its builder image {self.image}"


class Builder:
    """Builds packages of one project; shared by all (threaded) doit tasks of a run."""

    def __init__(self, project: Project, trust=None, targets: frozenset[str] = frozenset()):
        """`trust`: signs and verifies the cache's images (builds/cache.py); `targets`: the
        packages `cosbuild build` names, the only ones built under `from_cache_only`."""
        self.project = project
        self.targets = targets
        self.settings = project.settings
        self.trust = trust
        self._buildah: Buildah | None = None
        self._cache: ImageCache | None = None
        self._lock = threading.Lock()
        self._image_locks: dict[str, threading.Lock] = {}   # bootstraps and layers
        self._containers: set[str] | None = None   # those at the run's start, stale ones gone
        self._containers_lock = threading.Lock()

    @property
    def buildah(self) -> Buildah:
        with self._lock:
            if self._buildah is None:
                self._buildah = Buildah(BuildahSettings(self.settings.isolation,
                                                        self.settings.storage_driver,
                                                        self.settings.arch))
            return self._buildah

    @property
    def cache(self) -> ImageCache:
        buildah = self.buildah
        with self._lock:
            if self._cache is None:
                self._cache = ImageCache(self.settings, buildah, self.trust)
            return self._cache

    # ----------------------------------------------------------------- names

    def tags(self, pkg: Package) -> Tags:
        return self._tags(pkg.hash)

    def _tags(self, digest: str) -> Tags:
        repo = self.settings.image_repository
        return Tags(f"{repo}:{digest}", f"{repo}:{digest}-builder")

    def artifact_path(self, pkg: Package) -> Path:
        return self.settings.build_dir / pkg.artifact_file

    def metadata_path(self, pkg: Package) -> Path:
        return self.settings.build_dir / pkg.metadata_file

    def log_path(self, pkg: Package) -> Path:
        return self.settings.logs_dir / f"{pkg.artifact_stem}.log"

    def kept_name(self, pkg: Package) -> str:
        """The name of the container its failed build keeps (with `keep_failed`)."""
        return KEPT_PREFIX + _slug(pkg)

    def _keep(self, pkg: Package) -> Kept | None:
        if not self.settings.keep_failed:
            return None
        return Kept(self.kept_name(pkg), f"cosbuild shell {pkg.id}")

    def images_present(self, pkg: Package) -> bool:
        if not pkg.needs_images:
            return True
        tags = self.tags(pkg)
        return self.buildah.image_exists(tags.package) and self.buildah.image_exists(tags.builder)

    # ----------------------------------------------------------------- the build

    def build(self, key: str, log: TaskLog) -> str:
        """Make the package's images and outputs; returns how the images were got."""
        pkg = self.project.graph.packages[key]
        if not pkg.needs_images:
            self.write_outputs(pkg, [], log)
            return "no images"
        kept_before = self.kept_name(pkg) in self._containers_at_start(log)
        tags = self.tags(pkg)
        refs = (tags.builder, tags.package)   # the builder first: the package image is on it
        source = None
        if self.images_present(pkg):
            log.write(f"images {tags.package} and -builder exist: reusing them")
            how = "images reused"
        elif source := self.cache.pull(refs, log):
            how = f"images pulled from {source}"
        else:
            self._refuse_unless_target(pkg, tags)
            self._build_images(pkg, tags, log)
            how = "built"
        self._write_artifact(pkg, tags, log)
        # what came from the image repository, or (in a CI job) what the job did not build,
        # is there already: pushing it again would only sign it again
        push = self.settings.push and source != self.settings.image_repository and not (
            self.settings.from_cache_only and pkg.key not in self.targets)
        if push:
            self.cache.push(refs, log, done=f"{pkg.key} (artifact {self.artifact_path(pkg)})")
        if kept_before:   # what failed before is fixed: its container would only mislead
            self.buildah.remove_container(self.kept_name(pkg), log)
        return how + (f", pushed to {self.settings.image_repository}" if push else "")

    def _refuse_unless_target(self, pkg: Package, tags: Tags) -> None:
        """Under `from_cache_only`, a package not asked for must have come from the cache:
        building it here would hide a CI job that ran before the job it needs."""
        if not self.settings.from_cache_only or pkg.key in self.targets:
            return
        where = ", ".join(self.cache.sources) or \
            f"local storage only: {self.settings.image_repository} names no registry"
        raise CosbuildError(
            f"{pkg.key}: its images {tags.package} and -builder are in no cache ({where}), "
            "and from_cache_only forbids building it here", key="from_cache_only",
            hint=f"the job that builds {self.project.graph.task_name(pkg.key)} must run and "
                 "push first (in `cosbuild plan`, this job needs it), or build without "
                 "--from-cache-only")

    def _containers_at_start(self, log: TaskLog) -> set[str]:
        """The containers there are, read (and those of interrupted runs removed) once a run."""
        with self._containers_lock:
            if self._containers is None:
                self._containers = self.buildah.remove_stale_containers(log)
            return self._containers

    def _build_images(self, pkg: Package, tags: Tags, log: TaskLog) -> None:
        graph = self.project.graph
        for step in pkg.chain:
            if step.base is None or step.tag == graph.packages[step.key].hash:
                continue   # made by that package's own build (a build dep, done already)
            step_tags = self._tags(step.tag)
            if self.buildah.image_exists(step_tags.package):
                log.write(f"chain image {step_tags.package} ({step.key}) exists: reusing it")
                continue
            log.write(f"chain image {step_tags.package}: {step.key} on {self._tags(step.base).package}")
            self._build_on(graph.packages[step.key], self._tags(step.base).package, step_tags,
                           log)
        self._build_on(pkg, self._source(pkg, log), tags, log)

    def _build_on(self, pkg: Package, base: str, tags: Tags, log: TaskLog) -> None:
        """The builder and package images of `pkg` on the image `base`."""
        b = pkg.rendered.build
        d = pkg.definition
        with self.buildah.container(base, log, keep=self._keep(pkg)) as c:
            env = [f"PACKAGE_NAME={d.name}", f"PACKAGE_VERSION={d.version}",
                   f"PACKAGE_CATEGORY={d.category}", *b.env]
            c.config("--workingdir", WORKDIR, *[a for e in env for a in ("--env", e)])
            c.copy(f"{pkg.source.folder}/.", WORKDIR, what="copy the package folder")
            for link in linked_folders(pkg.source.folder):   # their contents, not the links
                rel = link.relative_to(pkg.source.folder).as_posix()
                (c.mount() / WORKDIR.lstrip("/") / rel).unlink()
                c.copy(f"{link.resolve()}/.", f"{WORKDIR}/{rel}", what=f"copy {rel}")
            self._retrieve(pkg, c, log)
            for item in b.copy:
                source_image = (self.tags(self.project.graph.resolve(item.package, pkg.key)).package
                                if item.package else item.image)
                if item.image:
                    self.buildah.ensure_image(item.image, log)
                c.copy(item.source, item.destination, from_image=source_image,
                       what=f"{pkg.key}: copy {item.source} from {item.package or item.image}")
            mounts = self.cache_mounts(pkg)
            for n, command in enumerate(b.prelude, 1):
                c.run(command, what=f"{pkg.key}: prelude {n} ({command.splitlines()[0]})",
                      mounts=mounts)
            c.commit(tags.builder)
        with self.buildah.container(tags.builder, log, keep=self._keep(pkg)) as c:
            for n, command in enumerate(b.steps, 1):
                c.run(command, what=f"{pkg.key}: step {n} ({command.splitlines()[0]})",
                      mounts=mounts)
            c.commit(tags.package)

    def cache_mounts(self, pkg: Package) -> tuple[tuple[Path, str], ...]:
        """The host folders of the package's `caches`, one set per package (a build can
        only ever read what an earlier build of the same package left there)."""
        base = self.settings.build_dir / "caches" / _slug(pkg)
        mounts = []
        for inside in pkg.rendered.build.caches:
            host = base / inside.strip("/").replace("/", "_")
            host.mkdir(parents=True, exist_ok=True)
            if any(p.is_symlink() for p in (host, *host.parents)):
                raise CosbuildError(f"cache folder {host} is (under) a symbolic link",
                                    file=pkg.source.build_file, key="caches",
                                    hint=f"remove {base} and build again")
            mounts.append((host.resolve(), inside))
        return tuple(mounts)

    # ----------------------------------------------------------------- a shell

    def shell_entry(self, pkg: Package) -> ShellEntry | None:
        """What `cosbuild shell` enters, in that preference; None when its builder image is
        still to be built."""
        if not pkg.needs_images or pkg.remote:
            where = f"comes from {pkg.remote.repo}" if pkg.remote else "builds without containers"
            raise CosbuildError(f"{pkg.key} {where}: it has no builder image to open",
                                file=pkg.source.build_file or pkg.source.declared_in)
        image = self.tags(pkg).builder
        kept = self.kept_name(pkg)
        if kept in self.buildah.container_names():
            return ShellEntry(image, kept)
        return ShellEntry(image) if self.buildah.image_exists(image) else None

    def shell(self, pkg: Package, entry: ShellEntry, command: list[str]) -> int:
        """Run `command` (else an interactive shell) in `entry`: /luetbuild, the working
        directory and the environment as its steps have them. A new container is removed
        afterwards. Returns the command's exit status."""
        argv = command or SHELL
        if entry.kept:
            return self.buildah.run_attached(entry.kept, argv)
        with TaskLog(self.log_path(pkg).with_suffix(".shell.log")) as log, \
                self.buildah.container(entry.image, log) as c:
            return self.buildah.run_attached(c.name, argv)

    def _source(self, pkg: Package, log: TaskLog) -> str:
        """The image the builder starts from."""
        b = pkg.rendered.build
        if b.bootstrap:
            return self._bootstrap(pkg, log)
        if b.final_image_deps:   # before `image`: luet replaces the image by this one
            return self._layers(pkg, log)
        if b.image:
            self.buildah.ensure_image(b.image, log)
            return b.image
        return self._tags(pkg.chain[-1].tag).package

    def _image_lock(self, tag: str) -> threading.Lock:
        """One builder thread makes the image `tag`; the others wait for it."""
        with self._lock:
            return self._image_locks.setdefault(tag, threading.Lock())

    def _layers(self, pkg: Package, log: TaskLog) -> str:
        """The final artifacts of the requires' runtime closure, one image layer each, in
        layer order (Resolver.layer_order). Each layer is an image tagged by the artifacts
        it and those below it hold: after an edit, the layers below the edited package are
        reused, not unpacked and committed again (the base alone is most of a system)."""
        graph = self.project.graph
        keys = graph.resolver.layer_order(pkg.rendered.build.final_image_deps, pkg.key)
        base, digest = "scratch", hashlib.sha256()
        for key in keys:
            path = self.artifact_path(graph.packages[key])
            digest.update(artifact.sha256_file(path).encode())
            tag = f"{self.settings.image_repository}:{LAYER_PREFIX}{digest.hexdigest()}"
            with self._image_lock(tag):
                if self.buildah.image_exists(tag):
                    log.write(f"layer {tag} ({key} and below) exists: reusing it")
                else:
                    with self.buildah.container(base, log) as c:
                        c.add(path)
                        c.commit(tag)
            base = tag
        return base

    def _bootstrap(self, pkg: Package, log: TaskLog) -> str:
        """A Debian rootfs from mmdebstrap as an image, cached by its inputs."""
        spec, arch = pkg.rendered.build.bootstrap, self.settings.arch
        if spec.architecture not in ("", arch):
            raise CosbuildError(f"{pkg.key}: bootstrap.architecture {spec.architecture} is not "
                                f"the architecture this build is for ({arch})",
                                file=pkg.source.build_file, key="bootstrap.architecture",
                                hint=f"remove it, or build with --arch {spec.architecture}")
        spec = dataclasses.replace(spec, architecture=arch)
        inputs = json.dumps([dataclasses.asdict(spec), artifact.source_date_epoch()], sort_keys=True)
        # shared by every image repository: a bootstrap is a pure function of its inputs
        tag = f"{BOOTSTRAP_REPOSITORY}:{hashlib.sha256(inputs.encode()).hexdigest()}"
        with self._image_lock(tag):
            if self.buildah.image_exists(tag):
                log.write(f"bootstrap image {tag} exists")
                return tag
            log.write(f"bootstrapping Debian {spec.suite} ({spec.variant}) into {tag}")
            with self.buildah.container("scratch", log) as c:
                root = c.mount()
                argv = ["mmdebstrap", "--mode=root", f"--variant={spec.variant}",
                        f"--architectures={spec.architecture}",
                        f"--components={','.join(spec.components)}"]
                if spec.packages:
                    argv.append(f"--include={','.join(spec.packages)}")
                tools.run([*argv, spec.suite, str(root), spec.mirror], log=log,
                          env={**os.environ, "SOURCE_DATE_EPOCH": str(artifact.source_date_epoch())},
                          what=f"bootstrap Debian {spec.suite}")
                c.commit(tag)
        return tag

    def _retrieve(self, pkg: Package, c: Container, log: TaskLog) -> None:
        build_dir = self.settings.build_dir
        for pattern in pkg.rendered.build.retrieve:
            if "://" in pattern:   # http(s), and its last part a file name (spec.py)
                name = urllib.parse.urlsplit(pattern).path.rstrip("/").rsplit("/", 1)[-1]
                bounds = luetformat.DEFAULT_BOUNDS
                with atomic_path(build_dir / "downloads" / name) as tmp:
                    log.write(f"downloading {pattern}")
                    try:
                        with open(tmp, "wb") as out:
                            netio.fetch(pattern, out, limit=bounds.artifact,
                                        seconds=bounds.deadline, timeout=bounds.timeout)
                    except CosbuildError as exc:
                        raise CosbuildError(f"{pkg.key}: {exc.message}", hint=exc.hint,
                                            file=pkg.source.build_file, key="retrieve") from None
                    c.copy(str(tmp), f"{WORKDIR}/{name}")
                continue
            matches = sorted(p for p in build_dir.iterdir() if fnmatch.fnmatch(p.name, pattern))
            if not matches:
                raise CosbuildError(f"{pkg.key}: nothing in {build_dir} matches {pattern!r}",
                                    file=pkg.source.build_file, key="retrieve",
                                    hint="name an artifact file of another package")
            for path in matches:
                c.copy(str(path), f"{WORKDIR}/{path.name}")

    # ----------------------------------------------------------------- artifacts

    def _write_artifact(self, pkg: Package, tags: Tags, log: TaskLog) -> None:
        b = pkg.rendered.build
        with self.buildah.container(tags.package, log) as c:
            root = c.mount()
            if b.unpack:
                entries = list(artifact.walk(root))
            elif b.package_dir:
                if not (root / b.package_dir.strip("/")).is_dir():
                    raise CosbuildError(f"{pkg.key}: package_dir {b.package_dir} does not exist "
                                        "in the package image", file=pkg.source.build_file,
                                        key="package_dir",
                                        hint="create it in the steps or fix the path")
                entries = list(artifact.rerooted(root, b.package_dir))
            else:
                with self.buildah.container(tags.builder, log) as builder:
                    entries = list(artifact.delta(root, builder.mount()))
            self.write_outputs(pkg, artifact.select(entries, b.includes, b.excludes), log)

    def write_outputs(self, pkg: Package, entries: list, log: TaskLog) -> None:
        artifact.check_listable(entries, pkg.key, pkg.source.build_file or pkg.source.declared_in)
        path = self.artifact_path(pkg)
        sha, files = artifact.write_tar(entries, path)
        log.write(f"artifact {path}: {len(files)} files, {path.stat().st_size} bytes, sha256 {sha}")
        atomic_write(self.metadata_path(pkg), dumps(self.metadata(pkg, sha, files)))

    def metadata(self, pkg: Package, sha: str, files: list[str]) -> dict:
        """luet's PackageArtifact record, plus the build hash (which build made it: what
        create-repo checks before indexing it)."""
        graph = self.project.graph
        return {
            **luetformat.artifact_record(
                path=self.artifact_path(pkg).name, sha256=sha, comp=artifact.COMPRESSION,
                files=files, compile_spec=luetformat.compile_spec(pkg.rendered.data),
                package=compile_package(pkg), runtime=definition_dict(pkg.definition),
                cache_image=self.tags(pkg).package if pkg.needs_images else "",
                dependencies=[luetformat.dependency_record(graph.packages[k].artifact_file,
                                                           _identity(graph.packages[k].definition))
                              for k in pkg.build_deps],
                facts=luetformat.artifact_facts(self.artifact_path(pkg), artifact.COMPRESSION)),
            "build_hash": pkg.hash,
        }


def _slug(pkg: Package) -> str:
    """CATEGORY-NAME as a file or container name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{pkg.definition.category}-{pkg.definition.name}")


def _identity(d) -> dict:
    return {"name": d.name, "category": d.category, "version": d.version}


def compile_package(pkg: Package) -> dict:
    """The package of luet's compile spec: the definition, whose requires and conflicts a
    build.yaml replaces (luet's CompilerRecipe.Load)."""
    out = definition_dict(pkg.definition)
    if pkg.source.build_file is not None:
        b = pkg.rendered.build
        out["requires"] = [dataclasses.asdict(r) for r in b.requires]
        out["conflicts"] = [dataclasses.asdict(r) for r in b.conflicts]
    return out


def definition_dict(d) -> dict:
    """A Definition as luet writes it in metadata (labels and annotations as mappings)."""
    out = dataclasses.asdict(d)
    for key in ("labels", "annotations"):
        out[key] = dict(out[key])
    for key in ("requires", "conflicts", "provides"):
        out[key] = [dict(r) for r in out[key]]
    return out
