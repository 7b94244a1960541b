"""The installed disk in QEMU (its files are checked by tests/test_disk_artifacts.py): boot
the qcow2 with Secure Boot enforced, upgrade from a newer signed repository (and fail
cleanly on a bad, tampered or unsigned one), reboot into the new system; cos-installer from
the live ISO booted from a CD under UEFI with Secure Boot enforced. The long cycle (`make test-all`): upgrade the recovery image from a
container image, fall back to the passive image when active.img is broken and to recovery
when both are; and the boot assessment's rollbacks: after a failed health check, after an
early kernel panic, and to recovery when passive fails too. Without them, the container
image is unpacked on the host by cos-upgrade's own function, and the menu's fallback and
try counting run in grub-emu (tests/test_grub_menu.py). Integration: run by `make test`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from cosbuild.repos.serve import make_server
from cosbuild.runtime.upgrade import fill_from_image
from cosbuild.tools import TaskLog

from . import signing
from .conftest import copy_project, cosbuild_ok as cosbuild, running
from .qemu import VM, secure_boot_vars
from .test_iso_boot import check_booted

pytestmark = pytest.mark.integration

BOOT_TIMEOUT = 600      # TCG: 45 s to login here, 2-3 minutes on a slower machine
UPGRADE_TIMEOUT = 900   # download, decompress and unpack ~700 MB under TCG


# ----------------------------------------------------------------------------- in QEMU

def _boot(vm: VM, since: int = 0) -> int:
    at = vm.wait_for("login:", BOOT_TIMEOUT, since)
    vm.login("root", "sampleos")
    return at


def _booted(vm: VM) -> tuple[str, str]:
    """(the image the system runs from, its VERSION)."""
    image = vm.run("cat /run/cos/active_image").strip().splitlines()[-1]
    version = vm.run(". /etc/os-release; echo v=$VERSION").split("v=")[-1].split()[0]
    return image, version


def _reboot(vm: VM) -> None:
    since = len(vm.output)
    vm.send("reboot")
    vm.wait_for("login:", BOOT_TIMEOUT, since)
    vm.login("root", "sampleos")


def variant_repo(folder, version: str, step: str, after=None):
    """The sample with system/sampleOS `version` and one more build step, built and made a
    repository signed with the test keys, which the installed image trusts, in a copy of the
    project in `folder`; the unchanged packages come from the cache. Returns its build
    folder. `after`: an earlier variant's build folder that this one is the next version of,
    as one channel is over time: its signed metadata continue from that one's (a client
    that trusted that one refuses a repository whose metadata start again)."""
    root = copy_project(folder)
    if after is not None:
        (root / "build").mkdir()
        for path in [*after.glob("tuf-*.json"), after / "repository.yaml"]:
            shutil.copy(path, root / "build" / path.name)
    definition = root / "tree/system/sampleOS/definition.yaml"
    definition.write_text(definition.read_text().replace('version: "0.1.0"',
                                                         f'version: "{version}"'))
    build = root / "tree/system/sampleOS/build.yaml"
    build.write_text(build.read_text().replace("steps:\n", f"steps:\n  - {step}\n", 1))
    cosbuild(root, "run", "-n", "2", "-P", "thread", "build", "repo",
             env={**os.environ, "COSBUILD_SIGNING_KEYS": str(root / "keys")})
    assert (root / "build/tuf-timestamp.json").is_file()
    return root / "build"


@pytest.fixture(scope="module")
def upgrade_repo(sample, tmp_path_factory):
    """system/sampleOS 0.1.1: a version bump and a changed file."""
    return variant_repo(tmp_path_factory.mktemp("upgrade"), "0.1.1",
                        "echo 'upgraded' > /usr/share/sampleos-upgrade")


@pytest.fixture(scope="module")
def bad_repos(upgrade_repo, tmp_path_factory):
    """Copies of the signed repository that cos-upgrade must refuse, each with what its
    refusal says: one byte of the system artifact changed, repository.yaml edited, the
    signatures removed."""
    made = tmp_path_factory.mktemp("bad")
    return [
        (signing.flipped_byte(upgrade_repo, "sampleOS-system-0.1.1.package.tar.zst",
                              made / "tampered"), "package.tar.zst: refused (hash)"),
        (signing.edited_index(upgrade_repo, made / "edited"), "repository.yaml: refused ("),
        (signing.unsigned(upgrade_repo, made / "unsigned"), "refused (not signed)"),
    ]


@pytest.fixture(scope="module")
def upgrade_image(upgrade_repo, registry):
    """The 0.1.1 system as a container image in a registry: its build image, pushed."""
    graph = json.loads(cosbuild(upgrade_repo.parent, "graph", "--json").stdout)
    digest = next(p["hash"] for p in graph["packages"]
                  if p["id"] == "system/sampleOS" and p["version"] == "0.1.1")
    ref = f"{registry}/sampleos:0.1.1"
    subprocess.run(["buildah", "push", "--quiet", "--tls-verify=false",
                    f"localhost/luet/cache:{digest}", f"docker://{ref}"], check=True)
    return ref


def _use_repo(vm: VM, url: str) -> None:
    """Point the guest's upgrade channel at `url` (the host, as QEMU's user network sees it)."""
    guest_url = url.replace("127.0.0.1", "10.0.2.2")
    vm.run(f"sed -i 's|http://[^\"]*|{guest_url}|' /etc/luet/luet.yaml")


def _upgrade(vm: VM) -> tuple[str, str]:
    out = vm.run("cos-upgrade; echo rc=$?", UPGRADE_TIMEOUT)
    return out, out.split("rc=")[-1].split()[0]


def _break(vm: VM, image: str) -> None:
    """Zero the superblock of one of the state partition's images."""
    vm.run(f"mount -o remount,rw /run/cos/state && dd if=/dev/zero of=/run/cos/state/cOS/{image} "
           "bs=1024 seek=1 count=4 conv=notrunc && sync")


def _state(vm: VM) -> str:
    return vm.run("ls -i /run/cos/state/cOS/")


def _boot_disk(qcow2, tmp_path, uefi: bool = True, secure_vars=None, arch="amd64") -> VM:
    """The disk `qcow2` in a UEFI (or BIOS: SeaBIOS) machine of `arch`, started, not yet
    booted, through an overlay: the built qcow2 stays as it is. `secure_vars`: Secure Boot
    enforced, with this variable store."""
    boot = tmp_path / "boot.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(qcow2), str(boot)], check=True)
    return VM(None, uefi=uefi, boot_disk=boot, log=tmp_path / "console.log",
              secure_boot_vars=secure_vars, arch=arch)


def test_the_disk_boots_with_bios_too(disk, tmp_path):
    """SeaBIOS: MBR -> GRUB's core in COS_BIOS -> the menu on COS_STATE -> the active image,
    with the sample's service answering."""
    vm = _boot_disk(disk["qcow2"], tmp_path, uefi=False)
    try:
        _boot(vm)
        assert vm.http_get("/hello", 180) == b"hello"
        assert _booted(vm) == ("/cOS/active.img", "0.1.0")
        assert "firmware=bios" in vm.run("test -d /sys/firmware/efi && echo firmware=efi "
                                         "|| echo firmware=bios")
    finally:
        vm.stop()


def test_install_signed_upgrade_reboot_under_secure_boot(disk, upgrade_repo, bad_repos, tmp_path):
    """UEFI with Secure Boot enforced (Microsoft's keys): shim, Debian's signed GRUB and
    kernel boot the disk, and the upgraded system after the reboot."""
    vm = _boot_disk(disk["qcow2"], tmp_path,
                    secure_vars=secure_boot_vars(tmp_path / "firmware"))
    try:
        _boot(vm)
        assert vm.http_get("/hello", 180) == b"hello"
        assert _booted(vm) == ("/cOS/active.img", "0.1.0")
        vm.assert_secure_boot()
        # / is the read-only image; the layout's paths are writable overlays
        assert "Read-only file system" in vm.run("touch /usr/x")
        assert "rc=0" in vm.run("touch /etc/x; echo rc=$?")
        mounts = vm.run("cat /proc/mounts")
        assert all(f" {path} " in mounts for path in ("/run/cos/state", "/oem", "/usr/local"))
        before = _state(vm)

        # bad input: nothing is switched, the error says why
        with running(make_server(upgrade_repo)) as url:
            _use_repo(vm, url)
        out, rc = _upgrade(vm)   # the server is gone: unreachable
        assert rc == "1" and "nothing was switched" in out, out
        assert _state(vm) == before
        assert "trusted_root: /etc/cos/trusted-root.json" in vm.run("cat /etc/luet/luet.yaml")
        for repo, reason in bad_repos:   # the signature (TUF) catches each
            with running(make_server(repo)) as url:
                _use_repo(vm, url)
                out, rc = _upgrade(vm)
            assert rc == "1" and reason in out and "nothing was switched" in out, (repo, out)
            assert _state(vm) == before
        with running(make_server(upgrade_repo)) as url:
            _use_repo(vm, url)
            vm.run("mount -o remount,rw /run/cos/state && "
                   "fallocate -l $(( $(df --output=avail -B1 /run/cos/state | tail -1)"
                   " - 1073741824 )) /run/cos/state/fill && "
                   "mount -o remount,ro /run/cos/state")
            out, rc = _upgrade(vm)
            assert rc == "1" and "not enough space on COS_STATE" in out, out
            vm.run("mount -o remount,rw /run/cos/state && "
                   "rm /run/cos/state/fill && mount -o remount,ro /run/cos/state")
            assert _state(vm) == before

            # the upgrade: 0.1.1 becomes active, 0.1.0 passive
            out, rc = _upgrade(vm)
            assert rc == "0" and "active.img is now system/sampleOS 0.1.1" in out, out
            out, rc = _upgrade(vm)   # the next boot's image is the newest: nothing to do
            assert rc == "0" and "nothing to do" in out, out
        _reboot(vm)
        assert _booted(vm) == ("/cOS/active.img", "0.1.1")
        vm.assert_secure_boot()
        assert vm.run("cat /usr/share/sampleos-upgrade").strip().endswith("upgraded")
        passive = "/run/cos/state/cOS/passive.img"
        assert "COS_PASSIVE" in vm.run(f"dumpe2fs -h {passive} 2>/dev/null | grep name")
        assert 'VERSION="0.1.0"' in vm.run(f"debugfs -R 'cat /usr/lib/os-release' {passive}")
    finally:
        vm.stop()


def test_the_upgrade_image_unpacks_as_cos_upgrade_unpacks_it(upgrade_image, tmp_path):
    """What `cos-upgrade --container` writes into the new image, done on the host by the same
    function: the 0.1.1 system's layers, from the registry. The guest does it in
    test_recovery_from_a_container_image_then_fallback (make test-all)."""
    root = tmp_path / "root"
    root.mkdir()
    with TaskLog(tmp_path / "upgrade.log") as log:
        fill_from_image(root, upgrade_image, (upgrade_image.split("/")[0],), log)
    assert 'VERSION="0.1.1"' in (root / "usr/lib/os-release").read_text()
    assert (root / "usr/share/sampleos-upgrade").read_text().strip().endswith("upgraded")
    assert (root / "usr/bin/cos-upgrade").exists() and not (root / ".cos-upgrade-layers").exists()


@pytest.mark.boot_cycle
def test_recovery_from_a_container_image_then_fallback(disk, upgrade_image, tmp_path):
    """The recovery image upgraded from a container image in the guest; then a broken
    active image: GRUB cannot read it and boots the passive one; with both broken, the
    recovery image (the 0.1.1 image unpacked). Which entry GRUB picks is tested without
    booting in tests/test_grub_menu.py."""
    vm = _boot_disk(disk["qcow2"], tmp_path)
    try:
        _boot(vm)
        host = upgrade_image.split("/")[0].replace("127.0.0.1", "10.0.2.2")
        vm.run(f"echo INSECURE_REGISTRIES={host} >> /etc/cos-upgrade-image")
        upgrade = f"cos-upgrade --recovery --container --image {host}/sampleos:0.1.1"
        out = vm.run(f"{upgrade}; echo rc=$?")   # TUF verifies only the channel
        assert "rc=1" in out and "--no-verify" in out and "nothing was switched" in out, out
        out = vm.run(f"{upgrade} --no-verify; echo rc=$?", UPGRADE_TIMEOUT)
        assert "rc=0" in out and "recovery.img is now" in out, out
        recovery = vm.run("mount -o ro /dev/disk/by-label/COS_RECOVERY /mnt && debugfs -R "
                          "'cat /usr/lib/os-release' /mnt/cOS/recovery.img; umount /mnt")
        assert 'VERSION="0.1.1"' in recovery, recovery

        _break(vm, "active.img")
        _reboot(vm)
        assert _booted(vm) == ("/cOS/passive.img", "0.1.0")
        _break(vm, "passive.img")
        _reboot(vm)
        assert _booted(vm) == ("/cOS/recovery.img", "0.1.1")
        assert "recovery-mode" in vm.run("test -f /run/cos/recovery_mode && echo recovery-mode")
    finally:
        vm.stop()


def test_installer_from_the_live_cd_under_secure_boot_lays_out_a_disk_that_boots(iso, tmp_path):
    """The live ISO from a CD under UEFI with Secure Boot enforced (Microsoft's keys: shim,
    Debian's CD GRUB and kernel), checked as every live boot is, installs itself on a disk,
    which then boots with BIOS (the installer writes both firmwares' boot loaders; the same
    layout's UEFI boot is the built disk's)."""
    target = tmp_path / "target.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(target), "16G"], check=True)
    live = VM(iso, uefi=True, boot_disk=target, log=tmp_path / "live.log",
              secure_boot_vars=secure_boot_vars(tmp_path / "firmware"))
    try:
        check_booted(live)
        live.assert_secure_boot()
        assert "is not a block device" in live.run("cos-installer /dev/nothing")
        out = live.run("cos-installer /dev/vda; echo rc=$?", UPGRADE_TIMEOUT)
        assert "rc=0" in out and "/dev/vda is ready" in out, out
        live.send("poweroff")
        live.proc.wait(120)
    finally:
        live.stop()
    installed = VM(None, uefi=False, boot_disk=target, log=tmp_path / "installed.log")
    try:
        _boot(installed)
        assert _booted(installed) == ("/cOS/active.img", "0.1.0")
        assert "firmware=bios" in installed.run("test -d /sys/firmware/efi && echo firmware=efi "
                                                "|| echo firmware=bios")
        labels = installed.run("ls /dev/disk/by-label/")
        assert all(label in labels for label in
                   ("COS_GRUB", "COS_OEM", "COS_STATE", "COS_RECOVERY", "COS_PERSISTENT"))
    finally:
        installed.stop()


# ----------------------------------------------------------------------------- boot assessment
# (docs/runtime.md, "Boot assessment"; the counting itself runs in grub-emu, tests/test_grub_menu.py)

TRY_TIMEOUT = 300   # one counted try: GRUB, the kernel, and a failure that reboots


def _upgrade_from(vm: VM, repo) -> str:
    with running(make_server(repo)) as url:
        _use_repo(vm, url)
        out, rc = _upgrade(vm)
    assert rc == "0", out
    return out


def _tries(vm: VM, since: int, failure: str, image: str, count: int) -> int:
    """Wait for `count` counted boots of `image` that each end in `failure`; returns where
    the last one ended. A try's kernel line names the image and the arguments that make it
    reboot on any failure."""
    started = time.monotonic()
    for n in range(count):
        since = vm.wait_for(f"cos-img/filename=/cOS/{image}", TRY_TIMEOUT, since)
        line = vm.output[since:vm.output.find("\n", since)]
        assert "panic=5" in line and "rd.emergency=reboot" in line, line
        since = vm.wait_for(failure, TRY_TIMEOUT, since)
        print(f"{image}: try {n + 1} failed after {time.monotonic() - started:.0f} s")
    return since


def _assessment(vm: VM) -> dict[str, str]:
    """/run/cos/boot_assessment, once the boot is over (the checks and their verdict)."""
    out = vm.run("systemctl is-system-running --wait >/dev/null; cat /run/cos/boot_assessment",
                 240)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def unhealthy_repo(sample, tmp_path_factory):
    """system/sampleOS 0.2.0, whose own required health check fails."""
    return variant_repo(tmp_path_factory.mktemp("unhealthy"), "0.2.0",
                        "mkdir -p /etc/cos/health.d/required && printf '#!/bin/sh\\necho broken "
                        "on purpose\\nexit 1\\n' > /etc/cos/health.d/required/00-broken && "
                        "chmod 755 /etc/cos/health.d/required/00-broken")


@pytest.fixture(scope="module")
def healthy_repo(sample, unhealthy_repo, tmp_path_factory):
    """system/sampleOS 0.2.1: good again, the next version of the same channel."""
    return variant_repo(tmp_path_factory.mktemp("healthy"), "0.2.1",
                        "echo 'upgraded' > /usr/share/sampleos-upgrade", after=unhealthy_repo)


@pytest.fixture(scope="module")
def panicking_repo(sample, tmp_path_factory):
    """system/sampleOS 0.3.0, whose kernel panics early: its bootargs.cfg (which the menu
    sources from the image) names an init the initramfs does not have, so the kernel looks
    for the root itself and cannot find LABEL=COS_STATE."""
    return variant_repo(tmp_path_factory.mktemp("panicking"), "0.3.0",
                        "mkdir -p /etc/cos && echo 'set kernelcmd=\"console=tty1 "
                        "console=ttyS0,115200 rdinit=/nonexistent\"' > /etc/cos/bootargs.cfg")


@pytest.mark.boot_cycle
def test_boot_assessment_rollback_after_a_failed_health_check(disk, unhealthy_repo,
                                                              healthy_repo, tmp_path):
    """An upgrade whose required health check fails: three tries, each rebooting, then the
    previous image by itself; it says so, does not apply the same image again, and a good
    upgrade after it applies."""
    started = time.monotonic()
    vm = _boot_disk(disk["qcow2"], tmp_path)
    try:
        _boot(vm)
        assert _assessment(vm)["result"] == "good"   # an installed disk: nothing counted
        out = _upgrade_from(vm, unhealthy_repo)
        assert "active.img is now system/sampleOS 0.2.0" in out and "3 boots" in out, out
        since = len(vm.output)
        vm.send("reboot")
        since = _tries(vm, since, "rebooting in 10 s", "active.img", 3)
        assert "required/00-broken: FAILED (exit status 1: broken on purpose)" in vm.output
        for left in (2, 1, 0):
            assert f"active.img has {left} tries left; rebooting" in vm.output
        # the failed try's own login prompt may come in the 10 s before its reboot: wait
        # for the next boot's kernel line first
        since = vm.wait_for("cos-img/filename=/cOS/passive.img", TRY_TIMEOUT, since)
        _boot(vm, since)
        assert _booted(vm) == ("/cOS/passive.img", "0.1.0")
        assert vm.http_get("/hello", 180) == b"hello"
        found = _assessment(vm)
        assert found["rollback"] == \
            "active.img failed its boot assessment (3 tries): running passive.img", found
        assert found["result"] == "good", found
        status = vm.run("cos-upgrade status", 120)
        assert "active.img: system/sampleOS 0.2.0, 0 tries left (failed its boot assessment)" \
            in status, status
        assert "passive.img: system/sampleOS 0.1.0" in status and \
            "last assessment: good:passive.img" in status, status
        with running(make_server(unhealthy_repo)) as url:   # the same image: not again
            _use_repo(vm, url)
            out, rc = _upgrade(vm)
        assert rc == "0" and "which failed its boot assessment" in out, out
        out = _upgrade_from(vm, healthy_repo)
        assert "active.img is now system/sampleOS 0.2.1" in out and \
            "passive.img stays the previous system" in out, out
        _reboot(vm)
        assert _booted(vm) == ("/cOS/active.img", "0.2.1")
        assert vm.http_get("/hello", 180) == b"hello"
        assert _assessment(vm)["result"] == "good"
        status = vm.run("cos-upgrade status", 120)
        assert "last assessment: good:active.img" in status, status
        assert "passive.img: system/sampleOS 0.1.0" in status, status
    finally:
        vm.stop()
        print(f"health check rollback cycle: {time.monotonic() - started:.0f} s")


@pytest.mark.boot_cycle
def test_rollback_after_a_kernel_panic_then_recovery_when_passive_fails_too(
        disk, panicking_repo, tmp_path):
    """An upgrade whose kernel panics early: three quick tries, then the previous image.
    Then passive.img made the same broken image, counted: three tries of it, then recovery."""
    started = time.monotonic()
    vm = _boot_disk(disk["qcow2"], tmp_path)
    try:
        _boot(vm)
        out = _upgrade_from(vm, panicking_repo)
        assert "active.img is now system/sampleOS 0.3.0" in out, out
        since = len(vm.output)
        vm.send("reboot")
        since = _tries(vm, since, "Kernel panic", "active.img", 3)
        _boot(vm, since)
        assert _booted(vm) == ("/cOS/passive.img", "0.1.0")
        assert _assessment(vm)["rollback"] == \
            "active.img failed its boot assessment (3 tries): running passive.img"
        # passive.img becomes the broken image too (a new file: the running one stays
        # readable), counted as after an upgrade
        vm.run("mount -o remount,rw /run/cos/state && cd /run/cos/state/cOS && "
               "cp --sparse=always active.img passive.new && mv passive.new passive.img && "
               "python3 -c 'from pathlib import Path; from cosbuild.images import grubenv as g; "
               "p = Path(\"/run/cos/state/grub2/boot_assessment\"); "
               "g.write(p, {**g.read(p), \"passive_tries\": \"3\"})' && cd / && sync", 600)
        since = len(vm.output)
        vm.send("reboot -f")   # the running image's file is gone: no orderly unmount
        since = _tries(vm, since, "Kernel panic", "passive.img", 3)
        since = vm.wait_for("cos-img/filename=/cOS/recovery.img", TRY_TIMEOUT, since)
        _boot(vm, since)
        assert _booted(vm) == ("/cOS/recovery.img", "0.1.0")
        assert _assessment(vm)["rollback"] == (
            "active.img failed its boot assessment (3 tries) and so did passive.img (3 tries): "
            "running recovery.img")
    finally:
        vm.stop()
        print(f"kernel panic rollback cycle: {time.monotonic() - started:.0f} s")
