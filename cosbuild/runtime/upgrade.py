"""cos-upgrade, inside an installed system (SPEC 5 "Upgrades").

Reads /etc/cos-upgrade-image (UPGRADE_IMAGE, CHANNEL_UPGRADES, RECOVERY_IMAGE, TRUSTED_ROOT).
A new ext2 image file, transition.img, is made on COS_STATE and filled either from the
repository channel (the newest UPGRADE_IMAGE package, installed with the repository client
from /etc/luet/luet.yaml) or from a container image. Only when that worked is anything switched:
active.img -> passive.img (label COS_PASSIVE), transition.img -> active.img (COS_ACTIVE). On
any error transition.img is removed and the system still boots the same active.img.
`--recovery` does the same for COS_RECOVERY's recovery.img (RECOVERY_IMAGE).

Boot assessment (assessment.py): the new active image and the passive one are counted anew;
when the active image failed its assessment (the system rolled back to passive.img), an
upgrade to the same version is nothing to do, and a newer one replaces the failed image
while passive.img, the system that runs, stays. `cos-upgrade status` reports all of it.

With TRUSTED_ROOT (a TUF root), every channel repository without a `trusted_root:` of its own
is verified with it, so an unsigned or tampered channel is refused; the TUF metadata last
trusted is kept on the partition being upgraded (TRUST_STATE), because /var of the running
system is a tmpfs overlay in the cOS layout and would forget it at every boot, which would
let old metadata back in. A container image is not verified by TUF: with TRUSTED_ROOT set,
unpacking one needs --no-verify.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import tools
from ..errors import CosbuildError
from ..images import fsimage, grubenv
from ..images.fsimage import MIB
from ..images.layout import ASSESSMENT_FILE, DEFAULT_IMAGE_SIZE, IMAGE_LABELS, IMAGES_DIR
from ..oci.registry import Registries, apply_image
from ..repos.config import repositories
from ..repos.index import load_repository
from ..repos.resolve import DB_PATH, choose
from ..repos.transaction import install
from ..tools import TaskLog
from ..tree import versions
from ..tree.yamlio import loads
from .assessment import (COUNTED, REPORT, active_failed, after_upgrade, boot_tries,
                         lines_of)
from .partitions import partition

CONFIG = Path("/etc/cos-upgrade-image")
REPO_CONFIG = Path("/etc/luet/luet.yaml")
TRUST_STATE = "tuf"   # on the upgraded partition: TRUST_STATE/<repository name>/


@dataclass(frozen=True)
class UpgradeConfig:
    upgrade_image: str
    channel: bool
    recovery_image: str
    insecure_registries: tuple[str, ...] = ()
    trusted_root: Path | None = None


def parse_upgrade_config(text: str, file: str) -> UpgradeConfig:
    """KEY=VALUE lines (shell style, optionally quoted); unknown keys are refused.
    INSECURE_REGISTRIES (cosbuild's addition): registries HOST:PORT reached without verified
    TLS, space-separated, for testing. TRUSTED_ROOT (cosbuild's addition): the TUF root that
    verifies the channel."""
    known = {"UPGRADE_IMAGE": "", "CHANNEL_UPGRADES": "true", "RECOVERY_IMAGE": "",
             "INSECURE_REGISTRIES": "", "TRUSTED_ROOT": ""}
    values = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or key not in known:
            raise CosbuildError(f"expected one of {', '.join(known)} as KEY=VALUE, got {raw!r}",
                                file=file, line=n)
        values[key] = value.strip().strip("'\"")
    merged = {**known, **values}
    if merged["CHANNEL_UPGRADES"].lower() not in ("true", "false"):
        raise CosbuildError(f"CHANNEL_UPGRADES must be true or false, got "
                            f"{merged['CHANNEL_UPGRADES']!r}", file=file, key="CHANNEL_UPGRADES")
    return UpgradeConfig(merged["UPGRADE_IMAGE"], merged["CHANNEL_UPGRADES"].lower() == "true",
                         merged["RECOVERY_IMAGE"], tuple(merged["INSECURE_REGISTRIES"].split()),
                         Path(merged["TRUSTED_ROOT"]) if merged["TRUSTED_ROOT"] else None)


@dataclass(frozen=True)
class Slot:
    """What an upgrade replaces: a partition, the image it boots and what the old one becomes."""
    label: str
    image: str
    previous: str | None


SYSTEM = Slot("COS_STATE", "active.img", "passive.img")
RECOVERY = Slot("COS_RECOVERY", "recovery.img", None)


@contextlib.contextmanager
def loop_mounted(image: Path, log: TaskLog):
    point = Path(tempfile.mkdtemp(prefix="cos-transition.", dir="/run"))
    tools.run(["mount", "-o", "loop", str(image), str(point)], log=log, what=f"mount {image.name}")
    try:
        yield point
    finally:
        os.sync()
        tools.run(["umount", str(point)], log=log, what=f"unmount {image.name}")
        point.rmdir()


def reserve(path: Path, size: int, label: str) -> None:
    """Allocate the whole image now: a full partition fails here, not halfway through."""
    free = os.statvfs(path.parent)
    available = free.f_bavail * free.f_frsize
    if available < size:
        raise CosbuildError(f"not enough space on {label} for a {size // MIB} MiB image: "
                            f"{available // MIB} MiB free",
                            hint="remove files from the partition, or pass a smaller --size")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        raise CosbuildError(f"cannot allocate {size // MIB} MiB on {label}: {exc.strerror}",
                            hint="remove files from the partition, or pass a smaller --size") from None
    finally:
        os.close(fd)


def newest(ref_text: str, repos):
    """The package reference and the candidate the channel would install."""
    ref = versions.parse_ref(ref_text)
    with tempfile.TemporaryDirectory(prefix="cos-upgrade.") as work:
        candidates = [c for r in repos for c in load_repository(r, Path(work))]
    return ref, choose(ref, candidates)


def installed_version(image: Path, package: str, log: TaskLog) -> str | None:
    """The version of `package` in an image file's package database (read with debugfs: the
    image that boots next, not the running one, is what an upgrade compares with)."""
    text = tools.run(["debugfs", "-R", f"cat /{DB_PATH}", str(image)], log=log, capture=True,
                     what=f"read the package database of {image.name}")
    record = ((loads(text, f"{image}:/{DB_PATH}") or {}).get("packages") or {}).get(package)
    return (record or {}).get("version")


def fill_from_channel(root: Path, ref, repos) -> None:
    install(root, [ref], repos, progress=sys.stderr.isatty())


def fill_from_image(root: Path, reference: str, insecure: tuple[str, ...], log: TaskLog) -> None:
    """The image's layers, applied in place; they are downloaded onto the new image itself."""
    log.write(f"unpack {reference} into {root}")
    work = root / ".cos-upgrade-layers"
    work.mkdir()
    try:
        apply_image(reference, root, work, Registries(insecure))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def upgrade(args, log: TaskLog) -> str:
    """Fill a transition image and switch to it; returns what was done."""
    config = parse_upgrade_config(args.config.read_text(), str(args.config)) \
        if args.config.is_file() else UpgradeConfig("", True, "")
    slot = RECOVERY if args.recovery else SYSTEM
    source = args.image or (config.recovery_image if args.recovery else config.upgrade_image)
    if not source:
        key = "RECOVERY_IMAGE" if args.recovery else "UPGRADE_IMAGE"
        raise CosbuildError(f"no {key} to upgrade from", file=args.config, key=key,
                            hint="set it, or pass --image")
    channel = config.channel and not args.container
    if not channel and config.trusted_root and not args.no_verify:
        raise CosbuildError(f"{source} is a container image, which TUF does not verify, and "
                            "this system trusts only its signed channel", file=args.config,
                            key="TRUSTED_ROOT", hint="pass --no-verify to unpack it anyway")
    ref = chosen = None
    with partition(slot.label, log) as part:
        if channel:
            # TRUSTED_ROOT for every repository without a trusted_root: of its own
            repos = repositories([], args.repo_config, trusted_root=config.trusted_root,
                                 trust_dir=part / TRUST_STATE)
            ref, chosen = newest(source, repos)
        images = part / IMAGES_DIR
        current = images / slot.image
        assessment = part / ASSESSMENT_FILE
        env = grubenv.read(assessment) if slot is SYSTEM and assessment.is_file() else None
        failed = env is not None and active_failed(env)
        installed = installed_version(current, chosen.id, log) \
            if chosen and current.exists() else None
        if installed and not args.force and versions.compare(chosen.version, installed) <= 0:
            if failed:   # rolled back from it: the same image would fail the same way
                return (f"{slot.image} has {chosen.id} {installed}, which failed its boot "
                        f"assessment; the channel has nothing newer ({chosen.version}): "
                        "nothing to do (--force applies it again)")
            return (f"{slot.image} has {chosen.id} {installed}, as new as the channel's "
                    f"{chosen.version}: nothing to do (--force reinstalls)")
        size = args.size * MIB if args.size else (
            current.stat().st_size if current.exists() else DEFAULT_IMAGE_SIZE * MIB)
        transition = images / "transition.img"
        images.mkdir(exist_ok=True)
        try:
            reserve(transition, size, slot.label)
            fsimage.make_ext(transition, None, label=IMAGE_LABELS[slot.image],
                             size_mib=size // MIB, log=log, fs_type="ext2",
                             seed=os.urandom(8).hex())
            with loop_mounted(transition, log) as root:
                if channel:
                    print(f"cos-upgrade: installing {chosen} from {chosen.repo.name}", flush=True)
                    fill_from_channel(root, ref, repos)
                else:
                    print(f"cos-upgrade: unpacking the image {source}", flush=True)
                    fill_from_image(root, source, config.insecure_registries, log)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                transition.unlink()
            raise
        if env is not None:   # first: a stop before the switch only counts the old image
            grubenv.write(assessment, after_upgrade(env))
            os.sync()
        # the switch: two renames; if it stops between them, GRUB boots passive.img. An
        # active image that failed its assessment is dropped: passive.img, which runs now,
        # stays the previous system
        rotate = slot.previous and current.exists() and not failed
        if rotate:
            os.replace(current, images / slot.previous)
            fsimage.relabel(images / slot.previous, IMAGE_LABELS[slot.previous], log)
        os.replace(transition, current)
        os.sync()
    what = f"{chosen.id} {chosen.version}" if chosen else source
    kept = f"; {slot.previous} stays the previous system (the image that failed its boot " \
           "assessment is replaced)" if failed else ""
    tries = f"; it has {boot_tries(env)} boots to pass its boot assessment" if env else ""
    return (f"{slot.image} is now {what}"
            + (f"; the previous system is {slot.previous}" if rotate else kept)
            + tries + ": reboot to start it")


def status(args, log: TaskLog) -> str:
    """cos-upgrade status: the version of each image, the tries left, the last assessment."""
    config = parse_upgrade_config(args.config.read_text(), str(args.config)) \
        if args.config.is_file() else UpgradeConfig("", True, "")
    package = {s: versions.parse_ref(ref).id for s, ref in
               ((SYSTEM, config.upgrade_image), (RECOVERY, config.recovery_image)) if ref}
    lines = []
    for slot in (SYSTEM, RECOVERY):
        with partition(slot.label, log, writable=False) as part:
            env = {}
            if slot is SYSTEM and (part / ASSESSMENT_FILE).is_file():
                env = grubenv.read(part / ASSESSMENT_FILE)
            for image in (slot.image, slot.previous):
                path = part / IMAGES_DIR / image if image else None
                if path is None or not path.exists():
                    continue
                name = package.get(slot) or package.get(SYSTEM)
                version = installed_version(path, name, log) if name else None
                tries = env.get(COUNTED.get(image, ""), "")
                lines.append(f"{image}: {name or 'system'} {version or '(version unknown)'}"
                             + (f", {tries} tries left" if tries else "")
                             + (" (failed its boot assessment)" if tries == "0" else ""))
            if env:
                lines.append(f"boot tries of a new image: {boot_tries(env)}")
                lines.append(f"last assessment: {env.get('assessed') or 'none yet'}")
    report = dict(lines_of(args.report))
    if report:
        lines.append(f"this boot: {report.get('booted', '?')}, {report.get('result', '?')}")
        if report.get("rollback", "no") != "no":
            lines.append(f"rollback: {report['rollback']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cos-upgrade", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", nargs="?", choices=("upgrade", "status"), default="upgrade",
                        help="upgrade (the default), or status: each image's version, the "
                             "tries left and the last boot assessment")
    parser.add_argument("--recovery", action="store_true", help="upgrade the recovery image")
    parser.add_argument("--image", help="package (channel) or container image to upgrade to, "
                                        "instead of the configured one")
    parser.add_argument("--container", action="store_true",
                        help="--image is a container image, whatever CHANNEL_UPGRADES says")
    parser.add_argument("--no-verify", action="store_true",
                        help="unpack a container image though TRUSTED_ROOT is set (TUF verifies "
                             "only the channel)")
    parser.add_argument("--force", action="store_true", help="even if it is not newer")
    parser.add_argument("--size", type=int, help="MiB of the new image (default: the current one's)")
    parser.add_argument("--config", type=Path, default=CONFIG, help=f"default {CONFIG}")
    parser.add_argument("--repo-config", type=Path, default=REPO_CONFIG, help=f"default {REPO_CONFIG}")
    parser.add_argument("--report", type=Path, default=REPORT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    log_path = Path("/var/log/cos-upgrade.log")
    try:
        with TaskLog(log_path) as log:
            if args.action == "status":
                print(status(args, log))
                return 0
            print(f"cos-upgrade: {upgrade(args, log)}")
    except CosbuildError as exc:
        slot = RECOVERY if args.recovery else SYSTEM
        print(f"cos-upgrade: error: {exc}\ncos-upgrade: nothing was switched: {slot.image} is "
              f"unchanged (log: {log_path})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cos-upgrade: interrupted; nothing was switched", file=sys.stderr)
        return 130
    return 0
