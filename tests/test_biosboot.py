"""GRUB's BIOS boot code on the GPT layout (images/biosboot.py): placed as grub-bios-setup
places it, and proven by SeaBIOS booting a disk laid out by the real partition table into a
GRUB core that says so on the serial console (a fraction of a second under TCG)."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from cosbuild.errors import CosbuildError
from cosbuild.images import biosboot, layout

from .test_disk import laid_out_disk

BOOT_IMG = Path("/usr/lib/grub/i386-pc/boot.img")
MARK = "cosbuild-bios-core-ran"


def _core(tmp_path: Path, then: str = "halt") -> bytes:
    """A GRUB i386-pc core whose embedded config prints MARK and then halts (or runs
    `then`: `sleep 60` keeps the machine up)."""
    cfg = tmp_path / "embedded.cfg"
    cfg.write_text(f"serial --unit=0 --speed=115200\nterminal_output serial\necho {MARK}\n"
                   f"{then}\n")
    core = tmp_path / "core.img"
    subprocess.run(["grub-mkimage", "-O", "i386-pc", "-o", str(core), "-p", "/grub2",
                    "-c", str(cfg), "biosdisk", "part_gpt", "serial", "terminal", "echo",
                    "halt", "sleep"], check=True)
    return core.read_bytes()


def _layout_disk(tmp_path: Path) -> tuple[Path, dict]:
    disk = tmp_path / "disk.raw"
    return disk, laid_out_disk(disk, layout.partition_sizes(4, grub=1, oem=1, persistent=1),
                               "bios")


def _seabios(disk: Path, wait: float) -> str:
    """The serial console of a SeaBIOS machine booting `disk`, until it powers off (the core
    halts) or `wait` seconds pass (a disk that does not boot leaves SeaBIOS retrying)."""
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "128", "-display", "none",
            "-serial", "stdio", "-no-reboot", "-net", "none", "-drive", f"file={disk},format=raw"]
    try:
        out = subprocess.run(argv, capture_output=True, timeout=wait).stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
    return out.decode(errors="replace")


def test_seabios_boots_the_core_through_the_mbr(tmp_path):
    disk, places = _layout_disk(tmp_path)
    table = disk.read_bytes()[:512]
    assert MARK not in _seabios(disk, 5)     # a bare GPT disk does not boot
    core = _core(tmp_path)
    biosboot.install(disk, places["COS_BIOS"], BOOT_IMG.read_bytes(), core)
    assert MARK in _seabios(disk, 120)
    data = disk.read_bytes()
    mbr, lba = data[:512], places["COS_BIOS"][0] // 512
    assert mbr[0x1b8:0x1fe] == table[0x1b8:0x1fe]     # the protective MBR's table is kept
    assert struct.unpack("<Q", mbr[0x5c:0x64]) == (lba,)
    sectors = -(-len(core) // 512)
    start, count, segment = struct.unpack("<QHH", data[lba * 512 + 500:lba * 512 + 512])
    assert (start, count, segment) == (lba + 1, sectors - 1, 0x820)
    assert data[lba * 512 + 512:lba * 512 + len(core)] == core[512:]


def test_a_core_that_does_not_fit_or_a_bad_boot_sector_is_refused(tmp_path):
    boot = BOOT_IMG.read_bytes()
    with pytest.raises(CosbuildError, match="does not fit the 1024 KiB BIOS boot partition"):
        biosboot.placed_core(b"\xaa" * (layout.MIB + 1), 2048, layout.MIB)
    with pytest.raises(CosbuildError, match="not a 512-byte boot sector"):
        biosboot.boot_sector(boot[:511], bytes(512), 2048)
    blank = tmp_path / "blank.raw"
    blank.write_bytes(bytes(2 * layout.MIB))
    with pytest.raises(CosbuildError, match="has no partition table"):
        biosboot.install(blank, (layout.MIB, layout.MIB), boot, b"\0" * 1024)
    assert blank.read_bytes() == bytes(2 * layout.MIB)   # nothing written


def test_a_roots_oversized_core_is_refused_without_reading_it_all(tmp_path):
    disk, places = _layout_disk(tmp_path)
    core = tmp_path / "core.img"
    with open(core, "wb") as f:        # sparse: 1 TiB a whole read would swallow
        f.truncate(1 << 40)
    boot = layout.BootFiles(tmp_path / "grub.cfg", {}, BOOT_IMG, core)
    before = disk.read_bytes()
    with pytest.raises(CosbuildError, match="does not fit the 1024 KiB BIOS boot partition"):
        boot.install_bios(disk, places)
    assert disk.read_bytes() == before
