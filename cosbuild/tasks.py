"""doit tasks generated from the project graph; used by dodo.py and by `cosbuild run/list`.

Every task declares real file dependencies and an `uptodate` check on the package's build
hash, so doit redoes only what changed.

The modules of the later stages (builder, repository, ISO, disk, cloud-config checks) are
imported inside the tasks that use them, for start-up speed: a no-op run loads only what
its tasks need (the builder not at all when no image is missing).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from doit.exceptions import TaskFailed
from doit.tools import config_changed

from . import luetformat, settings
from .errors import Collector, CosbuildError
from .fsutil import atomic_write, remove_partial_files
from .settings import Settings
from .terminal import duration, heartbeat, safe, say
from .tools import TaskLog
from .tree.project import Project, load_project

if TYPE_CHECKING:
    from .tree.why import Records

log = logging.getLogger("cosbuild")


def load(config: Settings, **options) -> Project:
    """The project with its build repositories (the remote packages it builds on)."""
    from .repos.remote import build_repositories
    return load_project(config, remote=build_repositories(config), **options)


def ensure_build_dir(path: Path) -> None:
    """The build folder, made when missing; a file in its place, or a folder that cannot be
    written, is named now rather than failing in the middle of a run."""
    if path.exists() and not path.is_dir():
        raise CosbuildError("the build folder is not a folder", file=path, key="build_dir",
                            hint="remove it or pass another --build-dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CosbuildError(f"cannot make the build folder: {exc.strerror}", file=path,
                            key="build_dir", hint="pass another --build-dir") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CosbuildError("the build folder cannot be written", file=path, key="build_dir",
                            hint="fix its permissions or pass another --build-dir")


def exit_with(error: CosbuildError):
    """End a doit run with a user mistake's one-line message: doit shows a traceback for
    any exception while it loads the tasks, but lets SystemExit through."""
    print(f"cosbuild: error: {error}", file=sys.stderr)
    raise SystemExit(1) from None


def _generated(generate):
    """A task generator whose user mistakes (a bad iso.yaml, a package it names that does
    not exist) end the run with their message, not with doit's traceback."""
    @functools.wraps(generate)
    def tasks():
        try:
            yield from generate()
        except CosbuildError as exc:
            exit_with(exc)
    return tasks


def image_closure(project: Project, image_spec, kind: str) -> list[str]:
    """The keys of a package list of iso.yaml or disk.yaml (`kind`, an attribute of the spec)
    and what they require; a package no tree provides is an error at that file and key."""
    refs, resolver = getattr(image_spec, kind), project.graph.resolver
    if getattr(image_spec, "repositories", ()):   # iso.yaml's own (`luet:`) repositories
        # may provide what no tree does: they are asked when the root is staged
        refs = [r for r in refs if r.id in resolver.versions]
    try:
        return resolver.runtime_closure(refs) if refs else []
    except CosbuildError as exc:
        raise image_spec.wheres[kind].error(exc.message, exc.hint) from None


def spec_path(project: Project, key: str) -> Path:
    return project.settings.specs_dir / f"{project.graph.packages[key].artifact_stem}.yaml"


def _user_errors_fail(action):
    """A task action whose CosbuildError is reported by doit as a failure, without a traceback."""
    @functools.wraps(action)
    def run(*args, **kwargs) -> TaskFailed | None:
        try:
            return action(*args, **kwargs)
        except CosbuildError as exc:
            return TaskFailed(str(exc))
    return run


def validate(settings: Settings) -> str:
    """Check everything and report every finding of every stage in one run: loading,
    rendering and resolving the trees, the cloud-config files the packages ship, iso.yaml and
    disk.yaml (when there). The warnings are logged, the errors raised together (with
    `settings.strict`, the warnings among them); returns the summary line."""
    from .images.disk import load_disk_spec
    from .images.iso import load_iso_spec
    from .runtime.cloudconfig import check_files, check_project
    found = Collector()
    with found.logged_warnings():
        # fresh, not from the cache: validation must see the files as they are now
        project = load(settings, errors=found)
        for finding in check_project(project):
            found.add(finding)
        for path, read in ((settings.iso, load_iso_spec), (settings.disk, load_disk_spec)):
            if path.is_file():
                try:
                    image_spec = read(path)
                    for kind in image_spec.wheres:   # its packages, as `doit iso/image` needs
                        image_closure(project, image_spec, kind)
                except CosbuildError as exc:
                    found.add(exc)
                    continue
                # the overlay of iso.yaml (disk.yaml has none) may ship cloud-config (OEM) files
                for folder in getattr(image_spec, "overlay", {}).values():
                    for finding in check_files(sorted(folder.rglob("*"))):
                        found.add(finding)
    if not settings.strict:
        for warning in found.warnings:
            log.warning("%s", warning)
    found.raise_if_any(strict=settings.strict)
    n = len(found.warnings)
    warned = f", {n} warning{'s' * (n != 1)}" if n else ""
    return (f"ok: {len(project.graph.packages)} packages, {len(project.tree.templates)} "
            f"templates, values: {', '.join(map(str, settings.values)) or 'none'}{warned}")


@_user_errors_fail
def _validate(settings: Settings) -> None:
    print(validate(settings))


def _write_spec(path: Path, text: str) -> None:
    atomic_write(path, text)


class LazyBuilder:
    """The Builder, imported and made on first use: a no-op run of image-less packages
    needs neither buildah nor the build modules. With it, the build records of the
    packages (tree/why.py), kept by each build."""

    def __init__(self, project: Project, targets: frozenset[str] = frozenset()):
        self.project = project
        self.targets = targets   # what `cosbuild build` names (Builder.targets)
        self._builder = None
        self._records = None
        self._lock = threading.Lock()

    @property
    def records(self) -> "Records":
        with self._lock:
            if self._records is None:
                from .tree.why import Records
                self._records = Records(self.project, functools.partial(
                    _image_of, self, self.project.graph))
            return self._records

    def __call__(self):
        with self._lock:
            if self._builder is None:
                from .builds.builder import Builder
                from .repos.cachetrust import cache_trust
                self._builder = Builder(self.project, cache_trust(self.project.settings),
                                        self.targets)
            return self._builder


def _images_present(get_builder: LazyBuilder, pkg, **_) -> bool:
    return get_builder().images_present(pkg)


def _image_present(get_builder: LazyBuilder, pkg, **_) -> bool:
    """A remote package's image, when a package builds on it, is where a build puts it."""
    builder = get_builder()
    return builder.buildah.image_exists(builder.tags(pkg).package)


def _image_of(get_builder: LazyBuilder, graph, pkg) -> str:
    """The package image a build of `pkg` makes or reuses, as the build task checks it."""
    if pkg.needs_images or (pkg.remote and graph.image_used(pkg.key)):
        return get_builder().tags(pkg).package
    return ""


@dataclass(frozen=True)
class Why:
    """Why a package's build task runs, or that it is reused: a verdict and its causes."""
    verdict: str
    causes: tuple[str, ...] = ()
    reused: bool = False


def why(get_builder: LazyBuilder, key: str) -> Why:
    """Compare the package's recorded build inputs with today's; with an unchanged hash,
    look for what the build task itself checks: its targets and its images."""
    records = get_builder.records
    pkg = records.project.graph.packages[key]
    causes = records.explain(key)
    if causes is None:
        return Why(f"never built (no usable record in {records.path(key).parent})")
    if causes:
        return Why(f"rebuilds (hash {pkg.hash[:12]})", tuple(map(safe, causes)))
    builder = get_builder()
    missing = [f"- its {what} {path} is missing"
               for what, path in (("artifact", builder.artifact_path(pkg)),
                                  ("metadata", builder.metadata_path(pkg)))
               if not path.is_file()]
    if image := records.image_of(pkg):
        tags = builder.tags(pkg)
        refs = (tags.package, tags.builder) if pkg.needs_images else (image,)
        missing += [f"- its image {ref} is not in the local image store" for ref in refs
                    if not builder.buildah.image_exists(ref)]
    if missing:
        return Why(f"rebuilds (same hash {pkg.hash[:12]})", tuple(missing))
    return Why(f"unchanged: reused (hash {pkg.hash[:12]})", reused=True)


def _running(prefix: str, seconds: float, log: TaskLog, pkg_key: str) -> str:
    """The line a long build says now and then: how long, and which command runs."""
    doing = log.doing.removeprefix(f"{pkg_key}: ")
    doing = doing if len(doing) <= 80 else doing[:77] + "..."
    return f"{prefix}: running for {duration(seconds)}" + (f" ({safe(doing)})" if doing else "")


@_user_errors_fail
def _build(get_builder: LazyBuilder, key: str, n: int, total: int) -> None:
    builder = get_builder()
    graph = builder.project.graph
    pkg = graph.packages[key]
    started = time.monotonic()
    say(f"[{n}/{total}] {key}: started (hash {pkg.hash[:12]}, log {builder.log_path(pkg)})")
    if builder.settings.verbose:
        found = why(get_builder, key)
        reasons = found.causes or (found.verdict,)
        if found.reused:   # by its inputs and outputs: doit reruns it for its own state
            reasons = (f"{found.verdict} by its inputs and outputs, but the build task's "
                       "settings (push) or doit's database changed",)
        say("\n".join(f"[{n}/{total}] {key}: why: {line.removeprefix('- ')}"
                      for line in reasons))
    with TaskLog(builder.log_path(pkg), verbose=builder.settings.verbose,
                 prefix=f"[{pkg.id}] ") as log, \
            heartbeat(lambda t: _running(f"[{n}/{total}] {key}", t, log, pkg.key)):
        try:
            if pkg.remote:
                from .repos.remote import fetch
                how = fetch(pkg, builder, graph.image_used(key), log)
            else:
                how = builder.build(key, log)
        except CosbuildError as exc:
            log.write(f"error: {exc}")   # the full log says how it ended too
            raise
    get_builder.records.record(key)
    size = builder.artifact_path(pkg).stat().st_size
    say(f"[{n}/{total}] {key}: done in {time.monotonic() - started:.1f}s "
        f"({how}; {size / 1e6:.1f} MB artifact)")


@_user_errors_fail
def _create_repo(project: Project, info) -> None:
    from .repos.create import create_repo
    if info.type == "docker":
        raise CosbuildError("`doit repo` makes a folder repository, not a docker one",
                            key="repo_type", hint="publish to a registry with `cosbuild "
                            "create-repo --type docker --output REGISTRY/REPO`")
    changed = create_repo(project, project.settings.build_dir, info)
    say(f"repository {info.name} in {project.settings.build_dir}: "
        f"{'updated' if changed else 'unchanged'}")


@_user_errors_fail
def _step(what: str, step, *args) -> None:
    """One step of the ISO or disk assembly, with progress and its duration."""
    started = time.monotonic()
    # the arguments name it too: `install root rootfs` and `install root uefi` run at once
    label = " ".join([step.__name__.replace("_", " "), *map(str, args)])
    say(f"{what}: {label}")
    with heartbeat(lambda t: f"{what}: {label} running for {duration(t)}"):
        step(*args)
    say(f"{what}: {label} done in {time.monotonic() - started:.1f}s")


@_user_errors_fail
def _boot_vm(settings: Settings, **options) -> TaskFailed | None:
    from .images.vm import boot
    code = boot(settings, options)
    return TaskFailed(f"QEMU exited with status {code}") if code else None


def task_definitions(project: Project, targets: frozenset[str] = frozenset()) -> dict:
    """The task_* functions and DOIT_CONFIG of a doit namespace for this project; `targets`
    are the packages `cosbuild build` names (built even under `from_cache_only`)."""
    graph = project.graph
    build_dir = str(project.settings.build_dir)
    package_files = sorted({f for p in graph.packages.values() for f in p.files})

    def outputs(keys) -> list[str]:
        """The artifact and metadata files of these packages (the build tasks' targets)."""
        return [os.path.join(build_dir, name) for k in keys
                for name in (graph.packages[k].artifact_file, graph.packages[k].metadata_file)]

    def inputs(image_spec, kind: str):
        """The local artifacts a staged root is made of (its runtime closure; a package of
        a build repository that nothing here builds on is installed from there)."""
        closure = image_closure(project, image_spec, kind)
        return outputs([k for k in closure if k in graph.packages])

    def sbom_inputs(image_spec, kinds) -> list[str]:
        """What an image's SBOM lists: the local artifacts of its roots and those that they
        hold (an `unpack` package's artifact holds what its image was made of)."""
        from .images.sbom import held
        keys = {k for kind in kinds for k in image_closure(project, image_spec, kind)
                if k in graph.packages}
        return outputs(sorted(keys.union(*(held(graph, k) for k in keys))))

    def task_validate():
        """Load, render and resolve the whole tree (cosbuild validate)."""
        every = sorted({*package_files,
                        *(str(p) for p in (*project.settings.values, *project.tree.templates))})
        return {"actions": [(_validate, [project.settings])], "file_dep": every,
                "verbosity": 2}

    @_generated
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
                   "file_dep": list(pkg.files),
                   "targets": [str(target)],
                   "uptodate": [config_changed(pkg.hash)],
                   "clean": True}

    get_builder = LazyBuilder(project, targets)
    pushed_to = f" push {project.settings.image_repository}" if project.settings.push else ""

    @_generated
    def task_build():
        """Build each package: container images (buildah) and its artifact + metadata in build/."""
        for n, key in enumerate(graph.order, 1):
            pkg = graph.packages[key]
            yield {"name": graph.task_name(key),
                   "doc": f"build {key}",
                   "actions": [(_build, [get_builder, key, n, len(graph.order)])],
                   "task_dep": [f"build:{graph.task_name(d)}" for d in pkg.build_deps],
                   "file_dep": list(pkg.files),
                   "targets": outputs([key]),
                   # turning push on (or to another repository) pushes what was built before
                   "uptodate": [config_changed(pkg.hash + pushed_to + luetformat.RECORD_FORMAT)]
                   + ([(_images_present, [get_builder, pkg])] if pkg.needs_images else [])
                   + ([(_image_present, [get_builder, pkg])]
                      if pkg.remote and graph.image_used(key) else []),
                   "verbosity": 2,
                   "clean": True}

    def task_repo():
        """Make the build folder a package repository (repository.yaml, tree, index)."""
        from .repos.create import repository_outputs
        info = project.settings.repo_info()
        return {"actions": [(_create_repo, [project, info])],
                # the artifacts are targets of the build tasks: doit builds them first
                "file_dep": outputs(graph.order) + package_files,
                "targets": [str(p) for p in repository_outputs(project.settings.build_dir,
                                                               signed=info.signing is not None)],
                "uptodate": [config_changed(repr(info))],
                "verbosity": 2}

    @_generated
    def task_iso():
        """Build the live ISO of iso.yaml: rootfs, squashfs, kernel, EFI image, ISO root, ISO,
        and its SBOM."""
        if not project.settings.iso.is_file():
            return
        from .images.iso import IsoBuilder, load_iso_spec
        iso = IsoBuilder(project, load_iso_spec(project.settings.iso))
        spec_files = [str(project.settings.iso)] + sorted(
            str(p) for d in iso.iso.overlay.values() for p in d.rglob("*") if p.is_file())
        keys = iso.iso.secure_boot.files() if iso.iso.secure_boot else []

        kinds = ("rootfs", "uefi", "isoimage")
        for kind in kinds:
            folder = getattr(iso, f"{kind}_dir")
            actions = [(_step, ["iso", iso.install_root, kind])]
            targets = [str(iso.manifest(kind))]
            if kind == "uefi":
                actions.append((_step, ["iso", iso.make_uefi_image]))
                targets.append(str(iso.uefi_img))
            yield {"name": kind, "actions": actions, "task_dep": ["repo"],
                   "file_dep": inputs(iso.iso, kind) + spec_files + (keys if kind == "uefi" else []),
                   "targets": targets, "uptodate": [folder.is_dir], "verbosity": 2}
        yield {"name": "squashfs", "actions": [(_step, ["iso", iso.make_squashfs])],
               "file_dep": [str(iso.manifest("rootfs"))], "targets": [str(iso.squashfs)],
               "verbosity": 2}
        yield {"name": "kernel", "actions": [(_step, ["iso", iso.copy_kernel])],
               "file_dep": [str(iso.manifest("rootfs"))],
               "targets": [str(iso.kernel), str(iso.initrd)], "verbosity": 2}
        yield {"name": "sbom", "actions": [(_step, ["iso", iso.write_sbom])],
               "file_dep": [str(iso.manifest(k)) for k in kinds] + sbom_inputs(iso.iso, kinds),
               "targets": [str(iso.sbom)], "verbosity": 2}
        yield {"name": "image", "actions": [(_step, ["iso", iso.write_iso])],
               "file_dep": [str(p) for p in (iso.squashfs, iso.kernel, iso.initrd, iso.uefi_img,
                                             iso.manifest("isoimage"))] + spec_files,
               "targets": [str(iso.output), str(iso.output) + ".sha256"], "verbosity": 2}

    def disk_builder():
        from .images.disk import DiskBuilder, load_disk_spec
        return DiskBuilder(project, load_disk_spec(project.settings.disk))

    @_generated
    def task_image():
        """The system image of disk.yaml: build/active.img (ext2, label COS_ACTIVE)."""
        if not project.settings.disk.is_file():
            return
        disk = disk_builder()
        spec_file = str(project.settings.disk)
        yield {"name": "rootfs", "actions": [(_step, ["image", disk.install_root])],
               "task_dep": ["repo"], "file_dep": inputs(disk.disk, "system") + [spec_file],
               "targets": [str(disk.manifest)], "uptodate": [disk.rootfs_dir.is_dir],
               "verbosity": 2}
        yield {"name": "active", "actions": [(_step, ["image", disk.make_active])],
               "file_dep": [str(disk.manifest), spec_file], "targets": [str(disk.active)],
               "verbosity": 2}

    @_generated
    def task_disk():
        """The installed disk of disk.yaml: build/NAME.raw (GPT, EFI), build/NAME.qcow2 and
        the other `formats:` (images/formats.py), and its SBOM build/NAME.spdx.json."""
        if not project.settings.disk.is_file():
            return
        disk = disk_builder()
        yield {"name": "sbom", "actions": [(_step, ["disk", disk.write_sbom])],
               "file_dep": [str(disk.manifest)] + sbom_inputs(disk.disk, ["system"]),
               "targets": [str(disk.sbom)], "verbosity": 2}
        yield {"name": "raw", "actions": [(_step, ["disk", disk.make_raw])],
               "file_dep": [str(disk.active), str(disk.manifest), str(project.settings.disk)]
               + (disk.disk.secure_boot.files() if disk.disk.secure_boot else []),
               "targets": [str(disk.raw)], "verbosity": 2}
        from .images import formats
        for fmt in formats.closure(disk.disk.formats):
            if fmt.make:
                yield {"name": fmt.name, "actions": [(_step, ["disk", disk.make_format, fmt.name])],
                       "file_dep": [str(disk.output(fmt.source))],
                       "targets": [str(disk.output(fmt.name))], "verbosity": 2}

    def task_vm():
        """Boot the latest ISO or disk in QEMU (cosbuild vm); builds nothing first."""
        from .images.vm import doit_params
        # never up to date; the console is the terminal's (verbosity 2: nothing captured)
        return {"actions": [(_boot_vm, [project.settings])], "params": doit_params(),
                "uptodate": [False], "verbosity": 2}

    return {"task_validate": task_validate, "task_render": task_render, "task_build": task_build,
            "task_repo": task_repo, "task_iso": task_iso, "task_image": task_image,
            "task_disk": task_disk, "task_vm": task_vm,
            "DOIT_CONFIG": {"dep_file": str(project.settings.build_dir / ".doit.db"),
                            "backend": "sqlite3", "default_tasks": ["validate"],
                            "verbosity": 1}}


def dodo_namespace(options: dict | None = None, doit_vars: dict | None = None) -> dict:
    """Load the project for a dodo file; a user mistake ends the run with its message."""
    try:
        config = settings.resolve(options, doit_vars=doit_vars)
        ensure_build_dir(config.build_dir)
        project = load(config, use_cache=True)
    except CosbuildError as exc:
        exit_with(exc)
    return project_namespace(project)


def project_namespace(project: Project, targets: frozenset[str] = frozenset()) -> dict:
    """The doit namespace of a loaded project, with its build folder ready."""
    config = project.settings
    ensure_build_dir(config.build_dir)
    remove_partial_files(config.build_dir)
    # `kill` (SIGTERM) unwinds like Ctrl-C, so containers and temporary files are cleaned up
    signal.signal(signal.SIGTERM, _interrupt)
    return task_definitions(project, targets)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
