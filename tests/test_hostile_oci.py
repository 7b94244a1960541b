"""Hostile images and registries (issue #32): layers whose whiteouts name the folder itself or
a folder above it, and registry answers of the wrong shape, depth, size or pace."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from cosbuild.errors import CosbuildError, Mismatch
from cosbuild.oci.layers import apply_layer
from cosbuild.oci.registry import (DOCKER_MANIFEST, OCI_INDEX, Reference, Registry, _goarch,
                                   credentials)

from .conftest import running
from .hostile import deadline, layer  # noqa: F401 (a fixture)


# --------------------------------------------------------------------------- layers

def snapshot(top: Path) -> dict[str, str]:
    """Every path under `top` (the folder included) with what it is."""
    out = {".": "dir"}
    for p in top.rglob("*"):
        out[str(p.relative_to(top))] = ("-> " + os.readlink(p) if p.is_symlink()
                                        else "dir" if p.is_dir() else p.read_text())
    return out


@pytest.fixture
def target(tmp_path):
    """tmp/a/b/root, with files in it, beside it and above it."""
    root = tmp_path / "a" / "b" / "root"
    (root / "etc/sub").mkdir(parents=True)
    (root / "etc/passwd").write_text("root")
    (root / "etc/sub/x").write_text("x")
    (root / "keep").write_text("k")
    (tmp_path / "a/b/sibling").write_text("s")
    (tmp_path / "sentinel").write_text("s")
    return root


@pytest.mark.parametrize("name", [
    "etc/.wh..",        # the folder etc itself
    "etc/.wh...",       # etc's parent: the target
    "etc/.wh.",         # no name: etc
    ".wh..",            # the target
    ".wh...",           # the target's parent
    "./.wh.",           # no name: the target
    "/.wh...",
    "./.wh...",
    "etc/sub/.wh...",
    "etc/./.wh.passwd",  # a '.' inside the path
    "etc/../.wh.keep",
    "../.wh.sibling",
    "etc/.wh..wh..opq/..",
    ".wh..wh..opq/../..",
    "a/../../.wh..wh..opq",
])
@pytest.mark.parametrize("kind", ["file", "dir", "symlink"])
def test_whiteouts_naming_the_target_or_above_are_refused(target, name, kind):
    top = target.parents[2]
    before = snapshot(top)
    with pytest.raises(CosbuildError) as err:
        apply_layer(layer((name, kind, b"" if kind == "file" else "x")), target, "evil layer")
    assert str(err.value).startswith(f"evil layer: refusing entry {name!r}: ")
    assert "is not a path inside the image" in str(err.value)
    assert snapshot(top) == before


@pytest.mark.parametrize("name", ["", ".", "./", "/", "./.", "etc/..", "etc/.", ".."])
def test_hard_links_to_the_target_itself_are_refused(target, name):
    top = target.parents[2]
    before = snapshot(top)
    with pytest.raises(CosbuildError, match=r"evil layer: refusing entry 'lnk': .* is not a path "
                                            r"inside the image"):
        apply_layer(layer(("lnk", "hardlink", name)), target, "evil layer")
    assert snapshot(top) == before


@pytest.mark.parametrize("name", ["", "./etc/..", "etc/../.."])
def test_files_naming_the_target_are_refused(target, name):
    top = target.parents[2]
    before = snapshot(top)
    with pytest.raises(CosbuildError, match=re.escape(f"evil layer: refusing entry {name!r}")):
        apply_layer(layer((name, "file", b"over")), target, "evil layer")
    assert snapshot(top) == before


def test_proper_whiteouts_and_markers_still_apply(target):
    top = target.parents[2]
    apply_layer(layer(("./", "dir", None), ("/", "dir", None), ("./etc/.wh.passwd", "file", b""),
                      ("/etc/sub/.wh..wh..opq", "file", b""), ("etc/sub/y", "file", b"y"),
                      (".wh..wh..", "file", b""), ("etc//new/", "dir", None)),
                target, "layer")
    assert snapshot(target) == {".": "dir", "etc": "dir", "etc/sub": "dir", "etc/sub/y": "y",
                                "etc/new": "dir", "keep": "k"}
    assert (top / "sentinel").read_text() == "s" and (top / "a/b/sibling").read_text() == "s"


def test_whiteouts_through_links_stay_in_the_target(target):
    top = target.parents[2]
    apply_layer(layer(("up", "symlink", "../../.."), ("up/.wh.sentinel", "file", b""),
                      ("abs", "symlink", str(top)), ("abs/a/.wh.b", "file", b""),
                      ("etc/.wh.sub", "file", b"")), target, "layer")
    assert (top / "sentinel").read_text() == "s" and (top / "a/b/sibling").read_text() == "s"
    assert not (target / "etc/sub").exists() and (target / "etc/passwd").exists()


@pytest.mark.parametrize("keep, entries", [
    (".layers", [(".wh..layers", "file", b"")]),
    (".layers", [("./.wh..layers", "dir", None)]),
    (".layers", [("lnk", "symlink", "/"), ("lnk/.wh..layers", "file", b"")]),
    (".layers", [(".layers/.wh..wh..opq", "file", b"")]),
    ("run/layers", [("run/.wh.layers", "file", b"")]),
    ("run/layers", [(".wh.run", "file", b"")]),
    ("run/layers", [("run", "file", b"not a folder")]),
    ("run/layers", [("run", "symlink", "/elsewhere")]),
])
def test_the_download_folder_and_its_parents_cannot_be_removed(target, keep, entries):
    (target / keep).mkdir(parents=True)
    (target / keep / "layer-1").write_text("blob")
    before = snapshot(target)
    with pytest.raises(CosbuildError, match=f"it would change {re.escape(keep)}, where the layers"):
        apply_layer(layer(*entries), target, "layer", keep=keep)
    after = snapshot(target)   # what came before the refused entry was applied: nothing removed
    assert {k: after.get(k) for k in before} == before


def test_a_folder_written_over_the_download_folders_parent_keeps_it(target):
    (target / "run/layers").mkdir(parents=True)
    (target / "run/layers/layer-1").write_text("blob")
    apply_layer(layer(("run", "dir", None), ("run/other", "file", b"o")), target, "layer",
                keep="run/layers")
    assert (target / "run/layers/layer-1").read_text() == "blob"
    assert (target / "run/other").read_text() == "o"


# --------------------------------------------------------------------------- registry answers

class Scripted(http.server.BaseHTTPRequestHandler):
    """A registry on 127.0.0.1 answering from `server.routes`: the first (prefix, answer)
    whose prefix starts the path; an answer is bytes (200) or a function of the handler.
    Without a route, /v2/ answers as a registry does."""

    def do_GET(self):
        self.server.requests.append((self.command, self.path, self.headers.get("Authorization")))
        for prefix, answer in self.server.routes:
            if self.path.startswith(prefix):
                return answer(self) if callable(answer) else send(self, 200, answer)
        if self.path == "/v2/":
            return send(self, 200, b"{}")
        send(self, 404)

    do_HEAD = do_POST = do_PUT = do_GET

    def log_message(self, *args):
        pass


def send(handler, code: int, body: bytes = b"", **headers) -> None:
    handler.send_response(code)
    for key, value in {"Content-Length": str(len(body)), **headers}.items():
        handler.send_header(key.replace("_", "-"), value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


@contextlib.contextmanager
def scripted(routes, timeout: float = 2):
    """A Registry (plain HTTP, `timeout` s per answer) for the scripted server; its requests
    too."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.daemon_threads = True
    server.routes, server.requests = routes, []
    with running(server) as url:
        yield Registry(url.removeprefix("http://"), insecure=True, timeout=timeout), \
            server.requests


def digest(raw: bytes) -> str:
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


GOOD = digest(b"x")
LINUX = {"os": "linux", "architecture": _goarch()}


def doc(value) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize("answer, problem", [
    (doc([]), "it must be an object, not a list"),
    (doc(None), "it must be an object, not null"),
    (doc("layers"), 'it must be an object, not "layers"'),
    (doc({}), "layers is missing"),
    (doc({"layers": {}}), "layers must be a list of at most 1024 items, not an object"),
    (doc({"layers": "sha256:00"}), 'layers must be a list of at most 1024 items, not "sha256:'),
    (doc({"layers": [{"digest": GOOD, "size": 1}] * 1025}), "layers must be a list of at most"),
    (doc({"layers": [GOOD]}), f'layers[0] must be an object, not "{GOOD}"'),
    (doc({"layers": [[]]}), "layers[0] must be an object, not a list"),
    (doc({"layers": [{"size": 1}]}), "layers[0].digest is missing"),
    (doc({"layers": [{"digest": GOOD}]}), "layers[0].size is missing"),
    (doc({"layers": [{"digest": 12, "size": 1}]}),
     "layers[0].digest must be a sha256 digest (sha256: and 64 lower-case hex digits), not 12"),
    (doc({"layers": [{"digest": {"a": 1}, "size": 1}]}), "layers[0].digest must be a sha256 "
                                                         "digest (sha256: and 64 lower-case hex "
                                                         "digits), not an object"),
    (doc({"layers": [{"digest": "sha512:" + "0" * 128, "size": 1}]}), "layers[0].digest must be"),
    (doc({"layers": [{"digest": GOOD[:-1], "size": 1}]}), "layers[0].digest must be"),
    (doc({"layers": [{"digest": GOOD + "0", "size": 1}]}), "layers[0].digest must be"),
    (doc({"layers": [{"digest": GOOD.upper(), "size": 1}]}), "layers[0].digest must be"),
    (doc({"layers": [{"digest": "sha256:" + "../" * 20 + "x" * 4, "size": 1}]}),
     "layers[0].digest must be"),
    (doc({"layers": [{"digest": GOOD + "\n", "size": 1}]}), "layers[0].digest must be"),
    (doc({"layers": [{"digest": GOOD, "size": -1}]}), "size must be a whole number >= 0, not -1"),
    (doc({"layers": [{"digest": GOOD, "size": 1.5}]}), "size must be a whole number >= 0, not 1.5"),
    (doc({"layers": [{"digest": GOOD, "size": "1"}]}), 'size must be a whole number >= 0, not "1"'),
    (doc({"layers": [{"digest": GOOD, "size": False}]}), "size must be a whole number >= 0, not "
                                                         "false"),
    (b'{"layers": [{"digest": "%s", "size": NaN}]}' % GOOD.encode(), "not NaN"),
    (b'{"layers": [{"digest": "%s", "size": %s}]}' % (GOOD.encode(), b"9" * 5000), "not JSON"),
    (b"[" * 100000 + b"]" * 100000, "not JSON"),
    (b'{"layers": ' + b'{"a": ' * 50000 + b"1" + b"}" * 50001, "not JSON"),
    (b"\xff\xfe{}", "not JSON"),
    (b"", "not JSON"),
    # an index, told by its manifests or its media type
    (doc({"manifests": {}}), "manifests must be a list of at most 1024 items, not an object"),
    (doc({"mediaType": OCI_INDEX}), "manifests is missing"),
    (doc({"manifests": [{"platform": LINUX}]}), "manifests[0].digest is missing"),
    (doc({"manifests": [{"digest": "../../blobs/x", "platform": LINUX}]}),
     'manifests[0].digest must be a sha256 digest (sha256: and 64 lower-case hex digits), '
     'not "../../blobs/x"'),
    (doc({"manifests": [{"digest": GOOD, "platform": []}]}),
     "manifests[0].platform must be an object, not a list"),
    (doc({"manifests": [{"digest": GOOD, "platform": {"os": 5}}]}),
     "manifests[0].platform.os must be a string, not 5"),
    (doc({"manifests": [{"digest": GOOD, "platform": {"architecture": None}}]}),
     "manifests[0].platform.architecture must be a string, not null"),
])
def test_manifests_of_the_wrong_shape_are_refused(answer, problem, deadline):
    with scripted([("/v2/x/manifests/", answer)]) as (registry, requests):
        with pytest.raises(CosbuildError) as err:
            registry.manifest(Reference(registry.host, "x", "t"))
    assert f"image {registry.host}/x:t: the registry's manifest is not valid: " in str(err.value)
    assert problem in str(err.value)
    assert [p for _, p, _ in requests if "/blobs/" in p] == []


def test_an_index_of_indexes_stops_after_a_few(deadline):
    chain = [doc({"layers": []})]
    for _ in range(10):   # each index names the next one down by its digest
        chain.append(doc({"mediaType": OCI_INDEX,
                          "manifests": [{"digest": digest(chain[-1]), "platform": LINUX}]}))
    routes = [(f"/v2/x/manifests/{digest(m)}", m) for m in chain]
    with scripted(routes + [("/v2/x/manifests/top", chain[-1])]) \
            as (registry, requests):
        with pytest.raises(CosbuildError, match=re.escape(
                f"image {registry.host}/x@{digest(chain[7])}: the registry's manifest is not "
                "valid: an index more than 3 indexes deep")):   # top = 10, 9, 8, then 7
            registry.manifest(Reference(registry.host, "x", "top"))
        assert len([p for _, p, _ in requests if "/manifests/" in p]) == 4
        # three deep is still an image
        assert registry.manifest(Reference(registry.host, "x", digest(chain[3]))).layers == ()


def test_an_index_naming_a_manifest_by_another_digest_is_refused(deadline):
    index = doc({"manifests": [{"digest": GOOD, "platform": LINUX}]})
    routes = [("/v2/x/manifests/top", index), (f"/v2/x/manifests/{GOOD}", doc({"layers": []}))]
    with scripted(routes) as (registry, _):
        with pytest.raises(Mismatch, match="the registry's manifest does not have that digest"):
            registry.manifest(Reference(registry.host, "x", "top"))


def test_an_index_without_this_machines_variant(deadline):
    index = doc({"manifests": [{"digest": GOOD, "platform": {"os": "windows"}},
                               {"digest": GOOD, "platform": {"architecture": "no-such-cpu"}}]})
    with scripted([("/v2/x/manifests/top", index)]) as (registry, requests):
        with pytest.raises(CosbuildError, match=f"has no linux/{_goarch()} variant"):
            registry.manifest(Reference(registry.host, "x", "top"))
    assert len(requests) == 2


@pytest.mark.parametrize("tag, message", [
    ("../../../v2/other/manifests/t", "is not a valid tag"),
    ("t?x=1", "is not a valid tag"),
    ("", "is not a valid tag"),
    ("sha256:00ff", "its digest must be a sha256 digest"),
    ("sha256:../../" + "0" * 58, "its digest must be a sha256 digest"),
    ("sha512:" + "0" * 128, "its digest must be a sha256 digest"),
    ("md5:" + "0" * 32, "its digest must be a sha256 digest"),
])
def test_tags_and_digests_are_checked_before_they_become_urls(tag, message, deadline):
    with scripted([]) as (registry, requests):
        ref = Reference(registry.host, "x", tag)
        for call in (registry.manifest, registry.exists,
                     lambda r: registry.put_manifest(r, b"{}", DOCKER_MANIFEST)):
            with pytest.raises(CosbuildError, match=re.escape(message)):
                call(ref)
    assert all(p == "/v2/" for _, p, _ in requests)


@pytest.mark.parametrize("bad", ["sha256:../../x", "sha256:" + "0" * 63, GOOD.upper(), "",
                                 "sha384:" + "0" * 96])
def test_blob_digests_are_checked_before_they_become_urls(tmp_path, bad, deadline):
    with scripted([]) as (registry, requests):
        with pytest.raises(CosbuildError, match="its digest must be a sha256 digest"):
            registry.blob("x", bad, tmp_path / "blob")
    assert all(p == "/v2/" for _, p, _ in requests) and not (tmp_path / "blob").exists()


def test_a_manifest_that_drips_forever_meets_the_deadline(deadline):
    def drip(handler):
        handler.send_response(200)
        handler.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(300):   # the test's own bound: 30 s
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(0.1)
    with scripted([("/v2/x/manifests/", drip)]) as (registry, _):
        start = time.monotonic()
        with pytest.raises(CosbuildError, match=r"image .*/x:t: the registry's manifest did not "
                                                r"finish within 2 s"):
            registry.manifest(Reference(registry.host, "x", "t"))
        assert time.monotonic() - start < 6


HEAD = b"HTTP/1.1 200 OK\r\nX-Drip: " + b"y" * 40


def dripping(sent: int):
    """An answer whose first `sent` bytes of HEAD come at once, the others one every 0.2 s:
    each read is within the timeout, yet the status line and headers take 13 s (as many as
    http.client allows, 100 headers of 64 KiB, would take weeks)."""
    def answer(handler):
        handler.wfile.write(HEAD[:sent])
        with contextlib.suppress(OSError):
            for n in range(sent, len(HEAD)):   # the test's own bound
                handler.wfile.write(HEAD[n:n + 1])
                handler.wfile.flush()
                time.sleep(0.2)
    return answer


STATUS_LINE = len(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("route, sent, call, message", [
    ("/v2/", 0, lambda r, _: r.base(), "registry {host}: GET http://{host}/v2/ did not finish "
                                       "within 1 s"),
    ("/v2/x/manifests/", 0, lambda r, _: r.manifest(Reference(r.host, "x", "t")),
     "image {host}/x:t: the registry's manifest did not finish within 1 s"),
    ("/v2/x/manifests/", STATUS_LINE, lambda r, _: r.manifest(Reference(r.host, "x", "t")),
     "image {host}/x:t: the registry's manifest did not finish within 1 s"),
    ("/v2/x/manifests/", STATUS_LINE, lambda r, _: r.exists(Reference(r.host, "x", "t")),
     "registry {host}: HEAD http://{host}/v2/x/manifests/t did not finish within 1 s"),
    ("/token", 0, lambda r, _: r.manifest(Reference(r.host, "x", "t")),
     "registry {host}: the answer of token server http://{host}/token did not finish within "
     "1 s"),
    ("/v2/x/blobs/", STATUS_LINE, lambda r, tmp: r.blob("x", GOOD, tmp / "blob", 1, 1.5),
     "download of blob %s from {host}/x did not finish within 1.5 s" % GOOD),
], ids=["ping", "manifest", "manifest-headers", "exists-headers", "token", "blob-headers"])
def test_an_answer_dripping_its_status_line_or_headers_meets_the_deadline(
        tmp_path, route, sent, call, message, no_credentials, deadline):
    """Connecting, the status line, the headers and the body of every answer (the ping, an
    API request, the token server's, a blob's) have one deadline: the timeout, a blob's own."""
    routes = [(route, dripping(sent))]
    with scripted(routes, timeout=1) as (registry, _):
        routes.append(("/v2/x/", challenge(f"http://{registry.host}/token")))
        start = time.monotonic()
        with pytest.raises(CosbuildError) as err:
            call(registry, tmp_path)
        assert time.monotonic() - start < 4
    assert err.value.message == message.format(host=registry.host)
    assert not (tmp_path / "blob").exists()


# --------------------------------------------------------------------------- the token flow

def challenge(realm: str):
    def answer(handler):
        if handler.headers.get("Authorization") == "Bearer T0K":
            return send(handler, 200, doc({"layers": []}))
        send(handler, 401, WWW_Authenticate=f'Bearer realm="{realm}",service="test"')
    return answer


def forever(chunk: bytes, pause: float):
    def answer(handler):
        handler.send_response(200)
        handler.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(2000):   # the test's own bound: 2000 chunks
                handler.wfile.write(chunk)
                handler.wfile.flush()
                time.sleep(pause)
    return answer


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "no-auth.json"))


@pytest.mark.parametrize("answer, message", [
    (b"[]", "is not valid: it must be an object, not a list"),
    (b'["T0K"]', "is not valid: it must be an object, not a list"),
    (b'"T0K"', 'is not valid: it must be an object, not "T0K"'),
    (b"{}", "is not valid: it has no token"),
    (b'{"token": ""}', "is not valid: it has no token"),
    (b'{"token": 5}', "is not valid: token must be a token (visible ASCII), not 5"),
    (b'{"token": ["T0K"]}', "is not valid: token must be a token (visible ASCII), not a list"),
    (b'{"access_token": {"a": 1}}', "access_token must be a token (visible ASCII), not an object"),
    (b'{"token": "T0K\\r\\nX-Evil: 1"}', "token must be a token (visible ASCII)"),
    (b'{"token": "T 0K"}', "token must be a token (visible ASCII)"),
    (b"not json", "is not valid: not JSON"),
    (b"[" * 100000, "is not valid: not JSON"),
    (forever(b"x" * 65536, 0), "is not valid: larger than 1048576 bytes"),
    (forever(b" ", 0.1), "did not finish within 2 s"),
])
def test_token_answers_are_bounded_and_checked(answer, message, no_credentials, deadline):
    routes = [("/token", answer)]
    with scripted(routes) as (registry, requests):
        realm = f"http://{registry.host}/token"
        routes.insert(0, ("/v2/x/", challenge(realm)))
        start = time.monotonic()
        with pytest.raises(CosbuildError) as err:
            registry.manifest(Reference(registry.host, "x", "t"))
        assert time.monotonic() - start < 6
    assert str(err.value).startswith(f"registry {registry.host}: the answer of token server "
                                     f"{realm} ")
    assert message in str(err.value)
    assert [a for _, p, a in requests if p.startswith("/v2/x/")] == [None]


@pytest.mark.parametrize("answer", [b'{"token": "T0K"}', b'{"access_token": "T0K", "x": [[]]}',
                                    b'{"token": "", "access_token": "T0K"}'])
def test_token_answers_that_are_right(answer, no_credentials, deadline):
    routes = [("/token", answer)]
    with scripted(routes) as (registry, requests):
        routes.insert(0, ("/v2/x/", challenge(f"http://{registry.host}/token")))
        assert registry.manifest(Reference(registry.host, "x", "t")).layers == ()
    assert requests[-1][2] == "Bearer T0K"


@pytest.mark.parametrize("realm", ["file://{secret}", "FILE://{secret}", "file:{secret}",
                                   "{secret}", "ftp://127.0.0.1:1/token",
                                   "data:,%7B%22token%22%3A%22T0K%22%7D", "", "//{host}/token",
                                   "http:///token", "javascript:alert(1)"])
def test_token_realms_other_than_http_are_refused(tmp_path, realm, no_credentials, deadline):
    secret = tmp_path / "secret.json"
    secret.write_text('{"token": "SECRET"}')
    routes = []
    with scripted(routes) as (registry, requests):
        realm = realm.format(secret=secret, host=registry.host)
        routes.insert(0, ("/v2/x/", challenge(realm)))
        with pytest.raises(CosbuildError) as err:
            registry.manifest(Reference(registry.host, "x", "t"))
    assert str(err.value).startswith(f"registry {registry.host}: the token realm {realm!r} is "
                                     "not an http(s) URL: refused")
    assert [a for _, _, a in requests if a] == []


def test_the_client_reads_no_url_but_http(tmp_path, deadline):
    secret = tmp_path / "secret"
    secret.write_text("SECRET")
    with scripted([]) as (registry, _):
        for url in (f"file://{secret}", f"FILE://{secret}", f"ftp://127.0.0.1:1/{secret.name}"):
            with pytest.raises(CosbuildError, match=r"cannot reach registry .*unknown url type"):
                with registry.request("GET", url, "x"):
                    pass


def test_a_blob_redirected_to_a_local_file_is_not_read(tmp_path, deadline):
    secret = tmp_path / "secret"
    secret.write_text("x")   # GOOD is its digest: read, it would pass
    redirect = functools.partial(send, code=302, Location=f"file://{secret}")
    with scripted([("/v2/x/blobs/", lambda h: redirect(h))]) as (registry, _):
        with pytest.raises(CosbuildError, match=r"cannot download x@sha256:.*HTTP 302"):
            registry.blob("x", GOOD, tmp_path / "blob", 1)
    assert not (tmp_path / "blob").exists()


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1:1/up",
                                      "data:,x", "file:relative"])
def test_an_upload_location_other_than_http_is_refused(tmp_path, location, deadline):
    post = functools.partial(send, code=202, Location=location)
    with scripted([("/v2/x/blobs/uploads/", lambda h: post(h))]) \
            as (registry, requests):
        with pytest.raises(CosbuildError, match=re.escape(
                f"registry {registry.host}: the upload location {location!r} is not an "
                "http(s) URL: refused")):
            registry.upload("x", b"data")
    assert [m for m, _, _ in requests if m == "PUT"] == []


# --------------------------------------------------------------------------- broken HTTP

@contextlib.contextmanager
def raw_server(replies: list[bytes]):
    """127.0.0.1 answering its connections, one after another, with `replies` as they are
    (the first one is the client's TLS attempt: an insecure registry is tried with TLS)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve():
        with contextlib.suppress(OSError):
            for reply in [b""] + replies:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(5)
                    conn.recv(65536)
                    conn.sendall(reply)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        thread.join(10)


PING = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


@pytest.mark.parametrize("replies, reason", [
    ([b"garbage\r\n\r\n"], "garbage"),
    ([b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n"], "got more than 100 headers"),
    ([PING, b"nonsense\r\n\r\n"], "nonsense"),
    ([PING, b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n"], "got more than 100 headers"),
    ([PING, b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000 + b"\r\n\r\n"], "got more than 65536 bytes"),
    ([PING, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc"], "IncompleteRead"),
    ([PING, b"HTTP/1.1 401 No\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:1/t\"\r\n"
            b"Content-Length: 0\r\n\r\n"], "no token from http://127.0.0.1:1/t"),
    ([PING, b""], "Remote end closed connection without response"),
])
def test_broken_http_answers_are_clear_errors(replies, reason, no_credentials, deadline):
    with raw_server(replies) as host:
        with pytest.raises(CosbuildError, match=re.escape(reason)) as err:
            Registry(host, insecure=True, timeout=2).manifest(Reference(host, "x", "t"))
    assert f"registry {host}" in str(err.value)


@pytest.mark.parametrize("realm", ["http://127.0.0.1/a b", "http://127.0.0.1/\u00e9",
                                   "http://[::1/t", "http://127.0.0.1/\x7f"])
def test_token_realms_a_request_line_cannot_carry_are_refused(realm, no_credentials, deadline):
    routes = []
    with scripted(routes) as (registry, requests):
        routes.append(("/v2/x/", challenge(realm)))
        with pytest.raises(CosbuildError, match=re.escape(
                f"the token realm {realm!r} is not an http(s) URL: refused")):
            registry.manifest(Reference(registry.host, "x", "t"))


# --------------------------------------------------------------------------- the auth file

@pytest.mark.parametrize("content, reason", [
    ("[]", "'list' object has no attribute 'get'"),
    ('{"auths": [1]}', "'list' object has no attribute 'items'"),
    ('{"auths": {"reg.io": "user:pw"}}', "'str' object has no attribute 'get'"),
    ('{"auths": {"reg.io": {"auth": 5}}}', "argument should be a bytes-like object"),
    ('{"auths": {"reg.io": {"auth": "abc"}}}', "Incorrect padding"),
    ('{"auths": {"reg.io": {"auth": "/w=="}}}', "can't decode byte 0xff"),
    ('{"auths": {"reg.io": {"username": 5}}}', "has a user or password that is not text"),
    ('{"auths": {"reg.io": {"username": "u", "password": ["p"]}}}', "that is not text"),
    ('{"auths": {"reg.io": {"username": "u\\r\\nX-Evil: 1"}}}', "that is not text"),
])
def test_auth_files_of_the_wrong_shape_are_clear_errors(tmp_path, content, reason):
    auth = tmp_path / "auth.json"
    auth.write_text(content)
    with pytest.raises(CosbuildError) as err:
        credentials("reg.io", "x", {"REGISTRY_AUTH_FILE": str(auth)})
    assert err.value.file == str(auth)
    assert err.value.message.startswith("cannot read the container auth file: ")
    assert reason in err.value.message


def test_auth_file_entries_for_other_registries_are_not_looked_at(tmp_path):
    auth = tmp_path / "auth.json"
    auth.write_text('{"auths": {"other.io": {"auth": 5}, "reg.io": {"username": "u"}}}')
    assert credentials("reg.io", "x", {"REGISTRY_AUTH_FILE": str(auth)}) == ("u", "")
