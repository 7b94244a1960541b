"""Signed repositories in tests: the fixed test key set and the broken copies of a signed
repository that clients must refuse.

TEST_KEYS is a key set made once with `cosbuild keys generate` and committed, private keys
included: for tests only, never to sign anything real. It is fixed so that every copy of the
sample ships the same trusted root, so system/sampleOS has the same build hash in every test
and session, and its cached images are shared."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

TEST_KEYS = Path(__file__).resolve().parent / "test-keys-not-secret"
# where the sample's `doit keys` puts the public root for system/sampleOS (dodo.py's TRUSTED_ROOT)
SAMPLE_TRUSTED_ROOT = "tree/system/sampleOS/files/trusted-root.json"


def install_test_keys(project: Path) -> Path:
    """The test keys as project/keys, owner-only as `cosbuild keys generate` makes them
    (git keeps no modes), and their root where the sample ships it; returns the keys folder."""
    keys = project / "keys"
    shutil.copytree(TEST_KEYS, keys)
    for folder, _, files in os.walk(keys):
        os.chmod(folder, 0o700)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o600)
    shutil.copyfile(keys / "root.json", project / SAMPLE_TRUSTED_ROOT)
    return keys


def linked_copy(repo: Path, dest: Path) -> Path:
    """A repository folder copied as hard links (artifacts are large); replace a file with
    `rewrite`, never write into one."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in repo.iterdir():
        if path.is_file():
            os.link(path, dest / path.name)
    return dest


def rewrite(path: Path, data: bytes) -> None:
    path.unlink()   # a hard link: the original keeps its content
    path.write_bytes(data)


def flipped_byte(repo: Path, name: str, dest: Path) -> Path:
    """The repository with one byte in the middle of file `name` changed."""
    copy = linked_copy(repo, dest)
    data = bytearray((repo / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    rewrite(copy / name, bytes(data))
    return copy


def edited_index(repo: Path, dest: Path) -> Path:
    """The repository whose repository.yaml claims a newer revision than the signed one."""
    copy = linked_copy(repo, dest)
    text = (repo / "repository.yaml").read_text()
    edited = re.sub(r"^revision: (\d+)$", lambda m: f"revision: {int(m[1]) + 1}", text,
                    count=1, flags=re.M)
    assert edited != text, text
    rewrite(copy / "repository.yaml", edited.encode())
    return copy


def unsigned(repo: Path, dest: Path) -> Path:
    """The repository without its TUF metadata (the tuf-* files)."""
    copy = linked_copy(repo, dest)
    signed = list(copy.glob("tuf-*"))
    assert signed, f"{repo} is not signed"
    for path in signed:
        path.unlink()
    return copy
