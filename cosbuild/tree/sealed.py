"""Caches in the build folder that run code when loaded (a pickle, Jinja2 bytecode) are
sealed: an HMAC-SHA256 under a key of the user's own, kept outside the build folder, which
may come from elsewhere. A cache whose MAC does not match is never loaded, only rebuilt."""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from ..fsutil import atomic_write

log = logging.getLogger("cosbuild")

KEY_NAME = "cache.key"
MAC_SIZE = 32


def cache_key() -> bytes | None:
    """The user's secret: $XDG_CACHE_HOME/cosbuild/cache.key (default ~/.cache), made once
    with O_EXCL and mode 0600; None (no caching) when it cannot be had or is doubtful."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = base / "cosbuild" / KEY_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:   # written in one go; a reader seeing it short or empty just does not cache
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(MAC_SIZE))
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(fd)
            key = handle.read(MAC_SIZE + 1)
    except OSError as exc:
        log.debug("no caches: cannot use %s: %s", path, exc)
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o077 or len(key) != MAC_SIZE:
        log.debug("no caches: %s is not a %d-byte key only its owner reads", path, MAC_SIZE)
        return None
    return key


def write_sealed(path: Path, data: bytes, key: bytes) -> None:
    atomic_write(path, hmac.digest(key, data, "sha256") + data)


def read_sealed(path: Path, key: bytes) -> bytes | None:
    """The data of a sealed file, or None when it is missing or not sealed with `key`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            blob = handle.read()
    except OSError:
        return None
    mac, data = blob[:MAC_SIZE], blob[MAC_SIZE:]
    if not hmac.compare_digest(mac, hmac.digest(key, data, "sha256")):
        log.debug("%s: not made by this user's cosbuild (MAC mismatch): ignored", path)
        return None
    return data
