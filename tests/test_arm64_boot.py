"""The sample for arm64 (opt-in: COSBUILD_TEST_ARCH=arm64; on an amd64 host every package
builds under qemu-user, and the machine is emulated by TCG): the live ISO of iso-arm64.yaml
boots in qemu-system-aarch64's virt board with its UEFI firmware to the sample's service,
and a second build from a clean state gives the same ISO."""

from __future__ import annotations

import os
import subprocess

import pycdlib
import pytest

from cosbuild.builds.artifact import sha256_file

from .conftest import copy_project, cosbuild_ok as cosbuild
from .qemu import VM
from .test_iso_boot import BOOT_TIMEOUT, check_booted

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.environ.get("COSBUILD_TEST_ARCH") != "arm64",
                                 reason="the arm64 build and boot: COSBUILD_TEST_ARCH=arm64")]
ENV = {**os.environ, "COSBUILD_ARCH": "arm64"}


@pytest.fixture(scope="module")
def arm64_iso(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("arm64"))
    cosbuild(root, "run", "-n", "2", "-P", "thread", "iso", env=ENV)
    isos = sorted((root / "build-arm64").glob("*.iso"))
    assert [p.name for p in isos] == ["sampleOS-0.live.iso"]
    assert not (root / "build").exists()   # nothing of it beside amd64's outputs
    return isos[0]


def test_the_arm64_iso_boots_in_the_virt_board(arm64_iso, tmp_path):
    vm = VM(arm64_iso, uefi=True, arch="arm64", log=tmp_path / "console.log")
    try:
        check_booted(vm)
        assert vm.run("uname -m").strip() == "aarch64"
    finally:
        vm.stop()


def test_the_arm64_iso_boots_with_uefi_only(arm64_iso):
    """One El Torito entry, the EFI image's, holding shim and GRUB for arm64; no ISOLINUX."""
    cd = pycdlib.PyCdlib()
    cd.open(str(arm64_iso))
    try:
        catalog = cd.eltorito_boot_catalog
        assert not catalog.sections and catalog.initial_entry.load_rba   # the one entry
        with pytest.raises(pycdlib.pycdlibexception.PyCdlibInvalidInput):
            cd.get_record(rr_path="/boot/syslinux")
    finally:
        cd.close()
    uefi = arm64_iso.parent / "iso/uefi.img"
    listing = subprocess.run(["mdir", "-b", "-i", str(uefi), "::/EFI/BOOT"], check=True,
                             capture_output=True, text=True).stdout
    assert {"::/EFI/BOOT/BOOTAA64.EFI", "::/EFI/BOOT/grubaa64.efi"} <= set(listing.split())


def test_the_arm64_iso_is_reproducible(arm64_iso, tmp_path):
    other = copy_project(tmp_path / "other")
    cosbuild(other, "run", "-n", "2", "-P", "thread", "iso", env=ENV)
    build = arm64_iso.parent
    for rel in ("iso/rootfs.squashfs", "iso/uefi.img", arm64_iso.name,
                f"{arm64_iso.stem}.spdx.json"):
        assert sha256_file(other / "build-arm64" / rel) == sha256_file(build / rel), rel
