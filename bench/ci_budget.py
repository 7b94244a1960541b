"""The test suite against CI's budget: `CI=true .ci/run` on a fresh clone, as CI runs it,
for each commit given, one after another in one invocation (the first is the baseline).

"Fresh" as far as builds go: before each run the buildah containers and images, the user's
cosbuild and Go caches and pytest's temporary folders are removed, so the sample is
bootstrapped and built from nothing; the Debian packages stay installed (a run on a new
machine adds their install, about 40 s here). Each clone sits in a temporary folder next to a
link to ../shared, as the checkout has it. Prints each run's time, result and ten slowest
tests, and the ratio of each run to the first. Takes what the runs take (30-60 minutes each).
Usage: python bench/ci_budget.py BASELINE_REV [REV ...]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def clean_machine() -> None:
    subprocess.run(["buildah", "rm", "--all"], capture_output=True)
    subprocess.run(["buildah", "rmi", "--all", "--force"], capture_output=True)
    for cache in ("cosbuild", "go-build"):
        shutil.rmtree(Path.home() / ".cache" / cache, ignore_errors=True)
    shutil.rmtree(Path(tempfile.gettempdir()) / "pytest-of-root", ignore_errors=True)


def ci_run(rev: str, work: Path) -> tuple[float, int, str]:
    """(seconds, exit code, output) of CI on a fresh clone of `rev`."""
    clone = work / rev
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", rev], cwd=clone, check=True)
    clean_machine()
    start = time.monotonic()
    proc = subprocess.run([str(clone / ".ci/run")], cwd=clone, env={**os.environ, "CI": "true"},
                          capture_output=True, text=True)
    return time.monotonic() - start, proc.returncode, proc.stdout + proc.stderr


def slowest(output: str, n: int = 10) -> list[str]:
    """The n slowest tests pytest's --durations printed, over both of make test's runs."""
    found = re.findall(r"^(\d+\.\d+)s (call|setup|teardown)\s+(\S+)", output, re.M)
    return [f"{float(s):8.1f} s  {when:8} {test}"
            for s, when, test in sorted(found, key=lambda f: -float(f[0]))[:n]]


def main(revs: list[str]) -> None:
    if not revs:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "runs"
        work.mkdir()
        (work / "shared").symlink_to(SHARED)   # the clones' ../shared
        first = None
        for rev in revs:
            seconds, code, output = ci_run(rev, work)
            first = first or seconds
            summary = [line for line in output.splitlines() if re.search(r" in \d+\.\d+s", line)]
            print(f"{rev}: {seconds / 60:.1f} min, exit {code}, {seconds / first:.2f} of the first")
            for line in summary + slowest(output):
                print(f"  {line.strip('= ')}")


if __name__ == "__main__":
    main(sys.argv[1:])
