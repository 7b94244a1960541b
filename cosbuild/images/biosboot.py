"""GRUB's BIOS boot code on a GPT disk, as grub-bios-setup embeds it (without its optional
Reed-Solomon codes): boot.img in the protective MBR, core.img in the BIOS boot partition.

Written here rather than by grub-bios-setup because both writers of the layout need it and
neither can use that program: `doit disk` writes a disk file (grub-bios-setup wants a real
device and guesses a root device from its folder) and cos-installer runs in a system that
ships only the two images. The offsets are GRUB 2's (include/grub/i386/pc/boot.h) and have
not changed since 2.00.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ..errors import CosbuildError

SECTOR = 512
BPB = slice(0x03, 0x5a)               # a DOS BIOS parameter block: the disk's own, kept
KERNEL_SECTOR = slice(0x5c, 0x64)     # LBA of core.img's first sector (little-endian u64)
BOOT_DRIVE = 0x64                     # 0xff: the drive the BIOS booted from
DRIVE_CHECK = slice(0x66, 0x68)       # a jump around a BIOS-bug workaround; nops on hard disks
PARTITION_TABLE = slice(0x1b8, 0x1fe)  # disk signature and the (protective) partition table
SIGNATURE = b"\x55\xaa"
# the last 12 bytes of core.img's first sector (diskboot.img): where the rest of core.img is
BLOCKLIST = slice(SECTOR - 12, SECTOR)
BLOCKLIST_END = slice(SECTOR - 24, SECTOR - 12)
CORE_SEGMENT = 0x820                  # where diskboot loads the rest (0x800 + one sector)


def boot_sector(boot_img: bytes, mbr: bytes, core_lba: int) -> bytes:
    """The MBR: boot.img's code pointing at core.img, with the disk's BPB, disk signature
    and partition table kept."""
    if len(boot_img) != SECTOR or boot_img[-2:] != SIGNATURE:
        raise CosbuildError("the BIOS boot.img is not a 512-byte boot sector",
                            key="boot_files", hint="take it from grub-pc-bin (i386-pc/boot.img)")
    out = bytearray(boot_img)
    out[BPB] = mbr[BPB]
    out[KERNEL_SECTOR] = struct.pack("<Q", core_lba)
    out[BOOT_DRIVE] = 0xff
    out[DRIVE_CHECK] = b"\x90\x90"
    out[PARTITION_TABLE] = mbr[PARTITION_TABLE]
    return bytes(out)


def placed_core(core_img: bytes, core_lba: int, room: int) -> bytes:
    """core.img with its first sector's block list naming the sectors that follow it (it is
    written to consecutive sectors from `core_lba`), padded to whole sectors; at most `room`
    bytes (the BIOS boot partition)."""
    sectors = -(-len(core_img) // SECTOR)
    if len(core_img) < SECTOR or sectors * SECTOR > room:
        raise CosbuildError(f"the BIOS core.img does not fit the {room // 1024} KiB BIOS "
                            "boot partition", key="boot_files",
                            hint="build it with fewer modules (grub-mkimage -O i386-pc)")
    out = bytearray(core_img.ljust(sectors * SECTOR, b"\0"))
    out[BLOCKLIST] = struct.pack("<QHH", core_lba + 1, sectors - 1, CORE_SEGMENT)
    out[BLOCKLIST_END] = bytes(12)
    return bytes(out)


def install(target: Path, partition: tuple[int, int], boot_img: bytes, core_img: bytes) -> None:
    """Make the GPT disk (a file or a device) `target` boot with BIOS: core.img into the BIOS
    boot partition at (byte offset, size), boot.img into the MBR that sfdisk wrote."""
    offset, size = partition
    core_lba = offset // SECTOR
    core = placed_core(core_img, core_lba, size)
    with open(target, "r+b") as disk:
        mbr = disk.read(SECTOR)
        if mbr[-2:] != SIGNATURE:
            raise CosbuildError(f"{target} has no partition table to add the BIOS boot code to")
        disk.seek(offset)
        disk.write(core)
        disk.seek(0)
        disk.write(boot_sector(boot_img, mbr, core_lba))
        disk.flush()
        os.fsync(disk.fileno())
