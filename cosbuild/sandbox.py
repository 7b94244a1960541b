"""Commands of an untrusted root run confined to it: repository finalizers (repos/client.py)
and the `commands` of `cos-setup --root` (runtime/setup.py).

bubblewrap gives the command new mount, PID, network, IPC, UTS, user and cgroup namespaces
with the root as `/`, a fresh /proc, a minimal /dev and an empty /tmp; no capabilities (so a
static binary calling chroot() or mount() stays inside), a clean environment (nothing of the
caller's). It dies with its caller, which kills it at TIMEOUT (or its own limit).

Standard library only: cos-setup uses it inside the OS.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import CosbuildError

TIMEOUT = 600   # seconds a confined command may run (a finalizer, a cos-setup command)
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "HOME": "/root", "LANG": "C.UTF-8"}
MOUNT_POINTS = {"proc": 0o555, "dev": 0o755, "tmp": 0o1777}   # bwrap mounts over these


def prepare(root: Path) -> None:
    """Make the mount points the sandbox needs in `root`: bwrap would follow a link there."""
    for name, mode in MOUNT_POINTS.items():
        path = Path(root) / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path)   # never follows a link
            os.chmod(path, mode)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise CosbuildError(f"/{name} of {root} is not a directory",
                                hint=f"commands run in the root with a fresh /{name} mounted "
                                     "there; the root is broken or hostile")


def command(root: Path, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    """The command line that runs `argv` confined to `root` (prepared), with ENV and `env`."""
    variables = {**ENV, **(env or {})}
    return ["bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--bind", str(root), "/", "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp", "--chdir", "/", "--clearenv",
            *(arg for key, value in sorted(variables.items()) for arg in ("--setenv", key, value)),
            "--", *argv]
