"""Hostile templates, second round (issue #32): work the step limit did not count and values
made before the output bound could fire. Every function's work counts in steps, and what a
function, filter or operator can multiply (join, replace, format widths, escapes, YAML
aliases) is bounded before it runs; quadratic functions are linear. Division by zero is one
clear error, and the build graph takes requires chains thousands deep (and a package that
requires itself) without a traceback."""

from __future__ import annotations

import re
import time

import jinja2
import pytest

from cosbuild.tree import graph, helm, sandbox, sprig
from cosbuild.tree.gotemplate import MAX_OUTPUT, TemplateError, value_size
from cosbuild.tree.graph import luet_order, topological_order

from .conftest import BASIC
from .hostile import deadline  # noqa: F401 (a fixture)
from .test_hostile_specs import refused
from .test_hostile_templates import HELM, JINJA, _run_hostile

# a YAML alias bomb as template text: nine levels of nine aliases, 9**9 items unfolded
YAML_BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\\n"
             + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\\n"
                       for p, c in zip("abcdefgh", "bcdefghi")))

# id -> (template text after the engine marker, fragments of the error)
HELM_CASES = {
    "join with a large separator": ('{{ join (repeat 1000000 "x") (until 3000) }}',
                                    ["error calling join: value larger than 16 MiB"]),
    "replace of every position": ('{{ replace "" (repeat 1000000 "y") (repeat 1000000 "x") }}',
                                  ["error calling replace: value larger than 16 MiB"]),
    "printf widths adding up": ('{{ printf "' + "%999999d" * 20 + '" ' + " ".join(["1"] * 20)
                                + " }}", ["error calling printf: value larger than 16 MiB"]),
    "regexReplaceAll at every position": ('{{ regexReplaceAll "" (repeat 100000 "x") '
                                          '(repeat 1000 "y") }}',
                                          ["error calling regexReplaceAll: value larger than 16 MiB"]),
    "regexReplaceAllLiteral at every position": (
        '{{ regexReplaceAllLiteral "x" (repeat 100000 "x") (repeat 1000 "y") }}',
        ["error calling regexReplaceAllLiteral: value larger than 16 MiB"]),
    "html escapes multiplying": ('{{ $s := repeat 1000000 "<" }}{{ html $s $s $s $s $s }}',
                                 ["error calling html: value larger than 16 MiB"]),
    "quote escapes multiplying": ('{{ $s := repeat 1000000 "\\x01" }}{{ quote $s $s $s $s $s }}',
                                  ["error calling quote: value larger than 16 MiB"]),
    "fromYaml alias bomb": (f'{{{{ fromYaml "{YAML_BOMB}" }}}}',
                            ["error calling fromYaml: YAML larger than 16 MiB once its aliases "
                             "are unfolded"]),
    "fromYamlArray alias bomb": (f'{{{{ fromYamlArray "{YAML_BOMB}list: [*i]\\n" }}}}',
                                 ["error calling fromYamlArray: YAML larger than 16 MiB"]),
    "a function's work is counted": ('{{ $s := repeat 1000000 "x" }}{{ range until 100000 }}'
                                     '{{ $t := upper $s }}{{ end }}', ["runs too long"]),
    "sha256sum of a large string in a loop": ('{{ $s := repeat 1000000 "x" }}'
                                              '{{ range until 100000 }}{{ sha256sum $s }}{{ end }}',
                                              ["runs too long"]),
    "div by zero": ("{{ div 1 0 }}", ["error calling div: runtime error: integer divide by zero"]),
    "mod by zero": ("{{ mod 7 0 }}", ["error calling mod: runtime error: integer divide by zero"]),
    "div by zero in a pipeline": ('{{ 0 | div 1 }}', ["error calling div: runtime error: integer "
                                                      "divide by zero"]),
}

JINJA_CASES = {
    "sum of lists": ("{{ (range(20000)|map('string')|map('list')|list)|sum(start=[])|length }}",
                     ["runs too long"]),
    "sum of strings": ("{{ ['a', 'b']|sum(start='') }}", ["can't sum strings"]),
    "join with a large separator": ("{{ range(3000)|join('x' * 1000000) }}",
                                    ["join: result larger than 16 MiB"]),
    "str.join with a large separator": ("{{ ('x' * 1000000).join(range(3000)|map('string')) }}",
                                        ["str.join: result larger than 16 MiB"]),
    "format filter widths adding up": ("{{ ('%9999999d' * 100)|format(*range(100)) }}",
                                       ["format: result larger than 16 MiB"]),
    "percent widths adding up": ("{{ ('%(a)9999999d' * 100) % {'a': 1} }}",
                                 ["%: result larger than 16 MiB"]),
    "percent star width": ("{{ '%*d' % (999999999, 1) }}", ["%: result larger than 16 MiB"]),
    "str.format widths adding up": ("{{ ('{:>9999999}' * 100).format(*range(100)) }}",
                                    ["str.format: result larger than 16 MiB"]),
    "str.format one argument many times": ("{{ ('{0}' * 1000).format('x' * 1000000) }}",
                                           ["str.format: result larger than 16 MiB"]),
    "str.format width from an argument": ("{{ '{:{}}'.format(1, 999999999) }}",
                                          ["str.format: result larger than 16 MiB"]),
    "format_map one key many times": ("{{ ('{a}' * 1000).format_map({'a': 'x' * 1000000}) }}",
                                      ["str.format: result larger than 16 MiB"]),
    "expandtabs": ("{{ ('\\t' * 1000000).expandtabs(1000) }}",
                   ["str.expandtabs: result larger than 16 MiB"]),
    "indent of many lines": ("{{ ('\\n' * 1000000)|indent(1000) }}",
                             ["indent: result larger than 16 MiB"]),
    "indent by a long string": ("{{ ('\\n' * 1000000)|indent('y' * 1000) }}",
                                ["indent: result larger than 16 MiB"]),
    "wordwrap with a long wrapstring": ("{{ ('a ' * 100000)|wordwrap(1, wrapstring='y' * 10000) }}",
                                        ["wordwrap: result larger than 16 MiB"]),
    "tojson with a deep indent": ("{{ ([[[[[[[[[[1]]]]]]]]]] * 1000)|tojson(indent=100000) }}",
                                  ["tojson: result larger than 16 MiB"]),
    "replace with a count": ("{{ ('x' * 100000)|replace('x', 'y' * 1000, 100000) }}",
                             ["replace: result larger than 16 MiB"]),
    "center of a number": ("{{ 5|center(999999999) }}", ["center: result larger than 16 MiB"]),
    "format of a list's text": ("{{ ['%999999999d']|format(1) }}", ["format: result larger than 16 MiB"]),
    "replace in a list's text": ("{{ (['x'] * 10000)|replace('x', 'y' * 10000) }}",
                                 ["replace: result larger than 16 MiB"]),
    "a call's work is counted": ("{% set s = 'x' * 1000000 %}{% for i in range(100000) %}"
                                 "{% set t = s.upper() %}{% endfor %}", ["runs too long"]),
    "division by zero": ("{{ 1 / 0 }}", ["template error: division by zero"]),
    "floor division by zero": ("{{ 1 // 0 }}", ["template error: integer division or modulo by zero"]),
    "modulo by zero": ("{{ 1 % 0 }}", ["template error: integer modulo by zero"]),
    "format without its argument": ("{{ '{0}'.format() }}", ["template error: "]),
    "percent with a missing key": ("{{ '%(a)s' % {} }}", ["template error: no value for the key 'a'"]),
    "a filter given the wrong kind of value": ("{{ 12|wordwrap(1) }}",
                                               ["template error: 'int' object has no attribute"]),
}


@pytest.mark.parametrize("case", sorted(HELM_CASES))
def test_hostile_helm_template_is_refused(case, project, run_cli, deadline):
    start = time.monotonic()
    _run_hostile(project, run_cli, HELM, *HELM_CASES[case])
    assert time.monotonic() - start < 20   # both commands: refused early, not after the work


@pytest.mark.parametrize("case", sorted(JINJA_CASES))
def test_hostile_jinja2_template_is_refused(case, project, run_cli, deadline):
    start = time.monotonic()
    _run_hostile(project, run_cli, JINJA, *JINJA_CASES[case])
    assert time.monotonic() - start < 20


# --------------------------------------------------------------------------- handled, not refused

@pytest.mark.parametrize("template, expected", [
    ("{{ len (uniq (until 100000)) }}", "100000"),           # was pairwise: minutes
    ("{{ len (without (until 100000) 1 2 3) }}", "99997"),
    ('{{ uniq (list 1 1.0 true "1" 1 (list 1) (list 1) (dict "a" 1) (dict "a" 1)) }}',
     "[1 1 true 1 [1] map[a:1]]"),                          # Go's DeepEqual: 1, 1.0, true differ
    ("{{ without (list 1 2.0 (list 3) 3) 2 (list 3) }}", "[1 2 3]"),
    ('{{ omit (dict "a" 1 "b" 2 "c" 3) "a" "c" "z" }}', "map[b:2]"),
    ("{{ round 1.5 1000000000 }}", "NaN"),                  # was an integer 10**1e9: ages
    ("{{ round 2.345 2 }}", "2.35"),
    ("{{ mul 9223372036854775807 2 }}", "-2"),               # int64 wraps, as in Go
    ('{{ $x := 1 }}{{ range until 5000 }}{{ $x = mul $x 3 }}{{ end }}{{ $x }}',
     str((pow(3, 5000, 1 << 64) + (1 << 63)) % (1 << 64) - (1 << 63))),
    ("{{ add 9223372036854775807 1 }}", "-9223372036854775808"),
    ('{{ printf "%999999d" 1 | len }}', "999999"),            # one large width is fine
    ('{{ len (fromYaml "a: &a [x, x]\\nb: [*a, *a]") }}', "2"),
    ('{{ join "," (list 1 2 3) }} {{ replace "a" "bb" "aXa" }} {{ regexReplaceAll "(a)" "xa" "<$1>" }}',
     "1,2,3 bbXbb x<a>"),
])
def test_linear_and_go_like_functions(template, expected):
    start = time.monotonic()
    assert helm.render([("build.yaml", template)], {}) == expected
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("template", [
    '{{ uniq (list 1 1.0 true "1" 1 (list 1) (list 1)) }}',
    "{{ without (list 1 2.0 (list 3) 3) 2 (list 3) }}",
    "{{ round 1.5 1000000000 }} {{ round 2.345 2 }} {{ round -2.5 0 }}",
    "{{ mul 9223372036854775807 2 }} {{ add 9223372036854775807 1 }} {{ sub -9223372036854775808 1 }}",
])
def test_changed_functions_agree_with_luet(helm_reference, template):
    assert helm.render([("build.yaml", template)], {}) == \
        helm_reference.render([("build.yaml", template)], {})


def test_jinja2_ordinary_uses_still_render():
    env = sandbox.Sandbox(set(), {}, {})
    env.begin()
    out = env.from_string(
        "{{ '%5d|'|format(3) }}{{ '%-3s|' % 'a' }}{{ '{:>4}|{}'.format(1, 'x') }}|"
        "{{ [1, 2]|join(',') }}|{{ [[1], [2]]|sum(start=[]) }}|{{ range(5)|sum }}|"
        "{{ 'a\\nb'|indent(2) }}|{{ 'x'|center(5) }}|{{ 'a-b'.replace('-', '+') }}|"
        "{{ {'a': [1]}|tojson(indent=2) }}|{{ 'a\\tb'.expandtabs(2) }}").render()
    assert out == ('    3|a  |   1|x|1,2|[1, 2]|10|a\n  b|  x  |a+b|'
                   '{\n  "a": [\n    1\n  ]\n}|a b')


def test_jinja2_bounds_read_an_iterator_once():
    """A bound reads its operation's arguments: an iterator (map, select) is read into a list
    that the operation reads again, not used up before it runs."""
    env = sandbox.Sandbox(set(), {}, {})
    env.begin()
    out = env.from_string(
        "{{ range(3)|map('string')|join(',') }}|{{ '-'.join(range(3)|map('string')) }}|"
        "{{ [1, 2, 3]|select('odd')|batch(1)|list }}|{{ [[1], [2]]|map('list')|sum(start=[]) }}|"
        "{{ ['%s']|map('format', 'x')|join }}").render()
    assert out == "0,1,2|0-1-2|[[1], [3]]|[1, 2]|x"


# --------------------------------------------------------------------------- the bounds are bounds

HELM_SAMPLES = {
    "printf": [("%s-%d", "a", 1), ("%5.2f|%-8q|%x|%X", 3.14159, "a\x01b", "hé", 255),
               ("%v %v", [1, "a"], {"k": "v"}), ("%q", "\U0001f600" * 5), ("%%%c%t", 65, True),
               ("%e %g", 1e308, 1e-300), ("%s", None), ("%d %d", 1)],
    "join": [(",", [1, 2, 3]), ("--", ["a", None, "b"]), ("", "abc"), ("x" * 50, list(range(9))),
             ("", [{"a": 1, "b": [1, 2]}, -(1 << 63), 1e-300, True, [None]])],
    "replace": [("a", "bb", "aXa"), ("", "yy", "abc"), ("abc", "", "abcabc"), ("aa", "x", "aaa")],
    "regexReplaceAll": [("a", "xaya", "<$0$0>"), ("", "abc", "-"), ("(x)(y)?", "xyx", "${1}$2$1"),
                        ("b*", "abbbc", "[$0]")],
    "regexReplaceAllLiteral": [("", "abc", "--"), ("a+", "aaa b aa", "$1")],
    "html": [("<&'\">\0",), ("a", 1, None)],
    "js": [("\\'\"<>&=\x01",)],
    "urlquery": [("é ü/\U0001f600",)],
    "quote": [("\x01\U0001f600\"", "x"), (None, 1)],
    "toJson": [({"a": "<\u2028>", "b": [1, 2.5, None, True]},), ("\x01",),
               ([-(1 << 63), 1e-300, -1.7976931348623157e+308, False],)],
    "toYaml": [({"a": ["x\ny", "yes", "\U0001f600\x01"], "b": {"c": 1.0}},),
               ({"a": {"b": {"c": {"d": ["\n" * 20, -1.7976931348623157e+308, 1 << 62]}}}},),
               ([[[[[["x" * 300]]]]]],)],
    "b64enc": [("\U0001f600é",)], "b32enc": [("\U0001f600é",)],
}


@pytest.mark.parametrize("name", sorted(HELM_SAMPLES))
def test_helm_bounds_are_upper_bounds(name):
    """A bound that underestimates would let a large value be made: each declared bound is at
    least the size of what the function makes, on awkward inputs."""
    func = sprig.functions()[name]
    assert func.bound, f"{name} has no declared bound"
    for args in HELM_SAMPLES[name]:
        assert value_size(func.fn(*args))[0] <= func.bound(*args), (name, args)


JINJA_SAMPLES = [
    "{{ ('%(a)5d-%(a)s' % {'a': 12}) }}", "{{ '%*.*f' % (9, 3, 2.5) }}", "{{ '%s %s' % ('a', 'b') }}",
    "{{ '%d'|format(5) }}", "{{ '{0}{0}{1:>7}'.format('ab', 1) }}", "{{ '{:{}.{}}'.format(1.5, 9, 3) }}",
    "{{ '{a}{a}'.format_map({'a': 'xyz'}) }}", "{{ 'abc'|replace('', '--') }}",
    "{{ 'a.b.c'.replace('.', '...', 1) }}", "{{ [1, 'a', [2]]|join('::') }}",
    "{{ '-'.join(['a', 'b']) }}", "{{ 'a\\n\\nb'|indent(3, true, true) }}", "{{ 'ab'|center(9) }}",
    "{{ 'ab'.zfill(7) }}", "{{ '\\ta\\tb'.expandtabs(5) }}", "{{ 'aa bb cc'|wordwrap(2, wrapstring='<>') }}",
    "{{ {'a': [[1, {'b': '<'}]]}|tojson(indent=3) }}", "{{ 'see https://x.org now'|urlize(target='_t') }}",
    "{{ 5|center(9) }}", "{{ ['%s', {'k': 1}]|format('a') }}", "{{ ['x', 'xx']|replace('x', 'yy') }}",
    "{{ [1, 'a', [2]]|join(0) }}", "{{ 12345|replace(3, 'abc') }}",
    "{{ '<&>'|e }}", "{{ {'a': '\"'}|xmlattr }}", "{{ 'é ü'|urlencode }}", "{{ 'ab' * 3 }}",
]


@pytest.mark.parametrize("template", JINJA_SAMPLES)
def test_jinja2_bounds_are_upper_bounds(template, monkeypatch):
    """Each bound of sandbox.BOUNDS at least the size of what its operation made (the next
    value the sandbox sizes after the bound is the operation's result)."""
    pairs, pending = [], []
    real_bounds, real_sized = sandbox.BOUNDS.copy(), sandbox.Sandbox.sized

    def spy(name):
        def bound(*args, **kwargs):
            pending.append((name, real_bounds[name](*args, **kwargs)))
            return pending[-1][1]
        return bound

    def sized(self, value):
        if pending:
            pairs.append((*pending.pop(), value))
        return real_sized(self, value)
    monkeypatch.setattr(sandbox, "BOUNDS", {name: spy(name) for name in real_bounds})
    monkeypatch.setattr(sandbox.Sandbox, "sized", sized)
    env = sandbox.Sandbox(set(), {}, {})
    env.begin()
    env.from_string(template).render()
    assert pairs, "no bound was consulted"
    for name, bound, result in pairs:
        assert value_size(result)[0] <= bound, (name, result, bound)


@pytest.mark.parametrize("name, value, args", [
    ("batch", [1, 2, 3], (2, 0)), ("batch", [1, 2, 3], (7, "fill")), ("batch", "abc", (2,)),
    ("slice", [1, 2, 3], (5, "f")), ("slice", list(range(10)), (3, [1, 2])), ("slice", [], (4,)),
])
def test_jinja2_batch_and_slice_bounds(name, value, args):
    """These two are generators: the bound stands for all they yield."""
    made = list({"batch": jinja2.filters.do_batch, "slice": jinja2.filters.sync_do_slice}[name](
        value, *args))
    assert value_size(made)[0] <= sandbox.BOUNDS[name](value, *args)


def test_a_bound_is_checked_before_the_operation_runs(monkeypatch):
    """Refused on the estimate: the real operation is never called."""
    calls = []
    real_join = sprig.TABLE["join"][0]
    monkeypatch.setitem(sprig.TABLE, "join", (real_join.__class__(
        lambda *a: calls.append(a), real_join.params, bound=real_join.bound), ""))
    sprig.functions.cache_clear()
    try:
        with pytest.raises(TemplateError, match="error calling join: value larger than 16 MiB"):
            helm.render([("build.yaml", '{{ join (repeat 1000000 "x") (until 100) }}')], {})
    finally:
        sprig.functions.cache_clear()
    assert calls == []


def test_function_work_is_counted_in_steps():
    """The same loop is fine with a small string and too long with a large one: the work is
    the characters a function reads and writes, not one step per call."""
    loop = '{{ $s := repeat %d "x" }}{{ range until 2000 }}{{ $t := upper $s }}{{ end }}ok'
    assert helm.render([("build.yaml", loop % 100)], {}) == "ok"
    with pytest.raises(TemplateError, match="runs too long"):
        helm.render([("build.yaml", loop % 1000000)], {})


# --------------------------------------------------------------------------- the build graph

def test_topological_and_luet_order_take_a_chain_deeper_than_python_recursion():
    depth = 20000
    deps = {f"p{i}": ((f"p{i - 1}",) if i else ()) for i in range(depth)}
    assert topological_order(deps) == [f"p{i}" for i in range(depth)]
    sources = {k: type("S", (), {"definition": type("D", (), {"name": k, "category": "c",
                                                               "version": "1"})})
               for k in deps}
    assert luet_order(f"p{depth - 1}", deps, sources) == tuple(f"p{i}" for i in range(depth - 1))


def test_a_deep_cycle_is_reported_with_its_path():
    deps = {f"p{i}": (f"p{(i + 1) % 5000}",) for i in range(5000)}
    with pytest.raises(graph.CycleError) as exc:
        topological_order(deps)
    assert exc.value.cycle[0] == exc.value.cycle[-1] and len(exc.value.cycle) == 5001


def _line_of_packages(count: int, image: bool) -> dict[str, str]:
    """base <- p0 <- p1 <- ... each requiring the one before."""
    files = {k: v for k, v in BASIC.items() if k.startswith("tree/base/")}
    for i in range(count):
        before = "{name: base, category: distro}" if i == 0 else f"{{name: p{i - 1}, category: c}}"
        files[f"tree/p{i}/definition.yaml"] = f"name: p{i}\ncategory: c\nversion: '1'\n"
        files[f"tree/p{i}/build.yaml"] = (("image: alpine\n" if image else "")
                                          + f"requires:\n  - {before}\nsteps: [make]\n")
    return files


def test_a_requires_chain_thousands_deep_validates_and_prints(project, run_cli, deadline):
    project(_line_of_packages(1500, image=True))
    code, out, err = run_cli("validate")
    assert code == 0, err[-500:]
    assert "1501 packages" in out
    code, out, err = run_cli("graph")
    assert code == 0 and "Traceback" not in err
    assert out.splitlines()[0].startswith("c/p1499@1")
    assert out.splitlines()[-1].startswith(" " * 2 * 1500 + "distro/base@1.0")


def test_a_chain_deeper_than_max_chain_is_refused_naming_the_package(project, run_cli,
                                                                       monkeypatch):
    monkeypatch.setattr(graph, "MAX_CHAIN", 20)
    project(_line_of_packages(30, image=False))
    refused(run_cli("validate"), "tree/p20/build.yaml: requires: c/p20@1 builds on a chain of "
                                 "more than 20 package images")


def test_a_chain_at_max_chain_builds(project, monkeypatch):
    monkeypatch.setattr(graph, "MAX_CHAIN", 20)
    project(_line_of_packages(20, image=False))
    from .test_graph import load
    g = load()
    chain = g.packages["c/p19@1"].chain
    assert [s.key for s in chain] == ["distro/base@1.0", *(f"c/p{i}@1" for i in range(19))]
    assert all(s.base == below.tag for below, s in zip(chain, chain[1:]))


@pytest.mark.parametrize("build", [
    "requires:\n  - {name: app, category: app}\nsteps: [make]\n",
    "image: x\njoin:\n  - {name: app, category: app}\n",
    "image: x\ncopy:\n  - package: {name: app, category: app}\n    source: /a\n    destination: /b\n",
    "requires:\n  - {name: base, category: distro}\n  - {name: app, category: app, version: '>=0'}\n"
    "steps: [make]\n",
])
@pytest.mark.parametrize("command", [["validate"], ["graph"]])
def test_a_package_that_builds_on_itself_is_a_cycle(build, command, project, run_cli, deadline):
    project({**BASIC, "tree/app/build.yaml": build})
    refused(run_cli(*command), "tree/app/build.yaml: dependency cycle: app/app@0.1 -> app/app@0.1")


def test_building_on_an_older_version_of_itself_is_no_cycle(project, run_cli):
    project({**BASIC,
             "tree/app2/definition.yaml": "name: app\ncategory: app\nversion: '0.2'\n",
             "tree/app2/build.yaml": "requires:\n  - {name: app, category: app, version: '<0.2'}\n"
                                     "steps: [make]\n"})
    code, out, err = run_cli("validate")
    assert code == 0, err


def test_retrieving_its_own_artifact_name_is_no_cycle(project, run_cli):
    project({**BASIC, "tree/app/build.yaml": "image: x\nretrieve: [app-app-*]\nsteps: [make]\n"})
    code, out, err = run_cli("validate")
    assert code == 0, err


def test_limits_stay_shared():
    assert sandbox.MAX_OUTPUT == MAX_OUTPUT
    assert re.fullmatch(r"\d+", str(graph.MAX_CHAIN))
