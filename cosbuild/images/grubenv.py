"""GRUB's environment block: the file GRUB's `load_env`/`save_env` read and write in place,
here COS_STATE's boot assessment file (layout.ASSESSMENT_FILE; runtime/assessment.py).

Exactly 1024 bytes: the header line, `name=value` lines, `#` up to the end. GRUB never
creates or grows it (it writes into the file's own blocks), so the disk build and
cos-installer write it whole, and the runtime rewrites it whole under a temporary name.
Names and values here are plain words: GRUB's escapes (`\\`) are never needed.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import CosbuildError
from ..fsutil import atomic_write

SIZE = 1024
HEADER = b"# GRUB Environment Block\n"
WORD = re.compile(r"[A-Za-z0-9_.:-]*")


def block(values: dict[str, str]) -> bytes:
    """The environment block holding `values` (sorted: the same values, the same bytes)."""
    lines = []
    for name, value in sorted(values.items()):
        if not name or not WORD.fullmatch(name) or not WORD.fullmatch(value):
            raise ValueError(f"not a plain GRUB variable: {name}={value}")
        lines.append(f"{name}={value}\n".encode())
    body = HEADER + b"".join(lines)
    if len(body) > SIZE:
        raise ValueError("the variables do not fit in GRUB's 1024-byte environment block")
    return body.ljust(SIZE, b"#")


def parse(data: bytes, file: Path) -> dict[str, str]:
    """The variables of an environment block; what is not one is an error naming the file."""
    if len(data) != SIZE or not data.startswith(HEADER):
        raise CosbuildError("not a GRUB environment block (1024 bytes, its header first)",
                            file=file, hint="`grub-editenv FILE create` makes an empty one")
    values = {}
    for line in data[len(HEADER):].decode("ascii", "replace").split("\n"):
        if line.startswith("#") or not line:
            continue
        name, sep, value = line.partition("=")
        if sep:
            values[name] = value
    return values


def read(path: Path) -> dict[str, str]:
    with open(path, "rb") as f:
        return parse(f.read(SIZE + 1), path)


def write(path: Path, values: dict[str, str]) -> None:
    atomic_write(path, block(values))
