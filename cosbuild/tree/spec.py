"""The spec keywords, declared once: this table drives parsing, validation, defaults and docs.

Each file kind of the package tree (definition.yaml, build.yaml, finalize.yaml and the
cosbuild `bootstrap` section) has a table of `Keyword`s. `parse()` turns a YAML mapping into
the fields of a frozen dataclass, rejecting unknown keys (with a "did you mean" hint) and
wrong types with the file, line and key at fault. `keyword_reference()` prints the same
tables as Markdown for the docs.
"""

from __future__ import annotations

import logging
import re
import types
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import CosbuildError, did_you_mean
from ..terminal import safe
from .versions import (NAME_RULE, VERSION_RULE, PackageRef, check_name, check_selector,
                       check_version, parse_ref)
from .yamlio import LineMap, load_mapping

log = logging.getLogger("cosbuild")


# --------------------------------------------------------------------------- value types

@dataclass(frozen=True)
class Where:
    """Where a value came from, for error messages; `written`, the text of a plain scalar YAML
    read as other than a string (a number, a boolean, a date), when known."""
    file: str
    line: int | None
    key: str
    written: str | None = None

    def error(self, message: str, hint: str | None = None) -> CosbuildError:
        return CosbuildError(message, file=self.file, line=self.line, key=self.key, hint=hint)


@dataclass(frozen=True)
class Type:
    describe: str
    parse: Callable[[Any, Where], Any]


def _scalar_str(value, where: Where) -> str:
    """A string; a plain scalar YAML read as a number, boolean or date is its text as written,
    as go-yaml v2 decodes it into a Go string field (`name: y` is "y", `version: 1.10` "1.10")."""
    if value is None or isinstance(value, (dict, list)):
        raise where.error(f"expected a string, got {_typename(value)}")
    if where.written is not None:
        return where.written
    if isinstance(value, bool):
        raise where.error(f"expected a string, got {_typename(value)}")
    return str(value)


def _exact_str(value, where: Where) -> str:
    """A string as written. Without the text as written (a value not read from YAML text, as
    in JSON), a float is refused: 1.10 would have become 1.1; an integer is its decimal."""
    if isinstance(value, float) and where.written is None:
        raise where.error(f"read as the number {value!r}, not as the text written "
                          "(YAML reads 1.10 as 1.1)",
                          hint=f'quote it, e.g. {where.key.rpartition(".")[2]}: "1.10"')
    return _scalar_str(value, where)


def _identifier(what: str) -> Callable[[Any, Where], str]:
    return lambda value, where: check_name(_exact_str(value, where), what, where)


# a file name is at most 255 bytes: room for the longest suffix and a temporary name's
FILE_NAME_MAX = 200


def file_name(text: str, where: Where) -> str:
    """`text` as the name of one file of the build folder (an artifact's, an ISO's), or a
    clear error: the last line before a name from a spec becomes a path. Only printable
    text: a control character (NUL, newline, ESC, DEL, a C1 code), a format one (a bidi
    override) or a line separator would make a name that splits a listing's lines or lies
    on the terminal."""
    if (text in ("", ".", "..") or "/" in text or not text.isprintable()
            or len(text.encode()) > FILE_NAME_MAX):
        shown = text if len(text) <= 60 else f"{text[:60]}..."
        raise where.error(f"{shown!r} cannot name a file in the build folder",
                          hint=f"one file name of at most {FILE_NAME_MAX} bytes, without '/' "
                               "or control characters")
    return text


def image_ref(ref: str) -> str:
    """`ref`, when it can only be read as an image reference: the references buildah is given
    come from specs (checked as they are read too, by OPT_IMAGE) and from repository indexes
    (`package_cacheimage`), and one starting with `-` would be read as an option."""
    if not ref or ref[0] == "-" or not ref.isprintable() or any(c.isspace() for c in ref):
        raise CosbuildError(f"invalid image reference '{safe(ref)}'",
                            hint="a registry/name[:tag][@digest] reference")
    return ref


def _typename(value) -> str:
    return {dict: "a mapping", LineMap: "a mapping", list: "a list", bool: "a boolean",
            type(None): "nothing"}.get(type(value), type(value).__name__)


def _bool(value, where: Where) -> bool:
    if not isinstance(value, bool):
        raise where.error(f"expected true or false, got {value!r}")
    return value


def _list_of(item: Callable[[Any, Where], Any]) -> Callable[[Any, Where], tuple]:
    def parse(value, where: Where) -> tuple:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise where.error(f"expected a list, got {_typename(value)}")
        return tuple(item(v, where) for v in value)
    return parse


def _str_map(value, where: Where) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise where.error(f"expected a mapping of strings, got {_typename(value)}")
    written = getattr(value, "written", {})
    return tuple(sorted((str(k), _scalar_str(v, Where(where.file, where.line, where.key,
                                                      written.get(k))))
                        for k, v in value.items()))


def _regex(value, where: Where) -> str:
    text = _scalar_str(value, where)
    try:
        re.compile(text)
    except re.error as exc:
        raise where.error(f"invalid regular expression {text!r}: {exc}",
                          hint="use Python/RE2 syntax, e.g. ^/usr/share/doc") from None
    return text


def _env_entry(value, where: Where) -> str:
    text = _scalar_str(value, where)
    if "=" not in text or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", text):
        raise where.error(f"invalid env entry {text!r}", hint="write NAME=value")
    return text


def _any(value, where: Where):
    return value


def _ref(value, where: Where) -> PackageRef:
    if isinstance(value, str):  # "category/name" or "category/name@selector" shorthand
        return parse_ref(value, where)
    if not isinstance(value, dict):
        raise where.error(f"expected a package reference {{name, category, version}}, got {_typename(value)}")
    # luet decodes an entry into its Package struct, which ignores other keys (a `<<:` merge
    # of a whole package brings `labels`, `branch`, ...)
    fields = parse(REF_KEYWORDS, value, where.file, what=f"{where.key} entry",
                   warn_unknown=True, key_prefix=f"{where.key}.")
    line = value.line_of("version") if isinstance(value, LineMap) else where.line
    check_selector(fields["version"], Where(where.file, line, f"{where.key}.version"))
    return PackageRef(**fields)


def _copy(value, where: Where) -> "CopySpec":
    if not isinstance(value, dict):
        raise where.error(f"expected a mapping {{package|image, source, destination}}, got {_typename(value)}")
    fields = parse(COPY_KEYWORDS, value, where.file, what="copy entry", warn_unknown=True)
    inner = Where(where.file, value.line, where.key)
    if (fields["package"] is None) == (fields["image"] is None):
        raise inner.error("a copy entry needs exactly one of 'package' or 'image'")
    if not fields["source"] or not fields["destination"]:
        raise inner.error("a copy entry needs 'source' and 'destination'")
    return CopySpec(**fields)


def _bootstrap(value, where: Where) -> "Bootstrap":
    if not isinstance(value, dict):
        raise where.error(f"expected a mapping {{suite, variant, packages, ...}}, got {_typename(value)}")
    fields = parse(BOOTSTRAP_KEYWORDS, value, where.file, what="bootstrap")
    if not fields["suite"]:
        raise Where(where.file, value.line, "bootstrap.suite").error(
            "missing", hint="name a Debian suite, e.g. suite: bookworm")
    return Bootstrap(**fields)


def _optional_ref(value, where: Where):
    return None if value is None else _ref(value, where)


def _optional_str(value, where: Where):
    return None if value is None else _scalar_str(value, where)


def _optional_image(value, where: Where):
    """An image reference, by the rule buildah is given one (image_ref), checked as the spec
    is read so that a bad one is refused naming its file and key, not halfway through a
    build; an empty one (a template value left unset) is no image, as before."""
    text = _optional_str(value, where)
    if text:
        try:
            image_ref(text)
        except CosbuildError as exc:
            raise where.error(exc.message, exc.hint) from None
    return text


def _retrieve(value, where: Where) -> str:
    """A retrieve entry: a glob of the build folder, or an http(s) URL (luet's ADD fetches
    no other scheme; a file:// URL would read the host) whose last part names the file."""
    text = _scalar_str(value, where)
    if "://" in text:
        try:
            url = urllib.parse.urlsplit(text)
            host = url.hostname
        except ValueError:   # a broken [IPv6] host or port
            host = None
        if not host or url.scheme.lower() not in ("http", "https"):
            raise where.error(f"'{safe(text)}' is not an http(s) URL",
                              hint="retrieve downloads from http:// or https:// only")
        file_name(url.path.rstrip("/").rsplit("/", 1)[-1], where)
    return text


STR = Type("string", _scalar_str)
NAME = Type("name (one path component)", _identifier("package name"))
CATEGORY = Type("category (one path component)", _identifier("category"))
VERSION = Type("version (its text as written)", lambda v, w: check_version(_exact_str(v, w), w))
SELECTOR = Type("version selector (a string)", _exact_str)
def _cache_dir(value, where: Where) -> str:
    """A folder of the build container, absolute and normalised, that a cache is mounted on."""
    text = _scalar_str(value, where)
    parts = text.split("/")
    if not text.startswith("/") or any(p in (".", "..") for p in parts) or not text.strip("/"):
        raise where.error(f"'{safe(text)}' is not an absolute folder path below /",
                          hint="name the folder the compiler keeps its cache in, e.g. /tmp/gocache")
    return "/" + "/".join(p for p in parts if p)


OPT_STR = Type("string", _optional_str)
OPT_IMAGE = Type("image reference", _optional_image)
BOOL = Type("boolean", _bool)
STRS = Type("list of strings", _list_of(_scalar_str))
RETRIEVES = Type("list of globs or http(s) URLs", _list_of(_retrieve))
ENV = Type("list of NAME=value", _list_of(_env_entry))
REGEXES = Type("list of regular expressions", _list_of(_regex))
CACHE_DIRS = Type("list of absolute folder paths", _list_of(_cache_dir))
STR_MAP = Type("mapping of strings", _str_map)
REFS = Type("list of {name, category, version}", _list_of(_ref))
OPT_REF = Type("{name, category, version}", _optional_ref)
COPIES = Type("list of {package|image, source, destination}", _list_of(_copy))
BOOTSTRAP = Type("mapping (see the bootstrap table)", lambda v, w: None if v is None else _bootstrap(v, w))
ANY = Type("any YAML value", _any)


def _mib(value, where: Where) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise where.error(f"expected a size in MiB (a positive integer), got {value!r}")
    return value


MIB = Type("size in MiB", _mib)


def nested(table: tuple, what: str, *, warn_unknown: bool = False) -> Type:
    """A mapping validated by its own keyword table (iso.yaml's `packages:`, ...);
    `warn_unknown` as in parse()."""
    def parse_nested(value, where):
        if not isinstance(value, dict):
            raise where.error(f"expected a mapping, got {_typename(value)}")
        return types.MappingProxyType(parse(table, value, where.file, what=what,
                                            warn_unknown=warn_unknown))
    return Type(f"mapping ({what})", parse_nested)


@dataclass(frozen=True)
class Keyword:
    name: str
    type: Type
    default: Any
    doc: str
    required: bool = False


def parse(table: tuple[Keyword, ...], data: dict, file: str | Path, *, what: str,
          strict: bool = True, warn_unknown: bool = False,
          key_prefix: str = "") -> dict[str, Any]:
    """Validate `data` against `table`; return {keyword: parsed value} with defaults filled in.
    An unknown key is an error when `strict`, else ignored; `warn_unknown` makes it a
    warning instead, for a format whose reader ignores unknown keys (luet-makeiso's). A
    wrong value's error names its key after `key_prefix` (`requires.name`)."""
    file = str(file)
    known = {k.name: k for k in table}
    lines, written = getattr(data, "lines", {}), getattr(data, "written", {})
    line_of = lambda key: lines.get(key, getattr(data, "line", None))  # noqa: E731
    if strict or warn_unknown:
        for key in data:
            if key not in known:
                error = CosbuildError(f"unknown keyword '{key}' in {what}"
                                      + (", ignored" if warn_unknown else ""), file=file,
                                      line=line_of(key), key=str(key),
                                      hint=did_you_mean(str(key), known)
                                      or f"known keywords: {', '.join(sorted(known))}")
                if not warn_unknown:
                    raise error
                log.warning("%s", error)
    out = {}
    for kw in table:
        if kw.name in data and data[kw.name] is not None:
            out[kw.name] = kw.type.parse(data[kw.name], Where(
                file, line_of(kw.name), key_prefix + kw.name, written.get(kw.name)))
        elif kw.required:
            raise CosbuildError(f"missing required keyword '{kw.name}' in {what}", file=file,
                                line=getattr(data, "line", None), key=kw.name)
        else:
            out[kw.name] = kw.default
    return out



def parse_file(table: tuple[Keyword, ...], path: Path, *, what: str, missing: str,
               hint: str, warn_unknown: bool = False) -> tuple[LineMap, dict[str, Any]]:
    """A specification file (iso.yaml, disk.yaml) read and validated against `table`: its
    mapping (for line numbers) and its parsed values; `missing` and `hint` say it is not
    there; `warn_unknown` as in parse()."""
    if not path.is_file():
        raise CosbuildError(missing, file=path, hint=hint)
    data = load_mapping(path)
    return data, parse(table, data, path, what=what, warn_unknown=warn_unknown)

# --------------------------------------------------------------------------- the spec objects

@dataclass(frozen=True)
class CopySpec:
    package: PackageRef | None
    image: str | None
    source: str
    destination: str


@dataclass(frozen=True)
class Bootstrap:
    suite: str
    variant: str
    packages: tuple[str, ...]
    components: tuple[str, ...]
    mirror: str
    architecture: str


@dataclass(frozen=True)
class Definition:
    """Runtime metadata from definition.yaml or a collection stanza."""
    name: str
    category: str
    version: str
    requires: tuple[PackageRef, ...] = ()
    conflicts: tuple[PackageRef, ...] = ()
    provides: tuple[PackageRef, ...] = ()
    hidden: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    description: str = ""
    uri: tuple[str, ...] = ()
    license: str = ""

    @property
    def id(self) -> str:
        return f"{self.category}/{self.name}"


@dataclass(frozen=True)
class BuildSpec:
    """The compilation spec from a rendered build.yaml."""
    image: str | None = None
    seed: str | None = None
    bootstrap: Bootstrap | None = None
    requires: tuple[PackageRef, ...] = ()
    conflicts: tuple[PackageRef, ...] = ()
    provides: tuple[PackageRef, ...] = ()
    requires_final_images: bool = False
    join: tuple[PackageRef, ...] = ()
    env: tuple[str, ...] = ()
    prelude: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    copy: tuple[CopySpec, ...] = ()
    retrieve: tuple[str, ...] = ()
    caches: tuple[str, ...] = ()
    unpack: bool = False
    package_dir: str | None = None
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    @property
    def final_image_deps(self) -> tuple[PackageRef, ...]:
        """The packages whose final artifacts make the build's base (requires_final_images)."""
        return self.join or (self.requires if self.requires_final_images else ())


DEFAULT_FINALIZER_SHELL = ("sh", "-c")   # luet's, when finalize.yaml names none


@dataclass(frozen=True)
class Finalize:
    install: tuple[str, ...] = ()
    shell: tuple[str, ...] = ()

    def commands(self) -> list[list[str]]:
        """The argument lists to run, as luet does: each install command appended to the shell."""
        shell = list(self.shell or DEFAULT_FINALIZER_SHELL)
        return [[*shell, command] for command in self.install]


@dataclass(frozen=True)
class Rendered:
    """A package's specs after templating."""
    text: str                    # the rendered build.yaml, as written to build/specs/
    data: dict                   # its parsed YAML
    build: BuildSpec
    finalize: Finalize
    finalize_text: str
    engine: str = ""             # which template engine rendered it, and why


# --------------------------------------------------------------------------- the tables

REF_KEYWORDS = (
    Keyword("name", NAME, None, "package name", required=True),
    Keyword("category", CATEGORY, "", "package category"),
    Keyword("version", SELECTOR, ">=0", "version selector: >=V, >V, <=V, <V, =V or V, !V"),
)

COPY_KEYWORDS = (
    Keyword("package", OPT_REF, None, "copy from this package's build container"),
    Keyword("image", OPT_IMAGE, None, "copy from this container image"),
    Keyword("source", STR, "", "path in the source container"),
    Keyword("destination", STR, "", "path in this build"),
)

BOOTSTRAP_KEYWORDS = (
    Keyword("suite", STR, "", "Debian suite, e.g. bookworm or trixie", required=True),
    Keyword("variant", STR, "minbase", "mmdebstrap variant (minbase, required, important, standard)"),
    Keyword("packages", STRS, (), "extra Debian packages to include"),
    Keyword("components", STRS, ("main",), "archive components"),
    Keyword("mirror", STR, "http://deb.debian.org/debian", "Debian mirror URL"),
    Keyword("architecture", STR, "", "Debian architecture: the build's (`--arch`) when "
            "unset; another is an error"),
)

DEFINITION_KEYWORDS = (
    Keyword("name", NAME, None, "package name", required=True),
    Keyword("category", CATEGORY, "", "package category"),
    Keyword("version", VERSION, None, "package version (Debian ordering, +N rebuild suffix)",
            required=True),
    Keyword("requires", REFS, (), "runtime dependencies"),
    Keyword("conflicts", REFS, (), "runtime conflicts"),
    Keyword("provides", REFS, (), "packages this one replaces"),
    Keyword("hidden", BOOL, False, "build-only package, not offered for installation"),
    Keyword("labels", STR_MAP, (), "string map; keys may contain dots (package.checksum)"),
    Keyword("annotations", STR_MAP, (), "string map"),
    Keyword("description", STR, "", "free text"),
    Keyword("uri", STRS, (), "project URLs"),
    Keyword("license", STR, "", "license name"),
)

BUILD_KEYWORDS = (
    Keyword("image", OPT_IMAGE, None, "base container image (local storage first, then pulled); "
            "with 'requires', the build starts from it and the requires only order the build"),
    Keyword("seed", OPT_STR, None, "recorded and hashed only: luet 0.20 replaces it by the "
            "image the build starts from, so it is not an image source"),
    Keyword("bootstrap", BOOTSTRAP, None,
            "cosbuild: make the base image from a Debian rootfs bootstrapped with mmdebstrap"),
    Keyword("requires", REFS, (), "build-time dependencies; the build starts from the chain of their "
            "package images (transitively, in luet's order), unless there is another image source"),
    Keyword("conflicts", REFS, (), "build-time override of the definition's conflicts"),
    Keyword("provides", REFS, (), "build-time override of the definition's provides"),
    Keyword("requires_final_images", BOOL, False,
            "start from one image made of the requires' final artifacts (runtime closure)"),
    Keyword("join", REFS, (), "deprecated spelling of requires_final_images with an explicit list"),
    Keyword("env", ENV, (), "NAME=value set in both images before any command"),
    Keyword("prelude", STRS, (), "commands run in the builder image (not part of a delta artifact)"),
    Keyword("steps", STRS, (), "commands run in the package image"),
    Keyword("copy", COPIES, (), "copy a path from a package's build container or an image"),
    Keyword("retrieve", RETRIEVES, (), "artifact names/globs or http(s) URLs added to /luetbuild"),
    Keyword("caches", CACHE_DIRS, (), "cosbuild: folders kept between this package's builds "
            "(a compiler's cache whose output does not depend on it, e.g. GOCACHE), mounted "
            "from build/caches/ into prelude and steps; never in an image or artifact"),
    Keyword("unpack", BOOL, False, "artifact = the whole final container filesystem"),
    Keyword("package_dir", OPT_STR, None, "artifact = this subtree of the final container, re-rooted at /"),
    Keyword("includes", REGEXES, (), "keep only paths matching one of these"),
    Keyword("excludes", REGEXES, (), "drop paths matching one of these"),
)

FINALIZE_KEYWORDS = (
    Keyword("install", STRS, (), "shell commands run in the target root after installation"),
    Keyword("shell", STRS, (), "the program and arguments each install command is appended to; "
            "default sh -c"),
)

TABLES = {
    "definition.yaml (and collection.yaml stanzas)": DEFINITION_KEYWORDS,
    "build.yaml": BUILD_KEYWORDS,
    "bootstrap (in build.yaml)": BOOTSTRAP_KEYWORDS,
    "copy entries (in build.yaml)": COPY_KEYWORDS,
    "package references": REF_KEYWORDS,
    "finalize.yaml": FINALIZE_KEYWORDS,
}


def keyword_reference() -> str:
    """The keyword tables as Markdown (docs/keywords.md is generated from this)."""
    out = ["# Spec keyword reference", "",
           "Generated by `cosbuild keywords` from `cosbuild/tree/spec.py`; do not edit by hand.",
           ""]
    for title, table in TABLES.items():
        out += [f"## {title}", "", "| keyword | type | default | meaning |", "|---|---|---|---|"]
        for kw in table:
            default = "required" if kw.required else ("" if kw.default in (None, ()) else repr(kw.default))
            out.append(f"| `{kw.name}` | {kw.type.describe} | {default} | {kw.doc} |")
        out.append("")
    out += ["## Names and versions", "",
            f"A name or category: {NAME_RULE}; it names files and folders. A version: "
            f"{VERSION_RULE}. A string keyword takes a plain value as written, as luet's go-yaml "
            "does: `version: 1.10` is \"1.10\", `name: y` is \"y\".", ""]
    out += ["## Templates", "",
            "build.yaml, finalize.yaml and `<tree>/templates/*.yaml` are Helm templates (Go "
            "text/template with sprig, `.Values.x`, as luet 0.20 renders them) or Jinja2 "
            "(`values.x`), chosen per file: a `# cosbuild-engine: helm|jinja2` comment, else "
            "the file's syntax, else its tree's, else Helm; `--template-engine` forces one. "
            "`cosbuild helpers` lists the functions of both; docs/trees.md explains the values "
            "each one sees.", ""]
    return "\n".join(out)


def parse_build(data: LineMap, file: str) -> BuildSpec:
    """Parse a rendered build.yaml and check the rules that span several keywords."""
    # luet decodes build.yaml into its CompilationSpec struct, which ignores other keys
    build = BuildSpec(**parse(BUILD_KEYWORDS, data, file, what="build.yaml", warn_unknown=True))
    lines = getattr(data, "line_of", lambda key: None)

    def fail(key: str, message: str, hint: str) -> CosbuildError:
        return CosbuildError(message, file=file, line=lines(key), key=key, hint=hint)

    if build.bootstrap and (build.image or build.join or build.requires_final_images):
        raise fail("bootstrap", "'bootstrap' is an image source of its own",
                   "use either bootstrap, image, or requires_final_images")
    if build.join:
        if build.requires or build.requires_final_images:
            raise fail("join", "'join' cannot be combined with 'requires'/'requires_final_images'",
                       "move the join list to 'requires' and set requires_final_images: true")
        log.warning("%s:%s: join: deprecated (removed in luet 0.18); use 'requires' with "
                    "'requires_final_images: true'", file, lines("join"))
    if build.image and build.final_image_deps:
        log.warning("%s:%s: image: unused: with final images the build starts from the "
                    "requires' artifacts (luet replaces 'image' by that image)", file, lines("image"))
    if build.requires_final_images and not build.requires:
        raise fail("requires_final_images", "requires_final_images needs a 'requires' list",
                   "list the packages whose final artifacts make the base image")
    if build.unpack and build.package_dir:
        raise fail("package_dir", "'unpack' and 'package_dir' are alternatives",
                   "keep one artifact strategy")
    has_source = build.image or build.bootstrap or build.requires or build.join
    if (build.steps or build.prelude) and not has_source:
        raise fail("steps" if build.steps else "prelude", "commands given but no image source",
                   "add 'image', 'bootstrap' or 'requires' to say what the build starts from"
                   + ("; 'seed' is not one in luet 0.20" if build.seed else ""))
    return build
