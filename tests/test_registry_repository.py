"""Docker repositories in luet 0.20's layout, against a real registry (Debian's
docker-registry on 127.0.0.1), without buildah: artifacts are written from plain folders as
in test_repository_client.py.

Both directions are checked with code of their own here, written from luet's source
(installer/repository_docker.go, installer/client/docker.go, api/core/image/create.go), not
from cosbuild's registry client: what cosbuild publishes reads as luet reads it, and a
repository published as luet publishes it installs with cosbuild."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import tarfile
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
import zstandard

from cosbuild.errors import CosbuildError
from cosbuild.oci.registry import Registries
from cosbuild.repos import transaction
from cosbuild.repos.config import RepoConfig
from cosbuild.repos.create import publish_docker
from cosbuild.settings import RepoInfo

from .conftest import free_port, registry_server
from .test_repository_client import DB_SKIP, Workspace, lib_and_app, ref, snapshot

pytestmark = pytest.mark.integration

# what `docker push` of luet's images gives (luet loads them into docker, then pushes)
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


# --------------------------------------------------------------------------- luet's side

class LuetSide:
    """A docker repository `HOST/PATH` as luet 0.20 reads and writes it, over plain HTTP."""

    def __init__(self, host: str, path: str):
        self.api = f"http://{host}/v2/{path}"

    def _get(self, url: str, accept: str = "") -> bytes:
        request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def layer(self, tag: str) -> bytes:
        """The uncompressed tar of a one-layer image, checked as go-containerregistry does."""
        manifest = json.loads(self._get(f"{self.api}/manifests/{tag}", MANIFEST))
        assert manifest["mediaType"] == MANIFEST and "annotations" not in manifest
        assert manifest["config"]["mediaType"] == CONFIG
        [layer] = manifest["layers"]
        assert layer["mediaType"] == LAYER
        config, blob = (self._blob(d) for d in (manifest["config"], layer))
        config = json.loads(config)
        assert config["os"] == "linux" and not config["config"].get("Labels")
        tar = gzip.decompress(blob)   # luet's go-containerregistry gunzips every layer
        assert config["rootfs"] == {"type": "layers",
                                    "diff_ids": [f"sha256:{hashlib.sha256(tar).hexdigest()}"]}
        return tar

    def _blob(self, descriptor: dict) -> bytes:
        data = self._get(f"{self.api}/blobs/{descriptor['digest']}")
        assert len(data) == descriptor["size"]
        assert f"sha256:{hashlib.sha256(data).hexdigest()}" == descriptor["digest"]
        return data

    def file(self, name: str) -> bytes:
        """DockerClient.DownloadFile: image `:<name>` (`+` -> `-`), the file /<name> in it."""
        members = untar(self.layer(name.replace("+", "-")))
        assert list(members) == [name], members
        return members[name][1]

    def push(self, tag: str, tar: bytes) -> None:
        """GenerateFinalImage + docker push: a one-layer image of `tar`, gzip at Go's speed
        (go-containerregistry's default), so its blobs are not cosbuild's."""
        blob = gzip.compress(tar, compresslevel=1, mtime=0)
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z", "created_by": "luet",
                         "comment": "Custom image"}],
            "rootfs": {"type": "layers",
                       "diff_ids": [f"sha256:{hashlib.sha256(tar).hexdigest()}"]}}).encode()
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                    "config": {"mediaType": CONFIG, **self._upload(config)},
                    "layers": [{"mediaType": LAYER, **self._upload(blob)}]}
        urllib.request.urlopen(urllib.request.Request(
            f"{self.api}/manifests/{tag}", data=json.dumps(manifest).encode(), method="PUT",
            headers={"Content-Type": MANIFEST}), timeout=30).close()

    def push_file(self, path: Path) -> None:
        """pushImageFromArtifact: the file alone in a tar (moby's archive.Tar of a folder)."""
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
            tar.add(path, arcname=path.name)
        self.push(path.name.replace("+", "-"), out.getvalue())

    def _upload(self, data: bytes) -> dict:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        with urllib.request.urlopen(urllib.request.Request(
                f"{self.api}/blobs/uploads/", method="POST"), timeout=30) as response:
            location = response.headers["Location"]
        url = f"{location}{'&' if '?' in location else '?'}digest={digest}"
        if not url.startswith("http"):
            url = self.api.split("/v2/")[0] + url
        # octet-stream: the registry would read a form-encoded body as a form
        urllib.request.urlopen(urllib.request.Request(
            url, data=data, method="PUT", headers={"Content-Type": "application/octet-stream"}),
            timeout=30).close()
        return {"digest": digest, "size": len(data)}


def decompress(data: bytes) -> bytes:
    """A repository file or artifact as containerd's DecompressStream reads it."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return data


def untar(data: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: (m, tar.extractfile(m).read() if m.isreg() else None) for m in tar}


def entry_view(members: dict) -> dict:
    """What a package's files are: type, mode, owner, link target, content."""
    return {name: (m.type, m.mode, m.uid, m.gid, m.linkname, data)
            for name, (m, data) in members.items()}


# --------------------------------------------------------------------------- fixtures

@pytest.fixture
def ws(project) -> Workspace:
    return Workspace(project.path)


@pytest.fixture
def target(registry) -> str:
    return f"{registry}/cosbuild-test-{uuid.uuid4().hex[:8]}/repo"


def packages(ws: Workspace) -> Path:
    lib_and_app(ws)
    ws.add("plus", "1.0+2", {"etc/plus": "plus\n"})   # `+` is not allowed in a tag
    return ws.publish()


def publish(ws: Workspace, build: Path, target: str) -> bool:
    host = target.split("/", 1)[0]
    return publish_docker(ws.project(), build, target, RepoInfo(name="test"), Registries([host]))


def docker(target: str) -> RepoConfig:
    return RepoConfig(name="shared", urls=(target,), type="docker", insecure=True)


def luet_side(target: str) -> LuetSide:
    host, _, path = target.partition("/")
    return LuetSide(host, path)


# --------------------------------------------------------------------------- tests

def test_registry_repository_reads_as_luet_reads_it(ws, target, tmp_path):
    build = packages(ws)
    assert publish(ws, build, target) is True
    luet = luet_side(target)
    repo = yaml.safe_load(luet.file("repository.yaml"))
    assert repo["type"] == "docker" and repo["urls"] == [target] and repo["revision"] == 1
    files = {}
    for kind in ("tree", "meta", "compilertree"):
        entry = repo["repo_files"][kind]
        data = luet.file(entry["filename"])
        assert hashlib.sha256(data).hexdigest() == entry["checksums"]["sha256"]
        files[kind] = untar(decompress(data))
    index = yaml.safe_load(files["meta"]["repository.meta.yaml"][1])["index"]
    assert sorted(e["compilationspec"]["package"]["name"] for e in index) == ["app", "lib", "plus"]
    for entry in index:
        p = entry["compilationspec"]["package"]
        assert f"{p['category']}/{p['name']}/{p['version']}/definition.yaml" in files["tree"]
        stem = f"{p['name']}-{p['category']}-{p['version']}"
        # DownloadArtifact: image <repo>:<ImageID>, its files are the package
        layer = untar(luet.layer(stem.replace("+", "-")))
        artifact = untar(decompress((build / Path(entry["path"]).name).read_bytes()))
        assert entry_view(layer) == entry_view(artifact)
        # luet's `files` are the tar member names
        assert sorted(n for n, (m, _) in layer.items() if not m.isdir()) == sorted(entry["files"])
        # the metadata beside it (luet's build --pull-repository reads it)
        assert luet.file(f"{stem}.metadata.yaml") == (build / f"{stem}.metadata.yaml").read_bytes()

    root = tmp_path / "root"
    done = transaction.install(root, [ref("test/app"), ref("test/plus")], [docker(target)])
    assert [str(c) for c in done] == ["test/lib@1.0", "test/app@1.0", "test/plus@1.0+2"]
    assert snapshot(root, skip=DB_SKIP) == ws.expected_root(("lib", "1.0"), ("app", "1.0"),
                                                            ("plus", "1.0+2"))
    assert publish(ws, build, target) is False   # same content: nothing to publish

    # reproducible: published again elsewhere, every image but repository.yaml (which names
    # its URL) is the same, byte for byte
    again = target.replace("/repo", "/again")
    assert publish(ws, build, again) is True
    packages_ = [e["compilationspec"]["package"] for e in index]
    tags = [repo["repo_files"][k]["filename"] for k in ("tree", "meta", "compilertree")] + [
        f"{p['name']}-{p['category']}-{p['version']}{end}".replace("+", "-")
        for p in packages_ for end in ("", ".metadata.yaml")]
    assert [manifest_digest(again, t) for t in tags] == [manifest_digest(target, t) for t in tags]


def test_registry_repository_published_as_luet_does_installs(ws, target, tmp_path):
    """luet's package images are its artifacts' files in a layer of its own making: the
    index's artifact sha256 matches nothing in the registry, the layer digest is checked."""
    build = packages(ws)
    luet = luet_side(target)
    repo = yaml.safe_load((build / "repository.yaml").read_text())
    index = untar(decompress((build / repo["repo_files"]["meta"]["filename"]).read_bytes()))
    for entry in yaml.safe_load(index["repository.meta.yaml"][1])["index"]:
        p = entry["compilationspec"]["package"]
        stem = f"{p['name']}-{p['category']}-{p['version']}"
        luet.push(stem.replace("+", "-"),
                  decompress((build / Path(entry["path"]).name).read_bytes()))
        luet.push_file(build / f"{stem}.metadata.yaml")
    for kind in ("tree", "compilertree", "meta"):
        luet.push_file(build / repo["repo_files"][kind]["filename"])
    luet.push_file(build / "repository.yaml")

    by_disk, by_docker = tmp_path / "root-disk", tmp_path / "root-docker"
    transaction.install(by_disk, [ref("test/app"), ref("test/plus")],
                   [RepoConfig(name="shared", urls=(str(build),))])
    done = transaction.install(by_docker, [ref("test/app"), ref("test/plus")], [docker(target)])
    assert [str(c) for c in done] == ["test/lib@1.0", "test/app@1.0", "test/plus@1.0+2"]
    assert snapshot(by_docker) == snapshot(by_disk)
    # and cosbuild publishes the next revision over it
    assert publish(ws, build, target) is True
    assert yaml.safe_load(luet.file("repository.yaml"))["revision"] == repo["revision"] + 1


def manifest_digest(target: str, tag: str) -> str:
    host, _, path = target.partition("/")
    head = urllib.request.Request(f"http://{host}/v2/{path}/manifests/{tag}", method="HEAD",
                                  headers={"Accept": MANIFEST})
    with urllib.request.urlopen(head, timeout=30) as response:
        return response.headers["Docker-Content-Digest"]


def delete_tag(target: str, tag: str) -> None:
    host, _, path = target.partition("/")
    urllib.request.urlopen(urllib.request.Request(
        f"http://{host}/v2/{path}/manifests/{manifest_digest(target, tag)}", method="DELETE"),
        timeout=30).close()


def corrupt_layer(target: str, tag: str, folder: Path) -> None:
    """Flip a byte of the layer blob of `tag` in the registry's storage."""
    host, _, path = target.partition("/")
    request = urllib.request.Request(f"http://{host}/v2/{path}/manifests/{tag}",
                                     headers={"Accept": MANIFEST})
    with urllib.request.urlopen(request, timeout=30) as response:
        digest = json.load(response)["layers"][0]["digest"].split(":")[1]
    [blob] = folder.glob(f"data/docker/registry/v2/blobs/sha256/{digest[:2]}/{digest}/data")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    ("missing tag", r"cannot get package app-test-1\.0 from docker repository {target}: "
                    r"image {target}:app-test-1\.0 does not exist"),
    ("wrong digest", r"cannot get package app-test-1\.0 from docker repository {target}: "
                     r"blob sha256:\w+ of .* does not match its digest"),
    ("registry down", r"cannot get repository\.yaml from docker repository {target}: "
                      r"cannot reach registry 127\.0\.0\.1:\d+: Connection refused"),
])
def test_registry_repository_bad_input(ws, tmp_path, damage, message):
    """A registry of its own, whose storage is damaged. One clear error; nothing installed."""
    build = packages(ws)
    folder, port = tmp_path / "registry", free_port()
    target = f"127.0.0.1:{port}/bad/repo"
    root = tmp_path / "root"
    with contextlib.ExitStack() as server:
        server.enter_context(registry_server(folder, port))
        publish(ws, build, target)
        if damage == "missing tag":
            delete_tag(target, "app-test-1.0")
        elif damage == "wrong digest":
            corrupt_layer(target, "app-test-1.0", folder)
        else:
            server.close()
        with pytest.raises(CosbuildError, match=message.format(target=target)) as err:
            transaction.install(root, [ref("test/app")], [docker(target)])
    assert "\n" not in str(err.value)
    assert snapshot(root) == {}
