"""Small filesystem helpers with all-or-nothing semantics."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import CosbuildError

TMP_SUFFIX = ".tmp"
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write; renamed over `path` only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's pid in the name lets a later run tell a killed writer's leftovers
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                               suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _FULL:
            raise CosbuildError(f"cannot write {path}: {exc.strerror}",
                                hint="free some space (nothing was left half-written)") from None
        raise


@contextlib.contextmanager
def atomic_named_path(path: Path) -> Iterator[Path]:
    """`path`'s own name in a temporary folder beside it, for a tool that writes the file's
    name into the file (a VMDK's extent line); renamed over `path` only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                                   suffix=TMP_SUFFIX))
    try:
        with atomic_path(path) as tmp:
            yield folder / path.name
            os.replace(folder / path.name, tmp)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_partial_files(folder: Path) -> None:
    """Temporary files of writers that were killed before they could remove them.

    Only `folder` and its direct subfolders (specs, iso, downloads, .cache) are looked at:
    that is where the build writes; deeper are staged roots, which are made afresh anyway,
    and walking them would cost every run (a live root has tens of thousands of files)."""
    for tmp in (p for pattern in (f".*{TMP_SUFFIX}", f"*/.*{TMP_SUFFIX}") for p in folder.glob(pattern)):
        pid = tmp.name.rsplit(".", 3)[-3]
        if not (pid.isdigit() and Path(f"/proc/{pid}").exists()):
            if tmp.is_dir() and not tmp.is_symlink():   # an atomic_named_path folder
                shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
