"""The registry client without a registry: names, credentials, the token flow and download
bounds (against scripted servers), layers with whiteouts, and the cache settings. The real
registry is in test_shared_cache.py and test_registry_repository.py."""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import re
import tarfile

import pytest

from cosbuild import settings
from cosbuild.builds.cache import ImageCache
from cosbuild.cli import _hoist_global_options
from cosbuild.errors import CosbuildError
from cosbuild.oci.layers import apply_layer
from cosbuild.oci.registry import (Reference, Registries, Registry, credentials,
                                   parse_reference, registry_of, tag_for, unpack)

from .conftest import running


# --------------------------------------------------------------------------- names

@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:5000/cos/cache:abc", Reference("127.0.0.1:5000", "cos/cache", "abc")),
    ("quay.io/costoolkit/releases-green", Reference("quay.io", "costoolkit/releases-green", "latest")),
    ("localhost:5000/x@sha256:00ff", Reference("localhost:5000", "x", "sha256:00ff")),
    ("debian:bookworm", Reference("docker.io", "library/debian", "bookworm")),
])
def test_parse_reference(text, expected):
    assert parse_reference(text) == expected
    assert parse_reference(text, tag="t").tag == "t"


def test_registry_of_and_tags():
    assert registry_of("luet/cache") is None            # local storage only
    assert registry_of("registry.example.org/cos/cache") == "registry.example.org"
    assert registry_of("localhost:5000/cache") == "localhost:5000"
    assert tag_for("foo-cat-1.0+2") == "foo-cat-1.0-2"
    with pytest.raises(CosbuildError, match="cannot be an image tag"):
        tag_for("a" * 129)
    with pytest.raises(CosbuildError, match="invalid image reference 'Reg.io/UPPER'"):
        parse_reference("Reg.io/UPPER")


# --------------------------------------------------------------------------- credentials

def _auth(user, password):
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_credentials_from_the_usual_auth_files(tmp_path):
    home, runtime = tmp_path / "home", tmp_path / "run"
    (home / ".docker").mkdir(parents=True)
    (home / ".docker/config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": _auth("hub", "h"), "reg.io": _auth("docker", "d")}}))
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    assert credentials("reg.io", "x", env) == ("docker", "d")
    assert credentials("docker.io", "library/debian", env) == ("hub", "h")
    assert credentials("other.io", "x", env) is None
    (runtime / "containers").mkdir(parents=True)
    (runtime / "containers/auth.json").write_text(json.dumps({"auths": {
        "reg.io": _auth("podman", "p"), "reg.io/team": _auth("team", "t")}}))
    assert credentials("reg.io", "x", env) == ("podman", "p")
    assert credentials("reg.io", "team/cache", env) == ("team", "t")   # the namespace wins
    alone = tmp_path / "alone.json"
    alone.write_text("{not json")
    with pytest.raises(CosbuildError, match="cannot read the container auth file") as err:
        credentials("reg.io", "x", {**env, "REGISTRY_AUTH_FILE": str(alone)})
    assert err.value.file == str(alone)


# --------------------------------------------------------------------------- the token flow

class TokenRegistry(http.server.BaseHTTPRequestHandler):
    """A registry that wants a Bearer token from its token server (both in one)."""

    def do_GET(self):
        self.server.requests.append((self.command, self.path, self.headers.get("Authorization")))
        if self.path.startswith("/token"):
            if self.headers.get("Authorization") != "Basic " + base64.b64encode(b"me:secret").decode():
                return self._answer(401)
            return self._answer(200, json.dumps({"token": "T0K"}).encode())
        if self.path == "/v2/" or self.headers.get("Authorization") != "Bearer T0K":
            return self._answer(401, challenge=True)
        self._answer(200 if self.path.endswith("/manifests/there") else 404)

    do_HEAD = do_GET

    def _answer(self, code, body=b"", challenge=False):
        self.send_response(code)
        if challenge:
            realm = f"http://127.0.0.1:{self.server.server_port}/token"
            self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="test"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_bearer_token_flow(tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TokenRegistry)
    server.requests = []
    with running(server) as url:
        host = url.removeprefix("http://")
        auth = tmp_path / "auth.json"
        auth.write_text(json.dumps({"auths": {host: _auth("me", "secret")}}))
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
        registry = Registry(host, insecure=True)   # plain HTTP: after a failed TLS attempt
        assert registry.exists(parse_reference(f"{host}/team/cache:there"))
        assert not registry.exists(parse_reference(f"{host}/team/cache:missing"))
        tokens = [r for r in server.requests if r[1].startswith("/token")]
        assert len(tokens) == 1 and "scope=repository%3Ateam%2Fcache%3Apull" in tokens[0][1]
        auth.write_text(json.dumps({"auths": {host: _auth("me", "wrong")}}))
        with pytest.raises(CosbuildError, match="token server refused access to team/other"):
            registry.exists(parse_reference(f"{host}/team/other:there"))


def test_unreachable_registry_says_what_to_do():
    with pytest.raises(CosbuildError) as err:
        Registry("127.0.0.1:1").exists(parse_reference("127.0.0.1:1/x:y"))
    assert "cannot reach registry 127.0.0.1:1" in str(err.value)
    assert "mark it insecure" in str(err.value)


class HostileRegistry(http.server.BaseHTTPRequestHandler):
    """A registry whose answers are out of bounds: `server.manifest` and `server.blob`."""

    def do_GET(self):
        body = (b"{}" if self.path == "/v2/" else self.server.manifest
                if "/manifests/" in self.path else self.server.blob)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _manifest(digest: str, size) -> bytes:
    return json.dumps({"schemaVersion": 2, "layers": [{"digest": digest, "size": size}]}).encode()


@pytest.mark.parametrize("manifest, blob, message", [
    (b"[" * (5 << 20), b"", "manifest is not valid (larger than 4194304 bytes)"),
    (b"not json", b"", "manifest is not valid"),
    (_manifest("sha256:../../../etc/passwd", 1), b"", "layers[0].digest must be a sha256 digest"),
    (_manifest("sha256:" + "0" * 64, True), b"", "layers[0].size must be a whole number >= 0"),
    (_manifest("sha256:" + "0" * 64, 10), b"x" * 100, "more than the 10 bytes its descriptor"),
    (_manifest("sha256:" + "0" * 64, 10), b"x" * 4, "4 bytes of the 10 bytes its descriptor"),
])
def test_downloads_are_bounded_by_what_the_manifest_announces(tmp_path, manifest, blob, message):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HostileRegistry)
    server.manifest, server.blob = manifest, blob
    with running(server) as url:
        host = url.removeprefix("http://")
        with pytest.raises(CosbuildError, match=re.escape(message)):
            unpack(f"{host}/x/y:z", tmp_path / "out", Registries([host]))
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- layers

def layer(*entries) -> io.BytesIO:
    """A layer tar from (name, kind, data) with kind file/dir/symlink/hardlink."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind in ("symlink", "hardlink"):
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def tree(root) -> dict[str, str]:
    out = {}
    for here, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(here, name)
            rel = os.path.relpath(path, root)
            out[rel] = ("-> " + os.readlink(path) if os.path.islink(path)
                        else "dir" if os.path.isdir(path) else open(path, "rb").read().decode())
    return out


def test_layers_with_whiteouts_and_opaque_folders(tmp_path):
    apply_layer(layer(("etc", "dir", None), ("etc/a", "file", b"a"), ("etc/b", "file", b"b"),
                      ("opt", "dir", None), ("opt/old", "file", b"old"),
                      ("opt/sub", "dir", None), ("opt/sub/deep", "file", b"deep"),
                      ("bin", "symlink", "usr/bin"), ("f", "file", b"f")), tmp_path, "l1")
    apply_layer(layer(("etc/.wh.a", "file", b""), ("opt/new", "file", b"new"),
                      ("opt/.wh..wh..opq", "file", b""), ("opt/sub", "dir", None),
                      ("f", "dir", None), ("bin", "file", b"now a file"),
                      ("etc/b-link", "hardlink", "etc/b")), tmp_path, "l2")
    assert tree(tmp_path) == {"etc": "dir", "etc/b": "b", "etc/b-link": "b", "opt": "dir",
                              "opt/new": "new", "opt/sub": "dir", "f": "dir", "bin": "now a file"}
    assert os.stat(tmp_path / "etc/b").st_ino == os.stat(tmp_path / "etc/b-link").st_ino


@pytest.mark.parametrize("entries, message", [
    ([("../escape", "file", b"x")], "'..' component"),
    # links are followed inside the root only (tests/test_hostile_root_writes.py): the
    # root has no etc/passwd to link to
    ([("lib", "symlink", "/etc"), ("lnk", "hardlink", "lib/passwd")],
     "hard link 'lnk' to 'lib/passwd', which is not a file of the image"),
])
def test_hostile_layers_are_refused(tmp_path, entries, message):
    with pytest.raises(CosbuildError, match=message):
        apply_layer(layer(*entries), tmp_path / "root", "evil layer")
    assert not (tmp_path / "escape").exists()


# --------------------------------------------------------------------------- settings

def test_cache_settings():
    s = settings.resolve({}, env={"COSBUILD_PULL_REPOSITORIES": "r.io:5000/a,r.io/b",
                                  "COSBUILD_PUSH": "yes", "COSBUILD_INSECURE_REGISTRIES": "r.io:5000",
                                  "COSBUILD_REPO_URLS": "http://a/repo,http://b/repo"})
    assert s.pull_repositories == ("r.io:5000/a", "r.io/b") and s.push
    assert s.insecure_registries == ("r.io:5000",)
    assert s.repo_urls == ("http://a/repo", "http://b/repo")
    assert not settings.resolve({}, env={}).push
    # a flag takes no value: the next word is the command
    words = ["--push", "--image-repository", "r.io/c", "run", "build"]
    assert _hoist_global_options(words) == (words, 3)


@pytest.mark.parametrize("env, message", [
    ({"COSBUILD_PUSH": "1"}, "push is on but the image repository 'luet/cache' is in local storage only"),
    ({"COSBUILD_PULL_REPOSITORIES": "luet/other"}, "pull repository 'luet/other' does not name a registry"),
])
def test_cache_settings_errors(env, message):
    with pytest.raises(CosbuildError, match=message):
        ImageCache(settings.resolve({}, env=env), buildah=None)
