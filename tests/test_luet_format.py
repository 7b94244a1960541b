"""Repositories in luet 0.20's format, both ways (SPEC sections 2 and 3).

- An independent reader, written here from luet's source (installer/repository.go Sync,
  api/core/types/artifact), reads what cosbuild writes.
- cosbuild installs from repositories written here the way luet writes them: JSON field
  names (ghodss/yaml), `files` as tar member names, luet's defaults (gzip tree, plain meta
  archive) and every compression type, over disk and HTTP.
- Broken repositories give one CosbuildError naming the repository and the file.

No containers: artifacts come from `Builder.write_outputs`, as in test_repository_client.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest
import yaml
import zstandard

from cosbuild import luetformat
from cosbuild.errors import CosbuildError
from cosbuild.repos import transaction
from cosbuild.repos.config import RepoConfig
from cosbuild.repos.index import load_repository

from .test_repository_client import LIB_FILES, Workspace, lib_and_app, ref, serving, snapshot


# --------------------------------------------------------------------------- luet's side, by hand

# compressiontype -> (suffix luet appends, compressor, decompressor): our own, not cosbuild's
CODECS = {
    "none": ("", lambda b: b, lambda b: b),
    "gzip": (".gz", gzip.compress, gzip.decompress),
    "zstd": (".zst", lambda b: zstandard.ZstdCompressor().compress(b),
             lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_bytes(files: dict[str, bytes]) -> bytes:
    """A plain tar as Go's archive/tar via docker's archive.Tar writes it: relative names,
    directories with a trailing slash."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs = sorted({str(Path(p).parents[i]) for p in files
                       for i in range(len(Path(p).parents) - 1)})
        for d in dirs:
            info = tarfile.TarInfo(d + "/")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def luet_package(name: str, version: str, requires=()) -> dict:
    """A DefaultPackage as ghodss/yaml writes it (JSON names; null lists, id 0)."""
    return {"id": 0, "name": name, "category": "test", "version": version,
            "requires": [{"id": 0, "name": r, "category": "test", "version": ">=0",
                          "requires": None, "conflicts": None} for r in requires] or None,
            "conflicts": None}


def write_luet_repo(folder: Path, packages: dict, *, tree: str = "gzip", meta: str = "none",
                    artifacts: str = "none", url: str = "") -> Path:
    """A repository as `luet create-repo` 0.20 writes it (localRepositoryGenerator.Generate):
    artifacts, tree, compiler tree, meta archive and repository.yaml.

    `packages`: (name, version) -> (requires, {path: content})."""
    folder.mkdir(parents=True, exist_ok=True)
    index, tree_files = [], {}
    for (name, version), (requires, files) in packages.items():
        suffix, compress, _ = CODECS[artifacts]
        path = f"{name}-test-{version}.package.tar{suffix}"
        data = compress(tar_bytes({k: v.encode() for k, v in files.items()}))
        (folder / path).write_bytes(data)
        package = luet_package(name, version, requires)
        tree_files[f"test/{name}/{version}/definition.yaml"] = yaml.safe_dump(package).encode()
        index.append({"path": path, "dependencies": None,
                      "compilationspec": {"steps": ["true"], "env": None, "prelude": None,
                                          "image": "", "seed": "", "package": package,
                                          "package_dir": "", "retrieve": None, "unpack": False,
                                          "includes": None, "excludes": None,
                                          "build_options": {}, "copy": None,
                                          "requires_final_images": False},
                      "checksums": {"sha256": sha256(data)}, "compressiontype": artifacts,
                      "files": sorted(files), "package_cacheimage": f"luet/cache:{name}",
                      "runtime": package})
    repo_files = {}
    for kind, base, comp, members in (
            ("tree", "tree.tar", tree, tree_files),
            ("compilertree", "compilertree.tar", "gzip", tree_files),
            ("meta", "repository.meta.yaml.tar", meta,
             {"repository.meta.yaml": yaml.safe_dump({"index": index}).encode()})):
        suffix, compress, _ = CODECS[comp]
        data = compress(tar_bytes(members))
        (folder / (base + suffix)).write_bytes(data)
        repo_files[kind] = {"filename": base + suffix, "compressiontype": comp,
                            "checksums": {"sha256": sha256(data)}}
    (folder / "repository.yaml").write_text(yaml.safe_dump({
        "name": "luet-made", "description": "written as luet 0.20 does", "type": "disk",
        "urls": [url or str(folder)], "enable": True, "index": [], "revision": 3,
        "last_update": "1638400000", "repo_files": repo_files}))
    return folder


PACKAGES = {("lib", "1.0"): ((), {"usr/lib/libfoo.so.1": "lib\n", "etc/foo.conf": "x = 1\n"}),
            ("app", "2.1"): (("lib",), {"usr/bin/app": "#!/bin/sh\n"})}


def expected_files(*names: str) -> set[str]:
    return {f"/{p}" for (n, _), (_, files) in PACKAGES.items() if n in names for p in files}


def installed(root: Path) -> set[str]:
    return {str(Path("/", p)) for p, v in snapshot(root, skip=("var",)).items() if v[0] == "file"}


def install(root: Path, url: str, kind: str = "disk"):
    return transaction.install(root, [ref("test/app")], [RepoConfig(name="luet", urls=(url,), type=kind)])


# --------------------------------------------------------------------------- cosbuild reads luet

def test_install_from_luet_default_layout(tmp_path):
    """luet create-repo's defaults: tree.tar.gz, an uncompressed repository.meta.yaml.tar."""
    repo = write_luet_repo(tmp_path / "repo", PACKAGES)
    assert (repo / "tree.tar.gz").is_file() and (repo / "repository.meta.yaml.tar").is_file()
    done = install(tmp_path / "root", str(repo))
    assert [str(c) for c in done] == ["test/lib@1.0", "test/app@2.1"]
    assert installed(tmp_path / "root") == expected_files("lib", "app")
    assert (tmp_path / "root/usr/bin/app").read_text() == "#!/bin/sh\n"


@pytest.mark.parametrize("transport", ["disk", "http"])
@pytest.mark.parametrize("comp", sorted(CODECS))
def test_install_from_luet_repo_per_compression(tmp_path, comp, transport):
    repo = write_luet_repo(tmp_path / "repo", PACKAGES, tree=comp, meta=comp, artifacts=comp)
    if transport == "disk":
        install(tmp_path / "root", str(repo))
    else:
        with serving(repo) as url:
            install(tmp_path / "root", url, "http")
    assert installed(tmp_path / "root") == expected_files("lib", "app")


# --------------------------------------------------------------------------- luet reads cosbuild

def luet_read(repo: Path) -> dict:
    """Read a repository the way luet 0.20's client does, with our own code: repository.yaml,
    each repo_file checked and decompressed by its compressiontype, the tree, the index,
    then every artifact checked and listed (PackageArtifact.FileList). Returns the index."""
    spec = yaml.safe_load((repo / "repository.yaml").read_text())
    for key in ("name", "type", "urls", "revision", "last_update", "repo_files"):
        assert key in spec, key
    assert isinstance(spec["last_update"], str) and spec["last_update"].isdigit()
    contents = {}
    for kind in ("tree", "meta", "compilertree"):
        entry = spec["repo_files"][kind]
        data = (repo / entry["filename"]).read_bytes()
        assert sha256(data) == entry["checksums"]["sha256"], kind
        suffix, _, decompress = CODECS[entry["compressiontype"]]
        assert entry["filename"].endswith(".tar" + suffix), kind
        with tarfile.open(fileobj=io.BytesIO(decompress(data))) as tar:
            contents[kind] = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}
    index = yaml.safe_load(contents["meta"]["repository.meta.yaml"])["index"]
    tree = {name: yaml.safe_load(data) for name, data in contents["tree"].items()
            if name.endswith("/definition.yaml")}
    for entry in index:
        package = entry["compilationspec"]["package"]
        folder = f"{package['category']}/{package['name']}/{package['version']}"
        assert tree[f"{folder}/definition.yaml"] == entry["runtime"], folder
        data = (repo / entry["path"]).read_bytes()
        assert sha256(data) == entry["checksums"]["sha256"], entry["path"]
        suffix, _, decompress = CODECS[entry["compressiontype"]]
        assert entry["path"].endswith(".package.tar" + suffix)
        with tarfile.open(fileobj=io.BytesIO(decompress(data))) as tar:
            assert entry["files"] == sorted(m.name for m in tar if not m.isdir()), entry["path"]
        assert isinstance(entry["package_cacheimage"], str)
        assert isinstance(entry["dependencies"], list)
    assert len(tree) == len(index)
    return {e["compilationspec"]["package"]["name"]: e for e in index}


def test_luet_reads_what_cosbuild_writes(project):
    ws = Workspace(project.path)
    lib_and_app(ws)
    ws.add("fin", files={"etc/fin": "x\n"}, finalize=["true"])
    repo = ws.publish()
    by_name = luet_read(repo)
    assert set(by_name) == {"lib", "app", "fin"}
    assert by_name["app"]["runtime"]["requires"] == [
        {"name": "lib", "category": "test", "version": ">=1.0"}]
    assert by_name["lib"]["files"] == sorted(LIB_FILES)   # files and links, no directories
    # each package's metadata.yaml is the same record as its index entry
    for name, entry in by_name.items():
        meta = yaml.safe_load((repo / f"{name}-test-1.0.metadata.yaml").read_text())
        assert meta == entry, name


def test_cosbuild_writes_luet_names_not_its_old_ones(project):
    ws = Workspace(project.path)
    lib_and_app(ws)
    meta = yaml.safe_load((ws.publish() / "app-test-1.0.metadata.yaml").read_text())
    assert {"path", "dependencies", "compilationspec", "checksums", "compressiontype", "files",
            "package_cacheimage", "runtime"} <= set(meta)
    assert not {"package", "compilespec", "cache_image"} & set(meta)


# --------------------------------------------------------------------------- broken repositories

def rewrite(repo: Path, change) -> None:
    spec = yaml.safe_load((repo / "repository.yaml").read_text())
    change(spec)
    (repo / "repository.yaml").write_text(yaml.safe_dump(spec))


def vouch(repo: Path, kind: str) -> None:
    """Make repository.yaml's checksum match whatever the file now holds."""
    def change(spec):
        entry = spec["repo_files"][kind]
        entry["checksums"]["sha256"] = sha256((repo / entry["filename"]).read_bytes())
    rewrite(repo, change)


def fails(root: Path, repo: Path, match: str) -> CosbuildError:
    with pytest.raises(CosbuildError, match=match) as info:
        install(root, str(repo))
    error = info.value   # raised on its own, not chained to the exception it explains
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    assert not (root / transaction.TRANSACTION).exists()
    return error


def test_error_corrupt_tree_archive(tmp_path):
    repo = write_luet_repo(tmp_path / "repo", PACKAGES)
    data = bytearray((repo / "tree.tar.gz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (repo / "tree.tar.gz").write_bytes(bytes(data))
    vouch(repo, "tree")
    error = fails(tmp_path / "root", repo, r"tree\.tar\.gz from .*repo: not a gzip tar archive")
    assert error.key == "repo_files.tree"


def test_error_tree_compressed_otherwise_than_declared(tmp_path):
    repo = write_luet_repo(tmp_path / "repo", PACKAGES, tree="zstd")
    rewrite(repo, lambda s: s["repo_files"]["tree"].update(compressiontype="gzip"))
    fails(tmp_path / "root", repo, r"tree\.tar\.zst .*not a gzip tar archive .*zstd-compressed")


def test_error_wrong_checksum(tmp_path):
    repo = write_luet_repo(tmp_path / "repo", PACKAGES)
    rewrite(repo, lambda s: s["repo_files"]["meta"]["checksums"].update(sha256="0" * 64))
    fails(tmp_path / "root", repo,
          r"checksum mismatch for repository\.meta\.yaml\.tar from .*repo: expected 0000")


def test_error_unknown_compressiontype(tmp_path):
    repo = write_luet_repo(tmp_path / "repo", PACKAGES)
    rewrite(repo, lambda s: s["repo_files"]["tree"].update(compressiontype="xz"))
    error = fails(tmp_path / "root", repo, "unknown compressiontype 'xz'.*none, gzip, zstd")
    assert error.file.endswith("repo: repository.yaml")
    assert error.key == "repo_files.tree.compressiontype"


def test_error_unknown_compressiontype_of_an_artifact(tmp_path):
    repo = write_luet_repo(tmp_path / "repo", PACKAGES, meta="gzip")
    archive = repo / "repository.meta.yaml.tar.gz"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive.read_bytes()))) as tar:
        meta = yaml.safe_load(tar.extractfile("repository.meta.yaml").read())
    meta["index"][1]["compressiontype"] = "lz4"
    archive.write_bytes(gzip.compress(tar_bytes(
        {"repository.meta.yaml": yaml.safe_dump(meta).encode()})))
    vouch(repo, "meta")
    error = fails(tmp_path / "root", repo, "unknown compressiontype 'lz4'")
    assert error.file.endswith("repo: repository.meta.yaml: index[1]")


@pytest.mark.parametrize("victim", ["repository.meta.yaml.tar", "app-test-2.1.package.tar"])
def test_error_missing_file(tmp_path, victim):
    repo = write_luet_repo(tmp_path / "repo", PACKAGES)
    (repo / victim).unlink()
    fails(tmp_path / "root", repo, f"repository file .*repo/{victim} does not exist")


def test_error_missing_repo_file_entry(tmp_path):
    repo = write_luet_repo(tmp_path / "repo", PACKAGES)
    rewrite(repo, lambda s: s["repo_files"].pop("meta"))
    fails(tmp_path / "root", repo, r"repo_files\.meta: no repo_files\.meta with a filename")


def test_error_damaged_artifact(tmp_path):
    repo = write_luet_repo(tmp_path / "repo", PACKAGES, meta="gzip", artifacts="gzip")
    path = repo / "app-test-2.1.package.tar.gz"
    path.write_bytes(path.read_bytes()[:20])
    archive = repo / "repository.meta.yaml.tar.gz"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive.read_bytes()))) as tar:
        meta = yaml.safe_load(tar.extractfile("repository.meta.yaml").read())
    meta["index"][1]["checksums"]["sha256"] = sha256(path.read_bytes())
    archive.write_bytes(gzip.compress(tar_bytes(
        {"repository.meta.yaml": yaml.safe_dump(meta).encode()})))
    vouch(repo, "meta")
    fails(tmp_path / "root", repo, r"refusing to install test/app@2\.1: the archive is damaged "
                                   r"\(not a gzip tar archive")


def test_error_index_larger_than_the_bound(tmp_path):
    repo = write_luet_repo(tmp_path / "repo", PACKAGES)
    bounds = luetformat.Bounds(metadata_unpacked=4096)
    with pytest.raises(CosbuildError, match=r"tree\.tar\.gz from .*: larger than 4096 bytes "
                                            r"once decompressed"):
        transaction.install(tmp_path / "root", [ref("test/app")],
                       [RepoConfig(name="luet", urls=(str(repo),), bounds=bounds)])


def test_error_on_the_command_line_has_no_traceback(tmp_path, run_cli):
    repo = write_luet_repo(tmp_path / "repo", PACKAGES)
    rewrite(repo, lambda s: s["repo_files"]["tree"].update(compressiontype="brotli"))
    code, out, err = run_cli("install", "--root", str(tmp_path / "root"), "--repo", str(repo),
                             "test/app")
    assert code != 0
    assert "unknown compressiontype 'brotli'" in err and "Traceback" not in err



@pytest.mark.parametrize("comp", sorted(luetformat.COMPRESSIONS))
def test_compression_table_writes_what_its_reader_and_luet_read(tmp_path, comp):
    """Each declared type: written by its writer, read back by ours and by plain codecs,
    the same bytes on every run (no time or file name in a gzip header)."""
    c = luetformat.COMPRESSIONS[comp]
    outputs = []
    for n in range(2):
        raw = io.BytesIO()
        with c.writer(raw) as stream:
            stream.write(tar_bytes({"a/b": b"data\n"}))
        outputs.append(raw.getvalue())
    assert outputs[0] == outputs[1]
    assert outputs[0].startswith(c.magic)
    path = tmp_path / f"x.tar{c.suffix}"
    path.write_bytes(outputs[0])
    assert luetformat.read_members(path, c, lambda name: True) == {"a/b": b"data\n"}
    with tarfile.open(fileobj=io.BytesIO(CODECS[comp][2](outputs[0]))) as tar:
        assert tar.getnames() == ["a", "a/b"]
    assert CODECS[comp][0] == c.suffix


def test_empty_luet_repository_offers_nothing(tmp_path):
    """luet omits an empty index (`index,omitempty`): the meta file holds `{}`."""
    repo = write_luet_repo(tmp_path / "repo", {}, meta="none")
    (repo / "repository.meta.yaml.tar").write_bytes(tar_bytes({"repository.meta.yaml": b"{}\n"}))
    vouch(repo, "meta")
    assert load_repository(RepoConfig(name="luet", urls=(str(repo),)), tmp_path / "w") == []
