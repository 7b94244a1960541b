"""File systems made without mounting: FAT (mkfs.vfat + mtools) and ext2/ext4 (mke2fs -d).

Each writes into a file or a block device, optionally at a byte offset (a partition of a
disk image), and is reproducible: volume ids, UUIDs and hash seeds are derived from a seed
string, and every time stamp is SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import mmap
import os
import struct
import uuid
from pathlib import Path

from . import artifact, tools
from .errors import CosbuildError
from .tools import TaskLog

MIB = 1024 * 1024
FAT_EPOCH = 315532800 + 86400   # FAT cannot store dates before 1980


def stable_uuid(seed: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cosbuild:{seed}"))


def _env(epoch: int) -> dict:
    return {**os.environ, "E2FSPROGS_FAKE_TIME": str(epoch), "SOURCE_DATE_EPOCH": str(epoch),
            "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"}


def make_fat(target: Path, content: Path | None, *, label: str, size_kib: int, log: TaskLog,
             offset: int = 0, fat32: bool = False) -> None:
    """A FAT file system of `size_kib` holding `content`'s files, at byte `offset`.
    `fat32` (what firmware expects of an EFI system partition) uses 512-byte clusters so
    that a small partition still has the clusters FAT32 needs."""
    stamp = max(artifact.source_date_epoch(), FAT_EPOCH)
    env = _env(stamp)
    volid = stable_uuid(label).replace("-", "")[:8]
    create = not target.exists()   # a new image file; else a disk image or a device
    tools.run(["mkfs.vfat", *(["-C"] if create else []), "--invariant", "-i", volid, "-n", label,
               *(["-F", "32", "-s", "1"] if fat32 else []),
               *(["--offset", str(offset // 512)] if offset else []), str(target), str(size_kib)],
              log=log, what=f"make the {label} file system", env=env)
    if content is None:
        return
    for p in [content, *content.rglob("*")]:
        os.utime(p, (stamp, stamp), follow_symlinks=False)
    entries = sorted(str(p) for p in content.iterdir())
    if entries:
        tools.run(["mcopy", "-s", "-m", "-Q", "-i", f"{target}@@{offset}", *entries, "::/"],
                  log=log, what=f"fill the {label} file system", env=env)


def make_ext(target: Path, content: Path | None, *, label: str, size_mib: int, log: TaskLog,
             fs_type: str = "ext4", offset: int = 0, seed: str = "") -> None:
    """An ext2/3/4 file system of `size_mib` holding a copy of `content` (owners, modes, xattrs,
    hard links and holes kept), at byte `offset` of `target`."""
    fs_uuid = stable_uuid(seed or label)
    options = [f"hash_seed={fs_uuid}", "root_owner=0:0", "nodiscard"]
    if offset:
        options.append(f"offset={offset}")
    # no metadata checksums: normalize_times rewrites inodes in place (ext2 has none anyway)
    argv = ["mke2fs", "-q", "-F", "-t", fs_type, "-O", "^metadata_csum", "-L", label,
            "-U", fs_uuid, "-E", ",".join(options),
            *(["-d", str(content)] if content is not None else []), str(target), f"{size_mib}M"]
    tools.run(argv, log=log, what=f"make the {label} file system",
              env=_env(artifact.source_date_epoch()))
    if content is not None:
        normalize_times(target, offset)


def normalize_times(target: Path, offset: int = 0) -> None:
    """Give every inode its modification time as access, change and creation time.

    `mke2fs -d` copies all of a file's times, and reading or copying a staged file changes
    its access and change times: without this, two builds of the same root differ."""
    with open(target, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        sb = offset + 1024
        (inodes_per_group,) = struct.unpack_from("<I", m, sb + 40)
        (log_block,) = struct.unpack_from("<I", m, sb + 24)
        (first_data_block,) = struct.unpack_from("<I", m, sb + 20)
        (blocks_count, ) = struct.unpack_from("<I", m, sb + 4)
        (blocks_per_group,) = struct.unpack_from("<I", m, sb + 32)
        (inode_size,) = struct.unpack_from("<H", m, sb + 88)
        (incompat, ro_compat) = struct.unpack_from("<II", m, sb + 96)
        if ro_compat & 0x400:
            raise CosbuildError("cannot normalize an ext file system with metadata checksums")
        block = 1024 << log_block
        desc_size = struct.unpack_from("<H", m, sb + 254)[0] if incompat & 0x80 else 32
        groups = -(-(blocks_count - first_data_block) // blocks_per_group)
        descriptors = offset + (first_data_block + 1) * block
        for group in range(groups):
            (table,) = struct.unpack_from("<I", m, descriptors + group * desc_size + 8)
            base = offset + table * block
            for n in range(inodes_per_group):
                at = base + n * inode_size
                mode, = struct.unpack_from("<H", m, at)
                if mode == 0:
                    continue
                (mtime,) = struct.unpack_from("<I", m, at + 16)
                struct.pack_into("<II", m, at + 8, mtime, mtime)          # atime, ctime
                if inode_size > 128:
                    (extra,) = struct.unpack_from("<H", m, at + 128)
                    if extra >= 24:   # ctime/mtime/atime_extra, crtime, crtime_extra
                        (mextra,) = struct.unpack_from("<I", m, at + 0x88)
                        struct.pack_into("<I", m, at + 0x84, mextra)
                        struct.pack_into("<IIII", m, at + 0x88, mextra, mextra, mtime, mextra)


def relabel(image: Path, label: str, log: TaskLog) -> None:
    """Change an ext file system's label (a passive image is the active one, renamed)."""
    tools.run(["tune2fs", "-L", label, str(image)], log=log, what=f"label {image.name} {label}",
              env=_env(artifact.source_date_epoch()))
