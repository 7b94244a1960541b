"""`cosbuild unpack IMAGE DIR` (luet util unpack): a container image's flattened rootfs."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import CosbuildError
from ..tools import TaskLog, run
from .buildah import Buildah, BuildahSettings


def unpack_image(image: str, dest: Path, settings: BuildahSettings = BuildahSettings()) -> None:
    """Copy the image's filesystem to `dest` (which must not exist or be empty), all or nothing."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CosbuildError(f"{dest} exists and is not an empty folder",
                            hint="choose a new folder to unpack into")
    dest.parent.mkdir(parents=True, exist_ok=True)
    buildah = Buildah(settings)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.unpack-"))
    try:
        with TaskLog(work / "unpack.log") as log:
            buildah.ensure_image(image, log)
            with buildah.container(image, log) as container:
                root = container.mount()
                run(["cp", "-a", "--", f"{root}/.", str(work / "rootfs")], log=log,
                    what=f"copy the filesystem of {image}")
        if dest.exists():
            dest.rmdir()
        os.replace(work / "rootfs", dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
