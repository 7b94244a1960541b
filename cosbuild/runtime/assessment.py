"""Boot assessment, inside an installed system: a new image has a few tries to prove itself,
and a system that fails them rolls back by itself (docs/runtime.md, "Boot assessment").

The state is GRUB's environment block on COS_STATE (layout.ASSESSMENT_FILE), which the
menu (system/grub2-efi's grub.cfg) and this module share:

- `boot_tries`: the tries a new image gets (disk.yaml `boot_tries`, cos-installer
  `--boot-tries`);
- `active_tries`, `passive_tries`: the tries an image has left. Empty: it is not being
  assessed (it passed, or nothing new was installed), and GRUB boots it without counting.
  An upgrade sets both to `boot_tries`. GRUB counts the active image's down before booting
  it; at 0 it boots passive, counting that one down; at 0 too, recovery;
- `assessed`: the last assessment, `good:IMAGE` or `failed:IMAGE:CHECK`.

At every boot `cos-boot-assessment check` (cos-health-check.service, before
boot-complete.target) runs the health checks: the executables of /etc/cos/health.d/required
must pass, those of wanted/ only warn. A failed required check, on a boot being assessed,
reboots after a short delay (GRUB then counts the next try). `cos-boot-assessment success`
(cos-boot-success.service, after boot-complete.target) clears the booted image's counter.
Both write what they found to /run/cos/boot_assessment, which says too when the system runs
passive.img because active.img used its tries: a rollback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import CosbuildError
from ..images import grubenv
from ..images.layout import ASSESSMENT_FILE, DEFAULT_BOOT_TRIES
from ..tools import TaskLog
from .partitions import partition

HEALTH_DIR = Path("/etc/cos/health.d")
REPORT = Path("/run/cos/boot_assessment")
CONSOLE = Path("/dev/console")   # failures and rollbacks are shown there too, not successes
BOOTED = Path("/run/cos/active_image")   # the initramfs writes the image it mounted
CHECK_SECONDS = 120      # each check's limit: a check that hangs is a failed one
REBOOT_DELAY = 10        # seconds to read the console before a failed try reboots
COUNTED = {"active.img": "active_tries", "passive.img": "passive_tries"}


# --------------------------------------------------------------------------- the rules

def boot_tries(env: dict[str, str]) -> int:
    text = env.get("boot_tries", "")
    return int(text) if text.isdigit() and 1 <= int(text) <= 9 else DEFAULT_BOOT_TRIES


def after_upgrade(env: dict[str, str]) -> dict[str, str]:
    """A new active image: it and the passive one (which GRUB boots when active uses its
    tries, and which may be broken too) are assessed anew."""
    tries = str(boot_tries(env))
    return {**env, "active_tries": tries, "passive_tries": tries}


def assessing(env: dict[str, str], image: str) -> bool:
    """Whether this boot of `image` is one of its counted tries."""
    return image in COUNTED and env.get(COUNTED[image], "") != ""


def active_failed(env: dict[str, str]) -> bool:
    """active.img used its tries: GRUB boots passive.img (or recovery) instead."""
    return env.get("active_tries") == "0"


def rollback(env: dict[str, str], image: str) -> str:
    """What the system says when it runs another image than the newest because that one
    failed; empty when it does not."""
    if active_failed(env) and image != "active.img":
        tries = boot_tries(env)
        why = f"active.img failed its boot assessment ({tries} tries)"
        if image == "recovery.img" and env.get("passive_tries") == "0":
            why += f" and so did passive.img ({tries} tries)"
        return f"{why}: running {image}"
    return ""


def mark_good(env: dict[str, str], image: str) -> dict[str, str]:
    out = {**env, "assessed": f"good:{image}"}
    if image in COUNTED:
        out[COUNTED[image]] = ""
    return out


def mark_failed(env: dict[str, str], image: str, check: str) -> dict[str, str]:
    return {**env, "assessed": f"failed:{image}:{check}"}


# --------------------------------------------------------------------------- health checks

@dataclass(frozen=True)
class Check:
    name: str          # required/NAME or wanted/NAME
    passed: bool
    output: str


def run_checks(folder: Path, seconds: float = CHECK_SECONDS) -> list[Check]:
    """Every executable of folder/required and folder/wanted, in name order, each with its
    time limit."""
    results = []
    for kind in ("required", "wanted"):
        for path in sorted((folder / kind).glob("*")) if (folder / kind).is_dir() else ():
            if not (path.is_file() and os.access(path, os.X_OK)):
                continue
            try:
                proc = subprocess.run([str(path)], capture_output=True, text=True,
                                      timeout=seconds, stdin=subprocess.DEVNULL)
                passed, output = proc.returncode == 0, (proc.stdout + proc.stderr).strip()
                if not passed:
                    output = f"exit status {proc.returncode}" + (f": {output}" if output else "")
            except subprocess.TimeoutExpired:
                passed, output = False, f"did not end within {seconds:.0f} s"
            except OSError as exc:
                passed, output = False, f"cannot run: {exc.strerror}"
            results.append(Check(f"{kind}/{path.name}", passed, output[-500:]))
    return results


# --------------------------------------------------------------------------- the commands

def booted_image(booted: Path = BOOTED) -> str:
    """active.img, passive.img or recovery.img; empty on a live medium."""
    try:
        return Path(booted.read_text().strip()).name
    except FileNotFoundError:
        return ""


def report(path: Path, lines: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))


def say(text: str, console: Path | None = None) -> None:
    """To the journal (the units' stdout); with `console`, on the console too."""
    line = f"cos-boot-assessment: {text}"
    print(line, flush=True)
    if console is not None:
        try:
            with open(console, "a") as out:
                out.write(line + "\n")
        except OSError:
            pass   # no console: the journal has it


@contextlib.contextmanager
def state_file(state: Path | None, log: TaskLog, writable: bool):
    """COS_STATE's assessment file (`state`: the partition's folder, for tests)."""
    if state is not None:
        yield state / ASSESSMENT_FILE
        return
    with partition("COS_STATE", log, writable=writable) as point:
        yield point / ASSESSMENT_FILE


def check(args, log: TaskLog, reboot) -> int:
    """Run the health checks; a failed required one on a counted try reboots."""
    image = booted_image(args.booted)
    if not image:
        say("not booted from a system image (a live medium): nothing to assess")
        return 0
    results = run_checks(args.health_dir, args.check_seconds)
    for r in results:
        say(f"{r.name}: {'passed' if r.passed else 'FAILED'}"
            + (f" ({r.output})" if r.output and not r.passed else ""),
            None if r.passed else args.console)
    failed = [r for r in results if not r.passed and r.name.startswith("required/")]
    with state_file(args.state, log, writable=bool(failed)) as path:
        env = grubenv.read(path) if path.is_file() else {}
        lines = {"booted": image, "rollback": rollback(env, image) or "no",
                 "tries_left": env.get(COUNTED.get(image, ""), "") or "-",
                 "checks": ", ".join(f"{r.name}={'passed' if r.passed else 'failed'}"
                                     for r in results) or "none"}
        if lines["rollback"] != "no":
            say(f"rollback: {lines['rollback']}", args.console)
        if not failed:
            report(args.report, {**lines, "result": "checks passed"})
            return 0
        report(args.report, {**lines, "result": f"failed: {failed[0].name}"})
        if not path.is_file() or not assessing(env, image):
            say(f"{failed[0].name} failed on {image}, which is not being assessed: no reboot",
                args.console)
            return 1
        grubenv.write(path, mark_failed(env, image, failed[0].name.split("/", 1)[1]))
        os.sync()
    say(f"{failed[0].name} failed: {image} has {env[COUNTED[image]]} tries left; rebooting "
        f"in {args.reboot_delay:.0f} s", args.console)
    time.sleep(args.reboot_delay)
    reboot()
    return 1


def success(args, log: TaskLog) -> int:
    """boot-complete.target was reached: the booted image passed."""
    image = booted_image(args.booted)
    if not image:
        return 0
    with state_file(args.state, log, writable=True) as path:
        if not path.is_file():
            say(f"{path} is missing: boot assessment is off")
            return 0
        env = grubenv.read(path)
        was = assessing(env, image)
        grubenv.write(path, mark_good(env, image))
        os.sync()
    lines = dict(lines_of(args.report))
    report(args.report, {**lines, "booted": image, "result": "good", "tries_left": "-"})
    say(f"{image} is good" + (" (its tries are cleared)" if was else ""))
    return 0


def lines_of(path: Path) -> list[tuple[str, str]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [tuple(line.split("=", 1)) for line in text.splitlines() if "=" in line]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cos-boot-assessment",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("check", "success"))
    parser.add_argument("--health-dir", type=Path, default=HEALTH_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)   # tests: COS_STATE's folder
    parser.add_argument("--booted", type=Path, default=BOOTED, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, default=REPORT, help=argparse.SUPPRESS)
    parser.add_argument("--check-seconds", type=float, default=CHECK_SECONDS, help=argparse.SUPPRESS)
    parser.add_argument("--reboot-delay", type=float, default=REBOOT_DELAY, help=argparse.SUPPRESS)
    parser.add_argument("--console", type=Path, default=CONSOLE, help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, default=Path("/var/log/cos-boot-assessment.log"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        with TaskLog(args.log) as log:
            if args.action == "success":
                return success(args, log)
            return check(args, log, lambda: subprocess.run(["systemctl", "reboot"]))
    except CosbuildError as exc:
        print(f"cos-boot-assessment: error: {exc}", file=sys.stderr)
        return 1
