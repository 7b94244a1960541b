"""The one wrapper every external tool runs through: it logs the command line and all output
to the task's log, and turns a failure into a CosbuildError with the command, the exit code,
the last log lines and the log path."""

from __future__ import annotations

import collections
import shlex
import sys
import threading
import time
from pathlib import Path

from .errors import CosbuildError

# how to get each tool on Debian, for the "not installed" message
INSTALL_HINTS = {
    "buildah": "apt-get install buildah (or run `make deps`)",
    "mmdebstrap": "apt-get install mmdebstrap (or run `make deps`)",
}


class TaskLog:
    """The full log of one task (build/logs/...), with its tail kept for error messages."""

    def __init__(self, path: Path, *, verbose: bool = False, prefix: str = ""):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.verbose = verbose
        self.prefix = prefix
        self._tail: collections.deque[str] = collections.deque(maxlen=25)
        self._file = path.open("w", encoding="utf-8", errors="replace")
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            for line in text.splitlines():
                self._tail.append(line)
                self._file.write(line + "\n")
                if self.verbose:
                    print(f"{self.prefix}{line}", file=sys.stdout, flush=True)
            self._file.flush()

    def tail(self) -> str:
        return "\n".join(f"    {line}" for line in self._tail)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "TaskLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run(argv: list[str], *, log: TaskLog, capture: bool = False, what: str = "",
        env: dict | None = None, quiet: bool = False) -> str:
    """Run argv; its output goes to the log (stdout is returned instead when `capture`).

    `quiet` keeps a failure from being logged as a failure, for probes that may fail."""
    import sh   # imported on first use: a no-op run starts no tool

    started = time.monotonic()
    log.write(f"$ {shlex.join(argv)}")
    try:
        command = sh.Command(argv[0])
    except sh.CommandNotFound:
        raise CosbuildError(f"{argv[0]} is not installed",
                            hint=f"install it: {INSTALL_HINTS.get(argv[0], 'apt-get install ' + argv[0])}") from None
    kwargs = {"_err": log.write, "_env": env} if capture else {"_out": log.write, "_err_to_out": True, "_env": env}
    if env is None:
        del kwargs["_env"]
    try:
        result = command(*argv[1:], **kwargs)
    except sh.ErrorReturnCode as exc:
        if quiet:
            raise
        raise CosbuildError(
            f"{what + ': ' if what else ''}command failed with exit code {exc.exit_code}: "
            f"{shlex.join(argv)}\n  last log lines:\n{log.tail()}\n  full log: {log.path}") from None
    log.write(f"  (done in {time.monotonic() - started:.1f}s)")
    return str(result) if capture else ""
