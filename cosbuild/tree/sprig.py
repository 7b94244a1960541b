"""The functions of Helm templates: Go's builtins, sprig's and Helm's own, as pure functions.

Each is declared once in `TABLE` with its Go parameter types (so a value of the wrong type
fails as it does in Go) and a one-line description (`cosbuild helpers` prints them).
The set is luet 0.20's: sprig 3.1.0 (not 3.2's `dig`, `all`, `any`, `addf`...). Left out on
purpose: what reads the host or the clock or is random (`env`, `expandenv`,
`now`, `date*`, `uuidv4`, `rand*`, `getHostByName`, key and certificate generators,
`lookup`): a build must not depend on them.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import math
import re
import signal
import threading
import urllib.parse
import zlib

import yaml

from .gotemplate import (MAX_OUTPUT, MISSING, Func, FuncError, IMap, Int64, go_kind, go_str,
                         go_type, truth, value_depth, value_size)


def _int64(v) -> Int64:
    """Go's int64 arithmetic wraps around (and a product of many numbers stays small)."""
    return Int64((v + (1 << 63)) % (1 << 64) - (1 << 63))


# --------------------------------------------------------------------------- Go's fmt

def quote_go(s: str) -> str:
    """strconv.Quote."""
    out = ['"']
    for c in s:
        o = ord(c)
        if c in '"\\':
            out.append("\\" + c)
        elif c in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(c)])
        elif c.isprintable() and (o >= 0x20 and o != 0x7f):
            out.append(c)
        elif o < 0x80:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    return "".join(out + ['"'])


_SPEC = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?(.)?", re.S)


def _bad(verb: str, v) -> str:
    return f"%!{verb}(<nil>)" if v is None else f"%!{verb}({go_type(v)}={go_str(v)})"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fmt_one(verb: str, flags: str, prec: int | None, v) -> str:
    if isinstance(v, (list, tuple)) and verb not in "vT":   # fmt formats elements one by one
        return "[" + " ".join(_fmt_one(verb, flags, prec, x) for x in v) + "]"
    if verb == "v":
        if isinstance(v, float) and prec is not None:
            return _fmt_one("g", flags, prec, v)
        return ("+" if "+" in flags and _is_int(v) and v >= 0 else "") + go_str(v) \
            if v is not None else "<nil>"
    if verb == "T":
        return "<nil>" if v is None else go_type(v)
    if verb == "s":
        if isinstance(v, str):
            return v[:prec] if prec is not None else v
        if isinstance(v, dict):
            return "map[" + " ".join(f"{_fmt_one('s', flags, prec, k)}:{_fmt_one('s', flags, prec, x)}"
                                     for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))) + "]"
        return _bad(verb, v)
    if verb == "q":
        if isinstance(v, str):
            return quote_go(v)
        if _is_int(v):
            return "'" + quote_go(chr(v))[1:-1].replace("'", "\\'").replace('\\"', '"') + "'"
        return _bad(verb, v)
    if verb == "t":
        return ("true" if v else "false") if isinstance(v, bool) else _bad(verb, v)
    if verb in "dboxXc":
        if _is_int(v):
            if verb == "c":
                return chr(v)
            base = {"d": "d", "b": "b", "o": "o", "x": "x", "X": "X"}[verb]
            text = format(v, base)
            if "#" in flags and verb in "xXo":
                text = {"x": "0x", "X": "0X", "o": "0"}[verb] + text.lstrip("-")
                text = ("-" if v < 0 else "") + text
            if "+" in flags and v >= 0:
                text = "+" + text
            elif " " in flags and v >= 0:
                text = " " + text
            return text
        if verb in "xX" and isinstance(v, str):
            text = v.encode().hex()
            return text.upper() if verb == "X" else text
        return _bad(verb, v)
    if verb in "eEfFgG":
        if isinstance(v, float):
            if verb in "gG" and prec is None:
                text = go_str(v)
                return text.upper() if verb == "G" else text
            p = 6 if prec is None else prec
            return format(v, f"{'+' if '+' in flags else ''}.{p}{verb}")
        return _bad(verb, v)
    return f"%!{verb}({go_type(v) if v is not None else '<nil>'}={go_str(v)})" \
        if v is not None else f"%!{verb}(<nil>)"


def sprintf(fmt: str, *args) -> str:
    out, i, n = [], 0, 0
    while i < len(fmt):
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        m = _SPEC.match(fmt, j)
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        i = m.end()
        if _too_large(width) or _too_large(prec):   # Go's parsenum gives up on the rest
            verb = None
        if verb is None:
            out.append("%!(NOVERB)")
            break
        if verb == "%":
            out.append("%")
            continue
        if n >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        text = _fmt_one(verb, flags, int(prec or 0) if prec is not None else None, args[n])
        n += 1
        if width and len(text) < int(width):
            pad = int(width) - len(text)
            if "-" in flags:
                text += " " * pad
            elif "0" in flags and verb in "dboxXeEfFgG" and text[:1] in "+-":
                text = text[0] + "0" * pad + text[1:]
            elif "0" in flags and verb in "dboxXeEfFgG":
                text = "0" * pad + text
            else:
                text = " " * pad + text
        out.append(text)
    if n < len(args):
        extra = ", ".join("<nil>" if a is None else f"{go_type(a)}={go_str(a)}" for a in args[n:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _sprintf_bound(fmt: str, *args) -> int:
    """At most what sprintf makes: the text, every width and precision it reads (each is at
    most 1e6, see _too_large), and each argument printed (a %q or %x of a character is at most
    ten characters), with the rest of a float's digits."""
    widths = sum(int(m.group(2) or 0) + int(m.group(3) or 0) for m in _SPEC.finditer(fmt)
                 if not (_too_large(m.group(2)) or _too_large(m.group(3))))
    return len(fmt) + widths + 10 * value_size(args)[0] + 400 * len(args)


def _too_large(digits: str | None) -> bool:
    """fmt's parsenum: a width or precision stops being read once past 1e6."""
    num = 0
    for digit in digits or "":
        if num > 1_000_000:
            return True
        num = num * 10 + int(digit)
    return False


def sprint(*args) -> str:
    """fmt.Sprint: a space between operands when neither is a string."""
    out = []
    for k, a in enumerate(args):
        if k and not isinstance(a, str) and not isinstance(args[k - 1], str):
            out.append(" ")
        out.append(go_str(a) if a is not None else "<nil>")
    return "".join(out)


def sprintln(*args) -> str:
    return " ".join(go_str(a) if a is not None else "<nil>" for a in args) + "\n"


# --------------------------------------------------------------------------- Go's builtins

def _basic_kind(v) -> str:
    """text/template's comparison classes: every integer is one, lists and maps are none."""
    kind = go_kind(v)
    return {"int64": "int", "float64": "float", "slice": "other", "map": "other",
            "struct": "other"}.get(kind, kind)


def eq(a, *rest) -> bool:
    """Go's eq: basic kinds compare, nil equals only nil, lists and maps are uncomparable."""
    if isinstance(a, (list, tuple, dict)):
        raise FuncError(f"uncomparable type {go_type(a)}: {go_str(a)}")
    if not rest:
        raise FuncError("missing argument for comparison")
    ka = _basic_kind(a)
    for b in rest:
        kb = _basic_kind(b)
        if ka != kb:
            if ka != "invalid" and kb != "invalid":
                raise FuncError("incompatible types for comparison")
            continue
        if ka == "invalid":
            return True
        if isinstance(b, (list, tuple, dict)):
            raise FuncError(f"uncomparable type {go_type(b)}: {go_str(b)}")
        if a == b:
            return True
    return False


def ne(a, b) -> bool:
    return not eq(a, b)


def lt(a, b) -> bool:
    ka, kb = _basic_kind(a), _basic_kind(b)
    if ka in ("invalid", "other", "bool") or kb in ("invalid", "other", "bool"):
        raise FuncError("invalid type for comparison")
    if ka != kb:
        raise FuncError("incompatible types for comparison")
    return a < b


def le(a, b) -> bool:
    return lt(a, b) or eq(a, b)


def gt(a, b) -> bool:
    return not le(a, b)


def ge(a, b) -> bool:
    return not lt(a, b)


def and_(*thunks):
    value = None
    for t in thunks:
        value = t()
        if not truth(value):
            return value
    return value


def or_(*thunks):
    value = None
    for t in thunks:
        value = t()
        if truth(value):
            return value
    return value


def length(v) -> int:
    if isinstance(v, (str, list, tuple, dict)):
        return len(v.encode() if isinstance(v, str) else v)
    raise FuncError(f"len of type {go_type(v)}" if v is not None else "len of nil pointer")


def index(item, *keys):
    if item is None:
        raise FuncError("index of untyped nil")
    for key in keys:
        if isinstance(item, (list, tuple, str)):
            if not _is_int(key):
                raise FuncError(f"cannot index slice/array with type {go_type(key)}")
            if not 0 <= key < len(item):
                raise FuncError(f"index out of range: {key}")
            item = item[key] if not isinstance(item, str) else item.encode()[key]
        elif isinstance(item, dict):
            if key is not None and not isinstance(key, str):
                raise FuncError(f"value has type {go_type(key)}; should be string")
            item = item.get(key)
        elif item is None:
            raise FuncError("index of untyped nil")
        else:
            raise FuncError(f"can't index item of type {go_type(item)}")
    return item


def not_(v) -> bool:
    return not truth(v)


def urlquery(*args) -> str:
    return urllib.parse.quote_plus(sprint(*args))


def html(*args) -> str:
    s = sprint(*args)
    for a, b in (("&", "&amp;"), ("'", "&#39;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;"),
                 ("\0", "\uFFFD")):
        s = s.replace(a, b)
    return s


def js(*args) -> str:
    s = sprint(*args)
    out = []
    for c in s:
        if c in "\\'\"":
            out.append("\\" + c)
        elif c in "<>&=":
            out.append(f"\\u{ord(c):04X}")
        elif ord(c) < 0x20:
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return "".join(out)


# --------------------------------------------------------------------------- sprig: values

def strval(v) -> str:
    if isinstance(v, str):
        return v
    return go_str(v) if v is not None else "<nil>"


def empty(v) -> bool:
    if v is None or v is MISSING:
        return True
    if isinstance(v, (str, list, tuple, dict)):
        return len(v) == 0
    if isinstance(v, (bool, int, float)):
        return not v
    return False


def default(d, *given):
    return d if not given or empty(given[0]) else given[0]


def to_int64(v) -> int:
    """spf13/cast's ToInt64 as sprig uses it: strings parse (base prefixes too), else 0."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if math.isfinite(v) else 0
    if isinstance(v, str):
        s = re.sub(r"\.0*$", "", v) if "." in v else v
        try:
            return int(s, 0)
        except ValueError:
            return 0
    return 0


def to_float64(v) -> float:
    if isinstance(v, (bool, int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return 0.0
    return 0.0


def _div(a, b):
    b = to_int64(b)
    if b == 0:
        raise FuncError("runtime error: integer divide by zero")
    a = to_int64(a)
    q = abs(a) // abs(b)
    return _int64(q if (a >= 0) == (b > 0) else -q)


def _mod(a, b):
    b = to_int64(b)
    if b == 0:
        raise FuncError("runtime error: integer divide by zero")
    a = to_int64(a)
    r = abs(a) % abs(b)
    return _int64(r if a >= 0 else -r)


def _round(a, p, *opt) -> float:
    r = opt[0] if opt else 0.5
    val = to_float64(a)
    # Go's math.Pow(10, p) in float64 (an integer 10 ** p of a huge p would take ages)
    pow_ = math.inf if p > 308 else 10.0 ** p
    digit = pow_ * val
    frac, whole = math.modf(digit)
    if not math.isfinite(digit):
        return digit / pow_
    rounder = math.ceil(digit) if frac >= r else math.floor(digit)
    return rounder / pow_


def _seq(*params) -> str:
    if len(params) == 1:
        start, stop, step = 1, params[0], 1 if params[0] >= 1 else -1
    elif len(params) == 2:
        start, stop = params
        step = 1 if stop >= start else -1
    elif len(params) == 3:
        start, step, stop = params
        if (stop > start and step <= 0) or (stop < start and step >= 0):
            return ""
    else:
        return ""
    out = []
    i = start
    while (step > 0 and i <= stop) or (step < 0 and i >= stop):
        out.append(str(i))
        i += step
        if len(out) > 100_000:
            raise FuncError("seq: too many values")
    return " ".join(out)


def _until_step(start: int, stop: int, step: int) -> list[int]:
    if step == 0 or (step > 0 and start >= stop) or (step < 0 and start <= stop):
        return []
    if abs((stop - start) // step) > 100_000:
        raise FuncError("untilStep: too many values")
    return list(range(start, stop, step))


# --------------------------------------------------------------------------- sprig: strings

def _title(s: str) -> str:
    out, prev = [], " "
    for c in s:
        out.append(c.upper() if _is_sep(prev) else c)
        prev = c
    return "".join(out)


def _is_sep(c: str) -> bool:
    if c.isalnum() or c == "_":
        return False
    return True if ord(c) < 0x80 else c.isspace()


def _initials(s: str) -> str:
    return "".join(w[0] for w in s.split())


def _trunc(c: int, s: str) -> str:
    if c < 0 and len(s) + c > 0:
        return s[len(s) + c:]
    if c >= 0 and len(s) > c:
        return s[:c]
    return s


def _abbrev(width: int, s: str) -> str:
    if width < 4 or len(s) <= width:
        return s
    return s[:width - 3] + "..."


def _substr(start: int, end: int, s: str) -> str:
    if start < 0:
        return s[:end]
    if end < 0 or end > len(s):
        return s[start:]
    return s[start:end]


def _wrap(width: int, s: str) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(s, width, break_long_words=False, break_on_hyphens=False))


def _repeat(count: int, s: str) -> str:
    if count < 0:
        raise FuncError("strings: negative Repeat count")
    if count * len(s) > 1024 * 1024:
        raise FuncError("repeat: result larger than 1 MiB")
    return s * count


def _indent(spaces: int, v: str) -> str:
    if spaces * (v.count("\n") + 1) > MAX_OUTPUT:
        raise FuncError(f"indent: result larger than {MAX_OUTPUT // (1024 * 1024)} MiB")
    pad = " " * spaces
    return pad + v.replace("\n", "\n" + pad)


def _plural(one: str, many: str, count: int) -> str:
    return one if count == 1 else many


def _quote(*args) -> str:
    return " ".join(quote_go(strval(a)) for a in args if a is not None)


def _squote(*args) -> str:
    return " ".join(f"'{strval(a)}'" for a in args if a is not None)


def _cat(*args) -> str:
    return " ".join(strval(a) for a in args if a is not None)


def strslice(v) -> list[str]:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return [strval(x) for x in v if x is not None]
    return [strval(v)]


def _split(sep: str, orig: str) -> dict:
    return {f"_{i}": p for i, p in enumerate(_go_split(orig, sep))}


def _go_split(s: str, sep: str, n: int = -1) -> list[str]:
    if n == 0:
        return []
    if sep == "":
        parts = list(s)
        if n > 0 and len(parts) > n:
            parts = parts[:n - 1] + ["".join(parts[n - 1:])]
        return parts
    return s.split(sep, n - 1) if n > 0 else s.split(sep)


def _splitn(sep: str, n: int, orig: str) -> dict:
    return {f"_{i}": p for i, p in enumerate(_go_split(orig, sep, n))}


# Go's regexp syntax is RE2; Python's `re` reads the same patterns for what templates use,
# except `\z` (end of text).
@functools.lru_cache(maxsize=256)
def _re(pattern: str):
    try:
        return re.compile(pattern.replace(r"\z", r"\Z"))
    except re.error as exc:
        raise FuncError(f"error parsing regexp: {exc}") from None


REGEX_SECONDS = 5.0


def _timed(fn):
    """Python's re backtracks where Go's RE2 does not: `(a+)+$` on forty letters takes ages.
    A regex function therefore gets REGEX_SECONDS (re checks for signals while it matches).
    Off the main thread, or while someone else's timer runs, no alarm can be set: unlimited."""
    @functools.wraps(fn)
    def timed(*args):
        if threading.current_thread() is not threading.main_thread() or \
                signal.getitimer(signal.ITIMER_REAL)[0]:
            return fn(*args)

        def expired(signum, frame):
            raise FuncError(f"regular expression takes longer than {REGEX_SECONDS:g} s "
                            f"(Go's RE2 does not backtrack; simplify the pattern)")

        previous = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, REGEX_SECONDS)
        try:
            return fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return timed


def _expand(template: str, m: re.Match) -> str:
    """Go's Regexp.Expand: $1, ${1}, $name, ${name}, $$ (the longest name wins)."""
    out, i = [], 0
    while i < len(template):
        c = template[i]
        if c != "$" or i + 1 >= len(template):
            out.append(c)
            i += 1
            continue
        nxt = template[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            end = template.find("}", i + 2)
            name = template[i + 2:end] if end > 0 else ""
            if end < 0 or not re.fullmatch(r"\w+", name):
                out.append(c)
                i += 1
                continue
            i = end + 1
        else:
            mm = re.match(r"\w+", template[i + 1:])
            if not mm:
                out.append(c)
                i += 1
                continue
            name = mm.group()
            i += 1 + len(name)
        try:
            group = m.group(int(name)) if name.isdigit() else m.group(name)
        except IndexError:      # no such group: Go expands it to nothing
            group = ""
        out.append(group or "")
    return "".join(out)


def _regex_replace(regex: str, s: str, repl: str) -> str:
    return _re(regex).sub(lambda m: _expand(repl, m), s)


def _regex_find_all(regex: str, s: str, n: int) -> list[str]:
    found = [m.group() for m in _re(regex).finditer(s)]
    return found if n < 0 else found[:n]


def _regex_split(regex: str, s: str, n: int) -> list[str]:
    if n == 0:
        return []
    parts = _re(regex).split(s, maxsplit=0 if n < 0 else n - 1)
    return parts


# --------------------------------------------------------------------------- sprig: lists, dicts

def _as_list(v, what: str) -> list:
    if isinstance(v, (list, tuple)):
        return list(v)
    raise FuncError(f"Cannot {what} on type {go_kind(v)}")


def _first(v):
    if v is None:
        return None
    lst = _as_list(v, "find first")
    return lst[0] if lst else None


def _last(v):
    if v is None:
        return None
    lst = _as_list(v, "find last")
    return lst[-1] if lst else None


def _rest(v):
    lst = _as_list(v, "find rest")
    return lst[1:] if lst else None


def _initial(v):
    lst = _as_list(v, "find initial")
    return lst[:-1] if lst else None


def _push(lst, v):
    return _as_list(lst, "push") + [v]


def _prepend(lst, v):
    return [v] + _as_list(lst, "prepend")


def _concat(*lists):
    out = []
    for lst in lists:
        out += _as_list(lst, "concat type")
    return out


def _reverse(v):
    return list(reversed(_as_list(v, "find reverse")))


def _deep_key(v):
    """A hashable stand-in for a value, equal exactly when Go's reflect.DeepEqual says so (1,
    1.0 and true differ): uniq and without compare in linear time, not pairwise."""
    if isinstance(v, dict):
        return ("map", go_type(v), frozenset((k, _deep_key(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return ("slice", tuple(_deep_key(x) for x in v))
    return (go_type(v) if v is not None else "<nil>", v)


def _uniq(v):
    seen: set = set()
    out = []
    for x in _as_list(v, "find uniq"):
        key = _deep_key(x)
        if key not in seen:
            seen.add(key)
            out.append(x)
    return out


def _without(v, *omit):
    keys = {_deep_key(o) for o in omit}
    return [x for x in _as_list(v, "find without") if _deep_key(x) not in keys]


def _has(needle, haystack) -> bool:
    if haystack is None:
        return False
    return needle in _as_list(haystack, "find has")


def _compact(v):
    return [x for x in _as_list(v, "compact") if not empty(x)]


def _slice(v, *indices):
    lst = _as_list(v, "slice")
    lo = to_int64(indices[0]) if indices else 0
    hi = to_int64(indices[1]) if len(indices) > 1 else len(lst)
    return lst[lo:hi]


def _dict(*pairs) -> dict:
    out = {}
    for i in range(0, len(pairs), 2):
        out[strval(pairs[i])] = pairs[i + 1] if i + 1 < len(pairs) else ""
    return out


def _get(d: dict, key: str):
    return d.get(key, "") if d is not None else ""


def _set(d: dict, key: str, value) -> dict:
    d[key] = value
    return d


def _unset(d: dict, key: str) -> dict:
    d.pop(key, None)
    return d


def _keys(*dicts) -> list[str]:
    # Go's map order is random; sorted is one of the orders it can give, and stable
    return sorted(k for d in dicts if d for k in d)


def _values(d: dict) -> list:
    return [d[k] for k in sorted(d or {})]


def _pick(d: dict, *keys) -> dict:
    return {k: d[k] for k in keys if k in d}


def _omit(d: dict, *keys) -> dict:
    omitted = set(keys)   # not the tuple: many keys of many would be quadratic
    return {k: v for k, v in d.items() if k not in omitted}


def _pluck(name: str, *dicts) -> list:
    return [d[name] for d in dicts if name in d]


def _merge_into(dst: dict, src: dict, overwrite: bool) -> None:
    for k, v in src.items():
        if isinstance(dst.get(k), dict) and isinstance(v, dict):
            _merge_into(dst[k], v, overwrite)
        elif k not in dst or empty(dst[k]) or (overwrite and not empty(v)):
            dst[k] = copy.deepcopy(v)


def _merge(dst: dict, *srcs) -> dict:
    for src in srcs:
        _merge_into(dst, src, overwrite=False)
    return dst


def _merge_overwrite(dst: dict, *srcs) -> dict:
    for src in srcs:
        _merge_into(dst, src, overwrite=True)
    return dst


def _type_of(v) -> str:
    return "<nil>" if v is None else go_type(v)


# --------------------------------------------------------------------------- sprig: encodings, paths

def _b64dec(s: str) -> str:
    try:
        return base64.b64decode(s, validate=True).decode("utf-8", "replace")
    except ValueError as exc:
        return str(exc)


def _b32dec(s: str) -> str:
    try:
        return base64.b32decode(s).decode("utf-8", "replace")
    except ValueError as exc:
        return str(exc)


def _go_clean(p: str) -> str:
    if p == "":
        return "."
    rooted = p.startswith("/")
    parts: list[str] = []
    for part in p.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    out = ("/" if rooted else "") + "/".join(parts)
    return out or ("/" if rooted else ".")


def _go_base(p: str) -> str:
    if p == "":
        return "."
    p = p.rstrip("/")
    return (p.rsplit("/", 1)[-1]) if p else "/"


def _go_dir(p: str) -> str:
    return _go_clean(p[:p.rfind("/") + 1])


def _go_ext(p: str) -> str:
    base = p.rsplit("/", 1)[-1]
    i = base.rfind(".")
    return base[i:] if i >= 0 else ""


# --------------------------------------------------------------------------- sprig: semver

_SEMVER = re.compile(r"^v?([0-9]+)(\.[0-9]+)?(\.[0-9]+)?(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
                     r"(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?$")


def _parse_semver(v: str):
    m = _SEMVER.match(v.strip())
    if not m:
        raise FuncError("Invalid Semantic Version")
    nums = tuple(int((g or ".0")[1:]) if i else int(g) for i, g in enumerate(m.group(1, 2, 3)))
    return nums, m.group(5) or ""


def _pre_key(pre: str):
    if not pre:
        return (1,)
    return (0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")))


def _cmp(a, b) -> int:
    ka, kb = (a[0], _pre_key(a[1])), (b[0], _pre_key(b[1]))
    return (ka > kb) - (ka < kb)


def _semver(v: str) -> dict:
    (major, minor, patch), pre = _parse_semver(v)
    return {"Major": major, "Minor": minor, "Patch": patch, "Prerelease": pre}


def _semver_compare(constraint: str, version: str) -> bool:
    """Masterminds/semver v3 constraints: `||` alternatives, `,`/space conjunctions,
    = != > < >= <= ~ ^, x/X/* wildcards, `a - b` ranges."""
    v = _parse_semver(version)
    for alternative in constraint.split("||"):
        alternative = re.sub(r"\s*-\s+", " - ", alternative.strip())
        alternative = re.sub(r"([<>=!~^]+)\s+", r"\1", alternative)
        terms = [t for t in re.split(r"[,\s]+", alternative) if t]
        ok, i = True, 0
        while i < len(terms):
            if i + 2 < len(terms) and terms[i + 1] == "-":
                ok &= _check(">=" + terms[i], v) and _check("<=" + terms[i + 2], v)
                i += 3
                continue
            ok &= _check(terms[i], v)
            i += 1
        if ok and terms:
            return True
    return False


def _check(term: str, v) -> bool:
    m = re.match(r"^(=|!=|>=|<=|>|<|~>|~|\^|=>|=<)?\s*(.*)$", term)
    op, ver = m.group(1) or "=", m.group(2)
    op = {"=>": ">=", "=<": "<=", "~>": "~"}.get(op, op)
    parts = re.split(r"[.+-]", ver.lstrip("v"), maxsplit=3)
    wild = [p in ("x", "X", "*") for p in parts[:3]]
    given = len([p for p in parts[:3]])
    if any(wild):
        ver = ".".join("0" if w else p for p, w in zip(parts[:3], wild))
    c = _parse_semver(ver)
    if v[1] and not c[1] and op not in ("!=",):
        return False   # a pre-release only matches constraints that name pre-releases
    (major, minor, patch) = c[0]
    cmp = _cmp(v, c)
    first_wild = wild.index(True) if any(wild) else given
    if op == "=":
        if first_wild < 3:
            return v[0][:first_wild] == c[0][:first_wild]
        return cmp == 0
    if op == "!=":
        if first_wild < 3:
            return v[0][:first_wild] != c[0][:first_wild]
        return cmp != 0
    if op == ">":
        if first_wild < 3:
            bumped = list(c[0][:first_wild]) + [0] * (3 - first_wild)
            if first_wild:
                bumped[first_wild - 1] += 1
            return v[0] >= tuple(bumped)
        return cmp > 0
    if op == ">=":
        return cmp >= 0
    if op == "<":
        return cmp < 0
    if op == "<=":
        if first_wild < 3:
            bumped = list(c[0][:first_wild]) + [0] * (3 - first_wild)
            if first_wild:
                bumped[first_wild - 1] += 1
            return v[0] < tuple(bumped)
        return cmp <= 0
    if op == "~":
        upper = (major, minor + 1, 0) if given > 1 and first_wild > 1 else (major + 1, 0, 0)
        return cmp >= 0 and v[0] < upper
    if op == "^":
        if major > 0 or first_wild <= 1:
            upper = (major + 1, 0, 0)
        elif minor > 0 or first_wild <= 2:
            upper = (0, minor + 1, 0)
        else:
            upper = (0, 0, patch + 1)
        return cmp >= 0 and v[0] < upper
    return False


# --------------------------------------------------------------------------- Helm's own

def to_yaml(v) -> str:
    """Helm's toYaml: sigs.k8s.io/yaml (JSON, then go-yaml v2: keys sorted, strings that would
    read as another type double-quoted, multi-line ones literal), without the final newline;
    "" for what JSON cannot encode."""
    try:
        text = yaml.dump(_plain_data(v), Dumper=_go_dumper(), default_flow_style=False,
                         sort_keys=True, allow_unicode=True, width=1 << 30)
    except (Unencodable, yaml.YAMLError):
        return ""
    return text.removesuffix("\n...\n").removesuffix("\n")


# go-yaml v2 (YAML 1.1) also reads these as booleans; PyYAML does not know y and n
_GO_BOOL = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|"
                      r"on|On|ON|off|Off|OFF)$")


@functools.cache
def _go_dumper():
    class Dumper(yaml.SafeDumper):
        def choose_scalar_style(self):
            style = super().choose_scalar_style()
            return '"' if style == "'" else style

    def represent_str(dumper, value: str):
        style = None
        if "\n" in value:
            style = "|"
        elif _GO_BOOL.match(value):
            style = '"'
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, represent_str)
    return Dumper


@functools.cache
def _go_loader():
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _GO_BOOL, list("yYnNtTfFoO"))
    Loader.add_constructor("tag:yaml.org,2002:bool",
                           lambda loader, node: loader.construct_scalar(node) in
                           ("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"))
    return Loader


class Unencodable(Exception):
    """encoding/json cannot write a map[interface{}]interface{}."""


def _plain_data(v):
    """A value as Helm's JSON-based encoders see it: string keys, and a float that is a whole
    number written as an integer (Go's encoding/json prints 1.0 as 1)."""
    if isinstance(v, IMap):
        raise Unencodable()
    if isinstance(v, dict):
        return {go_str(k): _plain_data(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain_data(x) for x in v]
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return int(v)
    if isinstance(v, bool) or v is None or isinstance(v, (str, float)):
        return v
    if isinstance(v, int):
        return int(v)
    return go_str(v)


def through_json(v):
    """A value as it comes back through JSON (Helm's fromYaml/fromJson, luet's collection
    stanzas): every number a float64, every key a string."""
    if isinstance(v, dict):
        return {go_str(k): through_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [through_json(x) for x in v]
    if isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if v is None or isinstance(v, (bool, str, float)):
        return v
    return str(v)


def _parse_yaml(s: str):
    """The YAML document, refused when unfolding its aliases (as JSON does) would make more
    than MAX_OUTPUT: checked on the shared parse, before anything is unfolded."""
    data = yaml.load(s, Loader=_go_loader())
    if value_size(data)[0] > MAX_OUTPUT:
        raise FuncError(f"YAML larger than {MAX_OUTPUT // (1024 * 1024)} MiB once its aliases "
                        f"are unfolded")
    return data


def _from_yaml(s: str) -> dict:
    try:
        data = _parse_yaml(s)
    except yaml.YAMLError as exc:
        return {"Error": str(exc)}
    if data is None:
        return {}
    if not isinstance(data, dict):
        return {"Error": f"error unmarshaling JSON: cannot unmarshal {type(data).__name__} "
                         f"into map[string]interface {{}}"}
    return through_json(data)


def _from_yaml_array(s: str) -> list:
    try:
        data = _parse_yaml(s)
    except yaml.YAMLError as exc:
        return [str(exc)]
    return through_json(data) if isinstance(data, list) else [] if data is None else \
        ["error unmarshaling JSON: not an array"]


def to_json(v, escape_html: bool = True, indent: int | None = None) -> str:
    try:
        text = json.dumps(_plain_data(v), sort_keys=True, ensure_ascii=False, allow_nan=False,
                          indent=indent, separators=(",", ": ") if indent else (",", ":"))
    except (Unencodable, ValueError):
        return ""
    if escape_html:
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _from_json(s: str) -> dict:
    try:
        data = json.loads(s, parse_int=float)
    except ValueError as exc:
        return {"Error": str(exc)}
    return data if isinstance(data, dict) else {"Error": "json: cannot unmarshal into map"}


def _from_json_array(s: str) -> list:
    try:
        data = json.loads(s, parse_int=float)
    except ValueError as exc:
        return [str(exc)]
    return data if isinstance(data, list) else ["json: cannot unmarshal into slice"]


def _required(warn: str, val):
    if val is None or val == "":
        raise FuncError(warn)
    return val


def _fail(msg: str):
    raise FuncError(msg)


# --------------------------------------------------------------------------- the table

def _f(fn, *params, lazy=False, doc="", bound=None):
    return (Func(fn, params, lazy, bound=bound), doc)


def _times(factor: int):
    """The bound of a function that writes each character of its arguments as at most
    `factor` characters (escapes, encodings)."""
    return lambda *args: factor * value_size(args)[0]


def yaml_bound(value) -> int:
    """Block YAML: an escape is at most ten characters (\\U0001f600), and each item is on a
    line indented two spaces per level it is in (a multi-line string one more)."""
    size = value_size(value)[0]
    return 10 * size + 2 * size * (value_depth(value) + 1)


def _replace_bound(old: str, new: str, s: str) -> int:
    return len(s) + len(new) * (s.count(old) if old else len(s) + 1)


def _regex_replace_bound(regex: str, s: str, repl: str) -> int:
    """At most one match per character and one more; each writes `repl`, and each `$` in it
    a group (the matches do not overlap, so a group's text adds up to at most `s`)."""
    return len(s) + (len(s) + 1) * len(repl) + repl.count("$") * len(s)


def _join_bound(sep: str, v) -> int:
    # an element printed is at most twice its size (a map's `map[k:v ...]`)
    return 2 * value_size(v)[0] + len(sep) * (len(v) if isinstance(v, (list, tuple)) else 1)


TABLE: dict[str, tuple[Func, str]] = {
    # Go text/template builtins
    "and": _f(and_, lazy=True, doc="the first empty argument, or the last"),
    "or": _f(or_, lazy=True, doc="the first non-empty argument, or the last"),
    "not": _f(not_, "any", doc="boolean negation of a value's truth"),
    "len": _f(length, "any", doc="length of a string, list or map"),
    "index": _f(index, "any", "...any", doc='index .Values.labels "package.checksum": map key or list index'),
    "print": _f(sprint, "...any", doc="fmt.Sprint"),
    "printf": _f(sprintf, "string", "...any", doc='printf "%s-%d" a 1: fmt.Sprintf',
                bound=_sprintf_bound),
    "println": _f(sprintln, "...any", doc="fmt.Sprintln"),
    "eq": _f(eq, "any", "...any", doc="equal to any of the following arguments"),
    "ne": _f(ne, "any", "any", doc="not equal"),
    "lt": _f(lt, "any", "any", doc="less than"),
    "le": _f(le, "any", "any", doc="less or equal"),
    "gt": _f(gt, "any", "any", doc="greater than"),
    "ge": _f(ge, "any", "any", doc="greater or equal"),
    "html": _f(html, "...any", doc="HTML-escaped text", bound=_times(6)),
    "js": _f(js, "...any", doc="JavaScript-escaped text", bound=_times(6)),
    "urlquery": _f(urlquery, "...any", doc="URL query-escaped text", bound=_times(12)),
    # Helm
    "toYaml": _f(to_yaml, "any", doc="value as block YAML (combine with nindent)", bound=yaml_bound),
    "fromYaml": _f(_from_yaml, "string", doc="parse a YAML mapping"),
    "fromYamlArray": _f(_from_yaml_array, "string", doc="parse a YAML list"),
    "toJson": _f(to_json, "any", doc="value as JSON", bound=_times(6)),
    "fromJson": _f(_from_json, "string", doc="parse a JSON object"),
    "fromJsonArray": _f(_from_json_array, "string", doc="parse a JSON array"),
    "required": _f(_required, "string", "any", doc='required "msg" .Values.x: fail when missing or empty'),
    # sprig: defaults and logic
    "default": _f(default, "any", "...any", doc="default x .Values.y: x when the value is empty"),
    "empty": _f(empty, "any", doc="true for nil, 0, false, and empty strings, lists, maps"),
    "coalesce": _f(lambda *v: next((x for x in v if not empty(x)), None), "...any", doc="the first non-empty argument"),
    "ternary": _f(lambda a, b, c: a if c else b, "any", "any", "bool", doc="ternary a b cond"),
    "fail": _f(_fail, "string", doc="stop rendering with a message"),
    "deepEqual": _f(lambda a, b: a == b, "any", "any", doc="structural equality"),
    "kindOf": _f(go_kind, "any", doc="the Go kind: string, int, map, slice..."),
    "kindIs": _f(lambda k, v: go_kind(v) == k, "string", "any", doc="kindIs \"map\" x"),
    "typeOf": _f(_type_of, "any", doc="the Go type"),
    "typeIs": _f(lambda t, v: _type_of(v) == t, "string", "any", doc="typeIs \"string\" x"),
    "typeIsLike": _f(lambda t, v: _type_of(v) in (t, t.lstrip("*")), "string", "any", doc="typeIs, pointers too"),
    # sprig: strings
    "toString": _f(strval, "any", doc="any value as a string"),
    "toStrings": _f(strslice, "any", doc="a list as strings"),
    "upper": _f(str.upper, "string", doc="upper case"),
    "lower": _f(str.lower, "string", doc="lower case"),
    "title": _f(_title, "string", doc="Title Case"),
    "untitle": _f(lambda s: " ".join(w[:1].lower() + w[1:] for w in s.split(" ")), "string", doc="first letters lower case"),
    "trim": _f(lambda s: s.strip(" \t\n\r\v\f\x85\xa0"), "string", doc="strip surrounding white space"),
    "trimAll": _f(lambda cut, s: s.strip(cut), "string", "string", doc='trimAll "$" s: strip those characters'),
    "trimPrefix": _f(lambda p, s: s.removeprefix(p), "string", "string", doc="trimPrefix p s"),
    "trimSuffix": _f(lambda p, s: s.removesuffix(p), "string", "string", doc="trimSuffix p s"),
    "nospace": _f(lambda s: "".join(s.split()), "string", doc="remove all white space"),
    "repeat": _f(_repeat, "int", "string", doc="repeat n s"),
    "substr": _f(_substr, "int", "int", "string", doc="substr start end s"),
    "trunc": _f(_trunc, "int", "string", doc="trunc n s"),
    "abbrev": _f(_abbrev, "int", "string", doc="abbrev width s (with ...)"),
    "initials": _f(_initials, "string", doc="first letters of each word"),
    "wrap": _f(_wrap, "int", "string", doc="wrap width s"),
    "contains": _f(lambda sub, s: sub in s, "string", "string", doc="contains sub s"),
    "hasPrefix": _f(lambda p, s: s.startswith(p), "string", "string", doc="hasPrefix p s"),
    "hasSuffix": _f(lambda p, s: s.endswith(p), "string", "string", doc="hasSuffix p s"),
    "quote": _f(_quote, "...any", doc='a double-quoted string ("x")', bound=_times(10)),
    "squote": _f(_squote, "...any", doc="a single-quoted string ('x')"),
    "cat": _f(_cat, "...any", doc="join arguments with spaces"),
    "indent": _f(_indent, "int", "string", doc="indent n s: indent every line"),
    "nindent": _f(lambda n, s: "\n" + _indent(n, s), "int", "string", doc="a newline, then indent n s"),
    "replace": _f(lambda old, new, s: s.replace(old, new), "string", "string", "string", doc="replace old new s",
                 bound=_replace_bound),
    "plural": _f(_plural, "string", "string", "int", doc="plural one many n"),
    "split": _f(_split, "string", "string", doc='split sep s: a map _0, _1, ...'),
    "splitList": _f(lambda sep, s: _go_split(s, sep), "string", "string", doc="splitList sep s"),
    "splitn": _f(_splitn, "string", "int", "string", doc="splitn sep n s"),
    "join": _f(lambda sep, v: sep.join(strslice(v)), "string", "any", doc="join sep list", bound=_join_bound),
    "sortAlpha": _f(lambda v: sorted(strslice(v)), "any", doc="strings of a list, sorted"),
    "regexMatch": _f(_timed(lambda r, s: bool(_re(r).search(s))), "string", "string", doc="regexMatch re s"),
    "regexFind": _f(_timed(lambda r, s: (m.group() if (m := _re(r).search(s)) else "")), "string", "string", doc="first match"),
    "regexFindAll": _f(_timed(_regex_find_all), "string", "string", "int", doc="regexFindAll re s n"),
    "regexReplaceAll": _f(_timed(_regex_replace), "string", "string", "string", doc="regexReplaceAll re s repl ($1)",
                         bound=_regex_replace_bound),
    "regexReplaceAllLiteral": _f(_timed(lambda r, s, repl: _re(r).sub(lambda m: repl, s)), "string", "string", "string", doc="without $ expansion",
                                bound=_regex_replace_bound),
    "regexSplit": _f(_timed(_regex_split), "string", "string", "int", doc="regexSplit re s n"),
    # sprig: numbers
    "int": _f(lambda v: to_int64(v), "any", doc="to an integer"),
    "int64": _f(lambda v: _int64(to_int64(v)), "any", doc="to a 64-bit integer"),
    "float64": _f(to_float64, "any", doc="to a float"),
    "atoi": _f(lambda s: (int(s) if re.fullmatch(r"[+-]?\d+", s) else 0), "string", doc="parse a decimal integer"),
    "add1": _f(lambda a: _int64(to_int64(a) + 1), "any", doc="a + 1"),
    "add": _f(lambda *v: _int64(sum(to_int64(x) for x in v)), "...any", doc="sum"),
    "sub": _f(lambda a, b: _int64(to_int64(a) - to_int64(b)), "any", "any", doc="a - b"),
    "mul": _f(lambda a, *v: functools.reduce(lambda p, x: _int64(p * to_int64(x)), v, _int64(to_int64(a))),
              "any", "...any", doc="product"),
    "div": _f(_div, "any", "any", doc="integer division"),
    "mod": _f(_mod, "any", "any", doc="remainder"),
    "max": _f(lambda a, *v: _int64(max([to_int64(a)] + [to_int64(x) for x in v])), "any", "...any", doc="largest"),
    "min": _f(lambda a, *v: _int64(min([to_int64(a)] + [to_int64(x) for x in v])), "any", "...any", doc="smallest"),
    "floor": _f(lambda a: float(math.floor(to_float64(a))), "any", doc="round down"),
    "ceil": _f(lambda a: float(math.ceil(to_float64(a))), "any", doc="round up"),
    "round": _f(_round, "any", "int", "...float64", doc="round x digits"),
    "until": _f(lambda n: _until_step(0, n, 1 if n >= 0 else -1), "int", doc="0..n-1"),
    "untilStep": _f(_until_step, "int", "int", "int", doc="start, stop, step"),
    "seq": _f(_seq, "...int", doc="like the seq command"),
    # sprig: lists
    "list": _f(lambda *v: list(v), "...any", doc="list a b c"),
    "first": _f(_first, "any", doc="first element"),
    "last": _f(_last, "any", doc="last element"),
    "rest": _f(_rest, "any", doc="all but the first"),
    "initial": _f(_initial, "any", doc="all but the last"),
    "append": _f(_push, "any", "any", doc="append list x"),
    "push": _f(_push, "any", "any", doc="append list x"),
    "prepend": _f(_prepend, "any", "any", doc="prepend list x"),
    "concat": _f(_concat, "...any", doc="concatenate lists"),
    "reverse": _f(_reverse, "any", doc="reversed list"),
    "uniq": _f(_uniq, "any", doc="without repeated elements"),
    "without": _f(_without, "any", "...any", doc="without list x y"),
    "has": _f(_has, "any", "any", doc="has x list: membership"),
    "compact": _f(_compact, "any", doc="without empty elements"),
    "slice": _f(_slice, "any", "...any", doc="slice list start end"),
    # sprig: dicts
    "dict": _f(_dict, "...any", doc='dict "a" 1 "b" 2'),
    "get": _f(_get, "map", "string", doc='get map "key" ("" when missing)'),
    "set": _f(_set, "map", "string", "any", doc="set map key value"),
    "unset": _f(_unset, "map", "string", doc="unset map key"),
    "hasKey": _f(lambda d, k: k in (d or {}), "map", "string", doc="hasKey map key"),
    "keys": _f(_keys, "...map", doc="the keys (sorted)"),
    "values": _f(_values, "map", doc="the values (in key order)"),
    "pick": _f(_pick, "map", "...string", doc="only those keys"),
    "omit": _f(_omit, "map", "...string", doc="without those keys"),
    "pluck": _f(_pluck, "string", "...map", doc="one key from several maps"),
    "merge": _f(_merge, "map", "...map", doc="deep merge, the first wins"),
    "mergeOverwrite": _f(_merge_overwrite, "map", "...map", doc="deep merge, the last wins"),
    "deepCopy": _f(copy.deepcopy, "any", doc="a deep copy"),
    # sprig: encodings, checksums, paths, versions
    "b64enc": _f(lambda s: base64.b64encode(s.encode()).decode(), "string", doc="base64", bound=_times(6)),
    "b64dec": _f(_b64dec, "string", doc="from base64"),
    "b32enc": _f(lambda s: base64.b32encode(s.encode()).decode(), "string", doc="base32", bound=_times(7)),
    "b32dec": _f(_b32dec, "string", doc="from base32"),
    "sha1sum": _f(lambda s: hashlib.sha1(s.encode()).hexdigest(), "string", doc="SHA-1, hex"),
    "sha256sum": _f(lambda s: hashlib.sha256(s.encode()).hexdigest(), "string", doc="SHA-256, hex"),
    "adler32sum": _f(lambda s: str(zlib.adler32(s.encode())), "string", doc="Adler-32, decimal"),
    "base": _f(_go_base, "string", doc="last path element"),
    "dir": _f(_go_dir, "string", doc="all but the last path element"),
    "clean": _f(_go_clean, "string", doc="cleaned path"),
    "ext": _f(_go_ext, "string", doc="file extension"),
    "isAbs": _f(lambda p: p.startswith("/"), "string", doc="absolute path?"),
    "semver": _f(_semver, "string", doc="parse a semantic version"),
    "semverCompare": _f(_semver_compare, "string", "string", doc='semverCompare ">=1.2" v'),
    "hello": _f(lambda: "Hello!", doc="Hello!"),
    "lookup": _f(lambda *a: {}, "string", "string", "string", "string",
                 doc="Helm's cluster lookup: always empty (there is no cluster)"),
}


@functools.cache
def functions() -> dict[str, Func]:
    return {name: func for name, (func, _) in TABLE.items()}


def reference() -> str:
    """The helper list for `cosbuild helpers`."""
    rows = {**{k: d for k, (_, d) in TABLE.items()},
            "include": 'include "name" .: a define\'d template\'s output as a string',
            "tpl": 'tpl "{{ .x }}" .: render a string as a template'}
    return "\n".join(f"- `{k}`: {d}" for k, d in sorted(rows.items()))
