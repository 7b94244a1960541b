"""TUF-signed repositories, client side (issue #15, /work/plan/tuf-contract.md).

A repository with a trusted root is read through SignedTransport: before its first file,
python-tuf's ngclient refreshes the repository's metadata (tuf-*.json, see signing.py)
from the trusted root, walking root rotations, refusing bad signatures, rolled-back
versions and expired metadata; every file is then fetched only as a target of that
metadata, with its signed length and sha256 passed to the inner transport, which refuses
anything else before the file appears.

The last trusted metadata is kept in a state folder (ngclient's metadata_dir), the target
root's for install and upgrade: a repository rolled back to what the root has seen
newer of is refused across runs too. That folder is in a root whose packages, finalizers
and cloud-config may write anywhere, so the trusted root the user gives always anchors
verification: the state's root is believed only when it is the trusted root or follows
from it by the rotations recorded next to it (N.root.json, each signed by the root before
it and by itself); any other state is discarded, with a warning.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, TargetFile
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from ..errors import CosbuildError, Mismatch, NotFound
from ..fsutil import atomic_write
from .signing import PREFIX, ROOT_FILE, SERIALIZER
from .transport import RegistryTransport, Transport

# ngclient's URLs for the inner transport's files: <BASE><role>.json, <BASE><N>.root.json
BASE = "tuf:///"
ROTATION = re.compile(r"(\d+)\.root\.json")   # a root version ngclient asks for (a rotation)

log = logging.getLogger(__name__)

HINTS = {
    "signature": "the repository is not signed by the keys this machine trusts: it was "
                 "tampered with, or signed with other keys; nothing was installed",
    "version": "the repository was tampered with or rolled back to older metadata than "
               "it served before; nothing was installed",
    "expired": "the repository's metadata is out of date: re-sign it (cosbuild create-repo "
               "--signing-keys DIR --resign), or check this machine's clock; nothing was "
               "installed",
    "length": "the file was tampered with or damaged; nothing was installed",
    "hash": "the file was tampered with or damaged; nothing was installed",
    "not signed": "sign the repository (cosbuild create-repo --signing-keys DIR), or do not "
                  "configure a trusted root for it; nothing was installed",
    "invalid metadata": "the repository's TUF metadata is damaged; re-sign the repository "
                        "(cosbuild create-repo --signing-keys DIR); nothing was installed",
}


class SignedTransport(Transport):
    """`inner`'s files, each verified as a target of the repository's TUF metadata."""

    def __init__(self, inner: Transport, repo_name: str, trusted_root: Path, state: Path):
        self.inner = inner
        self.url = inner.url
        self.bounds = inner.bounds
        self.repo_name = repo_name
        self.trusted_root = Path(trusted_root)
        self.state = Path(state)
        self._updater: Updater | None = None
        self._fetcher = _Fetcher(inner)

    def fetch(self, name: str, dest: Path, *, sha256: str | None = None,
              size: int | None = None, metadata: bool = False,
              progress: str | None = None) -> Path:
        target = self._target(name)
        signed_sha = target.hashes.get("sha256")
        if signed_sha is None:
            raise self._refused(name, "not signed", "its target has no sha256")
        # what the (signed) index records must be what the targets record
        if sha256 is not None and sha256.lower() != signed_sha:
            raise self._refused(name, "hash", f"the index records sha256 {sha256}, its "
                                              f"signed target {signed_sha}")
        if size is not None and size != target.length:
            raise self._refused(name, "length", f"the index records {size} bytes, its signed "
                                                f"target {target.length}")
        image = {}
        if isinstance(self.inner, RegistryTransport):   # the image is what is signed there
            image["digest"] = (target.custom or {}).get("digest")
            if not isinstance(image["digest"], str):
                raise self._refused(name, "not signed", "its target has no image digest")
        try:
            return self.inner.fetch(name, dest, sha256=signed_sha, size=target.length,
                                    metadata=metadata, progress=progress, **image)
        except Mismatch as exc:
            raise self._refused(name, exc.reason, exc.message) from None

    def targetinfo(self, name: str) -> TargetFile | None:
        """What the repository's verified metadata says of `name`; None: it is not signed."""
        updater = self._refresh()
        try:
            return updater.get_targetinfo(name)
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise self._tuf_error(exc) from None

    def _target(self, name: str) -> TargetFile:
        target = self.targetinfo(name)
        if target is None:
            raise self._refused(name, "not signed", "it is not a target of the repository's "
                                                    "signed metadata")
        return target

    def _refresh(self) -> Updater:
        """ngclient's view of the repository, refreshed once (the first fetch)."""
        if self._updater is not None:
            return self._updater
        config = UpdaterConfig(root_max_length=self.bounds.metadata,
                               timestamp_max_length=self.bounds.metadata,
                               snapshot_max_length=self.bounds.metadata,
                               targets_max_length=self.bounds.metadata)
        tip = self._init_state()
        try:
            # targets are fetched by the inner transport (fetch), never by ngclient
            updater = Updater(str(self.state), BASE, fetcher=self._fetcher, config=config)
            updater.refresh()
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError, ValueError) as exc:
            # (python-tuf's DeserializationError is a ValueError)
            raise self._tuf_error(exc) from None
        finally:   # the rotations ngclient walked, also when a later step refused
            self._record_rotations(tip)
        self._updater = updater
        return updater

    def _init_state(self) -> Metadata[Root]:
        """The state, anchored at the trusted root; returns the root it starts from.

        Its root.json stays when it is the root the recorded rotations lead to from the
        trusted root; an older one is replaced by the (newer) trusted root given; anything
        else was not written by this client: the state is discarded, with a warning."""
        trusted = _load_root(self.trusted_root)
        tip = self._rotated(trusted)
        mine = self.state / ROOT_FILE
        if self.state.is_symlink() or (self.state.exists() and not self.state.is_dir()):
            self._discard("it is not a folder")
        elif os.path.lexists(mine):
            stored = _stored_root(mine, self.bounds.metadata)
            if stored is not None and stored.signed == tip.signed:
                return tip
            if stored is None or stored.signed.version >= trusted.signed.version:
                self._discard(f"its {ROOT_FILE} does not chain to the trusted root "
                              f"{self.trusted_root}")
        self.state.mkdir(parents=True, exist_ok=True)
        atomic_write(mine, tip.to_bytes(SERIALIZER))
        return tip

    def _discard(self, why: str) -> None:
        log.warning("%s: trust state of repository %s discarded: %s; verifying from the "
                    "trusted root again", self.state, self.repo_name, why)
        if self.state.is_dir() and not self.state.is_symlink():
            shutil.rmtree(self.state)
        else:
            self.state.unlink()

    def _rotated(self, trusted: Metadata[Root]) -> Metadata[Root]:
        """The newest root the state's recorded rotations lead to from `trusted`."""
        tip = trusted
        while True:
            path = self.state / f"{tip.signed.version + 1}.{ROOT_FILE}"
            if self.state.is_symlink() or not path.is_file() or path.is_symlink():
                return tip
            nxt = _next_root(tip, _stored_bytes(path, self.bounds.metadata))
            if nxt is None:
                return tip
            tip = nxt

    def _record_rotations(self, tip: Metadata[Root]) -> None:
        """Each root ngclient walked to from `tip`, as N.root.json in the state: what lets
        the next run check its root.json against the trusted root."""
        for version, data in sorted(self._fetcher.roots.items()):
            nxt = _next_root(tip, data) if version == tip.signed.version + 1 else None
            if nxt is None:
                return
            atomic_write(self.state / f"{version}.{ROOT_FILE}", data)
            tip = nxt

    def _tuf_error(self, exc: Exception) -> CosbuildError:
        name = self._fetcher.last
        if isinstance(exc, tuf_errors.DownloadHTTPError):
            unsigned = name == f"{PREFIX}timestamp.json"   # where ngclient starts
            return self._refused(name, "not signed", "the repository has no such file" +
                                 (": it carries no TUF metadata" if unsigned else ""))
        if isinstance(exc, tuf_errors.DownloadError) and isinstance(exc.__cause__,
                                                                    CosbuildError):
            return exc.__cause__   # the server's trouble, as the inner transport words it
        return self._refused(name, _reason(exc), str(exc) or type(exc).__name__)

    def _refused(self, name: str, reason: str, detail: str) -> CosbuildError:
        who = self.repo_name if self.repo_name == self.url else f"{self.repo_name} ({self.url})"
        return CosbuildError(f"repository {who}: {name}: refused ({reason}): {detail}",
                             hint=HINTS[reason])


def _reason(exc: Exception) -> str:
    """The contract's word for a python-tuf refusal."""
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return "signature"
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return "version"
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return "expired"
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return "hash" if "hash" in str(exc).lower() else "length"
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return "length"
    return "invalid metadata"


def _load_root(path: Path) -> Metadata[Root]:
    """The trusted root the user gave."""
    hint = "name the root.json of a key set (`cosbuild keys generate` writes one)"
    try:
        return Metadata[Root].from_bytes(path.read_bytes())
    except OSError as exc:
        raise CosbuildError(f"cannot read it: {exc.strerror}", file=path, key="trusted_root",
                            hint=hint) from None
    except Exception as exc:   # DeserializationError, or another role's metadata
        raise CosbuildError(f"not a TUF root ({exc})", file=path, key="trusted_root",
                            hint=hint) from None


def _stored_bytes(path: Path, limit: int) -> bytes | None:
    """A file of the state, unless it is larger than metadata may be or unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    return data if len(data) <= limit else None


def _stored_root(path: Path, limit: int) -> Metadata[Root] | None:
    """The state's root.json; None when it is not one (a damaged or foreign file)."""
    data = _stored_bytes(path, limit)
    try:
        return Metadata[Root].from_bytes(data) if data is not None else None
    except Exception:   # DeserializationError, or another role's metadata
        return None


def _next_root(prev: Metadata[Root], data: bytes | None) -> Metadata[Root] | None:
    """The root `data` when it is the rotation after `prev` (the next version, signed by
    `prev`'s root keys and by its own, as ngclient checks a rotation); else None."""
    try:
        new = Metadata[Root].from_bytes(data)
        if new.signed.version != prev.signed.version + 1:
            return None
        prev.verify_delegate(Root.type, new)
        new.verify_delegate(Root.type, new)
        return new
    except Exception:   # DeserializationError, UnsignedMetadataError, data None, ...
        return None


class _Fetcher(FetcherInterface):
    """ngclient's downloads, as the inner transport's tuf-* files (bounded like any other
    metadata file); `last` is the file asked for last, the one a refusal is about."""

    def __init__(self, inner: Transport):
        self.inner = inner
        self.last = f"{PREFIX}timestamp.json"
        self.roots: dict[int, bytes] = {}   # the root versions downloaded (rotations)

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = PREFIX + url.removeprefix(BASE)
        self.last = name
        with tempfile.TemporaryDirectory(prefix="cosbuild-tuf-") as tmp:
            try:
                path = self.inner.fetch(name, Path(tmp) / "file", metadata=True)
            except NotFound as exc:
                raise tuf_errors.DownloadHTTPError(exc.message, 404) from exc
            except CosbuildError as exc:
                raise tuf_errors.DownloadError(exc.message) from exc
            data = path.read_bytes()
        if rotation := ROTATION.fullmatch(url.removeprefix(BASE)):
            self.roots[int(rotation[1])] = data
        yield data
