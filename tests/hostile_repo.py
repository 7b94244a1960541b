"""Repositories written by hand, piece by piece, for the hostile-repository tests: each file
can be replaced by bad bytes while repository.yaml still vouches for it (its checksums match),
so the client reads what an attacker serves, not a checksum error.

The layout is luet 0.20's (see cosbuild/luetformat.py): repository.yaml, tree.tar.zst,
repository.meta.yaml.tar.zst and the artifacts, each a zstd tar unless told otherwise.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import os
import tarfile
import time
from pathlib import Path

import yaml
import zstandard

from .conftest import running

COMPRESS = {"zstd": (".zst", lambda b: zstandard.ZstdCompressor().compress(b)),
            "gzip": (".gz", gzip.compress), "none": ("", lambda b: b)}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs) -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, attrs.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
    for key, value in attrs.items():
        setattr(info, key, value)
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    return info, data


def tar_of(entries: list[tuple]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def files_tar(files: dict[str, bytes]) -> bytes:
    return tar_of([entry(name, data=data) for name, data in files.items()])


APP_ARTIFACT = [entry("usr", tarfile.DIRTYPE), entry("usr/bin", tarfile.DIRTYPE),
                entry("usr/bin/app", data=b"#!/bin/sh\necho app\n", mode=0o755)]


def definition(name: str = "app", version: str = "1.0", **more) -> dict:
    return {"name": name, "category": "test", "version": version, **more}


def record(path: str, data: bytes, files: list[str], name: str = "app", version: str = "1.0",
           comp: str = "zstd", **more) -> dict:
    """An index record as luet writes it (no cosbuild size fields unless given in `more`)."""
    return {"path": path, "compilationspec": {"package": definition(name, version)},
            "checksums": {"sha256": sha256(data)}, "compressiontype": comp, "files": files,
            **more}


def members_of(entries: list[tuple]) -> list[str]:
    return sorted(info.name for info, _ in entries if not info.isdir())


class Repo:
    """A repository folder; `write()` (re)writes every file from the current fields."""

    def __init__(self, folder: Path, artifact: list[tuple] | bytes = APP_ARTIFACT, *,
                 artifact_comp: str = "zstd", record_extra: dict | None = None):
        self.folder = folder
        self.artifact_comp = artifact_comp
        suffix, compress = COMPRESS[artifact_comp]
        self.artifact_name = f"app-test-1.0.package.tar{suffix}"
        self.artifact = artifact if isinstance(artifact, bytes) else compress(tar_of(artifact))
        files = members_of(artifact) if isinstance(artifact, list) else []
        self.tree: dict[str, bytes] | bytes = {
            "test/app/1.0/definition.yaml": yaml.safe_dump(definition()).encode()}
        self.index: list | bytes = [record(self.artifact_name, self.artifact, files,
                                           comp=artifact_comp, **(record_extra or {}))]
        self.spec_extra: dict = {}
        self.spec_raw: bytes | None = None   # repository.yaml as is, instead of the spec
        self.tree_comp = self.meta_comp = "zstd"
        self.meta_member = "repository.meta.yaml"   # the file the meta archive holds
        self.tree_filename = None                   # repo_files.tree.filename, if not the file's

    def write(self) -> "Repo":
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / self.artifact_name).write_bytes(self.artifact)
        repo_files = {}
        meta = (self.index if isinstance(self.index, bytes)
                else yaml.safe_dump({"index": self.index}).encode())
        for kind, base, comp, content in (
                ("tree", "tree.tar", self.tree_comp, self.tree),
                ("meta", "repository.meta.yaml.tar", self.meta_comp,
                 {self.meta_member: meta})):
            suffix, compress = COMPRESS[comp]
            data = content if isinstance(content, bytes) else compress(files_tar(content))
            (self.folder / (base + suffix)).write_bytes(data)
            repo_files[kind] = {"filename": base + suffix, "compressiontype": comp,
                                "checksums": {"sha256": sha256(data)}}
        if self.tree_filename is not None:
            repo_files["tree"]["filename"] = self.tree_filename
        spec = {"name": "hostile", "type": "disk", "urls": [str(self.folder)], "revision": 1,
                "repo_files": repo_files, **self.spec_extra}
        (self.folder / "repository.yaml").write_bytes(
            self.spec_raw if self.spec_raw is not None else yaml.safe_dump(spec).encode())
        return self


def snapshot(top: Path) -> dict[str, int]:
    """Every path under `top` with its size: what must stay as it was."""
    out = {}
    for here, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(here, name)
            out[os.path.relpath(path, top)] = os.lstat(path).st_size
    return out


# --------------------------------------------------------------------------- hostile servers

class Hostile(http.server.BaseHTTPRequestHandler):
    """Answers every GET as the server's `answer(handler)` says; counts the requests."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.requests += 1
        try:
            self.server.answer(self)
        except (BrokenPipeError, ConnectionResetError):
            pass   # the client gave up, as it should

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def hostile_server(answer):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    server.answer, server.requests = answer, 0
    with running(server) as url:
        yield url, server


def endless(handler, announce: str | None = None) -> None:
    """A body that never ends (bounded here too: a test that fails must not fill a disk)."""
    handler.send_response(200)
    if announce is not None:
        handler.send_header("Content-Length", announce)
    handler.send_header("Connection", "close")
    handler.end_headers()
    chunk = b"a: b\n" * 13107   # 64 KiB of valid YAML
    for _ in range(1 << 14):    # 1 GiB at most
        handler.wfile.write(chunk)


def dripping(seconds: float, *, in_headers: bool = False):
    """A server sending one byte every `seconds`, of its body or of its headers."""
    def answer(handler) -> None:
        if in_headers:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        else:
            handler.send_response(200)
            handler.send_header("Content-Length", "1000")
            handler.end_headers()
        for _ in range(200):   # at most 200 bytes: the test's own bound
            handler.wfile.write(b"X" if in_headers else b"a")
            handler.wfile.flush()
            time.sleep(seconds)
    return answer


def redirecting(location: str):
    def answer(handler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return answer


def status(code: int, body: bytes = b""):
    def answer(handler) -> None:
        handler.send_response(code)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Content-Type", "text/html")
        handler.end_headers()
        handler.wfile.write(body)
    return answer
