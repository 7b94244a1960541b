"""Rendering of build.yaml and finalize.yaml: Helm templates (luet's) or Jinja2 (cosbuild's).

Values precedence (as luet's Helm values): the package's definition (or collection stanza)
< each values file in order; the rightmost wins. Mappings are merged key by key. Helm sees
them as `.Values`, Jinja2 as `values`.

The engine is chosen per file: a `# cosbuild-engine: helm|jinja2` comment in its first lines,
else what its syntax shows (`{{ .Values.x }}`, `{{ end }}`, `$x` are Helm; `{% ... %}`,
`{{ values.x }}`, `| filter(...)` are Jinja2), else the engine most files of its tree show,
else Helm. The `template_engine` setting forces one engine for everything.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jinja2
import yaml

from ..errors import CosbuildError
from . import gotemplate, spec
from .helm import Helm, luet_values
from .load import COLLECTION, PackageSource, read_text
from .sandbox import Sandbox, SecurityError
from .spec import Rendered
from .yamlio import LineMap, load_mapping, loads, plain


def merge_values(*layers: dict) -> dict:
    """Deep-merge mappings; later layers win."""
    out: dict = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge_values(out[key], value)
            else:
                out[key] = value
    return out


def package_values(pkg: PackageSource, layers: list[dict], helm: bool,
                   defaults: dict) -> dict:
    """The values a package's template sees: cosbuild's `defaults`, under the package's own
    and the values files `layers`; for Helm as luet 0.20 computes them (top-level keys
    merged; see helm.luet_values), for Jinja2 deep-merged."""
    if not helm:
        return merge_values(defaults, pkg.values, *layers)
    try:
        seen = luet_values(pkg.values, layers, collection=pkg.declared_in.name == COLLECTION)
    except gotemplate.TemplateError as exc:   # a YAML alias bomb in the stanza
        raise CosbuildError(exc.message, file=pkg.declared_in,
                            hint="a few bytes of YAML aliases can stand for a billion "
                                 "values") from None
    return {**seen, **{k: v for k, v in defaults.items() if seen.get(k) is None}}


def load_values_files(paths: list[Path]) -> list[dict]:
    """The user's values files: anywhere, but regular files of a sane size (see read_text)."""
    out = []
    for path in paths:
        if not path.exists() or path.is_dir():
            raise CosbuildError("values file not found", file=path,
                                hint="check --values / COSBUILD_VALUES, or pick a file in values/")
        out.append(load_mapping(path, text=read_text(path)))
    return out


# --------------------------------------------------------------------------- helpers for templates

def _toyaml(value) -> str:
    text = yaml.safe_dump(plain(value), default_flow_style=False, sort_keys=False)
    return text.removesuffix("\n...\n").rstrip("\n")   # a scalar gets an end-of-document mark


def _quote(value) -> str:
    """A YAML/JSON double-quoted string (Helm's quote: booleans as true/false)."""
    return json.dumps(value if isinstance(value, str) else json.dumps(value))


def _get(mapping, path: str, default=None):
    """get(values, "a.b.c", default): nested lookup that never fails (Helm's get/dig)."""
    current = mapping
    for part in str(path).split("."):
        if not isinstance(current, dict) or part not in current:
            return default
        current = current[part]
    return current


def _required(value, message: str = "a required value is missing"):
    if isinstance(value, jinja2.Undefined) or value in (None, ""):
        raise jinja2.exceptions.TemplateRuntimeError(message)
    return value


# name -> (callable, doc): the documented helper set (see `cosbuild helpers` and docs/trees.md)
FILTERS = {
    "toyaml": (_toyaml, "value as block YAML (combine with indent)"),
    "quote": (_quote, "a double-quoted YAML string"),
    "shquote": (shlex.quote, "quoted for a POSIX shell"),
    "required": (_required, "fail with a message when the value is missing or empty"),
}
def _items(value):
    """items(x): Go's range order: (index, element) of a list, (key, value) of a mapping by
    sorted key (what `cosbuild migrate` writes for range)."""
    if isinstance(value, dict):
        return sorted(value.items(), key=lambda kv: str(kv[0]))
    return list(enumerate(value or ()))


GLOBALS = {
    "get": (_get, 'get(values, "a.b", default): nested lookup with a default'),
    "has": (lambda seq, item: item in (seq or ()), "has(list, item): membership (also: item in list)"),
    "items": (_items, "items(x): (index, element) of a list or (key, value) of a mapping by key"),
}
BUILTINS_DOC = {
    "default": "value | default(x): x when the value is undefined",
    "indent": "text | indent(n): indent lines after the first (first=True for all)",
    "tojson": "value | tojson: JSON text",
    "in": "item in list / key in mapping: membership",
    "dict": "dict(a=1): build a mapping",
    "macros": "every {% macro %} in a templates/*.yaml file is callable from any build.yaml",
}


def helper_reference() -> str:
    from . import sprig
    rows = {**{k: d for k, (_, d) in FILTERS.items()}, **{k: d for k, (_, d) in GLOBALS.items()},
            **BUILTINS_DOC}
    jinja = "\n".join(f"- `{k}`: {d}" for k, d in rows.items())
    return (f"## Jinja2 (`values.x`)\n\n{jinja}\n\n"
            f"## Helm (`.Values.x`, Go text/template with sprig, as luet 0.20)\n\n"
            f"{sprig.reference()}")


# --------------------------------------------------------------------------- choosing the engine

HELM, JINJA2 = "helm", "jinja2"
_MARKER = re.compile(r"^#\s*cosbuild-engine:\s*(\S+)", re.M)
# Go actions start with a field, a variable, a comment or a keyword; Jinja2 has statements
# and comments of its own and writes variables without the leading dot.
_HELM_SYNTAX = re.compile(r"\{\{-?\s*(\.|\$|/\*|(if|else|end|range|with|define|template|block|"
                          r"include|printf|index|eq|ne|not|and|or|toYaml|default|required)\s)")
_JINJA_SYNTAX = re.compile(r"\{%|\{#|\{\{-?\s*[A-Za-z_]\w*(\.\w|\[|\s*\(|\s*\|\s*\w+\s*(\(|\}\}))")


def detect_engine(text: str, file: str | Path = "") -> str | None:
    """The engine a template's own text asks for, or None when it does not tell."""
    marker = _MARKER.search(text[:2000])
    if marker:
        if marker.group(1) not in (HELM, JINJA2):
            raise CosbuildError(f"unknown template engine '{marker.group(1)}'", file=file,
                                line=text.count("\n", 0, marker.start()) + 1,
                                hint="cosbuild-engine: helm or jinja2")
        return marker.group(1)
    helm, jinja = bool(_HELM_SYNTAX.search(text)), bool(_JINJA_SYNTAX.search(text))
    return (HELM if helm else JINJA2) if helm != jinja else None


# --------------------------------------------------------------------------- rendering

class Renderer:
    """Renders every package of a tree: one Jinja2 environment (templates compiled once) and
    the Helm templates parsed once. Jinja2 templates render in a sandbox (see sandbox.py);
    they may include or import only the tree's templates and package files."""

    def __init__(self, templates: tuple[Path, ...], values_layers: list[dict],
                 cache_dir: Path | None = None, *, engine: str = "auto",
                 packages: tuple[PackageSource, ...] = (), roots: tuple[Path, ...] = (),
                 defaults: dict | None = None):
        self.values_layers, self.defaults = values_layers, defaults or {}
        self.forced = None if engine == "auto" else engine
        self.packages, self.roots = packages, tuple(roots)
        self._texts: dict[Path, str] = {}
        self._tree_engines: dict[Path | None, str] = {}
        own = {str(f) for p in packages for f in (p.build_file, p.finalize_file) if f}
        self.env = Sandbox({*map(str, templates), *own},
                           {k: f for k, (f, _) in FILTERS.items()},
                           {k: f for k, (f, _) in GLOBALS.items()}, cache_dir)
        self.templates = templates
        by_engine = {p: self.engine_of(p)[0] for p in templates}
        self._macro_templates = [self._compile(p) for p in templates if by_engine[p] == JINJA2]
        self._helm_templates = [p for p in templates if by_engine[p] == HELM]
        self._prelude: Helm | None = None

    # -- engines
    def text(self, path: Path) -> str:
        if path not in self._texts:
            self._texts[path] = read_text(path)
        return self._texts[path]

    def engine_of(self, path: Path) -> tuple[str, str]:
        """(engine, why) for one template file."""
        if self.forced:
            return self.forced, "set by template_engine"
        found = detect_engine(self.text(path), path)
        if found:
            return found, "detected"
        return self._tree_engine(self._root_of(path)), "the tree's engine"

    def _root_of(self, path: Path) -> Path | None:
        inside = [r for r in self.roots if path.is_relative_to(r)]
        return max(inside, key=lambda r: len(r.parts)) if inside else None

    def _tree_engine(self, root: Path | None) -> str:
        """The engine most files of a tree show; Helm (luet's) when they do not tell."""
        if root not in self._tree_engines:
            files = [*self.templates, *(f for p in self.packages
                                        for f in (p.build_file, p.finalize_file) if f)]
            votes = [detect_engine(self.text(f), f) for f in files if self._root_of(f) == root]
            jinja, helm = votes.count(JINJA2), votes.count(HELM)
            self._tree_engines[root] = JINJA2 if jinja > helm else HELM
        return self._tree_engines[root]

    # -- Jinja2
    def _compile(self, path: Path) -> jinja2.Template:
        self.env.allowed.add(str(path))   # the caller's choice, not a template's
        try:
            return self.env.get_template(str(path))
        except jinja2.TemplateSyntaxError as exc:
            raise CosbuildError(f"template syntax error: {exc.message}", file=path,
                                line=exc.lineno) from None

    def values_for(self, pkg: PackageSource, engine: str = JINJA2) -> dict:
        return package_values(pkg, self.values_layers, engine == HELM, self.defaults)

    def render_file(self, pkg: PackageSource, path: Path) -> tuple[str, str]:
        """A template file of the package rendered, and which engine did it (and why)."""
        engine, why = self.engine_of(path)
        return self.render_text(path, self.values_for(pkg, engine), engine), f"{engine} ({why})"

    def render_text(self, path: Path, values: dict, engine: str | None = None) -> str:
        if (engine or self.engine_of(path)[0]) == HELM:
            return self._render_helm(path, values)
        template = self._compile(path)
        context = {"values": values}
        self.env.begin()
        try:
            for macros in self._macro_templates:
                try:
                    module = macros.make_module(vars=context)
                except Exception:   # noqa: BLE001 (re-raised with the template's lines)
                    self.env.handle_exception()
                context.update({k: v for k, v in vars(module).items()
                                if isinstance(v, jinja2.runtime.Macro)})
            return template.render(context)
        except (jinja2.UndefinedError, jinja2.TemplateRuntimeError, TypeError, ValueError,
                ArithmeticError, LookupError, AttributeError, RecursionError) as exc:
            # ArithmeticError: `/` or `%` by zero; LookupError: '{0}'.format() with no argument;
            # AttributeError: a filter given the wrong kind of value (12|wordwrap)
            file, line = _template_position(exc, [path, *self.templates])
            detail = exc.message if isinstance(exc, jinja2.TemplateError) else str(exc)
            if isinstance(exc, RecursionError):   # a macro or include calling itself
                detail = "template nesting too deep (a macro or include calls itself?)"
            elif isinstance(exc, KeyError):   # str() of it is the bare key
                detail = f"no value for the key {exc}"
            name = re.search(r"has no attribute '([^']+)'|'([^']+)' is undefined", detail or "")
            if isinstance(exc, jinja2.UndefinedError) and name:
                detail = f"undefined variable '{name.group(1) or name.group(2)}' ({detail})"
            hint = ("define it in the definition or a values file, or use | default(...)"
                    if isinstance(exc, jinja2.UndefinedError) else
                    "templates are sandboxed and bounded" if isinstance(exc, SecurityError)
                    else None)
            raise CosbuildError(f"template error: {detail}", file=file or path, line=line,
                                hint=hint) from None

    # -- Helm
    def _render_helm(self, path: Path, values: dict) -> str:
        try:
            if self._prelude is None:
                self._prelude = Helm([(str(p), self.text(p))
                                                    for p in self._helm_templates])
            return self._prelude.render(str(path), self.text(path), values)
        except gotemplate.TemplateError as exc:
            raise CosbuildError(f"template error: {exc.message}", file=exc.file or path,
                                line=exc.line) from None

    def render(self, pkg: PackageSource) -> Rendered:
        text, data = "", LineMap()
        data.lines = {}
        engines = []
        if pkg.build_file:
            text, engine = self.render_file(pkg, pkg.build_file)
            engines.append(f"build.yaml: {engine}")
            data = loads(text, f"{pkg.build_file} (rendered)") or data
            if not isinstance(data, dict):
                raise CosbuildError("expected a mapping at the top level",
                                    file=f"{pkg.build_file} (rendered)", line=1)
        build = spec.parse_build(data, f"{pkg.build_file} (rendered)")
        finalize_text, finalize = "", spec.Finalize()
        if pkg.finalize_file:
            finalize_text, engine = self.render_file(pkg, pkg.finalize_file)
            engines.append(f"finalize.yaml: {engine}")
            where = f"{pkg.finalize_file} (rendered)"
            fdata = loads(finalize_text, where) or {}
            if not isinstance(fdata, dict):
                raise CosbuildError("expected a mapping at the top level", file=where, line=1)
            finalize = spec.Finalize(**spec.parse(spec.FINALIZE_KEYWORDS, fdata, where,
                                                  what="finalize.yaml", warn_unknown=True))
        return Rendered(text, data, build, finalize, finalize_text, "; ".join(engines))


def _template_position(exc: BaseException, files: list[Path]) -> tuple[str | None, int | None]:
    """The innermost template file and line in the traceback (Jinja2 maps frames to templates)."""
    names = {str(f) for f in files}
    found = (None, None)
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename in names:
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found
