"""No-op check of a generated 500-package tree vs just reading and hashing its files.

Both are measured in this invocation, each as a fresh process (interpreter start included),
best of N runs, with Python's bytecode cache enabled as on a user's machine (the variable
PYTHONDONTWRITEBYTECODE is removed for the runs). The tree is
generated twice, with Jinja2 and with Helm templates. Usage:
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


def best(commands: list[list[str]], cwd: Path, runs: int) -> list[float]:
    """Best time of each command; the commands take turns, so that a slow moment of the
    machine hits them alike."""
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for argv, out in zip(commands, times):
            start = time.perf_counter()
            subprocess.run(argv, cwd=cwd, check=True, capture_output=True, env=ENV)
            out.append(time.perf_counter() - start)
    return [min(t) for t in times]


def measure(engine: str, count: int, runs: int) -> tuple[float, float, float]:
    """(baseline, no-op, cold load) of one generated tree in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, count, engine=engine)
        cosbuild = [sys.executable, "-m", "cosbuild.cli", "run", "build"]
        first = subprocess.run(cosbuild, cwd=root, capture_output=True, text=True, env=ENV)
        assert first.returncode == 0, first.stderr
        noop = subprocess.run(cosbuild, cwd=root, capture_output=True, text=True, env=ENV)
        assert noop.stdout.count("-- build:") == count, "second run was not a no-op"
        # validate loads and renders everything afresh: the engines' own cost
        validate = [sys.executable, "-m", "cosbuild.cli", "validate"]
        baseline, ours, cold = best([[sys.executable, "-c", HASH_ONLY, "tree"], cosbuild,
                                     validate], root, runs)
    return baseline, ours, cold


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"packages: {args.count}")
    for engine in ("jinja2", "helm"):
        baseline, ours, cold = measure(engine, args.count, args.runs)
        print(f"[{engine}] read+hash baseline: {baseline:.3f} s")
        print(f"[{engine}] cosbuild no-op build: {ours:.3f} s")
        print(f"[{engine}] ratio: {ours / baseline:.1f}x (target <= 5x)")
        print(f"[{engine}] cosbuild validate (load and render all): {cold:.3f} s, "
              f"{cold / baseline:.1f}x the baseline")


if __name__ == "__main__":
    main()
