"""The build cache's images, signed (issue #15): what builds/cache.py asks of TUF.

With `signing_keys`, every push also signs the pushed images in the image repository's TUF
metadata, kept there as a signed docker repository keeps it (tuf-*.json one-file images,
signing.pull_metadata): each tag is a target carrying its manifest's digest. With
`cache_trusted_root`, a cache's metadata is verified (python-tuf's ngclient, through the
docker repository transport) before anything is pulled, and `vouched` gives the digests the
images must be pulled by.
"""

from __future__ import annotations

import fcntl
import hashlib
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from ..oci.registry import Registries, parse_reference, registry_of
from ..settings import Settings
from ..tools import TaskLog
from .config import RepoConfig


def cache_trust(settings: Settings) -> "CacheTrust | None":
    """The cache's signing and verifying, when the settings ask for either."""
    return CacheTrust(settings) if settings.signing_keys or settings.cache_trusted_root \
        else None


class CacheTrust:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.registries = Registries(settings.insecure_registries)
        self._verifiers: dict[str, object] = {}   # per source, refreshed once per run
        self._verifiers_lock = threading.Lock()

    def vouched(self, source: str, tags: list[str], log: TaskLog) -> list[str] | None:
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
        with self._verifiers_lock:
            if source not in self._verifiers:
                repo = RepoConfig(name=f"cache {source}", urls=(source,), type="docker",
                                  insecure=registry_of(source) in self.registries.insecure,
                                  trusted_root=self.settings.cache_trusted_root)
                self._verifiers[source] = repo.transport(source)
            return self._verifiers[source]

    def sign(self, refs: tuple[str, ...], log: TaskLog) -> None:
        """Add the pushed `refs` to the image repository's signed metadata, one build at a
        time on this machine (each continues the metadata the registry has)."""
        from . import signing   # python-tuf: only when signing
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
