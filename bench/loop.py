"""The edit-to-ISO loop against a live-build rebuild after a one-file edit, in one run.

cosbuild: a copy of the sample project (tree, values, iso.yaml, dodo.py; its own keys) is made
an ISO once (warm: images in the store are reused) and edited once (a new fortune in
app/sampleOSService's Go source), as a user in the loop has; then edited again and
`doit build repo iso` is timed, each step's share read from its progress lines. The same
edited sources are then built clean (a new build folder and image repository: nothing reused
but the Debian bootstraps, which are pure functions of their inputs) and the two ISOs must
be byte-identical.

live-build (the baseline): a Debian 12 live ISO with the sample's Debian packages (live-boot
in place of dracut), built once in --lb-dir (kept between runs, as a live-build user keeps
its package and bootstrap caches), then one file of config/includes.chroot changes and
`lb clean; lb build` is timed.

Usage: .venv/bin/python bench/loop.py [--lb-dir DIR] [--skip-clean]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from cosbuild.builds.artifact import sha256_file

REPO = Path(__file__).resolve().parent.parent
DOIT = [sys.executable, "-m", "doit"]
LOOP = [*DOIT, "-n", "2", "-P", "thread", "build", "repo", "iso"]
# "[3/9] app/sampleOSService: done in 4.1s (...)" and "iso: make squashfs done in 20.3s"
PACKAGE_DONE = re.compile(r"^\[\d+/\d+\] (\S+): done in ([\d.]+)s")
STEP_DONE = re.compile(r"^(\w+): (.+?) done in ([\d.]+)s")


def run(argv, cwd: Path, env=None) -> tuple[float, str]:
    """(seconds, stdout) of a command that must succeed."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{' '.join(map(str, argv))} failed in {cwd}:\n"
                 + proc.stdout[-3000:] + proc.stderr[-3000:])
    return elapsed, proc.stdout


def steps(output: str) -> list[tuple[str, float]]:
    """The (step, seconds) of a doit run's progress lines, in the order they ended."""
    found = []
    for line in output.splitlines():
        if m := PACKAGE_DONE.match(line):
            found.append((f"build {m[1]}", float(m[2])))
        elif m := STEP_DONE.match(line):
            found.append((f"{m[1]}: {m[2]}", float(m[3])))
    return found


def the_iso(root: Path, build: str = "build") -> Path:
    [iso] = (root / build).glob("*.iso")
    return iso


def differing(one: Path, other: Path) -> list[str]:
    """The artifacts and ISO parts two build folders both have, with different bytes."""
    names = [*sorted(p.name for p in one.glob("*.package.tar.zst")),
             *(f"iso/{n}" for n in ("rootfs.squashfs", "kernel.xz", "rootfs.xz", "uefi.img"))]
    return [n for n in names if (other / n).is_file()
            and sha256_file(one / n) != sha256_file(other / n)]


def cosbuild_loop(work: Path, skip_clean: bool) -> tuple[float, list, bool | None]:
    """(edit->ISO seconds, its steps, whether a clean build gives the same ISO)."""
    root = work / "sample"
    root.mkdir()
    for name in ("tree", "values", "iso.yaml", "dodo.py"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, root / name)
    run([*DOIT, "keys"], root)
    run(LOOP, root)   # warm: what the user had before the edit
    main_go = root / "tree/app/sampleOSService/src/main.go"
    source = main_go.read_text()
    fortune = '"Immutable roots bear reliable fruit.",'

    def edit() -> None:
        """A new fortune, new in every run: the binary changes (a comment would not change
        it, and images of an earlier run's edit would be reused)."""
        main_go.write_text(source.replace(
            fortune, f'{fortune}\n\t"Edited in run {uuid.uuid4().hex[:8]}.",', 1))

    edit()
    run(LOOP, root)   # the loop's first edit: its compiler cache is warm from then on
    edit()
    seconds, output = run(LOOP, root)
    if not any(name == "iso: write iso" for name, _ in steps(output)):
        sys.exit("the edit did not make a new ISO:\n" + output[-3000:])
    if skip_clean:
        return seconds, steps(output), None
    repository = f"bench/{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "COSBUILD_BUILD_DIR": "build-clean",
           "COSBUILD_IMAGE_REPOSITORY": repository}
    try:
        run(LOOP, root, env)
        same = sha256_file(the_iso(root)) == sha256_file(the_iso(root, "build-clean"))
        if not same:
            print("differ:", ", ".join(differing(root / "build", root / "build-clean")))
    finally:
        out = subprocess.run(["buildah", "images", "--format", "{{.Name}}:{{.Tag}}"],
                             capture_output=True, text=True).stdout.split()
        ours = [ref for ref in out if ref.startswith(f"localhost/{repository}:")]
        if ours:
            subprocess.run(["buildah", "rmi", "-f", *ours], capture_output=True)
    return seconds, steps(output), same


LB_CONFIG = [
    "lb", "config", "--mode", "debian", "--distribution", "bookworm", "--archive-areas", "main",
    "--security", "false", "--updates", "false", "--backports", "false",
    "--apt-recommends", "false", "--apt-indices", "false",
    "--debootstrap-options", "--variant=minbase", "--bootloaders", "syslinux grub-efi",
    "--binary-images", "iso-hybrid", "--chroot-squashfs-compression-type", "zstd",
    "--memtest", "none", "--debian-installer", "none", "--firmware-chroot", "false",
    "--firmware-binary", "false", "--cache", "true",
    "--linux-packages", "linux-image", "--linux-flavours", "amd64",
]
EDITED = "config/includes.chroot/usr/local/share/loop-edit"


def live_build(lb_dir: Path) -> float:
    """Seconds of `lb clean; lb build` after a one-file edit (built once first if new)."""
    values = yaml.safe_load((REPO / "values/bookworm.yaml").read_text())
    packages = [p for p in values["distro"]["packages"]
                if p not in ("dracut", "dracut-live", "linux-image-amd64")]
    if not (lb_dir / "config").is_dir():
        lb_dir.mkdir(parents=True, exist_ok=True)
        mirror = values["distro"]["mirror"]
        run([*LB_CONFIG, "--mirror-bootstrap", mirror, "--mirror-chroot", mirror,
             "--mirror-binary", mirror], lb_dir)
        (lb_dir / "config/package-lists/sample.list.chroot").write_text(
            "\n".join(["live-boot", "live-config", "live-config-systemd", *packages]) + "\n")
    edited = lb_dir / EDITED
    edited.parent.mkdir(parents=True, exist_ok=True)
    if not list(lb_dir.glob("*.iso")):
        edited.write_text("0\n")
        run(["lb", "build"], lb_dir)   # the cold build, once: not the baseline
    edited.write_text(f"{time.time_ns()}\n")
    start = time.perf_counter()
    # how live-build rebuilds: clean drops the chroot, the binary and the stage marks (the
    # config's too), keeping cache/ (the bootstrap and the .debs)
    for step in ("clean", "config", "build"):
        run(["lb", step], lb_dir)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lb-dir", type=Path, default=Path("/var/tmp/cosbuild-bench/live-build"))
    parser.add_argument("--skip-clean", action="store_true",
                        help="do not build the edited sources clean to compare the ISOs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        ours, breakdown, same = cosbuild_loop(Path(tmp), args.skip_clean)
    print(f"cosbuild edit->ISO: {ours:.1f} s", flush=True)
    if same is not None:
        print("ISO after the edit byte-identical to a clean build of the same sources: "
              + ("yes" if same else "NO"), flush=True)
    baseline = live_build(args.lb_dir)
    print(f"live-build rebuild after a one-file edit (baseline): {baseline:.1f} s = 1")
    print(f"cosbuild edit->ISO: {ours:.1f} s = {ours / baseline:.2f} of live-build")
    for name, seconds in breakdown:
        print(f"  {name}: {seconds:.1f} s = {seconds / baseline:.3f}")
    if same is False:
        sys.exit(1)


if __name__ == "__main__":
    main()
