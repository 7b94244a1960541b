"""`cosbuild serve`: a small read-only web server for a repository folder.

It answers GET and HEAD, with byte ranges so interrupted client downloads can resume.
"""

from __future__ import annotations

import functools
import http.server
import logging
import os
import re
import shutil
from pathlib import Path

from ..errors import CosbuildError

log = logging.getLogger("cosbuild")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler (only GET/HEAD; translate_path drops '..') plus Range."""

    _remaining: int | None = None   # bytes left to send for a 206 answer

    def send_head(self):
        self._remaining = None
        requested = self.headers.get("Range")
        path = self.translate_path(self.path)
        # directories, missing files and odd paths: the base class knows the answers
        if requested is None or not os.path.isfile(path):
            return super().send_head()
        try:
            f = open(path, "rb")
        except OSError:
            self.send_error(404, "File not found")
            return None
        size = os.fstat(f.fileno()).st_size
        span = _parse_range(requested, size)
        if span is None:   # not a single range we understand: the RFC says answer the whole file
            f.close()
            return super().send_head()
        if span == "unsatisfiable":
            f.close()
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        start, end = span
        f.seek(start)
        self._remaining = end - start + 1
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(self._remaining))
        self.send_header("Last-Modified", self.date_time_string(int(os.fstat(f.fileno()).st_mtime)))
        self.end_headers()
        return f

    def copyfile(self, source, outputfile):
        if self._remaining is None:
            return super().copyfile(source, outputfile)
        left = self._remaining
        while left > 0 and (chunk := source.read(min(left, shutil.COPY_BUFSIZE))):
            outputfile.write(chunk)
            left -= len(chunk)

    def end_headers(self):
        self.send_header("Accept-Ranges", "bytes")   # tells clients they may resume
        super().end_headers()

    def log_message(self, format, *args):
        log.debug("serve: %s %s", self.address_string(), format % args)


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # clients going away mid-download are routine, not worth a traceback on stderr
        log.debug("serve: error while answering %s", client_address, exc_info=True)


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
    handler = functools.partial(_Handler, directory=str(directory))
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
