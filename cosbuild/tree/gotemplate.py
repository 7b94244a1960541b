"""Go `text/template` as Helm runs it for luet 0.20: parse, execute, print values as Go does.

This is the engine of Helm's templates, in pure Python, with `missingkey=zero` (a missing
map key is Go's zero value, printed `<no value>`). Data are plain YAML values (dict, list, str, int, float, bool,
None); nothing in a template can reach Python attributes, so a template cannot run code.

Sources are `(file, text)` pairs, concatenated in order; errors name the file and line of
the source they come from. The functions are the caller's (`sprig.py`, bound in `helm.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal

# Bounds for untrusted templates: nesting of template calls, work done, text produced.
MAX_DEPTH = 100
MAX_STEPS = 2_000_000
MAX_OUTPUT = 16 * 1024 * 1024   # also the bound of any value a function is given or makes
# A function's work is counted in steps too: one per item it is given or makes, and one per
# CHARS_PER_STEP characters (a 16 MiB string read or written costs 1/8 of the budget).
CHARS_PER_STEP = 64


class TemplateError(Exception):
    """A template that cannot be parsed or executed, at the file:line the user wrote."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        self.message, self.file, self.line = message, file, line
        super().__init__(f"{file}:{line}: {message}" if file else message)


class Sources:
    """The concatenated text and a map from offsets back to (file, line). `base` is where
    this text starts in a longer concatenation (see Prelude)."""

    def __init__(self, sources: list[tuple[str, str]], base: int = 0):
        self.files = [f for f, _ in sources]
        self.starts = []
        self.base = base
        offset = base
        for _, text in sources:
            self.starts.append(offset)
            offset += len(text)
        self.text = "".join(t for _, t in sources)

    def where(self, pos: int) -> tuple[str | None, int | None]:
        if not self.files:
            return None, None
        i = max(j for j, s in enumerate(self.starts) if s <= pos or j == 0)
        return self.files[i], self.text.count("\n", self.starts[i] - self.base,
                                              pos - self.base) + 1


# --------------------------------------------------------------------------- lexer

@dataclass(frozen=True)
class Token:
    kind: str       # text, left, right, space, field, var, ident, keyword, string, rawstring,
    #                 char, number, bool, dot, pipe, lparen, rparen, declare, assign, comma, eof
    value: str
    pos: int


KEYWORDS = {"block", "break", "continue", "define", "else", "end", "if", "range", "nil",
            "template", "with"}
_SPACE = " \t\r\n"
_NUMBER = re.compile(r"[+-]?(0[xX][0-9a-fA-F_]*(\.[0-9a-fA-F_]*)?([pP][+-]?\d+)?|0[bB][01_]+|"
                     r"0[oO][0-7_]+|(\d[\d_]*)?\.?[\d_]*([eE][+-]?\d+)?)i?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def lex(src: Sources) -> list[Token]:
    text, out, pos = src.text, [], 0

    def fail(message: str, at: int):
        raise TemplateError(message, *src.where(at + src.base))

    while True:
        start = text.find("{{", pos)
        if start < 0:
            if pos < len(text):
                out.append(Token("text", text[pos:], pos))
            break
        trim_left = text.startswith("{{-", start) and text[start + 3:start + 4] in tuple(_SPACE)
        chunk = text[pos:start]
        if trim_left:
            chunk = chunk.rstrip(_SPACE)
        if chunk:
            out.append(Token("text", chunk, pos))
        i = start + (4 if trim_left else 2)
        # a comment is a whole action: {{/* ... */}} (with optional trim marks)
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                fail("unclosed comment", start)
            k = end + 2
            trim_right = False
            if text.startswith(" -}}", k) or text.startswith("\t-}}", k) or \
                    text.startswith("\n-}}", k) or text.startswith("\r-}}", k):
                trim_right, k = True, k + 4
            elif text.startswith("}}", k):
                k += 2
            else:
                fail("comment ends before closing delimiter", start)
            pos = k
            if trim_right:
                pos = _skip_space(text, pos)
            continue
        out.append(Token("left", "{{", start))
        pos = _lex_action(text, i, out, fail)
        if out[-1].value == "-}}":
            pos = _skip_space(text, pos)
    out.append(Token("eof", "", len(text)))
    return [Token(t.kind, t.value, t.pos + src.base) for t in out] if src.base else out


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _SPACE:
        pos += 1
    return pos


def _quoted_end(text: str, i: int, fail) -> int:
    """Where the "..." or '...' starting at i ends (backslash escapes; not across lines)."""
    quote, j = text[i], i + 1
    while j < len(text) and text[j] != quote:
        if text[j] == "\\":
            j += 1
        if j < len(text) and text[j] == "\n":
            fail()
        j += 1
    if j >= len(text):
        fail()
    return j + 1


def _lex_action(text: str, i: int, out: list[Token], fail) -> int:
    depth = 0
    n = len(text)
    while True:
        if i >= n:
            fail("unclosed action", i)
        c = text[i]
        if c in _SPACE:
            j = _skip_space(text, i)
            if text.startswith("-}}", j) and j > i:
                if depth:
                    fail("unclosed left paren", i)
                out.append(Token("right", "-}}", j))
                return j + 3
            if text.startswith("}}", j):
                if depth:
                    fail("unclosed left paren", i)
                out.append(Token("right", "}}", j))
                return j + 2
            out.append(Token("space", text[i:j], i))
            i = j
            continue
        if text.startswith("}}", i):
            if depth:
                fail("unclosed left paren", i)
            out.append(Token("right", "}}", i))
            return i + 2
        if c == "|":
            out.append(Token("pipe", c, i))
            i += 1
        elif c == "(":
            depth += 1
            out.append(Token("lparen", c, i))
            i += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                fail("unexpected right paren", i)
            out.append(Token("rparen", c, i))
            i += 1
        elif text.startswith(":=", i):
            out.append(Token("declare", ":=", i))
            i += 2
        elif c == "=":
            out.append(Token("assign", c, i))
            i += 1
        elif c == ",":
            out.append(Token("comma", c, i))
            i += 1
        elif c in "\"'":
            kind, what = ("string", "quoted string") if c == '"' else ("char", "character constant")
            j = _quoted_end(text, i, lambda: fail(f"unterminated {what}", i))
            out.append(Token(kind, text[i:j], i))
            i = j
        elif c == "`":
            j = text.find("`", i + 1)
            if j < 0:
                fail("unterminated raw quoted string", i)
            out.append(Token("rawstring", text[i:j + 1], i))
            i = j + 1
        elif c == "$":
            m = _IDENT.match(text, i + 1)
            j = m.end() if m else i + 1
            out.append(Token("var", text[i:j], i))
            i = j
        elif c == "." and (i + 1 >= n or not text[i + 1].isdigit()):
            m = _IDENT.match(text, i + 1)
            if m:
                out.append(Token("field", text[i:m.end()], i))
                i = m.end()
            else:
                out.append(Token("dot", ".", i))
                i += 1
        elif c.isdigit() or c == "." or (c in "+-" and i + 1 < n and (text[i + 1].isdigit() or text[i + 1] == ".")):
            m = _NUMBER.match(text, i)
            j = m.end()
            if j < n and (text[j].isalnum() or text[j] == "_"):
                fail(f"bad number syntax: {text[i:j + 1]!r}", i)
            out.append(Token("number", text[i:j], i))
            i = j
        elif c.isalpha() or c == "_":
            m = _IDENT.match(text, i)
            word = m.group()
            kind = "bool" if word in ("true", "false") else "keyword" if word in KEYWORDS else "ident"
            out.append(Token(kind, word, i))
            i = m.end()
        else:
            fail(f"unexpected {c!r} in command", i)


# --------------------------------------------------------------------------- parse tree

@dataclass
class Node:
    pos: int


@dataclass
class Text(Node):
    text: str


@dataclass
class Const(Node):
    value: object          # str, int, float, bool or None (nil)
    kind: str              # string, number, bool, nil
    source: str = ""


@dataclass
class Field(Node):
    names: tuple[str, ...]


@dataclass
class Variable(Node):
    name: str
    names: tuple[str, ...] = ()


@dataclass
class Dot(Node):
    pass


@dataclass
class Ident(Node):
    name: str


@dataclass
class Chain(Node):
    node: Node
    names: tuple[str, ...]


@dataclass
class Command(Node):
    args: list[Node]


@dataclass
class Pipe(Node):
    decl: list[str]
    assign: bool
    cmds: list[Command]


@dataclass
class Action(Node):
    pipe: Pipe


@dataclass
class Branch(Node):
    kind: str              # if, with, range
    pipe: Pipe
    body: list[Node]
    otherwise: list[Node] | None


@dataclass
class Call(Node):
    name: str
    pipe: Pipe | None


@dataclass
class Control(Node):
    kind: str              # break, continue


@dataclass
class Tree:
    name: str
    body: list[Node] = field(default_factory=list)


class Parser:
    def __init__(self, src: Sources, tokens: list[Token], trees: dict[str, Tree]):
        self.src, self.tokens, self.i, self.trees = src, tokens, 0, trees
        self.loops = 0
        self.vars: list[str] = ["$"]

    def fail(self, message: str, pos: int | None = None):
        raise TemplateError(message, *self.src.where(self.peek().pos if pos is None else pos))

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def next_nonspace(self) -> Token:
        tok = self.next()
        while tok.kind == "space":
            tok = self.next()
        return tok

    def peek_nonspace(self) -> Token:
        j = self.i
        while self.tokens[j].kind == "space":
            j += 1
        return self.tokens[j]

    def parse(self, name: str) -> Tree:
        main = Tree(name)
        while self.peek().kind != "eof":
            if self.peek().kind == "left" and self._peek_keyword() == "define":
                self.next()
                self.next_nonspace()
                self._define()
                continue
            node, end = self._item()
            if end is not None:
                self.fail(f"unexpected {{{{{end.value}}}}}", end.pos)
            main.body.append(node)
        self._add(main)
        return main

    def _peek_keyword(self) -> str | None:
        j = self.i + 1
        while self.tokens[j].kind == "space":
            j += 1
        tok = self.tokens[j]
        return tok.value if tok.kind == "keyword" else None

    def _add(self, tree: Tree) -> None:
        old = self.trees.get(tree.name)
        if old is None or _empty(old.body):
            self.trees[tree.name] = tree
        elif not _empty(tree.body):
            self.fail(f"template: multiple definition of template {tree.name!r}")

    def _define(self) -> None:
        tok = self.next_nonspace()
        if tok.kind not in ("string", "rawstring"):
            self.fail("name of template must be a string in define clause", tok.pos)
        name = _unquote(tok, self)
        self._expect_right("define clause")
        saved, self.vars, self.loops = self.vars, ["$"], 0
        tree = Tree(name)
        tree.body, end = self._list()
        if end.value != "end":
            self.fail(f"unexpected {{{{{end.value}}}}} in define clause", end.pos)
        self._expect_right("end")
        self.vars = saved
        self._add(tree)

    def _expect_right(self, context: str) -> None:
        tok = self.next_nonspace()
        if tok.kind != "right":
            self.fail(f"unexpected {_describe(tok)} in {context}", tok.pos)

    def _list(self) -> tuple[list[Node], Token]:
        """Items up to an {{end}} or {{else}}; returns them and that keyword token."""
        nodes = []
        while True:
            if self.peek().kind == "eof":
                self.fail("unexpected EOF")
            node, end = self._item()
            if end is not None:
                return nodes, end
            nodes.append(node)

    def _item(self) -> tuple[Node | None, Token | None]:
        tok = self.next()
        if tok.kind == "text":
            return Text(tok.pos, tok.value), None
        if tok.kind != "left":
            self.fail(f"unexpected {_describe(tok)}", tok.pos)
        word = self.peek_nonspace()
        if word.kind == "keyword":
            self.next_nonspace()
            kw = word.value
            if kw in ("end", "else"):
                return None, word
            if kw in ("if", "with", "range"):
                return self._branch(kw, word.pos), None
            if kw in ("template", "block"):
                return self._template(kw, word.pos), None
            if kw in ("break", "continue"):
                if not self.loops:
                    self.fail(f"{{{{{kw}}}}} outside {{{{range}}}}", word.pos)
                self._expect_right(kw)
                return Control(word.pos, kw), None
            if kw == "define":
                self.fail("unexpected <define> in command", word.pos)
        return Action(tok.pos, self._pipeline("command", decl_ok=True)), None

    def _branch(self, kind: str, pos: int) -> Branch:
        depth = len(self.vars)
        pipe = self._pipeline(kind, decl_ok=True, range_decl=kind == "range")
        self.loops += kind == "range"
        body, end = self._list()
        self.loops -= kind == "range"
        otherwise = None
        if end.value == "else":
            nxt = self.peek_nonspace()
            if kind == "if" and nxt.kind == "keyword" and nxt.value == "if":
                # {{else if ...}}: a nested if that shares the outer {{end}}
                self.next_nonspace()
                otherwise = [self._branch("if", nxt.pos)]
            else:
                self._expect_right("else")
                otherwise, end = self._list()
                if end.value != "end":
                    self.fail("expected end; found {{else}}", end.pos)
                self._expect_right("end")
        else:
            self._expect_right("end")
        del self.vars[depth:]
        return Branch(pos, kind, pipe, body, otherwise)

    def _template(self, kw: str, pos: int) -> Call:
        tok = self.next_nonspace()
        if tok.kind not in ("string", "rawstring"):
            self.fail(f"unexpected {_describe(tok)} in {kw} clause", tok.pos)
        name = _unquote(tok, self)
        pipe = None
        if self.peek_nonspace().kind != "right":
            pipe = self._pipeline(kw)
        else:
            self._expect_right(kw)
        if kw == "block":
            saved, self.vars = self.vars, ["$"]
            tree = Tree(name)
            tree.body, end = self._list()
            if end.value != "end":
                self.fail("unexpected {{else}} in block clause", end.pos)
            self._expect_right("end")
            self.vars = saved
            self._add(tree)
        return Call(pos, name, pipe)

    def _pipeline(self, context: str, decl_ok: bool = False, range_decl: bool = False) -> Pipe:
        pos = self.peek().pos
        decl: list[str] = []
        assign = False
        if decl_ok:
            j = self.i
            while self.tokens[j].kind == "space":
                j += 1
            if self.tokens[j].kind == "var":
                k = j + 1
                while self.tokens[k].kind == "space":
                    k += 1
                nxt = self.tokens[k]
                if nxt.kind in ("declare", "assign") or (nxt.kind == "comma" and range_decl):
                    names = [self.tokens[j].value]
                    self.i = k + 1
                    if nxt.kind == "comma":
                        second = self.next_nonspace()
                        if second.kind != "var":
                            self.fail("range can only initialize variables", second.pos)
                        op = self.next_nonspace()
                        if op.kind not in ("declare", "assign"):
                            self.fail("expected := or = after range variables", op.pos)
                        names.append(second.value)
                        nxt = op
                    assign = nxt.kind == "assign"
                    for name in names:
                        if assign:
                            if name not in self.vars:
                                self.fail(f"undefined variable {name!r}", self.tokens[j].pos)
                        else:
                            self.vars.append(name)
                    decl = names
        cmds: list[Command] = []
        while True:
            tok = self.peek_nonspace()
            if tok.kind in ("right", "rparen"):
                self.next_nonspace()
                if tok.kind == "rparen" and context != "parenthesized pipeline":
                    self.fail("unexpected right paren", tok.pos)
                if tok.kind == "right" and context == "parenthesized pipeline":
                    self.fail("unclosed left paren", tok.pos)
                break
            cmds.append(self._command())
        if not cmds:
            self.fail(f"missing value for {context}", pos)
        for c in cmds[1:]:
            first = c.args[0]
            if isinstance(first, Const) or isinstance(first, Dot):
                self.fail(f"non executable command in pipeline stage {cmds.index(c) + 1}", first.pos)
        return Pipe(pos, decl, assign, cmds)

    def _command(self) -> Command:
        pos = self.peek_nonspace().pos
        args: list[Node] = []
        while True:
            tok = self.peek_nonspace()
            if tok.kind in ("right", "rparen", "pipe", "eof"):
                break
            if args and self.peek().kind != "space":
                self.fail(f"unexpected {_describe(tok)} in operand", tok.pos)
            args.append(self._operand())
        if self.peek_nonspace().kind == "pipe":
            self.next_nonspace()
            if self.peek_nonspace().kind in ("right", "rparen"):
                self.fail("missing command after |")
        if not args:
            self.fail("empty command", pos)
        return Command(pos, args)

    def _operand(self) -> Node:
        node = self._term()
        if self.peek().kind == "field":
            names = []
            while self.peek().kind == "field":
                names.append(self.next().value[1:])
            if isinstance(node, Field):
                return Field(node.pos, node.names + tuple(names))
            if isinstance(node, Variable):
                return Variable(node.pos, node.name, node.names + tuple(names))
            if isinstance(node, (Const, Dot)):
                self.fail("unexpected . after term", node.pos)
            return Chain(node.pos, node, tuple(names))
        return node

    def _term(self) -> Node:
        tok = self.next_nonspace()
        k = tok.kind
        if k == "ident":
            return Ident(tok.pos, tok.value)
        if k == "dot":
            return Dot(tok.pos)
        if k == "field":
            return Field(tok.pos, (tok.value[1:],))
        if k == "var":
            if tok.value not in self.vars:
                self.fail(f"undefined variable {tok.value!r}", tok.pos)
            return Variable(tok.pos, tok.value)
        if k == "bool":
            return Const(tok.pos, tok.value == "true", "bool", tok.value)
        if k == "keyword" and tok.value == "nil":
            return Const(tok.pos, None, "nil", "nil")
        if k in ("string", "rawstring"):
            return Const(tok.pos, _unquote(tok, self), "string", tok.value)
        if k in ("number", "char"):
            return Const(tok.pos, _number(tok, self), "number", tok.value)
        if k == "lparen":
            return self._pipeline("parenthesized pipeline")
        self.fail(f"unexpected {_describe(tok)} in operand", tok.pos)


def _empty(body: list[Node]) -> bool:
    return all(isinstance(n, Text) and not n.text.strip() for n in body)


def _describe(tok: Token) -> str:
    return {"right": "\"}}\"", "eof": "EOF", "rparen": "\")\"", "pipe": "\"|\""}.get(
        tok.kind, f"<{tok.value}>")


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", "'": "'", '"': '"'}


def _unquote(tok: Token, parser: Parser) -> str:
    body = tok.value[1:-1]
    if tok.kind == "rawstring":
        return body.replace("\r", "")
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1:i + 2]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif e in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i + 2:i + 2 + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                parser.fail(f"invalid syntax: {tok.value}", tok.pos)
            out.append(chr(int(digits, 16)))
            i += 2 + width
        elif e and e in "01234567":
            digits = body[i + 1:i + 4]
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            parser.fail(f"invalid syntax: {tok.value}", tok.pos)
    return "".join(out)


def _number(tok: Token, parser: Parser):
    text = tok.value
    if tok.kind == "char":
        inner = _unquote(Token("string", '"' + tok.value[1:-1] + '"', tok.pos), parser)
        if len(inner) != 1:
            parser.fail(f"malformed character constant: {text}", tok.pos)
        return ord(inner)
    clean = text.replace("_", "")
    if clean.endswith("i"):
        parser.fail(f"complex numbers are not supported: {text}", tok.pos)
    try:
        body = clean.lstrip("+-")
        sign = -1 if clean.startswith("-") else 1
        if body[:2].lower() in ("0x", "0b", "0o") and not any(c in body for c in ".pP"):
            return sign * int(body, 0)
        if re.fullmatch(r"\d+", body):
            return sign * int(body, 8 if len(body) > 1 and body[0] == "0" else 10)
        if body[:2].lower() == "0x":
            return sign * float.fromhex(body)
        return sign * float(body)
    except ValueError:
        parser.fail(f"bad number syntax: {text!r}", tok.pos)


MAIN = "templates"   # the name Helm gives the concatenated text (in its error messages too)


def parse(sources: list[tuple[str, str]], name: str = MAIN,
          trees: dict[str, Tree] | None = None) -> tuple[dict[str, Tree], Sources]:
    """Parse the concatenated sources; `define`d templates land in the returned set."""
    src = Sources(sources)
    trees = {} if trees is None else trees
    Parser(src, lex(src), trees).parse(name)
    return trees, src


class Prelude:
    """Shared templates parsed once. Each file is then parsed as if it followed them in one
    text, as luet concatenates them, without parsing them again."""

    def __init__(self, sources: list[tuple[str, str]]):
        self.sources = list(sources)
        src = Sources(self.sources)
        parser = Parser(src, lex(src), {})
        self.body = parser.parse(MAIN).body
        del parser.trees[MAIN]
        self.trees, self.vars, self.size = parser.trees, parser.vars, len(src.text)

    def join(self, file: str, text: str) -> tuple[dict[str, Tree], Sources]:
        """The template set of the prelude followed by this file (its text is `MAIN`)."""
        src = Sources([(file, text)], base=self.size)
        trees = dict(self.trees)
        parser = Parser(src, lex(src), trees)
        parser.vars = list(self.vars)
        own = parser.parse(MAIN).body
        prefix = list(self.body)
        if text.startswith("{{-") and text[3:4] in tuple(_SPACE) and prefix \
                and isinstance(prefix[-1], Text):   # a leading {{- trims the text before it
            last = prefix.pop()
            if last.text.rstrip(_SPACE):
                prefix.append(Text(last.pos, last.text.rstrip(_SPACE)))
        trees[MAIN] = Tree(MAIN, prefix + own)
        return trees, Sources(self.sources + [(file, text)])


# --------------------------------------------------------------------------- values as Go sees them

class Int64(int):
    """sprig's arithmetic returns int64, a type of its own in Go (not assignable to int)."""


class IMap(dict):
    """A nested mapping as go-yaml v2 decodes it (map[interface{}]interface{}): Go's map
    functions and the JSON encoder refuse it, which luet's templates inherit."""


class Missing:
    """Go's zero interface value (a missing map key under missingkey=zero): prints
    `<no value>`, is false, and cannot have fields."""

    def __repr__(self):
        return "<no value>"

    def __bool__(self):
        return False


MISSING = Missing()


# (Python type, Go type, Go kind), in match order: bool and Int64 before int, IMap before dict
GO_TYPES = ((bool, "bool", "bool"), (Int64, "int64", "int64"), (int, "int", "int"),
            (float, "float64", "float64"), (str, "string", "string"),
            ((list, tuple), "[]interface {}", "slice"),
            (IMap, "map[interface {}]interface {}", "map"), (dict, "map[string]interface {}", "map"))


def _go_row(v):
    return next((row for row in GO_TYPES if isinstance(v, row[0])), None)


def go_type(v) -> str:
    if v is None or v is MISSING:
        return "interface {}"
    row = _go_row(v)
    return row[1] if row else type(v).__name__


def go_kind(v) -> str:
    """reflect's Kind name: invalid for nil."""
    if v is None or v is MISSING:
        return "invalid"
    row = _go_row(v)
    return row[2] if row else "struct"


def truth(v) -> bool:
    if v is None or v is MISSING:
        return False
    if isinstance(v, (bool, int, float, str, list, tuple, dict)):
        return bool(v)
    return True


def go_str(v) -> str:
    """fmt's %v of a value."""
    if v is MISSING:
        return "<no value>"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _g_shortest(v)
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_str(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{go_str(k)}:{go_str(x)}" for k, x in
                                 sorted(v.items(), key=lambda kv: _sort_key(kv[0]))) + "]"
    return str(v)


def _sort_key(k):
    return (0, k, "") if isinstance(k, (int, float)) and not isinstance(k, bool) else (1, 0, str(k))


def _g_shortest(f: float) -> str:
    """%v of a float64: strconv's 'g' with the shortest digits (exponent form from 1e+06)."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if str(f).startswith("-") else "0"
    d = Decimal(repr(f))
    sign, dig, exp = d.as_tuple()
    digits = "".join(map(str, dig)).rstrip("0") or "0"
    x = len(dig) + exp - 1
    s = "-" if sign else ""
    if x < -4 or x >= 6:
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{s}{mant}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if x >= len(digits) - 1:
        return s + digits + "0" * (x - len(digits) + 1)
    if x >= 0:
        return s + digits[:x + 1] + "." + digits[x + 1:]
    return s + "0." + "0" * (-x - 1) + digits


# --------------------------------------------------------------------------- execution

class ExecError(Exception):
    def __init__(self, message: str, pos: int):
        self.message, self.pos = message, pos


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


@dataclass(frozen=True)
class Func:
    """A template function: its Python implementation and Go parameter types.

    Types: any, string, int, int64, float64, bool, list, map, and a leading "..." for a
    variadic tail. `lazy` functions (and, or) get thunks instead of values. `bound`, for a
    function whose result can be much larger than its arguments, takes the same arguments and
    returns an upper bound of the result's size (see value_size): it is checked before the
    function runs, so no such value is ever made."""
    fn: object
    params: tuple[str, ...]
    lazy: bool = False
    error_prefix: bool = True
    bound: object = None


class Executor:
    def __init__(self, trees: dict[str, Tree], src: Sources, funcs: dict[str, Func]):
        self.trees, self.src, self.funcs = trees, src, funcs
        self.steps = 0
        self.depth = 0
        self.size = 0
        self.current_pos = 0     # of the function being called (include reports errors there)

    # -- entry points
    def execute(self, name: str, data) -> str:
        tree = self.trees.get(name)
        if tree is None:
            raise TemplateError(f'no template "{name}" associated with template "{MAIN}"')
        out: list[str] = []
        try:
            self._walk(tree.body, data, [["$", data]], out)
        except ExecError as exc:
            file, line = self.src.where(exc.pos)
            raise TemplateError(exc.message, file, line) from None
        except RecursionError:
            raise TemplateError("template nesting too deep") from None
        return "".join(out)

    def call_template(self, name: str, data, pos: int) -> str:
        """For Helm's include: a named template's output as a string."""
        tree = self.trees.get(name)
        if tree is None:
            raise ExecError(f'template: no template "{name}" associated with template "{MAIN}"', pos)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExecError(f"rendering template has a nested reference name: {name}: "
                            f"unable to execute template (more than {MAX_DEPTH} levels)", pos)
        try:
            out: list[str] = []
            self._walk(tree.body, data, [["$", data]], out)
            return "".join(out)
        finally:
            self.depth -= 1

    # -- walking
    def _emit(self, out: list[str], text: str, pos: int) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT:
            raise ExecError(f"template output larger than {MAX_OUTPUT // (1024 * 1024)} MiB", pos)
        out.append(text)

    def _sized(self, value, func: Ident):
        """The value given to or made by a function, when not larger than MAX_OUTPUT; its size
        is the function's work (see value_size)."""
        size, work = value_size(value, work=MAX_STEPS - self.steps)
        self._bounded(size, func)
        self._tick(func.pos, work)
        return value

    @staticmethod
    def _bounded(size: int, func: Ident) -> None:
        if size > MAX_OUTPUT:
            raise ExecError(f"error calling {func.name}: value larger than "
                            f"{MAX_OUTPUT // (1024 * 1024)} MiB", func.pos)

    def _tick(self, pos: int, count: int = 1) -> None:
        self.steps += count
        if self.steps > MAX_STEPS:
            raise ExecError(f"template runs too long (more than {MAX_STEPS} steps)", pos)

    def _walk(self, nodes: list[Node], dot, scope: list, out: list[str]) -> None:
        """Run a list of nodes. `scope` is the variable stack, a list of [name, value];
        variables declared here live until the enclosing if/with/range (or template) ends."""
        for node in nodes:
            self._tick(node.pos)
            if isinstance(node, Text):
                self._emit(out, node.text, node.pos)
            elif isinstance(node, Action):
                value = self._pipe(node.pipe, dot, scope)
                if not node.pipe.decl:
                    self._emit(out, self._print(value), node.pos)
            elif isinstance(node, Branch):
                mark = len(scope)
                try:
                    self._branch(node, dot, scope, out)
                finally:
                    del scope[mark:]
            elif isinstance(node, Call):
                self._call(node, dot, scope, out)
            elif isinstance(node, Control):
                raise _Break() if node.kind == "break" else _Continue()

    @staticmethod
    def _print(value) -> str:
        # the pipeline's value is unwrapped from interface{}: a nil prints as a missing value
        return "<no value>" if value is None else go_str(value)

    def _branch(self, node: Branch, dot, scope: list, out: list[str]) -> None:
        value = self._pipe(node.pipe, dot, scope)
        if node.kind == "if":
            self._walk(node.body if truth(value) else node.otherwise or [], dot, scope, out)
        elif node.kind == "with":
            if truth(value):
                self._walk(node.body, value, scope, out)
            elif node.otherwise:
                self._walk(node.otherwise, dot, scope, out)
        else:
            self._range(node, value, dot, scope, out)

    def _range(self, node: Branch, value, dot, scope: list, out: list[str]) -> None:
        if value is None or value is MISSING:
            items = []
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        elif isinstance(value, dict):
            items = sorted(value.items(), key=lambda kv: _sort_key(kv[0]))
        else:
            raise ExecError(f"range can't iterate over {go_str(value)}", node.pos)
        if not items:
            if node.otherwise:
                self._walk(node.otherwise, dot, scope, out)
            return
        decl, mark = node.pipe.decl, len(scope)
        for key, elem in items:
            self._tick(node.pos)
            # the pipeline pushed its variables: the last one is the element, one before the key
            if decl:
                self._assign_or_top(scope, decl[-1], elem, node.pipe.assign, 1)
            if len(decl) > 1:
                self._assign_or_top(scope, decl[0], key, node.pipe.assign, 2)
            try:
                self._walk(node.body, elem, scope, out)
            except _Break:
                break
            except _Continue:
                continue
            finally:
                del scope[mark:]

    @staticmethod
    def _assign_or_top(scope: list, name: str, value, assign: bool, depth: int) -> None:
        if assign:
            _assign(scope, name, value)
        else:
            scope[-depth][1] = value

    def _call(self, node: Call, dot, scope: list, out: list[str]) -> None:
        tree = self.trees.get(node.name)
        if tree is None:
            raise ExecError(f'template: no template "{node.name}" associated with template '
                            f'"{MAIN}"', node.pos)
        data = self._pipe(node.pipe, dot, scope) if node.pipe else None
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExecError(f"exceeded maximum template depth ({MAX_DEPTH})", node.pos)
        try:
            self._walk(tree.body, data, [["$", data]], out)
        finally:
            self.depth -= 1

    # -- pipelines
    def _pipe(self, pipe: Pipe, dot, scope: list):
        value = _NO_FINAL
        for cmd in pipe.cmds:
            value = _plain(self._command(cmd, dot, scope, value))
        if value is MISSING:
            value = None
        for name in pipe.decl:
            if pipe.assign:
                _assign(scope, name, value)
            else:
                scope.append([name, value])
        return value

    def _command(self, cmd: Command, dot, scope: list, final):
        first = cmd.args[0]
        if isinstance(first, Field):
            return self._field_chain(dot, dot, first.names, cmd.args, final, first.pos, scope)
        if isinstance(first, Chain):
            base = self._arg(first.node, dot, scope)
            return self._field_chain(dot, base, first.names, cmd.args, final, first.pos, scope)
        if isinstance(first, Ident):
            return self._function(first, dot, cmd.args, final, scope)
        if isinstance(first, Variable):
            value = self._lookup(scope, first.name, first.pos)
            if first.names:
                return self._field_chain(dot, value, first.names, cmd.args, final, first.pos, scope)
            self._no_args(cmd.args, final, first.pos)
            return value
        if isinstance(first, Pipe):
            self._no_args(cmd.args, final, first.pos)
            return self._pipe(first, dot, scope)
        self._no_args(cmd.args, final, first.pos)
        if isinstance(first, Dot):
            return dot
        if isinstance(first, Const):
            if first.kind == "nil":
                raise ExecError("nil is not a command", first.pos)
            return first.value
        raise ExecError("can't evaluate command", first.pos)

    @staticmethod
    def _no_args(args: list[Node], final, pos: int) -> None:
        if len(args) > 1 or final is not _NO_FINAL:
            raise ExecError(f"can't give argument to non-function {_node_text(args[0])}", pos)

    def _lookup(self, scope: list, name: str, pos: int):
        for n, v in reversed(scope):
            if n == name:
                return v
        raise ExecError(f"undefined variable: {name}", pos)

    def _field_chain(self, dot, receiver, names, args, final, pos, scope):
        for name in names[:-1]:
            receiver = self._field(receiver, name, [], _NO_FINAL, pos, scope)
        return self._field(receiver, names[-1], args, final, pos, scope)

    def _field(self, receiver, name: str, args, final, pos: int, scope):
        if receiver is MISSING or receiver is None:
            raise ExecError(f"nil pointer evaluating interface {{}}.{name}", pos)
        if isinstance(receiver, dict):
            if len(args) > 1 or final is not _NO_FINAL:
                raise ExecError(f"{name} is not a method but has arguments", pos)
            return receiver.get(name, MISSING)
        raise ExecError(f"can't evaluate field {name} in type {go_type(receiver)}", pos)

    def _function(self, ident: Ident, dot, args, final, scope):
        func = self.funcs.get(ident.name)
        if func is None:
            raise ExecError(f'function "{ident.name}" not defined', ident.pos)
        nodes = args[1:]
        if func.lazy:
            thunks = [lambda n=n: _plain(self._arg(n, dot, scope)) for n in nodes]
            if final is not _NO_FINAL:
                thunks.append(lambda f=final: f)
            try:
                return func.fn(*thunks)
            except FuncError as exc:
                raise ExecError(f"error calling {ident.name}: {exc}", ident.pos) from None
        values = [(self._arg(n, dot, scope), n) for n in nodes]
        if final is not _NO_FINAL:
            values.append((final, None))
        params = func.params
        variadic = bool(params) and params[-1].startswith("...")
        fixed = len(params) - 1 if variadic else len(params)
        if len(values) < fixed or (not variadic and len(values) != fixed):
            raise ExecError(f"wrong number of args for {ident.name}: want "
                            f"{'at least ' if variadic else ''}{fixed} got {len(values)}", ident.pos)
        call = []
        for i, (value, node) in enumerate(values):
            kind = params[i] if i < fixed else params[-1][3:]
            call.append(_convert(value, kind, node, ident.pos))
        self.current_pos = ident.pos
        try:
            # a value doubles at most per call (cat $x $x), so checking what goes in and what
            # comes out keeps memory near the bound; a list of one string many times (or a
            # map built of itself) is small in memory but huge once joined or encoded; a
            # function that multiplies (join, replace, printf...) is bounded before it runs
            self._sized(call, ident)
            if func.bound:   # making that much is work too (escaping functions loop in Python)
                bound = func.bound(*call)
                self._bounded(bound, ident)
                self._tick(ident.pos, bound // CHARS_PER_STEP)
            return self._sized(func.fn(*call), ident)
        except FuncError as exc:
            prefix = f"error calling {ident.name}: " if func.error_prefix else ""
            raise ExecError(f"{prefix}{exc}", ident.pos) from None
        except ExecError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, OverflowError,
                AttributeError) as exc:
            raise ExecError(f"error calling {ident.name}: {exc}", ident.pos) from None

    def _arg(self, node: Node, dot, scope):
        self._tick(node.pos)
        if isinstance(node, Dot):
            return dot
        if isinstance(node, Const):
            return node
        if isinstance(node, Field):
            return self._field_chain(dot, dot, node.names, [node], _NO_FINAL, node.pos, scope)
        if isinstance(node, Variable):
            value = self._lookup(scope, node.name, node.pos)
            if node.names:
                return self._field_chain(dot, value, node.names, [node], _NO_FINAL, node.pos, scope)
            return value
        if isinstance(node, Pipe):
            return self._pipe(node, dot, scope)
        if isinstance(node, Ident):
            return self._function(node, dot, [node], _NO_FINAL, scope)
        if isinstance(node, Chain):
            base = self._arg(node.node, dot, scope)
            return self._field_chain(dot, base, node.names, [node], _NO_FINAL, node.pos, scope)
        raise ExecError("can't handle argument", node.pos)


def _assign(scope: list, name: str, value) -> None:
    for entry in reversed(scope):
        if entry[0] == name:
            entry[1] = value
            return


class FuncError(Exception):
    """A template function's error (Go's returned error), reported at the call."""


_NO_FINAL = object()


def _plain(value):
    """Constants come through as nodes so that typed parameters can see a literal."""
    return value.value if isinstance(value, Const) else value


def _node_text(node: Node) -> str:
    if isinstance(node, Const):
        return node.source
    if isinstance(node, Dot):
        return "."
    if isinstance(node, Variable):
        return node.name + "".join("." + n for n in node.names)
    return "command"


def _convert(value, kind: str, node, pos: int):
    """Go's argument checks: a literal must fit the parameter; a value must have its type."""
    if isinstance(value, Const):
        c = value
        if kind == "any":
            return c.value
        expect = {"string": "string", "int": "integer", "int64": "integer", "float64": "number",
                  "bool": "bool"}.get(kind)
        ok = ((kind == "string" and c.kind == "string") or
              (kind in ("int", "int64") and c.kind == "number" and isinstance(c.value, int)) or
              (kind == "float64" and c.kind == "number") or
              (kind == "bool" and c.kind == "bool"))
        if c.kind == "nil" and kind in ("list", "map"):
            return None
        if not ok:
            if kind in ("list", "map"):
                raise ExecError(f"can't handle {c.source} for arg of type "
                                f"{_go_kind_name(kind)}", c.pos)
            raise ExecError(f"expected {expect}; found {c.source}", c.pos)
        return float(c.value) if kind == "float64" else c.value
    if kind == "any":
        return None if value is MISSING else value
    if value is MISSING or value is None:
        if kind in ("list", "map"):
            return None
        raise ExecError(f"invalid value; expected {_go_kind_name(kind)}", pos)
    ok = {"string": isinstance(value, str),
          "int": isinstance(value, int) and not isinstance(value, (bool, Int64)),
          "int64": isinstance(value, Int64), "float64": isinstance(value, float),
          "bool": isinstance(value, bool),
          "list": isinstance(value, (list, tuple)),
          "map": isinstance(value, dict) and not isinstance(value, IMap)}[kind]
    if not ok:
        raise ExecError(f"wrong type for value; expected {_go_kind_name(kind)}; "
                        f"got {go_type(value)}", pos)
    return value


def _go_kind_name(kind: str) -> str:
    return {"list": "[]interface {}", "map": "map[string]interface {}"}.get(kind, kind)


def value_size(value, limit: int = MAX_OUTPUT, work: int = MAX_STEPS) -> tuple[int, int]:
    """(about how large a value is as text, the work of reading it in steps), counted until
    either passes its limit. A shared value counts every time it is referred to: that is
    what printing, joining or encoding it makes (a map built of itself twice, forty times, or
    a YAML alias bomb, is small in memory and huge as text); it is read once: the work is a
    step per item and per CHARS_PER_STEP characters of each string. A number counts as the
    most digits it can print as (a bound of a function's result is a bound only so)."""
    sizes: dict[int, int] = {}
    strings: set[int] = set()   # only those long enough to cost a step
    looked = 0

    def size(item) -> int:
        nonlocal looked
        if isinstance(item, (str, bytes)):
            if len(item) >= CHARS_PER_STEP and id(item) not in strings:
                strings.add(id(item))
                looked += len(item) // CHARS_PER_STEP
            return len(item)
        if not isinstance(item, (dict, list, tuple, set, frozenset)):
            return _scalar_size(item)
        if id(item) not in sizes:
            looked += len(item) + 1
            total = sizes[id(item)] = len(item)   # so far: a list may hold itself
            for part in [*item.keys(), *item.values()] if isinstance(item, dict) else item:
                if total > limit or looked > work:
                    break
                total += size(part)
            sizes[id(item)] = total
        return sizes[id(item)]

    return size(value), looked


def _scalar_size(item) -> int:
    """The most characters a scalar prints as: an integer's digits and sign, a float's 24
    (-1.7976931348623157e+308), anything else ten (`<no value>`)."""
    if isinstance(item, int) and not isinstance(item, bool):
        return item.bit_length() * 3 // 10 + 2
    return 24 if isinstance(item, float) else 10


def value_depth(value, limit: int = 1000) -> int:
    """How many lists and mappings deep a value is (at most `limit`): an indented encoding
    writes each item indented once per level."""
    depth, level = 0, [value]
    while level and depth < limit:
        depth += 1
        level = [v for item in level if isinstance(item, (dict, list, tuple))
                 for v in (item.values() if isinstance(item, dict) else item)]
    return depth
