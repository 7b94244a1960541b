'''Helm template cases for the differential test (tests/test_helm_differential.py): each is
rendered by the reference (luet 0.20's engine, tests/helmref) and by cosbuild's own engine,
which must give the same text, or both fail. They cover SPEC §1 "Templating" and the sprig
and Helm functions trees use. Where luet 0.20 surprises, the id says "luet-" (FINDINGS: the
values of a definition are read by go-yaml v2, so a nested mapping is a
map[interface{}]interface{}: toYaml/toJson give "" for it and sprig's dict functions
refuse it).'''

from __future__ import annotations

from dataclasses import dataclass

# .Values of every case unless it says otherwise: a package definition.
VALUES = {
    "name": "hello",
    "category": "apps",
    "version": "1.0+1",
    "labels": {"package.checksum": "abc123", "plain": "x"},
    "brand_name": "Hello OS",
    "flag": True,
    "off": False,
    "count": 3,
    "ratio": 1.5,
    "big": 1000000,
    "whole": 2.0,
    "empty": "",
    "nothing": None,
    "list": ["a", "b"],
    "nums": [3, 1, 2],
    "nested": {"a": {"b": "deep"}, "z": 1, "m": 2},
    "text": "  Hello World  ",
    "csv": "a,b,c",
}

# shared templates, as a tree's templates/*.yaml would define them
TEMPLATES = (
    ("templates/greet.yaml", '{{ define "greet" }}Hi {{ .name }}{{ end }}\n'),
    ("templates/block.yaml", '{{- define "block" -}}\na: 1\nb: {{ .Values.name }}\n{{- end -}}\n'),
)


@dataclass(frozen=True)
class Case:
    id: str
    template: str                    # the build.yaml text
    values: dict | None = None       # None: VALUES
    templates: tuple = ()            # (file, text) sources before the build.yaml
    error: bool = False              # must fail in both
    expect: str | None = None        # hand-written output: checks the reference itself

    def sources(self) -> list[tuple[str, str]]:
        return [*self.templates, ("build.yaml", self.template)]

    def data(self) -> dict:
        return VALUES if self.values is None else self.values


CASES = (
    # values
    Case("value", "{{ .Values.name }}", expect="hello"),
    Case("value-nested", "{{ .Values.nested.a.b }}", expect="deep"),
    Case("value-missing-is-empty", "[{{ .Values.missing }}]", expect="[]"),
    Case("value-missing-in-map", "[{{ .Values.nested.nope }}]", expect="[]"),
    Case("value-null-is-empty", "[{{ .Values.nothing }}]", expect="[]"),
    Case("value-field-of-missing-fails", "{{ .Values.missing.deeper }}", error=True),
    Case("value-field-of-string-fails", "{{ .Values.name.deeper }}", error=True),
    Case("index-dotted-label", '{{ index .Values.labels "package.checksum" }}', expect="abc123"),
    Case("index-list", "{{ index .Values.list 1 }}", expect="b"),
    Case("index-missing-key", '[{{ index .Values.labels "nope" }}]', expect="[]"),
    Case("index-out-of-range", "{{ index .Values.list 5 }}", error=True),
    Case("root-dollar", "{{ $.Values.name }}"),
    # printing values as Go does
    Case("print-list-map-scalars",
         "{{ .Values.list }} {{ .Values.labels }} {{ .Values.ratio }} {{ .Values.flag }} "
         "{{ .Values.count }} {{ .Values.nested }}",
         expect="[a b] map[package.checksum:abc123 plain:x] 1.5 true 3 "
                "map[a:map[b:deep] m:2 z:1]"),
    Case("print-big-int-and-whole-float", "{{ .Values.big }} {{ .Values.whole }}"),
    Case("print-nil", "{{ print nil }}|{{ printf \"%v\" .Values.nothing }}"),
    Case("print-values-types", "{{ .Values.nums }} {{ .Values.off }}",
         values={"nums": [1, 2.5, "x", True, None], "off": False}),
    # conditionals
    Case("if-else", "{{ if .Values.flag }}yes{{ else }}no{{ end }}", expect="yes"),
    Case("if-else-if",
         "{{ if .Values.off }}a{{ else if .Values.empty }}b{{ else if .Values.count }}c"
         "{{ else }}d{{ end }}", expect="c"),
    Case("if-missing", "{{ if .Values.missing }}x{{ else }}y{{ end }}"),
    Case("if-empty-list-and-map", "{{ if .Values.l }}x{{ end }}{{ if .Values.m }}y{{ end }}-",
         values={"l": [], "m": {}}),
    Case("eq-string", '{{ eq .Values.name "hello" }}', expect="true"),
    Case("eq-any-of", '{{ eq .Values.name "x" "hello" }} {{ eq .Values.name "x" "y" }}'),
    Case("eq-int", "{{ eq .Values.count 3 }}"),
    Case("ne", '{{ ne .Values.category "apps" }} {{ ne .Values.category "x" }}'),
    Case("lt-gt-le-ge", "{{ lt 1 2 }} {{ gt .Values.count 2 }} {{ le 2 2 }} {{ ge 1 2 }}"),
    Case("lt-incompatible-fails", "{{ lt .Values.name 1 }}", error=True),
    Case("and-or-not", '{{ and .Values.flag .Values.name }} {{ or .Values.empty .Values.off "z" }} '
                       '{{ not .Values.flag }} {{ not .Values.missing }}'),
    # printf and print
    Case("printf-verbs",
         '{{ printf "%s-%d-%v-%q" .Values.name .Values.count .Values.flag .Values.brand_name }}',
         expect='hello-3-true-"Hello OS"'),
    Case("printf-list-and-map", '{{ printf "%v %v" .Values.list .Values.labels }}'),
    Case("printf-wrong-verb", '{{ printf "%d" .Values.name }}'),
    Case("printf-float", '{{ printf "%v %.2f %s" .Values.ratio .Values.ratio .Values.count }}'),
    Case("print-println", '{{ print "a" 1 2 "b" }}|{{ println "x" 1 }}|'),
    # dicts
    Case("dict-get-haskey",
         '{{ $d := dict "a" 1 "b" "two" }}{{ $d.a }} {{ get $d "b" }} {{ hasKey $d "a" }} '
         '{{ hasKey $d "z" }} [{{ get $d "z" }}]'),
    Case("dict-keys", '{{ keys (dict "b" 1 "a" 2) | sortAlpha }}'),
    Case("dict-set", '{{ $d := dict "a" 1 }}{{ $_ := set $d "b" 2 }}{{ $d }}'),
    Case("dict-merge",
         '{{ $a := dict "x" 1 "y" (dict "p" 1) }}{{ $b := dict "y" (dict "q" 2) "z" 3 }}'
         '{{ merge $a $b }}'),
    Case("dict-chained-fields", '{{ (dict "a" (dict "b" 1)).a.b }}', expect="1"),
    Case("dict-of-values", '{{ hasKey .Values "name" }} {{ hasKey .Values "nope" }} '
                           '{{ get .Values "name" }}'),
    Case("luet-haskey-on-nested-values-fails", '{{ hasKey .Values.labels "plain" }}', error=True),
    Case("luet-keys-of-nested-values-fails", "{{ keys .Values.nested }}", error=True),
    Case("dict-printed", '{{ dict "b" (list 1 2) "a" "x" }}'),
    # defaults
    Case("default",
         '{{ default "d" .Values.missing }} {{ default "d" .Values.empty }} '
         '{{ default "d" .Values.name }} {{ .Values.missing | default "piped" }}',
         expect="d d hello piped"),
    Case("default-false-and-zero", '{{ default "d" .Values.off }} {{ default 5 0 }}'),
    Case("empty", "{{ empty .Values.empty }} {{ empty .Values.list }} {{ empty .Values.missing }} "
                  "{{ empty 0 }} {{ empty .Values.nested }}"),
    Case("coalesce", '{{ coalesce .Values.missing .Values.empty "third" }}'),
    Case("ternary", '{{ ternary "y" "n" .Values.flag }} {{ .Values.off | ternary "y" "n" }}'),
    # lists
    Case("has", '{{ has "a" .Values.list }} {{ has "z" .Values.list }} {{ .Values.list | has "b" }}'),
    Case("list-append", '{{ $l := list 1 "two" }}{{ append $l 3 }} {{ list }} {{ $l }}'),
    Case("first-last-rest-initial",
         "{{ first .Values.list }} {{ last .Values.list }} {{ rest .Values.list }} "
         "{{ initial .Values.nums }}"),
    Case("uniq", '{{ list 1 1 2 "a" "a" | uniq }}'),
    Case("join", '{{ join "," .Values.list }} {{ .Values.nums | join "-" }}'),
    Case("split", '{{ $p := split "," .Values.csv }}{{ $p._1 }} {{ $p }}'),
    Case("splitlist", '{{ splitList "," .Values.csv }} {{ splitList "," .Values.csv | len }}'),
    Case("sortalpha", '{{ sortAlpha (list "b" "a" "c") }} {{ .Values.nums | sortAlpha }}'),
    Case("len", "{{ len .Values.list }} {{ len .Values.name }} {{ len .Values.labels }}"),
    Case("concat-without", '{{ concat .Values.list (list "c") }} {{ without .Values.list "a" }}'),
    # range
    Case("range-list-index", "{{ range $i, $v := .Values.list }}{{ $i }}={{ $v }};{{ end }}",
         expect="0=a;1=b;"),
    Case("range-map-sorted", "{{ range $k, $v := .Values.labels }}{{ $k }}={{ $v }};{{ end }}",
         expect="package.checksum=abc123;plain=x;"),
    Case("range-dot", "{{ range .Values.list }}[{{ . }}]{{ end }}"),
    Case("range-else", "{{ range .Values.missing }}x{{ else }}none{{ end }}"),
    Case("range-root-inside", "{{ range .Values.list }}{{ $.Values.name }}-{{ . }} {{ end }}"),
    Case("range-nested-map", "{{ range $k, $v := .Values.nested }}{{ $k }}:{{ $v }} {{ end }}"),
    Case("range-dict-sorted", '{{ range $k, $v := dict "b" 2 "a" 1 "c" 3 }}{{ $k }}{{ $v }}{{ end }}'),
    Case("range-list-of-maps",
         "{{ range .Values.pkgs }}{{ .name }}/{{ .category }} {{ end }}",
         values={"pkgs": [{"name": "a", "category": "x"}, {"name": "b", "category": "y"}]}),
    # with
    Case("with", "{{ with .Values.nested.a }}{{ .b }}{{ end }}", expect="deep"),
    Case("with-else", "{{ with .Values.missing }}x{{ else }}no{{ end }}"),
    Case("with-empty-string", "{{ with .Values.empty }}x{{ else }}empty{{ end }}"),
    # variables
    Case("variable-reassign", '{{ $x := "a" }}{{ $x }}{{ $x = "b" }}{{ $x }}', expect="ab"),
    Case("variable-assigned-in-range", "{{ $n := 0 }}{{ range .Values.nums }}{{ $n = add $n . }}"
                                       "{{ end }}{{ $n }}"),
    Case("variable-out-of-scope-fails", "{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}", error=True),
    Case("variable-undefined-fails", "{{ $nope }}", error=True),
    # define, template, include, tpl, required
    Case("template-shared", '{{ template "greet" .Values }}', templates=TEMPLATES,
         expect="Hi hello"),
    Case("include-piped", '{{ include "greet" .Values | upper }}', templates=TEMPLATES),
    Case("include-nindent", 'key:{{ include "block" . | nindent 2 }}\nend: 1\n',
         templates=TEMPLATES),
    Case("define-after-use", '{{ template "late" . }}{{ define "late" }}L{{ .Values.name }}{{ end }}'),
    Case("define-twice-fails", '{{ define "greet" }}again{{ end }}x', templates=TEMPLATES,
         error=True),
    Case("template-no-value-inside", '{{ define "t" }}[{{ .missing }}]{{ end }}{{ template "t" .Values }}'),
    Case("include-no-value-upper", '{{ define "t" }}{{ .missing }}{{ end }}{{ include "t" .Values | upper }}'),
    Case("tpl", '{{ tpl "{{ .Values.name }}-x" . }}'),
    Case("luet-tpl-cannot-see-defines", '{{ tpl "{{ include \\"greet\\" .Values }}" . }}',
         templates=TEMPLATES, error=True),
    Case("required-ok", '{{ required "need name" .Values.name }}'),
    Case("required-missing-fails", '{{ required "need it" .Values.missing }}', error=True),
    Case("required-empty-fails", '{{ required "need it" .Values.empty }}', error=True),
    Case("required-false-ok", '{{ required "need it" .Values.off }}'),
    Case("template-missing-fails", '{{ template "nope" . }}', error=True),
    Case("include-missing-fails", '{{ include "nope" . }}', error=True),
    # YAML and JSON
    Case("toyaml-list", "l:\n{{ toYaml .Values.list | indent 2 }}"),
    Case("toyaml-dict-nindent", 'x:{{ toYaml (dict "b" 1 "a" (list "x" "y")) | nindent 2 }}'),
    Case("toyaml-scalars", '{{ toYaml "yes" }} {{ toYaml 1.5 }} {{ toYaml .Values.name }} '
                           '{{ toYaml .Values.missing }}'),
    Case("luet-toyaml-of-nested-values-is-empty", "[{{ toYaml .Values.labels }}]", expect="[]"),
    Case("indent", '{{ "a\\nb" | indent 4 }}|{{ "a\\nb" | nindent 2 }}'),
    Case("tojson", '{{ toJson .Values.list }} {{ toJson (dict "a" 1 "b" (list true nil)) }} '
                   '[{{ toJson .Values.labels }}] {{ toJson .Values.name }}'),
    Case("fromjson", '{{ $m := fromJson "{\\"a\\": [1, 2], \\"b\\": 1.5}" }}{{ $m.a }} {{ $m.b }} '
                     "{{ index $m.a 0 }}"),
    Case("fromyaml", '{{ $m := fromYaml "a: 1\\nb: [x, y]\\nc: {d: e}" }}{{ $m.a }} {{ $m.b }} '
                     "{{ $m.c.d }} {{ toYaml $m }}"),
    Case("fromyaml-error", '{{ hasKey (fromYaml "a: [") "Error" }}'),
    # strings
    Case("quote", "{{ quote .Values.name }} {{ squote .Values.name }} {{ .Values.count | quote }} "
                  "{{ quote .Values.flag }} [{{ quote .Values.missing }}]"),
    Case("case-trim",
         "{{ upper .Values.name }} {{ lower \"ABC\" }} {{ title \"hello world\" }} "
         "[{{ trim .Values.text }}] {{ trimSuffix \"+1\" .Values.version }} "
         "{{ trimPrefix \"1.\" .Values.version }}"),
    Case("replace-contains-prefix",
         '{{ replace "+" "-" .Values.version }} {{ contains "ell" .Values.name }} '
         '{{ hasPrefix "he" .Values.name }} {{ hasSuffix "lo" .Values.name }} {{ repeat 3 "ab" }}'),
    Case("substr-trunc", "{{ substr 1 3 .Values.name }} {{ trunc 3 .Values.name }} "
                         "{{ trunc -2 .Values.name }}"),
    Case("regex",
         "{{ regexMatch `^[0-9.]+\\+[0-9]+$` .Values.version }} "
         '{{ regexReplaceAll `\\+.*` .Values.version "" }} {{ regexFind `[0-9]+` .Values.version }}'),
    Case("raw-string", "{{ `raw {{ not parsed }}` }}", expect="raw {{ not parsed }}"),
    Case("string-misc", '{{ cat "a" "b" 1 }} {{ nospace "a b" }} {{ trimAll "-" "--a--" }} '
                        "{{ toString 1.5 }} {{ toString .Values.list }}"),
    # numbers
    Case("math", "{{ add 1 2 }} {{ sub 5 3 }} {{ mul 2 3 }} {{ div 7 2 }} {{ mod 7 2 }} "
                 "{{ max 1 5 3 }} {{ min 4 2 6 }} {{ add1 .Values.count }}"),
    Case("conversions", '{{ int "42" }} {{ atoi "7" }} {{ int 3.9 }} {{ add .Values.count .Values.ratio }} '
                        '{{ float64 "1.5" }} {{ atoi "x" }}'),
    Case("div-by-zero-fails", "{{ div 1 0 }}", error=True),
    # crypto, semver, types
    Case("b64-sha", '{{ b64enc .Values.name }} {{ b64dec "aGVsbG8=" }} {{ sha256sum .Values.name }} '
                    '{{ sha1sum "x" }}'),
    Case("semver", '{{ semverCompare ">=1.0" "1.2.3" }} {{ semverCompare "<1.0" "1.2.3" }} '
                   '{{ semverCompare "^1.0" .Values.version }} {{ (semver "1.2.3").Minor }}'),
    Case("kindof-typeof",
         "{{ kindOf .Values.name }} {{ kindOf .Values.count }} {{ kindOf .Values.list }} "
         "{{ kindOf .Values.labels }} {{ kindOf .Values.ratio }} {{ kindOf .Values.flag }} "
         "{{ kindOf .Values.missing }} {{ typeOf .Values.count }} {{ typeOf .Values.labels }} "
         "{{ typeOf .Values }} {{ typeOf .Values.list }}"),
    # syntax
    Case("comments", "a {{/* a comment */}} b {{- /* trimmed */ -}} c", expect="a  bc"),
    Case("trim-markers", "x:\n  {{- if true }}\n  y\n  {{- end }}\nz\n", expect="x:\n  y\nz\n"),
    Case("pipeline", '{{ .Values.name | upper | printf "%s!" }}', expect="HELLO!"),
    Case("parenthesized", '{{ printf "%s-%s" (upper .Values.name) (.Values.category | lower) }}'),
    Case("lookup-is-empty", '{{ lookup "v1" "Pod" "" "" }}'),
    Case("chart-name-is-empty", "[{{ .Chart.Name }}]"),
    # errors
    Case("undefined-function-fails", "{{ nosuchfunc 1 }}", error=True),
    Case("luet-sprig-3.2-function-fails", '{{ dig "a" "d" (dict "a" 1) }}', error=True),
    Case("env-removed-fails", '{{ env "HOME" }}', error=True),
    Case("bad-syntax-fails", "{{ if }}x{{ end }}", error=True),
    Case("unclosed-if-fails", "{{ if true }}x", error=True),
    Case("unterminated-action-fails", "{{ .Values.name", error=True),
    Case("wrong-arg-count-fails", "{{ upper }}", error=True),
    Case("fail-function-fails", '{{ fail "boom" }}', error=True),
    Case("error-in-shared-template-fails", '{{ template "bad" . }}',
         templates=(("templates/bad.yaml", '{{ define "bad" }}{{ nosuch }}{{ end }}'),), error=True),
)

# .Values precedence: the definition, then the values files (luet's FromPackage).
@dataclass(frozen=True)
class ValuesCase:
    id: str
    definition: str
    values_files: tuple = ()
    collection: dict | None = None


STANZA = {"name": "a", "category": "c", "version": "1"}
VALUES_CASES = (
    ValuesCase("definition-only", "name: a\nversion: '1'\nx: 1\nm: {k: v}\n"),
    ValuesCase("file-beats-definition", "x: def\ny: def\n", ("x: file\n",)),
    ValuesCase("false-in-file-beats-true", "f: true\n", ("f: false\n",)),
    ValuesCase("null-in-file-does-not-delete", "d: kept\n", ("d: null\n",)),
    ValuesCase("nested-map-replaced-not-merged", "n: {a: 1, b: 2}\n", ("n: {a: 9}\n",)),
    ValuesCase("rightmost-file-wins", "x: def\n", ("x: A\ny: A\n", "x: B\n")),
    ValuesCase("empty-in-right-file-filled-from-left", "x: def\n", ("x: A\n", "x: ''\n")),
    ValuesCase("false-in-right-file-loses-to-left", "f: def\n", ("f: true\n", "f: false\n")),
    ValuesCase("collection-stanza", "packages:\n- {name: a, category: c, version: '1', x: s, k: 3}\n"
                                    "- {name: b, category: c, version: '1', x: other}\n",
               collection=STANZA),
    ValuesCase("collection-file-beats-stanza",
               "packages:\n- {name: a, category: c, version: '1', x: s, f: true, m: {a: 1, b: 2}}\n",
               ("x: file\nf: false\nm: {a: 9}\n",), collection=STANZA),
    # go-yaml v2 reads a plain y/n as a boolean; the stanza's trip through JSON makes the key "false"
    ValuesCase("luet-key-n-of-a-stanza-is-false",
               "packages:\n- {name: a, category: c, version: '1', n: 3}\n", collection=STANZA),
)
