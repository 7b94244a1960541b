"""The shared build cache and docker repositories against a real registry (Debian's
docker-registry on 127.0.0.1): machine A builds and pushes, fresh machines with empty image
stores only pull, clients install from the published repository, and a registry that is
down makes a push fail clearly while the local build stays complete."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from cosbuild.oci import registry as oci
from cosbuild.repos import signing

from .buildtree import SMALL_TREE
from .conftest import free_port, registry_server, write_files
from .test_build_integration import cosbuild, members, ran, read_member

pytestmark = pytest.mark.integration

ALL = {"build:distro/base", "build:apps/app", "build:apps/pd", "build:system/fin",
       "build:virtual/meta"}
WITH_IMAGES = ALL - {"build:virtual/meta"}


def env_for(**settings) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("COSBUILD_") and k != "CONTAINERS_STORAGE_CONF"}
    return {**env, **{f"COSBUILD_{k.upper()}": v for k, v in settings.items()}}


def remove_images(prefix: str, storage: list[str] = ()) -> None:
    """Remove the images whose names start with `prefix` (only those this test made)."""
    out = subprocess.run(["buildah", *storage, "images", "--json"], capture_output=True,
                         text=True).stdout
    for image in json.loads(out or "null") or []:
        if any(n.startswith(prefix) for n in image.get("names") or []):
            subprocess.run(["buildah", *storage, "rmi", "-f", image["id"]], capture_output=True)


@contextlib.contextmanager
def empty_image_store(folder):
    """A machine of its own: buildah storage that starts empty, removed afterwards."""
    graph, run = folder / "graph", folder / "run"
    folder.mkdir(parents=True)
    conf = folder / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{graph}"\nrunroot = "{run}"\n')
    storage = ["--root", str(graph), "--runroot", str(run)]
    try:
        yield {"CONTAINERS_STORAGE_CONF": str(conf)}
    finally:
        # this store is private to the test: everything in it is ours
        subprocess.run(["buildah", *storage, "rmi", "--all", "--force"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def outputs(root) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "build").iterdir())
            if p.name.endswith((".package.tar.zst", ".metadata.yaml"))}


def steps_run(root) -> list[str]:
    """Lines of the build logs that show a prelude or step command running."""
    return [line for log in (root / "build/logs").glob("*.log")
            for line in log.read_text().splitlines() if " run --isolation" in line]


@pytest.fixture(scope="module")
def cache_keys(tmp_path_factory) -> Path:
    keys = tmp_path_factory.mktemp("cache-keys") / "keys"
    signing.generate(keys)
    return keys


@pytest.fixture(scope="module")
def machine_a(tmp_path_factory, registry, cache_keys):
    """Machine A builds the small tree and pushes to a cache repository of the registry,
    signing what it pushes."""
    name = uuid.uuid4().hex[:8]
    cache = f"{registry}/cosbuild-test-{name}/cache"
    env = env_for(image_repository=cache, push="1", insecure_registries=registry,
                  signing_keys=str(cache_keys))
    root = write_files(tmp_path_factory.mktemp("machine-a"), SMALL_TREE)
    try:
        proc = cosbuild(root, "run", "-n", "2", "-P", "thread", "build", env=env)
        assert ran(proc) == ALL
        assert proc.stdout.count(f"built, pushed to {cache}") == len(WITH_IMAGES), proc.stdout
        yield root, cache, env
    finally:
        remove_images(f"{cache}:")


def test_fresh_clone_only_pulls_and_builds_byte_identical(machine_a, registry, tmp_path):
    root_a, cache, _ = machine_a
    root_b = tmp_path / "machine-b"
    shutil.copytree(root_a / "tree", root_b / "tree")
    with empty_image_store(tmp_path / "store-b") as storage:
        env = {**env_for(image_repository=cache, insecure_registries=registry), **storage}
        assert subprocess.run(["buildah", "images", "--json"], env=env, capture_output=True,
                              text=True).stdout.strip() in ("null", "[]")
        proc = cosbuild(root_b, "run", "-n", "2", "-P", "thread", "build", env=env)
        assert ran(proc) == ALL, proc.stdout
        assert proc.stdout.count(f"images pulled from {cache}") == len(WITH_IMAGES), proc.stdout
        assert "built" not in proc.stdout
        assert steps_run(root_b) == []
        assert not list((root_b / "build/logs").glob("*bootstrap*"))
        # artifacts and metadata (which names the cache image) as if B had built them
        assert outputs(root_b) == outputs(root_a)
        # the pulled images are B's local images now: nothing more to do
        assert ran(cosbuild(root_b, "run", "build", env=env)) == set()


def tags_of(host: str, path: str) -> list[str]:
    """The tags of repository `path` on the registry at `host` (its tags/list answer)."""
    with oci.Registry(host, insecure=True).request("GET", f"{path}/tags/list", path) as answer:
        return json.load(answer)["tags"]


def test_signed_cache_is_pulled_by_the_digests_it_vouches_for(machine_a, registry, cache_keys,
                                                              tmp_path):
    """A trusting machine pulls the images the cache's TUF metadata names, by digest: a tag
    moved to another image afterwards changes nothing."""
    root_a, cache, _ = machine_a
    host, _, path = cache.partition("/")
    remote = oci.Registry(host, insecure=True)
    tags = set(tags_of(host, path))
    assert {signing.root_name(1), "tuf-targets.json", "tuf-snapshot.json",
            "tuf-timestamp.json"} <= tags
    # move app's package tag onto base's package image
    meta = {n: yaml.safe_load((root_a / f"build/{n}.metadata.yaml").read_text())
            for n in ("app-apps-1.0", "base-distro-1")}
    app, base = (oci.parse_reference(f"{cache}:{meta[n]['build_hash']}")
                 for n in ("app-apps-1.0", "base-distro-1"))
    moved, original = remote.raw_manifest(base), remote.raw_manifest(app)
    remote.put_manifest(app, moved, json.loads(moved)["mediaType"])
    try:
        root_t = tmp_path / "machine-t"
        shutil.copytree(root_a / "tree", root_t / "tree")
        with empty_image_store(tmp_path / "store-t") as storage:
            env = {**env_for(image_repository=cache, insecure_registries=registry,
                             cache_trusted_root=str(cache_keys / "root.json")), **storage}
            env["HOME"] = str(tmp_path / "home")   # its own trust state
            proc = cosbuild(root_t, "run", "-n", "2", "-P", "thread", "build", env=env)
            assert proc.stdout.count(f"images pulled from {cache}") == len(WITH_IMAGES), \
                proc.stdout
            assert steps_run(root_t) == []
            assert outputs(root_t) == outputs(root_a)
    finally:   # the other tests read this cache unsigned
        remote.put_manifest(app, original, json.loads(original)["mediaType"])


def test_signed_cache_refuses_tampered_and_unsigned_metadata(machine_a, registry, cache_keys,
                                                             tmp_path):
    root_a, cache, _ = machine_a
    host, _, path = cache.partition("/")
    remote = oci.Registry(host, insecure=True)
    copy = f"{host}/cosbuild-test-{uuid.uuid4().hex[:8]}/cache"   # the same images, unsigned
    tag = yaml.safe_load((root_a / "build/base-distro-1.metadata.yaml").read_text())["build_hash"]
    for t in (tag, f"{tag}-builder"):
        subprocess.run(["buildah", "push", "--quiet", "--tls-verify=false", f"{cache}:{t}",
                        f"docker://{copy}:{t}"], check=True)
    # the signed cache with its timestamp edited (one more version, the old signature)
    work = tmp_path / "work"
    work.mkdir()
    timestamp = oci.parse_reference(f"{cache}:{oci.tag_for('tuf-timestamp.json')}")
    oci.pull_file(remote, timestamp, "tuf-timestamp.json", work / "tuf-timestamp.json")
    doc = json.loads((work / "tuf-timestamp.json").read_text())
    doc["signed"]["version"] += 1
    (work / "tuf-timestamp.json").write_text(json.dumps(doc))
    signed_timestamp = work / "signed"
    signed_timestamp.mkdir()
    oci.pull_file(remote, timestamp, "tuf-timestamp.json", signed_timestamp / "tuf-timestamp.json")

    for source, words in ((copy, ("not signed", "tuf-timestamp.json")),
                          (cache, ("signature", "tuf-timestamp.json"))):
        if source == cache:
            oci.push_file(remote, timestamp, work / "tuf-timestamp.json", work)
        root_u = tmp_path / f"machine-{source.split('/')[1]}"
        shutil.copytree(root_a / "tree", root_u / "tree")
        with empty_image_store(root_u / "store") as storage:
            env = {**env_for(image_repository=source, insecure_registries=registry,
                             cache_trusted_root=str(cache_keys / "root.json")), **storage}
            env["HOME"] = str(tmp_path / "home")
            proc = cosbuild(root_u, "run", "build:distro/base", env=env, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "Traceback" not in out, out
        assert f"cache {source}" in out and all(w in out for w in words), out
        assert steps_run(root_u) == [] and not (root_u / "build/base-distro-1.package.tar.zst"
                                                ).exists()
    oci.push_file(remote, timestamp, signed_timestamp / "tuf-timestamp.json", signed_timestamp)


def test_pull_repository_feeds_another_image_repository(machine_a, registry, tmp_path):
    """A read-only cache: images pulled from it are tagged as the local image repository's."""
    root_a, cache, _ = machine_a
    root_c = tmp_path / "machine-c"
    shutil.copytree(root_a / "tree", root_c / "tree")
    with empty_image_store(tmp_path / "store-c") as storage:
        env = {**env_for(pull_repositories=f"{registry}/cosbuild-test-nothing/cache,{cache}",
                         insecure_registries=registry), **storage}
        proc = cosbuild(root_c, "run", "build:apps/app", env=env)
        assert ran(proc) == {"build:distro/base", "build:apps/app"}
        assert proc.stdout.count(f"images pulled from {cache}") == 2
        assert steps_run(root_c) == []
        for name in ("base-distro-1.package.tar.zst", "app-apps-1.0.package.tar.zst"):
            assert (root_c / "build" / name).read_bytes() == (root_a / "build" / name).read_bytes()
        meta = yaml.safe_load((root_c / "build/app-apps-1.0.metadata.yaml").read_text())
        assert meta["package_cacheimage"] == f"luet/cache:{meta['build_hash']}"
        listed = subprocess.run(["buildah", "images", "--format", "{{.Name}}:{{.Tag}}"], env=env,
                                capture_output=True, text=True).stdout
        assert f"localhost/luet/cache:{meta['build_hash']}" in listed


def test_docker_repository_publish_and_install(machine_a, registry, tmp_path):
    root_a, cache, env = machine_a
    target = cache.replace("/cache", "/repo")
    proc = cosbuild(root_a, "create-repo", "--type", "docker", "--output", target, env=env)
    assert "updated" in proc.stdout
    assert "unchanged" in cosbuild(root_a, "create-repo", "--type", "docker", "--output", target,
                                   env=env).stdout
    host, _, path = target.partition("/")
    tags = tags_of(host, path)
    assert {"repository.yaml", "tree.tar.zst", "compilertree.tar.zst",
            "repository.meta.yaml.tar.zst", "app-apps-1.0", "app-apps-1.0.metadata.yaml",
            "base-distro-1", "meta-virtual-1"} <= set(tags)

    # a package image is a standard image: unpacked, it is the package's files
    unpacked = tmp_path / "unpacked"
    oci.unpack(f"{target}:app-apps-1.0", unpacked, oci.Registries([host]))
    artifact = root_a / "build/app-apps-1.0.package.tar.zst"
    assert (unpacked / "usr/bin/hello").read_bytes() == read_member(artifact, "usr/bin/hello")
    assert sorted(str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if not p.is_dir()) \
        == sorted(name for name, m in members(artifact).items() if not m.isdir())

    config = tmp_path / "luet.yaml"
    # distro/base is a bootstrapped root with its /dev: the client is told it may be
    config.write_text(yaml.safe_dump({"repositories": [
        {"name": "shared", "type": "docker", "urls": [target], "insecure": True,
         "allow_devices": ["distro/base"]}]}))
    root = tmp_path / "root"
    proc = cosbuild(root_a, "install", "--config", str(config), "--root", str(root), "apps/app",
                    env=env_for())
    assert "installed: distro/base@1, apps/app@1.0" in proc.stdout
    assert (root / "usr/bin/hello").read_bytes() == read_member(artifact, "usr/bin/hello")
    assert os.getxattr(root / "usr/local/bin/capped", "security.capability")
    assert (root / "var/lib/app-finalized").read_text() == "finalized base\n"
    assert "apps/pd@1  [shared]" in cosbuild(root_a, "search", "--config", str(config),
                                             env=env_for()).stdout

    # without `insecure`, TLS is required: the error says what to do
    config.write_text(yaml.safe_dump({"repositories": [
        {"name": "shared", "type": "docker", "urls": [target]}]}))
    proc = cosbuild(root_a, "install", "--config", str(config), "--root", str(tmp_path / "r2"),
                    "apps/app", env=env_for(), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"cannot reach registry {host}" in proc.stderr and "insecure: true" in proc.stderr


def test_registry_down_during_push(registry, tmp_path):
    """Push to a registry that is down: a clear error, the local result complete; once the
    registry is up, running the build again pushes and builds nothing."""
    port = free_port()
    cache = f"127.0.0.1:{port}/cosbuild-test-{uuid.uuid4().hex[:8]}/cache"
    env = env_for(image_repository=cache, push="1", insecure_registries=f"127.0.0.1:{port}")
    root = write_files(tmp_path / "machine", SMALL_TREE)
    try:
        proc = cosbuild(root, "run", "build:distro/base", env=env, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "Traceback" not in out
        assert f"cannot push {cache}:" in out and f"to registry 127.0.0.1:{port}" in out
        assert "connection refused" in out.lower()
        assert "run the build again to retry the push" in out
        artifact = root / "build/base-distro-1.package.tar.zst"
        meta = yaml.safe_load((root / "build/base-distro-1.metadata.yaml").read_text())
        assert meta["checksums"]["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
        assert list((root / "build").glob("**/.*.tmp")) == []

        with registry_server(tmp_path / "late-registry", port):
            proc = cosbuild(root, "run", "build:distro/base", env=env)
            assert f"images reused, pushed to {cache}" in proc.stdout
            assert oci.Registry(f"127.0.0.1:{port}", insecure=True).exists(
                oci.parse_reference(f"{cache}:{meta['build_hash']}-builder"))
    finally:
        remove_images(f"{cache}:")
