"""Repository configuration of the client: luet-style config files (`repositories:`),
--repo arguments, and where each signed repository's trust state is kept."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from .. import arches, luetformat, rootpath
from ..errors import CosbuildError
from ..tree import spec
from ..tree.yamlio import load_mapping

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
    spec.Keyword("arch", spec.STR, "",
                 "luet: use this repository on this architecture (amd64, arm64) even when "
                 "`enable` is false: one config lists each architecture's repository, "
                 "disabled, with its `arch`, and each machine uses its own"),
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
    arch: str = ""
    description: str = ""
    insecure: bool = False
    allow_devices: tuple[str, ...] = ()
    # the project's own build folder: its index says itself which packages may carry device
    # nodes (bootstrapped base images); no configured repository is believed about that
    own_build: bool = False
    trusted_root: Path | None = None   # the repository must be signed under this TUF root
    trust_state: Path | None = None    # where the metadata it last trusted is kept
    bounds: luetformat.Bounds = field(default=luetformat.DEFAULT_BOUNDS, compare=False)

    def used_on(self, arch: str) -> bool:
        """Whether a machine of the architecture `arch` uses it (luet 0.20's rule)."""
        return self.enable or self.arch == arch

    def transport(self, url: str):
        from .transport import transport_for   # only the client needs HTTP
        inner = transport_for(url, self.type, self.insecure, self.bounds)
        if self.trusted_root is None:
            return inner
        from .trust import SignedTransport   # python-tuf: only for signed repositories
        # without a root to keep it in (iso.yaml's and build repositories): the user's
        return SignedTransport(inner, self.name, self.trusted_root,
                               self.trust_state or _user_trust_dir() / file_name(self.name))

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
        # luet configs carry more keys (auth, cached, ...): those are not ours to judge
        fields = spec.parse(REPOSITORY_KEYWORDS, entry, path, what="repository", strict=False)
        if not fields["urls"]:
            raise CosbuildError("a repository needs 'urls'", file=path, line=entry.line,
                                key=f"repositories.{fields['name']}.urls")
        trusted = fields["trusted_root"]
        out.append(RepoConfig(name=fields["name"], urls=fields["urls"], type=fields["type"],
                              priority=fields["priority"], enable=fields["enable"],
                              arch=fields["arch"],
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
    repos = [r for r in read_config(config) if r.used_on(arches.host())] if config else []
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
    return [dataclasses.replace(r, trust_state=trust_dir / file_name(r.name))
            if r.trusted_root else r for r in repos]


def file_name(name: str) -> str:
    """A repository's name as one file name (names may be URLs), never . or .., nor holding
    a NUL (which no file name can) or another control character."""
    name = "".join(c if c.isprintable() else "_" for c in name)
    return name.replace("/", "_").replace("..", "__").lstrip(".") or "_"


def _user_trust_dir() -> Path:
    return Path.home() / ".cache/cosbuild/tuf"



def local_build(build_dir: Path) -> RepoConfig:
    """The build folder as a repository, preferred over every configured one."""
    return RepoConfig(name="local build", urls=(str(build_dir),), priority=-1, own_build=True)
