"""Package artifacts: which files (strategy + includes/excludes) and the deterministic tar.

Tars are reproducible: entries sorted, numeric owners only, mtimes clamped to
SOURCE_DATE_EPOCH, xattrs (file capabilities) kept, hard links and device nodes kept,
zstd framing independent of the machine. Writes go to a temporary name, then rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .. import luetformat, settings
from ..errors import CosbuildError
from ..fsutil import atomic_path
from ..terminal import safe

COMPRESSION = luetformat.ZSTD   # cOS publishes zstd artifacts and repositories
_KEEP_XATTRS = ("security.capability", "user.")   # overlayfs' own trusted.* never leak


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH, or 0: reproducible by default (the rule: settings.py)."""
    return settings.source_date_epoch()


@dataclass(frozen=True)
class Entry:
    path: str          # absolute path inside the artifact, e.g. /usr/bin/foo
    source: Path       # where it is on disk now


def walk(root: Path) -> Iterator[Entry]:
    """Every entry below root, without following symlinks (write_tar sorts them)."""
    for here, dirs, files in os.walk(root):
        rel = here[len(str(root)):]
        for name in (*dirs, *files):
            yield Entry(f"{rel}/{name}", Path(here) / name)


def delta(package_root: Path, builder_root: Path) -> Iterator[Entry]:
    """Entries present in the package image but not in the builder image (additions only)."""
    for entry in walk(package_root):
        if not os.path.lexists(builder_root / entry.path.lstrip("/")):
            yield entry


def rerooted(root: Path, subdir: str) -> Iterator[Entry]:
    """package_dir: the subtree `subdir`, re-rooted at /."""
    return walk(root / subdir.strip("/"))


def check_listable(entries: Iterable[Entry], what: str, file: Path | None) -> None:
    """A clear error (`what` and the spec `file` at fault) for the first entry whose path
    the artifact's metadata cannot list as it is: the file list is YAML text, which cannot
    hold a name that is not UTF-8 (os.walk gives its bytes as lone surrogates; luet's Go
    strings are bytes), and a NEL (U+0085) PyYAML writes raw, to be read back as a space."""
    for entry in entries:
        try:
            entry.path.encode()
        except UnicodeEncodeError:
            why = "is not UTF-8 text"
        else:
            if "\x85" not in entry.path:
                continue
            why = "holds a NEL (U+0085)"
        shown = safe(os.fsencode(entry.path).decode("utf-8", "backslashreplace"))
        raise CosbuildError(f"{what}: the name of the file '{shown}' {why}: the package's "
                            "file list cannot hold it", file=file,
                            hint="rename or remove it in the build steps, or leave it out "
                                 "with 'excludes'")


def select(entries: Iterable[Entry], includes: tuple[str, ...], excludes: tuple[str, ...]) -> list[Entry]:
    """SPEC includes/excludes, matched against the absolute path in the artifact.

    Directories are matched too; a directory that holds a kept entry is kept so that its
    owner and mode travel with the artifact."""
    inc = [re.compile(p) for p in includes]
    exc = [re.compile(p) for p in excludes]
    all_entries = {e.path: e for e in entries}

    def keep(path: str) -> bool:
        if inc and not any(r.search(path) for r in inc):
            return False
        return not any(r.search(path) for r in exc)

    kept = {p for p in all_entries if keep(p)}
    if inc:
        for path in list(kept):
            parent = os.path.dirname(path)
            while parent not in ("/", "") and parent in all_entries and parent not in kept:
                if any(r.search(parent) for r in exc):
                    break
                kept.add(parent)
                parent = os.path.dirname(parent)
    if exc:  # an excluded directory takes its contents with it
        kept = {p for p in kept if not _under_excluded(p, all_entries, exc)}
    return [all_entries[p] for p in sorted(kept)]


def _under_excluded(path: str, entries: dict, exc: list) -> bool:
    parent = os.path.dirname(path)
    while parent not in ("/", ""):
        if parent in entries and any(r.search(parent) for r in exc):
            return True
        parent = os.path.dirname(parent)
    return False


@contextlib.contextmanager
def _tar_writer(out: Path) -> Iterator[tuple[tarfile.TarFile, "_HashingWriter"]]:
    """A streaming PAX tar, compressed as COMPRESSION, hashed on the way, renamed into place
    on success."""
    with atomic_path(out) as tmp, open(tmp, "wb") as raw:
        hasher = _HashingWriter(raw)
        with COMPRESSION.writer(hasher) as stream, \
                tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            yield tar, hasher


def write_tar(entries: list[Entry], out: Path, *, checkout: bool = False) -> tuple[str, list[str]]:
    """Write a reproducible compressed tar; returns (sha256 hex, sorted list of non-directory paths).

    `checkout`: the files come from a source checkout, whose owners and umask differ between
    machines: store root ownership and only the executable bit of modes."""
    with _tar_writer(out) as (tar, hasher):
        files = add_entries(tar, entries, checkout=checkout)
    return hasher.hexdigest(), files


def add_entries(tar: tarfile.TarFile, entries: Iterable[Entry], *, checkout: bool = False) -> list[str]:
    """Add entries to a tar in sorted order, reproducibly; returns the non-directory paths."""
    epoch = source_date_epoch()
    files: list[str] = []
    links: dict[tuple[int, int], str] = {}
    for entry in sorted(entries, key=lambda e: e.path):
        info = _tarinfo(entry, epoch, links)
        if info is None:
            continue
        if checkout:
            info.uid = info.gid = 0
            info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
        if not info.isdir():
            files.append(entry.path)
        if info.isreg():
            with open(entry.source, "rb") as f:
                tar.addfile(info, f)
        else:
            tar.addfile(info)
    return files


def write_tar_blobs(blobs: dict[str, bytes], out: Path) -> str:
    """A reproducible compressed tar of generated files (path -> content); returns its sha256.

    Parent directories are added, so the archive unpacks with sane modes."""
    epoch = source_date_epoch()
    names = set(blobs)
    for path in blobs:
        parent = os.path.dirname(path)
        while parent:
            names.add(parent + "/")
            parent = os.path.dirname(parent)
    with _tar_writer(out) as (tar, hasher):
        for name in sorted(names, key=lambda n: n.rstrip("/")):
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime, info.uname, info.gname = epoch, "", ""
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode, info.size = 0o644, len(blobs[name])
                tar.addfile(info, io.BytesIO(blobs[name]))
    return hasher.hexdigest()


def _tarinfo(entry: Entry, epoch: int, links: dict) -> tarfile.TarInfo | None:
    st = os.lstat(entry.source)
    info = tarfile.TarInfo(entry.path.lstrip("/"))
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid, info.uname, info.gname = st.st_uid, st.st_gid, "", ""
    info.mtime = min(int(st.st_mtime), epoch)
    fmt = stat.S_IFMT(st.st_mode)
    if fmt == stat.S_IFREG:
        if st.st_nlink > 1:
            first = links.setdefault((st.st_dev, st.st_ino), info.name)
            if first != info.name:
                info.type, info.linkname = tarfile.LNKTYPE, first
                return _xattrs(info, entry.source)
        info.type, info.size = tarfile.REGTYPE, st.st_size
    elif fmt == stat.S_IFDIR:
        info.type = tarfile.DIRTYPE
    elif fmt == stat.S_IFLNK:
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(entry.source)
    elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
        if fmt == stat.S_IFCHR and st.st_rdev == 0:
            return None   # an overlayfs whiteout, not a device
        info.type = tarfile.CHRTYPE if fmt == stat.S_IFCHR else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif fmt == stat.S_IFIFO:
        info.type = tarfile.FIFOTYPE
    else:
        return None       # sockets cannot be archived
    return _xattrs(info, entry.source)


def _xattrs(info: tarfile.TarInfo, path: Path) -> tarfile.TarInfo:
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
    except OSError:
        return info
    for name in names:
        if name.startswith(_KEEP_XATTRS):
            value = os.getxattr(path, name, follow_symlinks=False)
            info.pax_headers[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
    return info


class _HashingWriter:
    """A file wrapper that hashes what goes through it (no second read of the artifact)."""

    def __init__(self, raw):
        self.raw, self.sha = raw, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
