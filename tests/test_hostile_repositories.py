"""Malformed and hostile repositories (issue 14): each is one clear error naming the
repository file (or URL) and the key, exit status 1 and no traceback from `cosbuild install`
and `cosbuild search`, and nothing written: the root stays empty, the repository unchanged.
Device nodes and FIFOs in artifacts are refused unless the package may carry them.

Repositories are written by hand (tests/hostile_repo.py) with checksums that vouch for the
bad content, so what is tested is the reading, not the checksum check.
"""

from __future__ import annotations

import copy
import gzip
import os
import re
import stat
import tarfile
from pathlib import Path

import pytest
import yaml
import zstandard

from cosbuild import luetformat, settings
from cosbuild.builds import artifact
from cosbuild.builds.builder import Builder
from cosbuild.errors import CosbuildError
from cosbuild.repos import remote, transaction
from cosbuild.repos.config import RepoConfig, local_build
from cosbuild.repos.create import create_repo
from cosbuild.settings import RepoInfo
from cosbuild.tools import TaskLog
from cosbuild.tree.project import load_project
from cosbuild.tree.versions import PackageRef

from .hostile_repo import (APP_ARTIFACT, Repo, definition, entry, files_tar, hostile_server,
                           redirecting, snapshot, status, tar_of)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def index_with(**changes):
    """A mutation of the first index record (None removes the key)."""
    def change(repo: Repo) -> None:
        for key, value in changes.items():
            if value is None:
                repo.index[0].pop(key)
            else:
                repo.index[0][key] = value
    return change


def tree_with(path: str, data: bytes):
    def change(repo: Repo) -> None:
        repo.tree[path] = data
    return change


def setattr_(name: str, value):
    return lambda repo: setattr(repo, name, value)


def spec_with(**changes):
    return lambda repo: repo.spec_extra.update(changes)


DEF = "test/app/1.0/definition.yaml"
# 300 bytes standing for a billion values (the "billion laughs")
ALIAS_BOMB = b"a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
    f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]\n".encode() for n in range(1, 9)) + \
    b"requires: [*a8]\nindex: [*a8]\n"


def versioned(repo: Repo, version: str) -> None:
    """The package at `version` in the tree and the index alike."""
    repo.tree = {f"test/app/{version}/definition.yaml":
                 yaml.safe_dump(definition(version=version)).encode()}
    repo.index[0]["compilationspec"]["package"]["version"] = version

# case -> (how the repository is spoiled, what the error says (regex), its file's end)
MALFORMED = {
    "tree not a tar": (setattr_("tree", zst(b"this is not a tar archive" * 40)),
                       r"tree\.tar\.zst from .*: not a zstd tar archive", None),
    "tree not zstd": (setattr_("tree", b"plain bytes, no zstd frame" * 40),
                      r"tree\.tar\.zst from .*: not a zstd tar archive", None),
    "tree gzip but declared zstd": (
        setattr_("tree", gzip.compress(files_tar({DEF: b"name: app\n"}))),
        r"not a zstd tar archive .*its content is gzip-compressed", None),
    "meta without repository.meta.yaml": (setattr_("meta_member", "other.yaml"),
                                          r"the meta archive of \S+ has no repository\.meta\.yaml",
                                          None),
    "index is a mapping": (setattr_("index", b"index: {a: 1}\n"),
                           r"index: no 'index' list", "repository.meta.yaml"),
    "index is a list at the top": (setattr_("index", b"- 1\n- 2\n"),
                                   r"expected a mapping, got a list", "repository.meta.yaml"),
    "index record a string": (lambda r: r.index.__setitem__(0, "path"),
                              r"\(record\): missing or not a dict", "index[0]"),
    "index record without path": (index_with(path=None), r"path: missing or not a str",
                                  "index[0]"),
    "index path an integer": (index_with(path=7), r"path: missing or not a str", "index[0]"),
    "index files with integers": (index_with(files=[1, 2]), r"files: missing or not a str",
                                  "index[0]"),
    "index files a string": (index_with(files="usr/bin/app"), r"files: missing or not a list",
                             "index[0]"),
    "index without checksums": (index_with(checksums=None),
                                r"checksums: missing or not a dict", "index[0]"),
    "index package name an integer": (
        index_with(compilationspec={"package": {"name": 5, "category": "test",
                                                "version": "1.0"}}),
        r"compilationspec\.package\.name: missing or not a str", "index[0]"),
    "index package a list": (index_with(compilationspec={"package": ["app"]}),
                             r"compilationspec\.package: missing or not a dict", "index[0]"),
    "index size negative": (index_with(size=-1), r"size: expected a size in bytes", "index[0]"),
    "index size text": (index_with(unpacked_size="big"), r"unpacked_size: expected a size",
                        "index[0]"),
    "index unknown compression": (index_with(compressiontype="lz4"),
                                  r"compressiontype: unknown compressiontype 'lz4'", "index[0]"),
    "index twice the same package": (lambda r: r.index.append(copy.deepcopy(r.index[0])),
                                     r"test/app@1\.0 is in the index twice", "index[1]"),
    "index not UTF-8": (setattr_("index", b"index: [\xff\xfe]\n"), r"not UTF-8 text",
                        "repository.meta.yaml"),
    "index YAML alias bomb": (setattr_("index", ALIAS_BOMB),
                              r"more YAML values than a repository may have, once its aliases "
                              r"are expanded", "repository.meta.yaml"),
    "index YAML alias loop": (setattr_("index", b"&a [*a]\n"),
                              r"a YAML alias refers to a list or mapping it is in",
                              "repository.meta.yaml"),
    "definition YAML alias bomb": (tree_with(DEF, b"name: app\ncategory: test\n"
                                                  b"version: '1.0'\n" + ALIAS_BOMB),
                                   r"once its aliases are expanded", "tree/" + DEF),
    "repository.yaml a list": (setattr_("spec_raw", b"- name: x\n- urls: []\n"),
                               r"expected a mapping, got a list", "repository.yaml"),
    "repository.yaml an HTML page": (
        setattr_("spec_raw", b"<html><body><h1>Welcome to nginx!</h1></body></html>\n"),
        r"expected a mapping, got text .*a web page", "repository.yaml"),
    "repository.yaml not UTF-8": (setattr_("spec_raw", b"name: \xc3\x28\n"), r"not UTF-8 text",
                                  "repository.yaml"),
    "repository.yaml invalid YAML": (setattr_("spec_raw", b"name: [unclosed\n"),
                                     r"invalid YAML", "repository.yaml"),
    "repository.yaml without repo_files": (setattr_("spec_raw", b"name: x\n"),
                                           r"repo_files: no 'repo_files' mapping",
                                           "repository.yaml"),
    "repo_files a list": (spec_with(repo_files=["tree.tar.zst"]),
                          r"repo_files: no 'repo_files' mapping", "repository.yaml"),
    "repo_files.tree filename an integer": (
        setattr_("tree_filename", 1),
        r"repo_files\.tree: no repo_files\.tree with a filename", "repository.yaml"),
    "repo_files.tree filename escaping": (
        setattr_("tree_filename", "../../../../etc/passwd"),
        r"unsafe repository file name '\.\./\.\./\.\./\.\./etc/passwd'", None),
    "definition a list": (tree_with(DEF, b"- name: app\n"), r"expected a mapping, got a list",
                          "tree/" + DEF),
    "definition not UTF-8": (tree_with(DEF, b"name: \xff\n"), r"not UTF-8 text", "tree/" + DEF),
    "definition name a list": (
        tree_with(DEF, b"name: [a, b]\ncategory: test\nversion: '1.0'\n"), r"name",
        "tree/" + DEF),
    "definition requires a mapping": (
        tree_with(DEF, b"name: app\ncategory: test\nversion: '1.0'\nrequires: {a: 1}\n"),
        r"requires", "tree/" + DEF),
    "definition twice in the tree": (
        tree_with("elsewhere/definition.yaml", yaml.safe_dump(
            {"name": "app", "category": "test", "version": "1.0"}).encode()),
        r"test/app@1\.0 is in the tree twice", "definition.yaml"),
    "version invalid": (lambda r: versioned(r, "1.0!!"), r"version: invalid version '1\.0!!'",
                        "tree/test/app/1.0!!/definition.yaml"),
    "version with a shell command": (lambda r: versioned(r, "1.0 && rm -rf /"),
                                     r"version: invalid version '1\.0 && rm -rf /'",
                                     "definition.yaml"),
    "version a list": (tree_with(DEF, b"name: app\ncategory: test\nversion: [1]\n"),
                       r"version: expected a string, got a list", "tree/" + DEF),
    "index version empty": (lambda r: r.index[0]["compilationspec"]["package"].update(version=""),
                            r"compilationspec\.package\.version: missing", "index[0]"),
    "requires selector invalid": (
        tree_with(DEF, yaml.safe_dump({**definition(), "requires": [
            {"name": "lib", "category": "test", "version": ">>>1"}]}).encode()),
        r"requires\.version: invalid version selector '>>>1'", "tree/" + DEF),
    "finalize a list": (tree_with("test/app/1.0/finalize.yaml", b"- rm -rf /\n"),
                        r"expected a mapping, got a list", "finalize.yaml"),
    "finalize install a number": (tree_with("test/app/1.0/finalize.yaml", b"install: 5\n"),
                                  r"install", "finalize.yaml"),
}


def _spoil(repo: Repo, case: str) -> Repo:
    MALFORMED[case][0](repo)
    return repo.write()


@pytest.fixture
def place(tmp_path):
    """The repository folder and an empty root; `unchanged()` asserts nothing was written."""
    class Place:
        repo = tmp_path / "repo"
        root = tmp_path / "root"

        def freeze(self):
            self.root.mkdir(exist_ok=True)
            self.before = snapshot(tmp_path)

        def unchanged(self):
            assert snapshot(tmp_path) == self.before
            assert not any(self.root.iterdir())
    return Place()


def assert_clear(code: int, err: str, match: str, file_end: str | None) -> None:
    assert code == 1, err
    assert "Traceback" not in err and err.count("cosbuild: error:") == 1, err
    assert re.search(match, err), err
    if file_end:
        assert file_end in err, err


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_repository_is_one_clear_error(place, run_cli, case):
    _spoil(Repo(place.repo), case)
    place.freeze()
    code, out, err = run_cli("install", "--root", str(place.root), "--repo", str(place.repo),
                             "test/app")
    assert_clear(code, err, MALFORMED[case][1], MALFORMED[case][2])
    assert str(place.repo) in err   # the repository is named
    place.unchanged()


@pytest.mark.parametrize("case", ["repository.yaml a list", "index record without path",
                                  "tree not a tar", "definition a list"])
def test_malformed_repository_search_is_one_clear_error(place, run_cli, case):
    _spoil(Repo(place.repo), case)
    place.freeze()
    code, out, err = run_cli("search", "--repo", str(place.repo), "app")
    assert_clear(code, err, MALFORMED[case][1], MALFORMED[case][2])
    assert out == ""
    place.unchanged()


# --------------------------------------------------------------------------- over HTTP

HTTP_CASES = {
    "404": (status(404, b"<html>not found</html>"), r"repository\.yaml not found at http://.*"
                                                    r"/repository\.yaml \(HTTP 404\)"),
    "500 every time": (status(500, b"<html>oops</html>"),
                       r"download of repository\.yaml from http://\S+ failed after 2 attempts: "
                       r"HTTP 500"),
    "403": (status(403), r"download of repository\.yaml from http://\S+/repository\.yaml "
                         r"failed: HTTP 403"),
    "HTML page with 200": (status(200, b"<!DOCTYPE html>\n<html><body>login</body></html>\n"),
                           r"http://\S+: repository\.yaml: expected a mapping, got text"),
    "redirect to file://": (redirecting("file:///etc/passwd"),
                            r"Redirection to url 'file:///etc/passwd' is not allowed"),
    "redirect to ftp://": (redirecting("ftp://127.0.0.1/repository.yaml"),
                           r"Redirection to url 'ftp://127\.0\.0\.1/repository\.yaml' is not allowed"),
    "redirect loop": (redirecting("/repository.yaml"), r"repository\.yaml from http://\S+ "
                                                       r"failed: HTTP 30[12]"),
}


@pytest.mark.parametrize("case", sorted(HTTP_CASES))
def test_hostile_http_answers_are_one_clear_error(place, case):
    answer, match = HTTP_CASES[case]
    place.freeze()
    with hostile_server(answer) as (url, server):
        repo = RepoConfig(name="h", urls=(url,), type="http",
                          bounds=luetformat.Bounds(timeout=2, metadata_deadline=10, retries=1))
        with pytest.raises(CosbuildError, match=match) as info:
            transaction.install(place.root, [PackageRef("test", "app")], [repo])
        assert server.requests <= 20   # retries and redirects are bounded
    assert url in str(info.value)
    assert info.value.__suppress_context__ or info.value.__context__ is None
    place.unchanged()


def test_hostile_http_answer_through_the_cli(place, run_cli):
    place.freeze()
    with hostile_server(redirecting("file:///etc/shadow")) as (url, _):
        code, out, err = run_cli("install", "--root", str(place.root), "--repo", url, "test/app")
    assert_clear(code, err, r"Redirection to url 'file:///etc/shadow' is not allowed", url)
    place.unchanged()


# --------------------------------------------------------------------------- device nodes

DEVICES = {
    "char device /dev/mem": entry("mem", tarfile.CHRTYPE, devmajor=1, devminor=1, mode=0o666),
    "block device /dev/sda": entry("sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o666),
    "FIFO": entry("fifo", tarfile.FIFOTYPE, mode=0o666),
}


def device_repo(folder: Path, node: tuple, **record_extra) -> Repo:
    return Repo(folder, [*APP_ARTIFACT, entry("dev", tarfile.DIRTYPE), (_under_dev(node), b"")],
                record_extra=record_extra).write()


def _under_dev(node: tuple) -> tarfile.TarInfo:
    info = node[0]
    info = tarfile.TarInfo.frombuf(info.tobuf(), "utf-8", "surrogateescape")
    info.name = "dev/" + info.name
    return info


@pytest.mark.parametrize("case", sorted(DEVICES))
def test_device_nodes_of_a_remote_artifact_are_refused(place, run_cli, case):
    # the index even claims it may: a repository's word is not taken for that
    device_repo(place.repo, DEVICES[case], device_nodes=True)
    place.freeze()
    code, out, err = run_cli("install", "--root", str(place.root), "--repo", str(place.repo),
                             "test/app")
    kind = "FIFO" if "FIFO" in case else "device node"
    assert_clear(code, err, rf"refusing to install test/app@1\.0: 'dev/\w+' is a {kind}, and "
                            r"the package may not carry one \(allow_devices", None)
    place.unchanged()


def test_device_nodes_allowed_by_the_client_config(place, run_cli, tmp_path):
    device_repo(place.repo, DEVICES["char device /dev/mem"])
    config = tmp_path / "luet.yaml"
    config.write_text(yaml.safe_dump({"repositories": [
        {"name": "r", "type": "disk", "urls": [str(place.repo)], "allow_devices": ["test/app"]}]}))
    code, out, err = run_cli("install", "--root", str(place.root), "--config", str(config),
                             "test/app")
    assert code == 0, err
    node = place.root / "dev/mem"
    assert stat.S_ISCHR(node.lstat().st_mode) and os.major(node.lstat().st_rdev) == 1


def test_allow_devices_names_the_package_not_any(place, tmp_path):
    device_repo(place.repo, DEVICES["FIFO"])
    repo = RepoConfig(name="r", urls=(str(place.repo),), allow_devices=("test/other",))
    place.freeze()
    with pytest.raises(CosbuildError, match=r"'dev/fifo' is a FIFO"):
        transaction.install(place.root, [PackageRef("test", "app")], [repo])
    place.unchanged()


def test_own_build_index_flag_allows_device_nodes(place):
    """The build folder's own index (local_build) is believed: its bootstrap base images."""
    device_repo(place.repo, DEVICES["FIFO"], device_nodes=True)
    transaction.install(place.root, [PackageRef("test", "app")], [local_build(place.repo)])
    assert stat.S_ISFIFO((place.root / "dev/fifo").lstat().st_mode)


def test_install_from_the_projects_build_folder_is_the_own_build(place, run_cli, monkeypatch):
    """`cosbuild install --repo build` (the build folder setting) installs its base images;
    the same repository anywhere else is not believed."""
    device_repo(place.repo, DEVICES["FIFO"], device_nodes=True)
    monkeypatch.chdir(place.repo.parent)
    code, out, err = run_cli("install", "--root", "elsewhere", "--repo", "repo", "test/app")
    assert code == 1 and "'dev/fifo' is a FIFO" in err, err
    code, out, err = run_cli("--build-dir", "repo", "install", "--root", str(place.root),
                             "--repo", "repo", "test/app")
    assert code == 0, err
    assert stat.S_ISFIFO((place.root / "dev/fifo").lstat().st_mode)


def test_own_build_without_the_flag_refuses_device_nodes(place):
    device_repo(place.repo, DEVICES["FIFO"])
    place.freeze()
    with pytest.raises(CosbuildError, match=r"'dev/fifo' is a FIFO"):
        transaction.install(place.root, [PackageRef("test", "app")], [local_build(place.repo)])
    place.unchanged()


def test_own_builds_record_whether_they_carry_device_nodes(project):
    """A package built here records whether its artifact holds device nodes or FIFOs (a
    bootstrapped rootfs has its /dev, and so has every image built on it); the build
    folder's own index is believed, the same index anywhere else is not."""
    project({
        "tree/base/definition.yaml": "name: base\ncategory: distro\nversion: '1.0'\n",
        "tree/base/build.yaml": "bootstrap:\n  suite: bookworm\n",
        "tree/app/definition.yaml": "name: app\ncategory: test\nversion: '1.0'\n",
        "tree/app/build.yaml": "image: debian:bookworm\nsteps: ['true']\n",
    })
    with_dev, plain = project.path / "with-dev", project.path / "plain"
    (with_dev / "dev").mkdir(parents=True)
    os.mkfifo(with_dev / "dev/initctl")
    (plain / "etc").mkdir(parents=True)
    loaded = load_project(settings.resolve({"build_dir": "build"}, env={}))
    builder = Builder(loaded)
    records = {}
    for key in loaded.graph.order:
        pkg = loaded.graph.packages[key]
        content = with_dev if pkg.definition.name == "base" else plain
        with TaskLog(project.path / "logs" / f"{pkg.artifact_stem}.log") as log:
            builder.write_outputs(pkg, list(artifact.walk(content)), log)
        records[pkg.definition.name] = yaml.safe_load(builder.metadata_path(pkg).read_text())
    assert records["base"]["device_nodes"] is True and records["app"]["device_nodes"] is False
    assert records["base"]["size"] == (project.path / "build" / records["base"]["path"]).stat().st_size
    create_repo(loaded, Path("build"), RepoInfo(name="local"))
    root = project.path / "root"
    transaction.install(root, [PackageRef("distro", "base")], [local_build(Path("build"))])
    assert stat.S_ISFIFO((root / "dev/initctl").lstat().st_mode)
    copy = RepoConfig(name="copy", urls=(str(project.path / "build"),))
    with pytest.raises(CosbuildError, match=r"distro/base@1\.0: 'dev/initctl' is a FIFO"):
        transaction.install(project.path / "root2", [PackageRef("distro", "base")], [copy])
    assert not (project.path / "root2/dev").exists()


@pytest.mark.parametrize("case", sorted(DEVICES))
def test_fetched_build_dependency_with_device_nodes_is_refused(tmp_path, case):
    """repos/remote.py: an artifact fetched from a build repository is checked before a
    build or an image may use it."""
    path = tmp_path / "x.package.tar.zst"
    path.write_bytes(zst(tar_of(
        [entry("dev", tarfile.DIRTYPE), (_under_dev(DEVICES[case]), b"")])))
    with pytest.raises(CosbuildError, match=r"its artifact holds a (FIFO|device node) \(dev/"):
        remote._refuse_devices(path, luetformat.DEFAULT_BOUNDS)
    ok = tmp_path / "ok.package.tar.zst"
    ok.write_bytes(zst(tar_of(APP_ARTIFACT)))
    remote._refuse_devices(ok, luetformat.DEFAULT_BOUNDS)


def test_setuid_files_are_installed_as_they_are(place):
    """Kept on purpose (a package may ship sudo): reported, not refused."""
    Repo(place.repo, [*APP_ARTIFACT, entry("usr/bin/su", data=b"x", mode=0o4755)]).write()
    transaction.install(place.root, [PackageRef("test", "app")],
                   [RepoConfig(name="r", urls=(str(place.repo),))])
    assert (place.root / "usr/bin/su").stat().st_mode & stat.S_ISUID


def test_symbolic_link_with_an_empty_target_is_refused(place, run_cli):
    # os.symlink("") fails, and tarfile then falls back to copying the target: a recursion
    Repo(place.repo, [*APP_ARTIFACT, entry("empty", tarfile.SYMTYPE, linkname="")]).write()
    place.freeze()
    code, out, err = run_cli("install", "--root", str(place.root), "--repo", str(place.repo),
                             "test/app")
    assert_clear(code, err, r"refusing to install test/app@1\.0: symbolic link 'empty' has an "
                            r"empty target", None)
    place.unchanged()
