"""Build repositories: where the build deps no local tree provides come from.

A derivative tree holds only its own packages; `system/cos` and the rest come from cOS's
repository, named in the project's `.luet.yaml` (or `luet.yaml`) or by the `build_repo`
setting. Each package taken from there is a graph node that is fetched, not built: its
artifact downloaded into the build folder (checked against the index) for final-image
builds and images, and the image it was built into pulled when a package builds on it.

A fetched artifact with a device node or FIFO is refused unless its repository's entry in
.luet.yaml lists the package in `allow_devices`; only then may the build's own index (and
so the images installed from it) let it create them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .. import luetformat, terminal
from ..builds.artifact import COMPRESSION, sha256_file
from ..errors import CosbuildError
from ..fsutil import atomic_path, atomic_write
from ..settings import Settings
from ..tools import TaskLog
from ..tree.graph import Package, Remote
from ..tree.load import PackageSource
from ..tree.yamlio import dumps
from .config import RepoConfig, read_config, repo_kind
from .index import load_repository

CONFIG_FILES = (".luet.yaml", "luet.yaml")   # the project's luet client config, as luet reads it


class BuildRepositories:
    """The build repositories of a project, read when the graph needs them (tree.graph's
    RemoteSource)."""

    def __init__(self, repos: list[RepoConfig], workdir: Path):
        self.repos = sorted(repos, key=lambda r: r.priority)   # lower priority wins, as in luet
        self.workdir = workdir

    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.repos)

    def fingerprint(self) -> str:
        """Each repository's index as it is now: a new upstream release changes it."""
        h = hashlib.sha256()
        for repo in self.repos:
            h.update(_index(repo, self.workdir).read_bytes())
        return h.hexdigest()

    def packages(self) -> list[tuple[PackageSource, Remote]]:
        out, seen = [], set()
        for repo in self.repos:
            offered = load_repository(repo, self.workdir / _safe(repo.name))
            for c in offered:
                if c.id in seen:
                    continue   # a repository before this one offers the package
                where = Remote(repo.name, c.url, c.artifact, c.sha256, c.cache_image, c.files,
                               c.compression.name, c.size)
                out.append((PackageSource(c.definition, {}, declared_in=Path(c.url, c.artifact)),
                            where))
            seen |= {c.id for c in offered}
        return out


def build_repositories(settings: Settings) -> BuildRepositories | None:
    """The build_repo setting's repositories, then those of .luet.yaml / luet.yaml."""
    repos = [RepoConfig(name=url, urls=(url,), type=repo_kind(url), priority=n - 100)
             for n, url in enumerate(settings.build_repo)]
    config = next((Path(f) for f in CONFIG_FILES if Path(f).is_file()), None)
    if config is not None:
        repos += [r for r in read_config(config) if r.used_on(settings.arch)]
    if not repos:
        return None
    return BuildRepositories(repos, settings.build_dir / ".cache" / "build-repos")


def fetch(pkg: Package, builder, needs_image: bool, log: TaskLog) -> str:
    """Put a remote package where a local build would have: its artifact in the build folder
    (verified) and, when a package builds on its image, that image under the package's tag."""
    where = pkg.remote
    repo = next((r for r in _repos_of(builder) if r.name == where.repo), None)
    if repo is None:
        raise CosbuildError(f"{pkg.key}: its repository {where.repo} is no longer configured")
    artifact = builder.artifact_path(pkg)
    same = where.compression == COMPRESSION.name
    download = artifact if same else artifact.with_name(f"{artifact.name}.{where.compression}")
    devices = f"{pkg.definition.category}/{pkg.definition.name}" in repo.allow_devices
    try:
        repo.transport(where.url).fetch(where.artifact, download, sha256=where.sha256,
                                        size=where.size, progress=f"{pkg.key} from {where.repo}")
        if not same:   # luet's gzip or plain artifacts: the builds here read zstd
            _transcode(download, luetformat.COMPRESSIONS[where.compression], artifact,
                       repo.bounds)
        if not devices:
            _refuse_devices(artifact, repo.bounds)
    except CosbuildError as exc:
        artifact.unlink(missing_ok=True)   # a refused artifact is not left for a build to use
        raise CosbuildError(f"{pkg.key} from repository {where.repo} ({where.url}): "
                            f"{exc.message}", hint=exc.hint) from None
    finally:
        if not same:
            download.unlink(missing_ok=True)
    record = builder.metadata(pkg, sha256_file(artifact), list(where.files))
    record[luetformat.DEVICES_KEY] = devices
    atomic_write(builder.metadata_path(pkg), dumps(record))
    how = f"fetched from {where.repo}"
    if needs_image:
        if not where.cache_image:
            raise CosbuildError(f"{pkg.key} from {where.repo}: a package builds on its image, "
                                "but the repository names none (package_cacheimage)",
                                hint="build on its final artifact instead "
                                     "(requires_final_images: true)")
        try:
            builder.buildah.ensure_image(where.cache_image, log)
        except CosbuildError as exc:
            raise CosbuildError(f"{pkg.key} from {where.repo}: cannot pull its image "
                                f"{terminal.safe(where.cache_image)}: {exc.message}",
                                hint="a registry must be reachable to build on a remote "
                                     "package's image") from None
        builder.buildah.tag(where.cache_image, builder.tags(pkg).package, log)
        how += f", image {terminal.safe(where.cache_image)}"   # the index's text, printed
    return how


def _transcode(source: Path, comp, out: Path, bounds: luetformat.Bounds) -> None:
    # decompressed, a remote archive may not fill the disk
    limit = bounds.unpacked_limit(source.stat().st_size, None)
    with source.open("rb") as raw, atomic_path(out) as tmp, tmp.open("wb") as sink, \
            COMPRESSION.writer(sink) as stream:
        reader, total = comp.reader(raw), 0
        try:
            while chunk := reader.read(1 << 20):
                total += len(chunk)
                if total > limit:
                    raise CosbuildError(f"{source.name} is larger than "
                                        f"{luetformat.bound_text(limit)} once decompressed",
                                        hint="the artifact is damaged or hostile")
                stream.write(chunk)
        except comp.errors() as exc:
            raise CosbuildError(f"{source.name} is not {comp.name}-compressed: {exc}") from None


def _refuse_devices(artifact: Path, bounds: luetformat.Bounds) -> None:
    """A remote package may not bring device nodes or FIFOs (into builds, into images)."""
    limit = bounds.unpacked_limit(artifact.stat().st_size, None)
    try:
        with luetformat.open_tar(artifact, COMPRESSION, limit) as tar:
            for member in tar:
                if kind := luetformat.device_kind(member):
                    raise CosbuildError(f"its artifact holds a {kind} "
                                        f"({terminal.safe(member.name)})",
                                        hint="list the package in its repository's "
                                             "allow_devices (.luet.yaml) if it may")
    except luetformat.Damaged as exc:
        raise CosbuildError(f"its artifact is damaged ({exc})") from None


def _repos_of(builder) -> list[RepoConfig]:
    found = build_repositories(builder.settings)
    return found.repos if found else []


def _index(repo: RepoConfig, workdir: Path) -> Path:
    errors = []
    for url in repo.urls:
        try:
            return repo.transport(url).fetch("repository.yaml",
                                             workdir / f"{_safe(repo.name)}.repository.yaml",
                                             metadata=True)
        except CosbuildError as exc:
            errors.append(f"{url}: {exc.message}")
    raise CosbuildError(f"build repository {repo.name} is unreachable: {'; '.join(errors)}",
                        hint="check the build_repo setting / .luet.yaml, or the network")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in name)
