"""The real 2021 luet trees (../shared/real-trees), unchanged, through cosbuild itself: they
load, every package renders as luet 0.20 renders it (the reference of tests/helmref),
`cosbuild graph` resolves each tree, and `cosbuild migrate` gives Jinja2 trees that render
the same YAML."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cosbuild import settings
from cosbuild.errors import Collector
from cosbuild.tree.load import COLLECTION
from cosbuild.tree.migrate import migrate_tree
from cosbuild.tree.project import _renderer, load_project

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-trees"
SAMPLE = REAL / "cos-toolkit-sample-repo" / "packages"
COS6 = REAL / "cOS-toolkit-v0.6.0" / "packages"
COS5 = REAL / "cOS-toolkit-v0.5.3" / "packages"


@dataclass(frozen=True)
class Build:
    """One `luet build --tree ... --values FILE` of a real tree."""
    trees: tuple[Path, ...]
    values: Path

    @property
    def id(self) -> str:
        return f"{self.trees[-1].parent.name}-{self.values.stem}"


ELEMENTAL = REAL / "elemental-toolkit-v0.8.14"
KAIROS = REAL / "kairos-packages-2023-06"

BUILDS = [Build((SAMPLE, COS6), v) for v in sorted((REAL / "cOS-toolkit-v0.6.0/values").glob("*.yaml"))] + \
         [Build((COS5,), v) for v in sorted((REAL / "cOS-toolkit-v0.5.3/values").glob("*.yaml"))]
# the trees of 2022-2023 (issue #33), with the values files their releases were built with
BUILDS_2022 = [Build((ELEMENTAL / "packages",), ELEMENTAL / "values" / v)
               for v in ("green-x86_64.yaml", "teal-arm64.yaml")] + \
              [Build((KAIROS / "packages",), KAIROS / "values" / v) for v in ("amd64.yaml", "arm64.yaml")]

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"no real trees in {REAL}")


def _settings(trees, values, build_dir: Path):
    return settings.resolve({"tree": [str(t) for t in trees], "values": [str(values)],
                             "build_dir": str(build_dir)}, env={})


@functools.cache
def _project(trees: tuple[Path, ...], values: Path, build_dir: Path):
    errors = Collector()
    project = load_project(_settings(trees, values, build_dir), errors=errors)
    return project, errors


@pytest.mark.parametrize("build", BUILDS + BUILDS_2022, ids=lambda b: b.id)
def test_real_tree_loads_renders_and_resolves(build, tmp_path, helm_reference):
    project, errors = _project(build.trees, build.values, tmp_path)
    assert not errors.errors, "\n".join(map(str, errors.errors))
    packages = project.tree.packages
    assert len(project.graph.packages) == len(packages)      # every package resolved
    renderer = _renderer(project.settings, project.tree, None)
    same = 0
    for pkg in packages:
        if not pkg.build_file:
            continue
        got, engine = renderer.render_file(pkg, pkg.build_file)
        assert engine.startswith("helm"), (pkg.key, engine)
        stanza = None
        if pkg.declared_in.name == COLLECTION:
            stanza = {k: str(pkg.values[k]) for k in ("name", "category", "version")}
        sources = [(str(t), t.read_text()) for t in project.tree.templates]
        expected = helm_reference.render_package(
            sources + [(str(pkg.build_file), pkg.build_file.read_text())],
            pkg.declared_in.read_text(),
            (build.values.read_text(),), stanza)
        assert yaml.safe_load(got) == yaml.safe_load(expected), pkg.key
        same += got == expected
    assert same == sum(1 for p in packages if p.build_file)      # byte for byte, too


@pytest.mark.parametrize("build", BUILDS + BUILDS_2022, ids=lambda b: b.id)
def test_cosbuild_graph_resolves_the_real_tree(build, tmp_path, run_cli):
    trees = [arg for tree in build.trees for arg in ("--tree", str(tree))]
    code, out, err = run_cli("graph", "--json", "--build-dir", str(tmp_path),
                             "--values", str(build.values), *trees)
    assert code == 0, err
    out = yaml.safe_load(out)
    assert len(out["packages"]) >= 20


@pytest.mark.parametrize("build", BUILDS + BUILDS_2022, ids=lambda b: b.id)
def test_cosbuild_validate_accepts_the_real_tree(build, tmp_path, run_cli, monkeypatch):
    """Warnings allowed (keys luet ignores, versions it cannot order), errors not."""
    monkeypatch.chdir(tmp_path)   # no iso.yaml or disk.yaml of this project's own
    trees = [arg for tree in build.trees for arg in ("--tree", str(tree))]
    code, out, err = run_cli("validate", "--build-dir", str(tmp_path / "build"),
                             "--values", str(build.values), *trees)
    assert code == 0, err


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("migrated")
    out = {}
    for tree in (SAMPLE, COS6, COS5):
        report = migrate_tree(tree, root / tree.parent.name / "packages")
        assert not report.kept, report.text()          # every real file translates
        out[tree] = root / tree.parent.name / "packages"
    return out


@pytest.mark.parametrize("build", BUILDS, ids=lambda b: b.id)
def test_migrated_tree_renders_the_same(build, migrated, tmp_path):
    old, _ = _project(build.trees, build.values, tmp_path / "old")
    new, errors = _project(tuple(migrated[t] for t in build.trees), build.values, tmp_path / "new")
    assert not errors.errors, "\n".join(map(str, errors.errors))
    before = {k: p.rendered for k, p in old.graph.packages.items()}
    after = {k: p.rendered for k, p in new.graph.packages.items()}
    assert before.keys() == after.keys()
    for key in before:
        assert after[key].engine.startswith("build.yaml: jinja2"), (key, after[key].engine)
        assert after[key].data == before[key].data, key
        assert yaml.safe_load(after[key].finalize_text or "{}") == \
            yaml.safe_load(before[key].finalize_text or "{}"), key
