"""Disk layout, disk.yaml, cos-upgrade's configuration and build contexts with linked
folders: fast unit tests (the disk builds and boots are in test_disk_boot.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cosbuild import arches
from cosbuild.errors import CosbuildError
from cosbuild.images import disk, fsimage, layout
from cosbuild.runtime import installer, upgrade
from cosbuild.tools import TaskLog
from cosbuild.tree.load import context_files, linked_folders

from .conftest import BASIC, REPO

AMD64 = arches.ARCHES["amd64"]


def test_partition_sizes_fit_three_images_in_state_and_one_in_recovery():
    sizes = layout.partition_sizes(1000)
    assert sizes == {"COS_BIOS": 1, "COS_GRUB": 64, "COS_OEM": 64, "COS_STATE": 3256, "COS_RECOVERY": 2128,
                     "COS_PERSISTENT": 512}
    assert layout.disk_size(sizes) == (sum(sizes.values()) + 2) * layout.MIB


def test_partition_table_is_aligned_deterministic_and_in_layout_order():
    sizes = layout.partition_sizes(100)
    script, places = layout.partition_table(sizes, seed="x")
    assert (script, places) == layout.partition_table(sizes, seed="x")
    assert script != layout.partition_table(sizes, seed="y")[0]   # UUIDs follow the seed
    assert list(places) == [p.label for p in layout.LAYOUT]
    offset = layout.MIB
    for part in layout.LAYOUT:
        assert places[part.label] == (offset, sizes[part.label] * layout.MIB)
        offset += sizes[part.label] * layout.MIB
    assert 'type=U, name="COS_GRUB"' in script
    assert f'type={layout.BIOS_BOOT_TYPE}, name="COS_BIOS"' in script
    # on a device, the last partition takes the rest
    _, rest = layout.partition_table(layout.partition_sizes(100, persistent=None), seed="x")
    assert rest["COS_PERSISTENT"][1] is None


def laid_out_disk(target: Path, sizes: dict, seed: str) -> dict:
    """An empty disk file of `sizes` with the layout's partition table; its places."""
    target.touch()
    os.truncate(target, layout.disk_size(sizes))
    script, places = layout.partition_table(sizes, seed=seed)
    with TaskLog(target.with_suffix(".log")) as log:
        layout.write_partition_table(target, script, log)
    return places


def test_sfdisk_writes_the_table_into_a_file(tmp_path):
    target = tmp_path / "d.raw"
    places = laid_out_disk(target, layout.partition_sizes(8, persistent=8), "t")
    dump = subprocess.run(["sfdisk", "--json", str(target)], capture_output=True, text=True,
                          check=True).stdout
    import json
    parts = json.loads(dump)["partitiontable"]["partitions"]
    assert [p["name"] for p in parts] == [p.label for p in layout.LAYOUT]
    assert [p["start"] * 512 for p in parts] == [places[p.label][0] for p in layout.LAYOUT]


def test_the_sample_disk_spec():
    spec = disk.load_disk_spec(REPO / "disk.yaml")
    assert [r.id for r in spec.system] == ["system/sampleOS"]
    assert spec.boot_files == "/usr/lib/cos/grub" and spec.name == "sampleOS-0.disk"
    assert spec.sizes["COS_STATE"] == 3 * spec.image_size + 256


@pytest.mark.parametrize("text, needle, line", [
    ("system: [system/x]\nimage_sise: 10\n", "unknown keyword 'image_sise'", 2),
    ("system: []\n", "no system package", 1),
    ("system: [system/x]\nimage_size: -3\n", "positive integer", 2),
    ("system: [system/x]\npartitions:\n  oem: big\n", "positive integer", 3),
    ("system: [system/x]\npartitions:\n  state: 10\n", "unknown keyword 'state'", 3),
    ("image_size: 10\n", "missing required keyword 'system'", None),
])
def test_disk_spec_errors_name_file_line_and_key(tmp_path, text, needle, line):
    path = tmp_path / "disk.yaml"
    path.write_text(text)
    with pytest.raises(CosbuildError) as exc:
        disk.load_disk_spec(path)
    assert needle in str(exc.value) and str(path) in str(exc.value)
    if line:
        assert f":{line}" in str(exc.value)


def test_boot_files_missing_says_which_package_provides_them(tmp_path):
    with pytest.raises(CosbuildError, match="grub.cfg is not in the system root.*grub2-efi"):
        layout.boot_files(tmp_path, "/usr/lib/cos/grub", AMD64)


def test_an_arm64_disk_has_no_bios_partition_and_arm64_efi_files(tmp_path):
    arm64 = arches.ARCHES["arm64"]
    sizes = layout.sizes_for(layout.partition_sizes(256), arm64)
    script, places = layout.partition_table(sizes, seed="x")
    assert "COS_BIOS" not in script and list(places) == [
        "COS_GRUB", "COS_OEM", "COS_STATE", "COS_RECOVERY", "COS_PERSISTENT"]
    assert places["COS_GRUB"][0] == layout.MIB   # the first partition, where COS_BIOS was
    assert layout.sizes_for(layout.partition_sizes(256), AMD64) == layout.partition_sizes(256)
    folder = tmp_path / "usr/lib/cos/grub"
    for name in ("grub.cfg", "EFI/BOOT/BOOTAA64.EFI", "EFI/BOOT/grubaa64.efi",
                 "EFI/debian/grub.cfg"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    boot = layout.boot_files(tmp_path, "/usr/lib/cos/grub", arm64)   # no BIOS images
    assert sorted(boot.esp) == ["EFI/BOOT/BOOTAA64.EFI", "EFI/BOOT/grubaa64.efi",
                                "EFI/debian/grub.cfg"]
    assert boot.bios_boot is None and boot.bios_core is None
    boot.install_bios(tmp_path / "no-such-disk", places)   # nothing to write on arm64


def test_upgrade_config_parsing():
    cfg = upgrade.parse_upgrade_config(
        "# comment\nUPGRADE_IMAGE=system/sampleOS\nCHANNEL_UPGRADES='false'\n"
        "RECOVERY_IMAGE=\"system/recovery\"\nINSECURE_REGISTRIES=a:1 b:2\n", "f")
    assert cfg == upgrade.UpgradeConfig("system/sampleOS", False, "system/recovery", ("a:1", "b:2"))
    assert upgrade.parse_upgrade_config("", "f").channel is True
    assert upgrade.parse_upgrade_config("TRUSTED_ROOT=/etc/cos/trusted-root.json\n", "f") \
        .trusted_root == Path("/etc/cos/trusted-root.json")


def test_a_container_image_needs_no_verify_when_a_root_is_trusted(tmp_path, capsys):
    config = tmp_path / "cos-upgrade-image"
    config.write_text("UPGRADE_IMAGE=system/sampleOS\nTRUSTED_ROOT=/etc/cos/trusted-root.json\n")
    assert upgrade.main(["--config", str(config), "--container", "--image", "r/i:1"]) == 1
    err = capsys.readouterr().err
    assert "r/i:1 is a container image, which TUF does not verify" in err
    assert "--no-verify" in err and "nothing was switched" in err


@pytest.mark.parametrize("text, needle", [
    ("UPGRADE_IMAGES=x\n", "f:1"),
    ("UPGRADE_IMAGE x\n", "KEY=VALUE"),
    ("CHANNEL_UPGRADES=maybe\n", "CHANNEL_UPGRADES must be true or false"),
])
def test_upgrade_config_errors(text, needle):
    with pytest.raises(CosbuildError, match=needle):
        upgrade.parse_upgrade_config(text, "f")


def test_upgrade_without_an_image_to_upgrade_from_says_which_key(tmp_path, capsys):
    config = tmp_path / "cos-upgrade-image"
    config.write_text("CHANNEL_UPGRADES=true\n")
    assert upgrade.main(["--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "no UPGRADE_IMAGE to upgrade from" in err and "nothing was switched" in err


def test_installer_refuses_what_is_not_a_disk(tmp_path, capsys):
    assert installer.main([str(tmp_path / "nope")]) == 1
    assert "is not a block device" in capsys.readouterr().err


def test_linked_folders_are_part_of_the_build_context(project):
    from cosbuild import settings
    from cosbuild.tree.project import load_project
    root = project(BASIC)
    (root / "src").mkdir()
    (root / "src" / "lib.py").write_text("x = 1\n")
    (root / "src" / "__pycache__").mkdir()
    (root / "src" / "__pycache__" / "lib.pyc").write_text("noise")
    os.symlink("../../src", root / "tree/app/src")
    folder = root / "tree/app"
    assert [Path(f).relative_to(folder).as_posix() for f in context_files(folder)] == [
        "build.yaml", "definition.yaml", "main.c", "src/lib.py"]
    assert linked_folders(folder) == [folder / "src"]

    def app_hash():
        p = load_project(settings.resolve({"tree": ["tree"]}, env={}))
        return next(pkg.hash for key, pkg in p.graph.packages.items() if key.startswith("app/app"))

    before = app_hash()
    (root / "src" / "__pycache__" / "lib.pyc").write_text("other noise")
    assert app_hash() == before          # byte-code caches do not count
    (root / "src" / "lib.py").write_text("x = 2\n")
    assert app_hash() != before          # the linked sources do


def test_upgrade_reads_the_version_in_an_image_file(tmp_path):
    root = tmp_path / "root"
    db = root / "var/lib/cosbuild/installed.yaml"
    db.parent.mkdir(parents=True)
    db.write_text("packages:\n  system/x:\n    version: 1.2.3\n    files: []\n")
    image = tmp_path / "active.img"
    with TaskLog(tmp_path / "log") as log:
        fsimage.make_ext(image, root, label="COS_ACTIVE", size_mib=8, log=log, fs_type="ext2")
        assert upgrade.installed_version(image, "system/x", log) == "1.2.3"
        assert upgrade.installed_version(image, "system/y", log) is None
        empty = tmp_path / "empty.img"
        fsimage.make_ext(empty, None, label="COS_ACTIVE", size_mib=8, log=log, fs_type="ext2")
        assert upgrade.installed_version(empty, "system/x", log) is None
