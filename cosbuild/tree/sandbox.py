"""The Jinja2 environment build.yaml and finalize.yaml render in.

Trees come from other people, so a template runs nothing on the host and reads nothing but
the tree's own templates (Jinja2's immutable sandbox: no `_`-attributes, no mutating methods,
and a loader that serves only the files it was given). It is also bounded the way the Helm
engine is (gotemplate's limits): at most MAX_STEPS steps, counting loop iterations, calls
and the work of each call (what goes in and what comes out, see value_size), and no value
or output larger than MAX_OUTPUT. An operation that can make much more than it is given
(`'x' * n`, a width in a format, `join`, `replace`, `center(n)`, `**`) has its result's size
bounded before it runs (BOUNDS); the rest grows at most twofold per step and is checked
after each step, so memory stays within a few times the bound.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from .gotemplate import CHARS_PER_STEP, MAX_OUTPUT, MAX_STEPS, value_depth, value_size
from .sprig import yaml_bound
from .sealed import cache_key, read_sealed, write_sealed

MAX_INT_BITS = 1 << 16   # an integer beyond this is no build setting (and slow to print)
_NUMBER = re.compile(r"\d+")


class Sandbox(ImmutableSandboxedEnvironment):
    """One per Renderer: `allowed` are the files templates may load (by their path text);
    `steps` counts the loop iterations and calls of the current render (see begin())."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    class code_generator_class(CodeGenerator):   # noqa: N801 (Jinja2's attribute name)
        def buffer(self, frame) -> None:
            """What a macro or block collects goes into a bounded buffer, not a bare list."""
            frame.buffer = self.temporary_identifier()
            self.writeline(f"{frame.buffer} = environment.bounded_buffer()")

    def __init__(self, allowed: set[str], filters: dict, globals_: dict,
                 cache_dir: Path | None = None):
        key = cache_key() if cache_dir is not None else None
        super().__init__(loader=jinja2.FunctionLoader(self._load),
                         undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                         autoescape=False,
                         bytecode_cache=SealedBytecodeCache(cache_dir, key) if key else None)
        self.allowed = allowed
        self.steps = 0
        del self.globals["lipsum"]   # lipsum(n) writes n paragraphs: nothing a spec needs
        self.filters = {name: self._bounded_filter(name, f)
                        for name, f in {**self.filters, "sum": _sum, **filters}.items()}
        self.globals.update(globals_)

    def begin(self) -> None:
        """A new render: its own budget of steps."""
        self.steps = 0

    # -- what templates may load
    def _load(self, name: str):
        if name not in self.allowed:
            raise SecurityError(f"template '{name}' is not one of the tree's own templates "
                                f"(include and import read only those)")
        from .load import read_text
        return read_text(Path(name)), name, lambda: True

    # -- bounds, applied to the compiled code (see _Bounds)
    def _parse(self, source, name, filename):
        return _Bounds().visit(super()._parse(source, name, filename))

    def step(self, count: int = 1) -> None:
        self.steps += count
        if self.steps > MAX_STEPS:
            raise SecurityError(f"template runs too long (more than {MAX_STEPS} steps)")

    def bounded_iter(self, iterable):
        for item in iterable:
            self.step()
            yield item

    def sized(self, value):
        """The value, when not larger than MAX_OUTPUT; reading it is work (see value_size)."""
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise SecurityError(f"integer larger than {MAX_INT_BITS} bits")
        size, work = value_size(value, work=MAX_STEPS - self.steps)
        if size > MAX_OUTPUT:
            raise SecurityError(_too_large())
        self.step(work)
        return value

    def bounded(self, name: str, args, kwargs) -> None:
        """Before `name` (a filter, or `str.method`) runs: its result's bound (BOUNDS) within
        MAX_OUTPUT, and making it counted as work."""
        bound = BOUNDS.get(name)
        if bound is None:
            return
        try:
            size = bound(*args, **kwargs)
        except TypeError:   # arguments the operation itself refuses: let it say so
            return
        if size > MAX_OUTPUT:
            raise SecurityError(f"{name}: result larger than {MAX_OUTPUT // (1024 * 1024)} MiB")
        self.step(size // CHARS_PER_STEP)

    @staticmethod
    def bounded_buffer() -> "_Buffer":
        return _Buffer()

    def concat(self, parts) -> str:
        """Joins the output of a template, macro or block: stops at MAX_OUTPUT, before the
        join (a loop can repeat one large string many times)."""
        out, size = [], 0
        for part in parts:
            size += len(part)
            if size > MAX_OUTPUT:
                raise SecurityError(_too_large())
            out.append(part)
        return "".join(out)

    def _bounded_filter(self, name: str, func):
        """The filter, with its arguments and result held to the bounds."""

        def bounded(*args, **kwargs):
            args = _readable(name, args)
            plain = [a for a in args if not isinstance(a, (jinja2.runtime.Context,
                                                           jinja2.nodes.EvalContext,
                                                           jinja2.Environment))]
            self.sized((plain, kwargs))
            self.bounded(name, plain, kwargs)
            return self.sized(func(*args, **kwargs))

        if hasattr(func, "jinja_pass_arg"):   # Jinja2 passes the context to filters marked so
            bounded.jinja_pass_arg = func.jinja_pass_arg
        return bounded

    # -- sandbox hooks
    def call(__self, __context, __obj, *args, **kwargs):   # noqa: N805 (the base's names)
        __self.step()
        __self.sized((args, kwargs))
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = f"str.{getattr(__obj, '__name__', '')}"
            args = _readable(name, args)
            __self.bounded(name, (owner, *args), kwargs)
        return __self.sized(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context, op: str, left, right):
        if op == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right * left.bit_length() > MAX_INT_BITS:
                raise SecurityError(f"integer larger than {MAX_INT_BITS} bits")
        self.bounded(op, (left, right), {})
        return self.sized(super().call_binop(context, op, left, right))

    def wrap_str_format(self, value):
        """str.format and format_map (Jinja2 sandboxes them where they are looked up), bounded
        with the arguments they are called with."""
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None

        def bounded(*args, **kwargs):
            self.bounded("str.format", (value.__self__, *args), kwargs)
            return wrapper(*args, **kwargs)
        return bounded


class SealedBytecodeCache(jinja2.FileSystemBytecodeCache):
    """Compiled templates, keyed by their source checksum (Jinja2's) and by this module (the
    bounds are compiled in), sealed: bytecode is code, and the build folder may come from
    elsewhere."""

    def __init__(self, directory: Path, key: bytes):
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(str(directory))
        self.key = key

    def get_cache_key(self, name: str, filename: str | None = None) -> str:
        return super().get_cache_key(f"{name}\0{_compiler_version()}", filename)

    def load_bytecode(self, bucket) -> None:
        data = read_sealed(Path(self._get_cache_filename(bucket)), self.key)
        if data is not None:
            bucket.bytecode_from_string(data)

    def dump_bytecode(self, bucket) -> None:
        write_sealed(Path(self._get_cache_filename(bucket)), bucket.bytecode_to_string(),
                     self.key)


@functools.cache
def _compiler_version() -> str:
    return hashlib.sha256(Path(__file__).read_bytes() + jinja2.__version__.encode()).hexdigest()


class _Buffer(list):
    """The output of a macro or block as it is collected: a loop in it can repeat one large
    string many times, so the size is checked on every addition."""

    size = 0

    def append(self, part) -> None:
        self._grow(len(part))
        super().append(part)

    def extend(self, parts) -> None:
        parts = tuple(parts)
        self._grow(sum(map(len, parts)))
        super().extend(parts)

    def _grow(self, size: int) -> None:
        self.size += size
        if self.size > MAX_OUTPUT:
            raise SecurityError(_too_large())


class _Bounds(NodeTransformer):
    """Every `for` counts its iterations (a recursive loop's `loop(...)` too) and every `~`
    its result."""

    def visit_For(self, node):
        node = self.generic_visit(node)
        node.iter = _environment_call("bounded_iter", node.iter)
        return node

    def visit_Call(self, node):
        node = self.generic_visit(node)
        if isinstance(node.node, nodes.Name) and node.node.name == "loop" and node.args:
            node.args[0] = _environment_call("bounded_iter", node.args[0])
        return node

    def visit_Concat(self, node):
        return _environment_call("sized", self.generic_visit(node))


def _environment_call(method: str, arg: nodes.Expr) -> nodes.Call:
    return nodes.Call(nodes.EnvironmentAttribute(method), [arg], [], None, None,
                      lineno=arg.lineno)


@jinja2.pass_environment
def _sum(environment, iterable, attribute=None, start=0):
    """Jinja2's sum, each addition a template `+`: sized and counted (a sum of lists copies
    the total so far at each one)."""
    if isinstance(start, str):   # as Python's sum, which Jinja2's is
        raise TypeError("sum() can't sum strings [use ''.join(seq) instead]")
    if attribute is not None:
        iterable = map(jinja2.filters.make_attrgetter(environment, attribute), iterable)
    total = start
    for item in iterable:
        total = environment.call_binop(None, "+", total, item)
    return total


# -- bounds: the most each operation can make, from its arguments (TypeError: not its kind)

def _readable(name: str, args: tuple) -> tuple:
    """The arguments of a bounded operation, an iterator (what map or select give) read into
    a list: its bound reads them, and so does the operation after it."""
    if name not in BOUNDS:
        return args
    return tuple(list(a) if isinstance(a, Iterator) else a for a in args)


def _size(value) -> int:
    return value_size(value)[0]


def _str(value) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _count(value) -> int:
    """A size argument (Jinja2's indent also takes a string: its length)."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, int):
        raise TypeError(value)
    return max(value, 0)


_FORMAT_FIELD = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d*)(?:\.(\*|\d*))?|"
                           r"\{(?:[^{}]|\{[^{}]*\})*\}")


def _format_bound(text, *args, **kwargs) -> int:
    """At most what a `%` or `{}` format makes: the text, and each field the largest argument
    (a field can name one argument many times) padded by the widths and precisions written in
    it, or by the largest integer argument where it takes one from them (`*`, `{:{}}`)."""
    values = [v for a in (*args, *kwargs.values())
              for v in (a.values() if isinstance(a, dict) else a if isinstance(a, tuple) else [a])]
    largest = max(map(_size, values), default=0)
    widest = max((v for v in values if isinstance(v, int)), default=0)
    total = len(_str(text))
    for field in _FORMAT_FIELD.finditer(text):
        spec = field.group()
        written = spec if spec[0] == "%" else spec.partition(":")[2]
        total += largest + 400 + sum(map(int, _NUMBER.findall(written)))
        if "*" in spec or "{" in spec[1:]:
            total += max(widest, 0)
    return total


def _text_size(value) -> int:
    """The most characters a value is as text: filters take any value as its text (a repr
    quotes and separates each item of a list or mapping)."""
    return len(value) if isinstance(value, str) else 4 * _size(value)


def _replace_bound(text, old, new, count=None) -> int:
    size = _text_size(text)
    if isinstance(text, str) and isinstance(old, str) and old:
        matches = text.count(old)
    else:   # an empty `old` matches between every two characters (any other, at most so)
        matches = size + 1
    if isinstance(count, int) and count >= 0:
        matches = min(matches, count)
    return size + matches * _text_size(new)


def _join_bound(value, separator="", attribute=None) -> int:
    items = list(value) if not isinstance(value, (str, dict)) else value
    return _text_size(items) + _text_size(separator) * len(items)


def _indent_bound(text, width=4, *args, **kwargs) -> int:
    size = _text_size(text)
    lines = text.count("\n") + 1 if isinstance(text, str) else size + 1
    return size + lines * _count(width)


def _width_bound(text, width=80, *args, **kwargs) -> int:
    return _text_size(text) + _count(width)


def _tabs_bound(text, tabsize=8) -> int:
    return len(_str(text)) + text.count("\t") * _count(tabsize)


def _wordwrap_bound(text, width=79, break_long_words=True, wrapstring=None, *args, **kwargs):
    return _text_size(text) + (_text_size(text) + 1) * _text_size(wrapstring or "\n")


def _fill_bound(value, count, fill_with=None) -> int:
    """batch and slice: lists of `count` at most, padded with `fill_with`."""
    return 2 * _size(value) + _count(count) * (1 + (0 if fill_with is None else _size(fill_with)))


def _tojson_bound(value, indent=None) -> int:
    """An escape is at most six characters; each item is indented once per level it is in."""
    return 6 * _size(value) + _count(indent or 0) * _size(value) * value_depth(value)


def _times_bound(left, right) -> int:
    count, seq = (left, right) if isinstance(left, int) else (right, left)
    if not isinstance(count, int) or isinstance(seq, (int, float)):
        raise TypeError(seq)   # a product of numbers: `**` and sized() bound it
    return max(count, 0) * _size(seq)


def _urlize_bound(text, *args, **kwargs) -> int:
    """Each link is written twice with the tag's text and attributes around it."""
    return _text_size(text) * (40 + _size((args, kwargs)))


# filters by name, str methods as `str.name`, binary operators by themselves
BOUNDS = {
    "*": _times_bound,
    "%": lambda text, values: _format_bound(text, values),
    "format": lambda value, *args, **kwargs: _format_bound(
        value if isinstance(value, str) else str(value), *args, **kwargs),   # as the filter does
    "str.format": _format_bound,
    "replace": _replace_bound,
    "str.replace": _replace_bound,
    "join": _join_bound,
    "str.join": lambda separator, items: _join_bound(items, separator),
    "indent": _indent_bound,
    "center": _width_bound,
    **{f"str.{name}": _width_bound for name in ("center", "ljust", "rjust", "zfill")},
    "str.expandtabs": _tabs_bound,
    "wordwrap": _wordwrap_bound,
    "batch": _fill_bound,
    "slice": _fill_bound,
    "tojson": _tojson_bound,
    "toyaml": yaml_bound,
    "urlize": _urlize_bound,
    **{name: lambda text, *a, **k: 6 * _size(text) for name in
       ("escape", "e", "forceescape", "xmlattr")},
    "urlencode": lambda value: 12 * _size(value),
}


def _too_large() -> str:
    return f"template output larger than {MAX_OUTPUT // (1024 * 1024)} MiB"

