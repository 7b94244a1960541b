"""Deploy formats of the installed disk (issue 34), each a derivative of the raw disk, never a
second install: converted from it by qemu-img, or packaged from such a conversion.

FORMATS declares each once: its file, what it is made from and how; it gives disk.yaml's
`formats:` its values and the `disk:<format>` tasks their dependencies (images/disk.py,
tasks.py). raw is disk.py's own step.

Reproducible: qemu-img writes random identifiers (a VMDK's CID; a VHDX's GUIDs and header
sequence numbers), which are replaced by values derived from the file's content (those
fields blanked); archives are ustar with fixed owners, modes, order and SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import re
import struct
import tarfile
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .. import settings, tools
from ..builds.artifact import sha256_file
from ..errors import CosbuildError
from ..fsutil import atomic_named_path, atomic_path
from ..tools import TaskLog
from . import fsimage

KIB, GIB = 1024, 1024**3


@dataclass(frozen=True)
class Machine:
    """The virtual machine an OVA or a Vagrant box describes."""
    cpus: int = 2
    memory_mib: int = 2048
    # the disk boots with BIOS and UEFI: no firmware marker; True writes VMware's EFI one
    efi: bool = False
    # (guest, host) ports the Vagrant boxes forward: the sample service's /hello
    forwarded_ports: tuple[tuple[int, int], ...] = ((8090, 8090),)


MACHINE = Machine()


# --------------------------------------------------------------------------- qemu-img

def convert(source: Path, target: Path, fmt: str, options: tuple[str, ...], log: TaskLog) -> None:
    tools.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, *options, str(source), str(target)],
              log=log, what=f"convert the disk to {fmt}")


def image_info(path: Path, fmt: str, log: TaskLog) -> dict:
    return json.loads(tools.run(["qemu-img", "info", "--output=json", "-f", fmt, str(path)],
                                log=log, capture=True, what=f"read {path.name}"))


def populated_size(path: Path, fmt: str, log: TaskLog) -> int:
    """Bytes of the virtual disk that hold data (OVF's populatedSize)."""
    extents = json.loads(tools.run(["qemu-img", "map", "--output=json", "-f", fmt, str(path)],
                                   log=log, capture=True, what=f"map {path.name}"))
    return sum(e["length"] for e in extents if e["data"])


def content_digest(m: mmap.mmap, replaced: Iterable[tuple[int, bytes]]) -> str:
    """sha256 of a file with the bytes at each (offset, bytes) of `replaced` read as those
    bytes: its content with the random fields blanked."""
    h, at = hashlib.sha256(), 0
    with memoryview(m) as view:
        for offset, data in sorted(replaced):
            h.update(view[at:offset])
            h.update(data)
            at = offset + len(data)
        h.update(view[at:])
    return h.hexdigest()


def _unexpected(path: Path, what: str) -> CosbuildError:
    return CosbuildError(f"{path.name}: {what}, not what qemu-img is known to write",
                         hint="report the qemu-img version (`qemu-img --version`)")


# compressed: a third of the size to ship (the images' free space is zeros anyway); zstd
# writes it in a tenth of zlib's time here and reads faster (QEMU 5.1 and later read it)
QCOW2_OPTIONS = ("-c", "-o", "compression_type=zstd")


def make_qcow2(source: Path, target: Path, log: TaskLog) -> None:
    """QEMU's own format, zstd-compressed: what libvirt and the Vagrant libvirt box take
    (what a machine writes goes to new clusters, uncompressed)."""
    with atomic_path(target) as tmp:
        convert(source, tmp, "qcow2", QCOW2_OPTIONS, log)


# --------------------------------------------------------------------------- VMDK

CID_LINE = re.compile(rb"^CID=([0-9a-f]{1,8})$", re.M)


def vmdk_descriptor(m: mmap.mmap, path: Path) -> tuple[int, int]:
    """(offset, length) of a sparse VMDK's embedded descriptor: text, then NUL bytes."""
    if m[:4] != b"KDMV":
        raise _unexpected(path, "no VMDK sparse header")
    start, size = (n * 512 for n in struct.unpack_from("<QQ", m, 28))
    return start, size


def pin_vmdk(path: Path) -> None:
    """The CID (qemu-img writes 1 to 8 random hex digits) becomes 8 derived from the content;
    the descriptor's text after it moves within its NUL padding.

    The descriptor is a C string: when qemu-img rewrites it with a shorter CID on close, the
    old text's last bytes stay after the NUL (`...\\n\\0\\n`); they are blanked too."""
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        start, size = vmdk_descriptor(m, path)
        text = bytes(m[start:start + size]).partition(b"\0")[0]
        found = CID_LINE.search(text)
        if not found or len(text) > size - 9:
            raise _unexpected(path, "no CID in the descriptor, or no room after it")
        before, after = text[:found.start(1)], text[found.end(1):]
        digest = content_digest(m, [(start, (before + after).ljust(size, b"\0"))])
        m[start:start + size] = (before + digest[:8].encode() + after).ljust(size, b"\0")


def make_vmdk(source: Path, target: Path, log: TaskLog) -> None:
    """streamOptimized: compressed grains, the subformat OVF packages and VirtualBox import."""
    # the file's own name goes into its extent line: convert under the final name
    with atomic_named_path(target) as tmp:
        convert(source, tmp, "vmdk", ("-o", "subformat=streamOptimized"), log)
        pin_vmdk(tmp)


# --------------------------------------------------------------------------- VHDX

VHDX_HEADERS = (64 * KIB, 128 * KIB)
VHDX_HEADER_SIZE = 4 * KIB
VHDX_REGION_TABLE = 192 * KIB
METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
PAGE83 = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746").bytes_le


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ 0x82F63B78 if n & 1 else n >> 1
        table.append(n)
    return tuple(table)


CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of VHDX headers and log entries."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@dataclass(frozen=True)
class VhdxFields:
    """Where a VHDX holds what qemu-img chose at random."""
    guids: tuple[int, ...]          # offsets of GUIDs (16 bytes; all-zero ones mean none)
    sequences: tuple[int, ...]      # offsets of the headers' sequence numbers (8 bytes)
    checksummed: tuple[tuple[int, int], ...]   # (offset, length) of structures with a
    # CRC-32C at +4 over all their bytes


def vhdx_fields(m: mmap.mmap, path: Path) -> VhdxFields:
    """The headers' FileWrite, DataWrite and Log GUIDs, the log entries' GUIDs (a stale entry
    qemu-img leaves) and the Page 83 VirtualDiskId, found through the region table."""
    if m[:8] != b"vhdxfile" or any(m[h:h + 4] != b"head" for h in VHDX_HEADERS):
        raise _unexpected(path, "no VHDX headers")
    guids = [h + field for field in (16, 32, 48) for h in VHDX_HEADERS]
    checksummed = [(h, VHDX_HEADER_SIZE) for h in VHDX_HEADERS]
    log_length, log_offset = struct.unpack_from("<IQ", m, VHDX_HEADERS[0] + 68)
    at = log_offset
    while at < log_offset + log_length and m[at:at + 4] == b"loge":
        length, = struct.unpack_from("<I", m, at + 8)
        if length < 4 * KIB or length % (4 * KIB):
            raise _unexpected(path, "a log entry of a length that is no multiple of 4 KiB")
        guids.append(at + 32)
        checksummed.append((at, length))
        at += length
    guids.append(_page83(m, path))
    return VhdxFields(tuple(guids), tuple(h + 8 for h in VHDX_HEADERS), tuple(checksummed))


def _page83(m: mmap.mmap, path: Path) -> int:
    if m[VHDX_REGION_TABLE:VHDX_REGION_TABLE + 4] != b"regi":
        raise _unexpected(path, "no region table")
    count, = struct.unpack_from("<I", m, VHDX_REGION_TABLE + 8)
    for entry in range(VHDX_REGION_TABLE + 16, VHDX_REGION_TABLE + 16 + 32 * min(count, 2047), 32):
        if m[entry:entry + 16] != METADATA_REGION:
            continue
        region, = struct.unpack_from("<Q", m, entry + 16)
        if m[region:region + 8] != b"metadata":
            break
        items, = struct.unpack_from("<H", m, region + 10)
        for item in range(region + 32, region + 32 + 32 * items, 32):
            if m[item:item + 16] == PAGE83:
                return region + struct.unpack_from("<I", m, item + 16)[0]
    raise _unexpected(path, "no Page 83 metadata item")


def pin_vhdx(path: Path) -> None:
    """Each distinct random GUID becomes one derived from the content (equal ones stay
    equal), the sequence numbers count from 1 in qemu-img's order; checksums made again."""
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        found = vhdx_fields(m, path)
        digest = content_digest(m, [(at, bytes(16)) for at in found.guids]
                                + [(at, bytes(8)) for at in found.sequences]
                                + [(at + 4, bytes(4)) for at, _ in found.checksummed])
        derived: dict[bytes, bytes] = {}
        for at in found.guids:
            old = bytes(m[at:at + 16])
            if any(old):
                new = derived.setdefault(old, uuid.UUID(
                    fsimage.stable_uuid(f"vhdx:{digest}:{len(derived)}")).bytes_le)
                m[at:at + 16] = new
        numbers = [struct.unpack_from("<Q", m, at)[0] for at in found.sequences]
        for at, number in zip(found.sequences, numbers):
            struct.pack_into("<Q", m, at, number - min(numbers) + 1)
        for at, length in found.checksummed:
            struct.pack_into("<I", m, at + 4, 0)
            struct.pack_into("<I", m, at + 4, crc32c(m[at:at + length]))


def make_vhdx(source: Path, target: Path, log: TaskLog) -> None:
    """Dynamic VHDX, what Hyper-V attaches."""
    with atomic_path(target) as tmp:
        convert(source, tmp, "vhdx", (), log)
        pin_vhdx(tmp)


# --------------------------------------------------------------------------- OVF and archives

OVF = "http://schemas.dmtf.org/ovf/envelope/1"
NAMESPACES = {
    "xmlns": OVF, "xmlns:ovf": OVF,
    "xmlns:rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/"
                  "CIM_ResourceAllocationSettingData",
    "xmlns:vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/"
                  "CIM_VirtualSystemSettingData",
    "xmlns:vbox": "http://www.virtualbox.org/ovf/machine",
    "xmlns:vmw": "http://www.vmware.com/schema/ovf",
}
STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"


def _element(parent: ET.Element, tag: str, text: str | None = None,
             attrs: dict[str, str] | None = None) -> ET.Element:
    """A child, its attributes in the order given."""
    child = ET.SubElement(parent, tag, attrs or {})
    child.text = text
    return child


def _section(parent: ET.Element, tag: str, info: str,
             attrs: dict[str, str] | None = None) -> ET.Element:
    section = _element(parent, tag, attrs=attrs)
    _element(section, "Info", info)
    return section


def _item(section: ET.Element, **rasd) -> None:
    """A hardware item, its CIM properties in the schema's (alphabetical) order."""
    item = _element(section, "Item")
    for name in sorted(rasd):
        _element(item, f"rasd:{name}", str(rasd[name]))


def ovf_envelope(system: str, vmdk: str, vmdk_size: int, capacity: int, populated: int,
                 machine: Machine = MACHINE) -> bytes:
    """An OVF 1.0 descriptor of one VM booting the streamOptimized `vmdk` (a file of
    `vmdk_size` bytes, a disk of `capacity` bytes of which `populated` hold data) from a
    SATA controller, with a NAT network adapter. Prefixes are written literally, the way
    OVF readers expect them (elements in the default namespace, attributes `ovf:`)."""
    root = ET.Element("Envelope", {"ovf:version": "1.0", "xml:lang": "en-US", **NAMESPACES})
    _element(_element(root, "References"), "File", attrs={
        "ovf:id": "file1", "ovf:href": vmdk, "ovf:size": str(vmdk_size)})
    _element(_section(root, "DiskSection", "The virtual disk"), "Disk", attrs={
        "ovf:capacity": str(capacity), "ovf:capacityAllocationUnits": "byte",
        "ovf:diskId": "vmdisk1", "ovf:fileRef": "file1", "ovf:format": STREAM_OPTIMIZED,
        "ovf:populatedSize": str(populated)})
    network = _element(_section(root, "NetworkSection", "The logical network"), "Network",
                       attrs={"ovf:name": "NAT"})
    _element(network, "Description", "NAT")
    vm = _section(root, "VirtualSystem", "A virtual machine", {"ovf:id": system})
    os_section = _section(vm, "OperatingSystemSection", "The guest operating system",
                          {"ovf:id": "101"})   # CIM's "Linux 64-Bit"
    _element(os_section, "Description", "Linux 64-bit")
    _element(os_section, "vbox:OSType", "Linux26_64", {"ovf:required": "false"})
    hardware = _section(vm, "VirtualHardwareSection", "Virtual hardware requirements")
    system_element = _element(hardware, "System")
    for name, text in (("ElementName", "Virtual Hardware Family"), ("InstanceID", "0"),
                       ("VirtualSystemIdentifier", system),
                       ("VirtualSystemType", "virtualbox-2.2")):
        _element(system_element, f"vssd:{name}", text)
    _item(hardware, ElementName=f"{machine.cpus} virtual CPUs", InstanceID=1, ResourceType=3,
          VirtualQuantity=machine.cpus)
    _item(hardware, AllocationUnits="byte * 2^20", ElementName=f"{machine.memory_mib} MB of memory",
          InstanceID=2, ResourceType=4, VirtualQuantity=machine.memory_mib)
    _item(hardware, Address=0, ElementName="SATA controller", InstanceID=3,
          ResourceSubType="AHCI", ResourceType=20)
    _item(hardware, AddressOnParent=0, ElementName="disk1", HostResource="ovf:/disk/vmdisk1",
          InstanceID=4, Parent=3, ResourceType=17)
    _item(hardware, AutomaticAllocation="true", Connection="NAT",
          ElementName="Ethernet adapter on NAT", InstanceID=5, ResourceSubType="E1000",
          ResourceType=10)
    if machine.efi:   # VMware's marker
        _element(hardware, "vmw:Config", attrs={"ovf:required": "false", "vmw:key": "firmware",
                                                "vmw:value": "efi"})
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def vmdk_ovf(vmdk: Path, log: TaskLog, machine: Machine = MACHINE) -> bytes:
    """The OVF of the VM of a streamOptimized VMDK, named after it."""
    return ovf_envelope(vmdk.name.removesuffix(".vmdk"), vmdk.name, vmdk.stat().st_size,
                        image_info(vmdk, "vmdk", log)["virtual-size"],
                        populated_size(vmdk, "vmdk", log), machine)


def write_tar(target: Path, members: Iterable[tuple[str, bytes | Path]]) -> None:
    """An uncompressed ustar archive of (name, content or file) in this order: owner root,
    mode 0644, every time SOURCE_DATE_EPOCH."""
    epoch = settings.source_date_epoch()
    with atomic_path(target) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = epoch, 0o644
            info.size = content.stat().st_size if isinstance(content, Path) else len(content)
            try:
                with (content.open("rb") if isinstance(content, Path)
                      else io.BytesIO(content)) as f:
                    tar.addfile(info, f)
            except ValueError as exc:   # ustar: names up to 100 bytes, files below 8 GiB
                raise CosbuildError(f"{target.name}: cannot hold {name} in a ustar archive: "
                                    f"{exc}", hint="a shorter disk name; a smaller disk") from None


def make_ova(source: Path, target: Path, log: TaskLog) -> None:
    """OVF, VMDK and manifest in one file, the order OVF 1.0 requires."""
    stem = source.name.removesuffix(".vmdk")
    ovf = vmdk_ovf(source, log)
    manifest = (f"SHA256({stem}.ovf)= {hashlib.sha256(ovf).hexdigest()}\n"
                f"SHA256({source.name})= {sha256_file(source)}\n")
    write_tar(target, [(f"{stem}.ovf", ovf), (source.name, source),
                       (f"{stem}.mf", manifest.encode())])


def vagrantfile(provider: str, machine: Machine = MACHINE) -> bytes:
    """The box's defaults, which a user's Vagrantfile overrides."""
    lines = ['Vagrant.configure("2") do |config|']
    lines += [f'  config.vm.network "forwarded_port", guest: {guest}, host: {host}'
              for guest, host in machine.forwarded_ports]
    lines += [f'  config.vm.provider "{provider}" do |vm|', f"    vm.memory = {machine.memory_mib}",
              f"    vm.cpus = {machine.cpus}", "  end", "end", ""]
    return "\n".join(lines).encode()


def _box_metadata(**fields) -> bytes:
    return json.dumps(fields, sort_keys=True).encode() + b"\n"


def make_libvirt_box(source: Path, target: Path, log: TaskLog) -> None:
    """vagrant-libvirt's box: the qcow2 as box.img; its virtual size in whole GiB."""
    size = image_info(source, "qcow2", log)["virtual-size"]
    write_tar(target, [("metadata.json", _box_metadata(provider="libvirt", format="qcow2",
                                                       virtual_size=-(-size // GIB))),
                       ("Vagrantfile", vagrantfile("libvirt")), ("box.img", source)])


def make_virtualbox_box(source: Path, target: Path, log: TaskLog) -> None:
    """Vagrant's VirtualBox box: box.ovf and the VMDK it names (what VirtualBox imports)."""
    write_tar(target, [("metadata.json", _box_metadata(provider="virtualbox")),
                       ("Vagrantfile", vagrantfile("virtualbox")),
                       ("box.ovf", vmdk_ovf(source, log)), (source.name, source)])


# --------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class Format:
    name: str              # in disk.yaml's `formats:`; its task is disk:<name>
    suffix: str            # build/<disk name><suffix>
    source: str | None     # the format it is made from
    doc: str
    # make(source, target, log); None: the raw disk, a step of images/disk.py
    make: Callable[[Path, Path, TaskLog], None] | None = None


FORMATS = (
    Format("raw", ".raw", None, "the GPT disk; every other format derives from it"),
    Format("qcow2", ".qcow2", "raw", "QEMU/KVM and libvirt (zstd-compressed: QEMU 5.1 or later)",
           make_qcow2),
    Format("vmdk", ".vmdk", "raw", "streamOptimized VMDK: VMware, VirtualBox", make_vmdk),
    Format("vhdx", ".vhdx", "raw", "Hyper-V", make_vhdx),
    Format("ova", ".ova", "vmdk", "OVF 1.0 appliance: VirtualBox, VMware", make_ova),
    Format("libvirt-box", ".libvirt.box", "qcow2", "Vagrant box for vagrant-libvirt",
           make_libvirt_box),
    Format("virtualbox-box", ".virtualbox.box", "vmdk", "Vagrant box for VirtualBox",
           make_virtualbox_box),
)
BY_NAME = {f.name: f for f in FORMATS}
DEFAULT = ("raw", "qcow2")


def closure(asked: Iterable[str]) -> tuple[Format, ...]:
    """The formats to make for those `asked`: them, what they are made from, and the raw
    disk, in table order (each after its source)."""
    names, todo = set(), ["raw", *asked]
    while todo:
        name = todo.pop()
        if name not in names:
            names.add(name)
            todo += [BY_NAME[name].source] if BY_NAME[name].source else []
    return tuple(f for f in FORMATS if f.name in names)


def reference() -> str:
    """One line per format, for the `formats:` keyword's documentation."""
    return "; ".join(f"{f.name}: NAME{f.suffix} ({f.doc})" for f in FORMATS)
