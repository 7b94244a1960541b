"""The command line and the doit tasks, on small trees and on the sample tree."""

from __future__ import annotations

import json
import subprocess
import sys

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
    proc = subprocess.run([sys.executable, "-m", "cosbuild.cli", "validate"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("ok: 9 packages")


def test_keyword_reference_is_generated_from_the_table():
    text = (REPO / "docs/keywords.md").read_text()
    proc = subprocess.run([sys.executable, "-m", "cosbuild.cli", "keywords"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.stdout == text + "\n" or proc.stdout == text, \
        "docs/keywords.md is stale: run `cosbuild keywords > docs/keywords.md`"
    assert "| `requires_final_images` |" in text and "| `bootstrap` |" in text
