"""The cloud-config ("yip") schema, and the one checker of cloud-config files (SPEC section 5):
`cosbuild validate` runs it on the files packages ship, and `cos-setup` runs it on every
document and step before applying anything, so both refuse the same documents.

The format is declared once here, as Shapes: each value's YAML types, its keys, its rule.
The checker is derived from the declaration; `cos-setup` (runtime/setup.py) applies the step
keys in STEP_KEYS' order.

A finding is an error where the file would do something wrong: a wrong type, a missing path,
an invalid mode or encoding, a name that a program would read as an option. A key yip does not
know it ignores (go-yaml drops unknown fields), and so does cos-setup: that is a warning (real
trees have them, such as cOS's `systemd:` step key), an error under `cosbuild validate
--strict`; but an unknown `systemd_firstboot` key is an error: its keys become options.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from ..errors import CosbuildError, CosbuildWarning, did_you_mean
from ..tree.yamlio import loads

# what one `files` entry may decode to (a gzip bomb is refused, not written)
CONTENT_LIMIT = 256 << 20
ENCODINGS = ("", "b64", "base64", "gz", "gzip", "gz+base64", "gzip+base64", "gz+b64", "gzip+b64")


@dataclass(frozen=True)
class Shape:
    """What a cloud-config value must be: one of `kinds`, then by the value's type: each
    element of a list is an `item`; a mapping is a record of known `fields` (`required`
    ones; an unknown key, named as a `noun`, is ignored with a warning or, `strict`, an
    error) or, without fields, maps `keys` to `item`s; last `rule(value)` says what is wrong
    with it, if anything (run only when the parts are right), and a value that stands for
    another (an entity's YAML document) is checked as the one `inner(value)` gives, with its
    shape."""
    kinds: tuple[type, ...]
    what: str
    item: Shape | None = None
    keys: Shape | None = None
    fields: Mapping[str, Shape] | None = None
    required: tuple[str, ...] = ()
    noun: str = "key"
    strict: bool = False
    hint: str | None = None   # for an unknown key no field is close to
    rule: Callable[[object], str | None] | None = None
    inner: Callable[[object], tuple[object, Shape]] | None = None


def _rule(pattern: str, problem: str) -> Callable[[object], str | None]:
    """A rule for strings: they match `pattern` whole, else `problem` (with {value})."""
    regex = re.compile(pattern)
    return lambda v: None if not isinstance(v, str) or regex.fullmatch(v) else \
        problem.format(value=repr(v))


def _listof(item: Shape, what: str = "a list") -> Shape:
    return Shape((list,), what, item=item)


def _record(fields: dict, noun: str, required=(), what="a mapping", **more) -> Shape:
    return Shape((dict,), what, fields=fields, required=tuple(required), noun=noun, **more)


# A name given to a program (user, group, unit, module): never an option (no leading `-`),
# never a path, a list (`,`) or more than one word. cos-setup passes them after `--` too.
NAME = Shape((str,), "a string", rule=_rule(
    r"[A-Za-z0-9_.@:\\$+][A-Za-z0-9_.@:\\$+-]*",
    "{value} is not a name (letters, digits, _ . @ : \\ $ + - and no '-' first)"))
TEXT = Shape((str,), "a string", rule=_rule(r"[^\x00]*", "{value} holds a NUL character"))
LINE = Shape((str,), "a string", rule=_rule(r"[^\x00\n\r]*",
                                            "{value} must be one line (no newline or NUL)"))
WORD = Shape((str,), "a string", rule=_rule(r"[^\x00\s]+", "{value} must be one word"))
FIELD = Shape((str,), "a string", rule=_rule(   # of a passwd or shadow line
    r"[^\x00\n\r:]*", "{value} may not hold ':', a newline or NUL"))
PATH = Shape((str,), "a path", rule=_rule(r"[^\x00]+", "{value} is not a path"))
HOSTNAME = Shape((str,), "a string", rule=_rule(
    r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}", "{value} is not a host name (letters, digits, . and -)"))
ENV_NAME = Shape((str,), "a string", rule=_rule(r"[A-Za-z_][A-Za-z0-9_]*",
                                                "{value} is not a variable name"))
SCALAR = Shape((str, int, float, bool), "a string or a number", rule=LINE.rule)
UID = Shape((int,), "a number",
            rule=lambda v: None if 0 <= v < 2**32 - 1 else f"{v} is not a user or group id")
OWNER = Shape((int, str), "a name or a number",
              rule=lambda v: NAME.rule(v) if isinstance(v, str) else UID.rule(v))
SECONDS = Shape((int, float), "a number",
                rule=lambda v: None if v > 0 else "must be a positive number of seconds")


def _mode_problem(mode) -> str | None:
    ok = (0 <= mode <= 0o7777) if isinstance(mode, int) else (
        bool(mode) and set(mode) <= set("01234567") and int(mode, 8) <= 0o7777)
    return None if ok else f"invalid permissions {mode!r} (write an octal mode such as 0644)"


MODE = Shape((int, str), "an octal mode", rule=_mode_problem)


def decode(content: str, encoding: str) -> bytes:
    """The bytes a `files` entry's `content` stands for (ValueError: it does not decode)."""
    encoding = encoding.lower()   # one of ENCODINGS (checked)
    data = content.encode()
    if "b64" in encoding or "base64" in encoding:
        try:   # line breaks are allowed, as Go's decoder (yip's) skips them
            data = base64.b64decode(data.replace(b"\n", b"").replace(b"\r", b""), validate=True)
        except binascii.Error as exc:
            raise ValueError(f"content is not base64: {exc}") from None
    if "gz" in encoding:
        inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)   # the gzip format
        try:
            data = inflate.decompress(data, CONTENT_LIMIT + 1)
        except zlib.error as exc:
            raise ValueError(f"content is not gzip data: {exc}") from None
        if len(data) > CONTENT_LIMIT:
            raise ValueError(f"content decodes to more than {CONTENT_LIMIT} bytes")
        if not inflate.eof:
            raise ValueError("content is not gzip data: it is cut short")
        if inflate.unused_data:
            raise ValueError("content has more after its gzip data")
    return data


def _content_problem(entry) -> str | None:
    try:
        decode(entry.get("content", ""), entry.get("encoding", ""))
    except ValueError as exc:
        return str(exc)
    return None


OWNED = {"path": PATH, "permissions": MODE, "owner": OWNER, "group": OWNER}
ENCODING = Shape((str,), "a string", rule=lambda v: None if v.lower() in ENCODINGS else
                 f"unknown encoding {v!r} (use one of: {', '.join(e for e in ENCODINGS if e)})")
FILE = _record({**OWNED, "content": TEXT, "encoding": ENCODING},
               "file key", required=["path"], rule=_content_problem)
DIRECTORY = _record(OWNED, "directory key", required=["path"])
DOWNLOAD = _record({"url": LINE, "path": PATH, "permissions": MODE, "timeout": SECONDS},
                   "download key", required=["url", "path"])
# An entity (ensure_entities, delete_entities) is a passwd/shadow/group/gshadow entry: one
# line (`name:x:0:0:...`), or a YAML document of mudler/entities (yip's format) whose `kind`
# names its fields and its file, the default `path`. Each field becomes one of the entry's
# `:`-separated fields, so it holds no `:` nor newline (which would forge another).
ENTRY_NAME = Shape((str,), "a string", rule=_rule(
    r"[^\x00\s:]+", "{value} is not a name (one word without ':')"))
ENTITY_ID = Shape((int,), "a number", rule=lambda v: None if v == -1 or not UID.rule(v) else
                  f"{v} is not a user or group id (0 to {2**32 - 2}, or -1 for a free one)")


def _days(*words: str) -> Shape:
    """A shadow date field: a number of days, empty (unset), or one of `words`."""
    return Shape((int, str), "a number of days", rule=lambda v: None if (
        v >= 0 if isinstance(v, int) else re.fullmatch("[0-9]*", v) or v in words) else
        f"{v!r} is not a number of days" + "".join(f" or {w!r}" for w in words))


@dataclass(frozen=True)
class EntityKind:
    path: str    # the file of the kind's entries, where no `path` is given
    name: str    # the key naming the entry (its first field)
    shape: Shape


def _entity_kind(path: str, fields: dict) -> EntityKind:
    name = next(iter(fields))
    return EntityKind(path, name, _record({"kind": TEXT, **fields}, "entity key", required=[name]))


DAYS = _days()
ENTITY_KINDS = {   # mudler/entities' kinds; their keys in the order of the entry's fields
    "user": _entity_kind("/etc/passwd", {   # but `group`: a group whose gid is the user's
        "username": ENTRY_NAME, "password": FIELD, "uid": ENTITY_ID, "gid": UID,
        "info": FIELD, "homedir": FIELD, "shell": FIELD, "group": ENTRY_NAME}),
    "shadow": _entity_kind("/etc/shadow", {
        "username": ENTRY_NAME, "password": FIELD, "last_changed": _days("now"),
        "minimum_changed": DAYS, "maximum_changed": DAYS, "warn": DAYS, "inactive": DAYS,
        "expire": DAYS, "reserved": FIELD}),
    "group": _entity_kind("/etc/group", {
        "group_name": ENTRY_NAME, "password": FIELD, "gid": ENTITY_ID, "users": FIELD}),
    "gshadow": _entity_kind("/etc/gshadow", {
        "name": ENTRY_NAME, "password": FIELD, "administrators": FIELD, "members": FIELD}),
}
UNKNOWN_ENTITY = Shape((dict,), "a mapping", rule=lambda doc: (
    f"unknown entity kind {doc['kind']!r} (known: {', '.join(ENTITY_KINDS)})"))
ENTITY_LINE = Shape((str,), "a string", rule=_rule(
    r"[^\x00\n\r]*", "{value} must be one line (name:...), or a YAML document with a kind: "
    + ", ".join(ENTITY_KINDS)))


def entity_document(text: str) -> dict | None:
    """An entity's YAML document (a mapping with a `kind`), or None: the entity is a line."""
    try:
        doc = loads(text, "entity")
    except CosbuildError:
        return None
    # a plain dict: the lines it knows count from the entity's; its values are checked as
    # strings or numbers, never walked (a value of aliases would be a YAML bomb)
    return dict(doc) if isinstance(doc, dict) and "kind" in doc else None


def entity_kind(doc: dict) -> EntityKind | None:
    kind = doc["kind"]
    return ENTITY_KINDS.get(kind) if isinstance(kind, str) else None


def _entity(text: str) -> tuple[object, Shape]:
    doc = entity_document(text)
    if doc is None:
        return text, ENTITY_LINE
    kind = entity_kind(doc)
    return doc, kind.shape if kind else UNKNOWN_ENTITY


ENTITY = _record(
    {"path": PATH, "entity": Shape((str,), "a string", inner=_entity)}, "entity key",
    required=["entity"], rule=lambda item: None if "path" in item or entity_document(
        item["entity"]) else "missing 'path' (a one-line entity names no file)")
KEYS = _listof(LINE)   # ssh authorized keys, one a line
SYSTEMCTL_KEYS = ("enable", "disable", "mask", "start")   # cos-setup's order: start last
# systemd-firstboot's options that set a value (systemd 252), as `--key=value` (keys with
# `-` for `_`); not those that read the host (--root-password-file, --copy*, --image) or
# wait for an answer (--prompt*)
FIRSTBOOT_KEYS = {
    "locale": LINE, "locale_messages": LINE, "keymap": LINE, "timezone": LINE,
    "hostname": HOSTNAME, "machine_id": Shape((str,), "a string", rule=_rule(
        "[0-9a-f]{32}", "{value} is not a machine ID (32 hexadecimal digits)")),
    "root_password": LINE, "root_password_hashed": LINE, "root_shell": LINE,
}
USER = Shape((dict, type(None)), "a mapping", noun="user key", fields={
    "passwd": FIELD, "groups": _listof(NAME), "shell": FIELD, "uid": UID,
    "ssh_authorized_keys": KEYS})

# key -> (its shape, what it does), in the order cos-setup applies a step's keys, whatever
# their order in the step (as yip runs its plugins): the environment first, the others may
# use it
STEP_KEYS = {
    "name": (TEXT, "step name, for the log"),
    "if": (Shape((str,), "a shell test (a string)"), "shell test; the step is skipped when it fails"),
    "environment": (Shape((dict,), "a mapping", keys=ENV_NAME, item=SCALAR),
                    "variables for the step's commands and environment_file"),
    "environment_file": (PATH, "file to write the environment to"),
    "files": (_listof(FILE), "files to write: path, permissions, owner, group, content, encoding"),
    "directories": (_listof(DIRECTORY), "directories to create: path, permissions, owner, group"),
    "commands": (_listof(TEXT), "shell commands"),
    "hostname": (HOSTNAME, "the host name"),
    "dns": (_record({"nameservers": _listof(WORD), "search": _listof(WORD), "path": PATH},
                    "dns key"), "nameservers, search, path"),
    "sysctl": (Shape((dict,), "a mapping", keys=Shape((str,), "a string", rule=_rule(
        r"[A-Za-z0-9_][A-Za-z0-9_./-]*", "{value} is not a kernel parameter")), item=SCALAR),
        "kernel parameters"),
    "modules": (_listof(NAME), "kernel modules to load"),
    "systemctl": (_record({action: _listof(NAME) for action in SYSTEMCTL_KEYS},
                          "systemctl action"), "enable, disable, start, mask: lists of units"),
    "users": (Shape((dict,), "a mapping", keys=NAME, item=USER),
              "name -> passwd (hash), groups, shell, uid, ssh_authorized_keys"),
    "authorized_keys": (Shape((dict,), "a mapping", keys=NAME, item=KEYS), "user -> ssh keys"),
    "systemd_firstboot": (_record(FIRSTBOOT_KEYS, "systemd_firstboot key", strict=True,
                                  hint=f"known: {', '.join(FIRSTBOOT_KEYS)}"),
                          "systemd-firstboot settings (keymap, timezone, locale, ...)"),
    "downloads": (_listof(DOWNLOAD), "files to download: url, path, permissions, timeout"),
    "ensure_entities": (_listof(ENTITY), "passwd/shadow/group/gshadow entries to make sure of: "
                        "path, entity (a line, or a YAML document of a kind)"),
    "delete_entities": (_listof(ENTITY), "passwd/shadow/group/gshadow entries to remove: "
                        "path, entity"),
    "timesyncd": (Shape((dict,), "a mapping"), "systemd-timesyncd settings"),
    "datasource": (Shape((dict,), "a mapping"), "cloud datasource (providers, path)"),
    "layout": (Shape((dict,), "a mapping"), "disk layout (handled by the installer)"),
}
# the keys that are no step action of cos-setup: it reads `name` and `if` around the step,
# and accepts the others but leaves them to other tools
NOT_APPLIED = ("name", "if", "timesyncd", "datasource", "layout")
APPLIED = tuple(key for key in STEP_KEYS if key not in NOT_APPLIED)   # in cos-setup's order
STEP = _record({key: shape for key, (shape, _) in STEP_KEYS.items()}, "step key",
               what="a step (a mapping)", hint="see SPEC section 5 for the step keys")
# a yip file: its steps are checked one by one (cos-setup runs the valid ones)
DOCUMENT = _record({"name": TEXT, "stages": Shape(
    (dict, type(None)), "a mapping of stage names to lists of steps",
    item=Shape((list, type(None)), "a list of steps"))},
    "top-level key", what="a mapping at the top level", hint="use name and stages")
# a classic #cloud-config file (cloud-init), run as one step at boot
CLASSIC = _record({
    "hostname": HOSTNAME, "write_files": _listof(FILE),
    "runcmd": _listof(Shape((str, list), "a command (a string or a list)", item=TEXT,
                            rule=TEXT.rule)),
    "users": _listof(Shape((dict, str), "a user (a mapping, or 'default')", noun="user key",
                           fields={"name": NAME, **USER.fields}, required=("name",),
                           rule=lambda v: None if not isinstance(v, str) or v == "default"
                           else f"{v!r}: a user is a mapping, or 'default'")),
    "ssh_authorized_keys": KEYS}, "#cloud-config key", what="a mapping at the top level")


def is_classic(text: str) -> bool:
    return text.lstrip().startswith("#cloud-config")


def looks_like_cloud_config(text: str) -> bool:
    return is_classic(text) or "\nstages:" in f"\n{text}"


@dataclass(frozen=True)
class Findings:
    """The errors (CosbuildError) and ignored keys (CosbuildWarning) of one file, in the
    order found; `errors` the errors only (counted at every value: a list, not a filter)."""
    file: str | None
    found: list[CosbuildError] = field(default_factory=list)
    errors: list[CosbuildError] = field(default_factory=list)

    def check(self, value, shape: Shape, key: str, line: int | None) -> bool:
        """Add what is wrong with `value` (at `key`, written at `line`); True when nothing."""
        before = len(self.errors)
        if not isinstance(value, shape.kinds) or (isinstance(value, bool) and bool not in shape.kinds):
            self._add(CosbuildError, f"expected {shape.what}, got {_describe(type(value))}", line, key)
            return False
        line = getattr(value, "line", None) or line
        if isinstance(value, list) and shape.item:
            for n, element in enumerate(value, 1):
                self.check(element, shape.item, f"{key}[{n}]", line)
        elif isinstance(value, dict):
            self._mapping(value, shape, key, line)
        if len(self.errors) == before and shape.inner:
            self.check(*shape.inner(value), key, line)
        if len(self.errors) == before and shape.rule and (problem := shape.rule(value)):
            self._add(CosbuildError, problem, line, key)
        return len(self.errors) == before

    def _mapping(self, value: dict, shape: Shape, key: str, line: int | None) -> None:
        for name, element in value.items():
            at = f"{key}.{name}" if key else str(name)
            here = _line_of(value, name) or line
            if shape.fields is None:
                if shape.keys:
                    self.check(name, shape.keys, at, here)
                if shape.item:
                    self.check(element, shape.item, at, here)
            elif name in shape.fields:
                self.check(element, shape.fields[name], at, here)
            else:
                self._add(CosbuildError if shape.strict else CosbuildWarning,
                          f"unknown {shape.noun} '{name}'" + ("" if shape.strict else ", ignored"),
                          here, at, did_you_mean(str(name), shape.fields) or shape.hint)
        for name in shape.required:
            if name not in value:
                self._add(CosbuildError, f"missing '{name}'", line, key)

    def _add(self, kind, message, line, key, hint=None) -> None:
        finding = kind(message, file=self.file, line=line, key=key or None, hint=hint)
        self.found.append(finding)
        if kind is CosbuildError:
            self.errors.append(finding)


def parse(text: str, file: str | Path):
    """The YAML of a cloud-config file (an empty one is an empty mapping), or CosbuildError."""
    doc = loads(text, file)
    return {} if doc is None else doc


def check_document(doc, classic: bool, findings: Findings) -> bool:
    """Check a parsed file but its steps (check_step); True when it has no error."""
    return findings.check(doc, CLASSIC if classic else DOCUMENT, "", 1)


def check_step(step, key: str, line: int | None, findings: Findings) -> bool:
    """Check one step (`key`: stages.STAGE[N], in its stage at `line`); True when it may run."""
    return findings.check(step, STEP, key, line)


def steps(doc, stage) -> tuple[list, int | None]:
    """The steps of `stage` in a checked yip file, and the line of the stage."""
    stages = doc.get("stages") or {}
    return stages.get(stage) or [], _line_of(stages, stage)


def _line_of(mapping, key) -> int | None:
    return mapping.line_of(key) if hasattr(mapping, "line_of") else None


def check(text: str, file: str | Path) -> list[CosbuildError]:
    """Every mistake of one cloud-config file, each with file:line and key; the ignored keys
    are CosbuildWarnings."""
    findings = Findings(str(file))
    try:
        doc = parse(text, file)
    except CosbuildError as exc:
        return [exc]
    if check_document(doc, is_classic(text), findings) and not is_classic(text):
        for stage in doc.get("stages") or {}:
            listed, line = steps(doc, stage)
            for n, step in enumerate(listed, 1):
                check_step(step, f"stages.{stage}[{n}]", line, findings)
    return findings.found


def _describe(kind: type) -> str:
    for base, text in ((bool, "a boolean"), (list, "a list"), (dict, "a mapping"),
                       (str, "a string"), (int, "a number"), (float, "a number"),
                       (type(None), "nothing")):
        if issubclass(kind, base):
            return text
    return kind.__name__


def check_project(project) -> list[CosbuildError]:
    """The findings of every cloud-config file among the YAML files of the packages'
    folders (of every loaded package: one that failed to render still ships its files)."""
    # the tree side is needed at build time only: importing it here keeps cos-setup light
    from ..tree.load import BUILD, COLLECTION, DEFINITION, FINALIZE, context_files
    return check_files(sorted({f for p in project.tree.packages for f in context_files(p.folder)
                               if Path(f).name not in (BUILD, COLLECTION, DEFINITION, FINALIZE)}))


def check_files(names) -> list[CosbuildError]:
    """The findings of the cloud-config files among `names` (YAML files that look like one;
    only regular files are read: a FIFO would block)."""
    errors = []
    for name in names:
        path = Path(name)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            if looks_like_cloud_config(text):
                errors += check(text, name)
    return errors
