"""`cosbuild serve`: a small read-only web server for a repository folder.

It answers GET and HEAD, with byte ranges so interrupted client downloads can resume. It
serves the regular files that are inside its folder, nothing else (404): not `..`, not a
file that a symbolic link (or a link swapped in meanwhile) leads to outside the folder, not
a FIFO or a device node (one would block, the other never end), no folder listings (a
client asks for the files the index names).
"""

from __future__ import annotations

import functools
import http.server
import logging
import os
import re
import shutil
import stat
from pathlib import Path

from .. import terminal
from ..errors import CosbuildError

log = logging.getLogger("cosbuild")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler (only GET/HEAD; translate_path drops '..') confined to the
    regular files of its folder, plus Range."""

    _remaining = 0   # bytes left to send of the answer

    def send_head(self):
        path = self.translate_path(self.path)
        f = _open_inside(path, self.directory)
        if f is None:
            self.send_error(404, "File not found")
            return None
        info = os.fstat(f.fileno())
        size = info.st_size
        requested = self.headers.get("Range")
        span = _parse_range(requested, size) if requested is not None else None
        if span == "unsatisfiable":
            f.close()
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        # no Range, or not a single range we understand: the whole file, as the RFC says
        start, end = (0, size - 1) if span is None else span
        f.seek(start)
        self._remaining = end - start + 1
        self.send_response(200 if span is None else 206)
        self.send_header("Content-Type", self.guess_type(path))
        if span is not None:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(self._remaining))
        self.send_header("Last-Modified", self.date_time_string(int(info.st_mtime)))
        self.end_headers()
        return f

    def copyfile(self, source, outputfile):
        left = self._remaining   # no more than announced, should the file grow meanwhile
        while left > 0 and (chunk := source.read(min(left, shutil.COPY_BUFSIZE))):
            outputfile.write(chunk)
            left -= len(chunk)

    def end_headers(self):
        self.send_header("Accept-Ranges", "bytes")   # tells clients they may resume
        super().end_headers()

    def log_message(self, format, *args):
        # the request line is the client's: no escape sequences reach a terminal
        log.debug("serve: %s %s", self.address_string(), terminal.safe(format % args))


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # clients going away mid-download are routine, not worth a traceback on stderr
        log.debug("serve: error while answering %s", client_address, exc_info=True)


def _open_inside(path: str, root: str):
    """The regular file at `path`, opened, if it really is inside `root` (a real path);
    else None. What is checked is the file opened, not the name: no race swaps a link in."""
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer (it is refused below)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):   # missing, unreadable, or a NUL in the name
        return None
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")   # where the opened file really is
        if stat.S_ISREG(os.fstat(fd).st_mode) and real.startswith(root.rstrip("/") + "/"):
            return os.fdopen(fd, "rb")
    except OSError:
        pass
    os.close(fd)
    return None


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """(start, end) inclusive, "unsatisfiable", or None for a header to ignore."""
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":   # "bytes=-N": the last N bytes
        if int(last) == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - int(last)), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None   # syntactically invalid: ignored, per RFC 9110
    if start >= size:
        return "unsatisfiable"
    return start, end


def make_server(directory: Path, host: str = "127.0.0.1", port: int = 8000) -> http.server.ThreadingHTTPServer:
    """A server for `directory` (not yet running: call serve_forever); port 0 picks a free one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CosbuildError(f"cannot serve {directory}: not a folder", file=directory)
    # its real path: what a served file's real path must be inside
    handler = functools.partial(_Handler, directory=os.path.realpath(directory))
    try:
        return _Server((host, port), handler)
    except OSError as exc:
        raise CosbuildError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                            hint="pick another port, or stop what is using it") from None


def serve(directory: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `directory` until Ctrl-C."""
    server = make_server(directory, host, port)
    print(f"serving {directory} on http://{host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
