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


# luet keeps a package under category/name/version (its tree, its database) and cosbuild
# names its files name-category-version: a name or category is one plain path component
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
NAME_RULE = "letters, digits and . _ + -, starting with a letter or digit (no '/' or '..')"
VERSION_RULE = ("a Debian version as luet validates it: [epoch:]upstream[-revision], starting "
                "with a digit, then letters, digits and . + ~ - (e.g. 1.0.2+3)")


def valid_version(version: str) -> bool:
    """luet's rule (Debian's, upstream starting with a digit), and no empty part: `1..2` is
    no version luet's semver comparison can read. python-debian's pattern ends in `$`, which
    lets a trailing newline through: a version names files, so it is printable text too."""
    upstream = version.split(":", 1)[-1]
    if not upstream[:1].isdigit() or ".." in version or not version.isprintable():
        return False
    try:
        _key(version)
    except ValueError:  # not a Debian version string
        return False
    return True


def _fail(message: str, hint: str, where=None):
    if where is not None:
        raise where.error(message, hint)
    raise CosbuildError(message, hint=hint)


def check_name(text: str, what: str, where=None) -> str:
    """`text` as a package name or category (`what`), or a clear error."""
    if not NAME.fullmatch(text):
        _fail(f"invalid {what} {text!r}" if text else f"empty {what}", NAME_RULE, where)
    return text


def check_version(text: str, where=None) -> str:
    """`text` as a package version, or a clear error."""
    if not valid_version(text):
        _fail(f"invalid version {text!r}" if text else "empty version", VERSION_RULE, where)
    return text


def _valid(selector: str) -> bool:
    m = _SELECTOR.match(selector)
    return bool(m) and valid_version(m.group(2))


def check_selector(selector: str, where=None) -> None:
    if not _valid(selector):
        _fail(f"invalid version selector {selector!r}",
              "use >=V, >V, <=V, <V, =V (or bare V) or !V", where)


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
        _fail(f"invalid package reference {text!r}", "write category/name or category/name@>=1.0",
              where)
    check_name(category, "category", where)
    check_name(name, "package name", where)
    selector = selector or ">=0"
    check_selector(selector, where)
    return PackageRef(category=category, name=name, version=selector)
