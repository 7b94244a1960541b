"""Helpers of the hostile-input tests (issue #14)."""

from __future__ import annotations

import io
import signal
import tarfile
from pathlib import Path

import pytest


@pytest.fixture
def deadline():
    """A case that is not bounded (or blocks, as opening a FIFO does) fails here after 60 s
    instead of hanging the suite."""
    def expired(signum, frame):
        raise AssertionError("not bounded: still running after 60 s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def files_outside_build(root: Path) -> set[str]:
    """Every file and folder of the project but the build folder (links as links)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.relative_to(root).parts[0] != "build"}


def layer(*entries) -> io.BytesIO:
    """A layer tar from (name, kind, data): kind file/dir/symlink/hardlink."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                             "dir": tarfile.DIRTYPE}[kind]
                info.linkname = data or ""
                tar.addfile(info)
    out.seek(0)
    return out
