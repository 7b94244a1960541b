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

Signed caches (issue #15): with `signing_keys`, every push also signs the pushed images in
the image repository's TUF metadata (tuf-*.json one-file images, as a signed docker
repository keeps them): each tag is a target carrying its manifest's digest. With
`cache_trusted_root`, a cache's metadata is verified (python-tuf) before anything is pulled,
and images are pulled by the digest it vouches for, so a moved tag is never used; an image
it does not vouch for is a cache miss, a cache whose metadata fails verification an error.
"""

from __future__ import annotations

import fcntl
import hashlib
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from sh import ErrorReturnCode

from ..errors import CosbuildError
from ..oci.registry import Registries, parse_reference, registry_of
from ..settings import Settings
from ..tools import TaskLog
from .buildah import Buildah, qualify


class ImageCache:
    def __init__(self, settings: Settings, buildah: Buildah):
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
        self._verifiers: dict[str, object] = {}   # per source, refreshed once per run
        self._verifiers_lock = threading.Lock()

    def _tls_verify(self, repository: str) -> bool:
        return registry_of(repository) not in self.registries.insecure

    def pull(self, refs: tuple[str, ...], log: TaskLog) -> str | None:
        """Pull the local image references `refs` (the image repository's) from the first
        cache that has them all; returns that cache, or None when none has."""
        tags = [ref.rpartition(":")[2] for ref in refs]
        for source in self.sources:
            registry = self.registries[registry_of(source)]
            try:
                if self.settings.cache_trusted_root:
                    wanted = self._signed(source, tags, log)
                    if wanted is None:
                        continue
                elif not all(registry.exists(parse_reference(f"{source}:{t}")) for t in tags):
                    log.write(f"cache {source}: no images for {tags[0]}")
                    continue
                else:
                    wanted = [f"{source}:{tag}" for tag in tags]
            except CosbuildError as exc:
                if self.settings.cache_trusted_root and not _unreachable(exc):
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
        """Push `refs` to the image repository when push is on; `done` says what is complete
        locally, for the error message."""
        if not self.settings.push:
            return
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
        if self.settings.signing_keys:
            try:
                self._sign(refs, log)
            except CosbuildError as exc:
                raise CosbuildError(f"cannot sign {', '.join(refs)} in {repository}: "
                                    f"{exc.message}", file=exc.file, key=exc.key,
                                    hint=f"{done} is complete and pushed; run the build "
                                         "again to retry") from None

    # ----------------------------------------------------------------- signed caches

    def _signed(self, source: str, tags: list[str], log: TaskLog) -> list[str] | None:
        """`source@digest` for each tag, as the cache's verified metadata vouches for it;
        None when it does not vouch for all of them."""
        verifier = self._verifier(source)
        digests = []
        for tag in tags:
            target = verifier.targetinfo(tag)
            digest = (target.custom or {}).get("digest") if target else None
            if not isinstance(digest, str):
                log.write(f"cache {source}: {tag} is not signed: not used")
                return None
            digests.append(f"{source}@{digest}")
        return digests

    def _verifier(self, source: str):
        from ..repos.client import RepoConfig   # python-tuf: only for a signed cache
        with self._verifiers_lock:
            if source not in self._verifiers:
                repo = RepoConfig(name=f"cache {source}", urls=(source,), type="docker",
                                  insecure=not self._tls_verify(source),
                                  trusted_root=self.settings.cache_trusted_root)
                self._verifiers[source] = repo.transport(source)
            return self._verifiers[source]

    def _sign(self, refs: tuple[str, ...], log: TaskLog) -> None:
        """Add the pushed `refs` to the image repository's signed metadata, one build at a
        time on this machine (each continues the metadata the registry has)."""
        from ..oci import registry as oci
        from ..repos import signing   # python-tuf: only when signing
        keys = self.settings.signing_keys
        base = parse_reference(self.settings.image_repository)
        remote = self.registries[base.registry]
        work = self.settings.build_dir / ".cache"
        work.mkdir(parents=True, exist_ok=True)
        with _locked(work / "cache-signing.lock"), \
                tempfile.TemporaryDirectory(dir=work, prefix=".cache-signing-") as tmp:
            staging = Path(tmp)
            signing.pull_metadata(remote, base, keys, staging)
            targets = signing.published_targets(staging)
            for ref in refs:
                tag = ref.rpartition(":")[2]
                raw = remote.raw_manifest(base.with_tag(tag))
                sha = hashlib.sha256(raw).hexdigest()
                targets[tag] = signing.TargetFacts(len(raw), sha, {"digest": f"sha256:{sha}"})
            if signing.sign_repository(staging, keys, targets, self.settings.signing_expiry):
                signing.push_metadata(remote, base, staging)
                log.write(f"signed {', '.join(refs)} in {self.settings.image_repository}")


@contextmanager
def _locked(path: Path):
    with path.open("a") as f:   # each opening is its own lock: threads exclude each other too
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _unreachable(exc: CosbuildError) -> bool:
    return "cannot reach registry" in exc.message
