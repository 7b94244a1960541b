"""Repositories (`create-repo`) and the client (install/upgrade/uninstall/search/recover).

Fast tests: no containers. Artifacts are written by `Builder.write_outputs` from plain
folders, exactly as a real build writes them, for packages without a build.yaml.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import signal
import stat
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import running
import yaml
import zstandard

from cosbuild import luetformat, settings
from cosbuild.builds import artifact
from cosbuild.builds.builder import Builder
from cosbuild.errors import CosbuildError
from cosbuild.repos import transaction
from cosbuild.repos.config import DEFAULT_CONFIG, RepoConfig, repositories
from cosbuild.repos.extract import extract_safely
from cosbuild.repos.index import load_repository, search
from cosbuild.repos.resolve import DB_PATH
from cosbuild.repos.create import create_repo
from cosbuild.repos.serve import make_server
from cosbuild.settings import RepoInfo
from cosbuild.tools import TaskLog
from cosbuild.tree.project import load_project
from cosbuild.tree.versions import PackageRef
from cosbuild.tree.yamlio import dumps


# --------------------------------------------------------------------------- helpers

@dataclass(frozen=True)
class F:
    """A regular file of a package."""
    content: str | bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Sym:
    target: str


@dataclass(frozen=True)
class D:
    mode: int = 0o755


@dataclass(frozen=True)
class Hard:
    """A hard link to another file of the same package."""
    target: str


def materialize(folder: Path, files: dict) -> Path:
    """Write `files` (path -> str | F | Sym | D | Hard) into a fresh folder."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    os.chmod(folder, 0o755)
    later = []
    for rel, spec_ in sorted(files.items()):
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec_, str):
            spec_ = F(spec_)
        if isinstance(spec_, F):
            data = spec_.content.encode() if isinstance(spec_.content, str) else spec_.content
            path.write_bytes(data)
            os.chmod(path, spec_.mode)
        elif isinstance(spec_, Sym):
            os.symlink(spec_.target, path)
        elif isinstance(spec_, D):
            path.mkdir(exist_ok=True)
            later.append((path, spec_.mode))
        elif isinstance(spec_, Hard):
            os.link(folder / spec_.target, path)
        else:
            raise TypeError(spec_)
    for path, mode in later:
        os.chmod(path, mode)
    return folder


def snapshot(top: Path, skip: tuple[str, ...] = ()) -> dict:
    """Every entry below `top`: type, mode, content or link target (not mtimes)."""
    out = {}
    if not top.exists():
        return out
    for here, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            path = Path(here) / name
            rel = str(path.relative_to(top))
            if any(rel == s or rel.startswith(s + "/") for s in skip):
                continue
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_tar_zst(path: Path) -> dict[str, bytes | None]:
    """name -> content (None for non-files) of a .tar.zst."""
    with open(path, "rb") as f:
        data = zstandard.ZstdDecompressor().stream_reader(f).read()
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            out[m.name] = tar.extractfile(m).read() if m.isreg() else None
    return out


def write_tar_zst(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    path.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))


def member(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes | None = None,
           linkname: str = "", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    if kind == tarfile.REGTYPE and data is None:
        data = b"x\n"
    return info, data


def ref(text: str) -> PackageRef:
    """'test/foo' or 'test/foo@>=1.0'."""
    ident, _, version = text.partition("@")
    category, name = ident.split("/")
    return PackageRef(category, name, version or ">=0")


def disk(path: Path, name: str = "test", priority: int = 1) -> RepoConfig:
    return RepoConfig(name=name, urls=(str(path),), type="disk", priority=priority)


def db(root: Path) -> dict:
    return yaml.safe_load((root / DB_PATH).read_text())["packages"]


class Workspace:
    """A project folder: a package tree, the files each package holds, repositories built
    from them (one per output folder) and target roots."""

    def __init__(self, base: Path):
        self.base = base
        self.contents: dict[tuple[str, str, str], dict] = {}

    def add(self, name: str, version: str = "1.0", files: dict | None = None, *,
            category: str = "test", requires: list[str] = (), conflicts: list[str] = (),
            description: str = "", hidden: bool = False, finalize: list[str] | None = None,
            shell: list[str] | None = None) -> None:
        definition = {"name": name, "category": category, "version": version}
        if requires:
            definition["requires"] = [self._ref(r) for r in requires]
        if conflicts:
            definition["conflicts"] = [self._ref(r) for r in conflicts]
        if description:
            definition["description"] = description
        if hidden:
            definition["hidden"] = True
        folder = self.base / "tree" / f"{category}-{name}-{version}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "definition.yaml").write_text(yaml.safe_dump(definition))
        if finalize is not None:
            (folder / "finalize.yaml").write_text(
                yaml.safe_dump({"install": finalize, **({"shell": shell} if shell else {})}))
        self.contents[(category, name, version)] = dict(files or {})

    @staticmethod
    def _ref(text: str) -> dict:
        r = ref(text)
        return {"name": r.name, "category": r.category, "version": r.version}

    def content_dir(self, name: str, version: str = "1.0", category: str = "test") -> Path:
        return self.base / "contents" / f"{name}-{category}-{version}"

    def project(self, out: str = "build"):
        with contextlib.chdir(self.base):
            return load_project(settings.resolve({"build_dir": out}, env={}))

    def publish(self, out: str = "build", only: list[str] | None = None,
                repo_name: str = "test") -> Path:
        """Write artifacts + metadata of the packages (all, or `only` these names or
        name@version) into `out`, then create the repository there."""
        with contextlib.chdir(self.base):
            project = load_project(settings.resolve({"build_dir": out}, env={}))
            builder = Builder(project)
            for key in project.graph.order:
                pkg = project.graph.packages[key]
                d = pkg.definition
                ident = (d.category, d.name, d.version)
                if ident not in self.contents:
                    continue
                if only is not None and d.name not in only and f"{d.name}@{d.version}" not in only:
                    continue
                folder = materialize(self.content_dir(d.name, d.version, d.category),
                                     self.contents[ident])
                with TaskLog(self.base / "logs" / out / f"{pkg.artifact_stem}.log") as log:
                    builder.write_outputs(pkg, list(artifact.walk(folder)), log)
            create_repo(project, Path(out), RepoInfo(name=repo_name))
        return self.base / out

    def recreate_repo(self, out: str = "build") -> bool:
        with contextlib.chdir(self.base):
            project = load_project(settings.resolve({"build_dir": out}, env={}))
            return create_repo(project, Path(out), RepoInfo(name="test"))

    def replace_artifact(self, stem: str, members: list, out: str = "build") -> None:
        """Overwrite an artifact by hand and make the repository vouch for it."""
        repo = self.base / out
        write_tar_zst(repo / f"{stem}.package.tar.zst", members)
        self.fix_checksum(stem, out)

    def fix_checksum(self, stem: str, out: str = "build") -> None:
        repo = self.base / out
        meta_path = repo / f"{stem}.metadata.yaml"
        meta = yaml.safe_load(meta_path.read_text())
        meta["checksums"]["sha256"] = sha256(repo / f"{stem}.package.tar.zst")
        # the sizes as the index records them (the archive may be damaged on purpose)
        data = (repo / f"{stem}.package.tar.zst").read_bytes()
        meta.update({luetformat.SIZE_KEY: len(data), luetformat.UNPACKED_KEY: len(
            zstandard.ZstdDecompressor().decompressobj().decompress(data))})
        meta_path.write_text(dumps(meta))
        assert self.recreate_repo(out)

    def expected_root(self, *packages: tuple[str, str]) -> dict:
        """The snapshot a root should have with these (name, version) installed."""
        out = {}
        for name, version in packages:
            out.update(snapshot(self.content_dir(name, version)))
        return out


DB_SKIP = ("var",)   # var/lib/cosbuild/installed.yaml and its parents


@pytest.fixture
def ws(project) -> Workspace:
    return Workspace(project.path)


@pytest.fixture
def root(ws) -> Path:
    path = ws.base / "root"
    path.mkdir()
    return path


def serving(directory: Path):
    return running(make_server(directory, "127.0.0.1", 0))


LIB_FILES = {
    "usr/lib/libfoo.so.1": F(b"\x7fELF fake library\n", 0o755),
    "usr/lib/libfoo.so": Sym("libfoo.so.1"),
    "etc/foo.conf": F("setting = 1\n", 0o600),
}
APP_FILES = {
    "usr/bin/app": F("#!/bin/sh\necho app\n", 0o755),
    "usr/bin/app-link": Hard("usr/bin/app"),
    "usr/bin/abs": Sym("/usr/lib/libfoo.so.1"),
    "usr/share/app": D(0o750),
    "usr/share/app/data.txt": "data\n",
    "usr/share/app/empty": D(0o700),
}


def lib_and_app(ws: Workspace) -> None:
    ws.add("lib", files=LIB_FILES, description="the foo library")
    ws.add("app", files=APP_FILES, requires=["test/lib@>=1.0"], description="an application")


# --------------------------------------------------------------------------- 1. create-repo

def test_create_repo_writes_index_tree_and_meta(ws, monkeypatch):
    lib_and_app(ws)
    ws.add("fin", files={"etc/fin": "x\n"}, finalize=["echo done > /var/fin"])
    repo = ws.publish()
    index = yaml.safe_load((repo / "repository.yaml").read_text())
    assert index["name"] == "test"
    assert index["type"] == "disk"
    assert index["revision"] == 1
    assert isinstance(index["last_update"], str) and index["last_update"].isdigit()
    assert set(index["repo_files"]) >= {"tree", "meta"}
    for kind, entry in index["repo_files"].items():
        assert entry["compressiontype"] == "zstd"
        assert entry["checksums"]["sha256"] == sha256(repo / entry["filename"]), kind
    assert index["repo_files"]["tree"]["filename"] == "tree.tar.zst"

    tree = read_tar_zst(repo / "tree.tar.zst")
    definition = yaml.safe_load(tree["test/app/1.0/definition.yaml"])
    assert (definition["name"], definition["category"], definition["version"]) == ("app", "test", "1.0")
    assert definition["requires"] == [{"name": "lib", "category": "test", "version": ">=1.0"}]
    assert "test/lib/1.0/definition.yaml" in tree
    assert yaml.safe_load(tree["test/fin/1.0/finalize.yaml"]) == {"install": ["echo done > /var/fin"]}
    assert "test/app/1.0/finalize.yaml" not in tree

    meta = read_tar_zst(repo / index["repo_files"]["meta"]["filename"])
    entries = yaml.safe_load(meta["repository.meta.yaml"])["index"]
    by_name = {e["compilationspec"]["package"]["name"]: e for e in entries}
    assert set(by_name) == {"lib", "app", "fin"}
    app = by_name["app"]
    assert app["path"] == "app-test-1.0.package.tar.zst"
    assert app["compressiontype"] == "zstd"
    assert app["checksums"]["sha256"] == sha256(repo / app["path"])
    # luet lists tar member names: no leading /
    assert app["files"] == ["usr/bin/abs", "usr/bin/app", "usr/bin/app-link",
                            "usr/share/app/data.txt"]
    assert app["runtime"]["requires"] == [{"name": "lib", "category": "test", "version": ">=1.0"}]


def test_create_repo_revision_only_changes_with_content(ws):
    lib_and_app(ws)
    repo = ws.publish()
    first = (repo / "repository.yaml").read_bytes()
    assert ws.recreate_repo() is False
    assert (repo / "repository.yaml").read_bytes() == first
    assert yaml.safe_load(first)["revision"] == 1

    ws.contents[("test", "lib", "1.0")]["etc/foo.conf"] = F("setting = 2\n", 0o600)
    ws.publish(only=["lib"])   # create_repo is called by publish
    index = yaml.safe_load((repo / "repository.yaml").read_text())
    assert index["revision"] == 2
    assert ws.recreate_repo() is False
    assert yaml.safe_load((repo / "repository.yaml").read_text())["revision"] == 2


def test_create_repo_is_reproducible(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    outputs = []
    for n in ("one", "two"):
        base = tmp_path / n   # two separate checkouts of the same tree
        base.mkdir()
        w = Workspace(base)
        lib_and_app(w)
        outputs.append(w.publish())
    for name in ("repository.yaml", "tree.tar.zst", "repository.meta.yaml.tar.zst",
                 "app-test-1.0.package.tar.zst", "lib-test-1.0.package.tar.zst"):
        assert (outputs[0] / name).read_bytes() == (outputs[1] / name).read_bytes(), name
    assert yaml.safe_load((outputs[0] / "repository.yaml").read_text())["last_update"] == "1700000000"


def test_create_repo_without_artifacts_or_with_bad_type(ws):
    ws.add("lib", files={"a": "a"})
    with contextlib.chdir(ws.base):
        project = load_project(settings.resolve({}, env={}))
        with pytest.raises(CosbuildError, match="no built packages"):
            create_repo(project, Path("build"), RepoInfo(name="test"))
        with pytest.raises(CosbuildError, match="unknown repository type 'ftp'"):
            create_repo(project, Path("build"), RepoInfo(name="test", type="ftp"))


# --------------------------------------------------------------------------- 2./3. install

def test_install_with_requirement_from_disk(ws, root):
    lib_and_app(ws)
    repo = ws.publish()
    done = transaction.install(root, [ref("test/app")], [disk(repo)])
    assert [str(c) for c in done] == ["test/lib@1.0", "test/app@1.0"]   # dependencies first

    assert snapshot(root, skip=DB_SKIP) == ws.expected_root(("lib", "1.0"), ("app", "1.0"))
    assert os.stat(root / "usr/bin/app").st_ino == os.stat(root / "usr/bin/app-link").st_ino
    assert os.readlink(root / "usr/bin/abs") == "/usr/lib/libfoo.so.1"
    assert stat.S_IMODE(os.lstat(root / "etc/foo.conf").st_mode) == 0o600
    assert not (root / transaction.TRANSACTION).exists()

    installed = db(root)
    assert set(installed) == {"test/lib", "test/app"}
    assert installed["test/app"]["version"] == "1.0"
    assert installed["test/app"]["files"] == ["/usr/bin/abs", "/usr/bin/app", "/usr/bin/app-link",
                                              "/usr/share/app/data.txt"]
    assert installed["test/app"]["requires"] == ["test/lib"]
    assert installed["test/lib"]["files"] == ["/etc/foo.conf", "/usr/lib/libfoo.so",
                                              "/usr/lib/libfoo.so.1"]

    before = snapshot(root)
    assert transaction.install(root, [ref("test/app")], [disk(repo)]) == []
    assert transaction.install(root, [ref("test/lib"), ref("test/app@1.0")], [disk(repo)]) == []
    assert snapshot(root) == before


def test_install_over_http_gives_the_same_root(ws):
    lib_and_app(ws)
    repo = ws.publish()
    by_disk, by_http = ws.base / "root-disk", ws.base / "root-http"
    transaction.install(by_disk, [ref("test/app")], [disk(repo)])
    with serving(repo) as url:
        done = transaction.install(by_http, [ref("test/app")],
                              [RepoConfig(name="test", urls=(url,), type="http")])
    assert [str(c) for c in done] == ["test/lib@1.0", "test/app@1.0"]
    assert snapshot(by_http) == snapshot(by_disk)
    assert os.stat(by_http / "usr/bin/app").st_ino == os.stat(by_http / "usr/bin/app-link").st_ino


def test_finalizer_shell_travels_through_the_repository(ws, root):
    ws.add("fin", files={"etc/fin": "x\n"}, finalize=["echo done"], shell=["/bin/bash", "-e", "-c"])
    repo = ws.publish()
    tree = read_tar_zst(repo / "tree.tar.zst")
    assert yaml.safe_load(tree["test/fin/1.0/finalize.yaml"]) == {
        "install": ["echo done"], "shell": ["/bin/bash", "-e", "-c"]}
    [candidate] = load_repository(disk(repo), ws.base / "work")
    assert candidate.finalize.commands() == [["/bin/bash", "-e", "-c", "echo done"]]
    # the root has no /bin/bash: the error names the package and the shell, before any chroot
    with pytest.raises(CosbuildError, match=r"test/fin@1.0 in .*: it has no /bin/bash"):
        transaction.install(root, [ref("test/fin")], [disk(repo)])


def test_install_falls_back_to_the_next_url(ws, root):
    lib_and_app(ws)
    repo = ws.publish()
    config = RepoConfig(name="test", urls=(str(ws.base / "missing"), str(repo)))
    assert [str(c) for c in transaction.install(root, [ref("test/lib")], [config])] == ["test/lib@1.0"]


# --------------------------------------------------------------------------- 4. repositories

def two_repositories(ws: Workspace) -> tuple[Path, Path]:
    ws.add("foo", "1.0", {"etc/foo": "one\n"})
    ws.add("foo", "2.0", {"etc/foo": "two\n"})
    first = ws.publish("repo-a", only=["foo@1.0"])
    second = ws.publish("repo-b", only=["foo@2.0"])
    return first, second


def write_config(path: Path, repos: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"repositories": repos, "general": {"debug": False}}))
    return path


def test_repositories_priority_from_config(ws, root):
    a, b = two_repositories(ws)
    config = write_config(ws.base / "luet.yaml", [
        {"name": "newer", "type": "disk", "urls": [str(b)], "priority": 2, "arch": "amd64"},
        {"name": "older", "type": "disk", "urls": [str(a)], "priority": 1},
        {"name": "off", "type": "disk", "urls": [str(ws.base / "nowhere")], "enable": False,
         "priority": 0},
    ])
    repos = repositories([], config)
    assert [(r.name, r.priority) for r in repos] == [("newer", 2), ("older", 1)]
    done = transaction.install(root, [ref("test/foo")], repos)
    # lower priority number wins even over a newer version
    assert [str(c) for c in done] == ["test/foo@1.0"]
    assert (root / "etc/foo").read_text() == "one\n"
    assert db(root)["test/foo"]["repository"] == "older"


def test_repositories_same_version_in_both(ws, root):
    ws.add("foo", "1.0", {"etc/foo": "from a\n"})
    a = ws.publish("repo-a")
    ws.contents[("test", "foo", "1.0")] = {"etc/foo": "from b\n"}
    b = ws.publish("repo-b")
    config = write_config(ws.base / "luet.yaml", [
        {"name": "a", "urls": [str(a)], "priority": 5},
        {"name": "b", "urls": [str(b)], "priority": 3},
    ])
    transaction.install(root, [ref("test/foo")], repositories([], config))
    assert (root / "etc/foo").read_text() == "from b\n"


def test_repositories_repo_args_and_default_config(ws, root):
    a, b = two_repositories(ws)
    repos = repositories([str(b), "http://example.invalid/repo"], None)
    assert [(r.urls, r.type) for r in repos] == [((str(b),), "disk"),
                                                (("http://example.invalid/repo",), "http")]
    assert repos[0].priority < repos[1].priority

    # the root's own config is read, and --repo arguments beat it
    write_config(root / DEFAULT_CONFIG, [{"name": "older", "urls": [str(a)], "priority": 1}])
    from_root = repositories([], None, root)
    assert [r.name for r in from_root] == ["older"]
    both = repositories([str(b)], None, root)
    done = transaction.install(root, [ref("test/foo")], both)
    assert [str(c) for c in done] == ["test/foo@2.0"]
    assert (root / "etc/foo").read_text() == "two\n"

    with pytest.raises(CosbuildError, match="no repository given"):
        repositories([], None)


def test_repositories_config_errors(ws):
    bad = write_config(ws.base / "bad.yaml", [{"name": "x"}])
    with pytest.raises(CosbuildError, match="needs 'urls'"):
        repositories([], bad)
    (ws.base / "bad2.yaml").write_text("repositories: {name: x}\n")
    with pytest.raises(CosbuildError, match="'repositories' must be a list"):
        repositories([], ws.base / "bad2.yaml")
    off = write_config(ws.base / "off.yaml", [{"name": "x", "urls": ["/x"], "enable": False}])
    with pytest.raises(CosbuildError, match="no repository given"):
        repositories([], off)


# --------------------------------------------------------------------------- 5. errors

@pytest.fixture
def guarded(ws, root):
    """Checks that a failing call leaves the whole workspace (root, repos) untouched."""
    @contextlib.contextmanager
    def check(match: str):
        before = snapshot(ws.base)
        with pytest.raises(CosbuildError, match=match) as info:
            yield info
        assert snapshot(ws.base) == before
        assert not (root / transaction.TRANSACTION).exists()
    return check


def prepared_root(ws, root, repo) -> None:
    """A root that already has something in it."""
    (root / "etc").mkdir()
    (root / "etc/hostname").write_text("box\n")


def test_error_unknown_package(ws, root, guarded):
    lib_and_app(ws)
    repo = ws.publish()
    prepared_root(ws, root, repo)
    with guarded("unknown package test/nope: no repository has it"):
        transaction.install(root, [ref("test/app"), ref("test/nope")], [disk(repo)])


def test_error_unknown_requirement(ws, root, guarded):
    ws.add("app", files={"a": "a"}, requires=["test/ghost"])
    repo = ws.publish()
    with guarded(r"test/app@1.0 requires unknown package test/ghost"):
        transaction.install(root, [ref("test/app")], [disk(repo)])


def test_error_unsatisfiable_selector(ws, root, guarded):
    ws.add("lib", "1.0", {"usr/lib/a": "1"})
    ws.add("lib", "1.5", {"usr/lib/a": "1.5"})
    ws.add("app", files={"usr/bin/app": "x"}, requires=["test/lib@>=2.0"])
    repo = ws.publish()
    prepared_root(ws, root, repo)
    with guarded(r"test/app@1.0 requires test/lib@>=2.0, but no version satisfies it "
                 r"\(available: 1.0, 1.5\)"):
        transaction.install(root, [ref("test/app")], [disk(repo)])
    with guarded(r"test/lib@=3, but no version satisfies it \(available: 1.0, 1.5\)"):
        transaction.install(root, [ref("test/lib@=3")], [disk(repo)])


def test_error_incompatible_requirements(ws, root, guarded):
    ws.add("lib", "1.0", {"usr/lib/a": "1"})
    ws.add("lib", "2.0", {"usr/lib/a": "2"})
    ws.add("a", files={"usr/bin/a": "a"}, requires=["test/lib@<2.0"])
    ws.add("b", files={"usr/bin/b": "b"}, requires=["test/lib@>=2.0"])
    repo = ws.publish()
    with guarded(r"test/b@1.0 requires test/lib@>=2.0, but test/lib@1.0 is also required"):
        transaction.install(root, [ref("test/a"), ref("test/b")], [disk(repo)])


def test_error_declared_conflict(ws, root, guarded):
    ws.add("a", files={"usr/bin/a": "a"}, conflicts=["test/b"])
    ws.add("b", files={"usr/bin/b": "b"})
    repo = ws.publish()
    with guarded(r"test/a@1.0 conflicts with test/b@1.0"):
        transaction.install(root, [ref("test/a"), ref("test/b")], [disk(repo)])
    transaction.install(root, [ref("test/b")], [disk(repo)])
    with guarded(r"test/a@1.0 conflicts with test/b@1.0"):
        transaction.install(root, [ref("test/a")], [disk(repo)])


def test_error_file_conflict(ws, root, guarded):
    ws.add("a", files={"etc/shared": "a\n", "usr/bin/a": "a"})
    ws.add("b", files={"etc/shared": "b\n", "usr/bin/b": "b"})
    repo = ws.publish()
    with guarded(r"file conflict: /etc/shared of test/b@1.0 belongs to test/a"):
        transaction.install(root, [ref("test/a"), ref("test/b")], [disk(repo)])
    transaction.install(root, [ref("test/a")], [disk(repo)])
    with guarded(r"file conflict: /etc/shared of test/b@1.0 belongs to test/a"):
        transaction.install(root, [ref("test/b")], [disk(repo)])
    assert (root / "etc/shared").read_text() == "a\n"


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("victim", ["tree.tar.zst", "repository.meta.yaml.tar.zst",
                                    "lib-test-1.0.package.tar.zst"])
def test_error_checksum_mismatch(ws, root, guarded, victim):
    lib_and_app(ws)
    repo = ws.publish()
    prepared_root(ws, root, repo)
    corrupt(repo / victim)
    with guarded(f"checksum mismatch for {victim.replace('.', '[.]')} from"):
        transaction.install(root, [ref("test/app")], [disk(repo)])


def test_error_truncated_artifact(ws, root, guarded):
    lib_and_app(ws)
    repo = ws.publish()
    path = repo / "app-test-1.0.package.tar.zst"
    path.write_bytes(path.read_bytes()[:-20])
    # the size the index records tells first
    with guarded("app-test-1.0.package.tar.zst: truncated: got"):
        transaction.install(root, [ref("test/app")], [disk(repo)])


def test_error_truncated_artifact_with_matching_checksum(ws, root, guarded, monkeypatch):
    """A repository that vouches for a broken artifact: still an error, not a traceback."""
    lib_and_app(ws)
    repo = ws.publish()
    path = repo / "app-test-1.0.package.tar.zst"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    # made by a tool that does not look at its artifacts (cosbuild's create-repo refuses it)
    monkeypatch.setattr("cosbuild.repos.create._check_artifact", lambda *args: None)
    ws.fix_checksum("app-test-1.0")
    with guarded("app-test-1.0|test/app@1.0"):
        transaction.install(root, [ref("test/app")], [disk(repo)])


def test_error_missing_artifact(ws, root, guarded):
    lib_and_app(ws)
    repo = ws.publish()
    (repo / "app-test-1.0.package.tar.zst").unlink()
    with guarded("repository file .*app-test-1.0.package.tar.zst does not exist"):
        transaction.install(root, [ref("test/app")], [disk(repo)])


def test_stale_transaction_folder_does_not_block_install(ws, root):
    lib_and_app(ws)
    repo = ws.publish()
    # a transaction folder without journal is an aborted run: recovered, not refused
    (root / transaction.TRANSACTION).mkdir()
    transaction.install(root, [ref("test/lib")], [disk(repo)])
    assert not (root / transaction.TRANSACTION).exists()


# --------------------------------------------------------------------------- 6. hostile artifacts

def outside_target() -> Path:
    return Path("/tmp") / f"cosbuild-test-{uuid.uuid4().hex}"


HOSTILE = {
    "absolute path": lambda t: [member("usr", tarfile.DIRTYPE, mode=0o755),
                                member("/etc/evil-absolute")],
    "dot-dot": lambda t: [member("usr", tarfile.DIRTYPE, mode=0o755),
                          member("usr/../../escaped")],
    "leading dot-dot": lambda t: [member("../escaped")],
    "write through symlink": lambda t: [member("evil", tarfile.SYMTYPE, linkname=str(t)),
                                        member("evil/pwned", data=b"pwned\n")],
    "write through nested symlink": lambda t: [member("usr", tarfile.DIRTYPE, mode=0o755),
                                               member("usr/evil", tarfile.SYMTYPE, linkname=str(t)),
                                               member("usr/evil/sub/pwned", data=b"pwned\n")],
    "hard link to /etc/passwd": lambda t: [member("passwd", tarfile.LNKTYPE, linkname="/etc/passwd")],
    "hard link to a missing name": lambda t: [member("usr", tarfile.DIRTYPE, mode=0o755),
                                              member("usr/link", tarfile.LNKTYPE, linkname="usr/nothere")],
    "hard link with dot-dot": lambda t: [member("a", data=b"a"),
                                         member("link", tarfile.LNKTYPE, linkname="x/../../a")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_artifact_is_refused(ws, root, guarded, case):
    lib_and_app(ws)
    repo = ws.publish()
    transaction.install(root, [ref("test/lib")], [disk(repo)])
    target = outside_target()
    ws.replace_artifact("app-test-1.0", HOSTILE[case](target))
    try:
        with guarded("refusing to install test/app@1.0"):
            transaction.install(root, [ref("test/app")], [disk(repo)])
        assert not os.path.lexists(target)
        assert not (ws.base / "escaped").exists() and not (root.parent / "escaped").exists()
        assert not Path("/etc/evil-absolute").exists()
    finally:
        if os.path.lexists(target):
            shutil.rmtree(target) if target.is_dir() else target.unlink()


WRITE_OVER_SYMLINK_BUG = ("BUG: a regular file member with the same name as an earlier symlink "
                          "member is written through the link (tarfile opens it with 'wb'): "
                          "the file appears at the symlink target outside the root")


def test_hostile_file_over_own_symlink_is_refused(ws, root, guarded):
    lib_and_app(ws)
    repo = ws.publish()
    target = outside_target()
    ws.replace_artifact("app-test-1.0", [member("evil", tarfile.SYMTYPE, linkname=str(target)),
                                         member("evil", data=b"pwned\n")])
    try:
        with guarded("refusing to install test/app@1.0"):
            transaction.install(root, [ref("test/app")], [disk(repo)])
    finally:
        written = os.path.lexists(target)
        if written:
            os.unlink(target)
    assert not written


def test_file_over_symlink_of_another_package_writes_nothing_outside(ws, root, guarded):
    target = outside_target()
    ws.add("a", files={"evil": Sym(str(target))})
    ws.add("b", files={"evil": "pwned\n"})
    repo = ws.publish()
    try:
        with guarded("test/b@1.0"):
            transaction.install(root, [ref("test/a"), ref("test/b")], [disk(repo)])
    finally:
        written = os.path.lexists(target)
        if written:
            os.unlink(target)
    assert not written


def test_file_over_directory_of_another_package_is_a_conflict(ws, root, guarded):
    ws.add("base", files={"etc/passwd": "root:x:0:0\n", "etc/group": "root:x:0:\n"})
    ws.add("bad", files={"etc": "I am a file\n"})
    repo = ws.publish()
    transaction.install(root, [ref("test/base")], [disk(repo)])
    (root / "etc/hostname").write_text("box\n")   # an unowned file the admin wrote
    with guarded("/etc"):
        transaction.install(root, [ref("test/bad")], [disk(repo)])


def test_upgrade_file_becomes_directory(ws, root):
    ws.add("foo", "1.0", {"etc/foo": "old\n"})
    repo = ws.publish()
    transaction.install(root, [ref("test/foo")], [disk(repo)])
    ws.add("foo", "2.0", {"etc/foo/conf": "new\n"})
    ws.publish(only=["foo@2.0"])
    assert [str(c) for c in transaction.upgrade(root, [disk(repo)])] == ["test/foo@2.0"]
    assert (root / "etc/foo/conf").read_text() == "new\n"
    assert db(root)["test/foo"]["files"] == ["/etc/foo/conf"]


def test_upgrade_directory_becomes_file(ws, root):
    ws.add("foo", "1.0", {"etc/foo/conf": "old\n"})
    repo = ws.publish()
    transaction.install(root, [ref("test/foo")], [disk(repo)])
    ws.add("foo", "2.0", {"etc/foo": "new\n"})
    ws.publish(only=["foo@2.0"])
    transaction.upgrade(root, [disk(repo)])
    assert (root / "etc/foo").read_text() == "new\n"
    assert db(root)["test/foo"]["files"] == ["/etc/foo"]


def test_symlink_of_one_package_is_not_written_through_by_another(ws, root, guarded):
    target = outside_target()
    ws.add("a", files={"evil": Sym(str(target))})
    ws.add("b", files={"evil/pwned": "pwned\n"})
    repo = ws.publish()
    with guarded("refusing to install test/b@1.0: 'evil"):
        transaction.install(root, [ref("test/a"), ref("test/b")], [disk(repo)])
    assert not os.path.lexists(target)


def test_directory_over_installed_dangling_symlink(ws, root, guarded):
    target = outside_target()
    ws.add("a", files={"evil": Sym(str(target))})
    ws.add("b", files={"evil/pwned": "pwned\n"})
    repo = ws.publish()
    transaction.install(root, [ref("test/a")], [disk(repo)])
    try:
        with guarded("evil"):
            transaction.install(root, [ref("test/b")], [disk(repo)])
    finally:
        assert not os.path.lexists(target)


def test_installed_absolute_symlink_is_resolved_inside_the_root(ws, root):
    """/lib -> /usr/lib style links of the root are followed as in a chroot, not on the host."""
    ws.add("base", files={"usr/lib": D(), "lib": Sym("/usr/lib")})
    ws.add("extra", files={"lib/extra.so": "so\n"})
    repo = ws.publish()
    transaction.install(root, [ref("test/base")], [disk(repo)])
    transaction.install(root, [ref("test/extra")], [disk(repo)])
    assert (root / "usr/lib/extra.so").read_text() == "so\n"
    assert os.readlink(root / "lib") == "/usr/lib"
    assert not Path("/usr/lib/extra.so").exists()


def test_extract_safely_reports_the_files(tmp_path):
    archive = tmp_path / "ok.tar.zst"
    write_tar_zst(archive, [member("usr", tarfile.DIRTYPE, mode=0o755),
                            member("usr/a", data=b"a"),
                            member("usr/b", tarfile.LNKTYPE, linkname="usr/a"),
                            member("usr/c", tarfile.SYMTYPE, linkname="a")])
    dest = tmp_path / "dest"
    dest.mkdir()
    assert extract_safely(archive, dest, "x", compression=luetformat.ZSTD) == [
        "/usr/a", "/usr/b", "/usr/c"]
    assert os.stat(dest / "usr/a").st_ino == os.stat(dest / "usr/b").st_ino
    assert os.readlink(dest / "usr/c") == "a"


# --------------------------------------------------------------------------- 7. upgrade

def test_upgrade_replaces_files_and_removes_the_old_ones(ws, root):
    ws.add("foo", "1.0", {"etc/foo/a": "a1\n", "etc/foo/b": "b1\n"})
    ws.add("other", "1.0", {"etc/other": "o\n"})
    repo = ws.publish(only=["foo@1.0", "other"])
    transaction.install(root, [ref("test/foo"), ref("test/other")], [disk(repo)])
    assert transaction.upgrade(root, [disk(repo)]) == []

    ws.add("foo", "2.0", {"etc/foo/a": "a2\n", "etc/foo/c": "c2\n"})
    ws.publish(only=["foo@2.0"])
    done = transaction.upgrade(root, [disk(repo)])
    assert [str(c) for c in done] == ["test/foo@2.0"]
    assert (root / "etc/foo/a").read_text() == "a2\n"
    assert not (root / "etc/foo/b").exists()
    assert (root / "etc/foo/c").read_text() == "c2\n"
    assert (root / "etc/other").read_text() == "o\n"
    installed = db(root)
    assert installed["test/foo"]["version"] == "2.0"
    assert installed["test/foo"]["files"] == ["/etc/foo/a", "/etc/foo/c"]
    assert installed["test/other"]["version"] == "1.0"
    assert snapshot(root, skip=DB_SKIP) == ws.expected_root(("foo", "2.0"), ("other", "1.0"))
    assert transaction.upgrade(root, [disk(repo)]) == []


def test_upgrade_installs_new_requirements(ws, root):
    ws.add("foo", "1.0", {"etc/foo": "1\n"})
    repo = ws.publish()
    transaction.install(root, [ref("test/foo")], [disk(repo)])
    ws.add("bar", "1.0", {"etc/bar": "bar\n"})
    ws.add("foo", "2.0", {"etc/foo": "2\n"}, requires=["test/bar"])
    ws.publish(only=["foo@2.0", "bar"])
    transaction.upgrade(root, [disk(repo)])
    assert db(root)["test/foo"]["version"] == "2.0"
    assert "test/bar" in db(root)
    assert (root / "etc/bar").read_text() == "bar\n"


# --------------------------------------------------------------------------- 8. uninstall

def test_uninstall(ws, root, guarded):
    lib_and_app(ws)
    repo = ws.publish()
    transaction.install(root, [ref("test/app")], [disk(repo)])
    with guarded(r"test/app requires test/lib \(uninstall test/app too\)"):
        transaction.uninstall(root, ["test/lib"])
    with guarded("test/nope is not installed"):
        transaction.uninstall(root, ["test/nope"])

    transaction.uninstall(root, ["test/app"])
    for path in APP_FILES:
        if not isinstance(APP_FILES[path], D):
            assert not os.path.lexists(root / path), path
    assert (root / "usr/lib/libfoo.so.1").exists()
    assert set(db(root)) == {"test/lib"}

    transaction.uninstall(root, ["test/lib"])
    assert db(root) == {}
    assert not any(os.path.lexists(root / p) for p in LIB_FILES)
    assert not (root / transaction.TRANSACTION).exists()


def test_uninstall_together_with_its_dependant(ws, root):
    lib_and_app(ws)
    repo = ws.publish()
    transaction.install(root, [ref("test/app")], [disk(repo)])
    transaction.uninstall(root, ["test/lib", "test/app"])
    assert db(root) == {}
    files = {k for k, v in snapshot(root, skip=DB_SKIP).items() if v[0] != "dir"}
    assert files == set()


# --------------------------------------------------------------------------- 9. interruption

def test_recover_discards_an_uncommitted_transaction(ws, root):
    lib_and_app(ws)
    repo = ws.publish()
    transaction.install(root, [ref("test/lib")], [disk(repo)])
    before = snapshot(root)
    staged = root / transaction.TRANSACTION / "rootfs/usr/bin"
    staged.mkdir(parents=True)
    (staged / "half").write_text("half\n")
    (root / transaction.TRANSACTION / "app-test-1.0.package.tar.zst").write_bytes(b"partial")
    transaction.recover(root)
    assert snapshot(root) == before
    assert not (root / "usr/bin/half").exists()


def interrupt_commit(monkeypatch, move_first: list[str]):
    """Make the next commit die after moving only the staged top-level entries `move_first`."""
    real = transaction._move_staged

    def dying(root: Path, staging: Path) -> None:
        monkeypatch.setattr(transaction, "_move_staged", real)
        for name in move_first:
            os.replace(staging / name, root / name)
        raise SystemExit("killed")   # the process dies: no clean-up code of ours runs

    monkeypatch.setattr(transaction, "_move_staged", dying)


@pytest.mark.parametrize("resume", ["recover", "install"])
def test_interrupted_commit_is_completed(ws, root, monkeypatch, resume):
    ws.add("pkg", files={"etc/pkg.conf": "conf\n", "usr/bin/pkg": F("bin\n", 0o755),
                         "opt/pkg/data": "data\n"})
    repo = ws.publish()
    reference = ws.base / "reference"
    transaction.install(reference, [ref("test/pkg")], [disk(repo)])

    interrupt_commit(monkeypatch, ["etc"])
    with pytest.raises(SystemExit):
        transaction.install(root, [ref("test/pkg")], [disk(repo)])
    # halfway: the journal is there, part of the files are in place
    assert (root / transaction.TRANSACTION / "journal.yaml").is_file()
    assert (root / "etc/pkg.conf").exists() and not (root / "usr/bin/pkg").exists()
    assert not (root / DB_PATH).exists()

    if resume == "recover":
        transaction.recover(root)
    else:
        assert transaction.install(root, [ref("test/pkg")], [disk(repo)]) == []
    assert snapshot(root) == snapshot(reference)
    assert not (root / transaction.TRANSACTION).exists()


def test_interrupted_upgrade_is_completed(ws, root, monkeypatch):
    ws.add("foo", "1.0", {"etc/foo/a": "a1\n", "etc/foo/b": "b1\n", "usr/share/foo": "1\n"})
    repo = ws.publish()
    transaction.install(root, [ref("test/foo")], [disk(repo)])
    ws.add("foo", "2.0", {"etc/foo/a": "a2\n", "etc/foo/c": "c2\n", "usr/share/foo": "2\n"})
    ws.publish(only=["foo@2.0"])

    interrupt_commit(monkeypatch, [])
    with pytest.raises(SystemExit):
        transaction.upgrade(root, [disk(repo)])
    assert (root / transaction.TRANSACTION / "journal.yaml").exists()   # killed mid-commit
    assert transaction.upgrade(root, [disk(repo)]) == []   # recovers first: nothing left to do
    assert snapshot(root, skip=DB_SKIP) == ws.expected_root(("foo", "2.0"))
    assert db(root)["test/foo"]["version"] == "2.0"


def test_sigint_is_deferred_until_the_block_ends():
    previous = signal.getsignal(signal.SIGINT)
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with transaction._signals_held():
            signal.raise_signal(signal.SIGINT)
            steps.append("after the signal")
            signal.raise_signal(signal.SIGTERM)
            steps.append("end of block")
    assert steps == ["after the signal", "end of block"]
    assert signal.getsignal(signal.SIGINT) is previous


def test_sigint_during_commit_still_completes_it(ws, root, monkeypatch):
    lib_and_app(ws)
    repo = ws.publish()
    real = transaction._move_staged

    def interrupted(root_: Path, staging: Path) -> None:
        signal.raise_signal(signal.SIGINT)
        real(root_, staging)

    monkeypatch.setattr(transaction, "_move_staged", interrupted)
    with pytest.raises(KeyboardInterrupt):
        transaction.install(root, [ref("test/app")], [disk(repo)])
    assert snapshot(root, skip=DB_SKIP) == ws.expected_root(("lib", "1.0"), ("app", "1.0"))
    assert set(db(root)) == {"test/lib", "test/app"}
    assert not (root / transaction.TRANSACTION).exists()


# --------------------------------------------------------------------------- 10. search

def test_search(ws, tmp_path):
    lib_and_app(ws)
    ws.add("secret", files={"x": "x"}, hidden=True, description="a foo helper")
    ws.add("lib", "2.0", {"usr/lib/libfoo.so.2": "2"}, description="the foo library")
    repo = ws.publish()
    work = tmp_path / "search-work"

    found = search([disk(repo)], "FOO", work)
    assert [str(c) for c in found] == ["test/lib@1.0", "test/lib@2.0"]   # by description
    assert [str(c) for c in search([disk(repo)], "app", work)] == ["test/app@1.0"]  # by name
    assert search([disk(repo)], "secret", work) == []
    assert search([disk(repo)], "nothing-like-this", work) == []
    assert found[0].definition.description == "the foo library"
