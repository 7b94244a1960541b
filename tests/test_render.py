"""Templating (SPEC §1 "Templating"): values precedence, shared macros, helpers, error positions."""

from __future__ import annotations

import shlex
import textwrap
from pathlib import Path

import pytest
import yaml

from cosbuild.errors import CosbuildError
from cosbuild.tree import render
from cosbuild.tree.load import load_trees
from cosbuild.tree.render import (FILTERS, GLOBALS, Renderer, helper_reference,
                                  load_values_files, merge_values)
from cosbuild.tree.spec import BuildSpec, Finalize
from cosbuild.tree.versions import PackageRef


DEFINITION = """\
name: hello
category: apps
version: "1.0+1"
labels:
  package.checksum: abc123
  plain: x
brand_name: Hello OS
service: hello.service
empty: ""
flag: true
extra_packages:
  - curl
  - git
theme:
  color: red
  size: small
  nested:
    a: 1
    b: 2
"""

# line numbers matter: tests point at them
MACROS = """\
{%- macro greet(who) -%}
echo hello {{ who }} from {{ values.name }}-{{ values.version }}
{%- endmacro %}
{%- macro broken() -%}
echo {{ values.macro_missing }}
{%- endmacro %}
{%- macro packages_line() -%}
{{ values.extra_packages | join(" ") }}
{%- endmacro %}
"""

BUILD = """\
image: busybox:{{ values.theme.color }}
env:
  - PKG={{ values.name }}
  - CHECKSUM={{ values.labels["package.checksum"] }}
  - BRAND={{ values.brand_name | quote }}
steps:
  - {{ greet("world") }}
  - apt-get install -y {{ packages_line() }}
{{ values.extra_packages | toyaml | indent(2, first=True) }}
includes:
  - ^/usr/bin/{{ values.name }}$
"""

FINALIZE = """\
install:
  - systemctl enable {{ values.service }}
  - echo {{ values.name }} {{ values.version }} > /etc/hello-release
{% if "curl" in values.extra_packages %}
  - curl --version
{% endif %}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path):
    """A tiny tree: one package (definition + build + finalize) and a templates/ macro file."""
    tree = tmp_path / "tree"
    pkg = tree / "apps" / "hello"
    write(pkg / "definition.yaml", DEFINITION)
    write(pkg / "build.yaml", BUILD)
    write(pkg / "finalize.yaml", FINALIZE)
    write(tree / "templates" / "macros.yaml", MACROS)
    return tree


def load(tree: Path):
    loaded = load_trees([tree])
    return loaded, {p.id: p for p in loaded.packages}


def renderer_for(tree: Path, values_layers=()):
    loaded, pkgs = load(tree)
    return Renderer(loaded.templates, list(values_layers)), pkgs


def set_build(tree: Path, text: str) -> Path:
    return write(tree / "apps" / "hello" / "build.yaml", text)


def render_build(tree: Path, text: str, values_layers=()):
    build = set_build(tree, text)
    renderer, pkgs = renderer_for(tree, values_layers)
    return build, renderer.render(pkgs["apps/hello"])


def render_snippet(tmp_path: Path, text: str, values: dict, name: str = "snippet.yaml") -> str:
    """Render one template file with the shared macros of an empty tree."""
    path = write(tmp_path / name, text)
    return Renderer((), []).render_text(path, values)


# --------------------------------------------------------------------------- the tree

def test_tree_finds_package_files_and_templates(project):
    loaded, pkgs = load(project)
    pkg = pkgs["apps/hello"]
    assert pkg.version == "1.0+1"
    assert pkg.build_file == project / "apps" / "hello" / "build.yaml"
    assert pkg.finalize_file == project / "apps" / "hello" / "finalize.yaml"
    assert loaded.templates == (project / "templates" / "macros.yaml",)


# --------------------------------------------------------------------------- full rendering

def test_render_build_yaml_into_buildspec(project):
    renderer, pkgs = renderer_for(project)
    out = renderer.render(pkgs["apps/hello"])
    assert isinstance(out.build, BuildSpec)
    assert out.build.image == "busybox:red"
    assert out.build.env == ("PKG=hello", "CHECKSUM=abc123", 'BRAND="Hello OS"')
    assert out.build.steps == (
        "echo hello world from hello-1.0+1",
        "apt-get install -y curl git",
        "curl",
        "git",
    )
    assert out.build.includes == ("^/usr/bin/hello$",)
    assert out.build.requires == ()
    assert out.build.unpack is False
    # the rendered text and its parsed data are kept too
    assert "  - CHECKSUM=abc123\n" in out.text
    assert '  - BRAND="Hello OS"\n' in out.text
    assert out.data["image"] == "busybox:red"
    assert out.data.line_of("steps") == 6


def test_render_finalize_yaml(project):
    renderer, pkgs = renderer_for(project)
    out = renderer.render(pkgs["apps/hello"])
    assert isinstance(out.finalize, Finalize)
    assert out.finalize.install == (
        "systemctl enable hello.service",
        "echo hello 1.0+1 > /etc/hello-release",
        "curl --version",
    )
    assert "systemctl enable hello.service" in out.finalize_text


def test_finalize_uses_values_files(project):
    layer = {"service": "other.service", "extra_packages": ["vim"]}
    renderer, pkgs = renderer_for(project, [layer])
    out = renderer.render(pkgs["apps/hello"])
    assert out.finalize.install == (
        "systemctl enable other.service",
        "echo hello 1.0+1 > /etc/hello-release",
    )


def test_package_without_finalize(project):
    (project / "apps" / "hello" / "finalize.yaml").unlink()
    renderer, pkgs = renderer_for(project)
    out = renderer.render(pkgs["apps/hello"])
    assert out.finalize == Finalize()
    assert out.finalize_text == ""


def test_package_without_build_yaml(project):
    (project / "apps" / "hello" / "build.yaml").unlink()
    renderer, pkgs = renderer_for(project)
    out = renderer.render(pkgs["apps/hello"])
    assert out.build == BuildSpec()
    assert out.text == ""


def test_rendered_requires_become_refs(project):
    _, out = render_build(project, """\
        requires:
          - name: {{ values.theme.color }}-base
            category: distro
            version: ">={{ values.version }}"
          - distro/other@<2
        steps:
          - make
        """)
    assert out.build.requires == (
        PackageRef("distro", "red-base", ">=1.0+1"),
        PackageRef("distro", "other", "<2"),
    )
    assert out.build.image is None


def test_rendered_spec_is_validated_with_rendered_path(project, caplog):
    # luet ignores a key its CompilationSpec does not have: a warning naming the rendered file
    render_build(project, "image: x\nstepz:\n  - {{ values.name }}\n")
    assert f"{project / 'apps' / 'hello' / 'build.yaml'} (rendered):2: stepz: unknown keyword " \
           "'stepz' in build.yaml, ignored (did you mean 'steps'?)" in caplog.text


def test_rendered_invalid_yaml_reports_rendered_file(project):
    with pytest.raises(CosbuildError) as info:
        render_build(project, "image: busybox\nsteps: [{{ values.name }}\n")
    assert info.value.file.endswith("build.yaml (rendered)")
    assert "invalid YAML" in str(info.value)


def test_rendered_non_mapping_is_an_error(project):
    with pytest.raises(CosbuildError, match="expected a mapping at the top level"):
        render_build(project, "- {{ values.name }}\n")


def test_collection_stanzas_render_with_their_own_values(tmp_path):
    tree = tmp_path / "tree"
    write(tree / "templates" / "macros.yaml", MACROS)
    write(tree / "multi" / "collection.yaml", """\
        packages:
          - name: one
            category: apps
            version: "1.0"
            color: blue
          - name: two
            category: apps
            version: "2.0"
            color: green
        """)
    write(tree / "multi" / "build.yaml", """\
        image: busybox:{{ values.color }}
        steps:
          - {{ greet(values.name) }}
        """)
    renderer, pkgs = renderer_for(tree)
    one = renderer.render(pkgs["apps/one"])
    two = renderer.render(pkgs["apps/two"])
    assert one.build.image == "busybox:blue"
    assert one.build.steps == ("echo hello one from one-1.0",)
    assert two.build.image == "busybox:green"
    assert two.build.steps == ("echo hello two from two-2.0",)


# --------------------------------------------------------------------------- values

@pytest.fixture
def values_files(tmp_path):
    first = write(tmp_path / "values" / "first.yaml", """\
        brand_name: First OS
        only_first: F
        theme:
          color: blue
          nested:
            b: 20
            c: 30
        extra_packages: [vim]
        """)
    second = write(tmp_path / "values" / "second.yaml", """\
        brand_name: Second OS
        only_second: S
        theme:
          color: green
          nested:
            c: 300
        """)
    return first, second


def test_values_precedence_definition_then_files_rightmost_wins(project, values_files):
    layers = load_values_files(list(values_files))
    renderer, pkgs = renderer_for(project, layers)
    values = renderer.values_for(pkgs["apps/hello"])
    assert values["brand_name"] == "Second OS"          # second file beats first and definition
    assert values["only_first"] == "F"                  # kept from the first file
    assert values["only_second"] == "S"
    assert values["service"] == "hello.service"         # kept from the definition
    assert values["extra_packages"] == ["vim"]          # lists are replaced, not merged
    # nested mappings are merged key by key
    assert values["theme"] == {"color": "green", "size": "small",
                                "nested": {"a": 1, "b": 20, "c": 300}}


def test_values_precedence_reaches_the_template(project, values_files):
    layers = load_values_files(list(values_files))
    _, out = render_build(project, """\
        image: busybox:{{ values.theme.color }}-{{ values.theme.size }}
        env:
          - BRAND={{ values.brand_name }}
          - NESTED={{ values.theme.nested.a }}/{{ values.theme.nested.b }}/{{ values.theme.nested.c }}
        """, layers)
    assert out.build.image == "busybox:green-small"
    assert out.build.env == ("BRAND=Second OS", "NESTED=1/20/300")


def test_values_file_order_matters(project, values_files):
    first, second = values_files
    layers = load_values_files([second, first])
    renderer, pkgs = renderer_for(project, layers)
    values = renderer.values_for(pkgs["apps/hello"])
    assert values["brand_name"] == "First OS"
    assert values["theme"]["color"] == "blue"
    assert values["theme"]["nested"] == {"a": 1, "b": 20, "c": 30}


def test_values_do_not_leak_into_the_definition(project, values_files):
    layers = load_values_files(list(values_files)) + [{"version": "9.9", "name": "other"}]
    renderer, pkgs = renderer_for(project, layers)
    pkg = pkgs["apps/hello"]
    assert renderer.values_for(pkg)["version"] == "9.9"
    assert pkg.definition.version == "1.0+1"
    assert pkg.values["brand_name"] == "Hello OS"       # the raw stanza is not mutated
    assert pkg.values["theme"]["nested"] == {"a": 1, "b": 2}


def test_dotted_label_key(project):
    _, out = render_build(project, """\
        image: busybox
        env:
          - SUM={{ values.labels["package.checksum"] }}
          - PLAIN={{ values.labels.plain }}
        """)
    assert out.build.env == ("SUM=abc123", "PLAIN=x")


def test_load_values_files_reads_in_order(values_files):
    first, second = values_files
    layers = load_values_files([first, second])
    assert [layer["brand_name"] for layer in layers] == ["First OS", "Second OS"]
    assert load_values_files([]) == []


def test_empty_values_file_is_an_empty_layer(tmp_path):
    empty = write(tmp_path / "empty.yaml", "# nothing here\n")
    assert load_values_files([empty]) == [{}]


def test_missing_values_file_names_the_path(tmp_path, values_files):
    missing = tmp_path / "values" / "nope.yaml"
    with pytest.raises(CosbuildError) as info:
        load_values_files([values_files[0], missing])
    assert info.value.file == str(missing)
    assert str(info.value).startswith(f"{missing}: values file not found")
    assert "--values" in str(info.value)


def test_values_folder_is_not_a_values_file(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(CosbuildError, match="values file not found"):
        load_values_files([tmp_path / "adir"])


def test_values_file_must_be_a_mapping(tmp_path):
    bad = write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(CosbuildError) as info:
        load_values_files([bad])
    assert info.value.file == str(bad)
    assert "expected a mapping at the top level" in str(info.value)


def test_values_file_yaml_error_has_line(tmp_path):
    bad = write(tmp_path / "bad.yaml", "a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(CosbuildError) as info:
        load_values_files([bad])
    assert info.value.file == str(bad)
    assert info.value.line is not None
    assert "invalid YAML" in str(info.value)


# --------------------------------------------------------------------------- merge_values

@pytest.mark.parametrize("layers, expected", [
    ((), {}),
    (({"a": 1},), {"a": 1}),
    (({"a": 1}, {"a": 2}), {"a": 2}),
    (({"a": 1}, {"b": 2}), {"a": 1, "b": 2}),
    (({"a": 1}, {"a": 2}, {"a": 3}), {"a": 3}),
    (({"m": {"x": 1, "y": 2}}, {"m": {"y": 20, "z": 30}}), {"m": {"x": 1, "y": 20, "z": 30}}),
    (({"m": {"n": {"x": 1}}}, {"m": {"n": {"y": 2}}}), {"m": {"n": {"x": 1, "y": 2}}}),
    (({"l": [1, 2]}, {"l": [3]}), {"l": [3]}),                     # lists are replaced
    (({"m": {"x": 1}}, {"m": "scalar"}), {"m": "scalar"}),         # scalar replaces mapping
    (({"m": "scalar"}, {"m": {"x": 1}}), {"m": {"x": 1}}),         # mapping replaces scalar
    (({"m": {"x": 1}}, {"m": None}), {"m": None}),
    (({"m": {"x": 1}}, {"m": {}}), {"m": {"x": 1}}),
    (({"a": 1}, {}, {"b": 2}), {"a": 1, "b": 2}),
])
def test_merge_values(layers, expected):
    assert merge_values(*layers) == expected


def test_merge_values_does_not_mutate_inputs():
    base = {"m": {"x": 1, "n": {"y": 1}}, "l": [1]}
    over = {"m": {"x": 2, "n": {"z": 3}}, "l": [2]}
    merged = merge_values(base, over)
    assert merged == {"m": {"x": 2, "n": {"y": 1, "z": 3}}, "l": [2]}
    assert base == {"m": {"x": 1, "n": {"y": 1}}, "l": [1]}
    assert over == {"m": {"x": 2, "n": {"z": 3}}, "l": [2]}


def test_merge_values_keeps_key_order():
    merged = merge_values({"b": 1, "a": 2}, {"c": 3, "b": 4})
    assert list(merged) == ["b", "a", "c"]


# --------------------------------------------------------------------------- macros

def test_macro_from_templates_sees_values(project):
    _, out = render_build(project, """\
        image: busybox
        steps:
          - {{ greet("you") }}
          - {{ greet(values.brand_name) }}
        """)
    assert out.build.steps == ("echo hello you from hello-1.0+1",
                               "echo hello Hello OS from hello-1.0+1")


def test_macro_sees_values_files(project):
    _, out = render_build(project, "image: busybox\nsteps:\n  - {{ packages_line() }}\n",
                          [{"extra_packages": ["a", "b", "c"]}])
    assert out.build.steps == ("a b c",)


def test_only_the_templates_folder_at_the_top_of_a_tree_holds_templates(project, tmp_path):
    # luet 0.20 reads <tree>/templates only: deeper, `templates` is package content
    write(project / "apps" / "templates" / "more.yaml", "{% macro shout(x) %}{{ x }}!{% endmacro %}\n")
    write(project / "apps" / "templates" / "tpl" / "definition.yaml",
          "name: tpl\ncategory: apps\nversion: '1'\n")
    loaded, pkgs = load(project)
    assert loaded.templates == (project / "templates" / "macros.yaml",) and "apps/tpl" in pkgs
    with pytest.raises(CosbuildError, match="undefined variable 'shout'"):
        render_build(project, "image: busybox\nsteps:\n  - {{ shout(values.name) }}\n")
    # a second tree's templates/ is used too; a tree folder named `templates` is a tree
    other = tmp_path / "templates"
    write(other / "templates" / "more.yaml", "{% macro shout(x) %}{{ x | upper }}!{% endmacro %}\n")
    write(other / "pkg" / "definition.yaml", "name: other\ncategory: apps\nversion: '1'\n")
    set_build(project, "image: busybox\nsteps:\n  - {{ shout(values.name) }} {{ greet('a') }}\n")
    loaded = load_trees([project, other])
    assert "apps/other" in {p.id for p in loaded.packages}
    hello = next(p for p in loaded.packages if p.id == "apps/hello")
    out = Renderer(loaded.templates, []).render(hello)
    assert out.build.steps == ("HELLO! echo hello a from hello-1.0+1",)


# --------------------------------------------------------------------------- helpers

def test_helper_set_is_the_documented_one():
    # if this fails, a helper was added or removed: cover it below and in the docs
    assert set(FILTERS) == {"toyaml", "quote", "shquote", "required"}
    assert set(GLOBALS) == {"get", "has", "items"}
    items = GLOBALS["items"][0]
    assert items({"b": 2, "a": 1}) == [("a", 1), ("b", 2)] and items(["x"]) == [(0, "x")]
    reference = helper_reference()
    for name in [*FILTERS, *GLOBALS, "default", "indent", "in", "dict", "tojson", "macros"]:
        assert f"- `{name}`: " in reference


def test_toyaml_with_indent_in_build_yaml(project):
    build, out = render_build(project, """\
        bootstrap:
          suite: bookworm
          packages:
        {{ values.extra_packages | toyaml | indent(4, first=True) }}
        """)
    assert "  packages:\n    - curl\n    - git\n" in out.text
    assert out.build.bootstrap.packages == ("curl", "git")


def test_toyaml_mapping(tmp_path):
    values = merge_values(yaml.safe_load(DEFINITION), {"theme": {"nested": {"c": [1, 2]}}})
    text = render_snippet(tmp_path, "theme:\n  {{ values.theme | toyaml | indent(2) }}\n", values)
    assert text == ("theme:\n"
                    "  color: red\n"
                    "  size: small\n"
                    "  nested:\n"
                    "    a: 1\n"
                    "    b: 2\n"
                    "    c:\n"
                    "    - 1\n"
                    "    - 2\n")
    assert yaml.safe_load(text) == {"theme": values["theme"]}


def test_toyaml_of_linemap_values(project):
    """Values straight from YAML files are LineMaps; toyaml must still dump plain YAML."""
    _, pkgs = load(project)
    text = render._toyaml(pkgs["apps/hello"].values["theme"])
    assert text == "color: red\nsize: small\nnested:\n  a: 1\n  b: 2"


def test_toyaml_list_of_mappings(tmp_path):
    values = {"items": [{"name": "a", "v": 1}, {"name": "b"}]}
    text = render_snippet(tmp_path, "items:\n{{ values['items'] | toyaml | indent(2, first=True) }}\n",
                          values)
    assert text == "items:\n  - name: a\n    v: 1\n  - name: b\n"
    assert yaml.safe_load(text) == values


@pytest.mark.parametrize("value, expected", [("abc", "abc"), (5, "5"), (True, "true")])
def test_toyaml_scalar(tmp_path, value, expected):
    assert render_snippet(tmp_path, "{{ values.v | toyaml }}", {"v": value}) == expected


def test_toyaml_scalar_in_build_yaml(project):
    _, out = render_build(project, "seed: {{ values.brand_name | toyaml }}\nunpack: true\n")
    assert out.build.seed == "Hello OS"
    assert out.build.unpack is True


@pytest.mark.parametrize("value", [
    "plain", "Hello OS", 'say "hi"', "back\\slash", "a: b # c", "- dash", "{flow}", "", "ünïcode",
    "tab\there", "new\nline",
])
def test_quote_round_trips_through_yaml(tmp_path, value):
    text = render_snippet(tmp_path, "key: {{ values.v | quote }}\n", {"v": value})
    assert text.startswith('key: "')
    assert yaml.safe_load(text) == {"key": value}


def test_quote_numbers_become_strings(tmp_path):
    text = render_snippet(tmp_path, "a: {{ values.n | quote }}\nb: {{ values.v | quote }}\n",
                          {"n": 8080, "v": "1.10"})
    assert text == 'a: "8080"\nb: "1.10"\n'
    assert yaml.safe_load(text) == {"a": "8080", "b": "1.10"}


def test_quote_boolean_like_helm(project):
    _, out = render_build(project, "image: busybox\nenv:\n  - FLAG={{ values.flag | quote }}\n")
    assert out.build.env == ('FLAG="true"',)


@pytest.mark.parametrize("value", [
    "plain", "two words", "it's", 'd"q', "$HOME", "`cmd`", "a;b", "", "*.txt",
])
def test_shquote_round_trips_through_shell_words(tmp_path, value):
    text = render_snippet(tmp_path, "echo {{ values.v | shquote }}", {"v": value})
    assert shlex.split(text) == ["echo", value]


def test_shquote_leaves_safe_words_alone(tmp_path):
    assert render_snippet(tmp_path, "{{ values.v | shquote }}", {"v": "abc-1.0"}) == "abc-1.0"
    assert render_snippet(tmp_path, "{{ values.v | shquote }}", {"v": "a b"}) == "'a b'"


def test_shquote_in_build_step(project):
    _, out = render_build(project, "image: busybox\nsteps:\n  - echo {{ values.brand_name | shquote }} > /etc/brand\n")
    assert out.build.steps == ("echo 'Hello OS' > /etc/brand",)


def test_required_passes_value_through(project):
    _, out = render_build(project, "image: busybox:{{ values.theme.color | required('need a color') }}\n")
    assert out.build.image == "busybox:red"


@pytest.mark.parametrize("value", [0, False, ["x"]])
def test_required_accepts_falsy_but_present_values(tmp_path, value):
    assert render_snippet(tmp_path, "{{ values.v | required }}", {"v": value}) == str(value)


@pytest.mark.parametrize("expr", [
    "values.missing_key | required('set image_tag in a values file')",
    "values.empty | required('set image_tag in a values file')",
    "none | required('set image_tag in a values file')",
])
def test_required_fails_with_message_and_position(project, expr):
    build = set_build(project, "image: busybox\nenv:\n  - TAG={{ %s }}\n" % expr)
    renderer, pkgs = renderer_for(project)
    with pytest.raises(CosbuildError) as info:
        renderer.render(pkgs["apps/hello"])
    err = info.value
    assert err.file == str(build)
    assert err.line == 3
    assert "set image_tag in a values file" in str(err)
    assert str(err).startswith(f"{build}:3: template error: ")


def test_required_default_message(tmp_path):
    with pytest.raises(CosbuildError, match="a required value is missing"):
        render_snippet(tmp_path, "{{ values.nothing | required }}", {})


@pytest.mark.parametrize("expr, expected", [
    ('get(values, "theme.nested.a", 0)', "1"),
    ('get(values, "theme.color")', "red"),
    ('get(values, "theme.nested.zzz", "dflt")', "dflt"),
    ('get(values, "nope.deeper.still", "dflt")', "dflt"),
    ('get(values, "theme.color.deeper", "dflt")', "dflt"),   # through a scalar
    ('get(values, "extra_packages.0", "dflt")', "dflt"),      # lists are not indexed
    ('get(values, "theme.nested.zzz")', "None"),             # default default is None
    ('get(values, "labels.plain")', "x"),
    ('get(values["labels"], "package.checksum", "split")', "split"),   # dots always split
    ('get(values, "theme") == values.theme', "True"),
])
def test_get(project, tmp_path, expr, expected):
    renderer, pkgs = renderer_for(project)
    path = write(tmp_path / "get.yaml", "{{ %s }}" % expr)
    assert renderer.render_text(path, renderer.values_for(pkgs["apps/hello"])) == expected


@pytest.mark.parametrize("expr, expected", [
    ('has(values.extra_packages, "curl")', "True"),
    ('has(values.extra_packages, "vim")', "False"),
    ('has(values.nothing, "curl")', "False"),                  # null list
    ('has([], "curl")', "False"),
    ('has(values.theme, "color")', "True"),                   # mapping keys
    ('has(get(values, "nope.list"), "x")', "False"),
])
def test_has(tmp_path, expr, expected):
    values = {"extra_packages": ["curl", "git"], "nothing": None, "theme": {"color": "red"}}
    assert render_snippet(tmp_path, "{{ %s }}" % expr, values) == expected


def test_has_in_build_yaml_condition(project):
    _, out = render_build(project, """\
        image: busybox
        steps:
        {% if has(values.extra_packages, "git") %}
          - git --version
        {% endif %}
        {% if has(values.extra_packages, "vim") %}
          - vim --version
        {% endif %}
        """)
    assert out.build.steps == ("git --version",)


@pytest.mark.parametrize("expr, expected", [
    ('values.missing | default("fallback")', "fallback"),
    ('values.brand_name | default("fallback")', "Hello OS"),
    ('values.empty | default("fallback")', ""),                # defined but empty: kept
    ('values.empty | default("fallback", true)', "fallback"),  # boolean mode
    ('values.theme.missing | default(values.theme.size)', "small"),
])
def test_default(project, tmp_path, expr, expected):
    renderer, pkgs = renderer_for(project)
    path = write(tmp_path / "d.yaml", "{{ %s }}" % expr)
    assert renderer.render_text(path, renderer.values_for(pkgs["apps/hello"])) == expected


@pytest.mark.parametrize("expr, expected", [
    ('"curl" in values.extra_packages', "True"),
    ('"vim" in values.extra_packages', "False"),
    ('"vim" not in values.extra_packages', "True"),
    ('"theme" in values', "True"),
    ('"nope" in values', "False"),
    ('"package.checksum" in values.labels', "True"),
    ('"color" in values.theme', "True"),
])
def test_in_operator(project, tmp_path, expr, expected):
    renderer, pkgs = renderer_for(project)
    path = write(tmp_path / "in.yaml", "{{ %s }}" % expr)
    assert renderer.render_text(path, renderer.values_for(pkgs["apps/hello"])) == expected


def test_in_operator_in_build_yaml(project):
    _, out = render_build(project, """\
        image: busybox
        steps:
          - echo base
        {% if "git" in values.extra_packages %}
          - echo has-git
        {% endif %}
        {% if "optional" in values %}
          - echo optional={{ values.optional }}
        {% endif %}
        """, [{"optional": "yes"}])
    assert out.build.steps == ("echo base", "echo has-git", "echo optional=yes")


# --------------------------------------------------------------------------- errors

def test_undefined_value_reports_file_line_and_name(project):
    build = set_build(project, """\
        image: busybox
        steps:
          - echo {{ values.no_such_value }}
        """)
    renderer, pkgs = renderer_for(project)
    with pytest.raises(CosbuildError) as info:
        renderer.render(pkgs["apps/hello"])
    err = info.value
    assert err.file == str(build)
    assert err.line == 3
    assert str(err).startswith(f"{build}:3: template error: ")
    assert "no_such_value" in str(err)
    assert "default(" in str(err)      # the hint


def test_undefined_bare_variable(project):
    build = set_build(project, "image: busybox\nenv:\n  - A={{ brand_name }}\n")
    renderer, pkgs = renderer_for(project)
    with pytest.raises(CosbuildError) as info:
        renderer.render(pkgs["apps/hello"])
    assert info.value.file == str(build)
    assert info.value.line == 3
    assert "'brand_name' is undefined" in str(info.value)


def test_undefined_value_line_after_blocks_and_loops(project):
    build = set_build(project, """\
        image: busybox
        steps:
        {% for p in values.extra_packages %}
          - echo {{ p }}
        {% endfor %}
        {% if values.flag %}
          - echo flag
        {% endif %}
          - echo {{ values.theme.nested.missing_here }}
        """)
    renderer, pkgs = renderer_for(project)
    with pytest.raises(CosbuildError) as info:
        renderer.render(pkgs["apps/hello"])
    assert (info.value.file, info.value.line) == (str(build), 9)
    assert "missing_here" in str(info.value)


def test_undefined_attribute_of_undefined(project):
    build = set_build(project, "image: busybox\n\n\n\nenv:\n  - A={{ values.nope.deeper }}\n")
    renderer, pkgs = renderer_for(project)
    with pytest.raises(CosbuildError) as info:
        renderer.render(pkgs["apps/hello"])
    assert (info.value.file, info.value.line) == (str(build), 6)
    assert "nope" in str(info.value)


def test_undefined_in_finalize_reports_finalize(project):
    final = write(project / "apps" / "hello" / "finalize.yaml",
                  "install:\n  - echo ok\n  - echo {{ values.final_missing }}\n")
    renderer, pkgs = renderer_for(project)
    with pytest.raises(CosbuildError) as info:
        renderer.render(pkgs["apps/hello"])
    assert (info.value.file, info.value.line) == (str(final), 3)
    assert "final_missing" in str(info.value)


def test_undefined_inside_macro_reports_macro_file(project):
    set_build(project, "image: busybox\nsteps:\n  - {{ broken() }}\n")
    renderer, pkgs = renderer_for(project)
    with pytest.raises(CosbuildError) as info:
        renderer.render(pkgs["apps/hello"])
    err = info.value
    macros = project / "templates" / "macros.yaml"
    assert err.file == str(macros)
    assert err.line == 5               # `echo {{ values.macro_missing }}` in MACROS
    assert "macro_missing" in str(err)
    assert str(err).startswith(f"{macros}:5: template error: ")


def test_calling_unknown_macro_is_undefined(project):
    build = set_build(project, "image: busybox\nsteps:\n  - {{ no_such_macro() }}\n")
    renderer, pkgs = renderer_for(project)
    with pytest.raises(CosbuildError) as info:
        renderer.render(pkgs["apps/hello"])
    assert (info.value.file, info.value.line) == (str(build), 3)
    assert "no_such_macro" in str(info.value)


def test_syntax_error_reports_file_and_line(project):
    build = set_build(project, """\
        image: busybox
        steps:
        {% if values.flag %}
          - echo yes
        {% endfi %}
        """)
    renderer, pkgs = renderer_for(project)
    with pytest.raises(CosbuildError) as info:
        renderer.render(pkgs["apps/hello"])
    err = info.value
    assert err.file == str(build)
    assert err.line == 5
    assert str(err).startswith(f"{build}:5: template syntax error: ")
    assert "endfi" in str(err)


def test_unclosed_expression_reports_file_and_line(project):
    build = set_build(project, "image: busybox\nsteps:\n  - echo {{ values.name \n  - echo ok\n")
    renderer, pkgs = renderer_for(project)
    with pytest.raises(CosbuildError) as info:
        renderer.render(pkgs["apps/hello"])
    assert info.value.file == str(build)
    assert info.value.line in (3, 4)
    assert "template syntax error" in str(info.value)


def test_syntax_error_in_macro_file(project):
    macros = write(project / "templates" / "macros.yaml", "{% macro ok() %}fine{% endmacro %}\n\n{% macro bad( %}\n")
    loaded, _ = load(project)
    with pytest.raises(CosbuildError) as info:
        Renderer(loaded.templates, [])
    assert (info.value.file, info.value.line) == (str(macros), 3)
    assert "template syntax error" in str(info.value)


def test_type_error_in_expression_is_reported(project):
    build = set_build(project, "image: busybox\n\nenv:\n  - A={{ values.name + 1 }}\n")
    renderer, pkgs = renderer_for(project)
    with pytest.raises(CosbuildError) as info:
        renderer.render(pkgs["apps/hello"])
    assert (info.value.file, info.value.line) == (str(build), 4)
    assert "template error" in str(info.value)


def test_error_in_one_package_does_not_poison_the_next(tmp_path):
    tree = tmp_path / "tree"
    write(tree / "templates" / "macros.yaml", MACROS)
    write(tree / "a" / "definition.yaml", "name: a\ncategory: c\nversion: '1'\n")
    write(tree / "a" / "build.yaml", "image: x\nenv:\n  - A={{ values.undefined_here }}\n")
    write(tree / "b" / "definition.yaml", "name: b\ncategory: c\nversion: '2'\n")
    write(tree / "b" / "build.yaml", "image: x\nsteps:\n  - {{ greet('b') }}\n")
    renderer, pkgs = renderer_for(tree)
    with pytest.raises(CosbuildError):
        renderer.render(pkgs["c/a"])
    assert renderer.render(pkgs["c/b"]).build.steps == ("echo hello b from b-2",)
