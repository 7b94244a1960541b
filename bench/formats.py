"""Each deploy format's own time (the disk:<format> step) as a ratio to writing the raw disk
(disk:raw), in one run, through the real steps (images/disk.py, images/formats.py).

The system image is made from the sample's staged root when there (`doit image`:
build/disk/rootfs), else from synthetic content: half random bytes (incompressible), half
repeated text. Each step ends with `sync`; alternating rounds, best of each.
Usage: python bench/formats.py [--size 512] [--data 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cosbuild.images import fsimage, formats  # noqa: E402
from cosbuild.images.disk import DiskBuilder, DiskSpec  # noqa: E402
from cosbuild.images.layout import EFI_BINARY, IMAGE_LABELS, MENU, partition_sizes  # noqa: E402
from cosbuild.tools import TaskLog  # noqa: E402

MIB = 1024 * 1024


def timed(action) -> float:
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    action()
    subprocess.run(["sync"], check=True)   # every step pays for getting its file to disk
    return time.perf_counter() - start


def synthetic_root(root: Path, mib: int) -> None:
    rng = random.Random(34)
    text = b"".join(b"line %d of a configuration file, mostly alike\n" % n for n in range(20000))
    for n in range(mib // 8):
        data = rng.randbytes(8 * MIB) if n % 2 else (text * (8 * MIB // len(text) + 1))[:8 * MIB]
        (root / f"file{n:04}").write_bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512, help="MiB of each system image")
    parser.add_argument("--data", type=int, default=256, help="MiB of synthetic content")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    (REPO / "build").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=REPO / "build") as tmp:
        tmp = Path(tmp)
        project = SimpleNamespace(settings=SimpleNamespace(build_dir=tmp, logs_dir=tmp / "logs",
                                                           verbose=False))
        spec = DiskSpec(Path("bench"), (), args.size, partition_sizes(args.size), "/boot-files",
                        "bench.disk", formats=tuple(formats.BY_NAME))
        builder = DiskBuilder(project, spec)
        # the boot files of a disk nobody boots: one boot sector each, what the BIOS images
        # of the BIOS boot partition's layout (i386-pc) must at least be
        boot = builder.rootfs_dir / "boot-files"
        for name in (MENU.split("/")[-1], EFI_BINARY, "i386-pc/boot.img", "i386-pc/core.img"):
            (boot / name).parent.mkdir(parents=True, exist_ok=True)
            (boot / name).write_bytes(bytes(510) + b"\x55\xaa")
        sample = REPO / "build/disk/rootfs"
        content = sample if sample.is_dir() else tmp / "content"
        if content != sample:
            content.mkdir()
            synthetic_root(content, args.data)
        with TaskLog(tmp / "image.log") as log:
            fsimage.make_ext(builder.active, content, label=IMAGE_LABELS["active.img"],
                             size_mib=args.size, log=log, fs_type="ext2")
        steps = {"raw": builder.make_raw,
                 **{f.name: (lambda name=f.name: builder.make_format(name))
                    for f in formats.FORMATS if f.make}}
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, step in steps.items():
                times[name].append(timed(step))
        best = {name: min(t) for name, t in times.items()}
        sizes = {name: os.stat(builder.output(name)) for name in steps}
    print(f"content: {'the sample root' if content == sample else f'{args.data} MiB synthetic'}, "
          f"images of {args.size} MiB; raw disk {sizes['raw'].st_size / 1e9:.1f} GB, "
          f"{sizes['raw'].st_blocks * 512 / 1e6:.0f} MB used")
    print("| step | made from | time | ratio to disk:raw | file |")
    print("|---|---|---|---|---|")
    for name, seconds in best.items():
        source = formats.BY_NAME[name].source or "active.img"
        print(f"| `disk:{name}` | {source} | {seconds:.1f} s | {seconds / best['raw']:.2f} | "
              f"{sizes[name].st_size / 1e6:.0f} MB |")


if __name__ == "__main__":
    main()
