"""OCI registries, in pure Python (the distribution API v2 over urllib).

Used where there is no buildah: the repository client reading a `docker` repository (also
inside a booted derivative), publishing one in luet 0.20's layout (repository files as
one-file images, each package as a one-layer image of its files; see `push_tar`), and
`unpack()`, which pulls an image and applies its layers to a folder. Build cache images are
pushed and pulled by buildah (builds/cache.py); only their presence is checked here, which
is quicker than a failing pull.

- TLS is verified; a registry marked insecure is reached over HTTPS without verification,
  or plain HTTP when it does not speak TLS (a local test registry).
- Credentials come from the usual container auth files (`REGISTRY_AUTH_FILE`,
  `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`,
  `~/.docker/config.json`): sent as Basic auth, or traded for a Bearer token when the
  registry asks for one (the token flow of Docker Hub, quay.io, GitLab, ...).
- Every answer of a registry or of its token server, connecting, status line, headers and
  body, has a deadline (netio): `timeout`, or a blob's own, long one; whatever URL a registry
  names, nothing but http(s) is read.

Importable with the standard library, PyYAML and zstandard only.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gzip
import hashlib
import http.client
import json
import math
import os
import platform
import re
import shutil
import ssl
import tarfile
import tempfile
import typing
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, BinaryIO, Callable, Iterator

from .. import netio
from ..errors import CosbuildError, Mismatch, NotFound
from ..fsutil import atomic_path
from ..luetformat import DEFAULT_BOUNDS
from .layers import apply_layer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST))
CHUNK = 1 << 20
# the distribution registry refuses to store larger manifests: anything bigger is not one
MAX_MANIFEST = 4 << 20
MAX_TOKEN_ANSWER = 1 << 20   # a token is a few KB
# a blob (a download or an upload) may take as long as a repository's artifact
BLOB_DEADLINE = DEFAULT_BOUNDS.deadline
MAX_ITEMS = 1024             # layers of an image, images of an index
MAX_INDEX_DEPTH = 3          # an index of indexes of indexes: deeper is not an image
# the compressions container tools recognize layers by (containerd's DecompressStream)
GZIP_MAGIC, ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"
# go-containerregistry's zero time, as in luet's images: a config without a clock in it
ZERO_TIME = "0001-01-01T00:00:00Z"
DOCKER_HUB = "docker.io"
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# what a dropped connection or a broken HTTP answer raises (http.client's own are no OSError)
_BROKEN = (OSError, http.client.HTTPException)
_SLOW_HINT = "the registry is too slow or stalls; try again"
_INSECURE_HINT = ("for a registry without TLS, mark it insecure (`--insecure-registries HOST` "
                  "for builds, `insecure: true` in a client's repository entry)")


# --------------------------------------------------------------------------- answers
#
# Every JSON answer of a registry or of its token server is read by `_answer` into one of the
# frozen dataclasses below, which declare its format: a dataclass is a JSON object (its other
# keys are ignored), a field without a default is required, `tuple[X, ...]` is a list of at
# most MAX_ITEMS, `Annotated[str, Pattern]` a string the pattern matches, int a count. Only
# what is declared is looked at: the nesting is bounded by the declarations.

@dataclass(frozen=True)
class Pattern:
    regex: re.Pattern
    meaning: str


# sha256 only: a digest is checked, and the registry's content with it, by computing it
Digest = Annotated[str, Pattern(re.compile(r"sha256:[0-9a-f]{64}"),
                                "a sha256 digest (sha256: and 64 lower-case hex digits)")]
# it goes into a header as it is
TokenText = Annotated[str, Pattern(re.compile(r"[\x21-\x7e]*"), "a token (visible ASCII)")]


@dataclass(frozen=True)
class Descriptor:
    """A blob of an image: its digest becomes part of a URL, its size bounds the download."""
    digest: Digest
    size: int


@dataclass(frozen=True)
class Manifest:
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = ""   # any


@dataclass(frozen=True)
class IndexEntry:
    digest: Digest
    platform: Platform = Platform()


@dataclass(frozen=True)
class Index:
    """A multi-platform image (OCI image index, Docker manifest list)."""
    manifests: tuple[IndexEntry, ...]


@dataclass(frozen=True)
class TokenAnswer:
    token: TokenText = ""
    access_token: TokenText = ""   # OAuth 2's name for it


def _json(raw: bytes, what: str):
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:   # RecursionError: nested too deeply
        raise _invalid(what, f"not JSON: {exc}") from None


def _answer(form, value, what: str, key: str = ""):
    """`value` (parsed JSON) read as `form` (see above), else a CosbuildError naming `what`
    and the key."""
    if dataclasses.is_dataclass(form):
        if not isinstance(value, dict):
            raise _invalid(what, _wrong(key, "an object", value))
        hints = typing.get_type_hints(form, include_extras=True)
        found = {}
        for f in dataclasses.fields(form):
            inner = f"{key}.{f.name}" if key else f.name
            if f.name in value:
                found[f.name] = _answer(hints[f.name], value[f.name], what, inner)
            elif f.default is dataclasses.MISSING:
                raise _invalid(what, f"{inner} is missing")
        return form(**found)
    if typing.get_origin(form) is tuple:
        if not isinstance(value, list) or len(value) > MAX_ITEMS:
            raise _invalid(what, _wrong(key, f"a list of at most {MAX_ITEMS} items", value))
        item = typing.get_args(form)[0]
        return tuple(_answer(item, v, what, f"{key}[{n}]") for n, v in enumerate(value))
    if typing.get_origin(form) is Annotated:
        pattern = typing.get_args(form)[1]
        if not (isinstance(value, str) and pattern.regex.fullmatch(value)):
            raise _invalid(what, _wrong(key, pattern.meaning, value))
        return value
    if form is int:
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise _invalid(what, _wrong(key, "a whole number >= 0", value))
        return value
    if not isinstance(value, str):   # form is str: the declarations use no other type
        raise _invalid(what, _wrong(key, "a string", value))
    return value


def _wrong(key: str, expected: str, value) -> str:
    # never the repr of a list or an object: it may be large, or nested too deeply to print
    shown = ("an object" if isinstance(value, dict) else "a list" if isinstance(value, list)
             else json.dumps(value)[:80])
    return f"{key or 'it'} must be {expected}, not {shown}"


def _invalid(what: str, problem: str) -> CosbuildError:
    return CosbuildError(f"{what} is not valid: {problem}",
                         hint="the registry is corrupt, hostile or not a container registry")


def _http_url(url: str, what: str) -> str:
    """`url` if it is an http(s) URL (of visible ASCII, as a request line takes it): the
    client reads no file, nor any other scheme, a registry names."""
    try:
        parts = urllib.parse.urlsplit(url) if re.fullmatch(r"[\x21-\x7e]+", url) else None
    except ValueError:   # a malformed [IPv6] host
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise CosbuildError(f"{what} {url!r} is not an http(s) URL: refused",
                            hint="the registry is misconfigured or hostile; nothing was sent "
                                 "there")
    return url


# --------------------------------------------------------------------------- names

@dataclass(frozen=True)
class Reference:
    """`registry/repository:tag` (or `@sha256:...`)."""
    registry: str
    repository: str
    tag: str = "latest"

    def __str__(self) -> str:
        sep = "@" if self.tag.startswith("sha256:") else ":"
        return f"{self.registry}/{self.repository}{sep}{self.tag}"

    def with_tag(self, tag: str) -> "Reference":
        return Reference(self.registry, self.repository, tag)

    def manifest_path(self) -> str:
        """The API path of its manifest; the tag or digest is checked: it is part of a URL."""
        if ":" in self.tag:
            _answer(Digest, self.tag, f"image {self}", "its digest")
        elif not _TAG.fullmatch(self.tag):
            raise CosbuildError(f"image {self}: {self.tag!r} is not a valid tag",
                                hint="tags are up to 128 letters, digits, '_', '.' and '-'")
        return f"{self.repository}/manifests/{self.tag}"


def registry_of(name: str) -> str | None:
    """The registry host a repository name starts with, None for a local-only name
    (`luet/cache` lives in local storage as `localhost/luet/cache`)."""
    first, _, rest = name.partition("/")
    return first if rest and ("." in first or ":" in first) else None


def parse_reference(text: str, tag: str | None = None) -> Reference:
    """A reference as container tools read it; `tag` overrides any tag in `text`."""
    name, digest = (text.split("@", 1) + [""])[:2]
    if not digest:
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name, digest = name.rsplit(":", 1)
    host = registry_of(name)
    repository = name[len(host) + 1:] if host else name
    if host is None:
        host = DOCKER_HUB   # what container tools assume for a bare name
        if "/" not in repository:
            repository = f"library/{repository}"
    if not repository or not re.fullmatch(r"[a-z0-9]+(?:[._/-]+[a-z0-9]+)*", repository):
        raise CosbuildError(f"invalid image reference '{text}'",
                            hint="use REGISTRY/REPOSITORY[:TAG], lower case, e.g. "
                                 "registry.example.org/cos/repo")
    return Reference(host, repository, tag or digest or "latest")


def tag_for(name: str) -> str:
    """The image tag of a repository file or package (luet: `+` becomes `-`)."""
    tag = name.replace("+", "-")
    if not _TAG.fullmatch(tag):
        raise CosbuildError(f"'{name}' cannot be an image tag",
                            hint="tags are up to 128 letters, digits, '_', '.' and '-'")
    return tag


# --------------------------------------------------------------------------- credentials

def auth_files(env=None) -> list[Path]:
    """Where container tools keep credentials, in the order they look."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or "~").expanduser()
    if env.get("REGISTRY_AUTH_FILE"):
        return [Path(env["REGISTRY_AUTH_FILE"])]
    out = [Path(env["XDG_RUNTIME_DIR"]) / "containers/auth.json"] if env.get("XDG_RUNTIME_DIR") else []
    return out + [home / ".config/containers/auth.json", home / ".docker/config.json"]


def credentials(registry: str, repository: str = "", env=None) -> tuple[str, str] | None:
    """(user, password) for a registry from the first auth file that has an entry for it;
    an entry for `host/namespace` wins over one for `host`."""
    wanted = f"{registry}/{repository}".rstrip("/")
    for path in auth_files(env):
        try:
            found = _credentials(json.loads(path.read_text()), wanted)
        except FileNotFoundError:
            continue
        # whatever the shape of the file: a list for an object, a number for a string, ...
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise CosbuildError(f"cannot read the container auth file: {exc}", file=path,
                                hint="fix or remove it, then log in again") from None
        if found:
            return found
    return None


def _credentials(doc: dict, wanted: str) -> tuple[str, str] | None:
    best = None
    for key, entry in (doc.get("auths") or {}).items():
        name = re.sub(r"^https?://", "", key).removesuffix("/v1/").rstrip("/")
        if name == "index.docker.io":
            name = DOCKER_HUB
        if (wanted == name or wanted.startswith(name + "/")) and \
                (best is None or len(name) > len(best[0])):
            best = (name, entry)
    if best is None:
        return None
    entry = best[1]
    if entry.get("auth"):
        found = tuple(base64.b64decode(entry["auth"]).decode().partition(":")[::2])
    elif entry.get("username"):
        found = entry["username"], entry.get("password", "")
    else:
        return None
    # they go into a header
    if not all(isinstance(x, str) and x.isprintable() for x in found):
        raise ValueError(f"the entry for {best[0]} has a user or password that is not text")
    return found


# --------------------------------------------------------------------------- the API

@dataclass
class Registry:
    """One registry host; remembers how it answered (scheme, tokens) between requests."""
    host: str
    insecure: bool = False
    timeout: float = 60   # to connect and for each read; an API answer's deadline
    _base: str | None = field(default=None, repr=False)
    _auth: dict = field(default_factory=dict, repr=False)   # scope -> Authorization header
    _challenge: str | None = field(default=None, repr=False)

    def __post_init__(self):
        context = ssl.create_default_context()
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._opener = netio.opener(context)

    def base(self) -> str:
        """https://HOST, or http://HOST for an insecure registry that does not speak TLS."""
        if self._base is None:
            endpoint = "registry-1.docker.io" if self.host == DOCKER_HUB else self.host
            schemes = ("https", "http") if self.insecure else ("https",)
            for n, scheme in enumerate(schemes, 1):
                try:
                    self._ping(f"{scheme}://{endpoint}")
                    break
                except _BROKEN as exc:
                    if n == len(schemes):
                        raise self._unreachable(exc) from None
                except netio.Expired:   # as a timeout: the next scheme may answer
                    if n == len(schemes):
                        raise
        return self._base

    def _ping(self, base: str) -> None:
        url = f"{base}/v2/"
        with self._deadline(f"registry {self.host}: GET {url}") as deadline:
            try:
                self._opener.open(deadline.request(url, headers={"User-Agent": netio.USER_AGENT}),
                                  timeout=self.timeout).close()
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code != 401:
                    raise CosbuildError(f"{self.host} does not look like a container registry "
                                        f"(GET /v2/ answered HTTP {exc.code})",
                                        hint="check the registry address") from None
                self._challenge = exc.headers.get("WWW-Authenticate", "")
        self._base = base

    def _deadline(self, what: str, seconds: float | None = None) -> netio.Deadline:
        """The deadline of an answer (connecting, status line, headers, body): `seconds`,
        else the timeout."""
        return netio.Deadline(seconds or self.timeout, what, _SLOW_HINT)

    def _unreachable(self, exc: BaseException) -> CosbuildError:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        reason = getattr(reason, "strerror", None) or str(reason).strip() or type(reason).__name__
        return CosbuildError(f"cannot reach registry {self.host}: {reason}",
                             hint=f"check that it is up and the address is right; {_INSECURE_HINT}")

    @contextlib.contextmanager
    def request(self, method: str, path: str, repository: str, *, push: bool = False,
                headers: dict | None = None, data=None, ok=(200,), what: str | None = None,
                deadline: float | None = None) -> Iterator[http.client.HTTPResponse]:
        """An API request (path below /v2/ or an absolute URL): its open response, to be
        read in the `with` block, which the answer's deadline (`deadline` seconds, else the
        timeout) ends; `what` the answer is, for its error.

        A 401 is answered once with credentials (Basic, or a Bearer token for the
        repository's pull or pull+push scope), which later requests reuse; other errors
        raise HTTPError."""
        base = self.base()
        url = path if "://" in path else f"{base}/v2/{path}"
        scope = f"repository:{repository}:{'pull,push' if push else 'pull'}"
        challenge = None
        for attempt in (1, 2):
            if challenge is not None:   # outside the answer's deadline: the token has its own
                self._auth[scope] = self._authorize(challenge, scope, repository)
            with self._deadline(what or f"registry {self.host}: {method} {url}",
                                deadline) as clock:
                request = clock.request(url, method=method, data=data,
                                        headers={"User-Agent": netio.USER_AGENT, **(headers or {})})
                if scope in self._auth:
                    # not sent on to a redirect target (blob storage has its own signed URL)
                    request.add_unredirected_header("Authorization", self._auth[scope])
                try:
                    response = self._opener.open(request, timeout=self.timeout)
                except urllib.error.HTTPError as exc:
                    # first time, or an expired token; a streamed body cannot be sent twice
                    if exc.code == 401 and attempt == 1 and not hasattr(data, "read"):
                        challenge = exc.headers.get("WWW-Authenticate", "") or \
                            self._challenge or ""
                        exc.close()
                        continue
                    if exc.code in (401, 403):
                        exc.close()
                        raise CosbuildError(
                            f"registry {self.host} refused {'push' if push else 'pull'} access "
                            f"to {repository} (HTTP {exc.code})",
                            hint="log in (`buildah login` or `podman login`) so the container "
                                 "auth file has credentials for it") from None
                    raise
                except _BROKEN as exc:
                    raise self._unreachable(exc) from None
                with response:
                    if response.status not in ok:
                        raise CosbuildError(f"registry {self.host}: unexpected answer HTTP "
                                            f"{response.status} to {method} {url}")
                    yield response
                return
        raise AssertionError("unreachable")

    def _authorize(self, challenge: str, scope: str, repository: str) -> str:
        creds = credentials(self.host, repository)
        basic = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode() if creds else None
        kind, _, rest = challenge.partition(" ")
        if kind.lower() == "basic":
            if basic is None:
                raise CosbuildError(f"registry {self.host} needs credentials for {repository}",
                                    hint="log in (`buildah login` or `podman login`)")
            return basic
        if kind.lower() != "bearer":
            raise CosbuildError(f"registry {self.host} asks for unsupported authentication "
                                f"'{kind}'")
        params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        # the credentials go there: never to a file or another scheme
        realm = _http_url(params.get("realm", ""), f"registry {self.host}: the token realm")
        query = {"service": params.get("service", ""), "scope": scope}
        what = f"registry {self.host}: the answer of token server {realm}"
        with self._deadline(what) as deadline:
            request = deadline.request(f"{realm}?{urllib.parse.urlencode(query)}",
                                       headers={"User-Agent": netio.USER_AGENT})
            if basic:
                request.add_header("Authorization", basic)
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    raw = self._read(response, MAX_TOKEN_ANSWER, what)
            except urllib.error.HTTPError as exc:
                exc.close()
                raise CosbuildError(f"registry {self.host}: token server refused access to "
                                    f"{repository} (HTTP {exc.code})",
                                    hint="log in (`buildah login` or `podman login`)") from None
            except _BROKEN as exc:
                raise CosbuildError(f"registry {self.host}: no token from {realm}: "
                                    f"{exc}") from None
        answer = _answer(TokenAnswer, _json(raw, what), what)
        if not (answer.token or answer.access_token):
            raise _invalid(what, "it has no token")
        return f"Bearer {answer.token or answer.access_token}"

    def _read(self, response, limit: int, what: str) -> bytes:
        """A whole answer of at most `limit` bytes."""
        raw = b"".join(self._chunks(response, limit))
        if len(raw) > limit:
            raise _invalid(what, f"larger than {limit} bytes")
        return raw

    def _chunks(self, response, limit: float) -> Iterator[bytes]:
        """The body of `response` as it comes, at most `limit` + 1 bytes (the caller tells a
        longer one by it); the answer's deadline ends it."""
        got = 0
        try:
            # read1: what has come, not a whole CHUNK that may never come
            while got <= limit and (chunk := response.read1(min(CHUNK, limit + 1 - got))):
                got += len(chunk)
                yield chunk
        except _BROKEN as exc:   # mid-answer
            raise self._unreachable(exc) from None

    # ----------------------------------------------------------------- reading

    def exists(self, ref: Reference) -> bool:
        try:
            with self.request("HEAD", ref.manifest_path(), ref.repository,
                              headers={"Accept": ACCEPT}):
                return True
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                return False
            raise self._failed("look up", ref, exc) from None

    def manifest(self, ref: Reference, depth: int = 0) -> Manifest:
        """The image manifest of `ref`; from a multi-platform index, this machine's one."""
        what = f"image {ref}: the registry's manifest"
        doc = _json(self.raw_manifest(ref), what)
        if not (isinstance(doc, dict) and (doc.get("mediaType") in (OCI_INDEX, DOCKER_LIST)
                                           or "manifests" in doc)):
            return _answer(Manifest, doc, what)
        if depth >= MAX_INDEX_DEPTH:
            raise _invalid(what, f"an index more than {MAX_INDEX_DEPTH} indexes deep")
        arch = _goarch()
        for m in _answer(Index, doc, what).manifests:
            if m.platform.os == "linux" and m.platform.architecture in ("", arch):
                return self.manifest(ref.with_tag(m.digest), depth + 1)
        raise CosbuildError(f"image {ref} has no linux/{arch} variant")

    def raw_manifest(self, ref: Reference) -> bytes:
        """The manifest of `ref` as the registry stores it: its sha256 is the image's digest."""
        try:
            with self.request("GET", ref.manifest_path(), ref.repository,
                              headers={"Accept": ACCEPT},
                              what=f"image {ref}: the registry's manifest") as response:
                raw = b"".join(self._chunks(response, MAX_MANIFEST))
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                raise NotFound(f"image {ref} does not exist",
                                    hint="check the name; the repository may not be published "
                                         "(yet)") from None
            raise self._failed("read", ref, exc) from None
        if ref.tag.startswith("sha256:") and _digest(raw)[0] != ref.tag:
            # asked for by digest (a signed repository's): the registry must answer that one
            raise Mismatch(f"image {ref}: the registry's manifest does not have that digest "
                           f"(got {_digest(raw)[0]})", reason="hash",
                           hint="the registry was tampered with; nothing was installed")
        if len(raw) > MAX_MANIFEST:
            raise CosbuildError(f"image {ref}: the registry's manifest is not valid (larger "
                                f"than {MAX_MANIFEST} bytes)",
                                hint="the registry is corrupt or not a container registry")
        return raw

    def blob(self, repository: str, digest: str, dest: Path, size: int | None = None,
             deadline: float = BLOB_DEADLINE) -> Path:
        """Download a blob into `dest`, all or nothing, checking its digest and (as the
        descriptor says) its size: never more than `size` bytes are read, and the whole
        answer must come within `deadline` seconds."""
        _answer(Digest, digest, f"blob of {self.host}/{repository}", "its digest")
        sha, got = hashlib.sha256(), 0
        try:
            # the deadline's Expired leaves `dest` as it was too
            with atomic_path(dest) as tmp, tmp.open("wb") as out, \
                    self.request("GET", f"{repository}/blobs/{digest}", repository,
                                 what=f"download of blob {digest} from {self.host}/{repository}",
                                 deadline=deadline) as response:
                for chunk in self._chunks(response, math.inf if size is None else size):
                    sha.update(chunk)
                    out.write(chunk)
                    got += len(chunk)
                if size is not None and got != size:
                    raise CosbuildError(f"blob {digest} of {self.host}/{repository}: "
                                        f"{'more than' if got > size else f'{got} bytes of'} "
                                        f"the {size} bytes its descriptor announces",
                                        hint="the download was damaged or the registry is "
                                             "corrupt; try again")
                if f"sha256:{sha.hexdigest()}" != digest:
                    raise CosbuildError(f"blob {digest} of {self.host}/{repository} does not "
                                        f"match its digest (got sha256:{sha.hexdigest()})",
                                        hint="the download was damaged or the registry is "
                                             "corrupt; try again")
        except urllib.error.HTTPError as exc:
            exc.close()
            raise self._failed("download", f"{repository}@{digest}", exc) from None
        return dest

    # ----------------------------------------------------------------- writing

    def upload(self, repository: str, data: bytes | Path) -> dict:
        """Upload a blob unless the registry has it; returns its descriptor."""
        digest, size = _digest(data)
        try:
            with self.request("HEAD", f"{repository}/blobs/{digest}", repository, push=True):
                return {"digest": digest, "size": size}
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code != 404:
                raise self._failed("push to", repository, exc) from None
        try:
            with self.request("POST", f"{repository}/blobs/uploads/", repository, push=True,
                              ok=(202,)) as response:
                location = _http_url(urllib.parse.urljoin(self.base(),
                                                          response.headers.get("Location", "")),
                                     f"registry {self.host}: the upload location")
            url = f"{location}{'&' if '?' in location else '?'}digest={urllib.parse.quote(digest)}"
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            with (contextlib.nullcontext(data) if isinstance(data, bytes)
                  else data.open("rb")) as body, \
                    self.request("PUT", url, repository, push=True, headers=headers, data=body,
                                 ok=(201,), deadline=BLOB_DEADLINE):
                pass
        except urllib.error.HTTPError as exc:
            exc.close()
            raise self._failed("push to", repository, exc) from None
        return {"digest": digest, "size": size}

    def put_manifest(self, ref: Reference, manifest: bytes, media_type: str) -> None:
        try:
            with self.request("PUT", ref.manifest_path(), ref.repository, push=True,
                              headers={"Content-Type": media_type}, data=manifest, ok=(201,)):
                pass
        except urllib.error.HTTPError as exc:
            exc.close()
            raise self._failed("push", ref, exc) from None

    def _failed(self, verb: str, what, exc: urllib.error.HTTPError) -> CosbuildError:
        return CosbuildError(f"registry {self.host}: cannot {verb} {what}: HTTP {exc.code} {exc.reason}",
                             hint="check the registry's log and access rules")


class Registries:
    """The registries of one run, by host; `insecure` lists the hosts without verified TLS."""

    def __init__(self, insecure=()):
        self.insecure = frozenset(insecure)
        self._known: dict[str, Registry] = {}

    def __getitem__(self, host: str) -> Registry:
        if host not in self._known:
            self._known[host] = Registry(host, insecure=host in self.insecure)
        return self._known[host]


# --------------------------------------------------------------------------- images
#
# Images as luet 0.20 makes them for a docker repository (installer/repository_docker.go):
# artifact.GenerateFinalImage -> image.CreateTar turns a tar into a one-layer image, which
# docker pushes: Docker media types, a gzip layer, no labels or annotations. luet reads no
# other layers: its go-containerregistry (0.6) gunzips every layer it extracts.

def push_tar(registry: Registry, ref: Reference, write_tar: Callable[[BinaryIO], None],
             work: Path) -> str:
    """Push a one-layer image whose layer is the uncompressed tar `write_tar(out)` writes;
    the layer is compressed into `work` first: its digest goes into the manifest. Returns
    the manifest's digest (what a signed docker repository vouches for)."""
    with tempfile.TemporaryDirectory(dir=work, prefix=".layer-") as tmp:
        blob = Path(tmp) / "layer.tar.gz"
        # no time or file name in the gzip header: the same tar gives the same blob
        with blob.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                   mtime=0, compresslevel=6) as gz:
            out = _Hashing(gz)
            write_tar(out)
        layer = registry.upload(ref.repository, blob)
    config = _canonical({
        "architecture": _goarch(), "os": "linux", "created": ZERO_TIME, "config": {},
        "history": [{"created": ZERO_TIME, "created_by": "cosbuild",
                     "comment": "luet repository image"}],
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{out.sha.hexdigest()}"]}})
    manifest = _canonical({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, **registry.upload(ref.repository, config)},
        "layers": [{"mediaType": DOCKER_LAYER, **layer}]})
    registry.put_manifest(ref, manifest, DOCKER_MANIFEST)
    return _digest(manifest)[0]


def push_package(registry: Registry, ref: Reference, artifact: Path, work: Path) -> str:
    """Push a package image: its layer is the artifact's tar, byte for byte, recompressed
    (luet's CreateTar decompresses the artifact), so unpacked it is the package's files."""
    def write(out: BinaryIO) -> None:
        with decompressed(artifact, f"artifact {artifact}") as stream:
            shutil.copyfileobj(stream, out, CHUNK)
    return push_tar(registry, ref, write, work)


def push_file(registry: Registry, ref: Reference, path: Path, work: Path) -> str:
    """Push `path` as a one-file image holding it at /<file name> (luet's
    CreateArtifactForFile tars a folder with the file alone in it)."""
    def write(out: BinaryIO) -> None:
        with path.open("rb") as f, tarfile.open(fileobj=out, mode="w|",
                                                format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(path.name)
            info.size, info.mode, info.mtime = os.fstat(f.fileno()).st_size, 0o644, 0
            tar.addfile(info, f)
    return push_tar(registry, ref, write, work)


@contextlib.contextmanager
def layer_tar(registry: Registry, ref: Reference, work: Path, deadline: float = BLOB_DEADLINE,
              limit: int | None = None) -> Iterator[BinaryIO]:
    """The uncompressed tar of the one-layer image `ref`; its blob is downloaded into `work`
    and checked against the manifest's digest and size, as luet does (go-containerregistry's
    verify.ReadCloser)."""
    layers = registry.manifest(ref).layers
    if len(layers) != 1:
        raise CosbuildError(f"image {ref} has {len(layers)} layers, expected one",
                            hint="luet and cosbuild publish repository files and packages as "
                                 "one-layer images")
    layer = layers[0]
    if limit is not None and layer.size > limit:
        raise CosbuildError(f"image {ref}: its layer is {layer.size} bytes, more than the "
                            f"{limit} it may be", hint="the repository is damaged or hostile")
    with tempfile.TemporaryDirectory(dir=work, prefix=".layer-") as tmp:
        blob = registry.blob(ref.repository, layer.digest, Path(tmp) / "layer", layer.size,
                             deadline)
        with decompressed(blob, f"image {ref}") as stream:
            yield stream


def pull_file(registry: Registry, ref: Reference, name: str, dest: Path,
              limit: int | None = None, deadline: float = BLOB_DEADLINE) -> Path:
    """The file `name` from the one-file image `ref`, into `dest` (all or nothing), if it
    is at most `limit` bytes."""
    with layer_tar(registry, ref, dest.parent, deadline, limit) as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    if member.isreg() and str(PurePosixPath(member.name.lstrip("/"))) == name:
                        if limit is not None and member.size > limit:
                            raise CosbuildError(f"image {ref}: {name} is {member.size} bytes, "
                                                f"more than the {limit} it may be",
                                                hint="the repository is damaged or hostile")
                        with atomic_path(dest) as out, out.open("wb") as f:
                            shutil.copyfileobj(tar.extractfile(member), f, CHUNK)
                        return dest
        except (tarfile.TarError, EOFError) as exc:
            raise CosbuildError(f"image {ref}: damaged layer ({exc})") from None
    raise CosbuildError(f"image {ref} does not hold {name}",
                        hint="it was not published as a cosbuild/luet repository file")


def unpack(ref: str | Reference, dest: Path, registries: Registries | None = None) -> None:
    """Pull an image and apply its layers (with whiteouts) to `dest`, which must not exist or
    be empty: it appears complete or not at all."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CosbuildError(f"{dest} exists and is not an empty folder",
                            hint="choose a new folder to unpack into")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.unpack-"))
    try:
        root = work / "rootfs"
        root.mkdir()
        apply_image(ref, root, work, registries)
        if dest.exists():
            dest.rmdir()
        os.replace(root, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def apply_image(ref: str | Reference, root: Path, work: Path,
                registries: Registries | None = None) -> None:
    """Pull an image and apply its layers to `root` in place (one layer at a time in `work`)."""
    ref = parse_reference(ref) if isinstance(ref, str) else ref
    registry = (registries or Registries())[ref.registry]
    # `work` may be in `root` (cos-upgrade has no room elsewhere): no layer may touch it
    keep = str(work.relative_to(root)) if work.is_relative_to(root) else ""
    for n, layer in enumerate(registry.manifest(ref).layers):
        blob = registry.blob(ref.repository, layer.digest, work / f"layer-{n}", layer.size)
        what = f"{ref} layer {n + 1}"
        with decompressed(blob, what) as stream:
            apply_layer(stream, root, what, keep)
        blob.unlink()


@contextlib.contextmanager
def decompressed(path: Path, what: str) -> Iterator[BinaryIO]:
    """The uncompressed stream of a tar file: gzip, zstd or plain, told apart by their first
    bytes as container tools do (luet: containerd's DecompressStream)."""
    import zlib
    with path.open("rb") as f:
        magic = f.read(4)
        f.seek(0)
        if magic.startswith(GZIP_MAGIC):
            yield _Checked(gzip.GzipFile(fileobj=f), what, (OSError, EOFError, zlib.error))
        elif magic == ZSTD_MAGIC:
            import zstandard
            yield _Checked(zstandard.ZstdDecompressor().stream_reader(f), what,
                           (zstandard.ZstdError, OSError))
        else:
            yield f


class _Checked:
    """A decompressing reader whose decoding errors say which file is damaged."""

    def __init__(self, stream, what: str, errors: tuple):
        self.stream, self.what, self.errors = stream, what, errors

    def read(self, size: int = -1) -> bytes:
        try:
            return self.stream.read(size)
        except self.errors as exc:
            raise CosbuildError(f"{self.what}: damaged compressed data ({exc})",
                                hint="download or build it again") from None


class _Hashing:
    """A write-only file that hashes what it passes on (a layer's diff_id)."""

    def __init__(self, out: BinaryIO):
        self.out, self.sha = out, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.out.write(data)


def _digest(data: bytes | Path) -> tuple[str, int]:
    if isinstance(data, bytes):
        return f"sha256:{hashlib.sha256(data).hexdigest()}", len(data)
    with data.open("rb") as f:
        return f"sha256:{hashlib.file_digest(f, 'sha256').hexdigest()}", data.stat().st_size


def _canonical(doc: dict) -> bytes:
    # the same content gives the same bytes, hence the same digest: re-publishing is a no-op
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _goarch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)
