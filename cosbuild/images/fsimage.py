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

from .. import tools
from ..builds import artifact
from ..errors import CosbuildError
from ..tools import TaskLog

MIB = 1024 * 1024
FAT_EPOCH = 315532800 + 86400   # FAT cannot store dates before 1980
# the longest label each file system's tool writes as given: mkfs.vfat refuses more, mke2fs
# truncates (then nothing finds the file system by it), pycdlib's Joliet copy of the ISO
# volume id holds 16 UCS-2 characters
LABEL_MAX = {"vfat": 11, "ext2": 16, "ext4": 16, "iso9660": 16}
FAT_FORBIDDEN = '*?.,;:/\\|+=<>[]"'   # mkfs.vfat refuses them


def check_label(label: str, fs: str) -> str:
    """`label` if the file system `fs` carries it as written, else a CosbuildError: printable
    ASCII (pycdlib and FAT's code page take nothing else), 1 to LABEL_MAX[fs] characters."""
    forbidden = FAT_FORBIDDEN if fs == "vfat" else ""
    if (not 0 < len(label) <= LABEL_MAX[fs]
            or any(not " " <= c <= "~" or c in forbidden for c in label)):
        raise CosbuildError(f"{label[:80]!r} cannot label a {fs} file system",
                            hint=f"1 to {LABEL_MAX[fs]} printable ASCII characters"
                                 + (f" but {forbidden}" if forbidden else ""))
    return label


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
    check_label(label, "vfat")
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
    check_label(label, fs_type)
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
    if target.is_file():   # an image file (a device is never compared with another build)
        normalize_times(target, offset)


def normalize_times(target: Path, offset: int = 0) -> None:
    """Make an ext file system's time stamps depend on its content only.

    `mke2fs -d` copies all of a file's times (reading or copying a staged file changes its
    access and change times) and stamps the superblocks, the root and lost+found with the
    current time (E2FSPROGS_FAKE_TIME is ignored by 1.47.0). Every inode gets its
    modification time, clamped to SOURCE_DATE_EPOCH, as all its times; every superblock
    copy gets its times clamped too."""
    epoch = artifact.source_date_epoch()
    with open(target, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        sb = offset + 1024
        blocks_count, = struct.unpack_from("<I", m, sb + 4)
        first_data_block, log_block = struct.unpack_from("<II", m, sb + 20)
        blocks_per_group, = struct.unpack_from("<I", m, sb + 32)
        inodes_per_group, = struct.unpack_from("<I", m, sb + 40)
        inode_size, = struct.unpack_from("<H", m, sb + 88)
        incompat, ro_compat = struct.unpack_from("<II", m, sb + 96)
        if ro_compat & 0x400:
            raise CosbuildError("cannot normalize an ext file system with metadata checksums")
        block = 1024 << log_block
        desc_size = struct.unpack_from("<H", m, sb + 254)[0] if incompat & 0x80 else 32
        groups = -(-(blocks_count - first_data_block) // blocks_per_group)
        descriptors = offset + (first_data_block + 1) * block
        for group in range(groups):
            if _has_superblock(group, ro_compat):
                at = offset + (group * blocks_per_group + first_data_block) * block
                at += 1024 if group == 0 and block > 1024 else 0
                for field in (44, 48, 64, 264):   # mount, write, check and mkfs times
                    value, = struct.unpack_from("<I", m, at + field)
                    struct.pack_into("<I", m, at + field, min(value, epoch))
            table, = struct.unpack_from("<I", m, descriptors + group * desc_size + 8)
            base = offset + table * block
            for n in range(inodes_per_group):
                at = base + n * inode_size
                atime, ctime, mtime = struct.unpack_from("<III", m, at + 8)
                if not (atime or ctime or mtime):
                    continue
                mextra = struct.unpack_from("<I", m, at + 0x88)[0] if inode_size > 128 else 0
                if mtime > epoch:
                    mtime, mextra = epoch, 0
                struct.pack_into("<III", m, at + 8, mtime, mtime, mtime)   # atime ctime mtime
                if inode_size > 128 and struct.unpack_from("<H", m, at + 128)[0] >= 24:
                    # ctime, mtime and atime extra (nanoseconds), crtime, crtime extra
                    struct.pack_into("<IIIII", m, at + 0x84, mextra, mextra, mextra, mtime, mextra)


def _has_superblock(group: int, ro_compat: int) -> bool:
    """sparse_super: copies in groups 0, 1 and the powers of 3, 5 and 7."""
    if group < 2 or not ro_compat & 0x1:
        return True
    for base in (3, 5, 7):
        n = base
        while n < group:
            n *= base
        if n == group:
            return True
    return False


def relabel(image: Path, label: str, log: TaskLog) -> None:
    """Change an ext file system's label (a passive image is the active one, renamed)."""
    check_label(label, "ext2")
    tools.run(["tune2fs", "-L", label, str(image)], log=log, what=f"label {image.name} {label}",
              env=_env(artifact.source_date_epoch()))
    normalize_times(image)   # tune2fs stamps the superblocks with the current time
