"""What cosbuild prints: text from elsewhere (a repository's names and descriptions, a
client's request line) made safe to show on a terminal, and progress lines that parallel
tasks cannot mix."""

from __future__ import annotations

import sys
import threading

_LINES = threading.Lock()


def say(text: str) -> None:
    """Print `text` as whole lines, in one write under one lock: print() writes the newline
    apart, so the lines of parallel tasks (and doit's own) could run into each other."""
    with _LINES:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def safe(text: str) -> str:
    """`text` with every character a terminal could act on shown as its escape instead:
    control characters (ESC, CR, BEL, the C1 codes such as CSI), format characters (bidi
    overrides), line separators, lone surrogates; `\\x1b[2J` prints, it does not clear."""
    if text.isprintable():   # the usual case: nothing to do
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 \
        else f"\\U{code:08x}"
