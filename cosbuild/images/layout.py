"""The installed disk's layout, one declaration for the three that write it: `doit disk`
(images/disk.py) on a file, cos-installer (runtime/installer.py) on a device and cos-upgrade
(runtime/upgrade.py) on the image files: the partitions, the system image files and their
labels, the GPT partition table (sfdisk), the file systems made in place and the boot loader
of both firmwares (one GRUB menu on COS_STATE, read by the signed EFI GRUB and the BIOS core).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import rootpath, tools
from ..arches import Arch
from ..errors import CosbuildError
from ..tools import TaskLog
from . import biosboot, fsimage, grubenv
from .fsimage import MIB


@dataclass(frozen=True)
class Partition:
    label: str
    gpt_type: str     # sfdisk's shortcut (U = EFI system partition, L = Linux) or a GUID
    fs: str           # "" for none
    doc: str


BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
LAYOUT = (
    Partition("COS_BIOS", BIOS_BOOT_TYPE, "", "BIOS boot partition: GRUB's i386-pc core.img"),
    Partition("COS_GRUB", "U", "vfat", "EFI system partition: the GRUB EFI binary"),
    Partition("COS_OEM", "L", "ext4", "OEM cloud-config, mounted at /oem"),
    Partition("COS_STATE", "L", "ext4", "active.img, passive.img and the GRUB menu"),
    Partition("COS_RECOVERY", "L", "ext4", "recovery.img"),
    Partition("COS_PERSISTENT", "L", "ext4", "persistent data, mounted at /usr/local"),
)
DEFAULT_IMAGE_SIZE = 2048   # MiB of a system image file
IMAGES_DIR = "cOS"     # on COS_STATE and COS_RECOVERY
MENU = "grub2/grub.cfg"
# GRUB's environment block of the boot assessment, beside the menu (runtime/assessment.py)
ASSESSMENT_FILE = "grub2/boot_assessment"
DEFAULT_BOOT_TRIES = 3
BIOS_BOOT_IMAGE = "i386-pc/boot.img"   # the MBR's code
BIOS_CORE_IMAGE = "i386-pc/core.img"   # GRUB itself, in COS_BIOS
BIOS_PARTITION = 1                      # MiB: core.img is ~150 KiB, GRUB's limit ~460 KiB
IMAGE_LABELS = {"active.img": "COS_ACTIVE", "passive.img": "COS_PASSIVE",
                "recovery.img": "COS_SYSTEM"}


def esp_files(arch: Arch) -> tuple[str, str, str]:
    """COS_GRUB's files, from the boot files folder to the same paths there: the firmware
    runs shim, shim runs the signed GRUB beside it, which reads its way to the menu from
    /EFI/debian (`doit disk` signs shim with a derivative's own key: images/secureboot.py)."""
    return (arch.efi_binary, f"EFI/BOOT/grub{arch.efi}.efi", "EFI/debian/grub.cfg")


def partition_sizes(image_size: int, grub: int = 64, oem: int = 64,
                    persistent: int | None = 512) -> dict[str, int | None]:
    """MiB per partition; COS_STATE holds active, passive and an upgrade's transition image,
    COS_RECOVERY the recovery image and its upgrade's transition image."""
    return {"COS_BIOS": BIOS_PARTITION, "COS_GRUB": grub, "COS_OEM": oem, "COS_STATE": 3 * image_size + 256,
            "COS_RECOVERY": 2 * image_size + 128, "COS_PERSISTENT": persistent}


def sizes_for(sizes: dict[str, int | None], arch: Arch) -> dict[str, int | None]:
    """The partitions of a disk of `arch`: no COS_BIOS where there is no BIOS (arm64)."""
    return {label: size for label, size in sizes.items() if arch.bios or label != "COS_BIOS"}


def partition_table(sizes: dict[str, int | None], seed: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """The sfdisk script of LAYOUT (1 MiB aligned, fixed disk and partition UUIDs) and each
    partition's (offset, size) in bytes. A size of None takes the rest of the device."""
    lines = ["label: gpt", f"label-id: {fsimage.stable_uuid(seed)}", "unit: sectors",
             "first-lba: 2048"]
    places, start = {}, MIB
    for part in (p for p in LAYOUT if p.label in sizes):
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


@dataclass(frozen=True)
class BootFiles:
    menu: Path
    esp: dict                 # esp_files() path -> the root's file
    bios_boot: Path | None    # None: an architecture without BIOS
    bios_core: Path | None

    def esp_folder(self, folder: Path) -> Path:
        """`folder`, made again with COS_GRUB's files."""
        shutil.rmtree(folder, ignore_errors=True)
        for name, source in self.esp.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / name)
        return folder

    def install_bios(self, target: Path, places: dict[str, tuple[int, int | None]]) -> None:
        """GRUB's BIOS boot code into the disk `target` laid out at `places`, if it has one."""
        if self.bios_boot is None or self.bios_core is None:
            return
        room = places["COS_BIOS"][1]

        def head(path: Path, size: int) -> bytes:   # a file of the root: read what can fit
            with open(path, "rb") as f:
                return f.read(size + 1)
        biosboot.install(target, places["COS_BIOS"], head(self.bios_boot, biosboot.SECTOR),
                         head(self.bios_core, room))


def boot_files(root: Path, folder: str, arch: Arch) -> BootFiles:
    """The system's GRUB menu, EFI files and (where the architecture has BIOS) BIOS images,
    checked; the root's links are followed inside it only (a package's link cannot make a
    host file the disk's boot loader)."""
    bios = (BIOS_BOOT_IMAGE, BIOS_CORE_IMAGE) if arch.bios else ()
    found = []
    for name in (MENU.split("/")[-1], *esp_files(arch), *bios):
        try:
            path = rootpath.resolve(root, f"{folder}/{name}", follow_last=True)
        except CosbuildError as exc:
            raise CosbuildError(exc.message, key="boot_files") from None
        if not path.is_file():
            raise CosbuildError(f"{folder}/{name} is not in the system root",
                                key="boot_files",
                                hint="add the boot loader package (system/grub2-efi) to the "
                                     "system's runtime requires, or fix boot_files")
        found.append(path)
    menu, *esp = found[:4]
    bios_boot, bios_core = found[4:] or (None, None)
    return BootFiles(menu, dict(zip(esp_files(arch), esp)), bios_boot, bios_core)


def write_assessment(state: Path, boot_tries: int) -> None:
    """COS_STATE's boot assessment file: nothing being assessed, `boot_tries` for the next
    new image (GRUB never creates the file; it only writes into it)."""
    path = state / ASSESSMENT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(grubenv.block({"boot_tries": str(boot_tries)}))


def copy_sparse(source: Path, dest: Path, log: TaskLog) -> None:
    tools.run(["cp", "--sparse=always", str(source), str(dest)], log=log,
              what=f"copy {source.name}")


def fill_partitions(targets: dict[str, tuple[Path, int, int | None]],
                    contents: dict[str, Path | None], seed: str, log: TaskLog) -> None:
    """Make every LAYOUT file system in its (file or device, byte offset, size or None for
    all of it) place."""
    for part in LAYOUT:
        if not part.fs:
            continue
        target, offset, size = targets[part.label]
        if size is None:
            size = device_size(target) - offset
        content = contents.get(part.label)
        if part.fs == "vfat":
            fsimage.make_fat(target, content, label=part.label, size_kib=size // 1024, log=log,
                             offset=offset, fat32=True)
        else:
            fsimage.make_ext(target, content, label=part.label, size_mib=size // MIB, log=log,
                             fs_type=part.fs, offset=offset, seed=seed + part.label)


def device_size(target: Path) -> int:
    with open(target, "rb") as f:
        return f.seek(0, os.SEEK_END)

