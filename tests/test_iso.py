"""iso.yaml parsing, the ISO steps on small inputs, and their errors (fast, no VM)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pycdlib
import pytest

from cosbuild import settings
from cosbuild.builds.artifact import sha256_file, walk
from cosbuild.builds.builder import Builder
from cosbuild.errors import CosbuildError
from cosbuild.images import iso as isomod
from cosbuild.repos.create import create_repo
from cosbuild.settings import RepoInfo
from cosbuild.tools import TaskLog
from cosbuild.tree import spec
from cosbuild.tree.project import load_project

from .conftest import REPO

REAL_ISO_YAML = Path("/work/shared/real-trees/cos-toolkit-sample-repo/iso.yaml")

ISO_YAML = """\
packages:
  rootfs: [system/os]
  uefi: [live/efi]
  isoimage: [live/bios]
initramfs: {kernel_file: vmlinuz, rootfs_file: initrd}
label: TEST_LIVE
image_prefix: "test-"
image_name: "live"
squashfs_options: {compression: gzip}
"""
ISOLINUX = b"\0" * 0x40 + b"\xfb\xc0\x78\x70" + b"\0" * 1000   # the isohybrid signature
PACKAGES = {
    "system/os": {"boot/vmlinuz-1": b"kernel", "boot/initrd.img-1": b"initrd",
                  "etc/os-release": b'NAME="test"\n', "usr/bin/tool": b"#!/bin/sh\n"},
    "live/efi": {"EFI/BOOT/BOOTX64.EFI": b"MZ efi"},
    "live/bios": {"boot/syslinux/isolinux.bin": ISOLINUX, "boot/syslinux/isohdpfx.bin": b"\x33" * 512,
                  "boot/syslinux/isolinux.cfg": b"DEFAULT live\n"},
}


def make_project(root: Path, iso_yaml: str = ISO_YAML, packages=PACKAGES, arch: str = "amd64"):
    """A tree whose packages need no container; their artifacts are written directly."""
    for ref in packages:
        category, name = ref.split("/")
        folder = root / "tree" / category / name
        folder.mkdir(parents=True)
        (folder / "definition.yaml").write_text(f"name: {name}\ncategory: {category}\nversion: '1'\n")
    (root / "iso.yaml").write_text(textwrap.dedent(iso_yaml))
    project = load_project(settings.resolve({"arch": arch, "iso": "iso.yaml"}, env={}))
    builder = Builder(project)
    for key, pkg in project.graph.packages.items():
        content = root / "content" / pkg.id
        for rel, data in packages[pkg.id].items():
            (content / rel).parent.mkdir(parents=True, exist_ok=True)
            (content / rel).write_bytes(data)
        if pkg.id == "system/os":
            (content / "boot/vmlinuz").symlink_to("vmlinuz-1")
            (content / "boot/initrd").symlink_to("initrd.img-1")
        builder.write_outputs(pkg, list(walk(content)), TaskLog(root / "log"))
    create_repo(project, project.settings.build_dir, RepoInfo(name="test"))
    return project


@pytest.fixture
def iso_builder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    project = make_project(tmp_path)
    return isomod.IsoBuilder(project, isomod.load_iso_spec(Path("iso.yaml")))


def build_all(b: isomod.IsoBuilder) -> None:
    for kind in ("rootfs", "uefi", "isoimage"):
        b.install_root(kind)
    b.make_squashfs()
    b.copy_kernel()
    b.make_uefi_image()
    b.write_iso()


def test_the_repository_iso_yaml_parses():
    spec = isomod.load_iso_spec(REPO / "iso.yaml")
    assert [str(r) for r in spec.rootfs] == ["system/sampleOS"]
    assert spec.label == "COS_LIVE" and spec.file_name == "sampleOS-0.live.iso"
    assert spec.compression == "zstd"


def test_whole_iso_from_small_packages(iso_builder):
    b = iso_builder
    build_all(b)
    assert b.output.name == "test-live.iso"
    assert (b.output.parent / "test-live.iso.sha256").read_text().split()[0] == sha256_file(b.output)
    cd = pycdlib.PyCdlib()
    cd.open(str(b.output))
    try:
        assert cd.pvd.volume_identifier.rstrip() == b"TEST_LIVE"
        for path, data in (("/boot/kernel.xz", b"kernel"), ("/boot/rootfs.xz", b"initrd"),
                           ("/boot/syslinux/isolinux.cfg", b"DEFAULT live\n")):
            out = Path("got")
            cd.get_file_from_iso(str(out), rr_path=path)
            assert out.read_bytes() == data
        assert cd.eltorito_boot_catalog.sections[0].platform_id == 0xEF
    finally:
        cd.close()
    # the MBR boot code comes from the isohybrid_mbr file, the partition table from pycdlib
    assert b.output.read_bytes()[:432] == b"\x33" * 432
    assert b.output.read_bytes()[510:512] == b"\x55\xaa"
    listing = subprocess.run(["sqfs2tar", str(b.squashfs)], capture_output=True).stdout
    assert b"usr/bin/tool" in listing and b"var/lib/cosbuild/installed.yaml" in listing
    mdir = subprocess.run(["mdir", "-i", str(b.uefi_img), "::/EFI/BOOT"], capture_output=True,
                          text=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout
    assert "BOOTX64" in mdir


def test_an_arm64_iso_boots_with_uefi_only(tmp_path, monkeypatch):
    """No BIOS on arm64: the EFI image is El Torito's one entry (BOOTAA64.EFI in it), no
    isohybrid MBR, and the BIOS keys' files need not be there."""
    monkeypatch.chdir(tmp_path)
    packages = {**PACKAGES, "live/efi": {"EFI/BOOT/BOOTAA64.EFI": b"MZ efi"},
                "live/bios": {"boot/grub/grub.cfg": b"menu\n"}}
    project = make_project(tmp_path, ISO_YAML + "arch: aarch64\nboot_catalog: boot/boot.cat\n",
                           packages, arch="arm64")
    b = isomod.IsoBuilder(project, isomod.load_iso_spec(Path("iso.yaml")))
    build_all(b)
    assert b.output == Path("build-arm64/test-live.iso")
    cd = pycdlib.PyCdlib()
    cd.open(str(b.output))
    try:
        catalog = cd.eltorito_boot_catalog
        assert not catalog.sections and catalog.validation_entry.platform_id == 0xEF
        out = Path("got")
        cd.get_file_from_iso(str(out), rr_path="/boot/grub/grub.cfg")
        assert out.read_bytes() == b"menu\n"
    finally:
        cd.close()
    assert b.output.read_bytes()[510:512] != b"\x55\xaa"   # no MBR
    # an amd64 EFI image is not an arm64 one
    (tmp_path / "x64").mkdir()
    monkeypatch.chdir(tmp_path / "x64")
    project = make_project(tmp_path / "x64", ISO_YAML + "boot_catalog: boot/boot.cat\n",
                           {**packages, "live/efi": PACKAGES["live/efi"]}, arch="arm64")
    b = isomod.IsoBuilder(project, isomod.load_iso_spec(Path("iso.yaml")))
    with pytest.raises(CosbuildError, match="no EFI/BOOT/BOOTAA64.EFI in the EFI image"):
        build_all(b)


def test_an_iso_specification_is_for_one_architecture(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = make_project(tmp_path, ISO_YAML + "arch: x86_64\n", arch="arm64")
    with pytest.raises(CosbuildError, match="the ISO specification is for amd64, this build "
                                            "for arm64") as exc:
        isomod.IsoBuilder(project, isomod.load_iso_spec(Path("iso.yaml")))
    assert exc.value.key == "arch" and "--arch amd64" in exc.value.hint


def test_the_backup_gpt_lies_after_every_file(iso_builder):
    """The isohybrid's backup GPT takes the image's last 33 sectors: no file may reach into
    them (it once ended ISOLINUX's ldlinux.c32, and the BIOS boot hung)."""
    b = iso_builder
    build_all(b)
    size = b.output.stat().st_size
    cd = pycdlib.PyCdlib()
    cd.open(str(b.output))
    try:
        ends = []
        for folder, _, files in cd.walk(iso_path="/"):
            for name in files:
                record = cd.get_record(iso_path=f"{folder.rstrip('/')}/{name}")
                ends.append(record.extent_location() * 2048 + record.get_data_length())
    finally:
        cd.close()
    assert len(ends) >= 5
    assert max(ends) <= size - 33 * 512
    assert size - max(ends) >= isomod.ISO_PADDING   # the padding xorriso leaves too


def test_iso_steps_are_reproducible(iso_builder, tmp_path):
    b = iso_builder
    build_all(b)
    first = {p: sha256_file(p) for p in (b.squashfs, b.uefi_img, b.output)}
    shutil.rmtree(b.work)
    b.output.unlink()
    build_all(b)
    assert {p: sha256_file(p) for p in first} == first


@pytest.mark.parametrize("text, fragment", [
    (ISO_YAML.replace("label: TEST_LIVE", "label: [X]"), "label: expected a string, got a list"),
    (ISO_YAML + "image_date: 'yes'\n", "image_date: expected true or false"),
    (ISO_YAML + "overlay: {rootfs: [a]}\n", "rootfs: expected a string, got a list"),
    (ISO_YAML.replace("  rootfs: [system/os]\n", ""), "packages.rootfs is empty"),
    ("label: X\n", "missing required keyword 'packages'"),
    (ISO_YAML + "overlay: {rootfs: nowhere}\n", "overlay folder"),
    (ISO_YAML.replace("[system/os]", "[system]"), "invalid package reference 'system'"),
    (ISO_YAML + "arch: sparc\n", "unknown architecture 'sparc'"),
    # a duplicated key keeps its last value, as in luet-makeiso (go-yaml v2)
    (ISO_YAML + "squashfs_options: {compression: [xz]}\n", "iso.yaml:10: compression:"),
])
def test_bad_iso_yaml(tmp_path, text, fragment):
    path = tmp_path / "iso.yaml"
    path.write_text(text)
    with pytest.raises(CosbuildError) as info:
        isomod.load_iso_spec(path)
    assert fragment in str(info.value) and str(path) in str(info.value)


# cOS-toolkit's manifest.yaml (v0.5/v0.6, what its Makefile gives `luet makeiso`): keys for
# other tools, `overlay: false` from before luet-makeiso 0.3.2
COS_MANIFEST = """\
packages:
  rootfs: [system/cos]
  uefi: [live/systemd-boot, live/boot]
  isoimage: [live/syslinux, live/boot, recovery/cos-img]
  buidl: [x]
build: [system/cos, recovery/cos-img]
overlay: false
raw_disk:
  x86_64:
    packages: [{name: system/grub2-efi}]
initramfs: {kernel_file: "vmlinuz", rootfs_file: "initrd"}
image_prefix: "cOS-0."
imgae_name: x
image_date: true
label: "COS_LIVE"
luet:
  repositories:
  - {name: cOS, enable: true, urls: [quay.io/costoolkit/releases-green], type: docker}
"""


def test_cos_manifest_loads_with_warnings(tmp_path, caplog):
    path = tmp_path / "manifest.yaml"
    path.write_text(COS_MANIFEST)
    iso = isomod.load_iso_spec(path)
    assert iso.overlay == {} and [r.id for r in iso.rootfs] == ["system/cos"]
    assert iso.label == "COS_LIVE" and iso.file_name.startswith("cOS-0.") and iso.repositories
    for fragment in (f"{path}:5: buidl: unknown keyword 'buidl' in packages, ignored",
                     f"{path}:6: build: unknown keyword 'build' in iso.yaml, ignored",
                     f"{path}:13: imgae_name: unknown keyword 'imgae_name' in iso.yaml, "
                     "ignored (did you mean 'image_name'?)", f"{path}:8: raw_disk:"):
        assert fragment in caplog.text, caplog.text


@pytest.mark.skipif(not REAL_ISO_YAML.is_file(), reason="the real trees are not here")
def test_the_sample_repositorys_iso_yaml_loads(caplog):
    iso = isomod.load_iso_spec(REAL_ISO_YAML)
    assert [r.id for r in iso.rootfs] == ["system/sampleOS"] and iso.label == "COS_LIVE"
    assert not caplog.text


def test_unknown_package_in_iso_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = make_project(tmp_path, ISO_YAML.replace("[system/os]", "[system/nope]"))
    b = isomod.IsoBuilder(project, isomod.load_iso_spec(Path("iso.yaml")))
    with pytest.raises(CosbuildError, match="unknown package system/nope"):
        b.install_root("rootfs")


def test_missing_kernel_names_the_file_and_key(iso_builder):
    b = iso_builder
    b.install_root("rootfs")
    (b.rootfs_dir / "boot/vmlinuz").unlink()
    with pytest.raises(CosbuildError) as info:
        b.copy_kernel()
    assert "/boot/vmlinuz is not in the live root filesystem" in str(info.value)
    assert "initramfs.kernel_file" in str(info.value)


def test_missing_boot_loader_files(iso_builder):
    b = iso_builder
    b.install_root("isoimage")
    (b.isoimage_dir / "boot/syslinux/isolinux.bin").unlink()
    with pytest.raises(CosbuildError, match="boot/syslinux/isolinux.bin is not in the ISO root"):
        b.write_iso()
    b.install_root("uefi")
    (b.uefi_dir / "EFI/BOOT/BOOTX64.EFI").unlink()
    with pytest.raises(CosbuildError, match="no EFI/BOOT/BOOTX64.EFI"):
        b.make_uefi_image()


def test_squashfs_tool_missing(iso_builder, monkeypatch, tmp_path):
    iso_builder.install_root("rootfs")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(CosbuildError, match="tar2sqfs is not installed.*apt-get install squashfs-tools-ng"):
        iso_builder.make_squashfs()


def test_disk_full_leaves_no_partial_iso(iso_builder, tmp_path):
    b = iso_builder
    build_all(b)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        b.output = small / "test.iso"
        with pytest.raises(CosbuildError, match="cannot write .*No space left on device"):
            b.write_iso()
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


@pytest.mark.parametrize("compressor, options, expected", [
    ("xz", "-Xbcj x86", "x86"),
    ("xz", "-Xdict-size 100% -Xbcj x86,arm", "dictsize=131072,x86,arm"),
    ("xz", "-Xdict-size 1M", "dictsize=1M"),
    ("zstd", "-Xcompression-level 19", "level=19"),
    ("zstd", "level=19", "level=19"),
    ("gzip", "-Xcompression-level 9 -Xwindow-size 15", "level=9,window=15"),
    ("lz4", "-Xhc", "hc"),
    ("zstd", "", ""),
])
def test_mksquashfs_options_become_what_tar2sqfs_takes(tmp_path, compressor, options, expected):
    where = spec.Where("iso.yaml", 3, "squashfs_options.compression_options")
    assert isomod._comp_extra(options, where) == expected
    if expected:   # and tar2sqfs takes it
        tar = tmp_path / "a.tar"
        with tarfile.open(tar, "w") as t:
            t.add(__file__, "a")
        with open(tar, "rb") as f:
            proc = subprocess.run(["tar2sqfs", "-q", "-f", "-c", compressor, "-X", expected,
                                   str(tmp_path / "a.sqfs")], stdin=f, capture_output=True)
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("options, message", [
    ("-Xbogus 1", "unknown mksquashfs option -Xbogus"),
    ("-Xcompression-level", "-Xcompression-level needs a value"),
])
def test_unknown_mksquashfs_options_are_refused(options, message):
    where = spec.Where("iso.yaml", 3, "squashfs_options.compression_options")
    with pytest.raises(CosbuildError, match=message):
        isomod._comp_extra(options, where)


@pytest.mark.parametrize("name, is_dir, expected", [
    ("isolinux.bin", False, "ISOLINUX.BIN"), ("rootfs.squashfs", False, "ROOTFS.SQUASHFS"),
    ("BOOTX64.EFI", False, "BOOTX64.EFI"), ("boot", True, "BOOT"), ("a-b.c", True, "A_B_C"),
    ("grub.cfg~", False, "GRUB.CFG_"), ("x" * 40 + ".txt", False, "X" * 26 + ".TXT"),
])
def test_iso9660_names(name, is_dir, expected):
    assert isomod._iso_name(name, is_dir) == expected
