"""Build deps from a build repository: a derivative's tree holds only its own packages, the
rest comes from another project's repository (image-less packages, so no container runs;
tests/test_remote_integration.py builds the sample that way)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import sys
from pathlib import Path

import pytest
import zstandard

from cosbuild.repos.serve import make_server

from .conftest import running, write_files

UPSTREAM = {
    "tree/lib/definition.yaml": "name: lib\ncategory: base\nversion: '1.0'\n",
    "tree/lib/data.txt": "upstream data 1\n",
    "tree/tool/definition.yaml": ("name: tool\ncategory: base\nversion: '2.0'\n"
                                  "requires: [{name: lib, category: base, version: '>=1'}]\n"),
}
DERIVATIVE = {
    # builds on base/tool's artifact, which comes from upstream
    "tree/app/definition.yaml": "name: app\ncategory: apps\nversion: '0.1'\n",
    "tree/app/build.yaml": "retrieve: [tool-base-*]\n",
    # builds on nothing of upstream's
    "tree/solo/definition.yaml": "name: solo\ncategory: apps\nversion: '0.1'\n",
}


def cosbuild(root: Path, *args: str, check: bool = True):
    proc = subprocess.run([sys.executable, "-m", "cosbuild.cli", *args], cwd=root,
                          capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def ran(proc) -> set[str]:
    return {line.split()[1] for line in proc.stdout.splitlines() if line.startswith(".  ")}


@pytest.fixture
def projects(tmp_path):
    upstream = write_files(tmp_path / "upstream", UPSTREAM)
    cosbuild(upstream, "run", "build", "repo")
    derivative = write_files(tmp_path / "derivative", DERIVATIVE)
    return upstream, derivative


def test_build_deps_come_from_the_build_repository(projects):
    upstream, derivative = projects
    (derivative / ".luet.yaml").write_text(
        f"repositories:\n- name: upstream\n  type: disk\n  urls: [{upstream / 'build'}]\n")
    graph = json.loads(cosbuild(derivative, "graph", "--json").stdout)
    remote = {p["id"]: p["remote"] for p in graph["packages"]}
    assert remote == {"base/tool": "upstream", "apps/app": None, "apps/solo": None}
    assert "base/tool@2.0 (remote: upstream)" in cosbuild(derivative, "graph").stdout
    out = cosbuild(derivative, "run", "build")
    assert "base/tool@2.0: done" in out.stdout and "fetched from upstream" in out.stdout
    # fetched exactly, not rebuilt: the upstream artifact byte for byte
    for name in ("tool-base-2.0",):
        got = (derivative / "build" / f"{name}.package.tar.zst").read_bytes()
        assert got == (upstream / "build" / f"{name}.package.tar.zst").read_bytes()
    assert ran(cosbuild(derivative, "run", "build")) == set()      # a no-op
    # the derivative's repository holds only its own packages
    cosbuild(derivative, "run", "repo")
    offered = cosbuild(derivative, "search", "--repo", str(derivative / "build")).stdout
    assert "apps/app@0.1" in offered and "base/tool" not in offered


def test_a_new_upstream_release_rebuilds_exactly_its_dependants(projects):
    upstream, derivative = projects
    (derivative / ".luet.yaml").write_text(
        f"repositories:\n- name: upstream\n  type: disk\n  urls: [{upstream / 'build'}]\n")
    cosbuild(derivative, "run", "build")
    # a new release of tool (solo builds on nothing of upstream's: it stays)
    write_files(upstream, {"tree/tool/definition.yaml":
                           UPSTREAM["tree/tool/definition.yaml"].replace("2.0", "2.1")})
    cosbuild(upstream, "run", "build", "repo")
    assert ran(cosbuild(derivative, "run", "build")) == {"build:base/tool", "build:apps/app"}


def test_build_repository_over_http_by_setting(projects):
    upstream, derivative = projects
    with running(make_server(upstream / "build", port=0)) as url:
        out = cosbuild(derivative, "run", "build", "--build-repo", url)
        assert "fetched from " + url in out.stdout
        env_run = subprocess.run([sys.executable, "-m", "cosbuild.cli", "graph", "--json"],
                                 cwd=derivative, capture_output=True, text=True,
                                 env={**os.environ, "COSBUILD_BUILD_REPO": url})
        assert '"remote": "' + url in env_run.stdout


def test_remote_mistakes_name_the_package_and_the_repository(projects):
    upstream, derivative = projects
    repo = upstream / "build"
    # a package no tree and no repository has
    write_files(derivative, {"tree/app/build.yaml": "requires: [{name: nope, category: base}]\n"})
    proc = cosbuild(derivative, "graph", "--build-repo", str(repo), check=False)
    assert proc.returncode == 1
    assert "base/nope" in proc.stderr and f"build repositories {repo}" in proc.stderr
    write_files(derivative, DERIVATIVE)
    # an artifact that does not match the index: refused, nothing left in the build folder
    # (as long as the original: the checksum tells, not the size the index records)
    artifact = repo / "tool-base-2.0.package.tar.zst"
    artifact.write_bytes(b"tampered".ljust(artifact.stat().st_size, b"!"))
    proc = cosbuild(derivative, "run", "build", "--build-repo", str(repo), check=False)
    assert proc.returncode != 0
    assert f"base/tool@2.0 from repository {repo}" in proc.stdout + proc.stderr
    assert "may be corrupt" in proc.stdout + proc.stderr
    assert not (derivative / "build/tool-base-2.0.package.tar.zst").exists()
    # building on the image of a package whose repository has none
    write_files(derivative, {"tree/app/build.yaml": "requires: [{name: tool, category: base}]\n"})
    (repo / "tool-base-2.0.package.tar.zst").unlink()
    cosbuild(upstream, "run", "build", "repo")
    proc = cosbuild(derivative, "run", "build", "--build-repo", str(repo), check=False)
    assert proc.returncode != 0 and "package_cacheimage" in proc.stdout + proc.stderr
    write_files(derivative, DERIVATIVE)
    # an unreachable repository
    proc = cosbuild(derivative, "run", "build", "--build-repo", "http://127.0.0.1:9/repo",
                    check=False)
    assert proc.returncode == 1 and "http://127.0.0.1:9/repo" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("comp", ["none", "gzip"])
def test_build_deps_from_a_luet_made_repository(tmp_path, comp):
    """luet's own repository (its field names, plain or gzip artifacts): the fetched
    artifact is the same files, kept as the zstd archive the builds here read."""
    from .test_luet_format import PACKAGES, write_luet_repo
    repo = write_luet_repo(tmp_path / "luet", PACKAGES, artifacts=comp)
    derivative = write_files(tmp_path / "derivative", {
        "tree/mine/definition.yaml": "name: mine\ncategory: apps\nversion: '1'\n",
        "tree/mine/build.yaml": "retrieve: [app-test-*]\n"})
    out = cosbuild(derivative, "run", "build", "--build-repo", str(repo)).stdout
    assert "test/app@2.1: done" in out and f"fetched from {repo}" in out
    fetched = derivative / "build/app-test-2.1.package.tar.zst"
    data = zstandard.ZstdDecompressor().stream_reader(fetched.open("rb")).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert {m.name for m in tar if m.isfile()} == {"usr/bin/app"}
