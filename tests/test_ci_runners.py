"""`cosbuild plan` run for real: three CI runners (tests/ci_runner.py: separate processes,
each with its own empty image store) take the JSON plan's jobs as their needs allow, images
moving through a real registry on 127.0.0.1. The repository and ISO they make are
byte-identical to a single machine's, and no package is built twice."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from .buildtree import SMALL_TREE
from .ci_runner import checkout_files
from .conftest import write_files
from .test_build_integration import cosbuild
from .test_iso import ISO_YAML
from .test_shared_cache import empty_image_store, env_for, remove_images

pytestmark = pytest.mark.integration

RUNNERS = 3
DEADLINE = 1200   # seconds for the whole plan: the base's bootstrap is most of it

# packages an ISO is made of (a fake kernel: nothing boots it), built on the small tree's base
ISO_TREE = {
    "iso.yaml": ISO_YAML,
    "tree/os/definition.yaml": "name: os\ncategory: system\nversion: '1'\n",
    "tree/os/build.yaml": """\
requires:
  - {name: base, category: distro}
steps:
  - echo kernel > /boot/vmlinuz-1 && echo initrd > /boot/initrd.img-1
  - ln -s vmlinuz-1 /boot/vmlinuz && ln -s initrd.img-1 /boot/initrd
  - echo 'NAME="test"' > /etc/os-release.test
""",
    "tree/efi/definition.yaml": "name: efi\ncategory: live\nversion: '1'\n",
    "tree/efi/build.yaml": """\
requires:
  - {name: base, category: distro}
steps:
  - mkdir -p /out/EFI/BOOT && printf 'MZ efi' > /out/EFI/BOOT/BOOTX64.EFI
package_dir: /out
""",
    "tree/bios/definition.yaml": "name: bios\ncategory: live\nversion: '1'\n",
    "tree/bios/build.yaml": r"""
requires:
  - {name: base, category: distro}
steps:
  - mkdir -p /out/boot/syslinux
  - cd /out/boot/syslinux && { head -c 64 /dev/zero; printf '\373\300\170\160'; head -c 1000 /dev/zero; } > isolinux.bin
  - cd /out/boot/syslinux && head -c 512 /dev/zero | tr '\000' 3 > isohdpfx.bin && echo 'DEFAULT live' > isolinux.cfg
package_dir: /out
""",
}
IMAGE_PACKAGES = {"distro/base", "apps/app", "apps/pd", "system/fin", "system/os",
                  "live/efi", "live/bios"}
DONE = re.compile(r"^\[\d+/\d+\] (\S+?)@\S+: done in [\d.]+s \(([^;)]*)", re.M)


def how_made(text: str) -> list[tuple[str, str]]:
    """(package id, how its images were got) of each build a cosbuild run reports."""
    return [(key, how) for key, how in DONE.findall(text)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, registry):
    """The project, its cache repository in the registry, and a single machine's build of
    the repository and ISO with the same settings (built before the registry has anything)."""
    folder = tmp_path_factory.mktemp("runners")
    project = write_files(folder / "project", {**SMALL_TREE, **ISO_TREE})
    cache = f"{registry}/cosbuild-test-{uuid.uuid4().hex[:8]}/runners"
    # the time stamp of what every job makes: the plan passes it on (a CI user sets it to
    # the commit's time); unset, each repository.yaml would hold the time it was written
    env = {**env_for(image_repository=cache, insecure_registries=registry),
           "SOURCE_DATE_EPOCH": "1700000000"}
    single = folder / "single"
    shutil.copytree(project, single)
    try:
        with empty_image_store(folder / "store-single") as storage:
            proc = cosbuild(single, "run", "-n", "2", "-P", "thread", "repo", "iso",
                            env={**env, **storage})
        assert {key for key, how in how_made(proc.stdout) if how == "built"} == IMAGE_PACKAGES
        yield folder, project, cache, env, single
    finally:
        remove_images(f"{cache}:")


def test_a_job_run_before_the_jobs_it_needs_fails_naming_them(setup, tmp_path):
    folder, project, cache, env, _ = setup
    plan = json.loads(cosbuild(project, "plan", env=env).stdout)
    job = next(j for j in plan["jobs"] if j["name"] == "build-system-fin")
    checkout = tmp_path / "checkout"
    shutil.copytree(project, checkout, ignore=checkout_files(project))
    with empty_image_store(tmp_path / "store") as storage:
        proc = cosbuild(checkout, *job["argv"][1:], env={**env, **storage}, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out
    assert "distro/base@1: its images" in out and "from_cache_only forbids building it" in out
    assert cache in out and "the job that builds distro/base must run and push first" in out
    assert not list((checkout / "build").glob("*.package.tar.zst"))


def test_three_runners_build_each_package_once_and_match_a_single_machine(setup):
    folder, project, cache, env, single = setup
    plan_file = folder / "plan.json"
    cosbuild(project, "plan", "--format", "json", "--output", str(plan_file), env=env)
    plan = json.loads(plan_file.read_text())
    state = folder / "state"
    for name in ("claimed", "done", "failed", "logs"):
        (state / name).mkdir(parents=True)
    deadline = time.time() + DEADLINE
    with empty_image_store(folder / "store-1") as s1, \
            empty_image_store(folder / "store-2") as s2, \
            empty_image_store(folder / "store-3") as s3:
        runners = [subprocess.Popen(
            [sys.executable, "-m", "tests.ci_runner", str(plan_file), str(state), f"r{n}",
             str(project), str(folder / f"work-{n}"), storage["CONTAINERS_STORAGE_CONF"],
             str(deadline)], cwd=Path(__file__).parent.parent, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for n, storage in enumerate((s1, s2, s3), 1)]
        codes = [r.wait(timeout=DEADLINE + 60) for r in runners]
    logs = {p.stem: p.read_text() for p in (state / "logs").iterdir()}
    names = [j["name"] for j in plan["jobs"]]
    assert codes == [0] * RUNNERS and not list((state / "failed").iterdir()), \
        [r.stdout.read() for r in runners] + list(logs.values())
    assert sorted(p.name for p in (state / "done").iterdir()) == sorted(names)

    # each job started after the jobs it needs had ended, on some runner
    claims = {p.name: json.loads(p.read_text()) for p in (state / "claimed").iterdir()}
    ends = {p.name: json.loads(p.read_text())["ended"] for p in (state / "done").iterdir()}
    for job in plan["jobs"]:
        assert set(job["needs"]) <= set(claims[job["name"]]["done_before"])
        assert all(ends[n] <= claims[job["name"]]["started"] for n in job["needs"])
    assert len({c["runner"] for c in claims.values()}) > 1, claims   # in parallel, really

    # every package built exactly once, in its own job; every other run pulled it
    made = [(job, key, how) for job, text in logs.items() for key, how in how_made(text)]
    built = Counter(key for _, key, how in made if how.startswith("built"))
    assert built == Counter(IMAGE_PACKAGES), made
    assert all(job == f"build-{key.replace('/', '-')}" for job, key, how in made
               if how.startswith("built"))
    assert all(how.startswith(("images pulled", "images reused", "no images", "built"))
               for _, _, how in made), made

    # what the final jobs left is what a single machine makes, byte for byte
    final = {j["name"]: j for j in plan["jobs"] if j["name"] in ("repository", "iso")}
    assert set(final) == {"repository", "iso"}
    for name, job in final.items():
        checkout = next(folder.glob(f"work-*/{name}"))
        assert job["outputs"]
        for rel in job["outputs"]:
            assert (checkout / rel).read_bytes() == (single / rel).read_bytes(), rel
    assert any(rel.endswith(".iso") for rel in final["iso"]["outputs"])
