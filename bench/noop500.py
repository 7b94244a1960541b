"""No-op check of a generated 500-package tree vs just reading and hashing its files.

Both are measured in this invocation, each as a fresh process (interpreter start included),
best of N runs, with Python's bytecode cache enabled as on a user's machine (the variable
PYTHONDONTWRITEBYTECODE is removed for the runs). Usage:
python bench/noop500.py [--count 500] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from gentree import generate  # noqa: E402

HASH_ONLY = """
import hashlib, os, sys
h = hashlib.sha256()
for here, dirs, files in os.walk(sys.argv[1]):
    dirs.sort()
    for f in sorted(files):
        with open(os.path.join(here, f), 'rb') as fh:
            h.update(fh.read())
print(h.hexdigest())
"""


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def best(argv: list[str], cwd: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, check=True, capture_output=True, env=ENV)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, args.count)
        cosbuild = [sys.executable, "-m", "cosbuild.cli", "run", "build"]
        first = subprocess.run(cosbuild, cwd=root, capture_output=True, text=True, env=ENV)
        assert first.returncode == 0, first.stderr
        noop = subprocess.run(cosbuild, cwd=root, capture_output=True, text=True, env=ENV)
        assert noop.stdout.count("-- build:") == args.count, "second run was not a no-op"
        baseline = best([sys.executable, "-c", HASH_ONLY, "tree"], root, args.runs)
        ours = best(cosbuild, root, args.runs)
    print(f"packages: {args.count}")
    print(f"read+hash baseline: {baseline:.3f} s")
    print(f"cosbuild no-op build: {ours:.3f} s")
    print(f"ratio: {ours / baseline:.1f}x (target <= 5x)")


if __name__ == "__main__":
    main()
