"""The client's transaction (`luet install` and friends, SPEC section 3).

With the repositories read (index.py) and what to install solved (resolve.py), installs
artifacts into a root filesystem as one transaction:

1. stage: download and verify every artifact, then unpack each into a staging folder inside
   the root, refusing hostile archives (absolute paths, `..`, writing through a symlink of
   the archive, hard links to files outside it) and file conflicts;
2. commit: with Ctrl-C and SIGTERM held back, write a journal, move the staged files into
   place, write the installed-package database, remove the staging folder;
3. run the finalizers (`finalize.yaml`) confined to the root (sandbox.py: bubblewrap, no
   network, only file capabilities, a clean environment, a time limit), in dependency order; a
   package is recorded as finalized only when they succeeded, and the next install or
   upgrade runs those that did not.

Every path into the root is resolved as in a chroot of it (rootpath.py).

A run killed during the commit is completed by the next run on that root (the journal says
what to do); one killed before it leaves the root as it was. Either way the root ends up as
before or fully installed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import threading
from pathlib import Path, PurePosixPath
from typing import Iterator

from .. import rootpath, sandbox
from ..errors import CosbuildError
from ..fsutil import atomic_write
from ..tools import TaskLog, run
from ..tree import spec, versions
from ..tree.yamlio import dumps, load_mapping
from .config import TRUST_STATE, RepoConfig
from .extract import extract_safely
from .index import Candidate, load_repository
from .resolve import DB_PATH, Installed, choose, plan

FINALIZE_LOG = "var/log/cosbuild-finalize.log"
TRANSACTION = ".cosbuild-transaction"
# what a commit writes first (TRANSACTION/journal.yaml), and the next run completes from
JOURNAL = (spec.Keyword("db", spec.STR, None, "the package database once committed",
                        required=True),
           spec.Keyword("remove", spec.STRS, (), "the files of replaced versions to remove"))
# the client's own state in a root: no package may hold a file there, nor a file or link
# where one of its folders is (the trust state anchors what the next upgrade believes)
CLIENT_STATE = {TRANSACTION: "cosbuild's transaction folder",
                DB_PATH: "cosbuild's installed-package database",
                TRUST_STATE: "cosbuild's trust state of signed repositories"}


def install(root: Path, requests: list[versions.PackageRef], repos: list[RepoConfig],
            *, progress: bool = False, replace: bool = False,
            finalizer_timeout: float = sandbox.TIMEOUT) -> list[Candidate]:
    """Install `requests` and their runtime requirements into `root`, then run the
    finalizers not yet run to success (these and earlier ones); returns what was installed."""
    root.mkdir(parents=True, exist_ok=True)
    recover(root)
    installed = Installed.load(root)
    with _transaction_dir(root) as work:
        candidates = [c for r in repos for c in load_repository(r, work / "index")]
        todo = plan(requests, candidates, installed)
        if todo:
            _apply(root, work, installed, todo, progress=progress, replace_files=replace)
    _finalize(root, finalizer_timeout)
    return todo


def stage_root(target: Path, refs: list[versions.PackageRef],
               repos: list[RepoConfig]) -> dict[str, str]:
    """Install `refs` into a new, empty root at `target` (the staging root of an image);
    returns what it is made of, {package: artifact sha256}."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    done = install(target, list(refs), repos) if refs else []
    return {str(c): c.sha256 for c in done}


def upgrade(root: Path, repos: list[RepoConfig], *, progress: bool = False,
            finalizer_timeout: float = sandbox.TIMEOUT) -> list[Candidate]:
    """Install newer versions of the installed packages; files that disappeared are removed."""
    recover(root)
    installed = Installed.load(root)
    with _transaction_dir(root) as work:
        candidates = [c for r in repos for c in load_repository(r, work / "index")]
        requests = []
        for pkg_id, record in sorted(installed.packages.items()):
            ref = versions.PackageRef(*pkg_id.split("/", 1), version=f">{record['version']}")
            with contextlib.suppress(CosbuildError):   # no newer version: nothing to do
                choose(ref, candidates)
                requests.append(ref)
        # the new versions may require new packages or conflict with installed ones
        newer = plan(requests, candidates, installed)
        if newer:
            _apply(root, work, installed, newer, progress=progress, replace_files=True)
    _finalize(root, finalizer_timeout)
    return newer


def uninstall(root: Path, ids: list[str]) -> None:
    recover(root)
    installed = Installed.load(root)
    for pkg_id in ids:
        if pkg_id not in installed.packages:
            raise CosbuildError(f"{pkg_id} is not installed in {root}")
    for other, record in installed.packages.items():
        for req in record.get("requires") or []:
            if req in ids and other not in ids:
                raise CosbuildError(f"{other} requires {req}", hint=f"uninstall {other} too")
    keep = {p: r for p, r in installed.packages.items() if p not in ids}
    remove = sorted({f for p in ids for f in installed.packages[p]["files"]}, reverse=True)
    with _transaction_dir(root) as work:
        _commit(root, work, Installed(keep), remove)


def recover(root: Path) -> None:
    """Finish a commit that was interrupted, or drop a transaction that never committed."""
    work = root / TRANSACTION
    if work.is_symlink():   # cosbuild makes a folder: a link there is planted
        raise CosbuildError(f"{work} is a symbolic link, not cosbuild's transaction folder",
                            hint="remove it; nothing was changed")
    if (work / "journal.yaml").is_file():
        journal = _journal(work / "journal.yaml")
        _remove(root, journal["remove"])   # first: a vanished file may be in the way
        _move_staged(root, work / "rootfs")
        rootpath.write_file(root, DB_PATH, journal["db"].encode())
    if work.exists():
        shutil.rmtree(work)


def _journal(path: Path) -> dict:
    """The journal of an interrupted commit, checked before it changes anything."""
    try:
        journal = spec.parse(JOURNAL, load_mapping(path), path, what="journal")
        Installed.loads(journal["db"], f"{path}: db")
    except CosbuildError as exc:
        raise CosbuildError(exc.message, file=exc.file or path, line=exc.line, key=exc.key,
                            hint=f"the journal of an interrupted install is damaged: remove "
                                 f"{path.parent} to drop it, then reinstall what it was "
                                 "installing (the root may be half-installed)") from None
    return journal


@contextlib.contextmanager
def _transaction_dir(root: Path) -> Iterator[Path]:
    work = root / TRANSACTION
    try:
        work.mkdir()
    except FileExistsError:
        raise CosbuildError(f"another cosbuild is installing into {root}",
                            hint=f"wait for it, or remove {work} if it was killed") from None
    try:
        yield work
    finally:
        if work.exists() and not (work / "journal.yaml").exists():
            shutil.rmtree(work)


def _apply(root: Path, work: Path, installed: Installed, todo: list[Candidate], *,
           progress: bool, replace_files: bool) -> None:
    staging = work / "rootfs"
    staging.mkdir()
    replaced = {c.id for c in todo}
    owners = installed.owners()
    symlinks: set[str] = set()   # staged so far, by any package: never written through
    new_owner: dict[str, str] = {}
    db = Installed(dict(installed.packages))
    remove: set[str] = set()
    for c in todo:   # from the index, before anything is downloaded
        for path in c.files:
            if state := _client_state(path):
                raise CosbuildError(f"refusing to install {c}: it has {path}, in the place "
                                    f"of {CLIENT_STATE[state]} (/{state})",
                                    hint="the package is hostile or broken; nothing was installed")
            other = new_owner.get(path) or owners.get(path)
            if other and other != c.id and not (replace_files and other in replaced):
                raise CosbuildError(f"file conflict: {path} of {c} belongs to {other}",
                                    hint="the packages cannot be installed together")
            new_owner[path] = c.id
    for n, c in enumerate(todo, 1):
        archive = c.transport.fetch(
            c.artifact, work / c.artifact, sha256=c.sha256, size=c.size,
            progress=f"[{n}/{len(todo)}] {c}" if progress else None)
        files = extract_safely(archive, staging, str(c), symlinks, compression=c.compression,
                               unpacked_size=c.unpacked_size, devices=c.devices,
                               bounds=c.repo.bounds)
        if set(files) != set(c.files):
            raise CosbuildError(f"refusing to install {c}: its archive does not hold the files "
                                "its index entry lists", hint="the repository is inconsistent")
        old = installed.packages.get(c.id)
        if old:
            remove |= set(old["files"]) - set(files)
        db.packages[c.id] = {"version": c.version, "repository": c.repo.name, "files": files,
                             "requires": [r.id for r in c.definition.requires],
                             # run again by every install until they succeed
                             "finalize": c.finalize.commands(),
                             "finalized": not c.finalize.install}
    remove -= set(new_owner)
    _check_against_root(root, staging, remove)
    _commit(root, work, db, sorted(remove, reverse=True))


def _client_state(path: str) -> str | None:
    """The client's state (CLIENT_STATE) a package file at `path` would be in or replace."""
    parts = PurePosixPath("/", path).parts[1:]
    for state in CLIENT_STATE:
        own = PurePosixPath(state).parts
        if parts[:len(own)] == own or own[:len(parts)] == parts:
            return state
    return None


def _check_against_root(root: Path, staging: Path, vanishing: set[str]) -> None:
    """A staged entry may not replace a directory of the root by a file, or a file by a
    directory, unless what is in the way belongs to a replaced version and goes away."""
    for here, dirs, files in os.walk(staging):
        base = os.path.relpath(here, staging)
        for name in (*dirs, *files):
            rel = os.path.normpath(os.path.join(base, name))
            is_dir = os.path.isdir(os.path.join(here, name)) and not os.path.islink(os.path.join(here, name))
            target = rootpath.resolve(root, rel, follow_last=is_dir)
            if is_dir:
                in_the_way = os.path.lexists(target) or rootpath.resolve(root, rel).is_symlink()
                if in_the_way and not target.is_dir() and f"/{rel}" not in vanishing:
                    raise CosbuildError(f"file conflict: /{rel} is a directory in the package "
                                        "but not in the root", hint="nothing was installed")
            elif target.is_dir() and not target.is_symlink():
                staying = [os.path.join(h, f) for h, _, fs in os.walk(target) for f in fs
                           if "/" + os.path.relpath(os.path.join(h, f), root) not in vanishing]
                if staying or rel in ("", "."):
                    raise CosbuildError(f"file conflict: /{rel} would replace a directory of "
                                        "the root that holds other files",
                                        hint="nothing was installed")


def _commit(root: Path, work: Path, db: Installed, remove: list[str]) -> None:
    with _signals_held():
        atomic_write(work / "journal.yaml", dumps({"db": db.dump(), "remove": remove}))
        recover(root)


@contextlib.contextmanager
def _signals_held():
    """Ctrl-C and SIGTERM wait until the commit is done (it only moves files: it is quick)."""
    if threading.current_thread() is not threading.main_thread():
        yield   # signals are delivered to the main thread only: this one is not interrupted
        return
    received = []
    handler = lambda signum, frame: received.append(signum)  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if received:
            raise KeyboardInterrupt


def _move_staged(root: Path, staging: Path) -> None:
    """Move staged entries into the root; whole new directories move in one rename."""
    if not staging.is_dir():
        return
    for here, dirs, files in os.walk(staging, topdown=True):
        rel = os.path.relpath(here, staging)
        # fully resolved inside the root: a link such as /bin -> /usr/bin of the root is
        # followed as the system would, but never to the host
        target_dir = root if rel == "." else rootpath.resolve(root, rel, follow_last=True)
        for name in list(dirs):
            src, dst = os.path.join(here, name), target_dir / name
            if os.path.islink(src) or not rootpath.resolve(root, os.path.join(rel, name),
                                                            follow_last=True).is_dir():
                _replace(src, dst)
                dirs.remove(name)
        for name in files:
            _replace(os.path.join(here, name), target_dir / name)


def _replace(src: str, dst: Path) -> None:
    if dst.is_dir() and not dst.is_symlink():
        os.rmdir(dst)        # emptied by the removals (checked before the commit)
    elif os.path.isdir(src) and not os.path.islink(src) and os.path.lexists(dst):
        os.unlink(dst)       # a file of the old version becomes a directory
    os.replace(src, dst)


def _remove(root: Path, paths: list[str]) -> None:
    for path in paths:
        target = rootpath.resolve(root, path)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if target.is_dir() and not target.is_symlink():
                continue
            target.unlink()


# --------------------------------------------------------------------------- finalizers

def _finalize(root: Path, timeout: float) -> None:
    """Run the finalizers of the packages not yet finalized, in dependency order, each
    confined to the root (sandbox.py) for at most `timeout` seconds; a package is recorded
    as finalized only when all its commands succeeded."""
    db = Installed.load(root)
    pending = db.unfinalized()
    if not pending:
        return
    sandbox.prepare(root)
    log_dir = rootpath.make_dirs(root, str(PurePosixPath(FINALIZE_LOG).parent))
    log_path = log_dir / PurePosixPath(FINALIZE_LOG).name
    with contextlib.suppress(FileNotFoundError):
        log_path.unlink()   # rewritten each time: never written through a link left there
    with TaskLog(log_path) as log:
        for pkg_id in pending:
            record = db.packages[pkg_id]
            what = f"{pkg_id}@{record['version']}"
            for n, argv in enumerate(record["finalize"], 1):
                if not _in_root_path(root, argv[0]):
                    raise CosbuildError(f"cannot run the finalizers of {what} in {root}: it has "
                                        f"no {argv[0]}", key="shell",
                                        hint="install a package that provides it first")
                try:
                    run(sandbox.command(root, argv), log=log, timeout=timeout)
                except CosbuildError as exc:
                    raise CosbuildError(
                        f"{what}: finalizer {n} failed: {shlex.join(argv)}\n  {exc}",
                        hint="the package is installed but not finalized: the next install "
                             "or upgrade runs its finalizers again") from None
            record["finalized"] = True
            rootpath.write_file(root, DB_PATH, db.dump().encode())


def _in_root_path(root: Path, program: str) -> bool:
    """Whether `program` (a path or a name looked up in the sandbox's PATH) is in the root."""
    where = [program] if "/" in program else \
        [f"{d}/{program}" for d in sandbox.ENV["PATH"].split(":")]
    return any(rootpath.resolve(root, p, follow_last=True).exists() for p in where)
