"""The `cosbuild` command: validate, render, graph, build, why, keywords, and the doit tasks
themselves. The global options (the settings) may come before or after the command."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from pathlib import Path

from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain

from . import __version__, settings
from .errors import Collector, CosbuildError, ErrorList
from .images.vm import OPTIONS as VM_OPTIONS
from .images.vm import describe, option_flag
from .tasks import (LazyBuilder, dodo_namespace, ensure_build_dir, load, project_namespace,
                    validate, why)
from .terminal import safe
from .tree.graph import Graph
from .tree.project import render_package
from .tree.versions import parse_ref

DOIT_COMMANDS = ("run", "list", "info", "clean", "forget", "ignore", "dumpdb", "strace")
# the options of a command or doit task that share a global option's name (vm's --iso and
# --disk): after that command or task name they are its own
OWN_OPTIONS = {"vm": {option_flag(o) for o in VM_OPTIONS}}
LISTING_COMMANDS = ("list", "info", "dumpdb")   # doit commands that only print


def _parser() -> argparse.ArgumentParser:
    from .plan import FORMATS as plan_formats
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
    sub.add_parser("validate", help="check the whole project and report every mistake: "
                   "trees, templates, dependencies, cloud-config files, iso.yaml, disk.yaml")
    render = sub.add_parser("render", help="print a package's rendered build.yaml")
    render.add_argument("package", metavar="CAT/NAME[@SELECTOR]")
    build = sub.add_parser("build", help="build packages and what they build on (doit run "
                           "of their build tasks)")
    build.add_argument("packages", nargs="+", metavar="CAT/NAME[@SELECTOR]")
    shell = sub.add_parser("shell", help="a shell in a package's builder image (/luetbuild, "
                           "the working directory and env as its steps start; built first "
                           "when missing), or in the container its failed build kept "
                           "(--keep-failed)")
    shell.add_argument("package", metavar="CAT/NAME[@SELECTOR]")
    shell.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                       help="run this instead of an interactive shell; its exit status is "
                            "cosbuild's")
    graph = sub.add_parser("graph", help="show the resolved build graph (of one package: it "
                           "and what it builds on)")
    graph.add_argument("package", nargs="?", metavar="CAT/NAME[@SELECTOR]")
    fmt = graph.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable JSON")
    fmt.add_argument("--dot", action="store_true", help="Graphviz dot")
    p = sub.add_parser("plan", help="the build graph as CI jobs: a job per package, each "
                       "needing the jobs of what it builds on, then the repository, ISO and "
                       "disk jobs; images move through the image repository (a registry)")
    p.add_argument("--format", choices=plan_formats, default="json",
                   help="json (any engine), github (a GitHub Actions workflow) or gitlab "
                        "(.gitlab-ci.yml); default json")
    p.add_argument("--output", type=Path, help="write it to this file (default: stdout)")
    p.add_argument("--setup", action="append", metavar="COMMAND",
                   help="a command each job runs first (repeatable; default: install make "
                        "and git with apt-get, then `make deps`)")
    p.add_argument("--runs-on", help="GitHub: the runner label (default ubuntu-latest)")
    p.add_argument("--container", help="the jobs' container image (default debian:12)")
    p = sub.add_parser("why", help="why a package rebuilds, or that it is reused: which "
                       "input of its build hash changed since its last build")
    p.add_argument("package", metavar="CAT/NAME[@SELECTOR]")
    migrate = sub.add_parser("migrate", help="rewrite a Helm-templated tree (--tree) as Jinja2")
    migrate.add_argument("--output", type=Path, required=True, help="the new tree's folder")
    sub.add_parser("keywords", help="print the spec keyword reference (Markdown)")
    p = sub.add_parser("docs", help="print a generated page of the guide (Markdown): the spec "
                       "keywords, the settings or this command line")
    p.add_argument("page", choices=tuple(DOCS_PAGES))
    sub.add_parser("helpers", help="list the template helpers")
    repo = sub.add_parser("create-repo", help="make build/ (or --output) a package repository")
    repo.add_argument("--output", help="folder with the artifacts (default: the build dir); "
                      "for --type docker the REGISTRY/REPOSITORY to publish to")
    repo.add_argument("--name", help="repository name (default: --repo-name)")
    repo.add_argument("--description", help="repository description")
    repo.add_argument("--type", choices=("disk", "http", "docker"), help="repository type")
    repo.add_argument("--urls", action="append", help="where clients find it (repeatable)")
    repo.add_argument("--resign", action="store_true",
                      help="with --signing-keys: sign a new timestamp even when nothing "
                           "changed (run it more often than --signing-expiry)")
    keys = sub.add_parser("keys", help="TUF key sets that sign repositories")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = keys_sub.add_parser("generate", help="a new key set: DIR/root.json (give it to "
                            "clients), private keys in DIR/keys")
    p.add_argument("dir", type=Path, metavar="DIR")
    p = keys_sub.add_parser("rotate", help="the next root version, signed by the old root "
                            "key and a new one (and new keys for the roles given)")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--role", action="append", default=[],
                   choices=("targets", "snapshot", "timestamp"),
                   help="also replace this role's key (repeatable)")
    for name, text in (("install", "install packages and their requirements into a root"),
                       ("upgrade", "install newer versions of what a root has"),
                       ("search", "list the packages the repositories offer")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--repo", action="append", default=[], metavar="URL_OR_DIR",
                       help="a repository (repeatable; the first wins)")
        p.add_argument("--config", type=Path, help="luet-style client config with `repositories:` "
                       "(default: ROOT/etc/luet/luet.yaml when it exists)")
        p.add_argument("--trusted-root", type=Path, metavar="FILE",
                       help="TUF root (a key set's root.json) that repositories without a "
                            "`trusted_root:` of their own must be signed under")
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
    p = sub.add_parser("vm", help="boot the latest ISO or disk in QEMU, its console on the "
                       "terminal, the build folder served as the upgrade channel")
    for o in VM_OPTIONS:   # dest vm_*: --iso and --disk are global settings too
        kind = {bool: {"action": "store_true"}, int: {"type": int, "metavar": "PORT"},
                str: {"metavar": "NAMES"},
                tuple: {"action": "append", "metavar": "HOST:GUEST"}}[type(o.default)]
        p.add_argument(option_flag(o), dest=f"vm_{o.name}", help=describe(o), **kind)
    p = sub.add_parser("serve-repo", help="serve a repository folder over HTTP")
    p.add_argument("--dir", type=Path, default=Path("build"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    for name in DOIT_COMMANDS:
        sub.add_parser(name, help=f"doit {name} on this project's tasks (doit's own options follow)",
                       add_help=False)
    return parser


CLI_PAGE = """\
# The command line

```sh
cosbuild validate                       # every mistake of the project, each with file:line
cosbuild build app/sampleOSService      # build it and what it builds on
cosbuild run iso                        # a doit task: the live ISO
cosbuild --tree ../mytree list          # the tasks of another tree (no dodo.py needed)
```

`cosbuild COMMAND` runs one of the commands below; `cosbuild run|list|info|clean|forget
TASK...` is doit itself on the project's tasks ([builds.md](builds.md#doit-tasks)), as
`doit TASK` is in this repository. The global options, the [settings](settings.md), may come
before or after the command (`cosbuild graph --json --tree ../mytree`); after a doit command,
`-v` is doit's own (`--verbosity`) and doit's options pass through (`cosbuild list --all
--tree ../mytree`). A mistake is one line on standard error naming the file, key or URL, and
exit status 1.

This page is generated from the command's parser in `cosbuild/cli.py` (`cosbuild docs cli`).
"""


def cli_page() -> str:
    """docs/cli.md: every command of the parser, its usage, help and arguments."""
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in commands._choices_actions}
    out = [CLI_PAGE]

    def section(name: str, command: argparse.ArgumentParser, text: str, level: str) -> None:
        usage = " ".join(command.format_usage().split())   # one line, as argparse's wraps vary
        out.append(f"{level} cosbuild {name}\n\n{text[0].upper()}{text[1:]}.\n\n"
                   f"```\n{usage.replace('usage: ', '')}\n```\n")
        args = [a for a in command._actions
                if a.help not in (None, argparse.SUPPRESS) and not isinstance(
                    a, (argparse._HelpAction, argparse._SubParsersAction))]
        if args:
            out.append("\n".join(f"- `{', '.join(a.option_strings) or a.metavar or a.dest}`: "
                                  f"{a.help}" for a in args) + "\n")
        for action in command._actions:   # `keys generate`, `keys rotate`
            if isinstance(action, argparse._SubParsersAction):
                inner = {a.dest: a.help for a in action._choices_actions}
                for sub_name, sub in action.choices.items():
                    section(f"{name} {sub_name}", sub, inner[sub_name], "###")

    for name, command in commands.choices.items():
        if name not in DOIT_COMMANDS:
            section(name, command, helps[name], "##")
    out.append("## cosbuild " + "|".join(DOIT_COMMANDS) + " TASK...\n\n"
               "doit's own commands on this project's tasks; doit's options follow.\n")
    return "\n".join(out)


def _keywords() -> str:
    from .tree.spec import keyword_reference
    return keyword_reference()


DOCS_PAGES = {"keywords": _keywords, "settings": settings.settings_page, "cli": cli_page}


def graph_json(graph: Graph) -> dict:
    g = graph
    packages = [{"id": p.id, "version": p.version, "hash": p.hash,
                 "build_deps": [g.packages[d].id for d in p.build_deps],
                 "hidden": p.definition.hidden, "remote": p.remote.repo if p.remote else None}
                for p in (g.packages[k] for k in g.order)]
    return {"packages": packages, "order": [g.packages[k].id for k in g.order]}


def graph_text(graph: Graph) -> str:
    g = graph
    lines = []

    def show(root: str, seen: set) -> None:
        todo = [(root, 0)]   # a stack of its own: a chain of requires may be thousands deep
        while todo:
            key, depth = todo.pop()
            pkg = g.packages[key]
            mark = (" (hidden)" if pkg.definition.hidden else "") + \
                (f" (remote: {pkg.remote.repo})" if pkg.remote else "")
            again = " ..." if key in seen and pkg.build_deps else ""
            lines.append(f"{'  ' * depth}{key}{mark}  {pkg.hash[:12]}{again}")
            if key not in seen:
                seen.add(key)
                todo += [(dep, depth + 1) for dep in reversed(pkg.build_deps)]

    roots = [k for k in g.order if not any(k in p.build_deps for p in g.packages.values())]
    seen: set = set()
    for key in roots:
        show(key, seen)
    return "\n".join(lines)


def graph_dot(graph: Graph) -> str:
    g = graph
    out = ["digraph cosbuild {", "  rankdir=LR;"]
    for key in g.order:
        out.append(f'  "{key}";')
        out += [f'  "{key}" -> "{dep}";' for dep in g.packages[key].build_deps]
    return "\n".join(out + ["}"])


def _subgraph(graph: Graph, key: str) -> Graph:
    """A package and, transitively, what it builds on."""
    keep, todo = set(), [key]
    while todo:
        current = todo.pop()
        if current not in keep:
            keep.add(current)
            todo += graph.packages[current].build_deps
    return dataclasses.replace(graph, packages={k: graph.packages[k] for k in keep},
                               order=tuple(k for k in graph.order if k in keep))


def _hoist_global_options(argv: list[str]) -> tuple[list[str], int]:
    """The arguments with the global options that follow the command moved before it (in
    their order, so a repeated --values keeps rightmost-wins), and the command's position.
    After a doit command, `-v` stays: it is doit's own --verbosity; after a command or task
    with OWN_OPTIONS, those stay too."""
    long_names = {f"--{s.name.replace('_', '-')}": not s.flag for s in settings.SETTINGS}
    head, tail, command, own = [], [], None, set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":   # the rest is the command's
            tail += argv[i:]
            break
        name = arg.split("=", 1)[0]
        size = 2 if long_names.get(name) and "=" not in arg else 1   # with its value
        if not arg.startswith("-"):
            own |= OWN_OPTIONS.get(arg, set())   # the command, or a doit task
        if command is None and not arg.startswith("-"):
            command = arg
        elif command is None or (name in long_names and name not in own) or (
                arg == "-v" and command not in DOIT_COMMANDS):
            head += argv[i:i + size]
            i += size
            continue
        else:
            tail.append(arg)
        i += 1
    if command is None:
        return argv, len(argv)
    return head + [command] + tail, len(head)


def main(argv: list[str] | None = None) -> int:
    argv, at = _hoist_global_options(sys.argv[1:] if argv is None else argv)
    args, extra = _parser().parse_known_args(argv)
    if args.command in DOIT_COMMANDS:
        # everything after the command word belongs to doit, in its order
        args.doit_args = argv[at + 1:]
    elif extra:
        _parser().error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(format="cosbuild: %(levelname)s: %(message)s", level=logging.WARNING)
    logging.getLogger("cosbuild").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return _run(args)
    except CosbuildError as exc:
        # a message quotes its input (a repository's names, a file's text): shown escaped,
        # one line per mistake
        mistakes = exc.errors if isinstance(exc, ErrorList) else [exc]
        print("cosbuild: error: " + "\n".join(safe(str(e)) for e in mistakes), file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader left (`cosbuild graph | head -1`): stop quietly, as other programs do;
        # stdout goes to /dev/null so that Python's last flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as exc:
        # the environment refused (permissions, a full disk, a file where a folder must be):
        # one line naming the path; --verbose shows where
        if args.verbose:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"cosbuild: error: {safe(where)}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cosbuild: interrupted", file=sys.stderr)
        return 130


def _run(args) -> int:
    # each command imports the modules it runs here, not at the top, for start-up speed:
    # `cosbuild --help`, the doit commands and each client command load only what they use
    if args.command in CLIENT_COMMANDS:
        _check_client_paths(args)
        args.own_build = Path(settings.value_of("build_dir", vars(args)))
        return CLIENT_COMMANDS[args.command](args) or 0
    if args.command in ("keywords", "docs"):
        print(DOCS_PAGES[getattr(args, "page", "keywords")]())
        return 0
    if args.command == "helpers":
        from .tree.render import helper_reference
        print(helper_reference())
        return 0
    options = {s.name: getattr(args, s.name) for s in settings.SETTINGS}
    if args.command in DOIT_COMMANDS:
        loader = ModuleTaskLoader(dodo_namespace(options))
        if args.command not in LISTING_COMMANDS:
            return DoitMain(loader).run([args.command, *args.doit_args])
        # a listing whose reader leaves (`| head`) ends as other programs' do, unlike a
        # build, which must clean up; only meanwhile (main() may run inside another program)
        previous = signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        try:
            return DoitMain(loader).run([args.command, *args.doit_args])
        finally:
            signal.signal(signal.SIGPIPE, previous)
    config = settings.resolve(options)
    if args.command == "migrate":
        from .tree.migrate import migrate_tree
        if len(config.trees) != 1:
            raise CosbuildError("migrate takes one --tree", hint="migrate each tree on its own")
        report = migrate_tree(config.trees[0], args.output)
        print(report.text())
        return 0
    ensure_build_dir(config.build_dir)   # every other command writes there (its caches)
    if args.command == "validate":
        print(validate(config))
        return 0
    if args.command == "render":
        rendered = render_package(config, parse_ref(args.package))
        print(f"cosbuild: {args.package} rendered with {rendered.engine}", file=sys.stderr)
        print(rendered.text, end="")
        return 0
    if args.command == "graph":
        return _graph(args, config)
    if args.command == "vm":
        from .images.vm import boot
        return boot(config, {o.name: getattr(args, f"vm_{o.name}") for o in VM_OPTIONS})
    project = load(config, use_cache=args.command in ("build", "why", "shell"))
    if args.command == "plan":
        return _plan(args, project, options)
    if args.command == "why":
        key = project.graph.resolve(parse_ref(args.package)).key
        found = why(LazyBuilder(project), key)
        print("\n".join((f"{key}: {found.verdict}", *found.causes)))
        return 0
    if args.command == "build":
        errors, keys = Collector(), []
        for text in args.packages:
            try:
                keys.append(project.graph.resolve(parse_ref(text)).key)
            except CosbuildError as exc:
                errors.add(exc)
        errors.raise_if_any()
        return _build(project, keys)
    if args.command == "shell":
        return _shell(project, args.package, args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd)
    if args.command == "create-repo":
        from .repos.create import create_repo, publish_docker
        info = config.repo_info(name=args.name, description=args.description, type=args.type,
                                urls=args.urls, resign=args.resign)
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


def _plan(args, project, options: dict) -> int:
    from .fsutil import atomic_write
    from .plan import CONTAINER, RENDER, RUNS_ON, SETUP, make_plan
    plan = make_plan(project, settings.given(options), tuple(args.setup or SETUP),
                     args.runs_on or RUNS_ON, args.container or CONTAINER)
    text = RENDER[args.format](plan)
    if args.output:
        atomic_write(args.output, text)
        print(f"cosbuild: plan: {len(plan.jobs)} jobs in {args.output}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def _graph(args, config) -> int:
    """The graph of what resolves, even when some packages fail: those are reported (and
    fail the command) unless the one package asked for and what it builds on are fine."""
    errors = Collector()
    graph = load(config, errors=errors).graph
    if args.package:
        try:
            graph = _subgraph(graph, graph.resolve(parse_ref(args.package)).key)
        except CosbuildError as exc:
            errors.add(exc)   # with the others: one of them is why
            errors.raise_if_any()
    if args.json:
        print(json.dumps(graph_json(graph), indent=2))
    else:
        print(graph_dot(graph) if args.dot else graph_text(graph))
    if args.package:
        if errors.errors:
            logging.getLogger("cosbuild").warning(
                "%d errors elsewhere in the project (`cosbuild validate` lists them)",
                len(errors.errors))
        return 0
    errors.raise_if_any()
    return 0


# --------------------------------------------------------------------------- client commands
# (their modules are imported when they run, as in _run)

def _check_client_paths(args) -> None:
    """The root, config and trusted root the user named: a mistake there is named before
    any work."""
    root, config = getattr(args, "root", None), getattr(args, "config", None)
    if root is not None and root.exists() and not root.is_dir():
        raise CosbuildError("not a folder", file=root, key="--root",
                            hint="name the folder of the root filesystem")
    for path, key, what in ((config, "--config", "a luet-style client config file"),
                            (getattr(args, "trusted_root", None), "--trusted-root",
                             "a TUF root.json (`cosbuild keys generate` writes one)")):
        if path is not None and not path.is_file():
            raise CosbuildError("not found" if not path.exists() else "not a file", file=path,
                                key=key, hint=f"name {what}")


def _build(project, keys: list[str]) -> int:
    """As `cosbuild run build:CAT/NAME ...`: these packages and what they build on."""
    doit_args = ["run", *(f"build:{project.graph.task_name(key)}" for key in keys)]
    return DoitMain(ModuleTaskLoader(project_namespace(project, frozenset(keys)))).run(doit_args)


def _shell(project, text: str, command: list[str]) -> int:
    """`cosbuild shell`: the builder image built first when missing; what it enters is said
    on stderr, stdout is the command's alone."""
    from .builds.builder import Builder
    pkg = project.graph.resolve(parse_ref(text))
    builder = Builder(project)
    entry = builder.shell_entry(pkg)
    if entry is None:
        print(f"cosbuild: {pkg.key}: building its builder image first", file=sys.stderr)
        with _stdout_to_stderr():
            _build(project, [pkg.key])   # a failed step leaves its builder image too
        builder.buildah.forget_images()
        entry = builder.shell_entry(pkg)
        if entry is None:
            raise CosbuildError(f"{pkg.key}: its build failed before its builder image "
                                f"{builder.tags(pkg).builder} was made",
                                hint=f"see {builder.log_path(pkg)}")
    print(f"cosbuild: {pkg.key}: {entry}", file=sys.stderr)
    return builder.shell(pkg, entry, command)


@contextlib.contextmanager
def _stdout_to_stderr():
    """Meanwhile, what this process and its children write to stdout goes to stderr (doit's
    reporter holds the stdout of its import)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _install(args) -> None:
    from .repos.config import repositories
    from .repos.transaction import install
    repos = repositories(args.repo, args.config, args.root, own_build=args.own_build,
                         trusted_root=args.trusted_root)
    done = install(args.root, [parse_ref(p) for p in args.packages], repos, progress=True)
    print("installed: " + (", ".join(map(str, done)) or "nothing (already installed)"))


def _upgrade(args) -> None:
    from .repos.config import repositories
    from .repos.transaction import upgrade
    done = upgrade(args.root, repositories(args.repo, args.config, args.root,
                                           own_build=args.own_build,
                                           trusted_root=args.trusted_root),
                   progress=True)
    print("upgraded: " + (", ".join(map(str, done)) or "nothing (up to date)"))


def _uninstall(args) -> None:
    from .repos.transaction import uninstall
    uninstall(args.root, [parse_ref(p).id for p in args.packages])
    print("uninstalled: " + ", ".join(args.packages))


def _search(args) -> None:
    import tempfile

    from .repos.config import repositories
    from .repos.index import search
    with tempfile.TemporaryDirectory() as tmp:
        repos = repositories(args.repo, args.config, own_build=args.own_build,
                             trusted_root=args.trusted_root)
        for c in search(repos, args.term, Path(tmp)):
            # every field is the repository's: no escape sequence of it reaches a terminal
            print(safe(f"{c.id}@{c.version}  [{c.repo.name}]  {c.definition.description}"))


def _keys(args) -> None:
    from .repos import signing
    if args.keys_command == "generate":
        signing.generate(args.dir)
        print(f"key set in {args.dir}: give clients {args.dir / signing.ROOT_FILE}; "
              f"keep {args.dir / 'keys'} private")
    else:
        version = signing.rotate(args.dir, tuple(args.role))
        print(f"root version {version} in {args.dir}: sign the repositories again "
              "(create-repo --signing-keys) to publish it")


def _unpack(args) -> None:
    from .builds.unpack import unpack_image
    unpack_image(args.image, args.dir)
    print(f"unpacked {args.image} into {args.dir}")


def _serve_repo(args) -> None:
    from .repos.serve import serve
    serve(args.dir, args.host, args.port)


CLIENT_COMMANDS = {"install": _install, "upgrade": _upgrade, "uninstall": _uninstall,
                   "search": _search, "unpack": _unpack, "serve-repo": _serve_repo,
                   "keys": _keys}


if __name__ == "__main__":
    sys.exit(main())
