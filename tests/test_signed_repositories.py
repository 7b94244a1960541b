"""TUF-signed repositories (issue #15): key sets, signing, and clients that refuse tampered,
rolled-back, expired and unsigned repositories, against a real HTTP server on 127.0.0.1.

The refusals run the `cosbuild` command as a process (exit code, message, no traceback);
expiry moves its clock with faketime. No containers: fast tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root
from securesystemslib import keys as sslib_keys
from securesystemslib.signer import SSlibKey, SSlibSigner

from cosbuild import settings, tasks
from cosbuild.errors import CosbuildError
from cosbuild.oci.registry import Registries, parse_reference, push_file
from cosbuild.repos import signing, transaction
from cosbuild.repos.config import RepoConfig, TRUST_STATE, repositories
from cosbuild.repos.index import load_repository
from cosbuild.repos.create import create_repo, publish_docker
from cosbuild.repos.transport import RegistryTransport
from cosbuild.settings import RepoInfo, Signing
from cosbuild.tree.project import load_project

from .conftest import REPO
from .test_repository_client import Workspace, lib_and_app, ref, serving, snapshot

EXPIRY = timedelta(days=1)
STATE = TRUST_STATE


@pytest.fixture
def ws(project) -> Workspace:
    return Workspace(project.path)


@pytest.fixture
def keys(tmp_path) -> Path:
    signing.generate(tmp_path / "keys")
    return tmp_path / "keys"


def sign(ws: Workspace, keys: Path, out: str = "build", refresh: bool = False) -> bool:
    with contextlib.chdir(ws.base):
        return create_repo(ws.project(out), Path(out),
                           RepoInfo(name="test", signing=Signing(keys, EXPIRY, refresh)))


def published(ws: Workspace, keys: Path) -> Path:
    lib_and_app(ws)
    repo = ws.publish()
    assert sign(ws, keys)
    return repo


def cosbuild(*args: str, faketime: str | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "cosbuild.cli", *args]
    if faketime:
        argv = ["faketime", "-f", faketime, *argv]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def install(url: str, root: Path, trusted: Path, *, command: str = "install",
            faketime: str | None = None) -> subprocess.CompletedProcess:
    return cosbuild(command, "--repo", url, "--root", str(root), "--trusted-root",
                    str(trusted), *(["test/app"] if command == "install" else []),
                    faketime=faketime)


def content(root: Path) -> dict:
    """The root without the trust state (which a refused run may have refreshed) and the
    folders it is in."""
    parents = {str(p) for p in Path(STATE).parents}
    return {k: v for k, v in snapshot(root, skip=(STATE,)).items()
            if not (k in parents and v[0] == "dir")}


def refused(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    assert "refused" in result.stderr and "nothing was installed" in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def version(path: Path) -> int:
    return json.loads(path.read_text())["signed"]["version"]


# --------------------------------------------------------------------------- key sets, signing

def test_generate_writes_owner_only_keys_and_refuses_an_existing_set(keys):
    assert stat.S_IMODE(os.stat(keys / "keys").st_mode) == 0o700
    for role in signing.ROLES:
        assert stat.S_IMODE(os.stat(keys / "keys" / f"{role}.key").st_mode) == 0o600
    root = Metadata[Root].from_file(str(keys / "root.json"))
    assert root.signed.version == 1 and not root.signed.consistent_snapshot
    assert (keys / "1.root.json").read_bytes() == (keys / "root.json").read_bytes()
    before = {p: p.read_bytes() for p in keys.rglob("*") if p.is_file()}
    with pytest.raises(CosbuildError, match="folder already holds a key set") as exc:
        signing.generate(keys)
    assert str(keys) in str(exc.value)
    assert {p: p.read_bytes() for p in keys.rglob("*") if p.is_file()} == before


def test_signing_names_every_file_and_only_changes_what_changed(ws, keys):
    repo = published(ws, keys)
    targets = Metadata.from_file(str(repo / "tuf-targets.json")).signed.targets
    assert set(targets) == {
        "repository.yaml", "tree.tar.zst", "compilertree.tar.zst",
        "repository.meta.yaml.tar.zst", "lib-test-1.0.package.tar.zst",
        "lib-test-1.0.metadata.yaml", "app-test-1.0.package.tar.zst",
        "app-test-1.0.metadata.yaml"}
    data = (repo / "app-test-1.0.package.tar.zst").read_bytes()
    assert targets["app-test-1.0.package.tar.zst"].length == len(data)
    files = [p.name for p in signing.METADATA_FILES(repo)]
    assert files == ["tuf-1.root.json", "tuf-targets.json", "tuf-snapshot.json",
                     "tuf-timestamp.json"]
    before = snapshot(repo)

    assert sign(ws, keys) is False   # unchanged: not a byte
    assert snapshot(repo) == before

    assert sign(ws, keys, refresh=True) is True   # --resign: a new timestamp only
    assert [version(repo / f) for f in files[1:]] == [1, 1, 2]

    ws.add("extra", files={"usr/share/extra": "x\n"})
    ws.publish()
    assert sign(ws, keys)
    assert [version(repo / f) for f in files[1:]] == [2, 2, 3]
    assert "extra-test-1.0.package.tar.zst" in \
        Metadata.from_file(str(repo / "tuf-targets.json")).signed.targets


def test_create_repo_cli_signs_with_the_setting(ws, keys, run_cli):
    lib_and_app(ws)
    ws.publish()
    code, out, err = run_cli("create-repo", "--signing-keys", str(keys))
    assert code == 0, err
    assert (ws.base / "build/tuf-timestamp.json").is_file()
    code, out, _ = run_cli("create-repo", "--signing-keys", str(keys))
    assert "unchanged" in out
    code, _, err = run_cli("create-repo", "--signing-keys", str(keys), "--signing-expiry", "2x")
    assert code == 1 and "not a duration" in err


def test_doit_repo_signs_with_the_setting(ws, keys):
    lib_and_app(ws)
    ws.publish()
    with contextlib.chdir(ws.base):
        config = settings.resolve({"build_dir": "build"},
                                  env={"COSBUILD_SIGNING_KEYS": str(keys)})
        task = tasks.task_definitions(load_project(config))["task_repo"]()
        # a missing or removed signature file makes the task run again
        assert "build/tuf-timestamp.json" in task["targets"]
        [(action, args)] = task["actions"]
        assert action(*args) in (None, True)
    assert version(ws.base / "build/tuf-timestamp.json") == 1


# --------------------------------------------------------------------------- clients

def test_signed_install_over_http(ws, keys):
    repo = published(ws, keys)
    root = ws.base / "root"
    with serving(repo) as url:
        result = install(url, root, keys / "root.json")
    assert result.returncode == 0, result.stderr
    assert (root / "usr/bin/app").is_file() and (root / "usr/lib/libfoo.so.1").is_file()
    state = root / STATE / url.replace("/", "_")
    assert {p.name for p in state.iterdir()} >= {"root.json", "timestamp.json",
                                                 "snapshot.json", "targets.json"}


def flip_artifact(repo: Path) -> None:
    path = repo / "app-test-1.0.package.tar.zst"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_index(repo: Path) -> None:
    path = repo / "repository.yaml"
    assert "revision: 1\n" in path.read_text()
    path.write_text(path.read_text().replace("revision: 1\n", "revision: 9\n"))


def extend_index(repo: Path) -> None:
    path = repo / "repository.yaml"
    path.write_text(path.read_text() + "# a harmless-looking comment\n")


def unsign(repo: Path) -> None:
    for path in signing.METADATA_FILES(repo):
        path.unlink()


@pytest.mark.parametrize("tamper, file, reason", [
    (flip_artifact, "app-test-1.0.package.tar.zst", "(hash)"),
    (edit_index, "repository.yaml", "(hash)"),
    (extend_index, "repository.yaml", "(length)"),
    (unsign, "tuf-timestamp.json", "(not signed)"),
])
def test_tampered_or_unsigned_repository_is_refused(ws, keys, tamper, file, reason):
    repo = published(ws, keys)
    tamper(repo)
    root = ws.base / "root"
    root.mkdir()
    with serving(repo) as url:
        result = install(url, root, keys / "root.json")
    refused(result, url, file, reason)
    assert content(root) == {}


def test_unsigned_repository_is_refused_before_anything_is_fetched(ws, keys):
    lib_and_app(ws)
    repo = ws.publish()   # never signed
    trusted = repositories([str(repo)], None, ws.base / "root",
                                  trusted_root=keys / "root.json")
    with pytest.raises(CosbuildError, match=r"tuf-timestamp.json: refused \(not signed\)"):
        load_repository(trusted[0], ws.base / "work")
    assert not (ws.base / "work").exists() or not any((ws.base / "work").iterdir())


def test_rollback_across_runs_is_refused(ws, keys):
    repo = published(ws, keys)
    old = ws.base / "old-copy"
    shutil.copytree(repo, old)
    assert sign(ws, keys, refresh=True)   # the repository moves on: timestamp 2
    root = ws.base / "root"
    with serving(repo) as url:   # one URL: one repository, one trust state
        assert install(url, root, keys / "root.json").returncode == 0
        before = content(root)
        # the next run is served the older (validly signed) copy
        shutil.rmtree(repo)
        shutil.copytree(old, repo)
        result = install(url, root, keys / "root.json", command="upgrade")
    refused(result, "tuf-timestamp.json", "(version)", "rolled back")
    assert content(root) == before


@pytest.mark.skipif(not shutil.which("faketime"), reason="needs faketime")
def test_expired_metadata_is_refused(ws, keys):
    repo = published(ws, keys)
    root = ws.base / "root"
    root.mkdir()
    with serving(repo) as url:
        result = install(url, root, keys / "root.json", faketime="+2d")
    refused(result, "tuf-timestamp.json", "(expired)", "--resign")
    assert content(root) == {}


def test_a_client_follows_a_rotated_root(ws, keys):
    repo = published(ws, keys)
    old_root = ws.base / "old-root.json"
    shutil.copy(keys / "root.json", old_root)
    assert signing.rotate(keys, ("timestamp",)) == 2
    assert (keys / "keys/root.1.key").is_file() and (keys / "keys/timestamp.1.key").is_file()
    assert sign(ws, keys)   # the new root, and a timestamp by the new key
    assert (repo / "tuf-2.root.json").is_file()
    root = ws.base / "root"
    with serving(repo) as url:
        result = install(url, root, old_root)
        assert result.returncode == 0, result.stderr
        state = root / STATE / url.replace("/", "_") / "root.json"
        assert version(state) == 2


def test_a_root_not_signed_by_the_previous_one_is_refused(ws, keys):
    repo = published(ws, keys)
    # an attacker's root 2: every key its own, signed by itself only
    rogue = Metadata[Root].from_file(str(keys / "root.json"))
    new_key = sslib_keys.generate_ed25519_key()
    for role in signing.ROLES:
        for keyid in list(rogue.signed.roles[role].keyids):
            rogue.signed.revoke_key(keyid, role)
        rogue.signed.add_key(SSlibKey.from_securesystemslib_key(new_key), role)
    rogue.signed.version = 2
    rogue.signatures.clear()
    rogue.sign(SSlibSigner(new_key))
    (repo / "tuf-2.root.json").write_bytes(rogue.to_bytes(signing.SERIALIZER))
    root = ws.base / "root"
    root.mkdir()
    with serving(repo) as url:
        result = install(url, root, keys / "root.json")
    refused(result, "tuf-2.root.json", "(signature)")
    assert content(root) == {}


def test_search_keeps_its_trust_state_in_the_users_cache(ws, keys, tmp_path, monkeypatch,
                                                         run_cli):
    repo = published(ws, keys)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    code, out, err = run_cli("search", "--repo", str(repo), "--trusted-root",
                             str(keys / "root.json"), "app")
    assert code == 0 and "test/app@1.0" in out, err
    state = tmp_path / "home/.cache/cosbuild/tuf" / str(repo).replace("/", "_")
    assert (state / "timestamp.json").is_file()
    unsign(repo)
    code, out, err = run_cli("search", "--repo", str(repo), "--trusted-root",
                             str(keys / "root.json"), "app")
    assert code == 1 and "refused (not signed)" in err and "test/app" not in out


def test_trusted_root_in_luet_yaml_is_relative_to_it(ws, keys, tmp_path):
    repo = published(ws, keys)
    config = tmp_path / "etc" / "luet.yaml"
    config.parent.mkdir()
    shutil.copy(keys / "root.json", config.parent / "trusted.json")
    config.write_text(f"repositories:\n  - name: signed\n    urls: [{repo}]\n"
                      "    trusted_root: trusted.json\n")
    root = ws.base / "root"
    [repo_config] = repositories([], config, root)
    assert repo_config.trusted_root == config.parent / "trusted.json"
    assert repo_config.trust_state == root / STATE / "signed"
    done = transaction.install(root, [ref("test/app")], [repo_config])
    assert [str(c) for c in done] == ["test/lib@1.0", "test/app@1.0"]
    # --trusted-root is for the others: a repository's own wins
    [own] = repositories([], config, root, trusted_root=tmp_path / "other.json")
    assert own.trusted_root == config.parent / "trusted.json"


def test_keys_cli_generates_rotates_and_refuses_to_overwrite(tmp_path, run_cli):
    keys = tmp_path / "k"
    code, out, err = run_cli("keys", "generate", str(keys))
    assert code == 0 and "root.json" in out, err
    code, _, err = run_cli("keys", "generate", str(keys))
    assert code == 1 and "already holds a key set" in err and str(keys) in err
    code, out, err = run_cli("keys", "rotate", str(keys), "--role", "targets")
    assert code == 0 and "root version 2" in out, err
    root = Metadata[Root].from_file(str(keys / "root.json"))
    assert root.signed.version == 2 and len(root.signatures) == 2
    assert sorted(p.name for p in (keys / "keys").iterdir()) == [
        "root.1.key", "root.key", "snapshot.key", "targets.1.key", "targets.key",
        "timestamp.key"]
    code, _, err = run_cli("keys", "rotate", str(tmp_path / "none"))
    assert code == 1 and "no key set here" in err


# --------------------------------------------------------------------------- docker repositories
# (a real registry, as tests/test_registry_repository.py: slow, with the integration tests)

def docker_published(ws: Workspace, registry: str, keys: Path | None) -> str:
    """lib and app published to a new repository of `registry` (signed with `keys`)."""
    target = f"{registry}/cosbuild-signed-{uuid.uuid4().hex[:8]}/repo"
    lib_and_app(ws)
    ws.publish()
    assert publish_docker_signed(ws, target, keys) is True
    return target


def publish_docker_signed(ws: Workspace, target: str, keys: Path | None) -> bool:
    info = RepoInfo(name="test", signing=Signing(keys, EXPIRY) if keys else None)
    return publish_docker(ws.project(), ws.base / "build", target, info,
                          Registries([host_of(target)]))


def host_of(target: str) -> str:
    return target.split("/", 1)[0]


def push_over(target: str, name: str, path: Path) -> None:
    """Another file under the tag `name` (as whoever controls the registry could)."""
    remote = Registries([host_of(target)])[host_of(target)]
    push_file(remote, parse_reference(target).with_tag(name), path, path.parent)


def signed_docker(target: str, keys: Path, state: Path) -> RepoConfig:
    return RepoConfig(name="shared", urls=(target,), type="docker", insecure=True,
                      trusted_root=keys / "root.json", trust_state=state)


@pytest.mark.integration
def test_signed_docker_repository_installs_the_images_it_vouches_for(ws, keys, registry,
                                                                      tmp_path):
    target = docker_published(ws, registry, keys)
    assert publish_docker_signed(ws, target, keys) is False   # nothing pushed again
    pulled = RegistryTransport(target, insecure=True).fetch("tuf-targets.json",
                                                            tmp_path / "targets.json")
    targets = Metadata.from_file(str(pulled)).signed.targets
    assert targets["app-test-1.0.package.tar.zst"].custom["digest"].startswith("sha256:")
    # the tag moves to other content; a signed client pulls the images by their digests
    other = tmp_path / "repository.yaml"
    other.write_text("name: evil\n")
    push_over(target, "repository.yaml", other)
    root = tmp_path / "root"
    done = transaction.install(root, [ref("test/app")],
                          [signed_docker(target, keys, tmp_path / "state")])
    assert [str(c) for c in done] == ["test/lib@1.0", "test/app@1.0"]
    from_disk = tmp_path / "root-disk"
    transaction.install(from_disk, [ref("test/app")],
                   [RepoConfig(name="shared", urls=(str(ws.base / "build"),))])
    assert content(root) == content(from_disk)


@pytest.mark.integration
def test_tampered_docker_metadata_is_refused(ws, keys, registry, tmp_path):
    target = docker_published(ws, registry, keys)
    pulled = RegistryTransport(target, insecure=True).fetch("tuf-timestamp.json",
                                                            tmp_path / "tuf-timestamp.json")
    timestamp = json.loads(pulled.read_text())
    timestamp["signed"]["version"] += 1   # without its key
    pulled.write_text(json.dumps(timestamp))
    push_over(target, "tuf-timestamp.json", pulled)
    root = tmp_path / "root"
    with pytest.raises(CosbuildError, match=r"tuf-timestamp\.json: refused \(signature\)"):
        transaction.install(root, [ref("test/app")], [signed_docker(target, keys, tmp_path / "s")])
    assert content(root) == {}


@pytest.mark.integration
def test_unsigned_docker_repository_is_refused_with_a_trusted_root(ws, keys, registry,
                                                                   tmp_path):
    target = docker_published(ws, registry, None)
    root = tmp_path / "root"
    with pytest.raises(CosbuildError, match=r"tuf-timestamp\.json: refused \(not signed\)"):
        transaction.install(root, [ref("test/app")], [signed_docker(target, keys, tmp_path / "s")])
    assert content(root) == {}


def test_signing_settings_reach_the_repository_doit_repo_makes():
    config = settings.resolve({}, env={"COSBUILD_SIGNING_KEYS": "k",
                                       "COSBUILD_SIGNING_EXPIRY": "12h"})
    assert config.repo_info().signing == Signing(Path("k"), timedelta(hours=12))
    assert settings.resolve({}, doit_vars={"signing_keys": "d"}).repo_info().signing.keys == \
        Path("d")
    assert settings.resolve({}, env={}).repo_info().signing is None
    with pytest.raises(CosbuildError, match="not a duration for --signing-expiry"):
        settings.resolve({"signing_expiry": "0d"}, env={})
