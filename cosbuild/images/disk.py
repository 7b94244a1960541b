"""Installed disks (SPEC 5): the system image and a bootable disk, from disk.yaml.

Steps, each a doit task:

- `image:rootfs`: disk.yaml's `system` packages installed into a staging root (as iso:rootfs);
- `image:active`: build/active.img, that root as an ext2 file system labelled COS_ACTIVE,
  made with `mke2fs -d` (no mounting), `image_size` MiB, sparse;
- `disk:raw`: build/NAME.raw, a GPT disk (sfdisk on the file) with the LAYOUT partitions,
  each file system written in place at its offset (mkfs.vfat + mcopy, mke2fs -E offset), so
  no loop device is needed. COS_STATE holds active.img, passive.img (the same system,
  labelled COS_PASSIVE) and the GRUB menu; COS_RECOVERY holds recovery.img; it boots with
  UEFI and BIOS;
- `disk:qcow2`: build/NAME.qcow2 (qemu-img convert), the VM image;
- `disk:sbom`: build/NAME.spdx.json, the SBOM of the system (sbom.py).

The system carries its boot loader (disk.yaml `boot_files`, from system/grub2-efi): shim,
the signed GRUB and its way to the menu go to COS_GRUB (shim signed with disk.yaml's
`secure_boot` key too, when it has one), GRUB's BIOS core.img to COS_BIOS and boot.img to
the MBR, grub.cfg (the one menu both read) to COS_STATE. cos-installer, inside the OS, lays
out a real device with the same layout (images/layout.py), partition table and images
(runtime/installer.py).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .. import arches
from ..errors import CosbuildError
from ..fsutil import atomic_path, atomic_write
from ..repos.config import local_build
from ..repos.transaction import stage_root
from ..terminal import say
from ..tools import TaskLog
from ..tree import spec
from ..tree.versions import PackageRef, parse_ref
from ..tree.yamlio import dumps
from . import formats, fsimage, sbom, secureboot, values
from .layout import (BIOS_BOOT_IMAGE, BIOS_CORE_IMAGE, DEFAULT_BOOT_TRIES, DEFAULT_IMAGE_SIZE,
                     IMAGE_LABELS, IMAGES_DIR, MENU, boot_files, copy_sparse, disk_size,
                     esp_files, fill_partitions, partition_sizes, partition_table, sizes_for,
                     write_assessment, write_partition_table)

# The largest sizes: the disk is one sparse file, which ext4 holds up to 16 TiB, and with
# these COS_STATE (3 images), COS_RECOVERY (2) and the rest stay below it (15.1 TiB)
PARTITION_KEYWORDS = (
    spec.Keyword("grub", values.size(2**17, "FAT32 with 512-byte clusters"), 64,
                 "COS_GRUB (EFI) size, MiB"),
    spec.Keyword("oem", values.size(2**20, "the disk is at most 16 TiB"), 64,
                 "COS_OEM size, MiB"),
    spec.Keyword("persistent", values.size(2**22, "the disk is at most 16 TiB"), 512,
                 "COS_PERSISTENT size, MiB (cos-installer gives it the rest of the device)"),
)
DISK_KEYWORDS = (
    spec.Keyword("system", spec.STRS, (), "packages installed into the system image",
                 required=True),
    spec.Keyword("image_size", values.size(2**21, "the disk holds 5 images, at most 16 TiB"),
                 DEFAULT_IMAGE_SIZE,
                 "MiB of each system image file (active, passive, transition, recovery)"),
    spec.Keyword("partitions", spec.nested(PARTITION_KEYWORDS, "partitions"), None,
                 "sizes of the partitions that hold no images (COS_STATE fits three images, "
                 "COS_RECOVERY one)"),
    spec.Keyword("boot_files", values.inside("the system root"), "usr/lib/cos/grub",
                 f"folder of the system root with {MENU.split('/')[-1]}, "
                 f"{', '.join(esp_files(arches.ARCHES['amd64']))}, {BIOS_BOOT_IMAGE} and "
                 f"{BIOS_CORE_IMAGE} (arm64: {', '.join(esp_files(arches.ARCHES['arm64'])[:2])} "
                 "and the menus, no BIOS images)"),
    spec.Keyword("boot_tries", values.count(9), DEFAULT_BOOT_TRIES,
                 "boots a new system image gets to pass its boot assessment before GRUB "
                 "falls back to the previous one (docs/runtime.md, \"Boot assessment\")"),
    spec.Keyword("name", spec.STR, "disk", "build/NAME.raw and build/NAME.qcow2"),
    spec.Keyword("formats", values.choices(*formats.BY_NAME), formats.DEFAULT,
                 "the files of `doit disk`, each made from the raw disk: "
                 + formats.reference()),
    spec.Keyword("secure_boot", secureboot.SECURE_BOOT, None,
                 secureboot.doc("COS_GRUB's shim")),
)


@dataclass(frozen=True)
class DiskSpec:
    file: Path
    system: tuple[PackageRef, ...]
    image_size: int
    sizes: dict          # partition label -> MiB
    boot_files: str
    name: str
    wheres: dict = field(default_factory=dict, compare=False)  # package list -> its Where
    formats: tuple[str, ...] = formats.DEFAULT
    boot_tries: int = DEFAULT_BOOT_TRIES
    secure_boot: secureboot.Keys | None = None


def load_disk_spec(path: Path) -> DiskSpec:
    data, f = spec.parse_file(DISK_KEYWORDS, path, what="disk.yaml",
                              missing="disk specification not found", hint="pass --disk FILE")
    where = spec.Where(str(path), data.line_of("system"), "system")
    refs = tuple(parse_ref(r, where) for r in f["system"])
    if not refs:
        raise where.error("no system package", hint="name the package(s) of the system image")
    sizes = partition_sizes(f["image_size"], **dict(f["partitions"] or {}))
    name = spec.file_name(f["name"], spec.Where(str(path), data.line_of("name"), "name"))
    return DiskSpec(path, refs, f["image_size"], sizes, "/" + f["boot_files"],
                    name, {"system": where}, f["formats"], f["boot_tries"],
                    secureboot.keys(f["secure_boot"], path, data.line_of("secure_boot")))


def image_folder(work: Path, images: dict[str, Path], menu: Path, log: TaskLog,
                 boot_tries: int | None = None) -> Path:
    """A folder with cOS/<image> (labelled copies of the system image) and the GRUB menu:
    the content of COS_STATE (with `boot_tries`, its boot assessment file) or COS_RECOVERY
    (whose menu is used when COS_STATE is gone)."""
    if work.exists():
        shutil.rmtree(work)
    (work / IMAGES_DIR).mkdir(parents=True)
    for name, source in images.items():
        dest = work / IMAGES_DIR / name
        copy_sparse(source, dest, log)
        fsimage.relabel(dest, IMAGE_LABELS[name], log)
    (work / MENU).parent.mkdir(parents=True)
    shutil.copyfile(menu, work / MENU)
    if boot_tries is not None:
        write_assessment(work, boot_tries)
    return work


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
        self.sbom = sbom.sbom_path(build_dir, disk.name)
        self.arch = arches.get(project.settings.arch)
        self.sizes = sizes_for(disk.sizes, self.arch)

    def log(self, kind: str) -> TaskLog:
        return TaskLog(self.project.settings.logs_dir / f"disk-{kind}.log",
                       verbose=self.project.settings.verbose)

    def install_root(self) -> None:
        packages = stage_root(self.rootfs_dir, list(self.disk.system),
                              [local_build(self.project.settings.build_dir)])
        try:
            boot_files(self.rootfs_dir, self.disk.boot_files, self.arch)
        except CosbuildError as exc:
            raise CosbuildError(str(exc.message), file=self.disk.file, key=exc.key,
                                hint=exc.hint) from None
        atomic_write(self.manifest, dumps({"packages": packages}))

    def write_sbom(self) -> None:
        sbom.write_sbom(self.sbom, self.disk.name, self.project, [self.manifest],
                        self.rootfs_dir)

    def make_active(self) -> None:
        with self.log("image") as log, atomic_path(self.active) as tmp:
            tmp.unlink()
            fsimage.make_ext(tmp, self.rootfs_dir, label=IMAGE_LABELS["active.img"],
                             size_mib=self.disk.image_size, log=log, fs_type="ext2",
                             seed=f"{self.disk.name}-system")
        say(f"image: {self.active} ({self.disk.image_size} MiB, "
            f"{self.active.stat().st_blocks * 512 / 1e6:.0f} MB used)")

    def make_raw(self) -> None:
        boot = boot_files(self.rootfs_dir, self.disk.boot_files, self.arch)
        with self.log("raw") as log, atomic_path(self.raw) as tmp:
            efi_dir = boot.esp_folder(self.work / "efi")
            if self.disk.secure_boot is not None:
                secureboot.sign(efi_dir / self.arch.efi_binary, self.disk.secure_boot, log,
                                "COS_GRUB's shim")
            contents = {
                "COS_GRUB": efi_dir,
                "COS_STATE": image_folder(self.work / "state", {
                    "active.img": self.active, "passive.img": self.active}, boot.menu, log,
                    self.disk.boot_tries),
                "COS_RECOVERY": image_folder(self.work / "recovery", {
                    "recovery.img": self.active}, boot.menu, log),
            }
            script, places = partition_table(self.sizes, seed=self.disk.name)
            os.truncate(tmp, disk_size(self.sizes))
            write_partition_table(tmp, script, log)
            fill_partitions({label: (tmp, offset, size) for label, (offset, size) in places.items()},
                            contents, self.disk.name, log)
            boot.install_bios(tmp, places)
            for folder in contents.values():   # copies of the images: gigabytes
                shutil.rmtree(folder)
        say(f"disk: {self.raw} ({self.raw.stat().st_size / 1e9:.1f} GB, "
            f"{self.raw.stat().st_blocks * 512 / 1e6:.0f} MB used)")

    def output(self, fmt: str) -> Path:
        return self.project.settings.build_dir / f"{self.disk.name}{formats.BY_NAME[fmt].suffix}"

    def make_format(self, name: str) -> None:
        """One of the formats made from the raw disk or its conversions (images/formats.py)."""
        fmt = formats.BY_NAME[name]
        target = self.output(name)
        with self.log(name) as log:
            fmt.make(self.output(fmt.source), target, log)
        say(f"disk: {target} ({target.stat().st_size / 1e6:.0f} MB)")
