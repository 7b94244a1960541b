"""The shared build cache: build images in OCI registries, so that several machines (CI
runners, developers) never rebuild what one of them already built (luet's
`--image-repository`, `--pull-repository` and `--push`).

A package's images are `<repository>:<build hash>` and `<repository>:<build hash>-builder`.
Before a build they are looked up in local storage (builder.py), then in the image
repository when it names a registry, then in the pull repositories; the first registry that
has both is pulled from, and the images are tagged as the image repository's, exactly as a
local build would have made them. A registry that cannot be reached is a cache miss, not an
error. With `push`, both images go to the image repository after the build; a push that
fails is an error naming the registry, after the local result (images, artifact, metadata)
is complete, so running the build again only pushes.

Signed caches (issue #15): `trust` (repos/cachetrust.py, given by the tasks: TUF is the
repositories' business) signs every push and, with `cache_trusted_root`, says which digest
each image must have; images are then pulled by that digest, so a moved tag is never used.
An image the cache's metadata does not vouch for is a cache miss; a cache whose metadata
fails verification is an error.
"""

from __future__ import annotations

from sh import ErrorReturnCode

from ..errors import CosbuildError
from ..oci.registry import Registries, parse_reference, registry_of
from ..settings import Settings
from ..tools import TaskLog
from .buildah import Buildah, qualify


class ImageCache:
    def __init__(self, settings: Settings, buildah: Buildah, trust=None):
        for name in settings.pull_repositories:
            if registry_of(name) is None:
                raise CosbuildError(f"pull repository '{name}' does not name a registry",
                                    key="pull_repositories",
                                    hint="write it as HOST[:PORT]/PATH, e.g. registry.example.org/cos/cache")
        if settings.push and registry_of(settings.image_repository) is None:
            raise CosbuildError(f"push is on but the image repository '{settings.image_repository}' "
                                "is in local storage only", key="image_repository",
                                hint="set --image-repository / COSBUILD_IMAGE_REPOSITORY to "
                                     "HOST[:PORT]/PATH, or turn push off")
        self.settings = settings
        self.buildah = buildah
        self.registries = Registries(settings.insecure_registries)
        own = [settings.image_repository] if registry_of(settings.image_repository) else []
        self.sources = tuple(dict.fromkeys(own + list(settings.pull_repositories)))
        self.trust = trust

    def _tls_verify(self, repository: str) -> bool:
        return registry_of(repository) not in self.registries.insecure

    def pull(self, refs: tuple[str, ...], log: TaskLog) -> str | None:
        """Pull the local image references `refs` (the image repository's) from the first
        cache that has them all; returns that cache, or None when none has."""
        tags = [ref.rpartition(":")[2] for ref in refs]
        for source in self.sources:
            registry = self.registries[registry_of(source)]
            try:
                if self.trust and self.settings.cache_trusted_root:
                    wanted = self.trust.vouched(source, tags, log)
                    if wanted is None:
                        continue
                elif not all(registry.exists(parse_reference(f"{source}:{t}")) for t in tags):
                    log.write(f"cache {source}: no images for {tags[0]}")
                    continue
                else:
                    wanted = [f"{source}:{tag}" for tag in tags]
            except CosbuildError as exc:
                if self.trust and self.settings.cache_trusted_root and \
                        "cannot reach registry" not in exc.message:
                    raise   # refused: what the cache says cannot be trusted
                log.write(f"cache {source} skipped: {exc}")
                continue
            log.write(f"cache {source} has the images: pulling them")
            try:
                for remote, local in zip(wanted, refs):
                    self.buildah.pull(remote, log, tls_verify=self._tls_verify(source))
                    if qualify(remote) != qualify(local):
                        self.buildah.tag(remote, local, log)
            except ErrorReturnCode:   # the registry went away: building still works
                log.write(f"cache {source}: pull failed, trying the next cache or building")
                continue
            return source
        return None

    def push(self, refs: tuple[str, ...], log: TaskLog, done: str) -> None:
        """Push `refs` to the image repository; `done` says what is complete locally, for
        the error message."""
        repository = self.settings.image_repository
        for ref in refs:
            log.write(f"pushing {ref}")
            try:
                self.buildah.push(ref, log, tls_verify=self._tls_verify(repository))
            except ErrorReturnCode:   # buildah said why, last, in the log
                reason = (log.tail().splitlines() or [""])[-1].strip()
                raise CosbuildError(
                    f"cannot push {ref} to registry {registry_of(repository)}: {reason}",
                    hint=f"{done} is complete locally; run the build again to retry the push, "
                         f"or turn push off (full log: {log.path})") from None
        if self.trust and self.settings.signing_keys:
            try:
                self.trust.sign(refs, log)
            except CosbuildError as exc:
                raise CosbuildError(f"cannot sign {', '.join(refs)} in {repository}: "
                                    f"{exc.message}", file=exc.file, key=exc.key,
                                    hint=f"{done} is complete and pushed; run the build "
                                         "again to retry") from None
