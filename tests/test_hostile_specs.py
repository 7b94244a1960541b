"""Hostile specs and local mistakes (issue 14): finalize.yaml types, iso.yaml/disk.yaml and
cloud-config under `validate`, and the CLI's local mistakes. Each is one clear error naming
the file or key, a non-zero exit, no traceback, and nothing written where it must not be."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cosbuild.errors import CosbuildError
from cosbuild.repos.index import load_repository

from .conftest import BASIC, REPO
from .test_repository_client import disk, read_tar_zst, sha256, write_tar_zst, member, ws  # noqa: F401

ISO = "packages:\n  rootfs: [app/app]\n"
DISK = "system: [app/app]\n"


def refused(result, *fragments):
    code, out, err = result
    assert code not in (0, None), (out, err)
    assert "Traceback" not in err
    assert err.startswith("cosbuild: error: "), err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    return err


def console(root: Path, *args: str, argv0=(sys.executable, "-m", "cosbuild.cli"), **kw):
    proc = subprocess.run([*argv0, *args], cwd=root, capture_output=True, text=True, **kw)
    return proc.returncode, proc.stdout, proc.stderr


# --------------------------------------------------------------------------- finalize.yaml

@pytest.mark.parametrize("text, fragment", [
    ("install: 'echo hi'\n", "finalize.yaml (rendered):1: install: expected a list, got str"),
    ("install: [echo hi]\nshell: bash -c\n",
     "finalize.yaml (rendered):2: shell: expected a list, got str"),
    ("install:\n  - {echo: hi}\n", "finalize.yaml (rendered):1: install: expected a string, got a mapping"),
    ("install: {a: b}\n", "finalize.yaml (rendered):1: install: expected a list, got a mapping"),
])
def test_finalizer_keyword_types_are_strict(project, run_cli, text, fragment):
    project({**BASIC, "tree/app/finalize.yaml": text})
    refused(run_cli("validate"), "tree/app/" + fragment)


@pytest.mark.parametrize("text, fragment", [
    (b"install: 'echo hi'\n", "install: expected a list, got str"),
    (b"install: [x]\nshell: sh\n", "shell: expected a list, got str"),
    (b"instal: [x]\ninstall: 5\n", "install: expected a list, got int"),   # unknown keys lenient
])
def test_a_repository_finalizer_of_the_wrong_type_is_refused(ws, text, fragment):  # noqa: F811
    """A repository's finalize.yaml is read leniently (unknown keys ignored), never with a
    string taken as a list of one-character commands."""
    ws.add("fin", files={"etc/fin": "x\n"}, finalize=["echo ok"])
    repo = ws.publish()
    tree = read_tar_zst(repo / "tree.tar.zst")
    tree["test/fin/1.0/finalize.yaml"] = text
    write_tar_zst(repo / "tree.tar.zst", [member(name, data=data) for name, data in tree.items()])
    index = yaml.safe_load((repo / "repository.yaml").read_text())
    index["repo_files"]["tree"]["checksums"]["sha256"] = sha256(repo / "tree.tar.zst")
    (repo / "repository.yaml").write_text(yaml.safe_dump(index))
    with pytest.raises(CosbuildError) as info:
        load_repository(disk(repo), ws.base / "work")
    assert "tree/test/fin/1.0/finalize.yaml" in str(info.value)
    assert fragment in str(info.value)


def test_a_repository_definition_with_an_unsafe_name_is_refused(ws):  # noqa: F811
    ws.add("pkg", files={"etc/pkg": "x\n"})
    repo = ws.publish()
    tree = read_tar_zst(repo / "tree.tar.zst")
    tree["test/pkg/1.0/definition.yaml"] = b"name: ../../../etc\ncategory: test\nversion: '1.0'\n"
    write_tar_zst(repo / "tree.tar.zst", [member(name, data=data) for name, data in tree.items()])
    index = yaml.safe_load((repo / "repository.yaml").read_text())
    index["repo_files"]["tree"]["checksums"]["sha256"] = sha256(repo / "tree.tar.zst")
    (repo / "repository.yaml").write_text(yaml.safe_dump(index))
    with pytest.raises(CosbuildError, match=r"tree/test/pkg/1.0/definition.yaml:1: name: "
                                            r"invalid package name '../../../etc'"):
        load_repository(disk(repo), ws.base / "work")


# --------------------------------------------------------------------------- iso.yaml, disk.yaml

@pytest.mark.parametrize("option, text, fragments", [
    ("--iso", "packages:\n  rootfs: app/app\n", ["bad.yaml:2: rootfs: expected a list"]),
    ("--iso", "packages:\n  rootfs: [app/nope]\n",
     ["bad.yaml:2: packages.rootfs: app/nope, but no version satisfies it"]),
    ("--iso", "packages:\n  rootfs: [app/app]\n  uefi: [../x/y]\n",
     ["bad.yaml:3: packages.uefi: invalid category '../x'"]),
    ("--iso", ISO + "image_prefix: ../../\nimage_name: x\n",
     ["bad.yaml:4: image_name: '../../x.iso' cannot name a file in the build folder"]),
    ("--iso", ISO + "label: [1]\n", ["bad.yaml:3: label: expected a string"]),
    ("--iso", "- a\n", ["bad.yaml:1: expected a mapping at the top level"]),
    ("--iso", "packages: [\n", ["bad.yaml:2: invalid YAML"]),
    ("--disk", "system: [app/nope]\n",
     ["bad.yaml:1: system: app/nope, but no version satisfies it"]),
    ("--disk", DISK + "name: ../x\n", ["bad.yaml:2: name: '../x' cannot name a file"]),
    ("--disk", DISK + "name: ..\n", ["bad.yaml:2: name: '..' cannot name a file"]),
    ("--disk", DISK + "image_size: 1.5\n", ["bad.yaml:2: image_size: expected a size in MiB"]),
    ("--disk", "system: app/app\n", ["bad.yaml:1: system: expected a list"]),
])
def test_validate_reads_the_given_iso_or_disk_file(project, run_cli, option, text, fragments):
    project({**BASIC, "bad.yaml": text})
    refused(run_cli(option, "bad.yaml", "validate"), *fragments)
    # and `doit iso`/`doit image` never get a task made of it: listing the tasks fails alike
    refused(run_cli(option, "bad.yaml", "list"), fragments[0].split(":")[0])


@pytest.mark.parametrize("how", ["option", "env"])
@pytest.mark.parametrize("name", ["iso", "disk"])
def test_a_missing_spec_file_that_was_named_is_an_error(project, run_cli, monkeypatch, how, name):
    project(BASIC)
    if how == "env":
        monkeypatch.setenv(f"COSBUILD_{name.upper()}", "nope.yaml")
        result = run_cli("validate")
    else:
        result = run_cli(f"--{name}", "nope.yaml", "validate")
    refused(result, f"nope.yaml: --{name} / COSBUILD_{name.upper()}: not found")


def test_a_spec_file_that_is_a_folder_is_an_error(project, run_cli):
    root = project(BASIC)
    (root / "iso.d").mkdir()
    refused(run_cli("--iso", "iso.d", "validate"), "iso.d: --iso / COSBUILD_ISO: not a file")


def test_the_default_spec_files_may_be_absent(project, run_cli):
    project(BASIC)
    code, out, err = run_cli("validate")
    assert code == 0, err


def test_overlay_cloud_config_is_validated(project, run_cli):
    project({**BASIC, "iso.yaml": ISO + "overlay:\n  rootfs: overlay\n",
             "overlay/oem/99_bad.yaml": "stages:\n  boot:\n    - files: {path: /x}\n",
             "overlay/oem/98_good.yaml": "stages:\n  boot:\n    - commands: ['true']\n"})
    err = refused(run_cli("validate"), "overlay/oem/99_bad.yaml:3: stages.boot[1].files: "
                                       "expected a list, got a mapping")
    assert "98_good" not in err


def test_package_cloud_config_is_validated(project, run_cli):
    project({**BASIC, "tree/app/oem/10_x.yaml":
             "stages:\n  initramfs:\n    - files:\n        - path: /etc/x\n"
             "          permissions: 'rwx'\n"})
    refused(run_cli("validate"), "tree/app/oem/10_x.yaml:5: stages.initramfs[1].files[1].permissions: "
                                 "invalid permissions 'rwx'")


def test_a_fifo_in_a_package_folder_does_not_block_validate(project, run_cli):
    root = project(BASIC)
    os.mkfifo(root / "tree/app/pipe.yaml")
    refused(run_cli("validate"), "tree/app/pipe.yaml: not a regular file, folder or link")


# --------------------------------------------------------------------------- doit task loading

def test_doit_itself_prints_the_one_line_error(project):
    """`doit list` through this repository's dodo.py, not through cosbuild's CLI."""
    root = project({**BASIC, "iso.yaml": "packages:\n  rootfs: [app/nope]\n"})
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for args in (["list"], ["info", "validate"], ["run", "render"]):
        err = refused(console(root, *args, argv0=(sys.executable, "-m", "doit"), env=env),
                      "iso.yaml:2: packages.rootfs: app/nope, but no version satisfies it")
        assert err.count("\n") == 1, err
    assert not (root / "build/specs").exists()   # no task ran


def test_cosbuild_list_with_a_bad_iso_yaml(project):
    root = project({**BASIC, "iso.yaml": "packages:\n  rootfs: app/app\n"})
    refused(console(root, "list"), "iso.yaml:2: rootfs: expected a list")


# --------------------------------------------------------------------------- local mistakes

@pytest.mark.parametrize("command", [["search"], ["install", "--root", "r", "a/b"],
                                     ["upgrade", "--root", "r"]])
def test_config_missing_or_not_yaml(project, run_cli, command):
    root = project({"bad.yaml": "repositories: [\n"})
    (root / "r").mkdir()
    (root / "dir.yaml").mkdir()
    refused(run_cli(*command, "--config", "nope.yaml"), "nope.yaml: --config: not found")
    refused(run_cli(*command, "--config", "dir.yaml"), "dir.yaml: --config: not a file")
    refused(run_cli(*command, "--config", "bad.yaml"), "bad.yaml:2: invalid YAML")


@pytest.mark.parametrize("command", [["install", "--repo", ".", "a/b"], ["upgrade", "--repo", "."],
                                     ["uninstall", "a/b"]])
def test_root_that_is_a_file(project, run_cli, command):
    root = project({"afile": "keep\n"})
    refused(run_cli(*command, "--root", "afile"), "afile: --root: not a folder")
    assert (root / "afile").read_text() == "keep\n"


@pytest.mark.parametrize("command", [["validate"], ["graph"], ["render", "app/app"], ["list"],
                                     ["run", "render"]])
def test_build_folder_that_is_a_file(project, run_cli, command):
    root = project({**BASIC, "afile": "keep\n"})
    refused(run_cli("--build-dir", "afile", *command),
            "afile: build_dir: the build folder is not a folder")
    refused(run_cli("--build-dir", "afile/sub", *command),
            "afile/sub: build_dir: cannot make the build folder: Not a directory")
    assert (root / "afile").read_text() == "keep\n"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root to run the command as another user")
def test_build_folder_that_cannot_be_written(project):
    root = project(BASIC)
    (root / "build").mkdir(mode=0o755)   # root's: another user cannot write there
    modes = {path: os.stat(path).st_mode for path in (root, *root.parents)}
    argv0 = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-m", "cosbuild.cli")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        for path, mode in modes.items():
            os.chmod(path, mode | 0o005)   # but it may read the project
        for command in (["validate"], ["list"]):
            refused(console(root, *command, argv0=argv0, env=env),
                    "build: build_dir: the build folder cannot be written")
    finally:
        for path, mode in modes.items():
            os.chmod(path, mode)
    assert list((root / "build").iterdir()) == []


def closed_pipe_run(root: Path, *args: str) -> subprocess.CompletedProcess:
    """The command with its stdout a pipe nobody reads any more (`| head -1` after its line)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "cosbuild.cli", *args], cwd=root,
                              stdout=write, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)


@pytest.mark.parametrize("command", [["graph", "--json"], ["graph"], ["keywords"],
                                     ["validate"]])
def test_a_closed_pipe_ends_quietly(project, command):
    root = project(BASIC)
    proc = closed_pipe_run(root, *command)
    assert proc.returncode == 128 + signal.SIGPIPE
    assert proc.stderr == ""


def test_doit_list_into_a_closed_pipe_ends_quietly(project):
    root = project(BASIC)
    proc = closed_pipe_run(root, "list")
    assert proc.returncode == -signal.SIGPIPE   # as any program that only prints
    assert "Traceback" not in proc.stderr and proc.stderr == ""


def test_graph_json_piped_into_head(project):
    root = project({**BASIC, **{f"tree/p{n}/definition.yaml":
                                f"name: p{n}\ncategory: many\nversion: '1.{n}'\n"
                                for n in range(2000)}})   # more than a pipe holds
    proc = subprocess.run(f"{sys.executable} -m cosbuild.cli graph --json | head -1",
                          shell=True, cwd=root, capture_output=True, text=True)
    assert proc.stdout == "{\n"
    assert proc.stderr == ""
