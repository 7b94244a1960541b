"""buildah, wrapped in one class that owns every container it creates.

Containers are named `cosbuild-<pid>-<n>` so that a later run can remove what a killed run
(SIGKILL, power loss) left behind; on success, failure and Ctrl-C the context manager removes
them itself, unless a failure is to be kept (`Kept`): then it is renamed after its package,
`cosbuild-failed-...`, for `cosbuild shell`. Images are only ever tagged by a successful
commit, so a half-built image never carries a build-hash tag.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .. import arches, tools
from ..errors import CosbuildError
from ..tools import TaskLog
from ..tree.spec import image_ref

NAME_PREFIX = "cosbuild-"
KEPT_PREFIX = "cosbuild-failed-"   # no pid after the prefix: no later run removes it as stale
_counter = itertools.count()

# `buildah run --isolation chroot` re-executes buildah from a sealed in-memory copy; the
# kernel refuses the seal now and then (EBUSY while pages of the copy are pinned), before the
# step has started. Only that failure, alone in the run's output, is tried again.
TRANSIENT_RUN_ERROR = "sealing memfd copy: Device or resource busy"
RUN_ATTEMPTS = 3


@dataclass(frozen=True)
class BuildahSettings:
    isolation: str = "chroot"
    storage_driver: str = ""
    arch: str = arches.ORIGINAL   # of the images made from scratch and those pulled


@dataclass(frozen=True)
class Kept:
    """Where a container whose work failed is kept, and the command that opens it."""
    name: str
    opened_by: str


class Buildah:
    def __init__(self, settings: BuildahSettings):
        tools.require("buildah")   # fail before the first task starts, not inside it
        arches.require_runnable(settings.arch)
        self.settings = settings
        self._images: set[str] | None = None
        self._lock = threading.Lock()

    def _argv(self, *args: str) -> list[str]:
        driver = ["--storage-driver", self.settings.storage_driver] if self.settings.storage_driver else []
        return ["buildah", *driver, *args]

    def cmd(self, *args: str, log: TaskLog, capture: bool = False, what: str = "") -> str:
        return tools.run(self._argv(*args), log=log, capture=capture, what=what)

    # ----------------------------------------------------------------- images

    def image_names(self) -> set[str]:
        """Every local image name:tag, read once per process (no-op checks stay cheap)."""
        with self._lock:
            if self._images is None:
                out = tools.run(self._argv("images", "--json"), log=_null_log(), capture=True)
                names = set()
                for image in json.loads(out or "null") or []:
                    names.update(image.get("names") or [])
                self._images = names
            return set(self._images)

    def image_exists(self, ref: str) -> bool:
        return qualify(ref) in self.image_names()

    def _remember(self, ref: str) -> None:
        with self._lock:
            if self._images is not None:
                self._images.add(qualify(ref))

    def forget_images(self) -> None:
        with self._lock:
            self._images = None

    def ensure_image(self, ref: str, log: TaskLog) -> None:
        """Local storage first, then pull; either way an image of the build's architecture
        (local storage holds one image a name: another architecture's is an error)."""
        image_ref(ref)
        found = self._architecture(ref, log)
        if found is None:
            log.write(f"image {ref} not in local storage, pulling")
            try:
                tools.run(self._argv("pull", "--quiet", "--arch", self.settings.arch, ref),
                          log=log, quiet=True)
            except Exception:
                raise CosbuildError(f"image {ref} cannot be found locally and cannot be pulled",
                                    hint=f"check the name, build it first, or see {log.path}") from None
            self._remember(ref)
            found = self._architecture(ref, log)
        if found not in ("", self.settings.arch):   # "": an image that does not say
            raise CosbuildError(f"image {ref} in local storage is for {found}, not for "
                                f"{self.settings.arch}",
                                hint=f"remove it (buildah rmi {ref}) and build again to pull "
                                     f"its {self.settings.arch} variant")

    def _architecture(self, ref: str, log: TaskLog) -> str | None:
        """The architecture of `ref` in local storage (under whatever name buildah resolves
        it to), or None when it is not there."""
        try:
            return tools.run(self._argv("inspect", "--type", "image", "--format",
                                        "{{.OCIv1.Architecture}}", ref),
                             log=log, capture=True, quiet=True).strip()
        except Exception:
            return None

    def pull(self, ref: str, log: TaskLog, *, tls_verify: bool = True) -> None:
        """Pull `ref` from its registry (raises sh.ErrorReturnCode: the caller words the error)."""
        image_ref(ref)
        tools.run(self._argv("pull", "--quiet", f"--tls-verify={str(tls_verify).lower()}",
                             f"docker://{ref}"), log=log, capture=True, quiet=True)
        self._remember(ref)

    def push(self, ref: str, log: TaskLog, *, tls_verify: bool = True) -> None:
        """Push the local image `ref` to the registry it names (raises sh.ErrorReturnCode)."""
        image_ref(ref)
        tools.run(self._argv("push", "--quiet", f"--tls-verify={str(tls_verify).lower()}",
                             ref, f"docker://{ref}"), log=log, quiet=True)

    def tag(self, ref: str, new: str, log: TaskLog) -> None:
        tools.run(self._argv("tag", image_ref(ref), image_ref(new)), log=log)
        self._remember(new)

    def remove_image(self, ref: str, log: TaskLog) -> None:
        tools.run(self._argv("rmi", "--force", image_ref(ref)), log=log)
        self.forget_images()

    # ----------------------------------------------------------------- containers

    @contextlib.contextmanager
    def container(self, image: str, log: TaskLog, *,
                  keep: Kept | None = None) -> Iterator["Container"]:
        """A working container from `image` ("scratch" for an empty one), removed when done;
        with `keep`, a CosbuildError inside keeps it under that name instead (replacing the
        one kept before), and its message says so."""
        name = f"{NAME_PREFIX}{os.getpid()}-{next(_counter)}"
        # an empty container takes the build's architecture, the images made from it too
        arch = ["--arch", self.settings.arch] if image == "scratch" else []
        self.cmd("from", "--quiet", "--pull=never", *arch, "--name", name, image_ref(image), log=log,
                 capture=True, what=f"create a container from {image}")
        kept = False
        try:
            yield Container(self, name, log)
        except CosbuildError as exc:
            if keep is None:
                raise
            self.remove_container(keep.name, log)
            tools.run(self._argv("rename", name, keep.name), log=log)
            kept = True
            log.write(f"kept the failed container as {keep.name}")
            raise CosbuildError(f"{exc.message}\n  its container is kept as {keep.name}: "
                                f"`{keep.opened_by}` opens it", file=exc.file, line=exc.line,
                                key=exc.key, hint=exc.hint) from None
        finally:
            if not kept:
                tools.run(self._argv("rm", name), log=log)

    def run_attached(self, name: str, argv: list[str]) -> int:
        """Run argv in the container on this terminal (a terminal inside too when stdin is
        one); returns its exit status."""
        tty = ["--tty"] if sys.stdin.isatty() else []
        return tools.attached(self._argv("run", "--isolation", self.settings.isolation, *tty,
                                         name, "--", *argv))

    def container_names(self, log: TaskLog | None = None) -> set[str]:
        out = tools.run(self._argv("containers", "--json"), log=log or _null_log(), capture=True)
        return {c.get("containername", "") for c in json.loads(out or "null") or []}

    def remove_container(self, name: str, log: TaskLog) -> None:
        """Remove the container `name` if there is one."""
        if name in self.container_names(log):
            tools.run(self._argv("rm", name), log=log)

    def remove_stale_containers(self, log: TaskLog) -> set[str]:
        """Remove working containers of cosbuild processes that no longer exist; returns the
        names of the containers left."""
        names = self.container_names(log)
        for name in sorted(names):
            pid = name[len(NAME_PREFIX):].split("-")[0] if name.startswith(NAME_PREFIX) else ""
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                log.write(f"removing container {name} left by an interrupted run")
                tools.run(self._argv("rm", name), log=log)
                names.discard(name)
        return names


class Container:
    def __init__(self, buildah: Buildah, name: str, log: TaskLog):
        self.buildah, self.name, self.log = buildah, name, log

    def config(self, *args: str) -> None:
        self.buildah.cmd("config", *args, self.name, log=self.log)

    def run(self, command: str, what: str = "", mounts: tuple[tuple[Path, str], ...] = ()) -> None:
        """Run `command` with /bin/sh; `mounts` are (host folder, container folder) pairs
        bound for this command only, so nothing of them is committed."""
        volumes = [arg for host, inside in mounts for arg in ("--volume", f"{host}:{inside}")]
        for attempt in range(1, RUN_ATTEMPTS + 1):
            try:
                self.buildah.cmd("run", "--isolation", self.buildah.settings.isolation, *volumes,
                                 self.name, "--", "/bin/sh", "-c", command, log=self.log,
                                 what=what)
                return
            except CosbuildError:
                if attempt == RUN_ATTEMPTS or not self._did_not_start():
                    raise
                self.log.write(f"buildah could not start the step ({TRANSIENT_RUN_ERROR}): "
                               f"attempt {attempt + 1} of {RUN_ATTEMPTS}")

    def _did_not_start(self) -> bool:
        """Whether the last `buildah run` failed with the transient error and nothing else."""
        lines = self.log.tail().splitlines()
        started = max((i for i, line in enumerate(lines) if line.lstrip().startswith("$ buildah")),
                      default=None)
        if started is None:   # more output than the tail keeps: the step ran
            return False
        output = [line.strip() for line in lines[started + 1:]]
        return (len(output) <= 2 and any(TRANSIENT_RUN_ERROR in line for line in output)
                and all(TRANSIENT_RUN_ERROR in line or line.startswith("Error: exit status")
                        for line in output))

    def copy(self, source: str, destination: str, *, from_image: str | None = None,
             what: str = "") -> None:
        extra = ["--from", from_image] if from_image else []
        self.buildah.cmd("copy", "--quiet", *extra, self.name, source, destination,
                         log=self.log, what=what)

    def add(self, archive: Path, destination: str = "/") -> None:
        """Unpack a (compressed) tar archive into the container."""
        self.buildah.cmd("add", "--quiet", self.name, str(archive), destination, log=self.log,
                         what=f"unpack {archive.name}")

    def mount(self) -> Path:
        return Path(self.buildah.cmd("mount", self.name, log=self.log, capture=True).strip())

    def commit(self, ref: str) -> None:
        self.buildah.cmd("commit", "--quiet", self.name, ref, log=self.log,
                         capture=True, what=f"commit {ref}")
        self.buildah._remember(ref)


def qualify(ref: str) -> str:
    """The name buildah lists for `ref` (unqualified names live under localhost/)."""
    name, _, tag = ref.rpartition(":") if ":" in ref.split("/")[-1] else (ref, "", "latest")
    first = name.split("/")[0]
    if "." not in first and ":" not in first and first != "localhost":
        name = f"localhost/{name}"
    return f"{name}:{tag}"


def _null_log() -> TaskLog:
    return TaskLog(Path(os.devnull))
