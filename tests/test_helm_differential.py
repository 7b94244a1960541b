"""Differential test of cosbuild's Helm engine against luet 0.20's (SPEC §1 "Templating"):
the reference renderer (tests/helmref, built from Debian's Go and sprig) and
cosbuild.tree.gotemplate render the same inputs; the output must be the same text, or both
must fail. Inputs: the cases of tests/helm_cases.py and every package of the real 2021 trees
with each of their values files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cosbuild.tree import gotemplate, helm, yamlio

from .helm_cases import CASES, VALUES_CASES
from .helmref import ReferenceRenderError

# shared/ lies beside the repository (a worktree or CI's clone)
REAL_TREES = Path(__file__).resolve().parents[2] / "shared" / "real-trees"


def cosbuild_render(sources: list[tuple[str, str]], values: dict) -> str:
    """`values` as the package's definition, as the reference reads them."""
    return helm.render(sources, helm.luet_values(values, []))


def assert_cosbuild_fails(sources: list[tuple[str, str]], values: dict):
    with pytest.raises(gotemplate.TemplateError):
        cosbuild_render(sources, values)


# ------------------------------------------------------------------------------------ the cases

@pytest.mark.parametrize("case", [c for c in CASES if c.expect is not None], ids=lambda c: c.id)
def test_reference_gives_the_hand_written_output(helm_reference, case):
    """The harness itself: the reference renders what luet does, on hand-checked cases."""
    assert helm_reference.render(case.sources(), case.data()) == case.expect


@pytest.mark.parametrize("case", [c for c in CASES if c.error], ids=lambda c: c.id)
def test_reference_fails_on_the_error_cases(helm_reference, case):
    with pytest.raises(ReferenceRenderError):
        helm_reference.render(case.sources(), case.data())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_case(helm_reference, case):
    if case.error:
        with pytest.raises(ReferenceRenderError):
            helm_reference.render(case.sources(), case.data())
        assert_cosbuild_fails(case.sources(), case.data())
        return
    expected = helm_reference.render(case.sources(), case.data())
    assert cosbuild_render(case.sources(), case.data()) == expected


# Where cosbuild deliberately reads like luet's definitions, not like its JSON detour:
# a plain `n` key of a collection stanza stays the key "n" (luet: "false").
DEVIATIONS = {"luet-key-n-of-a-stanza-is-false"}


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=pytest.mark.xfail(strict=True, reason="documented deviation"))
    if c.id in DEVIATIONS else c for c in VALUES_CASES], ids=lambda c: c.id)
def test_values_precedence(helm_reference, case):
    """What a template sees as .Values: luet's merging of the definition (or collection
    stanza) with the values files, against cosbuild's."""
    expected = helm_reference.values(case.definition, case.values_files, case.collection)
    definition = yamlio.loads(case.definition, "definition.yaml")
    if case.collection is not None:
        definition = next(p for p in definition["packages"]
                          if all(p[k] == v for k, v in case.collection.items()))
    files = [yamlio.loads(text, "values.yaml") for text in case.values_files]
    assert helm.luet_values(definition, files, case.collection is not None) == expected


# ------------------------------------------------------------------------------- the real trees

@dataclass(frozen=True)
class RealPackage:
    """One package of a real tree, rendered as `luet build --tree ... --values FILE` does."""
    id: str
    trees: tuple[Path, ...]        # every --tree of that build: their templates/ are shared
    folder: Path                   # holds build.yaml and definition.yaml or collection.yaml
    collection: dict | None        # the stanza's {name, category, version}, for a collection
    values_file: Path | None

    def sources(self) -> list[tuple[str, str]]:
        """luet's ChartFiles: each tree's templates/ walked in lexical order (recursively),
        every *.yaml (any case) of it, then the package's build.yaml; luet joins the texts
        with no separator."""
        out = []
        for tree in self.trees:
            for folder, dirs, files in os.walk(tree / "templates"):
                dirs.sort()
                out += [(str(Path(folder, f)), Path(folder, f).read_text()) for f in sorted(files)
                        if f.lower().endswith(".yaml")]
        return out + [("build.yaml", (self.folder / "build.yaml").read_text())]

    def definition(self) -> str:
        name = "definition.yaml" if self.collection is None else "collection.yaml"
        return (self.folder / name).read_text()

    def values_files(self) -> tuple[str, ...]:
        return () if self.values_file is None else (self.values_file.read_text(),)


def _packages(tree: Path):
    """(folder, stanza or None) of each package of a tree that has a build.yaml."""
    for build in sorted(tree.rglob("build.yaml")):
        folder = build.parent
        if (folder / "collection.yaml").exists():
            for p in yaml.safe_load((folder / "collection.yaml").read_text())["packages"]:
                yield folder, {k: str(p[k]) for k in ("name", "category", "version")}
        elif (folder / "definition.yaml").exists():
            yield folder, None


def real_packages() -> list[RealPackage]:
    sample = REAL_TREES / "cos-toolkit-sample-repo" / "packages"
    builds = []
    for cos in ("cOS-toolkit-v0.6.0", "cOS-toolkit-v0.5.3"):
        cos_tree = REAL_TREES / cos / "packages"
        # the sample repo builds on cOS; v0.5.3 predates it
        trees = (sample, cos_tree) if cos.endswith("v0.6.0") else (cos_tree,)
        # no values file: what luet's tree loader renders to learn the build requires
        for values in (None, *sorted((REAL_TREES / cos / "values").glob("*.yaml"))):
            builds.append((cos, trees, values))
    out = []
    for cos, trees, values in builds:
        for tree in trees:
            for folder, stanza in _packages(tree):
                what = stanza["name"] if stanza else folder.relative_to(tree)
                flavor = values.stem if values else "no-values"
                out.append(RealPackage(f"{cos}-{flavor}:{tree.parent.name}/{what}", trees,
                                       folder, stanza, values))
    return out


REAL = real_packages() if REAL_TREES.is_dir() else []


def test_the_real_trees_are_there():
    assert len(REAL) > 100, f"expected the real trees in {REAL_TREES} (see PROVENANCE.md)"


@pytest.mark.parametrize("package", REAL, ids=lambda p: p.id)
def test_reference_renders_the_real_tree_package(helm_reference, package):
    """Every real package renders in luet's engine to a YAML mapping."""
    out = helm_reference.render_package(package.sources(), package.definition(),
                                        package.values_files(), package.collection)
    assert isinstance(yaml.safe_load(out), dict)


@pytest.mark.parametrize("package", REAL, ids=lambda p: p.id)
def test_real_tree_package(helm_reference, package):
    """cosbuild's engine, given luet's .Values for the package, renders the same YAML and
    the same text."""
    expected = helm_reference.render_package(package.sources(), package.definition(),
                                             package.values_files(), package.collection)
    values = helm_reference.values(package.definition(), package.values_files(),
                                   package.collection)
    got = cosbuild_render(package.sources(), values)
    assert yaml.safe_load(got) == yaml.safe_load(expected)
    assert got == expected
