"""Helpers of the hostile-input tests (issue #14)."""

from __future__ import annotations

import signal
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
