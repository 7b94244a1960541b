"""Bounded repository reading (issue 14): endless and oversized answers stop at their bound,
slow servers at the download's deadline, decompression bombs at the recorded (or allowed)
unpacked size, unpacking needs the space first; each is one clear error naming the file or
URL, fast, with nothing left half-written in the download folder or the root.

Small bounds are passed explicitly (luetformat.Bounds) so that the cases take seconds; a
few use the defaults, to show that those hold too.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
import zstandard

from cosbuild import luetformat
from cosbuild.errors import CosbuildError
from cosbuild.luetformat import Bounds, MiB
from cosbuild.repos import remote, transaction
from cosbuild.repos.config import RepoConfig
from cosbuild.repos.index import TREE_FILES
from cosbuild.repos.serve import make_server
from cosbuild.repos.transport import DiskTransport, HttpTransport
from cosbuild.tree.versions import PackageRef

from .conftest import running
from .hostile_repo import (APP_ARTIFACT, Repo, dripping, endless, entry, hostile_server,
                           members_of, snapshot, tar_of)

APP = [PackageRef("test", "app")]


def install(root: Path, url: str, bounds: Bounds = luetformat.DEFAULT_BOUNDS,
            kind: str = "disk"):
    return transaction.install(root, APP, [RepoConfig(name="r", urls=(url,), type=kind,
                                                 bounds=bounds)])


def leftovers(folder: Path) -> list[str]:
    return sorted(snapshot(folder)) if folder.exists() else []


@pytest.fixture
def root(tmp_path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


class Timer:
    def __enter__(self):
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.seconds = time.monotonic() - self.start


# --------------------------------------------------------------------------- endless answers

def test_endless_repository_yaml_stops_at_the_default_metadata_bound(root, run_cli):
    with hostile_server(endless) as (url, _), Timer() as t:
        code, out, err = run_cli("install", "--root", str(root), "--repo", url, "test/app")
    assert code == 1 and "Traceback" not in err
    assert (f"repository.yaml from {url} is larger than the 64 MiB a repository metadata "
            "file may be") in err
    assert t.seconds < 30
    assert leftovers(root) == []   # no half-written download in its folder


def test_endless_body_stops_at_a_small_bound(root):
    with hostile_server(endless) as (url, _), Timer() as t:
        with pytest.raises(CosbuildError, match=rf"repository\.yaml from {url} is larger than "
                                                r"the 65536 bytes"):
            install(root, url, Bounds(metadata=65536), kind="http")
    assert t.seconds < 5 and leftovers(root) == []


def test_endless_body_leaves_nothing_in_the_download_folder(tmp_path):
    downloads = tmp_path / "downloads"
    with hostile_server(endless) as (url, _):
        transport = HttpTransport(url, retries=0, bounds=Bounds(metadata=MiB))
        with pytest.raises(CosbuildError, match=r"is larger than the 1 MiB a repository "
                                                r"metadata file may be"):
            transport.fetch("repository.yaml", downloads / "repository.yaml", metadata=True)
    assert leftovers(downloads) == []   # neither the file nor its .part


def test_announced_length_beyond_the_bound_is_refused_before_reading(root):
    with hostile_server(lambda h: endless(h, announce=str(1 << 40))) as (url, _), Timer() as t:
        with pytest.raises(CosbuildError, match=r"repository\.yaml .* is larger than the 1 MiB"):
            install(root, url, Bounds(metadata=MiB), kind="http")
    assert t.seconds < 5 and leftovers(root) == []


def test_artifact_without_recorded_size_stops_at_the_artifact_bound(tmp_path, root):
    # a luet index: no size recorded, and the checksum vouches for the 2 MiB
    big = zstandard.ZstdCompressor().compress(tar_of(APP_ARTIFACT)) + bytes(2 * MiB)
    repo = Repo(tmp_path / "repo", big)
    repo.index[0]["files"] = ["usr/bin/app"]
    repo.write()
    with pytest.raises(CosbuildError, match=r"app-test-1\.0\.package\.tar\.zst from .* is larger "
                                            r"than the 1 MiB an artifact may be"):
        install(root, str(repo.folder), Bounds(artifact=MiB))
    assert leftovers(root) == []


@pytest.mark.parametrize("transport", ["disk", "http"])
def test_artifact_larger_than_its_recorded_size_is_refused(tmp_path, root, transport):
    repo = Repo(tmp_path / "repo", record_extra={"size": 100}).write()
    with running(make_server(repo.folder, "127.0.0.1", 0)) as url:
        with pytest.raises(CosbuildError, match=r"app-test-1\.0\.package\.tar\.zst.*too large: "
                                                r"got \d+ bytes, expected 100"):
            install(root, url if transport == "http" else str(repo.folder),
                    Bounds(retries=0), kind=transport)
    assert leftovers(root) == []


def test_fifo_as_repository_yaml_does_not_block(tmp_path, root):
    folder = tmp_path / "repo"
    folder.mkdir()
    os.mkfifo(folder / "repository.yaml")
    with Timer() as t, pytest.raises(CosbuildError, match=r"repository file .*/repository\.yaml "
                                                          r"is not a regular file"):
        install(root, str(folder))
    assert t.seconds < 5


def test_repository_yaml_linked_to_dev_zero_is_refused(tmp_path, root):
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "repository.yaml").symlink_to("/dev/zero")
    with pytest.raises(CosbuildError, match=r"is not a regular file"):
        install(root, str(folder))


def test_disk_repository_yaml_beyond_the_bound(tmp_path, root):
    repo = Repo(tmp_path / "repo")
    repo.spec_raw = b"# padding\n" * 20000
    repo.write()
    with pytest.raises(CosbuildError, match=r"repository\.yaml from .* is larger than the "
                                            r"65536 bytes a repository metadata file may be"):
        install(root, str(repo.folder), Bounds(metadata=65536))


# --------------------------------------------------------------------------- slow servers

def test_server_dripping_its_body_meets_the_deadline(root, run_cli):
    # a byte every 0.3 s: each read is within the timeout; the whole is not within 2 s
    with hostile_server(dripping(0.3)) as (url, _), Timer() as t:
        with pytest.raises(CosbuildError, match=rf"download of repository\.yaml from {url}/"
                                                r"repository\.yaml did not finish within 2 s"):
            install(root, url, Bounds(timeout=1, metadata_deadline=2), kind="http")
    assert t.seconds < 6
    assert leftovers(root) == []


def test_server_dripping_its_headers_meets_the_deadline(root):
    with hostile_server(dripping(0.3, in_headers=True)) as (url, _), Timer() as t:
        with pytest.raises(CosbuildError, match=r"repository\.yaml .* did not finish within 2 s"):
            install(root, url, Bounds(timeout=1, metadata_deadline=2), kind="http")
    assert t.seconds < 6


def test_silent_server_times_out_and_gives_up(root):
    with hostile_server(lambda h: time.sleep(3)) as (url, server), Timer() as t:
        with pytest.raises(CosbuildError, match=r"repository\.yaml from .* failed after 2 "
                                                r"attempts: timed out"):
            install(root, url, Bounds(timeout=0.5, retries=1), kind="http")
    assert t.seconds < 5 and server.requests == 2


def test_artifact_deadline_is_its_own(tmp_path):
    """A big artifact has the long deadline, a metadata file the short one."""
    with hostile_server(dripping(0.2)) as (url, _):
        transport = HttpTransport(url, retries=0, bounds=Bounds(timeout=1, deadline=1,
                                                                metadata_deadline=30))
        with Timer() as t, pytest.raises(CosbuildError, match=r"did not finish within 1 s"):
            transport.fetch("a.package.tar.zst", tmp_path / "dl" / "a.package.tar.zst")
    assert t.seconds < 4 and leftovers(tmp_path / "dl") == []


# --------------------------------------------------------------------------- decompression bombs

@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> bytes:
    """A 131 KB zstd artifact whose tar holds a 4 GiB file of zeros."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.tar.zst"
    with path.open("wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw) as out:
        info = tarfile.TarInfo("usr/share/zeros")
        info.size = 4 << 30
        out.write(info.tobuf(format=tarfile.GNU_FORMAT))
        zeros = bytes(16 * MiB)
        for _ in range(info.size // len(zeros)):
            out.write(zeros)
        out.write(bytes(1024))   # the end of the archive
    data = path.read_bytes()
    assert len(data) < 200_000
    return data


def bomb_repo(folder: Path, data: bytes, **record_extra) -> Repo:
    repo = Repo(folder, data, record_extra=record_extra)
    repo.index[0]["files"] = ["usr/share/zeros"]
    return repo.write()


def test_bomb_without_recorded_size_is_refused_by_the_default_ratio(tmp_path, root, bomb,
                                                                    run_cli):
    repo = bomb_repo(tmp_path / "repo", bomb)   # as luet writes: no sizes
    with Timer() as t:
        code, out, err = run_cli("install", "--root", str(root), "--repo", str(repo.folder),
                                 "test/app")
    assert code == 1 and "Traceback" not in err
    assert ("refusing to install test/app@1.0: the archive is larger than 64 MiB once "
            "decompressed, more than it may be") in err
    assert t.seconds < 20
    assert leftovers(root) == []   # the staged part is gone with the transaction


def test_bomb_beyond_its_recorded_unpacked_size_is_refused(tmp_path, root, bomb):
    repo = bomb_repo(tmp_path / "repo", bomb, size=len(bomb), unpacked_size=10 * MiB)
    with pytest.raises(CosbuildError, match=r"the archive is larger than 10 MiB once "
                                            r"decompressed, more than its index records"):
        install(root, str(repo.folder))
    assert leftovers(root) == []


def test_gzip_bomb_is_refused(tmp_path, root):
    tar = tar_of([entry("usr/share/zeros", data=bytes(8 * MiB))])
    repo = Repo(tmp_path / "repo", gzip.compress(tar, compresslevel=1), artifact_comp="gzip")
    repo.index[0]["files"] = ["usr/share/zeros"]
    repo.write()
    with pytest.raises(CosbuildError, match=r"larger than 1 MiB once decompressed"):
        install(root, str(repo.folder), Bounds(ratio=2, ratio_floor=MiB))
    assert leftovers(root) == []


def test_recorded_sizes_within_bounds_install(tmp_path, root):
    data = zstandard.ZstdCompressor().compress(tar_of(APP_ARTIFACT))
    sizes = {"size": len(data), "unpacked_size": len(tar_of(APP_ARTIFACT))}
    repo = Repo(tmp_path / "repo", record_extra=sizes).write()
    assert members_of(APP_ARTIFACT) == ["usr/bin/app"]
    install(root, str(repo.folder), Bounds(ratio=1, ratio_floor=0, artifact=100))
    assert (root / "usr/bin/app").is_file()


def test_no_space_for_the_recorded_unpacked_size(tmp_path, root):
    repo = Repo(tmp_path / "repo", record_extra={"unpacked_size": 1 << 60}).write()
    with pytest.raises(CosbuildError, match=r"not enough space in .*root.* for unpacking "
                                            r"test/app@1\.0: it needs"):
        install(root, str(repo.folder))
    assert leftovers(root) == []


def test_no_space_for_the_recorded_download(tmp_path, root):
    repo = Repo(tmp_path / "repo", record_extra={"size": 1 << 60}).write()
    with running(make_server(repo.folder, "127.0.0.1", 0)) as url:
        with pytest.raises(CosbuildError, match=r"not enough space in .* for "
                                                r"app-test-1\.0\.package\.tar\.zst from http"):
            install(root, url, kind="http")
    assert leftovers(root) == []


def test_remote_transcode_is_bounded(tmp_path):
    source = tmp_path / "x.package.tar.gz"
    source.write_bytes(gzip.compress(bytes(4 * MiB), compresslevel=1))
    out = tmp_path / "x.package.tar.zst"
    with pytest.raises(CosbuildError, match=r"x\.package\.tar\.gz is larger than 1 MiB once "
                                            r"decompressed"):
        remote._transcode(source, luetformat.GZIP, out, Bounds(ratio=2, ratio_floor=MiB))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.package.tar.gz"]


# --------------------------------------------------------------------------- metadata archives

def test_definition_beyond_the_metadata_bound(tmp_path, root):
    repo = Repo(tmp_path / "repo")
    repo.tree["test/app/1.0/definition.yaml"] += b"#" * 100_000
    repo.write()
    with pytest.raises(CosbuildError, match=r"tree\.tar\.zst from .*: test/app/1\.0/"
                                            r"definition\.yaml is 100\d+ bytes, more than the "
                                            r"65536 bytes a repository file may be") as info:
        install(root, str(repo.folder), Bounds(metadata=65536))
    assert info.value.key == "repo_files.tree"


def test_tree_larger_than_its_unpacked_bound(tmp_path, root):
    repo = Repo(tmp_path / "repo")
    repo.tree["test/app/1.0/junk.bin"] = bytes(2 * MiB)   # not read, but decompressed
    repo.write()
    with pytest.raises(CosbuildError, match=r"tree\.tar\.zst from .*: larger than 1 MiB once "
                                            r"decompressed"):
        install(root, str(repo.folder), Bounds(metadata_unpacked=MiB))


def test_index_beyond_the_metadata_bound(tmp_path, root):
    repo = Repo(tmp_path / "repo")
    repo.index[0]["files"] += [f"usr/share/f{n}" for n in range(20000)]
    repo.write()
    with pytest.raises(CosbuildError, match=r"repository\.meta\.yaml is \d+ bytes, more than "
                                            r"the 65536 bytes"):
        install(root, str(repo.folder), Bounds(metadata=65536))


def test_tree_files_other_than_definitions_are_not_kept(tmp_path):
    repo = Repo(tmp_path / "repo")
    repo.tree["test/app/1.0/big.bin"] = bytes(MiB)
    repo.write()
    kept = luetformat.read_members(repo.folder / "tree.tar.zst", luetformat.ZSTD,
                                   lambda name: Path(name).name in TREE_FILES)
    assert list(kept) == ["test/app/1.0/definition.yaml"]


def test_disk_transport_checks_the_space_first(tmp_path, monkeypatch):
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "f").write_bytes(b"x" * 1000)
    monkeypatch.setattr(luetformat.shutil, "disk_usage", lambda p: SimpleNamespace(free=10))
    with pytest.raises(CosbuildError, match=r"not enough space in .* for f from .*: it needs "
                                            r"1000 bytes, 10 bytes are free"):
        DiskTransport(folder).fetch("f", tmp_path / "dl" / "f")
    assert leftovers(tmp_path / "dl") == []


# --------------------------------------------------------------------------- cos-setup downloads

def cos_setup_download(tmp_path: Path, url: str, capsys, **item) -> tuple[int, str, Path]:
    """`cos-setup --root` of one `downloads` step; status, log and the root."""
    from cosbuild.runtime import setup
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    steps = tmp_path / "steps.yaml"
    steps.write_text(yaml.safe_dump({"stages": {"default": [
        {"downloads": [{"url": url, "path": "/etc/got", **item}]}]}}))
    try:
        status = setup.main(["--root", str(root), "--file", str(steps)])
    finally:
        setup.ROOT = "/"
    return status, capsys.readouterr().err, root


def test_cos_setup_download_of_an_endless_body_stops_at_its_bound(tmp_path, monkeypatch, capsys):
    from cosbuild.runtime import setup
    monkeypatch.setattr(setup, "DOWNLOAD_LIMIT", 1 << 20)
    with hostile_server(endless) as (url, _):
        status, err, root = cos_setup_download(tmp_path, f"{url}/big", capsys)
    assert status == 1
    assert f"download of {url}/big: larger than 1048576 bytes" in err
    assert sorted(p.name for p in root.rglob("*")) == []


def test_cos_setup_download_from_a_dripping_server_meets_its_timeout(tmp_path, capsys):
    started = time.monotonic()
    with hostile_server(dripping(0.2)) as (url, _):
        status, err, root = cos_setup_download(tmp_path, f"{url}/slow", capsys, timeout=1)
    assert status == 1 and time.monotonic() - started < 10
    assert f"download of {url}/slow: not finished within 1 s" in err
    assert not (root / "etc/got").exists()


@pytest.mark.parametrize("url", ["file:///etc/hostname", "ftp://127.0.0.1/x", "/etc/hostname"])
def test_cos_setup_downloads_only_from_http(tmp_path, capsys, url):
    status, err, root = cos_setup_download(tmp_path, url, capsys)
    assert status == 1
    assert f"download of {url!r}: only http:// and https:// URLs are fetched" in err
    assert not (root / "etc/got").exists()   # a host file is not copied into the root
