"""The command line and the doit tasks, on small trees and on the sample tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from . import signing
from .conftest import BASIC, REPO

TWO_VERSIONS = {**BASIC,
                "tree/app2/definition.yaml": "name: app\ncategory: app\nversion: '0.2'\n",
                "tree/app2/build.yaml": "image: x\nsteps: ['echo {{ values.version }}']\n"}


def test_graph_json_lists_every_package_in_a_valid_order(project, run_cli):
    project(TWO_VERSIONS)
    code, out, _ = run_cli("graph", "--json")
    assert code == 0
    data = json.loads(out)
    ids = [(p["id"], p["version"]) for p in data["packages"]]
    assert sorted(ids) == [("app/app", "0.1"), ("app/app", "0.2"), ("distro/base", "1.0")]
    for p in data["packages"]:
        assert len(p["hash"]) == 64 and p["hidden"] is False
    assert data["order"].index("distro/base") < data["order"].index("app/app")
    app01 = next(p for p in data["packages"] if p["version"] == "0.1")
    assert app01["build_deps"] == ["distro/base"]


def test_graph_text_and_dot(project, run_cli):
    project(BASIC)
    code, out, _ = run_cli("graph")
    assert code == 0 and out.splitlines()[0].startswith("app/app@0.1")
    assert out.splitlines()[1].startswith("  distro/base@1.0")
    code, out, _ = run_cli("graph", "--dot")
    assert '"app/app@0.1" -> "distro/base@1.0";' in out


def test_render_picks_newest_or_the_selected_version(project, run_cli):
    project(TWO_VERSIONS)
    assert "echo 0.2" in run_cli("render", "app/app")[1]
    assert "echo app" in run_cli("render", "app/app@<0.2")[1]
    code, _, err = run_cli("render", "app/nope")
    assert code == 1 and "no version satisfies" in err


def test_values_chosen_by_option_env_and_doit_variable(project, run_cli, monkeypatch):
    project({**BASIC, "tree/base/build.yaml": "image: 'debian:{{ values.suite }}'\n",
             "values/bookworm.yaml": "suite: bookworm\n", "values/trixie.yaml": "suite: trixie\n",
             "values/x.yaml": "suite: x\n"})
    assert "debian:bookworm" in run_cli("render", "distro/base")[1]       # default flavor
    assert "debian:trixie" in run_cli("--flavor", "trixie", "render", "distro/base")[1]
    assert "debian:x" in run_cli("--values", "values/trixie.yaml", "--values", "values/x.yaml",
                                 "render", "distro/base")[1]
    monkeypatch.setenv("COSBUILD_VALUES", "values/trixie.yaml")
    assert "debian:trixie" in run_cli("render", "distro/base")[1]
    assert "debian:x" in run_cli("--values", "values/x.yaml", "render", "distro/base")[1]


def _doit(root, *args):
    proc = subprocess.run([sys.executable, "-m", "cosbuild.cli", *args], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_render_tasks_are_incremental(project):
    root = project({**BASIC, "values/bookworm.yaml": "suite: bookworm\n",
                    "tree/lib/definition.yaml": "name: lib\ncategory: dev\nversion: '1'\n",
                    "tree/lib/build.yaml": "image: 'x:{{ values.suite }}'\n"})
    out = _doit(root, "run", "render")
    assert sorted(out.split()) == [".", ".", ".", "render:app/app", "render:dev/lib",
                                   "render:distro/base"]
    assert (root / "build/specs/app-app-0.1.yaml").read_text().startswith("requires:")
    out = _doit(root, "run", "render")
    assert out.count("-- ") == 3                      # all up to date
    (root / "tree/base/build.yaml").write_text("image: debian:trixie\nsteps: [echo]\n")
    out = _doit(root, "run", "render")                # a dependency changed: app too
    assert set(l for l in out.splitlines() if l.startswith(".")) == {
        ".  render:distro/base", ".  render:app/app"}
    (root / "values/bookworm.yaml").write_text("suite: trixie\n")
    out = _doit(root, "run", "render")                # only the package that uses the value
    assert [l for l in out.splitlines() if l.startswith(".")] == [".  render:dev/lib"]
    (root / "build/specs/lib-dev-1.yaml").unlink()     # a deleted target is rebuilt
    assert ".  render:dev/lib" in _doit(root, "run", "render")


def test_validate_task_and_listing(project):
    root = project(BASIC)
    assert "2 packages" in _doit(root, "run", "validate")
    listing = _doit(root, "list", "--all")
    assert "render:app/app" in listing and "validate" in listing
    assert "status     : up-to-date" in _doit(root, "info", "validate")


def test_dodo_in_this_repository_lists_the_sample_tasks():
    proc = subprocess.run([sys.executable, "-m", "doit", "list", "--all"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "render:system/sampleOS" in proc.stdout
    assert "iso:sbom" in proc.stdout and "disk:sbom" in proc.stdout
    # the sample is clean even under --strict: no key yip or luet-makeiso would ignore
    proc = subprocess.run([sys.executable, "-m", "cosbuild.cli", "validate", "--strict"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("ok: 10 packages"), proc.stderr
    assert "warning" not in proc.stdout + proc.stderr.lower()


def test_doit_keys_makes_the_sample_keys_once_and_ships_their_root(tmp_path):
    """`doit keys` (make iso / make disk) in a copy of this repository: keys/ made once, its
    root copied where system/sampleOS installs it, and copied again after a rotation."""
    for name in ("tree", "values", "iso.yaml", "disk.yaml", "dodo.py"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, tmp_path / name)
    shipped = tmp_path / signing.SAMPLE_TRUSTED_ROOT   # tests and `doit keys` agree on it
    shipped.unlink(missing_ok=True)   # this repository's own keys' copy, if made
    env = {k: v for k, v in os.environ.items() if k != "COSBUILD_SIGNING_KEYS"}

    def keys(*args):
        proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    keys("keys")
    root = tmp_path / "keys/root.json"
    assert shipped.read_bytes() == root.read_bytes()
    assert os.stat(tmp_path / "keys/keys").st_mode & 0o077 == 0
    assert "-- keys" in keys("keys")   # up to date: nothing made again
    made = root.read_bytes()
    subprocess.run([sys.executable, "-m", "cosbuild.cli", "keys", "rotate", "keys"], cwd=tmp_path,
                   check=True, capture_output=True)
    keys("keys")
    assert shipped.read_bytes() == root.read_bytes() != made


def test_the_keyword_reference_holds_the_table():
    text = (REPO / "docs/keywords.md").read_text()   # current: tests/test_docs.py
    assert "| `requires_final_images` |" in text and "| `bootstrap` |" in text


# --------------------------------------------------------------------------- global options

def test_global_options_before_or_after_the_command(project, run_cli):
    project({**TWO_VERSIONS, "values/a.yaml": "v: a\n", "values/b.yaml": "v: b\n",
             "tree/base/build.yaml": "image: 'x:{{ values.v }}'\n"})
    code, out, _ = run_cli("graph", "--json", "--tree", "tree", "--values", "values/a.yaml")
    assert code == 0 and json.loads(out)["order"]
    # in their order wherever they are: the rightmost values file wins
    assert "x:b" in run_cli("--values", "values/a.yaml", "render", "distro/base",
                            "--values=values/b.yaml")[1]
    assert "x:a" in run_cli("render", "--values", "values/b.yaml", "distro/base",
                            "--values", "values/a.yaml")[1]
    code, _, err = run_cli("validate", "--tree", "elsewhere")
    assert code == 1 and "elsewhere: tree folder not found" in err


def test_hoisting_leaves_the_commands_own_arguments_alone():
    from cosbuild.cli import _hoist_global_options as hoist
    # -v after a doit command is doit's verbosity; long global options are still ours
    assert hoist(["run", "-v", "2", "--tree", "t", "build"]) == (["--tree", "t", "run", "-v", "2",
                                                                    "build"], 2)
    assert hoist(["validate", "-v", "--strict"]) == (["-v", "--strict", "validate"], 2)
    assert hoist(["install", "--root", "r", "--repo", "x", "a/b", "--flavor", "f"]) == (
        ["--flavor", "f", "install", "--root", "r", "--repo", "x", "a/b"], 2)
    assert hoist(["render", "--", "--tree"]) == (["render", "--", "--tree"], 0)


def test_doit_commands_take_global_options_after_their_own(project):
    root = project({**BASIC, "other/x/definition.yaml": "name: x\ncategory: o\nversion: '1'\n"})
    listing = _doit(root, "list", "--all", "--tree", "other")
    assert "render:o/x" in listing and "render:app/app" not in listing


# --------------------------------------------------------------------------- cosbuild build

def test_build_runs_the_build_tasks_of_the_packages_and_their_deps(project, run_cli):
    # image-less packages: no container needed; retrieve makes b build on a
    root = project({"tree/a/definition.yaml": "name: a\ncategory: meta\nversion: '1'\n",
                    "tree/b/definition.yaml": "name: b\ncategory: meta\nversion: '1'\n",
                    "tree/b/build.yaml": "retrieve: [a-meta-1]\n",
                    "tree/c/definition.yaml": "name: c\ncategory: meta\nversion: '1'\n"})
    code, out, err = run_cli("build", "meta/b@>=1")
    assert code == 0, err
    built = sorted(p.name for p in (root / "build").glob("*.package.tar.zst"))
    assert built == ["a-meta-1.package.tar.zst", "b-meta-1.package.tar.zst"]
    code, _, err = run_cli("build", "meta/bb", "meta/c", "mta/a")
    assert code == 1
    assert "meta/bb" in err and "did you mean 'meta/b'?" in err
    assert "mta/a" in err and "did you mean 'meta/a'?" in err


# --------------------------------------------------------------------------- partial trees

BROKEN_ELSEWHERE = {**BASIC,
                    "tree/bad/definition.yaml": "name: bad\ncategory: x\n",
                    "tree/ugly/definition.yaml": "name: ugly\ncategory: x\nversion: '1'\n",
                    "tree/ugly/build.yaml": "image: x\nsteps:\n  - echo {{ values.nosuch }}\n",
                    "tree/user/definition.yaml": "name: user\ncategory: x\nversion: '1'\n",
                    "tree/user/build.yaml": "requires: [{name: ugly, category: x}]\n"}


def test_render_and_graph_of_a_package_work_when_another_is_broken(project, run_cli, caplog):
    project(BROKEN_ELSEWHERE)
    code, out, err = run_cli("render", "app/app")
    assert code == 0 and "echo app" in out, err
    code, out, err = run_cli("graph", "app/app")
    assert code == 0 and out.splitlines()[1].startswith("  distro/base@1.0")
    assert "2 errors elsewhere in the project" in caplog.text
    code, out, err = run_cli("graph", "x/user")
    assert code == 1 and "x/user@1 is not in the graph" in err and "nosuch" in err


def test_graph_shows_what_resolves_and_reports_the_rest(project, run_cli):
    project(BROKEN_ELSEWHERE)
    code, out, err = run_cli("graph", "--json")
    assert code == 1
    assert sorted(json.loads(out)["order"]) == ["app/app", "distro/base"]
    assert "tree/bad/definition.yaml:1: version: missing" in err
    assert "tree/ugly/build.yaml:3" in err and "nosuch" in err
    # x/user builds on the broken x/ugly: left out, not reported a second time
    assert "x/user" not in err
