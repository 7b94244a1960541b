"""The sample live ISO: layout, incremental and reproducible builds, and boots in QEMU: BIOS
from CD and BIOS from the ISO as a disk here; UEFI from CD is the installer's live boot
(tests/test_disk_boot.py), and the kernel command line's cos.setup the derivative's boot
(tests/test_remote_integration.py). Integration: run by `make test`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pycdlib
import pytest

from cosbuild.builds.artifact import sha256_file

from .conftest import copy_project, cosbuild_ok as cosbuild
from .qemu import VM
from .test_build_integration import ran

pytestmark = pytest.mark.integration

BOOT_TIMEOUT = 600   # TCG: 45 s to login here, 2-3 minutes on a slower machine


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


def check_booted(vm: VM) -> None:
    """What every boot of the live system must show: the cOS stages, the sample's service
    answering on its forwarded port, the branding and the OEM files; logged in afterwards."""
    vm.wait_for("login:", BOOT_TIMEOUT)
    # the early stages ran from the initramfs hook, before the switch to the real root
    assert "dracut-pre-pivot" in vm.output and "cos-setup: " in vm.output
    # a partition the machine does not have is not waited for (systemd would wait 90 s)
    assert "Timed out waiting for device" not in vm.output
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


@pytest.mark.parametrize("mode", ["bios-cd", "bios-disk"])
def test_boot(iso, mode, tmp_path):
    disks = (oem_disk(tmp_path),) if mode == "bios-cd" else ()
    vm = VM(iso, as_disk=mode.endswith("disk"), log=tmp_path / "console.log", disks=disks)
    try:
        check_booted(vm)
        if disks:   # the persistent OEM partition's cloud-config ran too
            assert "oem partition" in vm.run("cat /etc/from-oem")
    finally:
        vm.stop()


def test_reproducible(sample, iso, tmp_path):
    """A second build from a clean state gives byte-identical squashfs, ISO and SBOM."""
    other = copy_project(tmp_path / "other")
    cosbuild(other, "run", "-n", "2", "-P", "thread", "iso")
    for rel in ("build/iso/rootfs.squashfs", "build/iso/uefi.img", f"build/{iso.name}",
                f"build/{iso.stem}.spdx.json"):
        assert sha256_file(other / rel) == sha256_file(sample / rel), rel


def test_one_change_rebuilds_only_what_depends_on_it(sample, iso):
    """A source edit of the service rebuilds it, the system built on it and the ISO, nothing
    else; a values change only the packages that render it; then back to the shared state."""
    main = sample / "tree/app/sampleOSService/src/main.go"
    values = sample / "values/bookworm.yaml"
    originals = {main: main.read_text(), values: values.read_text()}
    try:
        # a new fortune: a comment would change the build hash but not the binary, and the
        # same artifact makes no new squashfs or ISO
        fortune = '"Immutable roots bear reliable fruit.",'
        assert fortune in originals[main]
        main.write_text(originals[main].replace(fortune, f'{fortune} "A test edit.",'))
        assert ran(cosbuild(sample, "run", "iso")) == {
            "build:app/sampleOSService", "build:system/sampleOS", "repo", "iso:rootfs",
            "iso:squashfs", "iso:kernel", "iso:sbom", "iso:image"}
        values.write_text(originals[values].replace("amd64: ttyS0,115200", "amd64: ttyS0,38400"))
        assert ran(cosbuild(sample, "run", "build")) == {"build:live/syslinux",
                                                         "build:live/grub2-efi-image"}
        assert ran(cosbuild(sample, "run", "build")) == set()
    finally:
        for path, text in originals.items():
            path.write_text(text)
        cosbuild(sample, "run", "iso")   # back to the state the other tests share
