"""The sample live ISO: layout, incremental and reproducible builds, and boots in QEMU
(BIOS from CD, UEFI from CD, BIOS from the ISO as a disk). Integration: run by `make test`."""

from __future__ import annotations

import shutil

import pycdlib
import pytest

from cosbuild.artifact import sha256_file

from .conftest import copy_project, cosbuild_ok as cosbuild
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
    assert vm.http_get("/hello", 180) == b"hello"
    vm.login("root", "sampleos")
    out = vm.run("cat /etc/os-release; ls /system/oem; hostname; systemctl is-system-running")
    assert 'NAME="sampleOS"' in out
    for name in ("00_rootfs.yaml", "02_upgrades.yaml", "03_branding.yaml", "50_sampleOSService.yaml"):
        assert name in out
    assert "sampleOS" in out.split("50_sampleOSService.yaml", 1)[1]   # the hostname, from 03_branding


@pytest.mark.parametrize("mode", ["bios-cd", "uefi-cd", "bios-disk"])
def test_boot(iso, mode, tmp_path):
    if mode.startswith("uefi") and not OVMF.exists():
        pytest.fail(f"{OVMF} is missing: apt-get install ovmf (make deps does)")
    vm = VM(iso, uefi=mode.startswith("uefi"), as_disk=mode.endswith("disk"),
            log=tmp_path / "console.log")
    try:
        _check_booted(vm)
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
