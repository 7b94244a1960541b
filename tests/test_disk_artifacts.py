"""The installed disk's files, without booting: `doit image` / `doit disk` (layout, every
format of the sample's disk.yaml, incremental, reproducible). The files no boot test takes
are removed when this module is done: the boot tests' fixtures need the room.
Integration: run by `make test`."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tarfile

import pytest

from cosbuild.builds.artifact import sha256_file
from cosbuild.images.formats import FORMATS

from .conftest import BOOTED_FORMATS, cosbuild_ok as cosbuild, disk_files
from .test_build_integration import ran

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def formats(sample, disk):
    """Every file of `doit image disk`: those the boot tests take, and the raw disk and the
    other formats the sample's disk.yaml lists, which are removed afterwards."""
    cosbuild(sample, "run", "-n", "2", "-P", "thread", "disk")
    files = disk_files(sample, [f.name for f in FORMATS])
    assert all(p.is_file() for p in files.values())
    yield files
    for name, path in files.items():
        if name not in ("active", *BOOTED_FORMATS):
            path.unlink(missing_ok=True)


def _debugfs(image: str, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, image], capture_output=True, text=True,
                          check=True).stdout


def test_disk_layout(formats):
    out = subprocess.run(["dumpe2fs", "-h", str(formats["active"])], capture_output=True,
                         text=True, check=True).stdout
    assert re.search(r"Filesystem volume name:\s+COS_ACTIVE", out)
    assert "VERSION=\"0.1.0\"" in _debugfs(str(formats["active"]), "cat /usr/lib/os-release")
    table = json.loads(subprocess.run(["sfdisk", "--json", str(formats["raw"])], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    parts = {p["name"]: p for p in table["partitions"]}
    assert list(parts) == ["COS_BIOS", "COS_GRUB", "COS_OEM", "COS_STATE", "COS_RECOVERY",
                           "COS_PERSISTENT"]
    assert parts["COS_GRUB"]["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert parts["COS_BIOS"]["type"] == "21686148-6449-6E6F-744E-656564454649"
    with open(formats["raw"], "rb") as f:   # GRUB's boot sector, pointing at COS_BIOS
        mbr = f.read(512)
    assert mbr[0x5c:0x64] == parts["COS_BIOS"]["start"].to_bytes(8, "little")

    def at(label):   # e2fsprogs open a partition of the disk image in place
        return f"{formats['raw']}?offset={parts[label]['start'] * 512}"
    state = _debugfs(at("COS_STATE"), "ls -l /cOS") + _debugfs(at("COS_STATE"), "ls -l /grub2")
    assert all(name in state for name in ("active.img", "passive.img", "grub.cfg"))
    assert "recovery.img" in _debugfs(at("COS_RECOVERY"), "ls -l /cOS")
    # Debian's signed chain: shim, the signed GRUB beside it, its way to the menu
    efi = subprocess.run(["mdir", "-/", "-b", "-i",
                          f"{formats['raw']}@@{parts['COS_GRUB']['start'] * 512}", "::/EFI"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout
    assert sorted(line.strip() for line in efi.splitlines() if not line.endswith("/")) == \
        ["::/EFI/BOOT/BOOTX64.EFI", "::/EFI/BOOT/grubx64.efi", "::/EFI/debian/grub.cfg"], efi
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(formats["qcow2"])],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == formats["raw"].stat().st_size


def test_the_systems_boot_has_no_ordering_cycle(sample, disk):
    """systemd breaks an ordering cycle at boot by dropping a job, which only its journal
    tells (the boot assessment's units were once in one): checked offline in the system
    image's staged root."""
    root = sample / "build/disk/rootfs"
    proc = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "default.target"],
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert "ordering cycle" not in out, out
    wants = root / "etc/systemd/system"
    assert (wants / "multi-user.target.wants/cos-boot-success.service").is_symlink()
    assert (wants / "boot-complete.target.requires/cos-health-check.service").is_symlink()


def test_second_run_does_nothing(sample, formats):
    assert ran(cosbuild(sample, "run", "image", "disk")) == set()


def test_image_and_disk_are_reproducible(sample, formats):
    """Every file of `doit image disk`, each format included, byte for byte."""
    before = {k: sha256_file(p) for k, p in formats.items()}
    for p in formats.values():
        p.unlink()
    done = ran(cosbuild(sample, "run", "-n", "2", "-P", "thread", "image", "disk"))
    assert {"image:active", *(f"disk:{k}" for k in formats if k != "active")} <= done
    assert {k: sha256_file(p) for k, p in formats.items()} == before


def _member_sha256(tar_path, suffix: str) -> str:
    """sha256 of the one member of a tar whose name ends with `suffix`, streamed."""
    with tarfile.open(tar_path) as tar:
        [member] = [m for m in tar.getmembers() if m.name.endswith(suffix)]
        digest = hashlib.sha256()
        with tar.extractfile(member) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()


def test_every_format_holds_the_raw_disk(formats):
    """No boot per format: each disk file has the raw disk's content (qemu-img compare), and
    the OVA and the boxes carry those very files."""
    for fmt in ("qcow2", "vmdk", "vhdx"):
        out = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", fmt, str(formats["raw"]),
                              str(formats[fmt])], capture_output=True, text=True)
        assert out.returncode == 0 and "Images are identical" in out.stdout, (fmt, out)
    vmdk, qcow2 = sha256_file(formats["vmdk"]), sha256_file(formats["qcow2"])
    assert _member_sha256(formats["ova"], ".vmdk") == vmdk
    assert _member_sha256(formats["virtualbox-box"], ".vmdk") == vmdk
    assert _member_sha256(formats["libvirt-box"], "box.img") == qcow2
