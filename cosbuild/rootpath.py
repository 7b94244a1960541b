"""The one rule for every write into a root folder (a system being set up, a staging root, a
mounted image): a path is resolved as inside a chroot of the root, so absolute symbolic
links start at the root and `..` stops there, and nothing is ever reached outside it.

Paths are walked one component at a time from an open directory of the root (`openat` with
O_NOFOLLOW): a link is read and resolved by this module, never by the kernel, so a link
changed meanwhile cannot lead out either. Files are written under a temporary name created
with O_CREAT|O_EXCL|O_NOFOLLOW in their folder, then renamed; directories are made with
`mkdirat`, which never follows a link. A path given by the caller (not a link's target) that
climbs above the root with `..` is refused: it is a mistake or an attack.

Standard library only: the runtime (cos-setup) uses it at boot.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path, PurePosixPath
from typing import Iterator

from .errors import CosbuildError

MAX_LINKS = 40   # as the kernel's path walk (ELOOP)
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts(path: str) -> list[str]:
    # split, not PurePosixPath(...).parts: that keeps a leading "//" as a part, which
    # os.open(dir_fd=...) opens as the host's /
    return [p for p in path.split("/") if p not in ("", ".")]


def check_inside(path: str | os.PathLike, root: str | os.PathLike = "/") -> str:
    """`path` itself, refused when its `..` components climb above the root."""
    depth = 0
    for part in _parts(os.fspath(path)):
        depth += -1 if part == ".." else 1
        if depth < 0:
            raise CosbuildError(f"path {os.fspath(path)!r} leads out of the root {os.fspath(root)}",
                                hint="'..' may not climb above /; nothing was written")
    return os.fspath(path)


@contextlib.contextmanager
def _walk(root: str | os.PathLike, path: str, *, follow_last: bool, create: bool = False
          ) -> Iterator[tuple[list[tuple[str, int]], list[str]]]:
    """The directories of `path` opened one by one from `root` as if it were `/`.

    Yields (opened, rest): `opened` is [(name, fd)] from the root (name "") down, `rest` the
    components not walked: what does not exist (unless `create`), a last component that is
    not a directory, or the last one when not `follow_last`. The fds are closed after."""
    check_inside(path, root)
    opened = [("", os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))]
    todo = _parts(path)
    hops = 0
    try:
        while todo:
            part = todo[0]
            if part == "..":
                todo.pop(0)
                if len(opened) > 1:
                    os.close(opened.pop()[1])
                continue
            if len(todo) == 1 and not follow_last:
                break
            parent = opened[-1][1]
            try:
                fd = os.open(part, _DIR, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    break
                with contextlib.suppress(FileExistsError):   # a dangling link: read next round
                    os.mkdir(part, 0o755, dir_fd=parent)
                hops += 1   # bounds a race that keeps removing what was made
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                try:
                    target = os.readlink(part, dir_fd=parent)
                except OSError:   # not a link: a file where a directory was expected
                    if len(todo) == 1 or not create:
                        break
                    where = "/".join([n for n, _ in opened[1:]] + [part])
                    raise CosbuildError(f"/{where} in {os.fspath(root)} is not a directory "
                                        f"(resolving {path})") from None
                hops += 1
                todo = _parts(target) + todo[1:]
                if target.startswith("/"):
                    while len(opened) > 1:
                        os.close(opened.pop()[1])
            else:
                opened.append((part, fd))
                todo.pop(0)
            if hops > MAX_LINKS:
                raise CosbuildError(f"too many symbolic links resolving {path} in {os.fspath(root)}")
        yield opened, todo
    finally:
        for _, fd in opened:
            os.close(fd)


def resolve(root: Path, path: str, *, follow_last: bool = False) -> Path:
    """root/path with its links resolved inside the root (the last one too with
    `follow_last`, for a directory to write into or a file to read)."""
    with _walk(root, path, follow_last=follow_last) as (opened, rest):
        return Path(root).joinpath(*(n for n, _ in opened[1:]), *rest)


def make_dirs(root: Path, path: str, *, mode: int | None = None,
              owner: tuple[int, int] | None = None) -> Path:
    """Make `path` and its parents in the root (new ones 0755), the last one given `mode`
    and (uid, gid) `owner` when they are given; returns where it is."""
    with _walk(root, path, follow_last=True, create=True) as (opened, rest):
        if rest:
            raise CosbuildError(f"{path} in {os.fspath(root)} exists and is not a directory")
        fd = opened[-1][1]
        if owner is not None:
            os.fchown(fd, *owner)
        if mode is not None:
            os.fchmod(fd, mode)
        return Path(root).joinpath(*(n for n, _ in opened[1:]))


@contextlib.contextmanager
def _in_parent(root: Path, path: str) -> Iterator[tuple[int, str, Path]]:
    """(fd of the folder, name, real path) of the entry `path` names, the folder made."""
    with _walk(root, path, follow_last=False, create=True) as (opened, rest):
        if len(rest) != 1:
            raise CosbuildError(f"{path} names the root {os.fspath(root)} or a folder above it")
        yield opened[-1][1], rest[0], Path(root).joinpath(*(n for n, _ in opened[1:]), rest[0])


def _temporary() -> str:
    return f".cosbuild-{os.getpid()}-{secrets.token_hex(4)}.tmp"


def write_file(root: Path, path: str, data: bytes, *, mode: int = 0o644,
               owner: tuple[int, int] | None = None) -> Path:
    """Write `data` to `path` in the root, all or nothing: a temporary file created in its
    folder (never through a link), then renamed over it (a link there is replaced, not
    followed); returns where it is."""
    with _in_parent(root, path) as (parent, name, real):
        tmp = _temporary()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if owner is not None:
                    os.fchown(f.fileno(), *owner)
                os.fchmod(f.fileno(), mode)   # after chown, which clears set-id bits
            os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=parent)
            raise
        return real


def symlink(root: Path, path: str, target: str) -> Path:
    """A symbolic link at `path` in the root (its target is not looked at: it is data)."""
    with _in_parent(root, path) as (parent, name, real):
        tmp = _temporary()
        os.symlink(target, tmp, dir_fd=parent)
        try:
            os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            os.unlink(tmp, dir_fd=parent)
            raise
        return real


def read_bytes(root: Path, path: str, *, limit: int | None = None) -> bytes:
    """The content of the regular file `path` of the root, its links resolved inside it;
    more than `limit` bytes (when given) is an error."""
    with _walk(root, path, follow_last=True) as (opened, rest):
        if len(rest) != 1:
            raise FileNotFoundError(errno.ENOENT, "no such file", f"{root}/{path.lstrip('/')}")
        # O_NONBLOCK: a FIFO planted there must not block the reader
        fd = os.open(rest[0], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=opened[-1][1])
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise CosbuildError(f"{path} in {os.fspath(root)} is not a regular file")
            data = f.read(-1 if limit is None else limit + 1)
            if limit is not None and len(data) > limit:
                raise CosbuildError(f"{path} in {os.fspath(root)} is larger than {limit} bytes")
            return data


def copy_tree(source: Path, root: Path, dest: str = "/") -> None:
    """Copy the folder `source` (trusted: the project's own) into `dest` of the root,
    links copied as links, modes kept."""
    for here, dirs, files in os.walk(source):
        rel = os.path.relpath(here, source)
        base = str(PurePosixPath(dest) / rel)
        make_dirs(root, base, mode=stat.S_IMODE(os.stat(here).st_mode))
        for name in [*dirs, *files]:
            src = os.path.join(here, name)
            if os.path.islink(src):
                symlink(root, f"{base}/{name}", os.readlink(src))
            elif name in files:
                with open(src, "rb") as f:
                    write_file(root, f"{base}/{name}", f.read(),
                               mode=stat.S_IMODE(os.fstat(f.fileno()).st_mode))
