"""The `cosbuild` command: validate, render, graph, keywords, and the doit tasks themselves."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain

from . import __version__, settings
from .errors import CosbuildError
from .project import Project, load_project
from .tasks import dodo_namespace
from .versions import parse_ref

DOIT_COMMANDS = ("run", "list", "info", "clean", "forget", "ignore", "dumpdb", "strace")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cosbuild", description=__doc__)
    parser.add_argument("--version", action="version", version=f"cosbuild {__version__}")
    for s in settings.SETTINGS:
        if s.name == "verbose":
            parser.add_argument("-v", "--verbose", action="store_const", const="1",
                                help=f"{s.doc} [env {s.env}]")
            continue
        parser.add_argument(f"--{s.name.replace('_', '-')}", dest=s.name,
                            action="append" if s.multiple else "store",
                            help=f"{s.doc} [env {s.env}]")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("validate", help="load, render and resolve the whole tree")
    render = sub.add_parser("render", help="print a package's rendered build.yaml")
    render.add_argument("package", metavar="CAT/NAME[@SELECTOR]")
    graph = sub.add_parser("graph", help="show the resolved build graph")
    fmt = graph.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable JSON")
    fmt.add_argument("--dot", action="store_true", help="Graphviz dot")
    sub.add_parser("keywords", help="print the spec keyword reference (Markdown)")
    sub.add_parser("helpers", help="list the template helpers")
    for name in DOIT_COMMANDS:
        sub.add_parser(name, help=f"doit {name} on this project's tasks (doit's own options follow)",
                       add_help=False)
    return parser


def graph_json(project: Project) -> dict:
    g = project.graph
    packages = [{"id": p.id, "version": p.version, "hash": p.hash,
                 "build_deps": [g.packages[d].id for d in p.build_deps],
                 "hidden": p.definition.hidden} for p in (g.packages[k] for k in g.order)]
    return {"packages": packages, "order": [g.packages[k].id for k in g.order]}


def graph_text(project: Project) -> str:
    g = project.graph
    lines = []

    def show(key: str, depth: int, seen: set) -> None:
        pkg = g.packages[key]
        mark = " (hidden)" if pkg.definition.hidden else ""
        again = " ..." if key in seen and pkg.build_deps else ""
        lines.append(f"{'  ' * depth}{key}{mark}  {pkg.hash[:12]}{again}")
        if key not in seen:
            seen.add(key)
            for dep in pkg.build_deps:
                show(dep, depth + 1, seen)

    roots = [k for k in g.order if not any(k in p.build_deps for p in g.packages.values())]
    seen: set = set()
    for key in roots:
        show(key, 0, seen)
    return "\n".join(lines)


def graph_dot(project: Project) -> str:
    g = project.graph
    out = ["digraph cosbuild {", "  rankdir=LR;"]
    for key in g.order:
        out.append(f'  "{key}";')
        out += [f'  "{key}" -> "{dep}";' for dep in g.packages[key].build_deps]
    return "\n".join(out + ["}"])


def _command_index(argv: list[str], command: str) -> int:
    """Position of the command word, skipping the values of global options."""
    takes_value = {f"--{s.name.replace('_', '-')}" for s in settings.SETTINGS}
    i = 0
    while argv[i] != command:
        i += 2 if argv[i] in takes_value else 1
    return i


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, extra = _parser().parse_known_args(argv)
    if args.command in DOIT_COMMANDS:
        # everything after the command word belongs to doit, in its order
        args.doit_args = argv[_command_index(argv, args.command) + 1:]
    elif extra:
        _parser().error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(format="cosbuild: %(levelname)s: %(message)s", level=logging.WARNING)
    logging.getLogger("cosbuild").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return _run(args)
    except CosbuildError as exc:
        print(f"cosbuild: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cosbuild: interrupted", file=sys.stderr)
        return 130


def _run(args) -> int:
    if args.command == "keywords":
        from .spec import keyword_reference
        print(keyword_reference())
        return 0
    if args.command == "helpers":
        from .render import helper_reference
        print(helper_reference())
        return 0
    options = {s.name: getattr(args, s.name) for s in settings.SETTINGS}
    if args.command in DOIT_COMMANDS:
        loader = ModuleTaskLoader(dodo_namespace(options))
        return DoitMain(loader).run([args.command, *args.doit_args])
    config = settings.resolve(options)
    project = load_project(config)
    if args.command == "validate":
        g = project.graph
        print(f"ok: {len(g.packages)} packages, {len(project.tree.templates)} templates, "
              f"values: {', '.join(map(str, config.values)) or 'none'}")
    elif args.command == "render":
        print(project.graph.resolve(parse_ref(args.package)).rendered.text, end="")
    elif args.command == "graph":
        if args.json:
            print(json.dumps(graph_json(project), indent=2))
        else:
            print(graph_dot(project) if args.dot else graph_text(project))
    return 0


if __name__ == "__main__":
    sys.exit(main())
