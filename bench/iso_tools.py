"""Our squashfs and ISO steps vs mksquashfs and xorriso, on the same inputs, in one run.

Needs a built ISO tree (`doit iso` first): uses build/iso/rootfs (the live root) and the
ISO's inputs. Reports time and peak memory (largest resident set of the step's processes).
Usage: python bench/iso_tools.py [--compression zstd]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

OURS = """
import json, resource, sys, time
from pathlib import Path
from cosbuild import settings
from cosbuild.images.iso import IsoBuilder, load_iso_spec
from cosbuild.tree.project import load_project
project = load_project(settings.resolve({}))
b = IsoBuilder(project, load_iso_spec(Path("iso.yaml")))
step, out = sys.argv[1], Path(sys.argv[2])
start = time.perf_counter()
if step == "squashfs":
    b.squashfs = out
    b.make_squashfs()
else:
    b.output = out
    b.write_iso()
elapsed = time.perf_counter() - start
rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
          resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"seconds": elapsed, "max_rss_kb": rss}))
"""


def ours(step: str, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", OURS, step, str(out)], cwd=REPO,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed(argv: list[str]) -> dict:
    proc = subprocess.run(["/usr/bin/time", "-f", "%e %M", *argv], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    seconds, rss = proc.stderr.strip().splitlines()[-1].split()
    return {"seconds": float(seconds), "max_rss_kb": int(rss)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compression", default="zstd")
    args = parser.parse_args()
    work = REPO / "build/iso"
    root = work / "rootfs"
    if not root.is_dir():
        sys.exit("run `doit iso` first (needs build/iso/rootfs)")
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    with tempfile.TemporaryDirectory(dir=REPO / "build") as tmp:
        tmp = Path(tmp)
        sq_ours = ours("squashfs", tmp / "ours.squashfs")
        sq_base = timed(["mksquashfs", str(root), str(tmp / "base.squashfs"), "-comp",
                         args.compression, "-noappend", "-quiet", "-no-progress"])
        iso_ours = ours("iso", tmp / "ours.iso")
        iso_root = work / "isoimage"
        iso_base = timed(["xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-V", "COS_LIVE",
                          "-b", "boot/syslinux/isolinux.bin", "-c", "boot/syslinux/boot.cat",
                          "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
                          "-eltorito-alt-boot", "-e", "boot/uefi.img", "-no-emul-boot",
                          "-isohybrid-mbr", str(iso_root / "boot/syslinux/isohdpfx.bin"),
                          "-o", str(tmp / "base.iso"), "-graft-points", f"/={iso_root}",
                          f"/rootfs.squashfs={work / 'rootfs.squashfs'}",
                          f"/boot/kernel.xz={work / 'kernel.xz'}",
                          f"/boot/rootfs.xz={work / 'rootfs.xz'}",
                          f"/boot/uefi.img={work / 'uefi.img'}"])
        sizes = {p.name: p.stat().st_size for p in tmp.iterdir()}
    print(f"rootfs: {size / 1e6:.0f} MB of files, compression {args.compression}")
    print(f"squashfs ours (tar stream -> tar2sqfs): {sq_ours['seconds']:.1f} s, "
          f"{sq_ours['max_rss_kb'] / 1024:.0f} MB peak, {sizes['ours.squashfs'] / 1e6:.0f} MB")
    print(f"squashfs mksquashfs: {sq_base['seconds']:.1f} s, "
          f"{sq_base['max_rss_kb'] / 1024:.0f} MB peak, {sizes['base.squashfs'] / 1e6:.0f} MB")
    print(f"  time ratio ours/mksquashfs: {sq_ours['seconds'] / sq_base['seconds']:.2f}, "
          f"memory ratio: {sq_ours['max_rss_kb'] / sq_base['max_rss_kb']:.2f}")
    print(f"ISO ours (pycdlib): {iso_ours['seconds']:.2f} s; xorriso: {iso_base['seconds']:.2f} s; "
          f"ratio {iso_ours['seconds'] / iso_base['seconds']:.2f}")


if __name__ == "__main__":
    main()
