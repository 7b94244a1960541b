"""Every external program cosbuild and its tests run, with the Debian package that has it.

Declared once: `scripts/install-deps` installs the missing packages from this table
(`python3 -m cosbuild.programs missing`), `tools` names the package when a program is not
installed, and a test checks that every program the code, tests and benchmarks invoke is
listed here. Standard library only: install-deps runs it before the virtualenv exists.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Program:
    name: str          # a command on PATH, or an absolute path for a file that must exist
    package: str       # the Debian 12 package that provides it
    needed_by: str     # which command (or tests) runs it, for messages and the README
    host: bool = True  # False: runs only inside the built OS, whose own packages provide it
    # Debian packages of the libraries the program needs for its job here (go builds the
    # Helm reference renderer of the tests from Debian's Go library sources)
    libraries: tuple[str, ...] = ()

    def resolves(self) -> bool:
        if self.name.startswith("/"):
            return os.path.exists(self.name)
        return shutil.which(self.name) is not None

    def missing_libraries(self) -> list[str]:
        return [package for package in self.libraries if not package_installed(package)]


def package_installed(package: str) -> bool:
    """Whether dpkg has the package (its file list, with or without an architecture)."""
    info = "/var/lib/dpkg/info"
    return (os.path.exists(f"{info}/{package}.list")
            or any(name.startswith(f"{package}:") and name.endswith(".list")
                   for name in (os.listdir(info) if os.path.isdir(info) else ())))


PROGRAMS = (
    # building packages
    Program("buildah", "buildah", "doit build (container builds)"),
    Program("mmdebstrap", "mmdebstrap", "doit build (bootstrap images)"),
    # building for another architecture than the host's (cosbuild/arches.py)
    Program("qemu-aarch64-static", "qemu-user-static", "doit build --arch arm64 on an amd64 "
            "host (its programs run through qemu-user), arm64 build tests"),
    Program("update-binfmts", "binfmt-support", "scripts/install-deps (qemu-user registered "
            "in binfmt_misc)"),
    Program("arch-test", "arch-test", "doit build --arch (mmdebstrap for another "
            "architecture)"),
    Program("cp", "coreutils", "cosbuild unpack, doit disk"),
    # also inside the OS: cos-upgrade installs packages with the repository client
    Program("bwrap", "bubblewrap", "repository finalizers, cos-setup --root (commands)"),
    # live ISO
    Program("tar2sqfs", "squashfs-tools-ng", "doit iso (rootfs.squashfs)"),
    Program("mkfs.vfat", "dosfstools", "doit iso, doit disk (EFI file systems)"),
    Program("mcopy", "mtools", "doit iso, doit disk (EFI file systems)"),
    # disks and upgrades
    Program("mke2fs", "e2fsprogs", "doit image, doit disk, cos-upgrade"),
    Program("tune2fs", "e2fsprogs", "cos-upgrade"),
    Program("debugfs", "e2fsprogs", "cos-upgrade, disk tests"),
    Program("sfdisk", "fdisk", "doit disk, cos-installer"),
    Program("qemu-img", "qemu-utils", "doit disk (qcow2, vmdk, vhdx, OVA, Vagrant boxes), "
            "cosbuild vm (the disk's overlay)"),
    Program("qemu-system-x86_64", "qemu-system-x86", "cosbuild vm, boot tests"),
    Program("/usr/share/ovmf/OVMF.fd", "ovmf", "cosbuild vm --uefi, UEFI boot tests"),
    Program("qemu-system-aarch64", "qemu-system-arm", "cosbuild vm --arch arm64, the arm64 "
            "boot test"),
    Program("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd", "qemu-efi-aarch64", "cosbuild vm "
            "--arch arm64 (UEFI firmware), the arm64 boot test"),
    Program("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf", "cosbuild vm --secure-boot, Secure Boot "
            "tests (the firmware that enforces it)"),
    Program("/usr/share/OVMF/OVMF_VARS_4M.ms.fd", "ovmf", "cosbuild vm --secure-boot "
            "(Microsoft's keys enrolled)"),
    Program("/usr/share/OVMF/OVMF_VARS_4M.fd", "ovmf", "cosbuild vm --secure-boot (the "
            "derivative's certificate enrolled)"),
    Program("sbsign", "sbsigntool", "doit iso, doit disk (secure_boot: shim signed with the "
            "derivative's key)"),
    Program("faketime", "faketime", "doit iso, doit disk (sbsign's clock stopped at "
            "SOURCE_DATE_EPOCH), signed repository tests (metadata served after expiry), boot "
            "menu tests (GRUB's clock sped up)"),
    Program("mount", "mount", "cos-upgrade, cos-installer, ISO tests"),
    Program("umount", "mount", "cos-upgrade, cos-installer, ISO tests"),
    Program("udevadm", "udev", "cos-installer", host=False),
    # cos-setup inside the OS
    Program("sh", "dash", "cos-setup (step commands)"),
    Program("modprobe", "kmod", "cos-setup (modules)", host=False),
    Program("systemctl", "systemd", "cos-setup (systemctl), cos-boot-assessment (reboot)",
            host=False),
    Program("systemd-firstboot", "systemd", "cos-setup (systemd_firstboot)", host=False),
    Program("useradd", "passwd", "cos-setup (users)"),
    Program("usermod", "passwd", "cos-setup (users)"),
    # tests
    Program("docker-registry", "docker-registry", "shared build cache tests"),
    Program("sqfs2tar", "squashfs-tools-ng", "ISO tests"),
    Program("mdir", "mtools", "ISO and disk tests"),
    Program("dumpe2fs", "e2fsprogs", "disk tests"),
    Program("sha256sum", "coreutils", "build tests"),
    Program("ldd", "libc-bin", "finalizer tests (a small root of the host's programs)"),
    Program("chroot", "coreutils", "finalizer tests (the escape a bare chroot allows)"),
    Program("sleep", "coreutils", "finalizer tests (a host process)"),
    Program("setpriv", "util-linux", "bad-input tests (an unwritable build folder, as nobody)"),
    Program("vagrant", "vagrant", "Vagrant box tests (vagrant box add, no VM)"),
    Program("grub-emu", "grub-emu", "boot menu tests (the disk's GRUB menu run without a VM)"),
    Program("sbverify", "sbsigntool", "Secure Boot tests (the signatures of a signed shim)"),
    Program("/usr/lib/shim/shimx64.efi", "shim-unsigned", "Secure Boot tests (an unsigned boot "
            "loader, which the firmware refuses, and one to sign)"),
    Program("openssl", "openssl", "Secure Boot tests (a key and certificate of a derivative)"),
    Program("grub-mkimage", "grub-common", "BIOS boot tests (a GRUB core that says it ran)"),
    Program("grub-editenv", "grub-common", "boot assessment tests (GRUB's own reader of the "
            "environment block cosbuild writes)"),
    Program("systemd-analyze", "systemd", "disk tests (the system's boot has no ordering "
            "cycle)"),
    Program("/usr/lib/grub/i386-pc/boot.img", "grub-pc-bin", "BIOS boot tests (the MBR code)"),
    Program("go", "golang-go", "Helm differential tests (tests/helmref), finalizer tests",
            libraries=("golang-github-masterminds-sprig-dev", "golang-github-imdario-mergo-dev",
                       "golang-github-ghodss-yaml-dev", "golang-gopkg-yaml.v2-dev")),
    # benchmark baselines
    Program("mksquashfs", "squashfs-tools", "bench/iso_tools.py"),
    Program("xorriso", "xorriso", "bench/iso_tools.py"),
    Program("mkfs.ext2", "e2fsprogs", "bench/disk_image.py"),
    Program("du", "coreutils", "bench/disk_image.py"),
    Program("sync", "coreutils", "bench/disk_image.py"),
    Program("time", "time", "bench/iso_tools.py"),
    Program("git", "git", "bench/ci_budget.py (fresh clones)"),
    Program("lb", "live-build", "bench/loop.py (a Debian live ISO rebuilt after an edit)"),
)

BY_NAME = {os.path.basename(p.name): p for p in PROGRAMS}


def install_hint(name: str) -> str:
    """How to get `name` on Debian, for a "not installed" message."""
    program = BY_NAME.get(os.path.basename(name))
    if program is None:
        return f"install the package that provides {name}"
    return (f"needed by {program.needed_by}; install it: apt-get install {program.package} "
            f"(or run `make deps`)")


def missing_packages() -> list[str]:
    """The Debian packages of the host programs that do not resolve here, and of the
    libraries they need that are not installed."""
    return sorted({p.package for p in PROGRAMS if p.host and not p.resolves()}
                  | {lib for p in PROGRAMS if p.host for lib in p.missing_libraries()})


def main(argv: list[str]) -> int:
    if argv == ["missing"]:     # install-deps: the packages to install, one a line
        for package in missing_packages():
            print(package)
        return 0
    if argv == ["check"]:       # every host program resolves
        unresolved = [p for p in PROGRAMS if p.host and not p.resolves()]
        for p in unresolved:
            print(f"{p.name}: not found (package {p.package}, needed by {p.needed_by})",
                  file=sys.stderr)
        libraries = [(p, lib) for p in PROGRAMS if p.host for lib in p.missing_libraries()]
        for p, lib in libraries:
            print(f"{lib}: not installed (a library {p.name} needs for {p.needed_by})",
                  file=sys.stderr)
        return 1 if unresolved or libraries else 0
    print("usage: python3 -m cosbuild.programs missing|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
