"""Signed repositories in tests: one test key set for the whole run, and the broken copies
of a signed repository that clients must refuse."""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import tempfile
from pathlib import Path

from cosbuild.repos import signing

# where the sample's `doit keys` puts the public root for system/sampleOS (dodo.py's TRUSTED_ROOT)
SAMPLE_TRUSTED_ROOT = "tree/system/sampleOS/files/trusted-root.json"


@functools.cache
def session_keys() -> Path:
    """The key set of this test run, made on first use and removed at its end. One for all
    tests, so that every copy of the sample ships the same trusted root: system/sampleOS has
    one build hash and its images are built once. Not committed: a committed root would
    expire (a year) and publish private keys."""
    folder = Path(tempfile.mkdtemp(prefix="cosbuild-test-keys."))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    signing.generate(folder / "keys")
    return folder / "keys"


def install_test_keys(project: Path) -> Path:
    """The test keys as project/keys (modes kept: the private keys owner-only) and their root
    where the sample ships it; returns the keys folder."""
    keys = project / "keys"
    shutil.copytree(session_keys(), keys)
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
