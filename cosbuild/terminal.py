"""Text from elsewhere (a repository's names and descriptions, a client's request line) made
safe to show on a terminal."""

from __future__ import annotations


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
