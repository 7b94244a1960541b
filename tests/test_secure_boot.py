"""Secure Boot without booting (fast): secure_boot in iso.yaml and disk.yaml, shim signed
with the derivative's key beside Microsoft's signature, reproducibly, and the variable
stores that enforce it. The boots are tests/test_secure_boot_qemu.py."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from virt.firmware.varstore import edk2

from cosbuild import arches
from cosbuild.builds.artifact import sha256_file
from cosbuild.errors import CosbuildError
from cosbuild.images import disk as diskmod, iso as isomod, layout, secureboot
from cosbuild.tools import TaskLog

from .test_iso import build_all, make_project

UNSIGNED_SHIM = Path("/usr/lib/shim/shimx64.efi")   # shim-unsigned: a real EFI binary


def key_pair(folder: Path, name: str = "db") -> tuple[Path, Path]:
    """A derivative's RSA key and self-signed certificate, as openssl makes them."""
    folder.mkdir(parents=True, exist_ok=True)
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                    "-subj", f"/CN=cosbuild test {name}/", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return key, cert


def enrolled(store: Path) -> dict[str, list[x509.Certificate]]:
    """The certificates of a variable store's PK, KEK and db."""
    return {name: [entry.x509 for entry in var.sigdb]
            for name, var in edk2.Edk2VarStore(str(store)).get_varlist().items()
            if name in ("PK", "KEK", "db")}


def certificate(pem: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.read_bytes())


def signers(efi: Path) -> list[str]:
    out = subprocess.run(["sbverify", "--list", str(efi)], capture_output=True, text=True).stdout
    return [line.split("issuer:", 1)[1].strip() for line in out.splitlines() if "issuer:" in line]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    key, cert = key_pair(tmp_path_factory.mktemp("keys"))
    return secureboot.Keys(key, cert)


def test_sign_adds_the_derivatives_signature_reproducibly(keys, tmp_path):
    """The same bytes a second later too: sbsign signs its clock (signingTime), which
    cosbuild stops at SOURCE_DATE_EPOCH."""
    copies = []
    for n in (1, 2):
        if n == 2:
            time.sleep(1.1)
        efi = tmp_path / f"{n}/BOOTX64.EFI"
        efi.parent.mkdir()
        efi.write_bytes(UNSIGNED_SHIM.read_bytes())
        secureboot.sign(efi, keys, TaskLog(tmp_path / "log"))
        copies.append(efi)
    assert sha256_file(copies[0]) == sha256_file(copies[1])
    check = subprocess.run(["sbverify", "--cert", str(keys.cert), str(copies[0])],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # a signed file keeps what it had: a second signature goes beside the first
    secureboot.sign(copies[1], keys, TaskLog(tmp_path / "log"))
    assert signers(copies[1]) == ["/CN=cosbuild test db"] * 2


def test_an_encrypted_or_wrong_key_fails_without_waiting_for_a_passphrase(keys, tmp_path):
    encrypted = tmp_path / "enc.key"
    subprocess.run(["openssl", "rsa", "-aes256", "-passout", "pass:secret", "-in", str(keys.key),
                    "-out", str(encrypted)], check=True, capture_output=True)
    efi = tmp_path / "BOOTX64.EFI"
    efi.write_bytes(UNSIGNED_SHIM.read_bytes())
    for bad in (secureboot.Keys(encrypted, keys.cert), secureboot.Keys(keys.cert, keys.cert)):
        with pytest.raises(CosbuildError, match=f"sign BOOTX64.EFI with {bad.key}"):
            secureboot.sign(efi, bad, TaskLog(tmp_path / "log"))
        assert efi.read_bytes() == UNSIGNED_SHIM.read_bytes()   # nothing half-signed
        assert not list(tmp_path.glob(".*tmp*"))


def test_a_variable_store_enrolls_only_the_derivatives_certificate(keys, tmp_path):
    store = secureboot.make_vars(tmp_path / "vars.fd", keys.cert, TaskLog(tmp_path / "log"))
    cert = certificate(keys.cert)
    assert enrolled(store) == {"PK": [cert], "KEK": [cert], "db": [cert]}
    varlist = edk2.Edk2VarStore(str(store)).get_varlist()
    assert varlist["SecureBootEnable"].data == b"\x01"
    microsoft = secureboot.make_vars(tmp_path / "ms.fd", None, TaskLog(tmp_path / "log"))
    assert microsoft.read_bytes() == secureboot.MICROSOFT_VARS.read_bytes()
    assert any("Microsoft Corporation UEFI CA 2011" in c.subject.rfc4514_string()
               for c in enrolled(microsoft)["db"])


SECURE_BOOT = "secure_boot: {key: keys/db.key, cert: keys/db.crt}\n"


@pytest.mark.parametrize("spec", ["iso", "disk"])
@pytest.mark.parametrize("text, message, key", [
    ("secure_boot: {key: keys/db.key}\n", "missing required keyword 'cert'", None),
    ("secure_boot: {key: keys/db.key, cert: keys/db.crt, kek: x}\n", "unknown keyword 'kek'", None),
    ("secure_boot: {key: keys/none.key, cert: keys/db.crt}\n", "keys/none.key is not a file",
     "secure_boot.key"),
    ("secure_boot: keys\n", "expected a mapping", "secure_boot"),
])
def test_secure_boot_mistakes_name_the_file_and_key(tmp_path, spec, text, message, key):
    key_pair(tmp_path / "keys")
    head = ("system: [system/x]\n" if spec == "disk" else "packages:\n  rootfs: [system/x]\n")
    path = tmp_path / f"{spec}.yaml"
    path.write_text(head + text)
    load = diskmod.load_disk_spec if spec == "disk" else isomod.load_iso_spec
    with pytest.raises(CosbuildError, match=message) as exc:
        load(path)
    assert str(path) in str(exc.value)
    if key:
        assert key in str(exc.value)


def test_keys_are_relative_to_the_spec_or_absolute(tmp_path, keys):
    key_pair(tmp_path / "keys")
    path = tmp_path / "disk.yaml"
    path.write_text("system: [system/x]\n" + SECURE_BOOT)
    assert diskmod.load_disk_spec(path).secure_boot == secureboot.Keys(
        tmp_path / "keys/db.key", tmp_path / "keys/db.crt")
    path.write_text(f"system: [system/x]\nsecure_boot: {{key: {keys.key}, cert: {keys.cert}}}\n")
    assert diskmod.load_disk_spec(path).secure_boot == keys
    path.write_text("system: [system/x]\n")
    assert diskmod.load_disk_spec(path).secure_boot is None


def test_the_iso_signs_its_efi_images_boot_loader(tmp_path, monkeypatch, keys):
    """iso:uefi signs boot/uefi.img's EFI/BOOT/BOOTX64.EFI with iso.yaml's key; the same
    sources give the same image."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    from .test_iso import ISO_YAML, PACKAGES
    packages = {**PACKAGES, "live/efi": {"EFI/BOOT/BOOTX64.EFI": UNSIGNED_SHIM.read_bytes()}}
    project = make_project(tmp_path, ISO_YAML + f"secure_boot: {{key: {keys.key}, cert: {keys.cert}}}\n",
                           packages)
    builder = isomod.IsoBuilder(project, isomod.load_iso_spec(Path("iso.yaml")))
    build_all(builder)
    first = sha256_file(builder.uefi_img)
    loader = tmp_path / "BOOTX64.EFI"
    subprocess.run(["mcopy", "-i", str(builder.uefi_img), "::/EFI/BOOT/BOOTX64.EFI", str(loader)],
                   check=True)
    assert signers(loader) == ["/CN=cosbuild test db"]
    builder.install_root("uefi")
    builder.make_uefi_image()
    assert sha256_file(builder.uefi_img) == first   # signed once per staging, reproducibly


def test_the_disk_takes_shim_grub_and_the_way_to_the_menu(tmp_path):
    root = tmp_path / "root"
    folder = root / "usr/lib/cos/grub"
    amd64 = arches.ARCHES["amd64"]
    for name in ("grub.cfg", *layout.esp_files(amd64), layout.BIOS_BOOT_IMAGE,
                 layout.BIOS_CORE_IMAGE):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    boot = layout.boot_files(root, "/usr/lib/cos/grub", amd64)
    esp = boot.esp_folder(tmp_path / "esp")
    assert sorted(str(p.relative_to(esp)) for p in esp.rglob("*") if p.is_file()) == \
        ["EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grubx64.efi", "EFI/debian/grub.cfg"]
    (folder / "EFI/BOOT/grubx64.efi").unlink()
    with pytest.raises(CosbuildError, match="EFI/BOOT/grubx64.efi is not in the system root"):
        layout.boot_files(root, "/usr/lib/cos/grub", amd64)


def test_the_samples_menus_use_only_what_the_signed_grub_has_built_in():
    """Under Secure Boot Debian's signed GRUB loads no module: no insmod, and none of the
    commands it lacks (the note on boot trust lists them)."""
    repo = Path(__file__).resolve().parent.parent
    for cfg in ("tree/system/grub2-efi/files/grub.cfg", "tree/system/grub2-efi/files/esp.cfg",
                "tree/live/grub2-efi-image/build.yaml"):
        text = (repo / cfg).read_text()
        for word in ("insmod", "eval ", "increment", "decrement", "blscfg", "loadfont"):
            assert word not in text, (cfg, word)
