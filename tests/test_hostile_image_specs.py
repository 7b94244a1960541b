"""Hostile iso.yaml / disk.yaml values and SOURCE_DATE_EPOCH (issue #32): labels no file
system carries, absurd sizes, paths out of their folder, wrong types, bad time stamps. Each
is one error naming the file (or the variable), line and key when the file is read, before
any step runs; the ISO reads no file outside its roots; nothing is left half-written."""

from __future__ import annotations

import os
import socket
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pycdlib
import pytest

from cosbuild import settings
from cosbuild.builds import artifact
from cosbuild.errors import CosbuildError
from cosbuild.images import disk, fsimage, iso as isomod
from cosbuild.tools import TaskLog

from .conftest import BASIC
from .hostile import deadline  # noqa: F401 (a fixture)
from .test_hostile_specs import DISK, ISO, refused
from .test_iso import ISO_YAML, PACKAGES, build_all, make_project


def load_error(load, tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    with pytest.raises(CosbuildError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}:"), message
    assert "\n" not in message
    return message[len(str(path)):]


# --------------------------------------------------------------------------- iso.yaml values

ISO_CASES = [
    # labels: the ISO volume id pycdlib writes (its Joliet copy holds 16 characters)
    ("label: \"COS\\0LIVE\"", ":3: label: 'COS\\x00LIVE' cannot label a iso9660 file system "
     "(1 to 16 printable ASCII characters)"),
    ("label: \"COS\\nLIVE\"", ":3: label: 'COS\\nLIVE' cannot label a iso9660 file system"),
    ("label: \"COS\\e[2J\"", ":3: label: 'COS\\x1b[2J' cannot label a iso9660 file system"),
    ("label: \"\"", ":3: label: '' cannot label a iso9660 file system"),
    ("label: ABCDEFGHIJKLMNOPQ", ":3: label: 'ABCDEFGHIJKLMNOPQ' cannot label a iso9660"),
    ("label: " + "X" * 5000, ":3: label: '" + "X" * 80 + "' cannot label"),
    ("label: LIVÉ", ":3: label: 'LIVÉ' cannot label a iso9660 file system"),
    ("label: [COS_LIVE]", ":3: label: expected a string, got a list"),
    ("label: {a: b}", ":3: label: expected a string, got a mapping"),
    # paths in the ISO root and under /boot of the live root
    ("boot_file: ../../../etc/passwd",
     ":3: boot_file: '../../../etc/passwd' is not a path inside the ISO root "
     "(a path below it, without '..')"),
    ("isohybrid_mbr: boot/../../x", ":3: isohybrid_mbr: 'boot/../../x' is not a path inside"),
    ("boot_catalog: /", ":3: boot_catalog: '/' is not a path inside the ISO root"),
    ("boot_catalog: \"a\\0b\"", ":3: boot_catalog: 'a\\x00b' is not a path inside"),
    ("boot_file: [a, b]", ":3: boot_file: expected a string, got a list"),
    ("initramfs: {kernel_file: ../../etc/shadow}",
     ":3: kernel_file: '../../etc/shadow' is not a path inside /boot of the live root"),
    ("initramfs: {rootfs_file: ..}", ":3: rootfs_file: '..' is not a path inside /boot"),
    ("initramfs: {rootfs_file: {a: 1}}", ":3: rootfs_file: expected a string, got a mapping"),
    # overlay folders: inside the folder of iso.yaml
    ("overlay: {rootfs: /etc}", ":3: overlay.rootfs: overlay folder "),
    ("overlay: {rootfs: ../outside}",
     ":3: rootfs: '../outside' is not a path inside the folder of iso.yaml"),
    ("overlay: {uefi: .}", ":3: uefi: '.' is not a path inside the folder of iso.yaml"),
    ("overlay: {isoimage: [x]}", ":3: isoimage: expected a string, got a list"),
    ("overlay: 7", ":3: overlay: expected a mapping, got int"),
    ("overlay: {rootfs: loop}", ":3: overlay.rootfs: too many symbolic links resolving loop"),
    ("overlay: [rootfs]", ":3: overlay: expected a mapping, got a list"),
    # the compressor tar2sqfs is given
    ("squashfs_options: {compression: brotli}",
     ":3: compression: unknown value 'brotli' (one of: gzip, xz, zstd, lzo, lz4, lzma)"),
    ("squashfs_options: {compression: --help}", ":3: compression: unknown value '--help'"),
    ("squashfs_options: {compression: 3}", ":3: compression: unknown value '3'"),
    ("squashfs_options: xz", ":3: squashfs_options: expected a mapping, got str"),
    ("image_date: 1", ":3: image_date: expected true or false, got 1"),
    ("packages: {rootfs: [app/app], uefi: live/efi}", ":3: uefi: expected a list, got str"),
    ("packages: [app/app]", ":3: packages: expected a mapping, got a list"),
]


@pytest.mark.parametrize("line, expected", ISO_CASES)
def test_a_bad_iso_yaml_value_is_one_error_naming_line_and_key(tmp_path, line, expected):
    (tmp_path / "loop").symlink_to("loop")
    # a second packages key (the last one counts) keeps each line at line 3
    assert expected in load_error(isomod.load_iso_spec, tmp_path, "iso.yaml", ISO + line + "\n")


def test_an_absolute_overlay_folder_is_one_in_the_folder_of_iso_yaml(tmp_path):
    """/etc, or a link to it, means the folder's etc: no host folder goes into the ISO."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "link").symlink_to("/usr")
    path = tmp_path / "iso.yaml"
    path.write_text(ISO + "overlay: {rootfs: /etc, uefi: link}\n")
    with pytest.raises(CosbuildError) as info:
        isomod.load_iso_spec(path)
    assert str(info.value) == (f"{path}:3: overlay.uefi: overlay folder {tmp_path}/link does "
                               "not exist (create it or remove the key)")
    (tmp_path / "usr").mkdir()
    spec = isomod.load_iso_spec(path)
    assert spec.overlay == {"rootfs": tmp_path / "etc", "uefi": tmp_path / "usr"}


@pytest.mark.parametrize("label", ["COS_LIVE", "A" * 16, "cos live", "x-1.2"])
def test_labels_every_tool_writes_are_accepted(tmp_path, label):
    path = tmp_path / "iso.yaml"
    path.write_text(ISO + f"label: {label!r}\n")
    assert isomod.load_iso_spec(path).label == label


def test_an_empty_overlay_folder_is_none_as_in_luet_makeiso(tmp_path):
    path = tmp_path / "iso.yaml"
    path.write_text(ISO + "overlay: {rootfs: '', uefi: null}\n")
    assert isomod.load_iso_spec(path).overlay == {}


def test_paths_are_kept_as_the_relative_paths_they_name(tmp_path):
    path = tmp_path / "iso.yaml"
    path.write_text(ISO + "boot_file: /boot//syslinux/./isolinux.bin\nboot_catalog: b.cat/\n"
                    "initramfs: {kernel_file: /vmlinuz-6}\noverlay: false\n")
    spec = isomod.load_iso_spec(path)
    assert (spec.boot_file, spec.boot_catalog, spec.kernel_file) == (
        "boot/syslinux/isolinux.bin", "b.cat", "vmlinuz-6")
    assert (spec.isohybrid_mbr, spec.compression) == ("boot/syslinux/isohdpfx.bin", "xz")


# --------------------------------------------------------------------------- disk.yaml values

DISK_CASES = [
    ("image_size: 0", ":2: image_size: expected a size in MiB (a positive integer), got 0"),
    ("image_size: -2048", ":2: image_size: expected a size in MiB (a positive integer), got -2048"),
    ("image_size: 2048.0", ":2: image_size: expected a size in MiB (a positive integer), got 2048.0"),
    ("image_size: 2G", ":2: image_size: expected a size in MiB (a positive integer), got '2G'"),
    ("image_size: .inf", ":2: image_size: expected a size in MiB (a positive integer), got inf"),
    ("image_size: true", ":2: image_size: expected a size in MiB (a positive integer), got True"),
    ("image_size: [1]", ":2: image_size: expected a size in MiB (a positive integer), got [1]"),
    ("image_size: 1073741824", ":2: image_size: 1073741824 MiB is too large (at most 2097152 "
     "MiB: the disk holds 5 images, at most 16 TiB)"),
    ("image_size: " + "9" * 5000, ": invalid YAML: Exceeds the limit (4300 digits) for integer "
     "string conversion"),
    ("name: 2001-02-30", ": invalid YAML: day is out of range for month (quote the value"),
    ("partitions: {grub: 131073}", ":2: grub: 131073 MiB is too large (at most 131072 MiB: "
     "FAT32 with 512-byte clusters)"),
    ("partitions: {oem: 1048577}", ":2: oem: 1048577 MiB is too large"),
    ("partitions: {persistent: 4194305}", ":2: persistent: 4194305 MiB is too large"),
    ("partitions: {persistent: 0}", ":2: persistent: expected a size in MiB"),
    ("partitions: 512", ":2: partitions: expected a mapping, got int"),
    ("boot_files: ../../../host", ":2: boot_files: '../../../host' is not a path inside the "
     "system root (a path below it, without '..')"),
    ("boot_files: /usr/../../boot", ":2: boot_files: '/usr/../../boot' is not a path inside"),
    ("boot_files: /", ":2: boot_files: '/' is not a path inside the system root"),
    ("boot_files: \"usr\\0lib\"", ":2: boot_files: 'usr\\x00lib' is not a path inside"),
    ("boot_files: {a: b}", ":2: boot_files: expected a string, got a mapping"),
    ("name: [a]", ":2: name: expected a string, got a list"),
    ("name: \"a\\0b\"", ":2: name: 'a\\x00b' cannot name a file in the build folder"),
    ("system: {a: b}", ":2: system: expected a list, got a mapping"),
]


@pytest.mark.parametrize("line, expected", DISK_CASES)
def test_a_bad_disk_yaml_value_is_one_error_naming_line_and_key(tmp_path, line, expected):
    assert expected in load_error(disk.load_disk_spec, tmp_path, "disk.yaml", DISK + line + "\n")


def test_the_largest_sizes_fit_one_file_of_16_tib(tmp_path):
    path = tmp_path / "disk.yaml"
    path.write_text(DISK + "image_size: 2097152\npartitions: {grub: 131072, oem: 1048576, "
                    "persistent: 4194304}\nboot_files: usr/lib/grub/\n")
    spec = disk.load_disk_spec(path)
    assert spec.boot_files == "/usr/lib/grub"
    assert disk.disk_size(spec.sizes) < 16 * 2**40


@pytest.mark.parametrize("option, text, fragment", [
    ("--iso", ISO + "label: [X]\n", "bad.yaml:3: label: expected a string, got a list"),
    ("--iso", ISO + "label: THIS_IS_TOO_LONG_1\n", "bad.yaml:3: label: 'THIS_IS_TOO_LONG_1' cannot"),
    ("--iso", ISO + "isohybrid_mbr: ../../../../etc/shadow\n", "bad.yaml:3: isohybrid_mbr: "),
    ("--iso", ISO + "overlay: {rootfs: ../..}\n", "bad.yaml:3: rootfs: '../..' is not a path"),
    ("--disk", DISK + "image_size: 1e15\n", "bad.yaml:2: image_size: expected a size in MiB"),
    ("--disk", DISK + "image_size: 99999999999999\n", "bad.yaml:2: image_size: 99999999999999 "
     "MiB is too large"),
    ("--disk", DISK + "boot_files: ../x\n", "bad.yaml:2: boot_files: '../x' is not a path"),
])
def test_validate_and_the_task_list_refuse_them(project, run_cli, option, text, fragment):
    project({**BASIC, "bad.yaml": text})
    for command in ("validate", "list"):
        err = refused(run_cli(option, "bad.yaml", command), fragment)
        assert err.count("\n") == 1, err


# --------------------------------------------------------------------------- SOURCE_DATE_EPOCH

@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "1e9", " 1700000000", "0x10", "١٢٣",
                                   "²", "4294967296", "9" * 5000, "1700000000\n"])
def test_a_bad_source_date_epoch_is_one_error_naming_the_variable(value):
    with pytest.raises(CosbuildError) as info:
        settings.source_date_epoch({"SOURCE_DATE_EPOCH": value})
    shown = value if len(value) <= 40 else value[:40] + "..."
    assert str(info.value) == (f"SOURCE_DATE_EPOCH: {shown!r} is not a time stamp (seconds "
                               "since 1970 in decimal digits, 0 to 4294967295 (the latest "
                               "squashfs holds), or unset)")


@pytest.mark.parametrize("value, epoch", [(None, 0), ("", 0), ("0", 0), ("0001", 1),
                                          ("1700000000", 1700000000), ("4294967295", 2**32 - 1)])
def test_good_source_date_epochs(value, epoch, monkeypatch):
    env = {} if value is None else {"SOURCE_DATE_EPOCH": value}
    assert settings.source_date_epoch(env) == epoch
    if value is None:
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    else:
        monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    assert artifact.source_date_epoch() == epoch   # the artifacts' stamp follows the one rule


@pytest.mark.parametrize("command", [["validate"], ["list"], ["render", "app/app"]])
def test_every_command_refuses_a_bad_source_date_epoch_before_any_step(project, run_cli,
                                                                        monkeypatch, command):
    root = project(BASIC)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    err = refused(run_cli(*command), "SOURCE_DATE_EPOCH: 'yesterday' is not a time stamp")
    assert err.count("\n") == 1, err
    assert not (root / "build").exists()


# --------------------------------------------------------------------------- file system labels

@pytest.mark.parametrize("label, fs, ok", [
    ("COS_GRUB", "vfat", True), ("A" * 11, "vfat", True), ("A" * 12, "vfat", False),
    ("COS.GRUB", "vfat", False), ("A:B", "vfat", False), ("A\x01", "vfat", False),
    ("COS_PERSISTENT", "ext4", True), ("A" * 16, "ext2", True), ("A" * 17, "ext4", False),
    ("A.B", "ext4", True), ("A\x7f", "ext4", False), ("Ä", "ext4", False), ("", "ext2", False),
])
def test_check_label_takes_what_each_tool_writes_as_given(label, fs, ok):
    if ok:
        assert fsimage.check_label(label, fs) == label
    else:
        with pytest.raises(CosbuildError, match=f"cannot label a {fs} file system"):
            fsimage.check_label(label, fs)


def test_the_layout_labels_fit_their_file_systems():
    from cosbuild.images.layout import IMAGE_LABELS, LAYOUT
    for part in LAYOUT:   # the BIOS boot partition has no file system, so no label to fit
        if part.fs:
            fsimage.check_label(part.label, part.fs)
    for label in IMAGE_LABELS.values():
        fsimage.check_label(label, "ext2")


@pytest.mark.parametrize("make, kw", [(fsimage.make_fat, {"size_kib": 2048}),
                                      (fsimage.make_ext, {"size_mib": 4})])
def test_a_label_a_tool_would_truncate_is_refused_before_it_runs(tmp_path, make, kw):
    with TaskLog(tmp_path / "log") as log, pytest.raises(CosbuildError, match="cannot label"):
        make(tmp_path / "fs.img", None, label="A_LABEL_TOO_LONG_X", log=log, **kw)
    assert not (tmp_path / "fs.img").exists()


# --------------------------------------------------------------------------- the ISO steps

@pytest.fixture
def iso_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")

    def make(extra: str = "", files: dict[str, bytes] | None = None):
        packages = {k: dict(v) for k, v in PACKAGES.items()}
        packages["live/bios"].update(files or {})
        project = make_project(tmp_path, ISO_YAML + extra, packages)
        return isomod.IsoBuilder(project, isomod.load_iso_spec(Path("iso.yaml")))
    return make


def test_a_boot_file_that_is_a_link_out_of_the_iso_root_is_refused(iso_project, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"SECRET" * 100)
    b = iso_project("isohybrid_mbr: boot/syslinux/mbr.bin\n")
    for kind in ("rootfs", "uefi", "isoimage"):
        b.install_root(kind)
    (b.isoimage_dir / "boot/syslinux/mbr.bin").symlink_to(secret)
    b.make_squashfs()
    b.copy_kernel()
    b.make_uefi_image()
    with pytest.raises(CosbuildError) as info:
        b.write_iso()
    assert str(info.value) == ("iso.yaml: isohybrid_mbr: boot/syslinux/mbr.bin is not in the ISO "
                               "root (add the BIOS boot loader package to packages.isoimage)")
    assert not b.output.exists() and not list(b.output.parent.glob(".*.tmp"))


@pytest.mark.parametrize("extra, message", [
    ("boot_catalog: boot/syslinux/isolinux.cfg\n",
     "iso.yaml: boot_catalog: boot/syslinux/isolinux.cfg is in the ISO root already"),
    ("boot_catalog: boot\n", "iso.yaml: boot_catalog: boot is in the ISO root already"),
    ("boot_catalog: nowhere/boot.cat\n",
     "iso.yaml: boot_catalog: the ISO root has no folder nowhere for nowhere/boot.cat"),
    ("boot_catalog: rootfs.squashfs/x\n",
     "iso.yaml: boot_catalog: the ISO root has no folder rootfs.squashfs"),
    ("boot_file: boot/kernel.xz/x\n", "iso.yaml: boot_file: boot/kernel.xz/x is not in the ISO"),
])
def test_boot_catalog_and_file_places_the_iso_cannot_have(iso_project, extra, message):
    b = iso_project(extra)
    build_all_but_iso(b)
    with pytest.raises(CosbuildError) as info:
        b.write_iso()
    assert str(info.value).startswith(message)
    assert not b.output.exists()


def build_all_but_iso(b):
    for kind in ("rootfs", "uefi", "isoimage"):
        b.install_root(kind)
    b.make_squashfs()
    b.copy_kernel()
    b.make_uefi_image()


def test_a_catalog_whose_iso9660_name_is_taken_gets_another(iso_project):
    """BOOT.CAT and boot.cat are one ISO 9660 name: the catalog gets a free one."""
    b = iso_project("boot_file: /boot//syslinux/./isolinux.bin\nlabel: ABCDEFGHIJKLMNOP\n",
                    {"boot/syslinux/BOOT.CAT": b"a file"})
    build_all(b)
    cd = pycdlib.PyCdlib()
    cd.open(str(b.output))
    try:
        assert cd.pvd.volume_identifier.rstrip() == b"ABCDEFGHIJKLMNOP"
        names = [r.file_identifier() for r in cd.list_children(iso_path="/BOOT/SYSLINUX")]
        assert b"BOOT.CAT;1" in names and b"2_BOOT.CAT;1" in names
    finally:
        cd.close()


def test_a_bad_source_date_epoch_during_a_step_leaves_nothing(iso_project, monkeypatch):
    b = iso_project()
    build_all_but_iso(b)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "-5")
    with pytest.raises(CosbuildError, match="SOURCE_DATE_EPOCH: '-5' is not a time stamp"):
        b.write_iso()
    assert not b.output.exists() and not list(b.output.parent.glob(".*.tmp"))


@pytest.mark.usefixtures("deadline")
@pytest.mark.parametrize("make", ["fifo", "socket"])
def test_a_special_file_in_an_overlay_is_refused_not_opened(iso_project, tmp_path, make):
    (tmp_path / "overlay/etc").mkdir(parents=True)
    (tmp_path / "overlay/etc/motd").write_text("hi\n")
    special = tmp_path / "overlay/etc/pipe"
    if make == "fifo":
        os.mkfifo(special)
    else:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(special))
    b = iso_project("overlay: {rootfs: overlay}\n")
    with pytest.raises(CosbuildError) as info:
        b.install_root("rootfs")
    assert str(info.value) == ("iso.yaml: overlay.rootfs: overlay/etc/pipe is not a regular file, "
                               "folder or link (remove it from the overlay folder)")


@pytest.mark.parametrize("overlay, build_dir", [("build", "build"), ("build/iso", "build"),
                                                ("sub", "sub/build"), ("link", "build")])
def test_an_overlay_that_overlaps_the_build_folder_is_refused(tmp_path, monkeypatch, overlay,
                                                               build_dir):
    """Copying the build folder into a root in it would never end."""
    monkeypatch.chdir(tmp_path)
    for folder in (overlay, build_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
    if overlay == "link":
        Path(overlay).rmdir()
        Path(overlay).symlink_to("build")
    Path("iso.yaml").write_text(ISO + f"overlay: {{isoimage: {overlay}}}\n")
    project = SimpleNamespace(settings=settings.Settings((), (), "x", Path(build_dir)))
    with pytest.raises(CosbuildError) as info:
        isomod.IsoBuilder(project, isomod.load_iso_spec(Path("iso.yaml")))
    shown = "build" if overlay == "link" else overlay
    assert str(info.value) == (f"iso.yaml: overlay.isoimage: overlay folder {shown} overlaps "
                               f"the build folder {tmp_path / build_dir} (keep the overlay "
                               "apart from --build-dir)")


# --------------------------------------------------------------------------- names and writes

def test_a_leading_double_slash_stays_in_the_root(tmp_path):
    """pathlib reads '//' as a root of its own: it must not become the host's /."""
    from cosbuild import rootpath
    root, name = tmp_path / "root", f"cosbuild-hostile-{os.getpid()}.txt"
    root.mkdir()
    try:
        assert rootpath.write_file(root, f"//{name}", b"x") == root / name
        assert not Path("/", name).exists()
    finally:
        Path("/", name).unlink(missing_ok=True)   # where it went before
    with pytest.raises(CosbuildError, match="leads out of the root"):
        rootpath.check_inside("//../etc", root)
    path = tmp_path / "iso.yaml"
    path.write_text(ISO + "boot_file: //boot/x.bin\n")
    assert isomod.load_iso_spec(path).boot_file == "boot/x.bin"


@pytest.mark.parametrize("kind", ["rootfs", "uefi", "isoimage"])
def test_the_top_files_of_an_overlay_go_into_the_root(iso_project, tmp_path, kind):
    name = f"cosbuild-hostile-overlay-{os.getpid()}.cfg"
    (tmp_path / "overlay/sub").mkdir(parents=True)
    (tmp_path / "overlay" / name).write_text("top\n")
    (tmp_path / "overlay/sub/deeper.cfg").write_text("deeper\n")
    b = iso_project(f"overlay: {{{kind}: overlay}}\n")
    try:
        b.install_root(kind)
        root = getattr(b, f"{kind}_dir")
        assert (root / name).read_text() == "top\n"
        assert (root / "sub/deeper.cfg").read_text() == "deeper\n"
        assert not Path("/", name).exists()
    finally:
        Path("/", name).unlink(missing_ok=True)   # where the overlay's top files went before


def test_names_longer_than_joliet_holds_are_shortened_apart(iso_project):
    long = "a" * 70
    b = iso_project("", {f"boot/{long}.cfg": b"one", f"boot/{long}.txt": b"two",
                         f"{'é' * 40}/x": b"three"})
    build_all(b)
    cd = pycdlib.PyCdlib()
    cd.open(str(b.output))
    try:
        joliet = sorted(c.file_identifier().decode("utf-16_be")
                        for c in cd.list_children(joliet_path="/boot") if c.is_file())
        assert f"{'a' * 64}" in joliet and f"2_{'a' * 62}" in joliet
        got = {}
        for name in (f"{long}.cfg", f"{long}.txt"):   # Rock Ridge keeps the whole names
            out = b.work / "got"
            cd.get_file_from_iso(str(out), rr_path=f"/boot/{name}")
            got[name] = out.read_bytes()
        assert got == {f"{long}.cfg": b"one", f"{long}.txt": b"two"}
    finally:
        cd.close()


def test_a_name_that_is_not_utf8_in_the_iso_root_is_refused(iso_project, tmp_path):
    (tmp_path / "overlay/sub").mkdir(parents=True)
    open(os.fsencode(tmp_path / "overlay/sub") + b"/\xff.cfg", "wb").close()
    b = iso_project("overlay: {isoimage: overlay}\n")
    build_all_but_iso(b)
    with pytest.raises(CosbuildError) as info:
        b.write_iso()
    assert str(info.value) == (
        "iso.yaml: packages.isoimage / overlay: b'sub/\\xff.cfg' in the ISO root is not a UTF-8 name, "
        "which Rock Ridge and Joliet names need (rename the file in its package or overlay)")
    assert not b.output.exists()


# --------------------------------------------------------------------------- settings values

@pytest.mark.parametrize("text", ["999999999999d", "9" * 5000 + "d", "99999999d", "3651d",
                                  "87601h", "5256001m", "0d", "-1d", "1.5d", "1w", "d", ""])
def test_a_signing_expiry_beyond_a_date_or_not_a_duration_is_one_error(text):
    shown = text if len(text) <= 40 else text[:40] + "..."
    with pytest.raises(CosbuildError) as info:
        settings.resolve({"signing_expiry": text}, env={}) if text else \
            settings.duration(text, "signing_expiry")
    assert str(info.value) == (f"'{shown}' is not a duration for --signing-expiry / "
                               "COSBUILD_SIGNING_EXPIRY (a positive number of days, hours or "
                               "minutes up to 3650d: 1d, 12h, 90m)")


@pytest.mark.parametrize("text, days", [("3650d", 3650), ("87600h", 3650), ("90m", 90 / 1440),
                                        ("007d", 7)])
def test_signing_expiries_up_to_ten_years(text, days):
    assert settings.duration(text, "signing_expiry").total_seconds() == days * 86400


@pytest.mark.parametrize("value, ok", [("chroot", True), ("oci", True), ("rootless", True),
                                       ("none", False), ("--privileged", False)])
def test_isolation_is_one_buildah_takes(value, ok):
    if ok:
        assert settings.resolve({}, env={"COSBUILD_ISOLATION": value}).isolation == value
    else:
        with pytest.raises(CosbuildError) as info:
            settings.resolve({}, env={"COSBUILD_ISOLATION": value})
        assert str(info.value) == (f"unknown value '{value}' for --isolation / COSBUILD_ISOLATION "
                                   "(one of: chroot, oci, rootless)")
