"""The deploy formats of the installed disk (images/formats.py), made for real from a small
GPT disk: each holds the raw disk's content, two builds are byte-identical, the OVA's OVF is
checked field by field, Vagrant accepts the boxes; disk.yaml's `formats:` and its tasks."""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cosbuild.errors import CosbuildError
from cosbuild.fsutil import atomic_named_path, remove_partial_files
from cosbuild.images import disk, formats
from cosbuild.tools import TaskLog

from .conftest import BASIC, REPO

EPOCH = 1700000000
MIB = 1024 * 1024
NS = {"ovf": "http://schemas.dmtf.org/ovf/envelope/1",
      "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
      "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData",
      "vbox": "http://www.virtualbox.org/ovf/machine"}
OVF = "{%s}" % NS["ovf"]
NAME = "t.disk"


def _qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """A 64 MiB sparse GPT disk with random and repetitive data, and its qcow2."""
    folder = tmp_path_factory.mktemp("raw")
    path = folder / f"{NAME}.raw"
    with open(path, "wb") as f:
        f.truncate(64 * MIB)
        f.seek(5 * MIB)
        f.write(os.urandom(3 * MIB))
        f.seek(20 * MIB)
        f.write(b"hello world\n" * 100000)
    subprocess.run(["sfdisk", "--quiet", str(path)], check=True, text=True,
                   input="label: gpt\nstart=2048, size=8192, type=L\n")
    _qemu_img("convert", "-f", "raw", "-O", "qcow2", str(path), str(folder / f"{NAME}.qcow2"))
    return path


def _make_all(raw: Path, out: Path) -> dict[str, Path]:
    """Every format made from `raw` in the folder `out`, as the tasks make them."""
    out.mkdir()
    for name in ("raw", "qcow2"):
        os.link(raw.with_suffix(formats.BY_NAME[name].suffix), out / f"{NAME}{formats.BY_NAME[name].suffix}")
    made = {f.name: out / f"{NAME}{f.suffix}" for f in formats.FORMATS}
    with pytest.MonkeyPatch.context() as mp, TaskLog(out / "log") as log:
        mp.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
        for fmt in formats.FORMATS:
            if fmt.make:
                fmt.make(made[fmt.source], made[fmt.name], log)
    return made


@pytest.fixture(scope="module")
def builds(raw, tmp_path_factory) -> tuple[dict[str, Path], dict[str, Path]]:
    """Two builds of every format from the same raw disk."""
    folder = tmp_path_factory.mktemp("formats")
    return _make_all(raw, folder / "a"), _make_all(raw, folder / "b")


@pytest.fixture(scope="module")
def made(builds) -> dict[str, Path]:
    return builds[0]


def _members(archive: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return tar.getmembers()


def _extract(archive: Path, name: str, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        dest.write_bytes(tar.extractfile(name).read())
    return dest


def _identical(raw: Path, image: Path, fmt: str) -> None:
    assert _qemu_img("compare", "-f", "raw", "-F", fmt, str(raw), str(image)).strip() == \
        "Images are identical."


# --------------------------------------------------------------------------- content, identity

def test_every_format_holds_the_raw_disk(raw, made, tmp_path):
    _identical(raw, made["qcow2"], "qcow2")
    _identical(raw, made["vmdk"], "vmdk")
    _identical(raw, made["vhdx"], "vhdx")
    _identical(raw, _extract(made["ova"], f"{NAME}.vmdk", tmp_path / "ova.vmdk"), "vmdk")
    _identical(raw, _extract(made["virtualbox-box"], f"{NAME}.vmdk", tmp_path / "box.vmdk"),
               "vmdk")
    _identical(raw, _extract(made["libvirt-box"], "box.img", tmp_path / "box.img"), "qcow2")
    for fmt in ("qcow2", "vmdk", "vhdx"):
        assert "No errors were found" in _qemu_img("check", "-f", fmt, str(made[fmt]))


def test_the_qcow2_is_zstd_compressed(raw, made):
    info = json.loads(_qemu_img("info", "--output=json", str(made["qcow2"])))
    assert info["format-specific"]["data"]["compression-type"] == "zstd"
    # the 3 MiB of random data stay as they are; 1.2 MB of one repeated line shrink to little
    assert info["actual-size"] < 4 * MIB, info


def test_two_builds_are_byte_identical(builds):
    first, second = builds
    for name in first:
        assert first[name].read_bytes() == second[name].read_bytes(), name
    assert not [p for p in first["vmdk"].parent.iterdir() if p.name.startswith(".")]


def _differences(a: Path, b: Path) -> set[int]:
    x, y = a.read_bytes(), b.read_bytes()
    assert len(x) == len(y)
    block = 4096   # bytes compared one by one only in the blocks that differ
    return {n for at in range(0, len(x), block) if x[at:at + block] != y[at:at + block]
            for n in range(at, min(at + block, len(x))) if x[n] != y[n]}


def _plain(raw: Path, fmt: str, folder: Path, *options: str) -> Path:
    """qemu-img's own conversion, under the same file name."""
    folder.mkdir()
    out = folder / f"{NAME}.{fmt}"
    _qemu_img("convert", "-f", "raw", "-O", fmt, *options, str(raw), str(out))
    return out


def _descriptor(path: Path) -> str:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        start, size = formats.vmdk_descriptor(m, path)
        return m[start:start + size].partition(b"\0")[0].decode()


def test_only_the_vmdk_cid_is_replaced(raw, made, tmp_path):
    plain = _plain(raw, "vmdk", tmp_path / "p", "-o", "subformat=streamOptimized")
    with open(plain, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        start, size = formats.vmdk_descriptor(m, plain)
    assert _differences(plain, made["vmdk"]) <= set(range(start, start + size))
    ours, theirs = _descriptor(made["vmdk"]).splitlines(), _descriptor(plain).splitlines()
    cid = [line for line in ours if line.startswith("CID=")]
    assert [line for line in ours if line not in cid] == [
        line for line in theirs if not line.startswith("CID=")]
    assert len(cid) == 1 and len(cid[0]) == len("CID=") + 8
    info = json.loads(_qemu_img("info", "--output=json", "-f", "vmdk", str(made["vmdk"])))
    assert info["format-specific"]["data"]["cid"] == int(cid[0][4:], 16)
    assert f'RW 131072 SPARSE "{NAME}.vmdk"' in ours


def test_a_short_cid_is_written_with_8_digits(tmp_path):
    """qemu-img writes the CID without leading zeros: the text after it moves."""
    path = tmp_path / "x.vmdk"
    text = b"# Disk DescriptorFile\nversion=1\nCID=abc\nparentCID=ffffffff\n"
    path.write_bytes(b"KDMV" + bytes(24) + (1).to_bytes(8, "little") + (1).to_bytes(8, "little")
                     + bytes(512 - 44) + text.ljust(512, b"\0"))
    formats.pin_vmdk(path)
    lines = _descriptor(path).splitlines()
    assert lines[2].startswith("CID=") and len(lines[2]) == 12 and lines[3] == "parentCID=ffffffff"
    assert path.stat().st_size == 1024


def test_a_stale_tail_after_the_descriptor_is_blanked(tmp_path):
    """qemu-img, rewriting a 7-digit CID as 6 on close, leaves the old last byte after the
    NUL: the same content must give the same bytes whatever the CID was."""
    made = []
    for cid, tail in ((b"abcdef", b"\0\n"), (b"abcdef01", b"")):
        path = tmp_path / f"{cid.decode()}.vmdk"
        text = b"# Disk DescriptorFile\nversion=1\nCID=" + cid + b"\nparentCID=ffffffff\n" + tail
        path.write_bytes(b"KDMV" + bytes(24) + (1).to_bytes(8, "little")
                         + (1).to_bytes(8, "little") + bytes(512 - 44) + text.ljust(512, b"\0"))
        formats.pin_vmdk(path)
        made.append(path.read_bytes())
    assert made[0] == made[1]
    assert made[0][512:].rstrip(b"\0").endswith(b"parentCID=ffffffff\n")


def _fields(path: Path) -> formats.VhdxFields:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return formats.vhdx_fields(m, path)


def _checksums_hold(path: Path, fields: formats.VhdxFields) -> bool:
    data = bytearray(path.read_bytes())
    for at, length in fields.checksummed:
        stored = int.from_bytes(data[at + 4:at + 8], "little")
        data[at + 4:at + 8] = bytes(4)
        if formats.crc32c(bytes(data[at:at + length])) != stored:
            return False
        data[at + 4:at + 8] = stored.to_bytes(4, "little")
    return True


def test_only_the_vhdx_random_fields_are_replaced_and_checksums_hold(raw, made, tmp_path):
    plain = _plain(raw, "vhdx", tmp_path / "p")
    fields = _fields(plain)
    assert fields == _fields(made["vhdx"])
    assert len(fields.checksummed) >= 3   # both headers and the stale log entry
    assert _checksums_hold(plain, fields)   # the CRC-32C is qemu's, over the same bytes
    assert _checksums_hold(made["vhdx"], fields)
    allowed = ({at + n for at in fields.guids for n in range(16)}
               | {at + n for at in fields.sequences for n in range(8)}
               | {at + 4 + n for at, _ in fields.checksummed for n in range(4)})
    changed = _differences(plain, made["vhdx"])
    assert changed and changed <= allowed
    data = made["vhdx"].read_bytes()
    assert [int.from_bytes(data[at:at + 8], "little") for at in fields.sequences] == [1, 2]


def test_crc32c_is_castagnoli():
    assert formats.crc32c(b"123456789") == 0xE3069283


# --------------------------------------------------------------------------- the OVA

def test_ova_is_ovf_vmdk_and_manifest_in_a_fixed_ustar(raw, made, tmp_path):
    members = _members(made["ova"])
    assert [m.name for m in members] == [f"{NAME}.ovf", f"{NAME}.vmdk", f"{NAME}.mf"]
    assert all((m.mtime, m.uid, m.gid, m.mode, m.isreg()) == (EPOCH, 0, 0, 0o644, True)
               for m in members)
    assert made["ova"].read_bytes()[257:263] == b"ustar\x00"
    with tarfile.open(made["ova"]) as tar:
        files = {m.name: tar.extractfile(m).read() for m in members}
    manifest = files[f"{NAME}.mf"].decode().splitlines()
    assert manifest == [f"SHA256({name})= {hashlib.sha256(files[name]).hexdigest()}"
                        for name in (f"{NAME}.ovf", f"{NAME}.vmdk")]
    assert files[f"{NAME}.vmdk"] == made["vmdk"].read_bytes()

    root = ET.fromstring(files[f"{NAME}.ovf"])
    assert root.tag == OVF + "Envelope" and root.get(OVF + "version") == "1.0"
    references = root.findall("ovf:References/ovf:File", NS)
    for ref in references:   # every file it names is in the archive, with its size
        assert int(ref.get(OVF + "size")) == len(files[ref.get(OVF + "href")])
    assert [r.get(OVF + "href") for r in references] == [f"{NAME}.vmdk"]
    disk_element = root.find("ovf:DiskSection/ovf:Disk", NS)
    assert int(disk_element.get(OVF + "capacity")) == raw.stat().st_size
    assert disk_element.get(OVF + "capacityAllocationUnits") == "byte"
    assert disk_element.get(OVF + "fileRef") == references[0].get(OVF + "id")
    assert disk_element.get(OVF + "format") == formats.STREAM_OPTIMIZED
    populated = int(disk_element.get(OVF + "populatedSize"))
    assert 3 * MIB <= populated < raw.stat().st_size
    assert root.find("ovf:NetworkSection/ovf:Network", NS).get(OVF + "name") == "NAT"

    system = root.find("ovf:VirtualSystem", NS)
    assert system.get(OVF + "id") == NAME
    assert system.find("ovf:OperatingSystemSection", NS).get(OVF + "id") == "101"
    assert system.find("ovf:OperatingSystemSection/vbox:OSType", NS).text == "Linux26_64"
    items = [{e.tag.split("}")[1]: e.text for e in item}
             for item in system.findall("ovf:VirtualHardwareSection/ovf:Item", NS)]
    for item in items:   # CIM's order
        assert list(item) == sorted(item)
    by_type = {item["ResourceType"]: item for item in items}
    assert by_type["3"]["VirtualQuantity"] == "2"
    assert (by_type["4"]["VirtualQuantity"], by_type["4"]["AllocationUnits"]) == ("2048",
                                                                                 "byte * 2^20")
    sata = by_type["20"]
    assert sata["ResourceSubType"] == "AHCI"
    assert by_type["17"]["Parent"] == sata["InstanceID"]
    assert by_type["17"]["HostResource"] == f"ovf:/disk/{disk_element.get(OVF + 'diskId')}"
    assert (by_type["10"]["Connection"], by_type["10"]["ResourceSubType"]) == ("NAT", "E1000")
    assert len({item["InstanceID"] for item in items}) == len(items)
    assert system.find("ovf:VirtualHardwareSection/{http://www.vmware.com/schema/ovf}Config",
                       NS) is None   # BIOS and UEFI boot: no firmware marker


def test_an_efi_machine_is_marked_efi():
    ovf = formats.ovf_envelope("x", "x.vmdk", 1, MIB, 0, formats.Machine(efi=True))
    config = ET.fromstring(ovf).find(".//{http://www.vmware.com/schema/ovf}Config")
    assert config.get("{http://www.vmware.com/schema/ovf}key") == "firmware"
    assert config.get("{http://www.vmware.com/schema/ovf}value") == "efi"


# --------------------------------------------------------------------------- Vagrant boxes

def test_boxes_hold_metadata_vagrantfile_and_the_disk(raw, made):
    libvirt, virtualbox = made["libvirt-box"], made["virtualbox-box"]
    assert [m.name for m in _members(libvirt)] == ["metadata.json", "Vagrantfile", "box.img"]
    assert [m.name for m in _members(virtualbox)] == ["metadata.json", "Vagrantfile", "box.ovf",
                                                      f"{NAME}.vmdk"]
    with tarfile.open(libvirt) as tar:
        assert json.load(tar.extractfile("metadata.json")) == {
            "provider": "libvirt", "format": "qcow2",
            "virtual_size": math.ceil(raw.stat().st_size / 1024**3)}
        assert tar.extractfile("box.img").read() == made["qcow2"].read_bytes()
        vagrantfile = tar.extractfile("Vagrantfile").read().decode()
    assert 'config.vm.network "forwarded_port", guest: 8090, host: 8090' in vagrantfile
    assert 'config.vm.provider "libvirt"' in vagrantfile
    with tarfile.open(virtualbox) as tar:
        assert json.load(tar.extractfile("metadata.json")) == {"provider": "virtualbox"}
        ovf = ET.fromstring(tar.extractfile("box.ovf").read())
        assert 'config.vm.provider "virtualbox"' in tar.extractfile("Vagrantfile").read().decode()
    assert ovf.find("ovf:References/ovf:File", NS).get(OVF + "href") == f"{NAME}.vmdk"
    assert all(m.mtime == EPOCH and m.mode == 0o644 for b in (libvirt, virtualbox)
               for m in _members(b))


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed")
def test_vagrant_adds_both_boxes(made, tmp_path):
    env = {**os.environ, "VAGRANT_HOME": str(tmp_path / "vagrant"),
           "VAGRANT_CHECKPOINT_DISABLE": "1"}
    for box, provider in ((made["libvirt-box"], "libvirt"),
                          (made["virtualbox-box"], "virtualbox")):
        subprocess.run(["vagrant", "box", "add", "--name", f"cosbuild-{provider}", str(box)],
                       env=env, cwd=tmp_path, check=True, capture_output=True)
    listing = subprocess.run(["vagrant", "box", "list"], env=env, cwd=tmp_path, check=True,
                             capture_output=True, text=True).stdout
    assert [line.split() for line in listing.splitlines()] == [
        ["cosbuild-libvirt", "(libvirt,", "0)"], ["cosbuild-virtualbox", "(virtualbox,", "0)"]]
    stored = tmp_path / "vagrant/boxes/cosbuild-virtualbox/0/virtualbox"
    assert sorted(p.name for p in stored.iterdir()) == sorted(["Vagrantfile", "box.ovf",
                                                               f"{NAME}.vmdk", "metadata.json"])


def test_a_name_ustar_cannot_hold_is_an_error(tmp_path):
    with pytest.raises(CosbuildError, match="cannot hold x{101} in a ustar archive"):
        formats.write_tar(tmp_path / "a.tar", [("x" * 101, b"")])
    assert list(tmp_path.iterdir()) == []   # nothing half-written


def test_a_named_conversion_is_renamed_into_place_or_leaves_nothing(tmp_path):
    target = tmp_path / "d.vmdk"
    with atomic_named_path(target) as tmp:
        assert tmp.name == "d.vmdk" and tmp.parent.parent == tmp_path
        tmp.write_bytes(b"made")
    assert target.read_bytes() == b"made" and list(tmp_path.iterdir()) == [target]
    with pytest.raises(CosbuildError), atomic_named_path(tmp_path / "e.vmdk") as tmp:
        tmp.write_bytes(b"half")
        raise CosbuildError("failed")
    assert list(tmp_path.iterdir()) == [target]
    killed = tmp_path / ".f.vmdk.999999999.abc.tmp"   # a writer killed meanwhile
    killed.mkdir()
    (killed / "f.vmdk").write_bytes(b"half")
    remove_partial_files(tmp_path)
    assert list(tmp_path.iterdir()) == [target]


# --------------------------------------------------------------------------- disk.yaml, tasks

def test_closure_adds_what_each_format_is_made_from():
    names = lambda asked: [f.name for f in formats.closure(asked)]   # noqa: E731
    assert names([]) == ["raw"]
    assert names(formats.DEFAULT) == ["raw", "qcow2"]
    assert names(["ova"]) == ["raw", "vmdk", "ova"]
    assert names(["libvirt-box", "vhdx"]) == ["raw", "qcow2", "vhdx", "libvirt-box"]
    for fmt in formats.FORMATS:   # each after its source
        order = names([fmt.name])
        assert fmt.source is None or order.index(fmt.source) < order.index(fmt.name)


def test_formats_keyword(tmp_path):
    path = tmp_path / "disk.yaml"
    path.write_text("system: [system/x]\n")
    assert disk.load_disk_spec(path).formats == ("raw", "qcow2")
    path.write_text("system: [system/x]\nformats: [ova, vmdk, ova]\n")
    assert disk.load_disk_spec(path).formats == ("ova", "vmdk")
    assert disk.load_disk_spec(REPO / "disk.yaml").formats == tuple(formats.BY_NAME)


@pytest.mark.parametrize("value, needle", [
    ("[raw, vdi]", "unknown value 'vdi' (one of: raw, qcow2, vmdk, vhdx, ova, libvirt-box, "
                   "virtualbox-box)"),
    ("ova", "expected a list"),
    ("[[ova]]", "expected a string"),
])
def test_formats_keyword_errors_name_file_line_and_key(tmp_path, value, needle):
    path = tmp_path / "disk.yaml"
    path.write_text(f"system: [system/x]\nname: d\nformats: {value}\n")
    with pytest.raises(CosbuildError) as exc:
        disk.load_disk_spec(path)
    assert str(exc.value).startswith(f"{path}:3: formats: ") and needle in str(exc.value)


def _cosbuild(root: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "cosbuild.cli", *args], cwd=root,
                          capture_output=True, text=True)
    assert not proc.stderr   # `info` of a task to run exits with 1
    return proc.stdout


def test_disk_tasks_only_for_the_formats_asked_with_their_sources(project):
    root = project({**BASIC, "disk.yaml": "system: [app/app]\nname: d\n"
                                          "formats: [ova, libvirt-box]\n"})
    tasks = {line.split()[0] for line in _cosbuild(root, "list", "--all").splitlines()
             if line.startswith("disk:")}
    # the SBOM (disk:sbom) is made whatever the formats
    assert tasks == {"disk:sbom", "disk:raw", "disk:qcow2", "disk:vmdk", "disk:ova",
                     "disk:libvirt-box"}
    info = _cosbuild(root, "info", "disk:ova")
    assert "file_dep   : \n - build/d.vmdk\n" in info and "targets    : \n - build/d.ova\n" in info
    assert "file_dep   : \n - build/d.qcow2\n" in _cosbuild(root, "info", "disk:libvirt-box")
    (root / "disk.yaml").write_text("system: [app/app]\nname: d\n")
    tasks = {line.split()[0] for line in _cosbuild(root, "list", "--all").splitlines()
             if line.startswith("disk:")}
    assert tasks == {"disk:sbom", "disk:raw", "disk:qcow2"}
