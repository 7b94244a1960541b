"""Reading repositories (SPEC section 3): a repository's index, tree and finalizers, as the
packages it offers (Candidate), each file checked and bounded as it is read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .. import luetformat
from ..errors import CosbuildError
from ..tree import spec, versions
from ..tree.load import parse_definition
from ..tree.yamlio import loads
from .config import RepoConfig, file_name

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
    prefix = file_name(repo.name)
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


def search(repos: list[RepoConfig], term: str, workdir: Path) -> list[Candidate]:
    found = []
    for r in repos:
        for c in load_repository(r, workdir):
            text = f"{c.id} {c.definition.description}"
            if term.lower() in text.lower() and not c.definition.hidden:
                found.append(c)
    return sorted(found, key=lambda c: (c.id, versions.sort_key(c.version)))
