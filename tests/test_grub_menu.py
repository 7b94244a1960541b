"""The installed disk's boot menu, run by GRUB itself: system/grub2-efi's embedded.cfg (BIOS)
or esp.cfg (EFI) and grub.cfg, unchanged, in grub-emu against a small disk laid out as cOS's (COS_STATE with
active.img and passive.img, COS_RECOVERY with recovery.img). Which entry boots when images
are broken, and with which kernel arguments: the menu's logic, in a second a case. The QEMU
boots prove that each image boots (tests/test_disk_boot.py; its fallback reboots run in
`make test-all`)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cosbuild.images import grubenv, layout
from cosbuild.runtime import assessment

REPO = Path(__file__).resolve().parent.parent
MENU = REPO / "tree/system/grub2-efi/files"
GRUB_EMU_MODULES = Path("/usr/lib/grub/x86_64-emu")

# Debian's grub-emu has no kernel loader and no serial terminal. GRUB calls a script function
# only when no command has its name, so these stand in for the missing ones and leave the
# menu's own commands alone: `linux` fails as the real one does when the image's file system
# cannot be read, and `initrd`, each entry's last command, reports the boot and stops GRUB.
HARNESS = """\
function serial { true; }
function linux {
  unset harness_kernel
  if [ -f "$1" ]; then
    set harness_kernel="$1"
    echo "HARNESS-LINUX $*"
  fi
}
function initrd {
  if [ -n "$harness_kernel" -a -f "$1" ]; then
    echo "HARNESS-BOOT entry=$chosen"
    cat $harness_kernel
    halt
  fi
}
{way}
"""
# how each firmware's GRUB reaches the menu: the BIOS core's embedded configuration, then
# normal mode's $prefix/grub.cfg; the signed EFI GRUB's /EFI/debian/grub.cfg (esp.cfg), which
# goes on to the menu itself
WAYS = {"bios": f"source {MENU / 'embedded.cfg'}\nsource $prefix/grub.cfg",
        "efi": f"source {MENU / 'esp.cfg'}",
        # arm64's signed GRUB: the same way, its own CPU (and serial console)
        "efi-arm64": f"set grub_cpu=arm64\nsource {MENU / 'esp.cfg'}"}


def mkfs(folder: Path, image: Path, label: str, size: str, fs: str) -> None:
    """An ext file system made from `folder` without mounting."""
    subprocess.run(["mke2fs", "-q", "-F", "-t", fs, "-L", label, "-d", str(folder), str(image),
                    size], check=True)


STATE_OFFSET = 2048 * 512   # COS_STATE's place on the test disk


def cos_disk(work: Path, broken: set[str], env: dict[str, str] | None = None) -> Path:
    """A GPT disk with COS_STATE (the menu, its boot assessment file holding `env`,
    active.img, passive.img) and COS_RECOVERY (recovery.img); each image holds a kernel
    naming it, and the broken ones have their superblock zeroed, as the QEMU cycle breaks
    them."""
    state, recovery = work / "state", work / "recovery"
    (state / "grub2").mkdir(parents=True)
    shutil.copy(MENU / "grub.cfg", state / "grub2/grub.cfg")
    layout.write_assessment(state, layout.DEFAULT_BOOT_TRIES)
    if env is not None:
        grubenv.write(state / layout.ASSESSMENT_FILE, env)
    for name, part in (("active", state), ("passive", state), ("recovery", recovery)):
        content = work / f"content-{name}/boot"
        content.mkdir(parents=True)
        (content / "vmlinuz").write_text(f"kernel-of-{name}\n")
        (content / "initrd").write_text("initrd\n")
        image = part / "cOS" / f"{name}.img"
        image.parent.mkdir(parents=True, exist_ok=True)
        mkfs(content.parent, image, f"IMG_{name}", "1M", "ext2")
        if name in broken:
            with image.open("r+b") as f:
                f.seek(1024)
                f.write(bytes(4096))
    disk = work / "disk.img"
    with disk.open("wb") as f:
        f.truncate(20 * 2**20)
    subprocess.run(["sfdisk", "-q", str(disk)], check=True, text=True, input=(
        "label: gpt\nstart=2048, size=16384, name=state\nstart=18432, size=16384, name=recovery\n"))
    for folder, label, sector in ((state, "COS_STATE", 2048), (recovery, "COS_RECOVERY", 18432)):
        part = work / f"{label}.img"
        mkfs(folder, part, label, "8M", "ext4")
        with disk.open("r+b") as f:
            f.seek(sector * 512)
            f.write(part.read_bytes())
    return disk


def boot_menu(work: Path, broken: set[str], env: dict[str, str] | None = None,
              way: str = "bios") -> str:
    """grub-emu's console output of one boot of a new disk."""
    return boot(work, cos_disk(work, broken, env), way)


def boot(work: Path, disk: Path, way: str = "bios") -> str:
    """grub-emu's console output of one boot of `disk`, escape sequences removed. faketime
    runs GRUB's clock 50 times faster (the menu's timeout, the pause before each fallback)."""
    (work / "device.map").write_text(f"(hd0) {disk}\n")
    prefix = work / "grub"
    if not prefix.exists():
        prefix.mkdir()
        (prefix / "x86_64-emu").symlink_to(GRUB_EMU_MODULES)
        (prefix / "grub.cfg").write_text(HARNESS.replace("{way}", WAYS[way]))
    log = work / "grub.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["faketime", "-f", "+0 x50", "grub-emu", "-m",
                                 str(work / "device.map"), "-d", str(prefix)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        # GRUB stops at `halt`; when no entry boots it shows its menu again and waits
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if b"Failed to boot both default and fallback" in log.read_bytes():
                break
            time.sleep(0.05)
    finally:   # faketime runs GRUB as its child: stop them both
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]|\r", "", log.read_text(errors="replace"))


@pytest.fixture(autouse=True)
def _grub_emu():
    missing = [p for p in (GRUB_EMU_MODULES, Path("/usr/bin/grub-emu")) if not p.exists()]
    assert not missing, f"{missing[0]} is missing: apt-get install grub-emu (make deps does)"


@pytest.mark.parametrize("broken, entry, args", [
    (set(), "active", "root=LABEL=COS_STATE cos-img/filename=/cOS/active.img"),
    ({"active"}, "passive", "root=LABEL=COS_STATE cos-img/filename=/cOS/passive.img"),
    ({"active", "passive"}, "recovery",
     "root=LABEL=COS_RECOVERY cos-img/filename=/cOS/recovery.img"),
], ids=["all-good", "active-broken", "active-and-passive-broken"])
@pytest.mark.parametrize("way", WAYS)
def test_the_menu_boots_the_first_image_it_can_read(tmp_path, broken, entry, args, way):
    out = boot_menu(tmp_path, broken, way=way)
    assert f"HARNESS-BOOT entry={entry}" in out, out
    assert f"kernel-of-{entry}" in out, out          # the kernel of that image was read
    # the kernel line GRUB ran last (its terminal wraps it at a space)
    booted = " ".join(out[out.rindex("HARNESS-LINUX"):out.index("HARNESS-BOOT")].split())
    console = "ttyAMA0,115200" if way == "efi-arm64" else "ttyS0,115200"
    assert f"/boot/vmlinuz {args} console=tty1 console={console}" in booted, booted
    assert ("cos.recovery" in booted) == (entry == "recovery"), booted


def test_with_every_image_broken_nothing_boots(tmp_path):
    out = boot_menu(tmp_path, {"active", "passive", "recovery"})
    assert "HARNESS-BOOT" not in out and "Failed to boot both default and fallback" in out, out


# --------------------------------------------------------------------------- boot assessment

def read_env(disk: Path) -> dict[str, str]:
    """COS_STATE's boot assessment file, as GRUB left it on the disk."""
    out = subprocess.run(["debugfs", "-R", f"cat /{layout.ASSESSMENT_FILE}",
                          f"{disk}?offset={STATE_OFFSET}"], capture_output=True, check=True)
    return grubenv.parse(out.stdout, disk)


def write_env(disk: Path, env: dict[str, str], work: Path) -> None:
    """What the running system writes (assessment.py, through the mounted partition)."""
    new = work / "new-env"
    new.write_bytes(grubenv.block(env))
    where = f"{disk}?offset={STATE_OFFSET}"
    for request in (f"rm /{layout.ASSESSMENT_FILE}", f"write {new} /{layout.ASSESSMENT_FILE}"):
        subprocess.run(["debugfs", "-w", "-R", request, where], capture_output=True, check=True)


def booted(out: str) -> tuple[str, str]:
    """(the entry GRUB booted, the kernel line it ran)."""
    assert "HARNESS-BOOT" in out, out
    entry = out[out.rindex("HARNESS-BOOT entry="):].split()[1].split("=")[1]
    line = " ".join(out[out.rindex("HARNESS-LINUX"):out.rindex("HARNESS-BOOT")].split())
    return entry, line


TRY_ARGS = "panic=5 rd.shell=0 rd.emergency=reboot systemd.crash_reboot=1 systemd.crash_shell=0"


def test_a_new_image_has_three_tries_then_passive_has_three_then_recovery(tmp_path):
    """As after an upgrade: each boot counts the image it boots down, with the arguments
    that make a failed try reboot; nothing ever marks a boot good here."""
    env = assessment.after_upgrade({"boot_tries": "3"})
    disk = cos_disk(tmp_path, set(), env)
    seen = []
    for _ in range(8):
        entry, line = booted(boot(tmp_path, disk))
        now = read_env(disk)
        seen.append((entry, now["active_tries"], now["passive_tries"], TRY_ARGS in line))
    assert seen == [("active", "2", "3", True), ("active", "1", "3", True),
                    ("active", "0", "3", True),
                    ("passive", "0", "2", True), ("passive", "0", "1", True),
                    ("passive", "0", "0", True),
                    ("recovery", "0", "0", False), ("recovery", "0", "0", False)]
    assert assessment.rollback(now, "recovery.img") == (
        "active.img failed its boot assessment (3 tries) and so did passive.img (3 tries): "
        "running recovery.img")


def test_success_clears_the_counter_and_the_image_boots_uncounted(tmp_path):
    env = assessment.after_upgrade({"boot_tries": "3"})
    disk = cos_disk(tmp_path, set(), env)
    assert booted(boot(tmp_path, disk))[0] == "active"
    assert assessment.assessing(read_env(disk), "active.img")
    write_env(disk, assessment.mark_good(read_env(disk), "active.img"), tmp_path)
    for _ in range(2):
        entry, line = booted(boot(tmp_path, disk))
        assert entry == "active" and TRY_ARGS not in line, line
    assert read_env(disk) == {"boot_tries": "3", "active_tries": "", "passive_tries": "3",
                              "assessed": "good:active.img"}


def test_after_a_rollback_the_good_passive_boots_uncounted(tmp_path):
    """passive.img passed after active.img used its tries: it runs, uncounted, until the
    next upgrade (which replaces active.img and counts both anew)."""
    env = {"boot_tries": "2", "active_tries": "1", "passive_tries": "2"}
    disk = cos_disk(tmp_path, set(), env)
    assert booted(boot(tmp_path, disk))[0] == "active"
    assert booted(boot(tmp_path, disk))[0] == "passive"
    now = read_env(disk)
    assert now["active_tries"] == "0" and now["passive_tries"] == "1"
    assert assessment.rollback(now, "passive.img") == \
        "active.img failed its boot assessment (2 tries): running passive.img"
    write_env(disk, assessment.mark_good(now, "passive.img"), tmp_path)
    for _ in range(2):
        entry, line = booted(boot(tmp_path, disk))
        assert entry == "passive" and TRY_ARGS not in line
    write_env(disk, assessment.after_upgrade(read_env(disk)), tmp_path)
    assert booted(boot(tmp_path, disk))[0] == "active"
    assert read_env(disk)["active_tries"] == "1"


@pytest.mark.parametrize("env, entry", [
    ({"boot_tries": "3"}, "active"),                                    # installed, nothing new
    ({"active_tries": "", "passive_tries": "0"}, "active"),            # active passed
    ({"active_tries": "9", "passive_tries": "9"}, "active"),
    ({"active_tries": "x", "passive_tries": ""}, "passive"),           # not a count: used up
    ({"active_tries": "0", "passive_tries": "junk"}, "recovery"),
], ids=["fresh", "active-good", "nine-tries", "garbage", "both-used"])
def test_each_counter_value(tmp_path, env, entry):
    assert booted(boot_menu(tmp_path, set(), env))[0] == entry


def test_a_counted_image_that_cannot_be_read_falls_back_as_before(tmp_path):
    """GRUB's own fallback still works under counting: an unreadable active image."""
    out = boot_menu(tmp_path, {"active"}, assessment.after_upgrade({"boot_tries": "3"}))
    assert booted(out)[0] == "passive"
