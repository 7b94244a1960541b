"""Secure Boot enforced, in QEMU: an unsigned boot loader is refused (seconds); with only a
derivative's own certificate enrolled, the ISO and the disk built with its `secure_boot` key
boot (`make test-all`: a build and two boots). With Microsoft's keys, the live CD and the
disk boot under Secure Boot in tests/test_disk_boot.py's installer and upgrade tests, which
boot them anyway. Without booting: tests/test_secure_boot.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cosbuild.images import fsimage
from cosbuild.tools import TaskLog

from .conftest import copy_project, cosbuild_ok as cosbuild
from .qemu import VM, secure_boot_vars
from .test_disk_boot import BOOT_TIMEOUT, _boot, _boot_disk, _booted
from .test_iso_boot import check_booted
from .test_secure_boot import UNSIGNED_SHIM, key_pair, signers

pytestmark = pytest.mark.integration


def _boot_iso(iso: Path, store: Path, log: Path) -> None:
    vm = VM(iso, uefi=True, log=log, secure_boot_vars=store)
    try:
        check_booted(vm)   # through shim and the CD GRUB, to /hello and a login
        vm.assert_secure_boot()
    finally:
        vm.stop()


def _boot_disk_to_hello(qcow2: Path, store: Path, folder: Path) -> None:
    vm = _boot_disk(qcow2, folder, secure_vars=store)
    try:
        _boot(vm)
        assert vm.http_get("/hello", 180) == b"hello"
        assert _booted(vm) == ("/cOS/active.img", "0.1.0")
        vm.assert_secure_boot()
    finally:
        vm.stop()


@pytest.mark.boot_cycle
def test_secure_boot_with_the_derivatives_own_key(sample, tmp_path):
    """The sample with `secure_boot: {key, cert}` in iso.yaml and disk.yaml: its shims carry
    the derivative's signature beside Microsoft's, and machines that trust only the
    derivative's certificate boot the ISO and the disk."""
    root = copy_project(tmp_path / "own")
    key, cert = key_pair(root / "keys/secure-boot")
    for spec in ("iso.yaml", "disk.yaml"):
        with open(root / spec, "a") as f:
            f.write("secure_boot: {key: keys/secure-boot/db.key, cert: keys/secure-boot/db.crt}\n")
    cosbuild(root, "run", "-n", "2", "-P", "thread", "iso", "image", "disk:qcow2")
    build = root / "build"
    shim = tmp_path / "BOOTX64.EFI"
    subprocess.run(["mcopy", "-i", str(build / "iso/uefi.img"), "::/EFI/BOOT/BOOTX64.EFI",
                    str(shim)], check=True)
    assert signers(shim)[-1] == "/CN=cosbuild test db"
    assert any("Microsoft" in s for s in signers(shim)[:-1])
    _boot_iso(build / "sampleOS-0.live.iso", secure_boot_vars(tmp_path / "iso", cert),
              tmp_path / "iso-console.log")
    (tmp_path / "disk").mkdir()
    _boot_disk_to_hello(build / "sampleOS-0.disk.qcow2", secure_boot_vars(tmp_path / "disk", cert),
               tmp_path / "disk")


def test_secure_boot_refuses_an_unsigned_boot_loader(tmp_path):
    """A disk whose EFI system partition holds an unsigned shim: the firmware refuses it."""
    esp = tmp_path / "esp"
    (esp / "EFI/BOOT").mkdir(parents=True)
    (esp / "EFI/BOOT/BOOTX64.EFI").write_bytes(UNSIGNED_SHIM.read_bytes())
    disk = tmp_path / "unsigned.raw"
    log = TaskLog(tmp_path / "disk.log")
    disk.write_bytes(b"")
    os.truncate(disk, 40 * 1024 * 1024)
    subprocess.run(["sfdisk", "--quiet", str(disk)], input="label: gpt\nstart=2048, type=U\n",
                   text=True, check=True)
    fsimage.make_fat(disk, esp, label="ESP", size_kib=38 * 1024, log=log, offset=1024 * 1024,
                     fat32=True)
    vm = VM(None, uefi=True, boot_disk=disk, log=tmp_path / "console.log",
            secure_boot_vars=secure_boot_vars(tmp_path))
    try:
        vm.wait_for("Access Denied", BOOT_TIMEOUT)
        assert "Welcome to GRUB" not in vm.output and "Linux version" not in vm.output
    finally:
        vm.stop()
