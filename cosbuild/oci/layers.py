"""Container image layers applied to a folder, as container runtimes do (OCI image spec,
"Applying changesets"): entries replace what lower layers left, `.wh.NAME` deletes NAME and
`.wh..wh..opq` hides everything lower layers put in its folder.

Layers come from registries: nothing may be written or removed outside the folder, nor the
folder itself. Every name a layer gives (an entry's, a whiteout's target, a hard link's
target) is read by one rule (`_entry`, `_path`): a relative path of proper names, strictly
inside the folder. Every path is then resolved as inside a chroot of the folder
(rootpath.py), so a link a layer made (`lib -> /etc`) leads to the folder's own /etc, and
hard links are made to what is in the folder (the link itself, never followed). Owners,
modes, times, devices and extended attributes (file capabilities) are kept.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .. import rootpath
from ..errors import CosbuildError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
XATTR = "SCHILY.xattr."
# for members the caller has checked itself: the extraction filters (Python >= 3.11.4, not in
# Debian 12's 3.11.2, where cos-upgrade runs) would only warn
EXTRACT_CHECKED = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


def apply_layer(stream: BinaryIO, root: Path, what: str, keep: str = "") -> None:
    """Apply the uncompressed layer tar `stream` to `root`; `keep` is a folder of the root
    (relative) that no layer may touch (where the layers are downloaded to)."""
    written: set[str] = set()   # what this layer made: an opaque folder keeps it
    opaque: list[str] = []
    folders: list[tuple[Path, int]] = []
    root.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                entry = _entry(member, what)
                if entry is None:
                    continue
                name = _resolved(root, entry.path, what)
                # nor a folder above it replaced or removed (a folder written over one keeps it)
                if keep and (keep in (name, *map(str, PurePosixPath(name).parents))
                             or keep.startswith(f"{name}/")
                             and not (entry.kind == "write" and member.isdir())):
                    raise CosbuildError(f"{what}: refusing {member.name!r}: it would change "
                                        f"{keep}, where the layers are downloaded to",
                                        hint="the image is corrupt or hostile")
                if entry.kind == "opaque":
                    opaque.append(name.rpartition("/")[0])
                elif entry.kind == "whiteout":
                    _remove(root / name)
                else:
                    _extract(tar, member, name, root, what)
                    written.add(name)
                    if member.isdir():
                        folders.append((root / name, int(member.mtime)))
    except (tarfile.TarError, EOFError) as exc:
        raise CosbuildError(f"{what}: damaged layer ({exc})",
                            hint="pull again; the registry may be corrupt") from None
    # `keep` and its parents stay, and nothing in it is looked at
    kept = written | {str(p) for name in {*written, keep} for p in PurePosixPath(name).parents}
    for folder in opaque:
        _clear_lower(root, folder, kept, keep)
    # a folder's time changes whenever something is written into it: set it last
    for path, mtime in reversed(folders):
        os.utime(path, (mtime, mtime), follow_symlinks=False)


@dataclass(frozen=True)
class Entry:
    """What a member of a layer does to `path`: "write" it, remove it ("whiteout": `path` is
    the whiteout's target) or hide what lower layers put beside it ("opaque": `path` is the
    marker)."""
    path: str
    kind: str


def _entry(member: tarfile.TarInfo, what: str) -> Entry | None:
    """The member as an Entry; None for the folder's own entry (`./` in a tar of a tree)."""
    if member.isdir() and set(member.name.split("/")) <= {"", "."}:
        return None
    path = _path(member.name, what, member.name)
    folder, _, base = path.rpartition("/")
    if base == OPAQUE:
        return Entry(path, "opaque")
    if base.startswith(WHITEOUT):
        # by the same rule: `.wh.`, `.wh..` and `.wh...` would name nothing, the folder, its parent
        target = _path(base[len(WHITEOUT):], what, member.name)
        return Entry(f"{folder}/{target}" if folder else target, "whiteout")
    return Entry(path, "write")


def _path(raw: str, what: str, entry: str) -> str:
    """The one rule for a name a layer gives: a relative path of proper names, strictly inside
    the folder. The leading `/` or `./` of a tar of a tree (and a `//` or a trailing `/`)
    mean nothing; a `.` or `..` elsewhere, or no name at all, is refused."""
    parts = [p for p in raw.split("/") if p]
    while parts and parts[0] == ".":
        parts.pop(0)
    if not parts or any(p in (".", "..") for p in parts):
        raise CosbuildError(f"{what}: refusing entry {entry!r}: {raw!r} is not a path inside "
                            "the image (it has a '.' or '..' component, or no name)",
                            hint="the image is corrupt or hostile")
    return "/".join(parts)


def _resolved(root: Path, name: str, what: str) -> str:
    """`name` with its folder resolved inside the root (its last component is the entry)."""
    try:
        return str(rootpath.resolve(root, name).relative_to(root))
    except CosbuildError as exc:
        raise CosbuildError(f"{what}: {name!r}: {exc.message}",
                            hint="the image is corrupt or hostile") from None


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, root: Path, what: str) -> None:
    target = root / name
    if os.path.lexists(target) and not (member.isdir() and target.is_dir() and not target.is_symlink()):
        _remove(target)   # replaced: never written through (a symlink) or into (a file)
    if member.islnk():
        source = root / _resolved(root, _path(member.linkname, what, member.name), what)
        if not os.path.lexists(source) or source.is_dir() and not source.is_symlink():
            raise CosbuildError(f"{what}: hard link {name!r} to {member.linkname!r}, which is "
                                "not a file of the image", hint="the image is corrupt or hostile")
        # not tarfile's: it links what a symbolic link points to, which may be on the host
        os.link(source, target, follow_symlinks=False)
        return
    member.name = name
    tar.extract(member, root, set_attrs=True, numeric_owner=True, **EXTRACT_CHECKED)
    # after the owner is set: chown drops file capabilities
    for key, value in member.pax_headers.items():
        if key.startswith(XATTR):
            os.setxattr(target, key[len(XATTR):], value.encode("utf-8", "surrogateescape"),
                        follow_symlinks=False)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _clear_lower(root: Path, folder: str, kept: set[str], keep: str) -> None:
    """Remove from `folder` whatever the current layer did not write."""
    base = root / folder
    if not base.is_dir() or base.is_symlink():
        return
    for entry in os.scandir(base):
        rel = f"{folder}/{entry.name}" if folder else entry.name
        if rel == keep:
            continue
        if rel not in kept:
            _remove(Path(entry.path))
        elif entry.is_dir(follow_symlinks=False):
            _clear_lower(root, rel, kept, keep)
