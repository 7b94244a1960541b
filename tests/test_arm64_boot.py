"""The sample for arm64 (opt-in: COSBUILD_TEST_ARCH=arm64; on an amd64 host every package
builds under qemu-user, and the machines are emulated by TCG): the live ISO of
iso-arm64.yaml and the disk of disk-arm64.yaml boot in qemu-system-aarch64's virt board with
its UEFI firmware to the sample's service, and a second build from a clean state gives the
same ISO and disk."""

from __future__ import annotations

import os
import subprocess

import pycdlib
import pytest

from cosbuild.builds.artifact import sha256_file

from .conftest import copy_project, cosbuild_ok as cosbuild
from .qemu import VM
from .test_disk_boot import _boot, _boot_disk, _booted
from .test_iso_boot import check_booted

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.environ.get("COSBUILD_TEST_ARCH") != "arm64",
                                 reason="the arm64 build and boots: COSBUILD_TEST_ARCH=arm64")]
ENV = {**os.environ, "COSBUILD_ARCH": "arm64"}
OUTPUTS = ("iso/rootfs.squashfs", "iso/uefi.img", "sampleOS-0.live.iso",
           "sampleOS-0.live.spdx.json", "active.img", "sampleOS-0.disk.raw",
           "sampleOS-0.disk.qcow2")


@pytest.fixture(scope="module")
def arm64(tmp_path_factory):
    """The sample's arm64 build folder, ISO and disk made."""
    root = copy_project(tmp_path_factory.mktemp("arm64"))
    cosbuild(root, "run", "-n", "2", "-P", "thread", "iso", "disk", env=ENV)
    assert not (root / "build").exists()   # nothing of it beside amd64's outputs
    return root / "build-arm64"


def test_the_arm64_iso_boots_in_the_virt_board(arm64, tmp_path):
    vm = VM(arm64 / "sampleOS-0.live.iso", uefi=True, arch="arm64", log=tmp_path / "console.log")
    try:
        check_booted(vm)
        assert vm.run("uname -m").splitlines()[-1] == "aarch64"
    finally:
        vm.stop()


def test_the_arm64_disk_boots_in_the_virt_board(arm64, tmp_path):
    """UEFI -> shim (BOOTAA64.EFI) -> grubaa64 -> the menu on COS_STATE -> active.img."""
    vm = _boot_disk(arm64 / "sampleOS-0.disk.qcow2", tmp_path, arch="arm64")
    try:
        _boot(vm)
        assert vm.http_get("/hello", 180) == b"hello"
        assert _booted(vm) == ("/cOS/active.img", "0.1.0")
        assert vm.run("uname -m").splitlines()[-1] == "aarch64"
    finally:
        vm.stop()


def test_the_arm64_media_boot_with_uefi_only(arm64):
    """The ISO's one El Torito entry is the EFI image's, with shim and GRUB for arm64, and
    no ISOLINUX; the disk has no BIOS boot partition."""
    cd = pycdlib.PyCdlib()
    cd.open(str(arm64 / "sampleOS-0.live.iso"))
    try:
        catalog = cd.eltorito_boot_catalog
        assert not catalog.sections and catalog.validation_entry.platform_id == 0xEF
        with pytest.raises(pycdlib.pycdlibexception.PyCdlibInvalidInput):
            cd.get_record(rr_path="/boot/syslinux")
    finally:
        cd.close()
    listing = subprocess.run(["mdir", "-b", "-i", str(arm64 / "iso/uefi.img"), "::/EFI/BOOT"],
                             check=True, capture_output=True, text=True,
                             env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout
    assert {"::/EFI/BOOT/BOOTAA64.EFI", "::/EFI/BOOT/grubaa64.efi"} <= set(listing.split())
    table = subprocess.run(["sfdisk", "--dump", str(arm64 / "sampleOS-0.disk.raw")],
                           check=True, capture_output=True, text=True).stdout
    assert "COS_BIOS" not in table and 'name="COS_GRUB"' in table


def test_the_arm64_build_is_reproducible(arm64, tmp_path):
    other = copy_project(tmp_path / "other")
    cosbuild(other, "run", "-n", "2", "-P", "thread", "iso", "disk", env=ENV)
    for rel in OUTPUTS:
        assert sha256_file(other / "build-arm64" / rel) == sha256_file(arm64 / rel), rel
