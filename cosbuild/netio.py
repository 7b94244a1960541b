"""HTTP(S) answers within a deadline, for both of cosbuild's HTTP clients: the repository
transport (repos/transport.py) and the registry client (oci/registry.py).

A socket's timeout bounds each connect and each read, not the whole: a server that sends
its answer a byte at a time, each just within the timeout, keeps a client waiting
practically forever, in its status line and headers (http.client takes 100 headers of
64 KiB) as in its body. A Deadline shuts down every connection made for it once it passes,
whatever is being waited for then.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import BinaryIO

from . import __version__
from .errors import CosbuildError

USER_AGENT = f"cosbuild/{__version__}"
CHUNK = 1 << 20


class Expired(CosbuildError):
    """An answer (or a download's attempts) that did not finish within its deadline."""


class Deadline:
    """The end of an exchange: `what` (e.g. "download of X from URL") must finish within
    `seconds` of entering the `with` block.

    Leaving the block after the deadline passed raises its Expired, whatever else happened
    there: an answer cut off by it looks broken, short, or even complete (headers cut off
    are headers that ended)."""

    def __init__(self, seconds: float, what: str, hint: str):
        self.seconds, self.what, self.hint = seconds, what, hint
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "Deadline":
        self.end = time.monotonic() + self.seconds
        self._timer.start()
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self._timer.cancel()
        if self.expired and (kind is None or issubclass(kind, Exception)):
            raise self.error() from None

    def left(self) -> float:
        return self.end - time.monotonic()

    def error(self) -> Expired:
        return Expired(f"{self.what} did not finish within {self.seconds:g} s", hint=self.hint)

    def request(self, url: str, **kwargs) -> urllib.request.Request:
        """A request for an `opener()`, whose connections (a redirect's too) this deadline
        shuts down."""
        request = urllib.request.Request(url, **kwargs)
        request.deadline = self
        return request

    def _watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                sock.shutdown(socket.SHUT_RDWR)
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):   # already closed
                    sock.shutdown(socket.SHUT_RDWR)


def opener(context: ssl.SSLContext | None = None) -> urllib.request.OpenerDirector:
    """urllib for `Deadline.request`s, speaking http(s) only: not build_opener's file://,
    ftp:// and data: handlers, so that whatever URL a server names (a redirect, a token
    realm, an upload location) nothing else is read. `context`: the TLS settings."""
    director = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(),
                    _WatchedHTTP(), _WatchedHTTPS(context=context),
                    urllib.request.HTTPDefaultErrorHandler(), _Redirects(),
                    urllib.request.HTTPErrorProcessor()):
        director.add_handler(handler)
    return director


class _Watched:
    """Each connection is made known to the deadline its request carries."""

    def do_open(self, http_class, req, **kwargs):
        deadline: Deadline = req.deadline

        def connection(*args, **kw):
            conn = http_class(*args, **kw)
            create = conn._create_connection   # the raw socket: TLS handshakes included
            conn._create_connection = lambda *a, **k: deadline._watch(create(*a, **k))
            return conn
        return super().do_open(connection, req, **kwargs)


class _WatchedHTTP(_Watched, urllib.request.HTTPHandler):
    pass


class _WatchedHTTPS(_Watched, urllib.request.HTTPSHandler):
    pass


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects to http(s) only (urllib follows them to ftp:// too), within the deadline of
    the request they answer."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl)).scheme
        if scheme.lower() not in ("http", "https"):
            # as urllib words it for file:// and the like
            raise urllib.error.HTTPError(newurl, code, f"{msg} - Redirection to url '{newurl}' "
                                                       "is not allowed", headers, fp)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        new.deadline = req.deadline
        return new


def fetch(url: str, out: BinaryIO, *, limit: int, seconds: float, timeout: float) -> None:
    """One plain GET of `url` into `out`: at most `limit` bytes, all within `seconds`
    (each connect and read within `timeout`); a failure is one error naming the URL."""
    deadline = Deadline(seconds, f"download of {url}", "the server is too slow or stalls")
    got = 0
    try:
        with deadline, opener().open(deadline.request(url, headers={"User-Agent": USER_AGENT}),
                                     timeout=timeout) as response:
            while chunk := response.read1(CHUNK):
                got += len(chunk)
                if got > limit:
                    raise CosbuildError(f"{url} is larger than the {limit >> 20} MiB a "
                                        "download may be")
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise CosbuildError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # URLError is an OSError; a malformed URL or answer a ValueError
        raise CosbuildError(f"cannot download {url}: {getattr(exc, 'reason', None) or exc}") \
            from None
