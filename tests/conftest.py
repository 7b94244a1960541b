"""Shared fixtures: small trees written into a temporary project folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from cosbuild import cli

from . import helmref, signing

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    """The long boot cycles run only when asked for (`make test-all`)."""
    if os.environ.get("COSBUILD_TEST_BOOT_CYCLES") == "1":
        return
    skip = pytest.mark.skip(reason="a long boot cycle: make test-all (COSBUILD_TEST_BOOT_CYCLES=1) "
                                   "runs it")
    for item in items:
        if "boot_cycle" in item.keywords:
            item.add_marker(skip)


# a minimal valid tree: a base with an image, and an app built on it
BASIC = {
    "tree/base/definition.yaml": "name: base\ncategory: distro\nversion: '1.0'\n",
    "tree/base/build.yaml": "image: debian:bookworm\nsteps:\n  - echo base\n",
    "tree/app/definition.yaml": "name: app\ncategory: app\nversion: '0.1'\n",
    "tree/app/build.yaml": ("requires:\n  - name: base\n    category: distro\n"
                            "    version: '>=1.0'\nsteps:\n  - echo app\n"),
    "tree/app/main.c": "int main(void) { return 0; }\n",
}


def write_files(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder (the cwd) with `write(files)` to add or change files."""
    monkeypatch.chdir(tmp_path)
    for var in ("COSBUILD_TREE", "COSBUILD_VALUES", "COSBUILD_FLAVOR", "COSBUILD_BUILD_DIR",
                "COSBUILD_STRICT", "COSBUILD_ARCH"):
        monkeypatch.delenv(var, raising=False)

    def write(files: dict[str, str]) -> Path:
        return write_files(tmp_path, files)

    write.path = tmp_path
    return write


@pytest.fixture
def run_cli(capsys):
    """Run `cosbuild ARGS` in-process; returns (exit code, stdout, stderr). A doit command
    that fails while loading its tasks ends by SystemExit, as the console script does."""
    def run(*args: str):
        try:
            code = cli.main(list(args))
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err
    return run


# ----------------------------------------------------------------------------- the sample

SAMPLE_PACKAGES = {"distro/base", "build/golang", "system/cos", "app/sampleOSService",
                   "system/sampleOS", "live/syslinux", "live/grub2-efi-image",
                   "system/grub2-efi", "system/cosbuild-client", "system/cos-initrd"}


def cosbuild_ok(root, *args, env=None):
    """Run the cosbuild command in `root`; it must succeed."""
    proc = subprocess.run([sys.executable, "-m", "cosbuild.cli", *args], cwd=root,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def copy_project(dest: Path) -> Path:
    """The sample project in `dest`, with the test key set as its keys/ (tests/signing.py):
    whatever keys this repository has, every copy's image trusts the same root."""
    for name in ("tree", "values", "iso.yaml", "iso-arm64.yaml", "disk.yaml", "disk-arm64.yaml"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name)
        else:
            shutil.copy(source, dest / name)
    signing.install_test_keys(dest)
    return dest


@pytest.fixture(scope="session")
def sample(tmp_path_factory):
    """The sample derivative built once per test run, in a copy of this repository.

    Images are shared with `make iso` through the default image repository: they are
    tagged by build hash, so whatever is there is exactly what a build would produce."""
    root = copy_project(tmp_path_factory.mktemp("sample"))
    cosbuild_ok(root, "run", "-n", "2", "-P", "thread", "build")
    for pkg in SAMPLE_PACKAGES:
        category, name = pkg.split("/")
        assert list((root / "build").glob(f"{name}-{category}-*.package.tar.zst")), pkg
    return root


@pytest.fixture(scope="session")
def iso(sample):
    """The sample's live ISO, built once per test run."""
    cosbuild_ok(sample, "run", "-n", "2", "-P", "thread", "iso")
    isos = sorted((sample / "build").glob("*.iso"))
    assert [p.name for p in isos] == ["sampleOS-0.live.iso"]
    return isos[0]


DISK_NAME = "sampleOS-0.disk"


# what the boot tests take: the raw disk it is made from and the other formats are made,
# checked and removed by tests/test_disk_artifacts.py (together they are gigabytes; the
# machine's disk is small)
BOOTED_FORMATS = ("qcow2",)


def disk_files(sample: Path, names) -> dict[str, Path]:
    """active.img and the disk files of the format `names` in the sample's build folder."""
    from cosbuild.images.formats import FORMATS
    build = sample / "build"
    return {"active": build / "active.img",
            **{f.name: build / f"{DISK_NAME}{f.suffix}" for f in FORMATS if f.name in names}}


@pytest.fixture(scope="session")
def disk(sample):
    """The sample's installed disk: its system image and qcow2 (and the disk's SBOM), built
    once per test run."""
    cosbuild_ok(sample, "run", "-n", "2", "-P", "thread", "image",
                *(f"disk:{name}" for name in (*BOOTED_FORMATS, "sbom")))
    files = disk_files(sample, BOOTED_FORMATS)
    assert all(p.is_file() for p in files.values())
    return files


@contextlib.contextmanager
def running(server):
    """Run an HTTP `server` in a thread; yields its base URL, shuts it down afterwards."""
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ----------------------------------------------------------------------------- a registry

REGISTRY_BINARY = "/usr/bin/docker-registry"   # Debian's docker-registry (distribution 2.8)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def registry_server(folder: Path, port: int):
    """A real OCI registry on 127.0.0.1:port, storing in `folder`; yields HOST:PORT."""
    assert os.path.exists(REGISTRY_BINARY), "docker-registry is missing: run `make deps`"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.yml"
    config.write_text(textwrap.dedent(f"""\
        version: 0.1
        log: {{level: warn}}
        storage:
          filesystem: {{rootdirectory: {folder / "data"}}}
          delete: {{enabled: true}}
        http: {{addr: "127.0.0.1:{port}", secret: cosbuild-tests}}
        """))
    with (folder / "registry.log").open("w") as log:
        proc = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)], stdout=log, stderr=log)
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{host}/v2/", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, \
                    (folder / "registry.log").read_text()
                time.sleep(0.1)
        yield host
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """One registry for the test run; tests use their own repository names in it."""
    with registry_server(tmp_path_factory.mktemp("registry"), free_port()) as host:
        yield host


@pytest.fixture(scope="session")
def helm_reference(request, tmp_path_factory):
    """luet 0.20's Helm rendering (tests/helmref), built once into pytest's cache folder
    (kept between runs; a temporary one when the cache plugin is off)."""
    reason = helmref.unavailable()
    if reason:
        pytest.skip(f"the Helm reference renderer needs Go: {reason}")
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("helmref") if cache else tmp_path_factory.mktemp("helmref")
    return helmref.HelmReference(helmref.build(folder))
