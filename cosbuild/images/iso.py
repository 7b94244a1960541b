"""Live ISO from iso.yaml (luet-makeiso format, SPEC section 4).

Steps, each a doit task (`iso:rootfs`, `iso:squashfs`, `iso:kernel`, `iso:uefi`,
`iso:isoimage`, `iso:sbom`, `iso:image`):

- rootfs: `packages.rootfs` installed with the repository client (the local build first,
  then iso.yaml's repositories) into a staging root, `overlay.rootfs` copied over it;
- rootfs.squashfs: a reproducible tar of the staging root streamed into tar2sqfs;
- boot/kernel.xz and boot/rootfs.xz: the rootfs' `initramfs.kernel_file` / `rootfs_file`;
- boot/uefi.img: `packages.uefi` + overlay in a FAT image made with mkfs.vfat and mtools
  (no mounting), sized to fit;
- the ISO root: `packages.isoimage` + overlay;
- the ISO, written with pycdlib: ISO 9660 + Rock Ridge + Joliet, El Torito BIOS and EFI
  entries, an isohybrid MBR; `<iso>.sha256` beside it;
- the SBOM (sbom.py), `<iso name without .iso>.spdx.json` beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tarfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

from .. import arches, rootpath, tools
from ..builds import artifact
from ..errors import CosbuildError
from ..fsutil import atomic_path, atomic_write
from ..repos.config import local_build, read_config_data
from ..repos.transaction import stage_root
from ..tools import TaskLog
from ..terminal import safe, say
from ..tree import spec
from ..tree.project import Project
from ..tree.versions import PackageRef, parse_ref
from ..tree.yamlio import dumps
from . import fsimage, sbom, secureboot, values

log = logging.getLogger("cosbuild")


IN_BOOT = values.inside("/boot of the live root")
IN_ISO = values.inside("the ISO root")
IN_PROJECT = values.inside("the folder of iso.yaml", optional=True)

PACKAGES_KEYWORDS = (
    spec.Keyword("rootfs", spec.STRS, (), "packages installed into the live root (rootfs.squashfs)"),
    spec.Keyword("uefi", spec.STRS, (), "packages installed into the EFI image (boot/uefi.img)"),
    spec.Keyword("isoimage", spec.STRS, (), "packages installed into the ISO root itself"),
)
INITRAMFS_KEYWORDS = (
    spec.Keyword("kernel_file", IN_BOOT, "vmlinuz", "kernel, under /boot of the rootfs"),
    spec.Keyword("rootfs_file", IN_BOOT, "initrd", "initramfs, under /boot of the rootfs"),
)
OVERLAY_KEYWORDS = (
    spec.Keyword("rootfs", IN_PROJECT, None, "folder copied over the live root"),
    spec.Keyword("uefi", IN_PROJECT, None, "folder copied over the EFI image"),
    spec.Keyword("isoimage", IN_PROJECT, None, "folder copied over the ISO root"),
)
SQUASHFS_KEYWORDS = (
    spec.Keyword("compression", values.choice("gzip", "xz", "zstd", "lzo", "lz4", "lzma"), "xz",
                 "tar2sqfs compressor"),
    spec.Keyword("compression_options", spec.Type("mksquashfs -X options", lambda v, w:
                 _comp_extra(spec.STR.parse(v, w), w)), "",
                 "mksquashfs style, e.g. -Xcompression-level 19 or -Xbcj x86; tar2sqfs's "
                 "own (level=19) are taken as they are"),
)
# mksquashfs -X option -> tar2sqfs --comp-extra word ("" = a flag without a value)
MKSQUASHFS_OPTIONS = {"compression-level": "level", "dict-size": "dictsize",
                      "window-size": "window", "algorithm": "algorithm", "hc": "",
                      "lc": "lc", "lp": "lp", "pb": "pb", "bcj": None}
SQUASHFS_BLOCK = 131072   # tar2sqfs's and mksquashfs' default: what -Xdict-size N% is of


def _comp_extra(options: str, where: spec.Where) -> str:
    """mksquashfs-style '-Xbcj x86 -Xdict-size 100%' -> tar2sqfs 'x86,dictsize=131072'."""
    words, out = options.split(), []
    while words:
        word = words.pop(0)
        if not word.startswith("-X"):   # tar2sqfs's own spelling
            out.append(word)
            continue
        key = word[2:]
        if key not in MKSQUASHFS_OPTIONS:
            raise where.error(f"unknown mksquashfs option {safe(word)}",
                              hint="one of " + ", ".join(f"-X{k}" for k in MKSQUASHFS_OPTIONS))
        name = MKSQUASHFS_OPTIONS[key]
        if name == "":
            out.append(key)
            continue
        if not words:
            raise where.error(f"{safe(word)} needs a value")
        value = words.pop(0)
        if name is None:        # bcj filters are flags of their own in tar2sqfs
            out.extend(value.split(","))
        elif key == "dict-size" and value.endswith("%") and value[:-1].isdigit():
            out.append(f"{name}={SQUASHFS_BLOCK * int(value[:-1]) // 100}")
        else:
            out.append(f"{name}={value}")
    return ",".join(out)


LUET_KEYWORDS = (
    spec.Keyword("repositories", spec.ANY, (), "client repositories (as in a luet config)"),
)


def _nested(table: tuple, what: str) -> spec.Type:
    """luet-makeiso ignores the keys it does not know, at every level: warnings here."""
    return spec.nested(table, what, warn_unknown=True)


_OVERLAY = _nested(OVERLAY_KEYWORDS, "overlay")


def _overlay(value, where: spec.Where):
    """The overlay map; `overlay: true` or `false`, in files of luet-makeiso before 0.3.3
    (which had no overlay key and so ignored it), is ignored too, with a warning."""
    if isinstance(value, bool):
        log.warning("%s", where.error(
            f"{str(value).lower()}: ignored (luet-makeiso before 0.3.3 had no 'overlay' key)",
            hint="an overlay is a mapping {rootfs, uefi, isoimage} of folders"))
        return None
    return _OVERLAY.parse(value, where)


OVERLAY = spec.Type(f"{_OVERLAY.describe} (true or false: ignored)", _overlay)
ISO_KEYWORDS = (
    spec.Keyword("packages", _nested(PACKAGES_KEYWORDS, "packages"), None, "what goes where",
                 required=True),
    spec.Keyword("initramfs", _nested(INITRAMFS_KEYWORDS, "initramfs"), None, "kernel and initrd"),
    spec.Keyword("label", values.label("iso9660"), "COS_LIVE",
                 "ISO volume id (the kernel finds the ISO by it)"),
    spec.Keyword("image_prefix", spec.STR, "", "ISO file name prefix"),
    spec.Keyword("image_date", spec.BOOL, False, "add YYYYMMDD (of SOURCE_DATE_EPOCH) to the name"),
    spec.Keyword("image_name", spec.STR, "", "ISO file name after the prefix"),
    spec.Keyword("arch", spec.STR, "", "the architecture the ISO is for (x86_64 or amd64, "
                 "aarch64 or arm64): the build's (`--arch`) when unset; another is an error"),
    spec.Keyword("overlay", OVERLAY, None, "extra files"),
    spec.Keyword("squashfs_options", _nested(SQUASHFS_KEYWORDS, "squashfs_options"), None,
                 "rootfs.squashfs compression"),
    spec.Keyword("boot_file", IN_ISO, "boot/syslinux/isolinux.bin",
                 "BIOS El Torito boot file (amd64; an arm64 ISO boots with UEFI only)"),
    spec.Keyword("boot_catalog", IN_ISO, "boot/syslinux/boot.cat", "El Torito boot catalog"),
    spec.Keyword("isohybrid_mbr", IN_ISO, "boot/syslinux/isohdpfx.bin",
                 "MBR boot code for USB sticks (first 432 bytes are used; amd64)"),
    spec.Keyword("luet", _nested(LUET_KEYWORDS, "luet"), None, "where packages come from"),
    spec.Keyword("secure_boot", secureboot.SECURE_BOOT, None,
                 secureboot.doc("boot/uefi.img's shim")),
)


@dataclass(frozen=True)
class IsoSpec:
    file: Path
    rootfs: tuple[PackageRef, ...]
    uefi: tuple[PackageRef, ...]
    isoimage: tuple[PackageRef, ...]
    kernel_file: str
    rootfs_file: str
    label: str
    file_name: str
    arch: str   # Debian's name; "" for the build's
    overlay: dict
    compression: str
    compression_options: str
    boot_file: str
    boot_catalog: str
    isohybrid_mbr: str
    repositories: tuple
    wheres: dict = field(default_factory=dict, compare=False)  # package list -> its Where
    secure_boot: secureboot.Keys | None = None


def load_iso_spec(path: Path) -> IsoSpec:
    data, f = spec.parse_file(ISO_KEYWORDS, path, what="iso.yaml",
                              missing="ISO specification not found", hint="pass --iso FILE",
                              warn_unknown=True)
    pk, ir = f["packages"], f["initramfs"] or {}
    refs, wheres = {}, {}
    for kind in ("rootfs", "uefi", "isoimage"):
        where = wheres[kind] = spec.Where(str(path), data["packages"].line_of(kind),
                                          f"packages.{kind}")
        refs[kind] = tuple(parse_ref(r, where) for r in pk[kind])
    if not refs["rootfs"]:
        raise CosbuildError("packages.rootfs is empty", file=path, key="packages.rootfs",
                            hint="name the package(s) of the live root filesystem")
    arch = arches.named(f["arch"]) if f["arch"] else None
    if f["arch"] and arch is None:
        raise CosbuildError(f"unknown architecture '{f['arch']}'", file=path,
                            line=data.line_of("arch"), key="arch",
                            hint="x86_64 (amd64) or aarch64 (arm64), or leave it out")
    epoch = artifact.source_date_epoch()
    date = time.strftime("%Y%m%d", time.gmtime(epoch)) if f["image_date"] else ""
    name = spec.file_name(f"{f['image_prefix']}{f['image_name']}{date}.iso",
                          spec.Where(str(path), data.line_of("image_name"), "image_name"))
    sq = f["squashfs_options"] or {}
    overlay = {}
    for kind, rel in (f["overlay"] or {}).items():
        if rel is None:
            continue
        where = spec.Where(str(path), data.line_of("overlay"), f"overlay.{kind}")
        try:
            # its links too stay in the folder of iso.yaml: no host folder goes into the ISO
            folder = overlay[kind] = rootpath.resolve(path.parent, rel, follow_last=True)
        except CosbuildError as exc:
            raise where.error(exc.message, exc.hint) from None
        if not folder.is_dir():
            raise where.error(f"overlay folder {path.parent / rel} does not exist",
                              hint="create it or remove the key")
    return IsoSpec(path, refs["rootfs"], refs["uefi"], refs["isoimage"],
                   ir.get("kernel_file", "vmlinuz"), ir.get("rootfs_file", "initrd"),
                   f["label"], name, arch.name if arch else "", overlay, sq.get("compression", "xz"),
                   sq.get("compression_options", ""), f["boot_file"], f["boot_catalog"],
                   f["isohybrid_mbr"],
                   tuple((f["luet"] or {}).get("repositories") or ()), wheres,
                   secureboot.keys(f["secure_boot"], path, data.line_of("secure_boot")))


class IsoBuilder:
    """The ISO assembly steps of one project and iso.yaml."""

    def __init__(self, project: Project, iso: IsoSpec):
        self.project, self.iso = project, iso
        self.work = project.settings.build_dir / "iso"
        self.rootfs_dir = self.work / "rootfs"
        self.uefi_dir = self.work / "uefi"
        self.isoimage_dir = self.work / "isoimage"
        self.squashfs = self.work / "rootfs.squashfs"
        self.kernel = self.work / "kernel.xz"
        self.initrd = self.work / "rootfs.xz"
        self.uefi_img = self.work / "uefi.img"
        self.output = project.settings.build_dir / iso.file_name
        self.sbom = sbom.sbom_path(project.settings.build_dir, self.output.stem)
        self.arch = arches.get(project.settings.arch)
        if iso.arch not in ("", self.arch.name):
            raise CosbuildError(f"the ISO specification is for {iso.arch}, this build for "
                                f"{self.arch.name}", file=iso.file, key="arch",
                                hint=f"build with --arch {iso.arch}, or name the "
                                     f"{self.arch.name} ISO specification (--iso)")
        build = project.settings.build_dir.resolve()
        for kind, folder in iso.overlay.items():
            # copying the build folder into itself would never end
            if folder.resolve().is_relative_to(build) or build.is_relative_to(folder.resolve()):
                raise CosbuildError(f"overlay folder {folder} overlaps the build folder {build}",
                                    file=iso.file, key=f"overlay.{kind}",
                                    hint="keep the overlay apart from --build-dir")

    def manifest(self, kind: str) -> Path:
        return self.work / f"{kind}.manifest"

    def log(self, kind: str) -> TaskLog:
        return TaskLog(self.project.settings.logs_dir / f"iso-{kind}.log",
                       verbose=self.project.settings.verbose)

    def repositories(self):
        return [local_build(self.project.settings.build_dir),
                *(r for r in read_config_data(list(self.iso.repositories), self.iso.file)
                  if r.used_on(self.project.settings.arch))]

    # ----------------------------------------------------------------- staged roots

    def install_root(self, kind: str) -> None:
        """Install the packages of `kind` into a fresh staging root, then its overlay."""
        target = {"rootfs": self.rootfs_dir, "uefi": self.uefi_dir,
                  "isoimage": self.isoimage_dir}[kind]
        refs = getattr(self.iso, kind)
        packages = stage_root(target, refs, self.repositories())
        if kind != "rootfs":   # boot media carry files, not a package database
            shutil.rmtree(target / "var", ignore_errors=True)
        overlay = {}
        if kind in self.iso.overlay:
            overlay = self.overlay_files(kind)
            # over what packages installed: their links are followed inside the root only
            rootpath.copy_tree(self.iso.overlay[kind], target)
        # what the root is made of: the next steps re-run exactly when this changes
        atomic_write(self.manifest(kind), dumps({"packages": packages, "overlay": overlay}))

    def overlay_files(self, kind: str) -> dict[str, str]:
        """The overlay's files and their sha256; a FIFO, socket or device there is an error
        (opening a FIFO to copy it would block)."""
        source, files = self.iso.overlay[kind], {}
        for p in sorted(source.rglob("*")):
            if p.is_symlink() or p.is_dir():
                continue
            if not p.is_file():
                raise CosbuildError(f"{p} is not a regular file, folder or link",
                                    file=self.iso.file, key=f"overlay.{kind}",
                                    hint="remove it from the overlay folder")
            files[str(p.relative_to(source))] = artifact.sha256_file(p)
        return files

    def write_sbom(self) -> None:
        """The ISO's SBOM: the packages of its three roots, the Debian ones of the live root."""
        sbom.write_sbom(self.sbom, self.output.stem, self.project,
                        [self.manifest(k.name) for k in PACKAGES_KEYWORDS], self.rootfs_dir)

    # ----------------------------------------------------------------- rootfs.squashfs

    def make_squashfs(self) -> None:
        """Stream a reproducible tar of the staging root into tar2sqfs (no second copy)."""
        argv = ["tar2sqfs", "--quiet", "--force", "--compressor", self.iso.compression,
                "--num-jobs", str(os.cpu_count() or 1)]
        if self.iso.compression_options:
            argv += ["--comp-extra", self.iso.compression_options]
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(artifact.source_date_epoch())}
        with self.log("squashfs") as log, atomic_path(self.squashfs) as tmp, \
                tools.stream([*argv, str(tmp)], log=log, env=env,
                             what=f"squash {self.rootfs_dir}") as pipe, \
                tarfile.open(fileobj=pipe, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            artifact.add_entries(tar, artifact.walk(self.rootfs_dir))

    # ----------------------------------------------------------------- kernel and initrd

    def copy_kernel(self) -> None:
        for name, dest, key in ((self.iso.kernel_file, self.kernel, "initramfs.kernel_file"),
                                (self.iso.rootfs_file, self.initrd, "initramfs.rootfs_file")):
            try:
                source = rootpath.resolve(self.rootfs_dir, f"boot/{name}", follow_last=True)
            except CosbuildError as exc:
                raise CosbuildError(exc.message, file=self.iso.file, key=key) from None
            if not source.is_file():
                raise CosbuildError(f"/boot/{name} is not in the live root filesystem "
                                    f"(expected at {source})", file=self.iso.file, key=key,
                                    hint="fix the name or install the kernel package")
            with atomic_path(dest) as tmp:
                shutil.copyfile(source, tmp)

    # ----------------------------------------------------------------- boot/uefi.img

    def make_uefi_image(self) -> None:
        """A FAT image holding the EFI root, made without mounting (mkfs.vfat + mtools); its
        boot loader signed with the derivative's key when iso.yaml has one (the EFI root was
        staged afresh just before, by the same task)."""
        files = [p for p in self.uefi_dir.rglob("*") if p.is_file() and not p.is_symlink()]
        binary = self.arch.efi_binary
        loaders = [p for p in files
                   if p.relative_to(self.uefi_dir).as_posix().upper() == binary.upper()]
        if not loaders:
            raise CosbuildError(f"no {binary} in the EFI image", file=self.iso.file,
                                key="packages.uefi", hint="add the EFI boot loader package")
        with self.log("uefi") as log, atomic_path(self.uefi_img) as tmp:
            if self.iso.secure_boot is not None:
                secureboot.sign(loaders[0], self.iso.secure_boot, log, "the EFI image's boot loader")
            size_kib = (sum(p.stat().st_size for p in files) * 12 // 10) // 1024 + 2048
            tmp.unlink()
            fsimage.make_fat(tmp, self.uefi_dir, label="COS_GRUB", size_kib=size_kib, log=log)

    # ----------------------------------------------------------------- the ISO

    def check_boot_files(self, files: dict[str, Path]) -> None:
        """The boot files are among the ISO's `files` (a link in the ISO root is not one: it
        could name a host file); the boot catalog, which pycdlib writes, is not."""
        for key in ("boot_file", "isohybrid_mbr") if self.arch.bios else ():
            rel = getattr(self.iso, key)
            if rel not in files:
                raise CosbuildError(f"{rel} is not in the ISO root", file=self.iso.file, key=key,
                                    hint="add the BIOS boot loader package to packages.isoimage")
        catalog = self.iso.boot_catalog
        folder = catalog.rpartition("/")[0]
        taken = any(f == catalog or f.startswith(f"{catalog}/") for f in files)
        if taken or (folder and not any(f.startswith(f"{folder}/") for f in files)):
            raise CosbuildError(f"{catalog} is in the ISO root already" if taken else
                                f"the ISO root has no folder {folder} for {catalog}",
                                file=self.iso.file, key="boot_catalog",
                                hint="name a new file in a folder of the ISO root")

    def iso_files(self) -> dict[str, Path]:
        """ISO path -> source file (regular files only: a link is not followed)."""
        files = {}
        for p in sorted(self.isoimage_dir.rglob("*")):
            if p.is_file() and not p.is_symlink():
                rel = p.relative_to(self.isoimage_dir).as_posix()
                if rel != rel.encode(errors="replace").decode():   # undecodable bytes
                    raise CosbuildError(f"{os.fsencode(rel)!r} in the ISO root is not a UTF-8 "
                                        "name, which Rock Ridge and Joliet names need",
                                        file=self.iso.file, key="packages.isoimage / overlay",
                                        hint="rename the file in its package or overlay")
                files[rel] = p
        files.update({"rootfs.squashfs": self.squashfs, "boot/kernel.xz": self.kernel,
                      "boot/rootfs.xz": self.initrd, "boot/uefi.img": self.uefi_img})
        return files

    def write_iso(self) -> None:
        files = self.iso_files()
        self.check_boot_files(files)
        with atomic_path(self.output) as tmp:
            write_iso(tmp, files, self.iso, bios=self.arch.bios)
            digest = artifact.sha256_file(tmp)
        atomic_write(self.output.with_name(self.output.name + ".sha256"),
                     f"{digest}  {self.output.name}\n")
        say(f"ISO: {self.output} ({self.output.stat().st_size / 1e6:.0f} MB, sha256 {digest[:16]}...)")


ISO_PADDING = 300 * 1024


def write_iso(out: Path, files: dict[str, Path], iso: IsoSpec, *, bios: bool = True) -> None:
    """ISO 9660 + Rock Ridge + Joliet with El Torito EFI and (`bios`) BIOS entries and an
    isohybrid MBR."""
    import pycdlib   # only when the ISO is written: doit loads this module for every run

    names: dict[str, str] = {"": ""}    # real path -> ISO 9660 path
    joliet: dict[str, str] = {"": ""}   # real path -> Joliet path

    def place(table: dict[str, str], rel: str, name) -> str:
        """`rel`'s path in the `table` namespace: its parent's, then `name` of its own name,
        numbered when a sibling has that name already (names are shortened there)."""
        parent, _, base = rel.rpartition("/")
        taken = {v for k, v in table.items() if k.rpartition("/")[0] == parent}
        path, n = f"{table[parent]}/{name(base)}", 1
        while path in taken:
            n += 1
            path = f"{table[parent]}/{name(f'{n}_{base}')}"
        table[rel] = path
        return path

    def iso_path(rel: str, is_dir: bool) -> str:
        return place(names, rel, lambda base: _iso_name(base, is_dir))

    def joliet_path(rel: str) -> str:
        return place(joliet, rel, _joliet_name)

    with _deterministic_pycdlib(artifact.source_date_epoch(), iso.label):
        cd = pycdlib.PyCdlib()
        cd.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=iso.label,
               sys_ident="LINUX", app_ident_str="cosbuild")
        dirs = sorted({str(Path(rel).parent) for rel in files} - {"."})
        for d in sorted({p for d in dirs for p in _parents(d)}):
            cd.add_directory(iso_path(d, True), rr_name=d.rpartition("/")[2],
                             joliet_path=joliet_path(d))
        for rel, source in sorted(files.items()):
            cd.add_file(str(source), iso_path(rel, False) + ";1", rr_name=rel.rpartition("/")[2],
                        joliet_path=joliet_path(rel), file_mode=0o100644)
        # the first entry names the boot catalog (a name no file of the ISO has)
        catalog = {"bootcatfile": iso_path(iso.boot_catalog, False) + ";1",
                   "rr_bootcatname": iso.boot_catalog.rpartition("/")[2],
                   "joliet_bootcatfile": joliet_path(iso.boot_catalog)}
        if bios:
            cd.add_eltorito(names[iso.boot_file] + ";1", **catalog, boot_load_size=4,
                            boot_info_table=True, media_name="noemul")
        cd.add_eltorito(names["boot/uefi.img"] + ";1", **({} if bios else catalog), efi=True,
                        platform_id=0xEF, media_name="noemul", bootable=True)
        if bios:
            label_id = int.from_bytes(hashlib.sha256(iso.label.encode()).digest()[:4], "little")
            cd.add_isohybrid(efi=True, mbr_id=label_id)
        # zeros after the last file, as xorriso's default -padding: pycdlib writes the backup
        # GPT into the image's last 33 sectors, over the end of the last file (ISOLINUX's
        # ldlinux.c32) when the 1 MiB rounding leaves less room than that
        cd._finish_add(ISO_PADDING, 0)
        cd.write(str(out))
        cd.close()
    if bios:   # the MBR boot code of the syslinux that made isolinux.bin (not pycdlib's)
        with open(files[iso.isohybrid_mbr], "rb") as f, open(out, "r+b") as iso_file:
            iso_file.write(f.read(432))


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _joliet_name(name: str) -> str:
    """A Joliet name: pycdlib takes at most 64 bytes of UTF-8 (Rock Ridge keeps the whole)."""
    return name.encode()[:64].decode(errors="ignore")


def _iso_name(name: str, is_dir: bool) -> str:
    """An ISO 9660 level 3 identifier: d-characters, at most 30 characters."""
    clean = "".join(c if c.isalnum() and c.isascii() else "_" for c in name.upper())
    if is_dir:
        return clean.replace(".", "_")[:31]
    stem, dot, ext = name.upper().rpartition(".")
    if not dot:
        return clean[:30]
    fix = lambda s: "".join(c if c.isalnum() and c.isascii() else "_" for c in s)  # noqa: E731
    ext = fix(ext)[:8]
    return f"{fix(stem)[:29 - len(ext)]}.{ext}"


@contextlib.contextmanager
def _deterministic_pycdlib(epoch: int, seed: str):
    """pycdlib stamps every record with time.time() and gives the hybrid GPT random GUIDs,
    with no option to change either: give its modules a clock that reads SOURCE_DATE_EPOCH
    (in UTC) and GUIDs derived from `seed`, so the ISO is reproducible."""
    import uuid

    import pycdlib.dates
    import pycdlib.headervd
    import pycdlib.isohybrid
    import pycdlib.pycdlib
    clock = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    clock.time, clock.localtime = (lambda: float(epoch)), time.gmtime
    counter = iter(range(1 << 30))
    guids = types.SimpleNamespace(UUID=uuid.UUID, uuid4=lambda: uuid.UUID(
        bytes=hashlib.sha256(f"{seed}/{next(counter)}".encode()).digest()[:16], version=4))
    patches = [(m, "time", clock) for m in (pycdlib.pycdlib, pycdlib.headervd, pycdlib.dates)]
    patches.append((pycdlib.isohybrid, "uuid", guids))
    saved = [(m, name, getattr(m, name)) for m, name, _ in patches]
    for m, name, value in patches:
        setattr(m, name, value)
    try:
        yield
    finally:
        for m, name, value in saved:
            setattr(m, name, value)
