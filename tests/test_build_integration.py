"""Real builds with buildah on a small tree: semantics, artifacts, incremental rebuilds,
interruption and bad input. Slow: marked `integration` (run by `make test`)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid

import pytest
import yaml
import zstandard

from .buildtree import SMALL_TREE
from .conftest import write_files

pytestmark = pytest.mark.integration

# luet's chain: base, app, pd (by fingerprint); pd is built again on app's image, both on that
CHAINED = {
    "tree/both/definition.yaml": "name: both\ncategory: apps\nversion: '1'\n",
    "tree/both/build.yaml": """\
requires:
  - {name: pd, category: apps}
  - {name: app, category: apps}
steps:
  - test -x /usr/bin/hello && cat /out/etc/pd /etc/base-marker > /both
""",
}


def cosbuild(root, *args, env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "cosbuild.cli", *args], cwd=root,
                          capture_output=True, text=True, env=env)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def ran(proc) -> set[str]:
    """The tasks doit executed (not up to date) in a run."""
    return {line.split()[1] for line in proc.stdout.splitlines() if line.startswith(".  ")}


def members(path) -> dict[str, tarfile.TarInfo]:
    data = zstandard.ZstdDecompressor().stream_reader(open(path, "rb")).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def read_member(path, name) -> bytes:
    data = zstandard.ZstdDecompressor().stream_reader(open(path, "rb")).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.extractfile(name).read()


def stray_containers() -> list[str]:
    """cosbuild working containers whose process is gone (others may be building now; the
    containers of failed builds that --keep-failed keeps have no pid in their names)."""
    out = subprocess.run(["buildah", "containers", "--json"], capture_output=True, text=True).stdout
    names = [c["containername"] for c in json.loads(out or "null") or []]
    return [n for n in names if n.startswith("cosbuild-") and n.split("-")[1].isdigit()
            and not os.path.exists(f"/proc/{n.split('-')[1]}")]


@pytest.fixture(scope="module")
def repo_env():
    """A private image repository, so every test module really builds; removed afterwards."""
    repo = f"cosbuild-test/{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "COSBUILD_IMAGE_REPOSITORY": repo}
    env.pop("COSBUILD_VALUES", None)
    yield env
    out = subprocess.run(["buildah", "images", "--json"], capture_output=True, text=True).stdout
    for image in json.loads(out or "null") or []:
        if any(n.startswith(f"localhost/{repo}:") for n in image.get("names") or []):
            subprocess.run(["buildah", "rmi", "-f", image["id"]], capture_output=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory, repo_env):
    """The small tree, built once (in parallel) for the module."""
    root = tmp_path_factory.mktemp("small")
    write_files(root, {**SMALL_TREE, **CHAINED})
    proc = cosbuild(root, "run", "-n", "2", "-P", "thread", "build", env=repo_env)
    assert ran(proc) == {"build:distro/base", "build:apps/app", "build:apps/pd",
                         "build:system/fin", "build:virtual/meta", "build:apps/both"}
    return root


def test_delta_artifact_has_additions_only(built):
    m = members(built / "build/app-apps-1.0.package.tar.zst")
    assert set(m) == {"usr/bin/hello", "usr/bin/hello-link", "usr/share/app", "usr/share/app/info"}
    assert m["usr/bin/hello-link"].islnk() and m["usr/bin/hello-link"].linkname == "usr/bin/hello"
    assert m["usr/bin/hello"].mode == 0o755
    assert all(x.uid == 0 and x.uname == "" and x.mtime == 0 for x in m.values())
    info = read_member(built / "build/app-apps-1.0.package.tar.zst", "usr/share/app/info")
    assert info == b"hello app 1.0 apps none\n"


def test_unpack_artifact_keeps_devices_capabilities_and_excludes(built):
    m = members(built / "build/base-distro-1.package.tar.zst")
    assert "etc/base-marker" in m and "usr/bin/bash" in m
    assert m["dev/null"].ischr() and (m["dev/null"].devmajor, m["dev/null"].devminor) == (1, 3)
    assert not any(n.startswith(("luetbuild", "var/cache/", "var/lib/apt/lists/")) for n in m)
    assert "SCHILY.xattr.security.capability" in m["usr/local/bin/capped"].pax_headers


def test_final_images_includes_and_package_dir_with_copy(built):
    fin = built / "build/fin-system-1.package.tar.zst"
    assert set(members(fin)) == {"fin-info", "usr", "usr/bin", "usr/bin/hello", "usr/bin/hello-link",
                                 "etc", "etc/base-marker"}
    assert read_member(fin, "fin-info") == b"hello app 1.0 apps none\n"
    # the runtime closure (app requires base) was unpacked, the delta of app did not modify base
    assert read_member(fin, "etc/base-marker") == b"base\n"
    pd = members(built / "build/pd-apps-1.package.tar.zst")
    assert set(pd) == {"etc", "etc/pd", "info"}


def test_requires_chain_each_package_on_the_one_before(built):
    both = built / "build/both-apps-1.package.tar.zst"
    assert set(members(both)) == {"both"}
    # pd's steps ran on app's image (which changed base's marker): all three are below `both`
    assert read_member(both, "both") == b"pd\nbase\nchanged\n"
    log = (built / "build/logs/both-apps-1.log").read_text()
    assert "chain image " in log and "apps/pd@1 on " in log


def test_metadata_and_empty_artifact(built):
    meta = yaml.safe_load((built / "build/app-apps-1.0.metadata.yaml").read_text())
    assert meta["compilationspec"]["package"]["name"] == "app" and meta["compressiontype"] == "zstd"
    assert meta["files"] == ["usr/bin/hello", "usr/bin/hello-link", "usr/share/app/info"]
    digest = subprocess.run(["sha256sum", built / "build/app-apps-1.0.package.tar.zst"],
                            capture_output=True, text=True).stdout.split()[0]
    assert meta["checksums"]["sha256"] == digest
    assert meta["dependencies"] == [{"path": "base-distro-1.package.tar.zst", "compilationspec": {
        "package": {"name": "base", "category": "distro", "version": "1"}}}]
    assert meta["runtime"]["name"] == "app" and "steps" in meta["compilationspec"]
    assert meta["package_cacheimage"].endswith(":" + meta["build_hash"])
    assert members(built / "build/meta-virtual-1.package.tar.zst") == {}


def test_no_op_then_incremental_rebuilds(built, repo_env):
    assert ran(cosbuild(built, "run", "build", env=repo_env)) == set()
    (built / "tree/app/hello.sh").write_text("#!/bin/sh\necho hello again\n")
    assert ran(cosbuild(built, "run", "build", env=repo_env)) == {
        "build:apps/app", "build:apps/pd", "build:system/fin", "build:apps/both"}
    # fin's image: the base's layer is reused, app's made again
    log = (built / "build/logs/fin-system-1.log").read_text()
    assert re.search(r"layer \S+:layers-[0-9a-f]{64} \(distro/base@1 and below\) exists", log)
    assert not re.search(r"\(apps/app@1\.0 and below\) exists", log), log
    # a values key only app uses
    (built / "values").mkdir(exist_ok=True)
    (built / "values/bookworm.yaml").write_text("flag: on\nunused: 1\n")
    assert ran(cosbuild(built, "run", "build", env=repo_env)) == {
        "build:apps/app", "build:apps/pd", "build:system/fin", "build:apps/both"}
    (built / "values/bookworm.yaml").write_text("flag: on\nunused: 2\n")
    assert ran(cosbuild(built, "run", "build", env=repo_env)) == set()
    # a deleted artifact: rewritten from the existing images, nothing else
    before = (built / "build/pd-apps-1.package.tar.zst").read_bytes()
    (built / "build/pd-apps-1.package.tar.zst").unlink()
    proc = cosbuild(built, "run", "build", env=repo_env)
    assert ran(proc) == {"build:apps/pd"}
    assert (built / "build/pd-apps-1.package.tar.zst").read_bytes() == before


def test_removed_image_is_rebuilt_byte_identical(built, repo_env):
    meta = yaml.safe_load((built / "build/app-apps-1.0.metadata.yaml").read_text())
    before = (built / "build/app-apps-1.0.package.tar.zst").read_bytes()
    subprocess.run(["buildah", "rmi", "-f", meta["package_cacheimage"]], check=True, capture_output=True)
    missing = f"its image {meta['package_cacheimage']} is not in the local image store"
    assert cosbuild(built, "why", "apps/app", env=repo_env).stdout.splitlines()[1:] == \
        [f"- {missing}"]
    proc = cosbuild(built, "run", "build", env={**repo_env, "COSBUILD_VERBOSE": "1"})
    assert ran(proc) == {"build:apps/app"}
    assert "(built;" in proc.stdout
    assert f"apps/app@1.0: why: {missing}\n" in proc.stdout
    assert (built / "build/app-apps-1.0.package.tar.zst").read_bytes() == before
    assert cosbuild(built, "why", "apps/app", env=repo_env).stdout.startswith(
        "apps/app@1.0: unchanged: reused")


def _assert_clean(root):
    assert stray_containers() == []
    assert list((root / "build").glob("**/.*.tmp")) == []


def test_failing_step_is_reported(built, repo_env):
    root = built.parent / "failing"
    write_files(root, {**SMALL_TREE, "tree/app/build.yaml":
                       "requires:\n  - {name: base, category: distro}\n"
                       "steps:\n  - echo one\n  - echo to-the-log; exit 7\n"})
    proc = cosbuild(root, "run", "build:apps/app", env=repo_env, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    for fragment in ("apps/app@1.0: step 2 (echo to-the-log; exit 7)", "exit code 7",
                     "to-the-log", "build/logs/app-apps-1.0.log"):
        assert fragment in out
    assert "Traceback" not in out
    assert not (root / "build/app-apps-1.0.package.tar.zst").exists()
    _assert_clean(root)


@pytest.mark.parametrize("name, build_yaml, expected", [
    ("missing image", "image: localhost/cosbuild-no-such-image:1\nsteps: ['true']\n",
     "image localhost/cosbuild-no-such-image:1 cannot be found locally and cannot be pulled"),
    ("copy source missing", "requires:\n  - {name: base, category: distro}\ncopy:\n"
     "  - package: {name: base, category: distro}\n    source: /no/such/file\n    destination: /x\n",
     "copy /no/such/file from distro/base"),
    ("package_dir missing", "requires:\n  - {name: base, category: distro}\n"
     "steps: ['true']\npackage_dir: /nowhere\n", "package_dir /nowhere does not exist"),
])
def test_build_errors(built, repo_env, name, build_yaml, expected):
    root = built.parent / name.replace(" ", "-")
    write_files(root, {**SMALL_TREE, "tree/pd/build.yaml": build_yaml})
    proc = cosbuild(root, "run", "build:apps/pd", env=repo_env, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and expected in out, out
    assert "Traceback" not in out
    assert not (root / "build/pd-apps-1.package.tar.zst").exists()
    _assert_clean(root)


def test_buildah_missing(built, repo_env, tmp_path):
    root = tmp_path / "nobuildah"
    write_files(root, SMALL_TREE)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "env"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    proc = cosbuild(root, "run", "build:apps/app", env={**repo_env, "PATH": str(bin_dir)}, check=False)
    assert proc.returncode != 0
    assert "buildah is not installed" in proc.stdout + proc.stderr
    assert "apt-get install buildah" in proc.stdout + proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_build_leaves_nothing_and_resumes(built, repo_env, sig):
    root = built.parent / f"interrupt-{sig.name}"
    write_files(root, {**SMALL_TREE, "tree/app/build.yaml": SMALL_TREE["tree/app/build.yaml"]
                       + "  - sleep 15\n", "tree/app/slow": sig.name})
    # as Ctrl-C in a terminal: a test run started in the background inherits SIGINT ignored,
    # and so would the build, which then could not be interrupted
    proc = subprocess.Popen([sys.executable, "-m", "cosbuild.cli", "run", "build:apps/app"],
                            cwd=root, env=repo_env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not any("step 5" in l or "sleep 15" in l for l in _log_lines(root)):
        assert time.monotonic() < deadline and proc.poll() is None, "build never reached the step"
        time.sleep(0.2)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)
    assert not (root / "build/app-apps-1.0.package.tar.zst").exists()
    if sig == signal.SIGINT:
        _assert_clean(root)
    # the next run removes what a SIGKILL left and completes; doit records finished tasks
    # when it exits, so after SIGKILL distro/base runs again, but only to write its artifact
    proc = cosbuild(root, "run", "build:apps/app", env=repo_env)
    assert "build:apps/app" in ran(proc)
    if "build:distro/base" in ran(proc):
        assert "exist: reusing them" in (root / "build/logs/base-distro-1.log").read_text()
    _assert_clean(root)


def _log_lines(root):
    log = root / "build/logs/app-apps-1.0.log"
    return log.read_text().splitlines() if log.exists() else []


def test_repository_install_with_requirements_and_finalizer(built, repo_env, tmp_path):
    cosbuild(built, "run", "repo", env=repo_env)
    assert (built / "build/repository.yaml").is_file()
    root = tmp_path / "root"
    proc = cosbuild(built, "install", "--repo", str(built / "build"), "--root", str(root),
                    "apps/app", env=repo_env)
    assert "installed: distro/base@1, apps/app@1.0" in proc.stdout
    assert (root / "usr/bin/hello").read_bytes() == read_member(
        built / "build/app-apps-1.0.package.tar.zst", "usr/bin/hello")
    assert os.stat(root / "usr/bin/hello").st_ino == os.stat(root / "usr/bin/hello-link").st_ino
    assert os.getxattr(root / "usr/local/bin/capped", "security.capability")
    # the finalizer ran inside the root, after both packages were in place
    assert (root / "var/lib/app-finalized").read_text() == "finalized base\n"
    assert not (root / ".cosbuild-transaction").exists()


def test_unpack_image(built, repo_env, tmp_path):
    meta = yaml.safe_load((built / "build/base-distro-1.metadata.yaml").read_text())
    dest = tmp_path / "unpacked"
    cosbuild(built, "unpack", meta["package_cacheimage"], str(dest), env=repo_env)
    assert (dest / "etc/base-marker").read_text() == "base\n"
    assert (dest / "usr/bin/bash").is_file()
    proc = cosbuild(built, "unpack", meta["package_cacheimage"], str(dest), env=repo_env, check=False)
    assert proc.returncode == 1 and "exists and is not an empty folder" in proc.stderr


def test_caches_outlive_builds_and_stay_out_of_images(tmp_path, repo_env):
    """A `caches` folder is the same host folder at every build of its package (what an
    earlier build left is there), bound for the steps only: the image and the artifact have
    an empty mount point at most."""
    root = write_files(tmp_path, {**{k: v for k, v in SMALL_TREE.items()
                                     if k.startswith("tree/base/")},
                                  "tree/c/definition.yaml": "name: c\ncategory: apps\nversion: '1'\n",
                                  "tree/c/build.yaml": """\
requires:
  - {name: base, category: distro}
caches: [/var/cache/counter]
steps:
  - echo run >> /var/cache/counter/runs && wc -l < /var/cache/counter/runs > /runs
"""})
    cosbuild(root, "run", "build", env=repo_env)
    assert read_member(root / "build/c-apps-1.package.tar.zst", "runs") == b"1\n"
    spec = root / "tree/c/build.yaml"
    spec.write_text(spec.read_text() + "  - echo again\n")
    cosbuild(root, "run", "build", env=repo_env)
    assert read_member(root / "build/c-apps-1.package.tar.zst", "runs") == b"2\n"
    assert (root / "build/caches/apps-c/var_cache_counter/runs").read_text() == "run\nrun\n"
    names = members(root / "build/c-apps-1.package.tar.zst")
    assert not any(n.endswith("counter/runs") for n in names), sorted(names)
