"""The architectures cosbuild builds for, declared once: the `arch` setting's choices and
what each one means to the tools (Debian, buildah/OCI and the kernel use the same names for
these two; the ELF and QEMU names differ).

A build for another architecture than the host's runs the target's programs (mmdebstrap's
package scripts, a package's steps) through qemu-user, which the kernel starts by itself
once binfmt_misc has it registered with the F flag (the interpreter opened at registration,
so that it works inside the build's chroot too). `require_runnable` checks that before the
first task starts.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import CosbuildError


@dataclass(frozen=True)
class Arch:
    name: str         # Debian's, OCI's and values.arch: amd64, arm64
    machine: str      # the kernel's (uname -m) and qemu's: x86_64, aarch64 (luet-makeiso's too)
    efi: str          # UEFI's name in file names: BOOTX64.EFI, shim's grubaa64.efi
    bios: bool        # PC BIOS boot (ISOLINUX, GRUB's i386-pc core) exists

    @property
    def efi_binary(self) -> str:
        """The boot loader UEFI firmware starts from a removable medium or a disk."""
        return f"EFI/BOOT/BOOT{self.efi.upper()}.EFI"


ARCHES = {a.name: a for a in (Arch("amd64", "x86_64", "x64", True),
                              Arch("arm64", "aarch64", "aa64", False))}
# the architecture cosbuild built before it had a setting: its build hashes and build folder
# stay what they were, so that existing caches and artifacts stay valid
ORIGINAL = "amd64"
BINFMT = Path("/proc/sys/fs/binfmt_misc")


def host() -> str:
    """The host's architecture by its Debian name (another machine's name as it is)."""
    machine = platform.machine()
    return next((a.name for a in ARCHES.values() if a.machine == machine), machine)


def get(name: str) -> Arch:
    if name not in ARCHES:
        raise CosbuildError(f"unknown architecture '{name}' for --arch / COSBUILD_ARCH",
                            hint=f"one of: {', '.join(ARCHES)}")
    return ARCHES[name]


def named(name: str) -> Arch | None:
    """The architecture by its Debian or its kernel's name (iso.yaml's `arch: x86_64`)."""
    return next((a for a in ARCHES.values() if name in (a.name, a.machine)), None)


def require_runnable(name: str, binfmt: Path = BINFMT) -> None:
    """The host runs programs of the architecture `name`: its own, or through qemu-user
    registered in binfmt_misc with the F flag; else one error saying how to set it up."""
    if name == host():
        return
    machine = get(name).machine
    entry = binfmt / f"qemu-{machine}"
    setup = "run `scripts/install-deps` as root (qemu-user-static, binfmt-support)"
    if not (binfmt / "status").is_file():
        raise CosbuildError(f"cannot build for {name} on this {host()} host: binfmt_misc is "
                            f"not mounted at {binfmt}", hint=setup)
    try:
        lines = entry.read_text().splitlines()
    except OSError:
        raise CosbuildError(f"cannot build for {name} on this {host()} host: no qemu-user "
                            f"interpreter for {machine} is registered ({entry})",
                            hint=setup) from None
    flags = next((line.split(":", 1)[1].strip() for line in lines
                  if line.startswith("flags:")), "")
    wrong = ("is not enabled" if lines[:1] != ["enabled"] else
             "is registered without the F flag, which builds in a chroot need"
             if "F" not in flags else "")
    if wrong:
        raise CosbuildError(f"cannot build for {name} on this {host()} host: {entry} {wrong}",
                            hint=setup)


def main(argv: list[str]) -> int:
    """For scripts/install-deps (standard library only): `foreign` prints the qemu names of
    the architectures other than the host's; `check` warns of those the host cannot run."""
    foreign = [a for a in ARCHES.values() if a.name != host()]
    if argv == ["foreign"]:
        print("\n".join(a.machine for a in foreign))
        return 0
    if argv == ["check"]:
        for a in foreign:
            try:
                require_runnable(a.name)
            except CosbuildError as exc:
                print(f"warning: {exc.message}; builds for {a.name} will fail", file=sys.stderr)
        return 0
    print("usage: python3 -m cosbuild.arches foreign|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
