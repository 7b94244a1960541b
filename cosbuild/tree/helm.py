"""Helm templates as luet 0.20 renders build.yaml and finalize.yaml.

luet puts every `templates/*.yaml` of every tree before the package's file and renders the
text with Helm's engine: Go's text/template with `missingkey=zero`, `.Values` the package's
values, sprig's functions plus Helm's `include` and `tpl`, and `<no value>` replaced by the
empty string in the result.
"""

from __future__ import annotations

from . import sprig
from .gotemplate import Executor, Func, FuncError, Prelude, TemplateError, parse

TPL = "\x00tpl"   # the name a tpl string is parsed under: no define can clash with it


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
            return executor.execute("templates", {"Values": values}).replace("<no value>", "")
        except RecursionError:
            raise TemplateError("template nesting too deep", file) from None


def render(sources: list[tuple[str, str]], values: dict) -> str:
    """Render the concatenated sources; the last one is the package's own file."""
    *shared, (file, text) = sources
    return Helm(shared).render(file, text, values)


def _functions(executor: Executor) -> dict[str, Func]:
    """sprig's table and Helm's `include` and `tpl`, which run templates of this executor."""

    def include(name: str, data) -> str:
        return executor.call_template(name, data, executor.current_pos)

    def tpl(text: str, values) -> str:
        try:
            trees, src = parse([("tpl", text)], name=TPL, trees=dict(executor.trees))
        except TemplateError as exc:
            raise FuncError(f"cannot parse template {sprig.quote_go(text)}: {exc.message}") from None
        inner = Executor(trees, src, executor.funcs)
        inner.depth, inner.steps, inner.size = executor.depth + 1, executor.steps, executor.size
        try:
            out = inner.execute(TPL, values)
        except TemplateError as exc:
            raise FuncError(f"error during tpl function execution for {sprig.quote_go(text)}: "
                            f"{exc.message}") from None
        executor.steps = inner.steps
        return out.replace("<no value>", "")

    return {**sprig.functions(), "include": Func(include, ("string", "any")),
            "tpl": Func(tpl, ("string", "map"))}
