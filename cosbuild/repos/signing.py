"""TUF-signed repositories, server side (issue #15, /work/plan/tuf-contract.md).

A keys folder DIR holds the trusted root clients are given (DIR/root.json), every version
of it as published (DIR/<N>.root.json) and the private keys (DIR/keys/<role>.key). Signing
a repository writes, next to repository.yaml, python-tuf metadata whose targets are the
repository's files: tuf-<N>.root.json, tuf-targets.json, tuf-snapshot.json and
tuf-timestamp.json (consistent_snapshot off: the file names stay the ones luet clients
fetch, so unsigned clients read the same repository).

Keys are ed25519 as securesystemslib 0.26 makes them (its classic key dicts, which its
SSlibSigner signs with); the metadata is python-tuf's, never written by hand.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

from securesystemslib import keys as sslib_keys
from securesystemslib.signer import SSlibKey, SSlibSigner
from tuf.api.metadata import (Metadata, MetaFile, Root, Snapshot, TargetFile, Targets,
                              Timestamp)
from tuf.api.serialization.json import JSONSerializer

from ..errors import CosbuildError
from ..fsutil import atomic_write

ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
ROOT_EXPIRY = timedelta(days=365)
# lifetimes relative to the timestamp's (the contract's 1x / 7x / 30x)
LIFETIME = {Timestamp.type: 1, Snapshot.type: 7, Targets.type: 30}
PREFIX = "tuf-"
ROOT_FILE = "root.json"
# sorted keys, no whitespace: the same metadata is the same bytes
SERIALIZER = JSONSerializer(compact=True)


class TargetFacts(NamedTuple):
    length: int
    sha256: str
    custom: dict | None = None


def metadata_name(role: str) -> str:
    """The file name of a role's metadata in a repository (roots: root_name)."""
    return f"{PREFIX}{role}.json"


def root_name(version: int) -> str:
    return f"{PREFIX}{version}.root.json"


def METADATA_FILES(folder: Path) -> list[Path]:   # noqa: N802 (the contract's name)
    """The tuf-* files of a signed folder: its roots in version order, then the others."""
    roots = sorted((p for p in folder.glob(f"{PREFIX}*.root.json")
                    if re.fullmatch(rf"{PREFIX}\d+\.root\.json", p.name)),
                   key=lambda p: int(p.name[len(PREFIX):].split(".")[0]))
    return roots + [folder / metadata_name(r) for r in ROLES[1:]
                    if (folder / metadata_name(r)).is_file()]


# --------------------------------------------------------------------------- key sets

def generate(dir: Path) -> None:
    """A new key set in `dir`: a key for each role and root version 1 (DIR/root.json)."""
    dir = Path(dir)
    if (dir / ROOT_FILE).exists() or (dir / "keys").exists():
        raise CosbuildError("this folder already holds a key set", file=dir,
                            hint="keys are never overwritten: use another folder, or "
                                 "`cosbuild keys rotate` to replace keys")
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "keys").mkdir(mode=0o700)
    os.chmod(dir / "keys", 0o700)   # whatever the umask
    root = Root(expires=_now() + ROOT_EXPIRY, consistent_snapshot=False)
    signers = {}
    for role in ROLES:
        key = _new_key(dir, role)
        root.add_key(SSlibKey.from_securesystemslib_key(key), role)
        signers[role] = SSlibSigner(key)
    md = Metadata(root)
    md.sign(signers[Root.type])
    _publish_root(dir, md)


def rotate(dir: Path, roles: tuple[str, ...] = ()) -> int:
    """The next root version: a new root key (and new keys for `roles`), signed by the old
    and the new root key so that clients trusting the old root follow it. The old keys stay
    as DIR/keys/<role>.<N>.key. Returns the new version."""
    dir = Path(dir)
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise CosbuildError(f"unknown role '{unknown[0]}'", key="--role",
                            hint=f"one of: {', '.join(ROLES)}")
    md = load_root(dir)
    root = md.signed
    old = root.version
    old_signer = _signer(dir, Root.type)
    for role in dict.fromkeys((Root.type, *roles)):
        for keyid in list(root.roles[role].keyids):
            root.revoke_key(keyid, role)
        _retire_key(dir, role, old)
        key = _new_key(dir, role)
        root.add_key(SSlibKey.from_securesystemslib_key(key), role)
    root.version = old + 1
    root.expires = _now() + ROOT_EXPIRY
    md.signatures.clear()
    md.sign(old_signer)
    md.sign(_signer(dir, Root.type), append=True)
    _publish_root(dir, md)
    return root.version


def load_root(dir: Path) -> Metadata[Root]:
    path = Path(dir) / ROOT_FILE
    try:
        return Metadata[Root].from_bytes(path.read_bytes())
    except FileNotFoundError:
        raise CosbuildError("no key set here (no root.json)", file=path,
                            hint="make one: cosbuild keys generate DIR") from None
    except Exception as exc:   # python-tuf's DeserializationError and the like
        raise CosbuildError(f"not a TUF root: {exc}", file=path,
                            hint="name the folder `cosbuild keys generate` made") from None


def _publish_root(dir: Path, md: Metadata[Root]) -> None:
    data = md.to_bytes(SERIALIZER)
    atomic_write(dir / f"{md.signed.version}.root.json", data)
    atomic_write(dir / ROOT_FILE, data)   # last: the current root names every file before it


def _key_path(dir: Path, role: str) -> Path:
    return dir / "keys" / f"{role}.key"


def _new_key(dir: Path, role: str) -> dict:
    """A new private key written owner-only as DIR/keys/<role>.key, never over another."""
    key = sslib_keys.generate_ed25519_key()
    path = _key_path(dir, role)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")   # 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(key, f, sort_keys=True)
        os.link(tmp, path)   # unlike a rename, fails when the key exists: keys are not replaced
    except FileExistsError:
        raise CosbuildError(f"{path.name} already exists", file=path,
                            hint="keys are never overwritten; move it away first") from None
    finally:
        os.unlink(tmp)
    return key


def _retire_key(dir: Path, role: str, version: int) -> None:
    """DIR/keys/<role>.key becomes <role>.<version>.key (the root version it served)."""
    path = _key_path(dir, role)
    retired = path.with_name(f"{role}.{version}.key")
    try:
        os.link(path, retired)
    except FileExistsError:
        raise CosbuildError(f"{retired.name} already exists", file=retired,
                            hint="the key folder is not as `cosbuild keys` left it") from None
    os.unlink(path)


def _signer(dir: Path, role: str) -> SSlibSigner:
    path = _key_path(dir, role)
    try:
        return SSlibSigner(json.loads(path.read_text()))
    except FileNotFoundError:
        raise CosbuildError(f"no {role} key", file=path,
                            hint="name the folder `cosbuild keys generate` made") from None
    except (ValueError, KeyError) as exc:
        raise CosbuildError(f"not a key file ({exc})", file=path) from None


def _now() -> datetime:
    # naive UTC in whole seconds, as python-tuf 3.1 reads and writes expiry dates
    return datetime.now(timezone.utc).replace(microsecond=0, tzinfo=None)


# --------------------------------------------------------------------------- repositories

def sign_repository(folder: Path, keys: Path, targets: dict[str, TargetFacts],
                    expiry: timedelta, *, refresh: bool = False) -> bool:
    """Write the tuf-* files of the repository in `folder` for `targets` (name -> facts),
    signed with the key set `keys`; returns whether anything changed.

    A role is signed again when what it says changed, when it is not signed by the keys
    the current root names, or when less than half of its lifetime is left; the timestamp
    also whenever anything else changed, and when `refresh` (a cron job keeping a
    repository fresh). Versions continue from what the folder has."""
    folder, keys = Path(folder), Path(keys)
    root = load_root(keys)
    now = _now()
    roots = _publish_roots(folder, keys, root.signed.version)

    def signed_anew(role: str, wanted, force: bool = False) -> tuple[Metadata, bool]:
        """The role's metadata saying `wanted`: what the folder has, or signed anew."""
        md = _load(folder, role)
        if md is not None:   # compared as what it says: version and expiry are the old ones
            wanted.version, wanted.expires = md.signed.version, md.signed.expires
            if not force and md.signed == wanted and _signed_by(root, role, md) and \
                    md.signed.expires - now >= expiry * LIFETIME[role] / 2:
                return md, False
        wanted.version = md.signed.version + 1 if md is not None else 1
        wanted.expires = now + expiry * LIFETIME[role]
        md = Metadata(wanted)
        md.sign(_signer(keys, role))
        atomic_write(folder / metadata_name(role), md.to_bytes(SERIALIZER))
        return md, True

    targets_md, new_targets = signed_anew(Targets.type, Targets(targets={
        name: TargetFile(f.length, {"sha256": f.sha256}, name,
                         {"custom": dict(f.custom)} if f.custom else {})
        for name, f in sorted(targets.items())}))
    snapshot_md, new_snapshot = signed_anew(Snapshot.type, Snapshot(meta={
        f"{Targets.type}.json": MetaFile(targets_md.signed.version)}))
    changed = roots or new_targets or new_snapshot
    _, new_timestamp = signed_anew(Timestamp.type,
                                   Timestamp(snapshot_meta=MetaFile(snapshot_md.signed.version)),
                                   force=changed or refresh)
    return changed or new_timestamp


def _signed_by(root: Metadata[Root], role: str, md: Metadata) -> bool:
    """Whether `md` is signed by the keys `root` names for `role` (not since rotated away)."""
    try:
        root.verify_delegate(role, md)
        return True
    except Exception:   # python-tuf's UnsignedMetadataError, or a key it cannot use
        return False


def _publish_roots(folder: Path, keys: Path, current: int) -> bool:
    """Every root version of the key set into the repository (clients walk them in order)."""
    changed = False
    for version in range(1, current + 1):
        source = keys / f"{version}.root.json"
        if not source.is_file():
            raise CosbuildError(f"root version {version} is missing", file=source,
                                hint="clients need every root version; restore it")
        data = source.read_bytes()
        dest = folder / root_name(version)
        if not dest.is_file() or dest.read_bytes() != data:
            atomic_write(dest, data)
            changed = True
    return changed


def _load(folder: Path, role: str) -> Metadata | None:
    """The role's metadata the folder has; anything unreadable is signed anew."""
    try:
        md = Metadata.from_bytes((folder / metadata_name(role)).read_bytes())
    except Exception:   # missing, damaged or not TUF: the next version replaces it
        return None
    return md if md.signed.type == role else None
