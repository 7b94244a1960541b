"""The seed's workflow with two projects and a real HTTP repository between them: A (the cOS
side) builds and serves everything but the sample's own packages; B's tree holds only those
and a .luet.yaml naming A. B builds nothing of A's, its ISO (live packages from A, the
rootfs from B's build) boots to /hello with a cloud-config named on the kernel command line
(`cos.setup=URI`), and a new A release rebuilds exactly B's dependants.
Integration: run by `make test`."""

from __future__ import annotations

import io
import shutil
import time

import pycdlib
import pytest

from cosbuild.repos.serve import make_server

from .conftest import copy_project, cosbuild_ok as cosbuild, running
from .qemu import VM
from .test_build_integration import ran
from .test_iso_boot import check_booted
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


def iso_files(iso, paths) -> dict[str, bytes]:
    cd = pycdlib.PyCdlib()
    cd.open(str(iso))
    try:
        out = {}
        for path in paths:
            data = io.BytesIO()
            cd.get_file_from_iso_fp(data, rr_path=path)
            out[path] = data.getvalue()
        return out
    finally:
        cd.close()


BOOT_LOADER = ("/boot/uefi.img", "/boot/syslinux/isolinux.bin", "/boot/syslinux/ldlinux.c32",
               "/boot/syslinux/isolinux.cfg")


def test_the_derivative_iso_boots_with_cos_setup_from_the_command_line(projects, iso, tmp_path):
    """One boot for two facts: the derivative's kernel, initrd and squashfs boot to /hello,
    and `cos.setup=URI` on the kernel command line (a file served by the test; 10.0.2.2 is the
    host for the guest) runs in the network stage. The kernel is booted directly to put that
    argument on its command line; the boot loader files the ISO would have started it with are
    A's live packages, byte for byte those of the sample's ISO, which boots through them
    (tests/test_iso_boot.py, the installer's UEFI live boot)."""
    _, derivative = projects
    cosbuild(derivative, "run", "-n", "2", "-P", "thread", "iso")
    derived = derivative / "build/sampleOS-0.live.iso"
    assert iso_files(derived, BOOT_LOADER) == iso_files(iso, BOOT_LOADER)
    (tmp_path / "www").mkdir()
    (tmp_path / "www/extra.yaml").write_text(
        "stages:\n  network:\n    - files: [{path: /etc/from-cmdline, content: \"cmdline\\n\"}]\n")
    work = derivative / "build/iso"
    with running(make_server(tmp_path / "www", "127.0.0.1", 0)) as url:
        port = url.rsplit(":", 1)[1]
        cmdline = ("root=live:CDLABEL=COS_LIVE rd.live.dir=/ rd.live.squashimg=rootfs.squashfs "
                   "rd.live.overlay.overlayfs=1 console=ttyS0,115200 "
                   f"cos.setup=http://10.0.2.2:{port}/extra.yaml")
        vm = VM(derived, log=tmp_path / "console.log",
                kernel=(work / "kernel.xz", work / "rootfs.xz", cmdline))
        try:
            check_booted(vm)
            deadline = time.monotonic() + 120
            while "cmdline" not in vm.run("cat /etc/from-cmdline"):
                assert time.monotonic() < deadline, "the cos.setup file never ran"
                time.sleep(5)
        finally:
            vm.stop()


def test_a_new_upstream_release_rebuilds_exactly_the_dependants(projects):
    upstream, derivative = projects
    cosbuild(derivative, "run", "build")
    extra = upstream / "tree/system/cos/files/oem/01_upstream.yaml"
    extra.parent.mkdir(parents=True, exist_ok=True)
    extra.write_text("# a new file in cOS's release\nstages: {}\n")
    assert "build:system/cos" in ran(cosbuild(upstream, "run", "build", "repo"))
    # cos-initrd is built on cos upstream: it comes anew too
    assert ran(cosbuild(derivative, "run", "build")) == {"build:system/cos",
                                                         "build:system/cos-initrd",
                                                         "build:system/sampleOS"}


def test_luet_reads_the_repository_of_the_sample(sample):
    """The sample's whole repository, read by the independent luet-side reader: every index
    entry, checksum and file list, against the artifacts themselves."""
    cosbuild(sample, "run", "repo")
    by_name = luet_read(sample / "build")
    assert {"base", "cos", "sampleOS", "sampleOSService", "golang"} <= set(by_name)
    assert by_name["sampleOS"]["package_cacheimage"].startswith("luet/cache:")
