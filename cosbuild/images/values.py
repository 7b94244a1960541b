"""The value types of iso.yaml and disk.yaml beyond spec.py's: each is checked when the file
is read, so a value no tool can use is one error naming the file, line and key before any
step runs, and no path value reaches outside the folder it is relative to."""

from __future__ import annotations

from ..errors import CosbuildError
from ..tree import spec
from . import fsimage


def inside(what: str, *, optional: bool = False) -> spec.Type:
    """A path inside `what` (a root, the ISO root, the iso.yaml folder), as the relative
    path it names there: a leading '/' means that folder's top, '..' and NUL are refused.
    `optional`: an empty string is None, none (luet-makeiso's zero value)."""
    def parse(value, where: spec.Where) -> str | None:
        text = spec.STR.parse(value, where)
        if optional and text == "":
            return None
        parts = [p for p in text.split("/") if p not in ("", ".")]
        if not parts or ".." in parts or "\0" in text:
            raise where.error(f"{text[:80]!r} is not a path inside {what}",
                              hint="a path below it, without '..'")
        return "/".join(parts)
    return spec.Type(f"path inside {what}", parse)


def label(fs: str) -> spec.Type:
    """A label the file system `fs` carries as written (fsimage.check_label)."""
    def parse(value, where: spec.Where) -> str:
        try:
            return fsimage.check_label(spec.STR.parse(value, where), fs)
        except CosbuildError as exc:
            raise where.error(exc.message, hint=exc.hint) from None
    return spec.Type(f"{fs} label ({fsimage.LABEL_MAX[fs]} characters)", parse)


def size(largest: int, why: str) -> spec.Type:
    """A size in MiB from 1 to `largest`, what the file system of `why` holds."""
    def parse(value, where: spec.Where) -> int:
        mib = spec.MIB.parse(value, where)
        if mib > largest:
            raise where.error(f"{mib} MiB is too large", hint=f"at most {largest} MiB: {why}")
        return mib
    return spec.Type(f"size in MiB (1 to {largest})", parse)


def count(largest: int) -> spec.Type:
    """A whole number from 1 to `largest`."""
    def parse(value, where: spec.Where) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= largest:
            raise where.error(f"expected a whole number from 1 to {largest}, got {value!r}")
        return value
    return spec.Type(f"whole number (1 to {largest})", parse)


def choice(*names: str) -> spec.Type:
    def parse(value, where: spec.Where) -> str:
        text = spec.STR.parse(value, where)
        if text not in names:
            raise where.error(f"unknown value {text[:80]!r}", hint=f"one of: {', '.join(names)}")
        return text
    return spec.Type(f"one of {', '.join(names)}", parse)


def choices(*names: str) -> spec.Type:
    """A list of names of `choice`, each once, in the order given."""
    one = choice(*names)

    def parse(value, where: spec.Where) -> tuple[str, ...]:
        return tuple(dict.fromkeys(one.parse(v, where) for v in spec.STRS.parse(value, where)))
    return spec.Type(f"list of: {', '.join(names)}", parse)
