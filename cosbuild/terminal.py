"""What cosbuild prints: text from elsewhere (a repository's names and descriptions, a
client's request line) made safe to show on a terminal, and progress lines that parallel
tasks cannot mix."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Callable, Iterator

_LINES = threading.Lock()
HEARTBEAT = 30.0   # seconds between the lines of a long step


def say(text: str) -> None:
    """Print `text` as whole lines, in one write under one lock: print() writes the newline
    apart, so the lines of parallel tasks (and doit's own) could run into each other."""
    with _LINES:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


@contextlib.contextmanager
def heartbeat(line: Callable[[float], str], every: float = HEARTBEAT) -> Iterator[None]:
    """While the block runs, say line(seconds since it started) every `every` seconds: a
    bootstrap or a squashfs runs for minutes, and silence looks like a hang."""
    started, stop = time.monotonic(), threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            say(line(time.monotonic() - started))

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def duration(seconds: float) -> str:
    """4.2s, 1m05s."""
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


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
