"""`cosbuild vm` (images/vm.py): its QEMU command line, which the boot tests' harness
(tests/qemu.py) shares, the choice of image and firmware and their errors, the doit task;
and, end to end in a few seconds, a tiny GPT disk whose GRUB BIOS core prints a marker on the
serial console, booted by the real command: the console on its stdout, the upgrade channel
served while it runs and gone after, Ctrl-A X, SIGTERM or a power-off ends it with exit
status 0, `--snapshot` writes nothing."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from cosbuild import settings
from cosbuild.errors import CosbuildError
from cosbuild.images import biosboot, vm

from . import qemu
from .conftest import REPO
from .test_biosboot import BOOT_IMG, MARK, _core, _layout_disk

DISK_YAML = "system: [system/a]\nname: tiny\n"
ISO_YAML = "packages:\n  rootfs: [system/a]\nimage_prefix: tiny-\nimage_name: live\nimage_date: false\n"


# --------------------------------------------------------------------------- the command line

def test_the_command_line_of_a_disk_an_iso_and_the_firmwares():
    disk = vm.qemu_argv(vm.Machine(firmware="uefi", boot_disk=Path("/b/vm/x.qcow2"),
                                   forwards=((18090, 8090), (2222, 22))))
    assert disk == [
        "qemu-system-x86_64", "-accel", "kvm", "-accel", "tcg", "-m", "2048", "-smp", "2",
        "-display", "none", "-serial", "mon:stdio",
        "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:18090-:8090,hostfwd=tcp:127.0.0.1:2222-:22",
        "-device", "virtio-net-pci,netdev=n0",
        "-drive", "file=/b/vm/x.qcow2,format=qcow2,if=virtio", "-bios", str(vm.OVMF)]
    snap = vm.qemu_argv(vm.Machine(firmware="bios", boot_disk=Path("/b/x.qcow2"), snapshot=True,
                                   serial="stdio"))
    assert snap[-2:] == ["-drive", "file=/b/x.qcow2,format=qcow2,if=virtio,snapshot=on"]
    assert "-bios" not in snap and "-no-reboot" not in snap   # SeaBIOS is QEMU's default
    assert snap[snap.index("-serial") + 1] == "stdio"
    iso = vm.qemu_argv(vm.Machine(iso=Path("/b/x.iso")))
    assert iso[-5:] == ["-no-reboot", "-bios", str(vm.OVMF), "-cdrom", "/b/x.iso"]


def test_an_arm64_machine_is_the_virt_board_with_its_uefi_firmware_and_a_scsi_cd():
    iso = vm.qemu_argv(vm.Machine(iso=Path("/b/x.iso"), arch="arm64", accel=("tcg",)))
    assert iso[:7] == ["qemu-system-aarch64", "-machine", "virt", "-cpu", "cortex-a72",
                       "-accel", "tcg"]
    assert iso[-9:] == [
        "-no-reboot", "-bios", "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd",
        "-drive", "file=/b/x.iso,format=raw,if=none,id=cd0,media=cdrom,readonly=on",
        "-device", "virtio-scsi-pci,id=scsi0", "-device", "scsi-cd,drive=cd0"]


def test_secure_boot_runs_the_enforcing_firmware_with_the_machines_variable_store():
    argv = vm.qemu_argv(vm.Machine(iso=Path("/b/x.iso"), secure_boot_vars=Path("/b/vm/x.vars.fd")))
    assert "-bios" not in argv
    assert argv[-9:] == [
        "-no-reboot", "-machine", "q35",
        "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        "-drive", "if=pflash,format=raw,unit=1,file=/b/vm/x.vars.fd", "-cdrom", "/b/x.iso"]


@pytest.mark.parametrize("case", ["cd-oem", "usb", "uefi-disk", "bios-disk", "kernel"])
def test_the_boot_tests_harness_keeps_its_command_line(case, tmp_path, monkeypatch):
    """tests/qemu.py's VM runs the very command line it ran before it used images/vm.py."""
    ran = []

    class Stop(Exception):
        pass

    def popen(argv, **kwargs):
        ran.append(argv)
        raise Stop

    monkeypatch.setattr(qemu.subprocess, "Popen", popen)
    monkeypatch.setattr(qemu, "free_port", lambda: 5555)
    iso, oem, boot = Path("/t/x.iso"), Path("/t/oem.img"), Path("/t/boot.qcow2")
    kernel = (Path("/w/kernel.xz"), Path("/w/rootfs.xz"), "console=ttyS0")
    args = {"cd-oem": ((iso,), {"disks": (oem,)}), "usb": ((iso,), {"as_disk": True}),
            "uefi-disk": ((iso,), {"uefi": True, "boot_disk": boot}),
            "bios-disk": ((None,), {"boot_disk": boot}), "kernel": ((iso,), {"kernel": kernel})}
    positional, keywords = args[case]
    with pytest.raises(Stop):
        qemu.VM(*positional, log=tmp_path / "log", **keywords)
    head = ["qemu-system-x86_64", "-accel", "tcg", "-m", "2048", "-smp", "2", "-display", "none",
            "-serial", "stdio", "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:5555-:8090",
            "-device", "virtio-net-pci,netdev=n0"]
    tail = {"cd-oem": ["-no-reboot", "-drive", "file=/t/oem.img,format=raw,if=virtio,snapshot=on",
                       "-cdrom", "/t/x.iso"],
            "usb": ["-no-reboot", "-drive", "file=/t/x.iso,format=raw,media=disk,snapshot=on"],
            "uefi-disk": ["-drive", "file=/t/boot.qcow2,format=qcow2,if=virtio",
                          "-bios", "/usr/share/ovmf/OVMF.fd", "-cdrom", "/t/x.iso"],
            "bios-disk": ["-drive", "file=/t/boot.qcow2,format=qcow2,if=virtio"],
            "kernel": ["-no-reboot", "-kernel", "/w/kernel.xz", "-initrd", "/w/rootfs.xz",
                       "-append", "console=ttyS0", "-cdrom", "/t/x.iso"]}[case]
    assert ran == [head + tail]


def test_the_options_drive_the_command_the_task_and_the_docs():
    parser = subprocess.run([sys.executable, "-m", "cosbuild.cli", "vm", "--help"],
                            capture_output=True, text=True)
    params = {p["name"]: p for p in vm.doit_params()}
    for o in vm.OPTIONS:
        assert vm.option_flag(o) in parser.stdout and f"`{vm.option_flag(o)}`" in vm.reference()
        assert params[o.name]["long"] == vm.option_flag(o)[2:]
    assert params["forward"]["type"] is list and params["forward"]["default"] == ["8090:8090"]
    assert params["channel_port"]["default"] == 8000
    assert vm.reference() in (REPO / "docs/disks.md").read_text()   # "Boot it"


def test_forwards_are_host_guest_ports():
    assert vm.parse_forward("18090:8090") == (18090, 8090)
    for bad in ("8090", "a:80", "0:80", "80:70000", "1:2:3"):
        with pytest.raises(CosbuildError, match="HOST:GUEST"):
            vm.parse_forward(bad)


# --------------------------------------------------------------------------- choices and errors

def _settings(root: Path) -> settings.Settings:
    return settings.Settings(trees=(), values=(), flavor="x", build_dir=root / "build",
                             iso=root / "iso.yaml", disk=root / "disk.yaml")


def test_the_image_asked_for_else_the_newest(tmp_path):
    (tmp_path / "disk.yaml").write_text(DISK_YAML)
    (tmp_path / "iso.yaml").write_text(ISO_YAML)
    paths = vm.image_paths(_settings(tmp_path))
    build = tmp_path / "build"
    assert paths == {"iso": build / "tiny-live.iso", "disk": build / "tiny.qcow2"}
    with pytest.raises(CosbuildError, match=f"nothing to boot: no {build}/tiny-live.iso or "
                                            f"{build}/tiny.qcow2"):
        vm.choose_image(paths, None)
    with pytest.raises(CosbuildError, match=f"^{build}/tiny-live.iso not found: run doit iso$"):
        vm.choose_image(paths, "iso")
    build.mkdir()
    paths["iso"].write_bytes(b"i")
    assert vm.choose_image(paths, None) == ("iso", paths["iso"])
    with pytest.raises(CosbuildError, match=f"{build}/tiny.qcow2 not found: run doit disk"):
        vm.choose_image(paths, "disk")
    paths["disk"].write_bytes(b"d")
    os.utime(paths["iso"], ns=(1, 1))
    assert vm.choose_image(paths, None) == ("disk", paths["disk"])
    assert vm.choose_image(paths, "iso") == ("iso", paths["iso"])
    with pytest.raises(CosbuildError, match="no iso.yaml: nothing says what --iso boots"):
        vm.choose_image({"disk": paths["disk"]}, "iso")


@pytest.mark.parametrize("args, message", [
    (["--iso"], "build/tiny-live.iso not found: run doit iso"),
    (["--disk"], "build/tiny.qcow2 not found: run doit disk"),
    ([], "nothing to boot: no build/tiny-live.iso or build/tiny.qcow2"),
    (["--iso", "--disk"], "--iso and --disk together: choose one"),
    (["--uefi", "--bios"], "--uefi and --bios together: choose one"),
    (["--secure-boot", "--bios"], "--secure-boot and --bios together: Secure Boot is UEFI's"),
    (["--forward", "8090"], "expected HOST:GUEST TCP ports"),
    (["--accel", ":"], "no accelerator"),
    (["--channel-port", "-1"], "-1 is not a TCP port"),
])
def test_mistakes_are_one_line_errors(project, args, message):
    root = project({"disk.yaml": DISK_YAML, "iso.yaml": ISO_YAML})
    proc = subprocess.run([sys.executable, "-m", "cosbuild.cli", "vm", *args], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_qemu_or_firmware_names_the_package(project, monkeypatch):
    root = project({"disk.yaml": DISK_YAML})
    (root / "build").mkdir()
    (root / "build/tiny.qcow2").write_bytes(b"")
    monkeypatch.setenv("PATH", str(root))   # no qemu-system-x86_64 there
    with pytest.raises(CosbuildError, match="qemu-system-x86_64 is not installed") as exc:
        vm.boot(_settings(root), {"bios": True})
    assert "apt-get install qemu-system-x86" in exc.value.hint
    monkeypatch.setitem(vm.BOARDS, "amd64",
                        dataclasses.replace(vm.BOARDS["amd64"], uefi=root / "OVMF.fd"))
    with pytest.raises(CosbuildError, match="OVMF.fd is not installed"):
        vm.boot(_settings(root), {})


@pytest.mark.parametrize("option", ["bios", "secure_boot"])
def test_an_arm64_machine_boots_with_uefi_without_secure_boot(project, option):
    root = project({"disk.yaml": DISK_YAML})
    arm64 = dataclasses.replace(_settings(root), arch="arm64")
    with pytest.raises(CosbuildError, match="arm64 machines boot with UEFI, without Secure "
                                            "Boot") as exc:
        vm.boot(arm64, {option: True})
    assert exc.value.key == f"--{option.replace('_', '-')}"


@pytest.mark.parametrize("own_key", [False, True])
def test_secure_boot_gives_the_machine_a_variable_store_with_the_images_keys(
        project, monkeypatch, tmp_path, own_key):
    """Microsoft's keys, or only the certificate of disk.yaml's secure_boot when it has one,
    in build/vm/<name>.vars.fd."""
    from .test_secure_boot import certificate, enrolled, key_pair
    root = project({"disk.yaml": DISK_YAML})
    if own_key:
        key, cert = key_pair(root / "keys")
        (root / "disk.yaml").write_text(DISK_YAML + "secure_boot: {key: keys/db.key, cert: keys/db.crt}\n")
    (root / "build").mkdir()
    (root / "build/tiny.qcow2").write_bytes(b"")
    ran = []
    monkeypatch.setattr(vm, "overlay", lambda disk, folder, log: disk)
    monkeypatch.setattr(vm, "run", lambda machine, *a, **k: ran.append(machine) or 0)
    assert vm.boot(_settings(root), {"secure_boot": True, "disk": True}) == 0
    store = root / "build/vm/tiny.vars.fd"
    assert ran[0].secure_boot_vars == store and ran[0].firmware == "uefi"
    if own_key:
        cert = certificate(cert)
        assert enrolled(store) == {"PK": [cert], "KEK": [cert], "db": [cert]}
    else:
        assert store.read_bytes() == vm.secureboot.MICROSOFT_VARS.read_bytes()


def test_vm_options_named_as_settings_are_the_commands(project):
    """--iso and --disk are global settings too (the specification files): before `vm` they
    are those, after it vm's own."""
    root = project({"disk.yaml": DISK_YAML, "other.yaml": DISK_YAML.replace("tiny", "other")})
    proc = subprocess.run([sys.executable, "-m", "cosbuild.cli", "--disk", "other.yaml", "vm",
                           "--disk", "--bios"], cwd=root, capture_output=True, text=True)
    assert "build/other.qcow2 not found: run doit disk" in proc.stderr, proc.stderr


def test_the_doit_task_takes_the_options(project):
    root = project({"tree/a/definition.yaml": "name: a\ncategory: system\nversion: '1'\n",
                    "disk.yaml": DISK_YAML})
    info = subprocess.run([sys.executable, "-m", "cosbuild.cli", "info", "vm"], cwd=root,
                          capture_output=True, text=True)
    for o in vm.OPTIONS:
        assert f"'long': '{vm.option_flag(o)[2:]}'" in info.stdout, info.stdout
    ran = subprocess.run([sys.executable, "-m", "cosbuild.cli", "run", "vm", "--disk"],
                         cwd=root, capture_output=True, text=True)
    out = ran.stdout + ran.stderr
    assert ran.returncode != 0 and "build/tiny.qcow2 not found: run doit disk" in out, out
    assert "Traceback" not in out


# --------------------------------------------------------------------------- booted for real

def _marker_disk(tmp_path: Path, target: Path, then: str) -> None:
    """A qcow2 disk whose GRUB BIOS core prints MARK, then runs `then`."""
    work = tmp_path / "disks" / then.split()[0]
    work.mkdir(parents=True)
    disk, places = _layout_disk(work)
    biosboot.install(disk, places["COS_BIOS"], BOOT_IMG.read_bytes(), _core(work, then))
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(disk), str(tmp)],
                   check=True)
    tmp.replace(target)   # as the build writes it: a new file, newer


class Console:
    """A `cosbuild vm` run with its stdout read as it comes."""

    def __init__(self, cwd: Path, *args: str, stdin=None):
        # a session of its own: a run that fails the test is killed with its QEMU
        self.proc = subprocess.Popen([sys.executable, "-m", "cosbuild.cli", "vm", *args],
                                     cwd=cwd, stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.output = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := os.read(self.proc.stdout.fileno(), 4096):
            self.output += chunk

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.output:
            assert time.monotonic() < deadline and self.proc.poll() is None, self.output
            time.sleep(0.1)

    def finish(self, timeout: float) -> str:
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(10)
        return self.output.decode(errors="replace")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_vm_boots_the_disk_with_the_channel_served_and_quits(project, tmp_path):
    root = project({"disk.yaml": DISK_YAML, "build/repository.yaml": "the channel\n"})
    built = root / "build/tiny.qcow2"
    _marker_disk(tmp_path, built, "sleep 120")     # up until Ctrl-A X
    before = built.read_bytes()
    channel, forward = qemu.free_port(), qemu.free_port()
    run = Console(root, "--disk", "--bios", "--accel", "tcg", "--channel-port", str(channel),
                  "--forward", f"{forward}:8090", stdin=subprocess.PIPE)
    try:
        run.wait_for(MARK, 120)
        with urllib.request.urlopen(f"http://127.0.0.1:{channel}/repository.yaml", timeout=10) as r:
            assert r.read() == b"the channel\n"
        assert _listening(forward)                 # QEMU's forward
        run.proc.stdin.write(b"\x01x")             # Ctrl-A X: QEMU quits
        run.proc.stdin.flush()
    finally:
        out = run.finish(60)
    assert run.proc.returncode == 0, out
    assert f"vm: http://127.0.0.1:{forward} -> the machine's port 8090" in out, out
    assert f"http://10.0.2.2:{channel} in the machine" in out and "Ctrl-A X quits" in out, out
    assert not _listening(channel) and not _listening(forward)
    # the machine's disk is the overlay; the built disk, a doit target, is as it was
    overlay = root / "build/vm/tiny.qcow2"
    assert overlay.is_file() and built.read_bytes() == before
    first = overlay.stat().st_ino

    # headless, SIGTERM stops it: the machine and the channel too, and it is a clean end
    run = Console(root, "--disk", "--bios", "--headless", "--accel", "tcg",
                  "--channel-port", str(channel), "--forward", f"{forward}:8090")
    try:
        run.wait_for(MARK, 120)
        assert _listening(channel) and _listening(forward)
        run.proc.send_signal(signal.SIGTERM)
    finally:
        out = run.finish(60)
    assert run.proc.returncode == 0 and "vm: stopped on request" in out, out
    assert "Traceback" not in out and not _listening(channel) and not _listening(forward)

    # A new build: headless, the machine powers off by itself; --snapshot writes nothing
    _marker_disk(tmp_path, built, "halt")
    before = built.read_bytes()
    overlay_before = overlay.read_bytes()
    run = Console(root, "--disk", "--bios", "--headless", "--snapshot", "--accel", "tcg",
                  "--channel-port", "0")
    out = run.finish(120)
    assert run.proc.returncode == 0 and MARK in out, out
    assert f"vm: {built.relative_to(root)} with BIOS firmware, writes discarded" in out, out
    assert built.read_bytes() == before and overlay.read_bytes() == overlay_before

    # without --snapshot the overlay is made again over the new build
    run = Console(root, "--disk", "--bios", "--headless", "--accel", "tcg",
                  "--channel-port", "0")
    out = run.finish(120)
    assert run.proc.returncode == 0 and MARK in out, out
    assert overlay.stat().st_ino != first and built.read_bytes() == before
    info = subprocess.run(["qemu-img", "info", "--output=json", str(overlay)],
                          capture_output=True, text=True, check=True).stdout
    assert f'"backing-filename": "{built.resolve()}"' in info
