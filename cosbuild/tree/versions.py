"""Package references, versions and selectors: Debian ordering (so 1.0+10 > 1.0+9), newest
satisfying wins."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Iterable

from debian.debian_support import NativeVersion

from ..errors import CosbuildError


@dataclass(frozen=True, order=True)
class PackageRef:
    category: str
    name: str
    version: str = ">=0"   # a selector

    @property
    def id(self) -> str:
        return f"{self.category}/{self.name}"

    def __str__(self) -> str:
        return self.id if self.version in (">=0", "") else f"{self.id}@{self.version}"


_SELECTOR = re.compile(r"^\s*(>=|<=|>|<|=|!)?\s*([^\s<>=!]\S*)\s*$")


@functools.lru_cache(maxsize=None)
def _key(version: str) -> NativeVersion:
    return NativeVersion(version)


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as a is older than, equal to or newer than b (Debian rules)."""
    ka, kb = _key(a), _key(b)
    return (ka > kb) - (ka < kb)


def sort_key(version: str) -> NativeVersion:
    return _key(version)


def _valid(selector: str) -> bool:
    m = _SELECTOR.match(selector)
    if not m:
        return False
    try:
        _key(m.group(2))
    except ValueError:  # not a Debian version string
        return False
    return True


def check_selector(selector: str, where=None) -> None:
    if not _valid(selector):
        message = f"invalid version selector {selector!r}"
        hint = "use >=V, >V, <=V, <V, =V (or bare V) or !V"
        if where is not None:
            raise where.error(message, hint)
        raise CosbuildError(message, hint=hint)


def matches(selector: str, version: str) -> bool:
    check_selector(selector)
    op, wanted = _SELECTOR.match(selector).groups()
    op = op or "="
    if op == ">=" and wanted == "0":   # SPEC: ">=0 means any", even 0~rc1
        return True
    c = compare(version, wanted)
    return {">=": c >= 0, ">": c > 0, "<=": c <= 0, "<": c < 0, "=": c == 0, "!": c != 0}[op]


def newest(selector: str, versions: Iterable[str]) -> str | None:
    """The newest of `versions` that satisfies `selector`, or None."""
    ok = [v for v in versions if matches(selector, v)]
    return max(ok, key=sort_key) if ok else None


def parse_ref(text: str, where=None) -> PackageRef:
    """'category/name' or 'category/name@selector' -> PackageRef."""
    ident, _, selector = text.partition("@")
    category, slash, name = ident.rpartition("/")
    if not slash or not name or not category:
        message = f"invalid package reference {text!r}"
        hint = "write category/name or category/name@>=1.0"
        if where is not None:
            raise where.error(message, hint)
        raise CosbuildError(message, hint=hint)
    selector = selector or ">=0"
    check_selector(selector, where)
    return PackageRef(category=category, name=name, version=selector)
