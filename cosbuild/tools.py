"""The one wrapper every external tool runs through: it logs the command line and all output
to the task's log, turns a missing program into a CosbuildError naming its Debian package
(from `programs`), and a failure into one with the command, the exit code, the last log lines
and the log path."""

from __future__ import annotations

import collections
import contextlib
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from .errors import CosbuildError
from .programs import install_hint
from .terminal import say


class TaskLog:
    """The full log of one task (build/logs/...), with its tail kept for error messages."""

    def __init__(self, path: Path, *, verbose: bool = False, prefix: str = ""):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.verbose = verbose
        self.prefix = prefix
        self._tail: collections.deque[str] = collections.deque(maxlen=25)
        self.doing = ""   # what runs now, for the progress lines of a long step
        self._file = path.open("w", encoding="utf-8", errors="replace")
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            for line in text.splitlines():
                self._tail.append(line)
                self._file.write(line + "\n")
                if self.verbose:
                    say(f"{self.prefix}{line}")
            self._file.flush()

    def tail(self) -> str:
        return "\n".join(f"    {line}" for line in self._tail)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "TaskLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def require(program: str) -> str:
    """The path of `program`, or a CosbuildError saying which Debian package to install."""
    found = shutil.which(program)
    if found is None:
        raise CosbuildError(f"{program} is not installed", hint=install_hint(program))
    return found


def _failed(argv: list[str], code: int, log: TaskLog, what: str) -> CosbuildError:
    return CosbuildError(
        f"{what + ': ' if what else ''}command failed with exit code {code}: "
        f"{shlex.join(argv)}\n  last log lines:\n{log.tail()}\n  full log: {log.path}")


def run(argv: list[str], *, log: TaskLog, capture: bool = False, what: str = "",
        env: dict | None = None, quiet: bool = False, input: str | None = None,
        timeout: float | None = None) -> str:
    """Run argv; its output goes to the log (stdout is returned instead when `capture`).

    `input` is written to its standard input. `quiet` keeps a failure from being logged as a
    failure, for probes that may fail. After `timeout` seconds it is killed and fails."""
    import sh   # imported on first use: a no-op run starts no tool

    started = time.monotonic()
    log.write(f"$ {shlex.join(argv)}" + (f" <<EOF\n{input}EOF" if input is not None else ""))
    log.doing = what or shlex.join(argv[:2])
    command = sh.Command(require(argv[0]))
    kwargs = {"_err": log.write} if capture else {"_out": log.write, "_err_to_out": True}
    if env is not None:
        kwargs["_env"] = env
    if input is not None:
        kwargs["_in"] = input
    if timeout is not None:
        kwargs["_timeout"] = timeout
    try:
        result = command(*argv[1:], **kwargs)
    except sh.TimeoutException:
        raise CosbuildError(f"{what + ': ' if what else ''}stopped after the time limit of "
                            f"{timeout:g} s: {shlex.join(argv)}\n  full log: {log.path}") from None
    except sh.ErrorReturnCode as exc:
        if quiet:
            raise
        raise _failed(argv, exc.exit_code, log, what) from None
    finally:
        log.doing = ""
    log.write(f"  (done in {time.monotonic() - started:.1f}s)")
    return str(result) if capture else ""


@contextlib.contextmanager
def stream(argv: list[str], *, log: TaskLog, what: str = "", env: dict | None = None):
    """Run argv with a pipe to its standard input, yielded as a binary file; on leaving, its
    output goes to the log and a non-zero exit becomes a CosbuildError."""
    started = time.monotonic()
    log.write(f"$ {shlex.join(argv)} < (stream)")
    log.doing = what or shlex.join(argv[:2])
    proc = subprocess.Popen([require(argv[0]), *argv[1:]], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    # read its output as it comes, so that a chatty tool never blocks on a full pipe
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        try:
            yield proc.stdin
            proc.stdin.close()
        except BrokenPipeError:
            pass   # the tool stopped reading: its exit status and output say why
    except BaseException:
        proc.kill()
        raise
    finally:
        code = proc.wait()
        reader.join()
        log.doing = ""
        log.write(b"".join(output).decode(errors="replace"))
    if code != 0:
        raise _failed(argv, code, log, what)
    log.write(f"  (done in {time.monotonic() - started:.1f}s)")


def attached(argv: list[str]) -> int:
    """Run argv on this terminal (its standard input, output and error); returns its exit
    status. Ctrl-C meanwhile is the program's (an interactive shell's): this process waits
    for it instead of dying, and leaves the program's own signal handling at the default."""
    previous = signal.signal(signal.SIGINT, lambda *_: None)   # not SIG_IGN: inherited by exec
    try:
        return subprocess.run([require(argv[0]), *argv[1:]]).returncode
    finally:
        signal.signal(signal.SIGINT, previous)
