"""TUF-signed repositories, client side (issue #15, /work/plan/tuf-contract.md).

A repository with a trusted root is read through SignedTransport: before its first file,
python-tuf's ngclient refreshes the repository's metadata (tuf-*.json, see signing.py)
from the trusted root, walking root rotations, refusing bad signatures, rolled-back
versions and expired metadata; every file is then fetched only as a target of that
metadata, with its signed length and sha256 passed to the inner transport, which refuses
anything else before the file appears.

The last trusted metadata is kept in a state folder (ngclient's metadata_dir), the target
root's for install and upgrade: a repository rolled back to what the root has seen
newer of is refused across runs too.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, TargetFile
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from ..errors import CosbuildError, Mismatch, NotFound
from ..fsutil import atomic_write
from .signing import PREFIX, ROOT_FILE
from .transport import RegistryTransport, Transport

# ngclient's URLs for the inner transport's files: <BASE><role>.json, <BASE><N>.root.json
BASE = "tuf:///"

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

    def _target(self, name: str) -> TargetFile:
        updater = self._refresh()
        try:
            target = updater.get_targetinfo(name)
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise self._tuf_error(exc) from None
        if target is None:
            raise self._refused(name, "not signed", "it is not a target of the repository's "
                                                    "signed metadata")
        return target

    def _refresh(self) -> Updater:
        """ngclient's view of the repository, refreshed once (the first fetch)."""
        if self._updater is not None:
            return self._updater
        self._init_state()
        config = UpdaterConfig(root_max_length=self.bounds.metadata,
                               timestamp_max_length=self.bounds.metadata,
                               snapshot_max_length=self.bounds.metadata,
                               targets_max_length=self.bounds.metadata)
        try:
            # targets are fetched by the inner transport (fetch), never by ngclient
            updater = Updater(str(self.state), BASE, fetcher=self._fetcher, config=config)
            updater.refresh()
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError, ValueError) as exc:
            # (python-tuf's DeserializationError is a ValueError)
            raise self._tuf_error(exc) from None
        self._updater = updater
        return updater

    def _init_state(self) -> None:
        """The state starts as the trusted root; a newer trusted root (given after a
        rotation the state has not seen) replaces the state's."""
        trusted = _root_version(self.trusted_root, "name the root.json of a key set "
                                                   "(`cosbuild keys generate` writes one)")
        mine = self.state / ROOT_FILE
        if mine.is_file() and _root_version(mine, f"remove {self.state} to start again from "
                                                  "the trusted root") >= trusted:
            return
        self.state.mkdir(parents=True, exist_ok=True)
        atomic_write(mine, self.trusted_root.read_bytes())

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


def _root_version(path: Path, hint: str) -> int:
    try:
        return Metadata[Root].from_bytes(path.read_bytes()).signed.version
    except OSError as exc:
        raise CosbuildError(f"cannot read it: {exc.strerror}", file=path, key="trusted_root",
                            hint=hint) from None
    except Exception as exc:   # DeserializationError, or another role's metadata
        raise CosbuildError(f"not a TUF root ({exc})", file=path, key="trusted_root",
                            hint=hint) from None


class _Fetcher(FetcherInterface):
    """ngclient's downloads, as the inner transport's tuf-* files (bounded like any other
    metadata file); `last` is the file asked for last, the one a refusal is about."""

    def __init__(self, inner: Transport):
        self.inner = inner
        self.last = f"{PREFIX}timestamp.json"

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
        yield data
