"""Commands of an untrusted root run confined to it: repository finalizers (repos/transaction.py)
and the `commands` of `cos-setup --root` (runtime/setup.py); and the host's programs that
work on such a root (host_program).

bubblewrap gives the command new mount, PID, network, IPC, UTS and cgroup namespaces with
the root as `/` (bwrap pivots into it: the host's tree is gone, not just out of reach), a
fresh /proc whose kernel settings are read-only (PROC_READ_ONLY: as uid 0 the command could
write the host's sysctls, such as core_pattern, a way out), a minimal /dev and an
empty /tmp, and a clean environment (nothing of the caller's). It dies with its caller,
which kills it at TIMEOUT (or its own limit).

It keeps root's file capabilities only (CAPABILITIES): a finalizer may chown, chmod and add
users in its root, as luet's do, but not chroot(), mount(), make device nodes, load modules,
reach files by handle or change the clock. No user namespace: one mapping uid 0 alone would
make every file of another owner unchangeable (`useradd -m` fails).

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
CAPABILITIES = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_SETUID",
                "CAP_SETGID", "CAP_SETFCAP", "CAP_KILL")   # KILL: its own PID namespace only
# the host's kernel settings under /proc, as container runtimes keep them (docker, runc)
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
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
    return ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            *(arg for cap in CAPABILITIES for arg in ("--cap-add", cap)),
            "--bind", str(root), "/", "--proc", "/proc",
            *(arg for name in PROC_READ_ONLY for arg in ("--ro-bind-try", f"/proc/{name}",
                                                         f"/proc/{name}")),
            "--dev", "/dev",
            "--tmpfs", "/tmp", "--chdir", "/", "--clearenv",
            *(arg for key, value in sorted(variables.items()) for arg in ("--setenv", key, value)),
            "--", *argv]


# what the host's programs may do to a root (useradd --root chroots into it)
HOST_PROGRAM_CAPABILITIES = (*CAPABILITIES, "CAP_SYS_CHROOT")


def host_program(root: Path, argv: list[str]) -> list[str]:
    """The command line that runs the host's program `argv` (systemctl --root, useradd
    --root, ...) seeing the host read-only and `root` alone writable: such programs follow
    the root's links as the host's paths, so a link such as /etc -> /elsewhere would take
    their writes out of the root."""
    root = os.path.abspath(root)
    return ["bwrap", "--die-with-parent", "--unshare-pid",
            "--ro-bind", "/", "/", "--bind", root, root, "--dev", "/dev", "--proc", "/proc",
            "--cap-drop", "ALL",
            *(arg for cap in HOST_PROGRAM_CAPABILITIES for arg in ("--cap-add", cap)),
            "--", *argv]
