"""Helm trees through cosbuild: shared templates, collections, the engine chosen per file
and per tree, `render` naming it, migration of defines, and template mistakes reported at
the user's file:line with bounds on runaway templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosbuild import settings
from cosbuild.errors import CosbuildError
from cosbuild.tree.migrate import migrate_tree
from cosbuild.tree.project import load_project

from .conftest import write_files

HELM_TREE = {
    "helm/templates/helpers.yaml": (
        '{{- define "apt" -}}\n'
        "apt-get install -y {{ join \" \" . }}\n"
        "{{- end }}\n"
        '{{- define "label" -}}{{ index .Values.labels "owner" }}{{- end }}\n'),
    "helm/base/definition.yaml": "name: base\ncategory: distro\nversion: '1.0'\n",
    "helm/base/build.yaml": (
        'image: "{{ .Values.image }}"\n'
        "steps:\n"
        '- {{ include "apt" (list "curl" "git") }}\n'
        "{{- if eq .Values.distribution \"debian\" }}\n"
        "- echo debian\n"
        "{{- else }}\n"
        "- echo other\n"
        "{{- end }}\n"),
    "helm/tools/collection.yaml": (
        "packages:\n"
        "- {name: a, category: tools, version: '1', labels: {owner: me}}\n"
        "- {name: b, category: tools, version: '2', labels: {owner: you}, extra: x}\n"),
    "helm/tools/build.yaml": (
        "requires:\n- {name: base, category: distro, version: '>=1'}\n"
        "steps:\n"
        '- echo {{ template "label" . }} {{ .Values.name }} {{ .Values.extra | default "none" }}\n'
        "{{- range $i, $p := .Values.more }}\n"
        "- echo {{ $i }} {{ $p }}\n"
        "{{- end }}\n"),
    "values/helm.yaml": "image: debian:bookworm\ndistribution: debian\nmore: [x, z]\n",
}


def _load(root: Path, trees=("helm",), values=("values/helm.yaml",), **more):
    config = settings.resolve({"tree": [str(root / t) for t in trees],
                               "values": [str(root / v) for v in values],
                               "build_dir": str(root / "build"), **more}, env={})
    return load_project(config)


def _steps(project, id_):
    return next(p for p in project.graph.packages.values() if p.id == id_).rendered.build.steps


def test_helm_tree_with_shared_templates_and_a_collection(tmp_path, helm_reference):
    write_files(tmp_path, HELM_TREE)
    project = _load(tmp_path)
    assert list(_steps(project, "distro/base")) == ["apt-get install -y curl git", "echo debian"]
    assert list(_steps(project, "tools/a"))[0] == "echo me a none"
    assert list(_steps(project, "tools/b"))[:3] == ["echo you b x", "echo 0 x", "echo 1 z"]
    # the same text as luet 0.20's engine, shared templates first
    shared = [(str(tmp_path / "helm/templates/helpers.yaml"), HELM_TREE["helm/templates/helpers.yaml"])]
    for pkg in project.graph.packages.values():
        folder = tmp_path / "helm" / ("base" if pkg.id == "distro/base" else "tools")
        decl = folder / ("definition.yaml" if pkg.id == "distro/base" else "collection.yaml")
        stanza = None if pkg.id == "distro/base" else {"name": pkg.definition.name,
                                                      "category": "tools",
                                                      "version": pkg.version}
        expected = helm_reference.render_package(
            shared + [(str(folder / "build.yaml"), (folder / "build.yaml").read_text())],
            decl.read_text(), (HELM_TREE["values/helm.yaml"],), stanza)
        assert pkg.rendered.text == expected, pkg.id


def test_engine_is_chosen_per_file_and_per_tree(tmp_path):
    write_files(tmp_path, {
        **HELM_TREE,
        # a Jinja2 tree beside it: its own macros, values without the dot
        "jinja/templates/macros.yaml": "{% macro hi(n) %}hi {{ n }}{% endmacro %}\n",
        "jinja/app/definition.yaml": "name: app\ncategory: app\nversion: '1'\n",
        "jinja/app/build.yaml": ("requires:\n- {name: base, category: distro, version: '>=1'}\n"
                                 "steps:\n- echo {{ hi(values.name) }}\n"),
        # nothing in this file tells: the tree's other files do (Jinja2)
        "jinja/plain/definition.yaml": "name: plain\ncategory: app\nversion: '1'\n",
        "jinja/plain/build.yaml": ("requires:\n- {name: base, category: distro, version: '>=1'}\n"
                                   'steps:\n- echo {{ "a" }}\n'),
        # a marker overrides what the syntax suggests
        "jinja/marked/definition.yaml": "name: marked\ncategory: app\nversion: '1'\n",
        "jinja/marked/build.yaml": ("# cosbuild-engine: helm\n"
                                    "requires:\n- {name: base, category: distro, version: '>=1'}\n"
                                    "steps:\n- echo {{ .Values.name }}\n"),
    })
    project = _load(tmp_path, trees=("helm", "jinja"))
    engines = {p.id: p.rendered.engine for p in project.graph.packages.values()}
    assert engines["distro/base"] == "build.yaml: helm (detected)"
    assert engines["app/app"] == "build.yaml: jinja2 (detected)"
    assert engines["app/plain"] == "build.yaml: jinja2 (the tree's engine)"
    assert engines["app/marked"] == "build.yaml: helm (detected)"
    assert list(_steps(project, "app/app")) == ["echo hi app"]
    assert list(_steps(project, "app/marked")) == ["echo marked"]
    # the setting forces one engine: the Jinja2 file is then a Helm syntax error
    with pytest.raises(CosbuildError, match=r"jinja/app/build.yaml:\d+: template error"):
        _load(tmp_path, trees=("helm", "jinja"), template_engine="helm")


def test_render_says_which_engine(project, run_cli):
    project({k.replace("helm/", "tree/"): v for k, v in HELM_TREE.items()})
    code, out, err = run_cli("render", "distro/base", "--values", "values/helm.yaml")
    assert code == 0, err
    assert "distro/base rendered with build.yaml: helm (detected)" in err
    assert "apt-get install -y curl git" in out


def test_migrated_helm_tree_keeps_defines_as_macros(tmp_path):
    write_files(tmp_path, HELM_TREE)
    report = migrate_tree(tmp_path / "helm", tmp_path / "jinja")
    assert not report.kept, report.text()
    assert "{% macro apt(dot) %}" in (tmp_path / "jinja/templates/helpers.yaml").read_text()
    old, new = _load(tmp_path), _load(tmp_path, trees=("jinja",))
    for key, pkg in old.graph.packages.items():
        assert new.graph.packages[key].rendered.data == pkg.rendered.data, key


def test_migrate_reports_what_it_cannot_translate(tmp_path, run_cli, monkeypatch):
    write_files(tmp_path, {**HELM_TREE, "helm/base/build.yaml": (
        'image: "{{ .Values.image }}"\n'
        "steps:\n"
        "- echo {{ sha256sum .Values.name }}\n")})
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("migrate", "--tree", "helm", "--output", "jinja")
    assert code == 0, err
    assert "helm/base/build.yaml:3: kept as a Helm template: function sha256sum" in out
    # that file stays Helm (marked), so the migrated tree still renders it the same
    assert (tmp_path / "jinja/base/build.yaml").read_text().startswith("# cosbuild-engine: helm")
    old, new = _load(tmp_path), _load(tmp_path, trees=("jinja",))
    assert {k: p.rendered.data for k, p in new.graph.packages.items()} == \
        {k: p.rendered.data for k, p in old.graph.packages.items()}
    code, _, err = run_cli("migrate", "--tree", "helm", "--output", "jinja")
    assert code == 1 and "not empty" in err


@pytest.mark.parametrize("text, where, message", [
    # the line of the file the user wrote, not of the concatenated text
    ("image: x\nsteps:\n- {{ .Values.nope.deeper }}\n", "helm/base/build.yaml:3",
     "nil pointer evaluating"),
    ("image: x\n{{ if }}\n", "helm/base/build.yaml:2", "missing value for if"),
    ('image: x\nsteps: [{{ include "label" .Values }}]\n', "helm/templates/helpers.yaml:4",
     "nil pointer evaluating"),
    ('{{ define "r" }}{{ include "r" . }}{{ end }}{{ include "r" . }}', "build.yaml:2",
     "nested reference"),
    ("{{ range until 100000000 }}x{{ end }}", "build.yaml:2", "too many values"),
    ('{{ define "x" }}{{ repeat 1000000 "x" }}{{ repeat 1000000 "x" }}{{ end }}'
     '{{ range until 50 }}{{ template "x" }}{{ end }}', "build.yaml:2", "output larger"),
    ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "build.yaml", "nesting too deep"),
    ('{{ required "the image is needed" .Values.nothing }}', "build.yaml:2",
     "the image is needed"),
])
def test_template_mistakes_are_bounded_and_located(tmp_path, run_cli, text, where, message):
    write_files(tmp_path, {**HELM_TREE, "helm/base/build.yaml": "# cosbuild-engine: helm\n" + text
                           if text.startswith("{{") else text})
    code, out, err = run_cli("validate", "--tree", str(tmp_path / "helm"),
                             "--values", str(tmp_path / "values/helm.yaml"),
                             "--build-dir", str(tmp_path / "build"))
    assert code == 1
    assert where in err and message in err, err
    assert "Traceback" not in err
