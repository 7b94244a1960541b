"""Jinja2 rendering of build.yaml and finalize.yaml with merged values and shared macros.

Values precedence (as luet's Helm values): the package's definition (or collection stanza)
< each values file in order; the rightmost wins. Mappings are merged key by key.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jinja2
import yaml

from ..errors import CosbuildError
from . import spec
from .load import PackageSource
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


def load_values_files(paths: list[Path]) -> list[dict]:
    out = []
    for path in paths:
        if not path.is_file():
            raise CosbuildError("values file not found", file=path,
                                hint="check --values / COSBUILD_VALUES, or pick a file in values/")
        out.append(load_mapping(path))
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


# name -> (callable, doc): the documented helper set (see `cosbuild helpers` and the README)
FILTERS = {
    "toyaml": (_toyaml, "value as block YAML (combine with indent)"),
    "quote": (_quote, "a double-quoted YAML string"),
    "shquote": (shlex.quote, "quoted for a POSIX shell"),
    "required": (_required, "fail with a message when the value is missing or empty"),
}
GLOBALS = {
    "get": (_get, 'get(values, "a.b", default): nested lookup with a default'),
    "has": (lambda seq, item: item in (seq or ()), "has(list, item): membership (also: item in list)"),
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
    rows = {**{k: d for k, (_, d) in FILTERS.items()}, **{k: d for k, (_, d) in GLOBALS.items()},
            **BUILTINS_DOC}
    return "\n".join(f"- `{k}`: {d}" for k, d in rows.items())


# --------------------------------------------------------------------------- rendering

class Renderer:
    """Renders every package of a tree with one Jinja2 environment (templates compiled once)."""

    def __init__(self, templates: tuple[Path, ...], values_layers: list[dict],
                 cache_dir: Path | None = None):
        self.values_layers = values_layers
        cache = None
        if cache_dir is not None:  # compiled templates, keyed by their source checksum
            cache_dir.mkdir(parents=True, exist_ok=True)
            cache = jinja2.FileSystemBytecodeCache(str(cache_dir))
        self.env = jinja2.Environment(
            loader=jinja2.FunctionLoader(_read_template), undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True, autoescape=False, bytecode_cache=cache)
        self.env.filters.update({k: f for k, (f, _) in FILTERS.items()})
        self.env.globals.update({k: f for k, (f, _) in GLOBALS.items()})
        self.templates = templates
        self._macro_templates = [self._compile(p) for p in templates]

    def _compile(self, path: Path) -> jinja2.Template:
        try:
            return self.env.get_template(str(path))
        except jinja2.TemplateSyntaxError as exc:
            raise CosbuildError(f"template syntax error: {exc.message}", file=path,
                                line=exc.lineno) from None

    def values_for(self, pkg: PackageSource) -> dict:
        return merge_values(pkg.values, *self.values_layers)

    def render_text(self, path: Path, values: dict) -> str:
        template = self._compile(path)
        context = {"values": values}
        try:
            for macros in self._macro_templates:
                module = macros.make_module(vars=context)
                context.update({k: v for k, v in vars(module).items()
                                if isinstance(v, jinja2.runtime.Macro)})
            return template.render(context)
        except (jinja2.UndefinedError, jinja2.TemplateRuntimeError, TypeError, ValueError) as exc:
            file, line = _template_position(exc, [path, *self.templates])
            detail = exc.message if isinstance(exc, jinja2.TemplateError) else str(exc)
            name = re.search(r"has no attribute '([^']+)'|'([^']+)' is undefined", detail or "")
            if isinstance(exc, jinja2.UndefinedError) and name:
                detail = f"undefined variable '{name.group(1) or name.group(2)}' ({detail})"
            hint = ("define it in the definition or a values file, or use | default(...)"
                    if isinstance(exc, jinja2.UndefinedError) else None)
            raise CosbuildError(f"template error: {detail}", file=file or path, line=line,
                                hint=hint) from None

    def render(self, pkg: PackageSource) -> Rendered:
        values = self.values_for(pkg)
        text, data = "", LineMap()
        data.lines = {}
        if pkg.build_file:
            text = self.render_text(pkg.build_file, values)
            data = loads(text, f"{pkg.build_file} (rendered)") or data
            if not isinstance(data, dict):
                raise CosbuildError("expected a mapping at the top level",
                                    file=f"{pkg.build_file} (rendered)", line=1)
        build = spec.parse_build(data, f"{pkg.build_file} (rendered)")
        finalize_text, finalize = "", spec.Finalize()
        if pkg.finalize_file:
            finalize_text = self.render_text(pkg.finalize_file, values)
            where = f"{pkg.finalize_file} (rendered)"
            fdata = loads(finalize_text, where) or {}
            if not isinstance(fdata, dict):
                raise CosbuildError("expected a mapping at the top level", file=where, line=1)
            finalize = spec.Finalize(**spec.parse(spec.FINALIZE_KEYWORDS, fdata, where,
                                                  what="finalize.yaml"))
        return Rendered(text, data, build, finalize, finalize_text)


def _read_template(name: str):
    path = Path(name)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CosbuildError(f"cannot read template: {exc}", file=path) from None
    return source, name, lambda: True


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
