"""`cosbuild migrate`: a Helm-templated luet tree rewritten as Jinja2.

Each Helm file (build.yaml, finalize.yaml, templates/*.yaml) is parsed with the Go template
parser and written again as Jinja2 that renders the same text. What has no Jinja2 form
(or a different meaning there) is reported at file:line, and that file stays a Helm
template (marked so), which cosbuild renders as before: the migrated tree always works.

Values: `.Values.x` becomes `values.x` where every definition of the package has `x`, and
`get(values, "x")` (empty when missing, as in Helm) elsewhere. `define` becomes a macro
taking the dot; `template`/`include` call it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CosbuildError
from ..fsutil import atomic_write
from . import gotemplate as gt
from .load import BUILD, COLLECTION, DEFINITION, FINALIZE, TEMPLATES
from .render import HELM, detect_engine
from .yamlio import load_mapping

MARK_JINJA = "# cosbuild-engine: jinja2\n"
MARK_HELM = "# cosbuild-engine: helm\n"


class Untranslatable(Exception):
    def __init__(self, message: str, pos: int):
        self.message, self.pos = message, pos


@dataclass
class Report:
    translated: list[Path] = field(default_factory=list)
    kept: list[tuple[Path, int | None, str]] = field(default_factory=list)   # file, line, why
    copied: int = 0

    def text(self) -> str:
        lines = [f"{f}:{line or 1}: kept as a Helm template: {why}" for f, line, why in self.kept]
        lines.append(f"migrated {len(self.translated)} template file(s) to Jinja2, kept "
                     f"{len(self.kept)} as Helm, copied {self.copied} other file(s)")
        return "\n".join(lines)


def migrate_tree(old: Path, new: Path) -> Report:
    """Copy the tree `old` to `new` (which must not exist or be empty), translating its Helm
    templates; written under a temporary name first, then renamed."""
    if not old.is_dir():
        raise CosbuildError("tree folder not found", file=old, hint="pass it with --tree")
    if new.exists() and (not new.is_dir() or any(new.iterdir())):
        raise CosbuildError("the output folder exists and is not empty", file=new,
                            hint="pick a new folder for --output")
    if new.resolve().is_relative_to(old.resolve()):
        raise CosbuildError("the output folder is inside the tree", file=new)
    work = new.with_name(f".{new.name}.migrating")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(old, work, symlinks=True)
    report = Report()
    shared = [p for p in sorted((work / TEMPLATES).glob("*.y*ml")) if not p.is_symlink()] \
        if (work / TEMPLATES).is_dir() else []
    macros: dict[str, str] = {}
    # the shared templates first: only the defines that translate can be called as macros
    for path in shared:
        original = old / path.relative_to(work)
        out = _migrate_file(original, frozenset(), {}, report)
        if out is not None and out.startswith(MARK_JINJA):
            for name in re.findall(r'\{\{-?\s*define\s+"([^"]+)"', original.read_text()):
                macros[name] = _identifier(name)
        if out is not None:
            atomic_write(path, out.encode())
    for here, dirs, files in os.walk(work):
        dirs.sort()
        folder = Path(here)
        keys = _definition_keys(old / folder.relative_to(work))
        for name in sorted(files):
            path = folder / name
            if path.is_symlink() or name not in (BUILD, FINALIZE) or path in shared:
                report.copied += path not in shared
                continue
            out = _migrate_file(old / path.relative_to(work), keys, macros, report)
            if out is None:
                report.copied += 1
            else:
                atomic_write(path, out.encode())
    if any(f.parent.name != TEMPLATES for f, _, _ in report.kept):
        # the files kept as Helm still need the shared Helm templates: keep them beside
        for path in shared:
            original = old / path.relative_to(work)
            if original in report.translated:
                atomic_write(path.with_suffix(".helm" + path.suffix),
                             (MARK_HELM + original.read_text(encoding="utf-8")).encode())
    if new.exists():
        new.rmdir()
    work.rename(new)
    return report


def _migrate_file(original: Path, keys: frozenset[str], macros: dict[str, str],
                  report: Report) -> str | None:
    """The new text of one template file, or None when it is not a Helm template."""
    text = original.read_text(encoding="utf-8")
    if detect_engine(text, original) not in (HELM, None) or "{{" not in text:
        return None
    try:
        out = translate(text, str(original), keys, macros)
    except Untranslatable as exc:
        _, line = gt.Sources([(str(original), text)]).where(exc.pos)
        report.kept.append((original, line, exc.message))
        return text if text.startswith(MARK_HELM) else MARK_HELM + text
    except gt.TemplateError as exc:
        report.kept.append((original, exc.line, f"not a valid Helm template: {exc.message}"))
        return None
    report.translated.append(original)
    return out


def _definition_keys(folder: Path) -> frozenset[str]:
    """Top-level keys every package declared in this folder has (always in `values`)."""
    for name in (DEFINITION, COLLECTION):
        if (folder / name).is_file():
            data = load_mapping(folder / name)
            stanzas = data.get("packages", []) if name == COLLECTION else [data]
            sets = [set(s) for s in stanzas if isinstance(s, dict)]
            return frozenset(set.intersection(*sets)) if sets else frozenset()
    return frozenset()


def _identifier(name: str) -> str:
    ident = re.sub(r"\W", "_", name)
    return ident if ident[:1].isalpha() else "t_" + ident


# --------------------------------------------------------------------------- translation

ROOT = object()   # the dot of the file itself: {"Values": values}


def translate(text: str, file: str, keys: frozenset[str], macros: dict[str, str]) -> str:
    trees, src = gt.parse([(file, text)])
    t = _Translator(keys, dict(macros))
    t.macros.update({name: _identifier(name) for name in trees if name != gt.MAIN})
    out = []
    for name, tree in trees.items():
        if name != gt.MAIN:
            out.append(f"{{% macro {t.macros[name]}(dot) %}}"
                       f"{t.nodes(tree.body, 'dot')}{{% endmacro %}}")
    out.append(t.nodes(trees[gt.MAIN].body, ROOT))
    return MARK_JINJA + "".join(out)


class _Translator:
    def __init__(self, keys: frozenset[str], macros: dict[str, str]):
        self.keys, self.macros = keys, macros
        self.vars: dict[str, str] = {}
        self.loop_depth = 0
        self.counter = 0

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    # -- statements
    def nodes(self, nodes: list[gt.Node], dot) -> str:
        return "".join(self.node(n, dot) for n in nodes)

    def node(self, node: gt.Node, dot) -> str:
        if isinstance(node, gt.Text):
            # Jinja2 reads {% and {# in text as its own syntax
            return re.sub(r"\{[%#]", lambda m: '{{ "' + m.group() + '" }}', node.text)
        if isinstance(node, gt.Action):
            return self.action(node.pipe, dot)
        if isinstance(node, gt.Branch):
            return self.branch(node, dot)
        if isinstance(node, gt.Call):
            if node.name not in self.macros:
                raise Untranslatable(f"template {node.name!r} is not defined in this tree",
                                     node.pos)
            arg = self.pipe(node.pipe, dot) if node.pipe else "none"
            return f"{{{{ {self.macros[node.name]}({arg}) }}}}"
        raise Untranslatable(f"{{{{{getattr(node, 'kind', 'this')}}}}} has no Jinja2 form",
                             node.pos)

    def action(self, pipe: gt.Pipe, dot) -> str:
        if pipe.decl:
            if pipe.assign and self.loop_depth:
                raise Untranslatable("assigning a variable inside range (Jinja2's loops "
                                     "have their own scope)", pipe.pos)
            name = self.var(pipe.decl[0], declare=not pipe.assign)
            return f"{{% set {name} = {self.pipe(pipe, dot)} %}}"
        expr = self.pipe(pipe, dot)
        if expr.startswith("get(") and expr.endswith(")"):
            expr = expr[:-1] + ', "")'      # Helm prints a missing value as nothing
        return f"{{{{ {expr} }}}}"

    def branch(self, node: gt.Branch, dot) -> str:
        if node.pipe.decl and node.kind != "range":
            raise Untranslatable(f"a variable declared in {{{{{node.kind}}}}}", node.pos)
        if node.kind == "if":
            out = f"{{% if {self.pipe(node.pipe, dot)} %}}{self.nodes(node.body, dot)}"
            rest = node.otherwise
            while rest and len(rest) == 1 and isinstance(rest[0], gt.Branch) \
                    and rest[0].kind == "if" and not rest[0].pipe.decl:
                out += f"{{% elif {self.pipe(rest[0].pipe, dot)} %}}{self.nodes(rest[0].body, dot)}"
                rest = rest[0].otherwise
            if rest:
                out += f"{{% else %}}{self.nodes(rest, dot)}"
            return out + "{% endif %}"
        if node.kind == "with":
            value = self.pipe(node.pipe, dot)
            inner = self.fresh("with")
            out = (f"{{% if {value} %}}{{% with {inner} = {value} %}}"
                   f"{self.nodes(node.body, inner)}{{% endwith %}}")
            if node.otherwise:
                out += f"{{% else %}}{self.nodes(node.otherwise, dot)}"
            return out + "{% endif %}"
        # range: items() gives Go's order, a list's (index, element), a map's sorted (key, value)
        value = self.pipe(node.pipe, dot)
        decl = node.pipe.decl
        elem = self.var(decl[-1], declare=True) if decl else self.fresh("item")
        key = self.var(decl[0], declare=True) if len(decl) > 1 else "_"
        self.loop_depth += 1
        body = self.nodes(node.body, elem)
        self.loop_depth -= 1
        out = f"{{% for {key}, {elem} in items({value}) %}}{body}"
        if node.otherwise:
            out += f"{{% else %}}{self.nodes(node.otherwise, dot)}"
        return out + "{% endfor %}"

    def var(self, name: str, declare: bool = False) -> str:
        if declare or name not in self.vars:
            self.vars[name] = "v_" + name[1:] if name != "$" else "dot"
        return self.vars[name]

    # -- expressions
    def pipe(self, pipe: gt.Pipe, dot) -> str:
        value = None
        for cmd in pipe.cmds:
            value = self.command(cmd, dot, value)
        return value

    def command(self, cmd: gt.Command, dot, final: str | None) -> str:
        first, args = cmd.args[0], cmd.args[1:]
        if isinstance(first, gt.Ident):
            values = [self.operand(a, dot) for a in args]
            if final is not None:
                values.append(final)
            return self.function(first.name, values, args, cmd.pos)
        if final is not None or args:
            raise Untranslatable("arguments to a value", cmd.pos)
        return self.operand(first, dot)

    def operand(self, node: gt.Node, dot) -> str:
        if isinstance(node, gt.Const):
            if node.kind == "nil":
                return "none"
            if node.kind == "bool":
                return "true" if node.value else "false"
            if node.kind == "string":
                return json.dumps(node.value)
            return repr(node.value)
        if isinstance(node, gt.Dot):
            return self.dot(dot, node.pos)
        if isinstance(node, gt.Field):
            return self.fields(dot, node.names, node.pos)
        if isinstance(node, gt.Variable):
            if node.name == "$":
                base = ROOT if dot is ROOT or not self.vars.get("$") else "dot"
                return self.fields(base, node.names, node.pos) if node.names else self.dot(base, node.pos)
            if node.name not in self.vars:
                raise Untranslatable(f"variable {node.name} from outside this file", node.pos)
            var = self.vars[node.name]
            return var + "".join(f"[{json.dumps(n)}]" for n in node.names)
        if isinstance(node, gt.Pipe):
            return f"({self.pipe(node, dot)})"
        if isinstance(node, gt.Ident):
            return self.function(node.name, [], [], node.pos)
        if isinstance(node, gt.Chain):
            base = self.operand(node.node, dot)
            return base + "".join(f"[{json.dumps(n)}]" for n in node.names)
        raise Untranslatable("this operand has no Jinja2 form", node.pos)

    def dot(self, dot, pos: int) -> str:
        if dot is ROOT:
            return '{"Values": values}'
        return dot

    def fields(self, dot, names: tuple[str, ...], pos: int) -> str:
        if dot is ROOT:
            if names[0] != "Values":
                raise Untranslatable(f".{names[0]} (Helm's chart data) has no Jinja2 form", pos)
            path = names[1:]
            if not path:
                return "values"
            if len(path) == 1 and path[0] in self.keys:
                return f"values.{path[0]}"
            return f'get(values, {json.dumps(".".join(path))})'
        return dot + "".join(f"[{json.dumps(n)}]" for n in names)

    def function(self, name: str, a: list[str], nodes: list[gt.Node], pos: int) -> str:
        n = len(a)
        if name in FORMS:
            count, form = FORMS[name]
            if n != count:
                raise Untranslatable(f"{name} with {n} argument(s)", pos)
            return form.format(*a)
        if name == "eq" and n > 2:
            return f"({a[0]} in [{', '.join(a[1:])}])"
        if name in ("and", "or") and n >= 2:
            return "(" + f" {name} ".join(a) + ")"
        if name == "index" and n >= 2:
            return a[0] + "".join(f"[{k}]" for k in a[1:])
        if name == "printf" and n >= 1 and nodes and isinstance(nodes[0], gt.Const) \
                and nodes[0].kind == "string":
            fmt = nodes[0].value
            if re.search(r"%[^sdv%]", fmt):
                raise Untranslatable(f"printf verb other than %s, %d, %v in {fmt!r}", pos)
            fmt = fmt.replace("%v", "%s")
            return f"({json.dumps(fmt)} | format({', '.join(a[1:])}))" if n > 1 else json.dumps(fmt)
        if name == "list":
            return "[" + ", ".join(a) + "]"
        if name == "dict" and n % 2 == 0:
            return "{" + ", ".join(f"{a[i]}: {a[i + 1]}" for i in range(0, n, 2)) + "}"
        if name == "include" and n == 2 and nodes and isinstance(nodes[0], gt.Const):
            target = nodes[0].value
            if target not in self.macros:
                raise Untranslatable(f"template {target!r} is not defined in this tree", pos)
            return f"{self.macros[target]}({a[1]})"
        raise Untranslatable(f"function {name} has no Jinja2 translation", pos)


# Go function -> (its arguments, the Jinja2 expression of the translated arguments {0}, {1}...)
FORMS = {
    **{go: (2, f"({{0}} {op} {{1}})") for go, op in (
        ("eq", "=="), ("ne", "!="), ("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">="),
        ("add", "+"), ("sub", "-"), ("mul", "*"))},
    **{go: (1, f"({{0}} | {jinja})") for go, jinja in (
        ("upper", "upper"), ("lower", "lower"), ("title", "title"), ("trim", "trim"),
        ("toYaml", "toyaml"), ("quote", "quote"), ("len", "length"), ("toString", "string"),
        ("int", "int"), ("toJson", "tojson"))},
    "not": (1, "(not {0})"),
    "default": (2, "({1} | default({0}, true))"),
    "indent": (2, "({1} | indent({0}, first=True))"),
    "nindent": (2, '("\\n" ~ ({1} | indent({0}, first=True)))'),
    "replace": (3, "({2} | replace({0}, {1}))"),
    "trimSuffix": (2, "{1}.removesuffix({0})"),
    "trimPrefix": (2, "{1}.removeprefix({0})"),
    "hasPrefix": (2, "{1}.startswith({0})"),
    "hasSuffix": (2, "{1}.endswith({0})"),
    "contains": (2, "({0} in {1})"),
    "has": (2, "({0} in {1})"),
    "hasKey": (2, "({1} in {0})"),
    "join": (2, "({1} | join({0}))"),
    "required": (2, "({1} | required({0}))"),
}
