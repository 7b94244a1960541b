"""How the repository client gets repository files: from a local folder, over HTTP(S), or
from an OCI registry (a `docker` repository, see repos/create.py).

Every fetch is all-or-nothing: the destination name only appears once the whole file is
there and its checksum (when known) matched. HTTP downloads survive flaky servers: they are
retried with exponential backoff and resumed where they broke off (Range requests).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from .. import __version__
from ..errors import CosbuildError
from ..fsutil import atomic_path
from ..oci import registry

CHUNK = 1 << 16
PART_SUFFIX = ".part"
USER_AGENT = f"cosbuild/{__version__}"
# answers worth asking again for: server-side trouble, not a wrong URL
RETRY_STATUS = {408, 429}


class Transport:
    """Where a repository's files come from."""

    url: str

    def fetch(self, name: str, dest: Path, *, sha256: str | None = None,
              size: int | None = None, progress: str | None = None) -> Path:
        """Get the repository file `name` into `dest` (complete and verified, or not at all)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def transport_for(url: str, kind: str = "", insecure: bool = False) -> Transport:
    """The transport for a repository URL: http(s)://, file://PATH or a plain path; for a
    repository of type `docker` (or a docker:// URL), REGISTRY/REPOSITORY."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if kind == "docker" or scheme == "docker":
        return RegistryTransport(url, insecure)
    if scheme in ("http", "https"):
        return HttpTransport(url)
    if scheme == "file":
        return DiskTransport(url)
    if re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        raise CosbuildError(f"unsupported repository URL '{url}'",
                            hint="use http://, https://, file:// or a local folder")
    return DiskTransport(url)


class DiskTransport(Transport):
    """A repository in a local (or mounted) folder."""

    def __init__(self, url: str | Path):
        self.url = str(url)
        path = self.url[len("file://"):] if self.url.lower().startswith("file://") else self.url
        self.root = Path(path)

    def fetch(self, name: str, dest: Path, *, sha256: str | None = None,
              size: int | None = None, progress: str | None = None) -> Path:
        _check_name(name, self.url)
        src = self.root / name
        try:
            source = src.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise CosbuildError(f"repository file {src} does not exist",
                                hint="check the repository path; its index may be out of date") from None
        except OSError as exc:
            raise CosbuildError(f"cannot read repository file {src}: {exc.strerror}") from None
        dest = Path(dest)
        with source, _progress_bar(progress, os.fstat(source.fileno()).st_size) as bar, \
                atomic_path(dest) as tmp:
            with tmp.open("wb") as out:
                got = _copy(source, out, bar)
            # raising here leaves `dest` untouched: atomic_path drops the temporary file
            if size is not None and got != size:
                raise CosbuildError(f"repository file {src}: {_size_problem(got, size)}",
                                    hint="the repository index does not match its files")
            _check_sha256(name, self.url, tmp, sha256)
        return dest


class HttpTransport(Transport):
    """A repository on a web server; `retries` more attempts after the first one."""

    def __init__(self, url: str, retries: int = 4, backoff: float = 0.5, timeout: float = 30):
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout

    def fetch(self, name: str, dest: Path, *, sha256: str | None = None,
              size: int | None = None, progress: str | None = None) -> Path:
        _check_name(name, self.url)
        file_url = f"{self.url}/{urllib.parse.quote(name)}"
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + PART_SUFFIX)
        # a leftover from an earlier run may belong to another version of the file
        part.unlink(missing_ok=True)
        attempts = self.retries + 1
        try:
            with _progress_bar(progress, size) as bar:
                for attempt in range(1, attempts + 1):
                    try:
                        self._attempt(name, file_url, part, size, bar)
                        break
                    except _Retry as exc:
                        if attempt == attempts:
                            raise CosbuildError(
                                f"download of {name} from {self.url} failed after {attempts} "
                                f"attempts: {exc}",
                                hint=f"check that the server is up and the repository URL is right "
                                     f"({file_url})") from None
                        time.sleep(self.backoff * 2 ** (attempt - 1))
            _check_sha256(name, self.url, part, sha256)
            os.chmod(part, 0o644)
            os.replace(part, dest)
        except BaseException:
            # failed for good (or interrupted): no half file is left to confuse anyone
            part.unlink(missing_ok=True)
            raise
        return dest

    def _attempt(self, name: str, file_url: str, part: Path, size: int | None, bar) -> None:
        """One request, appending to `part`; raises _Retry for trouble worth another try."""
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(file_url, headers={"User-Agent": USER_AGENT})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                raise CosbuildError(f"{name} not found at {file_url} (HTTP 404)",
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
            announced = int(length) if length.isdigit() else None
            if bar is not None:
                bar.reset(total=offset + announced if announced is not None else size)
                bar.update(offset)
            with part.open(mode) as out:
                try:
                    got = _copy(response, out, bar)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Retry(_reason(exc)) from None
        # urllib does not notice a connection closed early: compare with what was announced
        if announced is not None and got < announced:
            raise _Retry(f"truncated: got {offset + got} of {offset + announced} bytes")
        have = offset + got
        if size is not None and have != size:
            problem = _size_problem(have, size)
            if have < size:
                raise _Retry(problem)
            raise CosbuildError(f"download of {name} from {file_url}: {problem}",
                                hint="the repository index does not match its files")


class RegistryTransport(Transport):
    """A docker repository (luet 0.20's layout, see repos/create.py): files from one-file
    images, artifacts made from the files of package images."""

    def __init__(self, url: str, insecure: bool = False):
        self.url = url
        self.base = registry.parse_reference(url.removeprefix("docker://"))
        self.registry = registry.Registry(self.base.registry, insecure=insecure)

    def fetch(self, name: str, dest: Path, *, sha256: str | None = None,
              size: int | None = None, progress: str | None = None) -> Path:
        _check_name(name, self.url)
        dest = Path(dest)
        artifact = re.fullmatch(r"(.+)\.package\.tar(\.\w+)?", name)
        what = f"package {artifact.group(1)}" if artifact else name
        with atomic_path(dest) as tmp:
            try:
                if artifact:
                    self._package(artifact.group(1), artifact.group(2) or "", tmp)
                else:
                    registry.pull_file(self.registry, self.base.with_tag(registry.tag_for(name)),
                                       name, tmp)
            except CosbuildError as exc:
                raise CosbuildError(f"cannot get {what} from docker repository {self.url}: "
                                    f"{exc.message}", hint=exc.hint) from None
            if not artifact:
                _check_sha256(name, self.url, tmp, sha256)
        return dest

    def _package(self, stem: str, suffix: str, dest: Path) -> None:
        """As luet's DockerClient.DownloadArtifact: the files of the package image are packed
        into an artifact again, and the index's sha256 (of the publisher's artifact, which
        the registry does not hold) is not checked: the layer's digest is."""
        ref = self.base.with_tag(registry.tag_for(stem))
        with dest.open("wb") as raw, _compressor(suffix, raw) as out, \
                registry.layer_tar(self.registry, ref, dest.parent) as layer:
            shutil.copyfileobj(layer, out, CHUNK)


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
    # names come from a remote index: never let one write or read outside its folder
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts or "\\" in name or "\0" in name:
        raise CosbuildError(f"unsafe repository file name '{name}' from {url}",
                            hint="repository file names must be relative paths without '..'")


def _check_sha256(name: str, url: str, path: Path, expected: str | None) -> None:
    if expected is None:
        return
    with path.open("rb") as f:
        got = hashlib.file_digest(f, "sha256").hexdigest()
    if got != expected.lower():
        raise CosbuildError(f"checksum mismatch for {name} from {url}: expected {expected}, got {got}",
                            hint="the repository may be corrupt or changed during the download; "
                                 "try again or tell its maintainer")


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


def _copy(source: BinaryIO, out: BinaryIO, bar) -> int:
    copied = 0
    while chunk := source.read(CHUNK):
        out.write(chunk)
        copied += len(chunk)
        if bar is not None:
            bar.update(len(chunk))
    return copied


@contextlib.contextmanager
def _progress_bar(label: str | None, total: int | None) -> Iterator:
    if label is None:
        yield None
        return
    from tqdm import tqdm   # only loaded when a bar is wanted
    # disable=None: silent when stderr is not a terminal (logs, CI)
    with tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
              disable=None, file=sys.stderr) as bar:
        yield bar
