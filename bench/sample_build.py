"""Cold build, no-op rebuild and one-change rebuild of the sample tree, measured in one run.

Cold = empty build folder, a fresh image repository and no cached Debian bootstraps (they
are removed first, and rebuilt by the cold build; pass --keep-bootstrap to keep them).
The one-change rebuild edits app/sampleOSService (so it and system/sampleOS rebuild).
Ratios are against the cold build of this same invocation.
Usage: python bench/sample_build.py [--keep-bootstrap]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def images(prefix: str) -> list[str]:
    out = subprocess.run(["buildah", "images", "--json"], capture_output=True, text=True).stdout
    return [i["id"] for i in json.loads(out or "null") or []
            if any(n.startswith(prefix) for n in i.get("names") or [])]


def timed(argv, cwd, env) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        sys.exit(proc.stdout[-2000:] + proc.stderr[-2000:])
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep-bootstrap", action="store_true")
    args = parser.parse_args()
    repo = f"bench/{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "COSBUILD_IMAGE_REPOSITORY": repo}
    if not args.keep_bootstrap:
        for image in images("localhost/cosbuild/bootstrap:"):
            subprocess.run(["buildah", "rmi", "-f", image], capture_output=True)
    build = [sys.executable, "-m", "cosbuild.cli", "run", "-n", "2", "-P", "thread", "build"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("tree", "values"):
            shutil.copytree(REPO / name, root / name)
        try:
            cold = timed(build, root, env)
            noop = timed(build, root, env)
            main_go = root / "tree/app/sampleOSService/src/main.go"
            main_go.write_text(main_go.read_text() + "\n// benchmark change\n")
            change = timed(build, root, env)
        finally:
            for image in images(f"localhost/{repo}:"):
                subprocess.run(["buildah", "rmi", "-f", image], capture_output=True)
    bootstrap = "kept" if args.keep_bootstrap else "rebuilt"
    print(f"cold build (bootstraps {bootstrap}): {cold:.1f} s")
    print(f"no-op rebuild: {noop:.2f} s = {100 * noop / cold:.2f}% of cold (target < 1%)")
    print(f"one-change rebuild (app/sampleOSService + system/sampleOS): {change:.1f} s "
          f"= {100 * change / cold:.1f}% of cold")


if __name__ == "__main__":
    main()
