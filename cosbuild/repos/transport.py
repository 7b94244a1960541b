"""How the repository client gets repository files: from a local folder, over HTTP(S), or
from an OCI registry (a `docker` repository, see repos/create.py).

Every fetch is all-or-nothing: the destination name only appears once the whole file is
there and its checksum (when known) matched. HTTP downloads survive flaky servers: they are
retried with exponential backoff and resumed where they broke off (Range requests).

Every fetch is bounded (luetformat.Bounds): never more bytes than the index records (or
than a metadata file or an artifact may be), a timeout for each connect and read and a
deadline for the whole download, however slowly a server drips its answer; redirects only
lead to http(s) URLs (netio).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import re
import stat
import sys
import time
import urllib.error
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from .. import netio, terminal
from ..errors import CosbuildError, Mismatch, NotFound
from ..fsutil import atomic_path
from ..luetformat import DEFAULT_BOUNDS, Bounds, bound_text, check_space
from ..oci import registry

CHUNK = 1 << 16
PART_SUFFIX = ".part"
# answers worth asking again for: server-side trouble, not a wrong URL
RETRY_STATUS = {408, 429}


class Transport:
    """Where a repository's files come from."""

    url: str
    bounds: Bounds

    def fetch(self, name: str, dest: Path, *, sha256: str | None = None,
              size: int | None = None, metadata: bool = False,
              progress: str | None = None) -> Path:
        """Get the repository file `name` into `dest` (complete and verified, or not at all).

        `size`: what the index records, exactly; without it, at most the bound of a
        `metadata` file (repository.yaml, the tree, the index) or of an artifact."""
        raise NotImplementedError

    def _limit(self, size: int | None, metadata: bool) -> int:
        return size if size is not None else (
            self.bounds.metadata if metadata else self.bounds.artifact)

    def _too_large(self, name: str, got: int, size: int | None, metadata: bool) -> CosbuildError:
        if size is not None:
            return Mismatch(f"{name} from {self.url}: {_size_problem(got, size)}",
                            reason="length", hint="the repository index does not match its files")
        what = "a repository metadata file" if metadata else "an artifact"
        return CosbuildError(f"{name} from {self.url} is larger than the "
                             f"{bound_text(self._limit(None, metadata))} {what} may be",
                             hint="the repository is damaged or hostile; nothing was kept")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def transport_for(url: str, kind: str = "", insecure: bool = False,
                  bounds: Bounds = DEFAULT_BOUNDS) -> Transport:
    """The transport for a repository URL: http(s)://, file://PATH or a plain path; for a
    repository of type `docker` (or a docker:// URL), REGISTRY/REPOSITORY."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if kind == "docker" or scheme == "docker":
        return RegistryTransport(url, insecure, bounds)
    if scheme in ("http", "https"):
        return HttpTransport(url, retries=bounds.retries, bounds=bounds)
    if scheme == "file":
        return DiskTransport(url, bounds)
    if re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        raise CosbuildError(f"unsupported repository URL '{url}'",
                            hint="use http://, https://, file:// or a local folder")
    return DiskTransport(url, bounds)


class DiskTransport(Transport):
    """A repository in a local (or mounted) folder."""

    def __init__(self, url: str | Path, bounds: Bounds = DEFAULT_BOUNDS):
        self.url = str(url)
        self.bounds = bounds
        path = self.url[len("file://"):] if self.url.lower().startswith("file://") else self.url
        self.root = Path(path)

    def fetch(self, name: str, dest: Path, *, sha256: str | None = None,
              size: int | None = None, metadata: bool = False,
              progress: str | None = None) -> Path:
        _check_name(name, self.url)
        src = self.root / name
        try:
            # not opened before it is known to be a file: a FIFO would block, a device
            # (a link to /dev/zero) never end
            if not stat.S_ISREG(os.stat(src).st_mode):
                raise CosbuildError(f"repository file {src} is not a regular file",
                                    hint="the repository is damaged or hostile")
            source = src.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"repository file {src} does not exist",
                                hint="check the repository path; its index may be out of date") from None
        except OSError as exc:
            raise CosbuildError(f"cannot read repository file {src}: {exc.strerror}") from None
        dest = Path(dest)
        limit = self._limit(size, metadata)
        with source:
            length = os.fstat(source.fileno()).st_size
            if length > limit:
                raise self._too_large(name, length, size, metadata)
            check_space(_existing(dest.parent), length, f"{name} from {self.url}")
            with _progress_bar(progress, length) as bar, atomic_path(dest) as tmp:
                with tmp.open("wb") as out:
                    got = _copy(source, out, bar, limit)
                # raising here leaves `dest` untouched: atomic_path drops the temporary file
                if got > limit or (size is not None and got != size):
                    raise self._too_large(name, got, size, metadata) if got > limit else \
                        Mismatch(f"repository file {src}: {_size_problem(got, size)}",
                                 reason="length",
                                 hint="the repository index does not match its files")
                _check_sha256(name, self.url, tmp, sha256)
        return dest


class HttpTransport(Transport):
    """A repository on a web server; `retries` more attempts after the first one."""

    def __init__(self, url: str, retries: int = 4, backoff: float = 0.5,
                 bounds: Bounds = DEFAULT_BOUNDS):
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.bounds = bounds

    def fetch(self, name: str, dest: Path, *, sha256: str | None = None,
              size: int | None = None, metadata: bool = False,
              progress: str | None = None) -> Path:
        _check_name(name, self.url)
        file_url = f"{self.url}/{urllib.parse.quote(name)}"
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + PART_SUFFIX)
        # a leftover from an earlier run may belong to another version of the file
        part.unlink(missing_ok=True)
        attempts = self.retries + 1
        deadline = netio.Deadline(
            self.bounds.metadata_deadline if metadata else self.bounds.deadline,
            f"download of {name} from {file_url}",
            hint="the server is too slow or stalls; try again later or another mirror")
        limit = self._limit(size, metadata)
        if size is not None:
            check_space(dest.parent, size, f"{name} from {self.url}")
        try:
            # past the deadline, whatever the attempts made of their cut connections, the
            # download fails with its Expired
            with _progress_bar(progress, size) as bar, deadline:
                opener = netio.opener()
                for attempt in range(1, attempts + 1):
                    try:
                        self._attempt(opener, deadline, name, file_url, part, limit, size,
                                      metadata, bar)
                        break
                    except _Retry as exc:
                        if deadline.expired:
                            raise deadline.error() from None
                        if attempt == attempts:
                            raise CosbuildError(
                                f"download of {name} from {self.url} failed after {attempts} "
                                f"attempts: {exc}",
                                hint=f"check that the server is up and the repository URL is right "
                                     f"({file_url})") from None
                        time.sleep(max(0.0, min(self.backoff * 2 ** (attempt - 1),
                                                deadline.left())))
            _check_sha256(name, self.url, part, sha256)
            os.chmod(part, 0o644)
            os.replace(part, dest)
        except BaseException:
            # failed for good (or interrupted): no half file is left to confuse anyone
            part.unlink(missing_ok=True)
            raise
        return dest

    def _attempt(self, opener, deadline: netio.Deadline, name: str, file_url: str, part: Path,
                 limit: int, size: int | None, metadata: bool, bar) -> None:
        """One request, appending to `part`; raises _Retry for trouble worth another try."""
        offset = part.stat().st_size if part.exists() else 0
        request = deadline.request(file_url, headers={"User-Agent": netio.USER_AGENT})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = opener.open(request, timeout=self.bounds.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                raise NotFound(f"{name} not found at {file_url} (HTTP 404)",
                                    hint="check the repository URL; its index may be out of date") from None
            if exc.code == 416 and offset:
                part.unlink()   # the server cannot continue our partial data: start over
                raise _Retry("server refused to resume (HTTP 416)") from None
            if exc.code >= 500 or exc.code in RETRY_STATUS:
                raise _Retry(f"HTTP {exc.code} {exc.reason}") from None
            raise CosbuildError(f"download of {name} from {file_url} failed: HTTP {exc.code} {exc.reason}",
                                hint="check the repository URL and the server's access rules") from None
        except (OSError, http.client.HTTPException) as exc:   # URLError is an OSError
            raise _Retry(_reason(exc)) from None

        with response:
            if response.status == 206:
                if _range_start(response.headers.get("Content-Range")) != offset:
                    part.unlink(missing_ok=True)
                    raise _Retry("server resumed at the wrong offset")
                mode = "ab"
            else:
                offset, mode = 0, "wb"   # a 200 is the whole file: the server ignored our Range
            length = response.headers.get("Content-Length", "")
            # ASCII digits only: str.isdigit() takes '\xb2' (latin-1's ², what int() refuses)
            announced = int(length) if re.fullmatch(r"[0-9]+", length) else None
            if announced is not None and offset + announced > limit:
                raise self._too_large(name, offset + announced, size, metadata)
            if announced is not None and size is None:
                check_space(part.parent, announced, f"{name} from {self.url}")
            if bar is not None:
                bar.reset(total=offset + announced if announced is not None else size)
                bar.update(offset)
            with part.open(mode) as out:
                try:
                    got = _copy(response, out, bar, limit - offset)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Retry(_reason(exc)) from None
        have = offset + got
        if have > limit:   # an endless body stops here, not when the disk is full
            raise self._too_large(name, have, size, metadata)
        # urllib does not notice a connection closed early: compare with what was announced
        if announced is not None and got < announced:
            raise _Retry(f"truncated: got {offset + got} of {offset + announced} bytes")
        if size is not None and have < size:
            raise _Retry(_size_problem(have, size))


class RegistryTransport(Transport):
    """A docker repository (luet 0.20's layout, see repos/create.py): files from one-file
    images, artifacts made from the files of package images."""

    def __init__(self, url: str, insecure: bool = False, bounds: Bounds = DEFAULT_BOUNDS):
        self.url = url
        self.bounds = bounds
        self.base = registry.parse_reference(url.removeprefix("docker://"))
        self.registry = registry.Registry(self.base.registry, insecure=insecure,
                                          timeout=bounds.timeout)

    def fetch(self, name: str, dest: Path, *, sha256: str | None = None,
              size: int | None = None, metadata: bool = False,
              progress: str | None = None, digest: str | None = None) -> Path:
        """As Transport.fetch; `digest`: the manifest digest the image must have (a signed
        repository's target says it), else the image its tag names."""
        _check_name(name, self.url)
        dest = Path(dest)
        artifact = re.fullmatch(r"(.+)\.package\.tar(\.\w+)?", name)
        what = f"package {artifact.group(1)}" if artifact else name
        ref = self.base.with_tag(digest or registry.tag_for(artifact.group(1) if artifact
                                                             else name))
        with atomic_path(dest) as tmp:
            try:
                if artifact:
                    self._package(ref, artifact.group(2) or "", tmp)
                else:
                    # the bound, not `size`: the layer holding the file is a tar of it
                    registry.pull_file(self.registry, ref, name, tmp,
                                       limit=self._limit(None, metadata),
                                       deadline=self.bounds.metadata_deadline)
            except CosbuildError as exc:
                # the kind stays: a signed client words a missing or wrong image by it
                message = f"cannot get {what} from docker repository {self.url}: {exc.message}"
                if isinstance(exc, Mismatch):
                    raise Mismatch(message, reason=exc.reason, hint=exc.hint) from None
                kind = NotFound if isinstance(exc, NotFound) else CosbuildError
                raise kind(message, hint=exc.hint) from None
            if not artifact:
                got = tmp.stat().st_size
                if size is not None and got != size:
                    raise Mismatch(f"{name} from {self.url}: {_size_problem(got, size)}",
                                   reason="length",
                                   hint="the repository index does not match its files")
                _check_sha256(name, self.url, tmp, sha256)
        return dest

    def _package(self, ref: registry.Reference, suffix: str, dest: Path) -> None:
        """As luet's DockerClient.DownloadArtifact: the files of the package image are packed
        into an artifact again, and the index's sha256 (of the publisher's artifact, which
        the registry does not hold) is not checked: the layer's digest is (and, signed, the
        image's)."""
        with dest.open("wb") as raw, _compressor(suffix, raw) as out, \
                registry.layer_tar(self.registry, ref, dest.parent,
                                   deadline=self.bounds.deadline) as layer:
            limit = self.bounds.artifact_unpacked
            if _copy(layer, out, None, limit) > limit:
                raise CosbuildError(f"image {ref} is larger than {bound_text(limit)} once "
                                    "decompressed")


def _compressor(suffix: str, raw: BinaryIO):
    """A writer compressing into `raw` as an artifact named `*.package.tar<suffix>` is."""
    if suffix == ".zst":
        import zstandard
        return zstandard.ZstdCompressor(write_checksum=True).stream_writer(raw, closefd=False)
    if suffix == ".gz":
        return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
    if suffix == "":
        return contextlib.nullcontext(raw)
    raise CosbuildError(f"unknown artifact compression '{suffix}'",
                        hint="artifacts are .package.tar, .tar.gz or .tar.zst")


class _Retry(Exception):
    """A failed attempt that another attempt may fix; the message is the reason."""


def _check_name(name: str, url: str) -> None:
    # names come from a remote index: never let one write or read outside its folder, nor
    # reach a terminal (messages, progress bars) with control characters
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts or "\\" in name or \
            not name.isprintable():
        raise CosbuildError(f"unsafe repository file name {name!r} from {url}",
                            hint="repository file names must be relative paths without '..' "
                                 "or control characters")


def _check_sha256(name: str, url: str, path: Path, expected: str | None) -> None:
    if expected is None:
        return
    with path.open("rb") as f:
        got = hashlib.file_digest(f, "sha256").hexdigest()
    if got != expected.lower():
        raise Mismatch(f"checksum mismatch for {name} from {url}: expected {expected}, got {got}",
                       reason="hash", hint="the repository may be corrupt or changed during the "
                                           "download; try again or tell its maintainer")


def _size_problem(got: int, size: int) -> str:
    if got < size:
        return f"truncated: got {got} of {size} bytes"
    return f"too large: got {got} bytes, expected {size}"


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match.group(1)) if match else None


def _reason(exc: BaseException) -> str:
    """'Connection refused' rather than '<urlopen error [Errno 111] Connection refused>'."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    elif isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _copy(source: BinaryIO, out: BinaryIO, bar, limit: int) -> int:
    """Copy until the end, or one byte past `limit` (the caller tells it is too much)."""
    copied = 0
    while copied <= limit and (chunk := source.read(min(CHUNK, limit + 1 - copied))):
        out.write(chunk)
        copied += len(chunk)
        if bar is not None:
            bar.update(len(chunk))
    return copied


def _existing(folder: Path) -> Path:
    while not folder.exists():
        folder = folder.parent
    return folder


@contextlib.contextmanager
def _progress_bar(label: str | None, total: int | None) -> Iterator:
    if label is None:
        yield None
        return
    from tqdm import tqdm   # only loaded when a bar is wanted
    # disable=None: silent when stderr is not a terminal (logs, CI)
    with tqdm(total=total, desc=terminal.safe(label), unit="B", unit_scale=True, unit_divisor=1024,
              disable=None, file=sys.stderr) as bar:
        yield bar
