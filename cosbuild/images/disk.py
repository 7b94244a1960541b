"""Installed disks (SPEC 5): the system image and a bootable disk, from disk.yaml.

Steps, each a doit task:

- `image:rootfs`: disk.yaml's `system` packages installed into a staging root (as iso:rootfs);
- `image:active`: build/active.img, that root as an ext2 file system labelled COS_ACTIVE,
  made with `mke2fs -d` (no mounting), `image_size` MiB, sparse;
- `disk:raw`: build/NAME.raw, a GPT disk (sfdisk on the file) with the LAYOUT partitions,
  each file system written in place at its offset (mkfs.vfat + mcopy, mke2fs -E offset), so
  no loop device is needed. COS_STATE holds active.img, passive.img (the same system,
  labelled COS_PASSIVE) and the GRUB menu; COS_RECOVERY holds recovery.img;
- `disk:qcow2`: build/NAME.qcow2 (qemu-img convert), the VM image.

The system carries its boot loader (disk.yaml `boot_files`, from system/grub2-efi): the EFI
binary goes to COS_GRUB, grub.cfg to COS_STATE. cos-installer, inside the OS, lays out a real
device with the same LAYOUT, partition table and images (see `install`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import tools
from ..errors import CosbuildError
from ..tools import TaskLog
from ..tree import spec
from ..tree.versions import PackageRef, parse_ref
from . import fsimage
from .fsimage import MIB


@dataclass(frozen=True)
class Partition:
    label: str
    gpt_type: str     # sfdisk's shortcut: U = EFI system partition, L = Linux file system
    fs: str
    doc: str


LAYOUT = (
    Partition("COS_GRUB", "U", "vfat", "EFI system partition: the GRUB EFI binary"),
    Partition("COS_OEM", "L", "ext4", "OEM cloud-config, mounted at /oem"),
    Partition("COS_STATE", "L", "ext4", "active.img, passive.img and the GRUB menu"),
    Partition("COS_RECOVERY", "L", "ext4", "recovery.img"),
    Partition("COS_PERSISTENT", "L", "ext4", "persistent data, mounted at /usr/local"),
)
DEFAULT_IMAGE_SIZE = 2048   # MiB of a system image file
IMAGES_DIR = "cOS"     # on COS_STATE and COS_RECOVERY
MENU = "grub2/grub.cfg"
EFI_BINARY = "EFI/BOOT/BOOTX64.EFI"
IMAGE_LABELS = {"active.img": "COS_ACTIVE", "passive.img": "COS_PASSIVE",
                "recovery.img": "COS_SYSTEM"}

PARTITION_KEYWORDS = (
    spec.Keyword("grub", spec.MIB, 64, "COS_GRUB (EFI) size, MiB"),
    spec.Keyword("oem", spec.MIB, 64, "COS_OEM size, MiB"),
    spec.Keyword("persistent", spec.MIB, 512,
                 "COS_PERSISTENT size, MiB (cos-installer gives it the rest of the device)"),
)
DISK_KEYWORDS = (
    spec.Keyword("system", spec.STRS, (), "packages installed into the system image",
                 required=True),
    spec.Keyword("image_size", spec.MIB, DEFAULT_IMAGE_SIZE,
                 "MiB of each system image file (active, passive, transition, recovery)"),
    spec.Keyword("partitions", spec.nested(PARTITION_KEYWORDS, "partitions"), None,
                 "sizes of the partitions that hold no images (COS_STATE fits three images, "
                 "COS_RECOVERY one)"),
    spec.Keyword("boot_files", spec.STR, "/usr/lib/cos/grub",
                 f"folder of the system root with {MENU.split('/')[-1]} and {EFI_BINARY}"),
    spec.Keyword("name", spec.STR, "disk", "build/NAME.raw and build/NAME.qcow2"),
)


@dataclass(frozen=True)
class DiskSpec:
    file: Path
    system: tuple[PackageRef, ...]
    image_size: int
    sizes: dict          # partition label -> MiB
    boot_files: str
    name: str


def partition_sizes(image_size: int, grub: int = 64, oem: int = 64,
                    persistent: int | None = 512) -> dict[str, int | None]:
    """MiB per partition; COS_STATE holds active, passive and an upgrade's transition image,
    COS_RECOVERY the recovery image and its upgrade's transition image."""
    return {"COS_GRUB": grub, "COS_OEM": oem, "COS_STATE": 3 * image_size + 256,
            "COS_RECOVERY": 2 * image_size + 128, "COS_PERSISTENT": persistent}


def load_disk_spec(path: Path) -> DiskSpec:
    from ..tree.yamlio import load_mapping
    if not path.is_file():
        raise CosbuildError("disk specification not found", file=path, hint="pass --disk FILE")
    data = load_mapping(path)
    f = spec.parse(DISK_KEYWORDS, data, path, what="disk.yaml")
    where = spec.Where(str(path), data.line_of("system"), "system")
    refs = tuple(parse_ref(r, where) for r in f["system"])
    if not refs:
        raise where.error("no system package", hint="name the package(s) of the system image")
    sizes = partition_sizes(f["image_size"], **dict(f["partitions"] or {}))
    if "/" in f["name"] or not f["name"]:
        raise CosbuildError(f"name {f['name']!r} is not a file name", file=path, key="name")
    return DiskSpec(path, refs, f["image_size"], sizes, "/" + f["boot_files"].strip("/"),
                    f["name"])


# --------------------------------------------------------------------------- layout

def partition_table(sizes: dict[str, int | None], seed: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """The sfdisk script of LAYOUT (1 MiB aligned, fixed disk and partition UUIDs) and each
    partition's (offset, size) in bytes. A size of None takes the rest of the device."""
    lines = ["label: gpt", f"label-id: {fsimage.stable_uuid(seed)}", "unit: sectors",
             "first-lba: 2048"]
    places, start = {}, MIB
    for part in LAYOUT:
        size = sizes[part.label]
        extent = f", size={size * MIB // 512}" if size else ""
        lines.append(f"start={start // 512}{extent}, type={part.gpt_type}, name=\"{part.label}\", "
                     f"uuid={partition_uuid(seed, part.label)}")
        places[part.label] = (start, size * MIB if size else None)
        start += size * MIB if size else 0
    return "\n".join(lines) + "\n", places


def partition_uuid(seed: str, label: str) -> str:
    return fsimage.stable_uuid(seed + label)


def disk_size(sizes: dict[str, int]) -> int:
    """Bytes: the partitions plus 1 MiB before (GPT, alignment) and after (backup GPT)."""
    return (sum(sizes.values()) + 2) * MIB


def write_partition_table(target: Path, script: str, log: TaskLog) -> None:
    tools.run(["sfdisk", "--quiet", "--wipe", "always", str(target)], input=script, log=log,
              what=f"write the partition table of {target}")


def boot_files(root: Path, folder: str) -> tuple[Path, Path]:
    """The system's GRUB menu and EFI binary, checked."""
    base = root / folder.lstrip("/")
    menu, efi = base / MENU.split("/")[-1], base / EFI_BINARY
    for path in (menu, efi):
        if not path.is_file():
            raise CosbuildError(f"{folder}/{path.relative_to(base)} is not in the system root",
                                key="boot_files",
                                hint="add the boot loader package (system/grub2-efi) to the "
                                     "system's runtime requires, or fix boot_files")
    return menu, efi


def copy_sparse(source: Path, dest: Path, log: TaskLog) -> None:
    tools.run(["cp", "--sparse=always", str(source), str(dest)], log=log,
              what=f"copy {source.name}")


def image_folder(work: Path, images: dict[str, Path], menu: Path, log: TaskLog) -> Path:
    """A folder with cOS/<image> (labelled copies of the system image) and the GRUB menu:
    the content of COS_STATE or COS_RECOVERY (whose menu is used when COS_STATE is gone)."""
    if work.exists():
        shutil.rmtree(work)
    (work / IMAGES_DIR).mkdir(parents=True)
    for name, source in images.items():
        dest = work / IMAGES_DIR / name
        copy_sparse(source, dest, log)
        fsimage.relabel(dest, IMAGE_LABELS[name], log)
    (work / MENU).parent.mkdir(parents=True)
    shutil.copyfile(menu, work / MENU)
    return work


def fill_partitions(targets: dict[str, tuple[Path, int, int | None]],
                    contents: dict[str, Path | None], seed: str, log: TaskLog) -> None:
    """Make every LAYOUT file system in its (file or device, byte offset, size or None for
    all of it) place."""
    for part in LAYOUT:
        target, offset, size = targets[part.label]
        if size is None:
            size = _device_size(target) - offset
        content = contents.get(part.label)
        if part.fs == "vfat":
            fsimage.make_fat(target, content, label=part.label, size_kib=size // 1024, log=log,
                             offset=offset, fat32=True)
        else:
            fsimage.make_ext(target, content, label=part.label, size_mib=size // MIB, log=log,
                             fs_type=part.fs, offset=offset, seed=seed + part.label)


def _device_size(target: Path) -> int:
    with open(target, "rb") as f:
        return f.seek(0, os.SEEK_END)


# --------------------------------------------------------------------------- doit image / disk

class DiskBuilder:
    """The image and disk steps of one project and disk.yaml."""

    def __init__(self, project, disk: DiskSpec):
        self.project, self.disk = project, disk
        build_dir = project.settings.build_dir
        self.work = build_dir / "disk"
        self.rootfs_dir = self.work / "rootfs"
        self.manifest = self.work / "rootfs.manifest"
        self.active = build_dir / "active.img"
        self.raw = build_dir / f"{disk.name}.raw"
        self.qcow2 = build_dir / f"{disk.name}.qcow2"

    def log(self, kind: str) -> TaskLog:
        return TaskLog(self.project.settings.logs_dir / f"disk-{kind}.log",
                       verbose=self.project.settings.verbose)

    def install_root(self) -> None:
        from ..repos.client import local_build, stage_root
        from ..fsutil import atomic_write
        from ..tree.yamlio import dumps
        packages = stage_root(self.rootfs_dir, list(self.disk.system),
                              [local_build(self.project.settings.build_dir)])
        try:
            boot_files(self.rootfs_dir, self.disk.boot_files)
        except CosbuildError as exc:
            raise CosbuildError(str(exc.message), file=self.disk.file, key=exc.key,
                                hint=exc.hint) from None
        atomic_write(self.manifest, dumps({"packages": packages}))

    def make_active(self) -> None:
        from ..fsutil import atomic_path
        with self.log("image") as log, atomic_path(self.active) as tmp:
            tmp.unlink()
            fsimage.make_ext(tmp, self.rootfs_dir, label=IMAGE_LABELS["active.img"],
                             size_mib=self.disk.image_size, log=log, fs_type="ext2",
                             seed=f"{self.disk.name}-system")
        print(f"image: {self.active} ({self.disk.image_size} MiB, "
              f"{self.active.stat().st_blocks * 512 / 1e6:.0f} MB used)")

    def make_raw(self) -> None:
        from ..fsutil import atomic_path
        menu, efi = boot_files(self.rootfs_dir, self.disk.boot_files)
        with self.log("raw") as log, atomic_path(self.raw) as tmp:
            efi_dir = self.work / "efi"
            shutil.rmtree(efi_dir, ignore_errors=True)
            (efi_dir / EFI_BINARY).parent.mkdir(parents=True)
            shutil.copyfile(efi, efi_dir / EFI_BINARY)
            contents = {
                "COS_GRUB": efi_dir,
                "COS_STATE": image_folder(self.work / "state", {
                    "active.img": self.active, "passive.img": self.active}, menu, log),
                "COS_RECOVERY": image_folder(self.work / "recovery", {
                    "recovery.img": self.active}, menu, log),
            }
            script, places = partition_table(self.disk.sizes, seed=self.disk.name)
            os.truncate(tmp, disk_size(self.disk.sizes))
            write_partition_table(tmp, script, log)
            fill_partitions({label: (tmp, offset, size) for label, (offset, size) in places.items()},
                            contents, self.disk.name, log)
            for folder in contents.values():   # copies of the images: gigabytes
                shutil.rmtree(folder)
        print(f"disk: {self.raw} ({self.raw.stat().st_size / 1e9:.1f} GB, "
              f"{self.raw.stat().st_blocks * 512 / 1e6:.0f} MB used)")

    def make_qcow2(self) -> None:
        from ..fsutil import atomic_path
        with self.log("qcow2") as log, atomic_path(self.qcow2) as tmp:
            tools.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(self.raw), str(tmp)],
                      log=log, what="convert the disk to qcow2")
        print(f"disk: {self.qcow2} ({self.qcow2.stat().st_size / 1e6:.0f} MB)")


# --------------------------------------------------------------------------- cos-installer

def install(device: Path, source: Path, image_size: int, boot_folder: str, log: TaskLog) -> None:
    """Lay out `device` like `doit disk` from a running system whose root is `source`
    (cos-installer): the same partition table, each file system made on its partition, then
    the state and recovery file systems mounted to write the images straight into them (a
    real device, unlike a build, can be mounted, and the live system has no room to stage
    gigabytes)."""
    def run(argv, what):
        tools.run(argv, log=log, what=what)

    menu, efi = boot_files(source, boot_folder)
    sizes = partition_sizes(image_size, persistent=None)
    seed = os.urandom(8).hex()   # an installed disk gets its own UUIDs
    script, _ = partition_table(sizes, seed=seed)
    if _device_size(device) < disk_size({**sizes, "COS_PERSISTENT": 64}):
        raise CosbuildError(f"{device} is too small: it needs "
                            f"{disk_size({**sizes, 'COS_PERSISTENT': 64}) // MIB} MiB",
                            hint="use a bigger disk or a smaller image size (--image-size)")
    write_partition_table(device, script, log)
    run(["udevadm", "settle"], "wait for the new partitions")
    # the partitions' own devices (the kernel caches each block device on its own)
    targets = {p.label: (Path("/dev/disk/by-partuuid") / partition_uuid(seed, p.label), 0, None)
               for p in LAYOUT}
    efi_dir = Path("/run/cos/installer-efi")
    shutil.rmtree(efi_dir, ignore_errors=True)
    (efi_dir / EFI_BINARY).parent.mkdir(parents=True)
    shutil.copyfile(efi, efi_dir / EFI_BINARY)
    fill_partitions(targets, {"COS_GRUB": efi_dir}, seed, log)
    run(["udevadm", "settle"], "wait for the new file systems")
    mounts = {label: Path("/run/cos/installer") / label for label in ("COS_STATE", "COS_RECOVERY")}
    try:
        for label, mnt in mounts.items():
            mnt.mkdir(parents=True, exist_ok=True)
            run(["mount", str(targets[label][0]), str(mnt)], f"mount {label}")
            (mnt / IMAGES_DIR).mkdir(exist_ok=True)
            (mnt / MENU).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(menu, mnt / MENU)
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


def installer_main(argv: list[str] | None = None) -> int:
    """cos-installer DEVICE: install the running (live) system onto DEVICE, erasing it."""
    import argparse
    import stat
    import sys
    parser = argparse.ArgumentParser(prog="cos-installer", description=installer_main.__doc__)
    parser.add_argument("device", type=Path, help="the disk to erase and install to (/dev/vda)")
    parser.add_argument("--source", type=Path, default=Path("/run/rootfsbase"),
                        help="the system to install (default: the live medium's root)")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="MiB of each system image")
    parser.add_argument("--boot-files", default="/usr/lib/cos/grub",
                        help="folder of the system with the GRUB menu and EFI binary")
    args = parser.parse_args(argv)
    log_path = Path("/var/log/cos-installer.log")
    try:
        if not args.device.exists() or not stat.S_ISBLK(args.device.stat().st_mode):
            raise CosbuildError(f"{args.device} is not a block device", hint="name a disk, e.g. /dev/vda")
        if not args.source.is_dir():
            raise CosbuildError(f"{args.source} is not a folder",
                                hint="boot the live ISO, or pass --source with a system root")
        busy = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
                if line.startswith(str(args.device))]
        if busy:
            raise CosbuildError(f"{args.device} is in use (mounted at {', '.join(busy)})",
                                hint="unmount it first")
        with TaskLog(log_path) as log:
            print(f"cos-installer: installing {args.source} onto {args.device}", flush=True)
            install(args.device, args.source, args.image_size, args.boot_files, log)
    except CosbuildError as exc:
        print(f"cos-installer: error: {exc} (log: {log_path})", file=sys.stderr)
        return 1
    print(f"cos-installer: {args.device} is ready: COS_GRUB, COS_OEM, COS_STATE "
          f"(active.img, passive.img), COS_RECOVERY, COS_PERSISTENT; reboot from it")
    return 0
