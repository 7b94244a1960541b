"""Fetching repository files from folders and web servers, and `cosbuild serve`."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import socket
import time

import pytest

from .conftest import running

from cosbuild import netio
from cosbuild.errors import CosbuildError
from cosbuild.luetformat import Bounds
from cosbuild.repos.serve import make_server
from cosbuild.repos.transport import DiskTransport, HttpTransport, transport_for

DATA = bytes(range(256)) * 400   # 100 KiB: several read chunks
SHA = hashlib.sha256(DATA).hexdigest()
NAME = "foo-cat-1.0.package.tar.zst"




class Scripted(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next step of the server's script; records the requests.

    Steps: ("full",) the whole file; ("cut", n) announce the whole file, send n bytes, hang up;
    ("status", code); ("sleep", s) wait, then the whole file; ("honour",) obey Range;
    ("redirect", path); ("drip", s) the status line and headers a byte every s seconds."""

    def do_GET(self):
        server = self.server
        server.requests.append(dict(self.headers))
        step = server.script.pop(0) if len(server.script) > 1 else server.script[0]
        kind = step[0]
        if kind == "status":
            self.send_error(step[1])
            return
        if kind == "redirect":
            self.send_response(302)
            self.send_header("Location", step[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if kind == "drip":
            head = b"HTTP/1.1 200 OK\r\nX-Drip: " + b"y" * 40
            for n in range(len(head)):   # the test's own bound
                self.wfile.write(head[n:n + 1])
                self.wfile.flush()
                time.sleep(step[1])
            return
        if kind == "sleep":
            time.sleep(step[1])
        requested = self.headers.get("Range")
        if kind == "honour" and requested:
            start = int(requested.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
            self.send_header("Content-Length", str(len(DATA) - start))
            self.end_headers()
            self.wfile.write(DATA[start:])
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(DATA)))
        self.end_headers()
        self.wfile.write(DATA[:step[1]] if kind == "cut" else DATA)

    def log_message(self, *args):
        pass

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass   # the client gave up on purpose (a cut or a deadline); no traceback on stderr


@contextlib.contextmanager
def scripted(*script):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.script, server.requests = list(script), []
    with running(server) as url:
        yield url, server.requests


def http_transport(url, timeout=5, **kw):
    return HttpTransport(url, **{"retries": 4, "backoff": 0.01,
                                 "bounds": Bounds(timeout=timeout), **kw})


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


# --- choosing a transport, file names ---

def test_transport_for(tmp_path):
    assert isinstance(transport_for("http://example.org/repo"), HttpTransport)
    assert isinstance(transport_for("https://example.org/repo"), HttpTransport)
    disk = transport_for(f"file://{tmp_path}")
    assert isinstance(disk, DiskTransport) and disk.root == tmp_path
    assert transport_for(str(tmp_path)).root == tmp_path
    with pytest.raises(CosbuildError, match="unsupported repository URL"):
        transport_for("ftp://example.org/repo")


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "..", "", "."])
def test_unsafe_names_are_refused(tmp_path, name):
    for transport in (DiskTransport(tmp_path), http_transport("http://127.0.0.1:9")):
        with pytest.raises(CosbuildError, match="unsafe repository file name"):
            transport.fetch(name, tmp_path / "out")


# --- from a folder ---

def test_disk_fetch_with_checksum(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / NAME).write_bytes(DATA)
    dest = tmp_path / "cache" / NAME
    got = transport_for(f"file://{tmp_path}/repo").fetch(NAME, dest, sha256=SHA, size=len(DATA),
                                                         progress="fetching")
    assert got == dest and dest.read_bytes() == DATA
    assert leftovers(dest.parent) == [NAME]


def test_disk_checksum_mismatch_leaves_nothing(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / NAME).write_bytes(DATA)
    cache = tmp_path / "cache"
    with pytest.raises(CosbuildError) as err:
        DiskTransport(tmp_path / "repo").fetch(NAME, cache / NAME, sha256="0" * 64)
    assert f"checksum mismatch for {NAME}" in str(err.value)
    assert f"expected {'0' * 64}, got {SHA}" in str(err.value)
    assert leftovers(cache) == []


def test_disk_missing_and_short_files(tmp_path):
    (tmp_path / "short").write_bytes(DATA[:10])
    with pytest.raises(CosbuildError, match=f"{tmp_path / 'missing'} does not exist"):
        DiskTransport(tmp_path).fetch("missing", tmp_path / "cache" / "missing")
    with pytest.raises(CosbuildError, match="truncated: got 10 of 20 bytes"):
        DiskTransport(tmp_path).fetch("short", tmp_path / "cache" / "short", size=20)
    assert leftovers(tmp_path / "cache") == []


# --- over HTTP, against cosbuild's own server ---

def test_http_fetch(tmp_path):
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "sub" / NAME).write_bytes(DATA)
    with running(make_server(repo, port=0)) as url:
        dest = http_transport(url + "/").fetch(f"sub/{NAME}", tmp_path / "cache" / NAME,
                                               sha256=SHA, size=len(DATA), progress="fetching")
    assert dest.read_bytes() == DATA
    assert leftovers(dest.parent) == [NAME]


def test_http_checksum_mismatch_leaves_nothing(tmp_path):
    with scripted(("full",)) as (url, _):
        with pytest.raises(CosbuildError, match=f"checksum mismatch for {NAME} from {url}"):
            http_transport(url).fetch(NAME, tmp_path / NAME, sha256="f" * 64)
    assert leftovers(tmp_path) == []


def test_http_404_is_final(tmp_path):
    with scripted(("status", 404)) as (url, requests):
        with pytest.raises(CosbuildError) as err:
            http_transport(url).fetch(NAME, tmp_path / NAME)
    assert f"{NAME} not found at {url}/{NAME} (HTTP 404)" in str(err.value)
    assert len(requests) == 1
    assert leftovers(tmp_path) == []


def test_http_resumes_truncated_download(tmp_path):
    with scripted(("cut", 30000), ("cut", 50000), ("honour",)) as (url, requests):
        dest = http_transport(url).fetch(NAME, tmp_path / NAME, sha256=SHA, size=len(DATA))
    assert dest.read_bytes() == DATA
    # the first attempt got 30000 bytes; the second asked for the rest and got 20000 more
    assert [r.get("Range") for r in requests] == [None, "bytes=30000-", "bytes=50000-"]
    assert leftovers(tmp_path) == [NAME]


def test_http_200_answer_to_range_restarts(tmp_path):
    # a server without Range support sends the whole file again: it must not be appended
    with scripted(("cut", 30000), ("full",)) as (url, requests):
        dest = http_transport(url).fetch(NAME, tmp_path / NAME, sha256=SHA)
    assert dest.read_bytes() == DATA
    assert requests[1]["Range"] == "bytes=30000-"


def test_http_retries_timeouts(tmp_path):
    with scripted(("sleep", 0.5), ("full",)) as (url, requests):
        dest = http_transport(url, timeout=0.1).fetch(NAME, tmp_path / NAME, sha256=SHA)
    assert dest.read_bytes() == DATA and len(requests) == 2


def test_http_gives_up_after_all_attempts(tmp_path):
    with scripted(("cut", 100), ("status", 500)) as (url, requests):
        with pytest.raises(CosbuildError) as err:
            http_transport(url, retries=2).fetch(NAME, tmp_path / NAME)
    message = str(err.value)
    assert f"download of {NAME} from {url} failed after 3 attempts: HTTP 500" in message
    assert "check that the server is up" in message
    assert len(requests) == 3
    assert requests[1]["Range"] == "bytes=100-"   # the partial data was kept between attempts
    assert leftovers(tmp_path) == []              # ... and removed once it was hopeless


def test_http_server_down(tmp_path):
    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/repo"
    with pytest.raises(CosbuildError) as err:
        http_transport(url, retries=1).fetch(NAME, tmp_path / NAME)
    assert f"download of {NAME} from {url} failed after 2 attempts: Connection refused" in str(err.value)
    assert leftovers(tmp_path) == []


def test_a_redirect_is_within_the_downloads_deadline(tmp_path):
    """The connection a redirect opens is cut at the deadline too."""
    with scripted(("redirect", "/elsewhere"), ("drip", 0.2)) as (url, requests):
        start = time.monotonic()
        with pytest.raises(CosbuildError, match=rf"^download of {NAME} from {url}/{NAME} did "
                                                r"not finish within 1\.5 s"):
            HttpTransport(url, retries=0, bounds=Bounds(timeout=1, deadline=1.5)).fetch(
                NAME, tmp_path / NAME)
        assert time.monotonic() - start < 4
    assert len(requests) == 2 and leftovers(tmp_path) == []


def test_a_deadline_that_passed_fails_its_block_however_the_block_ended():
    """An answer cut off at the deadline may look complete (its headers ended early)."""
    with pytest.raises(netio.Expired, match=r"^reading x did not finish within 0\.1 s \(hint\)"):
        with netio.Deadline(0.1, "reading x", hint="hint"):
            time.sleep(0.3)
    with netio.Deadline(5, "reading x", hint="hint") as deadline:
        pass
    assert not deadline.expired


# --- cosbuild serve ---

def get(url, path, **headers):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        conn.close()


def test_serve_ranges(tmp_path):
    (tmp_path / NAME).write_bytes(DATA)
    size = len(DATA)
    with running(make_server(tmp_path, port=0)) as url:
        status, headers, body = get(url, f"/{NAME}")
        assert (status, body, headers["Accept-Ranges"]) == (200, DATA, "bytes")

        status, headers, body = get(url, f"/{NAME}", Range="bytes=1000-")
        assert (status, body) == (206, DATA[1000:])
        assert headers["Content-Range"] == f"bytes 1000-{size - 1}/{size}"

        status, headers, body = get(url, f"/{NAME}", Range="bytes=10-19")
        assert (status, body, headers["Content-Length"]) == (206, DATA[10:20], "10")
        assert headers["Content-Range"] == f"bytes 10-19/{size}"

        assert get(url, f"/{NAME}", Range="bytes=-5")[2] == DATA[-5:]
        assert get(url, f"/{NAME}", Range=f"bytes={size - 2}-{size + 50}")[2] == DATA[-2:]

        status, headers, _ = get(url, f"/{NAME}", Range=f"bytes={size}-")
        assert status == 416 and headers["Content-Range"] == f"bytes */{size}"

        # several ranges at once are not supported: the whole file, as the RFC allows
        assert get(url, f"/{NAME}", Range="bytes=0-1,5-6")[:3:2] == (200, DATA)


def test_serve_refuses_path_traversal(tmp_path):
    (tmp_path / "secret").write_text("top secret\n")
    (tmp_path / "repo").mkdir()
    with running(make_server(tmp_path / "repo", port=0)) as url:
        for path in ("/../secret", "/%2e%2e/secret", "/../../../../etc/passwd"):
            status, _, body = get(url, path)
            assert status == 404 and b"top secret" not in body and b"root:" not in body
            assert get(url, path, Range="bytes=0-")[0] == 404


def test_serve_is_read_only_and_quiet(tmp_path, capfd):
    (tmp_path / "f").write_text("x")
    with running(make_server(tmp_path, port=0)) as url:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("PUT", "/f", body=b"changed")
        assert conn.getresponse().status == 501
        conn.close()
        assert get(url, "/f")[0] == 200
    assert (tmp_path / "f").read_text() == "x"
    assert capfd.readouterr().err == ""


def test_serve_refuses_missing_folder(tmp_path):
    with pytest.raises(CosbuildError, match="not a folder"):
        make_server(tmp_path / "nope", port=0)
