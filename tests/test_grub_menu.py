"""The installed disk's boot menu, run by GRUB itself: system/grub2-efi's embedded.cfg and
grub.cfg, unchanged, in grub-emu against a small disk laid out as cOS's (COS_STATE with
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
source {embedded}
source $prefix/grub.cfg
"""


def mkfs(folder: Path, image: Path, label: str, size: str, fs: str) -> None:
    """An ext file system made from `folder` without mounting."""
    subprocess.run(["mke2fs", "-q", "-F", "-t", fs, "-L", label, "-d", str(folder), str(image),
                    size], check=True)


def cos_disk(work: Path, broken: set[str]) -> Path:
    """A GPT disk with COS_STATE (the menu, active.img, passive.img) and COS_RECOVERY
    (recovery.img); each image holds a kernel naming it, and the broken ones have their
    superblock zeroed, as the QEMU cycle breaks them."""
    state, recovery = work / "state", work / "recovery"
    (state / "grub2").mkdir(parents=True)
    shutil.copy(MENU / "grub.cfg", state / "grub2/grub.cfg")
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


def boot_menu(work: Path, broken: set[str]) -> str:
    """grub-emu's console output, escape sequences removed. faketime runs GRUB's clock 50
    times faster (the menu's timeout, the pause before each fallback)."""
    disk = cos_disk(work, broken)
    (work / "device.map").write_text(f"(hd0) {disk}\n")
    prefix = work / "grub"
    prefix.mkdir()
    (prefix / "x86_64-emu").symlink_to(GRUB_EMU_MODULES)
    (prefix / "grub.cfg").write_text(HARNESS.replace("{embedded}", str(MENU / "embedded.cfg")))
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
def test_the_menu_boots_the_first_image_it_can_read(tmp_path, broken, entry, args):
    out = boot_menu(tmp_path, broken)
    assert f"HARNESS-BOOT entry={entry}" in out, out
    assert f"kernel-of-{entry}" in out, out          # the kernel of that image was read
    # the kernel line GRUB ran last (its terminal wraps it at a space)
    booted = " ".join(out[out.rindex("HARNESS-LINUX"):out.index("HARNESS-BOOT")].split())
    assert f"/boot/vmlinuz {args} console=tty1 console=ttyS0,115200" in booted, booted
    assert ("cos.recovery" in booted) == (entry == "recovery"), booted


def test_with_every_image_broken_nothing_boots(tmp_path):
    out = boot_menu(tmp_path, {"active", "passive", "recovery"})
    assert "HARNESS-BOOT" not in out and "Failed to boot both default and fallback" in out, out
