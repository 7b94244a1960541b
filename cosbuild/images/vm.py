"""`cosbuild vm` and `doit vm`: the project's latest ISO or disk in QEMU, with the firmware
asked for, the serial console on the terminal, port forwards, and the build folder served
as the upgrade channel while the machine runs.

The disk boots through a qcow2 overlay, build/vm/<name>.qcow2, backed by the built
build/<name>.qcow2: the machine's writes (an upgrade, say) are kept between runs, and the
built file, a doit target, is never written. The overlay is made again when the built disk
is newer than it (a new build starts a fresh machine). `--snapshot` boots the built disk
itself with QEMU's snapshot=on: nothing is written anywhere.

The options are declared once (OPTIONS): the command's flags, the doit task's parameters and
their help come from that table. The QEMU command line is a pure function of a Machine
(qemu_argv), which the boot tests' own harness (tests/qemu.py) uses too.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from .. import arches, tools
from ..errors import CosbuildError
from ..programs import install_hint
from ..tools import TaskLog
from . import secureboot

OVMF = Path("/usr/share/ovmf/OVMF.fd")
GUEST_HOST = "10.0.2.2"   # the host as QEMU's user network shows it to the machine


@dataclass(frozen=True)
class Board:
    """The machine QEMU emulates for an architecture."""
    program: str
    machine: tuple[str, ...]   # the board and CPU
    uefi: Path                 # its UEFI firmware
    ide: bool                  # -cdrom works (an IDE bus); else the CD is a virtio SCSI one


BOARDS = {
    "amd64": Board("qemu-system-x86_64", (), OVMF, ide=True),
    # QEMU's generic ARM board (its serial console is ttyAMA0); a CPU TCG emulates quickly
    "arm64": Board("qemu-system-aarch64", ("-machine", "virt", "-cpu", "cortex-a72"),
                   Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"), ide=False),
}


@dataclass(frozen=True)
class Option:
    name: str               # the --option (dashes for '_') and the doit parameter
    doc: str
    default: object = False   # False: a flag; an int: a number; a str: text;
                              # a tuple: repeatable text


OPTIONS = (
    Option("iso", "boot the live ISO, build/<iso.yaml's name> (default: whichever of the "
           "ISO and the disk was built last)"),
    Option("disk", "boot the installed disk, build/<disk.yaml's name>.qcow2, through its "
           "overlay build/vm/<name>.qcow2"),
    Option("uefi", "UEFI firmware: OVMF (the default)"),
    Option("secure_boot", "UEFI with Secure Boot enforced: Microsoft's keys enrolled, or only "
           "the derivative's certificate when the image's iso.yaml or disk.yaml has "
           "secure_boot (in a variable store of the machine's own, build/vm/<name>.vars.fd)"),
    Option("bios", "BIOS firmware: QEMU's SeaBIOS"),
    Option("snapshot", "write nothing: boot the built disk itself, discarding what the "
           "machine writes (QEMU's snapshot=on)"),
    Option("headless", "no keyboard: the console is only printed and the machine runs until "
           "it powers off, Ctrl-C or SIGTERM (for scripts and tests)"),
    Option("forward", "forward 127.0.0.1:HOST to the machine's TCP port GUEST, as HOST:GUEST "
           "(repeatable; the default is the sample's service)", ("8090:8090",)),
    Option("channel_port", "serve the build folder as the upgrade channel on this port of "
           "127.0.0.1, http://10.0.2.2:PORT in the machine (the sample's OEM config names "
           "8000; 0 picks a free one)", 8000),
    # QEMU tries each -accel in turn. Nested KVM can be far slower than TCG at real-mode
    # firmware code (SeaBIOS and GRUB's BIOS core took 34 s instead of 0.6 s on a CI host)
    Option("accel", "QEMU accelerators to try in turn, ':'-separated: KVM where /dev/kvm "
           "can be opened, else TCG; `tcg` where nested KVM is slower", "kvm:tcg"),
)


def option_flag(o: Option) -> str:
    return f"--{o.name.replace('_', '-')}"


def describe(o: Option) -> str:
    """Its help: the doc and, unless a flag, the default."""
    if o.default is False:
        return o.doc
    shown = " ".join(o.default) if isinstance(o.default, tuple) else o.default
    return f"{o.doc}; default {shown}"


def reference() -> str:
    """The options as Markdown, for docs/disks.md ("Boot it")."""
    return "\n".join(f"- `{option_flag(o)}`: {describe(o)}" for o in OPTIONS)


def doit_params() -> list[dict]:
    """The doit task's parameters (`doit vm --disk --bios`)."""
    kinds = {bool: bool, int: int, str: str, tuple: list}
    return [{"name": o.name, "long": o.name.replace("_", "-"), "type": kinds[type(o.default)],
             "default": list(o.default) if isinstance(o.default, tuple) else o.default,
             "help": describe(o)} for o in OPTIONS]


@dataclass(frozen=True)
class Machine:
    """What QEMU runs: its firmware, media, network and console."""
    firmware: str = "uefi"           # "uefi" (OVMF) or "bios" (SeaBIOS, QEMU's own)
    iso: Path | None = None          # a CD, or with iso_as_disk a USB stick (writes discarded)
    iso_as_disk: bool = False
    boot_disk: Path | None = None    # a disk it writes to; without one, a reboot powers off
    snapshot: bool = False           # the boot disk's writes discarded
    disks: tuple[Path, ...] = ()     # more disks, their writes discarded
    kernel: tuple[Path, Path, str] | None = None   # kernel, initrd, command line: direct boot
    secure_boot_vars: Path | None = None   # UEFI with Secure Boot: its writable variable store
    forwards: tuple[tuple[int, int], ...] = ()      # (port of 127.0.0.1, the machine's port)
    serial: str = "mon:stdio"        # mon:stdio: the console and QEMU's monitor, Ctrl-A X quits
    accel: tuple[str, ...] = ("kvm", "tcg")
    memory: int = 2048               # MiB
    cpus: int = 2
    arch: str = arches.ORIGINAL      # BOARDS: arm64 boots with UEFI only, without Secure Boot


def drive_argv(disk: Path, *, snapshot: bool) -> list[str]:
    """A virtio disk; qcow2 by its suffix, else raw."""
    fmt = "qcow2" if disk.suffix == ".qcow2" else "raw"
    return ["-drive", f"file={disk},format={fmt},if=virtio" + (",snapshot=on" if snapshot else "")]


def qemu_argv(m: Machine) -> list[str]:
    """The QEMU command line of a machine: no display, the serial console on stdio, user
    networking with the forwards."""
    forwards = "".join(f",hostfwd=tcp:127.0.0.1:{host}-:{guest}" for host, guest in m.forwards)
    board = BOARDS[m.arch]
    argv = [board.program, *board.machine, *(a for name in m.accel for a in ("-accel", name)),
            "-m", str(m.memory), "-smp", str(m.cpus), "-display", "none", "-serial", m.serial,
            "-netdev", f"user,id=n0{forwards}", "-device", "virtio-net-pci,netdev=n0"]
    if m.boot_disk is None:
        argv.append("-no-reboot")   # a live machine's reboot ends the run
    else:
        argv += drive_argv(m.boot_disk, snapshot=m.snapshot)
    if m.firmware == "uefi" and m.secure_boot_vars is not None:
        # the firmware that enforces Secure Boot reads its keys from pflash: a q35 machine
        # (the variable store not SMM-protected, as Debian's own tests run it under TCG)
        argv += ["-machine", "q35",
                 "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={secureboot.CODE}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={m.secure_boot_vars}"]
    elif m.firmware == "uefi":
        argv += ["-bios", str(board.uefi)]
    for disk in m.disks:
        argv += drive_argv(disk, snapshot=True)
    if m.kernel:
        argv += ["-kernel", str(m.kernel[0]), "-initrd", str(m.kernel[1]), "-append", m.kernel[2]]
    if m.iso is not None and m.iso_as_disk:
        argv += ["-drive", f"file={m.iso},format=raw,media=disk,snapshot=on"]
    elif m.iso is not None and board.ide:
        argv += ["-cdrom", str(m.iso)]
    elif m.iso is not None:
        argv += ["-drive", f"file={m.iso},format=raw,if=none,id=cd0,media=cdrom,readonly=on",
                 "-device", "virtio-scsi-pci,id=scsi0", "-device", "scsi-cd,drive=cd0"]
    return argv


# --------------------------------------------------------------------------- the options

def one_of(options: dict, names: tuple[str, str], default: str | None) -> str | None:
    """The one of two exclusive flags given, else `default`."""
    given = [n for n in names if options.get(n)]
    if len(given) > 1:
        raise CosbuildError(f"--{given[0]} and --{given[1]} together: choose one",
                            key=f"--{names[0]} / --{names[1]}")
    return given[0] if given else default


def parse_forward(text: str) -> tuple[int, int]:
    host, sep, guest = str(text).partition(":")
    if not (sep and host.isdigit() and guest.isdigit()
            and 0 < int(host) < 65536 and 0 < int(guest) < 65536):
        raise CosbuildError(f"expected HOST:GUEST TCP ports (as 8090:8090), got {text!r}",
                            key="--forward")
    return int(host), int(guest)


def image_paths(settings) -> dict[str, Path]:
    """The ISO and the disk the project's iso.yaml and disk.yaml (those it has) build."""
    from .disk import load_disk_spec
    from .iso import load_iso_spec
    paths = {}
    if settings.iso.is_file():
        paths["iso"] = settings.build_dir / load_iso_spec(settings.iso).file_name
    if settings.disk.is_file():
        paths["disk"] = settings.build_dir / f"{load_disk_spec(settings.disk).name}.qcow2"
    return paths


def image_keys(settings, kind: str):
    """The derivative's Secure Boot keys of the ISO's or the disk's specification, or None."""
    from .disk import load_disk_spec
    from .iso import load_iso_spec
    return (load_iso_spec(settings.iso) if kind == "iso" else load_disk_spec(settings.disk)).secure_boot


def choose_image(paths: dict[str, Path], kind: str | None) -> tuple[str, Path]:
    """The image asked for, else the one built last; an error says how to build it."""
    if kind is not None:
        if kind not in paths:
            raise CosbuildError(f"no {kind}.yaml: nothing says what --{kind} boots",
                                key=f"the --{kind} setting / COSBUILD_{kind.upper()}",
                                hint=f"name the {kind} specification")
        if not paths[kind].is_file():
            raise CosbuildError(f"{paths[kind]} not found: run doit {kind}")
        return kind, paths[kind]
    built = {k: p for k, p in paths.items() if p.is_file()}
    if not built:
        wanted = " or ".join(str(p) for p in paths.values()) or "an ISO or a disk"
        raise CosbuildError(f"nothing to boot: no {wanted}",
                            hint=" or ".join(f"run doit {k}" for k in paths) or
                            "the project has neither iso.yaml nor disk.yaml")
    kind = max(built, key=lambda k: built[k].stat().st_mtime_ns)
    return kind, built[kind]


# --------------------------------------------------------------------------- running it

def boot(settings, options: dict) -> int:
    """`cosbuild vm` with these OPTIONS values (absent ones: their defaults): the machine
    runs until it powers off or is stopped. Returns QEMU's exit status."""
    options = {o.name: o.default for o in OPTIONS} | {k: v for k, v in options.items()
                                                      if v not in (None, [], ())}
    wanted = one_of(options, ("iso", "disk"), None)   # the options' mistakes first
    firmware = one_of(options, ("uefi", "bios"), "uefi")
    forwards = tuple(parse_forward(f) for f in options["forward"])
    accel = tuple(a for a in str(options["accel"]).split(":") if a)
    if not accel:
        raise CosbuildError("no accelerator", key="--accel", hint="kvm:tcg, kvm or tcg")
    channel_port = int(options["channel_port"])
    if not 0 <= channel_port < 65536:
        raise CosbuildError(f"{channel_port} is not a TCP port", key="--channel-port",
                            hint="0 to 65535; 0 picks a free one")
    if options["secure_boot"] and firmware == "bios":
        raise CosbuildError("--secure-boot and --bios together: Secure Boot is UEFI's",
                            key="--secure-boot / --bios")
    board = BOARDS[settings.arch]
    if settings.arch != arches.ORIGINAL and (firmware == "bios" or options["secure_boot"]):
        raise CosbuildError(f"{settings.arch} machines boot with UEFI, without Secure Boot",
                            key="--bios" if firmware == "bios" else "--secure-boot",
                            hint="leave the option out")
    kind, image = choose_image(image_paths(settings), wanted)
    if firmware == "uefi" and not board.uefi.is_file():
        raise CosbuildError(f"{board.uefi} is not installed", hint=install_hint(str(board.uefi)))
    qemu = tools.require(board.program)
    snapshot = bool(options["snapshot"]) and kind == "disk"
    with TaskLog(settings.logs_dir / "vm.log") as log:
        if kind == "disk" and not snapshot:
            image = overlay(image, settings.build_dir / "vm", log)
        secure_vars = None
        if options["secure_boot"]:
            keys = image_keys(settings, kind)
            secure_vars = secureboot.make_vars(settings.build_dir / "vm" / f"{image.stem}.vars.fd",
                                               keys.cert if keys else None, log)
            _say("Secure Boot enforced: " + (f"only {keys.cert} enrolled" if keys
                                              else "Microsoft's keys enrolled"))
        machine = Machine(firmware=firmware, iso=image if kind == "iso" else None,
                          boot_disk=image if kind == "disk" else None, snapshot=snapshot,
                          secure_boot_vars=secure_vars, forwards=forwards, accel=accel,
                          serial="stdio" if options["headless"] else "mon:stdio",
                          arch=settings.arch)
        return run(machine, settings.build_dir, channel_port,
                   headless=bool(options["headless"]), qemu=qemu, log=log)


def overlay(disk: Path, folder: Path, log: TaskLog) -> Path:
    """The machine's disk: a qcow2 overlay backed by the built disk, made again when the
    built disk is newer (its writes would not fit another backing file)."""
    path = folder / disk.name
    if path.is_file() and path.stat().st_mtime_ns >= disk.stat().st_mtime_ns:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    tools.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
               "-b", str(disk.resolve()), str(tmp)], log=log, what="make the machine's disk")
    tmp.replace(path)
    return path


def _say(line: str) -> None:
    print(f"vm: {line}", flush=True)


def run(m: Machine, build_dir: Path, channel_port: int, *, headless: bool, qemu: str,
        log: TaskLog) -> int:
    """QEMU on the terminal (not through tools.run: the console is the user's), with the
    build folder served on `channel_port` meanwhile; both stop when this returns. Ctrl-C or
    SIGTERM (headless: the way to stop it) stop the machine and return 0."""
    from ..repos.serve import make_server
    argv = qemu_argv(m)
    server = make_server(build_dir, "127.0.0.1", channel_port)
    threading.Thread(target=_serve, args=(server,), daemon=True).start()
    port = server.server_port
    _say(f"{m.iso or m.boot_disk} with {m.firmware.upper()} firmware"
         + (", writes discarded" if m.snapshot else ""))
    for host, guest in m.forwards:
        _say(f"http://127.0.0.1:{host} -> the machine's port {guest}")
    _say(f"upgrade channel: {build_dir}/ on http://127.0.0.1:{port} "
         f"(http://{GUEST_HOST}:{port} in the machine)")
    _say("Ctrl-C or SIGTERM stops it" if headless else
         "Ctrl-A X quits, Ctrl-A C toggles QEMU's monitor")
    log.write("$ " + shlex.join(argv))
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)   # unwinds like Ctrl-C
    proc, asked = None, False
    try:
        proc = subprocess.Popen([qemu, *argv[1:]],
                                stdin=subprocess.DEVNULL if headless else None)
        code = proc.wait()
    except KeyboardInterrupt:
        code, asked = 0, True
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server.shutdown()
        server.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    end = "stopped on request" if asked else f"QEMU exited with status {code}"
    log.write(f"  ({end})")
    _say(end)
    return code


def _serve(server) -> None:
    # Ctrl-C and SIGTERM are left to the main thread, which waits for QEMU: delivered to this
    # thread (or its request threads) instead, they would not interrupt that wait
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    server.serve_forever()


def _interrupt(signum, frame):
    raise KeyboardInterrupt
