"""The `cosbuild` command: validate, render, graph, keywords, and the doit tasks themselves."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain

from . import __version__, settings
from .errors import Collector, CosbuildError
from .tasks import dodo_namespace
from .tree.project import Project, load_project
from .tree.versions import parse_ref

DOIT_COMMANDS = ("run", "list", "info", "clean", "forget", "ignore", "dumpdb", "strace")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cosbuild", description=__doc__, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"cosbuild {__version__}")
    for s in settings.SETTINGS:
        names = [f"--{s.name.replace('_', '-')}"] + (["-v"] if s.name == "verbose" else [])
        if s.flag:
            parser.add_argument(*names, dest=s.name, action="store_const", const="1",
                                help=f"{s.doc} [env {s.env}]")
            continue
        parser.add_argument(*names, dest=s.name, action="append" if s.multiple else "store",
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
    repo = sub.add_parser("create-repo", help="make build/ (or --output) a package repository")
    repo.add_argument("--output", help="folder with the artifacts (default: the build dir); "
                      "for --type docker the REGISTRY/REPOSITORY to publish to")
    repo.add_argument("--name", help="repository name (default: --repo-name)")
    repo.add_argument("--description", help="repository description")
    repo.add_argument("--type", choices=("disk", "http", "docker"), help="repository type")
    repo.add_argument("--urls", action="append", help="where clients find it (repeatable)")
    for name, text in (("install", "install packages and their requirements into a root"),
                       ("upgrade", "install newer versions of what a root has"),
                       ("search", "list the packages the repositories offer")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--repo", action="append", default=[], metavar="URL_OR_DIR",
                       help="a repository (repeatable; the first wins)")
        p.add_argument("--config", type=Path, help="luet-style client config with `repositories:` "
                       "(default: ROOT/etc/luet/luet.yaml when it exists)")
        if name == "search":
            p.add_argument("term", nargs="?", default="")
        else:
            p.add_argument("--root", type=Path, required=True, help="root filesystem to install into")
        if name == "install":
            p.add_argument("packages", nargs="+", metavar="CAT/NAME[@SELECTOR]")
    p = sub.add_parser("uninstall", help="remove installed packages from a root")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("packages", nargs="+", metavar="CAT/NAME")
    p = sub.add_parser("unpack", help="extract a container image's flattened root filesystem")
    p.add_argument("image")
    p.add_argument("dir", type=Path)
    p = sub.add_parser("serve-repo", help="serve a repository folder over HTTP")
    p.add_argument("--dir", type=Path, default=Path("build"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
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
    takes_value = {f"--{s.name.replace('_', '-')}" for s in settings.SETTINGS if not s.flag}
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
    # each command imports the modules it runs here, not at the top, for start-up speed:
    # `cosbuild --help`, the doit commands and each client command load only what they use
    if args.command in CLIENT_COMMANDS:
        return CLIENT_COMMANDS[args.command](args) or 0
    if args.command == "keywords":
        from .tree.spec import keyword_reference
        print(keyword_reference())
        return 0
    if args.command == "helpers":
        from .tree.render import helper_reference
        print(helper_reference())
        return 0
    options = {s.name: getattr(args, s.name) for s in settings.SETTINGS}
    if args.command in DOIT_COMMANDS:
        loader = ModuleTaskLoader(dodo_namespace(options))
        return DoitMain(loader).run([args.command, *args.doit_args])
    config = settings.resolve(options)
    project = load_project(config)
    if args.command == "validate":
        from .runtime.cloudconfig import check_project
        errors = Collector()
        for error in check_project(project):
            errors.add(error)
        errors.raise_if_any()
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
    elif args.command == "create-repo":
        from .repos.create import create_repo, publish_docker
        info = config.repo_info(name=args.name, description=args.description, type=args.type,
                                urls=args.urls)
        if info.type == "docker":
            from .oci.registry import Registries
            if not args.output:
                raise CosbuildError("a docker repository needs --output REGISTRY/REPOSITORY")
            output = args.output
            changed = publish_docker(project, config.build_dir, output, info,
                                     Registries(config.insecure_registries))
        else:
            output = Path(args.output) if args.output else config.build_dir
            changed = create_repo(project, output, info)
        print(f"repository {output}: {'updated' if changed else 'unchanged'}")
    return 0


# --------------------------------------------------------------------------- client commands
# (their modules are imported when they run, as in _run)

def _install(args) -> None:
    from .repos import client
    repos = client.repositories(args.repo, args.config, args.root)
    done = client.install(args.root, [parse_ref(p) for p in args.packages], repos,
                          progress=True)
    print("installed: " + (", ".join(map(str, done)) or "nothing (already installed)"))


def _upgrade(args) -> None:
    from .repos import client
    done = client.upgrade(args.root, client.repositories(args.repo, args.config, args.root),
                          progress=True)
    print("upgraded: " + (", ".join(map(str, done)) or "nothing (up to date)"))


def _uninstall(args) -> None:
    from .repos import client
    client.uninstall(args.root, [parse_ref(p).id for p in args.packages])
    print("uninstalled: " + ", ".join(args.packages))


def _search(args) -> None:
    import tempfile

    from .repos import client
    with tempfile.TemporaryDirectory() as tmp:
        for c in client.search(client.repositories(args.repo, args.config), args.term, Path(tmp)):
            print(f"{c.id}@{c.version}  [{c.repo.name}]  {c.definition.description}")


def _unpack(args) -> None:
    from .builds.unpack import unpack_image
    unpack_image(args.image, args.dir)
    print(f"unpacked {args.image} into {args.dir}")


def _serve_repo(args) -> None:
    from .repos.serve import serve
    serve(args.dir, args.host, args.port)


CLIENT_COMMANDS = {"install": _install, "upgrade": _upgrade, "uninstall": _uninstall,
                   "search": _search, "unpack": _unpack, "serve-repo": _serve_repo}


if __name__ == "__main__":
    sys.exit(main())
