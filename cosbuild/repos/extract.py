"""Unpacking an artifact safely: nothing written outside the destination, no device
nodes unless allowed, no decompression bombs, no header value the system calls cannot take."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from .. import luetformat
from ..errors import CosbuildError
from ..oci.layers import EXTRACT_CHECKED

# the numbers of a tar header (a pax header may say any number) that extraction hands to
# chmod, chown, utime, mknod and read, each with the range those take (the sizes are also
# counted against what the artifact may unpack to); mode may carry the file type's bits
# (Go's archive/tar writes them)
HEADER_RANGES = {"mode": (0, 0o177777), "uid": (0, 2**32 - 2), "gid": (0, 2**32 - 2),
                 "mtime": (0, 253402300799),   # 9999-12-31: never before 1970, nor past Y10K
                 "devmajor": (0, 2**32 - 1), "devminor": (0, 2**32 - 1),
                 "size": (0, 2**63 - 1)}


def extract_safely(archive: Path, dest: Path, what: str, symlinks: set[str] | None = None, *,
                   compression: luetformat.Compression, unpacked_size: int | None = None,
                   devices: bool = False,
                   bounds: luetformat.Bounds = luetformat.DEFAULT_BOUNDS) -> list[str]:
    """Unpack an artifact into `dest`, refusing anything that could write outside it, and
    device nodes and FIFOs unless it may carry them (`devices`).

    It may decompress to `unpacked_size` (as the index records), else as `bounds` allow;
    that much must be free. Whatever the index says, it never unpacks to more than
    `bounds.artifact_unpacked` nor than the space free in `dest`, counted as it is written.
    `symlinks` are the links already in `dest` (updated): no entry may be written through
    one. Returns the package's file list (absolute paths of non-directories)."""
    files: list[str] = []
    symlinks = set() if symlinks is None else symlinks
    regular: set[str] = set()
    compressed = archive.stat().st_size
    luetformat.check_space(dest, compressed if unpacked_size is None else unpacked_size,
                           f"unpacking {what}")
    limit, recorded = min(
        (bounds.unpacked_limit(compressed, unpacked_size),
         "its index records" if unpacked_size is not None else "it may be"),
        (bounds.artifact_unpacked, "any artifact may unpack to"),
        (shutil.disk_usage(dest).free, f"is free in {dest}"))
    written = 0
    try:
        with luetformat.open_tar(archive, compression, limit) as tar:
            for member in tar:
                name = _check_member(member, symlinks, regular, what, devices)
                written += member.size
                if written > limit:   # before its data is decompressed and written
                    raise luetformat.TooLarge(f"larger than {luetformat.bound_text(limit)} "
                                              "once decompressed")
                if name is not None:
                    _extract(tar, member, name, dest, what)
                    if member.issym():
                        symlinks.add(name)
                    elif member.isreg():
                        regular.add(name)
                    if not member.isdir():
                        files.append("/" + name)
    except luetformat.TooLarge as exc:
        raise CosbuildError(f"refusing to install {what}: the archive is {exc}, more than "
                            f"{recorded}", hint="the artifact is damaged or hostile (a "
                                                "decompression bomb); nothing was installed") from None
    except luetformat.Damaged as exc:
        raise CosbuildError(f"refusing to install {what}: the archive is damaged ({exc})",
                            hint="the repository is corrupt; nothing was installed") from None
    return sorted(files)


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, dest: Path, what: str) -> None:
    target = dest / name
    if target.is_symlink():   # tarfile would open the link's target for writing
        raise CosbuildError(f"refusing to install {what}: {name!r} would be written over the "
                            "symbolic link already there", hint="nothing was installed")
    if os.path.lexists(target) and not (member.isdir() and target.is_dir()):
        raise CosbuildError(f"refusing to install {what}: {name!r} is in the archive twice "
                            "or in two packages", hint="nothing was installed")
    member.name = name
    if member.islnk():
        member.linkname = str(PurePosixPath(member.linkname))
    try:
        tar.extract(member, dest, set_attrs=True, numeric_owner=True, **EXTRACT_CHECKED)
        for key, value in member.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                os.setxattr(target, key[len("SCHILY.xattr."):],
                            value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
    except OSError as exc:   # a full disk, an xattr the filesystem refuses, ...
        raise CosbuildError(f"cannot install {what}: {name!r}: {exc.strerror or exc}",
                            hint="nothing was installed") from None


def _check_member(member: tarfile.TarInfo, symlinks: set, regular: set, what: str,
                  devices: bool = False) -> str | None:
    raw = member.name
    path = PurePosixPath(raw)

    def refuse(why: str) -> CosbuildError:
        return CosbuildError(f"refusing to install {what}: {why}",
                             hint="the artifact is corrupt or hostile; nothing was installed")

    for field, (low, high) in HEADER_RANGES.items():
        value = getattr(member, field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not low <= value <= high:   # (NaN is in no range)
            raise refuse(f"{raw!r} has {field} {value!r} in its header, not between {low} "
                         f"and {high}")
    texts = {"name": raw, "link target": member.linkname,
             **{f"pax header {key!r}": key for key in member.pax_headers}}
    for field, text in texts.items():
        if "\0" in text:   # no file name, link or attribute may hold one
            raise refuse(f"{raw!r} has a NUL character in its {field}")
    if raw.startswith("/") or path.is_absolute():
        raise refuse(f"absolute path {raw!r} in the archive")
    if ".." in path.parts:
        raise refuse(f"path {raw!r} has a '..' component")
    name = str(path)
    if name in (".", ""):
        return None
    for parent in list(path.parents)[:-1]:
        if str(parent) in symlinks:
            raise refuse(f"{raw!r} would be written through the symbolic link {str(parent)!r}")
    if member.islnk():
        target = str(PurePosixPath(member.linkname))
        if member.linkname.startswith("/") or ".." in PurePosixPath(member.linkname).parts \
                or target not in regular:
            raise refuse(f"hard link {raw!r} points to {member.linkname!r}, "
                         "which is not a file of this archive")
    if member.issym() and not member.linkname:
        # no such link can be made; tarfile would then copy the "target" and recurse
        raise refuse(f"symbolic link {raw!r} has an empty target")
    if kind := luetformat.device_kind(member):
        if not devices:   # a node of the host's disk or memory, made by root in the root
            raise refuse(f"{raw!r} is a {kind}, and the package may not carry one "
                         "(allow_devices of its repository)")
    elif not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise refuse(f"unsupported entry type for {raw!r}")
    return name
