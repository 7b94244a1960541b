"""Hostile templates (issue #14): a build.yaml runs nothing on the host, reads nothing but the
tree's own templates, and is bounded in loops, recursion and size, in both engines. Each case
goes through `cosbuild validate` and `cosbuild render`: exit 1, one clear message naming the
file and line, no traceback, quickly, and nothing written outside the build folder."""

from __future__ import annotations

import time

import pytest

from cosbuild.tree import gotemplate, helm, sprig

from .conftest import BASIC
from .hostile import deadline, files_outside_build  # noqa: F401 (a fixture)

JINJA = "# cosbuild-engine: jinja2\n"
HELM = "# cosbuild-engine: helm\n"
SENTINEL = "SENTINEL"   # replaced by a path outside the project that must stay absent

# id -> (template text after the engine marker, fragments of the error)
JINJA_CASES = {
    # no Python internals
    "globals through cycler": ("{{ cycler.__init__.__globals__.os.popen('touch SENTINEL').read() }}",
                               ["unsafe"]),
    "class mro subclasses": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", ["unsafe"]),
    "template reference context": ("{{ self._TemplateReference__context }}", ["unsafe"]),
    "lipsum globals": ("{{ lipsum.__globals__.os.system('touch SENTINEL') }}",
                       ["'lipsum' is undefined"]),
    "format string attribute": ("{{ '{0.__init__.__globals__}'.format(cycler) }}", ["unsafe"]),
    "mutating the values": ("{{ values.update({'name': 'x'}) }}", ["unsafe"]),
    "filter attr": ("{{ values|attr('__class__') }}", ["unsafe"]),
    # no files but the tree's own templates
    "include a host file": ("{% include '/etc/hostname' %}", ["not one of the tree's own templates"]),
    "import with dot-dot": ("{% import '../../etc/passwd' as x %}",
                            ["not one of the tree's own templates"]),
    "include a tree file that is no template": ("{% include 'tree/app/main.c' %}",
                                                ["not one of the tree's own templates"]),
    # loops
    "huge range": ("{{ range(10**9)|list|length }}", ["ranges larger than MAX_RANGE"]),
    "nested loops with output": ("{% for a in range(100000) %}{% for b in range(100000) %}"
                                 "{{ 'x' * 100 }}{% endfor %}{% endfor %}", ["larger than 16 MiB"]),
    "nested loops without output": ("{% for a in range(100000) %}{% for b in range(100000) %}"
                                    "{% endfor %}{% endfor %}", ["runs too long"]),
    # recursion
    "recursive macro": ("{% macro m(n) %}{{ m(n) }}{% endmacro %}{{ m(1) }}", ["nesting too deep"]),
    "self include": ("{% include 'tree/app/build.yaml' %}", ["nesting too deep"]),
    "recursive loop": ("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
                       ["nesting too deep"]),
    # size
    "string times 10**10": ("{{ 'x' * 10**10 }}", ["larger than 16 MiB"]),
    "list times": ("{{ ([1] * 10**9)|length }}", ["larger than 16 MiB"]),
    "power": ("{{ 7 ** 1000000 }}", ["integer larger than"]),
    "doubling with ~": ("{% set ns = namespace(x='xxxxxxxx') %}{% for i in range(60) %}"
                        "{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x|length }}",
                        ["larger than 16 MiB"]),
    "doubling with +": ("{% set ns = namespace(x='xxxxxxxx') %}{% for i in range(60) %}"
                        "{% set ns.x = ns.x + ns.x %}{% endfor %}{{ ns.x|length }}",
                        ["larger than 16 MiB"]),
    "doubling macro": ("{% macro d(s, n) %}{{ d(s ~ s, n - 1) if n else s|length }}{% endmacro %}"
                       "{{ d('x', 60) }}", ["larger than 16 MiB"]),
    "big loop in a macro": ("{% macro m() %}{% for i in range(100000) %}{{ 'x' * 1000000 }}"
                            "{% endfor %}{% endmacro %}{{ m()|length }}", ["larger than 16 MiB"]),
    "big loop in a set block": ("{% set y %}{% for i in range(100000) %}{{ 'x' * 1000000 }}"
                                "{% endfor %}{% endset %}{{ y|length }}", ["larger than 16 MiB"]),
    "join of one string many times": ("{% set s = 'x' * 1000000 %}{{ ([s] * 100)|join|length }}",
                                      ["larger than 16 MiB"]),
    "replace explosion": ("{{ ('x' * 10000)|replace('', 'y' * 10000)|length }}",
                          ["larger than 16 MiB"]),
    "str.replace explosion": ("{{ ('x' * 10000).replace('', 'y' * 10000)|length }}",
                              ["larger than 16 MiB"]),
    "center": ("{{ 'x'|center(10**9) }}", ["larger than 16 MiB"]),
    "str.ljust": ("{{ 'x'.ljust(10**9) }}", ["larger than 16 MiB"]),
    "indent": ("{{ 'x\\ny'|indent(10**9) }}", ["larger than 16 MiB"]),
    "percent width": ("{{ '%999999999d' % 1 }}", ["larger than 16 MiB"]),
    "format filter width": ("{{ '%999999999d'|format(1) }}", ["larger than 16 MiB"]),
    "str.format width": ("{{ '{:>999999999}'.format(1) }}", ["larger than 16 MiB"]),
    "batch fill": ("{{ [1]|batch(10**9, 0)|list|length }}", ["larger than 16 MiB"]),
    "alias bomb to JSON": ("{{ values.bomb|tojson }}", ["larger than 16 MiB"]),
    "alias bomb to YAML": ("{{ values.bomb|toyaml }}", ["larger than 16 MiB"]),
}

HELM_CASES = {
    "include recursion": ('{{ define "a" }}{{ include "a" . }}{{ end }}{{ include "a" . }}',
                          ["more than 100 levels"]),
    "template recursion": ('{{ define "a" }}{{ template "a" . }}{{ end }}{{ template "a" . }}',
                           ["exceeded maximum template depth (100)"]),
    "tpl calling itself": ('{{ tpl "{{ tpl .x . }}" (dict "x" "{{ tpl .x . }}" "Template" .Template) }}',
                           ["error calling tpl", "template nesting too deep"]),
    "nested ranges": ("{{ range until 100000 }}{{ range until 100000 }}x{{ end }}{{ end }}",
                      ["runs too long"]),
    "huge repeat": ('{{ repeat 1000000000 "x" }}', ["repeat: result larger than 1 MiB"]),
    "doubling with cat": ('{{ $x := "xxxxxxxx" }}{{ range until 60 }}{{ $x = cat $x $x }}{{ end }}',
                          ["error calling cat: value larger than 16 MiB"]),
    "doubling with printf": ('{{ $x := "xxxxxxxx" }}{{ range until 60 }}{{ $x = printf "%s%s" $x $x }}'
                             '{{ end }}', ["error calling printf: value larger than 16 MiB"]),
    "list doubling": ("{{ $l := list 1 }}{{ range until 60 }}{{ $l = concat $l $l }}{{ end }}",
                      ["runs too long"]),
    "join of one string many times": ('{{ $x := repeat 1000000 "x" }}{{ $l := list }}'
                                      '{{ range until 10000 }}{{ $l = append $l $x }}{{ end }}'
                                      '{{ join "" $l }}', ["value larger than 16 MiB"]),
    "map built of itself": ('{{ $d := dict }}{{ range until 60 }}{{ $d = dict "a" $d "b" $d }}'
                            '{{ end }}{{ toJson $d }}', ["value larger than 16 MiB"]),
    "indent": ('{{ indent 1000000000 "x" }}', ["indent: result larger than 16 MiB"]),
    "nindent": ('{{ nindent 1000000000 "x" }}', ["indent: result larger than 16 MiB"]),
    "replace explosion": ('{{ replace "" (repeat 100000 "y") (repeat 1000 "x") }}',
                          ["value larger than 16 MiB"]),
    "alias bomb to JSON": ("{{ .Values.bomb | toJson }}", ["value larger than 16 MiB"]),
    "no env": ('{{ env "HOME" }}', ['function "env" not defined']),
    "no expandenv": ('{{ expandenv "$HOME" }}', ['function "expandenv" not defined']),
    "no files": ('{{ .Files.Get "/etc/passwd" }}', ["nil pointer"]),
    "no DNS": ('{{ getHostByName "example.com" }}', ['function "getHostByName" not defined']),
}

# a YAML alias bomb: small as a file, 9**9 items as text
BOMB = ("bomb_a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"bomb_{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                  for p, c in zip("abcdefgh", "bcdefghi"))
        + "bomb: *i\n")


def _run_hostile(project, run_cli, marker: str, template: str, expected: list[str]):
    sentinel = project.path.parent / f"{project.path.name}-sentinel"
    project({**BASIC, "tree/app/definition.yaml":
             "name: app\ncategory: app\nversion: '0.1'\n" + (BOMB if "bomb" in template else ""),
             "tree/app/build.yaml": marker + template.replace(SENTINEL, str(sentinel)) + "\n"})
    before = files_outside_build(project.path)
    for command in (["validate"], ["render", "app/app"]):
        start = time.monotonic()
        code, out, err = run_cli(*command)
        assert time.monotonic() - start < 30, f"{command}: too slow"
        assert code == 1, (command, out[:300], err[:300])
        assert "Traceback" not in err
        # the line, where one line is to blame (not for the whole output being too large)
        assert err.startswith(("cosbuild: error: tree/app/build.yaml:2: template error: ",
                               "cosbuild: error: tree/app/build.yaml: template error: "
                               "template output larger")), err[:300]
        assert len(err.splitlines()) == 1
        for fragment in expected:
            assert fragment in err, f"{command}: {fragment!r} not in {err[:500]!r}"
    assert not sentinel.exists()
    assert files_outside_build(project.path) == before


@pytest.mark.parametrize("case", sorted(JINJA_CASES))
def test_hostile_jinja2_template_is_refused(case, project, run_cli, deadline):
    _run_hostile(project, run_cli, JINJA, *JINJA_CASES[case])


@pytest.mark.parametrize("case", sorted(HELM_CASES))
def test_hostile_helm_template_is_refused(case, project, run_cli, deadline):
    _run_hostile(project, run_cli, HELM, *HELM_CASES[case])


def test_backtracking_regex_is_time_limited(project, run_cli, monkeypatch):
    """Python's re backtracks where Go's RE2 does not: the match gets a time limit (its
    own alarm: no `deadline` here, as the limit stands aside for a timer already set)."""
    monkeypatch.setattr(sprig, "REGEX_SECONDS", 0.5)
    _run_hostile(project, run_cli, HELM,
                 '{{ regexMatch "(a+)+$" (printf "%s!" (repeat 60 "a")) }}',
                 ["error calling regexMatch: regular expression takes longer than 0.5 s"])


def test_printf_width_too_large_is_go_s_noverb(helm_reference):
    """Go's fmt stops reading a width past 1e6: cosbuild prints what luet prints, at once."""
    template = '{{ printf "%0999999999d|%.999999999f" 1 2.0 }}'
    expected = helm_reference.render([("build.yaml", template)], {})
    assert helm.render([("build.yaml", template)], {}) == expected == "%!(NOVERB)%!(EXTRA int=1, float64=2)"


def test_toJson_of_the_values_still_renders(project, run_cli):
    """The bounds leave ordinary templates alone: the whole values, a loop, a macro."""
    project({**BASIC, "tree/app/build.yaml": HELM + "image: x\nenv:\n  - V={{ .Values | toJson }}\n"
             "steps:\n{{- range until 3 }}\n  - echo {{ . }}\n{{- end }}\n",
             "tree/base/build.yaml": JINJA + "{% macro step(n) %}echo {{ n }}{% endmacro %}"
             "image: debian\nsteps:\n{% for i in range(3) %}  - {{ step(i) }}\n{% endfor %}"})
    code, out, err = run_cli("render", "app/app")
    assert code == 0, err
    assert '"name":"app"' in out and "echo 2" in out
    code, out, err = run_cli("render", "distro/base")
    assert code == 0, err
    assert "- echo 2" in out


def test_limits_are_the_same_for_both_engines():
    from cosbuild.tree import sandbox
    assert sandbox.MAX_OUTPUT == gotemplate.MAX_OUTPUT == 16 * 1024 * 1024
    assert sandbox.MAX_STEPS == gotemplate.MAX_STEPS

