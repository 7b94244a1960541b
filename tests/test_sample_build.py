"""The sample derivative built for real (integration). Its incremental rebuilds are tested
with its ISO (tests/test_iso_boot.py).

The default flavor is built in CI; `COSBUILD_TEST_FLAVORS=trixie` adds other flavors.
Images are shared with `make iso` through the default image repository: they are tagged
by build hash, so whatever is there is exactly what a build would produce.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request

import pytest
import yaml
import zstandard

from .conftest import cosbuild_ok as cosbuild, copy_project

pytestmark = pytest.mark.integration

def artifact_members(path) -> dict[str, tarfile.TarInfo]:
    reader = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))
    out = {}
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for member in tar:
            out[member.name] = member
            if member.name == "usr/bin/sampleOSService" or member.name.startswith(
                    "boot/initrd.img-"):
                out[f"__{member.name}__"] = tar.extractfile(member).read()
    return out


def test_sampleos_is_a_full_root_filesystem(sample, tmp_path):
    m = artifact_members(sample / "build/sampleOS-system-0.1.0.package.tar.zst")
    for path in ("usr/bin/sampleOSService", "system/oem/50_sampleOSService.yaml",
                 "system/oem/00_rootfs.yaml", "system/oem/04_accounting.yaml",
                 "usr/lib/os-release", "boot/vmlinuz", "boot/initrd",
                 "usr/lib/dracut/modules.d/90dmsquash-live", "usr/lib/systemd/systemd"):
        assert path in m, path
    assert not any(n.startswith(("luetbuild", "usr/share/doc/")) for n in m)
    # the initramfs is system/cos-initrd's, over the base's
    initrd = artifact_members(sample / "build/cos-initrd-system-0.1.0.package.tar.zst")
    [name] = [n for n in initrd if n.startswith("__")]
    assert m[name] == initrd[name]
    base = artifact_members(sample / "build/base-distro-1.0.0.package.tar.zst")
    assert base[name] != initrd[name]
    # the Go service was compiled in the build: run it and ask it
    binary = tmp_path / "sampleOSService"
    binary.write_bytes(m["__usr/bin/sampleOSService__"])
    binary.chmod(0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service = subprocess.Popen([binary], env={"PORT": str(port), "HOST": "127.0.0.1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=2) as r:
                    assert r.read() == b"hello"
                    break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        service.terminate()
        service.wait()


def test_sampleos_branding_and_oem_overrides(sample):
    reader = zstandard.ZstdDecompressor().stream_reader(
        open(sample / "build/sampleOS-system-0.1.0.package.tar.zst", "rb"))
    wanted = {"usr/lib/os-release": None, "system/oem/03_branding.yaml": None}
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for member in tar:
            if member.name in wanted:
                wanted[member.name] = tar.extractfile(member).read().decode()
    assert 'NAME="sampleOS"' in wanted["usr/lib/os-release"]
    assert "sampleOS" in wanted["system/oem/03_branding.yaml"]


def test_boot_loader_packages(sample):
    # Debian's signed shim and CD GRUB, the menu, and where the signed GRUB looks for it
    assert {"EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grubx64.efi", "boot/grub/grub.cfg",
            ".disk/info"} <= set(artifact_members(
                sample / "build/grub2-efi-image-live-0.2.0.package.tar.zst"))
    syslinux = artifact_members(sample / "build/syslinux-live-0.1.0.package.tar.zst")
    assert {"boot/syslinux/isolinux.bin", "boot/syslinux/ldlinux.c32",
            "boot/syslinux/isohdpfx.bin", "boot/syslinux/isolinux.cfg"} <= set(syslinux)


@pytest.mark.skipif("trixie" not in os.environ.get("COSBUILD_TEST_FLAVORS", ""),
                    reason="other flavors are opt-in: COSBUILD_TEST_FLAVORS=trixie")
def test_trixie_flavor_builds(tmp_path):
    root = copy_project(tmp_path)
    proc = cosbuild(root, "--flavor", "trixie", "run", "-n", "2", "-P", "thread", "build")
    assert "error" not in proc.stdout.lower()
    assert (root / "build/sampleOS-system-0.1.0.package.tar.zst").stat().st_size > 50_000_000


def test_install_sampleos_over_http_equals_the_artifact(sample, tmp_path):
    cosbuild(sample, "run", "repo")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "cosbuild.cli", "serve-repo", "--dir",
                               str(sample / "build"), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "serving" in server.stdout.readline()
        root = tmp_path / "root"
        # a system image has its /dev: over HTTP the client is told it may
        config = tmp_path / "luet.yaml"
        config.write_text(yaml.safe_dump({"repositories": [
            {"name": "own", "type": "http", "urls": [f"http://127.0.0.1:{port}"],
             "allow_devices": ["system/sampleOS"]}]}))
        proc = cosbuild(sample, "install", "--config", str(config), "--root", str(root),
                        "system/sampleOS")
        assert "installed: system/sampleOS@0.1.0" in proc.stdout
    finally:
        server.terminate()
        server.wait()
    members = artifact_members(sample / "build/sampleOS-system-0.1.0.package.tar.zst")
    for extracted in [n for n in members if n.startswith("__")]:   # contents, not members
        members.pop(extracted)
    on_disk = {}
    for here, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(here, name)
            on_disk[os.path.relpath(full, root)] = os.lstat(full)
    for skip in (".", "var/lib/cosbuild", "var/lib/cosbuild/installed.yaml"):
        on_disk.pop(skip, None)
    assert set(on_disk) == set(members)
    for name, m in members.items():
        st = on_disk[name]
        assert (st.st_uid, st.st_gid) == (m.uid, m.gid), name
        if not m.issym():
            assert st.st_mode & 0o7777 == m.mode, name
        if m.isreg():
            assert st.st_size == m.size, name
        if m.issym():
            assert os.readlink(root / name) == m.linkname, name
