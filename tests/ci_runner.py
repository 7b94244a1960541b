"""A CI runner for the tests of `cosbuild plan`: one process, a machine of its own.

    python -m tests.ci_runner PLAN STATE NAME PROJECT WORK STORAGE_CONF DEADLINE

Runners share only STATE (a folder: which jobs are claimed, done or failed, under a lock,
as a CI engine keeps them) and the registry the plan's jobs push to. A runner takes the
first unclaimed job whose `needs` are all done and runs it as a CI job is run: in a fresh
copy of PROJECT (the checkout) under WORK, with the plan's environment, its own image store
(STORAGE_CONF, kept between its jobs as a runner's is) and `cosbuild` for argv[0]. It stops
when every job is claimed, when a job failed anywhere, or at DEADLINE (seconds since the
epoch)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def checkout_files(project):
    """copytree's ignore: a checkout has no build folder (git ignores it)."""
    return lambda folder, names: ["build"] if Path(folder) == Path(project) else []


def _claim(plan: dict, state: Path, name: str) -> dict | None | bool:
    """The job this runner takes now; None when none is ready yet, False when there is
    nothing left to do (all claimed, or one failed)."""
    with open(state / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if any((state / "failed").iterdir()):
            return False
        done = {p.name for p in (state / "done").iterdir()}
        claimed = {p.name for p in (state / "claimed").iterdir()}
        if claimed >= {j["name"] for j in plan["jobs"]}:
            return False
        for job in plan["jobs"]:
            if job["name"] not in claimed and set(job["needs"]) <= done:
                record = {"runner": name, "started": time.time(), "done_before": sorted(done)}
                (state / "claimed" / job["name"]).write_text(json.dumps(record))
                return job
        return None


def main(plan_file, state, name, project, work, storage_conf, deadline) -> int:
    plan, state, work = json.loads(Path(plan_file).read_text()), Path(state), Path(work)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("COSBUILD_") and k != "CONTAINERS_STORAGE_CONF"}
    env.update(plan["env"], CONTAINERS_STORAGE_CONF=storage_conf)
    while time.time() < float(deadline):
        job = _claim(plan, state, name)
        if job is False:
            return 0
        if job is None:
            time.sleep(0.5)
            continue
        checkout = work / job["name"]
        shutil.copytree(project, checkout, ignore=checkout_files(project))
        argv = [sys.executable, "-m", "cosbuild.cli", *job["argv"][1:]]
        with open(state / "logs" / f"{job['name']}.log", "w") as log:
            log.write(f"runner {name}: {job['run']}\n")
            log.flush()
            code = subprocess.run(argv, cwd=checkout, env=env, stdout=log, stderr=log,
                                  timeout=max(1.0, float(deadline) - time.time())).returncode
        with open(state / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            (state / ("done" if code == 0 else "failed") / job["name"]).write_text(
                json.dumps({"runner": name, "ended": time.time(), "code": code}))
    print(f"runner {name}: deadline passed", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
