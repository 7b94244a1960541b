"""`cosbuild shell CAT/NAME`: a command in the package's builder image or in the container
its failed build kept (`--keep-failed`). The unit tests play buildah with a stand-in on PATH;
the integration tests build the small tree with the real one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest

from cosbuild import cli, settings
from cosbuild.builds.buildah import Buildah, BuildahSettings
from cosbuild.tools import TaskLog

from .buildtree import SMALL_TREE
from .conftest import BASIC, write_files
from .test_build_integration import cosbuild, repo_env, stray_containers  # noqa: F401 (a fixture)

# ----------------------------------------------------------------------------- unit

# answers `containers --json` with the container of a failed build of app/app, and records
# any other call; `run` exits as a command that failed with 4 would
FAKE_BUILDAH = """#!/bin/sh
echo "$@" >> {calls}
case "$1" in
  containers) echo '[{{"containername": "cosbuild-failed-app-app"}}]' ;;
  images) echo '[]' ;;
  run) exit 4 ;;
esac
"""


@pytest.fixture
def fake_buildah(project, tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    fake = tmp_path / "bin/buildah"
    fake.parent.mkdir()
    fake.write_text(FAKE_BUILDAH.format(calls=calls))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    project(BASIC)
    return calls


def test_the_command_after_double_dash_runs_in_the_kept_container(fake_buildah, run_cli):
    code, out, err = run_cli("shell", "app/app", "--keep-failed", "--", "sh", "-c", "ls -v")
    assert code == 4, err   # the command's exit status
    assert "in cosbuild-failed-app-app, the container its failed build kept" in err
    run = [line for line in fake_buildah.read_text().splitlines() if line.startswith("run")]
    assert run == ["run --isolation chroot cosbuild-failed-app-app -- sh -c ls -v"]


def test_without_a_command_it_opens_an_interactive_shell(fake_buildah, run_cli):
    run_cli("shell", "app/app")
    run = [line for line in fake_buildah.read_text().splitlines() if line.startswith("run")]
    assert run == ["run --isolation chroot cosbuild-failed-app-app -- /bin/sh -c "
                   "if command -v bash >/dev/null; then exec bash; else exec sh; fi"]


def test_keep_failed_is_a_setting():
    assert settings.resolve({}, env={}).keep_failed is False
    assert settings.resolve({}, env={"COSBUILD_KEEP_FAILED": "yes"}).keep_failed is True
    argv, _ = cli._hoist_global_options(["build", "a/b", "--keep-failed"])
    args = cli._parser().parse_args(argv)
    assert settings.resolve({"keep_failed": args.keep_failed}, env={}).keep_failed is True


@pytest.mark.parametrize("files, ref, expected", [
    (BASIC, "app/nope", "app/nope"),
    ({**BASIC, "tree/meta/definition.yaml": "name: meta\ncategory: virtual\nversion: '1'\n"},
     "virtual/meta", "virtual/meta@1 builds without containers: it has no builder image to open"),
], ids=["unknown-package", "no-image"])
def test_errors_are_one_message(project, run_cli, files, ref, expected):
    project(files)
    code, out, err = run_cli("shell", ref, "--", "true")
    assert code == 1 and expected in err and "Traceback" not in err, err


def test_buildah_missing(project, run_cli, tmp_path, monkeypatch):
    project(BASIC)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    code, out, err = run_cli("shell", "app/app")
    assert code == 1 and "buildah is not installed" in err and "apt-get install buildah" in err


def test_the_cleanup_of_interrupted_runs_leaves_kept_containers_alone(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    fake = tmp_path / "bin/buildah"
    fake.parent.mkdir()
    fake.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
[ "$1" = containers ] && echo '[{{"containername": "cosbuild-999999999-0"}}, \
{{"containername": "cosbuild-failed-app-app"}}, {{"containername": "other"}}]'
exit 0
""")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    left = Buildah(BuildahSettings()).remove_stale_containers(TaskLog(tmp_path / "log"))
    assert left == {"cosbuild-failed-app-app", "other"}
    assert calls.read_text().splitlines() == ["containers --json", "rm cosbuild-999999999-0"]


# ----------------------------------------------------------------------------- integration

# named for this run: its kept container's name is global to the machine's buildah storage
BROKEN = f"broken{uuid.uuid4().hex[:8]}"
BROKEN_TREE = {
    "tree/broken/definition.yaml": f"name: {BROKEN}\ncategory: apps\nversion: '1'\n",
    "tree/broken/build.yaml": """\
requires:
  - {name: base, category: distro}
steps:
  - echo left-by-step-1 > /luetbuild/leftover
  - echo to-the-log; exit 7
""",
}
KEPT = f"cosbuild-failed-apps-{BROKEN}"


def containers() -> set[str]:
    out = subprocess.run(["buildah", "containers", "--json"], capture_output=True, text=True,
                         check=True).stdout
    return {c["containername"] for c in json.loads(out or "null") or []}


@pytest.fixture(scope="module")
def root(tmp_path_factory, repo_env):  # noqa: F811
    if not shutil.which("buildah"):
        pytest.skip("buildah is not installed")
    root = tmp_path_factory.mktemp("shell")
    write_files(root, {**SMALL_TREE, **BROKEN_TREE})
    yield root
    subprocess.run(["buildah", "rm", KEPT], capture_output=True)


@pytest.mark.integration
def test_a_command_in_the_builder_image(root, repo_env):  # noqa: F811
    # the first run builds what is missing (on stderr): stdout is the command's alone
    proc = cosbuild(root, "shell", "apps/app", "--", "sh", "-c",
                    "pwd; ls /luetbuild; echo $GREETING $PACKAGE_NAME; cat /prelude-only/file; "
                    "test -e /usr/share/app/info || echo no-steps-yet", env=repo_env)
    assert proc.stdout.split() == ["/luetbuild", "build.yaml", "definition.yaml",
                                   "finalize.yaml", "hello.sh", "hello", "app", "p",
                                   "no-steps-yet"], proc.stderr
    assert "in a new container of its builder image" in proc.stderr
    assert cosbuild(root, "shell", "apps/app", "--", "false", env=repo_env,
                    check=False).returncode == 1
    assert stray_containers() == []


@pytest.mark.integration
def test_a_failed_step_is_kept_only_when_asked(root, repo_env):  # noqa: F811
    ref = f"apps/{BROKEN}"
    proc = cosbuild(root, "build", ref, env=repo_env, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "step 2 (echo to-the-log; exit 7)" in out, out
    assert "kept" not in out and KEPT not in containers() and stray_containers() == []

    proc = cosbuild(root, "build", ref, "--keep-failed", env=repo_env, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "step 2 (echo to-the-log; exit 7)" in out, out
    assert f"its container is kept as {KEPT}: `cosbuild shell {ref}` opens it" in out
    # as the failed step left it: step 1's file is there
    proc = cosbuild(root, "shell", ref, "--", "cat", "leftover", env=repo_env)
    assert proc.stdout == "left-by-step-1\n"
    assert f"in {KEPT}, the container its failed build kept" in proc.stderr
    assert KEPT in containers()

    # fixed: the successful build removes it
    write_files(root, {"tree/broken/build.yaml": BROKEN_TREE["tree/broken/build.yaml"]
                       .replace("exit 7", "true")})
    cosbuild(root, "build", ref, env=repo_env)
    assert KEPT not in containers() and stray_containers() == []
