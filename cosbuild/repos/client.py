"""Repositories, client side (`luet install` and friends, SPEC section 3).

Reads repositories (a folder or an HTTP URL), solves runtime requirements and conflicts, and
installs artifacts into a root filesystem as one transaction:

1. stage: download and verify every artifact, then unpack each into a staging folder inside
   the root, refusing hostile archives (absolute paths, `..`, writing through a symlink of
   the archive, hard links to files outside it) and file conflicts;
2. commit: with Ctrl-C and SIGTERM held back, write a journal, move the staged files into
   place, write the installed-package database, remove the staging folder;
3. run the finalizers (`finalize.yaml`) confined to the root (sandbox.py: bubblewrap, no
   network, only file capabilities, a clean environment, a time limit), in dependency order; a
   package is recorded as finalized only when they succeeded, and the next install or
   upgrade runs those that did not.

Every path into the root is resolved as in a chroot of it (rootpath.py).

A run killed during the commit is completed by the next run on that root (the journal says
what to do); one killed before it leaves the root as it was. Either way the root ends up as
before or fully installed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import tarfile
import threading
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

from .. import luetformat, rootpath, sandbox
from ..errors import CosbuildError
from ..fsutil import atomic_write
from ..oci.layers import EXTRACT_CHECKED
from ..tools import TaskLog, run
from ..tree import spec, versions
from ..tree.load import parse_definition
from ..tree.yamlio import dumps, load_mapping, loads

DB_PATH = "var/lib/cosbuild/installed.yaml"
FINALIZE_LOG = "var/log/cosbuild-finalize.log"
TRANSACTION = ".cosbuild-transaction"
DEFAULT_CONFIG = "etc/luet/luet.yaml"

REPOSITORY_KEYWORDS = (
    spec.Keyword("name", spec.STR, None, "repository name", required=True),
    spec.Keyword("description", spec.STR, "", "free text"),
    spec.Keyword("type", spec.STR, "disk", "disk (a folder), http, or docker (REGISTRY/REPOSITORY)"),
    spec.Keyword("urls", spec.STRS, (), "where the repository is; the first that answers is used"),
    spec.Keyword("insecure", spec.BOOL, False,
                 "docker: reach the registry without TLS verification (local testing only)"),
    spec.Keyword("priority", spec.Type("integer", lambda v, w: _int(v, w)), 1,
                 "lower wins when several repositories have a package"),
    spec.Keyword("enable", spec.BOOL, True, "use this repository"),
    spec.Keyword("allow_devices", spec.STRS, (),
                 "cosbuild: packages (category/name) of this repository whose artifacts may "
                 "create device nodes and FIFOs; any other that has one is refused"),
    spec.Keyword("trusted_root", spec.STR, "",
                 "cosbuild: TUF root (a key set's root.json; relative to this file's folder) "
                 "the repository must be signed under; nothing unsigned is read"),
)
TRUST_STATE = "var/lib/cosbuild/tuf"   # in the root: the metadata last trusted, per repository


def _int(value, where) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(f"expected a whole number, got {value!r}")
    return value


@dataclass(frozen=True)
class RepoConfig:
    name: str
    urls: tuple[str, ...]
    type: str = "disk"
    priority: int = 1
    enable: bool = True
    description: str = ""
    insecure: bool = False
    allow_devices: tuple[str, ...] = ()
    # the project's own build folder: its index says itself which packages may carry device
    # nodes (bootstrapped base images); no configured repository is believed about that
    own_build: bool = False
    trusted_root: Path | None = None   # the repository must be signed under this TUF root
    trust_state: Path | None = None    # where the metadata it last trusted is kept
    bounds: luetformat.Bounds = field(default=luetformat.DEFAULT_BOUNDS, compare=False)

    def transport(self, url: str):
        from .transport import transport_for   # only the client needs HTTP
        inner = transport_for(url, self.type, self.insecure, self.bounds)
        if self.trusted_root is None:
            return inner
        from .trust import SignedTransport   # python-tuf: only for signed repositories
        # without a root to keep it in (iso.yaml's and build repositories): the user's
        return SignedTransport(inner, self.name, self.trusted_root,
                               self.trust_state or _user_trust_dir() / _file_name(self.name))

    def may_carry_devices(self, entry: luetformat.ArtifactEntry) -> bool:
        return (self.own_build and entry.device_nodes) or \
            f"{entry.category}/{entry.name}" in self.allow_devices


def read_config(path: Path) -> list[RepoConfig]:
    """A luet-style client config: `repositories: [{name, type, urls, priority, enable}]`."""
    data = load_mapping(path)
    entries = data.get("repositories") or []
    if not isinstance(entries, list):
        raise CosbuildError("'repositories' must be a list", file=path,
                            line=data.line_of("repositories"), key="repositories")
    return read_config_data(entries, path)


def read_config_data(entries: list, path: Path) -> list[RepoConfig]:
    """The repository entries of a config file (or of iso.yaml's `luet:` section)."""
    out = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise CosbuildError("each repository must be a mapping", file=path,
                                key="repositories")
        # luet configs carry more keys (auth, arch, ...): those are not ours to judge
        fields = spec.parse(REPOSITORY_KEYWORDS, entry, path, what="repository", strict=False)
        if not fields["urls"]:
            raise CosbuildError("a repository needs 'urls'", file=path, line=entry.line,
                                key=f"repositories.{fields['name']}.urls")
        trusted = fields["trusted_root"]
        out.append(RepoConfig(name=fields["name"], urls=fields["urls"], type=fields["type"],
                              priority=fields["priority"], enable=fields["enable"],
                              description=fields["description"], insecure=fields["insecure"],
                              allow_devices=fields["allow_devices"],
                              trusted_root=Path(path).parent / trusted if trusted else None))
    return out


def repo_kind(url: str) -> str:
    """The repository type a bare URL or folder stands for."""
    return ("http" if url.startswith(("http://", "https://"))
            else "docker" if url.startswith("docker://") else "disk")


def repositories(repo_args: list[str], config: Path | None, root: Path | None = None, *,
                 own_build: Path | None = None, trusted_root: Path | None = None,
                 trust_dir: Path | None = None) -> list[RepoConfig]:
    """--repo arguments (in order of priority) and the config file (default: the root's).
    A --repo that is the project's build folder `own_build` is the local build.

    `trusted_root` (--trusted-root) is the TUF root of every repository without one of its
    own. The trust state of a repository NAME with a trusted root is `trust_dir`/NAME:
    by default ROOT/var/lib/cosbuild/tuf/NAME, or without a root (search) the user's
    ~/.cache/cosbuild/tuf/NAME."""
    if config is None and root is not None and (root / DEFAULT_CONFIG).is_file():
        config = root / DEFAULT_CONFIG
    repos = [r for r in read_config(config) if r.enable] if config else []
    own = own_build.resolve() if own_build is not None else None
    for n, url in enumerate(repo_args):
        repos.append(RepoConfig(name=url, urls=(url,), type=repo_kind(url),
                                priority=n - len(repo_args),
                                own_build=repo_kind(url) == "disk" and Path(url).resolve() == own))
    if not repos:
        raise CosbuildError("no repository given", hint="pass --repo URL_OR_DIR or --config FILE")
    repos = [dataclasses.replace(r, trusted_root=r.trusted_root or trusted_root) for r in repos]
    if trust_dir is None and any(r.trusted_root for r in repos):
        # in the root as in a chroot of it (a root that is not there yet has no links)
        trust_dir = (_user_trust_dir() if root is None
                     else rootpath.resolve(root, TRUST_STATE, follow_last=True)
                     if root.is_dir() else root / TRUST_STATE)
    return [dataclasses.replace(r, trust_state=trust_dir / _file_name(r.name))
            if r.trusted_root else r for r in repos]


def _file_name(name: str) -> str:
    """A repository's name as one file name (names may be URLs), never . or .."""
    return name.replace("/", "_").replace("..", "__").lstrip(".") or "_"


def _user_trust_dir() -> Path:
    return Path.home() / ".cache/cosbuild/tuf"


# --------------------------------------------------------------------------- reading repositories

@dataclass(frozen=True)
class Candidate:
    """A package a repository offers."""
    definition: spec.Definition
    finalize: spec.Finalize
    artifact: str               # file name in the repository
    sha256: str
    files: tuple[str, ...]      # absolute paths
    compression: luetformat.Compression
    repo: RepoConfig = field(compare=False)
    url: str = ""               # the repository URL that answered
    cache_image: str = ""       # the image it was built into (luet's package_cacheimage)
    size: int | None = None     # as the index records (cosbuild's own field), if it does
    unpacked_size: int | None = None
    devices: bool = False       # its artifact may create device nodes and FIFOs
    # what the index came through: the artifact too (a signed repository's is refreshed once)
    transport: object = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> str:
        return self.definition.id

    @property
    def version(self) -> str:
        return self.definition.version

    def __str__(self) -> str:
        return f"{self.id}@{self.version}"


TREE_FILES = ("definition.yaml", "finalize.yaml")   # what the client reads of a tree


def load_repository(repo: RepoConfig, workdir: Path) -> list[Candidate]:
    errors = []
    for url in repo.urls:
        try:
            return _load_from(repo.transport(url), repo, workdir)
        except CosbuildError as exc:
            errors.append(exc)
    raise errors[-1]


def _load_from(transport, repo: RepoConfig, workdir: Path) -> list[Candidate]:
    """A repository as luet 0.20 writes it (LuetSystemRepository.Sync): repository.yaml,
    then its `tree` and `meta` files, each checked and decompressed as it declares."""
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = _file_name(repo.name)
    spec_file = luetformat.REPOSITORY_FILE
    where = f"{transport.url}: {spec_file}"
    budget = [transport.bounds.yaml_nodes]   # for every YAML file of the repository
    index = _mapping(transport.fetch(spec_file, workdir / f"{prefix}.yaml", metadata=True), where,
                     budget)
    repo_files = index.get("repo_files")
    if not isinstance(repo_files, dict):
        raise CosbuildError("no 'repo_files' mapping", file=where, key="repo_files",
                            hint="this is not a luet repository (or not its repository.yaml)")
    tree = _repo_file(transport, repo_files, "tree", where, workdir / prefix,
                      lambda name: PurePosixPath(name).name in TREE_FILES)
    meta_files = _repo_file(transport, repo_files, "meta", where, workdir / prefix,
                            lambda name: name == luetformat.META_MEMBER)
    meta_where = f"{transport.url}: {luetformat.META_MEMBER}"
    if luetformat.META_MEMBER not in meta_files:
        raise CosbuildError(f"the meta archive of {transport.url} has no {luetformat.META_MEMBER}",
                            hint="the repository is incomplete; regenerate it")
    meta = _mapping(meta_files.pop(luetformat.META_MEMBER), meta_where, budget)
    # luet omits an empty index (`index,omitempty`)
    records = meta.get("index") or []
    if not isinstance(records, list):
        raise CosbuildError("no 'index' list", file=meta_where, key="index",
                            hint="the repository index is not luet's format")
    by_id: dict[tuple, luetformat.ArtifactEntry] = {}
    for n, record in enumerate(records):
        entry = luetformat.ArtifactEntry.parse(record, f"{meta_where}: index[{n}]")
        ident = (entry.category, entry.name, entry.version)
        if ident in by_id:
            raise CosbuildError(f"{entry.category}/{entry.name}@{entry.version} is in the "
                                "index twice", file=f"{meta_where}: index[{n}]",
                                hint="the repository is damaged; regenerate it")
        by_id[ident] = entry
    out = []
    declared: dict[tuple, str] = {}
    # luet loads every definition.yaml of the tree, wherever it is (InstallerRecipe.Load)
    for path, data in sorted(tree.items()):
        if PurePosixPath(path).name != "definition.yaml":
            continue
        dwhere = f"{transport.url}: tree/{path}"
        definition = parse_definition(luetformat.tree_definition(_mapping(data, dwhere, budget)),
                                      dwhere)
        try:   # the index is solved with these: a bad one is an error here, not there
            versions.sort_key(definition.version)
        except ValueError:
            raise CosbuildError(f"invalid version {definition.version!r}", file=dwhere,
                                key="version", hint="versions are Debian-style, e.g. 1.0 or "
                                                    "1.0+2; the repository is damaged") from None
        ident = (definition.category, definition.name, definition.version)
        if ident in declared:
            raise CosbuildError(f"{definition.id}@{definition.version} is in the tree twice, "
                                f"also in tree/{declared[ident]}", file=dwhere,
                                hint="the repository is damaged; regenerate it")
        declared[ident] = path
        entry = by_id.get(ident)
        if entry is None:
            continue   # in the tree but not built: nothing to install
        fpath = str(PurePosixPath(path).with_name("finalize.yaml"))
        fwhere = f"{transport.url}: tree/{fpath}"
        fdata = _mapping(tree.get(fpath, b""), fwhere, budget)
        finalize = spec.Finalize(**spec.parse(spec.FINALIZE_KEYWORDS, fdata, fwhere,
                                              what="finalize.yaml", strict=False))
        out.append(Candidate(definition, finalize, entry.path, entry.sha256, entry.files,
                             entry.compression, repo, transport.url, entry.cache_image,
                             entry.size, entry.unpacked_size, repo.may_carry_devices(entry),
                             transport))
    return out


def _repo_file(transport, repo_files: dict, kind: str, where: str, stem: Path,
               wanted) -> dict[str, bytes]:
    """The `wanted` files of the archive `repo_files.<kind>` of repository.yaml, verified."""
    entry = repo_files.get(kind)
    name = entry.get("filename") if isinstance(entry, dict) else None
    checksums = entry.get("checksums") if isinstance(entry, dict) else None
    sha = checksums.get("sha256") if isinstance(checksums, dict) else None
    if not (isinstance(name, str) and name and isinstance(sha, str) and sha):
        raise CosbuildError(f"no repo_files.{kind} with a filename and checksums.sha256",
                            file=where, key=f"repo_files.{kind}",
                            hint="regenerate the repository (`doit repo`, `luet create-repo`)")
    comp = luetformat.compression(entry.get("compressiontype"), where,
                                  f"repo_files.{kind}.compressiontype")
    local = transport.fetch(name, stem.with_name(f"{stem.name}-{name.replace('/', '_')}"),
                            sha256=sha, metadata=True)
    try:
        return luetformat.read_members(local, comp, wanted, transport.bounds)
    except luetformat.Damaged as exc:
        raise CosbuildError(f"{name} from {transport.url}: {exc}", key=f"repo_files.{kind}",
                            hint="the repository is corrupt or its repository.yaml is wrong") from None


def _text(data: bytes | Path, where: str) -> str:
    try:
        return (data.read_bytes() if isinstance(data, Path) else data).decode()
    except UnicodeDecodeError as exc:
        raise CosbuildError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=where,
                            hint="the repository is corrupt") from None


def _mapping(data: bytes | Path, where: str, budget: list[int]):
    value = loads(_text(data, where), where)
    budget[0] -= _expanded_size(value, where)
    if budget[0] < 0:
        raise CosbuildError("more YAML values than a repository may have, once its aliases "
                            "are expanded", file=where,
                            hint="a few bytes of YAML aliases can stand for a billion values; "
                                 "the repository is hostile or damaged")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CosbuildError(f"expected a mapping, got {_kind(value)}", file=where,
                            hint="the repository is damaged, or the URL is not a repository's "
                                 "(a web page?)")
    return value


def _expanded_size(value, where: str) -> int:
    """How many values `value` holds with its YAML aliases expanded, as reading its records
    will make them; counted once per distinct list or mapping (never expanding them here)."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    todo = [(value, False)]
    while todo:
        item, children_done = todo.pop()
        if not isinstance(item, (dict, list)) or (id(item) in sizes and not children_done):
            continue
        children = [c for c in (item.values() if isinstance(item, dict) else item)
                    if isinstance(c, (dict, list))]
        if children_done:
            open_.discard(id(item))
            sizes[id(item)] = len(item) + 1 + sum(sizes[id(c)] for c in children)
            continue
        if id(item) in open_:
            raise CosbuildError("a YAML alias refers to a list or mapping it is in", file=where,
                                hint="the repository is hostile or damaged")
        open_.add(id(item))
        todo.append((item, True))
        for child in children:
            if id(child) in open_:
                raise CosbuildError("a YAML alias refers to a list or mapping it is in",
                                    file=where, hint="the repository is hostile or damaged")
            todo.append((child, False))
    return sizes.get(id(value), 1)


def _kind(value) -> str:
    return {list: "a list", str: "text", int: "a number", float: "a number",
            bool: "a boolean"}.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- solving

@dataclass
class Installed:
    """The installed-package database of a root (var/lib/cosbuild/installed.yaml)."""
    # id -> {version, repository, files, requires, finalize (command lines), finalized}
    packages: dict[str, dict]

    @classmethod
    def load(cls, root: Path) -> "Installed":
        path = rootpath.resolve(root, DB_PATH, follow_last=True)
        if not path.is_file():
            return cls({})
        return cls({k: dict(v) for k, v in (load_mapping(path).get("packages") or {}).items()})

    def dump(self) -> str:
        return dumps({"packages": self.packages})

    def owners(self) -> dict[str, str]:
        """path -> id of the installed package that owns it."""
        return {path: pkg_id for pkg_id, record in self.packages.items() for path in record["files"]}

    def unfinalized(self) -> list[str]:
        """The packages whose finalizers have not yet all succeeded, dependencies first.
        (A record without `finalized` predates the flag: its finalizers ran.)"""
        order: list[str] = []

        def visit(pkg_id: str, path: tuple[str, ...]) -> None:
            record = self.packages.get(pkg_id)
            if record is None or pkg_id in order or pkg_id in path:
                return
            for dep in record.get("requires") or []:
                visit(dep, (*path, pkg_id))
            if not record.get("finalized", True):
                order.append(pkg_id)

        for pkg_id in self.packages:
            visit(pkg_id, ())
        return order


def choose(ref: versions.PackageRef, candidates: list[Candidate], asked_by: str = "") -> Candidate:
    """Lower repository priority first, then the newest version that satisfies the selector."""
    named = [c for c in candidates if c.id == ref.id
             or any(p.id == ref.id for p in c.definition.provides)]
    ok = [c for c in named if c.id != ref.id or versions.matches(ref.version, c.version)]
    who = f"{asked_by} requires " if asked_by else ""
    if not named:
        raise CosbuildError(f"{who}unknown package {ref.id}: no repository has it",
                            hint="check the name, or `cosbuild search` the repositories")
    if not ok:
        have = ", ".join(sorted({c.version for c in named}, key=versions.sort_key))
        raise CosbuildError(f"{who}{ref}, but no version satisfies it (available: {have})")
    return min(ok, key=lambda c: (c.repo.priority, _newest_first(c.version)))


class _newest_first:
    def __init__(self, version: str):
        self.version = version

    def __lt__(self, other: "_newest_first") -> bool:
        return versions.compare(self.version, other.version) > 0


def plan(requests: list[versions.PackageRef], candidates: list[Candidate],
         installed: Installed) -> list[Candidate]:
    """What to install, dependencies first; refuses conflicts and unsatisfiable requirements."""
    chosen: dict[str, Candidate] = {}
    order: list[Candidate] = []

    def visit(ref: versions.PackageRef, asked_by: str) -> None:
        have = installed.packages.get(ref.id)
        if have and asked_by and versions.matches(ref.version, str(have["version"])):
            return   # a dependency that is already satisfied
        pick = chosen.get(ref.id)
        if pick is not None:
            if not versions.matches(ref.version, pick.version):
                raise CosbuildError(f"{asked_by} requires {ref}, but {pick} is also required")
            return
        pick = choose(ref, candidates, asked_by)
        chosen[ref.id] = pick
        for dep in pick.definition.requires:
            visit(dep, str(pick))
        order.append(pick)

    for ref in requests:
        visit(ref, "")
    everything = {**{k: str(v["version"]) for k, v in installed.packages.items()},
                  **{c.id: c.version for c in order}}
    for c in order:
        for con in c.definition.conflicts:
            if con.id in everything and versions.matches(con.version, everything[con.id]):
                raise CosbuildError(f"{c} conflicts with {con.id}@{everything[con.id]}",
                                    hint="uninstall it first or choose other versions")
    return [c for c in order
            if str(installed.packages.get(c.id, {}).get("version")) != c.version]


# --------------------------------------------------------------------------- the transaction

def install(root: Path, requests: list[versions.PackageRef], repos: list[RepoConfig],
            *, progress: bool = False, replace: bool = False,
            finalizer_timeout: float = sandbox.TIMEOUT) -> list[Candidate]:
    """Install `requests` and their runtime requirements into `root`, then run the
    finalizers not yet run to success (these and earlier ones); returns what was installed."""
    root.mkdir(parents=True, exist_ok=True)
    recover(root)
    installed = Installed.load(root)
    with _transaction_dir(root) as work:
        candidates = [c for r in repos for c in load_repository(r, work / "index")]
        todo = plan(requests, candidates, installed)
        if todo:
            _apply(root, work, installed, todo, progress=progress, replace_files=replace)
    _finalize(root, finalizer_timeout)
    return todo


def local_build(build_dir: Path) -> RepoConfig:
    """The build folder as a repository, preferred over every configured one."""
    return RepoConfig(name="local build", urls=(str(build_dir),), priority=-1, own_build=True)


def stage_root(target: Path, refs: list[versions.PackageRef],
               repos: list[RepoConfig]) -> dict[str, str]:
    """Install `refs` into a new, empty root at `target` (the staging root of an image);
    returns what it is made of, {package: artifact sha256}."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    done = install(target, list(refs), repos) if refs else []
    return {str(c): c.sha256 for c in done}


def upgrade(root: Path, repos: list[RepoConfig], *, progress: bool = False,
            finalizer_timeout: float = sandbox.TIMEOUT) -> list[Candidate]:
    """Install newer versions of the installed packages; files that disappeared are removed."""
    recover(root)
    installed = Installed.load(root)
    with _transaction_dir(root) as work:
        candidates = [c for r in repos for c in load_repository(r, work / "index")]
        requests = []
        for pkg_id, record in sorted(installed.packages.items()):
            ref = versions.PackageRef(*pkg_id.split("/", 1), version=f">{record['version']}")
            with contextlib.suppress(CosbuildError):   # no newer version: nothing to do
                choose(ref, candidates)
                requests.append(ref)
        # the new versions may require new packages or conflict with installed ones
        newer = plan(requests, candidates, installed)
        if newer:
            _apply(root, work, installed, newer, progress=progress, replace_files=True)
    _finalize(root, finalizer_timeout)
    return newer


def uninstall(root: Path, ids: list[str]) -> None:
    recover(root)
    installed = Installed.load(root)
    for pkg_id in ids:
        if pkg_id not in installed.packages:
            raise CosbuildError(f"{pkg_id} is not installed in {root}")
    for other, record in installed.packages.items():
        for req in record.get("requires") or []:
            if req in ids and other not in ids:
                raise CosbuildError(f"{other} requires {req}", hint=f"uninstall {other} too")
    keep = {p: r for p, r in installed.packages.items() if p not in ids}
    remove = sorted({f for p in ids for f in installed.packages[p]["files"]}, reverse=True)
    with _transaction_dir(root) as work:
        _commit(root, work, Installed(keep), remove)


def recover(root: Path) -> None:
    """Finish a commit that was interrupted, or drop a transaction that never committed."""
    work = root / TRANSACTION
    if work.is_symlink():   # cosbuild makes a folder: a link there is planted
        raise CosbuildError(f"{work} is a symbolic link, not cosbuild's transaction folder",
                            hint="remove it; nothing was changed")
    if (work / "journal.yaml").is_file():
        journal = load_mapping(work / "journal.yaml")
        _remove(root, journal.get("remove") or [])   # first: a vanished file may be in the way
        _move_staged(root, work / "rootfs")
        rootpath.write_file(root, DB_PATH, journal["db"].encode())
    if work.exists():
        shutil.rmtree(work)


@contextlib.contextmanager
def _transaction_dir(root: Path) -> Iterator[Path]:
    work = root / TRANSACTION
    try:
        work.mkdir()
    except FileExistsError:
        raise CosbuildError(f"another cosbuild is installing into {root}",
                            hint=f"wait for it, or remove {work} if it was killed") from None
    try:
        yield work
    finally:
        if work.exists() and not (work / "journal.yaml").exists():
            shutil.rmtree(work)


def _apply(root: Path, work: Path, installed: Installed, todo: list[Candidate], *,
           progress: bool, replace_files: bool) -> None:
    staging = work / "rootfs"
    staging.mkdir()
    replaced = {c.id for c in todo}
    owners = installed.owners()
    symlinks: set[str] = set()   # staged so far, by any package: never written through
    new_owner: dict[str, str] = {}
    db = Installed(dict(installed.packages))
    remove: set[str] = set()
    for c in todo:   # from the index, before anything is downloaded
        for path in c.files:
            if PurePosixPath(path).parts[1:2] == (TRANSACTION,):
                raise CosbuildError(f"refusing to install {c}: it has {path}, the name of "
                                    "cosbuild's transaction folder",
                                    hint="the package is hostile or broken; nothing was installed")
            other = new_owner.get(path) or owners.get(path)
            if other and other != c.id and not (replace_files and other in replaced):
                raise CosbuildError(f"file conflict: {path} of {c} belongs to {other}",
                                    hint="the packages cannot be installed together")
            new_owner[path] = c.id
    for n, c in enumerate(todo, 1):
        archive = c.transport.fetch(
            c.artifact, work / c.artifact, sha256=c.sha256, size=c.size,
            progress=f"[{n}/{len(todo)}] {c}" if progress else None)
        files = extract_safely(archive, staging, str(c), symlinks, compression=c.compression,
                               unpacked_size=c.unpacked_size, devices=c.devices,
                               bounds=c.repo.bounds)
        if set(files) != set(c.files):
            raise CosbuildError(f"refusing to install {c}: its archive does not hold the files "
                                "its index entry lists", hint="the repository is inconsistent")
        old = installed.packages.get(c.id)
        if old:
            remove |= set(old["files"]) - set(files)
        db.packages[c.id] = {"version": c.version, "repository": c.repo.name, "files": files,
                             "requires": [r.id for r in c.definition.requires],
                             # run again by every install until they succeed
                             "finalize": c.finalize.commands(),
                             "finalized": not c.finalize.install}
    remove -= set(new_owner)
    _check_against_root(root, staging, remove)
    _commit(root, work, db, sorted(remove, reverse=True))


def _check_against_root(root: Path, staging: Path, vanishing: set[str]) -> None:
    """A staged entry may not replace a directory of the root by a file, or a file by a
    directory, unless what is in the way belongs to a replaced version and goes away."""
    for here, dirs, files in os.walk(staging):
        base = os.path.relpath(here, staging)
        for name in (*dirs, *files):
            rel = os.path.normpath(os.path.join(base, name))
            is_dir = os.path.isdir(os.path.join(here, name)) and not os.path.islink(os.path.join(here, name))
            target = rootpath.resolve(root, rel, follow_last=is_dir)
            if is_dir:
                in_the_way = os.path.lexists(target) or rootpath.resolve(root, rel).is_symlink()
                if in_the_way and not target.is_dir() and f"/{rel}" not in vanishing:
                    raise CosbuildError(f"file conflict: /{rel} is a directory in the package "
                                        "but not in the root", hint="nothing was installed")
            elif target.is_dir() and not target.is_symlink():
                staying = [os.path.join(h, f) for h, _, fs in os.walk(target) for f in fs
                           if "/" + os.path.relpath(os.path.join(h, f), root) not in vanishing]
                if staying or rel in ("", "."):
                    raise CosbuildError(f"file conflict: /{rel} would replace a directory of "
                                        "the root that holds other files",
                                        hint="nothing was installed")


def _commit(root: Path, work: Path, db: Installed, remove: list[str]) -> None:
    with _signals_held():
        atomic_write(work / "journal.yaml", dumps({"db": db.dump(), "remove": remove}))
        recover(root)


@contextlib.contextmanager
def _signals_held():
    """Ctrl-C and SIGTERM wait until the commit is done (it only moves files: it is quick)."""
    if threading.current_thread() is not threading.main_thread():
        yield   # signals are delivered to the main thread only: this one is not interrupted
        return
    received = []
    handler = lambda signum, frame: received.append(signum)  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if received:
            raise KeyboardInterrupt


def _move_staged(root: Path, staging: Path) -> None:
    """Move staged entries into the root; whole new directories move in one rename."""
    if not staging.is_dir():
        return
    for here, dirs, files in os.walk(staging, topdown=True):
        rel = os.path.relpath(here, staging)
        # fully resolved inside the root: a link such as /bin -> /usr/bin of the root is
        # followed as the system would, but never to the host
        target_dir = root if rel == "." else rootpath.resolve(root, rel, follow_last=True)
        for name in list(dirs):
            src, dst = os.path.join(here, name), target_dir / name
            if os.path.islink(src) or not rootpath.resolve(root, os.path.join(rel, name),
                                                            follow_last=True).is_dir():
                _replace(src, dst)
                dirs.remove(name)
        for name in files:
            _replace(os.path.join(here, name), target_dir / name)


def _replace(src: str, dst: Path) -> None:
    if dst.is_dir() and not dst.is_symlink():
        os.rmdir(dst)        # emptied by the removals (checked before the commit)
    elif os.path.isdir(src) and not os.path.islink(src) and os.path.lexists(dst):
        os.unlink(dst)       # a file of the old version becomes a directory
    os.replace(src, dst)


def _remove(root: Path, paths: list[str]) -> None:
    for path in paths:
        target = rootpath.resolve(root, path)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if target.is_dir() and not target.is_symlink():
                continue
            target.unlink()


# --------------------------------------------------------------------------- archives

def extract_safely(archive: Path, dest: Path, what: str, symlinks: set[str] | None = None, *,
                   compression: luetformat.Compression, unpacked_size: int | None = None,
                   devices: bool = False,
                   bounds: luetformat.Bounds = luetformat.DEFAULT_BOUNDS) -> list[str]:
    """Unpack an artifact into `dest`, refusing anything that could write outside it, and
    device nodes and FIFOs unless it may carry them (`devices`).

    It may decompress to `unpacked_size` (as the index records), else as `bounds` allow;
    that much must be free. `symlinks` are the links already in `dest` (updated): no entry
    may be written through one. Returns the package's file list (absolute paths of
    non-directories)."""
    files: list[str] = []
    symlinks = set() if symlinks is None else symlinks
    regular: set[str] = set()
    compressed = archive.stat().st_size
    luetformat.check_space(dest, compressed if unpacked_size is None else unpacked_size,
                           f"unpacking {what}")
    try:
        with luetformat.open_tar(archive, compression,
                                 bounds.unpacked_limit(compressed, unpacked_size)) as tar:
            for member in tar:
                name = _check_member(member, symlinks, regular, what, devices)
                if name is not None:
                    _extract(tar, member, name, dest, what)
                    if member.issym():
                        symlinks.add(name)
                    elif member.isreg():
                        regular.add(name)
                    if not member.isdir():
                        files.append("/" + name)
    except luetformat.TooLarge as exc:
        recorded = "its index records" if unpacked_size is not None else "it may be"
        raise CosbuildError(f"refusing to install {what}: the archive is {exc}, more than "
                            f"{recorded}", hint="the artifact is damaged or hostile (a "
                                                "decompression bomb); nothing was installed") from None
    except luetformat.Damaged as exc:
        raise CosbuildError(f"refusing to install {what}: the archive is damaged ({exc})",
                            hint="the repository is corrupt; nothing was installed") from None
    return sorted(files)


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, dest: Path, what: str) -> None:
    target = dest / name
    if target.is_symlink():   # tarfile would open the link's target for writing
        raise CosbuildError(f"refusing to install {what}: {name!r} would be written over the "
                            "symbolic link already there", hint="nothing was installed")
    if os.path.lexists(target) and not (member.isdir() and target.is_dir()):
        raise CosbuildError(f"refusing to install {what}: {name!r} is in the archive twice "
                            "or in two packages", hint="nothing was installed")
    member.name = name
    if member.islnk():
        member.linkname = str(PurePosixPath(member.linkname))
    try:
        tar.extract(member, dest, set_attrs=True, numeric_owner=True, **EXTRACT_CHECKED)
        for key, value in member.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                os.setxattr(target, key[len("SCHILY.xattr."):],
                            value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
    except OSError as exc:   # a full disk, an xattr the filesystem refuses, ...
        raise CosbuildError(f"cannot install {what}: {name!r}: {exc.strerror or exc}",
                            hint="nothing was installed") from None


def _check_member(member: tarfile.TarInfo, symlinks: set, regular: set, what: str,
                  devices: bool = False) -> str | None:
    raw = member.name
    path = PurePosixPath(raw)

    def refuse(why: str) -> CosbuildError:
        return CosbuildError(f"refusing to install {what}: {why}",
                             hint="the artifact is corrupt or hostile; nothing was installed")

    if raw.startswith("/") or path.is_absolute():
        raise refuse(f"absolute path {raw!r} in the archive")
    if ".." in path.parts:
        raise refuse(f"path {raw!r} has a '..' component")
    name = str(path)
    if name in (".", ""):
        return None
    for parent in list(path.parents)[:-1]:
        if str(parent) in symlinks:
            raise refuse(f"{raw!r} would be written through the symbolic link {str(parent)!r}")
    if member.islnk():
        target = str(PurePosixPath(member.linkname))
        if member.linkname.startswith("/") or ".." in PurePosixPath(member.linkname).parts \
                or target not in regular:
            raise refuse(f"hard link {raw!r} points to {member.linkname!r}, "
                         "which is not a file of this archive")
    if member.issym() and not member.linkname:
        # no such link can be made; tarfile would then copy the "target" and recurse
        raise refuse(f"symbolic link {raw!r} has an empty target")
    if kind := luetformat.device_kind(member):
        if not devices:   # a node of the host's disk or memory, made by root in the root
            raise refuse(f"{raw!r} is a {kind}, and the package may not carry one "
                         "(allow_devices of its repository)")
    elif not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise refuse(f"unsupported entry type for {raw!r}")
    return name


# --------------------------------------------------------------------------- finalizers

def _finalize(root: Path, timeout: float) -> None:
    """Run the finalizers of the packages not yet finalized, in dependency order, each
    confined to the root (sandbox.py) for at most `timeout` seconds; a package is recorded
    as finalized only when all its commands succeeded."""
    db = Installed.load(root)
    pending = db.unfinalized()
    if not pending:
        return
    sandbox.prepare(root)
    log_dir = rootpath.make_dirs(root, str(PurePosixPath(FINALIZE_LOG).parent))
    log_path = log_dir / PurePosixPath(FINALIZE_LOG).name
    with contextlib.suppress(FileNotFoundError):
        log_path.unlink()   # rewritten each time: never written through a link left there
    with TaskLog(log_path) as log:
        for pkg_id in pending:
            record = db.packages[pkg_id]
            what = f"{pkg_id}@{record['version']}"
            for n, argv in enumerate(record["finalize"], 1):
                if not _in_root_path(root, argv[0]):
                    raise CosbuildError(f"cannot run the finalizers of {what} in {root}: it has "
                                        f"no {argv[0]}", key="shell",
                                        hint="install a package that provides it first")
                try:
                    run(sandbox.command(root, argv), log=log, timeout=timeout)
                except CosbuildError as exc:
                    raise CosbuildError(
                        f"{what}: finalizer {n} failed: {shlex.join(argv)}\n  {exc}",
                        hint="the package is installed but not finalized: the next install "
                             "or upgrade runs its finalizers again") from None
            record["finalized"] = True
            rootpath.write_file(root, DB_PATH, db.dump().encode())


def _in_root_path(root: Path, program: str) -> bool:
    """Whether `program` (a path or a name looked up in the sandbox's PATH) is in the root."""
    where = [program] if "/" in program else \
        [f"{d}/{program}" for d in sandbox.ENV["PATH"].split(":")]
    return any(rootpath.resolve(root, p, follow_last=True).exists() for p in where)


def search(repos: list[RepoConfig], term: str, workdir: Path) -> list[Candidate]:
    found = []
    for r in repos:
        for c in load_repository(r, workdir):
            text = f"{c.id} {c.definition.description}"
            if term.lower() in text.lower() and not c.definition.hidden:
                found.append(c)
    return sorted(found, key=lambda c: (c.id, versions.sort_key(c.version)))
