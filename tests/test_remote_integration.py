"""The seed's workflow with two projects and a real HTTP repository between them: A (the cOS
side) builds and serves everything but the sample's own packages; B's tree holds only those
and a .luet.yaml naming A. B builds nothing of A's, its ISO (live packages from A, the
rootfs from B's build) boots to /hello, and a new A release rebuilds exactly B's dependants.
Integration: run by `make test`."""

from __future__ import annotations

import shutil

import pytest

from cosbuild.repos.serve import make_server

from .conftest import copy_project, cosbuild_ok as cosbuild, running
from .qemu import VM
from .test_build_integration import ran
from .test_iso_boot import _check_booted
from .test_luet_format import luet_read

pytestmark = pytest.mark.integration

OWN = ("app/sampleOSService", "system/sampleOS")    # the derivative's own packages


@pytest.fixture(scope="module")
def projects(sample, tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    upstream = copy_project(root / "a")
    for folder in OWN:
        shutil.rmtree(upstream / "tree" / folder)
    for spec in ("iso.yaml", "disk.yaml"):   # the images are the derivative's
        (upstream / spec).unlink()
    # every image is there already (the sample built them): A's builds reuse them
    cosbuild(upstream, "run", "-n", "2", "-P", "thread", "build", "repo")
    derivative = root / "b"
    for folder in ("templates", *OWN):
        shutil.copytree(sample / "tree" / folder, derivative / "tree" / folder)
    shutil.copytree(sample / "values", derivative / "values")
    with running(make_server(upstream / "build", port=0)) as url:
        # the upstream's bootstrapped base has its /dev: the derivative says it may
        (derivative / ".luet.yaml").write_text(
            f"repositories:\n- name: cos\n  type: http\n  urls: [{url}]\n"
            "  allow_devices: [distro/base]\n")
        iso = (sample / "iso.yaml").read_text()
        assert "  repositories: []\n" in iso
        (derivative / "iso.yaml").write_text(iso.replace(
            "  repositories: []\n", f"  repositories:\n  - {{name: cos, type: http, urls: [{url}]}}\n"))
        yield upstream, derivative


def test_the_derivative_builds_nothing_of_upstream(projects):
    upstream, derivative = projects
    out = cosbuild(derivative, "run", "-n", "2", "-P", "thread", "build:system/sampleOS").stdout
    done = {line.split()[1].rstrip(":"): line for line in out.splitlines() if ": done in " in line}
    mine = {"app/sampleOSService@0.1.0", "system/sampleOS@0.1.0"}
    assert mine <= set(done), out
    for key, line in done.items():
        if key not in mine:
            assert "fetched from cos" in line, line     # from A's repository, not built
    assert "system/cos@0.1.0 (remote: cos)" in cosbuild(derivative, "graph").stdout


def test_the_derivative_iso_boots(projects, tmp_path):
    _, derivative = projects
    cosbuild(derivative, "run", "-n", "2", "-P", "thread", "iso")
    iso = derivative / "build/sampleOS-0.live.iso"
    vm = VM(iso, log=tmp_path / "console.log")
    try:
        _check_booted(vm)
    finally:
        vm.stop()


def test_a_new_upstream_release_rebuilds_exactly_the_dependants(projects):
    upstream, derivative = projects
    cosbuild(derivative, "run", "build")
    extra = upstream / "tree/system/cos/files/oem/01_upstream.yaml"
    extra.parent.mkdir(parents=True, exist_ok=True)
    extra.write_text("# a new file in cOS's release\nstages: {}\n")
    assert "build:system/cos" in ran(cosbuild(upstream, "run", "build", "repo"))
    assert ran(cosbuild(derivative, "run", "build")) == {"build:system/cos",
                                                         "build:system/sampleOS"}


def test_luet_reads_the_repository_of_the_sample(sample):
    """The sample's whole repository, read by the independent luet-side reader: every index
    entry, checksum and file list, against the artifacts themselves."""
    cosbuild(sample, "run", "repo")
    by_name = luet_read(sample / "build")
    assert {"base", "cos", "sampleOS", "sampleOSService", "golang"} <= set(by_name)
    assert by_name["sampleOS"]["package_cacheimage"].startswith("luet/cache:")
