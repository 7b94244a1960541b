"""Hostile transfers (issue 32): downloads without a declared size stop at a tight bound and
at a deadline for the whole download, a body longer than declared stops as soon as it is;
`create-repo` reads only regular files of its build folder that are what their metadata
says, and writes nothing unless all of it; `serve-repo` serves only the regular files inside
its folder; `search` never prints a repository's control characters to a terminal.

Servers are real, on 127.0.0.1 (tests/hostile_repo.py: threads, every loop bounded).
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import io
import logging
import os
import re
import socket
import stat
import tarfile
import time
from pathlib import Path

import pytest
import yaml
import zstandard

from cosbuild import luetformat, netio, settings, terminal
from cosbuild.builds.builder import Builder
from cosbuild.errors import CosbuildError
from cosbuild.luetformat import Bounds, MiB
from cosbuild.repos import create, remote
from cosbuild.repos import transport as transport_module
from cosbuild.repos.config import RepoConfig
from cosbuild.repos.serve import make_server
from cosbuild.repos.transport import HttpTransport
from cosbuild.tools import TaskLog
from cosbuild.tree.project import load_project

from .conftest import BASIC, running
from .hostile import deadline  # noqa: F401 (a fixture)
from .hostile_repo import (Repo, definition, dripping, endless, entry, hostile_server, redirecting,
                           status, tar_of)
from .test_hostile_bounds import Timer
from .test_repository_client import Workspace, lib_and_app, read_tar_zst

ARTIFACT = "app-test-1.0.package.tar.zst"


def transport(url: str, **bounds) -> HttpTransport:
    return HttpTransport(url, retries=0, backoff=0.01, bounds=Bounds(**bounds))


def snapshot(top: Path) -> dict:
    """Every entry below `top`: its type and mode, a regular file's content, a link's
    target (a FIFO is not opened)."""
    out = {}
    for here, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            path = Path(here) / name
            st = os.lstat(path)
            out[str(path.relative_to(top))] = (
                st.st_mode, path.read_bytes() if stat.S_ISREG(st.st_mode) else
                os.readlink(path) if stat.S_ISLNK(st.st_mode) else None)
    return out


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def raw_answer(head: bytes, body_chunk: bytes = b"", chunks: int = 0, pause: float = 0.0):
    """A server writing `head` as is (status line and headers), then `chunks` times
    `body_chunk`, `pause` seconds apart."""
    def answer(handler) -> None:
        handler.wfile.write(head)
        for _ in range(chunks):
            handler.wfile.write(body_chunk)
            handler.wfile.flush()
            time.sleep(pause)
    return answer


# --------------------------------------------------------------------------- 1. downloads

def test_unsized_artifact_is_refused_by_the_default_bound_before_reading(tmp_path):
    # the default bound itself: an endless artifact announced as 3 GiB is not read at all
    answer = raw_answer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                        % (3 << 30), b"x" * 65536, chunks=64)
    with hostile_server(answer) as (url, _), Timer() as t:
        with pytest.raises(CosbuildError) as info:
            HttpTransport(url, retries=0).fetch(ARTIFACT, tmp_path / "dl" / ARTIFACT)
    assert str(info.value).startswith(f"{ARTIFACT} from {url} is larger than the 2048 MiB an "
                                      "artifact may be")
    assert luetformat.DEFAULT_BOUNDS.artifact == 2 << 30
    assert t.seconds < 5 and leftovers(tmp_path / "dl") == []


def test_endless_unsized_artifact_stops_at_its_bound(tmp_path):
    with hostile_server(endless) as (url, server), Timer() as t:
        with pytest.raises(CosbuildError, match=rf"^{ARTIFACT} from {url} is larger than the "
                                                r"1 MiB an artifact may be"):
            transport(url, artifact=MiB).fetch(ARTIFACT, tmp_path / "dl" / ARTIFACT)
    assert t.seconds < 5 and server.requests == 1
    assert leftovers(tmp_path / "dl") == []   # neither the file nor its .part


def test_endless_unsized_metadata_stops_at_its_own_bound(tmp_path):
    # the metadata bound, not the artifact's, for repository.yaml and the like
    with hostile_server(endless) as (url, _):
        with pytest.raises(CosbuildError, match=r"^repository\.yaml from .* is larger than the "
                                                r"65536 bytes a repository metadata file may be"):
            transport(url, metadata=65536, artifact=MiB).fetch(
                "repository.yaml", tmp_path / "repository.yaml", metadata=True)
    assert leftovers(tmp_path) == []


def test_body_longer_than_declared_stops_right_after_the_declared_size(tmp_path, monkeypatch):
    written = []
    real_copy = transport_module._copy

    def counting(source, out, bar, limit):
        got = real_copy(source, out, bar, limit)
        written.append(got)
        return got
    monkeypatch.setattr(transport_module, "_copy", counting)
    with hostile_server(endless) as (url, _):
        with pytest.raises(CosbuildError, match=rf"{ARTIFACT} from {url}: too large: got 1001 "
                                                r"bytes, expected 1000"):
            transport(url).fetch(ARTIFACT, tmp_path / ARTIFACT, size=1000)
    assert written == [1001]   # one byte past the declared size, not one chunk
    assert leftovers(tmp_path) == []


def test_announced_length_beyond_the_declared_size_is_refused_unread(tmp_path):
    answer = raw_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n",
                        b"x" * 65536, chunks=160)
    with hostile_server(answer) as (url, _):
        with pytest.raises(CosbuildError, match=r"too large: got 10485760 bytes, expected 1000"):
            transport(url).fetch(ARTIFACT, tmp_path / ARTIFACT, size=1000)
    assert leftovers(tmp_path) == []


def test_resumed_answer_is_held_to_what_is_left(tmp_path):
    """The second attempt resumes at 100 bytes; its endless 206 answer may bring 900 more."""
    def answer(handler) -> None:
        if handler.headers.get("Range") is None:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n"
                                b"Connection: close\r\n\r\n" + b"a" * 100)
            return   # cut off: urllib sees a short body
        handler.wfile.write(b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-999/1000"
                            b"\r\nConnection: close\r\n\r\n")
        for _ in range(1000):
            handler.wfile.write(b"b" * 4096)
    with hostile_server(answer) as (url, server):
        with pytest.raises(CosbuildError, match=r"too large: got 1001 bytes, expected 1000"):
            HttpTransport(url, retries=2, backoff=0.01).fetch(ARTIFACT, tmp_path / ARTIFACT,
                                                              size=1000)
    assert server.requests == 2 and leftovers(tmp_path) == []


@pytest.mark.parametrize("length", [b"\xb2", b"\xd9\xa1\xd9\xa0", b"-5", b"1e3", b""])
def test_odd_content_length_is_no_length(tmp_path, length):
    """Not ASCII digits: as if none were sent (str.isdigit() took latin-1's superscript two,
    and int() refused it with a traceback); the body is then held to the bound."""
    answer = raw_answer(b"HTTP/1.1 200 OK\r\nContent-Length: " + length +
                        b"\r\nConnection: close\r\n\r\n", b"x" * 65536, chunks=64)
    with hostile_server(answer) as (url, _):
        with pytest.raises(CosbuildError, match=r"is larger than the 1 MiB an artifact may be"):
            transport(url, artifact=MiB).fetch(ARTIFACT, tmp_path / ARTIFACT)
    assert leftovers(tmp_path) == []


def test_unsized_body_that_fits_its_bound_is_fetched(tmp_path):
    answer = raw_answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"y" * 1000, chunks=3)
    with hostile_server(answer) as (url, _):
        got = transport(url, artifact=3000).fetch(ARTIFACT, tmp_path / ARTIFACT)
    assert got.read_bytes() == b"y" * 3000 and leftovers(tmp_path) == [ARTIFACT]


def test_trickling_endless_body_meets_the_deadline(tmp_path):
    # a chunk every 0.1 s, never a read timeout: only the whole download's deadline ends it
    answer = raw_answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"z" * 10,
                        chunks=600, pause=0.1)
    with hostile_server(answer) as (url, _), Timer() as t:
        with pytest.raises(CosbuildError, match=rf"^download of {ARTIFACT} from {url}/{ARTIFACT} "
                                                r"did not finish within 1\.5 s"):
            transport(url, timeout=1, deadline=1.5).fetch(ARTIFACT, tmp_path / ARTIFACT)
    assert 1.4 < t.seconds < 5 and leftovers(tmp_path) == []


def test_stalling_server_meets_the_deadline_across_retries(tmp_path):
    """Each attempt stalls past the read timeout and is retried (resumed): the deadline
    counts them all, however many retries are allowed."""
    answer = raw_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", b"s", chunks=5,
                        pause=0.8)
    with hostile_server(answer) as (url, server), Timer() as t:
        with pytest.raises(CosbuildError, match=r"did not finish within 2 s"):
            HttpTransport(url, retries=100, backoff=0.01,
                          bounds=Bounds(timeout=0.3, deadline=2)).fetch(
                ARTIFACT, tmp_path / ARTIFACT, size=1000)
    assert server.requests >= 2   # it was retried ...
    assert t.seconds < 5          # ... within the deadline
    assert leftovers(tmp_path) == []


def test_metadata_has_the_short_deadline(tmp_path):
    answer = raw_answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"a: b\n",
                        chunks=600, pause=0.1)
    with hostile_server(answer) as (url, _), Timer() as t:
        with pytest.raises(CosbuildError, match=r"repository\.yaml .* did not finish within 1 s"):
            transport(url, timeout=1, deadline=60, metadata_deadline=1).fetch(
                "repository.yaml", tmp_path / "repository.yaml", metadata=True)
    assert t.seconds < 4


@pytest.mark.parametrize("name", ["a\x1b[2Jb.package.tar.zst", "x\r.tar", "bell\x07",
                                  "csi\x9b31m", "nul\x00", "new\nline"])
def test_file_names_with_control_characters_are_refused_unfetched(tmp_path, name):
    with hostile_server(endless) as (url, server):
        with pytest.raises(CosbuildError) as info:
            transport(url).fetch(name, tmp_path / "dl")
    message = str(info.value)
    assert message.startswith(f"unsafe repository file name {name!r} from {url}")
    assert message.isprintable()   # the name is shown escaped
    assert server.requests == 0 and leftovers(tmp_path) == []


def test_endless_repository_yaml_through_the_cli_is_one_line(run_cli):
    with hostile_server(endless) as (url, _):
        code, out, err = run_cli("search", "--repo", url)
    assert code == 1 and out == "" and "Traceback" not in err
    assert err.count("cosbuild: error:") == 1
    assert f"repository.yaml from {url} is larger than the 64 MiB" in err


def test_build_repository_index_is_held_to_the_metadata_bound(tmp_path):
    with hostile_server(endless) as (url, _):
        bounds = Bounds(metadata=65536, artifact=MiB, retries=0)
        repos = remote.BuildRepositories(
            [RepoConfig(name="up", urls=(url,), type="http", bounds=bounds)], tmp_path)
        with pytest.raises(CosbuildError, match=rf"build repository up is unreachable: {url}: "
                                                r"repository\.yaml from \S+ is larger than the "
                                                r"65536 bytes a repository metadata file may be"):
            repos.fingerprint()
    assert leftovers(tmp_path) == []


def test_build_repository_artifacts_carry_their_recorded_size(tmp_path):
    """A fetched build dependency's download is held to the size its index records."""
    repo = Repo(tmp_path / "repo", record_extra={"size": 1234}).write()
    repos = remote.BuildRepositories([RepoConfig(name="up", urls=(str(repo.folder),))],
                                     tmp_path / "work")
    [(_, where)] = repos.packages()
    assert (where.artifact, where.size) == (ARTIFACT, 1234)


def test_build_dependency_member_names_are_shown_escaped(tmp_path):
    data = zstandard.ZstdCompressor().compress(tar_of([entry("dev/\x1b[2Jfifo", tarfile.FIFOTYPE)]))
    artifact = tmp_path / ARTIFACT
    artifact.write_bytes(data)
    with pytest.raises(CosbuildError) as info:
        remote._refuse_devices(artifact, Bounds())
    assert str(info.value).startswith("its artifact holds a FIFO (dev/\\x1b[2Jfifo)")
    assert "\x1b" not in str(info.value)


# --------------------------------------------------------------------------- 2. create-repo

@pytest.fixture
def built(project, monkeypatch):
    """A project with test/lib and test/app built into build/ (and a repository made)."""
    ws = Workspace(project.path)
    lib_and_app(ws)
    ws.publish()
    monkeypatch.chdir(ws.base)
    return ws.base / "build"


def rewrite_meta(build: Path, **changes) -> None:
    path = build / "app-test-1.0.metadata.yaml"
    meta = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        node, *keys = key.split(".")
        target = meta
        for k in [node, *keys][:-1]:
            target = target[k]
        target[[node, *keys][-1]] = value
    path.write_text(yaml.safe_dump(meta))


def relink(path: Path, target: str) -> None:
    path.unlink()
    path.symlink_to(target)


def replace_artifact(build: Path, data: bytes) -> None:
    """The artifact replaced by `data`, its metadata's size fixed: only what it is differs."""
    (build / ARTIFACT).write_bytes(data)
    rewrite_meta(build, size=len(data))


META = "build/app-test-1.0.metadata.yaml"
OUTSIDE = "/etc/passwd"

# case -> (how the build folder is spoiled, the error (regex), the file it names)
BAD_BUILDS = {
    "metadata invalid YAML": (lambda b: (b / "app-test-1.0.metadata.yaml").write_text("a: [\n"),
                              r"invalid YAML", META + ":2"),
    "metadata a list": (lambda b: (b / "app-test-1.0.metadata.yaml").write_text("- 1\n"),
                        r"expected a mapping at the top level, got list", META),
    "metadata not UTF-8": (lambda b: (b / "app-test-1.0.metadata.yaml").write_bytes(b"\xff\xfe"),
                           r"not UTF-8 text", META),
    "metadata of another package": (
        lambda b: rewrite_meta(b, **{"runtime.name": "lib"}),
        r"app-test-1\.0\.metadata\.yaml is not the metadata of test/app@1\.0", META),
    "metadata name with escape": (
        lambda b: rewrite_meta(b, **{"runtime.name": "../../x\x1b[2J"}),
        r"is not the metadata of test/app@1\.0", META),
    "metadata without category": (
        lambda b: rewrite_meta(b, **{"runtime.category": None}),
        r"is not the metadata of test/app@1\.0", META),
    "metadata version a list": (
        lambda b: rewrite_meta(b, **{"runtime.version": ["1.0"]}),
        r"is not the metadata of test/app@1\.0", META),
    "metadata path escaping": (lambda b: rewrite_meta(b, path="../../etc/passwd"),
                               r"is not the metadata of test/app@1\.0", META),
    "metadata checksums a string": (lambda b: rewrite_meta(b, checksums="x"),
                                    r"checksums: missing or not a dict", META),
    "metadata size text": (lambda b: rewrite_meta(b, size="big"),
                           r"size: expected a size in bytes", META),
    "metadata linked outside": (lambda b: relink(b / "app-test-1.0.metadata.yaml", OUTSIDE),
                                r"app-test-1\.0\.metadata\.yaml is not a regular file in build",
                                META),
    "metadata linked to ../": (
        lambda b: ((b.parent / "elsewhere.yaml").write_bytes(
            (b / "app-test-1.0.metadata.yaml").read_bytes()),
            relink(b / "app-test-1.0.metadata.yaml", "../elsewhere.yaml")),
        r"is not a regular file in build", META),
    "metadata dangling link": (lambda b: relink(b / "app-test-1.0.metadata.yaml", "/nonexistent"),
                               r"is not a regular file in build", META),
    "metadata link loop": (lambda b: relink(b / "app-test-1.0.metadata.yaml",
                                            "app-test-1.0.metadata.yaml"),
                           r"is not a regular file in build", META),
    "metadata a FIFO": (lambda b: ((b / "app-test-1.0.metadata.yaml").unlink(),
                                   os.mkfifo(b / "app-test-1.0.metadata.yaml")),
                        r"is not a regular file in build", META),
    "artifact linked outside": (lambda b: relink(b / ARTIFACT, OUTSIDE),
                                rf"{re.escape(ARTIFACT)} is not a regular file in build",
                                "build/" + ARTIFACT),
    "artifact a FIFO": (lambda b: ((b / ARTIFACT).unlink(), os.mkfifo(b / ARTIFACT)),
                        r"is not a regular file in build", "build/" + ARTIFACT),
    "artifact a folder": (lambda b: ((b / ARTIFACT).unlink(), (b / ARTIFACT).mkdir()),
                          r"is not a regular file in build", "build/" + ARTIFACT),
    "artifact missing": (lambda b: (b / ARTIFACT).unlink(),
                         rf"artifact {re.escape(ARTIFACT)} is missing", META),
    "artifact not a tarball": (lambda b: replace_artifact(b, b"just some text\n" * 100),
                               r"artifact \S+ is not a zstd tar archive", "build/" + ARTIFACT),
    "artifact gzip, not zstd": (
        lambda b: replace_artifact(b, gzip.compress(b"\0" * 10240)),
        r"not a zstd tar archive .*its content is gzip-compressed", "build/" + ARTIFACT),
    "artifact empty": (lambda b: replace_artifact(b, b""), r"is not a zstd tar archive",
                       "build/" + ARTIFACT),
    "artifact truncated": (
        lambda b: (b / ARTIFACT).write_bytes((b / ARTIFACT).read_bytes()[:40]),
        r"artifact \S+ is 40 bytes, its metadata records \d+", "build/" + ARTIFACT),
}


@pytest.mark.parametrize("case", sorted(BAD_BUILDS))
def test_bad_build_folder_is_one_clear_error_and_nothing_written(built, run_cli, case,
                                                                  deadline):
    spoil, message, named = BAD_BUILDS[case]
    spoil(built)
    before = snapshot(built.parent)
    code, out, err = run_cli("create-repo")
    assert code == 1, err
    assert "Traceback" not in err and err.count("cosbuild: error:") == 1, err
    assert re.search(message, err), err
    assert err.startswith(f"cosbuild: error: {named}"), err
    assert err.rstrip("\n").isprintable()   # no control character of the file reaches it
    assert snapshot(built.parent) == before   # nothing written, no temporary file left


@pytest.mark.parametrize("name", ["../evil", "a/b", "x\x1b[2J", "", ".hidden", "sp ace"])
def test_repository_name_must_be_plain(built, run_cli, name):
    before = snapshot(built)
    code, out, err = run_cli("create-repo", "--name", name)
    assert code == 1 and "Traceback" not in err
    assert f"--name / repo_name: invalid repository name {name!r}" in err
    assert "\x1b" not in err
    assert snapshot(built) == before


def test_failure_while_writing_leaves_the_previous_repository(built, monkeypatch):
    """The tree and index are written before the compiler tree: a failure there renames
    neither into place (all three, or none)."""
    rewrite_meta(built, **{"runtime.description": "changed"})   # so that the index differs
    before = snapshot(built)

    def fails(project, out):
        assert out.name.endswith(".tmp")   # a temporary name beside the file
        out.write_bytes(b"half")
        raise CosbuildError("cannot read the tree")
    monkeypatch.setattr(create, "_write_compilertree", fails)
    with pytest.raises(CosbuildError, match="cannot read the tree"):
        create.create_repo(_project(), Path("build"), create.RepoInfo(name="test"))
    assert snapshot(built) == before


def test_previous_repository_yaml_with_a_bad_revision_starts_over(built, run_cli):
    (built / "repository.yaml").write_text("revision: [1, 2]\nrepo_files: 7\n")
    code, out, err = run_cli("create-repo", "--name", "test")
    assert (code, err) == (0, "")
    assert yaml.safe_load((built / "repository.yaml").read_text())["revision"] == 1


def test_tree_file_names_with_odd_characters_are_archived(built, run_cli):
    odd = built.parent / "tree" / "odd"
    odd.mkdir()
    for name in ("new\nline", "esc\x1b[31m", os.fsdecode(b"latin1-\xe9"), "back\\slash"):
        (odd / name).write_text("x")
    os.mkfifo(odd / "fifo")   # archived as a FIFO entry, never opened
    code, out, err = run_cli("create-repo", "--name", "test")
    assert (code, err) == (0, "")
    names = set(read_tar_zst(built / "compilertree.tar.zst"))
    prefix = f"{(built.parent / 'tree').resolve().name}/odd/"
    assert {prefix + n for n in ("new\nline", "esc\x1b[31m", "fifo")} <= names


def test_link_inside_the_build_folder_is_read(built, run_cli):
    # not every link is refused: one to a file of the build folder itself is that file
    (built / "kept").mkdir()
    os.replace(built / ARTIFACT, built / "kept" / ARTIFACT)
    (built / ARTIFACT).symlink_to(f"kept/{ARTIFACT}")
    code, out, err = run_cli("create-repo", "--name", "test")
    assert (code, err) == (0, "")


def _project():
    from cosbuild import settings
    from cosbuild.tree.project import load_project
    return load_project(settings.resolve({"build_dir": "build"}, env={}))


# --------------------------------------------------------------------------- 3. serve-repo

def get(url: str, path: str, method: str = "GET", **headers) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def served(tmp_path):
    """A served folder `repo` beside a folder `outside` with a secret, and links out."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("top secret\n")
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "file").write_text("served\n")
    (repo / "to-passwd").symlink_to("/etc/passwd")
    (repo / "to-secret").symlink_to("../outside/secret")
    (repo / "sub" / "up").symlink_to("../../outside/secret")
    (repo / "outdir").symlink_to(outside)
    (repo / "to-zero").symlink_to("/dev/zero")
    (repo / "inside").symlink_to("file")
    (repo / "sub" / "back").symlink_to("../file")
    os.mkfifo(repo / "fifo")
    with running(make_server(repo, "127.0.0.1", 0)) as url:
        yield url


REFUSED = ["/to-passwd", "/to-secret", "/sub/up", "/outdir/secret", "/outdir/", "/outdir",
           "/to-zero", "/fifo", "/../outside/secret", "/%2e%2e/outside/secret",
           "/..%2foutside%2fsecret", "//etc/passwd", "/sub/../../outside/secret",
           "/a%00b", "/", "/sub/", "/sub", "/nonexistent"]


@pytest.mark.parametrize("path", REFUSED)
@pytest.mark.parametrize("how", [{}, {"Range": "bytes=0-"}, {"method": "HEAD"}])
def test_serve_only_files_inside_its_folder(served, path, how, deadline):
    status, body = get(served, path, **how)
    assert status == 404
    assert b"top secret" not in body and b"root:" not in body


@pytest.mark.parametrize("path", ["/file", "/inside", "/sub/back"])
def test_serve_files_and_links_inside_its_folder(served, path):
    assert get(served, path) == (200, b"served\n")
    assert get(served, path, Range="bytes=1-3") == (206, b"erv")


def test_serve_answers_quickly_despite_a_fifo(served, deadline):
    with Timer() as t:
        assert get(served, "/fifo")[0] == 404
        assert get(served, "/file")[0] == 200   # and goes on serving
    assert t.seconds < 2


def test_client_cannot_fetch_through_a_served_link_out(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ARTIFACT).symlink_to("/etc/passwd")
    with running(make_server(repo, "127.0.0.1", 0)) as url:
        with pytest.raises(CosbuildError, match=rf"{re.escape(ARTIFACT)} not found at "
                                                r"http://\S+ \(HTTP 404\)"):
            transport(url).fetch(ARTIFACT, tmp_path / "dl" / ARTIFACT)
    assert leftovers(tmp_path / "dl") == []


def test_serve_log_shows_request_lines_escaped(tmp_path, caplog):
    (tmp_path / "f").write_text("x")
    with caplog.at_level(logging.DEBUG, logger="cosbuild"), \
            running(make_server(tmp_path, "127.0.0.1", 0)) as url:
        host, port = url.removeprefix("http://").split(":")
        with contextlib.closing(socket.create_connection((host, int(port)))) as s:
            s.sendall(b"GET /\x1b[2J\x07\x9b HTTP/1.0\r\n\r\n")
            s.settimeout(5)
            assert s.recv(100).startswith(b"HTTP/1.0 404")
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("serve:")]
    assert any("\\x1b[2J\\x07" in m for m in logged), logged
    assert all(m.isprintable() for m in logged), logged


# --------------------------------------------------------------------------- 4. search output

CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
NASTY = "desc \x1b]0;pwned\x07 \x1b[2J\r\x08\x9b31m \u202eevil\u202c\x00 end"


def search_output(tmp_path, run_cli, description: str = NASTY, config_name: str | None = None):
    repo = Repo(tmp_path / "repo")
    repo.tree = {"test/app/1.0/definition.yaml":
                 yaml.safe_dump(definition(description=description)).encode()}
    repo.write()
    if config_name is None:
        return run_cli("search", "--repo", str(repo.folder))
    config = tmp_path / "luet.yaml"
    config.write_text(yaml.safe_dump({"repositories": [
        {"name": config_name, "type": "disk", "urls": [str(repo.folder)]}]}))
    return run_cli("search", "--config", str(config))


def test_search_prints_no_control_character_of_a_description(tmp_path, run_cli):
    code, out, err = search_output(tmp_path, run_cli)
    assert (code, err) == (0, "")
    assert CONTROL.search(out.rstrip("\n")) is None, repr(out)
    assert out.count("\n") == 1   # one line per package: a CR or newline does not add any
    assert out.startswith("test/app@1.0  [")
    # shown, escaped: the user sees what the repository says
    assert "desc \\x1b]0;pwned\\x07 \\x1b[2J\\x0d\\x08\\x9b31m \\u202eevil\\u202c\\x00 end" in out


def test_search_prints_no_control_character_of_a_repository_name(tmp_path, run_cli):
    code, out, err = search_output(tmp_path, run_cli, "plain", config_name="r\x1b[31mred\x9b")
    assert (code, err) == (0, "")
    assert CONTROL.search(out.rstrip("\n")) is None, repr(out)
    assert "[r\\x1b[31mred\\x9b]" in out


def test_search_bytes_on_stdout_are_free_of_control_bytes(tmp_path, capfd):
    """In a child process, as a terminal would receive it: the bytes written."""
    import subprocess
    import sys
    repo = Repo(tmp_path / "repo")
    repo.tree = {"test/app/1.0/definition.yaml":
                 yaml.safe_dump(definition(description=NASTY)).encode()}
    repo.write()
    proc = subprocess.run([sys.executable, "-m", "cosbuild.cli", "search", "--repo",
                           str(repo.folder)], capture_output=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 0, proc.stderr
    body = proc.stdout.rstrip(b"\n")
    assert body and not any(b < 0x20 or b == 0x7f for b in body), body
    assert b"\xc2\x9b" not in body and "\u202e".encode() not in body


def test_names_with_control_characters_never_reach_search_output(tmp_path, run_cli):
    repo = Repo(tmp_path / "repo")
    repo.tree = {"test/app/1.0/definition.yaml": yaml.safe_dump(
        {"name": "app\x1b[2J", "category": "test", "version": "1.0"}).encode()}
    repo.write()
    code, out, err = run_cli("search", "--repo", str(repo.folder))
    assert code == 1 and out == "" and "Traceback" not in err
    assert "\x1b" not in err and "invalid package name 'app\\x1b[2J'" in err


def test_an_error_quoting_its_input_prints_it_escaped(tmp_path, run_cli):
    """Every error message goes to the terminal through one door (cli.main), escaped: here
    a repository path given on the command line, quoted by the error."""
    code, out, err = run_cli("install", "--root", str(tmp_path / "root"), "--repo",
                             str(tmp_path / "no\x1b]0;pwned\x07where"), "test/app")
    assert code == 1 and out == "" and "Traceback" not in err
    assert CONTROL.search(err.rstrip("\n")) is None, repr(err)
    assert "no\\x1b]0;pwned\\x07where" in err


@pytest.mark.parametrize("text, shown", [
    ("plain text, é, 中文, emoji \U0001f600", "plain text, é, 中文, emoji \U0001f600"),
    ("\x1b[31mred", "\\x1b[31mred"),
    ("a\rb\nc\td\x00", "a\\x0db\\x0ac\\x09d\\x00"),
    ("bell\x07 del\x7f", "bell\\x07 del\\x7f"),
    ("csi\x9b1m osc\x9d", "csi\\x9b1m osc\\x9d"),
    ("rtl\u202eoverride \u2066isolate", "rtl\\u202eoverride \\u2066isolate"),
    ("line\u2028sep", "line\\u2028sep"),
    ("lone\ud800surrogate", "lone\\ud800surrogate"),
    ("tag\U000e0041", "tag\\U000e0041"),
])
def test_terminal_safe(text, shown):
    assert terminal.safe(text) == shown
    assert terminal.safe(shown) == shown   # what it shows is safe as it is


# --------------------------------------------------------------------------- retrieve URLs

def fetched(url: str, **bounds) -> bytes:
    out = io.BytesIO()
    netio.fetch(url, out, **{"limit": MiB, "seconds": 2, "timeout": 1, **bounds})
    return out.getvalue()


def test_a_retrieve_download_is_bounded_in_size(deadline):
    with hostile_server(endless) as (url, _), Timer() as t:
        with pytest.raises(CosbuildError, match=r"/src\.tar is larger than the 1 MiB a "
                                                r"download may be"):
            fetched(url + "/src.tar")
    assert t.seconds < 5


@pytest.mark.parametrize("in_headers", [False, True])
def test_a_retrieve_download_meets_its_deadline(deadline, in_headers):
    with hostile_server(dripping(0.2, in_headers=in_headers)) as (url, _), Timer() as t:
        with pytest.raises(CosbuildError, match=r"download of http://.*/src\.tar did not "
                                                r"finish within 1 s"):
            fetched(url + "/src.tar", seconds=1)
    assert t.seconds < 4


@pytest.mark.parametrize("answer, why", [
    (status(404), "HTTP 404 Not Found"),
    (redirecting("file:///etc/passwd"), "Redirection to url 'file:///etc/passwd' is not allowed"),
])
def test_a_retrieve_download_that_fails_names_the_url(deadline, answer, why):
    with hostile_server(answer) as (url, _):
        with pytest.raises(CosbuildError, match=rf"cannot download {re.escape(url)}/src\.tar: "
                                                rf".*{re.escape(why)}"):
            fetched(url + "/src.tar")


def test_retrieve_downloads_into_the_build_and_names_build_yaml_when_it_fails(project,
                                                                              deadline):
    """Builder._retrieve with a stand-in container (no buildah): the file is downloaded to
    build/downloads/NAME and copied into /luetbuild; a failure names build.yaml and key."""
    class Container:
        copied: dict = {}

        def copy(self, source, destination):
            self.copied[destination] = Path(source).read_bytes()

    body = b"source code\n"
    with hostile_server(status(200, body)) as (url, _):
        root = project({**BASIC, "tree/app/build.yaml":
                        f"image: x\nretrieve: ['{url}/dl/src.tar']\nsteps: [make]\n"})
        with contextlib.chdir(root):
            proj = load_project(settings.resolve({}, env={}))
            builder, c = Builder(proj), Container()
            pkg = proj.graph.packages["app/app@0.1"]
            with TaskLog(root / "log") as log:
                builder._retrieve(pkg, c, log)
    assert c.copied == {"/luetbuild/src.tar": body}
    assert (root / "build/downloads/src.tar").read_bytes() == body
    with hostile_server(status(500)) as (url, _):
        root = project({**BASIC, "tree/app/build.yaml":
                        f"image: x\nretrieve: ['{url}/other.tar']\nsteps: [make]\n"})
        with contextlib.chdir(root):
            proj = load_project(settings.resolve({}, env={}))
            with TaskLog(root / "log") as log, pytest.raises(CosbuildError) as info:
                Builder(proj)._retrieve(proj.graph.packages["app/app@0.1"], Container(), log)
    assert str(info.value) == ("tree/app/build.yaml: retrieve: app/app@0.1: cannot download "
                               f"{url}/other.tar: HTTP 500 Internal Server Error")
    assert [p.name for p in (root / "build/downloads").iterdir()] == ["src.tar"]
