"""The sample live ISO: layout, incremental and reproducible builds, and boots in QEMU
(BIOS from CD, UEFI from CD, BIOS from the ISO as a disk). Integration: run by `make test`."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pycdlib
import pytest

from cosbuild.builds.artifact import sha256_file
from cosbuild.repos.serve import make_server

from .conftest import copy_project, cosbuild_ok as cosbuild, running
from .qemu import OVMF, VM
from .test_build_integration import ran

pytestmark = pytest.mark.integration

BOOT_TIMEOUT = 600   # TCG: a boot takes 2-3 minutes here


@pytest.fixture(scope="module")
def iso(sample):
    cosbuild(sample, "run", "-n", "2", "-P", "thread", "iso")
    isos = sorted((sample / "build").glob("*.iso"))
    assert [p.name for p in isos] == ["sampleOS-0.live.iso"]
    return isos[0]


def test_iso_layout(iso):
    sums = (iso.parent / (iso.name + ".sha256")).read_text().split()
    assert sums == [sha256_file(iso), iso.name]
    cd = pycdlib.PyCdlib()
    cd.open(str(iso))
    try:
        assert cd.pvd.volume_identifier.rstrip() == b"COS_LIVE"
        for path in ("/rootfs.squashfs", "/boot/kernel.xz", "/boot/rootfs.xz", "/boot/uefi.img",
                     "/boot/syslinux/isolinux.bin", "/boot/syslinux/isolinux.cfg"):
            cd.get_record(rr_path=path)
        entries = [cd.eltorito_boot_catalog.initial_entry,
                   *[e for s in cd.eltorito_boot_catalog.sections for e in s.section_entries]]
        assert len(entries) == 2
        assert cd.eltorito_boot_catalog.sections[0].platform_id == 0xEF
    finally:
        cd.close()
    assert iso.read_bytes()[510:512] == b"\x55\xaa"   # isohybrid MBR


def test_second_run_does_nothing(sample, iso):
    assert ran(cosbuild(sample, "run", "iso")) == set()


def _check_booted(vm: VM) -> None:
    vm.wait_for("login:", BOOT_TIMEOUT)
    # the early stages ran from the initramfs hook, before the switch to the real root
    assert "dracut-pre-pivot" in vm.output and "cos-setup: " in vm.output
    assert vm.http_get("/hello", 180) == b"hello"
    vm.login("root", "sampleos")
    out = vm.run("cat /etc/os-release; ls /system/oem; hostname; systemctl is-system-running")
    assert 'NAME="sampleOS"' in out
    for name in ("00_rootfs.yaml", "02_upgrades.yaml", "03_branding.yaml", "50_sampleOSService.yaml"):
        assert name in out
    assert "sampleOS" in out.split("50_sampleOSService.yaml", 1)[1]   # the hostname, from 03_branding


def oem_disk(tmp_path) -> Path:
    """A COS_OEM partition image (made without mounting) with one cloud-config file."""
    folder = tmp_path / "oem"
    folder.mkdir()
    (folder / "90_test.yaml").write_text(
        "stages:\n  boot:\n    - files: [{path: /etc/from-oem, content: \"oem partition\\n\"}]\n")
    image = tmp_path / "oem.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "COS_OEM", "-d", str(folder),
                    str(image), "16M"], check=True)
    return image


@pytest.mark.parametrize("mode", ["bios-cd", "uefi-cd", "bios-disk"])
def test_boot(iso, mode, tmp_path):
    if mode.startswith("uefi") and not OVMF.exists():
        pytest.fail(f"{OVMF} is missing: apt-get install ovmf (make deps does)")
    disks = (oem_disk(tmp_path),) if mode == "bios-cd" else ()
    vm = VM(iso, uefi=mode.startswith("uefi"), as_disk=mode.endswith("disk"),
            log=tmp_path / "console.log", disks=disks)
    try:
        _check_booted(vm)
        if disks:   # the persistent OEM partition's cloud-config ran too
            assert "oem partition" in vm.run("cat /etc/from-oem")
    finally:
        vm.stop()


def test_cos_setup_file_from_the_kernel_command_line(sample, iso, tmp_path):
    """cos.setup=URI: a file served by the test (10.0.2.2 is the host for the guest)."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www/extra.yaml").write_text(
        "stages:\n  network:\n    - files: [{path: /etc/from-cmdline, content: \"cmdline\\n\"}]\n")
    work = sample / "build/iso"
    with running(make_server(tmp_path / "www", "127.0.0.1", 0)) as url:
        port = url.rsplit(":", 1)[1]
        cmdline = ("root=live:CDLABEL=COS_LIVE rd.live.dir=/ rd.live.squashimg=rootfs.squashfs "
                   "rd.live.overlay.overlayfs=1 console=ttyS0,115200 "
                   f"cos.setup=http://10.0.2.2:{port}/extra.yaml")
        vm = VM(iso, log=tmp_path / "console.log",
                kernel=(work / "kernel.xz", work / "rootfs.xz", cmdline))
        try:
            _check_booted(vm)
            deadline = time.monotonic() + 120
            while "cmdline" not in vm.run("cat /etc/from-cmdline"):
                assert time.monotonic() < deadline, "the cos.setup file never ran"
                time.sleep(5)
        finally:
            vm.stop()


def test_reproducible(sample, iso, tmp_path):
    """A second build from a clean state gives byte-identical squashfs and ISO."""
    other = copy_project(tmp_path / "other")
    cosbuild(other, "run", "-n", "2", "-P", "thread", "iso")
    for rel in ("build/iso/rootfs.squashfs", "build/iso/uefi.img", f"build/{iso.name}"):
        assert sha256_file(other / rel) == sha256_file(sample / rel), rel


def test_one_package_change_rebuilds_only_what_depends_on_it(sample, iso):
    branding = sample / "tree/system/sampleOS/files/oem/03_branding.yaml"
    original = branding.read_text()
    try:
        branding.write_text(original + "# changed\n")
        assert ran(cosbuild(sample, "run", "iso")) == {
            "build:system/sampleOS", "repo", "iso:rootfs", "iso:squashfs", "iso:kernel",
            "iso:image"}
    finally:
        branding.write_text(original)
        cosbuild(sample, "run", "iso")
