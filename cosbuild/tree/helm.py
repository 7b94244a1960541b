"""Helm templates as luet 0.20 renders build.yaml and finalize.yaml.

luet puts every `templates/*.yaml` of every tree before the package's file and renders the
text with Helm's engine: Go's text/template with `missingkey=zero`, `.Values` the package's
values, sprig's functions plus Helm's `include` and `tpl`, and `<no value>` replaced by the
empty string in the result.
"""

from __future__ import annotations

from . import sprig
from .gotemplate import (MAIN, MAX_OUTPUT, Executor, Func, FuncError, IMap, Prelude,
                         TemplateError, parse, value_size)

TEMPLATE = {"Name": MAIN, "BasePath": MAIN}   # Helm's .Template of luet's one chart file


class Helm:
    """The shared templates, parsed once, and a render per package file."""

    def __init__(self, templates: list[tuple[str, str]]):
        try:
            self.prelude = Prelude(templates)
        except RecursionError:
            raise TemplateError("template nesting too deep", templates[-1][0]) from None

    def render(self, file: str, text: str, values: dict) -> str:
        try:
            trees, src = self.prelude.join(file, text)
            executor = Executor(trees, src, {})
            executor.funcs = _functions(executor)
            return executor.execute(MAIN, top_level(values)).replace("<no value>", "")
        except RecursionError:
            raise TemplateError("template nesting too deep", file) from None


def render(sources: list[tuple[str, str]], values: dict) -> str:
    """Render the concatenated sources; the last one is the package's own file."""
    *shared, (file, text) = sources
    return Helm(shared).render(file, text, values)


def top_level(values: dict) -> dict:
    """The dot of a Helm template: luet's chart has empty metadata and no release."""
    return {"Values": values, "Chart": {"Name": "", "Version": ""}, "Release": None,
            "Capabilities": None, "Template": dict(TEMPLATE)}


def _functions(executor: Executor) -> dict[str, Func]:
    """sprig's table and Helm's `include` and `tpl`, which run templates of this executor."""

    def include(name: str, data) -> str:
        return executor.call_template(name, data, executor.current_pos)

    def tpl(text: str, values) -> str:
        # Helm reads the name from the values it is given and parses the text under it alone:
        # no define (shared or local) is visible inside
        template = values.get("Template") if values else None
        name = template.get("Name") if isinstance(template, dict) else None
        if not isinstance(name, str) or not isinstance(template.get("BasePath"), str):
            raise FuncError(f"cannot retrieve Template.Name from values inside tpl function: "
                            f"{text}: no table named \"Template\"")
        try:
            trees, src = parse([("tpl", text)], name=name)
        except TemplateError as exc:
            raise FuncError(f"cannot parse template {sprig.quote_go(text)}: {exc.message}") from None
        inner = Executor(trees, src, {})
        inner.funcs = _functions(inner)
        inner.depth, inner.steps, inner.size = executor.depth + 1, executor.steps, executor.size
        try:
            out = inner.execute(name, values)
        except TemplateError as exc:
            raise FuncError(f"error during tpl function execution for {sprig.quote_go(text)}: "
                            f"{exc.message}") from None
        executor.steps = inner.steps
        return out.replace("<no value>", "")

    return {**sprig.functions(), "include": Func(include, ("string", "any")),
            "tpl": Func(tpl, ("string", "map"))}


# --------------------------------------------------------------------------- luet's .Values

def luet_values(definition: dict, values_files: list[dict], collection: bool = False) -> dict:
    """What a package's template sees as .Values in luet 0.20 (compiler.go templatePackage):
    the values files merged right to left, each filling only what the ones to its right left
    unset or empty (mergo without override; a null is skipped); then the definition (or
    collection stanza) adds the top-level keys they lack. Nested maps of YAML files are
    go-yaml's map[interface{}]interface{}, which Helm's coalescing does not merge into; a
    collection stanza comes through JSON, so its numbers are floats and its maps plain."""
    merged: dict = {}
    for layer in reversed(values_files):
        _mergo(merged, _go_yaml(layer, {}))
    if collection and value_size(definition)[0] > MAX_OUTPUT:   # JSON would unfold aliases
        raise TemplateError(f"values larger than {MAX_OUTPUT // (1024 * 1024)} MiB as JSON")
    own = sprig.through_json(definition) if collection else _go_yaml(definition, {})
    if collection:
        filled: dict = {}
        _mergo(filled, merged)
        _mergo(filled, own)
        own = filled
    return _coalesce(merged, own)


def _go_yaml(value, made: dict, top: bool = True):
    """`made`: what each list or mapping became, so that a YAML alias stays one shared value
    (an alias bomb unfolded would not fit in memory)."""
    if not isinstance(value, (dict, list)):
        return value
    if id(value) not in made:   # registered before it is filled: a list may hold itself
        out = made[id(value)] = ({} if top else IMap()) if isinstance(value, dict) else []
        if isinstance(value, dict):
            out.update((k, _go_yaml(v, made, False)) for k, v in value.items())
        else:
            out.extend(_go_yaml(v, made, False) for v in value)
    return made[id(value)]


def _mergo(dst: dict, src: dict) -> None:
    for key, value in src.items():
        if value is None:
            continue
        current = dst.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _mergo(current, value)
        if key not in dst or sprig.empty(current):
            dst[key] = value


def _coalesce(dst: dict, src: dict) -> dict:
    """chartutil.CoalesceValues: dst wins; its null removes the key; plain maps merge."""
    for key, value in src.items():
        if key in dst and dst[key] is None:
            del dst[key]
        elif key not in dst:
            dst[key] = value
        elif type(value) is dict and type(dst[key]) is dict:
            _coalesce(dst[key], value)
    return dst
