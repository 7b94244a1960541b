"""Secure Boot: a derivative's own key, and the firmware variable stores that enforce it.

The ISO and the disk boot through Debian's signed chain (shim signed by Microsoft's UEFI CA,
GRUB and the kernel by Debian). `secure_boot: {key, cert}` in iso.yaml or disk.yaml signs
shim with the derivative's key too: sbsign adds its signature beside Microsoft's, so the
same file boots on machines that trust either. shim, which carries Debian's certificate,
still checks GRUB and the kernel. An RSA signature of a fixed key is deterministic, but
sbsign also signs its clock (PKCS#7 signingTime): it runs with the clock stopped at
SOURCE_DATE_EPOCH (faketime), so the signed file is reproducible.

`make_vars` writes an OVMF variable store (VARS) with Secure Boot on: Microsoft's keys, or
only the derivative's certificate (PK, KEK and db), for `cosbuild vm --secure-boot` and the
tests; each machine gets its own writable copy.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import tools
from ..builds import artifact
from ..errors import CosbuildError
from ..fsutil import atomic_path
from ..tools import TaskLog
from ..tree import spec

FIRMWARE = Path("/usr/share/OVMF")
CODE = FIRMWARE / "OVMF_CODE_4M.fd"                # enforces Secure Boot when VARS enable it
MICROSOFT_VARS = FIRMWARE / "OVMF_VARS_4M.ms.fd"   # Secure Boot on, Microsoft's keys
EMPTY_VARS = FIRMWARE / "OVMF_VARS_4M.fd"          # no keys: where our own are enrolled
# the db entry's owner: edk2's, as its own enrollment tool writes it
OWNER = "a0baa8a3-041d-48a8-bc87-c36d121b5e3d"


def _file(what: str) -> spec.Type:
    """A file's path as written: relative to the YAML file's folder, or absolute (keys are
    often kept outside the project)."""
    def parse(value, where: spec.Where) -> str:
        text = spec.STR.parse(value, where)
        if not text or "\0" in text:
            raise where.error(f"{text[:80]!r} is not a path", hint=f"the {what}'s PEM file")
        return text
    return spec.Type(f"path of the {what} (PEM)", parse)


KEYWORDS = (
    spec.Keyword("key", _file("private key"), None,
                 "the derivative's private key (PEM, not encrypted)", required=True),
    spec.Keyword("cert", _file("certificate"), None,
                 "its X.509 certificate (PEM): what a machine enrolls in its db", required=True),
)
SECURE_BOOT = spec.nested(KEYWORDS, "secure_boot")


def doc(shim: str) -> str:
    """The keyword's help in iso.yaml or disk.yaml, whose `shim` it signs."""
    return (f"{{key, cert}}: also sign {shim} with the derivative's own key (paths relative "
            "to this file's folder, or absolute); without it, Microsoft's signature only "
            "(docs/disks.md, \"Secure Boot\")")


@dataclass(frozen=True)
class Keys:
    key: Path
    cert: Path

    def files(self) -> list[str]:
        return [str(self.key), str(self.cert)]


def keys(value: dict | None, spec_file: Path, line: int | None) -> Keys | None:
    """The keys `secure_boot:` of `spec_file` names, which must be files."""
    if value is None:
        return None
    found = {}
    for name in ("key", "cert"):
        path = spec_file.parent / value[name]
        if not path.is_file():
            raise spec.Where(str(spec_file), line, f"secure_boot.{name}").error(
                f"{path} is not a file", hint="the path of a PEM file, relative to this file's "
                "folder or absolute (openssl req -x509 -newkey rsa:2048 -nodes makes a pair)")
        found[name] = path
    return Keys(**found)


def sign(efi: Path, keys: Keys, log: TaskLog, what: str = "") -> None:
    """Add the derivative's signature to the EFI binary `efi`, in place."""
    # the signature's signingTime: a stopped clock (no "@"), in UTC
    clock = datetime.fromtimestamp(artifact.source_date_epoch(), timezone.utc)
    with atomic_path(efi) as tmp:
        tmp.unlink()
        # no terminal to ask a passphrase on: an encrypted key fails, it does not wait
        tools.run(["faketime", "-f", clock.strftime("%Y-%m-%d %H:%M:%S"),
                   tools.require("sbsign"), "--key", str(keys.key), "--cert", str(keys.cert),
                   "--output", str(tmp), str(efi)], log=log, input="",
                  env={**os.environ, "TZ": "UTC"},
                  what=f"sign {what or efi.name} with {keys.key}")


def make_vars(dest: Path, cert: Path | None, log: TaskLog) -> Path:
    """An OVMF variable store with Secure Boot on: only `cert` enrolled (PK, KEK, db), or
    Microsoft's keys without one."""
    for firmware in (CODE, MICROSOFT_VARS, EMPTY_VARS):
        if not firmware.is_file():
            raise CosbuildError(f"{firmware} is not installed", hint=tools.install_hint(str(firmware)))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        if cert is None:
            shutil.copyfile(MICROSOFT_VARS, tmp)
        else:
            # virt-firmware's own program, from the Python that runs cosbuild
            tools.run([sys.executable, "-m", "virt.firmware.vars", "-i", str(EMPTY_VARS),
                       "-o", str(tmp), "--enroll-cert", str(cert), "--add-db", OWNER, str(cert),
                       "--no-microsoft", "--microsoft-kek", "none", "--secure-boot"], log=log,
                      what=f"enroll {cert} in a Secure Boot variable store")
    return dest
