"""The installed system's partitions, by label, mounted for the runtime's commands
(cos-upgrade, cos-boot-assessment): where the system has one mounted already, that mount
(made writable for a while when it is read-only), else a mount of its own under /run/cos."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .. import tools
from ..errors import CosbuildError
from ..tools import TaskLog


def _mounts() -> dict[str, tuple[str, str]]:
    """Mount point -> (device, options)."""
    out = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        device, point, _, options, *_ = line.split()
        out[point.replace("\\040", " ")] = (device, options)
    return out


@contextlib.contextmanager
def partition(label: str, log: TaskLog, writable: bool = True):
    """The partition `label` mounted (read-write when `writable`, remounted so if the
    system has it read-only); left as it was found."""
    device = Path("/dev/disk/by-label") / label
    if not device.exists():
        raise CosbuildError(f"there is no {label} partition", hint="is this an installed cOS disk?")
    real = os.path.realpath(device)
    found = [(p, opts) for p, (dev, opts) in _mounts().items()
             if dev.startswith("/dev/") and os.path.realpath(dev) == real]
    if found:
        point, options = found[0]
        remount = writable and "ro" in options.split(",")
        if remount:
            tools.run(["mount", "-o", "remount,rw", point], log=log, what=f"make {label} writable")
        try:
            yield Path(point)
        finally:
            if remount:
                os.sync()
                tools.run(["mount", "-o", "remount,ro", point], log=log, what=f"remount {label}")
        return
    point = Path("/run/cos") / label.lower()
    point.mkdir(parents=True, exist_ok=True)
    tools.run(["mount", *([] if writable else ["-o", "ro"]), str(device), str(point)], log=log,
              what=f"mount {label}")
    try:
        yield point
    finally:
        tools.run(["umount", str(point)], log=log, what=f"unmount {label}")
