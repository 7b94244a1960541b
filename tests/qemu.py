"""A QEMU virtual machine for the boot tests: `cosbuild vm`'s command line (images/vm.py)
with TCG, the serial console on a pipe, the guest's port 8090 forwarded to a free port on
127.0.0.1; bounded waits."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from cosbuild.images import secureboot, vm
from cosbuild.tools import TaskLog

OVMF = vm.OVMF


def secure_boot_vars(folder: Path, cert: Path | None = None) -> Path:
    """A machine's own variable store with Secure Boot on, as `cosbuild vm --secure-boot`
    makes it: Microsoft's keys, or only `cert`."""
    folder.mkdir(parents=True, exist_ok=True)
    return secureboot.make_vars(folder / "vars.fd", cert, TaskLog(folder / "vars.log"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VM:
    def __init__(self, iso: Path | None, *, uefi: bool = False, as_disk: bool = False, log: Path,
                 disks: tuple[Path, ...] = (), kernel: tuple[Path, Path, str] | None = None,
                 boot_disk: Path | None = None, secure_boot_vars: Path | None = None,
                 arch: str = "amd64"):
        """`disks`: extra raw disks (changes are discarded); `kernel`: (kernel, initrd,
        command line) to boot directly instead of through the ISO's boot loader;
        `boot_disk`: a qcow2 disk that is written to, and the machine may reboot;
        `secure_boot_vars`: UEFI with Secure Boot enforced, this variable store; `arch`:
        the machine's architecture (vm.BOARDS)."""
        assert not uefi or OVMF.exists(), f"{OVMF} is missing: apt-get install ovmf (make deps does)"
        self.port = free_port()
        self.log_path = log
        # cosbuild vm's own command line, with the console on a pipe instead of the terminal
        argv = vm.qemu_argv(vm.Machine(
            firmware="uefi" if uefi else "bios", iso=iso, iso_as_disk=as_disk,
            boot_disk=boot_disk, disks=disks, kernel=kernel, secure_boot_vars=secure_boot_vars,
            forwards=((self.port, 8090),),
            serial="stdio", accel=("tcg",), arch=arch))
        self.output = ""
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with open(self.log_path, "wb") as log:
            while True:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    return
                log.write(chunk)
                log.flush()
                with self._lock:
                    self.output += chunk.decode(errors="replace")

    def wait_for(self, text: str, timeout: float, since: int = 0) -> int:
        """Wait until `text` appears in the console output after position `since`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = self.output.find(text, since)
            if found >= 0:
                return found + len(text)
            if self.proc.poll() is not None:
                raise AssertionError(f"QEMU exited; console log: {self.log_path}")
            time.sleep(0.5)
        raise AssertionError(f"{text!r} not seen within {timeout}s; console log: {self.log_path}")

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def login(self, user: str, password: str, timeout: float = 60) -> None:
        self.send("")
        at = self.wait_for("login:", timeout, len(self.output) - 200 if self.output else 0)
        self.send(user)
        at = self.wait_for("Password:", timeout, at)
        self.send(password)
        self.wait_for("#", timeout, at)

    def run(self, command: str, timeout: float = 60) -> str:
        """Run a shell command on the console; returns what it printed."""
        marker = f"END{time.monotonic_ns()}"
        start = len(self.output)
        self.send(f"{command}; echo {marker[:3]}''{marker[3:]}")
        end = self.wait_for(marker, timeout, start)
        with self._lock:
            text = self.output[start:end - len(marker)]
        return text.split("\n", 1)[1] if "\n" in text else text

    def http_get(self, path: str, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                    return r.read()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def assert_secure_boot(self) -> None:
        """Logged in: the kernel was started with Secure Boot on (and so locked itself down)."""
        out = self.run("dmesg | grep -e 'Secure boot' -e 'locked down'")
        assert "secureboot: Secure boot enabled" in out, out
        assert "Kernel is locked down from EFI Secure Boot" in out, out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
