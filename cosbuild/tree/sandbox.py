"""The Jinja2 environment build.yaml and finalize.yaml render in.

Trees come from other people, so a template runs nothing on the host and reads nothing but
the tree's own templates (Jinja2's immutable sandbox: no `_`-attributes, no mutating methods,
and a loader that serves only the files it was given). It is also bounded the way the Helm
engine is (gotemplate's limits): at most MAX_STEPS loop iterations and calls, and no value or
output larger than MAX_OUTPUT. Sizes that a single operation multiplies (`'x' * n`, a width
in a format, `center(n)`, `**`) are checked before it runs; the rest grows at most twofold
per step and is checked after each step, so memory stays within a few times the bound.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from .gotemplate import MAX_OUTPUT, MAX_STEPS, value_size
from .sealed import cache_key, read_sealed, write_sealed

MAX_INT_BITS = 1 << 16   # an integer beyond this is no build setting (and slow to print)
# filters and str methods whose integer arguments are sizes of what they make
SIZE_ARGUMENTS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "indent",
                            "wordwrap", "truncate", "batch", "slice", "format"})
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
                        for name, f in {**self.filters, **filters}.items()}
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
        """The value, when not larger than MAX_OUTPUT; looking at it costs steps."""
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise SecurityError(f"integer larger than {MAX_INT_BITS} bits")
        size, looked = value_size(value, work=MAX_STEPS - self.steps)
        if size > MAX_OUTPUT:
            raise SecurityError(_too_large())
        self.step(looked)
        return value

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
        counts = name in SIZE_ARGUMENTS

        def bounded(*args, **kwargs):
            plain = [a for a in args if not isinstance(a, (jinja2.runtime.Context,
                                                           jinja2.Environment))]
            if counts:
                _check_counts(plain[1:], kwargs)
            if name == "format" and plain and isinstance(plain[0], str):
                _check_format(plain[0])
            if name == "replace" and len(plain) >= 3 and isinstance(plain[0], str):
                _check_replace(*plain[:3])
            self.sized((plain, kwargs))
            return self.sized(func(*args, **kwargs))

        if hasattr(func, "jinja_pass_arg"):   # Jinja2 passes the context to filters marked so
            bounded.jinja_pass_arg = func.jinja_pass_arg
        return bounded

    # -- sandbox hooks
    def call(__self, __context, __obj, *args, **kwargs):   # noqa: N805 (the base's names)
        __self.step()
        if isinstance(getattr(__obj, "__self__", None), str) and \
                getattr(__obj, "__name__", "") in SIZE_ARGUMENTS:
            _check_counts(args, kwargs)
        __self.sized((args, kwargs))
        if getattr(__obj, "__name__", "") == "replace" and isinstance(getattr(__obj, "__self__", None), str):
            _check_replace(__obj.__self__, *args[:2])
        return __self.sized(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context, op: str, left, right):
        if op == "*":
            count, seq = (left, right) if isinstance(left, int) else (right, left)
            if isinstance(count, int) and not isinstance(seq, int):
                if max(count, 0) * value_size(seq)[0] > MAX_OUTPUT:
                    raise SecurityError(_too_large())
        elif op == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right * left.bit_length() > MAX_INT_BITS:
                raise SecurityError(f"integer larger than {MAX_INT_BITS} bits")
        elif op == "%" and isinstance(left, str):
            _check_format(left)
        return self.sized(super().call_binop(context, op, left, right))

    def wrap_str_format(self, value):
        if isinstance(getattr(value, "__self__", None), str):
            _check_format(value.__self__)
        return super().wrap_str_format(value)


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


def _check_counts(args, kwargs) -> None:
    for value in [*args, *kwargs.values()]:
        if isinstance(value, int) and value > MAX_OUTPUT:
            raise SecurityError(_too_large())


def _check_format(text: str) -> None:
    """A width or precision in a format makes that many characters."""
    if any(int(n) > MAX_OUTPUT for n in _NUMBER.findall(text) if len(n) >= 8):
        raise SecurityError(_too_large())


def _check_replace(text: str, old, new) -> None:
    if isinstance(old, str) and isinstance(new, str):
        count = len(text) + 1 if old == "" else text.count(old)
        if len(text) + count * len(new) > MAX_OUTPUT:
            raise SecurityError(_too_large())


def _too_large() -> str:
    return f"template output larger than {MAX_OUTPUT // (1024 * 1024)} MiB"

