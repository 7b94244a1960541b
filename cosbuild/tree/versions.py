"""Package references, versions and selectors as luet 0.20 handles them (pkg/versioner):
versions are free-form; they are ordered by Debian rules (so 1.0+10 > 1.0+9), selectors are
matched by hashicorp/go-version, and the newest version that satisfies wins."""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Iterable

from debian.debian_support import NativeVersion

from ..errors import CosbuildError

log = logging.getLogger("cosbuild")


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


# a version is part of file names and of image tags (128 characters at most); the bound
# also keeps its numbers convertible (Python converts no more than 4300 digits)
VERSION_MAX = 128


def _sanitize(text: str) -> str:
    """luet's Sanitize, applied before every comparison."""
    return text.replace("_", "-").strip()


# --------------------------------------------------------------------------- ordering

# go-deb-version, which luet sorts with, wants the upstream part to start with a digit
_DEBIAN_START = re.compile(r"(?:[0-9]+:)?[0-9]")


@functools.lru_cache(maxsize=None)
def _debian(version: str) -> NativeVersion | None:
    """`version` as Debian reads it (after luet's Sanitize), or None."""
    text = _sanitize(version)
    if len(text) > VERSION_MAX or not _DEBIAN_START.match(text):
        return None
    try:   # go-deb-version takes a last `-` with nothing after it for an empty revision
        return NativeVersion(text.removesuffix("-"))
    except ValueError:
        return None


@functools.lru_cache(maxsize=None)
def _order(version: str) -> tuple:
    """luet's Sort: Debian order; a version Debian cannot read sorts before every one it can
    (its parse error leaves an empty version). luet 0.20 then loses such versions (Best
    finds nothing): cosbuild orders them among themselves, `v1.2` as 1.2 (semver with a v)
    before the rest by their text, so that one of them is always the newest."""
    deb = _debian(version)
    if deb is not None:
        return (2, deb)
    deb = _debian(version[1:]) if version[:1] == "v" else None
    return (1, deb) if deb is not None else (0, version)


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as a is older than, equal to or newer than b."""
    ka, kb = _order(a), _order(b)
    return (ka > kb) - (ka < kb)


def sort_key(version: str) -> tuple:
    """Oldest first; versions equal by compare() (1.0, 1.00) by their text, so that the
    newest is always the same one."""
    return _order(version), version


# --------------------------------------------------------------------------- matching

@dataclass(frozen=True)
class _GoVersion:
    """A version as hashicorp/go-version 1.3.0 (luet 0.20's) reads it: numeric segments
    (at least three), a pre-release, and build metadata that no comparison looks at."""
    segments: tuple[int, ...]
    pre: str


_GO_PART = r"[0-9A-Za-z~-]+"
_GO_VERSION = re.compile(
    rf"v?(?P<segments>[0-9]+(?:\.[0-9]+)*)"
    rf"(?:-(?P<numeric_pre>[0-9][0-9A-Za-z~-]*(?:\.{_GO_PART})*)"
    rf"|-?(?P<pre>[A-Za-z~-][0-9A-Za-z~-]*(?:\.{_GO_PART})*))?"
    rf"(?:\+{_GO_PART}(?:\.{_GO_PART})*)?")
_INT64 = 2 ** 63 - 1


@functools.lru_cache(maxsize=None)
def _go(text: str) -> _GoVersion | None:
    """go-version's NewVersion, or None where it fails (or the text is too long to be a
    version cosbuild accepts)."""
    m = _GO_VERSION.fullmatch(text) if len(text) <= VERSION_MAX else None
    if not m:
        return None
    segments = [int(s) for s in m["segments"].split(".")]
    if max(segments) > _INT64:   # Go's ParseInt fails
        return None
    segments += [0] * (3 - len(segments))
    return _GoVersion(tuple(segments), m["pre"] or m["numeric_pre"] or "")


def _go_int(part: str) -> tuple[bool, int]:
    """Go's strconv.ParseInt(part, 10, 64): whether it is a number, and the value it gives
    (0 for no number, the nearest int64 for one out of range)."""
    if not re.fullmatch(r"[+-]?[0-9]+", part):
        return False, 0
    value = max(-_INT64 - 1, min(_INT64, int(part)))
    return value == int(part), value


def _go_compare_part(a: str, b: str) -> int:
    """go-version's comparePart (one dot-separated part of two pre-releases), quirks kept:
    a missing part is older than a number and newer than a word, a number older than a
    word."""
    if a == b:
        return 0
    (numeric_a, ia), (numeric_b, ib) = _go_int(a), _go_int(b)
    if a == "":
        return -1 if numeric_b else 1
    if b == "":
        return 1 if numeric_a else -1
    if numeric_a != numeric_b:
        return -1 if numeric_a else 1
    if not numeric_a and a > b:
        return 1
    return 1 if ia > ib else -1


def _go_compare(a: _GoVersion, b: _GoVersion) -> int:
    """go-version's Compare: segments, then pre-release (none is newer); metadata not at all,
    so 1.0+9 equals 1.0+10."""
    if a.segments == b.segments:
        if a.pre == b.pre:
            return 0
        if not a.pre or not b.pre:
            return 1 if not a.pre else -1
        pa, pb = a.pre.split("."), b.pre.split(".")
        for i in range(max(len(pa), len(pb))):
            c = _go_compare_part(pa[i] if i < len(pa) else "", pb[i] if i < len(pb) else "")
            if c:
                return c
        return 0
    # segments of different lengths compare as if padded with zeros (pre-releases unseen)
    for i in range(max(len(a.segments), len(b.segments))):
        x = a.segments[i] if i < len(a.segments) else 0
        y = b.segments[i] if i < len(b.segments) else 0
        if x != y:
            return 1 if x > y else -1
    return 0


_COMPARISONS = {">=": lambda c: c >= 0, "<=": lambda c: c <= 0, ">": lambda c: c > 0,
                "<": lambda c: c < 0, "=": lambda c: c == 0, "!": lambda c: c != 0}
# luet's readPackageSelector: the operators it knows, longest first
_LUET_OPERATORS = (">=", "<=", ">", "<", "!")
# go-version's constraint (NewConstraint), with the operators a checked selector can hold
_GO_CONSTRAINT = re.compile(r"[\t\n\f\r ]*(>=|<=|>|<|=)[\t\n\f\r ]*(\S*?)[\t\n\f\r ]*")


def _go_constraint(selector: str, version: _GoVersion | None) -> bool:
    """luet's fallback (semverCheck): go-version's constraint check, where a pre-release
    version satisfies >, >=, <, <= only for a pre-release of the same segments."""
    m = _GO_CONSTRAINT.fullmatch(selector)
    wanted = _go(m[2]) if m else None
    if version is None or wanted is None:
        return False
    op = m[1]
    if op != "=" and version.pre and (not wanted.pre or version.segments != wanted.segments):
        return False
    return _COMPARISONS[op](_go_compare(version, wanted))


def _luet_validate_selector(selector: str, version: str) -> bool:
    """luet 0.20's ValidateSelector: after Sanitize, a selector with one of its operators and
    a version go-version reads on both sides compares them (no pre-release rule); anything
    else (=V, whitespace after the operator, a version go-version cannot read) falls back to
    a go-version constraint, which fails on what it cannot read."""
    selector, version = _sanitize(selector), _sanitize(version)
    have = _go(version)
    op = next((o for o in _LUET_OPERATORS if selector.startswith(o)), None)
    if op is not None:
        wanted = _go(selector[len(op):])
        if wanted is not None and have is not None:
            return _COMPARISONS[op](_go_compare(have, wanted))
    return _go_constraint(selector, have)


# --------------------------------------------------------------------------- checking

# luet 0.20 validates no version, but cosbuild names files and folders with it (its build
# folder's name-category-version, the runtime tree's category/name/version) and writes it in
# selectors (whose operators are < > = !; luet takes a package whose version holds < > or =
# for a selector, IsSelector)
_VERSION = re.compile(r"[A-Za-z0-9][^\s/<>=!]*")
# luet keeps a package under category/name/version (its tree, its database) and cosbuild
# names its files name-category-version: a name or category is one plain path component
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
NAME_RULE = "letters, digits and . _ + -, starting with a letter or digit (no '/' or '..')"
VERSION_RULE = (f"printable text of at most {VERSION_MAX} characters starting with a letter "
                "or digit, without whitespace, '/', '..' or the selector characters < > = ! "
                "(e.g. 1.0.2+3 or v1.21.14+k3s1)")


def valid_version(version: str) -> bool:
    """Whether `version` can name a file and a folder, and be written in a selector."""
    return (bool(_VERSION.fullmatch(version)) and ".." not in version
            and version.isprintable() and len(version) <= VERSION_MAX)


def _unread(version: str) -> list[str]:
    """What luet 0.20 cannot do with `version`."""
    out = []
    if _debian(version) is None:
        out.append("not a Debian version: luet 0.20 orders it before every one that is")
    if _go(_sanitize(version)) is None:
        out.append("not one hashicorp/go-version reads: only >=0 or the bare version selects it")
    return out


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
    """`text` as a package version, or a clear error; a warning when luet 0.20 cannot order
    or select it as it would a plain version (luet builds it all the same)."""
    if not valid_version(text):
        _fail(f"invalid version {text!r}" if text else "empty version", VERSION_RULE, where)
    unread = _unread(text)
    if unread:
        message = f"version {text!r} is {'; and '.join(unread)}"
        log.warning("%s", where.error(message) if where is not None else CosbuildError(message))
    return text


def _valid(selector: str) -> bool:
    m = _SELECTOR.match(selector)
    return bool(m) and valid_version(m.group(2))


def check_selector(selector: str, where=None) -> None:
    if not _valid(selector):
        _fail(f"invalid version selector {selector!r}",
              "use >=V, >V, <=V, <V, =V (or bare V) or !V", where)


def matches(selector: str, version: str) -> bool:
    """Whether `version` satisfies `selector`, as luet 0.20 decides. A bare version is no
    selector to luet (IsSelector): it looks that version up by its text. `>=0` is any
    version (SPEC; luet's go-version reads not all). `!V`, also no selector to IsSelector
    (luet finds no version named `!V`), is what ValidateSelector makes of it: not V."""
    check_selector(selector)
    op, wanted = _SELECTOR.match(selector).groups()
    if op is None:
        return version == wanted
    if op == ">=" and wanted == "0":
        return True
    return _luet_validate_selector(selector, version)


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
