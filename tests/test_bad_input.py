"""Every user mistake: non-zero exit, one clear message naming file/line/key, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import BASIC

CASES = {
    "malformed YAML": (
        {"tree/app/definition.yaml": "name: app\nversion: [1.0\ncategory: app\n"},
        ["tree/app/definition.yaml:", "invalid YAML"]),
    "missing name": (
        {"tree/app/definition.yaml": "category: app\nversion: '0.1'\n"},
        ["tree/app/definition.yaml:1", "missing required keyword 'name'"]),
    "missing version": (
        {"tree/app/definition.yaml": "name: app\ncategory: app\n"},
        ["tree/app/definition.yaml", "missing required keyword 'version'"]),
    "undefined template variable": (
        {"tree/app/build.yaml": "image: x\nsteps:\n  - echo {{ values.nosuch }}\n"},
        ["tree/app/build.yaml:3", "nosuch", "template error"]),
    "template syntax error": (
        {"tree/app/build.yaml": "image: x\nsteps:\n  - echo {% if %}\n"},
        ["tree/app/build.yaml:3", "template syntax error"]),
    "unsatisfiable selector": (
        {"tree/app/build.yaml": "requires:\n  - {name: base, category: distro, version: '>=2.0'}\n"},
        ["app/app@0.1 requires distro/base@>=2.0", "available versions of distro/base: 1.0"]),
    "unknown dependency": (
        {"tree/app/build.yaml": "requires:\n  - {name: nope, category: distro}\n"},
        ["requires distro/nope", "available versions of distro/nope: none"]),
    "dependency cycle": (
        {"tree/base/build.yaml": "requires:\n  - {name: app, category: app}\nsteps: ['true']\n"},
        ["dependency cycle: ", "app/app@0.1 -> distro/base@1.0 -> app/app@0.1"]),
    "seed is no image source": (
        {"tree/app/build.yaml": "seed: debian\nsteps:\n  - make\n"},
        ["tree/app/build.yaml (rendered):2", "no image source", "'seed' is not one in luet 0.20"]),
    "steps without image source": (
        {"tree/app/build.yaml": "steps:\n  - make\n"},
        ["tree/app/build.yaml (rendered):1", "steps", "no image source"]),
    "invalid regex": (
        {"tree/app/build.yaml": "image: x\nexcludes:\n  - '^/usr/(share'\n"},
        ["tree/app/build.yaml (rendered):2", "excludes", "invalid regular expression"]),
    "wrong type": (
        {"tree/app/build.yaml": "image: x\nunpack: yes please\n"},
        ["build.yaml (rendered):2", "unpack", "expected true or false"]),
    "invalid selector": (
        {"tree/app/build.yaml": "requires:\n  - {name: base, category: distro, version: '>= '}\n"},
        ["build.yaml (rendered):2", "invalid version selector"]),
    "unknown key in a reference": (
        {"tree/app/build.yaml": "requires:\n  - {name: base, categroy: distro}\n"},
        # luet ignores the key (with a warning here), so the entry names no category
        ["app/app@0.1 requires /base", "did you mean 'distro/base'?"]),
    "bad collection": (
        {"tree/col/collection.yaml": "packages: {}\n"},
        ["tree/col/collection.yaml:1", "non-empty 'packages' list"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_reported_clearly(case, project, run_cli):
    files, expected = CASES[case]
    project({**BASIC, **files})
    code, out, err = run_cli("validate")
    assert code == 1
    assert out == ""
    assert "Traceback" not in err
    assert err.startswith("cosbuild: error: ")
    for fragment in expected:
        assert fragment in err, f"{fragment!r} not in {err!r}"


def test_cycle_that_only_rendering_reveals(project, run_cli):
    project({**BASIC, "values/loop.yaml": "base_dep: app\n",
             "tree/base/build.yaml": "requires:\n  - {name: '{{ values.base_dep | default(\"none\") }}', "
                                     "category: app}\nsteps: ['true']\n"})
    code, _, err = run_cli("--tree", "tree", "validate")   # no values: no such package
    assert code == 1 and "requires app/none" in err
    code, _, err = run_cli("--values", "values/loop.yaml", "validate")
    assert code == 1
    assert "dependency cycle: app/app@0.1 -> distro/base@1.0 -> app/app@0.1" in err


def test_missing_values_file(project, run_cli):
    project(BASIC)
    code, _, err = run_cli("--values", "values/nope.yaml", "validate")
    assert code == 1
    assert "values/nope.yaml: values file not found" in err


def test_missing_tree(project, run_cli):
    project(BASIC)
    code, _, err = run_cli("--tree", "elsewhere", "validate")
    assert code == 1 and "elsewhere: tree folder not found" in err


def test_several_mistakes_are_reported_together(project, run_cli):
    project({**BASIC,
             "tree/app/definition.yaml": "category: app\nversion: '0.1'\n",
             "tree/x/definition.yaml": "name: x\n"})
    code, _, err = run_cli("validate")
    assert code == 1
    assert "tree/app/definition.yaml:1: name: missing" in err
    assert "tree/x/definition.yaml:1: version: missing" in err


def test_join_is_accepted_with_a_warning(project, run_cli, caplog):
    project({**BASIC, "tree/app/build.yaml":
             "join:\n  - {name: base, category: distro}\nsteps: [make]\n"})
    code, out, _ = run_cli("validate")
    assert code == 0, out
    assert any("join: deprecated" in r.getMessage() for r in caplog.records)
    code, out, _ = run_cli("graph", "--json")
    assert '"build_deps": [\n        "distro/base"' in out


def test_definition_typo_is_warned_not_fatal(project, run_cli, caplog):
    project({**BASIC, "tree/app/definition.yaml": "name: app\ncategory: app\nversion: '0.1'\nrequries: []\n"})
    code, _, _ = run_cli("validate")
    assert code == 0
    assert any("did you mean 'requires'?" in r.getMessage() for r in caplog.records)


def test_no_traceback_from_the_real_command(project):
    """End to end through the console script and through doit."""
    root = project({**BASIC, "tree/app/build.yaml": "image: x\nsteps:\n  - echo {{ values.nosuch }}\n"})
    for argv in ([sys.executable, "-m", "cosbuild.cli", "validate"],
                 [sys.executable, "-m", "cosbuild.cli", "list"]):
        proc = subprocess.run(argv, cwd=root, capture_output=True, text=True)
        assert proc.returncode == 1
        assert "Traceback" not in proc.stderr
        assert "tree/app/build.yaml:3" in proc.stderr


def test_validate_reports_every_stage_in_one_run(project, run_cli):
    # one mistake per stage: none hides another
    project({**BASIC,
             "tree/bad/definition.yaml": "name: bad\ncategory: x\n",                    # load
             "tree/ugly/definition.yaml": "name: ugly\ncategory: x\nversion: '1'\n",   # render
             "tree/ugly/build.yaml": "image: x\nsteps:\n  - echo {{ values.nosuch }}\n",
             "tree/app/build.yaml": "requires: [{name: bsae, category: distro}]\n",    # resolve
             "tree/base/oem/50.yaml": "stages:\n  boot:\n    - commands: echo\n",      # cloud-config
             "iso.yaml": "packages: {rootfs: [a/b]}\nlabel: [X]\n"})                    # iso.yaml
    code, out, err = run_cli("validate")
    assert code == 1 and out == ""
    for fragment in ("tree/bad/definition.yaml:1: version: missing",
                     "tree/ugly/build.yaml:3", "undefined variable 'nosuch'",
                     "tree/app/build.yaml", "requires distro/bsae", "did you mean 'distro/base'?",
                     "tree/base/oem/50.yaml:3: stages.boot[1].commands: expected a list",
                     "iso.yaml:2: label: expected a string"):
        assert fragment in err, f"{fragment!r} not in {err!r}"


def test_a_cycle_is_reported_with_the_other_mistakes(project, run_cli):
    project({**BASIC, "tree/base/build.yaml": "requires: [{name: app, category: app}]\n",
             "tree/x/definition.yaml": "name: x\n"})
    code, _, err = run_cli("validate")
    assert code == 1
    assert "dependency cycle: app/app@0.1 -> distro/base@1.0 -> app/app@0.1" in err
    assert "tree/x/definition.yaml:1: version: missing" in err


def test_iso_yaml_unknown_keys_are_warnings_and_strict_errors(project, run_cli, caplog):
    project({**BASIC, "iso.yaml": "packages: {rootfs: [app/app]}\noverlay: false\nlabl: X\n"})
    code, out, _ = run_cli("validate")
    assert code == 0 and out.endswith(", 2 warnings\n")   # labl, and overlay: false
    assert "iso.yaml:3: labl: unknown keyword 'labl' in iso.yaml, ignored (did you mean " \
           "'label'?)" in caplog.text
    code, _, err = run_cli("--strict", "validate")
    assert code == 1 and "iso.yaml:3: labl: unknown keyword 'labl'" in err
