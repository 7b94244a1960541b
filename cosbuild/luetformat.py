"""luet 0.20's package and repository formats, declared once (SPEC sections 2 and 3).

- Compression types (`compressiontype`, luet's pkg/compiler/types/compression): each with
  the suffix luet appends to `.tar` (PackageArtifact.getCompressedName), its leading bytes,
  a streaming reader and writer. An empty or missing value is `none`: luet omits it then
  (`compressiontype,omitempty`) and its Compress writes a plain tar.
- Artifact records (luet's PackageArtifact as repository.meta.yaml spells it, JSON field
  names): written by `artifact_record`, read back by `ArtifactEntry.parse`.
- Repository files: `repository.yaml` with `repo_files` {tree, meta, compilertree}, and
  `repository.meta.yaml` inside the meta archive.

Reading is streamed and bounded (`Bounds`): repository files come from other machines,
and an index is read into memory.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, ContextManager, Iterator

from .errors import CosbuildError

# which records cosbuild writes: part of a build's up-to-date check, so that a change of
# format rewrites the metadata of finished builds (from their images: no rebuild)
RECORD_FORMAT = "luet-0.20+cosbuild-facts"
REPOSITORY_FILE = "repository.yaml"
META_MEMBER = "repository.meta.yaml"
REPO_FILE_KINDS = ("tree", "meta", "compilertree")
MiB = 1 << 20
GiB = 1 << 30
# cosbuild's own fields of an artifact record (luet's readers ignore unknown fields): the
# artifact's size, its tar's size once decompressed, and whether its build may carry device
# nodes and FIFOs (a bootstrapped base image's /dev); only the build folder's own index is
# believed about the last one (repos/config.py)
SIZE_KEY, UNPACKED_KEY, DEVICES_KEY = "size", "unpacked_size", "device_nodes"


@dataclass(frozen=True)
class Bounds:
    """How much a repository may make a client download, decompress, hold and wait for.

    The defaults are far above cOS's (its tree and index are a few MiB, its largest
    artifacts a few hundred MiB) and far below what fills a machine; tests pass small ones."""
    metadata: int = 64 * MiB            # repository.yaml, a tree/meta archive, one file in one
    metadata_unpacked: int = 256 * MiB  # a tree/meta archive once decompressed
    artifact: int = 2 * GiB             # an artifact whose index records no size
    artifact_unpacked: int = 16 * GiB   # any artifact once decompressed, whatever is recorded
    ratio: int = 100                    # unpacked/compressed, when no unpacked size is recorded
    ratio_floor: int = 64 * MiB         # ... but small archives may always unpack to this
    yaml_nodes: int = 10_000_000        # values of a repository's YAML, its aliases expanded
    timeout: float = 30                 # to connect, and for each read
    retries: int = 4                    # more attempts of a download that broke off
    deadline: float = 3600              # a whole download, retries included (seconds)
    metadata_deadline: float = 300      # ... of a metadata file

    def unpacked_limit(self, compressed: int, recorded: int | None) -> int:
        """The most an artifact may decompress to: as its index records, else by ratio."""
        if recorded is not None:
            return recorded
        return min(self.artifact_unpacked, max(compressed * self.ratio, self.ratio_floor))


DEFAULT_BOUNDS = Bounds()


def check_space(folder, need: int, what: str) -> None:
    """Refuse to write `need` bytes into `folder` that do not fit: fail before, not halfway."""
    free = shutil.disk_usage(folder).free
    if need > free:
        raise CosbuildError(f"not enough space in {folder} for {what}: it needs "
                            f"{_amount(need)}, {_amount(free)} are free",
                            hint="free some space; nothing was written")


def _amount(n: int) -> str:
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n} bytes"


@dataclass(frozen=True)
class Compression:
    name: str                                    # luet's compressiontype
    suffix: str                                  # after `.tar` in file names
    magic: bytes                                 # how the content starts ("" for none)
    reader: Callable[[BinaryIO], BinaryIO]       # decompressing view of a file
    writer: Callable[[BinaryIO], ContextManager[BinaryIO]]   # leaves the file open
    errors: Callable[[], tuple[type[BaseException], ...]]    # what a damaged stream raises


def _zstd():
    import zstandard   # imported on first use: most runs neither read nor write archives
    return zstandard


NONE = Compression("none", "", b"", lambda raw: raw, contextlib.nullcontext, lambda: ())
GZIP = Compression(
    "gzip", ".gz", b"\x1f\x8b",
    lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    # no file name and mtime 0 in the header: the same content gives the same bytes
    lambda raw: gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0),
    lambda: (OSError, EOFError, zlib.error))
ZSTD = Compression(
    "zstd", ".zst", b"\x28\xb5\x2f\xfd",
    # luet's encoder writes one frame, other tools may write several: read them all
    lambda raw: _zstd().ZstdDecompressor().stream_reader(raw, read_across_frames=True,
                                                          closefd=False),
    # level and framing do not depend on the machine's core count: reproducible
    lambda raw: _zstd().ZstdCompressor(level=3, threads=-1, write_checksum=True)
    .stream_writer(raw, closefd=False),
    lambda: (_zstd().ZstdError,))
COMPRESSIONS = {c.name: c for c in (NONE, GZIP, ZSTD)}


def compression(value, where: str, key: str = "compressiontype") -> Compression:
    """The compression a record declares; `where` names the file (and record) for errors."""
    if value in (None, ""):
        return NONE
    found = COMPRESSIONS.get(value) if isinstance(value, str) else None
    if found is None:
        raise CosbuildError(f"unknown compressiontype {value!r}", file=where, key=key,
                            hint=f"luet 0.20 knows {', '.join(COMPRESSIONS)}")
    return found


class Damaged(Exception):
    """An archive that cannot be read as declared; the message says why."""


class TooLarge(Damaged):
    """An archive (or a file in it) beyond its bound: a decompression bomb, or a wrong index."""


def bound_text(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit % MiB == 0 and limit else f"{limit} bytes"


class _Checked:
    """A decompressing reader whose failures become Damaged, and that stops at `limit` bytes."""

    def __init__(self, stream: BinaryIO, errors: tuple, limit: int | None):
        self.stream, self.errors, self.limit, self.total = stream, errors, limit, 0

    def read(self, size: int = -1) -> bytes:
        if self.limit is not None:   # never decompress far beyond the bound
            room = self.limit + 1 - self.total
            size = room if size is None or size < 0 else min(size, room)
        try:
            data = self.stream.read(size)
        except self.errors as exc:
            raise Damaged(str(exc) or type(exc).__name__) from None
        self.total += len(data)
        if self.limit is not None and self.total > self.limit:
            raise TooLarge(f"larger than {bound_text(self.limit)} once decompressed")
        return data


@contextlib.contextmanager
def open_tar(path: Path, comp: Compression, limit: int | None = None) -> Iterator[tarfile.TarFile]:
    """The tar archive at `path`, compressed as `comp` says, as a stream of members.

    A damaged archive (bad compression, bad tar, too large) raises Damaged with the reason,
    also when found while the caller reads the members."""
    with open(path, "rb") as raw:
        try:
            stream = _Checked(comp.reader(raw), comp.errors(), limit)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                yield tar
        except TooLarge:
            raise
        except (tarfile.TarError, EOFError, Damaged) as exc:
            raise Damaged(_reason(path, comp, exc)) from None


def _reason(path: Path, comp: Compression, exc: BaseException) -> str:
    reason = f"not a {comp.name} tar archive ({exc})" if comp is not NONE \
        else f"not a tar archive ({exc})"
    with open(path, "rb") as f:
        head = f.read(4)
    actual = next((c for c in COMPRESSIONS.values() if c.magic and head.startswith(c.magic)), None)
    if actual is not None and actual is not comp:
        reason += f"; its content is {actual.name}-compressed"
    return reason


def read_members(path: Path, comp: Compression, wanted: Callable[[str], bool],
                 bounds: Bounds = DEFAULT_BOUNDS) -> dict[str, bytes]:
    """The `wanted` regular files of a metadata archive (a tree, an index), by normalized
    name; the archive is read as a stream, and only those files are kept in memory."""
    out = {}
    # what is kept is part of the stream: the archive's bound bounds it too
    with open_tar(path, comp, bounds.metadata_unpacked) as tar:
        for member in tar:
            name = member_name(member.name)
            if not (member.isreg() and wanted(name)):
                continue
            if member.size > bounds.metadata:
                raise TooLarge(f"{name} is {member.size} bytes, more than the "
                               f"{bound_text(bounds.metadata)} a repository file may be")
            out[name] = tar.extractfile(member).read()
    return out


def member_name(name: str) -> str:
    """`./a/b`, `/a/b` and `a/b` are the same entry (luet's tars have no prefix)."""
    return str(PurePosixPath("/", name)).lstrip("/")


# --------------------------------------------------------------------------- tree definitions

# a package reference in luet's files is a whole DefaultPackage (ghodss/yaml writes its `id`,
# `requires: null`, ...); luet matches references by these fields only
REF_FIELDS = ("name", "category", "version")
REF_LISTS = ("requires", "conflicts", "provides")


def tree_definition(data):
    """A definition.yaml of a repository tree with its references reduced to REF_FIELDS
    (a copy: line numbers kept for messages)."""
    if not isinstance(data, dict):
        return data
    out = copy.copy(data)
    for key in REF_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [{f: r[f] for f in REF_FIELDS if f in r} if isinstance(r, dict) else r
                        for r in out[key]]
    return out


# --------------------------------------------------------------------------- artifact records

@dataclass(frozen=True)
class ArtifactEntry:
    """What a client needs of one PackageArtifact record of an index."""
    category: str
    name: str
    version: str
    path: str                    # the artifact's file name in the repository
    sha256: str
    compression: Compression
    files: tuple[str, ...]       # absolute paths ("/usr/bin/x"); luet lists tar member names
    cache_image: str = ""        # package_cacheimage: the image the package was built into
    size: int | None = None      # cosbuild's SIZE_KEY, UNPACKED_KEY and DEVICES_KEY
    unpacked_size: int | None = None
    device_nodes: bool = False

    @classmethod
    def parse(cls, data, where: str) -> "ArtifactEntry":
        def need(value, key: str, kind: type = str):
            if not isinstance(value, kind) or (kind is str and not value):
                raise CosbuildError(f"missing or not a {kind.__name__}", file=where, key=key,
                                    hint="the repository index is not luet's format")
            return value

        def count(key: str) -> int | None:
            value = data.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise CosbuildError(f"expected a size in bytes, got {value!r:.40}", file=where,
                                    key=key, hint="the repository index is damaged")
            return value

        need(data, "(record)", dict)
        package = need(need(data.get("compilationspec"), "compilationspec", dict).get("package"),
                       "compilationspec.package", dict)
        files = data.get("files") or []
        need(files, "files", list)
        return cls(
            category=str(package.get("category") or ""),
            name=need(package.get("name"), "compilationspec.package.name"),
            version=need(str(package.get("version") or ""), "compilationspec.package.version"),
            path=need(data.get("path"), "path"),
            sha256=need((need(data.get("checksums"), "checksums", dict)).get("sha256"),
                        "checksums.sha256"),
            compression=compression(data.get("compressiontype"), where),
            files=tuple(str(PurePosixPath("/", need(f, "files", str))) for f in files),
            cache_image=str(data.get("package_cacheimage") or ""),
            size=count(SIZE_KEY), unpacked_size=count(UNPACKED_KEY),
            device_nodes=data.get(DEVICES_KEY) is True)


# luet's LuetCompilationSpec fields (pkg/compiler/types/spec), besides `package`
COMPILE_SPEC_KEYS = ("steps", "env", "prelude", "image", "seed", "package_dir", "retrieve",
                     "unpack", "includes", "excludes", "build_options", "copy",
                     "requires_final_images")


def compile_spec(build: dict) -> dict:
    """The compile spec luet records, from a rendered build.yaml (other keys are cosbuild's)."""
    return {k: build[k] for k in COMPILE_SPEC_KEYS if k in build}


def dependency_record(path: str, package: dict) -> dict:
    """A build dependency in `dependencies`: luet nests whole records; its readers use the
    package and the file."""
    return {"path": path, "compilationspec": {"package": package}}


def device_kind(member: tarfile.TarInfo) -> str | None:
    """What makes an archive entry a node a package may only carry when allowed (a device
    node or a FIFO, made by root in the root), or None."""
    if member.isfifo():
        return "FIFO"
    return "device node" if member.ischr() or member.isblk() else None


def artifact_facts(path: Path, comp: Compression) -> dict:
    """cosbuild's own fields of the record of an artifact built here: the file's size and
    its tar's, which a client bounds its download and decompression by, and whether it
    holds device nodes or FIFOs (a bootstrapped root's /dev, and every image built on one),
    which a client believes only of its own build."""
    with open(path, "rb") as raw:
        stream = _Checked(comp.reader(raw), comp.errors(), None)
        devices = False
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                devices = devices or device_kind(member) is not None
        while stream.read(MiB):   # the end-of-archive blocks count too
            pass
        return {SIZE_KEY: raw.seek(0, 2), UNPACKED_KEY: stream.total, DEVICES_KEY: devices}


def artifact_record(*, path: str, sha256: str, comp: Compression, files: list[str],
                    compile_spec: dict, package: dict, runtime: dict, cache_image: str,
                    dependencies: list[dict], facts: dict | None = None) -> dict:
    """A PackageArtifact record with luet's field names (metadata.yaml, index entries),
    plus cosbuild's own `facts` (artifact_facts).

    `files` are absolute paths; luet lists tar member names (no leading `/`), which its
    installer compares with the archives' names to find file conflicts."""
    return {
        **(facts or {}),
        "path": path,
        "dependencies": dependencies,
        "compilationspec": {**compile_spec, "package": package},
        "checksums": {"sha256": sha256},
        "compressiontype": comp.name,
        "files": [f.lstrip("/") for f in files],
        "package_cacheimage": cache_image,
        "runtime": runtime,
    }
