"""cos-installer, inside the live system: the running system installed onto a disk, laid
out exactly as `doit disk` lays out its disk file (images/layout.py)."""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
from pathlib import Path

from .. import arches, tools
from ..errors import CosbuildError
from ..images import fsimage
from ..images.fsimage import MIB
from ..images.layout import (DEFAULT_BOOT_TRIES, DEFAULT_IMAGE_SIZE, IMAGE_LABELS,
                             IMAGES_DIR, LAYOUT, MENU, boot_files, copy_sparse, device_size,
                             disk_size, fill_partitions, partition_sizes, partition_table,
                             partition_uuid, sizes_for, write_assessment,
                             write_partition_table)
from ..tools import TaskLog


def install(device: Path, source: Path, image_size: int, boot_folder: str, log: TaskLog,
            boot_tries: int = DEFAULT_BOOT_TRIES) -> None:
    """Lay out `device` like `doit disk` from a running system whose root is `source`
    (cos-installer): the same partition table, each file system made on its partition, then
    the state and recovery file systems mounted to write the images straight into them (a
    real device, unlike a build, can be mounted, and the live system has no room to stage
    gigabytes)."""
    def run(argv, what):
        tools.run(argv, log=log, what=what)

    arch = arches.get(arches.host())   # the running system's
    boot = boot_files(source, boot_folder, arch)
    sizes = sizes_for(partition_sizes(image_size, persistent=None), arch)
    seed = os.urandom(8).hex()   # an installed disk gets its own UUIDs
    script, places = partition_table(sizes, seed=seed)
    if device_size(device) < disk_size({**sizes, "COS_PERSISTENT": 64}):
        raise CosbuildError(f"{device} is too small: it needs "
                            f"{disk_size({**sizes, 'COS_PERSISTENT': 64}) // MIB} MiB",
                            hint="use a bigger disk or a smaller image size (--image-size)")
    write_partition_table(device, script, log)
    boot.install_bios(device, places)   # on the whole disk: its MBR and COS_BIOS's sectors
    run(["udevadm", "settle"], "wait for the new partitions")
    # the partitions' own devices (the kernel caches each block device on its own)
    targets = {p.label: (Path("/dev/disk/by-partuuid") / partition_uuid(seed, p.label), 0, None)
               for p in LAYOUT if p.label in sizes}
    efi_dir = boot.esp_folder(Path("/run/cos/installer-efi"))
    fill_partitions(targets, {"COS_GRUB": efi_dir}, seed, log)
    run(["udevadm", "settle"], "wait for the new file systems")
    mounts = {label: Path("/run/cos/installer") / label for label in ("COS_STATE", "COS_RECOVERY")}
    try:
        for label, mnt in mounts.items():
            mnt.mkdir(parents=True, exist_ok=True)
            run(["mount", str(targets[label][0]), str(mnt)], f"mount {label}")
            (mnt / IMAGES_DIR).mkdir(exist_ok=True)
            (mnt / MENU).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(boot.menu, mnt / MENU)
        write_assessment(mounts["COS_STATE"], boot_tries)
        active = mounts["COS_STATE"] / IMAGES_DIR / "active.img"
        fsimage.make_ext(active, source, label=IMAGE_LABELS["active.img"], size_mib=image_size,
                         log=log, fs_type="ext2", seed=seed + "active")
        for label, name in (("COS_STATE", "passive.img"), ("COS_RECOVERY", "recovery.img")):
            copy_sparse(active, mounts[label] / IMAGES_DIR / name, log)
            fsimage.relabel(mounts[label] / IMAGES_DIR / name, IMAGE_LABELS[name], log)
    finally:
        for label, mnt in mounts.items():
            if os.path.ismount(mnt):
                run(["umount", str(mnt)], f"unmount {label}")


def mounted(device: Path, mounts: str, sys_block: Path = Path("/sys/class/block")) -> list[str]:
    """Where the disk `device` or one of its partitions is mounted, from /proc/self/mounts'
    text, by the real devices: a /dev/disk/by-id/ name is a link to the disk, and /dev/vdab1
    is no partition of /dev/vda."""
    disk = Path(os.path.realpath(device))
    ours = {disk} | {disk.parent / part.name for part in (sys_block / disk.name).glob("*")
                     if (part / "partition").exists()}
    return [fields[1].replace("\\040", " ") for fields in map(str.split, mounts.splitlines())
            if len(fields) > 1 and Path(os.path.realpath(fields[0])) in ours]


def main(argv: list[str] | None = None) -> int:
    """cos-installer DEVICE: install the running (live) system onto DEVICE, erasing it."""
    parser = argparse.ArgumentParser(prog="cos-installer", description=main.__doc__)
    parser.add_argument("device", type=Path, help="the disk to erase and install to (/dev/vda)")
    parser.add_argument("--source", type=Path, default=Path("/run/rootfsbase"),
                        help="the system to install (default: the live medium's root)")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="MiB of each system image")
    parser.add_argument("--boot-files", default="/usr/lib/cos/grub",
                        help="folder of the system with the GRUB menu, EFI binary and BIOS images")
    parser.add_argument("--boot-tries", type=int, choices=range(1, 10), metavar="1-9",
                        default=DEFAULT_BOOT_TRIES,
                        help="boots a new system image gets to pass its boot assessment "
                             f"(default {DEFAULT_BOOT_TRIES})")
    args = parser.parse_args(argv)
    log_path = Path("/var/log/cos-installer.log")
    try:
        if not args.device.exists() or not stat.S_ISBLK(args.device.stat().st_mode):
            raise CosbuildError(f"{args.device} is not a block device", hint="name a disk, e.g. /dev/vda")
        if not args.source.is_dir():
            raise CosbuildError(f"{args.source} is not a folder",
                                hint="boot the live ISO, or pass --source with a system root")
        busy = mounted(args.device, Path("/proc/self/mounts").read_text())
        if busy:
            raise CosbuildError(f"{args.device} is in use (mounted at {', '.join(busy)})",
                                hint="unmount it first")
        with TaskLog(log_path) as log:
            print(f"cos-installer: installing {args.source} onto {args.device}", flush=True)
            install(args.device, args.source, args.image_size, args.boot_files, log,
                    args.boot_tries)
    except CosbuildError as exc:
        print(f"cos-installer: error: {exc} (log: {log_path})", file=sys.stderr)
        return 1
    bios = "COS_BIOS, " if arches.get(arches.host()).bios else ""
    print(f"cos-installer: {args.device} is ready: {bios}COS_GRUB, COS_OEM, COS_STATE "
          f"(active.img, passive.img), COS_RECOVERY, COS_PERSISTENT; reboot from it")
    return 0
